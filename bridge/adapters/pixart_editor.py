"""Pixart editor pixel-art API: a sketch and a style in, a palette-exact pixel-art PNG out.

`POST /api/pixel-generation/generate` takes `{id, sketchData, prompt, width, height, style, colorPalette, timestamp}`
(plus the optional `useAI`, `dither`, `seed`) and answers `{id, status, progress}`; the client polls
`GET /api/pixel-generation/status/{id}` for `{id, status, progress, resultDataUrl, error, processingTime, metadata}`.
`GET /api/pixel-generation/styles` lists the styles, palettes and dither methods.

Two workflows do the work (this module only picks one and fills its parameters):

- `pixel_art`: no model. The sketch is laid over a white background, enlarged with nearest neighbour to a whole
  multiple of the target size, pixelated to exactly `width` x `height` (dominant colour of each block), and mapped
  to the palette.
- `pixel_art_ai`: Stable Diffusion 1.5 with a Canny ControlNet on the sketch's edges draws the prompt (prefixed for
  pixel art), then the same pixelate + palette steps run on the picture.

The AI path runs when a checkpoint and a ControlNet are configured (`PIXART_EDITOR_CHECKPOINT`,
`PIXART_EDITOR_CONTROLNET`), unless the request says `useAI: false`; `useAI: true` on a server without them is a
400. PixelStyles: `retro-8bit`, `retro-16bit`, every named palette of the node pack, and `pixel-modern` (32 colours
extracted from the pixelated picture by k-means in OKLab). `colorPalette` overrides the style's colours.

The client's `id` is the job's identity: the same id with the same body answers the existing job, with a different
body 409. Results are read back, checked (size), and their colours counted here, so `metadata.colorsUsed` describes
the PNG the client receives.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import io
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from aiohttp import web
from PIL import Image
from pydantic import BaseModel, Field, Strict, ValidationError, create_model, field_validator
from pydantic_settings import SettingsConfigDict

from bridge import images as image_io
from bridge import jsontext
from bridge.api import Dialect, ErrorBody, endpoint, renamed, retry_headers
from bridge.config import AdapterSettings
from bridge.errors import NAME_SHOWN, BridgeError, Conflict, InvalidParameter, JobNotFound, quote
from bridge.fields import (Bool, Float, ImageData, Int, Loras, LooseFloat, Request, ResponseFormat, Seed, Text,
                           Webhook, field_errors, loras_setting)
from bridge.http import json_answer
from bridge.keys import SETTINGS

from bridge.engine import Job, JobEngine
from bridge.workflows import Workflow

from .toolkit import engine_of, long_poll, request_origin

log = logging.getLogger("bridge.adapters.pixart_editor")

PREFIX = "/api/pixel-generation"
DIALECT_NAME = "pixart-editor"
MODERN_STYLE = "pixel-modern"
BASE_STYLES = ("retro-8bit", "retro-16bit", MODERN_STYLE)
DEFAULT_STYLE = MODERN_STYLE
# ComfyUI's EmptyImage / ImageScale limit per side.
MAX_RESOLUTION = 16384
# ComfyUI's EmptyLatentImage: at least 16 pixels a side
MIN_GENERATION_SIDE = 16
MAX_ID_LENGTH = 200
MAX_PROMPT_LENGTH = 2000
_SAFE_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}")

# workflow parameter -> the request field (or setting) a client or operator must change
PARAM_FIELDS = {
    "sketch": "sketchData", "width": "width", "height": "height", "prompt": "prompt", "seed": "seed",
    "palette_name": "style", "palette_hex": "colorPalette", "palette_colors": "style", "dither": "dither",
    "loras": "loras",
}
SETTING_FIELDS = {
    "checkpoint": "PIXART_EDITOR_CHECKPOINT", "controlnet": "PIXART_EDITOR_CONTROLNET",
    "sampler": "PIXART_EDITOR_SAMPLER", "scheduler": "PIXART_EDITOR_SCHEDULER", "steps": "PIXART_EDITOR_STEPS",
    "cfg": "PIXART_EDITOR_CFG", "negative_prompt": "PIXART_EDITOR_NEGATIVE_PROMPT",
}
STATUS_NAMES = {"queued": "pending", "running": "processing", "completed": "completed", "failed": "failed",
                "cancelled": "failed"}


class PixartEditorSettings(AdapterSettings):
    """Pixart editor API settings (environment `PIXART_EDITOR_*`, or `--set PIXART_EDITOR_...=...`)."""

    model_config = SettingsConfigDict(env_prefix="PIXART_EDITOR_", extra="ignore", env_file_encoding="utf-8",
                                      populate_by_name=True)

    checkpoint: str = Field("", description="SD1.5 checkpoint file for the AI path; empty (or no ControlNet): "
                                            "only the model-free path runs.")
    controlnet: str = Field("", description="Canny ControlNet file (SD1.5) for the AI path.")
    workflow: str = Field("pixel_art", description="Model-free workflow.")
    ai_workflow: str = Field("pixel_art_ai", description="Stable Diffusion + ControlNet workflow.")
    prompt_template: str = Field("pixel art, {prompt}, sprite, flat colors, sharp edges",
                                 description="Positive prompt of the AI path; {prompt} is the client's prompt.")
    negative_prompt: str = Field("blurry, photo, realistic, 3d render, smooth gradients, noise, text, watermark",
                                 description="Negative prompt of the AI path.")
    ai_size: int = Field(512, ge=64, le=2048, description="Longest side of the AI generation before pixelation "
                                                          "(a whole multiple of the target where it fits).")
    steps: int = Field(20, ge=1, le=150, description="Sampling steps of the AI path.")
    cfg: float = Field(7.0, ge=0.0, le=30.0, description="Guidance scale of the AI path.")
    sampler: str = Field("euler", description="ComfyUI sampler of the AI path.")
    scheduler: str = Field("normal", description="ComfyUI scheduler of the AI path.")
    loras: str = Field("", description="LoRAs of the AI path when a request names none, as JSON: "
                                       "[{\"name\": \"pixel_style\", \"strength\": 0.8}] (most pixel-art models "
                                       "are LoRAs).")
    control_strength: float = Field(1.0, ge=0.0, le=10.0, description="ControlNet strength.")
    canny_low: float = Field(0.4, ge=0.01, le=0.99, description="Canny low threshold (0..1).")
    canny_high: float = Field(0.8, ge=0.01, le=0.99, description="Canny high threshold (0..1).")
    modern_colors: int = Field(32, ge=2, le=256, description="Colours extracted for the pixel-modern style.")
    background: str = Field("#ffffff", description="Colour under transparent parts of the sketch.")
    max_side: int = Field(1024, ge=1, le=4096, description="Largest width or height a client may ask for.")
    max_work_pixels: int = Field(4096 * 4096, ge=1, description="Largest enlarged sketch (pixels) pixelated by "
                                                                "the model-free path.")
    timeout: float = Field(600.0, gt=0, description="Seconds a job may run before it fails.")

    @field_validator("prompt_template")
    @classmethod
    def _template(cls, value: str) -> str:
        if "{prompt}" not in value:
            raise ValueError("must contain {prompt}")
        return value

    @field_validator("background")
    @classmethod
    def _background(cls, value: str) -> str:
        try:
            parse_colour(value, "PIXART_EDITOR_BACKGROUND")
        except InvalidParameter:
            raise ValueError(f"{value!r} is not a hex colour like #ffffff") from None
        return value

    @field_validator("loras")
    @classmethod
    def _loras(cls, value: str) -> str:
        loras_setting(value)
        return value

    def default_loras(self) -> list[Any]:
        return loras_setting(self.loras)

    @property
    def ai_configured(self) -> bool:
        return bool(self.checkpoint.strip() and self.controlnet.strip())


STATE = web.AppKey("pixart_editor_state", dict)


# ---------------------------------------------------------------------------------------------------------------
# Request parsing and planning (pure: no engine, no I/O)


def one_colour(text: str) -> tuple[int, int, int] | None:
    """The one hex colour ``text`` names, else None. The palette reader takes a list ("#000 #fff" reads as two):
    taking its first colour passed such text silently, and 200 of them in colorPalette made 400 (a 500)."""
    from pixart_nodes.core.palette import palette_from_hex

    try:
        colours = palette_from_hex([text]).colors.tolist()
    except ValueError:
        return None
    return tuple(colours[0]) if len(colours) == 1 else None


def parse_colour(text: str, field: str) -> int:
    rgb = one_colour(text)
    if rgb is None:
        raise InvalidParameter(field, f"{field}: {quote(text)} is not a hex colour like #ffffff")
    return (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]


def client_job_id(client_id: str) -> str:
    """The engine job id for a client id: readable when the id is plain, a hash otherwise (job ids are directory
    names). The two prefixes differ, so the two forms can never collide."""
    if _SAFE_ID.fullmatch(client_id) and client_id not in (".", ".."):
        return f"pxe-{client_id}"
    return "pxeh-" + hashlib.sha256(client_id.encode("utf-8")).hexdigest()[:48]


def body_digest(body: BaseModel) -> str:
    """What makes two requests the same: every field the client set, by the name it used."""
    fields = body.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return jsontext.digest(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def style_names() -> list[str]:
    from pixart_nodes.core.palette import NAMED_PALETTES

    return list(BASE_STYLES) + [n for n in NAMED_PALETTES if n not in BASE_STYLES]


@dataclass(frozen=True)
class PaletteChoice:
    params: dict[str, Any]  # palette_source + palette_name | palette_hex | palette_colors
    label: str              # what metadata.palette-like fields report: a palette name, "custom" or "kmeans-32"


def resolve_palette(style: str, color_palette: Any, modern_colors: int) -> PaletteChoice:
    """Style and optional hex list -> the Palette node's settings. colorPalette wins over the style's colours."""
    from pixart_nodes.core.palette import MAX_COLORS, Palette, normalise_name, named_palette

    if color_palette is not None and color_palette != []:
        if not isinstance(color_palette, list) or not all(isinstance(c, str) for c in color_palette):
            raise InvalidParameter("colorPalette", "colorPalette must be a list of hex colour strings like "
                                                   "[\"#1d2b53\", \"#ff004d\"]")
        if len(color_palette) > MAX_COLORS:
            raise InvalidParameter("colorPalette", f"colorPalette has {len(color_palette)} colours; at most "
                                                   f"{MAX_COLORS}")
        colours = []
        for i, text in enumerate(color_palette):
            rgb = one_colour(text)
            if rgb is None:
                raise InvalidParameter("colorPalette", f"colorPalette[{i}]: {quote(text)} is not a hex colour "
                                                       "like #1d2b53")
            colours.append(rgb)
        pal = Palette("custom", colours)
        return PaletteChoice({"palette_source": "hex", "palette_hex": " ".join(pal.hex())}, "custom")
    # spelled as loosely as the palette names beside it ("PIXEL_MODERN"), one rule for both
    if normalise_name(style) == normalise_name(MODERN_STYLE):
        return PaletteChoice({"palette_source": "image", "palette_colors": modern_colors}, f"kmeans-{modern_colors}")
    try:
        pal = named_palette(style)
    except ValueError:
        raise InvalidParameter("style", f"style {quote(style)} is unknown; choose one of {', '.join(style_names())}, "
                                        "or send colorPalette") from None
    return PaletteChoice({"palette_source": "named", "palette_name": pal.name}, pal.name)


def work_size(width: int, height: int, sketch_w: int, sketch_h: int, max_pixels: int,
              max_side: int = MAX_RESOLUTION) -> tuple[int, int, str]:
    """Size the sketch is scaled to before pixelation, and the resampling method.

    A whole multiple f of the target, with f = ceil of the larger sketch/target ratio, is at least the sketch on
    both sides: the sketch is only enlarged (nearest neighbour keeps its hard edges, no line is dropped) and every
    block is exactly f x f. f is capped so the enlarged image stays within max_pixels and max_side (what the
    workflow takes a side); only then is a side shrunk, with area averaging.
    """
    f = max(1, math.ceil(max(sketch_w / width, sketch_h / height)))
    cap = max(1, min(math.isqrt(max(1, max_pixels // (width * height))), max_side // max(width, height)))
    f = min(f, cap)
    ww, wh = width * f, height * f
    method = "nearest-exact" if ww >= sketch_w and wh >= sketch_h else "area"
    return ww, wh, method


def generation_size(width: int, height: int, ai_size: int) -> tuple[int, int]:
    """SD generation size: the target times a whole factor so the longest side is near ai_size, rounded up to the
    latent grid (8), and at least ComfyUI's smallest latent (MIN_GENERATION_SIDE; an 8x600 result asked for an
    8-pixel-wide generation, refused naming gen_width). Never smaller than the target, so pixelation only shrinks."""
    f = max(1, ai_size // max(width, height))
    return (max(MIN_GENERATION_SIDE, -(-width * f // 8) * 8), max(MIN_GENERATION_SIDE, -(-height * f // 8) * 8))


@dataclass
class Plan:
    workflow: str
    algorithm: str
    params: dict[str, Any]
    meta: dict[str, Any]
    use_ai: bool


class EditorRequest(Request):
    """A sketch-to-pixel-art generation."""

    id: Annotated[str, Strict(), Field(min_length=1, max_length=MAX_ID_LENGTH)] = Field(
        description="The client's own id; the same id with the same body answers the same job, with another body 409.")
    sketchData: ImageData = Field(description="The sketch (PNG, JPEG or WebP) as a data URL or bare base64.")
    prompt: Annotated[str, Strict(), Field(max_length=MAX_PROMPT_LENGTH)] | None = Field(
        None, description="What to draw; required when the AI path runs.")
    width: Annotated[Int, Field(ge=1)] = Field(description="Result width in pixels.")
    height: Annotated[Int, Field(ge=1)] = Field(description="Result height in pixels.")
    style: Annotated[Text, Field(min_length=1)] | None = Field(
        None, description=f"retro-8bit, retro-16bit, {DEFAULT_STYLE} (default), or a named palette (GET .../styles).")
    colorPalette: Annotated[list[Text], Field(max_length=256)] | None = Field(
        None, description="Hex colours; overrides the style's palette.")
    timestamp: Float | None = Field(None, description="Milliseconds since 1970, as the editor sends it.")
    useAI: Bool | None = Field(None, description="true: Stable Diffusion + ControlNet (400 when not configured); "
                                                 "false: sketch only; absent/null: AI when configured.")
    dither: Text | None = Field(None, description="Dither method (GET .../styles); default none.")
    seed: Seed = Field(None, description="AI path noise seed; -1 or absent: random.")
    webhook: Webhook | None = Field(None, description="Where to POST signed messages when the generation ends (a "
                                                      "URL, or {url, events}); see docs/api/webhooks.md.")
    loras: Loras | None = Field(None, description="AI path: LoRAs applied to the checkpoint, in order "
                                                  "([{name, strength, clip_strength}]); absent: the server's "
                                                  "PIXART_EDITOR_LORAS.")
    response_format: ResponseFormat | None = Field(None, description=(
        "How the status route answers the result: b64 (default) fills resultDataUrl; url leaves it null and the "
        "client loads resultUrl (a presigned S3 URL when results live in S3)."))


@functools.lru_cache(maxsize=8)
def request_model(max_side: int, dither_methods: tuple[str, ...]) -> type[EditorRequest]:
    """The request model with this server's limits (PIXART_EDITOR_MAX_SIDE) and dither methods, so the spec
    states exactly what the code enforces."""
    side = Annotated[Int, Field(ge=1, le=max_side)]
    dither = Literal[dither_methods]  # type: ignore[valid-type]
    return create_model("PixelGenerationRequest", __base__=EditorRequest, __doc__=EditorRequest.__doc__,
                        width=(side, Field(description="Result width in pixels.")),
                        height=(side, Field(description="Result height in pixels.")),
                        dither=(dither | None, Field(None, description="Dither method; default none.")))


def first_invalid(exc: ValidationError, model: type[BaseModel]) -> InvalidParameter:
    bad = field_errors(exc, model)[0]
    return InvalidParameter(bad.field or "body", bad.message)


# the workflows' parameter asking for a palette extracted for error diffusion (optional in an operator's own workflow)
FOR_DITHERING = "palette_for_dithering"


def plan_request(body: EditorRequest | Mapping[str, Any], settings: PixartEditorSettings,
                 sketch: image_io.DecodedImage, dither_methods: Sequence[str],
                 workflows: Mapping[str, Workflow] | None = None, digest: str | None = None) -> Plan:
    """Choose the workflow and its parameters for a request whose fields are checked (a dict is checked here).
    ``workflows``: the engine's, by name. The plan sends an optional parameter only to a workflow that takes it
    (an operator's own workflow may lack one the shipped workflows have), keeps the sizes it chooses within the
    workflow's bounds, and refuses a sketch beyond them naming sketchData, not the workflow's parameter. A workflow
    not among them (or None) is taken to take every parameter unbounded: the engine's own check answers.
    ``digest``: the body's ``body_digest`` where the caller has it (a JSON encoding of the whole body)."""

    def declared(workflow: str, name: str) -> tuple[bool, int | None]:  # taken, and its bound (None: none known)
        wf = (workflows or {}).get(workflow)
        if wf is None:
            return True, None
        p = wf.parameters.get(name)
        return p is not None, (int(p.max) if p is not None and p.max is not None else None)

    def largest(workflow: str, name: str) -> int | None:
        return declared(workflow, name)[1]

    model = request_model(settings.max_side, tuple(dither_methods))
    if not isinstance(body, EditorRequest):
        try:
            body = model.model_validate({"sketchData": "", **dict(body)})
        except ValidationError as exc:
            raise first_invalid(exc, model) from None
    prompt = body.prompt or ""
    style = (body.style or DEFAULT_STYLE).strip()
    palette = resolve_palette(style, body.colorPalette, settings.modern_colors)
    dither = body.dither or "none"
    if body.useAI is True and not settings.ai_configured:
        raise InvalidParameter("useAI", "useAI: AI generation is not available on this server (no checkpoint and "
                                        "ControlNet configured: PIXART_EDITOR_CHECKPOINT, PIXART_EDITOR_CONTROLNET); "
                                        "send useAI: false or leave it out")
    use_ai = settings.ai_configured if body.useAI is None else body.useAI
    if use_ai and not prompt.strip():
        raise InvalidParameter("prompt", "prompt is required for AI generation; describe the picture, or send "
                                         "useAI: false to pixelate the sketch as it is")
    width, height = body.width, body.height
    params: dict[str, Any] = {"sketch": sketch, "width": width, "height": height, "dither": dither,
                              "background": parse_colour(settings.background, "PIXART_EDITOR_BACKGROUND"),
                              **palette.params}
    if use_ai:
        workflow = settings.ai_workflow
        gw, gh = generation_size(width, height, settings.ai_size)
        for size, name, side in ((gw, "gen_width", "width"), (gh, "gen_height", "height")):
            bound = largest(workflow, name)  # where PIXART_EDITOR_MAX_SIDE passes what the model path can draw
            if bound is not None and size > bound:
                raise InvalidParameter(side, f"{side}: the AI path draws at most {bound} pixels a side, and this "
                                             f"{side} needs {size}; ask for less, or send useAI: false")
        params.update({
            "prompt": settings.prompt_template.replace("{prompt}", prompt.strip()),
            "negative_prompt": settings.negative_prompt, "gen_width": gw, "gen_height": gh,
            "checkpoint": settings.checkpoint.strip(), "controlnet": settings.controlnet.strip(),
            "control_strength": settings.control_strength, "canny_low": settings.canny_low,
            "canny_high": settings.canny_high, "steps": settings.steps, "cfg": settings.cfg,
            "sampler": settings.sampler, "scheduler": settings.scheduler,
            "seed": -1 if body.seed is None else body.seed,
        })
        loras = body.loras if body.loras is not None else settings.default_loras()
        if loras:
            params["loras"] = loras
    else:
        if body.loras:
            raise InvalidParameter("loras", "loras: LoRAs apply to AI generation only; send useAI: true (on a "
                                            "server with a checkpoint and ControlNet) or leave loras out")
        workflow = settings.workflow
        for side, name in ((sketch.width, "sketch_width"), (sketch.height, "sketch_height")):
            bound = largest(workflow, name)
            if bound is not None and side > bound:
                raise InvalidParameter("sketchData", f"sketchData: the sketch is {sketch.width}x{sketch.height} "
                                                     f"pixels; at most {bound} pixels a side")
        bounds = [b for b in (largest(workflow, "work_width"), largest(workflow, "work_height")) if b is not None]
        ww, wh, method = work_size(width, height, sketch.width, sketch.height, settings.max_work_pixels,
                                   min([MAX_RESOLUTION, *bounds]))
        params.update({"sketch_width": sketch.width, "sketch_height": sketch.height, "work_width": ww,
                       "work_height": wh, "scale_method": method})
    if palette.params.get("palette_source") == "image" and declared(workflow, FOR_DITHERING)[0]:
        from pixart_nodes.core.quantize import ERROR_DIFFUSION

        if dither in ERROR_DIFFUSION:  # extracted for error diffusion, as `pixart convert --colors` does
            params[FOR_DITHERING] = True
    meta = {"dialect": DIALECT_NAME, "client_id": body.id, "body_sha256": digest or body_digest(body), "width": width,
            "height": height, "style": style, "palette": palette.label, "dither": dither, "algorithm": workflow,
            "use_ai": use_ai, "timestamp": body.timestamp, "webhook": body.webhook,
            "response_format": body.response_format}
    return Plan(workflow=workflow, algorithm=workflow, params=params, meta=meta, use_ai=use_ai)


# ---------------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Result:
    data_url: image_io.Base64
    colors: list[str]  # distinct colours, most used first


class Results:
    """Results read for status answers (a client polls until its job is done, then reads it once or twice): the
    newest kept up to ``count`` of them and ``nbytes`` of PNG and colour names, the oldest dropped first. By count
    alone, 256 results of max_side 4096 could hold gigabytes."""

    def __init__(self, count: int = 256, nbytes: int = 64 << 20) -> None:
        self.count, self.nbytes = count, nbytes
        self._items: collections.OrderedDict[str, tuple[Result, int]] = collections.OrderedDict()
        self._held = 0

    def get(self, job_id: str) -> Result | None:
        item = self._items.get(job_id)
        return None if item is None else item[0]

    def put(self, job_id: str, result: Result) -> None:
        size = len(result.data_url.data) + 64 * len(result.colors)  # a colour's text is a str object of ~64 bytes
        old = self._items.pop(job_id, None)
        self._held += size - (old[1] if old else 0)
        self._items[job_id] = (result, size)
        while len(self._items) > 1 and (len(self._items) > self.count or self._held > self.nbytes):
            self._held -= self._items.popitem(last=False)[1][1]


# Pillow counts colours holding the interpreter lock, so a thread does not spare the event loop: a 4096x4096 result
# held it 110 ms in one call (one with 10 million colours, 3.6 s). A band of this many pixels takes under 1 ms; the
# loop gets its turn between bands.
COLOR_BAND_PIXELS = 1 << 16
# A band with more colours than this (a result that was never reduced to a palette) is no pixel art: such an image's
# colours are counted by numpy, which lets go of the lock: merging the bands' millions of colours in Python took
# seconds.
BAND_COLORS = 4096


def colors_by_use(rgb: Image.Image) -> list[str]:
    """The distinct colours of an RGB image as `#rrggbb`, most used first (ties by colour), counted a band of rows
    at a time."""
    width, height = rgb.size
    rows = max(1, COLOR_BAND_PIXELS // max(1, width))
    counts: dict[tuple[int, int, int], int] = {}
    for top in range(0, height, rows):
        found = rgb.crop((0, top, width, min(height, top + rows))).getcolors(maxcolors=BAND_COLORS)
        if found is None:
            return _colors_by_use_numpy(rgb, rows)
        for n, colour in found:
            counts[colour] = counts.get(colour, 0) + n
    counted = sorted(counts.items(), key=lambda c: (-c[1], c[0]))
    return [f"#{r:02x}{g:02x}{b:02x}" for (r, g, b), _ in counted]


def _colors_by_use_numpy(rgb: Image.Image, rows: int) -> list[str]:
    width, height = rgb.size
    keys = []
    for top in range(0, height, rows):
        band = np.asarray(rgb.crop((0, top, width, min(height, top + rows))), dtype=np.uint32)
        keys.append((band[..., 0] << 16 | band[..., 1] << 8 | band[..., 2]).ravel())
    values, counts = np.unique(np.concatenate(keys), return_counts=True)
    ordered = values[np.lexsort((values, -counts))]  # r, g, b in order is the packed value's order
    out: list[str] = []
    for start in range(0, len(ordered), COLOR_BAND_PIXELS):  # a list of millions made at once holds the lock too
        out.extend(f"#{k:06x}" for k in ordered[start:start + COLOR_BAND_PIXELS].tolist())
    return out


def read_result(png: bytes, width: int, height: int) -> Result:
    """Check the stored result and describe it. A wrong size is an error, not something to hide by resizing."""
    with Image.open(io.BytesIO(png)) as im:
        im.load()
        if im.size != (width, height):
            raise ValueError(f"the workflow produced a {im.size[0]}x{im.size[1]} image, expected {width}x{height}")
        rgb = im.convert("RGB")
        colors = colors_by_use(rgb)
        fmt, mode = im.format, im.mode
    if fmt != "PNG" or mode not in ("RGB", "P", "L"):
        out = io.BytesIO()
        rgb.save(out, format="PNG")
        png = out.getvalue()
    return Result(image_io.Base64(png, "data:image/png;base64,"), colors)


async def status_body(engine: JobEngine, job: Job, cache: Results, *,
                      response_format: str | None = None, origin: str = "") -> dict[str, Any]:
    """The status answer; `response_format` (else the one the generation was asked with) "url" sends the result
    as `resultUrl` only."""
    meta = job.meta or {}
    status = STATUS_NAMES.get(job.status, "failed")
    body: dict[str, Any] = {"id": meta.get("client_id", job.id), "status": status,
                            "progress": 100 if job.status == "completed" else int(job.progress),
                            "resultDataUrl": None, "resultUrl": None, "error": None, "processingTime": None,
                            "metadata": None}
    if job.finished_at is not None:
        body["processingTime"] = max(0, int(round((job.finished_at - job.created_at) * 1000)))
    if job.status == "cancelled":
        body["error"] = "the generation was cancelled"
    elif job.status == "failed":
        body["error"] = job.error or "the generation failed"
    if job.status != "completed":
        return body
    result = cache.get(job.id)
    if result is None:
        try:
            png = await engine.read_output(job, "images", 0)
            # Off the loop, but not in the image pool: a small result read must not queue behind large decodes.
            result = await asyncio.to_thread(read_result, png, meta["width"], meta["height"])
        except (BridgeError, OSError, ValueError) as exc:
            log.error("job %s: unusable result: %s", job.id, exc)
            body.update(status="failed", error=f"the result could not be read: {getattr(exc, 'message', exc)}")
            return body
        cache.put(job.id, result)
    body["resultUrl"] = await engine.result_link(job, "images", 0, origin)
    if (response_format or meta.get("response_format") or "b64") == "b64":
        body["resultDataUrl"] = result.data_url
    seed = job.params.get("seed") if meta.get("use_ai") else None
    body["metadata"] = {"colorsUsed": len(result.colors), "pixelCount": meta["width"] * meta["height"],
                        "algorithm": meta.get("algorithm", job.workflow), "style": meta.get("style"),
                        "palette": meta.get("palette"), "dither": meta.get("dither"), "seed": seed,
                        "colors": result.colors}
    return body


# ---------------------------------------------------------------------------------------------------------------
# HTTP


class EditorError(ErrorBody):
    """The common error shape plus `detail` (what FastAPI-style clients, like the editor's, read)."""

    detail: str


@dataclass(frozen=True)
class EditorDialect(Dialect):
    def error(self, status: int, message: str, field: str | None = None, *, code: str | None = None,
              headers: Mapping[str, str] | None = None, **extra: Any) -> web.Response:
        from bridge.http import error_code

        body = {"error": code or error_code(status), "message": message, "field": field, "detail": message}
        return web.json_response(body, status=status, headers=dict(headers or {}))

    def bridge_error(self, exc: BridgeError, names: Mapping[str, str] | None = None) -> web.Response:
        """Engine errors name workflow parameters; name the request field (or the operator's setting) instead."""
        name = exc.field
        if name in SETTING_FIELDS:
            # Not the client's fault: the configured model or sampler is missing on the backend.
            setting = SETTING_FIELDS[name]
            message = exc.message.removeprefix(f"{name}: ")
            return self.error(503, f"server configuration: {setting}: {message}", setting, code="backend_unavailable")
        message, field = renamed(exc, PARAM_FIELDS)
        return self.error(exc.status, message, field, code=exc.code, headers=retry_headers(exc))


DIALECT = EditorDialect("pixart-editor", EditorError, ("pixart-editor",))


def _accepted(job: Any) -> dict[str, Any]:
    return {"id": job.meta.get("client_id", job.id), "status": STATUS_NAMES.get(job.status, "failed"),
            "progress": 100 if job.status == "completed" else int(job.progress)}


def _same_or_conflict(job: Any, digest: str) -> web.Response:
    if job.meta.get("dialect") != DIALECT_NAME or job.meta.get("body_sha256") != digest:
        raise Conflict(f"id {job.meta.get('client_id', job.id)!r} is already used by a different request; "
                       "send a new id for a new generation", field="id")
    return web.json_response(_accepted(job))


StatusName = Literal["pending", "processing", "completed", "failed"]


class PixelGenerationAccepted(BaseModel):
    """The generation's id and state."""

    id: str
    status: StatusName
    progress: int


class ResultMetadata(BaseModel):
    colorsUsed: int
    pixelCount: int
    algorithm: str
    style: str | None
    palette: str | None
    dither: str | None
    seed: int | None
    colors: list[str]


class PixelGenerationStatus(PixelGenerationAccepted):
    """Status and, once completed, the result: a PNG data URL, exactly width x height, palette colours only."""

    resultDataUrl: str | None = Field(description="The PNG as a data URL (null with response_format url).")
    resultUrl: str | None = Field(description="Where the PNG can be fetched: a presigned S3 URL, or the bridge's "
                                              "/jobs/{id}/outputs/images/0.")
    error: str | None
    processingTime: int | None = Field(description="Milliseconds from acceptance to the end.")
    metadata: ResultMetadata | None


class AiAvailability(BaseModel):
    available: bool
    default: bool


class PixelStyles(BaseModel):
    """Styles, their palettes, dither methods and whether the AI path is available."""

    styles: list[str]
    default_style: str
    palettes: dict[str, list[str] | str]
    dither: list[str]
    ai: AiAvailability


def _state(request: web.Request) -> dict[str, Any]:
    return request.app[STATE]


def _dither_methods() -> list[str]:
    from pixart_nodes.core.quantize import DITHER_METHODS

    return list(DITHER_METHODS)


async def generate(request: web.Request, body: EditorRequest) -> web.Response:
    """Start a sketch-to-pixel-art generation (Pixart editor)."""
    engine = engine_of(request)
    settings: PixartEditorSettings = _state(request)["settings"]
    job_id = client_job_id(body.id)
    digest = await asyncio.to_thread(body_digest, body)
    existing = await engine.find(job_id)
    if existing is not None:
        return _same_or_conflict(existing, digest)
    await engine.check_room()  # before the sketch is fetched and decoded
    sketch = await image_io.decode_async(await engine.fetch_image(body.sketchData, "sketchData"), "sketchData",
                                         max_bytes=engine.max_image_bytes,
                                         max_pixels=engine.max_image_pixels)
    plan = plan_request(body, settings, sketch, _state(request)["dither"], getattr(engine, "workflows", None), digest)
    try:
        job = await engine.submit(plan.workflow, plan.params, meta=plan.meta, job_id=job_id, timeout=settings.timeout)
    except Conflict:
        # Two identical requests raced; the loser answers the winner's job once it is accepted.
        existing = await engine.accepted(job_id)
        if existing is None:
            raise
        return _same_or_conflict(existing, digest)
    log.info("pixart editor: job %s (%s, %dx%d, style %s)", job.id, plan.workflow, plan.meta["width"],
             plan.meta["height"], plan.meta["style"])
    return web.json_response(_accepted(job))


MAX_WAIT = 60.0


class StatusQuery(Request):
    response_format: ResponseFormat | None = Field(None, description="b64 or url; default: what the generation "
                                                                     "was asked with, else b64.")
    wait: Annotated[LooseFloat, Field(ge=0.0, le=MAX_WAIT)] = Field(
        0.0, description="Seconds to hold the answer while the generation runs: it comes as soon as it ends (or "
                         "when the time is up, with the generation as it then stands).")


@endpoint(dialect=DIALECT, query=StatusQuery, responses={200: PixelGenerationStatus})
async def status(request: web.Request, query: StatusQuery) -> web.Response:
    """Status and result of a Pixart editor generation; `?wait=SECONDS` answers as soon as it ends."""
    engine = engine_of(request)
    client_id = request.match_info["id"]
    job = await engine.find(client_job_id(client_id))
    if job is not None and (job.meta or {}).get("dialect") != DIALECT_NAME:
        job = None  # another API's job
    if job is not None and query.wait > 0 and not job.done:
        job = await long_poll(request, job, query.wait)  # None: deleted while the answer waited
    if job is None:
        # the id comes from the path, up to 8 KB: its start only, as JobNotFound shows one
        return DIALECT.error(404, f"no generation with id {quote(client_id, NAME_SHOWN)}", "id",
                             code=JobNotFound.code)
    return await json_answer(await status_body(engine, job, _state(request)["results"],
                                               response_format=query.response_format,
                                               origin=request_origin(request)))


@endpoint(dialect=DIALECT, responses={200: PixelStyles})
async def styles(request: web.Request) -> web.Response:
    """Styles, their palettes, dither methods and whether the AI path is available."""
    from pixart_nodes.core.palette import named_palette

    state = _state(request)
    settings: PixartEditorSettings = state["settings"]
    palettes: dict[str, Any] = {}
    for name in style_names():
        palettes[name] = (f"auto: {settings.modern_colors} colours extracted from the picture (k-means in OKLab)"
                          if name == MODERN_STYLE else named_palette(name).hex())
    return web.json_response({
        "styles": style_names(), "default_style": DEFAULT_STYLE, "palettes": palettes, "dither": state["dither"],
        "ai": {"available": settings.ai_configured, "default": settings.ai_configured},
    })


def setup(app: web.Application) -> None:
    settings = PixartEditorSettings.from_settings(app[SETTINGS])
    dither = _dither_methods()
    app[STATE] = {"settings": settings, "results": Results(), "dither": dither}
    # Declared here: the body model carries this server's limits (PIXART_EDITOR_MAX_SIDE).
    body = request_model(settings.max_side, tuple(dither))
    app.router.add_post(f"{PREFIX}/generate",
                        endpoint(dialect=DIALECT, body=body, responses={200: PixelGenerationAccepted})(generate))
    app.router.add_get(f"{PREFIX}/status/{{id}}", status)
    app.router.add_get(f"{PREFIX}/styles", styles)
