"""The graph editor's (UI, schema 0.4) workflow format, both ways.

`export_editor` writes a workflow's API graph as an editor file (the copies in the node pack's
`example_workflows/`); `editor_to_api` reads an editor file back into an API graph, so a graph someone tuned in the
editor and saved with "Save" (not "Export (API)") can become a served workflow. Both need `/object_info`: the editor
stores widget values by position, and only the node's declared input order says which value is which.
"""
from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from bridge.errors import WorkflowError

from .graph import is_link, links, topological
from .object_info import WIDGET_TYPES, check_object_info, input_spec, widget_default

if TYPE_CHECKING:
    from .workflow import Workflow

# Frontend-only nodes: they never reach the server.
_UI_ONLY = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
# Node modes: 0 always, 2 never (muted), 4 bypass.
_MUTED, _BYPASS = 2, 4


def widget_layout(info: Mapping[str, Any]) -> Iterator[tuple[str, str | None, dict[str, Any], bool]]:
    """Each declared input in the editor's order: (name, widget type or None for a socket, options, upload).

    The frontend lays widgets out in `input_order` (else declaration order), required before optional; an image
    upload combo adds an "upload" widget whose value comes right after the required inputs.
    """
    sections = info.get("input") or {}
    order = info.get("input_order") or {s: list(sections.get(s, {})) for s in ("required", "optional")}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = input_spec(info, name)
            if spec is None:
                continue
            kind, opts = spec
            type_name = "COMBO" if isinstance(kind, list) else kind
            widget = type_name in WIDGET_TYPES and not opts.get("forceInput")
            yield name, (type_name if widget else None), opts, section == "required"


def _extra_widgets(name: str, type_name: str, opts: Mapping[str, Any]) -> int:
    """UI-only widget values stored after this one, as the frontend adds them: an INT's control_after_generate (a
    seed's unless it says false), a combo's control_after_generate and its filter list."""
    control = opts.get("control_after_generate")
    if type_name == "INT":
        return 1 if (control if control is not None else name in ("seed", "noise_seed")) else 0
    return 2 if type_name == "COMBO" and control else 0


# editor_to_api's notes in a node's _meta, for draft_manifest (ComfyUI reads only a node's title from _meta): its
# INT widgets whose control says "randomize", and its widgets a PrimitiveNode drives ({input: {"node", "title"}}),
# so that one primitive shared by several nodes becomes one parameter
RANDOMIZED = "randomize"
PRIMITIVE = "primitive"
# The values export_editor stores for those widgets: the control "fixed" (the graph's value is what runs), no filter.
_EXTRA_VALUES = ("fixed", "")


def export_editor(wf: Workflow, object_info: Mapping[str, Any]) -> dict[str, Any]:
    """The graph in the editor's format (schema 0.4): nodes with widgets_values in input order, and links.

    Seed widgets get control_after_generate "fixed"; image-upload combos get the upload widget's value "image",
    which the frontend appends after the required inputs.
    """
    problems = check_object_info(wf, object_info, values=False)
    if problems:
        raise WorkflowError("; ".join(problems))
    graph = wf.graph
    order = topological(graph)
    depth: dict[str, int] = {}
    for nid in order:
        depth[nid] = 1 + max((depth[v[0]] for _, v in links(graph[nid])), default=-1)
    rows: dict[int, int] = {}
    nodes: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], list[tuple[str, Any]]]] = []
    for index, nid in enumerate(order):
        node = graph[nid]
        info = object_info[node["class_type"]]
        ui_inputs: list[dict[str, Any]] = []
        widgets: list[Any] = []
        link_inputs: list[tuple[str, Any]] = []
        upload = False
        required_done = False
        for name, type_name, opts, required in widget_layout(info):
            if not required and not required_done:
                required_done = True
                if upload:
                    widgets.append("image")
                    upload = False
            value = node["inputs"].get(name, opts.get("default"))
            if type_name is not None:
                if is_link(value):
                    ui_inputs.append({"name": name, "type": type_name, "widget": {"name": name}, "link": None})
                    link_inputs.append((name, value))
                    value = opts.get("default")
                if value is None and type_name == "COMBO":
                    value = widget_default(info, name)
                    value = "" if value is None else value
                widgets.append(value)
                widgets.extend(_EXTRA_VALUES[:_extra_widgets(name, type_name, opts)])
                upload = upload or bool(opts.get("image_upload"))
            elif name in node["inputs"] or required:
                kind = input_spec(info, name)[0]  # type: ignore[index]
                ui_inputs.append({"name": name, "type": kind, "link": None})
                if is_link(value):
                    link_inputs.append((name, value))
        if upload:
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
        pending.append((ui_node, link_inputs))
    by_id = {n["id"]: n for n in nodes}
    link_rows: list[list[Any]] = []
    for ui_node, link_inputs in pending:
        for name, (src, slot) in link_inputs:
            link_id = len(link_rows) + 1
            target_slot = next(i for i, inp in enumerate(ui_node["inputs"]) if inp["name"] == name)
            ui_node["inputs"][target_slot]["link"] = link_id
            src_node = by_id[int(src)]
            src_node["outputs"][slot]["links"].append(link_id)
            link_rows.append([link_id, int(src), slot, ui_node["id"], target_slot, src_node["outputs"][slot]["type"]])
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pixart:workflow:{wf.name}")), "revision": 0,
        "last_node_id": max(int(n) for n in graph), "last_link_id": len(link_rows),
        "nodes": nodes, "links": link_rows, "groups": [], "config": {},
        "extra": {"ds": {"scale": 1.0, "offset": [0, 0]},
                  "pixart": {"workflow": wf.name, "version": wf.version, "description": wf.description}},
        "version": 0.4,
    }


