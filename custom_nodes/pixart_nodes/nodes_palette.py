"""Palette node: a PIXART_PALETTE from a named palette, hex colours, a palette file, or an image."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .core import palette as pal
from .core.tensors import iter_batch_uint8, mask_to_alpha, uint8_to_image

SOURCES = ("named", "hex", "file", "image")
_PACK_PALETTES = Path(__file__).parent / "palettes"


def _palette_dirs() -> list[Path]:
    dirs = [_PACK_PALETTES]
    try:  # ComfyUI's input folder, when running inside ComfyUI
        import folder_paths

        dirs.insert(0, Path(folder_paths.get_input_directory()))
    except ImportError:
        pass
    return dirs


def resolve_palette_file(name: str) -> Path:
    """A palette file name inside ComfyUI's input folder or the pack's ``palettes/`` folder.

    Only relative names that stay inside those folders are accepted: the value can come from a remote API
    request through the bridge, and must not open arbitrary files on the server.
    """
    if not name.strip():
        raise ValueError("file: no palette file name given")
    rel = Path(name.strip())
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"file: {name!r} must be a file name relative to the input or palettes folder")
    for d in _palette_dirs():
        p = (d / rel).resolve()
        if p.is_file() and p.is_relative_to(d.resolve()):
            return p
    raise ValueError(f"file: palette file {name!r} not found in {', '.join(str(d) for d in _palette_dirs())}")


def swatch(p: pal.Palette, cell: int = 16, per_row: int = 16) -> np.ndarray:
    """uint8 preview: one ``cell``-sized square per colour, ``per_row`` to a row (unused cells black)."""
    n = len(p)
    cols = min(n, per_row)
    rows = -(-n // per_row)
    grid = np.zeros((rows * per_row, 3), dtype=np.uint8)
    grid[:n] = p.colors
    grid = grid.reshape(rows, per_row, 3)[:, :cols]
    return np.repeat(np.repeat(grid, cell, axis=0), cell, axis=1)


class PixartPalette:
    DESCRIPTION = (
        "Makes a palette: a named one (PICO-8, Game Boy, NES, CGA, Sweetie 16, Endesga 32, retro-8bit/16bit...), "
        "a list of hex colours, a .hex/.gpl file, or N colours extracted from an image (k-means in OKLab or "
        "median cut)."
    )
    CATEGORY = "Pixart/Palette"
    FUNCTION = "build"
    RETURN_TYPES = ("PIXART_PALETTE", "IMAGE", "INT")
    RETURN_NAMES = ("palette", "swatch", "count")
    OUTPUT_TOOLTIPS = (
        "The palette, for Pixart Quantize.",
        "A preview: one 16x16 square per colour, 16 per row.",
        "Number of colours in the palette.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "source": (list(SOURCES), {"default": "named", "tooltip": "Where the colours come from."}),
                "name": (
                    list(pal.NAMED_PALETTES),
                    {"default": "pico-8", "tooltip": "Built-in palette, used when source is 'named'."},
                ),
                "hex_colors": (
                    "STRING",
                    {
                        "default": "#000000 #ffffff",
                        "multiline": True,
                        "tooltip": "Hex colours (#ff8800, ff8800 or 0xff8800) separated by commas, spaces or "
                        "new lines; used when source is 'hex'.",
                    },
                ),
                "file": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "A .hex or .gpl palette file in ComfyUI's input folder or the pack's "
                        "palettes folder; used when source is 'file'.",
                    },
                ),
                "n_colors": (
                    "INT",
                    {"default": 16, "min": 2, "max": 256, "tooltip": "Colours to extract when source is 'image'."},
                ),
                "method": (
                    list(pal.EXTRACT_METHODS),
                    {"default": "kmeans", "tooltip": "Extraction: k-means in OKLab, or median cut in RGB."},
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 0xFFFFFFFF,
                        "tooltip": "k-means seed: the same image and seed always give the same palette.",
                    },
                ),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "Image to take colours from (all images of the batch together)."}),
                "mask": ("MASK", {"tooltip": "Masked (1) pixels are ignored when extracting, e.g. transparency."}),
            },
        }

    def build(self, source, name, hex_colors, file, n_colors, method, seed, image=None, mask=None):
        if source == "named":
            p = pal.named_palette(name)
        elif source == "hex":
            try:
                p = pal.palette_from_hex(hex_colors)
            except ValueError as e:
                raise ValueError(f"hex_colors: {e}") from None
        elif source == "file":
            p = pal.load_palette_file(resolve_palette_file(file))
        elif source == "image":
            if image is None:
                raise ValueError("image: source is 'image' but no image is connected")
            p = pal.extract_palette(_stack_for_extraction(image, mask), n_colors, method=method, seed=seed)
        else:
            raise ValueError(f"source: must be one of {', '.join(SOURCES)}, got {source!r}")
        return (p, uint8_to_image(swatch(p)), len(p))


def _stack_for_extraction(images, mask) -> np.ndarray:
    """All images of the batch as one RGBA strip, so one palette serves the whole batch."""
    parts = []
    for i, img in enumerate(iter_batch_uint8(images)):
        if img.shape[2] == 4:
            parts.append(img.reshape(-1, 1, 4))
            continue
        alpha = mask_to_alpha(mask, i, img.shape[:2])
        if alpha is None:
            alpha = np.full(img.shape[:2], 255, dtype=np.uint8)
        parts.append(np.concatenate([img, alpha[..., None]], axis=2).reshape(-1, 1, 4))
    return np.concatenate(parts, axis=0)


NODE_CLASS_MAPPINGS = {"PixartPalette": PixartPalette}
NODE_DISPLAY_NAME_MAPPINGS = {"PixartPalette": "Pixart Palette"}
