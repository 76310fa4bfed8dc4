"""Tiling: convolutions that wrap around (A1111's "Tiling", seamless textures) and A1111's overlapping tile grid
(the "SD upscale" script's split_grid / combine_grid).

Seamless: A1111 switches every Conv2d of the model and the VAE to circular padding, so the picture continues past
its right edge into its left one (and bottom into top). Here the switch is made only for the length of one call
(`circular_convs`), so a model shared with other jobs is never left changed; one axis can wrap alone.

Grid: the picture is cut into tiles of the generation size that overlap by `overlap` pixels and are spread evenly
over it; after each tile is re-generated the tiles are put back, each blended into its left and upper neighbour
over the overlap with a linear ramp.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

AXES = ("disabled", "both", "x only", "y only")


def _wrapping_forward(conv: torch.nn.Conv2d, wrap_x: bool, wrap_y: bool):
    pad_y, pad_x = (int(p) for p in conv.padding)

    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if pad_x:
            x = F.pad(x, (pad_x, pad_x, 0, 0), mode="circular" if wrap_x else "constant")
        if pad_y:
            x = F.pad(x, (0, 0, pad_y, pad_y), mode="circular" if wrap_y else "constant")
        return F.conv2d(x, weight, bias, conv.stride, 0, conv.dilation, conv.groups)

    return forward


@contextmanager
def circular_convs(module: torch.nn.Module, axes: str = "both") -> Iterator[int]:
    """Within the block, every zero-padded Conv2d of `module` pads circularly on `axes` ("both", "x only",
    "y only"; "disabled" changes nothing). Yields how many convolutions were switched."""
    if axes not in AXES:
        raise ValueError(f"tiling: must be one of {', '.join(AXES)}, got {axes!r}")
    switched: list[torch.nn.Conv2d] = []
    if axes != "disabled":
        wrap_x, wrap_y = axes in ("both", "x only"), axes in ("both", "y only")
        for m in module.modules():
            # String paddings ("same") and other padding modes keep their own behaviour.
            if isinstance(m, torch.nn.Conv2d) and m.padding_mode == "zeros" and not isinstance(m.padding, str) \
                    and "_conv_forward" not in vars(m):
                # torch's and ComfyUI's Conv2d both call self._conv_forward(input, weight, bias); an instance
                # attribute shadows it for this call only.
                m._conv_forward = _wrapping_forward(m, wrap_x, wrap_y)
                switched.append(m)
    try:
        yield len(switched)
    finally:
        for m in switched:
            del m._conv_forward


def seam_ratio(image: np.ndarray, axis: int) -> float:
    """The mean absolute step across the wrap-around edge (last row/column to the first) divided by the mean step
    between neighbouring rows/columns inside the picture (leaving out the two steps nearest each edge, where a
    zero-padded network leaves its border): about 1 for a picture that continues into its opposite edge along
    `axis` (0 = top/bottom, 1 = left/right), well above 1 where there is a seam."""
    a = np.asarray(image, dtype=np.float64)
    steps = np.abs(np.diff(a, axis=axis))
    n = steps.shape[axis]
    inner = np.take(steps, range(2, n - 2), axis=axis).mean() if n > 4 else steps.mean()
    edge = np.abs(np.take(a, 0, axis=axis) - np.take(a, -1, axis=axis)).mean()
    if inner == 0:
        return 1.0 if edge == 0 else float("inf")
    return float(edge / inner)


# ---------------------------------------------------------------------------------------------------------------
# The overlapping tile grid


def grid_positions(width: int, height: int, tile_w: int, tile_h: int, overlap: int) -> list[tuple[int, list[int]]]:
    """Rows of tiles as [(y, [x, ...]), ...]: as many tiles as cover the picture with `overlap`, spread evenly,
    the last one flush with the far edge (A1111's split_grid). At most four times the tiles the picture would take
    without overlap (ValueError naming `overlap` beyond)."""
    if tile_w <= overlap or tile_h <= overlap:
        raise ValueError(f"overlap: must be smaller than the tile ({tile_w}x{tile_h}), got {overlap}")
    if overlap < 0:
        raise ValueError(f"overlap: must not be negative, got {overlap}")
    cols = max(1, math.ceil((width - overlap) / (tile_w - overlap)))
    rows = max(1, math.ceil((height - overlap) / (tile_h - overlap)))
    # Up to half a tile of overlap at most doubles the tiles per side: past that each pixel is sampled more than
    # four times over (a 64-pixel tile overlapping by 56 cut a picture into 64 times its area, gigabytes of tiles)
    plain = math.ceil(width / tile_w) * math.ceil(height / tile_h)
    if cols * rows > 4 * plain:
        raise ValueError(f"overlap: {overlap} of a {tile_w}x{tile_h} tile makes {cols * rows} tiles of a {width}x"
                         f"{height} picture, {4 * plain} at most (an overlap of up to half the tile)")
    dx = (width - tile_w) / (cols - 1) if cols > 1 else 0
    dy = (height - tile_h) / (rows - 1) if rows > 1 else 0
    out = []
    for row in range(rows):
        y = int(row * dy)
        if y + tile_h >= height:
            y = height - tile_h
        xs = []
        for col in range(cols):
            x = int(col * dx)
            if x + tile_w >= width:
                x = width - tile_w
            xs.append(x)
        out.append((y, xs))
    return out


def _crop(image: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """image[y:y+h, x:x+w] with black where the box leaves the picture (as a PIL crop gives it)."""
    out = np.zeros((h, w) + image.shape[2:], dtype=image.dtype)
    _paste(out, image, -x, -y)
    return out


def split(image: np.ndarray, tile_w: int, tile_h: int, overlap: int) -> np.ndarray:
    """`image` [H,W,C] cut into tiles [N,tile_h,tile_w,C], row by row."""
    h, w = image.shape[:2]
    return np.stack([_crop(image, x, y, tile_w, tile_h)
                     for y, xs in grid_positions(w, h, tile_w, tile_h, overlap) for x in xs])


def _ramp(overlap: int) -> np.ndarray:
    # A1111's mask: 0, 255/overlap, ... as 8-bit levels, so the first column is all old picture.
    return np.floor(np.arange(overlap, dtype=np.float64) * 255 / overlap) / 255


def merge(tiles: np.ndarray, width: int, height: int, overlap: int) -> np.ndarray:
    """Tiles [N,th,tw,C] (in `split`'s order) put back into a [height,width,C] picture: each row is built left to
    right, every tile blended into the one before over `overlap` columns; the rows top to bottom the same way."""
    n, tile_h, tile_w = tiles.shape[:3]
    layout = grid_positions(width, height, tile_w, tile_h, overlap)
    if n != sum(len(xs) for _, xs in layout):
        raise ValueError(f"tiles: {width}x{height} with overlap {overlap} needs "
                         f"{sum(len(xs) for _, xs in layout)} tiles of {tile_w}x{tile_h}, got {n}")
    data = tiles.astype(np.float64)
    ramp = _ramp(overlap) if overlap else np.zeros(0)
    out = np.zeros((height, width) + tiles.shape[3:], dtype=np.float64)
    k = 0
    # the first tile of a row (and the first row) is pasted, not blended: it has nothing before it to blend into.
    # A1111 tests `x == 0`, so a picture a little smaller than the tile, whose only tile sits at a small negative
    # place, came back with its first columns (or rows) blended with black
    for r, (y, xs) in enumerate(layout):
        row = np.zeros((tile_h, width) + tiles.shape[3:], dtype=np.float64)
        for c, x in enumerate(xs):
            tile = data[k]
            k += 1
            if c == 0:
                _paste(row, tile, x, 0)
                continue
            _blend(row, tile[:, :overlap], x, 0, ramp[None, :])
            _paste(row, tile[:, overlap:], x + overlap, 0)
        if r == 0:
            _paste(out, row, 0, y)
            continue
        _blend(out, row[:overlap], 0, y, ramp[:, None])
        _paste(out, row[overlap:], 0, y + overlap)
    return out


def _overlap(dest: np.ndarray, src: np.ndarray, x: int, y: int) -> tuple[slice, slice, slice, slice] | None:
    """Where `src` placed at (x, y) meets `dest`, clipped on every side as PIL's paste clips (a picture smaller than
    the tile puts the tile at a negative place): (dest rows, dest columns, src rows, src columns), or None."""
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + src.shape[0], dest.shape[0]), min(x + src.shape[1], dest.shape[1])
    if y1 <= y0 or x1 <= x0:
        return None
    return slice(y0, y1), slice(x0, x1), slice(y0 - y, y1 - y), slice(x0 - x, x1 - x)


def _paste(dest: np.ndarray, src: np.ndarray, x: int, y: int) -> None:
    where = _overlap(dest, src, x, y)
    if where is not None:
        dest[where[0], where[1]] = src[where[2], where[3]]


def _blend(dest: np.ndarray, src: np.ndarray, x: int, y: int, weight: np.ndarray) -> None:
    """`src` over `dest` at (x, y) by `weight` (a row of `src`'s width or a column of its height)."""
    where = _overlap(dest, src, x, y)
    if where is None:
        return
    wt = weight[:, where[3]] if weight.shape[0] == 1 else weight[where[2], :]
    if dest.ndim == 3:
        wt = wt[..., None]
    dy, dx, sy, sx = where
    dest[dy, dx] = src[sy, sx] * wt + dest[dy, dx] * (1 - wt)