def editor_json_text(ui: Mapping[str, Any]) -> str:
    return json.dumps(ui, indent=2) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# editor -> API


def is_editor_format(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def is_api_format(data: Any) -> bool:
    return isinstance(data, dict) and bool(data) and all(
        isinstance(v, dict) and isinstance(v.get("class_type"), str) for v in data.values())


def _fits(a: Any, b: Any) -> bool:
    """LiteGraph.isValidConnection: "*" or no type fits any; else a shared type ("IMAGE,MASK" lists), any case."""
    a, b = ("" if t in (None, "*", 0) else str(t).lower() for t in (a, b))
    return not a or not b or bool(set(a.split(",")) & set(b.split(",")))


def _bypass_input(inputs: list[Any], outputs: list[Any], slot: int, want: Any) -> int | None:
    """The input a bypassed node passes its output `slot` through to an input of type `want`, as the frontend
    picks it (ExecutableNodeDTO's bypass slot): the input at the same index where its type fits, else the first
    of exactly that type, else the first that fits; None where none does."""
    if want in (None, "", "*"):
        return slot if len(inputs) > slot else (0 if inputs else None)
    out_type = outputs[slot].get("type") if slot < len(outputs) else None
    types = [inp.get("type") for inp in inputs]
    if slot < len(types) and _fits(types[slot], out_type) and _fits(types[slot], want):
        return slot
    if want in types:
        return types.index(want)
    return next((i for i, t in enumerate(types) if _fits(t, out_type) and _fits(t, want)), None)


# The frontend's virtual nodes inside a subgraph: links from a subgraph input leave the first, links to a subgraph
# output end at the second (litegraph's SUBGRAPH_INPUT_ID and SUBGRAPH_OUTPUT_ID).
_SUBGRAPH_IN, _SUBGRAPH_OUT = -10, -20
# A subgraph instance's type: its definition's id
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# The values of an INT widget's control after generate
_CONTROLS = ("fixed", "increment", "decrement", "randomize")
# Subgraphs inside subgraphs, at most this deep (a definition that contains itself would never end), and at most
# this many nodes once flattened (a definition using the next one twice, ten deep, is a thousand copies; thirty
# deep, a small file would be a billion).
MAX_SUBGRAPH_DEPTH = 32
MAX_FLAT_NODES = 20_000


def _link_row(row: Any) -> tuple[int, int, int, int, int, Any]:
    """(id, origin, origin slot, target, target slot, type) of a link: a list at the top level, an object in a
    subgraph's definition."""
    if isinstance(row, dict):
        return (int(row["id"]), int(row["origin_id"]), int(row["origin_slot"]), int(row["target_id"]),
                int(row["target_slot"]), row.get("type"))
    return int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]), (row[5] if len(row) > 5 else None)


