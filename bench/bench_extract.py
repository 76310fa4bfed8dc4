"""Palette extraction + quantization against libimagequant (the engine of pngquant), quality and speed, one run.

For each image, colour count (8, 16, 32) and dithering (none / Floyd-Steinberg), both tools make a palette of at
most N colours from the image and map the image to it:

- pixart: ``extract_palette(img, N, dither=...)`` (default method; ``dither=True`` for the dithered rows, which
  spreads the colours out for error diffusion) then ``quantize(img, palette, dither=..., distance="oklab")``, with
  dithering once as classic Floyd-Steinberg ("FS") and once with ``damping=True`` ("FS damp": libimagequant's
  rule of passing on only 3/4 of an error above 2.4x the undithered mean squared error);
- libimagequant (PyPI ``imagequant``): ``quantize_raw_rgba_bytes(rgba, max_colors=N, dithering_level=0 | 1)``,
  its defaults otherwise (speed 4, quality 0-100), which remaps with its own dithering.

Quality, both computed on the result against the source in OKLab (Ottosson's, on the 0..1 scale, times 100):
- mean error: the Euclidean OKLab distance between source and result pixel, averaged over the pixels;
- block error: the image cut into 4x4 blocks (a partial last row/column of blocks dropped), each block's mean OKLab
  value in source and result, the Euclidean distance between the two, averaged over the blocks. This is what
  dithering is for: a dithered result is far from the source pixel by pixel but close on average.
Lower is better on both. (With these definitions the README scene below gives libimagequant 1.98 / 0.70 at
16 colours with dithering, the figures the issue quoted.)

Images: photos (the README scene, docs/images/input_scene.png, enlarged to 512x512 bicubic; and astronaut, coffee
and chelsea from scikit-image's bundled data, skipped with a note when scikit-image is not installed), gradients
(two drawn here) and sprites (bench/sprites.py: a sheet of 16 sprites enlarged 4x, clean and degraded by blur,
JPEG and noise as diffusion models draw pixel art).

Timing: wall time of palette + mapping, each case run by both tools in turn ``--runs`` times after a warm-up (numba
cache, tables), medians. The ratio column is pixart's median divided by libimagequant's (< 1: faster).

    .venv/bin/python bench/bench_extract.py [--runs 5] [--colors 8,16,32] [--only scene] [--method kmeans]
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sprites import degrade, make_sprite  # noqa: E402

from pixart_nodes.core import color  # noqa: E402
from pixart_nodes.core.palette import EXTRACT_METHODS, extract_palette  # noqa: E402
from pixart_nodes.core.quantize import quantize  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _skimage_photo(name: str) -> np.ndarray | None:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / name
    return np.asarray(Image.open(path).convert("RGB")) if path.exists() else None


def gradient_2d(size: int = 512) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    rgb = np.stack([x, y, 0.5 * (x + y)], -1) * 255
    return np.floor(rgb + 0.5).astype(np.uint8)


def gradient_hue(w: int = 512, h: int = 256) -> np.ndarray:
    """A hue sweep left to right, from full colour at the top to dark at the bottom."""
    y, x = np.mgrid[0:h, 0:w]
    hue = x / w * 6.0
    rgb = np.stack([np.clip(np.abs(hue - 3) - 1, 0, 1), np.clip(2 - np.abs(hue - 2), 0, 1),
                    np.clip(2 - np.abs(hue - 4), 0, 1)], -1)
    shade = 1.0 - 0.85 * (y / (h - 1))[..., None]
    return np.floor(rgb * shade * 255 + 0.5).astype(np.uint8)


def sprite_sheet(degraded: bool, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = [np.concatenate([make_sprite(rng, 32, 32)[0] for _ in range(4)], axis=1) for _ in range(4)]
    sheet = np.repeat(np.repeat(np.concatenate(rows, axis=0), 4, axis=0), 4, axis=1)
    if degraded:
        sheet = degrade(sheet, rng, blur=0.8, jpeg=75, noise=3.0)
    return np.ascontiguousarray(sheet)


def images() -> list[tuple[str, str, np.ndarray]]:
    """(kind, name, uint8 RGB image)."""
    scene = Image.open(REPO / "docs" / "images" / "input_scene.png").convert("RGB")
    out = [("photo", "scene 512 (README)", np.asarray(scene.resize((512, 512), Image.BICUBIC)))]
    missing = []
    for name in ("astronaut.png", "coffee.png", "chelsea.png"):
        img = _skimage_photo(name)
        if img is None:
            missing.append(name)
        else:
            out.append(("photo", f"{name.split('.')[0]} {img.shape[1]}x{img.shape[0]}", img))
    if missing:
        print(f"note: scikit-image not installed, photos {', '.join(missing)} skipped")
    out += [
        ("gradient", "gradient 2D 512", gradient_2d()),
        ("gradient", "hue sweep 512x256", gradient_hue()),
        ("sprite", "sprite sheet 512 clean", sprite_sheet(False)),
        ("sprite", "sprite sheet 512 degraded", sprite_sheet(True)),
    ]
    return out


def errors(src: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """(mean error, 4x4 block error), see the module docstring."""
    a = color.srgb_u8_to_oklab(np.ascontiguousarray(src[..., :3]))
    b = color.srgb_u8_to_oklab(np.ascontiguousarray(out[..., :3]))
    mean = float(np.sqrt(((a - b) ** 2).sum(-1)).mean()) * 100
    h, w = (src.shape[0] // 4) * 4, (src.shape[1] // 4) * 4

    def blocks(x: np.ndarray) -> np.ndarray:
        return x[:h, :w].reshape(h // 4, 4, w // 4, 4, 3).mean(axis=(1, 3))

    block = float(np.sqrt(((blocks(a) - blocks(b)) ** 2).sum(-1)).mean()) * 100
    return mean, block


def run_pixart(img: np.ndarray, n: int, dither: bool, method: str | None, **kw) -> np.ndarray:
    # told that error diffusion follows (dither=True), extraction spreads the colours out for it
    pal = extract_palette(img, n, dither=dither) if method is None else extract_palette(img, n, method, dither=dither)
    return quantize(img, pal, dither="floyd-steinberg" if dither else "none", distance="oklab", **kw).image


def run_liq(img: np.ndarray, n: int, dither: bool) -> np.ndarray:
    import imagequant

    h, w = img.shape[:2]
    rgba = np.empty((h, w, 4), np.uint8)
    rgba[..., :3] = img[..., :3]
    rgba[..., 3] = 255
    idx, pal = imagequant.quantize_raw_rgba_bytes(rgba.tobytes(), w, h, dithering_level=1.0 if dither else 0.0,
                                                  max_colors=n)
    pal = np.array(pal, np.uint8).reshape(-1, 4)[:, :3]
    return pal[np.frombuffer(idx, np.uint8).reshape(h, w)]


def timed(fn, runs: int) -> tuple[np.ndarray, list[float]]:
    out = fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return out, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--colors", default="8,16,32")
    ap.add_argument("--only", default="", help="only images whose name holds this text (any case)")
    ap.add_argument("--method", default=None, choices=EXTRACT_METHODS, help="pixart extraction method "
                    "(default: extract_palette's default)")
    args = ap.parse_args()
    try:
        import imagequant  # noqa: F401
    except ImportError:
        sys.exit("libimagequant is the reference: pip install imagequant (the bench extra)")
    counts = [int(c) for c in args.colors.split(",")]
    cases = [c for c in images() if args.only.lower() in c[1].lower()]
    print(f"pixart extract_palette({args.method or 'default'}) + quantize(distance=oklab) vs libimagequant; "
          f"errors x100 OKLab, lower is better; wall ms median of {args.runs}")
    print(f"{'image':28s} {'N':>3s} {'dither':>7s} | {'mean':>6s} {'block':>6s} {'ms':>7s} | "
          f"{'liq mean':>8s} {'block':>6s} {'ms':>7s} | {'mean/liq':>8s} {'block/liq':>9s} {'time/liq':>8s}")
    wins: dict[str, dict[str, list[int]]] = {}  # mode -> kind -> [both errors no worse, faster, cases]
    ratios: dict[str, list[tuple[float, float, float]]] = {}
    modes = [("none", False, {}), ("FS", True, {}), ("FS damp", True, {"damping": True})]
    # every mode once before the first timed case: that case otherwise also paid the process's first calls (the
    # kernels' first use, the first large allocations), 0.72x libimagequant's time in one run and 1.02x in another
    if cases:
        for _, dither, kw in modes:
            run_pixart(cases[0][2], counts[0], dither, args.method, **kw)
            run_liq(cases[0][2], counts[0], dither)
    for kind, name, img in cases:
        for n in counts:
            liq_cache: dict[bool, tuple[float, float, float]] = {}
            for label, dither, kw in modes:
                # interleaved: each round runs both tools once
                ours_t: list[float] = []
                liq_t: list[float] = []
                ours = run_pixart(img, n, dither, args.method, **kw)
                ref = run_liq(img, n, dither)
                for _ in range(args.runs):
                    _, t = timed(lambda: run_pixart(img, n, dither, args.method, **kw), 1)
                    ours_t += t
                    if dither not in liq_cache:
                        _, t = timed(lambda: run_liq(img, n, dither), 1)
                        liq_t += t
                if dither not in liq_cache:
                    liq_cache[dither] = (*errors(img, ref), statistics.median(liq_t) * 1e3)
                m, b = errors(img, ours)
                lm, lb, tl = liq_cache[dither]
                tm = statistics.median(ours_t) * 1e3
                rm = m / lm if lm > 0 else (1.0 if m == 0 else np.inf)
                rb = b / lb if lb > 0 else (1.0 if b == 0 else np.inf)
                ratios.setdefault(label, []).append((rm, rb, tm / tl))
                w = wins.setdefault(label, {}).setdefault(kind, [0, 0, 0])
                w[0] += m <= lm + 1e-9 and b <= lb + 1e-9
                w[1] += tm < tl
                w[2] += 1
                print(f"{name:28s} {n:3d} {label:>7s} | {m:6.3f} {b:6.3f} {tm:7.1f} | "
                      f"{lm:8.3f} {lb:6.3f} {tl:7.1f} | {rm:8.3f} {rb:9.3f} {tm / tl:8.2f}", flush=True)
    print("\nper mode and kind: cases where pixart's mean and block errors are both no worse than libimagequant's "
          "(with its dithering for FS rows); cases where pixart is faster")
    for label, kinds in wins.items():
        r = np.array(ratios[label])
        print(f"  {label}: " + "; ".join(f"{kind} quality {q}/{t}, faster {f}/{t}" for kind, (q, f, t) in kinds.items())
              + f"; worst ratios mean {r[:, 0].max():.3f}, block {r[:, 1].max():.3f}, time {r[:, 2].max():.2f}")

if __name__ == "__main__":
    main()
