"""Pixelation: reduce an image to a coarse grid of blocks, one output pixel per block.

The grid is described by block edges along each axis. With ``pixel_size=p`` every block is exactly ``p`` pixels and
the last row/column of blocks takes the remainder; with a target ``width``/``height`` the edges are
``floor(i * H / h)`` (blocks differ by at most one pixel). Either way each axis has at most two block sizes, so the
blocks fall into at most four groups of equal shape, and every method runs vectorised on one ``[n, bh, m, bw, C]``
gather per group instead of looping over blocks in Python.

Methods (per block, per channel unless noted):

- ``nearest``: the pixel at the block centre (``start + size // 2``, what Pillow's NEAREST picks);
- ``box``: the mean, rounded half up (equal to OpenCV INTER_AREA when sizes divide); with alpha the colour is
  averaged weighted by alpha, so fully transparent pixels do not darken the edge of a sprite;
- ``median``: the per-channel median (mean of the two middle values for even counts, rounded half up);
- ``kcentroid``: the dominant colour: a small k-means (k = 2..4, all channels together) per block, returning the
  centre of the largest cluster. It keeps outlines and flat colours crisp where averaging would blend them.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

METHODS = ("box", "nearest", "median", "kcentroid")


def _edges_by_size(n: int, p: int) -> np.ndarray:
    edges = np.arange(0, n, p, dtype=np.int64)
    return np.append(edges, n)


def _edges_by_count(n: int, m: int) -> np.ndarray:
    return (np.arange(m + 1, dtype=np.int64) * n) // m


def grid(
    height: int, width: int, *, out_width: int | None = None, out_height: int | None = None,
    pixel_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column block edges for an image of ``height x width``.

    Give ``pixel_size``, or ``out_width`` and/or ``out_height`` (a missing one follows the aspect ratio).
    """
    if pixel_size is not None and (out_width or out_height):
        raise ValueError("give either pixel_size or width/height, not both")
    if pixel_size is not None:
        p = int(pixel_size)
        if p < 1:
            raise ValueError(f"pixel_size must be >= 1, got {pixel_size}")
        return _edges_by_size(height, p), _edges_by_size(width, p)
    if not out_width and not out_height:
        raise ValueError("give pixel_size, or width and/or height")
    for name, v in (("width", out_width), ("height", out_height)):
        if v is not None and int(v) < 0:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if not out_width:
        out_width = max(1, round(width * int(out_height) / height))
    if not out_height:
        out_height = max(1, round(height * int(out_width) / width))
    ow, oh = int(out_width), int(out_height)
    if ow > width or oh > height:
        raise ValueError(
            f"pixelate only shrinks: target {ow}x{oh} is larger than the image {width}x{height}"
        )
    return _edges_by_count(height, oh), _edges_by_count(width, ow)


def expand_blocks(small: np.ndarray, row_edges: np.ndarray, col_edges: np.ndarray) -> np.ndarray:
    """Nearest-neighbour enlargement that fills each block with its pixel (back to the original size)."""
    out = np.repeat(small, np.diff(row_edges), axis=0)
    return np.repeat(out, np.diff(col_edges), axis=1)


def _groups(edges: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Block indices grouped by block size: ``[(indices, size), ...]`` (at most two entries)."""
    sizes = np.diff(edges)
    return [(np.flatnonzero(sizes == s), int(s)) for s in np.unique(sizes)]


def _reduce_blocks(img: np.ndarray, row_edges: np.ndarray, col_edges: np.ndarray,
                   reducer: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``reducer`` to ``[n, m, bh*bw, C]`` block stacks, one call per group of equal-shaped blocks."""
    h_out, w_out, c = len(row_edges) - 1, len(col_edges) - 1, img.shape[2]
    out = np.empty((h_out, w_out, c), dtype=np.uint8)
    for rows, bh in _groups(row_edges):
        ri = row_edges[rows][:, None] + np.arange(bh)  # [n, bh]
        for cols, bw in _groups(col_edges):
            ci = col_edges[cols][:, None] + np.arange(bw)  # [m, bw]
            blocks = img[ri[:, :, None, None], ci[None, None, :, :]]  # [n, bh, m, bw, C]
            blocks = blocks.transpose(0, 2, 1, 3, 4).reshape(len(rows), len(cols), bh * bw, c)
            out[np.ix_(rows, cols)] = reducer(blocks)
    return out


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5).clip(0, 255).astype(np.uint8)


