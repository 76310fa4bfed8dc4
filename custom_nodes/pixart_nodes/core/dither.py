"""Dithering: error-diffusion kernels, ordered (Bayer, blue-noise) threshold matrices, and the compiled loops.

Error is diffused in gamma-encoded sRGB (like Pillow, libimagequant and most pixel-art tools), so 50 % grey
dithers to 50 % white with a black/white palette; the nearest palette colour is chosen in the caller's
distance space (sRGB or OKLab). The per-pixel loops are numba-compiled (``cache=True``) because error
diffusion is inherently sequential; the first call in a fresh environment pays the compile time.

Blue noise: a 64x64 rank matrix made with Ulichney's void-and-cluster method from a fixed seed, generated on
first use in this process (about a quarter of a second, then cached) rather than shipped as a data file.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np


@dataclass(frozen=True)
class ErrorKernel:
    """An error-diffusion kernel as published: taps ``(dx, dy, numerator)`` over ``divisor``.

    ``weights`` are the taps' shares of the diffused error (they sum to 1); ``diffused`` is the fraction of
    the error that is passed on at all: 1 for every kernel except Atkinson, which by design drops a quarter
    (its numerators sum to 6 over a divisor of 8).
    """

    name: str
    taps: tuple[tuple[int, int, int], ...]
    divisor: int

    @property
    def weights(self) -> np.ndarray:
        num = np.array([t[2] for t in self.taps], dtype=np.float64)
        return num / num.sum()

    @property
    def diffused(self) -> float:
        return sum(t[2] for t in self.taps) / self.divisor


def _rows(*rows: tuple[int, tuple[int, ...]]) -> tuple[tuple[int, int, int], ...]:
    """Taps from rows written as (dy, five numerators for dx = -2..2); zeros and the current pixel skipped."""
    return tuple((dx - 2, dy, n) for dy, nums in rows for dx, n in enumerate(nums) if n)


# Reference: /work/shared/reference/pixel-art.md §3.1 (cross-checked there against makew0rld/dither and
# hitherdither). Row dy=0 lists only the pixels right of the current one.
ERROR_KERNELS: dict[str, ErrorKernel] = {
    k.name: k
    for k in (
        ErrorKernel("floyd-steinberg", _rows((0, (0, 0, 0, 7, 0)), (1, (0, 3, 5, 1, 0))), 16),
        ErrorKernel("atkinson", _rows((0, (0, 0, 0, 1, 1)), (1, (0, 1, 1, 1, 0)), (2, (0, 0, 1, 0, 0))), 8),
        ErrorKernel(
            "jarvis-judice-ninke", _rows((0, (0, 0, 0, 7, 5)), (1, (3, 5, 7, 5, 3)), (2, (1, 3, 5, 3, 1))), 48
        ),
        ErrorKernel("stucki", _rows((0, (0, 0, 0, 8, 4)), (1, (2, 4, 8, 4, 2)), (2, (1, 2, 4, 2, 1))), 42),
        ErrorKernel("burkes", _rows((0, (0, 0, 0, 8, 4)), (1, (2, 4, 8, 4, 2))), 32),
        ErrorKernel("sierra", _rows((0, (0, 0, 0, 5, 3)), (1, (2, 4, 5, 4, 2)), (2, (0, 2, 3, 2, 0))), 32),
        ErrorKernel("sierra-two-row", _rows((0, (0, 0, 0, 4, 3)), (1, (1, 2, 3, 2, 1))), 16),
        ErrorKernel("sierra-lite", _rows((0, (0, 0, 0, 2, 0)), (1, (0, 1, 1, 0, 0))), 4),
    )
}

ORDERED_METHODS = ("bayer-2x2", "bayer-4x4", "bayer-8x8", "blue-noise")


def bayer_matrix(n: int) -> np.ndarray:
    """Bayer index matrix of size ``n`` (power of two): M_2n = [[4M, 4M+2], [4M+3, 4M+1]], values 0..n*n-1."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Bayer matrix size must be a power of two, got {n}")
    m = np.zeros((1, 1), dtype=np.int64)
    while m.shape[0] < n:
        m = np.block([[4 * m, 4 * m + 2], [4 * m + 3, 4 * m + 1]])
    return m


