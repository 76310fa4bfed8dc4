"""Conversions between ComfyUI tensors and the uint8 arrays the core modules work on.

Core algorithms run on ``uint8 [H,W,C]`` numpy arrays (C = 3, or 4 with alpha): a quarter of the memory of
ComfyUI's float32 images, and the representation palettes and LCD packing are defined in. Nodes convert one
image of a batch at a time so that peak memory stays near one image, not one batch.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np


def _clipped(arr: np.ndarray) -> np.ndarray:
    """``arr`` clipped to 0..255 in place, NaN (a float IMAGE or MASK from another node may carry it) as 0: clip keeps
    NaN for a cast numpy leaves undefined (and warns about). np.clip and a max to find NaN: fmin/fmax, which drop
    it, took 8 times as long."""
    np.clip(arr, 0, 255, out=arr)
    if arr.size and np.isnan(arr.max()):
        np.nan_to_num(arr, copy=False, nan=0.0)
    return arr


def image_to_uint8(image) -> np.ndarray:
    """One ComfyUI image ``[H,W,C]`` float 0..1 (torch or numpy) to ``uint8 [H,W,C]``, rounded to nearest; grey
    (C = 1) comes out as RGB and grey with alpha (C = 2) as RGBA, the shapes every core module takes."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().float().numpy()  # .float(): numpy has no bfloat16
    # a new array: np.asarray of a CPU tensor is a view, and writing into it would corrupt the caller's tensor
    # (ComfyUI caches node outputs and hands the same tensor to every consumer)
    arr = np.asarray(image, dtype=np.float32) * 255.0 + 0.5
    out = np.empty(arr.shape, dtype=np.uint8)
    # round-half-up after clipping; np.rint would round 0.5 to even and bias mid-greys
    out[...] = _clipped(arr)
    if out.ndim == 3 and out.shape[2] in (1, 2):
        out = np.concatenate([np.repeat(out[..., :1], 3, axis=2), out[..., 1:]], axis=2)
    return out


def output_channels(channels: int) -> int:
    """The channels a node gives back for an input of `channels`: RGBA where it came with alpha (grey and alpha
    too), RGB otherwise (grey included: the palette's colours are not grey)."""
    return 4 if channels in (2, 4) else 3


def require_images(images, field: str = "image") -> None:
    """ValueError naming ``field`` for a batch with no image: a node would otherwise fail deep inside on the first
    image it takes from the list (an IndexError naming nothing); ComfyUI's batch and crop nodes can hand one on."""
    if images.ndim == 4 and images.shape[0] == 0:
        raise ValueError(f"{field}: the batch holds no image")


def iter_batch_uint8(images) -> Iterator[np.ndarray]:
    """Yield each image of a ComfyUI batch ``[B,H,W,C]`` as ``uint8 [H,W,C]``."""
    if images.ndim == 3:
        images = images[None]
    for i in range(images.shape[0]):
        yield image_to_uint8(images[i])


def uint8_to_image(arrays):
    """``uint8 [H,W,C]`` arrays (a list or one array) to a ComfyUI float32 batch ``[B,H,W,C]`` in 0..1."""
    import torch

    if isinstance(arrays, np.ndarray) and arrays.ndim == 3:
        arrays = [arrays]
    batch = torch.empty((len(arrays), *arrays[0].shape), dtype=torch.float32)
    for i, a in enumerate(arrays):
        batch[i] = torch.from_numpy(a).to(torch.float32).div_(255.0)
    return batch


def mask_to_alpha(mask, index: int, shape: tuple[int, int]) -> np.ndarray | None:
    """ComfyUI ``MASK`` (1 = masked, i.e. transparent for LoadImage) to a ``uint8 [H,W]`` alpha for one image.

    A mask of another size is scaled to the image, as ComfyUI's JoinImageWithAlpha does, with area averaging where
    it shrinks (JoinImageWithAlpha's bilinear reads only some of the pixels then; a picture pixelated without
    upscaling meets its LoadImage mask at the original size); an all-zero one is no alpha at all (None):
    LoadImage gives a 64x64 zero mask for images without alpha.
    """
    if mask is None:
        return None
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().float().numpy()
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim < 2:
        raise ValueError(f"mask: expected a MASK [B,H,W], got shape {list(mask.shape)}")
    if mask.size == 0:  # before the reshape, which cannot infer a batch of masks of no pixels
        raise ValueError(f"mask: holds no pixels (shape {list(mask.shape)})")
    # [B,1,H,W] from nodes that keep a channel axis, read as JoinImageWithAlpha reads it: a batch of [H,W] masks
    mask = mask.reshape((-1, *mask.shape[-2:]))
    m = mask[min(index, mask.shape[0] - 1)]
    if m.shape != tuple(shape):
        if not m.any():
            return None
        import cv2

        shrink = shape[0] <= m.shape[0] and shape[1] <= m.shape[1]
        m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return _clipped((1.0 - m) * 255.0 + 0.5).astype(np.uint8)


def alpha_to_mask(alphas: list[np.ndarray]):
    """``uint8 [H,W]`` alphas to a ComfyUI ``MASK`` batch (1 = transparent), as LoadImage defines it."""
    import torch

    out = torch.empty((len(alphas), *alphas[0].shape), dtype=torch.float32)
    for i, a in enumerate(alphas):
        out[i] = 1.0 - torch.from_numpy(a).to(torch.float32) / 255.0
    return out
