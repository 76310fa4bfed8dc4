"""Quantize/dither speed at 512x512 to a palette (PICO-8, 16 colours, unless told), against Pillow in the same run.

Every row is timed in interleaved rounds: each round runs every operation twice in a row on the same input,
Pillow's Floyd-Steinberg first, so slow phases of a shared machine hit all rows alike. Prints medians of
per-thread CPU time (robust on a shared machine: time spent waiting for a core is not counted) and of wall time
of the second call (a batch's steady state), the ratio of each CPU median to Pillow's Floyd-Steinberg median
(< 1 = faster), the median over rounds of the same ratio taken within each round, and that ratio for the first
call of each pair ("after others": its tables were pushed out of the cache by the rows before it).
Pillow keeps a colour cache on its palette image between calls; that is allowed here as in normal use, and
our per-palette candidate table is likewise built once (warm-up runs are not timed).

A second table times the first call in a fresh process (numba cache load, candidate table build), the
cost a ComfyUI node pays once per palette and distance, against Pillow's first call in the same way.

    .venv/bin/python bench/bench_quantize.py [--runs 20] [--size 512] [--cold-runs 3] [--only floyd] [--palette aap-64]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from pixart_nodes.core import dither
from pixart_nodes.core.palette import named_palette
from pixart_nodes.core.quantize import DITHER_METHODS, quantize


def images(size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    grad = np.stack([x * 255 // (size - 1), y * 255 // (size - 1), (x + y) * 255 // (2 * size - 2)], axis=-1)
    return {"random": rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "gradient": grad.astype(np.uint8)}


def measure(fns: list, runs: int, against: int = 0) -> list[tuple[float, float, float, float, float]]:
    """Per function: (median CPU ms, median wall ms, median of per-round CPU ratios to ``fns[0]``, the same to
    ``fns[against]``, and the same to ``fns[0]`` for the call that follows the other functions' work).

    Each round calls every function twice in a row and times both calls. The second call is the steady state of
    a batch (every frame through one palette): its tables are in the cache. The first follows the other functions'
    calls, which have pushed its tables out of the CPU's caches, so it depends on what ran before it (for
    example an OKLab row after sRGB rows). The main columns use the second call; the last ratio the first."""
    for fn in fns:
        fn()
        fn()  # warm-up: numba compile/cache load, Pillow palette cache, candidate tables
    cpu: list[list[float]] = [[] for _ in fns]
    wall: list[list[float]] = [[] for _ in fns]
    after: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for i, fn in enumerate(fns):
            c0 = time.thread_time()
            fn()
            c1, w1 = time.thread_time(), time.perf_counter()
            fn()
            after[i].append(c1 - c0)
            cpu[i].append(time.thread_time() - c1)
            wall[i].append(time.perf_counter() - w1)
    return [
        (statistics.median(c) * 1e3, statistics.median(wl) * 1e3,
         statistics.median(a / b for a, b in zip(c, cpu[0])), statistics.median(a / b for a, b in zip(c, cpu[against])),
         statistics.median(a / b for a, b in zip(f, after[0])))
        for c, wl, f in zip(cpu, wall, after)
    ]


_COLD = r"""
import sys, time
t0 = time.perf_counter()
import numpy as np
from PIL import Image
from pixart_nodes.core.palette import named_palette
from pixart_nodes.core.quantize import quantize
t1 = time.perf_counter()
size, what, dither, distance, name = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
img = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
pal = named_palette(name)
if what == "pillow":
    pimg = Image.new("P", (1, 1))
    pimg.putpalette(pal.colors.ravel().tolist())
    run = lambda: Image.fromarray(img).quantize(palette=pimg, dither=Image.Dither.FLOYDSTEINBERG)
else:
    run = lambda: quantize(img, pal, dither=dither, distance=distance)
