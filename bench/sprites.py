"""Synthetic pixel-art test material shared by the pixel-tool benchmarks (drawn here, no downloaded art).

- ``make_sprite``: a true-resolution sprite: few colours, shapes with 1-px dark outlines, a checkerboard and a
  sparse dither area, single bright pixels; on a flat background or transparent.
- ``upscale``: nearest-neighbour enlargement by any factor per axis, with a phase (the first and last cells are
  cropped to between half and all of their width) and optionally a drifting grid (cell edges displaced by a
  slow sine plus a slow change of scale across the image), as diffusion models draw "pixel art".
- ``degrade``: Gaussian blur, JPEG (colour channels; alpha only blurred) and Gaussian noise.

Every function takes a ``numpy.random.Generator``, so a seed reproduces the whole set.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image


def _palette(rng: np.random.Generator, k: int) -> np.ndarray:
    """``k`` colours at least 70 apart (RGB Euclidean); entry 1 is a dark outline colour, 2 a bright highlight."""
    cols = [rng.integers(40, 230, 3), rng.integers(0, 45, 3), rng.integers(215, 256, 3)]
    while len(cols) < k:
        c = rng.integers(0, 256, 3)
        if min(np.linalg.norm(c.astype(float) - d) for d in cols) >= 70:
            cols.append(c)
    return np.array(cols, dtype=np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (the 1-px inner outline)."""
    p = np.pad(mask, 1)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


