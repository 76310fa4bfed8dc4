"""Image-generation job API: asynchronous text2img, img2img, inpaint and style-transfer jobs with a job list,
cancellation, queue statistics and a model list (shared/seeds/image-generation-job-api.md, issue 4 §2).

`POST /generate/<type>` validates the client's camelCase body, picks the workflow (`txt2img`, `img2img`,
`inpaint`, `style_transfer`), resolves sampler, model and seed so the job can report what it really used, and
answers 202 with the queued job. `GET /jobs/{id}` returns the job and, once completed, its images as data URLs.

Errors use this dialect's shape, `{"error": "<text>", "field": "<camelCase field or null>"}` (plus `validValues`
for an unknown sampler or model), never the core shape: clients show `error` as is.
"""
from __future__ import annotations

import base64
import logging
import math
import random
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePath
from typing import Any

from aiohttp import web
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bridge import images as image_io
from bridge.config import AdapterSettings
from bridge.engine import JobEngine
from bridge.errors import BackendUnavailable, BridgeError, InvalidParameter, QueueFull
from bridge.openapi import openapi
from bridge.store import Job

log = logging.getLogger("bridge.adapters.jobs_api")

API = "jobs"  # meta["api"] of the jobs this adapter owns; other dialects' jobs are invisible here

# Request type -> workflow.
WORKFLOWS: dict[str, str] = {
    "text2img": "txt2img",
    "img2img": "img2img",
    "inpaint": "inpaint",
    "style-transfer": "style_transfer",
}

# The engine's statuses under the names this API's clients filter by ("processing", not "running").
STATUS_OUT = {"queued": "queued", "running": "processing", "completed": "completed", "failed": "failed",
              "cancelled": "cancelled"}
STATUS_IN = {v: k for k, v in STATUS_OUT.items()}

# Client sampler names -> (ComfyUI sampler_name, scheduler). The schedulers are what A1111's "Automatic" picks
# for the same sampler (shared/reference/a1111.md §4.4), since these names come from A1111-era clients.
# PLMS has no core ComfyUI sampler; ipndm (improved pseudo-numerical multistep, the same linear-multistep family,
# warm-started with lower orders as PLMS is) on uniform DDIM timesteps is its nearest equivalent.
SAMPLER_ALIASES: dict[str, tuple[str, str]] = {
    "euler_a": ("euler_ancestral", "normal"),
    "euler": ("euler", "normal"),
    "heun": ("heun", "normal"),
    "lms": ("lms", "normal"),
    "dpm2": ("dpm_2", "karras"),
    "dpm2_a": ("dpm_2_ancestral", "karras"),
    "dpm++_2s_a": ("dpmpp_2s_ancestral", "karras"),
    "dpm++_2m": ("dpmpp_2m", "karras"),
    "dpm++_2m_karras": ("dpmpp_2m", "karras"),
    "dpm++_sde": ("dpmpp_sde", "karras"),
    "dpm++_sde_karras": ("dpmpp_sde", "karras"),
    "dpm++_2m_sde": ("dpmpp_2m_sde", "exponential"),
    "dpm++_2m_sde_karras": ("dpmpp_2m_sde", "karras"),
    "dpm++_3m_sde": ("dpmpp_3m_sde", "exponential"),
    "ddim": ("ddim", "ddim_uniform"),
    "plms": ("ipndm", "ddim_uniform"),
    "unipc": ("uni_pc", "ddim_uniform"),
    "lcm": ("lcm", "sgm_uniform"),
}
# ComfyUI's own names default to these schedulers (others: "normal").
_NATIVE_SCHEDULER = {"ddim": "ddim_uniform", "uni_pc": "ddim_uniform", "uni_pc_bh2": "ddim_uniform",
                     "lcm": "sgm_uniform"}

MAX_SIDE = 2048
MIN_SIDE = 64
MAX_SEED = 2**64 - 1
MAX_PROMPT = 10_000
# Fields that carry images: echoed in `request` as a size summary, not as megabytes of base64.
IMAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "text2img": (),
    "img2img": ("initImage",),
    "inpaint": ("image", "mask"),
    "style-transfer": ("contentImage", "styleImage"),
}


