"""AUTOMATIC1111-compatible API (`/sdapi/v1/...`): A1111 clients such as `webuiapi` work unmodified.

Each A1111 request becomes one engine job per image (`txt2img`, `img2img` or `inpaint` workflow), so that image i
really is generated with seed + i and the seed in its infotext reproduces it, as in A1111. Request parsing, defaults,
infotext and the img2img image/mask steps live in `a1111_models`; sampler names in `a1111_samplers`.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from bridge.config import AdapterSettings
from bridge.errors import BridgeError, InvalidParameter, QueueFull

from . import a1111_models as models
from . import a1111_samplers as samplers
from .a1111_models import A1111Error

log = logging.getLogger("bridge.adapters.a1111")

PREFIX = "/sdapi/v1"

# A1111 field -> workflow parameter, for every workflow this adapter drives. Errors the engine raises about a
# workflow parameter are reported under the A1111 field name.
PARAMS = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "seed": "seed",
    "steps": "steps",
    "cfg_scale": "cfg",
    "sampler_name": "sampler",
    "scheduler": "scheduler",
    "width": "width",
    "height": "height",
    "sd_model_checkpoint": "checkpoint",
    "denoising_strength": "denoise",
    "init_images": "image",
    "mask": "mask",
    "CLIP_stop_at_last_layers": "clip_skip",
    "inpainting_fill": "fill",
}
FIELD_FOR_PARAM = {v: k for k, v in PARAMS.items()}


class A1111Settings(AdapterSettings):
    """A1111 adapter settings (environment `A1111_*`, or `--set A1111_...=...`)."""

    model_config = SettingsConfigDict(env_prefix="A1111_", extra="ignore", env_file_encoding="utf-8",
                                      populate_by_name=True)

    api_auth: str = Field("", repr=False,
                          description="HTTP Basic credentials for /sdapi/v1, 'user:pass[,user:pass]' like A1111's "
                                      "--api-auth (A1111_API_AUTH); empty: no auth.")
    txt2img_workflow: str = Field("txt2img", description="Workflow behind /sdapi/v1/txt2img.")
    img2img_workflow: str = Field("img2img", description="Workflow behind /sdapi/v1/img2img without a mask.")
    inpaint_workflow: str = Field("inpaint", description="Workflow behind /sdapi/v1/img2img with a mask.")
    max_steps: int = Field(150, ge=1, description="Largest `steps` a request may ask for.")
    max_size: int = Field(2048, ge=64, description="Largest `width`/`height` a request may ask for.")

    @field_validator("api_auth")
    @classmethod
    def _auth(cls, value: str) -> str:
        parse_credentials(value)
        return value


def parse_credentials(text: str) -> dict[str, str]:
    """`user:pass,user2:pass2` -> {user: pass}; A1111 splits the same way (`,` then `:`)."""
    creds: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        user, sep, password = part.partition(":")
        if not sep or not user:
            raise ValueError(f"credential {part.split(':')[0]!r} must look like user:password")
        creds[user] = password
    return creds


# ---------------------------------------------------------------------------------------------------------------
# Tasks: one A1111 request = one task = several engine jobs (for /progress, /interrupt, /skip)


@dataclass
class Task:
    id: str
    kind: str  # "txt2img" | "img2img"
    job_ids: list[str]
    started: float
    job_timestamp: str
    interrupted: bool = False
    skipped: bool = False
    finished: bool = False


@dataclass
class A1111State:
    settings: A1111Settings
    credentials: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    tasks: list[Task] = field(default_factory=list)
    # Pico mode hands /sdapi/v1/txt2img to the Pico handler (set by the pico adapter).
    txt2img_override: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None

    def active(self) -> Task | None:
        return next((t for t in self.tasks if not t.finished), None)


STATE = web.AppKey("a1111_state", A1111State)


def _engine(request: web.Request) -> Any:
    from bridge.app import ENGINE

    return request.app[ENGINE]


# ---------------------------------------------------------------------------------------------------------------
# Responses, errors, auth


def error_response(exc: A1111Error) -> web.Response:
    return web.json_response(exc.to_json(), status=exc.status, headers=exc.headers)


def translate_engine_error(exc: BridgeError) -> A1111Error:
    """Engine errors in A1111's shape; the field is named as the A1111 client knows it."""
    name = type(exc).__name__
    headers: dict[str, str] = {}
    if isinstance(exc, QueueFull):
        headers["Retry-After"] = str(exc.retry_after)
    message = exc.message
    if isinstance(exc, InvalidParameter) and exc.field:
        a1111_field = FIELD_FOR_PARAM.get(exc.field, exc.field)
        message = message.replace(f"{exc.field}:", f"{a1111_field}:", 1) if exc.field != a1111_field else message
        if a1111_field not in message:
            message = f"{a1111_field}: {message}"
        return A1111Error(400, message, error=name, errors=message)
    status = exc.status if exc.status != 404 else 500  # a missing workflow is a configuration fault here
    return A1111Error(status, message, error=name, errors=message, headers=headers)


