"""Drafting a manifest for a workflow someone tuned in the editor (`python -m bridge.workflows new FILE`).

Every widget input of the chosen nodes becomes a parameter whose type, default and limits come from the live
`/object_info` (the graph's own value is the default); every image-loading node becomes a required image
parameter; every image-saving node an `images` output. The draft is then loaded and checked like any shipped
workflow, so what `new` writes is served as it is after a restart (or `POST /workflows/reload`).
"""
from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bridge.errors import WorkflowError

from .editor import editor_to_api, is_api_format, is_editor_format
from .graph import is_link, node_number
from .object_info import input_spec

IMAGE_LOADERS = {"LoadImage": "image", "LoadImageMask": "image"}
IMAGE_SAVERS = frozenset({"SaveImage", "PreviewImage", "SaveImageWebsocket"})
SEED_INPUTS = frozenset({"seed", "noise_seed"})


def read_workflow_file(path: Path, object_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """An API graph from an API-format JSON, an editor-format JSON, or a PNG that ComfyUI saved (its chunks)."""
    try:
        return _read_workflow_file(path, object_info)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        # a shared file is anyone's: whatever it holds, the user gets one line naming it, not a traceback
        what = f"{type(exc).__name__}: {exc}" if not isinstance(exc, json.JSONDecodeError) else f"not JSON ({exc})"
        raise WorkflowError(f"{path.name}: not a workflow this can read ({what[:200]})") from exc


def _read_workflow_file(path: Path, object_info: Mapping[str, Any] | None) -> dict[str, Any]:
    raw = path.read_bytes()
    if raw[:8] == b"\x89PNG\r\n\x1a\n":
        from PIL import Image

        with Image.open(io.BytesIO(raw)) as im:
            chunks = dict(getattr(im, "text", {}) or {})
        text = chunks.get("prompt") or chunks.get("workflow")
        if not text:
            raise WorkflowError(f"{path.name}: the PNG carries no ComfyUI workflow (no 'prompt' or 'workflow' chunk)")
        data = json.loads(text)
    else:
        data = json.loads(raw)
    if is_api_format(data):
        return data
    if is_editor_format(data):
        if object_info is None:
            raise WorkflowError(f"{path.name} is in the editor format: reading it needs --url or --object-info "
                                f"(widget values are stored by position)")
        return editor_to_api(data, object_info)
    raise WorkflowError(f"{path.name} is neither an API-format nor an editor-format ComfyUI workflow")


def _unique(name: str, taken: set[str], node_id: str) -> str:
    candidate = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "value"
    if candidate in taken:
        candidate = f"{candidate}_{node_id}"
    taken.add(candidate)
    return candidate


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


def _parameter(cls: str, name: str, value: Any, kind: Any, opts: Mapping[str, Any], node_id: str) -> dict[str, Any]:
    target = [{"node": node_id, "input": name}]
    desc = opts.get("tooltip") or f"{cls} {name}"
    if isinstance(kind, list) or kind == "COMBO":
        # Live list: a fixed one in the manifest would go stale as models come and go on the backend.
        return {"type": "choice", "default": value, "choices_from": f"{cls}.{name}", "description": desc,
                "targets": target}
    spec: dict[str, Any] = {"description": desc, "targets": target, "default": value}
    if kind == "INT":
        spec["type"] = "int"
        for key, out in (("min", "min"), ("max", "max")):
            if isinstance(opts.get(key), (int, float)):
                spec[out] = int(opts[key])
        if name in SEED_INPUTS:
            spec.update(random_value=-1, min=max(0, spec.get("min", 0)))
        elif isinstance(opts.get("step"), int) and opts["step"] > 1 and spec.get("min", 0) % opts["step"] == 0:
            spec["multiple_of"] = opts["step"]
    elif kind == "FLOAT":
        spec["type"] = "float"
        for key in ("min", "max"):
            if isinstance(opts.get(key), (int, float)):
                spec[key] = opts[key]
    elif kind == "BOOLEAN":
        spec["type"] = "bool"
    else:
        spec["type"] = "string"
    return spec


def draft_manifest(graph: Mapping[str, Any], object_info: Mapping[str, Any], *, name: str, description: str = "",
                   nodes: Iterable[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(graph, manifest) for `graph`. `nodes`: ids (or class types, or titles) whose widgets become parameters;
    None: every node's. Image loaders always become image parameters and image savers outputs."""
    graph = _renumber({k: dict(v) for k, v in graph.items()})
    wanted = None if nodes is None else set(nodes)
    params: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    taken: set[str] = set()
    for nid, node in sorted(graph.items(), key=lambda kv: node_number(kv[0]) or 0):
        cls = node["class_type"]
        info = object_info.get(cls)
        if info is None:
            raise WorkflowError(f"node {nid} ({cls}) is not installed on the backend")
        title = (node.get("_meta") or {}).get("title")
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
            if kind not in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO") and not isinstance(kind, list):
                continue
            params[_unique(iname, taken, nid)] = _parameter(cls, iname, value, kind, opts, nid)
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