def _shown_widgets(inst: Mapping[str, Any]) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """The widget values a subgraph instance shows: {subgraph input slot: shown} and {inner node id: {widget:
    shown}}, each shown as {"name", "value": [value, control?]}. With `properties.proxyWidgets` (the frontend's
    promoted widgets) `widgets_values` follow its entries: ["-1", input name] for a subgraph input's widget,
    [inner node id, widget] for a widget of a node inside; without it, the instance's inputs that show a widget.
    No value (an empty `widgets_values`) leaves the value inside as it is."""
    inputs = [i for i in inst.get("inputs") or [] if isinstance(i, dict)]
    held = inst.get("widgets_values") if isinstance(inst.get("widgets_values"), list) else []
    props = inst.get("properties") if isinstance(inst.get("properties"), dict) else {}
    proxies = props.get("proxyWidgets")
    entries = ([e for e in proxies] if isinstance(proxies, list)
               else [["-1", i.get("name")] for i in inputs if i.get("widget")])
    names = [i.get("name") for i in inputs]
    promoted: dict[int, dict[str, Any]] = {}
    inner: dict[int, dict[str, Any]] = {}
    pos = 0
    for n, entry in enumerate(entries):
        if pos >= len(held):
            break
        value = [held[pos]]
        pos += 1
        if pos < len(held) and held[pos] in _CONTROLS and len(held) - pos > len(entries) - n - 1:
            value.append(held[pos])  # an INT widget's control after generate, where stored after it
            pos += 1
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str)):
            continue
        if str(entry[0]) == "-1" and entry[1] in names:
            k = names.index(entry[1])
            promoted[k] = {"name": inputs[k].get("label") or entry[1], "value": value}
        elif str(entry[0]).lstrip("-").isdigit() and str(entry[0]) != "-1":
            inner.setdefault(int(entry[0]), {})[entry[1]] = {"name": entry[1], "value": value}
    return promoted, inner


