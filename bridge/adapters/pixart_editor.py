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
400. Styles: `retro-8bit`, `retro-16bit`, every named palette of the node pack, and `pixel-modern` (32 colours
extracted from the pixelated picture by k-means in OKLab). `colorPalette` overrides the style's colours.

The client's `id` is the job's identity: the same id with the same body answers the existing job, with a different
body 409. Results are read back, checked (size), and their colours counted here, so `metadata.colorsUsed` describes
the PNG the client receives.
"""
from __future__ import annotations

import base64
import collections
import hashlib
import io
import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from PIL import Image
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from bridge import images as image_io
from bridge.config import AdapterSettings
from bridge.errors import BridgeError, Conflict, InvalidParameter, JobNotFound, QueueFull
from bridge.openapi import ERROR_SCHEMA, openapi

log = logging.getLogger("bridge.adapters.pixart_editor")

PREFIX = "/api/pixel-generation"
DIALECT = "pixart-editor"
MODERN_STYLE = "pixel-modern"
BASE_STYLES = ("retro-8bit", "retro-16bit", MODERN_STYLE)
DEFAULT_STYLE = MODERN_STYLE
# ComfyUI's EmptyImage / ImageScale limit per side.
MAX_RESOLUTION = 16384
MAX_ID_LENGTH = 200
MAX_PROMPT_LENGTH = 2000
SEED_MAX = 2**64 - 1
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")

# workflow parameter -> the request field (or setting) a client or operator must change
PARAM_FIELDS = {
    "sketch": "sketchData", "width": "width", "height": "height", "prompt": "prompt", "seed": "seed",
    "palette_name": "style", "palette_hex": "colorPalette", "palette_colors": "style", "dither": "dither",
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

    @property
    def ai_configured(self) -> bool:
        return bool(self.checkpoint.strip() and self.controlnet.strip())


STATE = web.AppKey("pixart_editor_state", dict)


# ---------------------------------------------------------------------------------------------------------------
# Request parsing and planning (pure: no engine, no I/O)


def parse_colour(text: str, field: str) -> int:
    from pixart_nodes.core.palette import palette_from_hex

    try:
        rgb = palette_from_hex([text]).colors[0]
    except ValueError:
        raise InvalidParameter(field, f"{field}: {text!r} is not a hex colour like #ffffff") from None
    return (int(rgb[0]) << 16) | (int(rgb[1]) << 8) | int(rgb[2])


def client_job_id(client_id: str) -> str:
    """The engine job id for a client id: readable when the id is plain, a hash otherwise (job ids are directory
    names). The two prefixes differ, so the two forms can never collide."""
    if _SAFE_ID.match(client_id) and client_id not in (".", ".."):
        return f"pxe-{client_id}"
    return "pxeh-" + hashlib.sha256(client_id.encode("utf-8")).hexdigest()[:48]


def body_digest(body: dict[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_client_id(body: Any) -> str:
    if not isinstance(body, dict):
        raise InvalidParameter("body", "the request body must be a JSON object")
    value = body.get("id")
    if value is None:
        raise InvalidParameter("id", "id is required (the client's own request id)")
    if not isinstance(value, str) or not value.strip():
        raise InvalidParameter("id", "id must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidParameter("id", f"id is longer than {MAX_ID_LENGTH} characters")
    return value


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    if value is None:
        raise InvalidParameter(name, f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidParameter(name, f"{name} must be an integer, got {json.dumps(value)[:40]}")
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidParameter(name, f"{name} must be an integer, got {value}")
        value = int(value)
    if value < lo:
        raise InvalidParameter(name, f"{name} must be at least {lo}, got {value}")
    if value > hi:
        raise InvalidParameter(name, f"{name} must be at most {hi}, got {value}")
    return value


def style_names() -> list[str]:
    from pixart_nodes.core.palette import NAMED_PALETTES

    return list(BASE_STYLES) + [n for n in NAMED_PALETTES if n not in BASE_STYLES]


@dataclass(frozen=True)
class PaletteChoice:
    params: dict[str, Any]  # palette_source + palette_name | palette_hex | palette_colors
    label: str              # what metadata.palette-like fields report: a palette name, "custom" or "kmeans-32"


def resolve_palette(style: str, color_palette: Any, modern_colors: int) -> PaletteChoice:
    """Style and optional hex list -> the Palette node's settings. colorPalette wins over the style's colours."""
    from pixart_nodes.core.palette import MAX_COLORS, named_palette, palette_from_hex

    if color_palette is not None and color_palette != []:
        if not isinstance(color_palette, list) or not all(isinstance(c, str) for c in color_palette):
            raise InvalidParameter("colorPalette", "colorPalette must be a list of hex colour strings like "
                                                   "[\"#1d2b53\", \"#ff004d\"]")
        if len(color_palette) > MAX_COLORS:
            raise InvalidParameter("colorPalette", f"colorPalette has {len(color_palette)} colours; at most "
                                                   f"{MAX_COLORS}")
        for i, text in enumerate(color_palette):
            try:
                palette_from_hex([text])
            except ValueError:
                raise InvalidParameter("colorPalette", f"colorPalette[{i}]: {text!r} is not a hex colour like "
                                                       "#1d2b53") from None
        pal = palette_from_hex(color_palette)
        return PaletteChoice({"palette_source": "hex", "palette_hex": " ".join(pal.hex())}, "custom")
    if style.strip().lower() == MODERN_STYLE:
        return PaletteChoice({"palette_source": "image", "palette_colors": modern_colors}, f"kmeans-{modern_colors}")
    try:
        pal = named_palette(style)
    except ValueError:
        raise InvalidParameter("style", f"style {style!r} is unknown; choose one of {', '.join(style_names())}, "
                                        "or send colorPalette") from None
    return PaletteChoice({"palette_source": "named", "palette_name": pal.name}, pal.name)


def work_size(width: int, height: int, sketch_w: int, sketch_h: int, max_pixels: int) -> tuple[int, int, str]:
    """Size the sketch is scaled to before pixelation, and the resampling method.

    A whole multiple f of the target, with f = ceil of the larger sketch/target ratio, is at least the sketch on
    both sides: the sketch is only enlarged (nearest neighbour keeps its hard edges, no line is dropped) and every
    block is exactly f x f. f is capped so the enlarged image stays within max_pixels and ComfyUI's side limit;
    only then is a side shrunk, with area averaging.
    """
    f = max(1, math.ceil(max(sketch_w / width, sketch_h / height)))
    cap = max(1, min(math.isqrt(max(1, max_pixels // (width * height))), MAX_RESOLUTION // max(width, height)))
    f = min(f, cap)
    ww, wh = width * f, height * f
    method = "nearest-exact" if ww >= sketch_w and wh >= sketch_h else "area"
    return ww, wh, method


def generation_size(width: int, height: int, ai_size: int) -> tuple[int, int]:
    """SD generation size: the target times a whole factor so the longest side is near ai_size, rounded up to the
    latent grid (8). Never smaller than the target, so pixelation only shrinks."""
    f = max(1, ai_size // max(width, height))
    return -(-width * f // 8) * 8, -(-height * f // 8) * 8


@dataclass
class Plan:
    workflow: str
    algorithm: str
    params: dict[str, Any]
    meta: dict[str, Any]
    use_ai: bool


def plan_request(body: dict[str, Any], settings: PixartEditorSettings, sketch: image_io.DecodedImage,
                 dither_methods: list[str]) -> Plan:
    """Validate every field but id and sketchData (already decoded) and choose the workflow and its parameters."""
    width = _int("width", body.get("width"), 1, settings.max_side)
    height = _int("height", body.get("height"), 1, settings.max_side)
    prompt = body.get("prompt")
    if prompt is None:
        prompt = ""
    if not isinstance(prompt, str):
        raise InvalidParameter("prompt", "prompt must be a string")
    if len(prompt) > MAX_PROMPT_LENGTH:
        raise InvalidParameter("prompt", f"prompt is longer than {MAX_PROMPT_LENGTH} characters")
    style = body.get("style")
    if style is None:
        style = DEFAULT_STYLE
    if not isinstance(style, str) or not style.strip():
        raise InvalidParameter("style", f"style must be a non-empty string, one of {', '.join(style_names())}")
    style = style.strip()
    palette = resolve_palette(style, body.get("colorPalette"), settings.modern_colors)
    timestamp = body.get("timestamp")
    if timestamp is not None and (isinstance(timestamp, bool) or not isinstance(timestamp, (int, float))):
        raise InvalidParameter("timestamp", "timestamp must be a number (milliseconds since 1970)")
    use_ai_field = body.get("useAI")
    if use_ai_field is not None and not isinstance(use_ai_field, bool):
        raise InvalidParameter("useAI", "useAI must be true, false or null")
    dither = body.get("dither")
    if dither is None:
        dither = "none"
    if not isinstance(dither, str) or dither not in dither_methods:
        raise InvalidParameter("dither", f"dither {dither!r} is unknown; choose one of {', '.join(dither_methods)}")
    seed = body.get("seed")
    if seed is not None and seed != -1:
        seed = _int("seed", seed, 0, SEED_MAX)

    if use_ai_field is True and not settings.ai_configured:
        raise InvalidParameter("useAI", "useAI: AI generation is not available on this server (no checkpoint and "
                                        "ControlNet configured: PIXART_EDITOR_CHECKPOINT, PIXART_EDITOR_CONTROLNET); "
                                        "send useAI: false or leave it out")
    use_ai = settings.ai_configured if use_ai_field is None else use_ai_field
    if use_ai and not prompt.strip():
        raise InvalidParameter("prompt", "prompt is required for AI generation; describe the picture, or send "
                                         "useAI: false to pixelate the sketch as it is")

    params: dict[str, Any] = {"sketch": sketch.png, "width": width, "height": height, "dither": dither,
                              "background": parse_colour(settings.background, "PIXART_EDITOR_BACKGROUND"),
                              **palette.params}
    if use_ai:
        workflow = settings.ai_workflow
        gw, gh = generation_size(width, height, settings.ai_size)
        params.update({
            "prompt": settings.prompt_template.replace("{prompt}", prompt.strip()),
            "negative_prompt": settings.negative_prompt, "gen_width": gw, "gen_height": gh,
            "checkpoint": settings.checkpoint.strip(), "controlnet": settings.controlnet.strip(),
            "control_strength": settings.control_strength, "canny_low": settings.canny_low,
            "canny_high": settings.canny_high, "steps": settings.steps, "cfg": settings.cfg,
            "sampler": settings.sampler, "scheduler": settings.scheduler,
            "seed": -1 if seed is None else seed,
        })
    else:
        workflow = settings.workflow
        ww, wh, method = work_size(width, height, sketch.width, sketch.height, settings.max_work_pixels)
        params.update({"sketch_width": sketch.width, "sketch_height": sketch.height, "work_width": ww,
                       "work_height": wh, "scale_method": method})
    meta = {"dialect": DIALECT, "client_id": body["id"], "body_sha256": body_digest(body), "width": width,
            "height": height, "style": style, "palette": palette.label, "dither": dither, "algorithm": workflow,
            "use_ai": use_ai, "timestamp": timestamp}
    return Plan(workflow=workflow, algorithm=workflow, params=params, meta=meta, use_ai=use_ai)


# ---------------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Result:
    data_url: str
    colors: list[str]  # distinct colours, most used first


def read_result(png: bytes, width: int, height: int) -> Result:
    """Check the stored result and describe it. A wrong size is an error, not something to hide by resizing."""
    with Image.open(io.BytesIO(png)) as im:
        im.load()
        if im.size != (width, height):
            raise ValueError(f"the workflow produced a {im.size[0]}x{im.size[1]} image, expected {width}x{height}")
        rgb = im.convert("RGB")
        counted = rgb.getcolors(maxcolors=width * height) or []
        fmt, mode = im.format, im.mode
    counted.sort(key=lambda c: (-c[0], c[1]))
    colors = [f"#{r:02x}{g:02x}{b:02x}" for _, (r, g, b) in counted]
    if fmt != "PNG" or mode not in ("RGB", "P", "L"):
        out = io.BytesIO()
        rgb.save(out, format="PNG")
        png = out.getvalue()
    return Result("data:image/png;base64," + base64.b64encode(png).decode("ascii"), colors)


def status_body(engine: Any, job: Any, cache: collections.OrderedDict[str, Result]) -> dict[str, Any]:
    meta = job.meta or {}
    status = STATUS_NAMES.get(job.status, "failed")
    body: dict[str, Any] = {"id": meta.get("client_id", job.id), "status": status,
                            "progress": 100 if job.status == "completed" else int(job.progress),
                            "resultDataUrl": None, "error": None, "processingTime": None, "metadata": None}
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
            result = read_result(engine.read_output(job, "images", 0), meta["width"], meta["height"])
        except (BridgeError, OSError, ValueError) as exc:
            log.error("job %s: unusable result: %s", job.id, exc)
            body.update(status="failed", error=f"the result could not be read: {getattr(exc, 'message', exc)}")
            return body
        cache[job.id] = result
        while len(cache) > 256:
            cache.popitem(last=False)
    body["resultDataUrl"] = result.data_url
    seed = job.params.get("seed") if meta.get("use_ai") else None
    body["metadata"] = {"colorsUsed": len(result.colors), "pixelCount": meta["width"] * meta["height"],
                        "algorithm": meta.get("algorithm", job.workflow), "style": meta.get("style"),
                        "palette": meta.get("palette"), "dither": meta.get("dither"), "seed": seed,
                        "colors": result.colors}
    return body


# ---------------------------------------------------------------------------------------------------------------
# HTTP


def error_response(exc: BridgeError) -> web.Response:
    """Common error shape plus `detail` (what FastAPI-style clients, like the editor's, read)."""
    headers = {}
    if isinstance(exc, QueueFull):
        headers["Retry-After"] = str(exc.retry_after)
    body = {"error": exc.code, "message": exc.message, "field": exc.field, "detail": exc.message}
    return web.json_response(body, status=exc.status, headers=headers)


def _error(status: int, code: str, message: str, field_name: str | None) -> BridgeError:
    err = BridgeError(message, field=field_name)
    err.status, err.code = status, code
    return err


def translate(exc: BridgeError) -> BridgeError:
    """Engine errors name workflow parameters; name the request field (or the operator's setting) instead."""
    name = exc.field
    message = exc.message.removeprefix(f"{name}: ") if name else exc.message
    if name in SETTING_FIELDS:
        # Not the client's fault: the configured model or sampler is missing on the backend.
        setting = SETTING_FIELDS[name]
        return _error(503, "backend_unavailable", f"server configuration: {setting}: {message}", setting)
    if name in PARAM_FIELDS and PARAM_FIELDS[name] != name:
        return _error(exc.status, exc.code, f"{PARAM_FIELDS[name]}: {message}", PARAM_FIELDS[name])
    return exc


def _accepted(job: Any) -> dict[str, Any]:
    return {"id": job.meta.get("client_id", job.id), "status": STATUS_NAMES.get(job.status, "failed"),
            "progress": 100 if job.status == "completed" else int(job.progress)}


def _same_or_conflict(job: Any, digest: str) -> web.Response:
    if job.meta.get("dialect") != DIALECT or job.meta.get("body_sha256") != digest:
        raise Conflict(f"id {job.meta.get('client_id', job.id)!r} is already used by a different request; "
                       "send a new id for a new generation", field="id")
    return web.json_response(_accepted(job))


_STR = {"type": "string"}
_INT = {"type": "integer"}
REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["id", "sketchData", "width", "height"],
    "properties": {
        "id": {"type": "string", "maxLength": MAX_ID_LENGTH, "description": "The client's own id; reusing it with "
               "the same body answers the same job, with another body 409."},
        "sketchData": {"type": "string", "description": "PNG/JPEG/WebP as a data URL or bare base64."},
        "prompt": {"type": "string", "description": "What to draw; required when the AI path runs."},
        "width": {"type": "integer", "minimum": 1, "description": "Result width in pixels."},
        "height": {"type": "integer", "minimum": 1, "description": "Result height in pixels."},
        "style": {"type": "string", "default": DEFAULT_STYLE,
                  "description": "retro-8bit, retro-16bit, pixel-modern, or a named palette (GET .../styles)."},
        "colorPalette": {"type": ["array", "null"], "items": _STR, "description": "Hex colours; overrides the "
                         "style's palette."},
        "timestamp": {"type": "number"},
        "useAI": {"type": ["boolean", "null"], "description": "true: Stable Diffusion + ControlNet (400 when not "
                  "configured); false: sketch only; absent/null: AI when configured."},
        "dither": {"type": "string", "default": "none", "description": "Dither method (GET .../styles)."},
        "seed": {"type": "integer", "description": "AI path noise seed; -1 or absent: random."},
    },
}
ACCEPTED_SCHEMA = {"type": "object", "required": ["id", "status", "progress"], "properties": {
    "id": _STR, "status": {"enum": ["pending", "processing", "completed", "failed"]}, "progress": _INT}}
