"""A1111's `X/Y/Z plot` script: one generation per cell of up to three axes, answered as A1111 answers it (the grid
first, then the sub-grids and single images when asked for).

`script_args` are A1111's 18 controls in order: `[x_type, x_values, x_values_dropdown, y_type, y_values,
y_values_dropdown, z_type, z_values, z_values_dropdown, draw_legend, include_lone_images, include_sub_grids,
no_fixed_seeds, vary_seeds_x, vary_seeds_y, vary_seeds_z, margin_size, csv_mode]`; an axis type is an index into
A1111 1.10's list for the tab (`TXT2IMG_AXES`, `IMG2IMG_AXES`). Each cell becomes an ordinary request of the tab,
so every axis runs through the same rules as a client's own request; axes with no effect in this bridge are
refused naming them rather than drawn as a grid of identical pictures.
"""
from __future__ import annotations

import csv
import io
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from bridge.fields import MAX_TEXT

from .models import MAX_IMAGES_PER_REQUEST, MAX_SEED, field_error

TXT2IMG_AXES = (
    "Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "Hires steps", "CFG Scale", "Prompt S/R",
    "Prompt order", "Sampler", "Hires sampler", "Checkpoint name", "Negative Guidance minimum sigma", "Sigma Churn",
    "Sigma min", "Sigma max", "Sigma noise", "Schedule type", "Schedule min sigma", "Schedule max sigma",
    "Schedule rho", "Beta schedule alpha", "Beta schedule beta", "Eta", "Clip skip", "Denoising",
    "Initial noise multiplier", "Extra noise", "Hires upscaler", "VAE", "Styles", "UniPC Order", "Face restore",
    "Token merging ratio", "Token merging ratio high-res", "Always discard next-to-last sigma",
    "SGM noise multiplier", "Refiner checkpoint", "Refiner switch at", "RNG source", "FP8 mode", "Size")
IMG2IMG_AXES = (
    "Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "CFG Scale", "Image CFG Scale", "Prompt S/R",
    "Prompt order", "Sampler", "Checkpoint name", "Negative Guidance minimum sigma", "Sigma Churn", "Sigma min",
    "Sigma max", "Sigma noise", "Schedule type", "Schedule min sigma", "Schedule max sigma", "Schedule rho",
    "Beta schedule alpha", "Beta schedule beta", "Eta", "Clip skip", "Denoising", "Initial noise multiplier",
    "Extra noise", "Cond. Image Mask Weight", "VAE", "Styles", "UniPC Order", "Face restore", "Token merging ratio",
    "Token merging ratio high-res", "Always discard next-to-last sigma", "SGM noise multiplier",
    "Refiner checkpoint", "Refiner switch at", "RNG source", "FP8 mode", "Size")
# Axes read from the dropdown list (unless csv_mode), as A1111's axes with `choices` are.
DROPDOWN_AXES = {"Sampler", "Hires sampler", "Checkpoint name", "Schedule type", "Hires upscaler", "VAE", "Styles"}
# Above this many cells a plot is refused before anything runs (A1111 bounds the grid's megapixels too).
MAX_CELLS = MAX_IMAGES_PER_REQUEST
# A1111's `img_max_size_mp` default: a plot whose grid would reach this many megapixels is refused before anything
# runs. The option may lower it; it cannot raise it, since any client may set options.
MAX_GRID_MP = 200
# The grid as drawn (its legend bands and margins too) may be at most this many times the limit: the largest
# picture the bridge assembles, and what it opens past Pillow's decompression-bomb limit (`open_built`).
DRAWN_FACTOR = 2


def _override(key: str) -> Callable[[dict[str, Any], Any], None]:
    def apply(req: dict[str, Any], value: Any) -> None:
        req["override_settings"] = {**(req.get("override_settings") or {}), key: value}
    return apply


def _field(key: str) -> Callable[[dict[str, Any], Any], None]:
    def apply(req: dict[str, Any], value: Any) -> None:
        req[key] = value
    return apply


class _TooLong(ValueError):
    pass


