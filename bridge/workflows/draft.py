"""Drafting a manifest for a workflow someone tuned in the editor (`python -m bridge.workflows new FILE`).

Every widget input of the chosen nodes becomes a parameter whose type, default and limits come from the live
`/object_info` (the graph's own value is the default); every image-loading node becomes a required image
parameter; every image-saving node an `images` output. The draft is then loaded and checked like any shipped
workflow, so what `new` writes is served as it is after a restart (or `POST /workflows/reload`).
"""
from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bridge import fields
from bridge.errors import WorkflowError

from .editor import PRIMITIVE, RANDOMIZED, editor_to_api, is_api_format, is_editor_format, widget_layout
from .graph import is_link, links, node_number, node_shape_problem
from .manifest import is_limit
from .object_info import WIDGET_TYPES, combo_options, input_spec, widget_default

IMAGE_LOADERS = {"LoadImage": "image", "LoadImageMask": "image"}
IMAGE_SAVERS = frozenset({"SaveImage", "PreviewImage", "SaveImageWebsocket"})
SEED_INPUTS = frozenset({"seed", "noise_seed"})


def read_workflow_file(path: Path, object_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """An API graph from an API-format JSON, an editor-format JSON, or a PNG that ComfyUI saved (its chunks)."""
    try:
        return _read_workflow_file(path, object_info)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, ArithmeticError, RecursionError) as exc:
        # a shared file is anyone's: whatever it holds, the user gets one line naming it, not a traceback
        what = f"{type(exc).__name__}: {exc}" if not isinstance(exc, json.JSONDecodeError) else f"not JSON ({exc})"
        raise WorkflowError(f"{path.name}: not a workflow this can read ({what[:200]})") from exc


def _read_workflow_file(path: Path, object_info: Mapping[str, Any] | None) -> dict[str, Any]:
    raw = path.read_bytes()
    if raw[:8] == b"\x89PNG\r\n\x1a\n":
        chunks = png_text(raw, path.name)
        text = chunks.get("prompt") or chunks.get("workflow")
        if not text:
            raise WorkflowError(f"{path.name}: the PNG carries no ComfyUI workflow (no 'prompt' or 'workflow' chunk)")
        data = json.loads(text)
    else:
        data = json.loads(raw)
    if is_api_format(data):
        for nid, node in data.items():
            if (problem := node_shape_problem(node)) is not None:
                raise WorkflowError(f"{path.name}: node {str(nid)[:40]!r} {problem}")
        return data
    if is_editor_format(data):
        if object_info is None:
            raise WorkflowError(f"{path.name} is in the editor format: reading it needs --url or --object-info "
                                f"(widget values are stored by position)")
        return editor_to_api(data, object_info)
    raise WorkflowError(f"{path.name} is neither an API-format nor an editor-format ComfyUI workflow")


# The most a PNG's workflow texts may unpack to, together: far past any workflow (a compressed chunk could otherwise
# unpack to gigabytes from a small file, and a file may hold many).
MAX_PNG_TEXT = 64 * 2**20
_WORKFLOW_KEYS = (b"prompt", b"workflow")
_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")


def _inflate(data: bytes, name: str, room: int) -> bytes:
    try:
        out = zlib.decompressobj().decompress(data, room + 1)
    except zlib.error as exc:
        raise WorkflowError(f"{name}: a text chunk does not unpack ({exc})") from None
    if len(out) > room:
        raise WorkflowError(f"{name}: its text chunks unpack to more than {MAX_PNG_TEXT // 2**20} MiB")
    return out