def check_auth(request: web.Request, credentials: dict[str, str]) -> None:
    if not credentials:
        return
    challenge = {"WWW-Authenticate": "Basic"}
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise A1111Error(401, "Not authenticated", headers=challenge)
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise A1111Error(401, "Invalid authentication credentials", headers=challenge) from None
    expected = credentials.get(user)
    # compare_digest on both branches so a wrong user name costs as long as a wrong password
    ok = hmac.compare_digest(password.encode(), (expected if expected is not None else "\0" + password).encode())
    if expected is None or not ok:
        raise A1111Error(401, "Incorrect username or password", headers=challenge)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def a1111_route(handler: Handler, *, auth: bool = True) -> Handler:
    """Wrap a handler: Basic auth, A1111 error bodies, and no exception ever escapes as a bare 500."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        try:
            if auth:
                check_auth(request, request.app[STATE].credentials)
            response = await handler(request)
        except A1111Error as exc:
            response = error_response(exc)
        except BridgeError as exc:
            response = error_response(translate_engine_error(exc))
        except web.HTTPException:
            raise
        except Exception as exc:  # A1111 answers every uncaught exception with its shape and 500
            log.exception("A1111 handler %s failed", request.path)
            response = error_response(A1111Error(500, "", error=type(exc).__name__, errors=str(exc)))
        response.headers["X-Process-Time"] = f"{time.perf_counter() - start:.4f}"
        return response

    wrapped.__doc__ = handler.__doc__
    wrapped.__name__ = handler.__name__
    return wrapped


async def read_json(request: web.Request) -> Any:
    return models.parse_json_body(await request.read())


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints and live choices


async def live_choices(engine: Any, ref: str) -> list[str]:
    try:
        return list(await engine.choices(ref) or [])
    except BridgeError:
        raise
    except Exception as exc:  # the engine could not reach a backend for /object_info
        raise A1111Error(503, f"backend unavailable: {exc}", error="BackendUnavailable", errors=str(exc)) from None


def checkpoint_item(name: str) -> dict[str, Any]:
    # A1111's title carries a short sha256 once computed; the bridge never reads model files, so the title is the name
    return {"title": name, "model_name": models.model_name(name), "hash": None, "sha256": None,
            "filename": name, "config": None}


def match_checkpoint(value: str, names: list[str]) -> str | None:
    """A1111 accepts a title, a name or a model_name; the title may carry a ` [hash]` suffix."""
    wanted = value.strip()
    if wanted.endswith("]") and " [" in wanted:
        wanted = wanted[: wanted.rindex(" [")]
    for name in names:
        if wanted in (name, models.model_name(name)):
            return name
    return None


async def current_checkpoint(request: web.Request) -> str | None:
    state = request.app[STATE]
    chosen = state.options.get("sd_model_checkpoint")
    names = await live_choices(_engine(request), "CheckpointLoaderSimple.ckpt_name")
    if chosen and chosen in names:
        return chosen
    # Like A1111 at start-up: the first checkpoint found is the loaded one.
    return names[0] if names else None


async def checkpoint_for(request: web.Request, req: models._Common) -> str | None:
    override = (req.override_settings or {}).get("sd_model_checkpoint")
    if isinstance(override, str) and override:
        names = await live_choices(_engine(request), "CheckpointLoaderSimple.ckpt_name")
        found = match_checkpoint(override, names)
        if found:
            return found
        # A1111's process_images drops an unknown override checkpoint silently.
    return await current_checkpoint(request)


CLIP_SKIP_MAX = 12  # A1111's "Clip skip" slider runs 1..12


def check_clip_skip(value: Any, where: str = "CLIP_stop_at_last_layers") -> int:
    # bool is an int subclass, but `true` is no layer count
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= CLIP_SKIP_MAX:
        raise models.field_error(where, f"must be an integer from 1 to {CLIP_SKIP_MAX}, got {value!r}")
    return value


def clip_skip_for(request: web.Request, req: models._Common) -> int:
    """The request's `override_settings` value, else the stored option (A1111 reads opts at generation time)."""
    overrides = req.override_settings or {}
    if overrides.get("CLIP_stop_at_last_layers") is not None:
        return check_clip_skip(overrides["CLIP_stop_at_last_layers"],
                               "override_settings.CLIP_stop_at_last_layers")
    return request.app[STATE].options.get("CLIP_stop_at_last_layers", 1)


