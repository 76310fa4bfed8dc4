"""Pixelate and Snap to Grid nodes: thin wrappers around ``core.pixelate`` and ``core.snap``."""
from __future__ import annotations

import json
import re

import numpy as np

from .core import pixelate as px
from .core.tensors import (alpha_to_mask, iter_batch_uint8, mask_to_alpha, output_channels, require_images,
                           uint8_to_image)


def split_alpha(images, mask, field: str = "image") -> tuple[list[np.ndarray], list[np.ndarray] | None, int]:
    """Batch -> RGB(A) uint8 arrays with alpha attached as a 4th channel, from the image or from ``mask``.

    Returns the arrays, whether any alpha was found, and the input channel count; an empty batch is a ValueError
    naming ``field`` (the node's IMAGE input).
    """
    require_images(images, field)
    arrays: list[np.ndarray] = []
    has_alpha = False
    channels = int(images.shape[-1])
    for i, arr in enumerate(iter_batch_uint8(images)):
        if arr.shape[2] == 4:
            has_alpha = True
        else:
            alpha = mask_to_alpha(mask, i, arr.shape[:2])
            if alpha is not None:
                arr = np.concatenate([arr[..., :3], alpha[..., None]], axis=2)
                has_alpha = True
        arrays.append(arr)
    if has_alpha:
        arrays = [a if a.shape[2] == 4 else np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], 2)
                  for a in arrays]
    return arrays, has_alpha, channels


def join_alpha(arrays: list[np.ndarray], has_alpha: bool, channels: int):
    """Inverse of ``split_alpha``: IMAGE with the input's channel count, plus a MASK (zeros when opaque)."""
    import torch

    if has_alpha:
        mask = alpha_to_mask([a[..., 3] for a in arrays])
    else:
        mask = torch.zeros((len(arrays), *arrays[0].shape[:2]), dtype=torch.float32)
    colour = [a[..., :output_channels(channels)] for a in arrays]
    return uint8_to_image(colour), mask


class PixartPixelate:
    DESCRIPTION = (
        "Pixelate: shrink the image to a coarse grid (by block size or to a target size), one colour per block "
        "(nearest, box average, median, k-centroid dominant colour, or outline: keeps dark outlines and small "
        "bright details thinner than a block), optionally enlarged back with nearest neighbour for display. Alpha "
        "(a 4th channel or the mask) is pixelated with the colours."
    )
    CATEGORY = "Pixart/Pixelate"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = (
        "The pixelated image (small, or enlarged back to the input size when upscale is on).",
        "The pixelated alpha as a mask (1 = transparent); all zeros when the input had no alpha.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Images to pixelate (a batch is processed image by image)."}),
                "method": (list(px.METHODS), {"default": "box", "tooltip": (
                    "Colour of each block: box = average, nearest = the block's centre pixel, median = per-channel "
                    "median, kcentroid = dominant colour (centre of the largest k-means cluster), outline = "
                    "dominant colour, except where a thin dark line or small bright detail crosses the block: "
                    "then that (keeps 1-px outlines a downscale would lose).")}),
                "pixel_size": ("INT", {"default": 8, "min": 1, "max": 512, "tooltip": (
                    "Block size in input pixels. Used when width and height are both 0.")}),
                "width": ("INT", {"default": 0, "min": 0, "max": 8192, "tooltip": (
                    "Target width in blocks; 0 = follow height's aspect ratio, or use pixel_size when both are 0.")}),
                "height": ("INT", {"default": 0, "min": 0, "max": 8192, "tooltip": (
                    "Target height in blocks; 0 = follow width's aspect ratio, or use pixel_size when both are 0.")}),
                "upscale": ("BOOLEAN", {"default": True, "tooltip": (
                    "Enlarge the result back to the input size with nearest neighbour (for viewing). Off = one "
                    "output pixel per block (for palettes, sprites, LCDs).")}),
                "k": ("INT", {"default": 2, "min": 2, "max": 4, "tooltip": (
                    "kcentroid only: number of colour clusters per block (2..4).")}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Optional alpha as a mask (1 = transparent), e.g. from Load Image."}),
                "contrast": ("FLOAT", {"default": px.OUTLINE_CONTRAST, "min": 0.01, "max": 1.0, "step": 0.01,
                                       "tooltip": (
                    "outline only: how much darker (or brighter) than the block and its neighbours a line or dot "
                    "must be to be kept, as a share of the 0..1 brightness range. Lower keeps fainter lines.")}),
            },
        }

    def run(self, image, method, pixel_size, width, height, upscale, k=2, mask=None,
            contrast=px.OUTLINE_CONTRAST):
        by_size = not width and not height
        arrays, has_alpha, channels = split_alpha(image, mask)
        out = [
            px.pixelate(a, width=width or None, height=height or None, pixel_size=pixel_size if by_size else None,
                        method=method, upscale=upscale, k=k, contrast=contrast)
            for a in arrays
        ]
        return join_alpha(out, has_alpha, channels)


