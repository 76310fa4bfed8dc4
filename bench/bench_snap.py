"""Snap to grid against proper-pixel-art and unfake on the same images, in one run.

The images (bench/sprites.py, seeded): true-resolution sprites (outlines, a checkerboard and a sparse dither area,
single bright pixels, 6-12 colours, a quarter on transparency), enlarged by integer and non-integer factors (2-8;
a quarter of the non-integer ones with a different factor per axis) with the first and last cells cut to a random
part of their width, under three conditions:

- clean: the enlargement as is;
- degraded: + Gaussian blur (0.4-1.0 px, at most 0.3 of a cell), JPEG (quality 60-90, 4:2:0) and noise (1.5-5);
- drifting: cell edges displaced by a slow sine (up to 0.3 of a cell) plus a 3% change of scale across the
  image, then degraded as above (factors 3-8: what diffusion models draw).

Per tool and condition: the share of outputs of exactly the sprite's size, and the share of the sprite's pixels it
gets right (the output's nearest palette colour is the sprite's, both transparent counting as right, at the best
placement of the output within two pixels per axis; an output of another size counts where it overlaps).

Timing: each image goes through every tool in turn (pixart first), so a slow moment of a shared machine hits all
alike; one warm-up image first (numba's cache, imports). Reported: median wall ms per image and the median over
images of each tool's time divided by pixart's on the same image.

    .venv/bin/python bench/bench_snap.py [--per-condition 30] [--seed 0] [--only pixart]

proper-pixel-art and unfake are the ``bench`` extra (``pip install -e .[bench]``); a tool that is not installed
is skipped with a note.
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
from sprites import CONDITIONS, make_cases, pixels_right  # noqa: E402

from pixart_nodes.core import snap  # noqa: E402


def pixart(img: np.ndarray) -> np.ndarray:
    return snap.snap(img).image


def tools() -> dict:
    out = {"pixart snap": pixart}
    logging.disable(logging.WARNING)  # unfake and proper-pixel-art log every step
    warnings.filterwarnings("ignore")
    try:
        import proper_pixel_art

        def ppa(img: np.ndarray) -> np.ndarray:
            res = np.asarray(proper_pixel_art.pixelate(Image.fromarray(img)).image)
            return res if img.shape[2] == 4 else res[..., :3]

        out["proper-pixel-art 2.0"] = ppa
    except ImportError as exc:
        print(f"(proper-pixel-art not installed: {exc})")
    try:
        import unfake

        def unf(img: np.ndarray, **kw) -> np.ndarray:
            res = unfake.process_image_sync(Image.fromarray(img), **kw)["image_array"]
            return res if img.shape[2] == 4 else res[..., :3]

        out["unfake 1.0.7"] = unf
        # unfake reduces colours by default (auto count); without that its pixels can only be better
        out["unfake, no colour reduction"] = lambda img: unf(img, max_colors=256)
    except ImportError as exc:
        print(f"(unfake not installed: {exc})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-condition", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="run only tools whose name holds this text (pixart always)")
    args = ap.parse_args()
    fns = {k: v for k, v in tools().items() if k == "pixart snap" or args.only in k}
    cases = make_cases(args.seed, args.per_condition)
    for fn in fns.values():
        fn(cases[1].image)  # warm-up
    rows: dict[tuple[str, str], list[tuple[bool, float, float]]] = {}
    for case in cases:
        times = {}
        for name, fn in fns.items():
            t0 = time.perf_counter()
            try:
                out = fn(case.image)
            except Exception as exc:  # a reference tool failing on an image counts as all wrong
                print(f"  {name} failed on {case.note}: {exc.__class__.__name__}: {exc}")
                out = np.zeros((1, 1, case.sprite.shape[2]), np.uint8)
            times[name] = time.perf_counter() - t0
            size_ok = out.shape[:2] == case.sprite.shape[:2]
            rows.setdefault((case.condition, name), []).append(
                (size_ok, pixels_right(out, case.sprite, case.palette), times[name]))
        for name in fns:
            rows[(case.condition, name)][-1] += (times[name] / times["pixart snap"],)
    sizes = [c.image.shape[:2] for c in cases]
    print(f"\n{len(cases)} images ({args.per_condition} per condition, seed {args.seed}), "
          f"{min(h * w for h, w in sizes) ** 0.5:.0f}-{max(h * w for h, w in sizes) ** 0.5:.0f} px (sqrt of area)")
    header = f"{'condition':10s} {'tool':30s} {'exact size':>10s} {'pixels right':>13s} {'median ms':>10s} " \
             f"{'time / pixart':>14s}"
    print(header)
    print("-" * len(header))
    for condition in (*CONDITIONS, "all"):
        for name in fns:
            v = [r for (c, n), rs in rows.items() if n == name and condition in (c, "all") for r in rs]
            size_ok = np.mean([r[0] for r in v])
            right = np.mean([r[1] for r in v])
            ms = statistics.median(r[2] for r in v) * 1e3
            ratio = statistics.median(r[3] for r in v)
            print(f"{condition:10s} {name:30s} {size_ok:10.1%} {right:13.2%} {ms:10.1f} {ratio:14.2f}")
        print()


if __name__ == "__main__":
    main()