class JobsApiSettings(AdapterSettings):
    """Job API settings (environment `JOBS_API_*`, or `--set JOBS_API_...=...`)."""

    model_config = SettingsConfigDict(env_prefix="JOBS_API_", extra="ignore", env_file_encoding="utf-8",
                                      populate_by_name=True)

    default_model: str = Field("", description="Checkpoint used when a request names none; empty: the workflow's "
                                               "own, else the first the backend lists.")
    clip_vision: str = Field("", description="CLIP vision file for style transfer (ComfyUI models/clip_vision); "
                                             "empty: the first one installed.")
    style_model: str = Field("", description="Style model file for style transfer (models/style_models, an SD1.x "
                                             "T2I style adapter); empty: the first one installed.")
    default_sampler: str = Field("euler_a", description="Sampler when a request names none.")
    default_steps: int = Field(20, ge=1, le=150, description="Steps when a request names none.")
    default_guidance_scale: float = Field(7.5, ge=0, le=30, description="guidanceScale when a request has none.")
    default_size: int = Field(512, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8,
                              description="text2img width/height when a request has none.")


SETTINGS_KEY = web.AppKey("jobs_api_settings", JobsApiSettings)


class ApiError(Exception):
    """A client error in this dialect's shape."""

    def __init__(self, status: int, message: str, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.extra = status, message, field, extra

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.message, "field": self.field, **self.extra}
        headers = {}
        if "retryAfter" in self.extra:
            headers["Retry-After"] = str(self.extra["retryAfter"])
        return web.json_response(body, status=self.status, headers=headers)


def error_response(status: int, message: str, field: str | None = None, **extra: Any) -> web.Response:
    return ApiError(status, message, field, **extra).response()


def from_bridge_error(exc: BridgeError, fields: Mapping[str, str] | None = None) -> ApiError:
    """An engine error in this dialect; `fields` renames workflow parameters to the client's field names."""
    field = exc.field
    message = exc.message
    if field and fields and field in fields:
        client = fields[field]
        message = re.sub(rf"\b{re.escape(field)}\b", client, message)
        field = client
    extra: dict[str, Any] = {}
    if isinstance(exc, QueueFull):
        extra["retryAfter"] = exc.retry_after
    return ApiError(exc.status, message, field, **extra)