class PixartSnapToGrid:
    DESCRIPTION = (
        "Snap to grid: turn 'fake' pixel art (an enlarged sprite, or a diffusion model's pixel-art look: blurred, "
        "JPEG-compressed, grid not aligned to the image, cells of uneven or slowly drifting size) back into one "
        "pixel per cell. Finds the cell size and offset of each axis (non-integer sizes too), then takes each "
        "cell's dominant colour from its inner part, so outlines stay crisp. A batch shares one grid, found from "
        "all its images. When no grid is found the images pass through unchanged and the grid output says why."
    )
    CATEGORY = "Pixart/Pixelate"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "MASK", "STRING", "FLOAT", "FLOAT")
    RETURN_NAMES = ("image", "mask", "grid", "cell_width", "cell_height")
    OUTPUT_TOOLTIPS = (
        "One pixel per detected cell (true resolution), enlarged by 'scale'; the input unchanged when no grid "
        "was found.",
        "The snapped alpha as a mask (1 = transparent); all zeros when the input had no alpha.",
        "The detected grid as JSON: detected, message, columns, rows, cell_width, cell_height, offset_x, offset_y "
        "(where the first cell edge inside the image lies), score_x, score_y, and the cell edges edges_x / edges_y "
        "in input pixels.",
        "Mean cell width in input pixels (0 when no grid was found).",
        "Mean cell height in input pixels (0 when no grid was found).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": (
                    "Enlarged or generated pixel art. Images of a batch must share one grid (frames of one "
                    "animation, or one picture).")}),
                "min_cell_size": ("FLOAT", {"default": 2.0, "min": 2.0, "max": 256.0, "step": 0.5, "tooltip": (
                    "Smallest cell size to consider, in input pixels. Raise it (e.g. to 3) when a picture with "
                    "very fine detail is mistaken for a grid of tiny cells.")}),
                "max_cell_size": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1024.0, "step": 0.5, "tooltip": (
                    "Largest cell size to consider; 0 = up to a third of the image.")}),
                "cell_width": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1024.0, "step": 0.01, "tooltip": (
                    "Known cell width in input pixels (e.g. 8, or 5.33 for a 3:16 enlargement); the offset and any "
                    "drift are still found. 0 = detect; otherwise at least 2.")}),
                "cell_height": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1024.0, "step": 0.01, "tooltip": (
                    "Known cell height in input pixels; 0 = detect; otherwise at least 2.")}),
                "scale": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": (
                    "Enlarge the snapped result by this whole factor with nearest neighbour, for viewing. 1 = one "
                    "pixel per cell.")}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Optional alpha as a mask (1 = transparent), e.g. from Load Image."}),
                "min_columns": ("INT", {"default": 0, "min": 0, "max": 16384, "tooltip": (
                    "Snap only when the grid found has at least this many columns; a coarser grid passes the "
                    "input through unchanged, as when no grid is found. Set it to the width a later Pixelate "
                    "step asks for, so snapping never leaves fewer cells than that. 0 = any grid.")}),
                "min_rows": ("INT", {"default": 0, "min": 0, "max": 16384, "tooltip": (
                    "Snap only when the grid found has at least this many rows (see min_columns). 0 = any grid.")}),
            },
        }

    def run(self, image, min_cell_size=2.0, max_cell_size=0.0, cell_width=0.0, cell_height=0.0, scale=1,
            mask=None, min_columns=0, min_rows=0):
        from .core import snap as sn

        arrays, has_alpha, channels = split_alpha(image, mask)
        try:
            results = sn.snap(arrays, min_size=float(min_cell_size), max_size=float(max_cell_size) or None,
                              cell_width=float(cell_width) or None, cell_height=float(cell_height) or None)
        except ValueError as exc:
            # the core's errors name its arguments (min_size, max_size); the node's widgets are named otherwise
            raise ValueError(re.sub(r"\b(min|max)_size\b", r"\1_cell_size", str(exc))) from None
        first = results[0]
        if first.detected and (first.x.cells < int(min_columns) or first.y.cells < int(min_rows)):
            why = (f"no pixel grid used: the grid found ({first.message}) has fewer cells than "
                   f"{int(min_columns)}x{int(min_rows)}; image returned unchanged")
            results = [sn.SnapResult(a, False, r.x, r.y, message=why) for a, r in zip(arrays, results)]
            first = results[0]
        out = [r.image for r in results]
        if first.detected and int(scale) > 1:
            from .core.imageio import enlarge

            try:
                out = enlarge(out, int(scale))
            except ValueError as exc:
                raise ValueError(f"scale: {exc}") from None
        info = first.to_dict(edges=True)
        image_out, mask_out = join_alpha(out, has_alpha, channels)
        widths = (first.x.size, first.y.size) if first.detected else (0.0, 0.0)
        return {"ui": {"text": [first.message]},
                "result": (image_out, mask_out, json.dumps(info), float(widths[0]), float(widths[1]))}


NODE_CLASS_MAPPINGS = {"PixartPixelate": PixartPixelate, "PixartSnapToGrid": PixartSnapToGrid}
NODE_DISPLAY_NAME_MAPPINGS = {"PixartPixelate": "Pixelate (Pixart)", "PixartSnapToGrid": "Snap to Grid (Pixart)"}