def _prompt_sr(req: dict[str, Any], value: Any) -> None:
    # The axis's first value is what is searched; every value replaces it (the first leaves the prompt as is).
    search, replace = value

    def replaced(text: str, key: str) -> str:
        # measured before it is made: a 10,000-character prompt of the searched text, each match replaced by
        # 20,000 characters, was 200 MB per cell
        length = len(text) + text.count(search) * (len(replace) - len(search))
        if length > MAX_TEXT:
            raise _TooLong(f"Prompt S/R: replacing {search!r:.40} with {replace!r:.40} makes the {key} {length:,} "
                           f"characters long; at most {MAX_TEXT:,}")
        return text.replace(search, replace)

    for key in ("prompt", "negative_prompt"):
        text = req.get(key) or ""
        # a list of prompts (one per image) has each replaced
        req[key] = [replaced(str(t), key) for t in text] if isinstance(text, list) else replaced(text, key)


def _size(req: dict[str, Any], value: Any) -> None:
    req["width"], req["height"] = value


def _styles(req: dict[str, Any], value: Any) -> None:
    req["styles"] = [*(req.get("styles") or []), *[s for s in value.split(",") if s]]


@dataclass(frozen=True)
class Axis:
    kind: str  # "int" | "float" | "str" | "size" | "sr" | "bool"
    apply: Callable[[dict[str, Any], Any], None]


AXES: dict[str, Axis] = {
    "Seed": Axis("int", _field("seed")),
    "Var. seed": Axis("int", _field("subseed")),
    "Var. strength": Axis("float", _field("subseed_strength")),
    "Steps": Axis("int", _field("steps")),
    "Hires steps": Axis("int", _field("hr_second_pass_steps")),
    "CFG Scale": Axis("float", _field("cfg_scale")),
    "Prompt S/R": Axis("sr", _prompt_sr),
    "Sampler": Axis("str", _field("sampler_name")),
    "Hires sampler": Axis("str", _field("hr_sampler_name")),
    "Checkpoint name": Axis("str", _override("sd_model_checkpoint")),
    "Schedule type": Axis("str", _field("scheduler")),
    "Eta": Axis("float", _field("eta")),
    "Clip skip": Axis("int", _override("CLIP_stop_at_last_layers")),
    "Denoising": Axis("float", _field("denoising_strength")),
    "Hires upscaler": Axis("str", _field("hr_upscaler")),
    "VAE": Axis("str", _override("sd_vae")),
    "Styles": Axis("str", _styles),
    "Face restore": Axis("bool", _field("restore_faces")),
    "Size": Axis("size", _size),
}

_INT_RANGE = re.compile(r"^\s*([+-]?\d+)\s*-\s*([+-]?\d+)(?:\s*\(([+-]\d+)\s*\))?\s*$")
_INT_COUNT = re.compile(r"^\s*([+-]?\d+)\s*-\s*([+-]?\d+)(?:\s*\[(\d+)\s*])\s*$")
_FLOAT_RANGE = re.compile(r"^\s*([+-]?\d+(?:\.\d*)?)\s*-\s*([+-]?\d+(?:\.\d*)?)(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*$")
_FLOAT_COUNT = re.compile(r"^\s*([+-]?\d+(?:\.\d*)?)\s*-\s*([+-]?\d+(?:\.\d*)?)(?:\s*\[(\d+(?:\.\d*)?)\s*])\s*$")


def _csv(text: str) -> list[str]:
    return [v.strip() for row in csv.reader(io.StringIO(text)) for v in row if v.strip()]


class _TooMany(Exception):
    """A token of more values than a plot may have (counted before they are made: `1-2000000000` is a range)."""

    def __init__(self, count: float) -> None:
        super().__init__(count)
        self.count = count


def _at_most(count: float) -> None:
    if count > MAX_CELLS:
        raise _TooMany(count)


def _expand_int(token: str) -> list[int]:
    if m := _INT_RANGE.match(token):
        start, end, step = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
        values = range(start, end + 1, step) if step > 0 else range(start, end - 1, step)
        _at_most(len(values))
        return list(values)
    if m := _INT_COUNT.match(token):
        start, end, count = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if count < 2:
            return [start]
        _at_most(count)
        return [int(start + (end - start) * i / (count - 1)) for i in range(count)]
    return [int(token)]


