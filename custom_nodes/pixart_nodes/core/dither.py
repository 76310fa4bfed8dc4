"""Dithering: error-diffusion kernels, ordered (Bayer, blue-noise) threshold matrices, and the compiled loops.

Error is diffused in gamma-encoded sRGB (like Pillow, libimagequant and most pixel-art tools), so 50 % grey
dithers to 50 % white with a black/white palette; the nearest palette colour is chosen in the caller's
distance space (sRGB or OKLab). Every kernel diffuses exact integer error (fixed point, like Pillow's integer
error): each diffused value is rounded to a code value and that value's exact nearest colour taken. The per-pixel
loops are compiled (error diffusion is inherently sequential): ahead of time by ``build_kernels`` when built, else
by numba (``cache=True``; see ``jit``).

Blue noise: a 64x64 rank matrix made with Ulichney's void-and-cluster method from a fixed seed, generated on
first use in this process (about a quarter of a second, then cached) rather than shipped as a data file.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from . import jit as _jit
from .jit import njit


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

_SELF = sys.modules[__name__]

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
# candidate tables: the sRGB cube is cut into cells (2^gbits per side) and each cell lists the palette colours
# that can be nearest to some point of the cell. Most cells list one colour, so the compiled loops usually
# skip the distance search (and the OKLab conversion) entirely, while staying exact: colour b is dropped only
# when one other colour a is provably nearer than b at every point of the cell.
#
# sRGB: ``d(q,b) - d(q,a)`` is affine in q, so a beats b on the whole (convex) cell when it does at the 8
# corners; the corners have integer coordinates, so the test runs on exact integers and asks for a margin of
# at least 1 there, far above the rounding of the float search.
# OKLab: with c = cbrt(M1 @ linear) and u = 2 M2^T (a - b), ``d(q,b) - d(q,a) = u.c + |b|^2 - |a|^2``. In linear
# light the cell is a box and each cone response L_i is affine with positive weights. A term with u_i >= 0 is
# concave there; a term with u_i < 0 is convex and lies above its tangent at the box centre. Replacing the
# convex terms by their tangents gives a concave lower bound, whose minimum over the box is at a corner: a
# beats b on the cell when that bound is positive at the 8 corners (with a margin for rounding).

# Finer cells for small palettes (fewer cells with several candidates); the build cost grows with cells x colours.
RGB_FINE_MAX_COLOURS = 64

# Sub-cell table entries (uint16): not yet decided, or several candidates even in the sub-cell.
SUB_UNKNOWN = 65535
SUB_MULTI = 65534


@njit(cache=True, nogil=True)
def _append(buf, used, value):
    if used == buf.shape[0]:
        grown = np.empty(2 * buf.shape[0], dtype=buf.dtype)
        grown[:used] = buf[:used]
        buf = grown
    buf[used] = value
    return buf


@njit(cache=True, nogil=True)
def _box_keep_rgb(pal, lo0, lo1, lo2, hi0, hi1, hi2, cand, ncand, dist, near, keep):
    """Mark in ``keep[:ncand]`` the candidates ``cand`` that can be nearest somewhere in the integer box."""
    for corner in range(8):
        q0 = hi0 if corner & 1 else lo0
        q1 = hi1 if (corner >> 1) & 1 else lo1
        q2 = hi2 if corner >> 2 else lo2
        best = 0
        for j in range(ncand):
            k = cand[j]
            d0 = q0 - np.int64(pal[k, 0])
            d1 = q1 - np.int64(pal[k, 1])
            d2 = q2 - np.int64(pal[k, 2])
            d = d0 * d0 + d1 * d1 + d2 * d2
            dist[corner, j] = d
            if d < dist[corner, best]:
                best = j
        near[corner] = best
    count = 0
    for j in range(ncand):
        keep[j] = True
        for t in range(8):  # the nearest colour of some corner is always kept
            a = near[t]
            if a == j:
                break
            beaten = True
            for corner in range(8):
                if dist[corner, j] - dist[corner, a] < 1:
                    beaten = False
                    break
            if beaten:
                keep[j] = False
                break
        count += keep[j]
    return count


@njit(cache=True, nogil=True)
def _box_keep_lab(pal_lab, norm, m1, m2, x0, x1, x2, cand, ncand, cone, root, dist, near, keep):
    """Like ``_box_keep_rgb`` for the linear-light box ``[x0[0],x0[1]] x [x1[0],x1[1]] x [x2[0],x2[1]]``."""
    for corner in range(8):
        l0 = x0[corner & 1]
        l1 = x1[(corner >> 1) & 1]
        l2 = x2[corner >> 2]
        for i in range(3):
            cone[corner, i] = m1[i, 0] * l0 + m1[i, 1] * l1 + m1[i, 2] * l2
            root[corner, i] = np.cbrt(cone[corner, i])
        q0 = m2[0, 0] * root[corner, 0] + m2[0, 1] * root[corner, 1] + m2[0, 2] * root[corner, 2]
        q1 = m2[1, 0] * root[corner, 0] + m2[1, 1] * root[corner, 1] + m2[1, 2] * root[corner, 2]
        q2 = m2[2, 0] * root[corner, 0] + m2[2, 1] * root[corner, 1] + m2[2, 2] * root[corner, 2]
        best = 0
        for j in range(ncand):
            k = cand[j]
            d = (q0 - pal_lab[k, 0]) ** 2 + (q1 - pal_lab[k, 1]) ** 2 + (q2 - pal_lab[k, 2]) ** 2
            dist[corner, j] = d
            if d < dist[corner, best]:
                best = j
        near[corner] = best
    c0 = 0.5 * (x0[0] + x0[1])
    c1 = 0.5 * (x1[0] + x1[1])
    c2 = 0.5 * (x2[0] + x2[1])
    lc0 = m1[0, 0] * c0 + m1[0, 1] * c1 + m1[0, 2] * c2
    lc1 = m1[1, 0] * c0 + m1[1, 1] * c1 + m1[1, 2] * c2
    lc2 = m1[2, 0] * c0 + m1[2, 1] * c1 + m1[2, 2] * c2
    rc0 = np.cbrt(lc0)
    rc1 = np.cbrt(lc1)
    rc2 = np.cbrt(lc2)
    count = 0
    for j in range(ncand):
        keep[j] = True
        k = cand[j]
        for t in range(8):
            ja = near[t]
            if ja == j:
                break
            a = cand[ja]
            e0 = pal_lab[a, 0] - pal_lab[k, 0]
            e1 = pal_lab[a, 1] - pal_lab[k, 1]
            e2 = pal_lab[a, 2] - pal_lab[k, 2]
            u0 = 2.0 * (m2[0, 0] * e0 + m2[1, 0] * e1 + m2[2, 0] * e2)
            u1 = 2.0 * (m2[0, 1] * e0 + m2[1, 1] * e1 + m2[2, 1] * e2)
            u2 = 2.0 * (m2[0, 2] * e0 + m2[1, 2] * e1 + m2[2, 2] * e2)
            const = norm[k] - norm[a]
            beaten = True
            for corner in range(8):
                s = const
                # concave terms exactly; convex ones by their tangent at the centre (a lower bound)
                if u0 >= 0.0:
                    s += u0 * root[corner, 0]
                else:
                    s += u0 * (rc0 + (cone[corner, 0] - lc0) / (3.0 * rc0 * rc0))
                if u1 >= 0.0:
                    s += u1 * root[corner, 1]
                else:
                    s += u1 * (rc1 + (cone[corner, 1] - lc1) / (3.0 * rc1 * rc1))
                if u2 >= 0.0:
                    s += u2 * root[corner, 2]
                else:
                    s += u2 * (rc2 + (cone[corner, 2] - lc2) / (3.0 * rc2 * rc2))
                if s <= 1e-9:  # margin for rounding in this bound and in the loops' conversion
                    beaten = False
                    break
            if beaten:
                keep[j] = False
                break
        count += keep[j]
    return count


@njit(cache=True, nogil=True)
def _level(use_lab, pal, pal_lab, norm, lut, steps, m1, m2, bits, pstarts, pflat):
    """Candidate lists (CSR: ``starts``, ``flat``) of every cell at ``bits`` per channel, each cell testing only
    its parent cell's candidates (``pstarts``/``pflat`` at ``bits - 1``; None: every colour)."""
    n = pal.shape[0]
    g = 1 << bits
    size = 256 >> bits
    everyone = np.empty(n, dtype=np.int32)
    for k in range(n):
        everyone[k] = k
    dist_i = np.empty((8, n), dtype=np.int64)
    dist_f = np.empty((8, n))
    cone = np.empty((8, 3))
    root = np.empty((8, 3))
    near = np.empty(8, dtype=np.int64)
    keep = np.empty(n, dtype=np.bool_)
    x0 = np.empty(2)
    x1 = np.empty(2)
    x2 = np.empty(2)
    starts = np.zeros(g * g * g + 1, dtype=np.int64)
    flat = np.empty(4 * g * g * g, dtype=np.int32)
    used = 0
    for i0 in range(g):
        for i1 in range(g):
            for i2 in range(g):
                cell = (i0 << (2 * bits)) | (i1 << bits) | i2
                if pstarts is None:
                    cand = everyone
                else:
                    parent = ((i0 >> 1) << (2 * bits - 2)) | ((i1 >> 1) << (bits - 1)) | (i2 >> 1)
                    cand = pflat[pstarts[parent] : pstarts[parent + 1]]
                ncand = cand.shape[0]
                if ncand == 1:
                    keep[0] = True
                else:
                    lo0, lo1, lo2 = i0 * size, i1 * size, i2 * size
                    hi0, hi1, hi2 = min(lo0 + size, 255), min(lo1 + size, 255), min(lo2 + size, 255)
                    if use_lab:
                        # linear light from the loops' own table, so the box holds exactly the values they compute
                        x0[0], x0[1] = lut[int(lo0 * steps)], lut[int(hi0 * steps)]
                        x1[0], x1[1] = lut[int(lo1 * steps)], lut[int(hi1 * steps)]
                        x2[0], x2[1] = lut[int(lo2 * steps)], lut[int(hi2 * steps)]
                        _box_keep_lab(pal_lab, norm, m1, m2, x0, x1, x2, cand, ncand, cone, root, dist_f, near, keep)
                    else:
                        _box_keep_rgb(pal, lo0, lo1, lo2, hi0, hi1, hi2, cand, ncand, dist_i, near, keep)
                for j in range(ncand):
                    if keep[j]:
                        flat = _append(flat, used, cand[j])
                        used += 1
                starts[cell + 1] = used
    return starts, flat[:used]


