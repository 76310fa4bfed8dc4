"""Generate the node reference: before/after pictures for every node that makes images, and docs/nodes.md.

    python docs/make_pictures.py            # writes docs/images/*.png and docs/nodes.md

The input pictures are drawn here (no downloaded art), and every "after" picture comes from running the node class
itself, so the pictures show what the node does today. Tables of inputs and outputs come from each node's
INPUT_TYPES, tooltips and OUTPUT_TOOLTIPS: edit those, then re-run this script, instead of editing nodes.md.
Nodes that need models (Axera) or produce no image get their tables only.
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

DOCS = Path(__file__).resolve().parent
IMAGES = DOCS / "images"
sys.path.insert(0, str(DOCS.parent / "custom_nodes"))

import pixart_nodes  # noqa: E402
from pixart_nodes.core.tensors import iter_batch_uint8, uint8_to_image  # noqa: E402

MAX_BYTES = 100_000


# --- synthetic test pictures -------------------------------------------------------------------------------------

def scene(size: int = 128) -> np.ndarray:
    """A small landscape: sky gradient, sun, two rows of hills, a house with a dark outline and a window."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.zeros((size, size, 3), np.float32)
    img[...] = np.stack([0.35 + 0.5 * y, 0.55 + 0.35 * y, 0.95 - 0.2 * y], -1)  # sky, darker blue on top
    sun = np.clip(1.5 - np.hypot(x - 0.75, y - 0.25) / 0.09, 0, 1)[..., None]
    img = img * (1 - sun) + np.array([1.0, 0.85, 0.3]) * sun
    far = y > 0.55 + 0.06 * np.sin(x * 9.0)
    img[far] = np.stack([0.25 + 0.1 * x, 0.55 + 0.1 * np.sin(x * 20), 0.3 + 0 * x], -1)[far]
    near = y > 0.72 + 0.05 * np.sin(x * 5.0 + 1.0)
    shade = 0.15 * np.sin(x * 60) * np.sin(y * 60)  # texture that averaging smooths and kcentroid ignores
    img[near] = np.stack([0.2 + shade, 0.42 + shade, 0.15 + 0 * x], -1)[near]
    house = (x > 0.18) & (x < 0.42) & (y > 0.52) & (y < 0.74)
    roof = (y > 0.36) & (y <= 0.52) & (np.abs(x - 0.30) < (y - 0.36) * 0.9)
    outline = (x > 0.165) & (x < 0.435) & (y > 0.505) & (y < 0.755) & ~house
    img[outline | (roof & (np.abs(x - 0.30) > (y - 0.36) * 0.9 - 0.02))] = (0.1, 0.07, 0.1)
    img[house] = (0.85, 0.75, 0.6)
    img[roof & (np.abs(x - 0.30) <= (y - 0.36) * 0.9 - 0.02)] = (0.7, 0.2, 0.2)
    window = (np.abs(x - 0.30) < 0.04) & (np.abs(y - 0.61) < 0.04)
    img[window] = (0.95, 0.9, 0.4)
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def sprite(size: int = 64) -> np.ndarray:
    """An RGBA character on a transparent background, for the alpha handling."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    body = ((x - 0.5) / 0.38) ** 2 + ((y - 0.62) / 0.32) ** 2 < 1
    out = np.zeros((size, size, 4), np.uint8)
    out[body] = (70, 180, 90, 255)
    rim = body & ~(((x - 0.5) / 0.34) ** 2 + ((y - 0.62) / 0.28) ** 2 < 1)
    out[rim] = (20, 60, 30, 255)
    for ex in (0.38, 0.62):
        eye = (np.abs(x - ex) < 0.05) & (np.abs(y - 0.55) < 0.08)
        out[eye] = (250, 250, 250, 255)
        out[eye & (np.abs(x - ex - 0.015) < 0.025)] = (10, 10, 20, 255)
    return out


def gradient(w: int = 240, h: int = 60) -> np.ndarray:
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    return np.stack([ramp, ramp * 0.6 + 40, 255 - ramp], -1).astype(np.uint8)


# --- running nodes -------------------------------------------------------------------------------------------------

def tensor(img: np.ndarray):
    return uint8_to_image(img)


def first_image(batch) -> np.ndarray:
    return next(iter_batch_uint8(batch))


def run_node(cls: type, **inputs: Any) -> tuple:
    """Call a node with its INPUT_TYPES defaults, overridden by ``inputs``; returns its result tuple."""
    spec = cls.INPUT_TYPES()
    args: dict[str, Any] = {}
    for group in ("required", "optional"):
        for name, entry in spec.get(group, {}).items():
            if name in inputs:
                args[name] = inputs[name]
            elif group == "required":
                kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
                if "default" in opts:
                    args[name] = opts["default"]
                elif isinstance(kind, (list, tuple)) and kind:
                    args[name] = kind[0]
                else:
                    raise ValueError(f"{cls.__name__}: no value for required input {name!r}")
    out = getattr(cls(), cls.FUNCTION)(**args)
    return out["result"] if isinstance(out, dict) else out


def save(name: str, img: np.ndarray, scale: int = 1) -> str:
    if scale > 1:
        img = np.repeat(np.repeat(img, scale, 0), scale, 1)
    IMAGES.mkdir(exist_ok=True)
    path = IMAGES / f"{name}.png"
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=True)
    if buf.tell() > MAX_BYTES:
        raise RuntimeError(f"{path.name}: {buf.tell()} bytes, over the {MAX_BYTES} byte budget")
    path.write_bytes(buf.getvalue())
    return f"images/{path.name}"


def swatch(colors: np.ndarray, cell: int = 16, per_row: int = 16) -> np.ndarray:
    n = len(colors)
    rows = (n + per_row - 1) // per_row
    out = np.full((rows * cell, min(n, per_row) * cell, 3), 255, np.uint8)
    for i, c in enumerate(colors):
        r, q = divmod(i, per_row)
        out[r * cell:(r + 1) * cell, q * cell:(q + 1) * cell] = c
    return out


Picture = tuple[str, str]  # (caption, relative path)


def pictures_pixelate(cls) -> list[Picture]:
    img = scene()
    pics = [("input", save("input_scene", img))]
    for method in ("box", "nearest", "median", "kcentroid", "outline"):
        out, _ = run_node(cls, image=tensor(img), method=method, pixel_size=8, upscale=True)
        pics.append((f"method={method}, pixel_size=8", save(f"pixelate_{method}", first_image(out))))
    out, _ = run_node(cls, image=tensor(img), method="kcentroid", width=32, height=32, upscale=False)
    pics.append(("kcentroid, width=height=32, upscale off (shown 4x)", save("pixelate_32", first_image(out), 4)))
    spr = sprite()
    pics.append(("RGBA sprite (alpha kept)", save("input_sprite", spr)))
    out, _ = run_node(cls, image=tensor(spr), method="kcentroid", pixel_size=4, upscale=True)
    pics.append(("sprite, kcentroid, pixel_size=4", save("pixelate_sprite", first_image(out))))
    return pics


def fake_pixel_art(small: np.ndarray | None = None, seed: int = 0, s: float = 4.7) -> tuple[np.ndarray, np.ndarray]:
    """What a diffusion model's "pixel art" looks like: a small square picture (default: the scene at 32x32,
    outline method) enlarged ``s`` times with the grid starting mid-cell, blurred, JPEG-compressed at quality 70
    and a little noisy. Returns the fake and the small picture it was made from."""
    import cv2

    from pixart_nodes.core import pixelate

    if small is None:
        small = pixelate.pixelate(scene(), width=32, height=32, method="outline")
    n, head = small.shape[0], 2.2
    idx = np.minimum(((np.arange(int(n * s - head)) + 0.5 + head) / s).astype(int), n - 1)
    big = cv2.GaussianBlur(small[np.ix_(idx, idx)], (0, 0), 0.8)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="JPEG", quality=70)
    big = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    noise = np.random.default_rng(seed).normal(0, 3, big.shape)
    return np.clip(big + noise, 0, 255).astype(np.uint8), small


def sprite_on_green() -> np.ndarray:
    """The RGBA character at 32x32 (outline method) on a flat green, as generators draw sprites."""
    from pixart_nodes.core import pixelate

    small = pixelate.pixelate(sprite(), width=32, height=32, method="outline")
    a = small[..., 3:4].astype(np.float32) / 255.0
    return (small[..., :3] * a + np.array([90, 200, 120]) * (1 - a) + 0.5).astype(np.uint8)


def pictures_snap(cls) -> list[Picture]:
    from pixart_nodes.nodes_pixelate import PixartPixelate

    fake, small = fake_pixel_art()
    pics = [("fake pixel art: 32x32 enlarged 4.7x, grid offset, blur, JPEG q70, noise", save("snap_input", fake))]
    out, _, grid, cw, ch = run_node(cls, image=tensor(fake), scale=4)
    info = json.loads(grid)
    pics.append((f"snapped: {info['columns']}x{info['rows']}, cells {cw:.2f}x{ch:.2f} px (shown 4x)",
                 save("snap_output", first_image(out))))
    kc, _ = run_node(PixartPixelate, image=tensor(fake), method="kcentroid", pixel_size=5, upscale=False)
    pics.append(("old way: pixelate kcentroid, pixel_size=5 (grid not aligned; shown 4x)",
                 save("snap_kcentroid", first_image(kc), 4)))
    pics.append(("the 32x32 original (shown 4x)", save("snap_truth", small, 4)))
    return pics


def pictures_pipeline() -> list[Picture]:
    """The AI pixel-art path on the scene: a model drew it as pixel art on a 48-cell grid (blurred, JPEG,
    off-grid), the result should be 32x32. Snap, then the outline-keeping downscale, then cleanup; beside it the old way,
    k-centroid straight from the picture to 32x32."""
    from pixart_nodes.nodes_cleanup import PixartCleanup
    from pixart_nodes.nodes_pixelate import PixartPixelate, PixartSnapToGrid

    from pixart_nodes.core import pixelate, quantize
    from pixart_nodes.core.palette import extract_palette

    # what the model drew: the scene as 48x48 pixel art in 16 colours
    drawn = pixelate.pixelate(scene(), width=48, height=48, method="outline")
    drawn = quantize.quantize(drawn, extract_palette(drawn, 16)).image
    fake, _ = fake_pixel_art(drawn, seed=5, s=3.5)
    pics = [(f"AI picture: a 48-cell grid, {fake.shape[1]}x{fake.shape[0]} px, blurred, JPEG, off-grid",
             save("pipeline_input", fake))]
    snapped, _, grid, _, _ = run_node(PixartSnapToGrid, image=tensor(fake), min_columns=32, min_rows=32)
    info = json.loads(grid)
    pics.append((f"1. snap: {info['columns']}x{info['rows']} (shown 4x)",
                 save("pipeline_snap", first_image(snapped), 4)))
    small, _ = run_node(PixartPixelate, image=snapped, method="outline", width=32, height=32, upscale=False)
    pics.append(("2. outline-keeping downscale to 32x32 (shown 4x)", save("pipeline_outline", first_image(small), 4)))
    clean, _, report = run_node(PixartCleanup, image=small)
    pics.append((f"3. cleanup: {report} (shown 4x)", save("pipeline_cleanup", first_image(clean), 4)))
    old, _ = run_node(PixartPixelate, image=tensor(fake), method="kcentroid", width=32, height=32, upscale=False)
    pics.append(("old way: k-centroid straight to 32x32 (shown 4x)", save("pipeline_kcentroid", first_image(old), 4)))
    return pics


def pictures_cleanup(cls) -> list[Picture]:
    from pixart_nodes.core import snap

    pics = pictures_pipeline()
    snapped = snap.snap(fake_pixel_art(seed=3)[0]).image
    pics.append(("snapped fake scene (shown 4x)", save("cleanup_input", snapped, 4)))
    out, _, report = run_node(cls, image=tensor(snapped))
    pics.append((f"cleanup, defaults: {report} (shown 4x)", save("cleanup_output", first_image(out), 4)))
    snapped = snap.snap(fake_pixel_art(sprite_on_green(), seed=4)[0]).image
    pics.append(("snapped fake sprite (shown 4x)", save("cleanup_sprite_input", snapped, 4)))
    out, mask, report = run_node(cls, image=tensor(snapped), background="auto")
    rgba = np.dstack([first_image(out), np.clip((1 - mask[0].numpy()) * 255 + 0.5, 0, 255).astype(np.uint8)])
    pics.append((f"cleanup, background=auto: {report} (shown 4x)", save("cleanup_sprite_output", rgba, 4)))
    return pics


def pictures_rgb565(cls) -> list[Picture]:
    grad = gradient()
    pics = [("input gradient", save("input_gradient", grad))]
    for dither in (False, True):
        _, prev = run_node(cls, image=tensor(grad), width=240, height=60, dither=dither, save_file=False)
        pics.append((f"LCD preview, dither={'on' if dither else 'off'} (shown 2x)",
                     save(f"rgb565_dither_{'on' if dither else 'off'}", first_image(prev)[:, :120], 2)))
    img = scene()
    _, prev = run_node(cls, image=tensor(img[16:112]), width=240, height=240, mode="letterbox", save_file=False,
                       background="#202040")
    pics.append(("128x96 input, 240x240 letterbox", save("rgb565_letterbox", first_image(prev))))
    return pics


def pictures_rgb565_preview(cls) -> list[Picture]:
    from pixart_nodes.core import rgb565

    img = rgb565.fit(scene(), 120, 120, "stretch")
    data = rgb565.to_rgb565(img, invert=True)
    (raw,) = run_node(cls, rgb565_base64=rgb565.to_base64(data), width=120, height=120, inverted=False)
    (fixed,) = run_node(cls, rgb565_base64=rgb565.to_base64(data), width=120, height=120, inverted=True)
    return [("inverted frame read with inverted=off", save("rgb565_preview_raw", first_image(raw))),
            ("same frame, inverted=on", save("rgb565_preview", first_image(fixed)))]


def pictures_quantize(cls) -> list[Picture]:
    from pixart_nodes.core.palette import named_palette

    img = scene()
    grey = np.linspace(0, 255, 120, dtype=np.float32)[None, :, None].repeat(40, 0).repeat(3, 2).astype(np.uint8)
    pics = [("input", save("input_scene", img))]
    pal = named_palette("pico-8")
    for dither in ("none", "floyd-steinberg", "atkinson", "bayer-4x4", "blue-noise"):
        out, _, used = run_node(cls, image=tensor(img), palette=pal, dither=dither)
        pics.append((f"PICO-8, dither={dither} ({used} colours used)", save(f"quantize_{dither}", first_image(out))))
    bw = named_palette("1bit")
    for dither in ("none", "floyd-steinberg", "bayer-8x8"):
        out, _, _ = run_node(cls, image=tensor(grey), palette=bw, dither=dither, distance="rgb")
        pics.append((f"grey ramp to 1-bit, dither={dither} (shown 2x)",
                     save(f"quantize_1bit_{dither}", first_image(out), 2)))
    return pics


def pictures_palette(cls) -> list[Picture]:
    img = scene()
    pics = [("input", save("input_scene", img))]
    for name in ("pico-8", "gameboy", "sweetie-16", "endesga-32"):
        _, sw, n = run_node(cls, source="named", name=name)
        pics.append((f"named: {name} ({n} colours)", save(f"palette_{name}", first_image(sw))))
    for method in ("kmeans", "median-cut"):
        _, sw, n = run_node(cls, source="image", image=tensor(img), n_colors=8, method=method)
        pics.append((f"from the input image: {method}, 8 colours", save(f"palette_{method}", first_image(sw))))
    return pics


def pictures_palette_search(cls) -> list[Picture]:
    out = getattr(cls(), cls.FUNCTION)(text="gameboy", min_colors=4, max_colors=4, pick=1)
    palette, swatches, _, count = out["result"]
    return [(f"text=gameboy, 4 colours: {count} matches, the first 24, one row each (shown 2x)",
             save("palettesearch_gameboy", first_image(swatches)[:, :32], 2)),
            (f"output palette: {palette.name}", save("palettesearch_palette", swatch(palette.colors)))]


def pictures_generic(cls) -> list[Picture]:
    """Any other node: feed the scene to its IMAGE input (and PICO-8 to a palette input) with defaults."""
    spec = cls.INPUT_TYPES()
    req = spec.get("required", {})
    inputs: dict[str, Any] = {}
    for name, entry in req.items():
        kind = entry[0]
        if kind == "IMAGE":
            inputs[name] = tensor(scene())
        elif kind == "PIXART_PALETTE":
            from pixart_nodes.core.palette import named_palette

            inputs[name] = named_palette("pico-8")
        elif kind == "MASK":
            import torch

            inputs[name] = torch.zeros((1, 128, 128))
        elif isinstance(kind, str) and kind not in ("INT", "FLOAT", "STRING", "BOOLEAN"):
            return []  # needs another node's object (a model, a pipeline): tables only
    if not cls.RETURN_TYPES:
        return []  # an output node that only writes files (Save Indexed): nothing to show here
    if not any(entry[0] == "IMAGE" for entry in req.values()) and "PIXART_PALETTE" not in cls.RETURN_TYPES:
        return []
    result = run_node(cls, **inputs)
    pics: list[Picture] = []
    if any(entry[0] == "IMAGE" for entry in req.values()):
        pics.append(("input", save("input_scene", scene())))
    slug = cls.__name__.removeprefix("Pixart").lower()
    for name, kind, value in zip(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES), cls.RETURN_TYPES, result):
        if kind == "IMAGE":
            pics.append((f"output {name} (default settings)", save(f"{slug}_{name}", first_image(value))))
        elif kind == "PIXART_PALETTE":
            pics.append((f"output {name}: {value.name}", save(f"{slug}_{name}", swatch(value.colors))))
    return pics


RECIPES: dict[str, Callable[[type], list[Picture]]] = {
    "PixartPixelate": pictures_pixelate,
    "PixartRGB565": pictures_rgb565,
    "PixartRGB565Preview": pictures_rgb565_preview,
    "PixartQuantize": pictures_quantize,
    "PixartPalette": pictures_palette,
    "PixartPaletteSearch": pictures_palette_search,
    "PixartSnapToGrid": pictures_snap,
    "PixartCleanup": pictures_cleanup,
}

NOTES: dict[str, str] = {
    "PixartPixelate": (
        "Core: `pixart_nodes.core.pixelate.pixelate(img_uint8_HWC, *, width=None, height=None, pixel_size=None, "
        "method=\"box\"|\"nearest\"|\"median\"|\"kcentroid\"|\"outline\", upscale=False, k=2, contrast=0.12)`. "
        "With `pixel_size` the last row/column of blocks holds the remainder; with a target size block edges are "
        "`floor(i*H/h)`. Box with alpha averages colour weighted by alpha. `outline` keeps lines and dots "
        "thinner than a block (see `core/pixelate.py`; `bench/bench_outline.py` compares it with PixelOE). "
        "Command line: `pixart convert IN OUT --pixel-size 4 --method outline [--contrast 0.12]`."
    ),
    "PixartSnapToGrid": (
        "Core: `pixart_nodes.core.snap.snap(img_or_list, *, min_size=2, max_size=None, cell_width=None, "
        "cell_height=None)` returns `SnapResult(image, detected, x, y, message)`; `x`/`y` hold the cell edges, "
        "mean size, offset and score per axis, `to_dict(edges=True)` is the `grid` output. Per axis: an edge "
        "profile (luma-weighted colour differences above the noise floor), period candidates from its "
        "autocorrelation and spectrum, the grid's local phase tracked by demodulation (so drifting grids are "
        "followed), edges moved onto the evidence by a Viterbi pass, candidates scored by the evidence they explain; "
        "colour per cell = the dominant colour of the cell's inner part (never a per-channel mix). The AI pixel-art "
        "workflow sets `min_columns`/`min_rows` to the result size, so a coarser grid passes through. Command line: `pixart snap IN OUT [--cell-size 5.5] "
        "[--scale 4] [--json grid.json]`. Benchmark: `bench/bench_snap.py` (against proper-pixel-art and unfake)."
    ),
    "PixartPalette": (
        "The library: `pixart_nodes.core.palettes` (`LIBRARY`, `search(text, colors=, min_colors=, max_colors=, "
        "kind=)`, `info(name)`), data in `palettes/library.json` with credits in `palettes/CREDITS.md`: Lospec's "
        "most used palettes and the classic hardware ones, each with title, size, author and source, colours in "
        "their published order. Command line: `pixart palettes [--search TEXT] [--colors N | --min N --max N]`; "
        "`pixart palette-file NAME -o out.gpl` writes any of them as .hex .gpl .pal .act .ase .txt or a PNG strip."
    ),
    "PixartCleanup": (
        "Core: `pixart_nodes.core.cleanup.cleanup(img, *, merge=0.03, rare=0.0, isolated=True, jaggies=True, "
        "background=None|\"auto\"|\"#rrggbb\", tolerance=0.05, connected=True)` returns `CleanupResult(image, "
        "stats)`. A lone pixel with its own colour two steps away (a sparse dither, a dotted line) is kept; note "
        "that single highlight pixels count as isolated. Command line: `pixart cleanup IN OUT [--background auto] "
        "[--no-jaggies]`. Benchmark: `bench/bench_cleanup.py`."
    ),
    "PixartRGB565": (
        "Output node. UI output: `{\"rgb565_base64\": [b64, ...], \"text\": [summary], \"rgb565\": [{\"filename\", "
        "\"subfolder\", \"type\": \"output\", \"bytes\", \"width\", \"height\", \"format\": \"rgb565-be\"|"
        "\"rgb565-le\"}]}` (`rgb565` only when `save_file` is on). A word is `(R>>3)<<11 | (G>>2)<<5 | B>>3`; "
        "240x240 gives 115,200 bytes. Bit-exact with OpenCV `COLOR_RGB2BGR565` (which stores the same word "
        "little-endian). Core: `pixart_nodes.core.rgb565.to_rgb565 / from_rgb565 / fit`. Command line: "
        "`pixart rgb565 IN OUT.bin --size 240x240 --byte-order big [--invert] [--mode crop]`."
    ),
    "PixartRGB565Preview": (
        "Channels are expanded to full scale as the panel shows them (31 -> 255, as Pillow's `BGR;16` decoder; "
        "OpenCV's `COLOR_BGR5652RGB` shifts, 31 -> 248), and packing the preview again gives the same frame. "
        "Command line: `pixart rgb565-preview IN.bin OUT.png --size 240x240`."
    ),
}


# --- markdown ------------------------------------------------------------------------------------------------------

def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _input_rows(cls) -> list[str]:
    rows = ["| input | type | default | description |", "|---|---|---|---|"]
    spec = cls.INPUT_TYPES()
    for group in ("required", "optional"):
        for name, entry in spec.get(group, {}).items():
            kind = entry[0]
            opts = entry[1] if len(entry) > 1 else {}
            kind_text = " / ".join(f"`{k}`" for k in kind) if isinstance(kind, (list, tuple)) else f"`{kind}`"
            default = opts.get("default", "")
            if isinstance(default, str) and default:
                default = f"`{default}`"
            rng = ""
            if "min" in opts or "max" in opts:
                rng = f" ({opts.get('min', '')}..{opts.get('max', '')})"
            label = name + (" (optional)" if group == "optional" else "")
            rows.append(f"| {label} | {_cell(kind_text)} | {_cell(default)}{rng} | {_cell(opts.get('tooltip', ''))} |")
    return rows


def _output_rows(cls) -> list[str]:
    rows = ["| output | type | description |", "|---|---|---|"]
    names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
    tips = getattr(cls, "OUTPUT_TOOLTIPS", ("",) * len(cls.RETURN_TYPES))
    is_list = getattr(cls, "OUTPUT_IS_LIST", (False,) * len(cls.RETURN_TYPES))
    for name, kind, tip, lst in zip(names, cls.RETURN_TYPES, tips, is_list):
        rows.append(f"| {name} | `{kind}`{' (list)' if lst else ''} | {_cell(tip)} |")
    return rows


def build() -> str:
    lines = [
        "# Pixart node reference",
        "",
        "Generated by `docs/make_pictures.py` from the node classes (inputs, defaults, tooltips) and by running "
        "each node on drawn test pictures. Edit the nodes' tooltips and re-run the script rather than this file.",
        "",
        "Conventions: `IMAGE` is a float batch `[B,H,W,C]` (C = 3, or 4 with alpha), `MASK` is `[B,H,W]` with "
        "1 = transparent (as Load Image gives it). Every node processes a whole batch.",
        "",
    ]
    mapping = pixart_nodes.NODE_CLASS_MAPPINGS
    names = pixart_nodes.NODE_DISPLAY_NAME_MAPPINGS
    by_cat: dict[str, list[str]] = {}
    for key, cls in mapping.items():
        by_cat.setdefault(cls.CATEGORY, []).append(key)
    lines.append("| category | nodes |")
    lines.append("|---|---|")
    for cat in sorted(by_cat):
        links = ", ".join(f"[{names.get(k, k)}](#{k.lower()})" for k in by_cat[cat])
        lines.append(f"| {cat} | {links} |")
    lines.append("")
    problems: list[str] = []
    for cat in sorted(by_cat):
        lines += [f"## {cat}", ""]
        for key in by_cat[cat]:
            cls = mapping[key]
            lines += [f"### {key}", "", f"**{names.get(key, key)}**" + (" (output node)" if getattr(
                cls, "OUTPUT_NODE", False) else ""), "", _cell(getattr(cls, "DESCRIPTION", "")), ""]
            if key in NOTES:
                lines += [NOTES[key], ""]
            lines += _input_rows(cls) + [""] + _output_rows(cls) + [""]
            try:
                pics = RECIPES.get(key, pictures_generic)(cls)
            except Exception as exc:  # a picture failing must not hide the tables; it is reported below
                problems.append(f"{key}: {exc.__class__.__name__}: {exc}")
                pics = []
            if pics:
                lines.append("| " + " | ".join(_cell(c) for c, _ in pics) + " |")
                lines.append("|" + "---|" * len(pics))
                lines.append("| " + " | ".join(f"![{_cell(c)}]({p})" for c, p in pics) + " |")
                lines.append("")
    for p in problems:
        print(f"no pictures: {p}", file=sys.stderr)
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    text = build()
    (DOCS / "nodes.md").write_text(text, encoding="utf-8")
    sizes = sorted((p.stat().st_size, p.name) for p in IMAGES.glob("*.png"))
    print(f"docs/nodes.md: {len(text.splitlines())} lines; {len(sizes)} pictures, largest "
          f"{sizes[-1][1]} {sizes[-1][0]} bytes" if sizes else "no pictures")


if __name__ == "__main__":
    main()
