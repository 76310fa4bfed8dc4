"""Tiling nodes: seamless (wrap-around) generation as A1111's "Tiling" does it, and the overlapping tile grid of
A1111's "SD upscale" script (split a picture into tiles, put the re-generated tiles back)."""
from __future__ import annotations

import copy

from .core import tiling as core
from .core.tensors import require_images


class PixartSeamlessTiling:
    DESCRIPTION = (
        "Makes the model's and the VAE's convolutions wrap around (circular padding), as A1111's 'Tiling' does, so "
        "the picture continues past each edge into the opposite one and tiles without a seam. The change lasts only "
        "while this model samples and this VAE encodes or decodes; the loaded model is never left changed. "
        "'disabled' passes both through untouched."
    )
    CATEGORY = "Pixart/Tiling"
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL", "VAE")
    RETURN_NAMES = ("model", "vae")
    OUTPUT_TOOLTIPS = ("The model, wrapping while it samples.", "The VAE, wrapping while it encodes and decodes.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion model (its UNet convolutions wrap)."}),
                "vae": ("VAE", {"tooltip": "The VAE that decodes (and encodes) the picture (its convolutions wrap)."}),
                "tiling": (list(core.AXES), {"default": "disabled", "tooltip": (
                    "disabled: as without this node. both: seamless left-right and top-bottom (A1111's Tiling). "
                    "x only / y only: wrap one axis.")}),
            },
        }

    def apply(self, model, vae, tiling):
        if tiling == "disabled":
            return (model, vae)
        return (_wrapping_model(model, tiling), _wrapping_vae(vae, tiling))


WRAPPER_KEY = "pixart_seamless_tiling"


def _wrapping_model(model, mode: str):
    import comfy.patcher_extension as extension

    def apply_model(executor, *args, **kwargs):
        # executor.class_obj is the BaseModel; its diffusion_model holds the UNet's convolutions.
        with core.circular_convs(executor.class_obj.diffusion_model, mode):
            return executor(*args, **kwargs)

    patched = model.clone()
    patched.remove_wrappers_with_key(extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY)
    patched.add_wrapper_with_key(extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, apply_model)
    return patched


def _wrapping_vae(vae, mode: str):
    """A copy of the VAE object (same weights, same loaded model) whose encode/decode calls wrap."""
    wrapped = copy.copy(vae)
    cls = type(vae)
    for name in ("decode", "encode", "decode_tiled", "encode_tiled"):
        method = getattr(cls, name, None)
        if method is not None:
            setattr(wrapped, name, _circular_method(wrapped, method, mode))
    return wrapped


def _circular_method(vae, method, mode: str):
    def call(*args, **kwargs):
        with core.circular_convs(vae.first_stage_model, mode):
            return method(vae, *args, **kwargs)

    return call


class PixartTileSplit:
    DESCRIPTION = (
        "Cuts each picture into tiles of tile_width x tile_height that overlap by `overlap` pixels and are spread "
        "evenly over it, the last one flush with the far edge (A1111's SD upscale grid). The tiles come out as one "
        "batch, row by row; Tile Merge puts them back."
    )
    CATEGORY = "Pixart/Tiling"
    FUNCTION = "split"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("tiles",)
    OUTPUT_TOOLTIPS = ("All tiles of all pictures as one batch.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The picture(s) to cut (e.g. the upscaled picture)."}),
                "tile_width": ("INT", {"default": 512, "min": 64, "max": 16384, "step": 8,
                                       "tooltip": "Tile width in pixels (A1111: the img2img width)."}),
                "tile_height": ("INT", {"default": 512, "min": 64, "max": 16384, "step": 8,
                                        "tooltip": "Tile height in pixels (A1111: the img2img height)."}),
                "overlap": ("INT", {"default": 64, "min": 0, "max": 8192, "step": 1, "tooltip": (
                    "Pixels neighbouring tiles share; Tile Merge blends over them (A1111's 'Tile overlap'). Up "
                    "to about half the tile: more would cut the picture into over four times the tiles it needs.")}),
            },
        }

    def split(self, image, tile_width, tile_height, overlap):
        import numpy as np
        import torch

        require_images(image)
        cut = [core.split(a, int(tile_width), int(tile_height), int(overlap)) for a in image.cpu().float().numpy()]
        return (torch.from_numpy(np.concatenate(cut)).to(image.dtype),)


class PixartTileMerge:
    DESCRIPTION = (
        "Puts tiles made by Tile Split (and re-generated) back into pictures of the reference's size: each row left "
        "to right, each tile blended into its left neighbour over the overlap with a linear ramp, then the rows top "
        "to bottom the same way (A1111's SD upscale combine)."
    )
    CATEGORY = "Pixart/Tiling"
    FUNCTION = "merge"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The pictures, one per reference picture.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "tiles": ("IMAGE", {"tooltip": "The tiles, in Tile Split's order (all tiles of picture 1 first)."}),
                "reference": ("IMAGE", {"tooltip": "The picture(s) that were split: only their size is used."}),
                "overlap": ("INT", {"default": 64, "min": 0, "max": 8192, "step": 1,
                                    "tooltip": "The overlap the tiles were cut with."}),
            },
        }

    def merge(self, tiles, reference, overlap):
        import numpy as np
        import torch

        require_images(tiles, "tiles")
        require_images(reference, "reference")
        height, width = int(reference.shape[1]), int(reference.shape[2])
        data = tiles.cpu().float().numpy()
        per = sum(len(xs) for _, xs in core.grid_positions(width, height, int(tiles.shape[2]), int(tiles.shape[1]),
                                                              int(overlap)))
        if data.shape[0] != per * reference.shape[0]:
            raise ValueError(f"tiles: {reference.shape[0]} picture(s) of {width}x{height} need {per} tiles each, "
                             f"got {data.shape[0]}")
        out = [core.merge(data[i * per:(i + 1) * per], width, height, int(overlap))
               for i in range(reference.shape[0])]
        return (torch.from_numpy(np.stack(out).astype(np.float32)).clamp(0, 1).to(tiles.dtype),)


NODE_CLASS_MAPPINGS = {"PixartSeamlessTiling": PixartSeamlessTiling, "PixartTileSplit": PixartTileSplit,
                       "PixartTileMerge": PixartTileMerge}
NODE_DISPLAY_NAME_MAPPINGS = {"PixartSeamlessTiling": "Seamless Tiling (wrap-around)",
                              "PixartTileSplit": "Tile Split (overlapping grid)",
                              "PixartTileMerge": "Tile Merge (overlapping grid)"}