@njit(cache=True, nogil=True)
def _build(use_lab, pal, pal_lab, lut, steps, m1, m2, gbits, info, moff):
    """Fill ``info``/``moff`` for every cell; returns ``cands`` (blocks: count, sub-table offset, colours) and
    the number of multi-candidate cells. Levels are built coarse to fine (8^3 cells up to 2^gbits per side),
    each cell testing only its parent's candidates: most colours are ruled out at the coarse levels."""
    n = pal.shape[0]
    norm = np.empty(n)
    for k in range(n):
        norm[k] = pal_lab[k, 0] ** 2 + pal_lab[k, 1] ** 2 + pal_lab[k, 2] ** 2
    starts, flat = _level(use_lab, pal, pal_lab, norm, lut, steps, m1, m2, 3, None, None)
    for bits in range(4, gbits + 1):
        starts, flat = _level(use_lab, pal, pal_lab, norm, lut, steps, m1, m2, bits, starts, flat)
    cands = np.empty(1024, dtype=np.int32)
    used = 0
    subs = 0
    for cell in range(starts.shape[0] - 1):
        count = starts[cell + 1] - starts[cell]
        if count == 1:
            info[cell] = flat[starts[cell]]
            continue
        info[cell] = np.iinfo(info.dtype).max
        moff[cell] = used
        cands = _append(cands, used, count)
        cands = _append(cands, used + 1, subs * 64)
        used += 2
        subs += 1
        for j in range(starts[cell], starts[cell + 1]):
            cands = _append(cands, used, flat[j])
            used += 1
    return cands[:used].copy(), subs