def _expand_float(token: str) -> list[float]:
    if m := _FLOAT_RANGE.match(token):
        start, end, step = float(m.group(1)), float(m.group(2)), float(m.group(3) or 1)
        out, value = [], start
        while (step > 0 and value <= end + 1e-9) or (step < 0 and value >= end - 1e-9):
            out.append(round(value, 8))
            value += step
            if len(out) > MAX_CELLS:
                break
        return out
    if m := _FLOAT_COUNT.match(token):
        start, end, many = float(m.group(1)), float(m.group(2)), float(m.group(3))
        _at_most(many)  # before int(): "[1e400]" reads as infinity
        count = int(many)
        return [start] if count < 2 else [round(start + (end - start) * i / (count - 1), 8) for i in range(count)]
    return [float(token)]


def parse_values(name: str, kind: str, text: str, dropdown: list[Any] | None, csv_mode: bool, where: str
                 ) -> list[Any]:
    """One axis's values, as A1111 reads them (ranges for numbers, the dropdown list for choice axes)."""
    try:
        if name in DROPDOWN_AXES and not csv_mode:
            _at_most(len(dropdown or []))
            tokens = [str(v) for v in (dropdown or [])]
            length = sum(len(t) for t in tokens)
        else:
            length = len(text or "")
        # one field of more than 131,072 characters is a csv.Error; the whole text is bounded as a prompt is
        if length > MAX_TEXT:
            raise field_error(where, f"{name}: the values are {length:,} characters long; at most {MAX_TEXT:,}")
        if not (name in DROPDOWN_AXES and not csv_mode):
            tokens = _csv(text or "")
    except _TooMany as exc:
        raise field_error(where, f"{name}: {exc.count:.0f} values; at most {MAX_CELLS}") from None
    except csv.Error as exc:
        raise field_error(where, f"{name}: cannot read the values {text!r:.80} ({exc})") from None
    try:
        _at_most(len(tokens))
        if kind == "int":
            values: list[Any] = [v for t in tokens for v in _expand_int(t)]
        elif kind == "float":
            values = [v for t in tokens for v in _expand_float(t)]
        elif kind == "size":
            values = []
            for t in tokens:
                w, _, h = t.lower().partition("x")
                values.append((int(w), int(h)))
        elif kind == "sr":
            values = [(tokens[0], t) for t in tokens] if tokens else []
        elif kind == "bool":
            values = [t.lower() in ("true", "1", "yes") for t in tokens]
        else:
            values = tokens
    except _TooMany as exc:
        raise field_error(where, f"{name}: {exc.count:.0f} values; at most {MAX_CELLS}") from None
    except (ValueError, IndexError, OverflowError):
        raise field_error(where, f"{name}: cannot read the values {text!r:.80}") from None
    if not values:
        raise field_error(where, f"{name}: no values")
    if len(values) > MAX_CELLS:
        raise field_error(where, f"{name}: {len(values)} values; at most {MAX_CELLS}")
    return values


@dataclass
class Plot:
    axes: list[tuple[str, list[Any]]]  # (axis name, values) for x, y, z; "Nothing" has one None value
    draw_legend: bool
    include_lone_images: bool
    include_sub_grids: bool
    margin: int

    def cells(self) -> list[tuple[int, int, int]]:
        (_, xs), (_, ys), (_, zs) = self.axes
        return [(ix, iy, iz) for iz in range(len(zs)) for iy in range(len(ys)) for ix in range(len(xs))]


