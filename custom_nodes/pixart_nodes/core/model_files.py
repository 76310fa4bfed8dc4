"""Facts about model files that only the machine holding them can read: a textual-inversion embedding's vector
width and count (what A1111's `/sdapi/v1/embeddings` reports), read from the file header where the format allows.

Safetensors: the JSON header lists every tensor's shape, so no weights are loaded. `.pt`/`.bin` (A1111's
`string_to_param` dicts, or diffusers' `{token: vector}`) are loaded with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

# A safetensors header is JSON metadata; one this large is not an embedding.
MAX_HEADER_BYTES = 16 * 1024 * 1024
# An embedding of more than this many bytes is no embedding either; it is not loaded.
MAX_PICKLE_BYTES = 64 * 1024 * 1024


def safetensors_header(path: str | Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than its header length)")
        (size,) = struct.unpack("<Q", raw)
        if size > MAX_HEADER_BYTES:
            raise ValueError(f"{path}: safetensors header of {size} bytes")
        header = json.loads(f.read(size))
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not a JSON object")
    return header


def _summary(shapes: list[list[int]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Vector count and width from the embedding's tensors: rows are vectors; several tensors (SDXL's clip_l and
    clip_g) are one embedding whose width is their sum, as A1111 reports it."""
    matrices = [s if len(s) == 2 else [1, s[0]] for s in shapes if len(s) in (1, 2)]
    if not matrices:
        raise ValueError("no vector tensors")
    extra = extra or {}
    return {"step": extra.get("step"), "sd_checkpoint": extra.get("sd_checkpoint"),
            "sd_checkpoint_name": extra.get("sd_checkpoint_name"),
            "shape": int(sum(m[1] for m in matrices)), "vectors": int(matrices[0][0])}


def embedding_summary(path: str | Path) -> dict[str, Any]:
    """{step, sd_checkpoint, sd_checkpoint_name, shape, vectors} of one embedding file."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        header = safetensors_header(path)
        shapes = [v["shape"] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
        return _summary(shapes)
    if path.stat().st_size > MAX_PICKLE_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes is too large for an embedding")
    import torch

    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not an embedding dictionary")
    if "string_to_param" in data:
        tensors = list(data["string_to_param"].values())
        extra = {k: data.get(k) for k in ("step", "sd_checkpoint", "sd_checkpoint_name")}
        return _summary([list(t.shape) for t in tensors], {k: v if isinstance(v, (int, str)) else None
                                                          for k, v in extra.items()})
    tensors = [v for v in data.values() if hasattr(v, "shape")]
    return _summary([list(t.shape) for t in tensors])
