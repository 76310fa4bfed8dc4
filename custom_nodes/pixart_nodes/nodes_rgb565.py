"""RGB565 nodes: convert images to raw frames for small SPI LCDs, and preview such frames."""
from __future__ import annotations

import os

import numpy as np

from .core import rgb565
from .core.tensors import iter_batch_uint8, mask_to_alpha, require_images, uint8_to_image


def _bin_target(prefix: str, width: int, height: int) -> tuple[str, str, int, str]:
    """Output folder, file stem, first free counter and subfolder, numbered the way Save Image numbers PNGs."""
    import folder_paths  # ComfyUI module: imported here so the node module loads without ComfyUI

    out_dir = folder_paths.get_output_directory()
    full_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir, width, height)
    os.makedirs(full_folder, exist_ok=True)
    return full_folder, filename, counter, subfolder


class PixartRGB565:
    DESCRIPTION = (
        "Convert images to raw RGB565 frames for small LCDs (ST7789 on a Pico: 240x240 big-endian = 115,200 bytes). "
        "Resizes (stretch, letterbox or centre crop), flattens alpha onto the background, optionally dithers "
        "(565-aware ordered) and inverts, and outputs the bytes as base64. Optionally saves a .bin in the output "
        "folder. Reports {'rgb565_base64': [...]} in its UI output for API clients."
    )
    CATEGORY = "Pixart/RGB565"
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("rgb565_base64", "preview")
    OUTPUT_IS_LIST = (True, False)
    OUTPUT_TOOLTIPS = (
        "The packed frames as base64 strings, one per image of the batch.",
        "What the LCD will show: the frames unpacked again (565 precision, inversion undone).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Images to convert (each image of a batch becomes one frame)."}),
                "width": ("INT", {"default": 240, "min": 1, "max": 4096, "tooltip": "Frame width in pixels."}),
                "height": ("INT", {"default": 240, "min": 1, "max": 4096, "tooltip": "Frame height in pixels."}),
                "mode": (list(rgb565.FIT_MODES), {"default": "stretch", "tooltip": (
                    "stretch = ignore aspect ratio; letterbox = fit inside and pad with the background; crop = "
                    "fill the frame and cut off the overhang (centred).")}),
                "byte_order": (list(rgb565.BYTE_ORDERS), {"default": "big", "tooltip": (
                    "big = high byte first, what ST7789 drivers send (Waveshare, Pimoroni, st7789py). little = a "
                    "native uint16 buffer on ARM/x86, as OpenCV's BGR565 gives.")}),
                "invert": ("BOOLEAN", {"default": False, "tooltip": (
                    "Store 255 - value per channel. Only for firmware that does not send the panel's INVON "
                    "command; most IPS ST7789 drivers already do, so leave off unless colours appear negated.")}),
                "dither": ("BOOLEAN", {"default": False, "tooltip": (
                    "Ordered 8x8 dithering scaled to the 565 steps (8 levels for red/blue, 4 for green): smooth "
                    "gradients instead of bands.")}),
                "save_file": ("BOOLEAN", {"default": True, "tooltip": (
                    "Also write each frame as a .bin file into ComfyUI's output folder. Off = only the base64 "
                    "output and UI value (for API use).")}),
                "filename_prefix": ("STRING", {"default": "pixart/rgb565", "tooltip": (
                    "File name prefix for the .bin files, may contain a subfolder (like Save Image).")}),
                "background": ("STRING", {"default": "#000000", "tooltip": (
                    "Hex colour for letterbox bars and under transparent pixels.")}),
                "resample": (list(rgb565.RESAMPLE_METHODS), {"default": "auto", "tooltip": (
                    "Resize filter: auto = area when shrinking; when enlarging, nearest for pixel art (at most 256 "
                    "colours) and Lanczos for other pictures; nearest keeps pixel art blocks sharp.")}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Optional alpha as a mask (1 = transparent), flattened onto the "
                                             "background."}),
            },
        }

    def run(self, image, width, height, mode, byte_order, invert, dither, save_file, filename_prefix, background,
            resample="auto", mask=None):
        rgb565.parse_color(background)  # fail before any work, with the field named
        require_images(image)
        if save_file:
            from .nodes_save import check_filename_prefix

            check_filename_prefix(filename_prefix)
        fmt = f"rgb565-{'be' if byte_order == 'big' else 'le'}"
        encoded: list[str] = []
        files: list[dict] = []
        previews: list[np.ndarray] = []
        target: tuple[str, str, int, str] | None = None
        for i, arr in enumerate(iter_batch_uint8(image)):
            flat = rgb565.composite(arr, mask_to_alpha(mask, i, arr.shape[:2]), background)
            framed = rgb565.fit(flat, width, height, mode, background, resample=resample)
            data = rgb565.to_rgb565(framed, byte_order=byte_order, invert=invert, dither=dither)
            encoded.append(rgb565.to_base64(data))
            previews.append(rgb565.from_rgb565(data, width, height, byte_order=byte_order, inverted=invert))
            if save_file:
                if target is None:
                    target = _bin_target(filename_prefix, width, height)
                folder, stem, counter, subfolder = target
                name = f"{stem}_{counter + i:05}_.bin"
                with open(os.path.join(folder, name), "wb") as fh:
                    fh.write(data)
                files.append({"filename": name, "subfolder": subfolder, "type": "output", "bytes": len(data),
                              "width": width, "height": height, "format": fmt})
        size = width * height * 2
        text = [
            f"{len(encoded)} frame(s) {width}x{height} {fmt}{' inverted' if invert else ''}, {size} bytes each"
            + (": " + ", ".join(os.path.join(f["subfolder"], f["filename"]) for f in files) if files else "")
        ]
        ui: dict = {"rgb565_base64": encoded, "text": text}
        if files:
            ui["rgb565"] = files
        return {"ui": ui, "result": (encoded, uint8_to_image(previews))}