def read_script_args(args: list[Any], is_img2img: bool) -> Plot:
    names = IMG2IMG_AXES if is_img2img else TXT2IMG_AXES
    defaults = [1, "", [], 0, "", [], 0, "", [], True, False, False, False, False, False, False, 0, False]
    args = list(args) + defaults[len(args):]
    csv_mode = bool(args[17])
    axes = []
    for i, label in enumerate("xyz"):
        kind_index, text, dropdown = args[3 * i], args[3 * i + 1], args[3 * i + 2]
        where = f"script_args[{3 * i}]"
        if isinstance(kind_index, bool) or not isinstance(kind_index, int) or not 0 <= kind_index < len(names):
            raise field_error(where, f"{label} axis type must be an index from 0 to {len(names) - 1} of A1111's "
                                     f"{'img2img' if is_img2img else 'txt2img'} axis list, got {kind_index!r}")
        name = names[kind_index]
        if name == "Nothing":
            axes.append((name, [None]))
            continue
        axis = AXES.get(name)
        if axis is None:
            raise field_error(where, f"the x/y/z plot axis {name!r} is not offered by this bridge; axes offered: "
                                     f"{', '.join(n for n in names if n in AXES)}")
        axes.append((name, parse_values(name, axis.kind, str(text or ""), dropdown if isinstance(dropdown, list)
                                        else None, csv_mode, f"script_args[{3 * i + 1}]")))
    try:
        margin = max(0, min(int(args[16] or 0), 500))
    except (TypeError, ValueError, OverflowError):
        raise field_error("script_args[16]", f"the grid margin must be a number of pixels, got {args[16]!r:.80}") \
            from None
    plot = Plot(axes, bool(args[9]), bool(args[10]), bool(args[11]), margin)
    if len(plot.cells()) > MAX_CELLS:
        raise field_error("script_args", f"the plot has {len(plot.cells())} cells; at most {MAX_CELLS}")
    return plot


def cell_requests(plot: Plot, body: dict[str, Any], no_fixed_seeds: bool) -> list[dict[str, Any]]:
    """One request body per cell (x fastest, then y, then z), seeds fixed first unless `no_fixed_seeds`."""
    base = {k: v for k, v in body.items() if k not in ("script_name", "script_args")}
    if not no_fixed_seeds:
        for key in ("seed", "subseed"):
            if base.get(key) in (None, -1):
                base[key] = random.randrange(MAX_SEED)
    out = []
    for cell in plot.cells():
        req = dict(base)
        for axis, ((name, values), index) in enumerate(zip(plot.axes, cell)):
            if name != "Nothing":
                try:
                    AXES[name].apply(req, values[index])
                except _TooLong as exc:
                    raise field_error(f"script_args[{3 * axis + 1}]", str(exc)) from None
        out.append(req)
    return out


def label(name: str, value: Any) -> str:
    if name == "Nothing":
        return ""
    if name == "Prompt S/R":
        return str(value[1])
    if name == "Size":
        return f"{value[0]}x{value[1]}"
    return f"{name}: {value}"


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow before 10.1 has one bitmap size
        return ImageFont.load_default()


# A label is cut to fit its room, at least this many pixels (a cell's width where that is more): a Prompt S/R value
# may be 10,000 characters, which drawn whole at a large cell's font was a text bitmap Pillow refuses (a 500) and a
# legend band as wide.
LABEL_ROOM = 256
_MORE = "..."


def _fit(text: str, font: Any, room: int) -> str:
    text = text[:room]  # a drawn character is a pixel wide at least
    if font.getlength(text) <= room:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if font.getlength(text[:mid] + _MORE) <= room:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + _MORE


@dataclass
class Layout:
    """Where `draw_grid` puts things: the picture's size, the legend bands, and the labels as drawn."""

    size: tuple[int, int]
    cell: tuple[int, int]
    left: int
    top: int
    font: Any
    col_labels: list[str]
    row_labels: list[str]