# ------------------------------------------------------------------------------------------------ helpers
def iso(ts: float | None) -> str | None:
    """Unix seconds as the clients' ISO 8601 (`2025-11-07T10:00:00.000Z`)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def data_url(data: bytes) -> str:
    kind = image_io.sniff_image_type(data) or "png"
    return f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii")


def new_job_id() -> str:
    # The seed's id format (job_<ms>_<random>), which also sorts by creation time.
    return f"job_{int(time.time() * 1000)}_{secrets.token_hex(4)}"


async def read_json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "Request body must be valid JSON", "body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object", "body")
    return body


def get_int(body: Mapping[str, Any], name: str, default: int | None, lo: int, hi: int,
            multiple_of: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        value = int(value)  # form-encoded and some JS clients send numbers as strings
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"{name} must be an integer", name)
    if isinstance(value, float):
        if not value.is_integer():
            raise ApiError(400, f"{name} must be an integer, got {value}", name)
        value = int(value)
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}, got {value}", name)
    if multiple_of and value % multiple_of:
        raise ApiError(400, f"{name} must be a multiple of {multiple_of}, got {value}", name)
    return value


def get_float(body: Mapping[str, Any], name: str, default: float | None, lo: float, hi: float) -> float | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ApiError(400, f"{name} must be a number", name) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"{name} must be a finite number", name)
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo:g} and {hi:g}, got {value:g}", name)
    return float(value)


def get_text(body: Mapping[str, Any], name: str, *, required: bool, required_message: str | None = None) -> str:
    value = body.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ApiError(400, required_message or f"{name} is required", name)
        return ""
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string", name)
    if len(value) > MAX_PROMPT:
        raise ApiError(400, f"{name} is longer than {MAX_PROMPT} characters", name)
    return value


def get_seed(body: Mapping[str, Any], rng: random.Random) -> int:
    value = body.get("seed")
    if value is None or value == -1:
        # Chosen here rather than by the engine so the job can report it; u32 fits every client.
        return rng.randint(0, 2**32 - 1)
    seed = get_int(body, "seed", None, 0, MAX_SEED)
    assert seed is not None
    return seed


def fitted_size(width: int, height: int) -> tuple[int, int]:
    """An image's own size made valid for generation: at most MAX_SIDE, multiples of 8, at least MIN_SIDE."""
    scale = min(1.0, MAX_SIDE / max(width, height))
    w = max(MIN_SIDE, int(width * scale) // 8 * 8)
    h = max(MIN_SIDE, int(height * scale) // 8 * 8)
    return w, h


def decode_image(engine: JobEngine, body: Mapping[str, Any], name: str) -> image_io.DecodedImage:
    value = body.get(name)
    if value is None or value == "":
        raise ApiError(400, f"{name} is required (a base64 PNG, JPEG or WebP, or a data URL)", name)
    try:
        return image_io.decode_image(value, name, max_bytes=engine.max_image_bytes,
                                     max_pixels=engine.max_image_pixels)
    except BridgeError as exc:
        raise ApiError(exc.status, exc.message, name) from None


async def live_choices(engine: JobEngine, ref: str) -> list[str] | None:
    """A backend's list for `ref`, [] when no backend has that node, None when no backend answers."""
    try:
        return await engine.choices(ref)
    except BackendUnavailable:
        return None
    except InvalidParameter:
        return []


def graph_default(engine: JobEngine, workflow: str, parameter: str) -> Any:
    """The value a workflow's graph holds for a parameter (read through the manifest, not a node id)."""
    p = engine.workflow(workflow).parameters[parameter]
    t = p.targets[0]
    return engine.workflow(workflow).graph[t.node]["inputs"].get(t.input)


def model_stem(name: str) -> str:
    return PurePath(name).stem


async def resolve_model(engine: JobEngine, settings: JobsApiSettings, workflow: str, requested: Any) -> str | None:
    """The checkpoint a job will use: the request's (matched by file name or stem), else the configured default,
    else the graph's when installed, else the first installed. None only when no backend answers and the
    request names none (the engine then picks at dispatch)."""
    if requested is not None and not isinstance(requested, str):
        raise ApiError(400, "model must be a string", "model")
    available = await live_choices(engine, "CheckpointLoaderSimple.ckpt_name")
    name = requested or settings.default_model or None
    if available is None:
        return name
    if name:
        if name in available:
            return name
        by_stem = [c for c in available if model_stem(c) == name or PurePath(c).name == name]
        if len(by_stem) == 1:
            return by_stem[0]
        raise ApiError(400, f"Model {name} not loaded", "model", validValues=available)
    default = graph_default(engine, workflow, "checkpoint")
    if default in available:
        return default
    if not available:
        raise ApiError(400, "No checkpoint is installed on the ComfyUI server (models/checkpoints)", "model",
                       validValues=[])
    return available[0]


async def resolve_sampler(engine: JobEngine, sampler: Any, scheduler: Any) -> tuple[str, str]:
    """(ComfyUI sampler_name, scheduler) for a client's sampler name (alias or ComfyUI's own)."""
    if not isinstance(sampler, str) or not sampler.strip():
        raise ApiError(400, "sampler must be a string", "sampler")
    samplers = await live_choices(engine, "KSampler.sampler_name")
    key = sampler.strip().lower().replace(" ", "_")
    if key in SAMPLER_ALIASES:
        name, default_scheduler = SAMPLER_ALIASES[key]
        if samplers is not None and name not in samplers:
            raise ApiError(400, f"Sampler {sampler} maps to ComfyUI's {name}, which this ComfyUI server does not "
                                f"have", "sampler", validValues=valid_samplers(samplers))
    elif samplers is None or sampler in samplers:
        # Without a backend to ask, a ComfyUI name passes here and is checked when the job is dispatched.
        name, default_scheduler = sampler, _NATIVE_SCHEDULER.get(sampler, "normal")
    else:
        valid = valid_samplers(samplers)
        aliases = [a for a in valid if a in SAMPLER_ALIASES]
        raise ApiError(400, f"Unknown sampler {sampler!r}; valid samplers: {', '.join(aliases)}, or one of "
                            f"ComfyUI's {len(valid) - len(aliases)} sampler names (all in validValues)", "sampler",
                       validValues=valid)
    if scheduler is None:
        return name, default_scheduler
    if not isinstance(scheduler, str):
        raise ApiError(400, "scheduler must be a string", "scheduler")
    schedulers = await live_choices(engine, "KSampler.scheduler")
    if schedulers is not None and scheduler not in schedulers:
        raise ApiError(400, f"Unknown scheduler {scheduler!r}; valid schedulers: {', '.join(schedulers)}",
                       "scheduler", validValues=schedulers)
    return name, scheduler


def valid_samplers(live: list[str] | None) -> list[str]:
    aliases = [a for a, (name, _s) in SAMPLER_ALIASES.items() if live is None or name in live]
    return aliases + [s for s in (live or []) if s not in aliases]


async def resolve_style_models(engine: JobEngine, settings: JobsApiSettings) -> tuple[str, str]:
    """The CLIP vision and style model files, checked before queueing so a missing file is a 400 now."""
    chosen = []
    for ref, configured, env, field, label, folder in (
        ("CLIPVisionLoader.clip_name", settings.clip_vision, "JOBS_API_CLIP_VISION", "clipVision",
         "CLIP vision model", "clip_vision"),
        ("StyleModelLoader.style_model_name", settings.style_model, "JOBS_API_STYLE_MODEL", "styleModel",
         "style model", "style_models"),
    ):
        available = await live_choices(engine, ref)
        if available is None:
            raise ApiError(503, "No ComfyUI backend is available to check the style-transfer models; retry later",
                           None, retryAfter=5)
        if configured:
            if configured not in available:
                raise ApiError(400, f"Style transfer needs the {label} {configured} ({env}), which is not installed "
                                    f"on the ComfyUI server (models/{folder})", field, validValues=available)
            chosen.append(configured)
        elif available:
            chosen.append(available[0])
        else:
            raise ApiError(400, f"Style transfer needs a {label}, and none is installed on the ComfyUI server "
                                f"(put one in models/{folder} or set {env})", field, validValues=[])
    return chosen[0], chosen[1]


# ------------------------------------------------------------------------------------------------ requests
@dataclass
class Prepared:
    workflow: str
    params: dict[str, Any]
    reported: dict[str, Any]   # result.parameters
    request: dict[str, Any]    # the request as echoed back (image fields summarised)
    seed: int
    fields: dict[str, str]     # workflow parameter -> client field, for engine errors


def _summarise(body: Mapping[str, Any], images: Mapping[str, image_io.DecodedImage]) -> dict[str, Any]:
    out = dict(body)
    for name, img in images.items():
        out[name] = {"width": img.width, "height": img.height, "format": img.source_format}
    return out


async def prepare(kind: str, body: dict[str, Any], engine: JobEngine, settings: JobsApiSettings,
                  rng: random.Random) -> Prepared:
    """Validate a /generate body (every error names its camelCase field) and build the workflow parameters."""
    workflow = WORKFLOWS[kind]
    is_style = kind == "style-transfer"
    prompt = get_text(body, "prompt", required=not is_style, required_message="Prompt is required")
    negative = get_text(body, "negativePrompt", required=False)
    steps = get_int(body, "steps", settings.default_steps, 1, 150)
    cfg = get_float(body, "guidanceScale", settings.default_guidance_scale, 0.0, 30.0)
    width = get_int(body, "width", None, MIN_SIDE, MAX_SIDE, 8)
    height = get_int(body, "height", None, MIN_SIDE, MAX_SIDE, 8)
    seed = get_seed(body, rng)
    sampler_in = body.get("sampler") or settings.default_sampler
    sampler_name, scheduler = await resolve_sampler(engine, sampler_in, body.get("scheduler"))

    images: dict[str, image_io.DecodedImage] = {}
    for name in IMAGE_FIELDS[kind]:
        images[name] = decode_image(engine, body, name)

    params: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative, "steps": steps, "cfg": cfg,
                              "seed": seed, "sampler": sampler_name, "scheduler": scheduler}
    fields = {"prompt": "prompt", "negative_prompt": "negativePrompt", "steps": "steps", "cfg": "guidanceScale",
              "seed": "seed", "sampler": "sampler", "scheduler": "scheduler", "width": "width",
              "height": "height", "checkpoint": "model"}
    reported: dict[str, Any] = {}
    if kind == "text2img":
        width = width or settings.default_size
        height = height or settings.default_size
    elif kind == "img2img":
        src = images["initImage"]
        params["image"] = src.png
        params["denoise"] = get_float(body, "strength", 0.75, 0.0, 1.0)
        fields.update(image="initImage", denoise="strength")
        reported["strength"] = params["denoise"]
    elif kind == "inpaint":
        src = images["image"]
        params["image"] = src.png
        params["mask"] = images["mask"].png
        params["denoise"] = get_float(body, "inpaintingStrength", 1.0, 0.0, 1.0)
        fields.update(image="image", mask="mask", denoise="inpaintingStrength")
        reported["inpaintingStrength"] = params["denoise"]
    else:
        src = images["contentImage"]
        style_strength = get_float(body, "styleStrength", 0.7, 0.0, 10.0)
        content_strength = get_float(body, "contentStrength", 0.3, 0.0, 1.0)
        assert content_strength is not None
        clip_vision, style_model = await resolve_style_models(engine, settings)
        params.update(content_image=src.png, style_image=images["styleImage"].png, style_strength=style_strength,
                      # How much of the content survives = how little of it is re-noised.
                      denoise=round(1.0 - content_strength, 6), clip_vision=clip_vision, style_model=style_model)
        fields.update(content_image="contentImage", style_image="styleImage", style_strength="styleStrength",
                      denoise="contentStrength", clip_vision="clipVision", style_model="styleModel")
        reported.update(styleStrength=style_strength, contentStrength=content_strength, clipVision=clip_vision,
                        styleModel=style_model)
    if kind != "text2img":
        fit_w, fit_h = fitted_size(src.width, src.height)
        width, height = width or fit_w, height or fit_h
    params["width"], params["height"] = width, height
    model = await resolve_model(engine, settings, workflow, body.get("model"))
    if model is not None:
        params["checkpoint"] = model
    reported = {"prompt": prompt, "negativePrompt": negative, "width": width, "height": height, "steps": steps,
                "guidanceScale": cfg, "sampler": sampler_in, "samplerName": sampler_name, "scheduler": scheduler,
                "model": model, "seed": seed, **reported}
    return Prepared(workflow, params, reported, _summarise(body, images), seed, fields)


def owned(job: Job | None) -> bool:
    return job is not None and isinstance(job.meta, dict) and job.meta.get("api") == API


def job_summary(job: Job) -> dict[str, Any]:
    meta = job.meta
    return {
        "id": job.id,
        "type": meta.get("type"),
        "status": STATUS_OUT.get(job.status, job.status),
        "createdAt": iso(job.created_at),
        "startedAt": iso(job.started_at),
        "completedAt": iso(job.finished_at),
        "progress": int(round(job.progress)),
        "error": job.error,
    }


def job_view(engine: JobEngine, job: Job) -> dict[str, Any]:
    meta = job.meta
    view = job_summary(job)
    view["request"] = meta.get("request")
    result = None
    if job.status == "completed":
        files = job.outputs.get("images") or []
        images = [data_url(engine.read_output(job, "images", i)) for i in range(len(files))]
        taken = (job.finished_at - job.started_at) if job.started_at and job.finished_at else None
        result = {"images": images, "seed": meta.get("seed"), "parameters": meta.get("parameters"),
                  "timeTaken": int(round(taken * 1000)) if taken is not None else None}
    view["result"] = result
    return view


# ------------------------------------------------------------------------------------------------ handlers
def _engine(request: web.Request) -> JobEngine:
    from bridge.app import ENGINE

    return request.app[ENGINE]


_GENERATE_SCHEMA = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string"}, "negativePrompt": {"type": "string"},
        "width": {"type": "integer", "minimum": MIN_SIDE, "maximum": MAX_SIDE, "multipleOf": 8},
        "height": {"type": "integer", "minimum": MIN_SIDE, "maximum": MAX_SIDE, "multipleOf": 8},
        "steps": {"type": "integer", "minimum": 1, "maximum": 150},
        "guidanceScale": {"type": "number", "minimum": 0, "maximum": 30},
        "seed": {"type": "integer", "minimum": -1}, "sampler": {"type": "string"}, "scheduler": {"type": "string"},
        "model": {"type": "string"},
        "initImage": {"type": "string"}, "strength": {"type": "number"},
        "image": {"type": "string"}, "mask": {"type": "string"}, "inpaintingStrength": {"type": "number"},
        "contentImage": {"type": "string"}, "styleImage": {"type": "string"},
        "styleStrength": {"type": "number"}, "contentStrength": {"type": "number"},
    },
}
_JOB_ACCEPTED = {202: {"description": "Job queued: {id, type, status, request, createdAt, progress}"},
                 400: {"description": "{error, field[, validValues]}"}}