def _flatten_subgraphs(ui: Mapping[str, Any]) -> dict[str, Any]:
    """The workflow with every subgraph instance replaced by its definition's nodes, as the frontend flattens
    it for the queue: a link from a subgraph input carries what feeds the instance's input; a link from the
    instance's output, what feeds the subgraph output inside. A subgraph input the instance does not feed but
    shows as a widget becomes a PrimitiveNode holding the instance's value, titled as the input, so that the
    value lands in every widget it drives and a draft makes one parameter of it. A muted or bypassed instance stays
    one node, which editor_to_api leaves out or passes through as any other."""
    defs = {d["id"]: d for d in ui["definitions"]["subgraphs"]
            if isinstance(d, dict) and isinstance(d.get("id"), str)}
    ids = [int(n["id"]) for n in ui.get("nodes") or []] + [int(n["id"]) for d in defs.values()
                                                          for n in d.get("nodes") or []]
    links = [_link_row(r)[0] for r in ui.get("links") or []] + [_link_row(r)[0] for d in defs.values()
                                                                for r in d.get("links") or []]
    fresh_node, fresh_link = itertools.count(max(ids, default=0) + 1), itertools.count(max(links, default=0) + 1)
    out_nodes: list[dict[str, Any]] = []
    out_links: list[list[Any]] = []
    expanded = [0]

    def primitive(shown: Mapping[str, Any], kind: Any) -> int:
        """A PrimitiveNode standing for a widget the instance shows: its value lands in what it feeds."""
        nid = next(fresh_node)
        out_nodes.append({"id": nid, "type": "PrimitiveNode", "mode": 0, "inputs": [], "title": shown["name"],
                          "outputs": [{"name": "value", "type": kind, "links": []}],
                          "widgets_values": shown["value"]})
        return nid

    def level(nodes: list[Any], rows: list[Any], bound: dict[int, tuple[int, int] | None],
              promoted: dict[int, dict[str, Any]], inner: dict[int, dict[str, Any]],
              depth: int) -> dict[int, tuple[int, int] | None]:
        if depth > MAX_SUBGRAPH_DEPTH:
            raise WorkflowError(f"subgraphs are nested more than {MAX_SUBGRAPH_DEPTH} deep (one contains itself?)")
        by_link = {r[0]: r for r in map(_link_row, rows or [])}
        inline = {int(n["id"]): n for n in nodes or []
                  if n.get("type") in defs and n.get("mode") not in (_MUTED, _BYPASS)}
        new_id = {int(n["id"]): next(fresh_node) for n in nodes or [] if int(n["id"]) not in inline}
        inlined: dict[int, dict[int, tuple[int, int] | None]] = {}
        made: dict[int, int] = {}  # subgraph input slot -> the PrimitiveNode standing for its widget

        def resolve(origin: int, slot: int) -> tuple[int, int] | None:
            if origin == _SUBGRAPH_IN:
                return bound.get(slot)
            if origin in inline:
                if origin not in inlined:
                    inlined[origin] = expand(inline[origin])
                return inlined[origin].get(slot)
            return (new_id[origin], slot) if origin in new_id else None

        def feed(link_id: Any) -> tuple[int, int] | None:
            row = by_link.get(int(link_id)) if link_id is not None else None
            if row is None:
                return None
            if row[1] == _SUBGRAPH_IN and bound.get(row[2]) is None and row[2] in promoted:
                if row[2] not in made:
                    made[row[2]] = primitive(promoted[row[2]], row[5])
                return made[row[2]], 0
            return resolve(row[1], row[2])

        def expand(inst: Mapping[str, Any]) -> dict[int, tuple[int, int] | None]:
            expanded[0] += 1  # instances count as nodes: definitions of nothing but instances multiply too
            if len(out_nodes) + expanded[0] > MAX_FLAT_NODES:
                raise WorkflowError(f"the subgraphs flatten to more than {MAX_FLAT_NODES:,} nodes")
            sub = defs[inst["type"]]
            inputs = inst.get("inputs") or []
            values, inside = _shown_widgets(inst)
            return level(sub.get("nodes") or [], sub.get("links") or [],
                         {k: feed(inp.get("link")) for k, inp in enumerate(inputs)}, values, inside, depth + 1)

        for node in nodes or []:
            nid = int(node["id"])
            if nid in inline:
                continue
            copy = {**node, "id": new_id[nid], "inputs": [dict(i) for i in node.get("inputs") or []],
                    "outputs": [{**o, "links": []} for o in node.get("outputs") or []]}
            shown = dict(inner.get(nid, {}))
            for inp in copy["inputs"]:
                if inp.get("name") in shown and inp.get("link") is None:
                    inp["link"] = ("shown", inp["name"])  # an input standing for a widget the instance overrides
            for widget in [w for w in shown if w not in {i.get("name") for i in copy["inputs"]}]:
                copy["inputs"].append({"name": widget, "type": "*", "widget": {"name": widget},
                                       "link": ("shown", widget)})
            for slot, inp in enumerate(copy["inputs"]):
                link = inp.get("link")
                producer = (primitive(shown[link[1]], inp.get("type")), 0) if isinstance(link, tuple) \
                    else feed(link)
                inp["link"] = None
                if producer is not None:
                    inp["link"] = next(fresh_link)
                    out_links.append([inp["link"], producer[0], producer[1], copy["id"], slot, inp.get("type")])
            out_nodes.append(copy)
            if len(out_nodes) + expanded[0] > MAX_FLAT_NODES:
                raise WorkflowError(f"the subgraphs flatten to more than {MAX_FLAT_NODES:,} nodes")
        for nid in inline:  # an instance nothing reads from still runs what it holds (a SaveImage inside)
            resolve(nid, 0)
        return {r[4]: resolve(r[1], r[2]) for r in by_link.values() if r[3] == _SUBGRAPH_OUT}

    level(ui.get("nodes") or [], ui.get("links") or [], {}, {}, {}, 0)
    by_id = {n["id"]: n for n in out_nodes}
    for row in out_links:  # outputs list their links again: a PrimitiveNode's value follows them
        outputs = by_id[row[1]].get("outputs") or []
        if 0 <= row[2] < len(outputs):
            outputs[row[2]]["links"].append(row[0])
    return {**ui, "nodes": out_nodes, "links": out_links, "definitions": {}}