def make_sprite(rng: np.random.Generator, h: int, w: int, *, alpha: bool = False,
                n_colors: int | None = None, masks: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A sprite ``uint8 [h,w,3|4]``, its palette ``[K,3]`` and its outline mask ``[h,w]`` (1-px dark outlines).

    ``masks``, when given, receives ``dither`` (the two dithered areas) and ``highlight`` (the single bright
    pixels)."""
    k = int(n_colors or rng.integers(6, 13))
    pal = _palette(rng, k)
    img = np.empty((h, w, 3), np.uint8)
    img[...] = pal[0]
    opaque = np.zeros((h, w), bool) if alpha else np.ones((h, w), bool)
    outline = np.zeros((h, w), bool)
    y, x = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(3, 7))):
        cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
        ry, rx = rng.uniform(0.12, 0.35) * h, rng.uniform(0.12, 0.35) * w
        kind = rng.integers(0, 3)
        if kind == 0:
            shape = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
        elif kind == 1:
            shape = (np.abs(y - cy) <= ry) & (np.abs(x - cx) <= rx)
        else:  # triangle pointing up
            shape = (y >= cy - ry) & (y <= cy + ry) & (np.abs(x - cx) <= (y - cy + ry) * rx / (2 * ry))
        if shape.sum() < 6:
            continue
        img[shape] = pal[rng.integers(3, k)]
        ol = _outline(shape)
        img[ol] = pal[1]
        outline[shape] = False
        outline |= ol
        opaque |= shape
    # dithered areas inside the drawing: a checkerboard and a sparse (1 in 4) pattern
    dither = np.zeros((h, w), bool)
    highlight = np.zeros((h, w), bool)
    for density in (2, 4):
        dh, dw = int(rng.integers(4, max(5, h // 4))), int(rng.integers(4, max(5, w // 4)))
        y0, x0 = int(rng.integers(1, h - dh - 1)), int(rng.integers(1, w - dw - 1))
        a, b = pal[rng.integers(3, k)], pal[rng.integers(3, k)]
        yy, xx = y[y0:y0 + dh, x0:x0 + dw], x[y0:y0 + dh, x0:x0 + dw]
        on = ((yy + xx) % 2 == 0) if density == 2 else ((yy % 2 == 0) & (xx % 2 == 0))
        img[y0:y0 + dh, x0:x0 + dw] = np.where(on[..., None], a, b)
        opaque[y0:y0 + dh, x0:x0 + dw] = True
        outline[y0:y0 + dh, x0:x0 + dw] = False
        dither[y0:y0 + dh, x0:x0 + dw] = True
    for _ in range(int(rng.integers(2, 6))):  # single bright pixels (highlights, stars)
        py, px = int(rng.integers(1, h - 1)), int(rng.integers(1, w - 1))
        img[py, px] = pal[2]
        opaque[py, px] = True
        outline[py, px] = False
        dither[py, px] = False
        highlight[py, px] = True
    if masks is not None:
        masks["dither"] = dither
        masks["highlight"] = highlight
    if alpha:
        out = np.dstack([img, np.where(opaque, 255, 0).astype(np.uint8)])
        out[~opaque, :3] = 0
        return out, pal, outline
    return img, pal, outline


@dataclass
class Grid:
    """Cell edges of an enlargement in output pixels (``edges_x[k]`` = left edge of sprite column k)."""

    edges_x: np.ndarray
    edges_y: np.ndarray
    width: int
    height: int


def _edges(rng: np.random.Generator, n: int, s: float, drift: bool) -> tuple[np.ndarray, int]:
    k = np.arange(n + 1, dtype=np.float64)
    pos = s * k
    if drift:
        amp = rng.uniform(0.15, 0.3) * s  # cell sizes swing by up to +-19% over 10-25 cells
        period = rng.uniform(10, 25)
        theta = rng.uniform(0, 2 * np.pi)
        pos = pos + amp * (np.sin(2 * np.pi * k / period + theta) - np.sin(theta))
        pos = pos + rng.uniform(-0.03, 0.03) * s * k * k / (2 * n)  # the scale changes by up to 3% across
        pos = np.maximum.accumulate(pos)
    head = rng.uniform(0, 0.5) * (pos[1] - pos[0])  # first cell keeps between half and all of its width
    tail = rng.uniform(0, 0.5) * (pos[-1] - pos[-2])
    pos = pos - head
    return pos, int(np.floor(pos[-1] - tail))


def _cells(rng: np.random.Generator, n: int, s: float, drift: bool) -> tuple[np.ndarray, np.ndarray]:
    """Cell edges and, per output pixel, its cell; redrawn until the first and last cells each show at least
    half their width in whole pixels (what the benchmark counts as a pixel to recover)."""
    while True:
        edges, size = _edges(rng, n, s, drift)
        cells = np.clip(np.searchsorted(edges, np.arange(size) + 0.5, side="right") - 1, 0, n - 1)
        first, last = (cells == 0).sum(), (cells == n - 1).sum()
        if first >= 0.5 * (edges[1] - edges[0]) and last >= 0.5 * (edges[-1] - edges[-2]):
            return edges, cells


def upscale(img: np.ndarray, rng: np.random.Generator, sx: float, sy: float | None = None, *,
            drift: bool = False) -> tuple[np.ndarray, Grid]:
    """Nearest-neighbour enlargement: output pixel ``u`` shows the sprite cell whose span holds ``u + 0.5``."""
    sy = sx if sy is None else sy
    h, w = img.shape[:2]
    ex, cols = _cells(rng, w, sx, drift)
    ey, rows = _cells(rng, h, sy, drift)
    return np.ascontiguousarray(img[np.ix_(rows, cols)]), Grid(ex, ey, len(cols), len(rows))


def degrade(img: np.ndarray, rng: np.random.Generator, *, blur: float, jpeg: int | None, noise: float) -> np.ndarray:
    """Blur (sigma in pixels), JPEG at ``jpeg`` quality (colour only), add Gaussian noise of ``noise`` levels."""
    out = img
    if blur > 0:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    if jpeg:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(out[..., :3])).save(buf, format="JPEG", quality=int(jpeg))
        rgb = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        out = np.dstack([rgb, out[..., 3]]) if out.shape[2] == 4 else rgb
    if noise > 0:
        n = rng.normal(0, noise, out.shape)
        if out.shape[2] == 4:
            n[..., 3] = 0
        out = np.clip(out.astype(np.float64) + n, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


CONDITIONS = ("clean", "degraded", "drifting")


@dataclass
class Case:
    condition: str
    sprite: np.ndarray
    palette: np.ndarray
    outline: np.ndarray
    image: np.ndarray
    sx: float
    sy: float
    grid: Grid
    note: str


def make_cases(seed: int = 0, per_condition: int = 30) -> list[Case]:
    """The snap benchmark set: per condition, half integer and half non-integer factors (2-8, drifting 3-8), a
    quarter with alpha; a quarter of the non-integer cases have a different factor per axis."""
    rng = np.random.default_rng(seed)
    cases: list[Case] = []
    for condition in CONDITIONS:
        for i in range(per_condition):
            h, w = int(rng.integers(24, 65)), int(rng.integers(24, 65))
            alpha = i % 4 == 3
            sprite, pal, outline = make_sprite(rng, h, w, alpha=alpha)
            top = max(3.5, 560 / max(h, w))
            # drifting grids are what diffusion models draw, at 4-16 px per cell; from 3 px up here
            low = 3 if condition == "drifting" else 2
            if i % 2 == 0:
                sx = float(rng.integers(low, int(min(8, top)) + 1))
                sy = sx
            else:
                sx = float(rng.uniform(low + 0.2, min(7.8, top)))
                sy = sx * float(rng.uniform(0.93, 1.07)) if i % 8 == 1 else sx
            img, grid = upscale(sprite, rng, sx, sy, drift=condition == "drifting")
            note = f"{w}x{h} x{sx:.2f}" + (f"/{sy:.2f}" if sy != sx else "") + (" rgba" if alpha else "")
            if condition != "clean":
                blur = min(float(rng.uniform(0.4, 1.0)), 0.3 * min(sx, sy))  # AI images: soft over ~1 px
                jpeg = int(rng.integers(60, 91))
                noise = float(rng.uniform(1.5, 5.0))
                img = degrade(img, rng, blur=blur, jpeg=jpeg, noise=noise)
                note += f" blur {blur:.1f} q{jpeg} noise {noise:.1f}"
            cases.append(Case(condition, sprite, pal, outline, img, sx, sy, grid, note))
    return cases


def classify(img: np.ndarray, palette: np.ndarray, max_distance: float = 60.0) -> np.ndarray:
    """Palette index of each pixel (nearest colour), -1 when transparent (alpha < 128), -2 when no palette colour
    is within ``max_distance`` (RGB Euclidean)."""
    rgb = img[..., :3].astype(np.float64)
    d = ((rgb[..., None, :] - palette.astype(np.float64)) ** 2).sum(-1)
    idx = d.argmin(-1)
    idx[np.sqrt(d.min(-1)) > max_distance] = -2
    if img.shape[2] == 4:
        idx[img[..., 3] < 128] = -1
    return idx


def pixels_right(out: np.ndarray, sprite: np.ndarray, palette: np.ndarray, search: int = 2) -> float:
    """Share of the sprite's pixels that the output gets right, at the best placement of the output on the sprite
    (offsets up to ``search`` pixels per axis, so an output that drops a partial first column is not scored as
    all wrong). A pixel is right when its nearest palette colour is the sprite's (or both are transparent); an
    output of another size is compared where it overlaps, everything outside counts as wrong."""
    if out.ndim == 2:
        out = out[..., None].repeat(3, 2)
    if sprite.shape[2] == 4 and out.shape[2] == 3:
        out = np.dstack([out, np.full(out.shape[:2], 255, np.uint8)])
    if sprite.shape[2] == 3 and out.shape[2] == 4:
        out = out[..., :3]
    truth = classify(sprite, palette, max_distance=1e9)
    got = classify(out, palette)
    h, w = truth.shape
    oh, ow = got.shape
    best = 0
    for dy in range(-search, search + 1):
        for dx in range(-search, search + 1):
            # sprite pixel (i, j) against output pixel (i + dy, j + dx)
            i0, i1 = max(0, -dy), min(h, oh - dy)
            j0, j1 = max(0, -dx), min(w, ow - dx)
            if i1 <= i0 or j1 <= j0:
                continue
            match = truth[i0:i1, j0:j1] == got[i0 + dy:i1 + dy, j0 + dx:j1 + dx]
            best = max(best, int(match.sum()))
    return best / (h * w)


def render_thin(sprite: np.ndarray, palette: np.ndarray, outline: np.ndarray, rng: np.random.Generator,
                f: int, *, line: float | None = None) -> np.ndarray:
    """A high-resolution drawing of ``sprite`` at ``f`` pixels per sprite pixel whose 1-px outlines are thin lines.

    Each outline pixel's block is filled with the colour under the outline (its non-outline 4-neighbours'
    majority) and crossed by a dark stroke ``line * f`` wide (default: random 0.2-0.4) joining the centres of
    neighbouring outline pixels; single bright pixels (the palette's highlight colour) become dots of the same
    size. The strokes are shifted by up to a fifth of a block and the drawing is anti-aliased, so a stroke lands
    anywhere inside its block, as in a drawing that was never aligned to the grid. Downscaling this by ``f`` must
    give back the sprite; methods that pick each block's majority lose the outlines."""
    h, w = sprite.shape[:2]
    c = sprite.shape[2]
    rgb = sprite[..., :3].astype(np.int32)
    under = sprite.copy()
    pad = np.pad(outline, 1, constant_values=True)
    spad = np.pad(sprite, ((1, 1), (1, 1), (0, 0)), mode="edge")
    for i, j in zip(*np.nonzero(outline)):
        votes: dict[tuple, int] = {}
        for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            if not pad[i + 1 + di, j + 1 + dj]:
                key = tuple(spad[i + 1 + di, j + 1 + dj].tolist())
                votes[key] = votes.get(key, 0) + 1
        if votes:
            under[i, j] = max(votes.items(), key=lambda kv: kv[1])[0]
        elif c == 4:
            under[i, j] = 0
        else:
            under[i, j] = palette[0]
    hi_mask = (np.abs(rgb - palette[2].astype(np.int32)).sum(-1) == 0) & ~outline
    if c == 4:
        hi_mask &= sprite[..., 3] > 0
    under[hi_mask] = _majority_around(sprite, hi_mask)
    ss = 4  # supersampling for anti-aliasing
    big = np.repeat(np.repeat(under, f * ss, 0), f * ss, 1)
    width = max(1.0, (line if line is not None else rng.uniform(0.2, 0.4)) * f) * ss
    shift = rng.uniform(-0.2, 0.2, 2) * f * ss
    ink = np.concatenate([palette[1], [255]])[:c] if c == 4 else palette[1]
    glow = np.concatenate([palette[2], [255]])[:c] if c == 4 else palette[2]
    def centre(i: int, j: int) -> tuple[int, int]:
        return int(round((j + 0.5) * f * ss + shift[1])), int(round((i + 0.5) * f * ss + shift[0]))

    canvas = np.ascontiguousarray(big)
    t = max(1, int(round(width)))
    for i, j in zip(*np.nonzero(outline)):
        cv2.circle(canvas, centre(i, j), t // 2, ink.tolist(), -1)
        for di, dj in ((0, 1), (1, -1), (1, 0), (1, 1)):
            ni, nj = i + di, j + dj
            if 0 <= ni < h and 0 <= nj < w and outline[ni, nj]:
                cv2.line(canvas, centre(i, j), centre(ni, nj), ink.tolist(), t)
    for i, j in zip(*np.nonzero(hi_mask)):
        x, y = centre(i, j)
        cv2.rectangle(canvas, (x - t // 2, y - t // 2), (x + t // 2, y + t // 2), glow.tolist(), -1)
    return cv2.resize(canvas, (w * f, h * f), interpolation=cv2.INTER_AREA)


def _majority_around(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """For each masked pixel, the most common colour among its unmasked 8-neighbours."""
    out = []
    h, w = mask.shape
    for i, j in zip(*np.nonzero(mask)):
        votes: dict[tuple, int] = {}
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                ni, nj = i + di, j + dj
                if (di or dj) and 0 <= ni < h and 0 <= nj < w and not mask[ni, nj]:
                    key = tuple(img[ni, nj].tolist())
                    votes[key] = votes.get(key, 0) + 1
        out.append(max(votes.items(), key=lambda kv: kv[1])[0] if votes else tuple(img[i, j].tolist()))
    return np.array(out, dtype=np.uint8).reshape(-1, img.shape[2])
