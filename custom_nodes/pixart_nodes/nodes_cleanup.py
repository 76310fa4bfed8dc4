"""Pixel-art cleanup node: thin wrapper around ``core.cleanup``."""
from __future__ import annotations

from .nodes_pixelate import join_alpha, split_alpha

BACKGROUND_MODES = ("keep", "auto", "colour")


class PixartCleanup:
    DESCRIPTION = (
        "Clean up pixel art at its true resolution (after Snap to Grid or Pixelate): merge near-duplicate shades, "
        "replace rare colours by their nearest neighbouring colour, remove isolated pixels and single-pixel "
        "jaggies (doubled corners of 1-px lines), and make the background transparent (its colour picked from "
        "the border, or given). Checkerboards and other dither patterns are left as they are."
    )
    CATEGORY = "Pixart/Pixelate"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("image", "mask", "report")
    OUTPUT_TOOLTIPS = (
        "The cleaned images (RGBA only when the input was; a removed background shows in the mask).",
        "Alpha as a mask (1 = transparent): the removed background and any input transparency; zeros otherwise.",
        "What was changed in the first image, e.g. '3 isolated pixels removed, 5 jaggies removed'.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": (
                    "Pixel art at one pixel per cell (run Snap to Grid or Pixelate with upscale off first).")}),
                "merge": ("FLOAT", {"default": 0.03, "min": 0.0, "max": 0.5, "step": 0.005, "tooltip": (
                    "Colours closer than this (OKLab distance; 0.02 is about the smallest visible step) become "
                    "the more common one: removes the shades noise and compression leave. 0 = off.")}),
                "rare": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.5, "step": 0.001, "tooltip": (
                    "Colours covering less than this share of the picture are replaced, pixel by pixel, by the "
                    "most similar neighbouring colour (0.002 = 0.2%). 0 = off; note a lone highlight colour is "
                    "rare too.")}),
                "isolated": ("BOOLEAN", {"default": True, "tooltip": (
                    "Remove isolated pixels: a pixel with no neighbour of its colour, surrounded mostly by one "
                    "colour, takes that colour. Pixels repeating two steps away (sparse dither, dotted lines) and "
                    "checkerboards stay.")}),
                "jaggies": ("BOOLEAN", {"default": True, "tooltip": (
                    "Remove single-pixel jaggies: the doubled corner pixel at each one-pixel step of a 1-px line "
                    "(as Aseprite's pixel-perfect stroke). Corners with two long arms stay.")}),
                "background": (list(BACKGROUND_MODES), {"default": "keep", "tooltip": (
                    "keep = leave the background; auto = make the most common border colour transparent; colour "
                    "= make background_colour transparent.")}),
                "background_colour": ("STRING", {"default": "#000000", "tooltip": (
                    "The background colour for background = colour, as #rrggbb.")}),
                "tolerance": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                    "How far (OKLab distance) a pixel's colour may be from the background colour and still be "
                    "background.")}),
                "connected": ("BOOLEAN", {"default": True, "tooltip": (
                    "On: only background-coloured areas connected to the image border become transparent (a "
                    "white eye inside a sprite on white stays). Off: every background-coloured pixel.")}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Optional alpha as a mask (1 = transparent), e.g. from Load Image."}),
            },
        }

    def run(self, image, merge=0.03, rare=0.0, isolated=True, jaggies=True, background="keep",
            background_colour="#000000", tolerance=0.05, connected=True, mask=None):
        from .core import cleanup as cu

        if background not in BACKGROUND_MODES:
            raise ValueError(f"background must be one of {BACKGROUND_MODES}, got {background!r}")
        bg = "auto" if background == "auto" else None
        if background == "colour":
            try:  # before any image is cleaned, and naming the widget (the core's message names none)
                bg = cu.parse_colour(background_colour)
            except ValueError as exc:
                raise ValueError(f"background_colour: {exc}") from None
        arrays, has_alpha, channels = split_alpha(image, mask)
        results = [cu.cleanup(a, merge=merge, rare=rare, isolated=isolated, jaggies=jaggies, background=bg,
                              tolerance=tolerance, connected=connected) for a in arrays]
        out = [r.image for r in results]
        made_alpha = any(a.shape[2] == 4 for a in out)
        if made_alpha:
            import numpy as np

            out = [a if a.shape[2] == 4 else np.dstack([a, np.full(a.shape[:2], 255, np.uint8)]) for a in out]
        # as everywhere in the pack, IMAGE keeps the input's channels and the alpha travels as the MASK
        image_out, mask_out = join_alpha(out, has_alpha or made_alpha, channels)
        report = results[0].summary()
        return {"ui": {"text": [report]}, "result": (image_out, mask_out, report)}


NODE_CLASS_MAPPINGS = {"PixartCleanup": PixartCleanup}
NODE_DISPLAY_NAME_MAPPINGS = {"PixartCleanup": "Pixel Art Cleanup (Pixart)"}
