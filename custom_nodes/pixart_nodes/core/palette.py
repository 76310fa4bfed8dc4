"""Palettes: the ``Palette`` value, named palettes, hex lists, palette files and extraction from images.

Extraction runs on the image's distinct colours weighted by their pixel counts (not on every pixel), which
keeps k-means fast on large images and makes the result independent of pixel order.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import color
from .messages import quote  # noqa: F401 - the pack's modules and nodes quote through palette
from .palettes import ALIASES, PALETTE_DATA

MAX_COLORS = 256
EXTRACT_METHODS = ("kmeans", "median-cut")

NAMED_PALETTES: tuple[str, ...] = tuple(PALETTE_DATA)


@dataclass(frozen=True, eq=False)
class Palette:
    """A named list of 1..256 sRGB colours, ``colors`` is ``uint8 [N,3]`` (read-only)."""

    name: str
    colors: np.ndarray

    def __post_init__(self) -> None:
        arr = np.asarray(self.colors)
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise ValueError(f"palette colors must have shape [N,3], got {list(arr.shape)}")
        if not 1 <= arr.shape[0] <= MAX_COLORS:
            raise ValueError(f"palette must have 1..{MAX_COLORS} colours, got {arr.shape[0]}")
        if arr.dtype != np.uint8:
            if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 255:
                raise ValueError("palette colors must be integers in 0..255")
        arr = np.ascontiguousarray(arr, dtype=np.uint8).copy()
        arr.setflags(write=False)
        object.__setattr__(self, "colors", arr)

    def __len__(self) -> int:
        return int(self.colors.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Palette):
            return NotImplemented
        return self.name == other.name and np.array_equal(self.colors, other.colors)

    def __hash__(self) -> int:
        return hash((self.name, self.colors.tobytes()))

    def hex(self) -> list[str]:
        """Colours as ``#rrggbb`` strings."""
        return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in self.colors.tolist()]

    def __repr__(self) -> str:
        shown = " ".join(self.hex()[:8]) + (" ..." if len(self) > 8 else "")
        return f"Palette({self.name!r}, {len(self)} colours: {shown})"