@lru_cache(maxsize=4)
def blue_noise_ranks(size: int = 64, sigma: float = 1.5, seed: int = 0x5EED) -> np.ndarray:
    """Void-and-cluster rank matrix ``int64 [size,size]`` holding each of 0..size*size-1 once (Ulichney 1993).

    Energy is a toroidal Gaussian filter (``sigma``) of the current binary pattern, so the matrix tiles
    seamlessly. Deterministic for given arguments.
    """
    n = size * size
    d = np.minimum(np.arange(size), size - np.arange(size)).astype(np.float64)
    kernel = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2.0 * sigma * sigma)).ravel()
    # kernel value between flat positions p and q: index by the wrapped coordinate difference
    ys, xs = np.divmod(np.arange(n), size)

    def splat(energy: np.ndarray, p: int, sign: float) -> None:
        energy += sign * kernel[((ys - ys[p]) % size) * size + (xs - xs[p]) % size]

    rng = np.random.default_rng(seed)
    ones = n // 10
    pattern = np.zeros(n, dtype=bool)
    pattern[rng.choice(n, ones, replace=False)] = True
    energy = np.zeros(n)
    for p in np.flatnonzero(pattern):
        splat(energy, int(p), 1.0)

    def tightest_cluster(pat: np.ndarray, en: np.ndarray) -> int:
        return int(np.argmax(np.where(pat, en, -np.inf)))

    def largest_void(pat: np.ndarray, en: np.ndarray) -> int:
        return int(np.argmin(np.where(pat, np.inf, en)))

    # relax the random start into an evenly spread initial pattern
    for _ in range(10 * n):
        c = tightest_cluster(pattern, energy)
        pattern[c] = False
        splat(energy, c, -1.0)
        v = largest_void(pattern, energy)
        pattern[v] = True
        splat(energy, v, 1.0)
        if v == c:
            break

    ranks = np.empty(n, dtype=np.int64)
    pat, en = pattern.copy(), energy.copy()
    for r in range(ones - 1, -1, -1):  # phase 1: take the initial points away, tightest first
        c = tightest_cluster(pat, en)
        pat[c] = False
        splat(en, c, -1.0)
        ranks[c] = r
    # phases 2 and 3: fill the largest voids; with a constant kernel sum, the tightest cluster of the
    # remaining zeros (Ulichney's phase 3) is the same pixel as the largest void of the ones
    for r in range(ones, n):
        v = largest_void(pattern, energy)
        pattern[v] = True
        splat(energy, v, 1.0)
        ranks[v] = r
    return ranks.reshape(size, size)


def threshold_matrix(method: str) -> np.ndarray:
    """Centred thresholds ``(rank + 0.5) / count - 0.5`` in (-0.5, 0.5) for an ordered method."""
    if method.startswith("bayer-"):
        ranks = bayer_matrix(int(method.split("-")[1].split("x")[0]))
    elif method == "blue-noise":
        ranks = blue_noise_ranks()
    else:
        raise ValueError(f"not an ordered dither method: {method!r}")
    return (ranks + 0.5) / ranks.size - 0.5


# ---------------------------------------------------------------------------------------------------------
# candidate tables: the sRGB cube is cut into GRID^3 cells and each cell lists the palette colours that can be
# nearest to some point of the cell. Most cells list one colour, so the compiled loops usually skip the
# distance search (and the OKLab conversion) entirely, while staying exact: a colour is dropped only when its
# smallest possible distance to the cell exceeds the largest possible distance to some other colour.

GRID = 32
_CELL = 256 // GRID