def png_text(raw: bytes, name: str) -> dict[str, str]:
    """The `prompt` and `workflow` texts of a PNG (tEXt, zTXt or iTXt chunks, where ComfyUI stores them), read from
    the chunks alone: the pixels are never decoded, so a header that claims a huge picture costs nothing; other
    chunks are skipped unread, and the texts kept unpack to at most MAX_PNG_TEXT together."""
    out: dict[str, str] = {}
    room = MAX_PNG_TEXT
    pos = 8
    while pos + 12 <= len(raw):
        length = int.from_bytes(raw[pos:pos + 4], "big")
        kind, body = raw[pos + 4:pos + 8], raw[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IEND":
            break
        if kind not in _PNG_TEXT:
            continue
        key, _, rest = body.partition(b"\0")
        if key not in _WORKFLOW_KEYS:
            continue
        if kind == b"tEXt":
            data = rest
        elif kind == b"zTXt":
            data = _inflate(rest[1:], name, room)
        else:  # iTXt: compressed flag, method, language tag, translated keyword, text (UTF-8)
            compressed = rest[:1] == b"\1"
            _, _, rest = rest[2:].partition(b"\0")
            _, _, rest = rest.partition(b"\0")
            data = _inflate(rest, name, room) if compressed else rest
        room -= len(data)
        if room < 0:
            raise WorkflowError(f"{name}: its text chunks unpack to more than {MAX_PNG_TEXT // 2**20} MiB")
        out[key.decode("latin-1")] = data.decode("utf-8" if kind == b"iTXt" else "latin-1")  # a repeated key: the last
    return out


def _unique(name: str, taken: set[str], node_id: str) -> str:
    """A parameter name (the manifest's pattern: ASCII, at most 64 characters) no other parameter has."""
    base = (re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "value")[:48]
    candidate, n = base, 1
    while candidate in taken:
        candidate = f"{base}_{node_id}" if n == 1 else f"{base}_{node_id}_{n}"
        n += 1
    taken.add(candidate)
    return candidate


def _number(value: Any, kind: type) -> Any:
    """A widget value stored as text ("20", "7.5"), as ComfyUI casts it; anything else as it is."""
    if isinstance(value, str):
        try:
            number = kind(value.strip())
        except ValueError:
            return value
        return number if kind is int or math.isfinite(number) else value
    return value


def _renumber(graph: dict[str, Any]) -> dict[str, Any]:
    """Decimal node ids, as the manifest format (and the editor) needs; links follow."""
    if all(node_number(k) is not None for k in graph):
        return graph
    mapping = {old: str(i + 1) for i, old in enumerate(graph)}
    out = {}
    for old, node in graph.items():
        inputs = {k: ([mapping[v[0]], v[1]] if is_link(v) and v[0] in mapping else v)
                  for k, v in node["inputs"].items()}
        out[mapping[old]] = {**node, "inputs": inputs}
    return out


def _parameter(cls: str, name: str, value: Any, kind: Any, opts: Mapping[str, Any], node_id: str, *,
               randomized: bool = False, choices: list[Any] | None = None) -> dict[str, Any]:
    target = [{"node": node_id, "input": name}]
    desc = opts.get("tooltip") or f"{cls} {name}"
    if isinstance(kind, list) or kind == "COMBO":
        if choices and value not in choices:
            # a shared graph's model file this backend lacks: as the default, every call leaving it out is refused
            desc = f"{desc} (the graph's {str(value)[:120]!r} is not on the backend; its first choice is the default)"
            value = choices[0]
        # Live list: a fixed one in the manifest would go stale as models come and go on the backend.
        return {"type": "choice", "default": value, "choices_from": f"{cls}.{name}", "description": desc,
                "targets": target}
    spec: dict[str, Any] = {"description": desc, "targets": target, "default": value}
    if kind == "INT":
        spec.update(type="int", default=_number(value, int))
        for key in ("min", "max"):
            if is_limit(opts.get(key)):
                spec[key] = int(opts[key])
        step = opts.get("step")
        if name in SEED_INPUTS:
            spec.update(random_value=-1, min=max(0, spec.get("min", 0)))
            if randomized:  # the editor drew a new one for every run: so does a call that leaves it out
                spec["default"] = -1
        elif isinstance(step, int) and step > 1 and spec.get("min", 0) % step == 0 \
                and isinstance(spec["default"], int) and spec["default"] % step == 0:
            # only where the graph's own value keeps the step: ComfyUI itself does not enforce it
            spec["multiple_of"] = step
    elif kind == "FLOAT":
        spec.update(type="float", default=_number(value, float))
        for key in ("min", "max"):
            if is_limit(opts.get(key)):
                spec[key] = opts[key]
    elif kind == "BOOLEAN":
        spec["type"] = "bool"
    else:
        spec["type"] = "string"
        if isinstance(value, str) and len(value) > fields.MAX_TEXT:
            spec["max_length"] = len(value)  # the graph's own text is longer than requests' usual limit
    return spec


def _fill_missing_widgets(node: dict[str, Any], info: Mapping[str, Any]) -> None:
    """A required widget an API graph lacks (the node gained it after the graph was exported) gets the value the
    editor gives it, as the editor does when it opens the file: ComfyUI refuses a job without it."""
    for name, widget, _opts, required in widget_layout(info):
        if required and widget is not None and name not in node["inputs"]:
            value = widget_default(info, name)
            if value is not None:
                node["inputs"][name] = value


# Conditioning nodes whose output holds nothing of their input's text: Flux, Z-Image and Qwen-Image graphs (ComfyUI's
# own templates among them) feed the prompt's conditioning through ConditioningZeroOut as the negative, and that
# text is the prompt, not a text of both sides.
EMPTYING_CONDITIONING = frozenset({"ConditioningZeroOut"})


def _prompt_roles(graph: Mapping[str, Any]) -> dict[str, str]:
    """node id -> "prompt" / "negative_prompt" for the nodes whose output reaches a sampler's `positive` or
    `negative` input (through any conditioning nodes between, but for those that empty it), where it reaches only
    one of them. Walked up from those inputs, once per side, so a large graph costs its size, not its size
    squared."""
    reach: dict[str, set[str]] = {}
    for side in ("positive", "negative"):
        todo = [str(v[0]) for node in graph.values() for iname, v in links(node) if iname == side]
        seen = set(todo)
        while todo:
            node = graph.get(todo.pop())
            if node is not None and node.get("class_type") in EMPTYING_CONDITIONING:
                continue
            for iname, (src, _) in links(node) if node is not None else ():
                if iname not in ("positive", "negative") and str(src) not in seen:
                    seen.add(str(src))
                    todo.append(str(src))
        reach[side] = seen
    return {**{nid: "prompt" for nid in reach["positive"] - reach["negative"]},
            **{nid: "negative_prompt" for nid in reach["negative"] - reach["positive"]}}


def _notes(meta: dict[str, Any]) -> tuple[set[str], dict[str, dict[str, Any]]]:
    """editor_to_api's notes, taken out of `meta` (they are the draft's, not the graph's); in an API file someone
    wrote they may hold anything, and what is not a note's shape is ignored."""
    randomized, driven = meta.pop(RANDOMIZED, None), meta.pop(PRIMITIVE, None)
    return ({r for r in randomized if isinstance(r, str)} if isinstance(randomized, list) else set(),
            {k: v for k, v in driven.items() if isinstance(v, dict) and isinstance(v.get("node"), str)}
            if isinstance(driven, dict) else {})


def _share(param: dict[str, Any], other: dict[str, Any]) -> None:
    """One PrimitiveNode drives both widgets: `param` sets `other`'s target too, within both widgets' limits."""
    param["targets"] += other["targets"]
    for key, pick in (("min", max), ("max", min)):
        if key in other:
            param[key] = pick(param[key], other[key]) if key in param else other[key]


def draft_manifest(graph: Mapping[str, Any], object_info: Mapping[str, Any], *, name: str, description: str = "",
                   nodes: Iterable[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(graph, manifest) for `graph`. `nodes`: ids (or class types, or titles) whose widgets become parameters;
    None: every node's. Image loaders always become image parameters and image savers outputs."""
    graph = _renumber({k: dict(v) for k, v in graph.items()})
    wanted = None if nodes is None else set(nodes)
    params: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    taken: set[str] = set()
    roles = _prompt_roles(graph)
    by_primitive: dict[str, str] = {}  # PrimitiveNode id -> the parameter it became
    for nid, node in sorted(graph.items(), key=lambda kv: node_number(kv[0]) or 0):
        cls = node["class_type"]
        info = object_info.get(cls)
        if info is None:
            raise WorkflowError(f"node {nid} ({cls}) is not installed on the backend")
        node["inputs"] = dict(node["inputs"])
        _fill_missing_widgets(node, info)
        meta = dict(node.get("_meta") or {})
        randomized, driven = _notes(meta)
        if meta:
            node["_meta"] = meta
        else:
            node.pop("_meta", None)
        title = meta.get("title") if isinstance(meta.get("title"), str) else None
        if cls in IMAGE_SAVERS:
            outputs[_unique("images" if not outputs else f"images_{nid}", set(outputs), nid)] = \
                {"node": nid, "type": "images"}
            continue
        if cls in IMAGE_LOADERS:
            pname = _unique("mask" if cls == "LoadImageMask" else "image", taken, nid)
            params[pname] = {"type": "image", "required": True, "description": f"Input image for node {nid} ({cls}).",
                             "targets": [{"node": nid, "input": IMAGE_LOADERS[cls]}]}
            continue
        if wanted is not None and not ({nid, cls, title} & wanted):
            continue
        for iname, value in node["inputs"].items():
            spec = input_spec(info, iname)
            if spec is None or is_link(value):
                continue
            kind, opts = spec
            if kind not in WIDGET_TYPES and not isinstance(kind, list):
                continue
            param = _parameter(cls, iname, value, kind, opts, nid, randomized=iname in randomized,
                               choices=combo_options(info, iname))
            primitive = driven.get(iname, {})
            if primitive.get("node") in by_primitive:
                _share(params[by_primitive[primitive["node"]]], param)
                continue
            label = primitive.get("title") if primitive.get("title") not in (None, "", "Primitive") else iname
            if kind == "STRING" and nid in roles and label == iname:
                label = roles[nid]  # a sampler's positive or negative text: what every client calls it
            pname = _unique(str(label), taken, nid)
            params[pname] = param
            if primitive:
                by_primitive[primitive["node"]] = pname
    if not outputs:
        raise WorkflowError("the workflow has no image-saving node (SaveImage, PreviewImage or SaveImageWebsocket); "
                            "add one so the bridge has something to return")
    manifest = {"name": name, "version": 1, "description": description or f"{name} (drafted from a ComfyUI graph)",
                "workflow": f"{name}.json", "parameters": params, "outputs": outputs}
    return graph, manifest


def write_draft(out_dir: Path, graph: Mapping[str, Any], manifest: Mapping[str, Any], *,
                force: bool = False) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{manifest['name']}.json", out_dir / f"{manifest['name']}.manifest.json"]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise WorkflowError(f"{existing[0]} exists; pass --force to replace it")
    paths[0].write_text(json.dumps(graph, indent=2) + "\n")
    paths[1].write_text(json.dumps(manifest, indent=2) + "\n")
    return paths