def _box(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[2]
    sums = blocks.sum(axis=2, dtype=np.int64)
    # integer rounding half up: exact, no float error on large blocks
    return ((sums + n // 2) // n).astype(np.uint8)


def _box_alpha(blocks: np.ndarray) -> np.ndarray:
    """Alpha-weighted colour mean; alpha itself is the plain mean. Fully transparent blocks average plainly."""
    n = blocks.shape[2]
    a = blocks[..., 3:4].astype(np.int64)
    asum = a.sum(axis=2)  # [n, m, 1]
    weighted = (blocks[..., :3].astype(np.int64) * a).sum(axis=2)
    plain = blocks[..., :3].sum(axis=2, dtype=np.int64)
    safe = np.maximum(asum, 1)
    rgb = np.where(asum > 0, (weighted + safe // 2) // safe, (plain + n // 2) // n)
    alpha = (asum + n // 2) // n
    return np.concatenate([rgb, alpha], axis=-1).astype(np.uint8)


def _median(blocks: np.ndarray) -> np.ndarray:
    return _round_half_up(np.median(blocks, axis=2))


def _kcentroid(blocks: np.ndarray, k: int, iterations: int = 8) -> np.ndarray:
    n_r, n_c, n, c = blocks.shape
    x = blocks.reshape(-1, n, c).astype(np.float32)  # [B, n, C]
    k = min(k, n)
    # channel planes and per-cluster loops (k, C <= 4) keep every temporary at [B, n] instead of [B, n, k, C]
    planes = [np.ascontiguousarray(x[..., ch]) for ch in range(c)]
    # deterministic start: pixels at evenly spaced ranks of brightness, so dark outlines and light fills each
    # get a seed (random starts would make the output flicker between runs)
    order = np.argsort(x.sum(axis=2), axis=1, kind="stable")
    picks = order[:, ((np.arange(k) + 0.5) * n / k).astype(np.int64)]  # [B, k]
    centres = np.take_along_axis(x, picks[..., None], axis=1)  # [B, k, C]

    def assign(centres: np.ndarray) -> np.ndarray:
        best_d = np.full(planes[0].shape, np.inf, dtype=np.float32)
        labels = np.zeros(planes[0].shape, dtype=np.int8)
        for j in range(k):
            d = np.zeros_like(best_d)
            for ch in range(c):
                diff = planes[ch] - centres[:, j, ch][:, None]
                d += diff * diff
            closer = d < best_d  # strict: ties go to the lower cluster index
            best_d = np.where(closer, d, best_d)
            labels[closer] = j
        return labels

    n_blocks = x.shape[0]
    block_base = (np.arange(n_blocks, dtype=np.int64) * k)[:, None]
    for _ in range(iterations):
        labels = assign(centres)
        # one bincount per channel sums every (block, cluster) pair at once
        slot = (block_base + labels).ravel()
        count = np.bincount(slot, minlength=n_blocks * k).reshape(-1, k)
        new = np.empty_like(centres)
        for ch in range(c):
            total = np.bincount(slot, weights=planes[ch].ravel(), minlength=n_blocks * k).reshape(-1, k)
            # an empty cluster keeps its previous centre instead of collapsing to 0/0
            new[..., ch] = np.where(count > 0, total / np.maximum(count, 1), centres[..., ch])
        if np.array_equal(new, centres):
            break
        centres = new
    labels = assign(centres)
    counts = np.stack([(labels == j).sum(axis=1) for j in range(k)], axis=1)  # [B, k]
    best = counts.argmax(axis=1)  # ties -> lowest index, i.e. the darker seed
    dominant = centres[np.arange(len(best)), best]
    return _round_half_up(dominant).reshape(n_r, n_c, c)


def pixelate(
    img: np.ndarray,
    *,
    width: int | None = None,
    height: int | None = None,
    pixel_size: int | None = None,
    method: str = "box",
    upscale: bool = False,
    k: int = 2,
) -> np.ndarray:
    """Pixelate ``uint8 [H,W,C]`` (C = 1, 3 or 4; with 4 the last channel is alpha).

    Returns the small image (one pixel per block), or with ``upscale=True`` that image enlarged with nearest
    neighbour back to the input size, block by block.
    """
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[..., None]
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"image must be uint8 [H,W,C], got {img.dtype} {img.shape}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "kcentroid" and not 2 <= int(k) <= 4:
        raise ValueError(f"k must be 2..4, got {k}")
    row_edges, col_edges = grid(img.shape[0], img.shape[1], out_width=width, out_height=height,
                                pixel_size=pixel_size)
    if method == "nearest":
        rows = row_edges[:-1] + np.diff(row_edges) // 2
        cols = col_edges[:-1] + np.diff(col_edges) // 2
        small = img[np.ix_(rows, cols)]
    elif method == "box":
        small = _reduce_blocks(img, row_edges, col_edges, _box_alpha if img.shape[2] == 4 else _box)
    elif method == "median":
        small = _reduce_blocks(img, row_edges, col_edges, _median)
    else:
        small = _reduce_blocks(img, row_edges, col_edges, lambda b: _kcentroid(b, int(k)))
    small = np.ascontiguousarray(small)
    return expand_blocks(small, row_edges, col_edges) if upscale else small