def normalise_name(name: str) -> str:
    """A palette name as names are compared: only its letters and digits, lower case (`PICO_8` is pico-8)."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


_LOOKUP: dict[str, str] = {normalise_name(k): k for k in PALETTE_DATA}
_LOOKUP.update({normalise_name(alias): target for alias, target in ALIASES.items()})


def named_palette(name: str) -> Palette:
    """A built-in palette by name; case, spaces, dashes and underscores are ignored ("PICO_8" == "pico-8")."""
    if not isinstance(name, str):
        raise ValueError(f"palette name must be a string, got {type(name).__name__}")
    key = _LOOKUP.get(normalise_name(name))
    if key is None:
        from .palettes import info

        info(name)  # raises, naming the closest of the library's hundreds of palettes
    return palette_from_hex(PALETTE_DATA[key][1], name=key)


def add_colour(rgb: list[tuple[int, int, int]], colour: tuple[int, int, int], where: str) -> None:
    """Appends ``colour``, refusing the one past ``MAX_COLORS``: every reader calls this as it parses, so a huge
    file or string costs its first ``MAX_COLORS + 1`` colours, not all of them."""
    if len(rgb) >= MAX_COLORS:
        raise ValueError(f"{where}: more than {MAX_COLORS} colours; a palette holds at most {MAX_COLORS}")
    rgb.append(colour)


_HEX_WORD = re.compile(r"[^\s,;]+")


def palette_from_hex(colors: str | Iterable[str], name: str = "custom") -> Palette:
    """Palette from hex colours: a string separated by commas/semicolons/whitespace, or a list of strings.

    Each colour may be written ``#ff8800``, ``ff8800``, ``0xff8800`` or ``#f80``. Raises ``ValueError`` naming
    the first bad entry (1-based position and text).
    """
    # words are taken one at a time so that a huge string stops at the colour past the limit
    if isinstance(colors, str):
        colors = [colors]
    rgb: list[tuple[int, int, int]] = []
    for item in colors:
        if not isinstance(item, str):
            raise ValueError(f"colour {len(rgb) + 1}: expected a hex string, got {type(item).__name__}")
        for m in _HEX_WORD.finditer(item):
            c = color.hex_colour(m.group())
            if c is None:
                raise ValueError(f"colour {len(rgb) + 1} {quote(m.group())} is not a hex colour like #ff8800")
            add_colour(rgb, c, "hex colours")
    if not rgb:
        raise ValueError("no colours given; expected hex colours like #ff8800")
    return Palette(name, np.array(rgb, dtype=np.uint8))


def load_palette_file(path: str | Path) -> Palette:
    """Read a palette file: `.hex`, `.gpl`, JASC `.pal`, Photoshop `.act`, paint.net `.txt` or a PNG swatch strip
    (see `palette_files`). Errors are ``ValueError`` naming the file and line."""
    from .palette_files import read_palette

    return read_palette(path)


# ---------------------------------------------------------------------------------------------------------
# nearest colour search, shared with quantize


def nearest_indices(points: np.ndarray, centres: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean) for each row of ``points [P,3]``; ties -> lowest index.

    Uses ``|c|^2 - 2 x.c`` (the ``|x|^2`` term does not change the argmin) in float64, in chunks so that the
    ``[chunk, N]`` distance block stays a few MB whatever the image size. For integer inputs (RGB) every term
    is exact, so the result equals a brute-force search bit for bit.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
    cc = (c * c).sum(axis=1)
    ct2 = (-2.0 * c).T.copy()
    out = np.empty(pts.shape[0], dtype=np.int64)
    step = max(1024, chunk * 16 // max(len(c), 1))
    for s in range(0, pts.shape[0], step):
        d = pts[s : s + step] @ ct2
        d += cc
        out[s : s + step] = d.argmin(axis=1)
    return out


# ---------------------------------------------------------------------------------------------------------
# extraction

_MAX_POINTS = 20000  # distinct colours above this are merged into 5-bit-per-channel bins (weighted means)
_TABLE_BITS = 16  # the colour table's slots: 2^16 over _MAX_POINTS colours, at most a third full


def _colour_histogram(images: np.ndarray | list[np.ndarray], alpha_threshold: int = color.ALPHA_THRESHOLD
                      ) -> tuple[np.ndarray, np.ndarray, bool]:
    """Distinct colours (float RGB 0..255, by ascending r << 16 | g << 8 | b) and pixel counts of the opaque pixels
    of one image or several; bool says "exact colours"."""
    from . import cluster
    from .jit import kernel

    arrays = []
    for img in [images] if isinstance(images, np.ndarray) else images:
        arr = np.asarray(img)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ValueError(f"image must be uint8 [H,W,3|4], got {arr.dtype} {list(arr.shape)}")
        arrays.append(np.ascontiguousarray(arr))
    thr = int(alpha_threshold)
    # a small image gets a small table (at least twice its pixels: never more than half full)
    size = 1 << min(_TABLE_BITS, max(4, (2 * sum(a.shape[0] * a.shape[1] for a in arrays)).bit_length()))
    keys = np.full(size, cluster.HIST_EMPTY, np.uint32)
    counts = np.zeros(size, np.int64)
    used = 0
    count = kernel(cluster, "count_colours")
    for arr in arrays:
        used = count(arr, thr, keys, counts, used, _MAX_POINTS)
        if used < 0:
            break
    if used >= 0:
        full = keys != cluster.HIST_EMPTY
        order = np.argsort(keys[full])
        uniq, n = keys[full][order], counts[full][order]
        if len(uniq) == 0:
            raise ValueError("image has no opaque pixels to take colours from")
        cols = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1).astype(np.float64)
        return cols, n.astype(np.float64), True
    # too many colours: bins, each kept as the mean of its pixels so no colour precision is thrown away
    sums = np.zeros((32768, 4))
    binned = kernel(cluster, "bin_colours")
    for arr in arrays:
        binned(arr, thr, sums)
    keep = sums[:, 0] > 0
    return sums[keep, 1:] / sums[keep, :1], sums[keep, 0], False


def _check_n(n_colors: int) -> int:
    if isinstance(n_colors, bool) or not isinstance(n_colors, (int, np.integer)) or not 2 <= n_colors <= MAX_COLORS:
        raise ValueError(f"n_colors must be an integer in 2..{MAX_COLORS}, got {n_colors!r}")
    return int(n_colors)


def _kmeans_oklab(lab: np.ndarray, w: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Weighted k-means in OKLab: greedy k-means++ seeding (2 + ln k candidates per centre), Lloyd's iterations to
    convergence (see ``cluster``), then one Weiszfeld step (``_toward_medians``)."""
    from . import cluster
    from .jit import kernel

    lab = np.ascontiguousarray(lab, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    centres = kernel(cluster, "seed_greedy")(lab, w, k, seed, 2 + int(np.log(k)))
    # 1e-5 in OKLab is a thousandth of a just-noticeable difference: further moves change no rounded colour
    assign = kernel(cluster, "lloyd")(lab, w, centres, 300, 1e-5)
    return _toward_medians(lab, w, centres, assign)


_MEDIAN_FLOOR = 1e-4  # OKLab distance below which a colour counts as at its centre (about 1/100 of a visible step)


def _toward_medians(lab: np.ndarray, w: np.ndarray, centres: np.ndarray, assign: np.ndarray) -> np.ndarray:
    """One Weiszfeld step: each centre moves from its cluster's mean toward the cluster's geometric median, the
    point with the least weighted sum of (unsquared) distances, each colour weighted by its count over its distance.
    A palette is judged by how far each pixel lands from its colour (the mean OKLab distance, as bench_extract and
    libimagequant's users measure it), which the median serves and the mean of k-means does not: one step took
    bench_extract's damped Floyd-Steinberg rows from 19 to 21 of 24 at or below libimagequant on both errors
    (further steps: fewer). The step never increases the weighted sum of distances (Weiszfeld's property), up to
    the floor on distances: a colour within ``_MEDIAN_FLOOR`` of its centre weighs as if at that distance."""
    k = len(centres)
    dist = np.sqrt(((lab - centres[assign]) ** 2).sum(axis=1))
    wd = w / np.maximum(dist, _MEDIAN_FLOOR)
    tot = np.bincount(assign, weights=wd, minlength=k)
    out = centres.copy()
    keep = tot > 0
    out[keep] = np.stack([np.bincount(assign, weights=wd * lab[:, c], minlength=k) for c in range(3)],
                         axis=1)[keep] / tot[keep, None]
    return out


# The palette after k-means is refined on a sample of the images (``_samples``) for the two errors it is judged by
# (mean OKLab distance per pixel and between 4x4-block means, see ``cluster.joint_pass``): a few reweighted
# least-squares steps, then swaps that move one colour to where the blocks are worst while that lowers their sum.
_SAMPLE = 128 * 128  # pixels of the sample (every s-th pixel of every s-th row, one s for all images)
_JOINT_STEPS = 4  # reweighted least-squares steps after k-means, and after an accepted swap
_SWAP_ROUNDS = 1  # swaps accepted at most
_SWAP_TRIES = 3  # colours tried for removal per round: those whose pixels have the nearest second choice
_SWAP_STEPS = 3  # steps each tried swap gets before it is judged
_SWAP_WORST = 0.02  # a swapped-in colour starts at the source mean of this share of the worst blocks
_SWAP_STRIDE = 2  # swaps are tried on every other block of every other row of blocks
# swaps only in palettes of up to 16 colours: one colour of 32 matters less to either error (no bench_extract case
# changed without them) and each try costs twice as much
_SWAP_MAX_COLOURS = 16


@dataclass
class _Sample:
    rgb: np.ndarray  # uint8 [h,w,3]
    lab: np.ndarray  # float64 [h,w,3]
    opaque: np.ndarray  # uint8 [h,w]
    blocks: int  # 4x4 blocks in it

    @cached_property
    def rgb_float(self) -> np.ndarray:
        """``rgb`` as float64, for the dithered passes (each palette tried under dithering reads it)."""
        return self.rgb.astype(np.float64)


def _samples(images: list[np.ndarray], alpha_threshold: int, target: int) -> list[_Sample]:
    """Every image decimated by one step s for all, to about ``target`` pixels in all: the middle pixel of each
    s x s cell (a sample's 4x4 blocks are 4s x 4s pixels of the image). An image too small to keep a pixel (a
    sprite beside a photo) is left out."""
    total = sum(a.shape[0] * a.shape[1] for a in images)
    step = max(1, int(np.ceil(np.sqrt(total / target))))
    out = []
    for a in images:
        sub = a[step // 2::step, step // 2::step]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        rgb = np.ascontiguousarray(sub[..., :3])
        opaque = sub[..., 3] >= alpha_threshold if sub.shape[2] == 4 else np.ones(sub.shape[:2], bool)
        # C order whatever the input's: the compiled passes take it as uint8[:, ::1]
        out.append(_Sample(rgb, np.ascontiguousarray(color.srgb_u8_to_oklab(rgb)),
                           np.ascontiguousarray(opaque, dtype=np.uint8), (sub.shape[0] // 4) * (sub.shape[1] // 4)))
    return out


@dataclass
class _Joint:
    value: float  # mean pixel distance + mean block error (OKLab)
    a: np.ndarray  # the next step's normal equations: a @ centres = b
    b: np.ndarray
    loss: np.ndarray  # per colour: what its pixels lose if it goes (see cluster.joint_pass)
    blocks: np.ndarray  # per full block: error, source mean


def _joint(samples: list[_Sample], cen: np.ndarray, stride: int = 1) -> _Joint:
    from . import cluster
    from .jit import kernel

    k = len(cen)
    a_pix, b_pix, a_blk, b_blk = np.zeros(k), np.zeros((k, 3)), np.zeros((k, k)), np.zeros((k, 3))
    loss, stats = np.zeros(k), np.zeros(4)
    blocks = np.empty((sum(s.blocks for s in samples), 4))
    run = kernel(cluster, "joint_pass")
    cen = np.ascontiguousarray(cen, dtype=np.float64)
    for s in samples:
        run(s.lab, s.opaque, cen, _MEDIAN_FLOOR, stride, a_pix, b_pix, a_blk, b_blk, loss, blocks, stats)
    return _system(cen, a_pix, b_pix, a_blk, b_blk, stats, loss, blocks)


def _system(cen: np.ndarray, a_pix: np.ndarray, b_pix: np.ndarray, a_blk: np.ndarray, b_blk: np.ndarray,
            stats: np.ndarray, loss: np.ndarray, blocks: np.ndarray) -> _Joint:
    """The objective and next step's normal equations from one pass's sums (built in place in ``a_blk`` and
    ``b_blk``: this runs some fifty times per palette)."""
    k = len(cen)
    pixels, nb = stats[1], stats[3]
    # no opaque pixel passed (a sparse pass over a sprite on transparency): nothing to judge by, nothing moves
    value = stats[0] / pixels if pixels else np.inf
    if nb:
        a_blk /= nb
        b_blk /= nb
        value += stats[2] / nb
    a, b = a_blk, b_blk
    diag = a.reshape(-1)[:: k + 1]
    if pixels:
        b += b_pix / pixels
        diag += a_pix / pixels
    # a colour no pixel takes has a zero row: the ridge keeps it where it is (and is far below every real weight;
    # the largest entry of this positive semi-definite matrix is on its diagonal)
    ridge = 1e-9 * max(float(diag.max()), 1.0)
    diag += ridge
    b += ridge * cen
    return _Joint(value, a, b, loss, blocks[: int(nb)])


def _descend(samples: list[_Sample], cen: np.ndarray, joint: _Joint, steps: int, stride: int = 1
             ) -> tuple[np.ndarray, _Joint]:
    """Up to ``steps`` reweighted least-squares steps, each kept only when it lowers the objective."""
    for _ in range(steps):
        nxt = np.linalg.solve(joint.a, joint.b)
        after = _joint(samples, nxt, stride)
        if not after.value < joint.value:
            break
        cen, joint = nxt, after
    return cen, joint


def _refine_joint(samples: list[_Sample], cen: np.ndarray) -> np.ndarray:
    """``cen`` (OKLab) moved to lower the mean pixel distance plus the mean block error on ``samples`` (as it is
    when no sampled pixel is opaque: a few opaque pixels off the sample's grid)."""
    if not any(s.opaque.any() for s in samples):
        return cen
    cen, joint = _descend(samples, cen, _joint(samples, cen), _JOINT_STEPS)
    for _ in range(_SWAP_ROUNDS):
        if not 2 <= len(cen) <= _SWAP_MAX_COLOURS or len(joint.blocks) == 0:
            break
        worst = joint.blocks[np.argsort(-joint.blocks[:, 0], kind="stable")[: max(1, int(len(joint.blocks) *
                                                                                       _SWAP_WORST))]]
        target = worst[:, 1:].mean(axis=0)
        # swaps are tried on a quarter of the blocks; the best one is then judged on all of them
        base = _joint(samples, cen, _SWAP_STRIDE).value
        best, best_value = None, base
        for j in np.argsort(joint.loss, kind="stable")[:_SWAP_TRIES]:
            tried = cen.copy()
            tried[j] = target
            tried, after = _descend(samples, tried, _joint(samples, tried, _SWAP_STRIDE), _SWAP_STEPS, _SWAP_STRIDE)
            if after.value < best_value:
                best, best_value = tried, after.value
        if best is None:
            break
        moved, after = _descend(samples, best, _joint(samples, best), _JOINT_STEPS)
        if not after.value < joint.value * (1 - 1e-4):
            break
        cen, joint = moved, after
    return cen


def _median_cut(rgb: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    boxes = [np.arange(rgb.shape[0])]
    while len(boxes) < k:
        best, best_score, best_axis = -1, 0.0, 0
        for i, idx in enumerate(boxes):
            if len(idx) < 2:
                continue
            pts = rgb[idx]
            axis = int(np.argmax(pts.max(axis=0) - pts.min(axis=0)))
            ww = w[idx]
            mean = (pts[:, axis] * ww).sum() / ww.sum()
            # split the box whose colours are spread most (weighted variance on its longest side)
            score = float((ww * (pts[:, axis] - mean) ** 2).sum())
            if score > best_score:
                best, best_score, best_axis = i, score, axis
        if best < 0:
            break
        idx = boxes.pop(best)
        order = idx[np.argsort(rgb[idx, best_axis], kind="stable")]
        cum = np.cumsum(w[order])
        cut = int(np.searchsorted(cum, cum[-1] / 2.0)) + 1  # the colour reaching half the weight goes left
        cut = min(max(cut, 1), len(order) - 1)  # both halves non-empty
        boxes += [order[:cut], order[cut:]]
    return np.array([(rgb[b] * w[b, None]).sum(axis=0) / w[b].sum() for b in boxes])


_DITHER_STEPS = 2  # dither=True: palettes tried under dithering (the refined one and a least-squares step)


def _distinct(out: np.ndarray) -> np.ndarray:
    # rounding can merge two centres; keep first occurrences
    _, first = np.unique(out, axis=0, return_index=True)
    return out[np.sort(first)]


def _dithered(samples: list[_Sample], pal: np.ndarray) -> _Joint:
    """``_joint`` for ``pal`` (uint8 sRGB) under ``quantize(damping=True)``'s dithering: each pixel's colour is the one
    error diffusion gives it (``cluster.dither_pass``)."""
    from . import cluster
    from .jit import kernel
    from .quantize import DAMPING_LIMIT

    k = len(pal)
    pal_lab = np.ascontiguousarray(color.srgb_u8_to_oklab(pal))
    a_pix, b_pix, a_blk, b_blk = np.zeros(k), np.zeros((k, 3)), np.zeros((k, k)), np.zeros((k, 3))
    stats = np.zeros(4)
    run = kernel(cluster, "dither_pass")
    pal_float = pal.astype(np.float64)
    for s in samples:
        run(s.rgb_float, s.lab, pal_float, pal_lab, color.LINEAR_U8, color.M1, color.M2, DAMPING_LIMIT, _MEDIAN_FLOOR,
            a_pix, b_pix, a_blk, b_blk, stats)
    return _system(pal_lab, a_pix, b_pix, a_blk, b_blk, stats, np.zeros(k), np.empty((0, 4)))


def _refine_for_dithering(samples: list[_Sample], centres: np.ndarray) -> np.ndarray:
    """The palette (uint8 sRGB) for error diffusion: the refined centres, then reweighted least-squares steps on the
    same two errors with each pixel's colour as damped Floyd-Steinberg gives it; of the ``_DITHER_STEPS`` palettes
    tried, the one with the least error. k-means centres are cluster means, inside the image's colours, where error
    diffusion cannot mix colours beyond them: the ends of gradients and the darkest and brightest areas come out
    too flat, and a step moves colours out as far as the blocks need (on bench_extract: both errors at or below
    libimagequant's in 24/24 cases, as with the search of a spread factor from the image's mean that this replaces;
    21/24 with the refined centres alone). Each sample is dithered as a picture, rows and columns, since the blocks
    and the sideways spread of error need them. A step whose colours round onto each other is not taken (the
    palette would come out with fewer colours than asked for)."""
    best = _distinct(color.oklab_to_srgb_u8(centres))
    if not samples:
        return best
    joint = _dithered(samples, best)
    best_value = joint.value
    for _ in range(_DITHER_STEPS - 1):
        pal = _distinct(color.oklab_to_srgb_u8(np.linalg.solve(joint.a, joint.b)))
        if len(pal) < len(best):
            break
        joint = _dithered(samples, pal)
        if joint.value < best_value:
            best, best_value = pal, joint.value
    return best


def extract_palette(
    img: np.ndarray | Sequence[np.ndarray], n_colors: int, method: str = "kmeans", seed: int = 0, *,
    alpha_threshold: int = color.ALPHA_THRESHOLD, dither: bool = False,
) -> Palette:
    """Palette of up to ``n_colors`` (2..256) colours representing ``img`` (uint8 ``[H,W,3|4]``), or one palette
    for several images (a sequence of them: a batch, the frames of an animation, a folder of sprites).

    ``kmeans``: weighted k-means in OKLab, k-means++ seeding from ``seed`` (same input + seed -> same palette),
    each colour moved from its cluster's mean toward its geometric median, then refined on a sample of the images
    for the two errors a palette is judged by, the mean OKLab distance from each pixel to its colour and between
    4x4-block means (``_refine_joint``).
    ``median-cut``: Heckbert-style boxes in RGB, splitting the box with the largest weighted variance along its
    longest side at the weighted median. Pixels with alpha below ``alpha_threshold`` are ignored. An image
    with fewer distinct colours than asked gives exactly those colours. Colours are sorted dark to light.
    ``dither`` (kmeans, images without transparent pixels): the palette is for error diffusion (``quantize`` with
    an error-diffusion method, best with ``damping=True``): refined further for the two errors of the image as damped
    Floyd-Steinberg dithers it, which moves colours out toward the image's extremes (``_refine_for_dithering``).
    """
    k = _check_n(n_colors)
    if method not in EXTRACT_METHODS:
        raise ValueError(f"method must be one of {', '.join(EXTRACT_METHODS)}, got {method!r}")
    images = [np.asarray(img)] if isinstance(img, np.ndarray) else [np.asarray(i) for i in img]
    if not images:
        raise ValueError("no image to take colours from")
    cols, w, exact = _colour_histogram(images, alpha_threshold)
    if exact and cols.shape[0] <= k:
        out = cols.astype(np.uint8)
    elif method == "kmeans":
        lab = color.srgb_float_to_oklab(cols)
        samples = _samples(images, alpha_threshold, _SAMPLE)
        # the kernel's generator keeps 32 bits of the seed (5 and 5 + 2**32 give one palette): reducing it here
        # changes no result and lets any integer through instead of overflowing the compiled call
        centres = _refine_joint(samples, _kmeans_oklab(lab, w, k, int(seed) % (1 << 32)))
        if dither and w.sum() == sum(a.shape[0] * a.shape[1] for a in images):  # every pixel opaque
            out = _refine_for_dithering(samples, centres)
        else:
            out = color.oklab_to_srgb_u8(centres)
    else:
        out = np.clip(np.floor(_median_cut(cols, w, k) + 0.5), 0, 255).astype(np.uint8)
    out = _distinct(out)
    # ordered by OKLab lightness
    order = np.argsort(color.srgb_u8_to_oklab(out)[:, 0], kind="stable")
    return Palette(f"{method}-{len(out)}", out[order])