def editor_to_api(ui: Mapping[str, Any], object_info: Mapping[str, Any]) -> dict[str, Any]:
    """An editor-format workflow as the API graph ComfyUI's frontend would queue for it (`graphToPrompt`).

    Subgraphs are flattened (`_flatten_subgraphs`), reroutes are followed, a PrimitiveNode's value lands in the
    widget it drives, notes are dropped, muted nodes are left out and bypassed nodes pass an input through
    (`_bypass_input`), as the frontend does.
    """
    if (ui.get("definitions") or {}).get("subgraphs"):
        ui = _flatten_subgraphs(ui)
    nodes: dict[int, Any] = {}
    for n in ui.get("nodes") or []:
        if int(n["id"]) in nodes:
            # the editor gives the second a new id as it opens the file; which links meant which node, only it says
            raise WorkflowError(f"node id {int(n['id'])} is used by more than one node; open the workflow in the "
                                f"editor and save it again")
        nodes[int(n["id"])] = n
    # link id -> (origin node, origin slot)
    origin = {r[0]: (r[1], r[2]) for r in map(_link_row, ui.get("links") or [])}

    def source(link_id: int | None, want: Any) -> list[Any] | None:
        """The real [node, slot] a link into an input of type `want` carries, through reroutes and bypassed nodes:
        a loop, not recursion, as a chain of them may be any length (a loop of them leads nowhere)."""
        seen: set[int] = set()
        while link_id is not None and link_id in origin:
            nid, slot = origin[link_id]
            node = nodes.get(nid)
            if node is None or nid in seen:
                return None
            if node.get("type") == "Reroute":
                seen.add(nid)
                link_id = next((inp["link"] for inp in node.get("inputs") or [] if inp.get("link") is not None), None)
                continue
            if node.get("mode") == _BYPASS:
                seen.add(nid)
                inputs = node.get("inputs") or []
                through = _bypass_input(inputs, (node.get("outputs") or []), slot, want)
                link_id = None if through is None else inputs[through].get("link")
                continue
            if node.get("mode") == _MUTED or node.get("type") in _UI_ONLY:
                return None
            return [str(nid), slot]
        return None

    # link id leaving a PrimitiveNode -> its value, whether its control draws a new one for every run (a seed
    # shared by several nodes is a PrimitiveNode's: [value, "randomize"]), and the primitive (id, title)
    primitives: dict[int, tuple[Any, bool, dict[str, str]]] = {}
    for nid, node in nodes.items():
        held = node.get("widgets_values")
        if node.get("type") == "PrimitiveNode" and isinstance(held, list) and held:
            title = node.get("title")
            which = {"node": str(nid), "title": title if isinstance(title, str) else ""}
            for out in node.get("outputs") or []:
                for link_id in out.get("links") or []:
                    primitives[int(link_id)] = (held[0], len(held) > 1 and held[1] == "randomize", which)

    graph: dict[str, Any] = {}
    for nid, node in sorted(nodes.items()):
        cls = node.get("type")
        if cls in _UI_ONLY or node.get("mode") in (_MUTED, _BYPASS):
            continue
        info = object_info.get(cls)
        if info is None and isinstance(cls, str) and _UUID.fullmatch(cls):
            raise WorkflowError(f"node {nid} is an instance of subgraph {cls}, which the file does not define "
                                f"(copied from another workflow?); open the workflow in the editor and save it again")
        if info is None:
            raise WorkflowError(f"node {nid} ({cls}) is not installed on the backend; install it or remove the node")
        ui_inputs = {i["name"]: i for i in node.get("inputs") or []}
        values = list(node.get("widgets_values") or [])
        if isinstance(node.get("widgets_values"), dict):
            raise WorkflowError(f"node {nid} ({cls}) stores its widgets by name (a custom frontend widget); "
                                f"export the workflow with 'Export (API)' instead")
        pos = 0
        upload = False
        required_done = False
        inputs: dict[str, Any] = {}
        randomized: list[str] = []  # INT widgets whose control draws a new value for every run
        driven: dict[str, dict[str, str]] = {}  # widgets a PrimitiveNode drives
        for name, type_name, opts, required in widget_layout(info):
            if not required and not required_done:
                required_done = True
                pos += 1 if upload else 0
                upload = False
            link_id = (ui_inputs.get(name) or {}).get("link")
            if type_name is not None:
                # a widget added to the node after the file was saved: the value the editor gives it
                value = values[pos] if pos < len(values) else widget_default(info, name)
                extra = _extra_widgets(name, type_name, opts)
                if type_name == "INT" and extra and link_id is None and pos + 1 < len(values) \
                        and values[pos + 1] == "randomize":
                    randomized.append(name)
                pos += 1 + extra
                upload = upload or bool(opts.get("image_upload"))
                if link_id is not None and int(link_id) in primitives:
                    value, drawn, driven[name] = primitives[int(link_id)]
                    if drawn and type_name == "INT":
                        randomized.append(name)
                elif link_id is not None:
                    value = source(int(link_id), ui_inputs[name].get("type"))
                if value is not None:
                    inputs[name] = value
            elif link_id is not None:
                linked = source(int(link_id), ui_inputs[name].get("type"))
                if linked is not None:
                    inputs[name] = linked
        entry: dict[str, Any] = {"class_type": cls, "inputs": inputs}
        meta = {"title": node["title"]} if node.get("title") else {}
        if randomized:
            meta[RANDOMIZED] = randomized
        if driven:
            meta[PRIMITIVE] = driven
        if meta:
            entry["_meta"] = meta
        graph[str(nid)] = entry
    return graph
