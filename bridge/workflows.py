"""Workflow manifests: load, validate, bind parameters by name, check against a live `/object_info`,
and export the editor (UI) format.

A workflow is an API-format ComfyUI graph plus a manifest naming its parameters and outputs
(format: workflows/README.md, docs/architecture.md). Nothing here knows any particular node id:
every id comes from a manifest.

CLI::

    python -m bridge.workflows validate [--dir workflows] [--url http://127.0.0.1:8188]
    python -m bridge.workflows export-editor (--url URL | --object-info FILE) [--dir workflows] [--out DIR] [--check]
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.errors import InvalidParameter, WorkflowError, WorkflowNotFound

PARAM_TYPES = ("string", "int", "float", "bool", "choice", "image", "json")
OUTPUT_TYPES = ("images", "value")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
# Output node classes whose images arrive as binary websocket frames instead of /history files.
WEBSOCKET_IMAGE_CLASSES = frozenset({"SaveImageWebsocket"})

_MISSING: Any = object()

DEFAULT_EDITOR_DIR = Path(__file__).resolve().parent.parent / "custom_nodes" / "pixart_nodes" / "example_workflows"
DEFAULT_WORKFLOWS_DIR = Path(__file__).resolve().parent.parent / "workflows"


def is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


@dataclass(frozen=True)
class Target:
    node: str
    input: str
    # choice value -> value written (a literal, or a link [node_id, slot] to rewire the graph)
    map: dict[str, Any] | None = None


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    targets: tuple[Target, ...]
    default: Any = _MISSING
    required: bool = False
    description: str = ""
    min: float | None = None
    max: float | None = None
    multiple_of: int | None = None
    max_length: int | None = None
    choices: tuple[str, ...] | None = None
    choices_from: str | None = None
    # An int equal to this value asks for a fresh random value (A1111's seed -1).
    random_value: int | None = None

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING

    def describe(self) -> dict[str, Any]:
        """JSON description for adapters (e.g. an OpenAPI schema or a /models route)."""
        out: dict[str, Any] = {"type": self.type, "required": self.required}
        if self.has_default:
            out["default"] = self.default
        for key in ("description", "min", "max", "multiple_of", "max_length", "choices_from", "random_value"):
            value = getattr(self, key)
            if value not in (None, ""):
                out[key] = value
        if self.choices is not None:
            out["choices"] = list(self.choices)
        return out


@dataclass(frozen=True)
class Output:
    name: str
    node: str
    type: str
    key: str | None = None


@dataclass
class Workflow:
    name: str
    version: int
    description: str
    graph: dict[str, Any]
    parameters: dict[str, Parameter]
    outputs: dict[str, Output]
    path: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- parameters
    def coerce(self, params: Mapping[str, Any], *, rng: random.Random | None = None) -> dict[str, Any]:
        """Check caller values by type and limits; returns the normalised values (image values untouched).

        Unknown names are refused so that a typo does not silently fall back to a default.
        """
        if not isinstance(params, Mapping):
            raise InvalidParameter("parameters", "must be a JSON object")
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise InvalidParameter(unknown[0], f"unknown parameter {unknown[0]!r} for workflow {self.name!r}; "
                                               f"known: {', '.join(sorted(self.parameters))}")
        out: dict[str, Any] = {}
        for name, p in self.parameters.items():
            if name in params and params[name] is not None:
                out[name] = coerce_value(p, params[name], rng=rng)
            elif p.required:
                raise InvalidParameter(name, f"{name} is required")
            elif p.has_default:
                out[name] = coerce_value(p, p.default, rng=rng)
        return out

    def bind(self, values: Mapping[str, Any], live_choices: Callable[[str], list[str] | None] | None = None,
             ) -> dict[str, Any]:
        """Return a fresh API graph with `values` (already coerced; images as uploaded file names) written in.

        `live_choices("Class.input")` gives the backend's current list for `choice` parameters; a value
        that is not in it is refused naming the parameter, and a parameter left to the graph takes the
        first live choice when the graph's value is not available there.
        """
        graph = copy.deepcopy(self.graph)
        for name, p in self.parameters.items():
            live = live_choices(p.choices_from) if (live_choices and p.choices_from) else None
            if name in values:
                value = values[name]
                if p.type == "choice" and live is not None and value not in live:
                    raise InvalidParameter(name, f"{name}: {value!r} is not available on the backend; "
                                                 f"choose one of {_short_list(live)}")
            elif p.type == "choice" and live:
                graph_value = graph[p.targets[0].node]["inputs"].get(p.targets[0].input)
                if graph_value in live:
                    continue
                value = live[0]
            else:
                continue
            for t in p.targets:
                written = value if t.map is None else t.map[str(value) if p.type == "int" else value]
                if p.type == "json" and isinstance(written, list):
                    written = {"__value__": written}  # a bare list would read as a link
                graph[t.node]["inputs"][t.input] = copy.deepcopy(written)
        return graph

    # ---------------------------------------------------------------- introspection
    def node_types(self) -> set[str]:
        return {n["class_type"] for n in self.graph.values()}

    def output_class(self, output: Output) -> str:
        return self.graph[output.node]["class_type"]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "description": self.description,
                "parameters": {n: p.describe() for n, p in self.parameters.items()},
                "outputs": {n: {"type": o.type} for n, o in self.outputs.items()}}

    def parameter_for_input(self, node: str, input_name: str) -> str | None:
        """The parameter bound to a node input (to name the field in a ComfyUI validation error)."""
        for p in self.parameters.values():
            for t in p.targets:
                if t.node == node and t.input == input_name:
                    return p.name
        return None


def _short_list(values: list[str], n: int = 8) -> str:
    shown = ", ".join(repr(v) for v in values[:n])
    return shown + (f", ... ({len(values)} in all)" if len(values) > n else "")


def coerce_value(p: Parameter, value: Any, *, rng: random.Random | None = None) -> Any:
    name = p.name
    t = p.type
    if t == "string":
        if not isinstance(value, str):
            raise InvalidParameter(name, f"{name} must be a string")
        if p.max_length is not None and len(value) > p.max_length:
            raise InvalidParameter(name, f"{name} is longer than {p.max_length} characters")
        return value
    if t == "bool":
        if not isinstance(value, bool):
            raise InvalidParameter(name, f"{name} must be true or false")
        return value
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidParameter(name, f"{name} must be an integer")
        if isinstance(value, float):
            if not value.is_integer():
                raise InvalidParameter(name, f"{name} must be an integer, got {value}")
            value = int(value)
        if p.random_value is not None and value == p.random_value:
            hi = int(p.max) if p.max is not None else 2**32 - 1
            lo = max(0, int(p.min)) if p.min is not None else 0
            # 2**32 keeps the seed representable in every client (A1111 seeds are u32).
            return (rng or random).randint(lo, min(hi, 2**32 - 1))
        _check_range(p, value)
        if p.multiple_of and value % p.multiple_of:
            raise InvalidParameter(name, f"{name} must be a multiple of {p.multiple_of}, got {value}")
        return value
    if t == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidParameter(name, f"{name} must be a finite number")
        value = float(value)
        _check_range(p, value)
        return value
    if t == "choice":
        if not isinstance(value, str):
            raise InvalidParameter(name, f"{name} must be a string naming one of the choices")
        if p.choices is not None and value not in p.choices:
            raise InvalidParameter(name, f"{name}: {value!r} is not one of {_short_list(list(p.choices))}")
        return value
    if t == "image":
        if not isinstance(value, (str, bytes, bytearray)):
            raise InvalidParameter(name, f"{name} must be base64 text, a data URL or bytes")
        return value
    return value  # json: written as is


def _check_range(p: Parameter, value: float) -> None:
    if p.min is not None and value < p.min:
        raise InvalidParameter(p.name, f"{p.name} must be at least {_num(p.min)}, got {_num(value)}")
    if p.max is not None and value > p.max:
        raise InvalidParameter(p.name, f"{p.name} must be at most {_num(p.max)}, got {_num(value)}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# -------------------------------------------------------------------- loading and static validation
def load_workflow(manifest_path: Path) -> Workflow:
    """Load one manifest and its graph; raises WorkflowError listing every problem found."""
    manifest_path = Path(manifest_path)
    label = manifest_path.name.removesuffix(".manifest.json")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WorkflowError(f"workflow {label}: cannot read {manifest_path}: {exc}") from exc
    problems: list[str] = []
    if not isinstance(manifest, dict):
        raise WorkflowError(f"workflow {label}: manifest must be a JSON object")
    name = manifest.get("name", label)
    label = name if isinstance(name, str) else label
    if not isinstance(name, str) or not name:
        problems.append("'name' must be a non-empty string")
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        problems.append("'version' must be a positive integer")
    graph_file = manifest.get("workflow", f"{label}.json")
    try:
        graph = json.loads((manifest_path.parent / graph_file).read_text())
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise WorkflowError(f"workflow {label}: cannot read graph {graph_file!r}: {exc}") from exc
    problems += _check_graph(graph)
    params: dict[str, Parameter] = {}
    for pname, spec in (manifest.get("parameters") or {}).items():
        try:
            params[pname] = _parse_parameter(pname, spec)
        except ValueError as exc:
            problems.append(f"parameter {pname!r}: {exc}")
    outputs: dict[str, Output] = {}
    for oname, spec in (manifest.get("outputs") or {}).items():
        if not isinstance(spec, dict) or spec.get("type") not in OUTPUT_TYPES or not isinstance(spec.get("node"), str):
            problems.append(f"output {oname!r}: needs 'node' (string id) and 'type' in {OUTPUT_TYPES}")
            continue
        if spec["type"] == "value" and not isinstance(spec.get("key"), str):
            problems.append(f"output {oname!r}: a 'value' output needs 'key'")
            continue
        outputs[oname] = Output(oname, spec["node"], spec["type"], spec.get("key"))
    if not outputs:
        problems.append("no outputs declared")
    wf = Workflow(name=label, version=version if isinstance(version, int) else 0,
                  description=str(manifest.get("description", "")), graph=graph if isinstance(graph, dict) else {},
                  parameters=params, outputs=outputs, path=manifest_path, manifest=manifest)
    if not problems:
        problems += _check_bindings(wf)
    if problems:
        raise WorkflowError(f"workflow {label}: " + "; ".join(problems))
    return wf


def _parse_parameter(name: str, spec: Any) -> Parameter:
    if not isinstance(spec, dict):
        raise ValueError("must be an object")
    ptype = spec.get("type")
    if ptype not in PARAM_TYPES:
        raise ValueError(f"type must be one of {PARAM_TYPES}")
    raw_targets = spec.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        raise ValueError("needs a non-empty 'targets' list")
    targets = []
    for t in raw_targets:
        if not isinstance(t, dict) or not isinstance(t.get("node"), str) or not isinstance(t.get("input"), str):
            raise ValueError("each target needs 'node' (string id) and 'input'")
        m = t.get("map")
        if m is not None and not isinstance(m, dict):
            raise ValueError("a target 'map' must be an object")
        targets.append(Target(t["node"], t["input"], m))
    choices = spec.get("choices")
    if choices is not None and (not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)):
        raise ValueError("'choices' must be a list of strings")
    if ptype == "choice" and choices is None and not isinstance(spec.get("choices_from"), str):
        raise ValueError("a choice needs 'choices' or 'choices_from'")
    for t in targets:
        if t.map is None:
            continue
        if ptype == "int":
            # An int map translates a small range (e.g. clip_skip 1..12 -> stop_at_clip_layer -1..-12), so it
            # must name every value the limits allow: no value can then reach the graph untranslated.
            lo, hi = spec.get("min"), spec.get("max")
            if not isinstance(lo, int) or not isinstance(hi, int) or not 0 <= hi - lo < 1024 \
                    or set(t.map) != {str(i) for i in range(lo, hi + 1)}:
                raise ValueError(f"target {t.node}.{t.input}: an int 'map' needs 'min' and 'max' and one key "
                                 f"per value from min to max")
        elif choices is None or set(t.map) != set(choices):
            raise ValueError(f"target {t.node}.{t.input}: 'map' keys must equal 'choices'")
    p = Parameter(name=name, type=ptype, targets=tuple(targets), default=spec.get("default", _MISSING),
                  required=bool(spec.get("required", False)), description=str(spec.get("description", "")),
                  min=spec.get("min"), max=spec.get("max"), multiple_of=spec.get("multiple_of"),
                  max_length=spec.get("max_length"), choices=tuple(choices) if choices is not None else None,
                  choices_from=spec.get("choices_from"), random_value=spec.get("random_value"))
    if p.has_default:
        try:
            coerce_value(p, p.default)
        except InvalidParameter as exc:
            raise ValueError(f"default is invalid: {exc.message}") from None
    return p


def _check_graph(graph: Any) -> list[str]:
    if not isinstance(graph, dict) or not graph:
        return ["graph must be a non-empty object in ComfyUI API format"]
    problems = []
    for nid, node in graph.items():
        if not nid.isdigit():
            problems.append(f"node {nid!r}: ids must be decimal integers (the editor format needs them)")
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) \
                or not isinstance(node.get("inputs"), dict):
            problems.append(f"node {nid!r}: needs 'class_type' and 'inputs'")
            continue
        for iname, value in node["inputs"].items():
            if is_link(value) and value[0] not in graph:
                problems.append(f"node {nid} ({node['class_type']}) input {iname!r} links to missing node {value[0]!r}")
    return problems


def _check_bindings(wf: Workflow) -> list[str]:
    problems = []
    for p in wf.parameters.values():
        for t in p.targets:
            node = wf.graph.get(t.node)
            if node is None:
                problems.append(f"parameter {p.name!r} targets missing node {t.node!r}")
                continue
            if t.input not in node["inputs"]:
                problems.append(f"parameter {p.name!r} targets node {t.node} ({node['class_type']}) input "
                                f"{t.input!r}, which the graph does not set")
            for v in (t.map or {}).values():
                if is_link(v) and v[0] not in wf.graph:
                    problems.append(f"parameter {p.name!r} maps to a link from missing node {v[0]!r}")
        if p.choices_from and "." not in p.choices_from:
            problems.append(f"parameter {p.name!r}: choices_from must read '<NodeClass>.<input>'")
    for o in wf.outputs.values():
        if o.node not in wf.graph:
            problems.append(f"output {o.name!r} reads missing node {o.node!r}")
    return problems


def load_workflows(directory: Path) -> dict[str, Workflow]:
    """Load every `*.manifest.json` in `directory`; raises one WorkflowError listing all broken workflows."""
    directory = Path(directory)
    found: dict[str, Workflow] = {}
    problems = []
    for path in sorted(directory.glob("*.manifest.json")):
        try:
            wf = load_workflow(path)
        except WorkflowError as exc:
            problems.append(exc.message)
            continue
        if wf.name in found:
            problems.append(f"workflow {wf.name}: declared twice ({found[wf.name].path} and {path})")
        found[wf.name] = wf
    if problems:
        raise WorkflowError("\n".join(problems))
    return found


def get_workflow(workflows: Mapping[str, Workflow], name: str) -> Workflow:
    try:
        return workflows[name]
    except KeyError:
        raise WorkflowNotFound(name) from None


# -------------------------------------------------------------------- checks against a live /object_info
def input_spec(info: Mapping[str, Any], input_name: str) -> tuple[Any, dict[str, Any]] | None:
    for section in ("required", "optional"):
        spec = (info.get("input") or {}).get(section, {}).get(input_name)
        if spec is not None:
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            return spec[0], opts
    return None


def combo_options(info: Mapping[str, Any], input_name: str) -> list[str] | None:
    spec = input_spec(info, input_name)
    if spec is None:
        return None
    kind, opts = spec
    if isinstance(kind, list):
        return list(kind)
    if kind == "COMBO":
        return list(opts.get("options", []))
    return None


def live_choices(object_info: Mapping[str, Any], ref: str) -> list[str] | None:
    cls, _, inp = ref.partition(".")
    info = object_info.get(cls)
    return combo_options(info, inp) if info else None


def check_object_info(wf: Workflow, object_info: Mapping[str, Any]) -> list[str]:
    """Every problem that would make ComfyUI refuse or silently ignore part of the graph."""
    problems = []
    for nid, node in wf.graph.items():
        cls = node["class_type"]
        info = object_info.get(cls)
        where = f"workflow {wf.name}: node {nid} ({cls})"
        if info is None:
            problems.append(f"{where}: node type {cls!r} is not installed on the backend")
            continue
        declared = {**(info.get("input") or {}).get("required", {}), **(info.get("input") or {}).get("optional", {})}
        for iname in node["inputs"]:
            if iname not in declared:
                problems.append(f"{where}: input {iname!r} is not an input of {cls} "
                                f"(inputs: {', '.join(declared) or 'none'})")
        for iname in (info.get("input") or {}).get("required", {}):
            if iname not in node["inputs"]:
                problems.append(f"{where}: required input {iname!r} is missing")
        for iname, value in node["inputs"].items():
            if is_link(value) and value[0] in wf.graph:
                src_cls = wf.graph[value[0]]["class_type"]
                src = object_info.get(src_cls)
                if src is not None and value[1] >= len(src.get("output", [])):
                    problems.append(f"{where}: input {iname!r} links to output {value[1]} of node {value[0]} "
                                    f"({src_cls}), which has {len(src.get('output', []))} outputs")
    for p in wf.parameters.values():
        if p.choices_from:
            cls, _, inp = p.choices_from.partition(".")
            if cls in object_info and combo_options(object_info[cls], inp) is None:
                problems.append(f"workflow {wf.name}: parameter {p.name!r} choices_from {p.choices_from!r} "
                                f"is not a list input")
            elif cls not in object_info:
                problems.append(f"workflow {wf.name}: parameter {p.name!r} choices_from node type {cls!r} "
                                f"is not installed on the backend")
        if p.choices is not None:
            for t in p.targets:
                if t.map is not None:
                    continue
                cls = wf.graph[t.node]["class_type"]
                opts = combo_options(object_info.get(cls, {}), t.input) if cls in object_info else None
                if opts is not None:
                    missing = [c for c in p.choices if c not in opts]
                    if missing:
                        problems.append(f"workflow {wf.name}: parameter {p.name!r} choices {missing} are not "
                                        f"accepted by node {t.node} ({cls}) input {t.input!r}")
    outs = output_nodes(wf.graph, object_info)
    for o in wf.outputs.values():
        cls = wf.graph[o.node]["class_type"]
        if cls not in object_info or o.node in outs:
            continue
        if o.type != "value":
            problems.append(f"workflow {wf.name}: output {o.name!r} reads node {o.node} ({cls}), "
                            f"which is not an output node")
        elif not dependents(wf.graph, o.node) & outs:
            # ComfyUI only executes what an output node needs, so this node's ui value would never appear.
            problems.append(f"workflow {wf.name}: output {o.name!r} reads node {o.node} ({cls}), which is not an "
                            f"output node and no output node depends on it, so ComfyUI would never run it")
    return problems


def output_nodes(graph: Mapping[str, Any], object_info: Mapping[str, Any]) -> set[str]:
    """Ids of the graph's nodes whose class is an OUTPUT_NODE on that backend."""
    return {nid for nid, node in graph.items() if (object_info.get(node["class_type"]) or {}).get("output_node")}


