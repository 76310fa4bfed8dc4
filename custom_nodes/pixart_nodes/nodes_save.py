"""Save Indexed node: PNG (or one GIF for the whole batch) whose palette is the Pixart palette in its order."""
from __future__ import annotations

import os

from .core import indexed
from .nodes_pixelate import split_alpha


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
                "frame_ms": ("INT", {"default": 100, "min": 10, "max": 10000, "tooltip": (
                    "GIF: milliseconds each frame shows.")}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Transparency for RGB images (1 = transparent, as from Load Image)."}),
            },
        }

    def run(self, images, palette, format="png", filename_prefix="pixart_indexed", frame_ms=100, mask=None):
        import folder_paths

        arrays, _, _ = split_alpha(images, mask)
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
