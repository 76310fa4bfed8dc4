"""Pixel-art cleanup: near-duplicate and rare colours, isolated pixels, single-pixel jaggies, background.

Steps, in order (each optional):

1. **Near-duplicate colours** (``merge``): colours closer than ``merge`` in OKLab become the most common of them,
   so the shades that noise, JPEG or a snapped AI picture leave behind count as one colour in the steps below.
2. **Rare colours** (``rare``): a colour covering less than this share of the opaque pixels is replaced, pixel by
   pixel, by the nearest (OKLab) colour among the pixel's 8 neighbours that is not rare itself, or else by the
   nearest common colour of the image.
3. **Isolated pixels** (``isolated``): a pixel with no 8-neighbour of its own colour, whose neighbours are mostly
   (5 of 8) one colour, takes that colour. A pixel with its own colour two steps away in a straight or diagonal
   line is part of a pattern (a sparse dither, dotted line) and stays; a checkerboard pixel has its colour on
   the diagonals and is never isolated.
4. **Jaggies** (``jaggies``): in a 1-px line, a corner pixel whose only same-coloured neighbours are one
   horizontal and one vertical neighbour (an L) doubles the line at a step; when the step is a single pixel (one
   arm of the L is one pixel long) and the corner sticks out into an area of one colour (its two other
   4-neighbours and the pixels one step further out share it), it takes that colour, as Aseprite's
   pixel-perfect stroke does. A pixel of a two-tone area beside an outline can also sit in an L of its colour,
   but there the outline is one of those neighbours and only one pixel thick, so the pixel is kept: outlines
   are neither notched nor thickened. The scan goes in raster order on the image as it is being cleaned, so every second corner of a
   staircase is kept and the line stays connected. Corners with two long arms (a rectangle's) are kept;
   dither patterns have no orthogonal same-coloured neighbours and are never touched.
5. **Background** (``background``): ``"auto"`` takes the most common colour on the image border, or give a
   colour; pixels within ``tolerance`` (OKLab) of it that connect to the border through such pixels (4-connected,
   so the fill does not leak through a diagonal step of a 1-px outline) become transparent; with
   ``connected=False`` every such pixel does.

Colours are compared exactly after step 1; pixels with alpha < 128 form one "transparent" class. A pixel of that
class that no step changes is written as it came if it is partly opaque (alpha 1..127), partial alpha and colour
kept.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .color import ALPHA_THRESHOLD, hex_colour, srgb_u8_to_oklab
from .jit import compiled
from .messages import quote

TRANSPARENT = -1


@dataclass
class CleanupResult:
    image: np.ndarray
    stats: dict = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{v} {k.replace('_', ' ')}" for k, v in self.stats.items() if k != "background" and v]
        if self.stats.get("background") is not None:
            r, g, b = self.stats["background"]
            parts.append(f"background #{r:02x}{g:02x}{b:02x}")
        return ", ".join(parts) if parts else "nothing to clean"


@compiled(cache=True, nogil=True)
def _keys(img: np.ndarray) -> np.ndarray:
    h, w, c = img.shape
    keys = np.empty((h, w), np.int64)
    for y in range(h):
        for x in range(w):
            if c == 4 and img[y, x, 3] < ALPHA_THRESHOLD:
                keys[y, x] = TRANSPARENT
            else:
                keys[y, x] = (np.int64(img[y, x, 0]) << 16) | (np.int64(img[y, x, 1]) << 8) | np.int64(img[y, x, 2])
    return keys


@compiled(cache=True, nogil=True)
def _compose(img: np.ndarray, keys: np.ndarray, clear: np.ndarray, rgba: bool) -> np.ndarray:
    """The output image: colours from ``keys``; with ``rgba``, alpha 0 where ``clear`` or a step made a pixel
    transparent, the input's alpha where a pixel kept its class, 255 where a transparent pixel was filled in."""
    h, w, c = img.shape
    out = np.zeros((h, w, 4 if rgba else 3), np.uint8)
    for y in range(h):
        for x in range(w):
            k = keys[y, x]
            if k == TRANSPARENT and not clear[y, x] and c == 4 and 0 < img[y, x, 3] < ALPHA_THRESHOLD:
                # still in the transparent class: the steps only binarise alpha to compare pixels, so a half-clear
                # pixel (alpha 1..127, a soft edge or shadow) no step changed is written as it came, not wiped (a
                # fully clear one stays black under alpha 0, as the node's IMAGE output always showed it)
                for ch in range(4):
                    out[y, x, ch] = img[y, x, ch]
                continue
            if k == TRANSPARENT or clear[y, x]:  # only with rgba: without alpha or a background there is neither
                continue
            out[y, x, 0] = (k >> 16) & 255
            out[y, x, 1] = (k >> 8) & 255
            out[y, x, 2] = k & 255
            if rgba:
                out[y, x, 3] = img[y, x, 3] if c == 4 and img[y, x, 3] >= ALPHA_THRESHOLD else 255
    return out


