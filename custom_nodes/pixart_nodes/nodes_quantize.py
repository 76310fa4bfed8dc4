"""Quantize + dither node: maps images to a PIXART_PALETTE."""
from __future__ import annotations

import numpy as np

from .core import quantize as qz
from .core.color import ALPHA_THRESHOLD
from .core.palette import Palette
from .core.tensors import alpha_to_mask, image_to_uint8, mask_to_alpha, output_channels


class PixartQuantize:
    DESCRIPTION = (
        "Maps each image to a palette, optionally dithered (error diffusion: Floyd-Steinberg, Atkinson, "
        "Jarvis-Judice-Ninke, Stucki, Burkes, Sierra family; ordered: Bayer 2/4/8, blue noise). Output holds "
        "only palette colours, plus fully transparent pixels where the input has alpha. Error diffusion on images of "
        "more than 128 rows runs in two bands, as libimagequant's does (the second starts a few rows above the "
        "middle, with rows that only build up error)."
    )
    CATEGORY = "Pixart/Quantize"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "MASK", "INT")
    RETURN_NAMES = ("image", "mask", "colors_used")
    OUTPUT_TOOLTIPS = (
        "Quantized images, same channels as the input (RGBA stays RGBA; grey comes back as RGB, in the palette's "
        "colours).",
        "Transparency after quantization (1 = transparent); all zeros when the input has no alpha.",
        "Number of distinct palette colours used over the whole batch.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Images to quantize (RGB, or RGBA to keep transparency)."}),
                "palette": ("PIXART_PALETTE", {"tooltip": "Target palette, from Pixart Palette."}),
                "dither": (qz.DITHER_METHODS, {"default": "none", "tooltip": "Dithering method."}),
                "distance": (
                    list(qz.DISTANCES),
                    {
                        "default": "oklab",
                        "tooltip": "Colour distance for picking the nearest palette colour: OKLab "
                        "(perceptual) or RGB (squared sRGB difference, like Pillow).",
                    },
                ),
                "serpentine": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Error diffusion: alternate row direction (fewer streaks)."},
                ),
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.05,
                        "tooltip": "Share of the error diffused, or ordered-pattern amplitude; 0 = no dither.",
                    },
                ),
                "alpha_threshold": (
                    "INT",
                    {
                        "default": ALPHA_THRESHOLD,
                        "min": 0,
                        "max": 256,
                        "tooltip": "Pixels with alpha (0..255) below this become fully transparent, the "
                        "rest fully opaque.",
                    },
                ),
            },
            "optional": {
                "mask": (
                    "MASK",
                    {"tooltip": "Transparency for RGB images (1 = transparent, as from Load Image)."},
                ),
                "damping": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Error diffusion with libimagequant's rules: a pixel whose error is over 2.4x "
                        "the image's mean squared error without dithering passes on only 3/4 of it, and each pixel "
                        "takes at most 15/16 of the error it collects, less where the image without dithering "
                        "already has texture: fewer stray dots at edges, each pixel closer to its source, the same "
                        "average colour.",
                    },
                ),
            },
        }

    def run(self, image, palette, dither, distance, serpentine, strength, alpha_threshold, mask=None,
            damping=False):
        import torch

        if not isinstance(palette, Palette):
            raise ValueError(f"palette: expected a PIXART_PALETTE, got {type(palette).__name__}")
        if image.ndim == 3:
            image = image[None]
        b, h, w = image.shape[:3]
        c = output_channels(image.shape[3])
        out = torch.empty((b, h, w, c), dtype=torch.float32)
        alphas: list[np.ndarray] = []
        used = np.zeros(len(palette) + 1, dtype=bool)
        any_alpha = False
        for i in range(b):
            img = image_to_uint8(image[i])
            alpha = img[..., 3] if c == 4 else mask_to_alpha(mask, i, (h, w))
            if alpha is not None:
                any_alpha = True
                rgba = img if c == 4 else np.concatenate([img, alpha[..., None]], axis=2)
            else:
                rgba = img
            try:
                res = qz.quantize(
                    rgba, palette, dither=dither, distance=distance, serpentine=serpentine,
                    strength=strength, alpha_threshold=alpha_threshold, damping=bool(damping),
                )
            except ValueError as e:
                raise ValueError(f"Pixart Quantize: {e}") from None
            used[np.unique(res.indices)] = True
            px = res.image if res.image.shape[2] == c else res.image[..., :c]
            out[i] = torch.from_numpy(px).to(torch.float32).div_(255.0)
            alphas.append(res.image[..., 3] if res.image.shape[2] == 4 else np.full((h, w), 255, np.uint8))
        colors_used = int(used[: len(palette)].sum())
        out_mask = alpha_to_mask(alphas) if any_alpha else torch.zeros((b, h, w), dtype=torch.float32)
        return {"ui": {"colors_used": [colors_used]}, "result": (out, out_mask, colors_used)}


NODE_CLASS_MAPPINGS = {"PixartQuantize": PixartQuantize}
NODE_DISPLAY_NAME_MAPPINGS = {"PixartQuantize": "Pixart Quantize + Dither"}