async def generation_for(request: web.Request, req: models._Common, is_img2img: bool) -> models.Generation:
    engine = _engine(request)
    state = request.app[STATE]
    settings = state.settings
    clip_skip = clip_skip_for(request, req)
    checkpoint = await checkpoint_for(request, req)
    live_samplers = await live_choices(engine, "KSampler.sampler_name")
    live_schedulers = await live_choices(engine, "KSampler.scheduler")
    gen = models.resolve_generation(
        req, checkpoint=checkpoint, live_samplers=live_samplers or None, live_schedulers=live_schedulers or None,
        is_img2img=is_img2img, max_steps=settings.max_steps, max_size=settings.max_size, clip_skip=clip_skip)
    if req.override_settings_restore_afterwards is False and req.override_settings:
        # A1111 then leaves the overridden options in place for later requests.
        kept = {"CLIP_stop_at_last_layers": clip_skip}
        if checkpoint and req.override_settings.get("sd_model_checkpoint"):
            kept["sd_model_checkpoint"] = checkpoint
        state.options.update(kept)
    return gen


def job_params(gen: models.Generation, index: int) -> dict[str, Any]:
    """Workflow parameters for image `index`; sizes floored to the latent grid as A1111's width//8 does."""
    params: dict[str, Any] = {
        PARAMS["prompt"]: gen.prompts[index],
        PARAMS["negative_prompt"]: gen.negative_prompts[index],
        PARAMS["seed"]: gen.seeds[index],
        PARAMS["steps"]: gen.steps,
        PARAMS["cfg_scale"]: gen.cfg_scale,
        PARAMS["sampler_name"]: gen.sampler.comfy_sampler,
        PARAMS["scheduler"]: gen.sampler.comfy_scheduler,
        PARAMS["width"]: gen.width // 8 * 8,
        PARAMS["height"]: gen.height // 8 * 8,
        PARAMS["CLIP_stop_at_last_layers"]: gen.clip_skip,
    }
    if gen.checkpoint:
        params[PARAMS["sd_model_checkpoint"]] = gen.checkpoint
    return params


# ---------------------------------------------------------------------------------------------------------------
# Running a task


@dataclass
class Outcome:
    images: list[bytes]  # PNG bytes as stored by the engine, in plan order
    indices: list[int]  # plan index of each returned image


