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

import functools
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, Field, ValidationError, WithJsonSchema, create_model
from pydantic_core import PydanticCustomError
from pydantic_settings import SettingsConfigDict

from bridge import images as image_io
from bridge import samplers as sampler_names
from bridge.api import Dialect, endpoint, renamed, retry_headers
from bridge.config import AdapterSettings, SettingsError
from bridge.errors import BridgeError, InvalidParameter
from bridge.fields import (ImageData, Loras, LooseFloat, LooseInt, NonBlank, OutputFormat, OutputQuality,
                           Request, ResponseFormat, SEED_MAX, Seed, Text, Webhook, field_errors)
from bridge.http import json_answer
from bridge.engine import JobEngine
from bridge.keys import ENGINE, SETTINGS

from .toolkit import ClientGone, Overdue, Submission, engine_of, live_choices, request_origin, run_jobs

log = logging.getLogger("bridge.adapters.unified")

MODES = ("txt2img", "img2img")
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
# ("image": the request's own image_field)
SD15_FIELDS = {"cfg": "cfg_scale", "sampler": "sampler_name", "scheduler": "sampler_name",
               "denoise": "denoising_strength", "checkpoint": "UNIFIED_SD15_CHECKPOINT"}
AXERA_FIELDS = {"denoise": "denoising_strength", "model_dir": "UNIFIED_AXERA_MODEL_DIR",
                "runtime": "UNIFIED_AXERA_RUNTIME"}


class UnifiedSettings(AdapterSettings):
    """`/generate` settings (environment `UNIFIED_*`, or `--set UNIFIED_...=...`)."""

    model_config = SettingsConfigDict(env_prefix="UNIFIED_", extra="ignore", env_file_encoding="utf-8",
                                      populate_by_name=True)

    backend: Literal["auto", "axera", "sd15"] = Field("auto", description=(
        "auto: the Axera workflows where the backend has the Axera model set (UNIFIED_AXERA_MODEL_DIR), else "
        "SD1.5; axera: the AX650N LCM workflows (503 when the model set is missing); sd15: the SD1.5 checkpoint "
        "workflows on ComfyUI."))
    axera_model_dir: str = Field("", description=(
        "The Axera model set's sub-folder of the Axera model folders on the ComfyUI machine (the workflows' "
        "model_dir takes no other; a folder elsewhere is set there, in $PIXART_AXERA_MODEL_DIR); empty: the "
        "node's default ($PIXART_AXERA_MODEL_DIR, else models/axera)."))
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
# The request (pure: no engine, no I/O)


def _resize_name(value: Any) -> Any:
    # The Pi service's numbers, the node's names and A1111's labels are all accepted.
    if isinstance(value, bool):  # the Literal takes True for 1 (Python's bool is an int): crop, asked by no one
        raise PydanticCustomError("literal_error", "must be one of 0, 1 or 2", {"expected": "0, 1 or 2"})
    return RESIZE_ALIASES.get(str(value).strip().lower(), value)


ResizeMode = Annotated[Literal[0, 1, 2], BeforeValidator(_resize_name), WithJsonSchema({
    "description": "0 stretch, 1 crop, 2 pad; the names (stretch, crop, pad, A1111's labels) are accepted too.",
    "anyOf": [{"enum": [0, 1, 2]}, {"enum": sorted(RESIZE_ALIASES)}]})]
Unit = Annotated[LooseFloat, Field(ge=0.0, le=1.0)]


