"""`POST /generate/<type>`: the four request types of the seed API, each a typed model, turned into workflow
parameters with the sampler, model and seed resolved so the job reports what it really used."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import PurePath
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema, create_model
from pydantic_core import PydanticCustomError

from bridge import images as image_io
from bridge import samplers as a1111_samplers
from bridge.api import endpoint
from bridge.engine import JobEngine
from bridge.errors import BackendUnavailable, BridgeError, NotAvailable
from bridge.fields import (ImageData, Loras, LooseFloat, LooseInt, NonBlank, OutputFormat, OutputQuality, Request,
                           ResponseFormat, Seed, Text, Webhook)

from ..toolkit import engine_of, live_choices, resolve_checkpoint
from .dialect import API, DIALECT, MAX_SIDE, MIN_SIDE, SETTINGS_KEY, JobAccepted, JobsApiSettings, iso, new_job_id

# Request type -> workflow.
WORKFLOWS: dict[str, str] = {
    "text2img": "txt2img",
    "img2img": "img2img",
    "inpaint": "inpaint",
    "style-transfer": "style_transfer",
}

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



# ------------------------------------------------------------------------------------------------ requests
Side = Annotated[LooseInt, Field(ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)]
Unit = Annotated[LooseFloat, Field(ge=0.0, le=1.0)]


class GenerateBase(Request):
    negativePrompt: Text | None = Field(None, description="What the image should not show.")
    width: Side | None = Field(None, description="Default: 512 for text2img (JOBS_API_DEFAULT_SIZE), else the "
                                                 "input image's size fitted to 64..2048 in multiples of 8.")
    height: Side | None = None
    steps: Annotated[LooseInt, Field(ge=1, le=150)] | None = Field(None, description="Default JOBS_API_DEFAULT_STEPS.")
    guidanceScale: Annotated[LooseFloat, Field(ge=0.0, le=30.0)] | None = None
    seed: Seed = Field(None, description="-1 or absent: random (the job reports the seed used).")
    sampler: Text | None = Field(None, description="euler_a, dpm++_2m, ddim, plms, ..., an A1111 sampler label "
                                                 "(\"DPM2 Karras\", \"Restart\") or a ComfyUI sampler name.")
    scheduler: Text | None = Field(None, description="A ComfyUI scheduler name; default: the sampler's own.")
    model: Text | None = Field(None, description="Checkpoint file name or stem (GET /models).")
    webhook: Webhook | None = Field(None, description="Where to POST signed messages when the job ends (a URL, or "
                                                      "{url, events}); see docs/api/webhooks.md.")
    loras: Loras | None = Field(None, description="LoRAs applied to the checkpoint, in order: "
                                                  "[{\"name\": \"pixel_style\", \"strength\": 0.8}] (file name or "
                                                  "stem; clip_strength defaults to strength).")
    response_format: ResponseFormat | None = None
    output_format: OutputFormat | None = None
    output_quality: OutputQuality | None = None


class Text2ImgBody(GenerateBase):
    prompt: NonBlank = Field(description="What the image should show.")


class Img2ImgBody(Text2ImgBody):
    initImage: ImageData = Field(description="The picture to transform.")
    strength: Unit | None = Field(None, description="0 keeps the picture, 1 replaces it (default 0.75).")


class InpaintBody(Text2ImgBody):
    image: ImageData
    mask: ImageData = Field(description="White = repaint.")
    inpaintingStrength: Unit | None = Field(None, description="Default 1.0.")


class StyleTransferBody(GenerateBase):
    prompt: Text | None = None
    contentImage: ImageData
    styleImage: ImageData
    styleStrength: Annotated[LooseFloat, Field(ge=0.0, le=10.0)] | None = Field(None, description="Default 0.7.")
    contentStrength: Unit | None = Field(None, description="How much of the content survives (default 0.3).")


def _not_taken(kind: str) -> Any:
    def refuse(value: Any) -> Any:
        raise PydanticCustomError("not_taken", f"not taken by {kind} jobs (it belongs to another job type)")

    return Annotated[Any, BeforeValidator(refuse), WithJsonSchema({"not": {}, "description": (
        f"Not taken by {kind} jobs: refused when present, so a misdirected request is not run without it.")})]


def _closed(kind: str, model: type[GenerateBase], others: list[type[GenerateBase]]) -> type[GenerateBase]:
    """`model` refusing the fields only other job types take (img2img's `strength` sent to text2img would
    otherwise be ignored silently, and the job run without what the client meant)."""
    foreign = sorted({f for m in others for f in m.model_fields} - set(model.model_fields))
    return create_model(model.__name__, __base__=model, __doc__=model.__doc__,
                        **{f: (_not_taken(kind), Field(None)) for f in foreign})  # type: ignore[call-overload]


_OPEN = {"text2img": Text2ImgBody, "img2img": Img2ImgBody, "inpaint": InpaintBody, "style-transfer": StyleTransferBody}
BODIES: dict[str, type[GenerateBase]] = {kind: _closed(kind, m, list(_OPEN.values())) for kind, m in _OPEN.items()}
IMAGE_FIELDS: dict[str, tuple[str, ...]] = {"text2img": (), "img2img": ("initImage",), "inpaint": ("image", "mask"),
                                            "style-transfer": ("contentImage", "styleImage")}



def fitted_size(width: int, height: int) -> tuple[int, int]:
    """An image's own size made valid for generation: at most MAX_SIDE, multiples of 8, at least MIN_SIDE."""
    scale = min(1.0, MAX_SIDE / max(width, height))
    w = max(MIN_SIDE, int(width * scale) // 8 * 8)
    h = max(MIN_SIDE, int(height * scale) // 8 * 8)
    return w, h


async def decode(engine: JobEngine, body: BaseModel, name: str) -> image_io.DecodedImage:
    return await image_io.decode_async(await engine.fetch_image(getattr(body, name), name), name,
                                       max_bytes=engine.max_image_bytes,
                                       max_pixels=engine.max_image_pixels)


def model_stem(name: str) -> str:
    return PurePath(name).stem


async def resolve_sampler(engine: JobEngine, sampler: str, scheduler: str | None,
                          steps: int) -> tuple[str, str, float]:
    """(ComfyUI sampler_name, scheduler, CFG factor) for a client's sampler name: an alias, ComfyUI's own, or an
    A1111 label read as A1111 1.10 reads it (bridge/samplers.py: "DPM2 Karras", "Restart", "DDIM CFG++" whose
    CFG A1111 divides by 12.5)."""
    samplers = await live_choices(engine, "KSampler.sampler_name")
    key = sampler.strip().lower().replace(" ", "_")
    factor = 1.0
    label = a1111_samplers.is_label(sampler)
    if key in SAMPLER_ALIASES:
        name, default_scheduler = SAMPLER_ALIASES[key]
    elif sampler in (samplers or ()) or samplers is None and not label:
        # Without a backend to ask, a ComfyUI name passes here and is checked when the job is dispatched.
        name, default_scheduler = sampler, _NATIVE_SCHEDULER.get(sampler, "normal")
    elif label:
        resolved = a1111_samplers.resolve(sampler, None, steps=steps)
        name, default_scheduler, factor = resolved.comfy_sampler, resolved.comfy_scheduler, resolved.cfg_factor
    else:
        valid = valid_samplers(samplers)
        aliases = [a for a in valid if a in SAMPLER_ALIASES]
        raise NotAvailable("sampler", f"Unknown sampler {sampler!r}; valid samplers: {', '.join(aliases)}, an "
                                      f"A1111 sampler label, or one of ComfyUI's {len(valid) - len(aliases)} "
                                      f"sampler names (all in validValues)",
                           valid)
    if samplers is not None and name not in samplers:
        raise NotAvailable("sampler", f"Sampler {sampler} maps to ComfyUI's {name}, which this ComfyUI server "
                                      f"does not have", valid_samplers(samplers))
    if scheduler is None:
        return name, default_scheduler, factor
    schedulers = await live_choices(engine, "KSampler.scheduler")
    if schedulers is not None and scheduler not in schedulers:
        raise NotAvailable("scheduler", f"Unknown scheduler {scheduler!r}; valid schedulers: "
                                        f"{', '.join(schedulers)}", schedulers)
    return name, scheduler, factor


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
            raise BackendUnavailable("No ComfyUI backend is available to check the style-transfer models; retry later")
        if configured:
            if configured not in available:
                raise NotAvailable(field, f"Style transfer needs the {label} {configured} ({env}), which is not "
                                          f"installed on the ComfyUI server (models/{folder})", available)
            chosen.append(configured)
        elif available:
            chosen.append(available[0])
        else:
            raise NotAvailable(field, f"Style transfer needs a {label}, and none is installed on the ComfyUI server "
                                      f"(put one in models/{folder} or set {env})", [])
    return chosen[0], chosen[1]


@dataclass
class Prepared:
    workflow: str
    params: dict[str, Any]
    reported: dict[str, Any]   # result.parameters
    request: dict[str, Any]    # the request as echoed back (image fields summarised)
    seed: int
    fields: dict[str, str]     # workflow parameter -> client field, for engine errors


# workflow parameter -> client field, for every request type
FIELDS = {"prompt": "prompt", "negative_prompt": "negativePrompt", "steps": "steps", "cfg": "guidanceScale",
          "seed": "seed", "sampler": "sampler", "scheduler": "scheduler", "width": "width", "height": "height",
          "checkpoint": "model", "image": "image", "mask": "mask", "content_image": "contentImage",
          "style_image": "styleImage", "style_strength": "styleStrength", "clip_vision": "clipVision",
          "style_model": "styleModel", "loras": "loras"}


async def prepare(kind: str, body: GenerateBase, engine: JobEngine, settings: JobsApiSettings,
                  rng: random.Random) -> Prepared:
    """Resolve defaults, sampler, model and seed, decode the images (off the event loop) and build the workflow
    parameters. Field checks already ran in the request model."""
    workflow = WORKFLOWS[kind]
    fields = dict(FIELDS)
    images = {name: await decode(engine, body, name) for name in IMAGE_FIELDS[kind]}
    # Chosen here rather than by the engine so the job can report it; u32 fits every client.
    seed = body.seed if body.seed is not None else rng.randint(0, 2**32 - 1)
    sampler_in = body.sampler or settings.default_sampler
    steps = body.steps or settings.default_steps
    # "" is how form-built clients leave a field unset: for the scheduler as for the sampler and the model
    sampler_name, scheduler, cfg_factor = await resolve_sampler(engine, sampler_in, body.scheduler or None, steps)
    cfg = body.guidanceScale if body.guidanceScale is not None else settings.default_guidance_scale
    params: dict[str, Any] = {"prompt": body.prompt or "", "negative_prompt": body.negativePrompt or "",
                              "steps": steps, "cfg": round(cfg * cfg_factor, 6), "seed": seed,
                              "sampler": sampler_name, "scheduler": scheduler}
    reported: dict[str, Any] = {}
    width, height = body.width, body.height
    if isinstance(body, Img2ImgBody):
        src = images["initImage"]
        params.update(image=src, denoise=0.75 if body.strength is None else body.strength)
        fields.update(image="initImage", denoise="strength")
        reported["strength"] = params["denoise"]
    elif isinstance(body, InpaintBody):
        src = images["image"]
        params.update(image=src, mask=images["mask"],
                      denoise=1.0 if body.inpaintingStrength is None else body.inpaintingStrength)
        fields.update(denoise="inpaintingStrength")
        reported["inpaintingStrength"] = params["denoise"]
    elif isinstance(body, StyleTransferBody):
        src = images["contentImage"]
        style_strength = 0.7 if body.styleStrength is None else body.styleStrength
        content_strength = 0.3 if body.contentStrength is None else body.contentStrength
        clip_vision, style_model = await resolve_style_models(engine, settings)
        params.update(content_image=src, style_image=images["styleImage"], style_strength=style_strength,
                      # How much of the content survives = how little of it is re-noised.
                      denoise=round(1.0 - content_strength, 6), clip_vision=clip_vision, style_model=style_model)
        fields.update(denoise="contentStrength")
        reported.update(styleStrength=style_strength, contentStrength=content_strength, clipVision=clip_vision,
                        styleModel=style_model)
    else:
        width, height = width or settings.default_size, height or settings.default_size
    if kind != "text2img":
        fit_w, fit_h = fitted_size(src.width, src.height)
        width, height = width or fit_w, height or fit_h
    params["width"], params["height"] = width, height
    model = await resolve_checkpoint(engine, workflow, body.model, settings.default_model,
                                     setting="JOBS_API_DEFAULT_MODEL")
    if model is not None:
        params["checkpoint"] = model
    if body.loras:
        params["loras"] = body.loras
    reported = {"prompt": params["prompt"], "negativePrompt": params["negative_prompt"], "width": width,
                "height": height, "steps": steps, "guidanceScale": cfg, "sampler": sampler_in,
                "samplerName": sampler_name, "scheduler": scheduler, "model": model, "seed": seed, **reported}
    if body.loras:
        reported["loras"] = body.loras
    echo = body.model_dump(exclude_none=True)
    for name, img in images.items():
        echo[name] = {"width": img.width, "height": img.height, "format": img.source_format}
    return Prepared(workflow, params, reported, echo, seed, fields)


# ------------------------------------------------------------------------------------------------ handlers
_SUMMARIES = {
    "text2img": "Queue a text-to-image job.",
    "img2img": "Queue an image-to-image job (initImage, strength).",
    "inpaint": "Queue an inpainting job (image, mask: white = repaint, inpaintingStrength).",
    "style-transfer": "Queue a style-transfer job (contentImage, styleImage, styleStrength, contentStrength).",
}


def handler(kind: str) -> Any:
    @endpoint(dialect=DIALECT, body=BODIES[kind], responses={202: JobAccepted}, names=FIELDS,
              summary=_SUMMARIES[kind])
    async def generate(request: web.Request, body: GenerateBase) -> web.Response:
        engine = engine_of(request)
        settings = request.app[SETTINGS_KEY]
        await engine.check_room()  # before its images are fetched and decoded
        prepared = await prepare(kind, body, engine, settings, random.Random())
        meta = {"api": API, "type": kind, "request": prepared.request, "parameters": prepared.reported,
                "webhook": body.webhook, "response_format": body.response_format,
                "output_format": body.output_format, "output_quality": body.output_quality,
                "seed": prepared.seed}
        try:
            job = await engine.submit(prepared.workflow, prepared.params, meta=meta, job_id=new_job_id())
        except BridgeError as exc:
            return DIALECT.bridge_error(exc, prepared.fields)
        # The acceptance record: the job may already be running on a fast backend, yet what this answer
        # confirms is that it was queued (GET /jobs/{id} has the live state).
        return web.json_response({"id": job.id, "type": kind, "status": "queued", "request": prepared.request,
                                  "createdAt": iso(job.created_at), "progress": 0}, status=202)

    generate.__name__ = f"generate_{kind.replace('-', '_')}"
    return generate

