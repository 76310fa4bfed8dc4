"""RGB565 packing speed: pixart's packer against the Pico seed design's per-pixel loop and OpenCV.

    python bench/bench_rgb565.py [--size 240x240] [--repeat 15]

Prints medians and ratios measured in the same run. Targets (issue 2): >= 100x faster than the seed loop and within
2x of ``cv2.cvtColor(img, cv2.COLOR_RGB2BGR565)``. OpenCV gives little-endian words only, so the big-endian row
of OpenCV adds the byte swap a Pico needs; the plain OpenCV row is the stricter reference.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "custom_nodes"))
from pixart_nodes.core import rgb565  # noqa: E402


def seed_loop(img: Image.Image, width: int, height: int, luminance_invert: bool) -> bytes:
    """The seed design's conversion loop (a1111-pico-proxy.md, png_to_pico_rgb565), minus decode and resize."""
    data = bytearray()
    for y in range(height):
        for x in range(width):
            r, g, b = img.getpixel((x, y))
            if luminance_invert:
                r, g, b = 255 - r, 255 - g, 255 - b
            value = ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3)
            data.append((value >> 8) & 0xFF)
            data.append(value & 0xFF)
    return bytes(data)


def median_seconds(fn: Callable[[], object], repeat: int, min_time: float = 0.02) -> float:
    fn()  # warm-up: numba compile/cache load, OpenCV dispatch
    number = 1
    while True:  # enough calls per sample that timer resolution and call overhead do not dominate
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        if time.perf_counter() - t0 >= min_time or number >= 1 << 16:
            break
        number *= 2
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="240x240")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--seed-repeat", type=int, default=5, help="samples of the slow seed loop")
    args = ap.parse_args()
    w, h = rgb565.parse_size(args.size)
    arr = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    pil = Image.fromarray(arr)

    # the rows must agree bit for bit before their times mean anything
    ref_be = seed_loop(pil, w, h, False)
    ref_inv = seed_loop(pil, w, h, True)
    cv_le = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR565).tobytes()
    assert rgb565.to_rgb565(arr) == ref_be
    assert rgb565.to_rgb565(arr, invert=True) == ref_inv
    assert rgb565.to_rgb565(arr, byte_order="little") == cv_le
    assert cv2.cvtColor(arr, cv2.COLOR_RGB2BGR565)[..., ::-1].tobytes() == ref_be

    rows: list[tuple[str, float]] = [
        ("seed per-pixel loop (big-endian)", median_seconds(lambda: seed_loop(pil, w, h, False), args.seed_repeat, 0)),
        ("seed per-pixel loop (inverted)", median_seconds(lambda: seed_loop(pil, w, h, True), args.seed_repeat, 0)),
        ("opencv RGB2BGR565 (little-endian)", median_seconds(
            lambda: cv2.cvtColor(arr, cv2.COLOR_RGB2BGR565).tobytes(), args.repeat)),
        ("opencv RGB2BGR565 + byte swap (big)", median_seconds(
            lambda: cv2.cvtColor(arr, cv2.COLOR_RGB2BGR565)[..., ::-1].tobytes(), args.repeat)),
        ("pixart to_rgb565 big", median_seconds(lambda: rgb565.to_rgb565(arr), args.repeat)),
        ("pixart to_rgb565 little", median_seconds(lambda: rgb565.to_rgb565(arr, byte_order="little"), args.repeat)),
        ("pixart to_rgb565 big + invert", median_seconds(lambda: rgb565.to_rgb565(arr, invert=True), args.repeat)),
        ("pixart to_rgb565 big + dither", median_seconds(lambda: rgb565.to_rgb565(arr, dither=True), args.repeat)),
    ]
    seed_t = rows[0][1]
    cv_t = rows[2][1]
    print(f"RGB565 packing, {w}x{h} random RGB ({w * h * 2} bytes out), medians")
    print(f"{'implementation':40s} {'median':>12s} {'vs seed loop':>13s} {'time / opencv':>14s}")
    for name, t in rows:
        print(f"{name:40s} {t * 1e6:10.1f}us {seed_t / t:12.1f}x {t / cv_t:13.2f}x")
    ours = rows[4][1]
    print(f"\npixart big-endian: {seed_t / ours:.0f}x faster than the seed loop (target >= 100x), "
          f"{ours / cv_t:.2f}x OpenCV's time (target <= 2x)")


if __name__ == "__main__":
    main()