def _box_bounds(lo: np.ndarray, hi: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest squared distance from each box ``[lo,hi]`` (``[C,3]``) to each point ``[N,3]``."""
    lo_, hi_, p = lo[:, None, :], hi[:, None, :], pts[None, :, :]
    near = np.maximum(np.maximum(lo_ - p, p - hi_), 0.0)
    far = np.maximum(np.abs(p - lo_), np.abs(p - hi_))
    return (near * near).sum(-1), (far * far).sum(-1)


def candidate_table(pal: np.ndarray, use_lab: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell candidate lists in CSR form: ``starts int64 [GRID^3+1]``, ``cands int64 [...]``."""
    from . import color

    cells = np.arange(GRID**3)
    coords = np.stack([cells >> 10, (cells >> 5) & 31, cells & 31], axis=1).astype(np.float64) * _CELL
    lo, hi = coords, np.minimum(coords + _CELL, 255.0)
    pal_f = pal.astype(np.float64)
    if use_lab:
        # Every entry of M1 is positive and cbrt is increasing, so a cell maps into the box spanned by its two
        # extreme corners in cube-rooted cone space, and from there linearly (M2) onto a parallelepiped in
        # OKLab. The farthest point of that convex set from a colour is one of its 8 corners (exact upper
        # bound); the set lies both in the ball around its centre through its farthest corner and in the
        # axis-aligned box around its corners (two lower bounds, the larger is used).
        c_lo = np.cbrt(color.srgb_to_linear(lo / 255.0) @ color.M1.T)
        c_hi = np.cbrt(color.srgb_to_linear(hi / 255.0) @ color.M1.T)
        pal_f = color.srgb_u8_to_oklab(pal)
        corners = np.stack(
            [np.where(np.array([(i >> j) & 1 for j in range(3)], bool), c_hi, c_lo) for i in range(8)], axis=1
        ) @ color.M2.T  # [cells, 8, 3]
        centre = corners.mean(axis=1)
        radius = np.sqrt(((corners - centre[:, None, :]) ** 2).sum(-1).max(axis=1))
        lo, hi = corners.min(axis=1), corners.max(axis=1)  # axis-aligned box around it: a second lower bound
    starts = np.zeros(len(cells) + 1, dtype=np.int64)
    lists = []
    step = max(256, (1 << 18) // len(pal))
    for s in range(0, len(cells), step):
        sl = slice(s, s + step)
        if use_lab:
            dc = np.sqrt(((centre[sl, None, :] - pal_f[None]) ** 2).sum(-1))
            near = np.maximum(np.maximum(dc - radius[sl, None], 0.0) ** 2, _box_bounds(lo[sl], hi[sl], pal_f)[0])
            far = ((corners[sl, :, None, :] - pal_f[None, None]) ** 2).sum(-1).max(axis=1)
        else:
            near, far = _box_bounds(lo[sl], hi[sl], pal_f)
        # small slack so rounding in the bounds can never drop the true nearest colour
        keep = near <= far.min(axis=1, keepdims=True) * (1 + 1e-9) + 1e-12
        counts = keep.sum(axis=1)
        starts[s + 1 : s + 1 + len(counts)] = counts
        lists.append(np.nonzero(keep)[1])
    np.cumsum(starts, out=starts)
    return starts, np.concatenate(lists).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------
# compiled loops. ``pal_cmp`` holds the palette in the distance space (sRGB 0..255 or OKLab); for OKLab
# (``nearest_lab``) each dithered sRGB value is converted with a linear-light table (``lut``, ``steps`` entries per
# code value, linearly interpolated) and the OKLab matrices ``m1``/``m2``.


@numba.njit(cache=True, nogil=True, inline="always")
def _linear(v, lut, steps):
    p = v * steps
    i = int(p)
    if i >= lut.shape[0] - 1:
        i = lut.shape[0] - 2
    return lut[i] + (p - i) * (lut[i + 1] - lut[i])


@numba.njit(cache=True, nogil=True, inline="always")
def _search(q0, q1, q2, s0, s1, pal_cmp, cands):
    best = cands[s0]
    best_d = np.inf
    for j in range(s0, s1):
        k = cands[j]
        d0 = q0 - pal_cmp[k, 0]
        d1 = q1 - pal_cmp[k, 1]
        d2 = q2 - pal_cmp[k, 2]
        d = d0 * d0 + d1 * d1 + d2 * d2
        # candidates are in palette order, so strict < keeps the lowest index on ties
        if d < best_d:
            best_d = d
            best = k
    return best


# Two separate (not inlined) nearest-colour functions: with the OKLab code inlined into one shared function
# the RGB loops ran about four times slower. The loops pick one by flag rather than taking the function as an
# argument, because numba does not reuse its on-disk cache for functions that take other functions.
@numba.njit(cache=True, nogil=True)
def nearest_rgb(r, g, b, pal_cmp, starts, cands, lut, steps, m1, m2):
    cell = (int(r) >> 3) << 10 | (int(g) >> 3) << 5 | (int(b) >> 3)
    s0 = starts[cell]
    s1 = starts[cell + 1]
    if s1 - s0 == 1:
        return cands[s0]
    return _search(r, g, b, s0, s1, pal_cmp, cands)


@numba.njit(cache=True, nogil=True)
def nearest_lab(r, g, b, pal_cmp, starts, cands, lut, steps, m1, m2):
    cell = (int(r) >> 3) << 10 | (int(g) >> 3) << 5 | (int(b) >> 3)
    s0 = starts[cell]
    s1 = starts[cell + 1]
    if s1 - s0 == 1:
        return cands[s0]
    lr = _linear(r, lut, steps)
    lg = _linear(g, lut, steps)
    lb = _linear(b, lut, steps)
    l_ = np.cbrt(m1[0, 0] * lr + m1[0, 1] * lg + m1[0, 2] * lb)
    m_ = np.cbrt(m1[1, 0] * lr + m1[1, 1] * lg + m1[1, 2] * lb)
    s_ = np.cbrt(m1[2, 0] * lr + m1[2, 1] * lg + m1[2, 2] * lb)
    q0 = m2[0, 0] * l_ + m2[0, 1] * m_ + m2[0, 2] * s_
    q1 = m2[1, 0] * l_ + m2[1, 1] * m_ + m2[1, 2] * s_
    q2 = m2[2, 0] * l_ + m2[2, 1] * m_ + m2[2, 2] * s_
    return _search(q0, q1, q2, s0, s1, pal_cmp, cands)


@numba.njit(cache=True, nogil=True)
def error_diffuse(
    use_lab, src, alpha_threshold, pal_rgb, pal_cmp, lut, steps, m1, m2, starts, cands, dxs, dys, ws, serpentine,
    table, out_idx, out_img,
):
    """Sequential error diffusion of ``src`` (uint8 [H,W,3|4]) into palette indices and the output image.

    ``ws`` are tap weights already multiplied by the kernel's diffused fraction and the strength. ``table``
    (uint8 [N+1, C]) gives each index's output pixel. Pixels with alpha below ``alpha_threshold`` get index N
    and neither take nor pass on error.
    """
    h, w, ch = src.shape
    n = pal_rgb.shape[0]
    ntap = dxs.shape[0]
    rows = 1
    for t in range(ntap):
        rows = max(rows, dys[t] + 1)
    pad = 2  # kernels reach at most 2 pixels sideways; writes into the padding are simply never read
    stride = (w + 2 * pad) * 3
    err = np.zeros(rows * stride, dtype=np.float32)
    tap = np.empty(ntap, dtype=np.int64)
    prc = np.empty((n, 3), dtype=np.float32)
    for k in range(n):
        for c in range(3):
            prc[k, c] = pal_rgb[k, c]
    for y in range(h):
        base = (y % rows) * stride
        reverse = serpentine and (y & 1) == 1
        # flat buffer offsets of each tap for this row; right-to-left rows mirror the kernel
        for t in range(ntap):
            dx = -dxs[t] if reverse else dxs[t]
            tap[t] = ((y + dys[t]) % rows) * stride + dx * 3
        for i in range(w):
            x = w - 1 - i if reverse else i
            if ch == 4 and src[y, x, 3] < alpha_threshold:
                out_idx[y, x] = n
                for c in range(ch):
                    out_img[y, x, c] = table[n, c]
                continue
            o = (x + pad) * 3
            # clamping keeps runaway error from smearing across flat areas (Pillow's CLIP8 does the same)
            r = min(max(np.float32(src[y, x, 0]) + err[base + o], np.float32(0.0)), np.float32(255.0))
            g = min(max(np.float32(src[y, x, 1]) + err[base + o + 1], np.float32(0.0)), np.float32(255.0))
            b = min(max(np.float32(src[y, x, 2]) + err[base + o + 2], np.float32(0.0)), np.float32(255.0))
            if use_lab:
                k = nearest_lab(r, g, b, pal_cmp, starts, cands, lut, steps, m1, m2)
            else:
                k = nearest_rgb(r, g, b, pal_cmp, starts, cands, lut, steps, m1, m2)
            out_idx[y, x] = k
            for c in range(ch):
                out_img[y, x, c] = table[k, c]
            er = r - prc[k, 0]
            eg = g - prc[k, 1]
            eb = b - prc[k, 2]
            for t in range(ntap):
                q = tap[t] + o
                wt = ws[t]
                err[q] += er * wt
                err[q + 1] += eg * wt
                err[q + 2] += eb * wt
        err[base : base + stride] = 0.0


@numba.njit(cache=True, nogil=True)
def ordered_dither(
    use_lab, src, alpha_threshold, pal_cmp, lut, steps, m1, m2, starts, cands, offsets, table, out_idx, out_img
):
    """Add the tiled ``offsets`` matrix (sRGB units, same offset on each channel; power-of-two sides) and map
    each pixel to the palette."""
    h, w, ch = src.shape
    n = pal_cmp.shape[0]
    mh, mw = offsets.shape
    for y in range(h):
        row = offsets[y & (mh - 1)]
        for x in range(w):
            k = n
            if ch == 3 or src[y, x, 3] >= alpha_threshold:
                o = row[x & (mw - 1)]
                r = min(max(src[y, x, 0] + o, 0.0), 255.0)
                g = min(max(src[y, x, 1] + o, 0.0), 255.0)
                b = min(max(src[y, x, 2] + o, 0.0), 255.0)
                if use_lab:
                    k = nearest_lab(r, g, b, pal_cmp, starts, cands, lut, steps, m1, m2)
                else:
                    k = nearest_rgb(r, g, b, pal_cmp, starts, cands, lut, steps, m1, m2)
            out_idx[y, x] = k
            for c in range(ch):
                out_img[y, x, c] = table[k, c]