class GenerateBody(Request):
    """A /generate request (the Pi service's unified endpoint)."""

    mode: Literal["txt2img", "img2img"] | None = Field(None, description="Default: img2img when an init image is "
                                                                        "sent, else txt2img.")
    prompt: NonBlank = Field(description="What the image should show.")
    init_image: ImageData | None = Field(None, description="img2img: PNG/JPEG/WebP as base64 or a data URL.")
    init_images: Annotated[list[ImageData], Field(min_length=1, max_length=1)] | None = Field(
        None, description="A1111 style: one image, used when init_image is absent.")
    seed: Seed = Field(None, description="-1, empty or absent: random in 0..2^32-1; the answer reports the seed.")
    width: Annotated[LooseInt, Field(ge=1, le=16384)] | None = None
    height: Annotated[LooseInt, Field(ge=1, le=16384)] | None = None
    steps: Annotated[LooseInt, Field(ge=1, le=1000)] | None = None
    cfg_scale: Annotated[LooseFloat, Field(ge=0.0, le=100.0)] | None = None
    sampler_name: Text | None = Field(None, description="An A1111 sampler name (GET /generate/options).")
    negative_prompt: Text | None = None
    n_iter: Annotated[LooseInt, Field(ge=1)] | None = None
    batch_size: Annotated[LooseInt, Field(ge=1)] | None = None
    denoising_strength: Unit | None = Field(None, description="img2img strength (alias: strength).")
    strength: Unit | None = None
    resize_mode: ResizeMode | None = None
    loras: Loras | None = Field(None, description="sd15: LoRAs applied to the checkpoint, in order "
                                                  "([{name, strength}]); the Axera build has none (noted).")
    response_format: ResponseFormat = Field("b64", description="b64: `images`, `image` and `base64` carry base64 "
                                                               "PNGs; url: `images` and `image` carry links and "
                                                               "`base64` is null.")
    output_format: OutputFormat | None = None
    output_quality: OutputQuality | None = None
    webhook: Webhook | None = Field(None, description="Also POST signed messages about each job there (a URL, or "
                                                      "{url, events}); see docs/api/webhooks.md. Its jobs then run "
                                                      "on when the client goes away or UNIFIED_TIMEOUT passes.")


@functools.lru_cache(maxsize=8)
def body_model(max_images: int) -> type[GenerateBody]:
    """The request model with this server's UNIFIED_MAX_IMAGES, so the spec shows the limit the code enforces."""
    count = Annotated[LooseInt, Field(ge=1, le=max_images)]
    return create_model("UnifiedGenerateRequest", __base__=GenerateBody, __doc__=GenerateBody.__doc__,
                        n_iter=(count | None, None), batch_size=(count | None, None))


@dataclass
class GenerateRequest:
    mode: str
    prompt: str
    seed: int
    init_image: str | image_io.DecodedImage | None = None
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
    loras: list[Any] = field(default_factory=list)
    links: bool = False
    output: dict[str, Any] = field(default_factory=dict)
    image_field: str = "init_image"  # the field the client sent its picture in (errors name it)

    @property
    def count(self) -> int:
        return self.n_iter * self.batch_size


def resolve(body: GenerateBody, *, rng: random.Random, default_strength: float = 0.5,
            max_images: int = 16) -> GenerateRequest:
    """The Pi service's rules on a checked body: mode from the image, strength alias, random seed, image count."""
    init_image = body.init_image or (body.init_images[0] if body.init_images else None)
    mode = body.mode or ("img2img" if init_image else "txt2img")  # the first Pi server took {"prompt"} alone
    strength = body.denoising_strength if body.denoising_strength is not None else body.strength
    req = GenerateRequest(mode=mode, prompt=body.prompt,
                          seed=body.seed if body.seed is not None else rng.randint(0, RANDOM_SEED_MAX),
                          strength=default_strength if strength is None else strength,
                          strength_given=strength is not None, resize_mode=body.resize_mode or 0,
                          width=body.width, height=body.height, steps=body.steps, cfg_scale=body.cfg_scale,
                          sampler_name=(body.sampler_name or "").strip() or None,
                          negative_prompt=body.negative_prompt or "", n_iter=body.n_iter or 1,
                          batch_size=body.batch_size or 1, loras=list(body.loras or []),
                          links=body.response_format == "url",
                          image_field="init_image" if body.init_image else "init_images[0]",
                          output={k: v for k, v in (("output_format", body.output_format),
                                                    ("output_quality", body.output_quality),
                                                    ("webhook", body.webhook)) if v is not None})
    if mode == "img2img" and not init_image:
        raise InvalidParameter("init_image", "init_image (base64 PNG/JPEG) is required for img2img")
    req.init_image = init_image if mode == "img2img" else None
    if req.count > max_images:
        raise InvalidParameter("batch_size", f"n_iter x batch_size = {req.count} images; at most {max_images} "
                                             f"per request (UNIFIED_MAX_IMAGES)")
    return req