STATUS_SCHEMA = {
    "type": "object",
    "required": ["id", "status", "progress", "resultDataUrl", "error", "processingTime", "metadata"],
    "properties": {
        "id": _STR, "status": {"enum": ["pending", "processing", "completed", "failed"]}, "progress": _INT,
        "resultDataUrl": {"type": ["string", "null"], "description": "PNG data URL, exactly width x height, "
                                                                     "palette colours only."},
        "error": {"type": ["string", "null"]},
        "processingTime": {"type": ["integer", "null"], "description": "Milliseconds from acceptance to the end."},
        "metadata": {"type": ["object", "null"], "properties": {
            "colorsUsed": _INT, "pixelCount": _INT, "algorithm": {"enum": ["pixel_art", "pixel_art_ai"]},
            "style": _STR, "palette": _STR, "dither": _STR, "seed": {"type": ["integer", "null"]},
            "colors": {"type": "array", "items": _STR}}},
    },
}
_ERRORS = {400: ERROR_SCHEMA, 409: ERROR_SCHEMA, 413: ERROR_SCHEMA, 503: ERROR_SCHEMA}


def _state(request: web.Request) -> dict[str, Any]:
    return request.app[STATE]


def _dither_methods() -> list[str]:
    from pixart_nodes.core.quantize import DITHER_METHODS

    return list(DITHER_METHODS)