def _unkey(keys: np.ndarray) -> np.ndarray:
    return np.stack([(keys >> 16) & 255, (keys >> 8) & 255, keys & 255], axis=-1).astype(np.uint8)


def _lab(keys: np.ndarray) -> np.ndarray:
    return srgb_u8_to_oklab(_unkey(keys)).astype(np.float64)


@compiled(cache=True, nogil=True, inline="always")
def _key_lab(k: int, lin: np.ndarray, m1: np.ndarray, m2: np.ndarray) -> tuple[float, float, float]:
    r, g, b = lin[(k >> 16) & 255], lin[(k >> 8) & 255], lin[k & 255]
    l0 = np.cbrt(m1[0, 0] * r + m1[0, 1] * g + m1[0, 2] * b)
    l1 = np.cbrt(m1[1, 0] * r + m1[1, 1] * g + m1[1, 2] * b)
    l2 = np.cbrt(m1[2, 0] * r + m1[2, 1] * g + m1[2, 2] * b)
    return (m2[0, 0] * l0 + m2[0, 1] * l1 + m2[0, 2] * l2, m2[1, 0] * l0 + m2[1, 1] * l1 + m2[1, 2] * l2,
            m2[2, 0] * l0 + m2[2, 1] * l1 + m2[2, 2] * l2)


def _tables():
    from .color import LINEAR_U8, M1, M2

    return LINEAR_U8, M1, M2