def _generate(kind: str) -> Any:
    @openapi(tags=["jobs"], request=_GENERATE_SCHEMA, responses=_JOB_ACCEPTED)
    async def handler(request: web.Request) -> web.Response:
        engine = _engine(request)
        settings = request.app[SETTINGS_KEY]
        try:
            body = await read_json_object(request)
            prepared = await prepare(kind, body, engine, settings, random.Random())
            meta = {"api": API, "type": kind, "request": prepared.request, "parameters": prepared.reported,
                    "seed": prepared.seed}
            try:
                job = await engine.submit(prepared.workflow, prepared.params, meta=meta, job_id=new_job_id())
            except BridgeError as exc:
                raise from_bridge_error(exc, prepared.fields) from None
        except ApiError as exc:
            return exc.response()
        # The acceptance record: the job may already be running on a fast backend, yet what this answer
        # confirms is that it was queued (GET /jobs/{id} has the live state).
        return web.json_response({"id": job.id, "type": kind, "status": "queued", "request": prepared.request,
                                  "createdAt": iso(job.created_at), "progress": 0}, status=202)

    handler.__doc__ = {
        "text2img": "Queue a text-to-image job.",
        "img2img": "Queue an image-to-image job (initImage, strength).",
        "inpaint": "Queue an inpainting job (image, mask: white = repaint, inpaintingStrength).",
        "style-transfer": "Queue a style-transfer job (contentImage, styleImage, styleStrength, contentStrength).",
    }[kind]
    handler.__name__ = f"generate_{kind.replace('-', '_')}"
    return handler