def parse_request(body: Any, *, rng: random.Random, default_strength: float = 0.5,
                  max_images: int = 16) -> GenerateRequest:
    """Check a /generate body and apply the rules; raises InvalidParameter naming the request field."""
    model = body_model(max_images)
    try:
        checked = model.model_validate(body)
    except ValidationError as exc:
        bad = field_errors(exc, model)[0]
        raise InvalidParameter(bad.field or "body", bad.message if bad.field else
                               "body: the request body must be a JSON object") from None
    return resolve(checked, rng=rng, default_strength=default_strength, max_images=max_images)


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
                field_names={**AXERA_FIELDS, "image": req.image_field}, sampler="LCM")
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
    if req.loras:
        plan.note("loras", req.loras, [], "the NPU build is compiled without LoRA support")
    return plan


def _sampler_honoured(requested: str, resolved_name: str) -> bool:
    SAMPLERS, SCHEDULERS = sampler_names.SAMPLERS, sampler_names.SCHEDULERS
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
    return next((sp.name for sp in sampler_names.SAMPLERS if sp.comfy == comfy_sampler), comfy_sampler)


def plan_sd15(req: GenerateRequest, s: UnifiedSettings, live_samplers: list[str] | None,
              live_schedulers: list[str] | None, default_sampler: str | None = None) -> Plan:
    """`default_sampler`: the ComfyUI sampler the workflow runs when the request names none (reported in A1111
    naming)."""
    # ComfyUI draws a whole latent batch from one seed, so image i of a batch is not what seed + i alone gives.
    # One job per image with seed + i (as on the Axera backend and in A1111) makes every listed seed reproduce
    # its image.
    seeds = [(req.seed + i) % (SEED_MAX + 1) for i in range(req.count)]
    params: dict[str, Any] = {"prompt": req.prompt, "negative_prompt": req.negative_prompt, "batch_size": 1}
    plan = Plan("sd15", [], seeds, req.steps, field_names={**SD15_FIELDS, "image": req.image_field},
                sampler=a1111_sampler_name(default_sampler))
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
        steps = params.get("steps")
        resolved = sampler_names.resolve(req.sampler_name, None, live_samplers, live_schedulers, steps=steps)
        params["sampler"], params["scheduler"] = resolved.comfy_sampler, resolved.comfy_scheduler
        if resolved.cfg_factor != 1.0:
            # DDIM CFG++ runs as ComfyUI's CFG++ sampler, whose guidance scale is A1111's divided by 12.5.
            params["cfg"] = round(float(params.get("cfg", req.cfg_scale or 7.0)) * resolved.cfg_factor, 6)
        plan.sampler = resolved.sampler_name
        if not _sampler_honoured(req.sampler_name, resolved.sampler_name):
            plan.note("sampler_name", req.sampler_name, resolved.sampler_name,
                      "unknown or not available on the backend; A1111's fallback is used")
    if s.sd15_checkpoint:
        params["checkpoint"] = s.sd15_checkpoint
    if req.loras:
        params["loras"] = req.loras
    workflow = s.sd15_txt2img_workflow
    if req.mode == "img2img":
        workflow = s.sd15_img2img_workflow
        params.update(image=req.init_image, denoise=req.strength, resize_mode=SD15_RESIZE[req.resize_mode])
    plan.jobs = [(workflow, {**params, "seed": seed}) for seed in seeds]
    if s.postprocess != "none":
        plan.note("postprocess", s.postprocess, "none", "the sd15 workflows have no pixelate step")
    return plan


# ---------------------------------------------------------------------------------------------------------------
# Which backend runs a request


@dataclass(frozen=True)
class BackendChoice:
    name: str            # "axera" | "sd15"
    reason: str          # why, in words (GET /generate/options shows it)
    error: str | None = None  # set when the configured backend cannot run: the request is answered 503