class PixartRGB565Preview:
    DESCRIPTION = (
        "Unpack an RGB565 frame (base64) back into an image, so you see what the LCD will show."
    )
    CATEGORY = "Pixart/RGB565"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The frame as the LCD shows it (each channel's 32 or 64 levels spread over 0..255).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "rgb565_base64": ("STRING", {"default": "", "multiline": True, "tooltip": (
                    "The frame as base64 (from the RGB565 node, or pasted); a data: URL prefix is allowed.")}),
                "width": ("INT", {"default": 240, "min": 1, "max": 4096, "tooltip": "Frame width in pixels."}),
                "height": ("INT", {"default": 240, "min": 1, "max": 4096, "tooltip": "Frame height in pixels."}),
                "byte_order": (list(rgb565.BYTE_ORDERS), {"default": "big", "tooltip": (
                    "Byte order the frame was packed with (big = high byte first).")}),
                "inverted": ("BOOLEAN", {"default": False, "tooltip": (
                    "The frame was packed with invert on: undo it so the preview shows the intended colours.")}),
            },
        }

    def run(self, rgb565_base64, width, height, byte_order, inverted):
        if not rgb565_base64 or not rgb565_base64.strip():
            raise ValueError("rgb565_base64: empty input, expected a base64 RGB565 frame")
        data = rgb565.from_base64(rgb565_base64, field="rgb565_base64")
        img = rgb565.from_rgb565(data, width, height, byte_order=byte_order, inverted=inverted,
                                 field="rgb565_base64")
        return (uint8_to_image(img),)


NODE_CLASS_MAPPINGS = {"PixartRGB565": PixartRGB565, "PixartRGB565Preview": PixartRGB565Preview}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PixartRGB565": "RGB565 for LCD (Pixart)",
    "PixartRGB565Preview": "RGB565 Preview (Pixart)",
}
