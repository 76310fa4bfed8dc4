"""Unified `/generate` endpoint of the Raspberry Pi AX650N service (`pi_axera_sd_generator`).

`POST /generate` takes `{mode, prompt, init_image, width, height, steps, seed, sampler_name, cfg_scale, n_iter,
batch_size, denoising_strength (alias strength), resize_mode, negative_prompt}` and answers synchronously with
`{status: "ok", base64, image, images: [...], seed, text_time_ms, total_time_ms, ...}`. The Pi clients read
`images[0]`, then `image`, then `base64`; all three are filled.

The backend is a setting (`UNIFIED_BACKEND`): `axera` runs the `axera_txt2img` / `axera_img2img` workflows (SD1.5 +
LCM-LoRA on the NPU, or on the ONNX exports), `sd15` runs the ordinary checkpoint workflows `txt2img` / `img2img`
for boards without an NPU. What the chosen backend cannot honour (the NPU build has a fixed size, 4 LCM steps, no
guidance, no negative prompt) is listed in the answer's `unsupported` entries instead of being dropped silently;
`GET /generate/options` says what the configured backend supports and its defaults.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bridge.config import AdapterSettings
from bridge.errors import BridgeError, InvalidParameter, QueueFull
from bridge.openapi import openapi

log = logging.getLogger("bridge.adapters.unified")

MODES = ("txt2img", "img2img")
SEED_MAX = 2**64 - 1
RANDOM_SEED_MAX = 2**32 - 1  # what the Pi service draws for seed -1
# resize_mode: the Pi service's numbers, our node's names, and A1111's labels all accepted
RESIZE_NAMES = ("stretch", "crop", "pad")
RESIZE_ALIASES = {"0": 0, "1": 1, "2": 2, "stretch": 0, "just resize": 0, "crop": 1, "crop and resize": 1,
                  "pad": 2, "resize and fill": 2, "fill": 2}
SD15_RESIZE = ("just resize", "crop and resize", "resize and fill")
# LCM: the txt2img schedule has 4 steps; img2img runs the last 1-4 of them by strength (<=0.35, <=0.60, <=0.85)
AXERA_STEPS = 4
AXERA_STRENGTH_STEPS = ((0.35, 1), (0.60, 2), (0.85, 3))

# workflow parameter -> request field, so that an engine error names the field the client sent
SD15_FIELDS = {"cfg": "cfg_scale", "sampler": "sampler_name", "scheduler": "sampler_name", "image": "init_image",
               "denoise": "denoising_strength", "checkpoint": "UNIFIED_SD15_CHECKPOINT"}
AXERA_FIELDS = {"image": "init_image", "denoise": "denoising_strength", "model_dir": "UNIFIED_AXERA_MODEL_DIR",
                "runtime": "UNIFIED_AXERA_RUNTIME"}


class UnifiedSettings(AdapterSettings):
    """`/generate` settings (environment `UNIFIED_*`, or `--set UNIFIED_...=...`)."""

    model_config = SettingsConfigDict(env_prefix="UNIFIED_", extra="ignore", env_file_encoding="utf-8",
                                      populate_by_name=True)

    backend: Literal["axera", "sd15"] = Field("axera", description="axera: the AX650N LCM workflows; sd15: the "
                                                                   "SD1.5 checkpoint workflows on ComfyUI.")
    axera_model_dir: str = Field("", description="Axera model folder on the ComfyUI machine; empty: the node's "
                                                 "default ($PIXART_AXERA_MODEL_DIR, else models/axera).")
    axera_runtime: Literal["auto", "axengine", "onnxruntime"] = Field("auto", description="Runtime for the Axera "
                                                                                          "models.")
    axera_txt2img_workflow: str = Field("axera_txt2img", description="Workflow for Axera txt2img.")
    axera_img2img_workflow: str = Field("axera_img2img", description="Workflow for Axera img2img.")
    sd15_txt2img_workflow: str = Field("txt2img", description="Workflow for SD1.5 txt2img.")
    sd15_img2img_workflow: str = Field("img2img", description="Workflow for SD1.5 img2img.")
    sd15_checkpoint: str = Field("", description="Checkpoint for the sd15 backend; empty: the workflow's, else the "
                                                 "first installed.")
    postprocess: Literal["none", "pixelate"] = Field("none", description="Axera backend: pixelate the results "
                                                                         "with the Pixelate node.")
    pixel_size: int = Field(8, ge=1, le=512, description="Block size when postprocess=pixelate.")
    default_strength: float = Field(0.5, ge=0.0, le=1.0, description="img2img denoising strength when the "
                                                                     "request has none (the Pi service's 0.5).")
    max_images: int = Field(16, ge=1, le=64, description="Largest n_iter x batch_size accepted.")
    timeout: float = Field(300.0, gt=0, description="Seconds a /generate request waits for its images.")


STATE = web.AppKey("unified_state", dict)


# ---------------------------------------------------------------------------------------------------------------
# Request parsing (pure: no engine, no I/O)


@dataclass
class GenerateRequest:
    mode: str
    prompt: str
    seed: int
    init_image: str | None = None
    strength: float = 0.5
    resize_mode: int = 0
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    sampler_name: str | None = None
    negative_prompt: str = ""
    n_iter: int = 1
    batch_size: int = 1
    strength_given: bool = False

    @property
    def count(self) -> int:
        return self.n_iter * self.batch_size


def _present(body: dict[str, Any], key: str) -> bool:
    return body.get(key) is not None


def _int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool):
        raise InvalidParameter(name, f"{name} must be an integer, got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise InvalidParameter(name, f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidParameter(name, f"{name} must be an integer, got {value}")
        value = int(value)
    if not isinstance(value, int):
        raise InvalidParameter(name, f"{name} must be an integer, got {type(value).__name__}")
    if lo is not None and value < lo:
        raise InvalidParameter(name, f"{name} must be at least {lo}, got {value}")
    if hi is not None and value > hi:
        raise InvalidParameter(name, f"{name} must be at most {hi}, got {value}")
    return value


def _float(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool):
        raise InvalidParameter(name, f"{name} must be a number, got {value!r}")
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise InvalidParameter(name, f"{name} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidParameter(name, f"{name} must be a finite number")
    if lo is not None and number < lo:
        raise InvalidParameter(name, f"{name} must be at least {lo}, got {number}")
    if hi is not None and number > hi:
        raise InvalidParameter(name, f"{name} must be at most {hi}, got {number}")
    return number


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidParameter(name, f"{name} must be a string")
    return value


def parse_seed(value: Any, rng: random.Random) -> int:
    if value is None or (isinstance(value, str) and value.strip() in ("", "-1")):
        return rng.randint(0, RANDOM_SEED_MAX)
    seed = _int("seed", value)
    if seed == -1:
        return rng.randint(0, RANDOM_SEED_MAX)
    if not 0 <= seed <= SEED_MAX:
        raise InvalidParameter("seed", f"seed must be -1 (random) or between 0 and {SEED_MAX}, got {seed}")
    return seed


def parse_resize_mode(value: Any) -> int:
    key = str(value).strip().lower() if not isinstance(value, bool) else ""
    if key not in RESIZE_ALIASES:
        raise InvalidParameter("resize_mode", f"resize_mode must be 0 (stretch), 1 (crop) or 2 (pad), got {value!r}")
    return RESIZE_ALIASES[key]


def parse_request(body: Any, *, rng: random.Random, default_strength: float = 0.5,
                  max_images: int = 16) -> GenerateRequest:
    """Validate a /generate body; raises InvalidParameter naming the request field."""
    if not isinstance(body, dict):
        raise InvalidParameter("body", "the request body must be a JSON object")
    init_image = body.get("init_image")
    if init_image is None and isinstance(body.get("init_images"), list) and body["init_images"]:
        init_image = body["init_images"][0]  # the picker sends both; A1111 clients only the list
    mode = body.get("mode")
    if mode is None:
        # the first Pi server took {"prompt"} alone; an image without a mode can only mean img2img
        mode = "img2img" if init_image else "txt2img"
    if mode not in MODES:
        raise InvalidParameter("mode", f"mode must be 'txt2img' or 'img2img', got {mode!r}")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidParameter("prompt", "prompt is required (a non-empty string)")
    req = GenerateRequest(mode=mode, prompt=prompt, seed=parse_seed(body.get("seed"), rng),
                          strength=default_strength)
    if mode == "img2img":
        if not isinstance(init_image, str) or not init_image.strip():
            raise InvalidParameter("init_image", "init_image (base64 PNG/JPEG) is required for img2img")
        req.init_image = init_image
    strength = body.get("denoising_strength", body.get("strength"))
    if strength is not None:
        req.strength = _float("denoising_strength", strength, 0.0, 1.0)
        req.strength_given = True
    if _present(body, "resize_mode"):
        req.resize_mode = parse_resize_mode(body["resize_mode"])
    for name in ("width", "height"):
        if _present(body, name):
            setattr(req, name, _int(name, body[name], 1, 16384))
    if _present(body, "steps"):
        req.steps = _int("steps", body["steps"], 1, 1000)
    if _present(body, "cfg_scale"):
        req.cfg_scale = _float("cfg_scale", body["cfg_scale"], 0.0, 100.0)
    if _present(body, "sampler_name"):
        req.sampler_name = _str("sampler_name", body["sampler_name"]).strip() or None
    if _present(body, "negative_prompt"):
        req.negative_prompt = _str("negative_prompt", body["negative_prompt"])
    if _present(body, "n_iter"):
        req.n_iter = _int("n_iter", body["n_iter"], 1, max_images)
    if _present(body, "batch_size"):
        req.batch_size = _int("batch_size", body["batch_size"], 1, max_images)
    if req.count > max_images:
        raise InvalidParameter("batch_size", f"n_iter x batch_size = {req.count} images; at most {max_images} "
                                             f"per request (UNIFIED_MAX_IMAGES)")
    return req


# ---------------------------------------------------------------------------------------------------------------
# Planning: request -> workflow jobs, plus what the backend cannot honour


@dataclass
class Plan:
    backend: str
    jobs: list[tuple[str, dict[str, Any]]]
    seeds: list[int]
    steps: int | None
    unsupported: list[dict[str, Any]] = field(default_factory=list)
    field_names: dict[str, str] = field(default_factory=dict)
    sampler: str | None = None

    def note(self, name: str, requested: Any, used: Any, reason: str) -> None:
        self.unsupported.append({"field": name, "requested": requested, "used": used, "reason": reason})


def axera_steps(mode: str, strength: float) -> int:
    if mode == "txt2img":
        return AXERA_STEPS
    for bound, steps in AXERA_STRENGTH_STEPS:
        if strength <= bound:
            return steps
    return AXERA_STEPS


def plan_axera(req: GenerateRequest, s: UnifiedSettings) -> Plan:
    steps = axera_steps(req.mode, req.strength)
    base: dict[str, Any] = {"prompt": req.prompt, "runtime": s.axera_runtime, "postprocess": s.postprocess,
                            "pixel_size": s.pixel_size}
    if s.axera_model_dir:
        base["model_dir"] = s.axera_model_dir
    if req.mode == "txt2img":
        # one job: the sampler node makes the batch itself with seeds seed, seed+1, ...
        jobs = [(s.axera_txt2img_workflow, {**base, "seed": req.seed, "batch_size": req.count})]
    else:
        jobs = [(s.axera_img2img_workflow, {**base, "seed": (req.seed + i) % (SEED_MAX + 1), "image": req.init_image,
                                            "denoise": req.strength, "resize_mode": RESIZE_NAMES[req.resize_mode]})
                for i in range(req.count)]
    plan = Plan("axera", jobs, [(req.seed + i) % (SEED_MAX + 1) for i in range(req.count)], steps,
                field_names=AXERA_FIELDS, sampler="LCM")
    if req.steps is not None and req.steps != steps:
        reason = ("the LCM build runs 4 fixed steps" if req.mode == "txt2img"
                  else "img2img steps follow denoising_strength (<=0.35: 1, <=0.60: 2, <=0.85: 3, else 4)")
        plan.note("steps", req.steps, steps, reason)
    if req.cfg_scale is not None and req.cfg_scale != 1.0:
        plan.note("cfg_scale", req.cfg_scale, 1.0, "the LCM build runs without classifier-free guidance")
    if req.sampler_name is not None and req.sampler_name.lower() not in ("lcm", "k_lcm"):
        plan.note("sampler_name", req.sampler_name, "LCM", "the NPU build has one sampler: the LCM schedule")
    if req.negative_prompt.strip():
        plan.note("negative_prompt", req.negative_prompt, None, "no guidance, so no negative prompt")
    return plan


def _sampler_honoured(requested: str, resolved_name: str) -> bool:
    from .a1111_samplers import SAMPLERS, SCHEDULERS

    req = requested.strip().lower()
    names = {resolved_name.lower()}
    for sampler in SAMPLERS:
        if sampler.name == resolved_name:
            names |= {a.lower() for a in sampler.aliases}
    for name in names:
        if req == name:
            return True
        if req.startswith(name + " "):
            rest = req[len(name) + 1:]
            if any(rest in (sc.name.lower(), sc.label.lower(), *(a.lower() for a in sc.aliases)) for sc in SCHEDULERS):
                return True
    return False


def a1111_sampler_name(comfy_sampler: str | None) -> str | None:
    """The A1111 name (as `/generate/options` lists the choices) of a ComfyUI KSampler sampler."""
    from .a1111_samplers import SAMPLERS

    return next((sp.name for sp in SAMPLERS if sp.comfy == comfy_sampler), comfy_sampler)


def plan_sd15(req: GenerateRequest, s: UnifiedSettings, live_samplers: list[str] | None,
              live_schedulers: list[str] | None, default_sampler: str | None = None) -> Plan:
    """`default_sampler`: the ComfyUI sampler the workflow runs when the request names none (reported in A1111
    naming)."""
    from .a1111_samplers import resolve

    # ComfyUI draws a whole latent batch from one seed, so image i of a batch is not what seed + i alone gives.
    # One job per image with seed + i (as on the Axera backend and in A1111) makes every listed seed reproduce
    # its image.
    seeds = [(req.seed + i) % (SEED_MAX + 1) for i in range(req.count)]
    params: dict[str, Any] = {"prompt": req.prompt, "negative_prompt": req.negative_prompt, "batch_size": 1}
    plan = Plan("sd15", [], seeds, req.steps, field_names=SD15_FIELDS, sampler=a1111_sampler_name(default_sampler))
    for name in ("width", "height"):
        value = getattr(req, name)
        if value is not None:
            # SD latents are 1/8 of the image; A1111 also floors to a multiple of 8
            used = max(64, min(2048, value - value % 8))
            if used != value:
                plan.note(name, value, used, "SD1.5 sizes are multiples of 8 between 64 and 2048")
            params[name] = used
    if req.steps is not None:
        params["steps"] = min(req.steps, 150)
        if req.steps > 150:
            plan.note("steps", req.steps, 150, "at most 150 sampling steps")
        plan.steps = params["steps"]
    if req.cfg_scale is not None:
        params["cfg"] = min(req.cfg_scale, 30.0)
        if req.cfg_scale > 30.0:
            plan.note("cfg_scale", req.cfg_scale, 30.0, "at most 30")
    if req.sampler_name is not None:
        resolved = resolve(req.sampler_name, None, live_samplers, live_schedulers)
        params["sampler"], params["scheduler"] = resolved.comfy_sampler, resolved.comfy_scheduler
        plan.sampler = resolved.sampler_name
        if not _sampler_honoured(req.sampler_name, resolved.sampler_name):
            plan.note("sampler_name", req.sampler_name, resolved.sampler_name,
                      "unknown or not available on the backend; A1111's fallback is used")
    if s.sd15_checkpoint:
        params["checkpoint"] = s.sd15_checkpoint
    workflow = s.sd15_txt2img_workflow
    if req.mode == "img2img":
        workflow = s.sd15_img2img_workflow
        params.update(image=req.init_image, denoise=req.strength, resize_mode=SD15_RESIZE[req.resize_mode])
    plan.jobs = [(workflow, {**params, "seed": seed}) for seed in seeds]
    if s.postprocess != "none":
        plan.note("postprocess", s.postprocess, "none", "the sd15 workflows have no pixelate step")
    return plan


# ---------------------------------------------------------------------------------------------------------------
# HTTP


def ok_or_error(status: int, message: str, field_name: str | None = None,
                headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"status": "error", "error": message}
    if field_name:
        body["field"] = field_name
    return web.json_response(body, status=status, headers=headers)


def _translate(exc: BridgeError, names: dict[str, str]) -> web.Response:
    field_name = names.get(exc.field or "", exc.field)
    message = exc.message
    if exc.field and field_name != exc.field and message.startswith(exc.field):
        message = field_name + message[len(exc.field):]
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, QueueFull) else None
    status = exc.status if exc.status in (400, 413, 503) else 500
    return ok_or_error(status, message, field_name, headers)


def _settings(request: web.Request) -> UnifiedSettings:
    return request.app[STATE]["settings"]


async def _live(engine: Any, ref: str) -> list[str] | None:
    try:
        return list(await engine.choices(ref))
    except BridgeError:
        return None


def _workflow_default(engine: Any, s: UnifiedSettings, name: str) -> Any:
    """A parameter's default in the sd15 txt2img workflow (the img2img one shares the common parameters)."""
    wf = getattr(engine, "workflows", {}).get(s.sd15_txt2img_workflow)
    p = wf.parameters.get(name) if wf is not None else None
    return p.default if p is not None and p.has_default else None