async def run_task(request: web.Request, kind: str, gen: models.Generation,
                   submissions: list[tuple[str, dict[str, Any]]],
                   job_meta: dict[str, Any] | None = None) -> tuple[Task, list[Any]]:
    """Submit one job per planned image, wait for all, and return the finished jobs (None where skipped).

    Jobs are all submitted first so that a multi-backend engine can run them side by side.
    """
    engine = _engine(request)
    state = request.app[STATE]
    task = Task(id=uuid.uuid4().hex, kind=kind, job_ids=[], started=time.time(), job_timestamp=gen.job_timestamp)
    state.tasks.append(task)
    try:
        for index, (workflow, params) in enumerate(submissions):
            if task.interrupted:
                break
            meta = {"dialect": "a1111", "task": task.id, "index": index, "seed": gen.seeds[index],
                    **(job_meta or {})}
            try:
                job = await engine.submit(workflow, params, meta=meta)
            except BridgeError:
                for job_id in task.job_ids:
                    await engine.cancel(job_id)
                raise
            task.job_ids.append(job.id)
        results: list[Any] = []
        for job_id in task.job_ids:
            job = await engine.wait(job_id)
            if job.status == "failed":
                for other in task.job_ids:
                    await engine.cancel(other)
                raise A1111Error(500, "", error="RuntimeError", errors=f"generation failed: {job.error}")
            results.append(job if job.status == "completed" else None)
        return task, results
    finally:
        task.finished = True
        # Keep only unfinished tasks plus the latest one: /progress reads nothing older.
        state.tasks[:] = [t for t in state.tasks if not t.finished] + [task]
        state.tasks[:] = state.tasks[-16:]


def encode_png(png: bytes, text: str) -> str:
    return base64.b64encode(models.png_with_infotext(png, text)).decode("ascii")


async def generation_response(req: models._Common, gen: models.Generation, pngs: list[bytes],
                              indices: list[int]) -> web.Response:
    images: list[str] = []
    if req.send_images is not False:
        texts = [models.infotext(gen, i) for i in indices]
        images = await asyncio.to_thread(lambda: [encode_png(p, t) for p, t in zip(pngs, texts)])
    body = {"images": images, "parameters": models.parameters_echo(req),
            "info": json.dumps(models.info(gen, indices), default=lambda o: None)}
    return web.json_response(body)


def _read_images(engine: Any, jobs: list[Any]) -> tuple[list[bytes], list[int]]:
    pngs, indices = [], []
    for index, job in enumerate(jobs):
        if job is None:
            continue
        pngs.append(engine.read_output(job, "images", 0))
        indices.append(index)
    return pngs, indices


# ---------------------------------------------------------------------------------------------------------------
# Handlers


async def txt2img(request: web.Request) -> web.StreamResponse:
    """Text to image (A1111 `/sdapi/v1/txt2img`)."""
    state = request.app[STATE]
    if state.txt2img_override is not None:
        return await state.txt2img_override(request)
    req = models.parse_request(models.Txt2ImgRequest, await read_json(request))
    gen = await generation_for(request, req, is_img2img=False)
    workflow = state.settings.txt2img_workflow
    submissions = [(workflow, job_params(gen, i)) for i in range(gen.count)]
    _, jobs = await run_task(request, "txt2img", gen, submissions)
    pngs, indices = _read_images(_engine(request), jobs)
    return await generation_response(req, gen, pngs, indices)