@compiled(cache=True, nogil=True)
def _unique_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct opaque keys and their counts (open-addressing hash: pixel art has few colours, so this
    beats sorting every pixel)."""
    flat = keys.ravel()
    size = 16
    while size < 2 * len(flat):
        size *= 2
    table = np.full(size, -2, np.int64)
    counts = np.zeros(size, np.int64)
    n = 0
    for v in flat:
        if v == TRANSPARENT:
            continue
        slot = ((v * 2654435761) >> 7) & (size - 1)
        while table[slot] != v and table[slot] != -2:
            slot = (slot + 1) & (size - 1)
        if table[slot] == -2:
            table[slot] = v
            n += 1
        counts[slot] += 1
    filled = np.flatnonzero(table != -2)
    uniq = table[filled]
    order = np.argsort(uniq)
    return uniq[order], counts[filled][order]


# --- 1. near-duplicates -----------------------------------------------------------------------------------------------

@compiled(cache=True, nogil=True)
def _greedy_merge(lab: np.ndarray, order: np.ndarray, limit: float) -> np.ndarray:
    """Representative index per colour: colours in ``order`` (most common first) join the first earlier
    representative within ``limit``."""
    n = lab.shape[0]
    rep = np.empty(n, np.int64)
    reps = np.empty(n, np.int64)
    count = 0
    lim2 = limit * limit
    for oi in range(n):
        i = order[oi]
        best, best_d = -1, lim2
        for r in range(count):
            j = reps[r]
            d = 0.0
            for ch in range(3):
                t = lab[i, ch] - lab[j, ch]
                d += t * t
            if d <= best_d:
                best, best_d = j, d
        if best < 0:
            reps[count] = i
            count += 1
            rep[i] = i
        else:
            rep[i] = best
    return rep


@compiled(cache=True, nogil=True)
def _merge(keys: np.ndarray, limit: float, lin: np.ndarray, m1: np.ndarray, m2: np.ndarray) -> tuple[np.ndarray, int]:
    uniq, counts = _unique_counts(keys)
    k = len(uniq)
    if k < 2:
        return keys, 0
    lab = np.empty((k, 3))
    for i in range(k):
        lab[i, 0], lab[i, 1], lab[i, 2] = _key_lab(uniq[i], lin, m1, m2)
    order = np.argsort(-counts, kind="mergesort")
    rep = _greedy_merge(lab, order, limit)
    merged = 0
    for i in range(k):
        if rep[i] != i:
            merged += 1
    if merged == 0:
        return keys, 0
    out = keys.copy()
    h, w = keys.shape
    for y in range(h):
        for x in range(w):
            v = keys[y, x]
            if v != TRANSPARENT:
                out[y, x] = uniq[rep[np.searchsorted(uniq, v)]]
    return out, merged


def merge_similar(keys: np.ndarray, limit: float) -> tuple[np.ndarray, int]:
    return _merge(keys, float(limit), *_tables())


# --- 2. rare colours --------------------------------------------------------------------------------------------------

@compiled(cache=True, nogil=True)
def _replace_rare(idx: np.ndarray, rare: np.ndarray, lab: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    h, w = idx.shape
    out = idx.copy()
    for y in range(h):
        for x in range(w):
            i = idx[y, x]
            if i < 0 or not rare[i]:
                continue
            best, best_d = fallback[i], 1e300
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    yy, xx = y + dy, x + dx
                    if (dy == 0 and dx == 0) or yy < 0 or yy >= h or xx < 0 or xx >= w:
                        continue
                    j = idx[yy, xx]
                    if j < 0 or rare[j]:
                        continue
                    d = 0.0
                    for ch in range(3):
                        t = lab[i, ch] - lab[j, ch]
                        d += t * t
                    if d < best_d:
                        best, best_d = j, d
            out[y, x] = best
    return out


def merge_rare(keys: np.ndarray, share: float) -> tuple[np.ndarray, int]:
    opaque = keys != TRANSPARENT
    uniq, inv, counts = np.unique(keys[opaque], return_inverse=True, return_counts=True)
    rare = counts < share * opaque.sum()
    if not rare.any() or rare.all():
        return keys, 0
    lab = _lab(uniq)
    common = np.flatnonzero(~rare)
    d = ((lab[:, None, :] - lab[None, common, :]) ** 2).sum(-1)
    fallback = common[d.argmin(axis=1)]
    idx = np.full(keys.shape, -1, np.int64)
    idx[opaque] = inv
    new = _replace_rare(idx, rare, lab, fallback)
    out = keys.copy()
    out[opaque] = uniq[new[opaque]]
    return out, int(rare[inv].sum())


# --- 3. isolated pixels, 4. jaggies -----------------------------------------------------------------------------------

@compiled(cache=True, nogil=True, inline="always")
def _same(keys: np.ndarray, y: int, x: int, k: int) -> int:
    if y < 0 or x < 0 or y >= keys.shape[0] or x >= keys.shape[1]:
        return 0
    return 1 if keys[y, x] == k else 0


@compiled(cache=True, nogil=True)
def _isolated(keys: np.ndarray) -> tuple[np.ndarray, int]:
    h, w = keys.shape
    out = keys.copy()
    removed = 0
    nb = np.empty(8, np.int64)
    for y in range(h):
        for x in range(w):
            k = keys[y, x]
            # most pixels have a neighbour of their colour: leave as soon as one is found
            if (_same(keys, y, x - 1, k) or _same(keys, y, x + 1, k) or _same(keys, y - 1, x, k)
                    or _same(keys, y + 1, x, k) or _same(keys, y - 1, x - 1, k) or _same(keys, y - 1, x + 1, k)
                    or _same(keys, y + 1, x - 1, k) or _same(keys, y + 1, x + 1, k)):
                continue
            m = 0
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    yy, xx = y + dy, x + dx
                    if (dy or dx) and yy >= 0 and xx >= 0 and yy < h and xx < w:
                        nb[m] = keys[yy, xx]
                        m += 1
            if m < 5:
                continue
            pattern = False  # own colour two steps away in a line: a sparse dither or a dotted line
            for dy in range(-2, 3, 2):
                for dx in range(-2, 3, 2):
                    yy, xx = y + dy, x + dx
                    if (dy or dx) and _same(keys, yy, xx, k):
                        pattern = True
            if pattern:
                continue
            best, best_n = k, 0
            for a in range(m):
                c = 0
                for b in range(m):
                    if nb[b] == nb[a]:
                        c += 1
                if c > best_n:
                    best, best_n = nb[a], c
            if best_n * 8 >= 5 * m:
                out[y, x] = best
                removed += 1
    return out, removed


@compiled(cache=True, nogil=True, inline="always")
def _same_or_off(keys: np.ndarray, y: int, x: int, k: int) -> bool:
    """``keys[y, x]`` is ``k``, or (y, x) lies outside the image."""
    return not (0 <= y < keys.shape[0] and 0 <= x < keys.shape[1]) or keys[y, x] == k


@compiled(cache=True, nogil=True, inline="always")
def _run(keys: np.ndarray, y: int, x: int, dy: int, dx: int) -> int:
    """Length of the run of ``keys[y, x]``'s colour starting one step from (y, x) in direction (dy, dx)."""
    k = keys[y, x]
    n = 0
    yy, xx = y + dy, x + dx
    while _same(keys, yy, xx, k):
        n += 1
        yy += dy
        xx += dx
    return n


