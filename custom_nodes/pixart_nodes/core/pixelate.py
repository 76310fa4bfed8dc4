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
- ``outline``: contrast-aware, for dark outlines and small bright details thinner than a block (what PixelOE's
  outline expansion is for, without enlarging the image first). Per block, the darkest pixels are a *detail*
  when they are at least ``contrast`` darker than the block's median and than the medians of all but two
  neighbouring blocks: a line (which continues into two neighbours) or a dot, not the straight edge of a dark
  region (three or more dark neighbours; that block keeps the dominant colour, so regions do not grow). A detail
  block takes the mean colour of its darkest pixels; the same holds for bright details; where both qualify the
  stronger wins. Every other block takes the k-centroid dominant colour. A line running along a block border
  marks blocks on both sides; of two such neighbours whose dark pixels sit against their shared border, only the
  one holding more of the line keeps it, so a 1-px line stays 1 px.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

METHODS = ("box", "nearest", "median", "kcentroid", "outline")
OUTLINE_CONTRAST = 0.12  # default luma step (share of the 0..255 range) that makes dark/bright pixels a detail


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


def _luma(x: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of ``[..., C]`` (grey for C < 3); alpha composites over mid grey, so a dark outline around
    a transparent sprite still stands out from what surrounds it."""
    x = x.astype(np.float32)
    if x.shape[-1] < 3:
        return x[..., 0]
    y = x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
    if x.shape[-1] == 4:
        a = x[..., 3] * (1.0 / 255.0)
        y = y * a + 128.0 * (1.0 - a)
    return y


def _outline_stats(img: np.ndarray, row_edges: np.ndarray, col_edges: np.ndarray) -> dict[str, np.ndarray]:
    """Per block: luma median / robust min / robust max, the mean colour, count and centroid of its dark and of its
    bright pixels, and its k-centroid dominant colour; one gather per group of equal-shaped blocks."""
    h_out, w_out, c = len(row_edges) - 1, len(col_edges) - 1, img.shape[2]
    st = {k: np.zeros((h_out, w_out), np.float32) for k in
          ("med", "lo", "hi", "n_dark", "n_bright", "cy_dark", "cx_dark", "cy_bright", "cx_bright")}
    for k in ("dark", "bright", "base"):
        st[k] = np.zeros((h_out, w_out, c), np.float32)
    for rows, bh in _groups(row_edges):
        ri = row_edges[rows][:, None] + np.arange(bh)
        for cols, bw in _groups(col_edges):
            ci = col_edges[cols][:, None] + np.arange(bw)
            blocks = img[ri[:, :, None, None], ci[None, None, :, :]]  # [n, bh, m, bw, C]
            blocks = blocks.transpose(0, 2, 1, 3, 4).reshape(len(rows), len(cols), bh * bw, c)
            y = _luma(blocks)  # [n, m, P]
            p = bh * bw
            srt = np.sort(y, axis=2)
            k = p // 32  # robust extremes: a stray noisy pixel is not a detail
            med, lo, hi = srt[..., p // 2], srt[..., k], srt[..., p - 1 - k]
            # pixel position inside the block, -0.5 .. 0.5 (centre 0), for where a detail sits
            py = ((np.arange(p) // bw + 0.5) / bh - 0.5).astype(np.float32)
            px = ((np.arange(p) % bw + 0.5) / bw - 0.5).astype(np.float32)
            sel = np.ix_(rows, cols)
            # the detail's colour from its core (a quarter of the way to the median): anti-aliased rims would
            # tint it towards the fill
            for name, mask in (("dark", y <= (lo + 0.25 * (med - lo))[..., None]),
                               ("bright", y >= (hi - 0.25 * (hi - med))[..., None])):
                cnt = mask.sum(axis=2).astype(np.float32)
                safe = np.maximum(cnt, 1.0)[..., None]
                st[name][sel] = (blocks * mask[..., None]).sum(axis=2, dtype=np.float32) / safe
                st["n_" + name][sel] = cnt
                st["cy_" + name][sel] = (mask * py).sum(axis=2) / safe[..., 0]
                st["cx_" + name][sel] = (mask * px).sum(axis=2) / safe[..., 0]
            st["med"][sel], st["lo"][sel], st["hi"][sel] = med, lo, hi
            st["base"][sel] = _kcentroid(blocks, 2)
    return st


def _neighbour_extremes(v: np.ndarray, rank: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The ``rank``-th lowest and highest (0 = extreme) of the 8 neighbours of each cell (edges replicated).

    With rank 2, two neighbours may be as dark as a detail: a line continues into the blocks before and after it,
    while a block at the straight edge of a dark region has three dark neighbours."""
    pad = np.pad(v, 1, mode="edge")
    h, w = v.shape
    shifted = [pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    stack = np.sort(np.stack(shifted), axis=0)
    return stack[rank], stack[-1 - rank]


def _suppress_straddling(keep: np.ndarray, count: np.ndarray, cy: np.ndarray, cx: np.ndarray) -> None:
    """A detail on the border of two blocks marks both; keep only the block holding more of it (ties: the upper /
    left one). Blocks count as straddling when their detail pixels sit against the shared border."""
    near = 0.15
    for axis, c in ((0, cy), (1, cx)):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        pair = keep[a] & keep[b] & (c[a] > near) & (c[b] < -near)
        drop_b = pair & (count[a] >= count[b])
        drop_a = pair & ~drop_b
        keep[b] &= ~drop_b
        keep[a] &= ~drop_a


def _outline(img: np.ndarray, row_edges: np.ndarray, col_edges: np.ndarray, contrast: float) -> np.ndarray:
    st = _outline_stats(img, row_edges, col_edges)
    step = float(contrast) * 255.0
    nb_lo, nb_hi = _neighbour_extremes(st["med"])
    dark_gap = np.minimum(st["med"], nb_lo) - st["lo"]
    bright_gap = st["hi"] - np.maximum(st["med"], nb_hi)
    dark = dark_gap >= step
    bright = bright_gap >= step
    both = dark & bright
    dark &= ~both | (dark_gap >= bright_gap)
    bright &= ~dark
    _suppress_straddling(dark, st["n_dark"], st["cy_dark"], st["cx_dark"])
    _suppress_straddling(bright, st["n_bright"], st["cy_bright"], st["cx_bright"])
    out = np.where(dark[..., None], st["dark"], np.where(bright[..., None], st["bright"], st["base"]))
    return _round_half_up(out)


def pixelate(
    img: np.ndarray,
    *,
    width: int | None = None,
    height: int | None = None,
    pixel_size: int | None = None,
    method: str = "box",
    upscale: bool = False,
    k: int = 2,
    contrast: float = OUTLINE_CONTRAST,
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
    if method == "outline" and not 0.0 < float(contrast) <= 1.0:
        raise ValueError(f"contrast must be in (0, 1], got {contrast}")
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
    elif method == "outline":
        small = _outline(img, row_edges, col_edges, contrast)
    else:
        small = _reduce_blocks(img, row_edges, col_edges, lambda b: _kcentroid(b, int(k)))
    small = np.ascontiguousarray(small)
    return expand_blocks(small, row_edges, col_edges) if upscale else small