def dependents(graph: Mapping[str, Any], node_id: str) -> set[str]:
    """Every node that reads `node_id`'s outputs, directly or through other nodes."""
    readers: dict[str, set[str]] = {}
    for nid, node in graph.items():
        for v in node["inputs"].values():
            if is_link(v):
                readers.setdefault(v[0], set()).add(nid)
    seen: set[str] = set()
    stack = [node_id]
    while stack:
        for r in readers.get(stack.pop(), ()):
            if r not in seen:
                seen.add(r)
                stack.append(r)
    return seen


def execution_targets(wf: Workflow, names: list[str], object_info: Mapping[str, Any]) -> list[str]:
    """The output node ids ComfyUI must run (`partial_execution_targets`) to produce the named outputs.

    A value read from a non-output node needs one output node downstream of it; one that is already a
    target is preferred, so asking for a value never adds work the other requested outputs do not need.
    """
    outs = output_nodes(wf.graph, object_info)
    targets: list[str] = []
    later: list[Output] = []
    for name in names:
        o = wf.outputs[name]
        if o.node in outs:
            if o.node not in targets:
                targets.append(o.node)
        else:
            later.append(o)
    for o in later:
        downstream = dependents(wf.graph, o.node) & outs
        if not downstream:
            raise WorkflowError(f"workflow {wf.name}: output {o.name!r} (node {o.node}) has no output node "
                                f"downstream, so ComfyUI would never run it", field="outputs")
        if not downstream & set(targets):
            # The output node with the fewest nodes to run adds the least work.
            targets.append(min(downstream, key=lambda n: (len(ancestors(wf.graph, [n])), int(n) if n.isdigit() else 0, n)))
    return targets


