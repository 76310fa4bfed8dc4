"""AleaArt parameters node: on-chain RenderParams (or the token seed) to prompt, size and sampler settings."""
from __future__ import annotations

from typing import Any

from .core import aleaart


def _ksampler_lists() -> tuple[Any, Any]:
    """KSampler's own SAMPLERS / SCHEDULERS list objects, or STRING outside ComfyUI.

    ComfyUI validates a link by comparing the output's RETURN_TYPES entry with the input's type, and KSampler's
    ``sampler_name`` type is the list itself, so only an equal list connects (a STRING output is refused as
    ``return_type_mismatch``). Unit tests import this module without ComfyUI; there STRING is reported.
    """
    try:
        import comfy.samplers  # noqa: PLC0415 - only available inside ComfyUI
    except Exception:  # ImportError, or a ComfyUI that fails to initialise outside its own process set-up
        return "STRING", "STRING"
    return comfy.samplers.KSampler.SAMPLERS, comfy.samplers.KSampler.SCHEDULERS


_SAMPLER_TYPE, _SCHEDULER_TYPE = _ksampler_lists()


def to_palette(resolved: dict[str, Any]):
    """The resolved palette as a ``pixart_nodes.core.palette.Palette``."""
    import numpy as np

    from .core.palette import Palette  # lazily: the palette family is a separate module

    colors = np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in resolved["palette"]], dtype=np.uint8)
    return Palette(resolved["palette_name"], colors)


class PixartAleaArtParams:
    DESCRIPTION = (
        "AleaArt token parameters to a Stable Diffusion job: from the on-chain RenderParams or from the token's "
        "32-byte seed (derived exactly as the contract's _deriveParams). Outputs AleaArt's prompt, size, steps, "
        "cfg/10, latent seed, the matching KSampler sampler/scheduler, and Pixart's palette for paletteId."
    )
    CATEGORY = "Pixart/AleaArt"
    FUNCTION = "run"
    RETURN_TYPES = ("STRING", "STRING", "INT", "INT", "INT", "FLOAT", "INT", _SAMPLER_TYPE, _SCHEDULER_TYPE,
                    "PIXART_PALETTE")
    RETURN_NAMES = ("prompt", "negative", "width", "height", "steps", "cfg", "seed", "sampler_name", "scheduler",
                    "palette")
    OUTPUT_TOOLTIPS = (
        "AleaArt's full prompt: template, style, aspect text, ' | max detail | 8k'.",
        "Negative prompt: AleaArt uses none, so this is empty.",
        "Image width AleaArt sends for aspectIndex (512, 1024 or 768).",
        "Image height AleaArt sends for aspectIndex (512, 576 or 1024).",
        "Sampling steps (18..64).",
        "CFG scale = cfg / 10 (7.0..18.0).",
        "latentSeed (uint32), for KSampler's seed.",
        "ComfyUI sampler for AleaArt's sampler name; connects to KSampler.sampler_name.",
        "ComfyUI scheduler for AleaArt's sampler name; connects to KSampler.scheduler.",
        "Pixart palette for paletteId (24 designed palettes, see docs/aleaart.md).",
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        r = aleaart.RANGES

        def index(name: str, tip: str) -> tuple[str, dict[str, Any]]:
            lo, hi = r[name]
            return ("INT", {"default": lo, "min": lo, "max": hi, "tooltip": f"{tip} ({lo}..{hi}); params mode."})

        return {
            "required": {
                "mode": (["params", "seed"], {
                    "default": "params",
                    "tooltip": "params: use the 8 RenderParams values below. seed: derive them from token_seed "
                               "as the AleaArt contract does (the 8 values are then ignored).",
                }),
                "promptIndex": index("promptIndex", "Prompt template index"),
                "styleIndex": index("styleIndex", "Style modifier index"),
                "samplerIndex": index("samplerIndex", "Sampler index: DPM++ 2M Karras, DPM++ SDE Karras, Euler a, "
                                                      "DPM++ 2M, DPM++ SDE, LMS"),
                "aspectIndex": index("aspectIndex", "Aspect index: square, landscape, portrait, wide, tall"),
                "steps": ("INT", {"default": 20, "min": r["steps"][0], "max": r["steps"][1],
                                  "tooltip": "Sampling steps as stored on chain (18..64); params mode."}),
                "cfg": ("INT", {"default": 75, "min": r["cfg"][0], "max": r["cfg"][1],
                                "tooltip": "CFG x10 as stored on chain (70..180 = 7.0..18.0); params mode."}),
                "latentSeed": ("INT", {"default": 0, "min": 0, "max": r["latentSeed"][1],
                                       "tooltip": "Latent seed, uint32 as stored on chain; params mode."}),
                "paletteId": index("paletteId", "Palette id"),
                "token_seed": ("STRING", {"default": "", "multiline": False,
                                          "tooltip": "The token's 32-byte seed (tokenSeed(tokenId)) as 0x + 64 hex "
                                                     "digits; seed mode."}),
            }
        }

    def run(self, mode: str, promptIndex: int, styleIndex: int, samplerIndex: int, aspectIndex: int, steps: int,
            cfg: int, latentSeed: int, paletteId: int, token_seed: str = "") -> dict[str, Any]:
        if mode == "seed":
            if not token_seed or not token_seed.strip():
                raise ValueError("token_seed: required in seed mode (0x + 64 hex digits)")
            params = aleaart.derive_params(aleaart.parse_seed(token_seed, field="token_seed"))
        elif mode == "params":
            params = aleaart.RenderParams.from_dict({
                "promptIndex": promptIndex, "styleIndex": styleIndex, "samplerIndex": samplerIndex,
                "aspectIndex": aspectIndex, "steps": steps, "cfg": cfg, "latentSeed": latentSeed,
                "paletteId": paletteId,
            })
        else:
            raise ValueError(f"mode: expected 'params' or 'seed', got {mode!r}")
        resolved = aleaart.resolve(params)
        report = dict(resolved, params=params.to_dict())
        result = (resolved["prompt"], resolved["negative_prompt"], resolved["width"], resolved["height"],
                  resolved["steps"], resolved["cfg"], resolved["seed"], resolved["sampler_name"],
                  resolved["scheduler"], to_palette(resolved))
        return {"ui": {"aleaart": [report]}, "result": result}


NODE_CLASS_MAPPINGS = {"PixartAleaArtParams": PixartAleaArtParams}
NODE_DISPLAY_NAME_MAPPINGS = {"PixartAleaArtParams": "AleaArt Parameters (Pixart)"}
