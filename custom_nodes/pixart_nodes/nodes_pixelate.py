"""Pixelate node: thin wrapper around ``core.pixelate``."""
from __future__ import annotations

import numpy as np

from .core import pixelate as px
from .core.tensors import alpha_to_mask, iter_batch_uint8, mask_to_alpha, uint8_to_image


def split_alpha(images, mask) -> tuple[list[np.ndarray], list[np.ndarray] | None, int]:
    """Batch -> RGB(A) uint8 arrays with alpha attached as a 4th channel, from the image or from ``mask``.

    Returns the arrays, whether any alpha was found, and the input channel count.
    """
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
    colour = [a[..., :channels] if channels == 4 else a[..., :3] for a in arrays]
    return uint8_to_image(colour), mask


class PixartPixelate:
    DESCRIPTION = (
        "Pixelate: shrink the image to a coarse grid (by block size or to a target size), one colour per block "
        "(nearest, box average, median or k-centroid dominant colour), optionally enlarged back with nearest "
        "neighbour for display. Alpha (a 4th channel or the mask) is pixelated with the colours."
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
                    "median, kcentroid = dominant colour (centre of the largest k-means cluster; keeps outlines).")}),
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
            },
        }

    def run(self, image, method, pixel_size, width, height, upscale, k=2, mask=None):
        by_size = not width and not height
        arrays, has_alpha, channels = split_alpha(image, mask)
        out = [
            px.pixelate(a, width=width or None, height=height or None, pixel_size=pixel_size if by_size else None,
                        method=method, upscale=upscale, k=k)
            for a in arrays
        ]
        return join_alpha(out, has_alpha, channels)


NODE_CLASS_MAPPINGS = {"PixartPixelate": PixartPixelate}
NODE_DISPLAY_NAME_MAPPINGS = {"PixartPixelate": "Pixelate (Pixart)"}