def ancestors(graph: Mapping[str, Any], roots: list[str]) -> set[str]:
    """The roots and every node they read from, directly or through other nodes."""
    seen: set[str] = set()
    stack = [r for r in roots if r in graph]
    while stack:
        nid = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        for v in graph[nid]["inputs"].values():
            if is_link(v) and v[0] in graph:
                stack.append(v[0])
    return seen


# -------------------------------------------------------------------- editor (UI) format export
def export_editor(wf: Workflow, object_info: Mapping[str, Any]) -> dict[str, Any]:
    """The graph in the editor's format (schema 0.4): nodes with widgets_values in input order, and links.

    Input order comes from `/object_info` (`input_order`, else dict order); seed widgets get
    control_after_generate "fixed"; image-upload combos get the upload widget's value "image", which the
    frontend appends after the required inputs.
    """
    problems = check_object_info(wf, object_info)
    if problems:
        raise WorkflowError("; ".join(problems))
    graph = wf.graph
    order = _topological(graph)
    depth: dict[str, int] = {}
    for nid in order:
        srcs = [v[0] for v in graph[nid]["inputs"].values() if is_link(v)]
        depth[nid] = 1 + max((depth[s] for s in srcs), default=-1)
    rows: dict[int, int] = {}
    nodes: list[dict[str, Any]] = []
    links: list[list[Any]] = []
    out_links: dict[tuple[str, int], list[int]] = {}
    pending_inputs: list[tuple[dict[str, Any], list[tuple[str, Any]]]] = []
    for index, nid in enumerate(order):
        node = graph[nid]
        info = object_info[node["class_type"]]
        ui_inputs: list[dict[str, Any]] = []
        widgets: list[Any] = []
        link_inputs: list[tuple[str, Any]] = []
        sections = (info.get("input") or {})
        input_order = info.get("input_order") or {s: list(sections.get(s, {})) for s in ("required", "optional")}
        upload_widget = False
        for section in ("required", "optional"):
            if section == "optional" and upload_widget:
                widgets.append("image")
                upload_widget = False
            for iname in input_order.get(section, []):
                spec = input_spec(info, iname)
                if spec is None:
                    continue
                kind, opts = spec
                type_name = "COMBO" if isinstance(kind, list) else kind
                value = node["inputs"].get(iname, opts.get("default"))
                is_widget = type_name in WIDGET_TYPES and not opts.get("forceInput")
                if is_widget:
                    if is_link(value):
                        ui_inputs.append({"name": iname, "type": type_name, "widget": {"name": iname}, "link": None})
                        link_inputs.append((iname, value))
                        value = opts.get("default")
                    if value is None and type_name == "COMBO":
                        options = combo_options(info, iname) or []
                        value = options[0] if options else ""
                    widgets.append(value)
                    if type_name == "INT" and (opts.get("control_after_generate") or iname in ("seed", "noise_seed")):
                        widgets.append("fixed")
                    if opts.get("image_upload"):
                        upload_widget = True
                elif iname in node["inputs"] or section == "required":
                    ui_inputs.append({"name": iname, "type": type_name, "link": None})
                    if is_link(value):
                        link_inputs.append((iname, value))
        if upload_widget:
            widgets.append("image")
        outputs = [{"name": (info.get("output_name") or info["output"])[i], "type": t, "links": [], "slot_index": i}
                   for i, t in enumerate(info.get("output", []))]
        col = depth[nid]
        row = rows.get(col, 0)
        rows[col] = row + 1
        ui_node: dict[str, Any] = {
            "id": int(nid), "type": node["class_type"], "pos": [40 + 360 * col, 40 + 300 * row],
            "size": [320, 60 + 26 * (len(widgets) + max(len(ui_inputs), len(outputs)))], "flags": {},
            "order": index, "mode": 0, "inputs": ui_inputs, "outputs": outputs,
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets,
        }
        title = (node.get("_meta") or {}).get("title")
        if title:
            ui_node["title"] = title
        nodes.append(ui_node)
        pending_inputs.append((ui_node, link_inputs))
    by_id = {n["id"]: n for n in nodes}
    for ui_node, link_inputs in pending_inputs:
        for iname, (src, slot) in link_inputs:
            link_id = len(links) + 1
            target_slot = next(i for i, inp in enumerate(ui_node["inputs"]) if inp["name"] == iname)
            ui_node["inputs"][target_slot]["link"] = link_id
            src_node = by_id[int(src)]
            src_node["outputs"][slot]["links"].append(link_id)
            links.append([link_id, int(src), slot, ui_node["id"], target_slot, src_node["outputs"][slot]["type"]])
            out_links.setdefault((src, slot), []).append(link_id)
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pixart:workflow:{wf.name}")), "revision": 0,
        "last_node_id": max(int(n) for n in graph), "last_link_id": len(links),
        "nodes": nodes, "links": links, "groups": [], "config": {},
        "extra": {"ds": {"scale": 1.0, "offset": [0, 0]},
                  "pixart": {"workflow": wf.name, "version": wf.version, "description": wf.description}},
        "version": 0.4,
    }