def layout(cell: tuple[int, int], cols: int, rows: int, col_labels: list[str], row_labels: list[str], legend: bool,
           margin: int) -> Layout:
    w, h = cell
    font = _font(max(12, h // 16))
    top = left = 0
    if legend and any(col_labels):
        col_labels = [_fit(t, font, max(w + margin, LABEL_ROOM)) for t in col_labels]
        top = (font.size if hasattr(font, "size") else 12) * 2
    if legend and any(row_labels):
        row_labels = [_fit(t, font, max(w, LABEL_ROOM)) for t in row_labels]
        left = max(int(font.getlength(t)) for t in row_labels) + 16
    size = (left + cols * w + (cols - 1) * margin, top + rows * h + (rows - 1) * margin)
    return Layout(size, (w, h), left, top, font, col_labels, row_labels)


def draw_grid(images: Sequence[Image.Image], cols: int, rows: int, col_labels: list[str], row_labels: list[str],
              legend: bool, margin: int) -> Image.Image:
    """Cells left to right, top to bottom, each in a slot of the first's size, with the column labels above and
    row labels at the left (A1111's annotated grid layout, Pillow's default font)."""
    at = layout(images[0].size, cols, rows, col_labels, row_labels, legend, margin)
    w, h = at.cell
    grid = Image.new("RGB", at.size, "white")
    draw = ImageDraw.Draw(grid)
    for i, im in enumerate(images):
        c, r = i % cols, i // cols
        grid.paste(im if im.mode == "RGB" else im.convert("RGB"),
                   (at.left + c * (w + margin), at.top + r * (h + margin)))
    if at.top:
        for c, text in enumerate(at.col_labels):
            x = at.left + c * (w + margin) + (w - draw.textlength(text, font=at.font)) / 2
            draw.text((x, at.top / 4), text, fill="black", font=at.font)
    if at.left:
        for r, text in enumerate(at.row_labels):
            draw.text((8, at.top + r * (h + margin) + h / 2), text, fill="black", font=at.font, anchor="lm")
    return grid


def _labels(plot: Plot) -> list[list[str]]:
    return [[label(name, v) for v in values] for name, values in plot.axes]


def grid_size(plot: Plot, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The answer's grid for cells of these sizes (x fastest, then y, then z), as `draw_plot` will draw it."""
    (_, xs), (_, ys), (_, zs) = plot.axes
    xl, yl, zl = _labels(plot)
    per = len(xs) * len(ys)
    subs = [layout(sizes[z * per], len(xs), len(ys), xl, yl, plot.draw_legend, plot.margin).size
            for z in range(len(zs))]
    if len(subs) == 1:
        return subs[0]
    return layout(subs[0], len(subs), 1, zl, [""], plot.draw_legend, plot.margin).size


def draw_plot(plot: Plot, images: Sequence[Image.Image]) -> tuple[Image.Image, list[Image.Image]]:
    """The grid of every cell's image and, with a z axis, the sub-grids it is made of (one per z value). `images`
    may open each image as it is taken: each is taken once, after the first for its size."""
    (_, xs), (_, ys), (_, zs) = plot.axes
    xl, yl, zl = _labels(plot)
    per = len(xs) * len(ys)
    subs = [draw_grid(images[z * per:(z + 1) * per], len(xs), len(ys), xl, yl, plot.draw_legend, plot.margin)
            for z in range(len(zs))]
    if len(subs) == 1:
        return subs[0], []
    return draw_grid(subs, len(subs), 1, zl, [""], plot.draw_legend, plot.margin), subs


def grid_limit(value: Any) -> float:
    """The `img_max_size_mp` option as a limit in megapixels: at most MAX_GRID_MP (an untyped option any client may
    set cannot lift the bound); a value that is no number leaves MAX_GRID_MP."""
    if isinstance(value, bool):
        return MAX_GRID_MP
    try:
        limit = float(value)
    except (TypeError, ValueError, OverflowError):
        return MAX_GRID_MP
    return min(limit, MAX_GRID_MP) if math.isfinite(limit) else MAX_GRID_MP


def check_grid_size(plot: Plot, sizes: list[tuple[int, int]], limit: float, drawn: bool = True) -> None:
    """A1111's check before anything runs: the grid's megapixels (its cells' pixels: cells x width x height, each
    cell at the size it will come back, rounded) must be below the limit; and with `drawn`, the grid as drawn,
    legend and margins too, at most DRAWN_FACTOR times the limit. `sizes`: one per cell, x fastest."""
    mp = round(sum(w * h for w, h in sizes) / 1_000_000)
    if not mp < limit:
        raise field_error("script_args", f"Error: Resulting grid would be too large ({mp} MPixels) (max configured "
                                         f"size is {limit:g} MPixels)")
    if not drawn:
        return
    w, h = grid_size(plot, sizes)
    if w * h > DRAWN_FACTOR * limit * 1_000_000:
        raise field_error("script_args", f"the grid with its legend and margins would be {w}x{h} "
                                         f"({round(w * h / 1_000_000)} MPixels); at most {DRAWN_FACTOR * limit:g} "
                                         f"MPixels")
