"""Loading workflows from folders: manifest + graph file, checked together, every problem named at once."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bridge.errors import WorkflowError, WorkflowNotFound

from .graph import check_graph, is_link, topological
from .manifest import Manifest, manifest_problems
from .workflow import Workflow


def _read_json(path: Path, what: str, label: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise WorkflowError(f"workflow {label}: cannot read {what} {path.name!r}: {exc}") from None


def _binding_problems(wf: Workflow) -> list[str]:
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
                elif is_link(v) and v[1] < 0:  # as check_graph refuses in the graph itself
                    problems.append(f"parameter {p.name!r} maps to output {v[1]} of node {v[0]!r}: outputs count "
                                    f"from 0")
        for r in p.rewire or ():
            node = wf.graph.get(r.node)
            if node is None or r.input not in node["inputs"]:
                problems.append(f"parameter {p.name!r} rewires {r.node}.{r.input}, which the graph does not set")
            if r.link[0] not in wf.graph:
                problems.append(f"parameter {p.name!r} rewires to a link from missing node {r.link[0]!r}")
    for o in wf.outputs.values():
        if o.node not in wf.graph:
            problems.append(f"output {o.name!r} reads missing node {o.node!r}")
    if not problems:
        problems += _cycles_made(wf)
    return problems


def _cycles_made(wf: Workflow) -> list[str]:
    """Parameters whose links (a rewire, a map to a link) would close a cycle in the graph."""
    problems = []
    for p in wf.parameters.values():
        changes = [[(r.node, r.input, r.link)] for r in (p.rewire or ())]
        changes = [[c for r in changes for c in r]] if changes else []
        changes += [[(t.node, t.input, v)] for t in p.targets for v in (t.map or {}).values() if is_link(v)]
        for change in changes:
            graph = dict(wf.graph)
            for node, name, link in change:
                graph[node] = {**graph[node], "inputs": {**graph[node]["inputs"], name: list(link)}}
            try:
                topological(graph)
            except WorkflowError as exc:
                problems.append(f"parameter {p.name!r} links make a cycle: {exc.message}")
                break
    return problems


def load_workflow(manifest_path: Path) -> Workflow:
    """Load one manifest and its graph; raises WorkflowError listing every problem found."""
    manifest_path = Path(manifest_path)
    label = manifest_path.name.removesuffix(".manifest.json")
    raw = _read_json(manifest_path, "manifest", label)
    if not isinstance(raw, dict):
        raise WorkflowError(f"workflow {label}: manifest must be a JSON object")
    if isinstance(raw.get("name"), str) and raw["name"]:
        label = raw["name"]
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        manifest = None
        problems = manifest_problems(exc)
    else:
        problems = []
    graph_file = (manifest.workflow if manifest else raw.get("workflow")) or f"{label}.json"
    if not isinstance(graph_file, str) or Path(graph_file).name != graph_file:
        # A graph file outside the manifest's folder would let a shared manifest read any JSON on the server.
        raise WorkflowError(f"workflow {label}: 'workflow' must name a file beside the manifest, got {graph_file!r}")
    graph = _read_json(manifest_path.parent / graph_file, "graph", label)
    problems += check_graph(graph)
    if manifest is None or problems:
        raise WorkflowError(f"workflow {label}: " + "; ".join(problems))
    wf = Workflow(name=manifest.name, version=manifest.version, description=manifest.description, graph=graph,
                  parameters=dict(manifest.parameters), outputs=dict(manifest.outputs), path=manifest_path,
                  manifest=raw, cost_rule=manifest.cost if isinstance(manifest.cost, (str, type(None)))
                  else tuple(manifest.cost), checks=tuple((c.rule, c.field, c.message) for c in manifest.checks))
    problems = _binding_problems(wf) or wf.check_defaults()
    if problems:
        raise WorkflowError(f"workflow {label}: " + "; ".join(problems))
    try:
        # Built on first use otherwise: a manifest pydantic cannot make a model of failed every request to it, and
        # /openapi.json for the whole bridge, instead of failing here.
        wf.request_model  # noqa: B018
        json.dumps(wf.describe(), allow_nan=False)
    except Exception as exc:  # noqa: BLE001 - whatever it is, it is this manifest's fault
        raise WorkflowError(f"workflow {label}: its parameters cannot be described ({type(exc).__name__}: "
                            f"{str(exc)[:200]})") from None
    return wf


def load_workflows(directory: Path, extra_dirs: Iterable[Path] = ()) -> dict[str, Workflow]:
    """Load every `*.manifest.json` in `directory` and then in each extra folder; raises one WorkflowError listing
    all broken workflows. A name may be declared once across all folders."""
    found: dict[str, Workflow] = {}
    problems = []
    for folder in (Path(directory), *(Path(d) for d in extra_dirs)):
        if folder != Path(directory) and not folder.is_dir():
            problems.append(f"workflows folder {folder} does not exist")
            continue
        for path in sorted(folder.glob("*.manifest.json")):
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
