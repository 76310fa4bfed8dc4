"""Save Indexed node: PNG (or one GIF for the whole batch) whose palette is the Pixart palette in its order."""
from __future__ import annotations

import os
import re

from .core import indexed
from .core.messages import quote
from .nodes_pixelate import split_alpha

# One part of the prefix (a folder or the file name) in UTF-8 bytes: the counter and extension ("_00001_.png") come on
# top, within the 255 bytes a file system takes for a name. The whole prefix: a few hundred nested folders at most.
MAX_PART_BYTES = 200
MAX_PREFIX = 1000


def check_filename_prefix(prefix: str, field: str = "filename_prefix") -> None:
    """ValueError naming ``field`` for a prefix no file can be named after. ComfyUI's ``get_save_image_path`` keeps
    the files inside the output folder; what it lets through fails later in ``open`` with an OS message naming no
    input (a NUL: "embedded null byte"; a long name: "File name too long" and the whole path), or leaves a chain of
    folders behind before failing."""
    if not isinstance(prefix, str):
        raise ValueError(f"{field}: expected text, got {type(prefix).__name__}")
    if "\x00" in prefix:
        raise ValueError(f"{field}: {quote(prefix)} holds a NUL character; no file has such a name")
    if len(prefix) > MAX_PREFIX:
        raise ValueError(f"{field}: at most {MAX_PREFIX} characters, got {len(prefix):,}")
    try:
        parts = [p.encode("utf-8") for p in re.split(f"[/{re.escape(os.sep + (os.altsep or ''))}]", prefix)]
    except UnicodeEncodeError:  # a lone surrogate (JSON allows "\ud800"), which open() cannot encode either
        # (the surrogateescape bytes of undecodable names aside, which no artist types)
        raise ValueError(f"{field}: {quote(prefix)} is not valid text (a lone surrogate)") from None
    longest = max(len(p) for p in parts)
    if longest > MAX_PART_BYTES:
        raise ValueError(f"{field}: a folder or file name of at most {MAX_PART_BYTES} bytes, got one of {longest:,} "
                         f"in {quote(prefix)}")


class PixartSaveIndexed:
    DESCRIPTION = (
        "Save images as indexed PNG files (one per image) or one GIF (the batch as an animation), with the "
        "palette exactly as given, in its order: index i of the file is colour i of the palette, as game engines, "
        "Aseprite and LCD drivers expect. Colours not in the palette take their nearest palette colour; "
        "transparent pixels (alpha or mask) use one extra, transparent entry after the palette's colours."
    )
    CATEGORY = "Pixart/Quantize"
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Images to save, usually straight from Pixart Quantize."}),
                "palette": ("PIXART_PALETTE", {"tooltip": "The palette the files carry, in this order."}),
                "format": (list(indexed.FORMATS), {"default": "png", "tooltip": (
                    "png: one indexed PNG per image; gif: one GIF of every image of the batch, sharing one "
                    "global palette.")}),
                "filename_prefix": ("STRING", {"default": "pixart_indexed", "tooltip": (
                    "File name start, as in Save Image (may contain a subfolder and %date% patterns).")}),
                "frame_ms": ("INT", {"default": 100, "min": indexed.GIF_MIN_DELAY_MS, "max": 10000, "step": 10,
                                     "tooltip": (
                    "GIF: milliseconds each frame shows (a GIF stores hundredths of a second; browsers play less "
                    f"than {indexed.GIF_MIN_DELAY_MS} ms slower).")}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Transparency for RGB images (1 = transparent, as from Load Image)."}),
            },
        }

    def run(self, images, palette, format="png", filename_prefix="pixart_indexed", frame_ms=100, mask=None):
        check_filename_prefix(filename_prefix)
        arrays, _, _ = split_alpha(images, mask, "images")
        import folder_paths  # ComfyUI's: after the checks, which need nothing of it

        height, width = arrays[0].shape[:2]
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), width, height)
        if format == "gif":
            files = [(f"{name}_{counter:05}_.gif", indexed.indexed_gif(arrays, palette, duration_ms=frame_ms))]
        else:
            files = [(f"{name}_{counter + i:05}_.png", indexed.indexed_png(a, palette)) for i, a in enumerate(arrays)]
        results = []
        for filename, data in files:
            with open(os.path.join(folder, filename), "wb") as f:
                f.write(data)
            results.append({"filename": filename, "subfolder": subfolder, "type": "output"})
        return {"ui": {"images": results}}


NODE_CLASS_MAPPINGS = {"PixartSaveIndexed": PixartSaveIndexed}
NODE_DISPLAY_NAME_MAPPINGS = {"PixartSaveIndexed": "Pixart Save Indexed (PNG/GIF)"}
