"""A1111's infotext: the `parameters` text chunk every A1111-made PNG carries, which image viewers, Civitai and
A1111's own "PNG Info" read back. The bridge writes it into stored results (BRIDGE_OUTPUT_METADATA=infotext) in
place of ComfyUI's graph chunks, which reveal server paths and model names.

The text is the prompt, an optional `Negative prompt: ...` line, and a last line of `Key: value` pairs; a value
holding a comma, colon, newline or quote is written as a JSON string so that it parses back.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

# Workflow parameter -> infotext key, in the order A1111 writes them. Workflows that name a knob differently have
# no line for it: an infotext says only what is known to have run.
KEYS = (("steps", "Steps"), ("sampler", "Sampler"), ("scheduler", "Schedule type"), ("cfg", "CFG scale"),
        ("seed", "Seed"), ("size", "Size"), ("checkpoint", "Model"), ("denoise", "Denoising strength"),
        ("clip_skip", "Clip skip"))


def quote(value: Any) -> str:
    """A value as the infotext writes it: JSON-quoted when it holds a separator, so it parses back."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def write(prompt: str, negative_prompt: str, params: Mapping[str, Any]) -> str:
    """The infotext of one image: `params` in order, None values left out."""
    line = ", ".join(f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def for_job(workflow: str, version: int, params: Mapping[str, Any], given: str | None = None) -> str:
    """A job's infotext: `given` when its adapter wrote one (it knows what a graph derived, e.g. AleaArt's
    on-chain values), else built from the workflow parameters it ran with."""
    if given:
        return given
    values: dict[str, Any] = {}
    for name, key in KEYS:
        if name == "size":
            if isinstance(params.get("width"), int) and isinstance(params.get("height"), int):
                values[key] = f"{params['width']}x{params['height']}"
        elif name == "checkpoint" and isinstance(params.get(name), str):
            values[key] = PurePath(params[name]).stem  # A1111 writes the model's name, not its path
        elif isinstance(params.get(name), (str, int, float)) and not isinstance(params.get(name), bool):
            values[key] = params[name]
    values["Workflow"] = f"{workflow} v{version}"
    prompt = params.get("prompt") if isinstance(params.get("prompt"), str) else ""
    loras = params.get("loras")
    if isinstance(loras, list):
        # A1111's prompts carry their LoRAs as tags, so its readers find them there.
        tags = [f"<lora:{PurePath(str(item['name'])).stem}:{item.get('strength', 1)}>" for item in loras
                if isinstance(item, Mapping) and item.get("name")]
        prompt = " ".join([prompt, *tags]).strip()
    negative = params.get("negative_prompt") if isinstance(params.get("negative_prompt"), str) else ""
    return write(prompt, negative, values)