async def img2img(request: web.Request) -> web.StreamResponse:
    """Image to image and inpainting (A1111 `/sdapi/v1/img2img`)."""
    state = request.app[STATE]
    req = models.parse_request(models.Img2ImgRequest, await read_json(request))
    assert isinstance(req, models.Img2ImgRequest)
    if req.init_images is None:
        raise A1111Error(404, "Init image not found", errors="init_images: Init image not found")
    if not req.init_images:
        raise models.field_error("init_images", "at least one image is required")
    resize_mode = 0 if req.resize_mode is None else req.resize_mode
    if resize_mode not in (0, 1, 2, 3):
        raise models.field_error("resize_mode", f"must be 0, 1, 2 or 3, got {resize_mode}")
    fill = 0 if req.inpainting_fill is None else req.inpainting_fill
    if fill not in (0, 1, 2, 3):
        raise models.field_error("inpainting_fill", f"must be 0, 1, 2 or 3, got {fill}")
    if req.denoising_strength is None:
        req.denoising_strength = 0.75
    inits = await asyncio.to_thread(
        lambda: [models.decode_image(d, f"init_images[{i}]") for i, d in enumerate(req.init_images or [])])
    mask = await asyncio.to_thread(models.decode_image, req.mask, "mask") if req.mask else None
    # A1111's batch rule: one image is repeated, k <= batch_size images set batch_size to k, more is an error.
    batch_size = 1 if req.batch_size is None else req.batch_size
    if len(inits) > max(batch_size, 1):
        raise models.field_error("init_images", f"bad number of images passed: {len(inits)}; expecting "
                                                f"{batch_size} or less")
    if len(inits) > 1:
        req.batch_size = len(inits)
    gen = await generation_for(request, req, is_img2img=True)
    blur_x = req.mask_blur if req.mask_blur is not None else (req.mask_blur_x or 0)
    blur_y = req.mask_blur if req.mask_blur is not None else (req.mask_blur_y or 0)
    if blur_x < 0 or blur_y < 0:
        raise models.field_error("mask_blur", "must not be negative")

    def plan(init: Image.Image) -> models.InpaintPlan:
        return models.plan_img2img(
            init, mask, width=gen.width // 8 * 8, height=gen.height // 8 * 8, resize_mode=resize_mode,
            mask_blur_x=blur_x, mask_blur_y=blur_y, mask_round=req.mask_round is not False,
            invert=bool(req.inpainting_mask_invert), fill=fill, full_res=req.inpaint_full_res is not False,
            padding=max(0, req.inpaint_full_res_padding or 0))

    plans = await asyncio.to_thread(lambda: [plan(im) for im in inits])
    workflow = state.settings.inpaint_workflow if mask is not None else state.settings.img2img_workflow
    graph_fill = models.WORKFLOW_FILLS[fill] if mask is not None else None
    if graph_fill is not None and graph_fill != "original" \
            and PARAMS["inpainting_fill"] not in _engine(request).workflow(workflow).parameters:
        # A custom inpaint workflow without the choice would silently run as "original".
        raise models.field_error("inpainting_fill", f"{fill} ({models.INPAINTING_FILLS[fill]}) needs a "
                                                    f"'{PARAMS['inpainting_fill']}' parameter in the inpaint "
                                                    f"workflow {workflow!r}")
    submissions = []
    for i in range(gen.count):
        p = plans[(i % gen.batch_size) % len(plans)]
        params = job_params(gen, i)
        params[PARAMS["denoising_strength"]] = gen.denoising_strength
        params[PARAMS["init_images"]] = _png(p.image)
        # The image already has width x height, fitted the A1111 way: the graph's own resize is then a no-op.
        params["resize_mode"] = "just resize"
        if p.mask is not None:
            params[PARAMS["mask"]] = _png(p.mask)
            if graph_fill != "original":
                # Sent only when it matters, so inpaint workflows without the choice still serve fills 0 and 1.
                params[PARAMS["inpainting_fill"]] = graph_fill
        submissions.append((workflow, params))
    _, jobs = await run_task(request, "img2img", gen, submissions)
    pngs, indices = _read_images(_engine(request), jobs)
    if mask is not None:
        def finish(png: bytes, index: int) -> bytes:
            with Image.open(io.BytesIO(png)) as im:
                out = models.finish_img2img(im.convert("RGB"), plans[(index % gen.batch_size) % len(plans)])
            return _png(out)

        pngs = await asyncio.to_thread(lambda: [finish(p, i) for p, i in zip(pngs, indices)])
    if req.mask and mask is not None:
        gen.extra.update({"Mask blur": blur_x if blur_x == blur_y else None,
                          "Masked content": models.INPAINTING_FILLS[fill],
                          "Inpaint area": "Only masked" if req.inpaint_full_res is not False else None})
        gen.extra = {k: v for k, v in gen.extra.items() if v is not None}
    return await generation_response(req, gen, pngs, indices)


def _png(im: Image.Image) -> bytes:
    out = io.BytesIO()
    im.save(out, format="PNG", compress_level=1)
    return out.getvalue()


