"""A list of LoRAs as text: what the LoRA stack node reads (one JSON list, so a workflow sets any number of LoRAs
through one input) and how a name finds its file.

`[{"name": "pixel_style", "strength": 0.8, "clip_strength": 1.0}]`: `strength` changes the diffusion model,
`clip_strength` (default: `strength`) the text encoder; a name is a file of the `loras` folder as ComfyUI lists it
(`sub/x.safetensors`) or its file stem (`x`) when only one file has that stem, as A1111 names LoRAs.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import PurePath

from .messages import quote

MAX_LORAS = 16
MAX_STRENGTH = 100.0  # ComfyUI's LoraLoader limits


@dataclass(frozen=True)
class LoraSpec:
    name: str
    strength: float
    clip_strength: float


def _strength(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or abs(value) > MAX_STRENGTH:
        raise ValueError(f"{where}: must be a number from -{MAX_STRENGTH:g} to {MAX_STRENGTH:g}, got {value!r}")
    return float(value)


def parse_stack(text: str) -> list[LoraSpec]:
    """The LoRAs a stack's text names, checked; empty text is no LoRA."""
    if not text or not text.strip():
        return []
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"loras: not JSON ({exc})") from None
    except RecursionError:  # "[[[[..." thousands deep: the decoder's own error is no ValueError and names no input
        raise ValueError("loras: nested too deeply; expected a JSON list of {name, strength, clip_strength}") \
            from None
    if not isinstance(items, list):
        raise ValueError("loras: must be a JSON list of {name, strength, clip_strength}")
    if len(items) > MAX_LORAS:
        raise ValueError(f"loras: {len(items)} LoRAs; at most {MAX_LORAS}")
    out = []
    for i, item in enumerate(items):
        where = f"loras[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
            raise ValueError(f"{where}: must be an object with a non-empty 'name'")
        unknown = set(item) - {"name", "strength", "clip_strength"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {', '.join(quote(k) for k in sorted(unknown)[:8])}")
        strength = _strength(item.get("strength", 1.0), f"{where}.strength")
        clip = _strength(item.get("clip_strength", strength), f"{where}.clip_strength")
        out.append(LoraSpec(item["name"].strip(), strength, clip))
    return out


def resolve_name(name: str, files: list[str]) -> str:
    """The file a LoRA name means: exact, else the one file with that stem or base name."""
    if name in files:
        return name
    matches = [f for f in files if PurePath(f).stem == name or PurePath(f).name == name]
    if len(matches) == 1:
        return matches[0]
    shown = ", ".join(files[:8]) + (f", ... ({len(files)} in all)" if len(files) > 8 else "")
    if matches:
        raise ValueError(f"LoRA {quote(name)} is ambiguous: {', '.join(matches)}; give the file name")
    raise ValueError(f"LoRA {quote(name)} is not in the loras folder (found: {shown or 'none'})")
