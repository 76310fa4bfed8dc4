"""Graph algorithms on ComfyUI API-format graphs (`{node_id: {"class_type", "inputs"}}`): links, reachability,
order. Nothing here needs a backend or a manifest."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bridge.errors import WorkflowError


# The editor format stores node ids as JavaScript numbers: exact up to 15 digits.
MAX_ID_DIGITS = 15


def node_number(node_id: str) -> int | None:
    """A node id's number ("12" -> 12); None for an id that is not ASCII decimal digits, at most MAX_ID_DIGITS
    of them (str.isdigit() also takes "²", which int() refuses, and int() refuses 4300 digits or more)."""
    if node_id.isascii() and node_id.isdigit() and len(node_id) <= MAX_ID_DIGITS:
        return int(node_id)
    return None


def is_link(value: Any) -> bool:
    """An input wired to another node's output: `["node_id", slot]`."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def links(node: Mapping[str, Any]) -> Iterable[tuple[str, list[Any]]]:
    for name, value in node["inputs"].items():
        if is_link(value):
            yield name, value


def name_saved_files(graph: Mapping[str, Any], token: str) -> None:
    """Append `_token` to every node's `filename_prefix` (in place). ComfyUI answers a prompt it ran before from
    its cache, and a cached save node reports the first run's file instead of writing one; where the bridge has
    removed that file (it does once it holds a result) the second job would find nothing. A prefix of its own per
    prompt makes each save node run and write its file again (the nodes before it stay cached)."""
    for node in graph.values():
        prefix = node["inputs"].get("filename_prefix")
        if isinstance(prefix, str):
            node["inputs"]["filename_prefix"] = f"{prefix}_{token}"


def node_shape_problem(node: Any) -> str | None:
    """What an API-format node lacks ("needs ..."), or None."""
    if isinstance(node, dict) and isinstance(node.get("class_type"), str) and isinstance(node.get("inputs"), dict) \
            and isinstance(node.get("_meta", {}), dict):
        return None
    return "needs a 'class_type', an 'inputs' object and, if it has one, a '_meta' object"


def check_graph(graph: Any) -> list[str]:
    """Shape problems of an API-format graph (each names the node)."""
    if not isinstance(graph, dict) or not graph:
        return ["graph must be a non-empty object in ComfyUI API format"]
    if isinstance(graph.get("nodes"), list) and "links" in graph:
        # otherwise one problem per top-level key ('id', 'revision', 'links', ...), none saying what the file is
        return ["the graph file is in the editor format (the editor's 'Save'); use 'Export (API)', or draft the "
                "workflow from it with: python -m bridge.workflows new FILE --name NAME --url URL"]
    problems = []
    for nid, node in graph.items():
        if node_number(nid) is None:
            problems.append(f"node {nid[:40]!r}: ids must be decimal integers of at most {MAX_ID_DIGITS} digits "
                            f"(the editor format needs them)")
        if (problem := node_shape_problem(node)) is not None:
            problems.append(f"node {nid[:40]!r}: {problem}")
            continue
        for iname, value in node["inputs"].items():
            if isinstance(value, list) and not is_link(value):
                # ComfyUI reads every list as a link and refuses this one on every job
                problems.append(f"node {nid} ({node['class_type']}) input {iname[:40]!r} is a list that is not a link "
                                f"[\"node id\", output slot]: ComfyUI reads a list as a link (a list value is written "
                                f"{{\"__value__\": [...]}})")
        for iname, value in links(node):
            if value[0] not in graph:
                problems.append(f"node {nid} ({node['class_type']}) input {iname!r} links to missing node {value[0]!r}")
            elif value[1] < 0:  # ComfyUI would read the node's last output (a Python index), silently
                problems.append(f"node {nid} ({node['class_type']}) input {iname!r} links to output {value[1]} of "
                                f"node {value[0]!r}: outputs count from 0")
    if not problems:
        try:
            topological(graph)  # ComfyUI refuses a graph with a cycle: every job would fail
        except WorkflowError as exc:
            problems.append(exc.message)
    return problems


def ancestors(graph: Mapping[str, Any], roots: Iterable[str]) -> set[str]:
    """The roots and every node they read from, directly or through other nodes."""
    seen: set[str] = set()
    stack = [r for r in roots if r in graph]
    while stack:
        nid = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        stack.extend(v[0] for _, v in links(graph[nid]) if v[0] in graph)
    return seen


def dependents(graph: Mapping[str, Any], node_id: str) -> set[str]:
    """Every node that reads `node_id`'s outputs, directly or through other nodes."""
    readers: dict[str, set[str]] = {}
    for nid, node in graph.items():
        for _, v in links(node):
            readers.setdefault(v[0], set()).add(nid)
    seen: set[str] = set()
    stack = [node_id]
    while stack:
        for r in readers.get(stack.pop(), ()):
            if r not in seen:
                seen.add(r)
                stack.append(r)
    return seen


def topological(graph: Mapping[str, Any]) -> list[str]:
    """Node ids, every node after the nodes it reads from; ties in numeric id order. Refuses cycles. Depth-first
    with a stack of its own: a chain of thousands of nodes is no deeper for Python than one node."""
    done: list[str] = []
    seen: set[str] = set()
    for root in sorted(graph, key=lambda n: (node_number(n) or 0, n)):
        if root in seen:
            continue
        path = {root}
        stack = [(root, iter([v[0] for _, v in links(graph[root])]))]
        while stack:
            nid, reads = stack[-1]
            for dep in reads:
                if dep in seen:
                    continue
                if dep in path:
                    raise WorkflowError(f"graph has a cycle through node {dep}")
                path.add(dep)
                stack.append((dep, iter([v[0] for _, v in links(graph[dep])])))
                break
            else:
                stack.pop()
                path.discard(nid)
                seen.add(nid)
                done.append(nid)
    return done