async def progress(request: web.Request) -> web.StreamResponse:
    """Progress of the running generation (A1111 `/sdapi/v1/progress`)."""
    state = request.app[STATE]
    engine = _engine(request)
    task = state.active()
    base_state = {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "",
                  "job_count": 0, "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0}
    if task is None:
        return web.json_response({"progress": 0.0, "eta_relative": 0.0, "state": base_state,
                                  "current_image": None, "textinfo": None})
    jobs = [engine.get(j) for j in task.job_ids]
    job_count = max(1, len(jobs))
    job_no = next((i for i, j in enumerate(jobs) if j is not None and j.status in ("queued", "running")),
                  len(jobs) - 1 if jobs else 0)
    current = jobs[job_no] if jobs else None
    step, steps = 0, 0
    if current is not None:
        step, steps = int(current.step or 0), int(current.steps or 0)
    fraction = (step / steps) if steps else ((current.progress or 0) / 100 if current is not None else 0.0)
    value = min(1.0, 0.01 + job_no / job_count + fraction / job_count)
    elapsed = time.time() - task.started
    eta = elapsed / value if value > 0 else 0.0
    running_state = dict(base_state, skipped=task.skipped, interrupted=task.interrupted,
                         job=f"scripts_{task.kind}", job_count=job_count, job_timestamp=task.job_timestamp,
                         job_no=job_no, sampling_step=step, sampling_steps=steps)
    textinfo = f"Image {job_no + 1}/{job_count}" + (f", step {step}/{steps}" if steps else "")
    return web.json_response({"progress": value, "eta_relative": max(0.0, eta - elapsed), "state": running_state,
                              "current_image": None, "textinfo": textinfo})


async def interrupt(request: web.Request) -> web.StreamResponse:
    """Stop the running generation; finished images are returned (A1111 `/sdapi/v1/interrupt`)."""
    state = request.app[STATE]
    engine = _engine(request)
    task = state.active()
    if task is not None:
        task.interrupted = True
        for job_id in task.job_ids:
            job = engine.get(job_id)
            if job is not None and job.status in ("queued", "running"):
                await engine.cancel(job_id)
    return web.json_response({})


async def skip(request: web.Request) -> web.StreamResponse:
    """Skip the image being generated and go on with the next (A1111 `/sdapi/v1/skip`)."""
    state = request.app[STATE]
    engine = _engine(request)
    task = state.active()
    if task is not None:
        for job_id in task.job_ids:
            job = engine.get(job_id)
            if job is not None and job.status in ("queued", "running"):
                task.skipped = True
                await engine.cancel(job_id)
                break
    return web.json_response(None)


_OPTION_DEFAULTS: dict[str, Any] = {
    "sd_model_checkpoint": None,
    "sd_checkpoint_hash": None,
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "samples_format": "png",
    "enable_pnginfo": True,
    "show_progress_every_n_steps": 10,
    "live_previews_enable": False,
    "eta_noise_seed_delta": 0,
    "img2img_background_color": "#ffffff",
    "randn_source": "CPU",
}


async def get_options(request: web.Request) -> web.StreamResponse:
    """Current options (A1111 `/sdapi/v1/options`)."""
    state = request.app[STATE]
    body = dict(_OPTION_DEFAULTS)
    body.update(state.options)
    body["sd_model_checkpoint"] = await current_checkpoint(request)
    return web.json_response(body)


async def set_options(request: web.Request) -> web.StreamResponse:
    """Change options; `sd_model_checkpoint` switches the checkpoint (A1111 `/sdapi/v1/options`)."""
    state = request.app[STATE]
    body = await read_json(request)
    if not isinstance(body, dict):
        raise A1111Error(422, [{"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}],
                         error="RequestValidationError", errors="body: value is not a valid dict (a JSON object)")
    updates = dict(body)
    if "sd_model_checkpoint" in updates:
        value = updates["sd_model_checkpoint"]
        names = await live_choices(_engine(request), "CheckpointLoaderSimple.ckpt_name")
        found = match_checkpoint(value, names) if isinstance(value, str) else None
        if found is None:
            raise A1111Error(500, "", error="RuntimeError", errors=f"model {value!r} not found")
        updates["sd_model_checkpoint"] = found
    if "CLIP_stop_at_last_layers" in updates:
        updates["CLIP_stop_at_last_layers"] = check_clip_skip(updates["CLIP_stop_at_last_layers"])
    state.options.update(updates)
    return web.json_response(None)


async def sd_models(request: web.Request) -> web.StreamResponse:
    """Checkpoints the backend has (A1111 `/sdapi/v1/sd-models`)."""
    names = await live_choices(_engine(request), "CheckpointLoaderSimple.ckpt_name")
    return web.json_response([checkpoint_item(n) for n in names])


async def get_samplers(request: web.Request) -> web.StreamResponse:
    """Sampler names, A1111 style, that the backend can run (A1111 `/sdapi/v1/samplers`)."""
    live = await live_choices(_engine(request), "KSampler.sampler_name")
    return web.json_response(samplers.sampler_items(live or None))


async def get_schedulers(request: web.Request) -> web.StreamResponse:
    """Schedule types, A1111 style, that the backend can run (A1111 `/sdapi/v1/schedulers`)."""
    live = await live_choices(_engine(request), "KSampler.scheduler")
    return web.json_response(samplers.scheduler_items(live or None))


async def get_upscalers(request: web.Request) -> web.StreamResponse:
    """Upscalers (A1111 `/sdapi/v1/upscalers`); hires fix is not offered, so only "None"."""
    return web.json_response([{"name": "None", "model_name": None, "model_path": None, "model_url": None,
                               "scale": 4.0}])


async def latent_upscale_modes(request: web.Request) -> web.StreamResponse:
    """Latent upscale modes (A1111 `/sdapi/v1/latent-upscale-modes`); hires fix is not offered."""
    return web.json_response([])


async def refresh_checkpoints(request: web.Request) -> web.StreamResponse:
    """Re-read the checkpoint list from the backend (A1111 `/sdapi/v1/refresh-checkpoints`)."""
    engine = _engine(request)
    await engine.refresh_object_info()
    await live_choices(engine, "CheckpointLoaderSimple.ckpt_name")
    return web.json_response(None)


async def scripts(request: web.Request) -> web.StreamResponse:
    """Selectable scripts (A1111 `/sdapi/v1/scripts`); none are offered, so clients send none."""
    return web.json_response({"txt2img": [], "img2img": []})


async def ping(request: web.Request) -> web.StreamResponse:
    """Liveness check for A1111 clients (A1111 `/internal/ping`)."""
    return web.json_response({})


def has_route(app: web.Application, method: str, path: str) -> bool:
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        if route.method == method and info.get("path", info.get("formatter")) == path:
            return True
    return False


def setup(app: web.Application) -> None:
    from bridge.app import SETTINGS

    if STATE not in app:  # the pico adapter may have set the shared state up first
        settings = A1111Settings.from_settings(app[SETTINGS])
        app[STATE] = A1111State(settings=settings, credentials=parse_credentials(settings.api_auth))
    r = app.router
    if not has_route(app, "POST", f"{PREFIX}/txt2img"):  # Pico mode may already serve it
        r.add_post(f"{PREFIX}/txt2img", a1111_route(txt2img))
    r.add_post(f"{PREFIX}/img2img", a1111_route(img2img))
    r.add_get(f"{PREFIX}/progress", a1111_route(progress))
    r.add_post(f"{PREFIX}/interrupt", a1111_route(interrupt))
    r.add_post(f"{PREFIX}/skip", a1111_route(skip))
    r.add_get(f"{PREFIX}/options", a1111_route(get_options))
    r.add_post(f"{PREFIX}/options", a1111_route(set_options))
    r.add_get(f"{PREFIX}/sd-models", a1111_route(sd_models))
    r.add_get(f"{PREFIX}/samplers", a1111_route(get_samplers))
    r.add_get(f"{PREFIX}/schedulers", a1111_route(get_schedulers))
    r.add_get(f"{PREFIX}/upscalers", a1111_route(get_upscalers))
    r.add_get(f"{PREFIX}/latent-upscale-modes", a1111_route(latent_upscale_modes))
    r.add_post(f"{PREFIX}/refresh-checkpoints", a1111_route(refresh_checkpoints))
    r.add_get(f"{PREFIX}/scripts", a1111_route(scripts))
    r.add_get("/internal/ping", a1111_route(ping, auth=False))