async def _sd15(engine: JobEngine, s: UnifiedSettings, why: str) -> BackendChoice:
    """The SD1.5 backend, or why it cannot run: no checkpoint (or not the configured one) on the backend."""
    live = await live_choices(engine, "CheckpointLoaderSimple.ckpt_name")
    if live is None:
        return BackendChoice("sd15", why)  # no backend answers now: the request waits for one like any job
    wanted = s.sd15_checkpoint
    if wanted and not any(c == wanted or PurePath(c).stem == PurePath(wanted).stem for c in live):
        return BackendChoice("sd15", why, error=(
            f"the SD1.5 backend is not usable: UNIFIED_SD15_CHECKPOINT={wanted!r} is not in ComfyUI's "
            f"models/checkpoints folder on the backend (it has {', '.join(live[:5]) or 'none'}); copy it there, or "
            f"change UNIFIED_SD15_CHECKPOINT"))
    if not live:
        return BackendChoice("sd15", why, error=(
            "the SD1.5 backend is not usable: ComfyUI's models/checkpoints folder on the backend holds no checkpoint; "
            "put an SD1.5 .safetensors there (or set UNIFIED_BACKEND=axera with the Axera model set)"))
    return BackendChoice("sd15", why)


async def choose_backend(engine: JobEngine, s: UnifiedSettings) -> BackendChoice:
    """UNIFIED_BACKEND applied to what the ComfyUI backend has: its Pixart pack reports whether the Axera model
    set is where the loader would look (GET /pixart/axera), and `/object_info` lists the checkpoints, so nothing is
    guessed from this machine's disk. A backend that cannot run is answered 503 at once, saying what is missing."""
    if s.backend == "sd15":
        return await _sd15(engine, s, "UNIFIED_BACKEND=sd15")
    # a 400: the pack refuses the query (a model_dir no Axera workflow takes), which finds no model set either
    status = await engine.backend_json("/pixart/axera", {"model_dir": s.axera_model_dir,
                                                         "runtime": s.axera_runtime}, missing_ok=True, refused_ok=True)
    if not isinstance(status, dict):
        found, why = False, "the backend's Pixart pack does not report Axera models (route /pixart/axera missing)"
    else:
        found, why = bool(status.get("found")), str(status.get("reason") or status.get("error") or "")
    if found:
        return BackendChoice("axera", f"UNIFIED_BACKEND={s.backend}: {why}")
    if s.backend == "axera":
        folder = (status or {}).get("model_dir") if isinstance(status, dict) else None
        return BackendChoice("axera", f"UNIFIED_BACKEND=axera: {why}", error=(
            f"the Axera backend is not usable: {why}; put the model set in {folder or 'the models/axera folder'} on "
            f"the ComfyUI machine or point UNIFIED_AXERA_MODEL_DIR at it, or set UNIFIED_BACKEND=sd15 (or auto)"))
    return await _sd15(engine, s, f"UNIFIED_BACKEND=auto: no Axera model set on the backend ({why}); SD1.5 runs")


# ---------------------------------------------------------------------------------------------------------------
# HTTP


class UnifiedError(BaseModel):
    """The Pi service's error shape."""

    status: Literal["error"]
    error: str
    field: str | None = None


@dataclass(frozen=True)
class UnifiedDialect(Dialect):
    def error(self, status: int, message: str, field: str | None = None, *, code: str | None = None,
              headers: Mapping[str, str] | None = None, **extra: Any) -> web.Response:
        body: dict[str, Any] = {"status": "error", "error": message}
        if field:
            body["field"] = field
        return web.json_response(body, status=status, headers=dict(headers or {}))

    def bridge_error(self, exc: BridgeError, names: Mapping[str, str] | None = None) -> web.Response:
        message, name = renamed(exc, names)
        return self.error(exc.status, message, name, headers=retry_headers(exc))


DIALECT = UnifiedDialect("unified", UnifiedError, ("unified",), "body: the request body must be a JSON object")


def _settings(request: web.Request) -> UnifiedSettings:
    return request.app[STATE]["settings"]


def _workflow_default(engine: JobEngine, s: UnifiedSettings, name: str) -> Any:
    """A parameter's default in the sd15 txt2img workflow (the img2img one shares the common parameters)."""
    wf = getattr(engine, "workflows", {}).get(s.sd15_txt2img_workflow)
    p = wf.parameters.get(name) if wf is not None else None
    return p.default if p is not None and p.has_default else None