@openapi(tags=["jobs"], responses={200: {"description": "The job, with result {images, seed, parameters, "
                                                        "timeTaken} once completed"},
                                   404: {"description": "{\"error\": \"Job not found\"}"}})
async def get_job(request: web.Request) -> web.Response:
    """A job's status, progress and (when completed) its images as data URLs."""
    engine = _engine(request)
    job = engine.get(request.match_info["id"])
    if not owned(job):
        return error_response(404, "Job not found", "id")
    assert job is not None
    try:
        return web.json_response(job_view(engine, job))
    except (OSError, BridgeError) as exc:
        log.error("job %s: stored result unreadable: %s", job.id, exc)
        return error_response(500, f"The result of job {job.id} cannot be read", "id")


@openapi(tags=["jobs"], parameters=[
    {"name": "status", "in": "query", "required": False,
     "schema": {"enum": list(STATUS_IN)}, "description": "Only jobs with this status."},
    {"name": "type", "in": "query", "required": False, "schema": {"enum": list(WORKFLOWS)}},
    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
])
async def list_jobs(request: web.Request) -> web.Response:
    """List jobs, newest first, optionally filtered by status and type."""
    engine = _engine(request)
    q = request.query
    try:
        status = q.get("status") or None
        if status is not None and status not in STATUS_IN:
            raise ApiError(400, f"status must be one of {', '.join(STATUS_IN)}", "status")
        kind = q.get("type") or None
        if kind is not None and kind not in WORKFLOWS:
            raise ApiError(400, f"type must be one of {', '.join(WORKFLOWS)}", "type")
        limit = get_int(q, "limit", 100, 1, 1000)
        offset = get_int(q, "offset", 0, 0, 10**9)
    except ApiError as exc:
        return exc.response()
    assert limit is not None and offset is not None
    workflow = WORKFLOWS[kind] if kind else None
    picked: list[Job] = []
    skipped = 0
    page = 0
    # Other dialects' jobs share the store, so filter in pages until the window is filled.
    while len(picked) < limit:
        rows = engine.list(status=STATUS_IN[status] if status else None, workflow=workflow, limit=500,
                           offset=page * 500)
        for job in rows:
            if not owned(job) or (kind and job.meta.get("type") != kind):
                continue
            if skipped < offset:
                skipped += 1
                continue
            picked.append(job)
            if len(picked) >= limit:
                break
        if len(rows) < 500:
            break
        page += 1
    return web.json_response({"jobs": [job_summary(j) for j in picked]})


