"""Map an image to a palette, optionally dithered.

``quantize`` works on one ``uint8 [H,W,3|4]`` image. With alpha, pixels whose alpha is below
``alpha_threshold`` become fully transparent (RGBA 0,0,0,0, index ``len(palette)``) and all others fully
opaque palette colours, so the output holds only palette colours plus transparent.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import dither as _dither
from . import jit as _jit
from .color import ALPHA_THRESHOLD
from .palette import Palette

DITHER_METHODS: list[str] = ["none", *_dither.ERROR_KERNELS, *_dither.ORDERED_METHODS]
ERROR_DIFFUSION: frozenset[str] = frozenset(_dither.ERROR_KERNELS)
DISTANCES: tuple[str, ...] = ("oklab", "rgb")

_ZERO_OFFSET = np.zeros((1, 1), dtype=np.int64)


@dataclass
class QuantizeResult:
    """``image``: uint8, same channels as the input; ``indices``: palette index per pixel (``len(palette)`` =
    transparent), uint8 when that fits else uint16; ``colors_used``: distinct palette entries on opaque pixels."""

    image: np.ndarray
    indices: np.ndarray
    colors_used: int


def _palette_array(palette: Palette | np.ndarray) -> np.ndarray:
    if isinstance(palette, Palette):
        return palette.colors
    return Palette("custom", np.asarray(palette)).colors


def _lookup(pal_bytes: bytes, use_lab: bool, gbits: int = _dither.GBITS) -> _dither.Lookup:
    # keyed on the colour bytes so repeated calls with one palette (every image of a batch, every method) share
    # one cell table and its memo of exact nearest colours; the cache is called with every argument given, since
    # lru_cache keys f(b, False) and f(b, False, 6) apart
    return _cached_lookup(pal_bytes, use_lab, gbits)


@lru_cache(maxsize=16)
def _cached_lookup(pal_bytes: bytes, use_lab: bool, gbits: int) -> _dither.Lookup:
    pal = np.frombuffer(pal_bytes, dtype=np.uint8).reshape(-1, 3)
    return _dither.lookup(pal, use_lab, gbits)


def _diffusion_lookup(pal_bytes: bytes, use_lab: bool) -> _dither.Lookup:
    # OKLab error diffusion reads 32^3 cells (see LAB_DIFFUSION_GBITS); sRGB shares the other loops' table
    return _lookup(pal_bytes, use_lab, _dither.LAB_DIFFUSION_GBITS if use_lab else _dither.GBITS)


@lru_cache(maxsize=16)
def _nearest_table(pal_bytes: bytes, use_lab: bool) -> _dither.NearestTable:
    # the palette's cell table answers the pixels of single-colour cells without a search (in sRGB, small palettes
    # are searched faster without it, and from 17 colours the sRGB searches read its cells' candidates instead,
    # except the float32 search compiled without AVX-512; compiled for AVX2 it reads each pixel's cell first: the
    # table keeps of them what this process reads)
    pal = np.frombuffer(pal_bytes, dtype=np.uint8).reshape(-1, 3)
    n = len(pal)
    by_cell = n >= _dither.TRIPLES_FROM and (_dither.triples_read_here() or _dither.cells_read_here())
    with_cells = use_lab or n > _dither.NEAREST_MAX_COLORS or by_cell
    cells = _lookup(pal_bytes, use_lab).table if with_cells else None
    return _dither.nearest_table(pal, use_lab, cells)


@lru_cache(maxsize=16)
def _pairs(pal_bytes: bytes, use_lab: bool) -> _dither.Pairs:
    # error diffusion: pair codes (and OKLab masks) derived from the palette's cell table
    pal = np.frombuffer(pal_bytes, dtype=np.uint8).reshape(-1, 3)
    return _dither.diffusion_pairs(_diffusion_lookup(pal_bytes, use_lab), pal)


def ordered_spread(pal: np.ndarray) -> float:
    """Amplitude (sRGB units) of ordered-dither offsets: the typical gap between neighbouring palette colours.

    Median over colours of the distance to the nearest other colour, per channel (divided by sqrt 3): 255 for
    black/white, 85 for a 4-level grey ramp, so mid-tones between two neighbours dither across the full range.
    """
    # a colour listed twice is not a neighbour at distance 0 (that halved the median). np.unique with return_index
    # and a median by hand: numpy 2's plain np.unique and np.median import numpy.ma on their first call, 20-60 ms
    # of a first ordered dither
    pal = pal[np.unique(pal, axis=0, return_index=True)[1]]
    if len(pal) < 2:
        return 0.0
    p = pal.astype(np.float64)
    d = np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    near = np.sort(d.min(axis=1))
    return float((near[(len(near) - 1) // 2] + near[len(near) // 2]) / 2 / np.sqrt(3.0))


def ordered_offsets(method: str, pal: np.ndarray, strength: float) -> np.ndarray:
    """The ordered method's threshold matrix times ``ordered_spread(pal) * strength``, rounded to whole code values
    (int64): each dithered value is then a code value, whose exact nearest colour the searches find."""
    return np.rint(_dither.threshold_matrix(method) * (ordered_spread(pal) * strength)).astype(np.int64)


# libimagequant's threshold (remap.rs: 2.4 x the palette's mean squared error)
DAMPING_LIMIT = 2.4


def _damping(src: np.ndarray, lk: _dither.Lookup, target: _dither.Target, thr: int) -> tuple[int, np.ndarray]:
    """libimagequant's rules for ``damping=True``, from the undithered mapping of ``src`` (written into buffers
    shaped like ``target``'s): the limit (``DAMPING_LIMIT`` x its mean squared error in sRGB code values, summed over
    channels, over opaque pixels) and each pixel's dither level (``dither.dither_levels``)."""
    table = target.table
    out = _dither.Target(table, np.empty_like(target.indices), np.empty_like(src), np.zeros(len(table), np.uint8))
    _dither.ordered_dither(src, lk, _ZERO_OFFSET, out, alpha_threshold=thr)
    total, count = _jit.kernel(_dither, "mapping_error", out.indices.dtype)(src, out.image, out.indices,
                                                                            len(table) - 1)
    return (int(DAMPING_LIMIT * (total / count)) if count else 0), _dither.levels_for(out.indices)


