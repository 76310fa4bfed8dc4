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
from .color import ALPHA_THRESHOLD
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
#
# Cells with several candidates get a memo: for each of their (256 >> gbits)^3 code values, the exact nearest colour
# once some loop has needed it (stored as index + 1; 0: not known yet). Every loop asks for the nearest colour of an
# integer code value (error diffusion rounds the diffused value, ordered offsets are whole code values), so a value
# is searched once per palette, and from then on costs two table loads whatever the distance: an OKLab search (three
# cube roots) or the sub-cell box tests that used to stand in for it cost far more. The memo is allocated zeroed
# (pages the loops never touch cost no memory) and shared by every call with the palette; concurrent calls may
# search the same value twice, always storing the same answer.

# cell tables of the loops: 64^3 cells. The 256 KiB table misses the L1 cache where a 32^3 one (32 KiB) does not,
# but half as many pixels land in multi-candidate cells, whose memo entries are spread over megabytes; on
# bench_quantize's images that is faster for every loop that reads the memo for every multi-candidate cell.
GBITS = 6
# OKLab error diffusion reads pair masks instead (see ``pair_masks``): at 32^3 cells its per-cell tables take 96 KiB
# instead of 768 KiB and the masks 354 KiB instead of 167, and the loops took 0.88x the time on random input and
# 0.87-1.0x on a gradient (bench_quantize's images, PICO-8, same process; 16^3 cells: 1.2-1.3x, more 3+ cells).
LAB_DIFFUSION_GBITS = 5

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
def _cbrt64(x, y, m):
    """``y[:m]`` = cube roots of ``x[:m]`` (float64, >= 0) within 1.2e-15 relative (5e-10 and 1e-15 before and after
    the fourth step, over 1e-6..1): the inverse cube root's bit-level first guess, four Newton steps ``a (4 - x a^3)
    / 3``, then ``x a^2`` (0 for 0). glibc's ``cbrt`` took two thirds of an OKLab cell table's build."""
    xi = x.view(np.uint64)
    yi = y.view(np.uint64)
    for i in range(m):
        yi[i] = np.uint64(0x553EF0FF289DD796) - xi[i] // np.uint64(3)
    third = 1.0 / 3.0
    for i in range(m):
        v = x[i]
        a = y[i]
        a = a * (4.0 - v * a * a * a) * third
        a = a * (4.0 - v * a * a * a) * third
        a = a * (4.0 - v * a * a * a) * third
        a = a * (4.0 - v * a * a * a) * third
        y[i] = v * a * a


@njit(cache=True, nogil=True)
def _box_keep_lab(pal_lab, norm, m1, m2, x0, x1, x2, cand, ncand, cone, root, dist, near, keep):
    """Like ``_box_keep_rgb`` for the linear-light box ``[x0[0],x0[1]] x [x1[0],x1[1]] x [x2[0],x2[1]]``. ``cone`` and
    ``root`` (27 each): the LMS values of the eight corners and the centre, and their cube roots."""
    for corner in range(8):
        l0 = x0[corner & 1]
        l1 = x1[(corner >> 1) & 1]
        l2 = x2[corner >> 2]
        for i in range(3):
            cone[3 * corner + i] = m1[i, 0] * l0 + m1[i, 1] * l1 + m1[i, 2] * l2
    c0 = 0.5 * (x0[0] + x0[1])
    c1 = 0.5 * (x1[0] + x1[1])
    c2 = 0.5 * (x2[0] + x2[1])
    for i in range(3):
        cone[24 + i] = m1[i, 0] * c0 + m1[i, 1] * c1 + m1[i, 2] * c2
    _cbrt64(cone, root, 27)
    for corner in range(8):
        r0, r1, r2 = root[3 * corner], root[3 * corner + 1], root[3 * corner + 2]
        q0 = m2[0, 0] * r0 + m2[0, 1] * r1 + m2[0, 2] * r2
        q1 = m2[1, 0] * r0 + m2[1, 1] * r1 + m2[1, 2] * r2
        q2 = m2[2, 0] * r0 + m2[2, 1] * r1 + m2[2, 2] * r2
        best = 0
        for j in range(ncand):
            k = cand[j]
            d = (q0 - pal_lab[k, 0]) ** 2 + (q1 - pal_lab[k, 1]) ** 2 + (q2 - pal_lab[k, 2]) ** 2
            dist[corner, j] = d
            if d < dist[corner, best]:
                best = j
        near[corner] = best
    lc0, lc1, lc2 = cone[24], cone[25], cone[26]
    rc0, rc1, rc2 = root[24], root[25], root[26]
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
                    s += u0 * root[3 * corner + 0]
                else:
                    s += u0 * (rc0 + (cone[3 * corner + 0] - lc0) / (3.0 * rc0 * rc0))
                if u1 >= 0.0:
                    s += u1 * root[3 * corner + 1]
                else:
                    s += u1 * (rc1 + (cone[3 * corner + 1] - lc1) / (3.0 * rc1 * rc1))
                if u2 >= 0.0:
                    s += u2 * root[3 * corner + 2]
                else:
                    s += u2 * (rc2 + (cone[3 * corner + 2] - lc2) / (3.0 * rc2 * rc2))
                if s <= 1e-9:  # margin for rounding in this bound and in the loops' conversion
                    beaten = False
                    break
            if beaten:
                keep[j] = False
                break
        count += keep[j]
    return count


@njit(cache=True, nogil=True)
def _level(use_lab, pal, pal_lab, norm, lin, m1, m2, bits, pstarts, pflat):
    """Candidate lists (CSR: ``starts``, ``flat``) of every cell at ``bits`` per channel, each cell testing only its
    parent cell's candidates (``pstarts``/``pflat`` at ``bits - 1``; at ``bits`` 3, one parent holding every colour).
    A cell's box is the code values it holds, ``lo .. lo + size - 1`` per channel: the loops only ever ask for code
    values. Written without slices or helper calls per cell, each of which costs numba reference counting."""
    n = pal.shape[0]
    g = 1 << bits
    size = 256 >> bits
    top = bits == 3
    dist_i = np.empty((8, n), dtype=np.int64)
    dist_f = np.empty((8, n))
    cone = np.empty(27)
    root = np.empty(27)
    near = np.empty(8, dtype=np.int64)
    keep = np.empty(n, dtype=np.bool_)
    cand = np.empty(n, dtype=np.int32)
    x0 = np.empty(2)
    x1 = np.empty(2)
    x2 = np.empty(2)
    starts = np.zeros(g * g * g + 1, dtype=np.int64)
    # every child keeps at most its parent's candidates
    flat = np.empty(n * g * g * g if top else 8 * pflat.shape[0], dtype=np.int32)
    used = 0
    for i0 in range(g):
        for i1 in range(g):
            for i2 in range(g):
                cell = (i0 << (2 * bits)) | (i1 << bits) | i2
                if top:
                    ps = 0
                    ncand = n
                else:
                    parent = ((i0 >> 1) << (2 * bits - 2)) | ((i1 >> 1) << (bits - 1)) | (i2 >> 1)
                    ps = pstarts[parent]
                    ncand = pstarts[parent + 1] - ps
                if ncand == 1:
                    flat[used] = pflat[ps]
                    used += 1
                else:
                    for j in range(ncand):
                        cand[j] = j if top else pflat[ps + j]
                    lo0, lo1, lo2 = i0 * size, i1 * size, i2 * size
                    hi0, hi1, hi2 = lo0 + size - 1, lo1 + size - 1, lo2 + size - 1
                    if use_lab:
                        # linear light from the search's own table, so the box holds exactly the values it computes
                        x0[0], x0[1] = lin[lo0], lin[hi0]
                        x1[0], x1[1] = lin[lo1], lin[hi1]
                        x2[0], x2[1] = lin[lo2], lin[hi2]
                        _box_keep_lab(pal_lab, norm, m1, m2, x0, x1, x2, cand, ncand, cone, root, dist_f, near, keep)
                    else:
                        _box_keep_rgb(pal, lo0, lo1, lo2, hi0, hi1, hi2, cand, ncand, dist_i, near, keep)
                    for j in range(ncand):
                        if keep[j]:
                            flat[used] = cand[j]
                            used += 1
                starts[cell + 1] = used
    return starts, flat[:used]


@njit(cache=True, nogil=True)
def _build(use_lab, pal, pal_lab, lin, m1, m2, gbits, info, moff, blk):
    """Fill ``info``/``moff``/``blk`` for every cell; returns ``cands`` (blocks: count, colours) and the number of
    multi-candidate cells. Levels are built coarse to fine (8^3 cells up to 2^gbits per side), each cell testing
    only its parent's candidates: most colours are ruled out at the coarse levels."""
    n = pal.shape[0]
    norm = np.empty(n)
    for k in range(n):
        norm[k] = pal_lab[k, 0] ** 2 + pal_lab[k, 1] ** 2 + pal_lab[k, 2] ** 2
    starts, flat = _level(use_lab, pal, pal_lab, norm, lin, m1, m2, 3, np.zeros(2, dtype=np.int64),
                          np.arange(n).astype(np.int32))
    for bits in range(4, gbits + 1):
        starts, flat = _level(use_lab, pal, pal_lab, norm, lin, m1, m2, bits, starts, flat)
    vol = 1 << (3 * (8 - gbits))  # code values per cell: the memo's block
    cands = np.empty(flat.shape[0] + starts.shape[0], dtype=np.int32)
    used = 0
    multi = 0
    many = np.iinfo(info.dtype).max
    for cell in range(starts.shape[0] - 1):
        count = starts[cell + 1] - starts[cell]
        if count == 1:
            info[cell] = flat[starts[cell]]
            continue
        info[cell] = many
        moff[cell] = used
        blk[cell] = multi * vol
        multi += 1
        cands[used] = count
        used += 1
        for j in range(starts[cell], starts[cell + 1]):
            cands[used] = flat[j]
            used += 1
    return cands[:used].copy(), multi


class CellTable(NamedTuple):
    """See ``cell_table``."""

    info: np.ndarray
    moff: np.ndarray
    cands: np.ndarray
    blk: np.ndarray
    memo: np.ndarray
    gbits: int


def cell_table(pal: np.ndarray, use_lab: bool, gbits: int = GBITS) -> CellTable:
    """Candidate table and memo of a palette (uint8 [N,3]), cells of 2^(8-gbits) code values per side.

    ``info [8^gbits]`` holds the palette index of a cell with a single candidate, else the dtype's largest value
    (uint8 for palettes of up to 254 colours, else uint16); then the block at ``cands[moff[cell]]`` holds the
    count and the candidates (in palette order), and ``memo[blk[cell] + v]`` (``info``'s dtype) the nearest colour
    + 1 of the cell's code value ``v`` (its low ``8 - gbits`` bits per channel, r g b), 0 until a loop needs it.
    """
    from . import color

    pal = np.ascontiguousarray(pal, dtype=np.uint8)
    n = len(pal)
    dtype = np.uint8 if n < 255 else np.uint16
    info = np.empty(1 << (3 * gbits), dtype=dtype)
    moff = np.zeros(1 << (3 * gbits), dtype=np.int32)
    blk = np.zeros(1 << (3 * gbits), dtype=np.int32)
    build = _jit.kernel(_SELF, "_build", info.dtype)
    cands, multi = build(use_lab, pal, np.ascontiguousarray(color.srgb_u8_to_oklab(pal)), color.LINEAR_U8, color.M1,
                         color.M2, gbits, info, moff, blk)
    # one block at least: the loops read a block for every cell and ignore it for single-candidate cells
    memo = np.zeros(max(multi, 1) << (3 * (8 - gbits)), dtype=dtype)
    return CellTable(info, moff, cands, blk, memo, gbits)


# ---------------------------------------------------------------------------------------------------------
# Error diffusion: candidate pairs. Error diffusion pushes values onto the boundaries between colours, so a tenth
# to a third of its pixels land in cells with two or more candidates (19 in 20 of those cells have exactly two); a
# branch there mispredicts about half the time. Each cell instead holds a pair code ``a | b << shift`` (``a <= b``;
# ``a == b`` for one candidate), so one branch-free path serves both kinds of cell. ``a > b`` marks a cell with 3+
# candidates, whose values go through the memo. With sRGB distance the loops compare the pair's two distances
# (a few integer operations). With OKLab that would need the value's OKLab (three cube roots), and the memo's
# entries, spread over megabytes, made the loop wait for memory: so each pair cell has a mask, one bit per code value
# of the cell, computed when the palette is prepared (``pair_masks``). The masks sit together, reached through a
# per-cell slot, so they stay in the cache: at 64^3 cells, 512x512 to PICO-8 took 5.1 ms instead of 6.0 on random
# input, where masks indexed by cell (2 MiB, mostly zeros) spilled out of it, and 7.5 ms through the memo (see
# LAB_DIFFUSION_GBITS for the cell size).

PAIR_MANY = 1  # a=1, b=0: never a real pair (pairs are stored in palette order)


def pair_table(tab: CellTable, n: int) -> tuple[np.ndarray, int]:
    """Pair codes of a ``cell_table`` of ``n`` colours (either distance): ``(codes, shift)``. ``codes`` is uint8
    with 4-bit fields for palettes of up to 16 colours (one byte per cell: the loops wait on each load, so the table
    is kept as small as the cells allow), else uint16 with 8-bit fields."""
    shift = 4 if n <= 16 else 8
    info = tab.info.astype(np.int64)
    codes = info | (info << shift)
    multi = np.flatnonzero(info >= n)
    s = tab.moff[multi]
    count = tab.cands[s]
    two = count == 2
    codes[multi] = np.where(two, tab.cands[s + 1] | (tab.cands[np.minimum(s + 2, len(tab.cands) - 1)] << shift),
                            PAIR_MANY)
    return np.ascontiguousarray(codes, dtype=np.uint8 if shift == 4 else np.uint16), shift


# slots are uint16; slot 0 is the all-zero mask of every other cell. 32^3 cells (OKLab error diffusion) never need
# more; 64^3 cells can
MAX_MASKS = (1 << 16) - 1


