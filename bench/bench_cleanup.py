"""Pixel-art cleanup against unfake's and proper-pixel-art's cleanup steps, on the same images.

Images (bench/sprites.py, seeded): true-resolution sprites (outlines, a checkerboard and a sparse 1-in-4 dither
area, single bright pixels). Two tasks:

1. **Stray pixels.** 1.5% of the pixels, picked where the sprite is flat around them (3x3 of one colour), get
   another palette colour. Measured: strays fixed (the sprite's colour is back), dither pixels changed, single
   bright pixels lost, and all other pixels changed. Methods: pixart cleanup (isolated pixels only; and its
   defaults: + near-duplicate merge + jaggies), unfake's ``morphological_cleanup`` (2x2 opening and closing per
   channel; what its ``cleanup={"morph": True}`` runs) and, on transparent sprites, unfake's ``jaggy_cleaner``
   (removes opaque pixels with no orthogonal and one diagonal opaque neighbour).
2. **Background.** On sprites drawn on a flat background colour: pixart cleanup ``background="auto"`` (border
   colour, flood fill through 4-neighbours), unfake's ``make_background_transparent`` (flood fill from every
   border pixel, tolerance 1) and proper-pixel-art's ``make_background_transparent`` (border colour removed
   everywhere). Measured: share of pixels whose transparency matches the truth (the background region reached
   from the border), and of the sprite's own pixels (inside it) wrongly removed.

Timing: each image through every method in turn; median wall ms and the median per-image ratio to pixart.

    .venv/bin/python bench/bench_cleanup.py [--images 40] [--seed 2]
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sprites import make_sprite  # noqa: E402

from pixart_nodes.core import cleanup  # noqa: E402


def _strays(rng: np.random.Generator, img: np.ndarray, pal: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    rgb = img[..., :3].astype(np.int32)
    key = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    pad = np.pad(key, 1, mode="edge")
    h, w = key.shape
    flat = np.ones((h, w), bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            flat &= pad[dy:dy + h, dx:dx + w] == key
    if img.shape[2] == 4:
        flat &= img[..., 3] == 255
    flat[[0, -1], :] = flat[:, [0, -1]] = False
    ys, xs = np.nonzero(flat)
    pick = rng.choice(len(ys), size=min(len(ys), max(1, int(share * h * w))), replace=False)
    out = img.copy()
    mask = np.zeros((h, w), bool)
    for i in pick:
        y, x = ys[i], xs[i]
        if mask[max(0, y - 2):y + 3, max(0, x - 2):x + 3].any():
            continue  # one stray per 5x5: they must stay strays
        choices = [c for c in pal if not (c == img[y, x, :3]).all()]
        out[y, x, :3] = choices[rng.integers(len(choices))]
        mask[y, x] = True
    return out, mask


def _truth_background(img: np.ndarray, colour: np.ndarray) -> np.ndarray:
    import cv2

    match = (img[..., :3] == colour).all(axis=-1).astype(np.uint8)
    _, labels = cv2.connectedComponents(match, connectivity=4)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, edge[edge > 0])


def _timed(fn, *a):
    t0 = time.perf_counter()
    out = fn(*a)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    try:
        import unfake.pixel as unfake_pixel
    except ImportError:
        unfake_pixel = None
        print("(unfake not installed)")
    try:
        from proper_pixel_art import colors as ppa_colors
    except ImportError:
        ppa_colors = None
        print("(proper-pixel-art not installed)")

    rng = np.random.default_rng(args.seed)
    stray_methods = {
        "pixart cleanup, isolated only": lambda im: cleanup.cleanup(im, merge=0, jaggies=False).image,
        "pixart cleanup, defaults": lambda im: cleanup.cleanup(im).image,
    }
    if unfake_pixel is not None:
        stray_methods["unfake morphological_cleanup"] = lambda im: unfake_pixel.morphological_cleanup(im)
        stray_methods["unfake jaggy_cleaner (alpha)"] = lambda im: unfake_pixel.jaggy_cleaner(im)
    bg_methods = {"pixart cleanup, background auto": lambda im: cleanup.cleanup(
        im, merge=0, isolated=False, jaggies=False, background="auto").image}
    if unfake_pixel is not None:
        bg_methods["unfake make_background_transparent"] = lambda im: unfake_pixel.make_background_transparent(
            np.dstack([im, np.full(im.shape[:2], 255, np.uint8)]), 1, "edges")
    if ppa_colors is not None:
        bg_methods["proper-pixel-art make_background_transparent"] = lambda im: np.asarray(
            ppa_colors.make_background_transparent(Image.fromarray(im)))

    warm = make_sprite(np.random.default_rng(0), 32, 32)[0]
    for fn in (*stray_methods.values(), *bg_methods.values()):
        fn(warm if fn is not stray_methods.get("unfake jaggy_cleaner (alpha)") else np.dstack(
            [warm, np.full(warm.shape[:2], 255, np.uint8)]))
    stray_rows: dict[str, list] = {k: [] for k in stray_methods}
    bg_rows: dict[str, list] = {k: [] for k in bg_methods}
    for i in range(args.images):
        h, w = int(rng.integers(32, 97)), int(rng.integers(32, 97))
        masks: dict = {}
        alpha = i % 2 == 1
        spr, pal, _ = make_sprite(rng, h, w, alpha=alpha, masks=masks)
        noisy, stray = _strays(rng, spr, pal, 0.015)
        times = {}
        for name, fn in stray_methods.items():
            if "alpha" in name and not alpha:
                continue
            out, times[name] = _timed(fn, noisy)
            same = (out == spr).all(axis=-1)
            changed = ~same
            others = ~stray & ~masks["dither"] & ~masks["highlight"]
            stray_rows[name].append([same[stray].mean(), changed[masks["dither"]].mean(),
                                     changed[masks["highlight"]].mean(), changed[others].mean(), times[name]])
        for name in stray_methods:
            if name in times:
                stray_rows[name][-1].append(times[name] / times["pixart cleanup, isolated only"])
        if alpha:
            continue
        truth = _truth_background(spr, pal[0])
        times = {}
        for name, fn in bg_methods.items():
            out, times[name] = _timed(fn, spr)
            clear = out[..., 3] < 128
            bg_rows[name].append([(clear == truth).mean(), clear[~truth].mean(), times[name]])
        for name in bg_methods:
            bg_rows[name][-1].append(times[name] / times["pixart cleanup, background auto"])

    print(f"\n{args.images} sprites 32-96 px (half on transparency), seed {args.seed}; strays: 1.5% of pixels")
    header = f"{'stray pixels':40s} {'strays fixed':>12s} {'dither changed':>15s} {'bright lost':>12s} " \
             f"{'others changed':>15s} {'median ms':>10s} {'time / pixart':>14s}"
    print(header)
    print("-" * len(header))
    for name, v in stray_rows.items():
        a = np.array(v, dtype=np.float64)
        print(f"{name:40s} {a[:, 0].mean():12.1%} {a[:, 1].mean():15.2%} {a[:, 2].mean():12.1%} "
              f"{a[:, 3].mean():15.2%} {statistics.median(a[:, 4]) * 1e3:10.2f} {statistics.median(a[:, 5]):14.2f}")
    header = f"\n{'background (opaque sprites)':46s} {'alpha right':>11s} {'sprite removed':>15s} " \
             f"{'median ms':>10s} {'time / pixart':>14s}"
    print(header)
    print("-" * (len(header) - 2))
    for name, v in bg_rows.items():
        a = np.array(v, dtype=np.float64)
        print(f"{name:46s} {a[:, 0].mean():11.2%} {a[:, 1].mean():15.2%} {statistics.median(a[:, 2]) * 1e3:10.2f} "
              f"{statistics.median(a[:, 3]):14.2f}")


if __name__ == "__main__":
    main()