@openapi(tags=["jobs"], responses={200: {"description": "{\"success\": true}"},
                                   404: {"description": "{\"error\": \"Job not found\"}"},
                                   409: {"description": "{\"success\": false, \"error\": ...}: already finished"}})
async def cancel_job(request: web.Request) -> web.Response:
    """Cancel a queued or running job."""
    engine = _engine(request)
    job = engine.get(request.match_info["id"])
    if not owned(job):
        return error_response(404, "Job not found", "id")
    assert job is not None
    try:
        cancelled = await engine.cancel(job.id)
    except BridgeError as exc:
        return from_bridge_error(exc).response()
    if not cancelled:
        return web.json_response({"success": False, "error": f"Job is already {STATUS_OUT[job.status]}"},
                                 status=409)
    return web.json_response({"success": True})


@openapi(tags=["jobs"])
async def queue_status(request: web.Request) -> web.Response:
    """Queue statistics: jobs per status and the average processing time in milliseconds."""
    stats = _engine(request).stats()
    counts = stats.get("counts") or {}
    average = stats.get("average_duration")
    return web.json_response({
        "queuedJobs": counts.get("queued", 0),
        "processingJobs": counts.get("running", 0),
        "completedJobs": counts.get("completed", 0),
        "failedJobs": counts.get("failed", 0),
        "cancelledJobs": counts.get("cancelled", 0),
        "averageProcessingTime": int(round(average * 1000)) if average else 0,
    })