def pair_masks(tab: CellTable, codes: np.ndarray, shift: int, pal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OKLab choices of the pair cells of ``codes`` (``pair_table`` of the OKLab cell table ``tab`` of ``pal``):
    ``(masks, slots)``.

    For a cell whose candidates are a < b, the mask of ``slots[cell]`` (``W = max(1, 2^(3 (8 - gbits)) / 64)`` uint64
    words at ``masks[W * slot]``) has bit ``_low`` of a code value (bit j % 64 of word j // 64) set where b is nearer
    to it than a (ties: a, the lower index, like the search). Every other cell has slot 0, an all-zero mask, so the
    loops read every cell's mask without testing whether it is a pair: slot 0's bit always picks ``a``. The bits come
    from ``_pair_bits`` (two distances per value, as ``nearest`` would choose between the two colours) for palettes of
    up to ``NEAREST_SEARCH_MAX[True]`` colours, a limit kept from when the masks were searched with ``nearest`` (not
    measured for ``_pair_bits``, whose cost grows with the pair cells, not the colours). With more, every pair is marked 3+ in
    ``codes`` (changed in place) and goes through the memo, which searches only the values an image reaches, as do
    pairs beyond the first ``MAX_MASKS``.
    """
    c = codes.astype(np.int64)
    a, b = c & ((1 << shift) - 1), c >> shift
    cells = np.flatnonzero(a < b)
    keep = MAX_MASKS if len(pal) <= NEAREST_SEARCH_MAX[True] else 0
    codes[cells[keep:]] = PAIR_MANY
    cells = cells[:keep]
    # masks grouped by pair, the cells along one boundary together: 1-3% faster than in cell order
    key = (a[cells] << shift) | b[cells]
    order = np.argsort(key, kind="stable")
    cells = cells[order]
    slots = np.zeros(len(codes), np.uint16)
    slots[cells] = np.arange(1, len(cells) + 1)
    masks = np.zeros((len(cells) + 1) * max(1, (1 << (3 * (8 - tab.gbits))) // 64), np.uint64)
    from . import color

    lab = color.srgb_u8_to_oklab(pal)
    lin32, m1f, m2f = _lab32()
    _jit.kernel(_SELF, "_pair_bits")(pal, cells, a[cells], b[cells], tab.gbits, lin32, m1f, m2f,
                                     lab.astype(np.float32), LAB_MARGIN, color.LINEAR_U8, color.M1, color.M2, lab,
                                     masks)
    return masks, slots


@njit(cache=True, nogil=True, inline="always")
def _entries(m):
    """A 3x3 matrix's nine entries, for locals read before the loops (loads inside them kept the loops scalar)."""
    return m[0, 0], m[0, 1], m[0, 2], m[1, 0], m[1, 1], m[1, 2], m[2, 0], m[2, 1], m[2, 2]


@njit(cache=True, nogil=True)
def _pair_bits(pal, cells, ka, kb, gbits, lin32, m1f, m2f, rows, margin, lin, m1, m2, exact, masks):
    """``pair_masks``'s search: per pair cell ``cells[i]`` (2^gbits per side) of candidates ``ka[i] < kb[i]``, the
    bits at ``masks[words * (1 + i)]`` (``words = max(1, 2^(3 (8 - gbits)) / 64)``) of its code values nearer to
    ``kb[i]`` in OKLab, as ``_nearest_cells`` finds them with those two colours: float32 (``rows``), close calls again
    exactly (``exact``, ties to ``ka[i]``). Two distances per value instead of that search's machinery, and the values'
    linear light added per channel. Not contracted into fused multiply-adds: the build ahead of time does not fuse, so
    the JIT's masks are those of the built kernel."""
    lb = 8 - gbits
    side = 1 << lb
    vol = side * side * side
    words = max(1, vol // 64)
    gm = (1 << gbits) - 1
    a00, a01, a02, a10, a11, a12, a20, a21, a22 = _entries(m1f)
    b00, b01, b02, b10, b11, b12, b20, b21, b22 = _entries(m2f)
    tiny = np.float32(1e-30)  # as _nearest_cells: black's cube root
    near = np.float32(margin)
    lc = np.empty(vol, np.float32)
    mc = np.empty(vol, np.float32)
    sc = np.empty(vol, np.float32)
    x = np.empty(vol, np.float32)
    y = np.empty(vol, np.float32)
    z = np.empty(vol, np.float32)
    side_b = np.empty(vol, np.uint8)
    close = np.empty(vol, np.uint8)
    for i in range(cells.shape[0]):
        a, b = ka[i], kb[i]
        if pal[a, 0] == pal[b, 0] and pal[a, 1] == pal[b, 1] and pal[a, 2] == pal[b, 2]:
            continue  # two equal colours: ties, a everywhere (mask 0)
        cell = cells[i]
        r0 = ((cell >> (2 * gbits)) & gm) << lb
        g0 = ((cell >> gbits) & gm) << lb
        c0 = (cell & gm) << lb
        j = 0
        for ir in range(side):
            lr = lin32[r0 + ir]
            for ig in range(side):
                lg = lin32[g0 + ig]
                pl, pm, ps = a00 * lr + a01 * lg, a10 * lr + a11 * lg, a20 * lr + a21 * lg
                for ib in range(side):
                    lv = lin32[c0 + ib]
                    lc[j + ib] = max(pl + a02 * lv, tiny)
                    mc[j + ib] = max(pm + a12 * lv, tiny)
                    sc[j + ib] = max(ps + a22 * lv, tiny)
                j += side
        _cbrt32(lc, x, vol)
        _cbrt32(mc, y, vol)
        _cbrt32(sc, z, vol)
        u0, u1, u2 = rows[a, 0], rows[a, 1], rows[a, 2]
        w0, w1, w2 = rows[b, 0], rows[b, 1], rows[b, 2]
        for j in range(vol):
            p, q, o = x[j], y[j], z[j]
            l0 = b00 * p + b01 * q + b02 * o
            l1 = b10 * p + b11 * q + b12 * o
            l2 = b20 * p + b21 * q + b22 * o
            f0, f1, f2 = l0 - u0, l1 - u1, l2 - u2
            d = f0 * f0 + f1 * f1 + f2 * f2
            e0, e1, e2 = l0 - w0, l1 - w1, l2 - w2
            e = e0 * e0 + e1 * e1 + e2 * e2
            side_b[j] = np.uint8(e < d)
            close[j] = np.uint8(abs(e - d) < near)
        for j in range(vol):
            if close[j]:
                v0, v1, v2 = code_oklab(r0 + (j >> (2 * lb)), g0 + ((j >> lb) & (side - 1)), c0 + (j & (side - 1)),
                                        lin, m1, m2)
                h0, h1, h2 = v0 - exact[a, 0], v1 - exact[a, 1], v2 - exact[a, 2]
                k0, k1, k2 = v0 - exact[b, 0], v1 - exact[b, 1], v2 - exact[b, 2]
                side_b[j] = np.uint8(k0 * k0 + k1 * k1 + k2 * k2 < h0 * h0 + h1 * h1 + h2 * h2)
        base = words * (1 + i)
        for w in range(words):
            acc = np.uint64(0)
            for t in range(min(64, vol)):
                acc |= np.uint64(side_b[64 * w + t]) << np.uint64(t)
            masks[base + w] = acc


class Pairs(NamedTuple):
    """What the error-diffusion loops read per cell besides the cell table (``diffusion_pairs``)."""

    codes: np.ndarray
    shift: int
    masks: np.ndarray
    slots: np.ndarray


# sRGB loops compare distances and read no masks; typed like real ones so every loop has one signature for both
# distances
_NO_MASKS = np.zeros(1, np.uint64)
_NO_SLOTS = np.zeros(1, np.uint16)


def diffusion_pairs(lk: Lookup, pal: np.ndarray) -> Pairs:
    """Pair codes of the cell table of ``lk``, the lookup of ``pal`` (uint8 [N,3]), and with OKLab their masks."""
    codes, shift = pair_table(lk.table, len(pal))
    if not lk.use_lab:
        return Pairs(codes, shift, _NO_MASKS, _NO_SLOTS)
    return Pairs(codes, shift, *pair_masks(lk.table, codes, shift, np.ascontiguousarray(pal, dtype=np.uint8)))


# ---------------------------------------------------------------------------------------------------------
# compiled loops. ``pal_cmp`` holds the palette in the distance space (sRGB 0..255 or OKLab); for OKLab a code
# value is converted with the exact linear-light table of the 256 code values (``lin``) and the OKLab matrices
# ``m1``/``m2``. Every loop finds a code value's colour the same way, through the inlined helpers below: a cell
# with one candidate is decided by one table load (sRGB error diffusion: a pair of candidates by two distances), a
# value of another cell by its memo entry, and only a value not in the memo yet calls the search (``_fill``, out of
# line). The loops take ``use_lab`` as a plain flag rather than a function argument because numba does not reuse
# its on-disk cache for functions that take other functions.


@njit(cache=True, nogil=True, inline="always")
def code_oklab(vr, vg, vb, lin, m1, m2):
    """OKLab of the code value (vr, vg, vb) (integers 0..255), through the exact linear-light table ``lin``."""
    lr = lin[vr]
    lg = lin[vg]
    lb = lin[vb]
    l_ = np.cbrt(m1[0, 0] * lr + m1[0, 1] * lg + m1[0, 2] * lb)
    m_ = np.cbrt(m1[1, 0] * lr + m1[1, 1] * lg + m1[1, 2] * lb)
    s_ = np.cbrt(m1[2, 0] * lr + m1[2, 1] * lg + m1[2, 2] * lb)
    return (m2[0, 0] * l_ + m2[0, 1] * m_ + m2[0, 2] * s_, m2[1, 0] * l_ + m2[1, 1] * m_ + m2[1, 2] * s_,
            m2[2, 0] * l_ + m2[2, 1] * m_ + m2[2, 2] * s_)


@njit(cache=True, nogil=True)
def _fill(use_lab, cell, vr, vg, vb, pal_cmp, moff, cands, blk, memo, lin, m1, m2, gbits):
    """Search the nearest of ``cell``'s candidates to the code value by squared difference in the distance space,
    store it in the memo and return it. Candidates are in palette order and the comparison strict, so the lowest
    index wins ties. Out of line: a value is searched once per palette."""
    if use_lab:
        q0, q1, q2 = code_oklab(vr, vg, vb, lin, m1, m2)
    else:
        q0 = np.float64(vr)
        q1 = np.float64(vg)
        q2 = np.float64(vb)
    s = moff[cell]
    best = cands[s + 1]
    best_d = np.inf
    for j in range(s + 1, s + 1 + cands[s]):
        k = cands[j]
        d0 = q0 - pal_cmp[k, 0]
        d1 = q1 - pal_cmp[k, 1]
        d2 = q2 - pal_cmp[k, 2]
        d = d0 * d0 + d1 * d1 + d2 * d2
        if d < best_d:
            best_d = d
            best = k
    memo[_memo_at(vr, vg, vb, cell, blk, gbits)] = best + 1
    return np.int64(best)


# The helpers below are inlined and have no branch: numba increments and decrements the reference count of every
# array an inlined helper takes, and drops those pairs again only when no branch stands between them. With a branch
# inside (a call to the search, even a plain ``if`` around a store), each use cost two atomic operations per array:
# a no-dither 512x512 call took 10 to 25 ms instead of 1.5, error diffusion 11 ms instead of 3.2. So the loops keep
# their branches (a multi-candidate cell, a value not in the memo yet) in their own bodies.


@njit(cache=True, nogil=True, inline="always")
def _cell(vr, vg, vb, gbits):
    lb = np.int64(8 - gbits)
    return np.uint64(((vr >> lb) << (2 * gbits)) | ((vg >> lb) << gbits) | (vb >> lb))


@njit(cache=True, nogil=True, inline="always")
def _low(vr, vg, vb, gbits):
    """The code value's low ``8 - gbits`` bits per channel (r g b): its place in its cell."""
    lb = np.int64(8 - gbits)
    lm = (np.int64(1) << lb) - 1
    return np.uint64((((((vr & lm) << lb) | (vg & lm)) << lb) | (vb & lm)))


@njit(cache=True, nogil=True, inline="always")
def _memo_at(vr, vg, vb, cell, blk, gbits):
    """Where the memo keeps the code value (vr, vg, vb) of multi-candidate ``cell``: its block plus ``_low``."""
    return np.uint64(blk[cell]) + _low(vr, vg, vb, gbits)


@njit(cache=True, nogil=True, inline="always")
def _memo_get(vr, vg, vb, cell, blk, memo, gbits):
    """The memo's colour for the code value of multi-candidate ``cell`` (-1: not known yet)."""
    return np.int64(memo[_memo_at(vr, vg, vb, cell, blk, gbits)]) - 1


@njit(cache=True, nogil=True, inline="always")
def _pair(code, shift):
    """The two candidates of a pair code (``a > b``: 3+ candidates)."""
    e = np.int64(code)
    return e & ((np.int64(1) << shift) - 1), e >> shift


@njit(cache=True, nogil=True, inline="always")
def _pick(vr, vg, vb, ka, kb, pal4, nr, ng, nb, wt):
    """The nearer of two colours by sRGB distance, the error it leaves and the next pixel's value: (colour, r, g, b,
    next r, g, b), where the next value is ``n + error * wt`` per channel. Both distances, and the next value for
    either colour, are computed before the comparison, so that picking is the chain's last step rather than followed
    by a multiply; strict so that the lower index wins ties like the search."""
    ua = np.uint64(ka) << np.uint64(2)
    ub = np.uint64(kb) << np.uint64(2)
    ar = vr - pal4[ua]
    ag = vg - pal4[ua + np.uint64(1)]
    ab = vb - pal4[ua + np.uint64(2)]
    br = vr - pal4[ub]
    bg = vg - pal4[ub + np.uint64(1)]
    bb = vb - pal4[ub + np.uint64(2)]
    pr, pg, pb = nr + ar * wt, ng + ag * wt, nb + ab * wt
    qr, qg, qb = nr + br * wt, ng + bg * wt, nb + bb * wt
    second = br * br + bg * bg + bb * bb < ar * ar + ag * ag + ab * ab
    return ((kb if second else ka), (br if second else ar), (bg if second else ag), (bb if second else ab),
            (qr if second else pr), (qg if second else pg), (qb if second else pb))


# Error diffusion runs in fixed point: ``strength`` is taken in steps of 1/STRENGTH_STEPS, so the error passed on,
# (value - colour) * S * numerator / divisor (see ``kernel_weights``), is an integer in units of
# 1/FS_ONE = 1/(16 * STRENGTH_STEPS) of a code value. The single rounding is the diffused value's, to the nearest
# code value (halves up) before clamping to 0..255; that integer's nearest colour is exact and its error is what is
# diffused (like Pillow, which also diffuses integer error).
STRENGTH_STEPS = 256
FS_SHIFT = 12
FS_ONE = 1 << FS_SHIFT  # 16 * STRENGTH_STEPS
FS_HALF = FS_ONE // 2


# Images of more than BAND_MIN_ROWS rows are dithered as two bands of as many rows, the second starting a few rows
# above the middle: its first rows (4-7, "warm-up") only build up the error the rows above would have passed on, and
# the first band's rows stand there (with two, libimagequant's, the start of a band's error shows below them: see
# docs/benchmarks.md, stop 65). The vector loops run both bands' pixels side by side, so the CPU has two
# chains from one pixel to the next to overlap instead of one (each waits on its cell's and colour's loads and on
# mispredicted pair choices). libimagequant 4 dithers in chunks the same way (in threads, two warm-up rows, only
# images over 128 rows: "chunks risk causing seams, so should be tall"). Measured when written (bench_quantize's
# images, 512x512 to PICO-8, per-round ratios to Pillow's FS, JIT, the one-band loop's sources and these in
# alternating processes, two pairs, gradient / random): sRGB Floyd-Steinberg 0.90-0.91x / 0.75-0.89x to
# 0.73-0.75x / 0.56-0.65x, Jarvis-Judice-Ninke 0.93-0.94x / 0.74-0.91x to 0.85-0.87x / 0.56-0.67x, Sierra
# 0.90-0.93x / 0.70-0.91x to 0.77-0.86x / 0.53-0.60x; OKLab 0.91-1.02x / 0.74-0.83x to 0.78-1.10x / 0.57-0.89x (eight
# to ten processes each; with two bands its times move by a quarter from one process to the next). Images of up to 128
# rows run one band with the second band's code in the loop, unused: 128x512 random 0.80-0.88x against 0.74-0.88x,
# gradient 0.94-1.06x against 0.90-1.03x, alike or a little slower; the loop compiled a second time without it
# measured alike to both (0.74-0.91x / 0.93-1.01x), so the loop is compiled once.
BAND_MIN_ROWS = 128


@njit(cache=True, nogil=True)
def band_rows(h):
    """(m, s) for an image of ``h`` rows: the first band is rows 0..m-1, the second rows s..h-1 (m rows too), whose
    rows before m, at least four, are its warm-up. s is even, so the bands' j-th rows scan in the same direction
    (serpentine rows alternate by row parity). One band, (h, h), up to ``BAND_MIN_ROWS`` rows."""
    if h <= BAND_MIN_ROWS:
        return h, h
    m = (h + 5) // 2
    m += (h - m) & 1
    return m, h - m


def fs_strength(strength: float) -> int:
    """``strength`` 0..1 as the integer multiplier of the fixed-point loops (0..STRENGTH_STEPS)."""
    return int(round(strength * STRENGTH_STEPS))


@njit(cache=True, nogil=True, inline="always")
def _views(src, out_idx, out_img):
    """The loops' flat views of the source and outputs, and the channel count as an unsigned index."""
    return src.reshape(-1), out_idx.reshape(-1), out_img.reshape(-1), np.uint64(src.shape[2])


@njit(cache=True, nogil=True, inline="always")
def _code(t):
    """The code value of a fixed-point value with its rounding half added: floor, then clamp to 0..255 (runaway
    error must not smear across flat areas; Pillow's CLIP8 does the same)."""
    return min(max(t >> FS_SHIFT, np.int64(0)), np.int64(255))


@njit(cache=True, nogil=True, inline="always")
def _emit(oidx, oimg, used, table, p, uch, k):
    """Write colour ``k`` (a palette index, or N: transparent) at pixel ``p``: the index, ``table``'s row, its use."""
    uk = np.uint64(k)
    q = p * uch
    t = uk * uch
    last = uch - np.uint64(1)  # alpha, or blue again: no branch (see above)
    oidx[p] = uk
    # channels written one by one: a loop over them compiles to a generic copy with its own checks
    oimg[q] = table[t]
    oimg[q + np.uint64(1)] = table[t + np.uint64(1)]
    oimg[q + np.uint64(2)] = table[t + np.uint64(2)]
    oimg[q + last] = table[t + last]
    used[uk] = 1


# Every kernel runs in this fixed point (see ``kernel_weights``). With damping, a cell table of another size than
# the vector loop's, an image of one pixel or a big-endian machine: one loop body for all (``_diffuse``; every
# other case takes the vector loop below), whose taps are integer weights on a 5x3 window (dx -2..2, dy 0..2), so
# its compiled entry point serves every kernel and both distances. Only the current row's two right-hand
# taps are on the chain from one pixel to the next; the error a row passes to the two rows below is kept per pixel
# and spread once the row is done, by ``_rows_below``, a loop without that chain which the compiler turns into
# vector instructions (the spreading used to run in the pixel loop: measured when it moved, same process, 512x512
# to PICO-8, the three-row kernels took 0.83-0.88x their time in sRGB, 0.85-0.91x in OKLab; the two-row kernels
# 0.92-0.97x and 0.92-1.00x; results identical). ``damp_limit`` >= 0 turns on libimagequant's damping: a pixel
# whose squared error (code values, summed over channels) exceeds it passes on only 3/4 of its error (each channel
# rounded half up), which keeps errors that no palette colour can absorb from running across edges; and each
# pixel takes only ``levels[p]`` / 256 of the error it collected (see ``dither_levels``), 4/5 of that when it is
# over the limit too.


@njit(cache=True, nogil=True, inline="always")
def _value(flat, q, ar, ag, ab, cx):
    """A pixel's value in fixed point before this row's error: its source at ``flat[q]``, the error its cell ``cx``
    collected from the rows above (``ar``/``ag``/``ab``), and the rounding half: r, g, b."""
    half = np.int64(FS_HALF)
    return ((np.int64(flat[q]) << FS_SHIFT) + np.int64(ar[cx]) + half,
            (np.int64(flat[q + np.uint64(1)]) << FS_SHIFT) + np.int64(ag[cx]) + half,
            (np.int64(flat[q + np.uint64(2)]) << FS_SHIFT) + np.int64(ab[cx]) + half)


@njit(cache=True, nogil=True, inline="always")
def _taken(flat, q, tr, tg, tb, lv, big):
    """A value in fixed point (source at ``flat[q]``, collected error, rounding half) with its collected error
    scaled by ``lv`` / 256 (rounded half up), and by 4/5 more (``(4 e + 2) // 5``: the nearest integer, a fifth never
    being a half) when its squared length is over ``big`` (libimagequant's rule for error that runs too high, see
    ``get_dithered_pixel``): r, g, b."""
    half = np.int64(FS_HALF)
    sr = (np.int64(flat[q]) << FS_SHIFT) + half
    sg = (np.int64(flat[q + np.uint64(1)]) << FS_SHIFT) + half
    sb = (np.int64(flat[q + np.uint64(2)]) << FS_SHIFT) + half
    v = np.int64(lv)
    er = ((tr - sr) * v + 128) >> 8
    eg = ((tg - sg) * v + 128) >> 8
    eb = ((tb - sb) * v + 128) >> 8
    over = er * er + eg * eg + eb * eb > big
    return (sr + ((4 * er + 2) // 5 if over else er), sg + ((4 * eg + 2) // 5 if over else eg),
            sb + ((4 * eb + 2) // 5 if over else eb))


LEVEL_FULL = 240  # a level of 15/16: libimagequant's base dithering level ("prevent small errors from accumulating")


@njit(cache=True, nogil=True)
def dither_levels(indices, levels):
    """libimagequant's dither map (``update_dither_map``, without its edge map): from the undithered mapping
    ``indices`` (uint8/uint16 [h,w]), each pixel's share of the error it collects, in 256ths, into ``levels`` (uint8
    [h,w]). Along each row, a run of one colour with its pixels' matches above and below scores n = 10 per pixel +
    15 per pixel above or below of the run's colour; its pixels (and the first pixel after it, as libimagequant
    counts) get ``LEVEL_FULL`` * n / (20 + n): full dithering in wide flat areas, little where the undithered image
    already has texture (there dithering adds error and no smoothness). libimagequant also lowers the level at
    edges of the source; on bench_extract's sprite sheets that raised the block error by 10-18%, so it is left
    out."""
    h, w = indices.shape
    levels[:, :] = LEVEL_FULL
    for y in range(h):
        last = indices[y, 0]
        lastcol = 0
        for col in range(1, w):
            px = indices[y, col]
            if px != last or col == w - 1:
                n = 10 * (col - lastcol)
                for i in range(lastcol, col):
                    if y > 0 and indices[y - 1, i] == last:
                        n += 15
                    if y + 1 < h and indices[y + 1, i] == last:
                        n += 15
                lv = (LEVEL_FULL * n) // (20 + n)
                for i in range(lastcol, col + 1):
                    levels[y, i] = lv
                lastcol = col + 1
                last = px


@njit(cache=True, nogil=True)
def mapping_error(src, image, indices, n):
    """The sum of squared differences (sRGB code values, over channels) between ``src`` and ``image`` (uint8
    [h,w,3|4]) over the pixels whose index is below ``n`` (the opaque ones), and their number."""
    h, w, ch = src.shape
    total = np.int64(0)
    count = np.int64(0)
    for y in range(h):
        for x in range(w):
            if indices[y, x] < n:
                for c in range(3):
                    d = np.int64(src[y, x, c]) - np.int64(image[y, x, c])
                    total += d * d
                count += 1
    return total, count


@njit(cache=True, nogil=True, fastmath={"contract"})
def _taps_below(e, r1, r2, n, lanes, k1, k2):
    """``r1[i]`` (the next row's cells) gains, and ``r2[i]`` (the row after, untouched so far) is set to, the
    weighted error of ``e[i]``, ``e[i + lanes]``, ... ``e[i + 4 * lanes]`` for i < ``n``: the five pixels above a cell,
    ``lanes`` values apart. ``k1``/``k2``: the rows' five weights in the order that row was scanned (mirrored for a
    right-to-left row), the last for ``e[i]``. Both rows in one pass: each error is loaded once for both. The
    products and sums are whole numbers below 2^20 in size (an error is at most 255 code values, the weights sum
    to at most ``FS_ONE``), so float32 holds them exactly: the sums are the integer ones, exactly what spreading per
    pixel gave. In float32 because x86's vector unit multiplies int32 lanes slowly (``vpmulld``: two operations, ten
    cycles on Intel): measured on the sRGB loop's pass of the same form, bench_quantize's gradient to PICO-8 took
    0.95-0.98x Pillow's FS instead of 0.97-1.00x."""
    a1w, b1w, c1w, d1w, e1w = k1[0], k1[1], k1[2], k1[3], k1[4]
    a2w, b2w, c2w, d2w, e2w = k2[0], k2[1], k2[2], k2[3], k2[4]
    if a2w == 0 and b2w == 0 and c2w == 0 and d2w == 0 and e2w == 0:
        # a kernel of one row below (Floyd-Steinberg, Burkes, the Sierra two-row and Lite): half the work, 0.34-0.37
        # ms a 512x512 image instead of 0.61-0.65 on Zen 3
        for i in range(n):
            r1[i] += np.int32(a1w * np.float32(e[i + 4 * lanes]) + b1w * np.float32(e[i + 3 * lanes])
                              + c1w * np.float32(e[i + 2 * lanes]) + d1w * np.float32(e[i + lanes])
                              + e1w * np.float32(e[i]))
            r2[i] = 0
        return
    if a1w == e1w and b1w == d1w and a2w == e2w and b2w == d2w:
        # symmetric rows (every kernel of two rows below in the library): the errors two and one pixels either side
        # summed first (exact in int32), so three conversions and six multiply-adds a lane instead of five and ten.
        # The pass alone, 512x512 on Zen 3: Jarvis-Judice-Ninke, Sierra and Atkinson 0.23-0.37 ms against 0.38-0.70
        # (the same process, three runs)
        for i in range(n):
            s2 = np.float32(np.int32(e[i + 4 * lanes] + e[i]))
            s1 = np.float32(np.int32(e[i + 3 * lanes] + e[i + lanes]))
            v2 = np.float32(e[i + 2 * lanes])
            r1[i] += np.int32(a1w * s2 + b1w * s1 + c1w * v2)
            r2[i] = np.int32(a2w * s2 + b2w * s1 + c2w * v2)
        return
    for i in range(n):
        v0, v1, v2, v3 = (np.float32(e[i + 4 * lanes]), np.float32(e[i + 3 * lanes]), np.float32(e[i + 2 * lanes]),
                          np.float32(e[i + lanes]))
        v4 = np.float32(e[i])
        r1[i] += np.int32(a1w * v0 + b1w * v1 + c1w * v2 + d1w * v3 + e1w * v4)
        r2[i] = np.int32(a2w * v0 + b2w * v1 + c2w * v2 + d2w * v3 + e2w * v4)


@njit(cache=True, nogil=True)
def _rows_below(err, acc, nx1, nx2, k1, k2, w):
    """Spread one row's error to the next two rows (``_taps_below``) in ``_diffuse``'s layout: per channel c,
    ``err[c]`` padded by two zeros each side and rows ``acc[c, nx1:]``, ``acc[c, nx2:]`` of ``w`` cells."""
    for c in range(3):
        _taps_below(err[c], acc[c, nx1 : nx1 + w], acc[c, nx2 : nx2 + w], w, 1, k1, k2)


@njit(cache=True, nogil=True, inline="always")
def _mark_used(used, oidx, p0, w):
    """``used[k] = 1`` for every index ``k`` of the ``w`` pixels from ``p0``."""
    for i in range(w):
        used[oidx[p0 + np.uint64(i)]] = 1


@njit(cache=True, nogil=True, inline="always")
def _diffuse(
    use_lab, alpha, damp, src, alpha_threshold, pal4, wts, damp_limit, levels, serpentine, pal_cmp, lin, m1, m2, info,
    blk, memo, moff, cands, gbits, codes, shift, masks, slots, table, out_idx, out_img, used,
):
    # The loop of ``_diffuse_fixed``: damping, a cell table of another size than the vector loops', images of one
    # pixel and big-endian machines (the vector loops below take every other case). Two bands run one after the
    # other: the second first, so that the first writes over the second's warm-up rows.
    # Inlined although it has branches (see the helpers above): each entry point calls it once per image, so the
    # reference counting that costs is paid once, not per pixel.
    # Unsigned indices in the pixel loop: numba then emits no negative-index wraparound.
    h, w = src.shape[0], src.shape[1]
    n = pal4.shape[0] // 4
    flat, oidx, oimg, uch = _views(src, out_idx, out_img)
    big = damp_limit << (2 * FS_SHIFT)  # the limit for collected error, in fixed point
    wsh = np.uint64(max(3 * (8 - gbits) - 6, 0))  # a pair's mask: 2^wsh words of 64 bits
    w01, w02 = wts[3], wts[4]
    # int32 rows: a cell collects at most 255 * FS_ONE; float32 weights for ``_rows_below``
    fw1 = wts[5:10].astype(np.float32)
    fw2 = wts[10:15].astype(np.float32)
    rw1 = fw1[::-1].copy()
    rw2 = fw2[::-1].copy()
    last = np.uint64(h * w - 1)
    pad = 2
    stride = w + 2 * pad
    acc = np.zeros((3, 3 * stride), dtype=np.int32)  # per channel, a ring of three rows' collected error
    err = np.zeros((3, stride), dtype=np.int32)  # per channel, this row's error (0 where transparent)
    er0, eg0, eb0 = err[0], err[1], err[2]
    ar, ag, ab = acc[0], acc[1], acc[2]
    zero = np.int64(0)
    m, s = band_rows(h)
    spare = np.zeros_like(used)  # the colours of the second band's warm-up rows, which do not stand
    for i in range(s, h + m):
        # the second band first, then the first, which writes over the second's warm-up rows (one band: s = h)
        y = i if i < h else i - h
        if i == s or i == h:  # a band's first row
            acc[:] = 0
            err[:] = 0
        mark = spare if i < m else used
        cur = np.uint64((y % 3) * stride + pad)
        nx1 = (y + 1) % 3 * stride + pad
        nx2 = (y + 2) % 3 * stride + pad
        reverse = serpentine and (y & 1) == 1
        step = -1 if reverse else 1
        x = w - 1 if reverse else 0
        c2r = c2g = c2b = zero
        # tr, tg, tb: this pixel's value (source, collected error, current-row error, rounding half)
        p = np.uint64(y * w + x)
        tr, tg, tb = _value(flat, p * uch, ar, ag, ab, cur + np.uint64(x))
        if damp:
            tr, tg, tb = _taken(flat, p * uch, tr, tg, tb, levels[p], big)
        for _ in range(w):
            p = np.uint64(y * w + x)
            pn = min(np.uint64(y * w + x + step), last)
            # the next pixel's value but for this pixel's error
            nr, ng, nb = _value(flat, pn * uch, ar, ag, ab, cur + np.uint64(x + step))
            nr, ng, nb = nr + c2r, ng + c2g, nb + c2b
            ux = np.uint64(x + pad)
            if alpha and flat[p * uch + np.uint64(3)] < alpha_threshold:
                # transparent: takes and passes on no error
                _emit(oidx, oimg, mark, table, p, uch, n)
                tr, tg, tb = nr, ng, nb
                if damp:
                    tr, tg, tb = _taken(flat, pn * uch, tr, tg, tb, levels[pn], big)
                c2r = c2g = c2b = zero
                er0[ux] = 0
                eg0[ux] = 0
                eb0[ux] = 0
            else:
                vr, vg, vb = _code(tr), _code(tg), _code(tb)
                cell = _cell(vr, vg, vb, gbits)
                ka, kb = _pair(codes[cell], shift)
                if ka > kb:  # 3+ candidates: the memo
                    ka = kb = _memo_get(vr, vg, vb, cell, blk, memo, gbits)
                    if ka < 0:
                        ka = kb = _fill(use_lab, cell, vr, vg, vb, pal_cmp, moff, cands, blk, memo, lin, m1, m2,
                                        gbits)
                elif use_lab:  # a pair's choice for this value is a bit of its mask (see ``pair_masks``)
                    lo = _low(vr, vg, vb, gbits)
                    word = masks[(np.uint64(slots[cell]) << wsh) | (lo >> np.uint64(6))]
                    # a branch, not arithmetic on the bit (``ka + bit * (kb - ka)``): single-colour cells (slot 0,
                    # bit always 0) always predict it, and a predicted branch takes the slot and mask loads off the
                    # chain to the next pixel; pair cells mispredict about half the time (see above), yet in all it
                    # took 0.94-0.97x the time of the arithmetic (512x512 to PICO-8, same process, same results)
                    if (word >> (lo & np.uint64(63))) & np.uint64(1):
                        ka = kb
                    else:
                        kb = ka
                k, er, eg, eb, tr, tg, tb = _pick(vr, vg, vb, ka, kb, pal4, nr, ng, nb, w01)
                _emit(oidx, oimg, mark, table, p, uch, k)
                if damp:
                    if er * er + eg * eg + eb * eb > damp_limit:
                        er = (3 * er + 2) >> 2
                        eg = (3 * eg + 2) >> 2
                        eb = (3 * eb + 2) >> 2
                        tr, tg, tb = nr + er * w01, ng + eg * w01, nb + eb * w01
                    tr, tg, tb = _taken(flat, pn * uch, tr, tg, tb, levels[pn], big)
                c2r = er * w02
                c2g = eg * w02
                c2b = eb * w02
                er0[ux] = er
                eg0[ux] = eg
                eb0[ux] = eb
            x += step
        _rows_below(err, acc, nx1, nx2, rw1 if reverse else fw1, rw2 if reverse else fw2, w)


@njit(cache=True, nogil=True)
def _diffuse_fixed(
    use_lab, src, alpha_threshold, pal4, wts, damp_limit, levels, serpentine, pal_cmp, lin, m1, m2, info, blk, memo,
    moff, cands, gbits, codes, shift, masks, slots, table, out_idx, out_img, used,
):
    _diffuse(use_lab, src.shape[2] == 4, damp_limit >= 0,
             src, alpha_threshold, pal4, wts, damp_limit, levels, serpentine, pal_cmp, lin, m1, m2, info,
             blk, memo, moff, cands, gbits, codes, shift, masks, slots, table, out_idx, out_img, used)


# Error diffusion without damping, the most used case, has a loop of its own for both distances: ``_diffuse``'s, with
# each pixel's three channels in one vector (``simd``'s Vec4: value, error and the error two pixels on are each one
# register instead of three), and the next pixel's value taken as ``n + v * w - palw[k]`` with the palette
# pre-multiplied by the right-hand tap (``simd.pick_pair``), so the chain from one pixel to the next is: clamp, cell,
# pair code, one palette load, one subtraction. Cells of 3+ candidates and memo misses go the same way as in
# ``_diffuse``. Measured when written (bench_quantize's images, 512x512 to PICO-8, same process, identical results; a
# prototype of this loop called directly against the previous loops through ``quantize``): 0.81-0.82x the time of
# ``_diffuse_opaque_rgb`` on random input and 0.80-0.85x on the gradient for the other kernels, 0.86x that of the
# Floyd-Steinberg loop on both (both loops removed then). The loop keeps ``_diffuse_fixed``'s arguments (one signature
# for ``build_kernels``) and builds its int32 palette, the palette times the tap and the output table as words itself
# (N + 1 rows: nothing next to a 512x512 image).
# Its error rows hold four int32 lanes per pixel (R, G, B, 0), spread to the rows below once the row is done
# (``_taps_below``: eight lanes, two pixels, a vector where the CPU has AVX2), and the colours a row used are marked
# after it (``_mark_used``), not per pixel. Both used to run in the pixel loop, the spreading one cell two pixels
# behind with four lanes, to fill the loop's waits. Per-round ratios to Pillow's FS, PICO-8, JIT, same process,
# Floyd-Steinberg, Jarvis-Judice-Ninke, Atkinson and Sierra Lite, identical results, random / gradient: on an AMD EPYC
# of the Zen 3 generation 0.72-0.82x / 0.84-0.95x against 1.02-1.09x / 1.25-1.34x in the loop; on two Intel Xeon
# machines with AVX-512 0.80-0.83x / 0.91-0.93x against 0.76-0.77x / 0.86-0.93x and 0.81-0.85x / 0.90-0.96x against
# 0.91-0.94x / 1.09-1.14x. On Zen 3 the pass alone took 0.78-0.89x / 0.89-1.11x; writing the image after the row as
# well lost (0.83-0.88x / 0.97-0.98x against 0.72-0.78x / 0.90-0.93x).
# OKLab takes the same loop with its cell table's size, 32^3 (``LAB_DIFFUSION_GBITS``), and each pair cell's choice by
# its mask's bit (``simd.pick_bit``, a predicted branch as in ``_diffuse``) instead of two distances. Against the loop
# of its own it had (``_diffuse``'s body for opaque pixels, removed), per-round ratios to Pillow's FS, Zen 3, JIT,
# same process, PICO-8, Floyd-Steinberg, Jarvis-Judice-Ninke, Atkinson and Sierra Lite, identical results: 0.80-0.93x
# on random and 0.90-0.96x on the gradient against 1.11-1.33x and 1.16-1.25x. The mask's choice made before
# ``pick_pair`` instead (LLVM chose a select, which puts the mask's loads on the chain) took 1.34-1.52x.
# Not used for a cell table of another size (its shifts are constants) nor for an image of one pixel (each
# iteration reads the next pixel, at least pixel 1, whose word lies past such an image: see ``simd.pixel_at``).
_zero4 = _pixel_at = _first_pixel = _value4 = _code_cell = _lane = _scaled = _pick_pair = _store4 = _put_pixel = None
_pick_bit = None


@njit(cache=True, nogil=True, inline="always")
def _diffuse_vector(
    ch, lab, src, alpha_threshold, pal4, wts, serpentine, pal_cmp, lin, m1, m2, blk, memo, moff, cands, codes, shift,
    masks, slots, table, out_idx, out_img, used,
):
    # ``ch``: 3 or 4 channels, a constant in each entry point (the pixel reads and writes differ); with 4, pixels
    # below ``alpha_threshold`` are transparent as in ``_diffuse``. ``lab``: OKLab distance (a constant too), whose
    # pair cells choose by their mask's bit (``pair_masks``) and whose cells are ``LAB_DIFFUSION_GBITS`` wide.
    # Two bands (``band_rows``) run side by side: each step of the pixel loop takes pixel x of the first band's row
    # and of the second's (A and B below: the same body twice, as a helper with branches would cost reference
    # counting per pixel, see above).
    h, w = src.shape[0], src.shape[1]
    n = pal4.shape[0] // 4
    flat, oidx, oimg, _ = _views(src, out_idx, out_img)
    uch = np.uint64(ch)  # a constant: offsets by shifts and adds rather than a multiply
    w01, w02 = wts[3], wts[4]
    fw1 = wts[5:10].astype(np.float32)
    fw2 = wts[10:15].astype(np.float32)
    rw1 = fw1[::-1].copy()
    rw2 = fw2[::-1].copy()
    pal = pal4.astype(np.int32)
    palw = pal * np.int32(w01)
    words = np.zeros(n + 1, np.uint32)  # each output row as a little-endian word
    for k in range(n + 1):
        for c in range(ch):
            words[k] |= np.uint32(table[k * ch + c]) << np.uint32(8 * c)
    last = np.uint64(h * w - 1)
    one = np.uint64(1)
    wsh = np.uint64(3 * (8 - LAB_DIFFUSION_GBITS) - 6)  # a pair's mask: 2^wsh words
    gbits = LAB_DIFFUSION_GBITS if lab else GBITS
    pad = 2
    stride = w + 2 * pad
    m, s = band_rows(h)
    two = s < h
    # per band, a ring of three rows' collected error and this row's error (0 where transparent)
    acc = np.zeros((2, 3 * stride * 4), dtype=np.int32)
    err = np.zeros((2, stride * 4), dtype=np.int32)
    acc_a, acc_b, err_a, err_b = acc[0], acc[1], err[0], err[1]
    for j in range(m):
        ya, yb = j, s + j  # the bands' rows; s is even, so both scan in the same direction
        cur = (j % 3) * stride + pad
        nx1 = (j + 1) % 3 * stride + pad
        nx2 = (j + 2) % 3 * stride + pad
        reverse = serpentine and (j & 1) == 1
        step = -1 if reverse else 1
        x = w - 1 if reverse else 0
        k1, k2 = (rw1, rw2) if reverse else (fw1, fw2)
        c2a = c2b = _zero4()
        p = np.uint64(ya * w + x)
        t_a = _value4(_first_pixel(flat, p * uch) if ch == 3 else _pixel_at(flat, p * uch, ch), acc_a,
                      np.uint64(4 * (cur + x)), c2a)
        # B's first pixel is not pixel 0 (s > 0): ``_pixel_at`` reads from the byte before it. Without B, pixel 1
        # (unused; these loops take images of two pixels or more)
        p = np.uint64(yb * w + x) if two else one
        t_b = _value4(_pixel_at(flat, p * uch, ch), acc_b, np.uint64(4 * (cur + x)), c2b)
        for _ in range(w):
            # the next pixel's value but for this pixel's error (clamped at the image's ends: unused there)
            ex = np.uint64(4 * (x + pad))
            nxt = np.uint64(4 * (cur + x + step))
            p = np.uint64(ya * w + x)
            pn = max(min(np.uint64(ya * w + x + step), last), one)
            nv = _value4(_pixel_at(flat, pn * uch, ch), acc_a, nxt, c2a)
            if ch == 4 and flat[p * uch + np.uint64(3)] < alpha_threshold:
                # transparent: takes and passes on no error
                oidx[p] = n
                _put_pixel(oimg, p * uch, words, n, ch)
                t_a = nv
                c2a = _zero4()
                _store4(err_a, ex, c2a)
            else:
                v, cell, low = _code_cell(t_a, LAB_DIFFUSION_GBITS) if lab else _code_cell(t_a, GBITS)
                ka, kb = _pair(codes[cell], shift)
                # the memo's block, read for every pixel before the branch: a 3+ cell then waits for one load, not
                # two (1-2% less time on both images, same results)
                block = np.uint64(blk[cell])
                if ka > kb:  # 3+ candidates: the memo (``_memo_get``)
                    ka = kb = np.int64(memo[block + low]) - 1
                    if ka < 0:
                        ka = kb = _fill(lab, cell, _lane(v, 0), _lane(v, 1), _lane(v, 2), pal_cmp, moff, cands, blk,
                                        memo, lin, m1, m2, gbits)
                if lab:  # every cell has a mask, an all-zero one (slot 0) but for pairs
                    word = masks[(np.uint64(slots[cell]) << wsh) | (low >> np.uint64(6))]
                    k, e, t_a = _pick_bit(v, pal, palw, ka, kb, nv, w01, (word >> (low & np.uint64(63))) & one)
                else:
                    k, e, t_a = _pick_pair(v, pal, palw, ka, kb, nv, w01)
                oidx[p] = k
                _put_pixel(oimg, p * uch, words, k, ch)
                c2a = _scaled(e, w02)
                _store4(err_a, ex, e)
            if two:  # the same for B
                p = np.uint64(yb * w + x)
                pn = min(np.uint64(yb * w + x + step), last)
                nv = _value4(_pixel_at(flat, pn * uch, ch), acc_b, nxt, c2b)
                if ch == 4 and flat[p * uch + np.uint64(3)] < alpha_threshold:
                    oidx[p] = n
                    _put_pixel(oimg, p * uch, words, n, ch)
                    t_b = nv
                    c2b = _zero4()
                    _store4(err_b, ex, c2b)
                else:
                    v, cell, low = _code_cell(t_b, LAB_DIFFUSION_GBITS) if lab else _code_cell(t_b, GBITS)
                    ka, kb = _pair(codes[cell], shift)
                    block = np.uint64(blk[cell])
                    if ka > kb:
                        ka = kb = np.int64(memo[block + low]) - 1
                        if ka < 0:
                            ka = kb = _fill(lab, cell, _lane(v, 0), _lane(v, 1), _lane(v, 2), pal_cmp, moff, cands,
                                            blk, memo, lin, m1, m2, gbits)
                    if lab:
                        word = masks[(np.uint64(slots[cell]) << wsh) | (low >> np.uint64(6))]
                        k, e, t_b = _pick_bit(v, pal, palw, ka, kb, nv, w01, (word >> (low & np.uint64(63))) & one)
                    else:
                        k, e, t_b = _pick_pair(v, pal, palw, ka, kb, nv, w01)
                    oidx[p] = k
                    _put_pixel(oimg, p * uch, words, k, ch)
                    c2b = _scaled(e, w02)
                    _store4(err_b, ex, e)
            x += step
        _taps_below(err_a, acc_a[4 * nx1 : 4 * (nx1 + w)], acc_a[4 * nx2 : 4 * (nx2 + w)], 4 * w, 4, k1, k2)
        _mark_used(used, oidx, np.uint64(ya * w), w)
        if two:
            _taps_below(err_b, acc_b[4 * nx1 : 4 * (nx1 + w)], acc_b[4 * nx2 : 4 * (nx2 + w)], 4 * w, 4, k1, k2)
            if yb >= m:  # B's warm-up rows stand as A writes them
                _mark_used(used, oidx, np.uint64(yb * w), w)


@njit(cache=True, nogil=True)
def _diffuse_vector_rgb(
    use_lab, src, alpha_threshold, pal4, wts, damp_limit, levels, serpentine, pal_cmp, lin, m1, m2, info, blk, memo,
    moff, cands, gbits, codes, shift, masks, slots, table, out_idx, out_img, used,
):
    _diffuse_vector(3, False, src, alpha_threshold, pal4, wts, serpentine, pal_cmp, lin, m1, m2, blk, memo, moff, cands,
                    codes, shift, masks, slots, table, out_idx, out_img, used)


@njit(cache=True, nogil=True)
def _diffuse_vector_rgba(
    use_lab, src, alpha_threshold, pal4, wts, damp_limit, levels, serpentine, pal_cmp, lin, m1, m2, info, blk, memo,
    moff, cands, gbits, codes, shift, masks, slots, table, out_idx, out_img, used,
):
    _diffuse_vector(4, False, src, alpha_threshold, pal4, wts, serpentine, pal_cmp, lin, m1, m2, blk, memo, moff, cands,
                    codes, shift, masks, slots, table, out_idx, out_img, used)


@njit(cache=True, nogil=True)
def _diffuse_vector_lab_rgb(
    use_lab, src, alpha_threshold, pal4, wts, damp_limit, levels, serpentine, pal_cmp, lin, m1, m2, info, blk, memo,
    moff, cands, gbits, codes, shift, masks, slots, table, out_idx, out_img, used,
):
    _diffuse_vector(3, True, src, alpha_threshold, pal4, wts, serpentine, pal_cmp, lin, m1, m2, blk, memo, moff, cands,
                    codes, shift, masks, slots, table, out_idx, out_img, used)


@njit(cache=True, nogil=True)
def _diffuse_vector_lab_rgba(
    use_lab, src, alpha_threshold, pal4, wts, damp_limit, levels, serpentine, pal_cmp, lin, m1, m2, info, blk, memo,
    moff, cands, gbits, codes, shift, masks, slots, table, out_idx, out_img, used,
):
    _diffuse_vector(4, True, src, alpha_threshold, pal4, wts, serpentine, pal_cmp, lin, m1, m2, blk, memo, moff, cands,
                    codes, shift, masks, slots, table, out_idx, out_img, used)


@njit(cache=True, nogil=True, inline="always")
def _offset(v, o):
    """Code value ``v`` plus an ordered-dither offset, clamped to 0..255."""
    return min(max(np.int64(v) + o, np.int64(0)), np.int64(255))


@njit(cache=True, nogil=True, inline="always")
def _offset_value(flat, q, o):
    return _offset(flat[q], o), _offset(flat[q + np.uint64(1)], o), _offset(flat[q + np.uint64(2)], o)


@njit(cache=True, nogil=True)
def _map(use_lab, src, alpha_threshold, offsets, pal_cmp, lin, m1, m2, info, blk, memo, moff, cands, gbits, table,
         out_idx, out_img, used):
    # no dither and ordered dither: each pixel's value plus its tiled offset (whole code values, one for all
    # channels), clamped, and that code value's exact nearest colour. Pixels are independent, so a row is done in
    # three passes: colours (memo misses marked -1), the misses searched, then the output written. The first pass
    # then holds no call: with the search called from it, the loop was a third slower even when every value was
    # in the memo.
    h, w, ch = src.shape
    n = pal_cmp.shape[0]
    flat, oidx, oimg, uch = _views(src, out_idx, out_img)
    mh, mw = offsets.shape
    multi = np.int64(np.iinfo(info.dtype).max)
    ks = np.empty(w, dtype=np.int64)
    for y in range(h):
        row = offsets[y & (mh - 1)]
        miss = False
        for x in range(w):
            q = np.uint64(y * w + x) * uch
            k = np.int64(n)
            if ch == 3 or flat[q + np.uint64(3)] >= alpha_threshold:
                vr, vg, vb = _offset_value(flat, q, row[x & (mw - 1)])
                cell = _cell(vr, vg, vb, gbits)
                k = np.int64(info[cell])
                if k == multi:  # a branch: reading blk (1 MiB) and the memo for every pixel measured slower
                    k = _memo_get(vr, vg, vb, cell, blk, memo, gbits)
            miss |= k < 0
            ks[x] = k
        if miss:
            for x in range(w):
                if ks[x] < 0:
                    vr, vg, vb = _offset_value(flat, np.uint64(y * w + x) * uch, row[x & (mw - 1)])
                    ks[x] = _fill(use_lab, _cell(vr, vg, vb, gbits), vr, vg, vb, pal_cmp, moff, cands, blk, memo, lin,
                                  m1, m2, gbits)
        for x in range(w):
            _emit(oidx, oimg, used, table, np.uint64(y * w + x), uch, ks[x])



# No dithering or ordered dithering, with or without alpha: a brute-force search the compiler vectorises (16 pixels
# per AVX-512 instruction) beats the cell table's loop, whose memo reads for multi-candidate cells miss the cache
# (bench_quantize: 2.5 to 9 times slower in sRGB, 1.2 to 4 times in OKLab; with 64 colours 4 to 9 times). In OKLab,
# and in sRGB beyond 32 colours, the cell table still answers first: a pixel whose cell holds a single colour takes
# it, and only the others are searched (see ``_nearest_cells``).
#
# sRGB: the nearest colour minimises ``|c|^2 - 2 p.c`` (|p|^2 is the same for every colour); scaled by 32 with the
# colour's index added, that "key" is a whole number below 2^24 at every step of its evaluation, so float32 holds it
# exactly, the lowest key is the nearest colour with ties to the lower index (as in the search), and the index is
# its low 5 bits: one min per colour instead of a compare and two selects.
#
# OKLab: each pixel is converted in float32 (cube roots by three Newton steps of the inverse cube root, which need
# no division: numba checks every division for zero, and that check keeps the loop scalar), the nearest and the
# second-nearest distance kept. Where they are closer than ``LAB_MARGIN`` the float32 answer may differ from the
# float64 one, and the pixel is searched again exactly as the cell-table loops do (``code_oklab``, float64, lowest
# index on ties). Why that is enough: if float32 picks j where i is nearest, second - best <= d32(i) - d32(j), which
# is at most the float32 error of d(i) - d(j). That difference is affine in the pixel's OKLab value p, so its error
# is at most 2 |e| |c(i) - c(j)| plus rounding, where e is p's float32 error: at most 1.2e-6 per coordinate and
# 1.3e-6 in length over all 2^24 code values, so under 4e-6 for colours at most 1.2 apart. LAB_MARGIN is over 10
# times that and sends a few pixels in a thousand to the exact search (on three palettes, float32 alone erred only
# where exact distances differed by less than 2.5e-7).
NEAREST_MAX_COLORS = 32  # the sRGB key search without a table: an index in a key's low 5 bits
VNNI_COLOURS = 8  # the VNNI search (simd) takes its colours eight at a time
VNNI_LANES = 16  # and its pixels sixteen at a time
VNNI_COARSE_BITS = 3  # its coarse cells (coarse_keys): 8 per side
# From 17 colours the VNNI search reads each pixel's candidates from a table of the cell table's cells
# (``triple_table``): three keys a vector instead of the palette's. 512x512 random pixels to endesga-32 took
# 0.63-0.64x Pillow NONE's time instead of 1.02x, the gradient 0.55x instead of 0.75x; to PICO-8 the search of
# every colour (two passes of eight) stayed faster, 0.57x against 0.62x (Intel Xeon VM, a prototype of the loop).
# The float32 search compiled for AVX-512 likewise (simd.ftriple16): endesga-32 0.77-0.81x instead of 1.12-1.15x
# on random pixels, 0.64-0.71x instead of 0.88-0.91x on the gradient; PICO-8 with triples 0.77x / 0.65x against
# 0.71x / 0.61x (Intel Xeon VM, in one process). Compiled for AVX2 it reads none (see ftriple16).
TRIPLES_FROM = 17
TRIPLE_FIELD = 5  # bits per candidate in a triple code: indices 0..31
# a vector in one coarse cell of at most this many colours searches those instead of its triples: the gradient to
# endesga-32 took 0.55x Pillow NONE's time so, 0.61x with at most 3, and 0.73x where every vector took its triples
TRIPLE_SHARED_MAX = 5
NEAREST_CELLS_MAX = 254  # the table-first search: uint8 cell tables, and uint8 indices with a transparent one
# quantize's choice: beyond these sizes the table-first search, which searches every colour for the pixels of
# multi-colour cells, cost more than the cell-table loop's memo on smooth images (512x512 gradient: sRGB, 254
# colours, 2.1 ms against 1.4; OKLab, 128 colours, 2.4 against 1.35); on random noise it was faster at every size
# (64 colours: 1.1-1.5 ms against 6.1-6.3)
NEAREST_SEARCH_MAX = {False: 128, True: 64}
LAB_MARGIN = 5e-5
_NEAREST_BLOCK = 1024  # pixels per pass: the float32 rows stay in the L1 cache; 256 was 1.2x slower


class NearestTable(NamedTuple):
    """A palette made ready for ``nearest``. With ``keys`` (sRGB, up to ``NEAREST_MAX_COLORS`` colours and no cell
    table), ``rows`` are float32 [M,4] keys ``-64r, -64g, -64b, 32 (|c|^2 + 2^18) + index``, M a multiple of 4.
    Otherwise ``rows`` are the colours in the distance space (float32 [M,3]: OKLab, or sRGB code values whose
    squared differences float32 holds exactly), M even, padding far from every colour, searched where the cell
    table ``info`` (uint8) of cells 2^``gbits`` per side has more than one colour (``_ALL_CELLS`` and 0: no table,
    every pixel searched; at 64^3 cells, 512x512 to PICO-8 in OKLab took 0.6 ms instead of 1.1); ``exact``: the
    colours in the distance space in float64 [N,3] (OKLab's exact second search reads them). ``rgbx`` / ``rgba``:
    a little-endian uint32 per colour, R G B 0 / R G B 255 and one more entry, 0, for transparent. ``vnni``: with
    ``keys``, the palette as ``vnni_keys`` builds it for the search of CPUs with AVX-512 VNNI; ``cstarts`` its
    coarse cells' spans (``coarse_keys``) in ``ckeys`` (those rows of ``vnni``), ``cfkeys`` (those of ``rows``)
    and ``ccolours`` (those entries of ``rgbx``); without ``keys``, unused (``nearest_table`` fills them all where
    it sets ``keys``). ``triples``: empty, or (from ``TRIPLES_FROM`` colours, with a cell table) the VNNI search's
    ``triple_table``, with ``tcols`` the rows of ``vnni`` as columns (int32 [3, 32]) and ``ftcols`` those of
    ``rows`` (float32 [4, 32]: the float32 search reads the triples where numba compiles for AVX-512); only where
    a search reads them (``triples_read_here``). ``cells`` and ``pairs``: empty, or (from ``TRIPLES_FROM`` colours,
    with a cell table, where ``cells_read_here``: the float32 search compiled for AVX2, ``simd.table_first``) the
    table's ``info`` and 4 bytes of padding for the gathers, and ``rgbx[a] | rgbx[b] << 24`` at ``a | b << 5``
    (uint64 [1024], ``simd.temit16``'s colour pairs)."""

    use_lab: bool
    keys: bool
    rows: np.ndarray
    exact: np.ndarray
    rgbx: np.ndarray
    rgba: np.ndarray
    info: np.ndarray
    gbits: int
    vnni: np.ndarray = np.zeros((0, 3), np.int32)
    cstarts: np.ndarray = np.zeros(1 + (1 << (3 * VNNI_COARSE_BITS)), np.int32)
    ckeys: np.ndarray = np.zeros((0, 3), np.int32)
    cfkeys: np.ndarray = np.zeros((0, 4), np.float32)
    ccolours: np.ndarray = np.zeros(0, np.uint32)
    triples: np.ndarray = np.zeros(0, np.uint16)
    tcols: np.ndarray = np.zeros((3, 32), np.int32)
    ftcols: np.ndarray = np.zeros((4, 32), np.float32)
    cells: np.ndarray = np.zeros(0, np.uint8)
    pairs: np.ndarray = np.zeros(0, np.uint64)


_ALL_CELLS = np.full(1, 255, np.uint8)  # one cell of every colour: no table


def nearest_table(pal: np.ndarray, use_lab: bool, cells: CellTable | None = None) -> NearestTable:
    """``cells``: the palette's cell table in the same distance, whose single-colour cells need no search; needed
    for sRGB palettes of more than ``NEAREST_MAX_COLORS`` colours, at most ``NEAREST_CELLS_MAX`` colours with one.
    For sRGB palettes of ``TRIPLES_FROM`` to ``NEAREST_MAX_COLORS`` colours, a table of ``GBITS`` makes the
    ``triples`` that the VNNI search and, compiled for AVX-512, the float32 search read."""
    from . import color

    n = len(pal)
    limit = NEAREST_CELLS_MAX if use_lab or cells is not None else NEAREST_MAX_COLORS
    if not 1 <= n <= limit:
        raise ValueError(f"the vectorised search takes 1..{limit} colours here, got {n}")
    info, gbits = (_ALL_CELLS, 0) if cells is None else (cells.info, cells.gbits)
    if info.dtype != np.uint8:
        raise ValueError("the vectorised search reads uint8 cell tables")
    rgbx = np.zeros((n, 4), np.uint8)
    rgbx[:, :3] = pal
    rgbx32 = rgbx.view("<u4").ravel().copy()
    rgba32 = np.append(rgbx32 | np.uint32(0xFF000000), np.uint32(0))
    exact = np.ascontiguousarray(color.srgb_u8_to_oklab(pal) if use_lab else pal, dtype=np.float64)
    if use_lab or n > NEAREST_MAX_COLORS:
        # padding rows and repeated colours (only the first of equal colours can win) sit far from every colour:
        # never nearest, and as second (a 1-colour palette) far beyond LAB_MARGIN. A repeat in place would be
        # "second" at distance 0 to every pixel near its colour and send them all to the exact search.
        rows = np.full((-(-n // 2) * 2, 3), 1e3 if use_lab else 1e4, np.float32)
        _, first = np.unique(pal, axis=0, return_index=True)
        rows[first] = exact[first]
        return NearestTable(use_lab, False, rows, exact, rgbx32, rgba32, info, gbits)
    # the last colour repeated pads the rows: its key equals the last colour's, the same index either way
    idx = np.minimum(np.arange(-(-n // 4) * 4), n - 1)
    c = pal[idx].astype(np.int64)
    keys = np.empty((len(idx), 4), np.float32)
    keys[:, :3] = -64 * c
    keys[:, 3] = 32 * ((c * c).sum(axis=1) + (1 << 18)) + idx
    vnni = vnni_keys(pal)
    cstarts, colours = coarse_keys(pal)
    table = NearestTable(False, True, keys, exact, rgbx32, rgba32, info, gbits, vnni, cstarts,
                         np.ascontiguousarray(vnni[colours]), np.ascontiguousarray(keys[colours]), rgbx32[colours])
    if cells is None or n < TRIPLES_FROM or cells.gbits != GBITS:
        return table
    if cells_read_here():  # the two ways of reading the cells never meet in one process
        lut = np.zeros(32, np.uint64)
        lut[:n] = rgbx32
        return table._replace(cells=np.append(cells.info, np.zeros(4, np.uint8)),
                              pairs=(lut[None, :] | lut[:, None] << np.uint64(24)).ravel())
    return table._replace(triples=triple_table(cells, n),
                          tcols=np.ascontiguousarray(vnni[np.minimum(np.arange(32), len(vnni) - 1)].T),
                          ftcols=np.ascontiguousarray(keys[np.minimum(np.arange(32), len(keys) - 1)].T))


def triple_table(tab: CellTable, n: int) -> np.ndarray:
    """The candidates of each cell of ``tab`` (a ``cell_table`` of ``n`` <= 32 colours) as ``a | b << 5 | c << 10``
    (uint16, ``a <= b <= c``: one candidate repeated thrice, two with the second repeated), or ``PAIR_MANY`` where
    a cell has four or more (a > b); one more entry, 0, for the search's last word read. At 64^3 cells a cell holds
    at most three candidates in 99.96% (endesga-32) to 99.99% (PICO-8) of cells, at most two in 99.2% to 99.6%:
    with pairs, vectors of random pixels searched every colour 6% (PICO-8) to 12% of the time, with triples 0.1%
    to 0.6%."""
    if not 1 <= n <= 1 << TRIPLE_FIELD:
        raise ValueError(f"triple codes hold indices below {1 << TRIPLE_FIELD}, got {n} colours")
    info = tab.info.astype(np.int64)
    out = np.zeros(len(info) + 1, np.int64)
    out[:-1] = info * (1 | 1 << TRIPLE_FIELD | 1 << 2 * TRIPLE_FIELD)
    multi = np.flatnonzero(info >= n)
    start = tab.moff[multi]
    count = tab.cands[start]
    cands = np.append(tab.cands, np.zeros(3, tab.cands.dtype))
    a, b = cands[start + 1], cands[start + 2]
    c = np.where(count >= 3, cands[start + 3], b)
    out[multi] = np.where(count <= 3, a | b << TRIPLE_FIELD | c << 2 * TRIPLE_FIELD, PAIR_MANY)
    return out.astype(np.uint16)


def vnni_keys(pal: np.ndarray) -> np.ndarray:
    """The sRGB palette (up to ``NEAREST_MAX_COLORS`` colours) as ``simd.max_keys`` reads it: int32 [M, 3], M a
    multiple of ``VNNI_COLOURS``, per colour ``c``: the signed bytes ``c - 128`` (R, G, B, 0) as one little-endian
    word, ``-h`` where ``|c|^2 = 2 h + parity``, and ``32 (1 - parity) + 31 - index`` in the top six bits (see
    ``simd`` for why the greatest key is the nearest colour). The last colour repeated pads the rows: the same key,
    the same index."""
    n = len(pal)
    idx = np.minimum(np.arange(-(-n // VNNI_COLOURS) * VNNI_COLOURS), n - 1)
    c = pal[idx].astype(np.int64)
    s = (c - 128) & 255
    sq = (c * c).sum(axis=1)
    out = np.empty((len(idx), 3), np.int64)
    out[:, 0] = s[:, 0] | (s[:, 1] << 8) | (s[:, 2] << 16)
    out[:, 1] = -(sq >> 1)
    out[:, 2] = (32 * (1 - (sq & 1)) + 31 - idx) << 26
    return (out & 0xFFFFFFFF).astype(np.uint32).view(np.int32)


def coarse_keys(pal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The colours (up to ``NEAREST_MAX_COLORS``) that can be nearest somewhere in each coarse cell (2^
    ``VNNI_COARSE_BITS`` per side, numbered as ``_cell``): ``(starts, colours)``, cell ``k``'s colours
    ``colours[starts[k]:starts[k + 1]]`` (int32 indices in palette order; the searches take those rows of their
    keys, each of which holds its own index, so a shorter list keeps the results and their ties). A colour is left
    out where a colour nearest to one of the cell's corners is nearer than it at all eight corners by at least 1:
    the difference of two squared distances is affine, so it is then nearer everywhere in the cell (the test of
    ``_box_keep_rgb``). Numpy: 512 cells cost a few milliseconds, no compiled code."""
    g = 1 << VNNI_COARSE_BITS
    size = 256 >> VNNI_COARSE_BITS
    cells = np.stack(np.meshgrid(*[np.arange(g)] * 3, indexing="ij"), axis=-1).reshape(-1, 1, 3) * size
    corners = cells + np.array([[c & 1, (c >> 1) & 1, c >> 2] for c in range(8)]) * (size - 1)
    d = ((corners[:, :, None, :] - pal.astype(np.int64)[None, None]) ** 2).sum(axis=-1)  # [cell, corner, colour]
    near = d.argmin(axis=-1)  # [cell, corner]
    rival = np.take_along_axis(d, near[:, None, :], axis=2)  # [cell, corner, t]: distance to corner t's nearest
    beaten = ((d[:, :, None, :] - rival[:, :, :, None]) >= 1).all(axis=1).any(axis=1)  # [cell, colour]
    cell, colour = np.nonzero(~beaten)
    starts = np.zeros(g ** 3 + 1, np.int32)
    np.cumsum(np.bincount(cell, minlength=g ** 3), out=starts[1:])
    return starts, colour.astype(np.int32)


@njit(cache=True, nogil=True, inline="always")
def _put_rgb(out_img, p, c):
    three = np.uint64(3)
    out_img[three * p] = np.uint8(c & np.uint32(255))
    out_img[three * p + np.uint64(1)] = np.uint8((c >> np.uint32(8)) & np.uint32(255))
    out_img[three * p + np.uint64(2)] = np.uint8(c >> np.uint32(16))


@njit(cache=True, nogil=True)
def _emit_block(out_idx, rgbx, out_img, words, p0, m):
    """Write the colours of pixels ``p0 .. p0 + m`` (indices already in ``out_idx``) into the flat RGB image. Four
    pixels from a multiple of 4 on are three whole words (``words``, the image's uint32 view over its first
    3 * (n // 4) words): 12 bytes with three stores instead of twelve."""
    one, three, four = np.uint64(1), np.uint64(3), np.uint64(4)
    end = p0 + m
    a = min((p0 + np.uint64(3)) // four * four, end)
    for p in range(p0, a):  # a row's first pixels, before a multiple of 4
        _put_rgb(out_img, p, rgbx[out_idx[p]])
    for q in range((end - a) // four):
        p = a + four * q
        ca = rgbx[out_idx[p]]
        cb = rgbx[out_idx[p + one]]
        cc = rgbx[out_idx[p + np.uint64(2)]]
        cd = rgbx[out_idx[p + three]]
        wq = three * (p // four)
        words[wq] = ca | (cb << np.uint32(24))
        words[wq + one] = (cb >> np.uint32(8)) | (cc << np.uint32(16))
        words[wq + np.uint64(2)] = (cc >> np.uint32(16)) | (cd << np.uint32(8))
    for p in range(a + four * ((end - a) // four), end):  # the last pixels, past the whole words
        _put_rgb(out_img, p, rgbx[out_idx[p]])


@njit(cache=True, nogil=True)
def _emit_words(out_idx, rgba, words, p0, m):
    """``_emit_block`` for RGBA: ``words`` is the whole image, a word per pixel, and ``rgba`` has alpha."""
    for p in range(p0, p0 + m):
        words[p] = rgba[out_idx[p]]


@njit(cache=True, nogil=True)
def _index_mask(out_idx, p0, m):
    """The bit mask of the indices of pixels ``p0 .. p0 + m`` (all below 64)."""
    mask = np.int64(0)
    for i in range(m):
        mask |= np.int64(1) << np.int64(out_idx[p0 + i])
    return mask


@njit(cache=True, nogil=True)
def _codes3(src, p0, m, orow, ox, cr, cg, cb):
    """The code values of RGB pixels ``p0 .. p0 + m`` into ``cr``/``cg``/``cb``: the source's, or (ordered
    dithering) plus ``orow[ox ..]`` (the tiled offsets of the pixels' row, one for all channels), clamped to 0..255.
    Each channel count has a function of its own: a stride the compiler knows is what lets it vectorise the loads."""
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
    base = p0 * three
    if orow.shape[0] == 0:
        for i in range(m):
            j = base + three * i
            cr[i] = src[j]
            cg[i] = src[j + one]
            cb[i] = src[j + two]
        return
    lo, hi = np.int32(0), np.int32(255)
    for i in range(m):
        j = base + three * i
        o = orow[ox + i]
        cr[i] = np.uint8(min(max(np.int32(src[j]) + o, lo), hi))
        cg[i] = np.uint8(min(max(np.int32(src[j + one]) + o, lo), hi))
        cb[i] = np.uint8(min(max(np.int32(src[j + two]) + o, lo), hi))


@njit(cache=True, nogil=True)
def _codes4(src, p0, m, orow, ox, cr, cg, cb, ca):
    """As ``_codes3`` for RGBA pixels, with their alpha into ``ca``."""
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    base = p0 * four
    if orow.shape[0] == 0:
        for i in range(m):
            j = base + four * i
            cr[i] = src[j]
            cg[i] = src[j + one]
            cb[i] = src[j + two]
            ca[i] = src[j + three]
        return
    lo, hi = np.int32(0), np.int32(255)
    for i in range(m):
        j = base + four * i
        o = orow[ox + i]
        cr[i] = np.uint8(min(max(np.int32(src[j]) + o, lo), hi))
        cg[i] = np.uint8(min(max(np.int32(src[j + one]) + o, lo), hi))
        cb[i] = np.uint8(min(max(np.int32(src[j + two]) + o, lo), hi))
        ca[i] = src[j + three]


@njit(cache=True, nogil=True)
def _codes(src, ch, p0, m, orow, ox, cr, cg, cb, ca):
    """``_codes3`` or ``_codes4`` by the channel count ``ch``."""
    if ch == 3:
        _codes3(src, p0, m, orow, ox, cr, cg, cb)
    else:
        _codes4(src, p0, m, orow, ox, cr, cg, cb, ca)


@njit(cache=True, nogil=True)
def _transparent(alpha_threshold, n, ca, out_idx, p0, m):
    """Pixels below ``alpha_threshold`` take index ``n`` (transparent)."""
    t = np.uint8(n)
    for i in range(m):
        out_idx[p0 + i] = t if np.int64(ca[i]) < alpha_threshold else out_idx[p0 + i]


@njit(cache=True, nogil=True, inline="always")
def _segment(t, n, w, offsets):
    """Segment ``t`` of the pixels: (first pixel, count, the offsets' row, first column). Blocks of the flat image
    without offsets; with them, blocks of one row each (a row's offsets are one tiled row)."""
    if offsets.shape[1] == 0:
        s = t * _NEAREST_BLOCK
        return np.uint64(s), np.uint64(min(_NEAREST_BLOCK, n - s)), offsets[0], np.uint64(0)
    per_row = (w + _NEAREST_BLOCK - 1) // _NEAREST_BLOCK
    y = t // per_row
    x0 = (t % per_row) * _NEAREST_BLOCK
    return (np.uint64(y * w + x0), np.uint64(min(_NEAREST_BLOCK, w - x0)),
            offsets[y & (offsets.shape[0] - 1)], np.uint64(x0))


@njit(cache=True, nogil=True, inline="always")
def _segments(n, w, offsets):
    if offsets.shape[1] == 0:
        return (n + _NEAREST_BLOCK - 1) // _NEAREST_BLOCK
    return (n // w) * ((w + _NEAREST_BLOCK - 1) // _NEAREST_BLOCK)


# The searches' sums may be contracted into fused multiply-adds (9% less time for none/sRGB, the same answers):
# in sRGB every product and partial sum is an integer below 2^24, exact in float32 either way; in OKLab a fused
# step rounds once where the unfused rounds twice, so the float32 error bound behind LAB_MARGIN still holds.
_CONTRACT = {"contract"}


@njit(cache=True, nogil=True, fastmath=_CONTRACT)
def _key_search(r, g, b, best, m, keys):
    """``best[:m]`` = the least key of each pixel (``r``/``g``/``b`` as float32) over ``keys`` (see
    ``NearestTable``). Not inlined: numba compiles an inlined body with its caller's flags, without the contraction."""
    # four colours per pass over the block: one load and store of ``best`` serve four minimums
    m4 = keys.shape[0]
    for c in range(0, m4, 4):
        a0, g0, b0, q0 = keys[c, 0], keys[c, 1], keys[c, 2], keys[c, 3]
        a1, g1, b1, q1 = keys[c + 1, 0], keys[c + 1, 1], keys[c + 1, 2], keys[c + 1, 3]
        a2, g2, b2, q2 = keys[c + 2, 0], keys[c + 2, 1], keys[c + 2, 2], keys[c + 2, 3]
        a3, g3, b3, q3 = keys[c + 3, 0], keys[c + 3, 1], keys[c + 3, 2], keys[c + 3, 3]
        for i in range(m):
            x, y, z = r[i], g[i], b[i]
            k01 = min(q0 + x * a0 + y * g0 + z * b0, q1 + x * a1 + y * g1 + z * b1)
            k23 = min(q2 + x * a2 + y * g2 + z * b2, q3 + x * a3 + y * g3 + z * b3)
            best[i] = min(best[i], min(k01, k23))


@njit(cache=True, nogil=True, inline="always")
def _coarse_emit(r, g, b, cell, cstarts, cfkeys, ccolours, out_idx, out_img, p, seen):
    """Sixteen pixels (``r``, ``g``, ``b``) in one coarse cell: its colours searched, each pixel's colour kept
    beside its least key and written as a vector (``femit16c``); returns ``seen`` with their indices' bits."""
    least = _fill16(np.float32(3e7))  # above every key (< 2^24)
    held = _splat16(0)
    for c in range(cstarts[cell], cstarts[cell + 1]):
        least, held = _fkeys16c(r, g, b, least, held, cfkeys, ccolours, c)
    return _femit16c(least, held, out_idx, out_img, p, seen)


@njit(cache=True, nogil=True)
def _float_vectors(src, keys, cstarts, cfkeys, ccolours, triples, ftcols, cells, pairs, rgbx, out_idx, out_img,
                   used):
    """``_vnni_vectors`` with the float32 keys (simd's VecF16, every CPU): the RGB pixels of ``_nearest_rgb``
    without offsets, sixteen at a time, a coarse cell's colours only where all sixteen share it (``cfkeys``, with
    their colours ``ccolours`` kept beside the least key: written as a vector, where a search of every colour
    writes them one at a time); returns how many it wrote. ``used``: int32 [16], a bit per index written, per
    lane. Where the CPU has AVX-512 (``_FLOAT_WIDE``), two vectors that both search every colour go together
    (``fkeys16x2``), as in ``_vnni_vectors``; with ``triples`` there, a vector takes its
    pixels' triples as ``_vnni_vectors`` does (``ftriple16``, ``ftcols`` the key rows as columns), and searches
    alone where a pixel's cell has more candidates. ``rgbx``: the colours padded to 32 entries. Compiled for
    AVX2 (``_TABLE_FIRST``), with the palette's ``cells`` and ``pairs`` (from 17 colours), ``_table_vectors``
    instead."""
    n = out_idx.shape[0]
    vectors = (3 * n - 64) // (3 * VNNI_LANES) + 1 if 3 * n >= 64 else 0
    if _TABLE_FIRST and cells.shape[0] > 0:
        return _table_vectors(src, cells, keys, cstarts, cfkeys, ccolours, rgbx, pairs, out_idx, out_img, used,
                              vectors)
    above = np.float32(3e7)  # above every key (< 2^24)
    seen = _splat16(0)
    by_triples = _FLOAT_WIDE and triples.shape[0] > 0
    v = 0
    while v < vectors:
        p = v * VNNI_LANES
        px = _rgb16(src, p)
        r, g, b = _floats16(px)
        cell = _shared_cell(px, VNNI_COARSE_BITS)
        v += 1
        if by_triples and (cell < 0 or cstarts[cell + 1] - cstarts[cell] > TRIPLE_SHARED_MAX):
            least, many = _ftriple16(px, r, g, b, triples, ftcols, GBITS)
            if many == 0:
                seen = _femit16(least, rgbx, out_idx, out_img, p, seen)
                continue
        if cell >= 0:
            seen = _coarse_emit(r, g, b, cell, cstarts, cfkeys, ccolours, out_idx, out_img, p, seen)
            continue
        least = _fill16(above)
        pair = _FLOAT_WIDE and not by_triples and v < vectors
        if pair and _shared_cell(_rgb16(src, p + VNNI_LANES), VNNI_COARSE_BITS) < 0:
            r2, g2, b2 = _floats16(_rgb16(src, p + VNNI_LANES))
            least2 = _fill16(above)
            for c in range(0, keys.shape[0], 4):
                least, least2 = _fkeys16x2(r, g, b, r2, g2, b2, least, least2, keys, c, 4)
            seen = _femit16(least, rgbx, out_idx, out_img, p, seen)
            least, p = least2, p + VNNI_LANES
            v += 1
        else:
            for c in range(0, keys.shape[0], 4):
                least = _fkeys16(r, g, b, least, keys, c, 4)
        seen = _femit16(least, rgbx, out_idx, out_img, p, seen)
    _store16(used, 0, seen)
    return vectors * VNNI_LANES


# the set bits of each byte, in order (padded with 0), and how many
_SET_BITS = np.array([[k for k in range(8) if m >> k & 1] + [0] * (8 - bin(m).count("1")) for m in range(256)],
                     np.int32)
_SET_COUNT = np.array([bin(m).count("1") for m in range(256)], np.int64)


# listed pixels searched at a time by _table_vectors: with endesga-32 on random pixels the first and the last lie
# about 2,300 pixels apart, so their bytes are still in the L1 cache when they are read and written again (the one
# size measured; fewer pixels would leave more of each flush's sixteen-lane vectors empty)
_LISTED_FLUSH = 256


@njit(cache=True, nogil=True)
def _table_vectors(src, cells, keys, cstarts, cfkeys, ccolours, rgbx, pairs, out_idx, out_img, used, vectors):
    """``_float_vectors`` compiled for AVX2 (``simd.table_first``): sixteen pixels that share a coarse cell as
    there; any other sixteen take their entries of the palette's cell table (``cells``) as indices, and the pixels
    of cells of more than one colour (11% of random pixels with endesga-32) are listed as they come and, every
    ``_LISTED_FLUSH`` of them, searched sixteen at a time and written again. ``pairs``: see ``NearestTable``."""
    if vectors == 0:  # the look-ahead's first 64-byte read would pass the end of so small an image
        return 0
    listed = np.empty(_LISTED_FLUSH + VNNI_LANES + 8, np.int32)
    words = np.zeros(_LISTED_FLUSH + VNNI_LANES, np.uint32)
    found = np.empty(_LISTED_FLUSH + VNNI_LANES, np.uint8)
    count = 0
    mask = np.int64(0)
    seen = _splat16(0)
    # the next vector's gathers go out before this one's entries are used (unless its pixels share a coarse cell):
    # on a Zen 3 VM the loop waited on each vector's gathers, about 40% of its time by perf's samples
    nxt = _rgb16(src, 0)
    shared = _shared_cell(nxt, VNNI_COARSE_BITS)
    ahead = _cells16(nxt, cells) if shared < 0 else seen
    for v in range(vectors):
        p = v * VNNI_LANES
        px, cell, entries = nxt, shared, ahead
        if v + 1 < vectors:
            nxt = _rgb16(src, p + VNNI_LANES)
            shared = _shared_cell(nxt, VNNI_COARSE_BITS)
            if shared < 0:
                ahead = _cells16(nxt, cells)  # else left stale: a vector in one coarse cell never reads it
        if cell >= 0:
            r, g, b = _floats16(px)
            seen = _coarse_emit(r, g, b, cell, cstarts, cfkeys, ccolours, out_idx, out_img, p, seen)
            continue
        seen, many = _temit16(entries, pairs, out_idx, out_img, p, seen)
        if many != 0:
            for h in range(0, VNNI_LANES, 8):  # eight lanes a store, from the table of a byte's set bits
                bits = (many >> h) & 255
                _append8(listed, count, p + h, _SET_BITS, bits)
                count += _SET_COUNT[bits]
            if count >= _LISTED_FLUSH:
                mask |= _search_listed(src, listed, count, words, found, keys, rgbx, out_idx, out_img)
                count = 0
    mask |= _search_listed(src, listed, count, words, found, keys, rgbx, out_idx, out_img)
    _store16(used, 0, seen)
    used[0] |= np.int32(mask)
    return vectors * VNNI_LANES


@njit(cache=True, nogil=True, inline="always")
def _search_listed(src, listed, count, words, found, keys, rgbx, out_idx, out_img):
    """The pixels ``listed[:count]`` searched over every colour sixteen at a time (``words`` and ``found``: room
    for ``count`` rounded up to sixteen) and written; returns the bit mask of their indices. Searched after the
    whole image in blocks of float32 rows instead (``_key_search``), they cost more than the rest of the loop on a
    Zen 3 VM: 512x512 random pixels to endesga-32 took 1.02-1.19 ms, 0.43 without them and 0.84-1.0 ms so (JIT,
    before the gathers went a vector ahead): the block search ran scalar there, and the bytes it read and wrote
    again had left the caches."""
    for i in range(count):
        q = 3 * np.int64(listed[i])
        words[i] = np.uint32(src[q]) | np.uint32(src[q + 1]) << np.uint32(8) | np.uint32(src[q + 2]) << np.uint32(16)
    for j in range(0, count, VNNI_LANES):
        r, g, b = _floats16(_load16(words, j))
        least = _fill16(np.float32(3e7))  # above every key (< 2^24)
        for c in range(0, keys.shape[0], 4):
            least = _fkeys16(r, g, b, least, keys, c, 4)
        _indices16(least, found, j)
    mask = np.int64(0)
    for i in range(count):
        q = np.uint64(listed[i])
        k = found[i]
        mask |= np.int64(1) << k
        out_idx[q] = k
        _put_rgb(out_img, q, rgbx[k])
    return mask


@njit(cache=True, nogil=True)
def _nearest_rgb(src, ch, alpha_threshold, w, offsets, keys, cstarts, cfkeys, ccolours, triples, ftcols, cells,
                 pairs, rgbx, out_idx, out_img, words):
    # src and out_img flat RGB (with ch 4: src RGBA, out_img empty, words the image; see _emit_words), out_idx flat,
    # w the image's width, offsets int32 [mh, w] (ordered dithering: each pattern row tiled across the width; mh a
    # power of two) or [1, 0] (none); cstarts, cfkeys and ccolours the coarse cells' (coarse_keys). RGB without offsets
    # goes through _float_vectors, the rest (RGBA, offsets, the image's last pixels) in blocks. Indices are uint64
    # and loops over contiguous rows: numba's signed index wrap-around checks otherwise keep the compiler from
    # vectorising the strided channel loads. RGB and RGBA have helpers of their own: an RGBA branch inside
    # _emit_block made the RGB search 12% slower.
    used = np.zeros(VNNI_LANES, np.int32)
    if ch == 3 and offsets.shape[1] == 0:
        lut = np.zeros(32, np.uint32)  # the colours, padded to the 32 entries femit16 may permute
        lut[: min(rgbx.shape[0], 32)] = rgbx[: min(rgbx.shape[0], 32)]
        done = _float_vectors(src, keys, cstarts, cfkeys, ccolours, triples, ftcols, cells, pairs, lut, out_idx,
                              out_img, used)
        # the rest as an image of its own (a whole number of words from a multiple of 16 pixels on)
        src, out_idx, out_img, words = src[3 * done:], out_idx[done:], out_img[3 * done:], words[3 * done // 4:]
    n = out_idx.shape[0]
    cr = np.empty(_NEAREST_BLOCK, np.uint8)
    cg = np.empty(_NEAREST_BLOCK, np.uint8)
    cb = np.empty(_NEAREST_BLOCK, np.uint8)
    ca = np.empty(_NEAREST_BLOCK, np.uint8)
    r = np.empty(_NEAREST_BLOCK, np.float32)
    g = np.empty(_NEAREST_BLOCK, np.float32)
    b = np.empty(_NEAREST_BLOCK, np.float32)
    best = np.empty(_NEAREST_BLOCK, np.float32)
    mask = np.int64(0)
    for t in range(_segments(n, w, offsets)):
        p0, m, orow, ox = _segment(t, n, w, offsets)
        _codes(src, ch, p0, m, orow, ox, cr, cg, cb, ca)
        for i in range(m):
            r[i] = np.float32(cr[i])
            g[i] = np.float32(cg[i])
            b[i] = np.float32(cb[i])
            best[i] = np.float32(3e7)  # above every key (< 2^24)
        _key_search(r, g, b, best, m, keys)
        for i in range(m):
            out_idx[p0 + i] = np.int64(best[i]) & 31
        if ch == 3:
            _emit_block(out_idx, rgbx, out_img, words, p0, m)
        else:
            _transparent(alpha_threshold, rgbx.shape[0] - 1, ca, out_idx, p0, m)
            _emit_words(out_idx, rgbx, words, p0, m)
        mask |= _index_mask(out_idx, p0, m)
    for k in range(VNNI_LANES):
        mask |= np.int64(used[k]) & np.int64(0xFFFFFFFF)
    return mask


# numba's intrinsics the kernels call (``simd``), set by ``jit.materialise`` from ``_intrinsics``: importing them
# imports numba, which a process served by the ahead-of-time module never does
_max_keys = _emit_rgb = _rgb16 = _splat16 = _keys16 = _keys16x2 = _shared_cell = _triple16 = None
_emit16 = _store16 = _load16 = None
_floats16 = _fill16 = _fkeys16 = _fkeys16x2 = _fkeys16c = _femit16 = _femit16c = _ftriple16 = None
_cells16 = _temit16 = _append8 = _indices16 = None
# whether numba compiles for AVX-512 (simd.wide_registers): _float_vectors then searches two vectors at once and
# reads triples (simd.ftriple16)
_FLOAT_WIDE = False
# whether numba compiles for AVX2 but not AVX-512 (simd.table_first): _float_vectors then reads the cell table first
_TABLE_FIRST = False


def _intrinsics() -> dict[str, Any]:
    from . import simd

    return {"_max_keys": simd.max_keys, "_emit_rgb": simd.emit_rgb, "_rgb16": simd.rgb16, "_splat16": simd.splat16,
            "_keys16": simd.keys16, "_keys16x2": simd.keys16x2, "_shared_cell": simd.shared_cell,
            "_triple16": simd.triple16, "_emit16": simd.emit16, "_store16": simd.store16, "_load16": simd.load16,
            "_floats16": simd.floats16, "_fill16": simd.fill16,
            "_fkeys16": simd.fkeys16, "_fkeys16x2": simd.fkeys16x2, "_fkeys16c": simd.fkeys16c,
            "_femit16": simd.femit16, "_femit16c": simd.femit16c, "_ftriple16": simd.ftriple16,
            "_FLOAT_WIDE": simd.wide_registers(),
            "_cells16": simd.cells16, "_temit16": simd.temit16, "_append8": simd.append8,
            "_indices16": simd.indices16,
            "_TABLE_FIRST": simd.table_first(),
            "_zero4": simd.zero4, "_pixel_at": simd.pixel_at,
            "_first_pixel": simd.first_pixel, "_value4": simd.value4, "_code_cell": simd.code_cell,
            "_lane": simd.lane, "_scaled": simd.scaled, "_pick_pair": simd.pick_pair, "_pick_bit": simd.pick_bit,
            "_store4": simd.store4,
            "_put_pixel": simd.put_pixel}


@njit(cache=True, nogil=True, inline="always")
def _every_colour(px, keys):
    """The greatest keys of the Vec16 ``px`` over every colour of ``keys`` (``vnni_keys``), eight at a time."""
    acc = _splat16(np.int32(-(1 << 31)))  # below every key
    for c in range(0, keys.shape[0], VNNI_COLOURS):
        acc = _keys16(px, acc, keys, c, VNNI_COLOURS)
    return acc


@njit(cache=True, nogil=True)
def _vnni_search(px, best, m, keys, triples, tcols):
    """``best[:m']`` = the greatest key (``simd``) of each pixel of ``px`` over ``keys``, ``m'`` = ``m`` rounded
    up to whole vectors (the arrays hold that many). With ``triples`` each vector's candidates first, as in
    ``_vnni_vectors`` (Bayer 4x4 to endesga-32: 0.65 ms instead of 0.81 on random pixels, 0.69 instead of 0.82 on
    the gradient)."""
    m16 = (m + VNNI_LANES - 1) // VNNI_LANES * VNNI_LANES
    if triples.shape[0] == 0:
        for c in range(0, keys.shape[0], VNNI_COLOURS):
            for i in range(0, m16, VNNI_LANES):
                _max_keys(px, best, i, keys, c)
        return
    for i in range(0, m16, VNNI_LANES):
        v = _load16(px, i)
        acc, many = _triple16(v, triples, tcols, GBITS)
        if many != 0:
            acc = _every_colour(v, keys)
        _store16(best, i, acc)


@njit(cache=True, nogil=True)
def _vnni_vectors(src, keys, cstarts, ckeys, triples, tcols, lut, out_idx, out_img, used):
    """The RGB pixels of ``_nearest_rgb_vnni`` without offsets, sixteen at a time from the image's bytes to the
    stores in registers (simd's Vec16); returns how many it wrote: the whole vectors whose 64-byte reads stay
    within ``src``. Where all sixteen fall in one coarse cell, only that cell's colours are searched (``ckeys``):
    on smooth images most vectors (512x512 gradient to endesga-32 on a Zen 4 VM: 0.21 ms instead of 0.35); noise
    never does, and pays the check (four instructions a vector). With ``triples`` (``nearest_table``), a vector
    not in one coarse cell of at most ``TRIPLE_SHARED_MAX`` colours takes its pixels' triples, and searches as
    without them only where a pixel's cell has more candidates."""
    n = out_idx.shape[0]
    vectors = (3 * n - 64) // (3 * VNNI_LANES) + 1 if 3 * n >= 64 else 0
    least = np.int32(-(1 << 31))  # below every key
    seen = _splat16(0)  # per lane, a bit per index written
    by_triples = triples.shape[0] > 0
    v = 0
    while v < vectors:
        p = v * VNNI_LANES
        px = _rgb16(src, p)
        cell = _shared_cell(px, VNNI_COARSE_BITS)
        v += 1
        if by_triples and (cell < 0 or cstarts[cell + 1] - cstarts[cell] > TRIPLE_SHARED_MAX):
            acc, many = _triple16(px, triples, tcols, GBITS)
            if many == 0:
                seen = _emit16(acc, lut, out_idx, out_img, p, seen)
                continue
        acc = _splat16(least)
        if cell >= 0:
            for c in range(cstarts[cell], cstarts[cell + 1]):
                acc = _keys16(px, acc, ckeys, c, 1)
        elif not by_triples and v < vectors and _shared_cell(_rgb16(src, p + VNNI_LANES), VNNI_COARSE_BITS) < 0:
            # this vector and the next search every colour: together (keys16x2)
            px2 = _rgb16(src, p + VNNI_LANES)
            acc2 = _splat16(least)
            for c in range(0, keys.shape[0], VNNI_COLOURS):
                acc, acc2 = _keys16x2(px, px2, acc, acc2, keys, c, VNNI_COLOURS)
            seen = _emit16(acc, lut, out_idx, out_img, p, seen)
            acc, p = acc2, p + VNNI_LANES
            v += 1
        else:
            acc = _every_colour(px, keys)
        seen = _emit16(acc, lut, out_idx, out_img, p, seen)
    _store16(used, 0, seen)
    return vectors * VNNI_LANES


@njit(cache=True, nogil=True)
def _nearest_rgb_vnni(src, ch, alpha_threshold, w, offsets, keys, cstarts, ckeys, triples, tcols, rgbx, out_idx,
                      out_img, words):
    # _nearest_rgb with AVX-512's integer instructions (simd): the same arguments but ``keys`` (vnni_keys), the
    # coarse cells' keys (coarse_keys) and the triples (nearest_table), the same results. RGB without offsets goes
    # through _vnni_vectors; the rest (RGBA, offsets, the image's last pixels) in blocks, pixels packed a word each
    # (R, G, B in the low bytes) instead of three float32 rows, RGB written sixteen pixels at a time (simd.emit_rgb).
    cr = np.empty(_NEAREST_BLOCK, np.uint8)
    cg = np.empty(_NEAREST_BLOCK, np.uint8)
    cb = np.empty(_NEAREST_BLOCK, np.uint8)
    ca = np.empty(_NEAREST_BLOCK, np.uint8)
    # a last vector's lanes past the block's pixels hold earlier pixels (zeros at first): searched, never used
    px = np.zeros(_NEAREST_BLOCK, np.uint32)
    best = np.empty(_NEAREST_BLOCK, np.int32)
    used = np.zeros(VNNI_LANES, np.int32)  # per lane, a bit per index written (simd.emit_rgb)
    lut = np.zeros(32, np.uint32)  # the colours, padded to the 32 entries emit_rgb permutes
    lut[: min(rgbx.shape[0], 32)] = rgbx[: min(rgbx.shape[0], 32)]
    if ch == 3 and offsets.shape[1] == 0:
        done = _vnni_vectors(src, keys, cstarts, ckeys, triples, tcols, lut, out_idx, out_img, used)
        # the rest as an image of its own (a whole number of words from a multiple of 16 pixels on)
        src, out_idx, out_img, words = src[3 * done:], out_idx[done:], out_img[3 * done:], words[3 * done // 4:]
    n = out_idx.shape[0]
    mask = np.int64(0)
    low = np.int32(-(1 << 31))
    eight, sixteen = np.uint32(8), np.uint32(16)
    lanes = np.uint64(VNNI_LANES)
    for t in range(_segments(n, w, offsets)):
        p0, m, orow, ox = _segment(t, n, w, offsets)
        # read per channel, then packed: packing straight from the interleaved source was slower (0.42 ms against
        # 0.37 for 512x512 to PICO-8, measured when written)
        _codes(src, ch, p0, m, orow, ox, cr, cg, cb, ca)
        for i in range(m):
            px[i] = np.uint32(cr[i]) | (np.uint32(cg[i]) << eight) | (np.uint32(cb[i]) << sixteen)
        best[:] = low
        _vnni_search(px, best, m, keys, triples, tcols)
        # RGB: whole vectors through emit_rgb, the rest (the image's last pixels) one at a time
        full = m // lanes * lanes if ch == 3 else np.uint64(0)
        for v in range(full // lanes):
            _emit_rgb(best, lanes * v, lut, out_idx, out_img, p0 + lanes * v, used)
        for i in range(full, m):
            out_idx[p0 + i] = 31 - (best[i] & 31)
        if ch == 3:
            _emit_block(out_idx, rgbx, out_img, words, p0 + full, m - full)
        else:
            _transparent(alpha_threshold, rgbx.shape[0] - 1, ca, out_idx, p0, m)
            _emit_words(out_idx, rgbx, words, p0, m)
        mask |= _index_mask(out_idx, p0 + full, m - full)
    for k in range(VNNI_LANES):
        mask |= np.int64(used[k]) & np.int64(0xFFFFFFFF)
    return mask


@njit(cache=True, nogil=True)
def _cbrt32(x, y, m):
    """``y[:m]`` = cube roots of ``x[:m]`` (float32, positive): the inverse cube root's bit-level first guess, three
    Newton steps ``a (4 - x a^3) / 3`` (within 4e-7), then ``x a^2``."""
    xi = x.view(np.uint32)
    yi = y.view(np.uint32)
    for i in range(m):
        yi[i] = np.uint32(0x54A2FA8C) - xi[i] // np.uint32(3)
    third = np.float32(1.0 / 3.0)
    four = np.float32(4.0)
    for i in range(m):
        v = x[i]
        a = y[i]
        a = a * (four - v * a * a * a) * third
        a = a * (four - v * a * a * a) * third
        a = a * (four - v * a * a * a) * third
        y[i] = v * a * a


@njit(cache=True, nogil=True, fastmath=_CONTRACT)
def _row_search(lc, mc, sc, best, second, pick, m, rows):
    """Per pixel ``i < m`` at (``lc``, ``mc``, ``sc``): the least squared distance to a row of ``rows`` (``best``),
    the second least (``second``) and the first row reaching the least (``pick``, as a float)."""
    kp = rows.shape[0]
    for i in range(m):
        best[i] = np.float32(np.inf)
        second[i] = np.float32(np.inf)
        pick[i] = np.float32(0)
    for c in range(0, kp, 2):  # two colours per pass
        u0, u1, u2 = rows[c, 0], rows[c, 1], rows[c, 2]
        w0, w1, w2 = rows[c + 1, 0], rows[c + 1, 1], rows[c + 1, 2]
        fc, fc1 = np.float32(c), np.float32(c + 1)
        for i in range(m):
            x, y, z = lc[i], mc[i], sc[i]
            f0, f1, f2 = x - u0, y - u1, z - u2
            d = f0 * f0 + f1 * f1 + f2 * f2
            e0, e1, e2 = x - w0, y - w1, z - w2
            e = e0 * e0 + e1 * e1 + e2 * e2
            lo, nd, ix = best[i], second[i], pick[i]
            ix = fc if d < lo else ix
            nd = min(nd, max(lo, d))
            lo = min(lo, d)
            ix = fc1 if e < lo else ix
            nd = min(nd, max(lo, e))
            lo = min(lo, e)
            best[i], second[i], pick[i] = lo, nd, ix


@njit(cache=True, nogil=True)
def _nearest_cells(use_lab, src, ch, alpha_threshold, w, offsets, info, gbits, lin32, m1f, m2f, rows, margin, lin, m1,
                   m2, exact, rgbx, out_idx, out_img, words, used):
    # as _nearest_rgb; the matrices' entries are read into locals first (``_entries``).
    # A pixel whose cell of the cell table ``info`` (2^gbits per side) holds one colour takes it; the others are
    # gathered (``sel``) and searched, in OKLab (``rows``, then close calls exactly in ``exact``) or in sRGB
    # (``rows`` the palette's code values, the search exact in float32, ``margin`` 0). With gbits 0, one cell of
    # every colour: all are searched. ``used[k]`` is set for every index k written.
    n = out_idx.shape[0]
    k = exact.shape[0]
    a00, a01, a02, a10, a11, a12, a20, a21, a22 = _entries(m1f)
    b00, b01, b02, b10, b11, b12, b20, b21, b22 = _entries(m2f)
    tiny = np.float32(1e-30)  # black: the cube root of 0 would not converge; 1e-10 instead of 0 is far below margin
    near = np.float32(margin)
    cr = np.empty(_NEAREST_BLOCK, np.uint8)
    cg = np.empty(_NEAREST_BLOCK, np.uint8)
    cb = np.empty(_NEAREST_BLOCK, np.uint8)
    ca = np.empty(_NEAREST_BLOCK, np.uint8)
    r = np.empty(_NEAREST_BLOCK, np.float32)
    g = np.empty(_NEAREST_BLOCK, np.float32)
    b = np.empty(_NEAREST_BLOCK, np.float32)
    lc = np.empty(_NEAREST_BLOCK, np.float32)
    mc = np.empty(_NEAREST_BLOCK, np.float32)
    sc = np.empty(_NEAREST_BLOCK, np.float32)
    best = np.empty(_NEAREST_BLOCK, np.float32)
    second = np.empty(_NEAREST_BLOCK, np.float32)
    pick = np.empty(_NEAREST_BLOCK, np.float32)  # the index as a float: an int64 one doubled the selects' work
    close = np.zeros(_NEAREST_BLOCK + 8, np.uint8)
    close64 = close.view(np.uint64)
    sel = np.empty(_NEAREST_BLOCK, np.uint64)
    xr = np.empty(_NEAREST_BLOCK, np.uint8)
    xg = np.empty(_NEAREST_BLOCK, np.uint8)
    xb = np.empty(_NEAREST_BLOCK, np.uint8)
    lb = np.uint64(8 - gbits)
    g1 = np.uint64(gbits)
    g2 = np.uint64(2 * gbits)
    many = np.iinfo(info.dtype).max
    for t in range(_segments(n, w, offsets)):
        p0, mm, orow, ox = _segment(t, n, w, offsets)
        if ch == 3:
            _codes3(src, p0, mm, orow, ox, cr, cg, cb)
        else:
            _codes4(src, p0, mm, orow, ox, cr, cg, cb, ca)
        # the table first: every pixel's cell, its colour where the cell has one (the search overwrites the rest);
        # the others listed without a branch (the slot is written always, the count moves on for them only)
        for i in range(mm):
            out_idx[p0 + i] = info[((np.uint64(cr[i]) >> lb) << g2) | ((np.uint64(cg[i]) >> lb) << g1)
                                   | (np.uint64(cb[i]) >> lb)]
        m = np.uint64(0)
        for i in range(mm):
            sel[m] = i
            m += np.uint64(out_idx[p0 + i] == many)
        for j in range(m):
            i = sel[j]
            xr[j] = cr[i]
            xg[j] = cg[i]
            xb[j] = cb[i]
        if use_lab:
            for i in range(m):
                r[i] = lin32[xr[i]]
                g[i] = lin32[xg[i]]
                b[i] = lin32[xb[i]]
            for i in range(m):
                x, y, z = r[i], g[i], b[i]
                lc[i] = max(a00 * x + a01 * y + a02 * z, tiny)
                mc[i] = max(a10 * x + a11 * y + a12 * z, tiny)
                sc[i] = max(a20 * x + a21 * y + a22 * z, tiny)
            _cbrt32(lc, r, m)
            _cbrt32(mc, g, m)
            _cbrt32(sc, b, m)
            for i in range(m):
                x, y, z = r[i], g[i], b[i]
                lc[i] = b00 * x + b01 * y + b02 * z
                mc[i] = b10 * x + b11 * y + b12 * z
                sc[i] = b20 * x + b21 * y + b22 * z
        else:
            for i in range(m):
                lc[i] = np.float32(xr[i])
                mc[i] = np.float32(xg[i])
                sc[i] = np.float32(xb[i])
        _row_search(lc, mc, sc, best, second, pick, m, rows)
        for i in range(m):
            out_idx[p0 + sel[i]] = np.uint8(pick[i])
            close[i] = np.uint8(second[i] - best[i] < near)
        for q in range((m + np.uint64(7)) // np.uint64(8)):  # eight flags at a time: almost all are 0
            if close64[q] == 0:
                continue
            for i in range(np.uint64(8) * q, min(np.uint64(8) * q + np.uint64(8), m)):
                if close[i]:
                    v0, v1, v2 = code_oklab(xr[i], xg[i], xb[i], lin, m1, m2)
                    best_d = np.inf
                    kk = 0
                    for c in range(k):
                        h0, h1, h2 = v0 - exact[c, 0], v1 - exact[c, 1], v2 - exact[c, 2]
                        dd = h0 * h0 + h1 * h1 + h2 * h2
                        if dd < best_d:
                            best_d = dd
                            kk = c
                    out_idx[p0 + sel[i]] = kk
        if ch == 3:
            _emit_block(out_idx, rgbx, out_img, words, p0, mm)
        else:
            _transparent(alpha_threshold, rgbx.shape[0] - 1, ca, out_idx, p0, mm)
            _emit_words(out_idx, rgbx, words, p0, mm)
        for i in range(mm):
            used[out_idx[p0 + i]] = 1


@lru_cache(maxsize=1)
def _lab32() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from . import color

    return color.LINEAR_U8.astype(np.float32), color.M1.astype(np.float32), color.M2.astype(np.float32)


_NO_OFFSETS = np.zeros((1, 0), np.int32)
_NO_BYTES = np.zeros(0, np.uint8)


USE_VNNI = True  # tests turn it off to run the float32 search on CPUs that have VNNI


@njit(cache=True, nogil=True)
def _float_triples():
    return _FLOAT_WIDE  # as the kernels were compiled (ahead of time or by the JIT)


@njit(cache=True, nogil=True)
def _float_cells():
    return _TABLE_FIRST


def triples_read_here() -> bool:
    """Whether a search of this process reads ``triples``: the VNNI search, and the float32 search where it was
    compiled for AVX-512. Elsewhere callers need not build the palette's cell table for them (about 10 ms at 32
    colours)."""
    return _vnni_kernel() is not None or bool(_jit.kernel(_SELF, "_float_triples")())


def cells_read_here() -> bool:
    """Whether the sRGB search of this process reads ``NearestTable.cells``: the float32 search compiled for AVX2
    (``simd.table_first``), where no VNNI search serves."""
    return _vnni_kernel() is None and bool(_jit.kernel(_SELF, "_float_cells")())


def _vnni_kernel() -> Any:
    """``_nearest_rgb_vnni`` where this CPU has AVX-512 VNNI, else None: the ahead-of-time export (built only on
    such CPUs), or, without the module, the JIT's."""
    aot = _jit.aot_module()
    if aot is not None:
        return _jit.export(aot, _SELF, "_nearest_rgb_vnni")
    from . import simd  # imports numba, which the JIT imports anyway

    return _jit.kernel(_SELF, "_nearest_rgb_vnni") if simd.host_has_vnni() else None


def nearest(src: np.ndarray, table: NearestTable, indices: np.ndarray, image: np.ndarray,
            offsets: np.ndarray | None = None, alpha_threshold: int = ALPHA_THRESHOLD) -> int:
    """Exact nearest colour (squared sRGB difference or OKLab distance, as ``table``) of each pixel, or with
    ``offsets`` (ordered dithering: whole code values, power-of-two sides, see ``ordered_dither``) of each pixel
    plus its tiled offset, clamped; ties to the lower index. ``src`` uint8 [H,W,3|4], ``table`` from
    ``nearest_table`` (N colours); writes ``indices`` (uint8 [H,W]) and ``image`` (like ``src``): with alpha, a
    pixel below ``alpha_threshold`` becomes index N and RGBA 0,0,0,0, every other one an opaque palette colour.
    Returns the bit mask of the indices written (bit N: transparent). All three arrays C-contiguous, ``image`` not
    overlapping ``src`` (the vector loops write a vector's colours before they read the next one's pixels). The
    kernels pack pixels into little-endian words: callers check ``sys.byteorder``."""
    if not (src.flags.c_contiguous and indices.flags.c_contiguous and image.flags.c_contiguous):
        raise ValueError("nearest writes through flat views: src, indices and image must be C-contiguous")
    if image.shape != src.shape or indices.shape != src.shape[:2] or np.may_share_memory(src, image):
        raise ValueError("nearest writes indices [H,W] and an image shaped as src, in memory of their own")
    h, w = indices.shape
    ch = src.shape[2]
    if offsets is None or not offsets.any():
        tiled = _NO_OFFSETS
    else:
        mw = offsets.shape[1]
        tiled = np.ascontiguousarray(np.tile(offsets, (1, -(-w // mw)))[:, :w], dtype=np.int32)
    flat = image.reshape(-1)
    if ch == 4:  # a word per pixel
        rgbx, out_img, words = table.rgba, _NO_BYTES, flat.view(np.uint32)
    else:
        rgbx, out_img, words = table.rgbx, flat, flat[: 12 * (h * w // 4)].view(np.uint32)
    args = (src.reshape(-1), ch, int(alpha_threshold), w, tiled)
    outs = (rgbx, indices.reshape(-1), out_img, words)
    if table.keys:
        vnni = _vnni_kernel() if USE_VNNI else None
        if vnni is not None:
            return int(vnni(*args, table.vnni, table.cstarts, table.ckeys, table.triples, table.tcols, *outs))
        search = _jit.kernel(_SELF, "_nearest_rgb")
        return int(search(*args, table.rows, table.cstarts, table.cfkeys, table.ccolours, table.triples, table.ftcols,
                          table.cells, table.pairs, *outs))
    from . import color

    lin32, m1f, m2f = _lab32()
    used = np.zeros(len(table.rgba), np.uint8)
    _jit.kernel(_SELF, "_nearest_cells")(table.use_lab, *args, table.info, table.gbits, lin32, m1f, m2f, table.rows,
                                          LAB_MARGIN if table.use_lab else 0.0, color.LINEAR_U8, color.M1, color.M2,
                                          table.exact, *outs, used)
    return sum(1 << int(k) for k in np.flatnonzero(used))


class Lookup(NamedTuple):
    """A palette made ready for the compiled loops (``lookup``): its colours in the distance space, the
    linear-light table and OKLab matrices for converting code values, and its cell table (``cell_table``)."""

    use_lab: bool
    pal_cmp: np.ndarray
    lin: np.ndarray
    m1: np.ndarray
    m2: np.ndarray
    table: CellTable

    @property
    def loop_args(self) -> tuple[Any, ...]:
        t = self.table
        return (self.pal_cmp, self.lin, self.m1, self.m2, t.info, t.blk, t.memo, t.moff, t.cands, t.gbits)


def lookup(pal: np.ndarray, use_lab: bool, gbits: int = GBITS) -> Lookup:
    from . import color

    pal = np.ascontiguousarray(pal, dtype=np.uint8)
    pal_cmp = np.ascontiguousarray(color.srgb_u8_to_oklab(pal) if use_lab else pal.astype(np.float64))
    return Lookup(use_lab, pal_cmp, color.LINEAR_U8, color.M1, color.M2, cell_table(pal, use_lab, gbits))


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
    and Stucki lose less than 1/4096 of a tap's share. Rounding down keeps the sum at most ``FS_ONE``: a cell of
    the loop's int32 rows then collects at most 255 * FS_ONE."""
    s = fs_strength(strength)
    wts = np.zeros(15, dtype=np.int64)
    for dx, dy, num in kernel.taps:
        wts[5 * dy + dx + 2] = (s * num * 16) // kernel.divisor
    return wts


def error_diffuse(src: np.ndarray, palette: np.ndarray, lk: Lookup, kernel: ErrorKernel, out: Target, *,
                  alpha_threshold: int = ALPHA_THRESHOLD, strength: float = 1.0, serpentine: bool = True,
                  pairs: Pairs | None = None, damp_limit: int = -1, levels: np.ndarray | None = None) -> None:
    """Error diffusion of ``src`` (uint8 [H,W,3|4]) to ``palette`` (uint8 [N,3]) into ``out``: in scan order, in two
    bands for images of more than ``BAND_MIN_ROWS`` rows (see ``band_rows``).

    Every kernel runs in fixed point (see ``FS_ONE`` and ``kernel_weights``): ``strength`` is rounded to steps of
    1/``STRENGTH_STEPS``, the diffused value to a code value, and that value's exact nearest colour (in the
    lookup's distance space) is taken; the error passed on is (value - colour) in code values. Pixels with alpha
    below ``alpha_threshold`` get index N and neither take nor pass on error. ``pairs``: ``diffusion_pairs`` of the
    lookup's cell table (built here when None). ``damp_limit`` >= 0: a pixel whose squared error
    exceeds it passes on 3/4 of it, and each pixel takes ``levels[y, x]`` / 256 (uint8 [H,W]; ``LEVEL_FULL`` for
    every pixel when None) of the error it collects, 4/5 of that when it exceeds the limit too (libimagequant's
    rules, see the comment above ``_value`` and ``dither_levels``).
    """
    t = lk.table
    codes, shift, masks, slots = pairs if pairs is not None else diffusion_pairs(lk, palette)
    if len(codes) != len(t.info):  # the loops index both by cell, without bounds checks
        raise ValueError(f"pairs of {len(codes)} cells for a cell table of {len(t.info)}")
    # palette padded to 4 values per colour: the loops index it with a shift instead of a multiply
    pal4 = np.zeros((len(palette), 4), dtype=np.int64)
    pal4[:, :3] = palette
    table = np.ascontiguousarray(out.table).ravel()
    if damp_limit < 0:
        flat_levels = _NO_LEVELS
    elif levels is None:
        flat_levels = np.full(src.shape[0] * src.shape[1], LEVEL_FULL, np.uint8)
    else:
        flat_levels = np.ascontiguousarray(levels, dtype=np.uint8).reshape(-1)
        if flat_levels.shape[0] != src.shape[0] * src.shape[1]:  # the loop reads it without bounds checks
            raise ValueError(f"levels of {levels.shape} for an image of {src.shape[:2]}")
    vector = (damp_limit < 0 and t.gbits == (LAB_DIFFUSION_GBITS if lk.use_lab else GBITS)
              and src.shape[0] * src.shape[1] > 1 and sys.byteorder == "little")
    if vector:
        name = f"_diffuse_vector_{'lab_' if lk.use_lab else ''}{'rgb' if src.shape[2] == 3 else 'rgba'}"
    else:
        name = "_diffuse_fixed"
    _jit.kernel(_SELF, name, t.info.dtype, codes.dtype, out.indices.dtype)(
        lk.use_lab, src, alpha_threshold, pal4.ravel(), kernel_weights(kernel, strength), np.int64(damp_limit),
        flat_levels, serpentine, *lk.loop_args, codes, shift, masks, slots, table, out.indices, out.image, out.used,
    )


_NO_LEVELS = np.zeros(1, np.uint8)


def levels_for(indices: np.ndarray) -> np.ndarray:
    """``dither_levels`` of an undithered mapping (uint8 [H,W])."""
    out = np.empty(indices.shape, np.uint8)
    _jit.kernel(_SELF, "dither_levels", indices.dtype)(np.ascontiguousarray(indices), out)
    return out


def ordered_dither(src: np.ndarray, lk: Lookup, offsets: np.ndarray, out: Target, *,
                   alpha_threshold: int = ALPHA_THRESHOLD) -> None:
    """Add the tiled ``offsets`` matrix (whole sRGB code values, same offset on each channel; power-of-two sides)
    and map each pixel to the palette (a 1x1 zero matrix: each pixel's exact nearest colour)."""
    _jit.kernel(_SELF, "_map", lk.table.info.dtype, out.indices.dtype)(
        lk.use_lab, src, alpha_threshold, np.ascontiguousarray(offsets, dtype=np.int64), *lk.loop_args,
        np.ascontiguousarray(out.table).ravel(), out.indices, out.image, out.used)