def _topological(graph: Mapping[str, Any]) -> list[str]:
    done: list[str] = []
    seen: set[str] = set()

    def visit(nid: str, stack: tuple[str, ...]) -> None:
        if nid in seen:
            return
        if nid in stack:
            raise WorkflowError(f"graph has a cycle through node {nid}")
        for v in graph[nid]["inputs"].values():
            if is_link(v):
                visit(v[0], stack + (nid,))
        seen.add(nid)
        done.append(nid)

    for nid in sorted(graph, key=int):
        visit(nid, ())
    return done


def editor_json_text(ui: Mapping[str, Any]) -> str:
    return json.dumps(ui, indent=2) + "\n"


# -------------------------------------------------------------------- CLI
def _fetch_object_info(url: str) -> dict[str, Any]:
    import urllib.request
    with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=60) as resp:  # noqa: S310 (operator-given URL)
        return json.loads(resp.read())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bridge.workflows", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="check every manifest against its graph (and a live ComfyUI with --url)")
    v.add_argument("--dir", type=Path, default=DEFAULT_WORKFLOWS_DIR)
    v.add_argument("--url", help="ComfyUI base URL whose /object_info the graphs are checked against")
    v.add_argument("--object-info", type=Path, help="a saved /object_info JSON instead of --url")
    e = sub.add_parser("export-editor", help="write the editor-format copies into the node pack's example_workflows/")
    e.add_argument("--dir", type=Path, default=DEFAULT_WORKFLOWS_DIR)
    e.add_argument("--out", type=Path, default=DEFAULT_EDITOR_DIR)
    e.add_argument("--url", help="ComfyUI base URL (its /object_info gives input order and types)")
    e.add_argument("--object-info", type=Path, help="a saved /object_info JSON instead of --url")
    e.add_argument("--check", action="store_true", help="only report files that are out of date (exit 1 if any)")
    e.add_argument("names", nargs="*", help="workflow names (default: all)")
    args = ap.parse_args(argv)
    try:
        workflows = load_workflows(args.dir)
    except WorkflowError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    object_info = None
    if args.object_info:
        object_info = json.loads(args.object_info.read_text())
    elif args.url:
        object_info = _fetch_object_info(args.url)
    if args.cmd == "validate":
        problems = []
        if object_info is not None:
            for wf in workflows.values():
                problems += check_object_info(wf, object_info)
        for line in problems:
            print(line, file=sys.stderr)
        print(f"{len(workflows)} workflows, {len(problems)} problems")
        return 1 if problems else 0
    if object_info is None:
        print("export-editor needs --url or --object-info (input order comes from /object_info)", file=sys.stderr)
        return 2
    stale = 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or sorted(workflows):
        wf = get_workflow(workflows, name)
        text = editor_json_text(export_editor(wf, object_info))
        path = args.out / f"{wf.name}.json"
        if args.check:
            if not path.exists() or path.read_text() != text:
                print(f"out of date: {path}")
                stale += 1
        else:
            path.write_text(text)
            print(f"wrote {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