_VERSION_PATTERNS = (
    (re.compile(r"sd[-_ ]?xl|sdxl|[-_]xl[-_.]", re.I), "xl"),
    (re.compile(r"(?:sd|v)[-_ ]?1[-_.]?5|sd15", re.I), "1.5"),
    (re.compile(r"(?:sd|v)[-_ ]?1[-_.]?4|sd14", re.I), "1.4"),
    (re.compile(r"(?:sd|v)[-_ ]?2[-_.]?1|sd21", re.I), "2.1"),
)


def guess_version(name: str) -> str | None:
    """The base-model version a file name states (ComfyUI does not report it without loading the file)."""
    for pattern, version in _VERSION_PATTERNS:
        if pattern.search(name):
            return version
    return None


@openapi(tags=["jobs"], responses={200: {"description": "{models: [{id, name, description, type, loaded, "
                                                        "version}]}"},
                                   503: {"description": "No ComfyUI backend answers"}})
async def list_models(request: web.Request) -> web.Response:
    """Checkpoints, CLIP vision and style models the ComfyUI backend really has."""
    engine = _engine(request)
    settings = request.app[SETTINGS_KEY]
    checkpoints = await live_choices(engine, "CheckpointLoaderSimple.ckpt_name")
    if checkpoints is None:
        return error_response(503, "No ComfyUI backend is available to list the models", None)
    clip_vision = await live_choices(engine, "CLIPVisionLoader.clip_name") or []
    style_models = await live_choices(engine, "StyleModelLoader.style_model_name") or []
    models = []
    for name in checkpoints:
        models.append({"id": name, "name": model_stem(name),
                       "description": "Stable Diffusion checkpoint" + (" (default)" if name == settings.default_model
                                                                        else ""),
                       "type": "base", "loaded": True, "version": guess_version(name)})
    for kind, names, label, configured in (
        ("clip_vision", clip_vision, "CLIP vision model for style transfer", settings.clip_vision),
        ("style", style_models, "Style model (T2I style adapter) for style transfer", settings.style_model),
    ):
        in_use = configured or (names[0] if names else "")
        for name in names:
            models.append({"id": name, "name": model_stem(name),
                           "description": label + (" (used)" if name == in_use else ""),
                           "type": kind, "loaded": True, "version": guess_version(name)})
    return web.json_response({"models": models})


def setup(app: web.Application) -> None:
    from bridge.app import SETTINGS

    app[SETTINGS_KEY] = JobsApiSettings.from_settings(app[SETTINGS])
    r = app.router
    for kind in WORKFLOWS:
        r.add_post(f"/generate/{kind}", _generate(kind))
    r.add_get("/jobs", list_jobs)
    r.add_get("/jobs/{id}", get_job)
    r.add_post("/jobs/{id}/cancel", cancel_job)
    r.add_get("/queue/status", queue_status)
    r.add_get("/models", list_models)
