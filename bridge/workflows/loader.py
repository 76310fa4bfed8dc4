"""Loading workflows from folders: manifest + graph file, checked together, every problem named at once."""
from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bridge import jsontext
from bridge.errors import WorkflowError, WorkflowNotFound

from .graph import check_graph, dependents, is_link, topological
from .manifest import NAME_PATTERN, Manifest, manifest_problems
from .workflow import Workflow


# A shared file is anyone's, and a reload reads it in a thread that holds the interpreter lock while json parses:
# a 104 MB graph took 1 GB and held the event loop 0.55 s. The shipped files are at most 13 KB.
MAX_FILE_BYTES = 8 * 2**20
# As for request bodies (jsontext.MAX_DEPTH): every job deep-copies its graph, and a value nested 700 levels deep
# loaded, then failed every job with a RecursionError; 100,000 nodes loaded, then held the event loop 0.66 s a job.
MAX_VALUES = 100_000
# Each rewiring parameter, and each target whose map holds links, costs a walk over the whole graph.
MAX_LINKING = 64


def _read_json(path: Path, what: str, label: str) -> Any:
    problem = None
    try:
        # Not blocking, and regular files only: a FIFO dropped in held every reload (and start-up) for good, and a
        # link to /dev/zero was read until memory ran out.
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise WorkflowError(f"workflow {label}: cannot read {what} {path.name!r}: not a regular file")
            raw = f.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            problem = f"it is larger than {MAX_FILE_BYTES // 2**20} MiB"
        else:
            data = json.loads(raw)
            shape = jsontext.shape_problem(data, MAX_VALUES)
            problem = None if shape is None else f"it {shape}"
    except RecursionError:
        problem = f"it is nested more than {jsontext.MAX_DEPTH} levels deep"
    except (OSError, ValueError) as exc:  # ValueError too: an int of more than 4300 digits, a NUL in the name
        problem = str(exc)
    if problem is not None:
        raise WorkflowError(f"workflow {label}: cannot read {what} {path.name!r}: {problem[:300]}") from None
    return data


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
            for k, v in (t.map or {}).items():
                if isinstance(v, list) and not is_link(v):  # as check_graph refuses in the graph itself
                    problems.append(f"parameter {p.name!r} maps {k[:40]!r} to a list that is not a link [\"node id\", "
                                    f"output slot]: ComfyUI reads a list as a link")
                elif is_link(v) and v[0] not in wf.graph:
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
    # each a walk over the graph: a rewiring parameter, a target whose map holds links
    walks = [p.name for p in wf.parameters.values()
             for _ in [*(p.rewire[:1] if p.rewire else ()),
                       *(t for t in p.targets if any(is_link(v) for v in (t.map or {}).values()))]]
    if len(walks) > MAX_LINKING:
        named = ", ".join(repr(n) for n in dict.fromkeys(walks))
        return [f"parameters put links in place at {len(walks)} inputs (rewires and maps to links, at most "
                f"{MAX_LINKING}): {named[:200]}"]
    problems = []
    for p in wf.parameters.values():
        if p.rewire:  # put in place together
            graph = dict(wf.graph)
            for r in p.rewire:
                graph[r.node] = {**graph[r.node], "inputs": {**graph[r.node]["inputs"], r.input: list(r.link)}}
            try:
                topological(graph)
            except WorkflowError as exc:
                problems.append(f"parameter {p.name!r} links make a cycle: {exc.message}")
                continue
        for t in p.targets:
            # A map's links are put in place one at a time: one closes a cycle where its node reads this one's
            # output (the graph has no cycle), found once per target rather than once per choice (a 60 KB map
            # over 10,000 nodes took 20 s).
            sources = [v[0] for v in (t.map or {}).values() if is_link(v)]
            readers = dependents(wf.graph, t.node) | {t.node} if sources else set()
            looped = next((s for s in sources if s in readers), None)
            if looped is not None:
                problems.append(f"parameter {p.name!r} links make a cycle: graph has a cycle through node {looped}")
                break
    return problems


def load_workflow(manifest_path: Path) -> Workflow:
    """Load one manifest and its graph; raises WorkflowError listing every problem found."""
    manifest_path = Path(manifest_path)
    label = manifest_path.name.removesuffix(".manifest.json")
    # a file name is any bytes but / and NUL (undecodable ones arrive as lone surrogates, which no UTF-8 log or
    # answer can carry); a manifest's name any text, megabytes of it repeated in every message
    label = label if label.isprintable() else ascii(label)[1:-1]
    raw = _read_json(manifest_path, "manifest", label)
    if not isinstance(raw, dict):
        raise WorkflowError(f"workflow {label}: manifest must be a JSON object")
    if isinstance(raw.get("name"), str) and re.fullmatch(NAME_PATTERN, raw["name"]):
        label = raw["name"]
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        manifest = None
        problems = manifest_problems(exc)
    else:
        problems = []
    graph_file = (manifest.workflow if manifest else raw.get("workflow")) or f"{label}.json"
    if not isinstance(graph_file, str) or Path(graph_file).name != graph_file or len(graph_file) > 255:
        # A graph file outside the manifest's folder would let a shared manifest read any JSON on the server.
        raise WorkflowError(f"workflow {label}: 'workflow' must name a file beside the manifest, got "
                            f"{repr(graph_file)[:100]}")
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