@openapi(request=REQUEST_SCHEMA, tags=["pixart-editor"], responses={200: ACCEPTED_SCHEMA, **_ERRORS})
async def generate(request: web.Request) -> web.Response:
    """Start a sketch-to-pixel-art generation (Pixart editor)."""
    from bridge.app import ENGINE

    engine = request.app[ENGINE]
    settings: PixartEditorSettings = _state(request)["settings"]
    try:
        try:
            body = json.loads(await request.read() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidParameter("body", f"the request body is not valid JSON ({exc})") from None
        client_id = parse_client_id(body)
        job_id = client_job_id(client_id)
        digest = body_digest(body)
        existing = engine.get(job_id)
        if existing is not None:
            return _same_or_conflict(existing, digest)
        if body.get("sketchData") is None:
            raise InvalidParameter("sketchData", "sketchData is required (a data URL or base64 image)")
        sketch = image_io.decode_image(body["sketchData"], "sketchData", max_bytes=engine.max_image_bytes,
                                       max_pixels=engine.max_image_pixels)
        plan = plan_request(body, settings, sketch, _state(request)["dither"])
        try:
            job = await engine.submit(plan.workflow, plan.params, meta=plan.meta, job_id=job_id,
                                      timeout=settings.timeout)
        except Conflict:
            # Two identical requests raced; the loser answers the winner's job.
            existing = engine.get(job_id)
            if existing is None:
                raise
            return _same_or_conflict(existing, digest)
        except BridgeError as exc:
            raise translate(exc) from None
    except BridgeError as exc:
        return error_response(exc)
    log.info("pixart editor: job %s (%s, %dx%d, style %s)", job.id, plan.workflow, plan.meta["width"],
             plan.meta["height"], plan.meta["style"])
    return web.json_response(_accepted(job))


@openapi(tags=["pixart-editor"], responses={200: STATUS_SCHEMA, 404: ERROR_SCHEMA})
async def status(request: web.Request) -> web.Response:
    """Status and result of a Pixart editor generation."""
    from bridge.app import ENGINE

    engine = request.app[ENGINE]
    client_id = request.match_info["id"]
    job = engine.get(client_job_id(client_id))
    if job is None or (job.meta or {}).get("dialect") != DIALECT:
        return error_response(_error(404, JobNotFound.code, f"no generation with id {client_id!r}", "id"))
    return web.json_response(status_body(engine, job, _state(request)["results"]))


@openapi(tags=["pixart-editor"], responses={200: {"type": "object", "properties": {
    "styles": {"type": "array", "items": _STR}, "palettes": {"type": "object"},
    "dither": {"type": "array", "items": _STR}, "ai": {"type": "object"}}}})
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
    from bridge.app import SETTINGS

    settings = PixartEditorSettings.from_settings(app[SETTINGS])
    app[STATE] = {"settings": settings, "results": collections.OrderedDict(), "dither": _dither_methods()}
    app.router.add_post(f"{PREFIX}/generate", generate)
    app.router.add_get(f"{PREFIX}/status/{{id}}", status)
    app.router.add_get(f"{PREFIX}/styles", styles)