def _png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size


_INT = {"type": "integer"}
_NUM = {"type": "number"}
_STR = {"type": "string"}
REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "mode": {"type": "string", "enum": list(MODES),
                 "description": "Default: img2img when init_image is sent, else txt2img."},
        "prompt": _STR,
        "init_image": {"type": "string", "description": "Base64 PNG/JPEG/WebP (or data URL); img2img only."},
        "init_images": {"type": "array", "items": _STR, "description": "A1111 style; the first is used."},
        "seed": {"type": "integer", "description": "-1 or absent: random in 0..2^32-1."},
        "width": _INT, "height": _INT, "steps": _INT, "cfg_scale": _NUM, "sampler_name": _STR,
        "negative_prompt": _STR, "n_iter": _INT, "batch_size": _INT,
        "denoising_strength": {"type": "number", "minimum": 0, "maximum": 1, "description": "Alias: strength."},
        "strength": {"type": "number", "minimum": 0, "maximum": 1},
        "resize_mode": {"description": "0 stretch, 1 crop, 2 pad (names accepted).",
                        "oneOf": [{"type": "integer", "enum": [0, 1, 2]}, _STR]},
    },
}
_NOTE = {"type": "object", "properties": {"field": _STR, "requested": {}, "used": {}, "reason": _STR}}
RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ok"]}, "mode": _STR, "backend": _STR,
        "base64": _STR, "image": _STR, "images": {"type": "array", "items": _STR},
        "seed": _INT, "seeds": {"type": "array", "items": _INT},
        "text_time_ms": {"type": ["number", "null"]}, "total_time_ms": _NUM, "request_time_ms": _NUM,
        "width": _INT, "height": _INT, "steps": {"type": ["integer", "null"]},
        "sampler_name": {"type": ["string", "null"]},
        "unsupported": {"type": "array", "items": _NOTE,
                        "description": "Options the backend could not honour: what was asked, what was used."},
        "timings": {"type": "array", "items": {"type": "object"}, "description": "Axera: per-image stage times."},
        "job_ids": {"type": "array", "items": _STR},
    },
}
ERROR_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"status": {"type": "string", "enum": ["error"]},
                                                                  "error": _STR, "field": _STR}}


