"""A workflow against one backend's `/object_info`: live choice lists, and every problem that would make ComfyUI
refuse or silently ignore part of the graph (missing node types, unknown or missing inputs, bad links, choices the
backend does not offer, outputs ComfyUI would never run)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bridge.errors import WorkflowError

from .graph import ancestors, dependents, is_link, links, node_number

if TYPE_CHECKING:
    from .workflow import Workflow

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def input_spec(info: Mapping[str, Any], input_name: str) -> tuple[Any, dict[str, Any]] | None:
    """(type, options) of a node input as `/object_info` declares it, or None."""
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


def widget_default(info: Mapping[str, Any], input_name: str) -> Any:
    """The value the editor gives a widget it has no saved value for: the declared default, else (a list without
    one) its first choice; None where neither exists."""
    spec = input_spec(info, input_name)
    if spec is None:
        return None
    if spec[1].get("default") is not None:
        return spec[1]["default"]
    options = combo_options(info, input_name)
    return options[0] if options else None


def choices_in(object_info: Mapping[str, Any], ref: str) -> list[str] | None:
    """The backend's list for `"<NodeClass>.<input>"`; None when the class or the list input is absent."""
    cls, _, inp = ref.partition(".")
    info = object_info.get(cls)
    return combo_options(info, inp) if info else None


def output_nodes(graph: Mapping[str, Any], object_info: Mapping[str, Any]) -> set[str]:
    """Ids of the graph's nodes whose class is an OUTPUT_NODE on that backend."""
    return {nid for nid, node in graph.items() if (object_info.get(node["class_type"]) or {}).get("output_node")}


# The names the upload button's value had in "Export (API)" files: ComfyUI 0.3's "upload" and the older
# "choose file to upload" (still in many shared scripts); ComfyUI ignores either.
UPLOAD_INPUTS = ("upload", "choose file to upload")


def _has_upload_button(declared: Mapping[str, Any]) -> bool:
    """Whether the editor gives the node an upload button, whose value an API export wrote as an input
    (UPLOAD_INPUTS)."""
    return any(isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict)
               and any(k.endswith("_upload") and v for k, v in spec[1].items()) for spec in declared.values())


def _node_problems(wf: Workflow, object_info: Mapping[str, Any], values: bool = True) -> list[str]:
    problems = []
    targeted = {(t.node, t.input) for p in wf.parameters.values() for t in p.targets} if values else None
    run = ancestors(wf.graph, output_nodes(wf.graph, object_info)) if values else set()  # what ComfyUI checks
    for nid, node in wf.graph.items():
        cls = node["class_type"]
        info = object_info.get(cls)
        where = f"workflow {wf.name}: node {nid} ({cls})"
        if info is None:
            problems.append(f"{where}: node type {cls!r} is not installed on the backend")
            continue
        declared = {**(info.get("input") or {}).get("required", {}), **(info.get("input") or {}).get("optional", {})}
        for iname in node["inputs"]:
            if iname not in declared and not (iname in UPLOAD_INPUTS and _has_upload_button(declared)):
                problems.append(f"{where}: input {iname!r} is not an input of {cls} "
                                f"(inputs: {', '.join(declared) or 'none'})")
        for iname in (info.get("input") or {}).get("required", {}):
            if iname not in node["inputs"]:
                problems.append(f"{where}: required input {iname!r} is missing")
        for iname, value in node["inputs"].items():
            # A fixed list value the backend lacks (a shared graph's checkpoint): ComfyUI refuses every job ("value
            # not in list"). Lists of uploaded files take any file that exists; parameters are checked per job.
            if targeted is None or nid not in run or (nid, iname) in targeted or not isinstance(value, str):
                continue
            spec = input_spec(info, iname)
            if spec is None or spec[1].get("image_upload"):
                continue
            options = combo_options(info, iname)
            if options is not None and value not in options:
                problems.append(f"{where}: input {iname!r} is {value[:200]!r}, which the backend does not offer "
                                f"(it has {', '.join(map(str, options[:8])) or 'none'}"
                                f"{', ...' if len(options) > 8 else ''})")
        for iname, value in links(node):
            if value[0] in wf.graph:
                src_cls = wf.graph[value[0]]["class_type"]
                src = object_info.get(src_cls)
                if src is not None and value[1] >= len(src.get("output", [])):
                    problems.append(f"{where}: input {iname!r} links to output {value[1]} of node {value[0]} "
                                    f"({src_cls}), which has {len(src.get('output', []))} outputs")
    return problems


def _parameter_problems(wf: Workflow, object_info: Mapping[str, Any]) -> list[str]:
    problems = []
    for p in wf.parameters.values():
        ref = p.choices_from or ("LoraLoader.lora_name" if p.type == "loras" else None)
        if ref:
            cls, _, inp = ref.partition(".")
            if cls not in object_info:
                problems.append(f"workflow {wf.name}: parameter {p.name!r} choices_from node type {cls!r} "
                                f"is not installed on the backend")
            elif combo_options(object_info[cls], inp) is None:
                problems.append(f"workflow {wf.name}: parameter {p.name!r} choices_from {ref!r} "
                                f"is not a list input")
        if p.choices is None:
            continue
        for t in p.targets:
            if t.map is not None:
                continue
            cls = wf.graph[t.node]["class_type"]
            opts = combo_options(object_info.get(cls, {}), t.input) if cls in object_info else None
            missing = [c for c in p.choices if opts is not None and c not in opts]
            if missing:
                problems.append(f"workflow {wf.name}: parameter {p.name!r} choices {missing} are not "
                                f"accepted by node {t.node} ({cls}) input {t.input!r}")
    return problems


def _output_problems(wf: Workflow, object_info: Mapping[str, Any]) -> list[str]:
    problems = []
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


def missing_node_types(wf: Workflow, object_info: Mapping[str, Any]) -> list[str]:
    """The node types the workflow's graph uses that the backend does not have, in graph order: a custom node pack
    it needs is not installed there."""
    return list(dict.fromkeys(n["class_type"] for n in wf.graph.values() if n["class_type"] not in object_info))


def check_object_info(wf: Workflow, object_info: Mapping[str, Any], *, values: bool = True) -> list[str]:
    """Every problem that would make ComfyUI refuse or silently ignore part of the graph; with `values` False,
    only those of its shape (a list value the backend lacks does not stop the editor from showing the graph)."""
    return (_node_problems(wf, object_info, values) + _parameter_problems(wf, object_info)
            + _output_problems(wf, object_info))


def execution_targets(wf: Workflow, names: list[str], object_info: Mapping[str, Any]) -> list[str]:
    """The output node ids ComfyUI must run (`partial_execution_targets`) to produce the named outputs.

    A value read from a non-output node needs one output node downstream of it; one that is already a
    target is preferred, so asking for a value never adds work the other requested outputs do not need.
    """
    outs = output_nodes(wf.graph, object_info)
    targets: list[str] = []
    later = []
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
            targets.append(min(downstream, key=lambda n: (len(ancestors(wf.graph, [n])), node_number(n) or 0, n)))
    return targets


__all__ = ["WIDGET_TYPES", "UPLOAD_INPUTS", "input_spec", "combo_options", "widget_default", "choices_in",
           "output_nodes", "check_object_info", "missing_node_types", "execution_targets", "is_link"]