class Unsupported(BaseModel):
    field: str
    requested: Any
    used: Any
    reason: str


class GenerateAnswer(BaseModel):
    """The images (base64 PNG) with what was used; the Pi clients read images[0], then image, then base64."""

    status: Literal["ok"]
    mode: str
    backend: str
    base64: str | None
    image: str
    images: list[str]
    seed: int
    seeds: list[int]
    text_time_ms: float | None
    total_time_ms: float
    request_time_ms: float
    width: int
    height: int
    steps: int | None
    sampler_name: str | None
    unsupported: list[Unsupported] = Field(description="Options the backend could not honour: asked vs used.")
    job_ids: list[str]
    denoising_strength: float | None = None
    resize_mode: int | None = None
    timings: list[dict[str, Any]] | None = Field(None, description="Axera: per-image stage times.")


async def generate(request: web.Request, body: GenerateBody) -> web.Response:
    """Generate images (txt2img or img2img) synchronously: the Raspberry Pi AX650N service's unified endpoint."""
    engine = engine_of(request)
    settings = _settings(request)
    state = request.app[STATE]
    t0 = time.perf_counter()
    req = resolve(body, rng=state["rng"], default_strength=settings.default_strength,
                  max_images=settings.max_images)
    choice = await choose_backend(engine, settings)
    if choice.error is not None:
        return DIALECT.error(503, choice.error, "UNIFIED_BACKEND", headers={"Retry-After": "30"})
    if req.init_image is not None:
        await engine.check_room()  # before the picture is fetched and decoded
        # Once for the request: each of its jobs (one per image) fetched a URL and decoded the picture again
        req.init_image = await image_io.decode_async(await engine.fetch_image(req.init_image, req.image_field),
                                                     req.image_field, max_bytes=engine.max_image_bytes,
                                                     max_pixels=engine.max_image_pixels)
    if choice.name == "axera":
        plan = plan_axera(req, settings)
    else:
        plan = plan_sd15(req, settings, await live_choices(engine, "KSampler.sampler_name"),
                         await live_choices(engine, "KSampler.scheduler"),
                         _workflow_default(engine, settings, "sampler"))
    submissions = [Submission(workflow, params,
                              meta={"dialect": "unified", "mode": req.mode, "index": index, **req.output})
                   for index, (workflow, params) in enumerate(plan.jobs)]
    try:
        finished = await run_jobs(request, submissions, timeout=settings.timeout)
    except BridgeError as exc:
        return DIALECT.bridge_error(exc, plan.field_names)
    except Overdue as exc:
        return DIALECT.error(504, f"generation did not finish within {settings.timeout:g} s (UNIFIED_TIMEOUT)"
                                  f"{exc.going_on()}")
    except ClientGone:
        return DIALECT.error(499, "the client closed the connection; the generation was cancelled")
    for job in finished:
        if job.status != "completed":
            why = job.error or job.status
            log.warning("/generate job %s %s: %s", job.id, job.status, why)
            return DIALECT.error(500, f"generation {job.status}: {why}")

    images: list[str] = []
    sizes: list[tuple[int, int]] = []
    timings: list[dict[str, Any]] = []
    for job in finished:
        for i in range(len(job.outputs.get("images") or [])):
            png = await engine.read_output(job, "images", i)
            images.append(await engine.result_link(job, "images", i, request_origin(request)) if req.links
                          else image_io.Base64(png))
            sizes.append(image_io.image_size(png))
        timings.extend(t for t in (job.outputs.get("timings") or []) if isinstance(t, dict))
    if not images:
        return DIALECT.error(500, "the workflow finished without an image")

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
        text_ms = text_encoder_ms(engine, finished)
        total_ms = round(sum(((j.finished_at or 0) - (j.started_at or j.finished_at or 0)) * 1000 for j in finished), 3)
        seeds = plan.seeds

    answer: dict[str, Any] = {
        "status": "ok",
        "mode": req.mode,
        "backend": plan.backend,
        "base64": None if req.links else images[0],
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
        "job_ids": [j.id for j in finished],
    }
    if req.mode == "img2img":
        answer["denoising_strength"] = req.strength
        answer["resize_mode"] = req.resize_mode
    if timings:
        answer["timings"] = timings
    return await json_answer(answer)