@compiled(cache=True, nogil=True)
def _jaggies(keys: np.ndarray) -> tuple[np.ndarray, int]:
    h, w = keys.shape
    out = keys.copy()
    removed = 0
    for y in range(h):
        for x in range(w):
            k = out[y, x]
            if k == TRANSPARENT:
                continue
            up, down = _same(out, y - 1, x, k), _same(out, y + 1, x, k)
            left, right = _same(out, y, x - 1, k), _same(out, y, x + 1, k)
            if (up + down) != 1 or (left + right) != 1:
                continue  # an L has exactly one vertical and one horizontal neighbour of its colour
            vy = -1 if up else 1
            hx = -1 if left else 1
            if _same(out, y + vy, x + hx, k):
                continue  # the inner corner is filled: part of an area, not a 1-px line
            if _same(out, y - vy, x - hx, k):
                continue  # the opposite diagonal would lose its only link to the line
            if _run(out, y, x, vy, 0) > 1 and _run(out, y, x, 0, hx) > 1:
                continue  # both arms longer than a pixel: a real corner
            # a corner of a line sticks out into an area of one colour: its two other 4-neighbours share it, and so
            # do the pixels one step further out (the image's edge counts as that colour). Next to an outline the
            # corner pixel of a two-tone area has the outline, one pixel thick, there, or the outline on one side
            # and the other tone on the other; taking either colour would notch the outline or thicken it.
            oy, ox = y - vy, x - hx
            other = out[oy, x] if 0 <= oy < h else (out[y, ox] if 0 <= ox < w else k)
            # (`other` is the pixel at (oy, x) or, off the image, taken as that colour: only the others are checked)
            if (other == k or not _same_or_off(out, y, ox, other)
                    or not _same_or_off(out, oy - vy, x, other) or not _same_or_off(out, y, ox - hx, other)):
                continue
            out[y, x] = other
            removed += 1
    return out, removed


# --- 5. background ----------------------------------------------------------------------------------------------------

def border_colour(keys: np.ndarray) -> int | None:
    """The most common opaque colour on the image border, or None when the border is mostly transparent."""
    border = np.concatenate([keys[0], keys[-1], keys[1:-1, 0], keys[1:-1, -1]])
    vals, counts = _unique_counts(border[None])
    if counts.sum() * 2 < border.size:
        return None
    return int(vals[counts.argmax()])


