"""Palette nodes: a PIXART_PALETTE from the library (by name or by a search), hex colours, a palette file, or an
image; and a search node that lists the library's matches."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .core import palette as pal
from .core import palettes as library
from .core.imageio import read_bounded
from .core.palette_files import MAX_FILE_BYTES
from .core.tensors import iter_batch_uint8, mask_to_alpha, require_images, uint8_to_image

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
    if "\x00" in name:  # no file system takes it, and the OS error would name no field
        raise ValueError(f"file: {pal.quote(name)} holds a NUL character; no file has such a name")
    rel = Path(name.strip())
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"file: {pal.quote(name)} must be a file name relative to the input or palettes folder")
    for d in _palette_dirs():
        try:
            p = (d / rel).resolve()
            if p.is_file() and p.is_relative_to(d.resolve()):
                return p
        except OSError:  # a name too long for the file system: no such file (the OS message repeats all of it)
            continue
    raise ValueError(f"file: palette file {pal.quote(name)} not found in {', '.join(str(d) for d in _palette_dirs())}")


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
        f"Makes a palette: one of the library's {len(library.LIBRARY)} named palettes (Lospec's most used, PICO-8, "
        "Game Boy, NES, C64, CGA/EGA, Sweetie 16, Endesga, ...; pick by name or type a search), a list of hex "
        "colours, a palette file (.hex .gpl .pal .act .ase .txt, an Aseprite sprite's palette, or a PNG: a swatch "
        "strip, or an indexed PNG's colour table), or N colours extracted from an image (k-means in OKLab or median cut). The colours keep their "
        "published order."
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
                    {"default": "pico-8", "tooltip": (
                        "Library palette, used when source is 'named' and search is empty. The list runs from the "
                        "most used; 'pixart palettes' or the Pixart Palette Search node show sizes and authors.")},
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
                        "tooltip": "A palette file (.hex .gpl .pal .act .ase .txt, an Aseprite sprite's palette, or "
                        "a PNG: a swatch strip, or an indexed PNG's colour table) in ComfyUI's input folder or the pack's palettes folder; used when "
                        "source is 'file'.",
                    },
                ),
                "n_colors": (
                    "INT",
                    {"default": 16, "min": 2, "max": 256, "tooltip": "Colours to extract when source is 'image'."},
                ),
                "method": (
                    list(pal.EXTRACT_METHODS),
                    {
                        "default": "kmeans",
                        "tooltip": "Extraction: k-means in OKLab, then refined for the mean and the 4x4-block OKLab "
                        "error of the mapped image (what a palette is judged by); or median cut in RGB.",
                    },
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
                "search": ("STRING", {"default": "", "tooltip": (
                    "Source 'named' only: words to find in a palette's name, title or author (e.g. 'gameboy', "
                    "'endesga 16', 'polack'); the best match replaces 'name' (exact name first, then names that "
                    "start with it, then the most used). Empty: use 'name'. The Pixart Palette Search node lists "
                    "every match.")}),
                # last: a widget added before another would shift the values of workflows saved earlier
                "for_dithering": ("BOOLEAN", {"default": False, "tooltip": (
                    "Source 'image' with kmeans, images without transparent pixels: the palette will be used with "
                    "error diffusion (Floyd-Steinberg, "
                    "...). Its colours are refined for the image as damped error diffusion dithers it, which moves "
                    "them out so dithering reaches the image's darkest and brightest areas (k-means centres sit "
                    "inside them). Leave off for no dithering or ordered dithering.")}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, source="named", file="", **_):
        # ComfyUI reuses the last palette while the widgets stay equal: a file edited on disk under the same name
        # must be read again (LoadImage hashes its file the same way). A linked input arrives here as None.
        if source not in ("file", None):
            return ""
        if not isinstance(file, str):
            return float("nan")  # never equal: the file is known only when the node runs
        try:  # at most what the reader takes: the name may come from a remote request
            return hashlib.sha256(read_bounded(resolve_palette_file(file), MAX_FILE_BYTES)).hexdigest()
        except (ValueError, OSError):
            return float("nan")  # never equal: build runs and reports the missing, unreadable or too large file

    def build(self, source, name, hex_colors, file, n_colors, method, seed, image=None, mask=None, search="",
              for_dithering=False):
        if source == "named":
            if search and search.strip():
                found = library.search(search)
                if not found:
                    raise ValueError(f"search: no library palette matches {pal.quote(search.strip())}")
                name = found[0].name
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
            p = pal.extract_palette(_batch_for_extraction(image, mask), n_colors, method=method, seed=seed,
                                    dither=bool(for_dithering))
        else:
            raise ValueError(f"source: must be one of {', '.join(SOURCES)}, got {source!r}")
        return (p, uint8_to_image(swatch(p)), len(p))


def _batch_for_extraction(images, mask) -> list[np.ndarray]:
    """Each image of the batch, with the mask as alpha where it has one: one palette serves the whole batch."""
    require_images(images)
    out = []
    for i, img in enumerate(iter_batch_uint8(images)):
        alpha = None if img.shape[2] == 4 else mask_to_alpha(mask, i, img.shape[:2])
        out.append(img if alpha is None else np.concatenate([img, alpha[..., None]], axis=2))
    return out


class PixartPaletteSearch:
    DESCRIPTION = (
        "Searches the palette library by words (name, title, author) and number of colours. Lists every match "
        "(name, size, author; shown on the node) and outputs one of them as a palette, with a swatch of the first "
        "matches. ComfyUI's lists are fixed, so this is the way to browse by size."
    )
    CATEGORY = "Pixart/Palette"
    FUNCTION = "search"
    OUTPUT_NODE = True
    RETURN_TYPES = ("PIXART_PALETTE", "IMAGE", "STRING", "INT")
    RETURN_NAMES = ("palette", "swatches", "matches", "count")
    OUTPUT_TOOLTIPS = (
        "The match chosen by 'pick'.",
        "The first 24 matches, one row each (8x8 squares per colour, up to 64 colours shown per row).",
        "Every match, one per line: 'name (N colours, author)'.",
        "Number of matches.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text": ("STRING", {"default": "", "tooltip": (
                    "Words that must all appear in the palette's name, an alias, its title or author "
                    "(case, spaces and dashes ignored). Empty: every palette of the size range.")}),
                "min_colors": ("INT", {"default": 2, "min": 1, "max": 256, "tooltip": "Smallest palette size."}),
                "max_colors": ("INT", {"default": 256, "min": 1, "max": 256, "tooltip": "Largest palette size."}),
                "pick": ("INT", {"default": 1, "min": 1, "max": 256, "tooltip": (
                    "Which match to output: 1 is the best (exact name, then names starting with the text, then "
                    "the most used); past the end, the last.")}),
            },
        }

    def search(self, text, min_colors=2, max_colors=256, pick=1):
        found = library.search(text, min_colors=min_colors, max_colors=max_colors)
        if not found:
            raise ValueError(f"text: no library palette matches {pal.quote(text.strip())} with {min_colors}..{max_colors} "
                             "colours")
        chosen = found[min(pick, len(found)) - 1]
        listing = "\n".join(p.label() for p in found)
        rows = []
        for p in found[:24]:
            row = np.zeros((64, 3), dtype=np.uint8)
            colours = pal.named_palette(p.name).colors[:64]
            row[:len(colours)] = colours
            rows.append(row)
        strip = np.repeat(np.repeat(np.stack(rows), 8, axis=0), 8, axis=1)
        return {"ui": {"text": [listing]},
                "result": (pal.named_palette(chosen.name), uint8_to_image(strip), listing, len(found))}


NODE_CLASS_MAPPINGS = {"PixartPalette": PixartPalette, "PixartPaletteSearch": PixartPaletteSearch}
NODE_DISPLAY_NAME_MAPPINGS = {"PixartPalette": "Pixart Palette", "PixartPaletteSearch": "Pixart Palette Search"}