def quantize(
    img: np.ndarray,
    palette: Palette | np.ndarray,
    *,
    dither: str = "none",
    distance: str = "oklab",
    serpentine: bool = True,
    strength: float = 1.0,
    alpha_threshold: int = ALPHA_THRESHOLD,
    damping: bool = False,
) -> QuantizeResult:
    """Map ``img`` (uint8 ``[H,W,3|4]``) to ``palette`` with the named dither method (see ``DITHER_METHODS``).

    ``distance``: "oklab" (perceptual) or "rgb" (squared sRGB difference) picks the nearest colour.
    ``strength`` 0..1 scales the diffused error / ordered offsets (0 equals no dithering); Floyd-Steinberg
    with "rgb" distance runs in fixed point and takes it in steps of 1/256 (see ``dither.FS_ONE``).
    ``serpentine`` alternates row direction for error diffusion. Images of more than 128 rows are diffused in two
    bands, as libimagequant does (the second starts a few rows above the middle, with rows that only build up the
    error the rows above would pass on; ``dither.band_rows``). ``damping`` (error diffusion only), libimagequant's
    rules: a pixel whose squared error is more than ``DAMPING_LIMIT`` times the image's mean squared error without
    dithering passes on only 3/4 of it, so errors no palette colour can absorb do not run across edges and flat
    areas (fewer stray dots, a lower per-pixel error at the same average colour); and each pixel takes at most 15/16
    of the error it collects, less where the undithered image already has texture (``dither.dither_levels``), 4/5 of
    that when it is over the same limit.
    """
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"image must be uint8 [H,W,3|4], got {arr.dtype} {list(arr.shape)}")
    if dither not in DITHER_METHODS:
        raise ValueError(f"dither must be one of {', '.join(DITHER_METHODS)}, got {dither!r}")
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in 0..1, got {strength}")
    if not 0 <= int(alpha_threshold) <= 256:
        raise ValueError(f"alpha_threshold must be in 0..256, got {alpha_threshold}")
    pal = _palette_array(palette)
    n = len(pal)
    h, w, ch = arr.shape
    has_alpha = ch == 4
    idx_dtype = np.uint8 if n + has_alpha <= 256 else np.uint16
    use_lab = distance == "oklab"
    src = np.ascontiguousarray(arr)
    thr = int(alpha_threshold)

    indices, image = np.empty((h, w), dtype=idx_dtype), np.empty_like(src)
    if h == 0 or w == 0:  # the compiled loops read a first pixel before they look at the size
        return QuantizeResult(image=image, indices=indices, colors_used=0)
    plain = dither == "none" or strength == 0.0
    if (plain or dither not in ERROR_DIFFUSION) and n <= _dither.NEAREST_SEARCH_MAX[use_lab] \
            and sys.byteorder == "little":  # the kernels pack pixels into little-endian words
        offsets = None if plain else ordered_offsets(dither, pal, strength)
        mask = _dither.nearest(src, _nearest_table(pal.tobytes(), use_lab), indices, image, offsets, thr)
        return QuantizeResult(image=image, indices=indices, colors_used=(mask & ((1 << n) - 1)).bit_count())

    # one extra entry so transparent pixels (index n) come out as RGBA 0,0,0,0
    table = np.zeros((n + 1, ch), dtype=np.uint8)
    table[:n, :3] = pal
    if has_alpha:
        table[:n, 3] = 255
    # the loops mark each index they write in `used` (cheaper than a bincount)
    out = _dither.Target(table, indices, image, np.zeros(n + 1, np.uint8))
    if dither in ERROR_DIFFUSION and not plain:
        lk = _diffusion_lookup(pal.tobytes(), use_lab)
        limit, levels = _damping(src, lk, out, thr) if damping else (-1, None)
        _dither.error_diffuse(src, pal, lk, _dither.ERROR_KERNELS[dither], out, alpha_threshold=thr,
                              strength=strength, serpentine=bool(serpentine),
                              pairs=_pairs(pal.tobytes(), use_lab), damp_limit=limit, levels=levels)
    else:
        # the ordered loop; with a zero offset, each pixel's exact nearest colour through the same cell table
        offsets = _ZERO_OFFSET if plain else ordered_offsets(dither, pal, strength)
        _dither.ordered_dither(src, _lookup(pal.tobytes(), use_lab), offsets, out, alpha_threshold=thr)
    return QuantizeResult(image=out.image, indices=out.indices, colors_used=int(np.count_nonzero(out.used[:n])))

