"""Outline-keeping downscale against PixelOE (``pixeloe``) and the pack's other methods, on the same images.

Images (bench/sprites.py, seeded): true-resolution sprites whose 1-px outlines are drawn, at 4-8 pixels per sprite
pixel, as thin dark strokes (0.2-0.4 of a block wide, shifted up to a fifth of a block off centre, anti-aliased)
over the colour beneath them, and whose single bright pixels are small dots of the same size (``render_thin``).
Each method downscales back to the sprite's size. Measured against the sprite:

- outline recall: share of the sprite's outline pixels whose output pixel is the outline colour (nearest palette
  colour);
- outline precision: share of the output's outline-coloured pixels that are outline pixels in the sprite (a
  method that darkens everything would have recall 1 and low precision);
- bright recall: the same recall for the single bright pixels;
- pixels right: share of all pixels whose nearest palette colour is the sprite's.

Timing: every image goes through every method in turn, median wall ms and the median per-image ratio to pixart
outline. PixelOE runs its torch pipeline on the CPU (its Slang backend needs a GPU or MSVC), on the whole image
with ``pixel_size`` = the block size and ``no_post_upscale``; its other arguments are its defaults
(``mode="contrast"``, colour matching on) except ``thickness`` (outline expansion, 1-3; 3 is its default).

    .venv/bin/python bench/bench_outline.py [--images 24] [--seed 1]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sprites import classify, make_sprite, render_thin  # noqa: E402

from pixart_nodes.core import pixelate  # noqa: E402


def methods() -> dict:
    out = {f"pixart {m}": (lambda m: lambda img, f, h, w: pixelate.pixelate(img, width=w, height=h, method=m))(m)
           for m in ("outline", "kcentroid", "box", "nearest")}
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    try:
        import torch
        from pixeloe.torch.pixelize import pixelize

        torch.set_num_threads(max(1, torch.get_num_threads()))

        def poe(img: np.ndarray, f: int, h: int, w: int, thickness: int) -> np.ndarray:
            t = torch.from_numpy(img[..., :3]).permute(2, 0, 1)[None].float() / 255.0
            with torch.no_grad():
                res = pixelize(t, pixel_size=f, thickness=thickness, no_post_upscale=True, backend="torch")
            return (res[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)

        for th in (1, 2, 3):
            out[f"pixeloe contrast, thickness {th}"] = (lambda th: lambda img, f, h, w: poe(img, f, h, w, th))(th)
    except ImportError as exc:
        print(f"(pixeloe not installed: {exc})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    cases = []
    for _ in range(args.images):
        spr, pal, outline = make_sprite(rng, int(rng.integers(24, 49)), int(rng.integers(24, 49)))
        f = int(rng.integers(4, 9))
        cases.append((spr, pal, outline, f, render_thin(spr, pal, outline, rng, f)))
    fns = methods()
    spr, pal, outline, f, big = cases[0]
    for fn in fns.values():
        fn(big, f, *spr.shape[:2])  # warm-up
    rows: dict[str, list[tuple]] = {name: [] for name in fns}
    for spr, pal, outline, f, big in cases:
        truth = classify(spr, pal, 1e9)
        bright = truth == 2
        times = {}
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out = fn(big, f, *spr.shape[:2])
            times[name] = time.perf_counter() - t0
            got = classify(out, pal)
            ink = got == 1
            rows[name].append([(got[outline] == 1).mean(), outline[ink].mean() if ink.any() else 0.0,
                               (got[bright] == 2).mean() if bright.any() else np.nan, (got == truth).mean(),
                               times[name]])
        for name in fns:
            rows[name][-1].append(times[name] / times["pixart outline"])
    sizes = [c[4].shape[0] * c[4].shape[1] for c in cases]
    print(f"\n{len(cases)} drawings, {min(sizes) ** 0.5:.0f}-{max(sizes) ** 0.5:.0f} px (sqrt of area), "
          f"4-8 px per sprite pixel, seed {args.seed}")
    header = f"{'method':32s} {'outline recall':>14s} {'precision':>10s} {'bright recall':>14s} " \
             f"{'pixels right':>13s} {'median ms':>10s} {'time / outline':>15s}"
    print(header)
    print("-" * len(header))
    for name, v in rows.items():
        a = np.array(v, dtype=np.float64)
        print(f"{name:32s} {a[:, 0].mean():14.1%} {a[:, 1].mean():10.1%} {np.nanmean(a[:, 2]):14.1%} "
              f"{a[:, 3].mean():13.2%} {statistics.median(a[:, 4]) * 1e3:10.1f} {statistics.median(a[:, 5]):15.2f}")


if __name__ == "__main__":
    main()