TEXT_ENCODER_CLASSES = ("CLIPTextEncode", "CLIPSetLastLayer")


def text_encoder_ms(engine: JobEngine, jobs: list[Any]) -> float | None:
    """The text encoders' share of the runs, from the per-node times the engine recorded (ComfyUI's execution
    messages); an encoder ComfyUI served from its cache counts 0, as no time was spent."""
    total, seen = 0.0, False
    for job in jobs:
        wf = getattr(engine, "workflows", {}).get(job.workflow)
        times = getattr(job, "node_ms", None) or {}
        if wf is None:
            continue
        for node, ms in times.items():
            if wf.graph.get(node, {}).get("class_type") in TEXT_ENCODER_CLASSES:
                total += float(ms)
                seen = True
    return round(total, 3) if seen else None


class GenerateOptions(BaseModel):
    """What the configured backend supports, with its defaults."""

    backend: str = Field(description="The backend that runs requests now: axera or sd15.")
    backend_setting: str = Field(description="UNIFIED_BACKEND: auto, axera or sd15.")
    backend_reason: str = Field(description="Why that backend runs (or why the configured one cannot).")
    backend_error: str | None = Field(None, description="Set when /generate answers 503 for this reason.")
    workflows: dict[str, str]
    workflows_available: dict[str, bool]
    fields: dict[str, dict[str, Any]]
    settings: dict[str, Any]


@endpoint(dialect=DIALECT, responses={200: GenerateOptions})
async def options(request: web.Request) -> web.Response:
    """What the configured /generate backend supports, with its defaults."""
    engine = engine_of(request)
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
    choice = await choose_backend(engine, s)
    if choice.name == "axera":
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

        live = await live_choices(engine, "KSampler.sampler_name")
        fields = {
            **common,
            "width": described("width"), "height": described("height"), "steps": described("steps"),
            "cfg_scale": described("cfg"),
            "sampler_name": {"supported": True, "choices": [i["name"] for i in sampler_names.sampler_items(live)],
                             "default": a1111_sampler_name(_workflow_default(engine, s, "sampler"))},
            "negative_prompt": {"supported": True, "default": ""},
        }
        names = {"txt2img": s.sd15_txt2img_workflow, "img2img": s.sd15_img2img_workflow}
        extra = {"checkpoint": s.sd15_checkpoint or None}
    available = {mode: name in workflows for mode, name in names.items()} if workflows else {}
    return web.json_response({"backend": choice.name, "backend_setting": s.backend, "backend_reason": choice.reason,
                              "backend_error": choice.error, "workflows": names, "workflows_available": available,
                              "fields": fields, "settings": extra})


def _check_model_dir(engine: JobEngine, s: UnifiedSettings) -> None:
    """UNIFIED_AXERA_MODEL_DIR as the Axera workflows' model_dir takes it (a sub-folder name): refused at start,
    not in every request that reaches the Axera workflows."""
    for name in (s.axera_txt2img_workflow, s.axera_img2img_workflow):
        wf = engine.workflows.get(name)
        if s.axera_model_dir and wf is not None and "model_dir" in wf.parameters:
            try:
                wf.check("model_dir", s.axera_model_dir)
            except InvalidParameter as exc:
                raise SettingsError("UNIFIED_AXERA_MODEL_DIR", f"{exc.message} (workflow {name}): name a "
                                                               f"sub-folder of the Axera model folders") from None


def setup(app: web.Application) -> None:
    settings = UnifiedSettings.from_settings(app[SETTINGS])
    _check_model_dir(app[ENGINE], settings)
    app[STATE] = {"settings": settings, "rng": random.Random(), "axera_size": None}
    app.router.add_post("/generate", endpoint(dialect=DIALECT, body=body_model(settings.max_images),
                                              responses={200: GenerateAnswer}, names=None)(generate))
    app.router.add_get("/generate/options", options)