@njit(cache=True, nogil=True)
def _refine(use_lab, s, ir, ig, ib, gbits, pal, pal_lab, lut, steps, m1, m2, cands):
    """Decide one sub-cell (a quarter of a cell per side) of the multi-candidate cell whose block starts at
    ``cands[s]``: the single colour that can be nearest there, or ``SUB_MULTI``."""
    sub = (256 >> gbits) >> 2
    ncand = cands[s]
    cand = cands[s + 2 : s + 2 + ncand]
    lo0 = (ir // sub) * sub
    lo1 = (ig // sub) * sub
    lo2 = (ib // sub) * sub
    hi0, hi1, hi2 = min(lo0 + sub, 255), min(lo1 + sub, 255), min(lo2 + sub, 255)
    near = np.empty(8, dtype=np.int64)
    keep = np.empty(ncand, dtype=np.bool_)
    if use_lab:
        norm = np.empty(pal_lab.shape[0])
        for j in range(ncand):
            k = cand[j]
            norm[k] = pal_lab[k, 0] ** 2 + pal_lab[k, 1] ** 2 + pal_lab[k, 2] ** 2
        x0 = np.array([lut[int(lo0 * steps)], lut[int(hi0 * steps)]])
        x1 = np.array([lut[int(lo1 * steps)], lut[int(hi1 * steps)]])
        x2 = np.array([lut[int(lo2 * steps)], lut[int(hi2 * steps)]])
        count = _box_keep_lab(pal_lab, norm, m1, m2, x0, x1, x2, cand, ncand, np.empty((8, 3)), np.empty((8, 3)),
                              np.empty((8, ncand)), near, keep)
    else:
        count = _box_keep_rgb(pal, lo0, lo1, lo2, hi0, hi1, hi2, cand, ncand, np.empty((8, ncand), dtype=np.int64),
                              near, keep)
    if count > 1:
        return SUB_MULTI
    for j in range(ncand):
        if keep[j]:
            return cand[j]
    return SUB_MULTI


@njit(cache=True, nogil=True)
def _refine_lab(s, ir, ig, ib, gbits, pal_lab, norm, lut, steps, m1, m2, cands, near, keep, x0, x1, x2, cone, root,
                dist):
    """``_refine`` for OKLab with the palette's squared norms and scratch arrays from the caller: the loops decide
    sub-cells on first visit, up to hundreds of thousands in one call on a noisy image, so they allocate nothing."""
    sub = (256 >> gbits) >> 2
    ncand = cands[s]
    cand = cands[s + 2 : s + 2 + ncand]
    lo0 = (ir // sub) * sub
    lo1 = (ig // sub) * sub
    lo2 = (ib // sub) * sub
    x0[0], x0[1] = lut[int(lo0 * steps)], lut[int(min(lo0 + sub, 255) * steps)]
    x1[0], x1[1] = lut[int(lo1 * steps)], lut[int(min(lo1 + sub, 255) * steps)]
    x2[0], x2[1] = lut[int(lo2 * steps)], lut[int(min(lo2 + sub, 255) * steps)]
    count = _box_keep_lab(pal_lab, norm, m1, m2, x0, x1, x2, cand, ncand, cone, root, dist, near, keep)
    if count > 1:
        return SUB_MULTI
    for j in range(ncand):
        if keep[j]:
            return cand[j]
    return SUB_MULTI


def cell_table(
    pal: np.ndarray, use_lab: bool, gbits: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Candidate table for the compiled loops: ``(info, moff, cands, sub, gbits)``, cells of 2^(8-gbits) values.

    ``info [8^gbits]`` holds the palette index of a cell with a single candidate, else the dtype's largest
    value; then the block at ``cands[moff[cell]]`` holds the count, the offset of the cell's 64 sub-cells in
    ``sub`` and the candidates (in palette order). ``sub`` (uint16, ``SUB_UNKNOWN`` until first needed) is
    filled lazily by the loops: most of a multi-candidate cell is still decided by one colour, and the loops
    only ever visit a small part of the cube, so deciding sub-cells on demand is far cheaper than a finer
    table. ``info`` is uint8 for palettes of up to 254 colours. ``gbits`` None picks 6 (64^3 cells) for sRGB
    palettes of up to ``RGB_FINE_MAX_COLOURS`` colours, else 5 (building costs cells x colours). Error
    diffusion asks for 5 itself: its loop waits on each table load (the next pixel needs this pixel's
    colour), and the 32 KiB uint8 table stays in the L1 cache where the 256 KiB one does not.

    The arrays are mutable (``sub``) and shared by every call with the palette; concurrent calls may decide
    the same sub-cell twice, always to the same value.
    """
    from . import color

    pal = np.ascontiguousarray(pal, dtype=np.uint8)
    n = len(pal)
    if gbits is None:
        gbits = 6 if not use_lab and n <= RGB_FINE_MAX_COLOURS else 5
    dtype = np.uint8 if n < 255 else np.uint16
    info = np.empty(1 << (3 * gbits), dtype=dtype)
    moff = np.zeros(1 << (3 * gbits), dtype=np.int32)
    build = _jit.kernel(_SELF, "_build", info.dtype)
    cands, subs = build(use_lab, pal, np.ascontiguousarray(color.srgb_u8_to_oklab(pal)),
                        color.linear_lut(color.LUT_STEPS), float(color.LUT_STEPS), color.M1, color.M2, gbits, info, moff)
    # sRGB searches are cheap (no conversion), and a sub-cell level measured slower there on noisy images
    sub = np.full(subs * 64 if use_lab else 0, SUB_UNKNOWN, dtype=np.uint16)
    return info, moff, cands, sub, gbits


# ---------------------------------------------------------------------------------------------------------
# Floyd-Steinberg in sRGB: candidate pairs. Error diffusion pushes values onto the boundaries between colours,
# so a fifth to a third of its pixels land in cells with two candidates; a branch there mispredicts about half
# the time. Each cell instead holds a pair code ``a | b << shift`` (``a <= b``; ``a == b`` for one candidate)
# and the loop always compares the two distances, so one code path serves both kinds of cell. ``a > b`` marks
# a cell with 3+ candidates (rare): its 64 sub-cells hold pair codes of their own, and only a sub-cell that
# still has 3+ candidates runs the full search.

PAIR_MANY = 1  # a=1, b=0: never a real pair (pairs are stored in palette order)


@njit(cache=True, nogil=True)
def _pair_codes(pal, info, moff, cands, gbits, shift, codes, slot):
    """Fill ``codes`` (per cell) and ``slot`` (each 3+ cell's block of 64 in the returned sub-cell codes)."""
    n = pal.shape[0]
    cells = info.shape[0]
    many = 0
    for cell in range(cells):
        k = np.int64(info[cell])
        if k < n:
            codes[cell] = k | (k << shift)
        elif cands[moff[cell]] == 2:
            s = moff[cell]
            codes[cell] = cands[s + 2] | (cands[s + 3] << shift)
        else:
            codes[cell] = PAIR_MANY
            slot[cell] = many
            many += 1
    sub_codes = np.empty(many * 64, dtype=codes.dtype)
    size = 256 >> gbits
    sub = size >> 2
    g = 1 << gbits
    near = np.empty(8, dtype=np.int64)
    for cell in range(cells):
        if codes[cell] != PAIR_MANY:
            continue
        s = moff[cell]
        ncand = cands[s]
        cand = cands[s + 2 : s + 2 + ncand]
        keep = np.empty(ncand, dtype=np.bool_)
        dist = np.empty((8, ncand), dtype=np.int64)
        b0 = (cell >> (2 * gbits)) * size
        b1 = ((cell >> gbits) & (g - 1)) * size
        b2 = (cell & (g - 1)) * size
        for q in range(64):
            lo0 = b0 + (q >> 4) * sub
            lo1 = b1 + ((q >> 2) & 3) * sub
            lo2 = b2 + (q & 3) * sub
            count = _box_keep_rgb(pal, lo0, lo1, lo2, min(lo0 + sub, 255), min(lo1 + sub, 255),
                                  min(lo2 + sub, 255), cand, ncand, dist, near, keep)
            code = np.int64(PAIR_MANY)
            if count <= 2:
                a = -1
                b = -1
                for j in range(ncand):
                    if keep[j]:
                        if a < 0:
                            a = cand[j]
                        b = cand[j]
                code = a | (b << shift)
            sub_codes[slot[cell] * 64 + q] = code
    return sub_codes


def pair_table(
    pal: np.ndarray, info: np.ndarray, moff: np.ndarray, cands: np.ndarray, gbits: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Pair codes for ``_floyd_steinberg_rgb`` from an sRGB ``cell_table``: ``(codes, slot, sub_codes, shift)``.

    ``codes`` is uint8 with 4-bit fields for palettes of up to 16 colours (32 KiB at 32^3 cells: the loop
    waits on each load, and this stays in the L1 cache), else uint16 with 8-bit fields. The table's
    ``moff``/``cands`` serve the full search in sub-cells that still have 3+ candidates.
    """
    pal = np.ascontiguousarray(pal, dtype=np.uint8)
    shift = 4 if len(pal) <= 16 else 8
    codes = np.empty(info.shape[0], dtype=np.uint8 if shift == 4 else np.uint16)
    slot = np.zeros(info.shape[0], dtype=np.int32)
    sub_codes = _jit.kernel(_SELF, "_pair_codes", info.dtype, codes.dtype)(pal, info, moff, cands, gbits, shift, codes,
                                                                      slot)
    return codes, slot, sub_codes, shift


# ---------------------------------------------------------------------------------------------------------
# compiled loops. ``pal_cmp`` holds the palette in the distance space (sRGB 0..255 or OKLab); for OKLab
# each dithered sRGB value is converted with a linear-light table (``lut``, ``steps`` entries per code value,
# linearly interpolated) and the OKLab matrices ``m1``/``m2``. A cell with one candidate is decided by one
# table load; only the other cells call a search (``_search_rgb``/``_search_lab``, kept out of line: inlined
# search code, or a nearest-colour helper inlined with numba's ``inline="always"``, made the common path
# several times slower). The few lines before the search (OKLab sub-cell) are pasted in both loops that use
# them (``_diffuse_fixed``, ``_ordered``) on purpose: one shared helper for them, out of line or inlined, made the
# OKLab loops 1.9x slower and the RGB ones 1.7x (bench/bench_quantize.py, 512x512 gradient to PICO-8: no dither
# 6.7 -> 12.8 ms, Floyd-Steinberg 15.1 -> 21.7 ms). That was measured on the earlier float loops and has not been
# measured again since the loops became fixed point. The loops take ``use_lab`` as a plain flag rather than a function argument because
# numba does not reuse its on-disk cache for functions that take other functions.


@njit(cache=True, nogil=True, inline="always")
def _linear(v, lut, steps):
    p = v * steps
    i = int(p)
    if i >= lut.shape[0] - 1:
        i = lut.shape[0] - 2
    return lut[i] + (p - i) * (lut[i + 1] - lut[i])


@njit(cache=True, nogil=True, inline="always")
def _code(t):
    # Code value of the clamped value, computed from the unclamped one: truncating first and clamping the
    # integer gives the same result (int(clamp(t)) == clamp(int(t))) and keeps the float clamp off the
    # critical path.
    return min(max(int(t), 0), 255)


@njit(cache=True, nogil=True, inline="always")
def _cell(ir, ig, ib, gbits):
    sh = 8 - gbits
    return ((ir >> sh) << (2 * gbits)) | ((ig >> sh) << gbits) | (ib >> sh)


@njit(cache=True, nogil=True, inline="always")
def _best(s, q0, q1, q2, pal_cmp, cands):
    best = cands[s + 2]
    best_d = np.inf
    for j in range(s + 2, s + 2 + cands[s]):
        k = cands[j]
        d0 = q0 - pal_cmp[k, 0]
        d1 = q1 - pal_cmp[k, 1]
        d2 = q2 - pal_cmp[k, 2]
        d = d0 * d0 + d1 * d1 + d2 * d2
        # candidates are in palette order, so strict < keeps the lowest index on ties
        if d < best_d:
            best_d = d
            best = k
    return np.int64(best)


@njit(cache=True, nogil=True)
def _search_rgb(s, r, g, b, pal_cmp, cands):
    return _best(s, np.float64(r), np.float64(g), np.float64(b), pal_cmp, cands)


@njit(cache=True, nogil=True)
def _search_lab(s, r, g, b, pal_cmp, cands, lut, steps, m1, m2):
    lr = _linear(r, lut, steps)
    lg = _linear(g, lut, steps)
    lb = _linear(b, lut, steps)
    l_ = np.cbrt(m1[0, 0] * lr + m1[0, 1] * lg + m1[0, 2] * lb)
    m_ = np.cbrt(m1[1, 0] * lr + m1[1, 1] * lg + m1[1, 2] * lb)
    s_ = np.cbrt(m1[2, 0] * lr + m1[2, 1] * lg + m1[2, 2] * lb)
    q0 = m2[0, 0] * l_ + m2[0, 1] * m_ + m2[0, 2] * s_
    q1 = m2[1, 0] * l_ + m2[1, 1] * m_ + m2[1, 2] * s_
    q2 = m2[2, 0] * l_ + m2[2, 1] * m_ + m2[2, 2] * s_
    return _best(s, q0, q1, q2, pal_cmp, cands)


# Floyd-Steinberg with sRGB distance runs in fixed point: ``strength`` is taken in steps of 1/STRENGTH_STEPS,
# so the error passed on, (value - colour) * S * {7,3,5,1} / 16, is an exact integer in units of
# 1/FS_ONE = 1/(16 * STRENGTH_STEPS) of a code value. The single rounding is the diffused value's, to the
# nearest code value (halves up) before clamping to 0..255; that integer's nearest colour is exact and its
# error is what is diffused (like Pillow, which also diffuses integer error).
STRENGTH_STEPS = 256
FS_SHIFT = 12
FS_ONE = 1 << FS_SHIFT  # 16 * STRENGTH_STEPS
# Next-row error travels packed: three 21-bit fields in one int64, each biased by 2^20 so it unpacks with a
# shift and a mask. A cell collects 9 * 255 * STRENGTH_STEPS = 587520 < 2^20 at most, so fields never carry.
FS_FIELD = 21
FS_BIAS = (1 << (FS_FIELD - 1)) * (1 + (1 << FS_FIELD) + (1 << (2 * FS_FIELD)))
FS_GBITS = 5  # cell table of the sequential loops (``cell_table(..., 5)``)


def fs_strength(strength: float) -> int:
    """``strength`` 0..1 as the integer multiplier the sRGB Floyd-Steinberg loop uses (0..STRENGTH_STEPS)."""
    return int(round(strength * STRENGTH_STEPS))


@njit(cache=True, nogil=True)
def _floyd_steinberg_rgb(
    src, alpha_threshold, pal4, strength, pal_cmp, codes, slot, sub_codes, moff, cands, gbits, shift,
    serpentine, table, out_idx, out_img, used,
):
    # Fixed point (see FS_ONE): the chain from one pixel's value to the next one's is integer only (round,
    # clamp, cell, pair code, palette, compare), with no float conversion; both candidates of a pair code get
    # their distance computed before the comparison. The error for the next row travels packed, three
    # biased 21-bit fields in one int64 (see FS_FIELD): one load, one store and a few adds per pixel instead
    # of three each, and few enough live values that the loop's state stays in registers. Unsigned indices:
    # numba then emits no negative-index wraparound.
    h, w, ch = src.shape
    n = pal4.shape[0] // 4
    flat = src.reshape(-1)
    oidx = out_idx.reshape(-1)
    oimg = out_img.reshape(-1)
    uch = np.uint64(ch)
    one = np.uint64(1)
    two = np.uint64(2)
    three = np.uint64(3)
    four = np.uint64(4)
    fsh = np.int64(FS_SHIFT)
    half = np.int64(FS_ONE // 2)
    s7 = np.int64(7) * strength
    fb = np.int64(FS_FIELD)
    fmask = np.int64((1 << FS_FIELD) - 1)
    bias = np.int64(FS_BIAS)
    # each unpacked field carries +2^(FS_FIELD-1); folded into the source term
    unbias = np.int64(1 << (FS_FIELD - 1))
    sh = np.uint64(8 - FS_GBITS)
    g1 = np.uint64(FS_GBITS)
    g2 = np.uint64(2 * FS_GBITS)
    ssh = np.uint64(6 - FS_GBITS)  # sub-cells: 4 per cell side
    ushift = np.uint64(shift)
    mask = np.uint64((1 << shift) - 1)
    last = np.uint64(h * w - 1)
    # every cell of the next row collects exactly one ``bias`` (from the a1 term), so each field unpacks
    # non-negative; row 0 starts from an error-free row
    cur = np.full(w + 2, bias, dtype=np.int64)
    nxt = np.full(w + 2, bias, dtype=np.int64)
    for y in range(h):
        reverse = serpentine and (y & 1) == 1
        step = -1 if reverse else 1
        x = w - 1 if reverse else 0
        a0 = bias
        a1 = bias
        p = np.uint64(y * w + x)
        c = cur[np.uint64(x + 1)]
        tr = (np.int64(flat[p * uch]) << fsh) + (c & fmask) - unbias
        tg = (np.int64(flat[p * uch + one]) << fsh) + ((c >> fb) & fmask) - unbias
        tb = (np.int64(flat[p * uch + two]) << fsh) + (c >> (fb + fb)) - unbias
        for _ in range(w):
            p = np.uint64(y * w + x)
            ob = np.uint64(x + 1 - step)  # below-left in scan direction: complete after this pixel
            pn = min(np.uint64(y * w + x + step), last) * uch  # next pixel (clamped at the image's ends: unused)
            # the next pixel's source plus the error it already holds from the row above
            c = cur[np.uint64(x + 1 + step)]
            sr = (np.int64(flat[pn]) << fsh) + (c & fmask) - unbias
            sg = (np.int64(flat[pn + one]) << fsh) + ((c >> fb) & fmask) - unbias
            sb = (np.int64(flat[pn + two]) << fsh) + (c >> (fb + fb)) - unbias
            if ch == 4 and flat[p * uch + three] < alpha_threshold:
                # transparent: takes and passes on no error
                oidx[p] = n
                for ci in range(ch):
                    oimg[p * uch + np.uint64(ci)] = table[np.uint64(n) * uch + np.uint64(ci)]
                used[n] = 1
                nxt[ob] = a0
                a0 = a1
                a1 = bias
                tr, tg, tb = sr, sg, sb
                x += step
                continue
            # round to the nearest code value, then clamp: runaway error must not smear across flat areas
            # (Pillow's CLIP8 does the same)
            vr = min(max((tr + half) >> fsh, np.int64(0)), np.int64(255))
            vg = min(max((tg + half) >> fsh, np.int64(0)), np.int64(255))
            vb = min(max((tb + half) >> fsh, np.int64(0)), np.int64(255))
            ir = np.uint64(vr)
            ig = np.uint64(vg)
            ib = np.uint64(vb)
            cell = ((ir >> sh) << g2) | ((ig >> sh) << g1) | (ib >> sh)
            e = np.uint64(codes[cell])
            ka = e & mask
            kb = e >> ushift
            if ka > kb:  # 3+ candidates in the cell: the sub-cell's pair, else the full search
                q = ((ir >> ssh) & three) << four | ((ig >> ssh) & three) << two | ((ib >> ssh) & three)
                e = np.uint64(sub_codes[np.uint64(slot[cell]) * np.uint64(64) + q])
                ka = e & mask
                kb = e >> ushift
                if ka > kb:
                    ka = np.uint64(_search_rgb(moff[cell], vr, vg, vb, pal_cmp, cands))
                    kb = ka
            # each candidate's distance from the differences to its colour
            ar = vr - pal4[ka * four]
            ag = vg - pal4[ka * four + one]
            ab = vb - pal4[ka * four + two]
            br = vr - pal4[kb * four]
            bg = vg - pal4[kb * four + one]
            bb = vb - pal4[kb * four + two]
            da = ar * ar + ag * ag + ab * ab
            db = br * br + bg * bg + bb * bb
            # strict: the lower index wins ties, like the search
            nb = db < da
            k = kb if nb else ka
            er = br if nb else ar
            eg = bg if nb else ag
            eb = bb if nb else ab
            tr = sr + s7 * er
            tg = sg + s7 * eg
            tb = sb + s7 * eb
            oidx[p] = k
            # channels written one by one: a loop over ``ch`` compiles to a generic copy with its own checks
            oimg[p * uch] = table[k * uch]
            oimg[p * uch + one] = table[k * uch + one]
            oimg[p * uch + two] = table[k * uch + two]
            if ch == 4:
                oimg[p * uch + three] = table[k * uch + three]
            used[k] = 1
            # packed error (fields are linear: the sums below act on each field alone)
            pe = (er + (eg << fb) + (eb << (fb + fb))) * strength
            nxt[ob] = a0 + np.int64(3) * pe
            a0 = a1 + np.int64(5) * pe
            a1 = pe + bias
            x += step
        nxt[np.uint64(x - step + 1)] = a0  # last pixel of the row: its own next-row cell is complete now
        cur, nxt = nxt, cur


# Every other kernel, and every kernel with OKLab distance, runs in the same fixed point as the loop above (see
# ``kernel_weights``): one loop for all, whose taps are integer weights on a 5x3 window (dx -2..2, dy 0..2), so
# one compiled function (and one cache entry to load) serves every kernel. The right-hand taps of the current row
# stay in locals; the next two rows' cells collect packed error (three biased fields, see FS_FIELD) in a ring of
# row buffers. ``damp_limit`` >= 0 turns on libimagequant's damping: a pixel whose squared error (code values,
# summed over channels) exceeds it passes on only 3/4 of its error (each channel rounded half up), which keeps
# errors that no palette colour can absorb from running across edges.


@njit(cache=True, nogil=True)
def _diffuse_fixed(
    use_lab, src, alpha_threshold, pal4, wts, damp_limit, serpentine, pal_cmp, lut, steps, m1, m2, info, moff,
    cands, sub, gbits, codes, slot, sub_codes, shift, table, out_idx, out_img, used,
):
    # The chain from one pixel to the next (value, nearest colour, error, the right neighbour's value) keeps the
    # right-hand error unpacked, per channel; everything else is off that chain: the rows below collect packed
    # error, in locals for the five cells each pixel touches per row (one store per row and pixel, when the
    # leftmost of them is complete), and each pixel's own collected error is unpacked before its chain starts.
    # Unsigned indices: numba then emits no negative-index wraparound.
    # scratch for deciding OKLab sub-cells (``_refine_lab``)
    norm = np.empty(pal_cmp.shape[0])
    for j in range(pal_cmp.shape[0]):
        norm[j] = pal_cmp[j, 0] ** 2 + pal_cmp[j, 1] ** 2 + pal_cmp[j, 2] ** 2
    scratch = (np.empty(8, dtype=np.int64), np.empty(pal_cmp.shape[0], dtype=np.bool_), np.empty(2), np.empty(2),
               np.empty(2), np.empty((8, 3)), np.empty((8, 3)), np.empty((8, pal_cmp.shape[0])))
    h, w, ch = src.shape
    n = pal4.shape[0] // 4
    flat = src.reshape(-1)
    oidx = out_idx.reshape(-1)
    oimg = out_img.reshape(-1)
    uch = np.uint64(ch)
    one = np.uint64(1)
    two = np.uint64(2)
    three = np.uint64(3)
    four = np.uint64(4)
    fsh = np.int64(FS_SHIFT)
    half = np.int64(FS_ONE // 2)
    fb = np.int64(FS_FIELD)
    fmask = np.int64((1 << FS_FIELD) - 1)
    bias = np.int64(FS_BIAS)
    unbias = np.int64(1 << (FS_FIELD - 1)) - half  # rounding half folded in
    sh = np.int64(8 - gbits)
    g1 = np.int64(gbits)
    g2 = np.int64(2 * gbits)
    ssh = np.int64(6 - gbits)  # sub-cells: 4 per cell side
    ushift = np.int64(shift)
    mask = np.int64((1 << shift) - 1)
    damp = damp_limit >= 0
    w01, w02 = wts[3], wts[4]
    w1m2, w1m1, w10, w1p1, w1p2 = wts[5], wts[6], wts[7], wts[8], wts[9]
    w2m2, w2m1, w20, w2p1, w2p2 = wts[10], wts[11], wts[12], wts[13], wts[14]
    pad = 2
    stride = w + 2 * pad
    rows = np.zeros(3 * stride, dtype=np.int64)
    zero = np.int64(0)
    top = np.int64(255)
    for y in range(h):
        cur = np.uint64((y % 3) * stride + pad)
        nx1 = np.uint64(((y + 1) % 3) * stride + pad)
        nx2 = np.uint64(((y + 2) % 3) * stride + pad)
        rows[nx2 - pad : nx2 - pad + stride] = 0
        reverse = serpentine and (y & 1) == 1
        step = -1 if reverse else 1
        x = w - 1 if reverse else 0
        c1r = c1g = c1b = zero  # current-row error collected for the next pixel
        c2r = c2g = c2b = zero  # and for the one after
        # next row: cells x-2, x-1, x, x+1 (scan direction) still collecting; the row after: the same
        a1m2 = a1m1 = a10 = a1p1 = zero
        a2m2 = a2m1 = a20 = a2p1 = zero
        for _ in range(w):
            p = np.uint64(y * w + x)
            ux = np.uint64(x)
            if ch == 4 and flat[p * uch + three] < alpha_threshold:
                # transparent: takes and passes on no error
                oidx[p] = n
                for ci in range(ch):
                    oimg[p * uch + np.uint64(ci)] = table[np.uint64(n) * uch + np.uint64(ci)]
                used[n] = 1
                c1r, c1g, c1b = c2r, c2g, c2b
                c2r = c2g = c2b = zero
                pe = zero
            else:
                t = rows[cur + ux] + bias
                tr = (np.int64(flat[p * uch]) << fsh) + (t & fmask) - unbias + c1r
                tg = (np.int64(flat[p * uch + one]) << fsh) + ((t >> fb) & fmask) - unbias + c1g
                tb = (np.int64(flat[p * uch + two]) << fsh) + (t >> (fb + fb)) - unbias + c1b
                # round to the nearest code value (half folded into unbias), then clamp
                vr = min(max(tr >> fsh, zero), top)
                vg = min(max(tg >> fsh, zero), top)
                vb = min(max(tb >> fsh, zero), top)
                cell = ((vr >> sh) << g2) | ((vg >> sh) << g1) | (vb >> sh)
                if use_lab:
                    k = np.int64(info[cell])
                    if k >= n:
                        s = moff[cell]
                        q = cands[s + 1] + ((((vr >> ssh) & 3) << 4) | (((vg >> ssh) & 3) << 2) | ((vb >> ssh) & 3))
                        k = np.int64(sub[q])
                        if k == SUB_UNKNOWN:
                            k = _refine_lab(s, vr, vg, vb, gbits, pal_cmp, norm, lut, steps, m1, m2, cands, *scratch)
                            sub[q] = k
                        if k >= n:
                            k = _search_lab(s, np.float64(vr), np.float64(vg), np.float64(vb), pal_cmp, cands, lut,
                                            steps, m1, m2)
                    uk = np.uint64(k) * four
                    er = vr - pal4[uk]
                    eg = vg - pal4[uk + one]
                    eb = vb - pal4[uk + two]
                else:
                    e = np.int64(codes[cell])
                    ka = e & mask
                    kb = e >> ushift
                    if ka > kb:  # 3+ candidates in the cell: the sub-cell's pair, else the full search
                        q = ((vr >> ssh) & 3) << 4 | ((vg >> ssh) & 3) << 2 | ((vb >> ssh) & 3)
                        e = np.int64(sub_codes[np.uint64(slot[cell]) * np.uint64(64) + np.uint64(q)])
                        ka = e & mask
                        kb = e >> ushift
                        if ka > kb:
                            ka = _search_rgb(moff[cell], vr, vg, vb, pal_cmp, cands)
                            kb = ka
                    ua = np.uint64(ka) * four
                    ub = np.uint64(kb) * four
                    ar = vr - pal4[ua]
                    ag = vg - pal4[ua + one]
                    ab = vb - pal4[ua + two]
                    br = vr - pal4[ub]
                    bg = vg - pal4[ub + one]
                    bb = vb - pal4[ub + two]
                    nb = br * br + bg * bg + bb * bb < ar * ar + ag * ag + ab * ab  # strict: lower index wins ties
                    k = kb if nb else ka
                    er = br if nb else ar
                    eg = bg if nb else ag
                    eb = bb if nb else ab
                uk = np.uint64(k)
                oidx[p] = k
                oimg[p * uch] = table[uk * uch]
                oimg[p * uch + one] = table[uk * uch + one]
                oimg[p * uch + two] = table[uk * uch + two]
                if ch == 4:
                    oimg[p * uch + three] = table[uk * uch + three]
                used[k] = 1
                if damp and er * er + eg * eg + eb * eb > damp_limit:
                    er = (3 * er + 2) >> 2
                    eg = (3 * eg + 2) >> 2
                    eb = (3 * eb + 2) >> 2
                c1r = c2r + er * w01
                c1g = c2g + eg * w01
                c1b = c2b + eb * w01
                c2r = er * w02
                c2g = eg * w02
                c2b = eb * w02
                pe = er + (eg << fb) + (eb << (fb + fb))  # fields are linear: weights act on each alone
            # cell x-2 of each row below is complete: store it; the others move one place along
            left = np.uint64(x - 2 * step)
            rows[nx1 + left] += a1m2 + pe * w1m2
            a1m2 = a1m1 + pe * w1m1
            a1m1 = a10 + pe * w10
            a10 = a1p1 + pe * w1p1
            a1p1 = pe * w1p2
            rows[nx2 + left] = a2m2 + pe * w2m2
            a2m2 = a2m1 + pe * w2m1
            a2m1 = a20 + pe * w20
            a20 = a2p1 + pe * w2p1
            a2p1 = pe * w2p2
            x += step
        # the last pixel's cells x-1 and x; x+1 and x+2 are padding
        x -= step
        rows[nx1 + np.uint64(x - step)] += a1m2
        rows[nx1 + np.uint64(x)] += a1m1
        rows[nx2 + np.uint64(x - step)] = a2m2
        rows[nx2 + np.uint64(x)] = a2m1


@njit(cache=True, nogil=True)
def _ordered(
    use_lab, src, alpha_threshold, pal_cmp, lut, steps, m1, m2, info, moff, cands, sub, gbits, offsets, table, out_idx, out_img,
    used,
):
    # scratch for deciding OKLab sub-cells (``_refine_lab``)
    norm = np.empty(pal_cmp.shape[0])
    for j in range(pal_cmp.shape[0]):
        norm[j] = pal_cmp[j, 0] ** 2 + pal_cmp[j, 1] ** 2 + pal_cmp[j, 2] ** 2
    scratch = (np.empty(8, dtype=np.int64), np.empty(pal_cmp.shape[0], dtype=np.bool_), np.empty(2), np.empty(2),
               np.empty(2), np.empty((8, 3)), np.empty((8, 3)), np.empty((8, pal_cmp.shape[0])))
    h, w, ch = src.shape
    n = pal_cmp.shape[0]
    ssh = 6 - gbits  # sub-cells: 4 per cell side
    mh, mw = offsets.shape
    for y in range(h):
        row = offsets[y & (mh - 1)]
        for x in range(w):
            k = n
            if ch == 3 or src[y, x, 3] >= alpha_threshold:
                o = row[x & (mw - 1)]
                tr = src[y, x, 0] + o
                tg = src[y, x, 1] + o
                tb = src[y, x, 2] + o
                r = min(max(tr, 0.0), 255.0)
                g = min(max(tg, 0.0), 255.0)
                b = min(max(tb, 0.0), 255.0)
                ir = _code(tr)
                ig = _code(tg)
                ib = _code(tb)
                cell = _cell(ir, ig, ib, gbits)
                k = np.int64(info[cell])
                if k >= n:
                    s = moff[cell]
                    if use_lab:
                        # OKLab: the sub-cell's colour when one decides it, which skips the conversion (cube roots)
                        q = cands[s + 1] + ((((ir >> ssh) & 3) << 4) | (((ig >> ssh) & 3) << 2) | ((ib >> ssh) & 3))
                        k = np.int64(sub[q])
                        if k == SUB_UNKNOWN:
                            k = _refine_lab(s, ir, ig, ib, gbits, pal_cmp, norm, lut, steps, m1, m2, cands, *scratch)
                            sub[q] = k
                        if k >= n:
                            k = _search_lab(s, r, g, b, pal_cmp, cands, lut, steps, m1, m2)
                    else:
                        k = _search_rgb(s, r, g, b, pal_cmp, cands)
            out_idx[y, x] = k
            for c in range(ch):
                out_img[y, x, c] = table[k, c]
            used[k] = 1


class Lookup(NamedTuple):
    """A palette made ready for the compiled loops (``lookup``): its colours in the distance space, the
    linear-light table and OKLab matrices for converting pixels, and its cell table (``cell_table``)."""

    use_lab: bool
    pal_cmp: np.ndarray
    lut: np.ndarray
    steps: float
    m1: np.ndarray
    m2: np.ndarray
    info: np.ndarray
    moff: np.ndarray
    cands: np.ndarray
    sub: np.ndarray
    gbits: int

    @property
    def loop_args(self) -> tuple[Any, ...]:
        return (self.pal_cmp, self.lut, self.steps, self.m1, self.m2, self.info, self.moff, self.cands, self.sub,
                self.gbits)


def lookup(pal: np.ndarray, use_lab: bool, gbits: int | None = None) -> Lookup:
    from . import color

    pal = np.ascontiguousarray(pal, dtype=np.uint8)
    pal_cmp = np.ascontiguousarray(color.srgb_u8_to_oklab(pal) if use_lab else pal.astype(np.float64))
    return Lookup(use_lab, pal_cmp, color.linear_lut(color.LUT_STEPS), float(color.LUT_STEPS), color.M1, color.M2,
                  *cell_table(pal, use_lab, gbits))


class Target(NamedTuple):
    """Where the loops write: ``table`` (uint8 [N+1, C]) gives each index's output pixel (index N: transparent),
    ``indices`` [H,W] and ``image`` [H,W,C] get the result, ``used`` (uint8 [N+1]) a 1 for every index written."""

    table: np.ndarray
    indices: np.ndarray
    image: np.ndarray
    used: np.ndarray


def kernel_weights(kernel: ErrorKernel, strength: float) -> np.ndarray:
    """Integer tap weights (int64 [15], index ``5 * dy + dx + 2``) in units of 1/``FS_ONE`` of the error, for the
    fixed-point loops: ``floor(S * numerator * 16 / divisor)`` with ``S = fs_strength(strength)``. Exact for every
    divisor dividing 16 * S (Floyd-Steinberg, Atkinson, Burkes, Sierra family at most strengths); Jarvis-Judice-Ninke
    and Stucki lose less than 1/4096 of a tap's share. Rounding down keeps the sum at most ``FS_ONE``, which the
    packed fields need (see FS_FIELD)."""
    s = fs_strength(strength)
    wts = np.zeros(15, dtype=np.int64)
    for dx, dy, num in kernel.taps:
        wts[5 * dy + dx + 2] = (s * num * 16) // kernel.divisor
    return wts


def error_diffuse(src: np.ndarray, palette: np.ndarray, lk: Lookup, kernel: ErrorKernel, out: Target, *,
                  alpha_threshold: int = 128, strength: float = 1.0, serpentine: bool = True,
                  pairs: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None = None,
                  damp_limit: int = -1) -> None:
    """Sequential error diffusion of ``src`` (uint8 [H,W,3|4]) to ``palette`` (uint8 [N,3]) into ``out``.

    Every kernel runs in fixed point (see ``FS_ONE`` and ``kernel_weights``): ``strength`` is rounded to steps of
    1/``STRENGTH_STEPS``, the diffused value to a code value, and that value's exact nearest colour (in the
    lookup's distance space) is taken; the error passed on is (value - colour) in code values. Pixels with alpha
    below ``alpha_threshold`` get index N and neither take nor pass on error. ``pairs``: ``pair_table`` of the
    sRGB cell table (built here when None; unused for OKLab). ``damp_limit`` >= 0: a pixel whose squared error
    exceeds it passes on 3/4 of it (libimagequant's rule, see ``_diffuse_fixed``).
    """
    if lk.gbits != FS_GBITS:
        raise ValueError(f"the error-diffusion loops need a cell table with gbits={FS_GBITS}, got {lk.gbits}")
    if lk.use_lab:
        codes, slot, sub_codes, shift = _NO_PAIRS
    else:
        codes, slot, sub_codes, shift = pairs if pairs is not None else pair_table(palette, lk.info, lk.moff,
                                                                                   lk.cands, lk.gbits)
    # palette padded to 4 values per colour: the loops index it with a shift instead of a multiply
    pal4 = np.zeros((len(palette), 4), dtype=np.int64)
    pal4[:, :3] = palette
    table = np.ascontiguousarray(out.table).ravel()
    if kernel.name == "floyd-steinberg" and not lk.use_lab and damp_limit < 0:
        _jit.kernel(_SELF, "_floyd_steinberg_rgb", codes.dtype, out.indices.dtype)(
            src, alpha_threshold, pal4.ravel(), np.int64(fs_strength(strength * kernel.diffused)), lk.pal_cmp, codes,
            slot, sub_codes, lk.moff, lk.cands, lk.gbits, shift, serpentine, table, out.indices, out.image, out.used,
        )
        return
    _jit.kernel(_SELF, "_diffuse_fixed", lk.info.dtype, codes.dtype, out.indices.dtype)(
        lk.use_lab, src, alpha_threshold, pal4.ravel(), kernel_weights(kernel, strength), np.int64(damp_limit),
        serpentine, lk.pal_cmp, lk.lut, lk.steps, lk.m1, lk.m2, lk.info, lk.moff, lk.cands, lk.sub, lk.gbits,
        codes, slot, sub_codes, shift, table, out.indices, out.image, out.used,
    )


# OKLab loops take no pair codes; typed like real ones so both distances share one compiled loop
_NO_PAIRS = (np.zeros(1, np.uint8), np.zeros(1, np.int32), np.zeros(1, np.uint8), 4)


def ordered_dither(src: np.ndarray, lk: Lookup, offsets: np.ndarray, out: Target, *,
                   alpha_threshold: int = 128) -> None:
    """Add the tiled ``offsets`` matrix (sRGB units, same offset on each channel; power-of-two sides) and map
    each pixel to the palette (a 1x1 zero matrix: each pixel's exact nearest colour)."""
    _jit.kernel(_SELF, "_ordered", lk.info.dtype, out.indices.dtype)(
        lk.use_lab, src, alpha_threshold, *lk.loop_args, np.ascontiguousarray(offsets, dtype=np.float64), *out)