t2 = time.perf_counter()
run()
t3 = time.perf_counter()
run()
t4 = time.perf_counter()
print(t1 - t0, t3 - t2, t4 - t3, int("numba" in sys.modules))
"""


def cold(size: int, runs: int, palette: str) -> None:
    """Import time and first/second call in fresh processes (wall clock, medians)."""
    cases = [("pillow", "floyd-steinberg", "rgb")] + [
        ("pixart", m, d) for m in ("none", "floyd-steinberg", "bayer-8x8") for d in ("rgb", "oklab")
    ]
    print(f"\nfresh process, random {size}x{size} -> {palette}, median of {runs} processes (wall)")
    print(f"{'operation':48s} {'import s':>9s} {'1st call ms':>12s} {'2nd call ms':>12s} {'numba loaded':>13s}")
    for what, method, distance in cases:
        rows = []
        for _ in range(runs):
            out = subprocess.run(
                [sys.executable, "-c", _COLD, str(size), what, method, distance, palette],
                capture_output=True, text=True, check=True,
            ).stdout.split()
            rows.append([float(v) for v in out])
        imp, first, second, numba = (statistics.median(col) for col in zip(*rows))
        name = "Pillow quantize FLOYDSTEINBERG" if what == "pillow" else f"pixart {method} {distance}"
        print(f"{name:48s} {imp:9.2f} {first * 1e3:12.1f} {second * 1e3:12.1f} {'yes' if numba else 'no':>13s}")


def float32_search(img: np.ndarray, pal, method: str):
    dither.USE_VNNI = False
    try:
        return quantize(img, pal, dither=method, distance="rgb")
    finally:
        dither.USE_VNNI = True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--cold-runs", type=int, default=3, help="fresh processes per first-call case (0: skip)")
    ap.add_argument("--only", default="", help="time only rows whose name holds this text, any case (Pillow's FS and "
                                               "NONE always)")
    ap.add_argument("--palette", default="pico-8", help="a library palette's name (see 'pixart palettes')")
    args = ap.parse_args()
    pal = named_palette(args.palette)
    vnni = dither._vnni_kernel() is not None
    pimg = Image.new("P", (1, 1))
    pimg.putpalette(pal.colors.ravel().tolist())  # 48 values: no padded black entries
    for label, img in images(args.size).items():
        pil = Image.fromarray(img)
        ops = [
            ("Pillow quantize FLOYDSTEINBERG (reference)",
             lambda: pil.quantize(palette=pimg, dither=Image.Dither.FLOYDSTEINBERG)),
            ("Pillow quantize NONE", lambda: pil.quantize(palette=pimg, dither=Image.Dither.NONE)),
        ] + [
            (f"pixart {m} {d}", lambda m=m, d=d: quantize(img, pal, dither=m, distance=d))
            for m in DITHER_METHODS for d in ("rgb", "oklab")
        ] + [
            # where the CPU has AVX-512 VNNI, the sRGB search without it (what other CPUs run), same process
            (f"pixart {m} rgb, float32 search", lambda m=m: float32_search(img, pal, m))
            for m in ("none", "bayer-4x4") if vnni and len(pal) <= dither.NEAREST_MAX_COLORS
        ]
        ops = [op for i, op in enumerate(ops) if i <= 1 or args.only.lower() in op[0].lower()]  # Pillow's two always
        rows = measure([fn for _, fn in ops], args.runs, 1)
        ref = rows[0][0]
        print(f"\n{label} {args.size}x{args.size} -> {pal.name} ({len(pal)} colours), {args.runs} interleaved rounds, "
              "medians")
        print(f"{'operation':48s} {'cpu ms':>8s} {'wall ms':>8s} {'cpu / Pillow FS':>16s} {'per-round ratio':>16s}"
              f" {'after others':>13s} {'ratio to NONE':>14s}")
        for (name, _), (cpu, wall, ratio, to_none, after) in zip(ops, rows):
            # the per-round ratio to Pillow's NONE only where it is the like-for-like reference (no dithering)
            none = f"{to_none:14.3f}" if name.startswith("pixart none") else ""
            print(f"{name:48s} {cpu:8.2f} {wall:8.2f} {cpu / ref:16.2f} {ratio:16.3f} {after:13.3f} {none}")
    if args.cold_runs:
        cold(args.size, args.cold_runs, args.palette)


if __name__ == "__main__":
    main()