@compiled(cache=True, nogil=True)
def _background(keys: np.ndarray, bg_lab: np.ndarray, tolerance: float, connected: bool, lin: np.ndarray,
                m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """Pixels within ``tolerance`` (OKLab) of ``bg_lab``; with ``connected``, only those reached from the border
    through 4-neighbours that match."""
    h, w = keys.shape
    match = np.zeros((h, w), np.bool_)
    # a small direct-mapped cache: a picture of a few dozen colours converts each about once
    cache_key = np.full(1024, -2, np.int64)
    cache_ok = np.zeros(1024, np.bool_)
    t2 = tolerance * tolerance
    for y in range(h):
        for x in range(w):
            k = keys[y, x]
            if k == TRANSPARENT:
                continue
            slot = ((k * 2654435761) >> 12) & 1023
            if cache_key[slot] != k:
                a, b, c = _key_lab(k, lin, m1, m2)
                d = (a - bg_lab[0]) ** 2 + (b - bg_lab[1]) ** 2 + (c - bg_lab[2]) ** 2
                cache_key[slot] = k
                cache_ok[slot] = d <= t2
            match[y, x] = cache_ok[slot]
    if not connected:
        return match
    seen = np.zeros((h, w), np.bool_)
    stack = np.empty(h * w, np.int64)
    top = 0
    for y in range(h):
        for x in range(w):
            if (y == 0 or x == 0 or y == h - 1 or x == w - 1) and match[y, x] and not seen[y, x]:
                seen[y, x] = True
                stack[top] = y * w + x
                top += 1
    while top > 0:
        top -= 1
        y, x = divmod(stack[top], w)
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            yy, xx = y + dy, x + dx
            if 0 <= yy < h and 0 <= xx < w and match[yy, xx] and not seen[yy, xx]:
                seen[yy, xx] = True
                stack[top] = yy * w + xx
                top += 1
    return seen


def background_mask(keys: np.ndarray, bg: int, tolerance: float, connected: bool) -> np.ndarray:
    lin, m1, m2 = _tables()
    bg_lab = np.array(_key_lab(int(bg), lin, m1, m2))
    return _background(keys, bg_lab, float(tolerance), bool(connected), lin, m1, m2)


def parse_colour(value) -> int:
    """``"#rrggbb"`` / ``"rrggbb"`` / ``(r, g, b)`` to a colour key; a key (``0xrrggbb``) is taken as it is."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if not 0 <= value <= 0xFFFFFF:
            raise ValueError(f"background colour key must be 0..0xFFFFFF, got {value!r}")
        return int(value)
    if isinstance(value, str):
        rgb = hex_colour(value)
        if rgb is None:
            raise ValueError(f"background colour must be #rrggbb, got {quote(value)}")
        return (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
    try:
        r, g, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"background colour must be #rrggbb, a key or (r, g, b), got {value!r:.40}") from None
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise ValueError(f"background colour components must be 0..255, got {value!r}")
    return (r << 16) | (g << 8) | b


def check_options(*, merge: float, rare: float, tolerance: float) -> None:
    """ValueError naming the first of ``cleanup``'s numbers out of range (before any image is read)."""
    # written as "not in range" so that NaN, which fails every comparison, is refused too
    for name, value, ok, rule in (("merge", merge, merge >= 0, "a finite number >= 0"),
                                  ("rare", rare, 0 <= rare < 1, "in 0..1 (below 1)"),
                                  ("tolerance", tolerance, tolerance >= 0, "a finite number >= 0")):
        if not (ok and math.isfinite(value)):
            raise ValueError(f"{name}: must be {rule}, got {value}")


def cleanup(
    img: np.ndarray,
    *,
    merge: float = 0.03,
    rare: float = 0.0,
    isolated: bool = True,
    jaggies: bool = True,
    background: str | tuple | int | None = None,
    tolerance: float = 0.05,
    connected: bool = True,
) -> CleanupResult:
    """Clean ``uint8 [H,W,C]`` pixel art (C = 3 or 4). Returns RGBA when the input has alpha or a background was
    made transparent, else RGB. ``background``: None (keep), ``"auto"`` (from the border) or a colour
    as ``parse_colour`` reads it."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"image must be uint8 [H,W,3|4], got {img.dtype} {list(img.shape)}")
    check_options(merge=merge, rare=rare, tolerance=tolerance)
    keys = _keys(np.ascontiguousarray(img))
    stats: dict = {"similar_colours_merged": 0, "rare_pixels_replaced": 0, "isolated_pixels_removed": 0,
                   "jaggies_removed": 0, "background_pixels": 0, "background": None}
    if merge > 0:
        keys, stats["similar_colours_merged"] = merge_similar(keys, merge)
    if rare > 0:
        keys, stats["rare_pixels_replaced"] = merge_rare(keys, rare)
    if isolated:
        keys, stats["isolated_pixels_removed"] = _isolated(keys)
    if jaggies:
        keys, stats["jaggies_removed"] = _jaggies(keys)
    clear = np.zeros(keys.shape, np.bool_)
    if background is not None:
        bg = border_colour(keys) if isinstance(background, str) and background.lower() == "auto" \
            else parse_colour(background)
        if bg is not None:
            clear = background_mask(keys, bg, tolerance, connected)
            stats["background_pixels"] = int(clear.sum())
            stats["background"] = [int(bg >> 16 & 255), int(bg >> 8 & 255), int(bg & 255)]
    rgba = img.shape[2] == 4 or stats["background"] is not None
    return CleanupResult(_compose(img, keys, clear, rgba), stats)