@openapi(request=REQUEST_SCHEMA, tags=["unified"],
         responses={200: RESPONSE_SCHEMA, 400: ERROR_SCHEMA, 500: ERROR_SCHEMA, 503: ERROR_SCHEMA})
async def generate(request: web.Request) -> web.Response:
    """Generate images (txt2img or img2img) synchronously: the Raspberry Pi AX650N service's unified endpoint."""
    from bridge.app import ENGINE

    engine = request.app[ENGINE]
    settings = _settings(request)
    state = request.app[STATE]
    t0 = time.perf_counter()
    try:
        body = json.loads(await request.read() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return ok_or_error(400, f"body: not valid JSON ({exc})", "body")
    try:
        req = parse_request(body, rng=state["rng"], default_strength=settings.default_strength,
                            max_images=settings.max_images)
    except InvalidParameter as exc:
        return ok_or_error(400, exc.message, exc.field)

    if settings.backend == "axera":
        plan = plan_axera(req, settings)
    else:
        plan = plan_sd15(req, settings, await _live(engine, "KSampler.sampler_name"),
                         await _live(engine, "KSampler.scheduler"), _workflow_default(engine, settings, "sampler"))

    job_ids: list[str] = []
    try:
        for index, (workflow, params) in enumerate(plan.jobs):
            meta = {"dialect": "unified", "mode": req.mode, "index": index}
            job = await engine.submit(workflow, params, meta=meta)
            job_ids.append(job.id)
        finished = []
        for job_id in job_ids:
            remaining = settings.timeout - (time.perf_counter() - t0)
            finished.append(await engine.wait(job_id, timeout=max(0.001, remaining)))
    except BridgeError as exc:
        await _cancel_all(engine, job_ids)
        return _translate(exc, plan.field_names)
    except asyncio.TimeoutError:
        await _cancel_all(engine, job_ids)
        return ok_or_error(500, f"generation did not finish within {settings.timeout:g} s (UNIFIED_TIMEOUT)")

    for job in finished:
        if job.status != "completed":
            await _cancel_all(engine, job_ids)
            why = job.error or job.status
            log.warning("/generate job %s %s: %s", job.id, job.status, why)
            return ok_or_error(500, f"generation {job.status}: {why}")

    images: list[str] = []
    sizes: list[tuple[int, int]] = []
    timings: list[dict[str, Any]] = []
    for job in finished:
        for i in range(len(job.outputs.get("images") or [])):
            png = engine.read_output(job, "images", i)
            images.append(base64.b64encode(png).decode("ascii"))
            sizes.append(_png_size(png))
        timings.extend(t for t in (job.outputs.get("timings") or []) if isinstance(t, dict))
    if not images:
        return ok_or_error(500, "the workflow finished without an image")

    width, height = sizes[0]
    if plan.backend == "axera":
        state["axera_size"] = (width, height)
        for name, value, used in (("width", req.width, width), ("height", req.height, height)):
            if value is not None and value != used:
                plan.note(name, value, used, f"the NPU build has a fixed {width}x{height} size")
        text_ms = round(sum(float(t.get("text_encoder_ms", 0.0)) for t in timings), 3)
        total_ms = round(sum(float(t.get("total_ms", 0.0)) for t in timings), 3)
        seeds = [int(t["seed"]) for t in timings if "seed" in t] or plan.seeds
    else:
        text_ms = None  # ComfyUI does not report the text encoder's share of a run
        total_ms = round(sum(((j.finished_at or 0) - (j.started_at or j.finished_at or 0)) * 1000 for j in finished), 3)
        seeds = plan.seeds

    answer: dict[str, Any] = {
        "status": "ok",
        "mode": req.mode,
        "backend": plan.backend,
        "base64": images[0],
        "image": images[0],
        "images": images,
        "seed": seeds[0],
        "seeds": seeds,
        "text_time_ms": text_ms,
        "total_time_ms": total_ms,
        "request_time_ms": round((time.perf_counter() - t0) * 1000, 3),
        "width": width,
        "height": height,
        "steps": plan.steps,
        "sampler_name": plan.sampler,
        "unsupported": plan.unsupported,
        "job_ids": job_ids,
    }
    if req.mode == "img2img":
        answer["denoising_strength"] = req.strength
        answer["resize_mode"] = req.resize_mode
    if timings:
        answer["timings"] = timings
    return web.json_response(answer)


async def _cancel_all(engine: Any, job_ids: list[str]) -> None:
    for job_id in job_ids:
        try:
            await engine.cancel(job_id)
        except BridgeError:
            pass


@openapi(tags=["unified"], responses={200: {"type": "object", "properties": {
    "backend": _STR, "workflows": {"type": "object"}, "workflows_available": {"type": "object"},
    "fields": {"type": "object"}, "settings": {"type": "object"}}}})
async def options(request: web.Request) -> web.Response:
    """What the configured /generate backend supports, with its defaults."""
    from bridge.app import ENGINE

    engine = request.app[ENGINE]
    s = _settings(request)
    state = request.app[STATE]
    workflows = getattr(engine, "workflows", {})
    common: dict[str, Any] = {
        "mode": {"supported": True, "choices": list(MODES), "default": "txt2img (img2img when init_image is sent)"},
        "prompt": {"supported": True, "required": True},
        "seed": {"supported": True, "default": -1, "min": -1, "max": SEED_MAX,
                 "note": "-1 draws a random seed in 0..2^32-1; the answer reports the seed used"},
        "init_image": {"supported": True, "required_for": "img2img", "formats": ["PNG", "JPEG", "WebP"]},
        "denoising_strength": {"supported": True, "default": s.default_strength, "min": 0.0, "max": 1.0,
                               "aliases": ["strength"]},
        "resize_mode": {"supported": True, "default": 0, "choices": {"0": "stretch", "1": "crop", "2": "pad"}},
        "n_iter": {"supported": True, "default": 1, "max": s.max_images},
        "batch_size": {"supported": True, "default": 1, "max": s.max_images,
                       "note": f"n_iter x batch_size <= {s.max_images}; image i is made with seed + i on its own, "
                               f"so each seed in `seeds` reproduces its image"},
    }
    if s.backend == "axera":
        size = state.get("axera_size")
        fixed = {"supported": False, "reason": "fixed by the model build (512x512, 1024x768 and 256x256 exist)",
                 "fixed": None, "known": size is not None}
        fields = {
            **common,
            "width": {**fixed, "fixed": size[0] if size else None},
            "height": {**fixed, "fixed": size[1] if size else None},
            "steps": {"supported": False, "fixed": AXERA_STEPS,
                      "img2img": {"<=0.35": 1, "<=0.60": 2, "<=0.85": 3, ">0.85": 4},
                      "reason": "4-step LCM schedule; img2img steps follow denoising_strength"},
            "cfg_scale": {"supported": False, "fixed": 1.0, "reason": "no classifier-free guidance"},
            "sampler_name": {"supported": False, "fixed": "LCM", "reason": "one schedule compiled in"},
            "negative_prompt": {"supported": False, "reason": "no guidance, so no negative prompt"},
        }
        names = {"txt2img": s.axera_txt2img_workflow, "img2img": s.axera_img2img_workflow}
        extra = {"runtime": s.axera_runtime, "model_dir": s.axera_model_dir or None, "postprocess": s.postprocess}
    else:
        wf = workflows.get(s.sd15_txt2img_workflow)

        def described(name: str) -> dict[str, Any]:
            p = wf.parameters.get(name) if wf is not None else None
            d = p.describe() if p is not None else {}
            return {"supported": True, **{k: v for k, v in d.items() if k in ("default", "min", "max", "multiple_of")}}

        from .a1111_samplers import sampler_items

        live = await _live(engine, "KSampler.sampler_name")
        fields = {
            **common,
            "width": described("width"), "height": described("height"), "steps": described("steps"),
            "cfg_scale": described("cfg"),
            "sampler_name": {"supported": True, "choices": [i["name"] for i in sampler_items(live)],
                             "default": a1111_sampler_name(_workflow_default(engine, s, "sampler"))},
            "negative_prompt": {"supported": True, "default": ""},
        }
        names = {"txt2img": s.sd15_txt2img_workflow, "img2img": s.sd15_img2img_workflow}
        extra = {"checkpoint": s.sd15_checkpoint or None}
    available = {mode: name in workflows for mode, name in names.items()} if workflows else {}
    return web.json_response({"backend": s.backend, "workflows": names, "workflows_available": available,
                              "fields": fields, "settings": extra})


def setup(app: web.Application) -> None:
    from bridge.app import SETTINGS

    settings = UnifiedSettings.from_settings(app[SETTINGS])
    app[STATE] = {"settings": settings, "rng": random.Random(), "axera_size": None}
    app.router.add_post("/generate", generate)
    app.router.add_get("/generate/options", options)
