"""AUTOMATIC1111-compatible API (`/sdapi/v1/...`): A1111 clients such as `webuiapi` work unmodified.

Each A1111 request becomes one engine job per image (`txt2img`, `img2img` or `inpaint` workflow), so that image i
really is generated with seed + i and the seed in its infotext reproduces it, as in A1111. Request bodies are the
models of `models`; defaults, infotext and `info` live in `generation`, the img2img image and mask steps in
`imaging`, sampler names in `bridge.samplers`.
"""
from __future__ import annotations

import functools
import io
import json
import math
import time
from pathlib import PurePath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

from aiohttp import web
from PIL import Image, PngImagePlugin
from pydantic import BaseModel, Field, ValidationError

from bridge import images as image_io
from bridge.engine import JobEngine
from bridge.api import read_json
from bridge.errors import BridgeError, InvalidParameter, PayloadTooLarge
from bridge.fields import LooseBool, field_errors
from bridge.http import json_answer

from ..toolkit import Submission, engine_of, settings_of
from . import generation as gen_mod
from . import imaging, infotext, models, upscalers, xyz
from . import options as opts
from .catalog import (NULL, Empty, backend_json, current_checkpoint, live_choices, match_checkpoint, match_vae,
                      upscale_model_files)
from .dialect import (FIELD_FOR_PARAM, PARAMS, STATE, TASK_ANCHOR, A1111Error, Handler, a1111_endpoint,
                      current_task, run_task, translate_engine_error)
from .extras import user_comment
from .generation import Generation

_engine = engine_of


async def checkpoint_for(request: web.Request, req: models.GenerationRequest) -> str | None:
    override = (req.override_settings or {}).get("sd_model_checkpoint")
    if isinstance(override, str) and override:
        names = await live_choices(_engine(request), "CheckpointLoaderSimple.ckpt_name")
        found = match_checkpoint(override, names)
        if found:
            return found
        # A1111's process_images drops an unknown override checkpoint silently.
    return await current_checkpoint(request)


def clip_skip_for(request: web.Request, req: models.GenerationRequest) -> int:
    """The request's `override_settings` value, else the stored option (A1111 reads opts at generation time)."""
    return int(opts.value(request.app[STATE].options, "CLIP_stop_at_last_layers", req.override_settings))


# The field paths (as errors name them) whose values the request's infotext filled, for `names_pasted`
PASTED = web.RequestKey("a1111_infotext_pasted", set)


async def with_infotext(request: web.Request, req: models.RequestT) -> models.RequestT:
    """`req` with the fields and settings its `infotext` fills where the request left them unset (A1111 1.9+'s
    `apply_infotext`), checked as the same fields sent: a value the request model refuses is a 422 naming
    `infotext.<field>` that echoes the body as sent, as every 422 does; later checks name it so through
    `names_pasted`. A setting the bridge cannot run, which sent in override_settings would be refused, is left out:
    A1111's `RNG: GPU`, which every infotext without `RNG` implies, would otherwise fail every older text."""
    if not req.infotext:
        return req
    params = infotext.parse(req.infotext)
    fields = infotext.pasted_fields(params, isinstance(req, models.Img2ImgRequest), req.model_fields_set)
    try:
        checked = type(req).model_validate(fields)
    except ValidationError as exc:
        errors = [models.FieldError(f"infotext.{e.field}", e.message, e.kind, e.ctx)
                  for e in field_errors(exc, type(req))]
        raise models.validation_error(errors, await read_json(request, empty={})) from None
    stored = request.app[STATE].options
    overrides = dict(req.override_settings or {})
    pasted = set(fields)
    for key, value in infotext.pasted_settings(params, lambda k: opts.value(stored, k),
                                               lambda k: opts.defaults()[k]).items():
        if key not in overrides and _runs_here(key, value):
            if key == "sd_vae" and value not in ("Automatic", "None") \
                    and match_vae(value, await live_choices(_engine(request), "VAELoader.vae_name")) is None:
                value = "None"  # A1111: "Couldn't find VAE named ...; using None instead" (the checkpoint's own)
            overrides[key] = value
            # the option checks name it inside override_settings, the workflow's checks by its option name
            pasted |= {f"override_settings.{key}", key}
    request[PASTED] = pasted
    return req.model_copy(update={**{k: getattr(checked, k) for k in fields}, "override_settings": overrides})


def names_pasted(handler: Handler) -> Handler:
    """`handler` with an error about a value its infotext filled named `infotext.<field>`: the checks past the
    request model (the workflow's seed range, the hires checkpoint, the answer's format) are written once, each
    naming its field as if sent."""

    @functools.wraps(handler)
    async def named(request: web.Request, **kwargs: Any) -> web.StreamResponse:
        try:
            return await handler(request, **kwargs)
        except BridgeError as exc:
            renamed = _as_pasted(exc, request.get(PASTED) or set())
            if renamed is None:
                raise
            raise renamed from None

    return named


def _as_pasted(exc: BridgeError, pasted: set[str]) -> A1111Error | None:
    """`exc` in A1111's shape with its field named `infotext.<field>`, where that field is in `pasted`; None where
    it names no such field."""
    err = translate_engine_error(exc)
    if not pasted or isinstance(err.detail, list):
        # a later 422 comes from a plot's cells, whose pasted values passed this same model already
        return None
    text = err.errors
    if isinstance(exc, InvalidParameter) and exc.field:
        # the engine's words may name the field without the `field:` the others start with
        field = FIELD_FOR_PARAM.get(exc.field, exc.field)
    else:
        field = text.split(": ", 1)[0]
    if not any(field == p or field.startswith((f"{p}.", f"{p}[")) for p in pasted):
        return None

    def renamed(words: str) -> str:
        return f"infotext.{words}" if words.startswith(f"{field}:") else f"infotext.{field}: {words}"

    detail = renamed(err.detail) if isinstance(err.detail, str) and err.detail == text else err.detail
    return A1111Error(err.status, detail, error=err.error, errors=renamed(text), body=err.body, headers=err.headers)


def _runs_here(key: str, value: Any) -> bool:
    try:
        opts.override_value({key: value}, key)
    except A1111Error:
        return False
    return True


def options_for(request: web.Request, req: models.GenerationRequest) -> dict[str, Any]:
    """The options in force for this request: stored ones with the request's `override_settings` on top (checked;
    unknown keys there are ignored, as A1111 does)."""
    effective = dict(request.app[STATE].options)
    for key in (req.override_settings or {}):
        if key in opts.defaults():
            value = opts.override_value(req.override_settings, key)
            if value is not None:
                effective[key] = value
    return effective


async def vae_for(request: web.Request, options: dict[str, Any], checkpoint: str | None) -> str | None:
    """The VAE file `sd_vae` selects: a file of the backend, or with "Automatic" the file named like the
    checkpoint when there is one (A1111's rule); None: the checkpoint's own VAE."""
    choice = options.get("sd_vae", "Automatic")
    if choice == "None" or (choice == "Automatic" and not checkpoint):
        return None
    names = await live_choices(_engine(request), "VAELoader.vae_name")
    if choice == "Automatic":
        stem = PurePath(checkpoint or "").stem
        return next((n for n in names if PurePath(n).name.split(".")[0] == stem), None)
    found = match_vae(choice, names)
    if found is None or found in ("Automatic", "None"):
        raise models.field_error("sd_vae", f"{choice!r} is not a VAE of the backend")
    return found


def _mentions_networks(req: models.GenerationRequest, options: dict[str, Any]) -> bool:
    texts = req.prompt if isinstance(req.prompt, list) else [req.prompt or ""]
    return any("<lora:" in t or "<lyco:" in t for t in texts) or options.get("sd_lora", "None") not in ("None", "") \
        or bool(req.styles)


async def generation_for(request: web.Request, req: models.GenerationRequest, is_img2img: bool,
                         scripts: tuple[str, ...] = ()) -> Generation:
    engine = _engine(request)
    state = request.app[STATE]
    options = options_for(request, req)
    clip_skip = clip_skip_for(request, req)
    checkpoint = await checkpoint_for(request, req)
    live_samplers = await live_choices(engine, "KSampler.sampler_name")
    live_schedulers = await live_choices(engine, "KSampler.scheduler")
    lora_files = await live_choices(engine, "LoraLoader.lora_name") if _mentions_networks(req, options) else []
    embeddings = await backend_json(engine, "/embeddings") or []
    upscale_files = await upscale_model_files(engine) if getattr(req, "enable_hr", False) else []
    gen = gen_mod.resolve_generation(
        req, checkpoint=checkpoint, live_samplers=live_samplers or None, live_schedulers=live_schedulers or None,
        is_img2img=is_img2img, clip_skip=clip_skip, options=options, styles=state.styles, lora_files=lora_files,
        embeddings=embeddings, scripts=scripts, vae=await vae_for(request, options, checkpoint),
        upscale_files=upscale_files)
    if req.override_settings_restore_afterwards is False and req.override_settings:
        # A1111 then leaves the overridden options in place for later requests.
        kept = {k: v for k, v in options.items() if k in req.override_settings}
        kept["CLIP_stop_at_last_layers"] = clip_skip
        if checkpoint and req.override_settings.get("sd_model_checkpoint"):
            kept["sd_model_checkpoint"] = checkpoint
        state.options.update(kept)
    return gen


def job_params(gen: Generation, index: int) -> dict[str, Any]:
    """Workflow parameters for image `index`; sizes floored to the latent grid as A1111's width//8 does. The
    A1111-noise and tiling parameters are sent only when they change something, so a workflow without them still
    serves every request that does not ask for them (and one that asks is refused by `check_features`)."""
    params: dict[str, Any] = {
        PARAMS["prompt"]: gen.model_prompts[index],
        PARAMS["negative_prompt"]: gen.model_negative_prompts[index],
        PARAMS["seed"]: gen.seeds[index],
        PARAMS["steps"]: gen.steps,
        PARAMS["cfg_scale"]: gen.cfg_scale * gen.sampler.cfg_factor,
        PARAMS["sampler_name"]: gen.sampler.comfy_sampler,
        PARAMS["scheduler"]: gen.sampler.comfy_scheduler,
        PARAMS["width"]: gen.width // 8 * 8,
        PARAMS["height"]: gen.height // 8 * 8,
        PARAMS["CLIP_stop_at_last_layers"]: gen.clip_skip,
    }
    if gen.checkpoint:
        params[PARAMS["sd_model_checkpoint"]] = gen.checkpoint
    if gen.vae:
        params[PARAMS["sd_vae"]] = gen.vae
    if gen.loras:
        params[PARAMS["loras"]] = gen.loras
    if gen.subseed_strength:
        params[PARAMS["subseed"]] = gen.subseeds[index]
        params[PARAMS["subseed_strength"]] = gen.subseed_strength
    if gen.seed_resize_from:
        params[PARAMS["seed_resize_from_w"]], params[PARAMS["seed_resize_from_h"]] = gen.seed_resize_from
    if gen.noise_seed_delta:
        params[PARAMS["eta_noise_seed_delta"]] = gen.noise_seed_delta
    if gen.noise_multiplier != 1.0:
        params[PARAMS["initial_noise_multiplier"]] = gen.noise_multiplier
    if gen.tiling:
        params[PARAMS["tiling"]] = "both"
    if gen.hires is not None:
        params.update(hires_params(gen, index))
    return params


def hires_params(gen: Generation, index: int) -> dict[str, Any]:
    """The hires workflow's second-pass parameters for image `index`."""
    h = gen.hires
    assert h is not None
    out: dict[str, Any] = {
        "hr_width": h.width, "hr_height": h.height, PARAMS["hr_upscaler"]: h.kind, "latent_upscale_mode": h.latent_mode,
        PARAMS["hr_second_pass_steps"]: h.steps, "hr_denoise": h.denoise,
        PARAMS["hr_sampler_name"]: h.sampler.comfy_sampler, PARAMS["hr_scheduler"]: h.sampler.comfy_scheduler,
        "hr_cfg": gen.cfg_scale * h.sampler.cfg_factor, PARAMS["hr_prompt"]: h.model_prompts[index],
        PARAMS["hr_negative_prompt"]: h.model_negative_prompts[index]}
    if h.model_file:
        out["upscale_model"] = h.model_file
    if h.crop is not None:
        out["hr_crop_width"], out["hr_crop_height"], out["hr_crop_x"], out["hr_crop_y"] = h.crop
    return out


# Parameters sent only because another field asks for the feature: a workflow without them lacks that feature.
_FEATURE_FIELD = {PARAMS["subseed"]: "subseed_strength"}


def check_features(engine: JobEngine, workflow: str, params: dict[str, Any]) -> None:
    """A feature the request asks for must reach the graph: a workflow without its parameter would silently run
    without it while the infotext claims it."""
    declared = engine.workflow(workflow).parameters
    for name in params:
        if name not in declared:
            field = _FEATURE_FIELD.get(name) or FIELD_FOR_PARAM.get(name, name)
            raise models.field_error(field, f"the workflow {workflow!r} has no {name!r} parameter, so it cannot "
                                            f"honour {field}")


# ---------------------------------------------------------------------------------------------------------------
# Answers


class GenerationAnswer(BaseModel):
    """A1111's TextToImageResponse / ImageToImageResponse: base64 PNGs with infotext, the request echoed, `info`
    as a JSON string."""

    images: list[str]
    parameters: dict[str, Any]
    info: str


# The most pixels a side may have in JPEG (libjpeg) and WebP: a larger picture (an x/y/z grid of eight cells 2048
# wide is 16,384) comes back as PNG, rather than as a 500 after every job of the request has run.
MAX_SIDE = {"jpg": 65500, "jpeg": 65500, "webp": 16383}


def encode_image(png: bytes, text: str, options: dict[str, Any]) -> tuple[bytes, str]:
    """One answer image in the option's `samples_format` (PNG with the `parameters` chunk; JPEG/WebP with the
    infotext as EXIF UserComment, as A1111 writes them), and its file extension."""
    fmt = str(options.get("samples_format", "png")).lower()
    with_info = bool(options.get("enable_pnginfo", True))
    if fmt == "png":
        # off: no text at all, as A1111 writes none (the stored result carries the bridge's own infotext)
        return (gen_mod.png_with_infotext(png, text) if with_info else image_io.strip_metadata(png)), "png"
    with gen_mod.open_built(png) as im:
        if max(im.size) > MAX_SIDE.get(fmt, 16383):
            return encode_image(png, text, {**options, "samples_format": "png"})
        im = im.convert("RGB")
        exif = Image.Exif()
        if with_info:
            exif.get_ifd(0x8769)[0x9286] = user_comment(text)
        out = io.BytesIO()
        if fmt in ("jpg", "jpeg"):
            im.save(out, format="JPEG", quality=int(options.get("jpeg_quality", 80)), exif=exif)
        else:
            lossless = bool(options.get("webp_lossless", False))
            im.save(out, format="WEBP", quality=int(options.get("jpeg_quality", 80)), lossless=lossless, exif=exif)
    return out.getvalue(), "jpg" if fmt in ("jpg", "jpeg") else "webp"


def preview_image(data: bytes, options: dict[str, Any]) -> bytes:
    """A live preview (ComfyUI sends JPEG, or PNG) as A1111's encode_pil_to_base64 sends `current_image`: in the
    `samples_format` option, with no infotext (the preview image carries none)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        with Image.open(io.BytesIO(data)) as im:
            out = io.BytesIO()
            im.convert("RGB").save(out, format="PNG", compress_level=1)
            data = out.getvalue()
    return encode_image(data, "", {**options, "enable_pnginfo": False})[0]


async def answer_images(request: web.Request, req: models.GenerationRequest, pngs: list[bytes], texts: list[str],
                        options: dict[str, Any]) -> list[str]:
    """The answer's `images`: base64, as A1111 sends them, or with `response_format: "url"` (a Pixart extension)
    links to the same bytes, kept beside the task's first job (presigned when results live in S3)."""
    if req.send_images is False:
        return []
    encoded = await image_io.run_in_pool(lambda: [encode_image(p, t, options) for p, t in zip(pngs, texts)])
    anchor = request.get(TASK_ANCHOR)
    if req.response_format != "url" or not anchor:
        return [image_io.Base64(data) for data, _ in encoded]
    engine = _engine(request)
    origin = f"{request.scheme}://{request.host}"
    return [await engine.keep_file(anchor, data, ext, origin) for data, ext in encoded]


def grid_layout(count: int, options: Mapping[str, Any], batch_size: int) -> tuple[int, int]:
    """A1111's image_grid layout for `count` images, (rows, columns): rows from the `n_rows` option (-1: about a
    square, or with `grid_prevent_empty_spots` the largest divisor of the count up to its square root; 0: the
    batch size), never more rows than images."""
    n_rows = int(options["n_rows"])
    if n_rows > 0:
        rows = n_rows
    elif n_rows == 0:
        rows = batch_size
    elif options["grid_prevent_empty_spots"]:
        rows = math.isqrt(count)
        while count % rows:
            rows -= 1
    else:
        rows = round(math.sqrt(count))
    rows = min(count, max(1, rows))
    return rows, math.ceil(count / rows)


def image_grid(pngs: list[bytes], options: Mapping[str, Any], batch_size: int) -> bytes:
    """A1111's image_grid: images left to right, top to bottom, on black, each cell the first image's size (see
    `grid_layout`). Each image is decoded as it is pasted: decoded all at once, every image was held twice (as
    itself and in the grid)."""
    rows, cols = grid_layout(len(pngs), options, batch_size)
    w, h = _png_size(pngs[0])
    grid = Image.new("RGB", (cols * w, rows * h), "black")
    for i, png in enumerate(pngs):
        im = gen_mod.open_built(png)
        try:
            grid.paste(im.convert("RGB"), (i % cols * w, i // cols * h))
        finally:
            im.close()  # its pixels let go before the next is decoded (leaving `with` keeps them)
    return _png(grid)


def _png_size(png: bytes) -> tuple[int, int]:
    """An image's size, read from its header (no pixels decoded)."""
    im = gen_mod.open_built(png)
    try:
        return im.size
    finally:
        im.close()


def grid_limit(request: web.Request, req: models.GenerationRequest) -> float:
    """The megapixels a grid must stay below: the `img_max_size_mp` option (as the x/y/z plot reads it)."""
    return xyz.grid_limit(opts.value(request.app[STATE].options, "img_max_size_mp", req.override_settings))


def _full_options(gen: Generation) -> dict[str, Any]:
    return {k: gen.options.get(k, v) for k, v in opts.defaults().items()}


def makes_grid(req: models.GenerationRequest, full: dict[str, Any], count: int) -> bool:
    """Whether the answer puts a grid of its images first: with save_images (SillyTavern sends it), the
    `return_grid` option and no do_not_save_grid, A1111 puts a grid of two or more images first."""
    return bool(req.save_images and not req.do_not_save_grid and full["return_grid"] and count >= 2)


def _grid_mp(count: int, size: tuple[int, int], options: Mapping[str, Any], batch_size: int
             ) -> tuple[int, int, int]:
    rows, cols = grid_layout(count, options, batch_size)
    return rows, cols, round(cols * size[0] * rows * size[1] / 1_000_000)


def check_batch_grid(request: web.Request, req: models.GenerationRequest, prepared: Prepared) -> None:
    """The answer's grid checked before any job is queued, as the x/y/z plot's is (its megapixels, as drawn, must
    be below `img_max_size_mp`): every image at the size it comes back (hires fix, an img2img result pasted back
    into its picture). 64 images of 4096x4096 made a grid of 1.07 GPixels, a 500 after every job had run."""
    gen = prepared.gen
    full = _full_options(gen)
    if not makes_grid(req, full, gen.count):
        return
    limit = grid_limit(request, req)
    w, h = prepared.answer_size
    rows, cols, mp = _grid_mp(gen.count, (w, h), full, gen.batch_size)
    if not mp < limit:
        raise models.field_error(
            "batch_size", f"Error: Resulting grid would be too large ({mp} MPixels) (max configured size is "
                          f"{limit:g} MPixels): batch_size x n_iter {gen.batch_size} x {gen.n_iter}, {gen.count} "
                          f"images of {w}x{h} in {rows} rows of {cols}; ask for fewer or smaller images, or send "
                          f"do_not_save_grid")


async def generation_response(request: web.Request, req: models.GenerationRequest, gen: Generation,
                              pngs: list[bytes], indices: list[int]) -> web.Response:
    full = _full_options(gen)
    body_info = gen_mod.info(gen, indices)
    texts = body_info["infotexts"]
    grid = makes_grid(req, full, len(pngs))
    if grid:
        # checked before the jobs ran (`check_batch_grid`); the images that came back (an interrupted x/y/z plot's
        # cells, of their own sizes) are checked again, the grid left out rather than made past the limit
        size = _png_size(pngs[0])
        grid = _grid_mp(len(pngs), size, full, gen.batch_size)[2] < grid_limit(request, req)
    if grid:
        pngs = [await image_io.run_in_pool(image_grid, pngs, full, gen.batch_size), *pngs]
        texts = [texts[0], *texts]
        body_info["infotexts"] = texts
        body_info["index_of_first_image"] = 1
    images = await answer_images(request, req, pngs, texts, full)
    body = {"images": images, "parameters": models.parameters_echo(req),
            "info": json.dumps(body_info, default=lambda o: None)}
    return await json_answer(body)


def partial_image(preview: tuple[str, bytes], width: int, height: int) -> bytes:
    """An interrupted image's newest live preview at the image's size: what A1111 answers with for an interrupted
    or skipped image (its partly finished picture; A1111 decodes the latent, the bridge has ComfyUI's preview)."""
    with Image.open(io.BytesIO(preview[1])) as im:
        return _png(im.convert("RGB").resize((width, height), Image.LANCZOS))


async def _read_images(engine: JobEngine, jobs: list[Any], job_ids: list[str] | None = None,
                       size: tuple[int, int] = (0, 0)) -> tuple[list[bytes], list[int]]:
    pngs, indices = [], []
    for index, job in enumerate(jobs):
        if job is None:
            found = await engine.latest_preview(job_ids[index]) if job_ids and index < len(job_ids) else None
            if found is not None and size[0] > 0:
                pngs.append(await image_io.run_in_pool(partial_image, found, *size))
                indices.append(index)
            continue
        pngs.append(await engine.read_output(job, "images", 0))
        indices.append(index)
    return pngs, indices


# ---------------------------------------------------------------------------------------------------------------
# Handlers: a request is prepared (its generation and one submission per image), then run; scripts prepare many.


@dataclass
class Prepared:
    """One A1111 request made ready to run: what it generates, its jobs, and the step that finishes each image."""

    gen: Generation
    submissions: list[Submission]
    finish: Callable[[bytes, int], bytes] | None = None
    finished_size: tuple[int, int] | None = None  # the first image's size after `finish`, where that changes it

    @property
    def size(self) -> tuple[int, int]:
        return self.gen.output_size

    @property
    def answer_size(self) -> tuple[int, int]:
        """The size the first image comes back at."""
        return self.finished_size or self.size


def _meta(gen: Generation, index: int, dialect: str = "a1111") -> dict[str, Any]:
    return {"dialect": dialect, "index": index, "seed": gen.seeds[index]}


async def prepare_txt2img(request: web.Request, req: models.GenerationRequest,
                          scripts: tuple[str, ...] = ()) -> Prepared:
    state = request.app[STATE]
    gen = await generation_for(request, req, is_img2img=False, scripts=scripts)
    workflow = state.settings.hires_workflow if gen.hires is not None else state.settings.txt2img_workflow
    submissions = [Submission(workflow, job_params(gen, i), meta=_meta(gen, i)) for i in range(gen.count)]
    check_features(_engine(request), workflow, submissions[0].params)
    return Prepared(gen, submissions)


async def decode_request_images(request: web.Request, req: models.Img2ImgRequest
                                ) -> tuple[list[Image.Image], Image.Image | None]:
    """The init images and the mask, each checked from its header (format, bytes, pixels, and the request's
    pixel budget) before any is decoded."""
    engine = _engine(request)
    if req.init_images is None:
        raise A1111Error(404, "Init image not found", errors="init_images: Init image not found")
    if not req.init_images:
        raise models.field_error("init_images", "at least one image is required")
    # A1111's batch rule: one image is repeated, k <= batch_size images set batch_size to k, more is an error.
    # Checked on the count and on every header before any pixel is decoded: refused images cost no memory.
    batch_size = 1 if req.batch_size is None else req.batch_size
    if len(req.init_images) > max(batch_size, 1):
        raise models.field_error("init_images", f"bad number of images passed: {len(req.init_images)}; expecting "
                                                f"{batch_size} or less")
    limits = {"max_bytes": engine.max_image_bytes, "max_pixels": engine.max_image_pixels}
    await engine.check_room()  # before any image is fetched or decoded
    try:
        named = await image_io.probe_request(
            [(f"init_images[{i}]", d) for i, d in enumerate(req.init_images)] + ([("mask", req.mask)] if req.mask
                                                                                 else []),
            **limits, max_total=settings_of(request).max_request_pixels, probe_one=imaging.probe_image,
            fetch=imaging.url_fetcher(engine))
    except PayloadTooLarge as exc:
        raise models.field_error(exc.field or "init_images", exc.message.split(": ", 1)[-1], status=413,
                                 detail="Images too large") from None
    inits = [await image_io.run_in_pool(imaging.decode_image, d, name, **limits)
             for name, d in named if name != "mask"]
    mask_data = dict(named).get("mask")
    mask = (await image_io.run_in_pool(imaging.decode_image, mask_data, "mask", **limits)
            if mask_data is not None else None)
    return inits, mask


# One init image's plan, with its image and mask encoded once (the engine takes these as they are).
Plan = tuple[imaging.InpaintPlan, image_io.DecodedImage, image_io.DecodedImage | None]


@dataclass
class Img2ImgInputs:
    """A request's init images and mask, decoded once, and their plans by the settings that shape them. An x/y/z
    plot's cells share them: each cell decoded and planned the pictures again, and a 4096x4096 init image and mask
    held about 230 MiB a cell to the end (only a Size axis makes new plans)."""

    inits: list[Image.Image]
    mask: Image.Image | None
    plans: dict[tuple[Any, ...], list[Plan]]


async def img2img_inputs(request: web.Request, req: models.Img2ImgRequest) -> Img2ImgInputs:
    inits, mask = await decode_request_images(request, req)
    return Img2ImgInputs(inits, mask, {})


async def img2img_generation(request: web.Request, req: models.Img2ImgRequest, inputs: Img2ImgInputs,
                             scripts: tuple[str, ...] = ()) -> Generation:
    # A1111 applies this rule to its processing object: the request, echoed as `parameters`, keeps what was sent
    work = req.model_copy(update={"batch_size": len(inputs.inits)}) if len(inputs.inits) > 1 else req
    return await generation_for(request, work, is_img2img=True, scripts=scripts)


async def prepare_img2img(request: web.Request, req: models.Img2ImgRequest,
                          scripts: tuple[str, ...] = ()) -> Prepared:
    inputs = await img2img_inputs(request, req)
    gen = await img2img_generation(request, req, inputs, scripts)
    return await img2img_jobs(request, req, gen, inputs)


async def img2img_jobs(request: web.Request, req: models.Img2ImgRequest, gen: Generation, inputs: Img2ImgInputs
                       ) -> Prepared:
    """The jobs of an img2img request whose generation is resolved: its pictures planned (or the plans of
    `inputs` reused), one submission per image, and the step that pastes each result back."""
    state = request.app[STATE]
    engine = _engine(request)
    resize_mode = req.resize_mode or 0
    fill = req.inpainting_fill or 0
    inits, mask = inputs.inits, inputs.mask
    blur_x = req.mask_blur if req.mask_blur is not None else (req.mask_blur_x or 0)
    blur_y = req.mask_blur if req.mask_blur is not None else (req.mask_blur_y or 0)
    shape = dict(width=gen.width // 8 * 8, height=gen.height // 8 * 8, resize_mode=resize_mode, mask_blur_x=blur_x,
                 mask_blur_y=blur_y, mask_round=req.mask_round is not False, invert=bool(req.inpainting_mask_invert),
                 fill=fill, full_res=req.inpaint_full_res is not False,
                 padding=max(0, req.inpaint_full_res_padding or 0))

    def plan(init: Image.Image) -> Plan:
        p = imaging.plan_img2img(init, mask, **shape)  # type: ignore[arg-type]
        return p, image_io.from_pil(p.image), image_io.from_pil(p.mask) if p.mask is not None else None

    key = tuple(sorted(shape.items()))
    plans = inputs.plans.get(key)
    if plans is None:
        plans = inputs.plans[key] = await image_io.run_in_pool(lambda: [plan(im) for im in inits])
    workflow = state.settings.inpaint_workflow if mask is not None else state.settings.img2img_workflow
    graph_fill = imaging.WORKFLOW_FILLS[fill] if mask is not None else None
    if graph_fill is not None and graph_fill != "original" \
            and PARAMS["inpainting_fill"] not in engine.workflow(workflow).parameters:
        # A custom inpaint workflow without the choice would silently run as "original".
        raise models.field_error("inpainting_fill", f"{fill} ({imaging.INPAINTING_FILLS[fill]}) needs a "
                                                    f"'{PARAMS['inpainting_fill']}' parameter in the inpaint "
                                                    f"workflow {workflow!r}")
    submissions = []
    for i in range(gen.count):
        _, image, job_mask = plans[(i % gen.batch_size) % len(plans)]
        params = job_params(gen, i)
        params[PARAMS["denoising_strength"]] = gen.denoising_strength
        params[PARAMS["init_images"]] = image
        # The image already has width x height, fitted the A1111 way: the graph's own resize is then a no-op.
        params["resize_mode"] = "just resize"
        if job_mask is not None:
            params[PARAMS["mask"]] = job_mask
            if graph_fill != "original":
                # Sent only when it matters, so inpaint workflows without the choice still serve fills 0 and 1.
                params[PARAMS["inpainting_fill"]] = graph_fill
        submissions.append(Submission(workflow, params, meta=_meta(gen, i)))
    check_features(engine, workflow, submissions[0].params)
    finish = None
    if mask is not None:
        def finish(png: bytes, index: int) -> bytes:
            with Image.open(io.BytesIO(png)) as im:
                out = imaging.finish_img2img(im.convert("RGB"), plans[(index % gen.batch_size) % len(plans)][0])
            return _png(out)

    if req.mask and mask is not None:
        gen.extra.update({"Mask blur": blur_x if blur_x == blur_y else None,
                          "Masked content": imaging.INPAINTING_FILLS[fill],
                          "Inpaint area": "Only masked" if req.inpaint_full_res is not False else None})
        gen.extra = {k: v for k, v in gen.extra.items() if v is not None}
        for late in ("Eta DDIM", "Noise multiplier"):  # A1111 adds these while sampling, after the mask keys
            if late in gen.extra:
                gen.extra[late] = gen.extra.pop(late)
    overlay = plans[0][0].overlay
    # a result is pasted back into the init picture: it comes back at that size
    return Prepared(gen, submissions, finish, overlay.size if finish is not None and overlay is not None else None)


async def run_prepared(request: web.Request, kind: str, prepared: list[Prepared]
                       ) -> list[tuple[list[bytes], list[int]]]:
    """Run every prepared request's jobs as one task (one progress, one interrupt); per request, the finished
    images and their indices."""
    engine = _engine(request)
    subs = [s for p in prepared for s in p.submissions]
    task, jobs = await run_task(request, kind, prepared[0].gen.job_timestamp, subs)
    out, start = [], 0
    for p in prepared:
        span = slice(start, start + len(p.submissions))
        pngs, indices = await _read_images(engine, jobs[span], task.job_ids[span], p.size)
        start += len(p.submissions)
        if p.finish is not None:
            finish = p.finish
            pngs = await image_io.run_in_pool(lambda: [finish(png, i) for png, i in zip(pngs, indices)])
        out.append((pngs, indices))
    return out


@names_pasted
async def txt2img(request: web.Request, body: models.Txt2ImgRequest) -> web.StreamResponse:
    """Text to image (A1111 `/sdapi/v1/txt2img`); scripts: `x/y/z plot`."""
    body = await with_infotext(request, body)
    if (body.script_name or "").lower() == "x/y/z plot":
        return await xyz_plot(request, body, is_img2img=False)
    prepared = await prepare_txt2img(request, body)
    check_batch_grid(request, body, prepared)
    [(pngs, indices)] = await run_prepared(request, "txt2img", [prepared])
    return await generation_response(request, body, prepared.gen, pngs, indices)


@names_pasted
async def img2img(request: web.Request, body: models.Img2ImgRequest) -> web.StreamResponse:
    """Image to image and inpainting (A1111 `/sdapi/v1/img2img`); scripts: `x/y/z plot`, `sd upscale`."""
    body = await with_infotext(request, body)
    if (body.script_name or "").lower() == "x/y/z plot":
        return await xyz_plot(request, body, is_img2img=True)
    if (body.script_name or "").lower() == "sd upscale":
        return await sd_upscale(request, body)
    prepared = await prepare_img2img(request, body)
    check_batch_grid(request, body, prepared)
    [(pngs, indices)] = await run_prepared(request, "img2img", [prepared])
    return await generation_response(request, body, prepared.gen, pngs, indices)


def sd_upscale_args(args: list[Any], files: list[str]) -> tuple[int, upscalers.Upscaler, float]:
    """A1111's SD upscale `script_args`: [info, tile overlap, upscaler (name or index), scale factor]."""
    args = list(args) + [None] * (4 - len(args))
    overlap = 64 if args[1] is None else args[1]
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or overlap != int(overlap) \
            or not 0 <= overlap <= 256:
        raise models.field_error("script_args[1]", f"tile overlap must be a whole number from 0 to 256, got "
                                                   f"{overlap!r}")
    listed = upscalers.listed(files)
    chosen = "None" if args[2] is None else args[2]
    if isinstance(chosen, int) and not isinstance(chosen, bool) and 0 <= chosen < len(listed):
        upscaler = listed[chosen]
    else:
        upscaler = upscalers.find(str(chosen), files, latent=False, case_sensitive=False)
        if upscaler is None:
            raise models.field_error("script_args[2]", f"could not find upscaler named {chosen!r}; choose one of "
                                                       f"{', '.join(u.name for u in listed)}")
    scale = 2.0 if args[3] is None else args[3]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 1.0 <= scale <= 8.0:
        raise models.field_error("script_args[3]", f"scale factor must be a number from 1 to 8, got {scale!r}")
    return int(overlap), upscaler, float(scale)


async def sd_upscale(request: web.Request, body: models.Img2ImgRequest) -> web.StreamResponse:
    """A1111's SD upscale script: the first init image upscaled, cut into tiles of width x height that overlap,
    every tile re-sampled as img2img (tile k with seed + k) and blended back; one picture per n_iter (seed + n).
    It runs as the `sd_upscale` workflow, the tiling inside ComfyUI."""
    state = request.app[STATE]
    engine = _engine(request)
    if body.mask:
        raise models.field_error("mask", "the sd upscale script re-samples the whole picture; send no mask")
    files = await upscale_model_files(engine)
    overlap, upscaler, scale = sd_upscale_args(list(body.script_args or []), files)
    inits, _ = await decode_request_images(request, body)
    background = opts.value(state.options, "img2img_background_color", body.override_settings)
    init = await image_io.run_in_pool(imaging.flatten, inits[0], _rgb(background))
    gen = await generation_for(request, body, is_img2img=True, scripts=("sd upscale",))
    tile_w, tile_h = gen.width // 8 * 8, gen.height // 8 * 8
    if overlap >= min(tile_w, tile_h):
        raise models.field_error("script_args[1]", f"tile overlap {overlap} must be smaller than the tile "
                                                   f"({tile_w}x{tile_h}: width x height)")
    if upscaler.kind == "none":
        size = init.size
    else:  # A1111's Upscaler.upscale: each side times the factor, down to a multiple of 8
        size = (int(init.width * scale // 8 * 8), int(init.height * scale // 8 * 8))
    if max(size) > 8192 or min(size) < 64:
        raise models.field_error("script_args[3]", f"the upscaled picture would be {size[0]}x{size[1]}; each side "
                                                   f"must be 64..8192")
    gen.extra["SD upscale overlap"] = overlap
    gen.extra["SD upscale upscaler"] = upscaler.name
    image = await image_io.run_in_pool(image_io.from_pil, init)
    base = job_params(gen, 0)
    base.update({PARAMS["denoising_strength"]: gen.denoising_strength, PARAMS["init_images"]: image,
                 "overlap": overlap, "upscaler": upscaler.kind, "upscale_width": size[0],
                 "upscale_height": size[1]})
    if upscaler.file:
        base["upscale_model"] = upscaler.file
    workflow = state.settings.sd_upscale_workflow
    seed = gen.seeds[0]
    submissions = [Submission(workflow, {**base, PARAMS["seed"]: seed + n},
                              meta={"dialect": "a1111", "index": n, "seed": seed + n}) for n in range(gen.n_iter)]
    check_features(engine, workflow, submissions[0].params)
    task, jobs = await run_task(request, "img2img", gen.job_timestamp, submissions)
    pngs, indices = await _read_images(engine, jobs, task.job_ids, size)
    first = gen_mod.infotext(gen, 0)
    body_info = gen_mod.info(gen, [0])
    body_info.update(infotexts=[first] * len(pngs), all_seeds=[seed + i for i in indices],
                     all_prompts=[gen.prompts[0]] * len(pngs), all_negative_prompts=[gen.negative_prompts[0]] * len(pngs),
                     all_subseeds=[gen.subseeds[0] + i for i in indices])
    full = {k: gen.options.get(k, v) for k, v in opts.defaults().items()}
    images = await answer_images(request, body, pngs, [first] * len(pngs), full)
    return await json_answer({"images": images, "parameters": models.parameters_echo(body),
                              "info": json.dumps(body_info, default=lambda o: None)})


def _rgb(colour: str) -> tuple[int, int, int]:
    text = str(colour or "#ffffff").lstrip("#")
    try:
        return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
    except ValueError:
        return 255, 255, 255


async def xyz_plot(request: web.Request, body: models.GenerationRequest, is_img2img: bool) -> web.StreamResponse:
    """A1111's X/Y/Z plot: every cell an ordinary request of the tab, all run as one task, answered with the grid
    first (see `xyz`)."""
    plot = xyz.read_script_args(list(body.script_args or []), is_img2img)
    raw = body.model_dump(exclude_unset=True)
    no_fixed = bool((list(body.script_args or []) + [False] * 13)[12])
    model = type(body)
    bodies = xyz.cell_requests(plot, raw, no_fixed)
    _axes_set(request.get(PASTED, set()), raw, bodies)
    cells = [models.parse_request(model, r) for r in bodies]
    limit = grid_limit(request, body)
    if is_img2img:
        prepared = await _prepare_img2img_cells(request, plot, cells, limit)  # type: ignore[arg-type]
    else:
        prepared = [await prepare_txt2img(request, c) for c in cells]
    # A1111's check, each cell at the size it comes back, then the grid as drawn (legend bands, margins): before
    # any job is queued
    await image_io.run_in_pool(xyz.check_grid_size, plot, [p.answer_size for p in prepared], limit)
    results = await run_prepared(request, "img2img" if is_img2img else "txt2img", prepared)
    firsts = [(p, pngs[0], indices[0]) for p, (pngs, indices) in zip(prepared, results) if pngs]
    if len(firsts) < len(prepared):
        # Interrupted or skipped cells leave holes a grid cannot show; the finished images come back alone.
        return await generation_response(request, body, prepared[0].gen, [f[1] for f in firsts],
                                         [0] * len(firsts))
    first = prepared[0].gen
    cell_texts = [gen_mod.infotext(p.gen, i) for p, _, i in firsts]
    full = _full_options(first)
    # A grid carries its infotext as it is made where the answer is a PNG with it: added afterwards, the grid was
    # decoded and encoded a second time.
    with_text = str(full["samples_format"]).lower() == "png" and bool(full["enable_pnginfo"])
    grid_text = cell_texts[0] if with_text else None
    cell_pngs = _Decoded([f[1] for f in firsts])

    def grids() -> tuple[bytes, list[bytes]]:
        top, subs = xyz.draw_plot(plot, cell_pngs)
        return _png(top, grid_text), [_png(s, grid_text) for s in subs] if plot.include_sub_grids else []

    top, subs = await image_io.run_in_pool(grids)
    pngs = [top] + (subs if plot.include_sub_grids else []) + ([f[1] for f in firsts] if plot.include_lone_images
                                                               else [])
    texts = [cell_texts[0]] * (1 + (len(subs) if plot.include_sub_grids else 0)) + (
        cell_texts if plot.include_lone_images else [])
    body_info = gen_mod.info(first, [0])
    body_info.update(infotexts=texts, index_of_first_image=len(pngs) - len(firsts) if plot.include_lone_images
                     else 0, all_seeds=[p.gen.seeds[i] for p, _, i in firsts],
                     all_prompts=[p.gen.prompts[i] for p, _, i in firsts])
    images = await answer_images(request, body, pngs, texts, full)
    return await json_answer({"images": images, "parameters": models.parameters_echo(body),
                              "info": json.dumps(body_info, default=lambda o: None)})


def _axes_set(pasted: set[str], raw: Mapping[str, Any], bodies: list[dict[str, Any]]) -> None:
    """Takes out of `pasted` what the plot's axes set: in the cells it is the axis's value, no longer the
    infotext's."""
    sent_settings = raw.get("override_settings") or {}
    for body in bodies:
        for key, value in body.items():
            if value == raw.get(key):
                continue
            pasted.discard(key)
            if key == "override_settings":
                for setting in (s for s in value or {} if value[s] != sent_settings.get(s)):
                    pasted -= {setting, f"override_settings.{setting}"}


async def _prepare_img2img_cells(request: web.Request, plot: xyz.Plot, cells: list[models.Img2ImgRequest],
                                 limit: float) -> list[Prepared]:
    """An img2img plot's cells made ready: the init images and mask decoded once for all, and A1111's grid check
    on what the cells generate before any picture is planned. A cell's result pasted back into the init picture
    comes back at that picture's size, known once planned: the cells share their plans, and each new plan (a Size
    axis makes one per size) is followed by the check again, the cells not yet planned counted at what they
    generate, so that plans past the limit are never all held. The caller checks the final sizes."""
    inputs = await img2img_inputs(request, cells[0])
    gens = [await img2img_generation(request, c, inputs) for c in cells]
    sizes = [g.output_size for g in gens]
    xyz.check_grid_size(plot, sizes, limit, drawn=False)
    prepared = []
    for i, (cell, gen) in enumerate(zip(cells, gens)):
        planned = len(inputs.plans)
        prepared.append(await img2img_jobs(request, cell, gen, inputs))
        sizes[i] = prepared[-1].answer_size
        if len(inputs.plans) > planned:
            xyz.check_grid_size(plot, sizes, limit, drawn=False)
    return prepared


class _Decoded(Sequence[Image.Image]):
    """Cell images opened as the grid takes them, each decoded as it is pasted: decoded all at once, every cell was
    held twice (as itself and in the grid)."""

    def __init__(self, pngs: list[bytes]) -> None:
        self.pngs = pngs

    def __len__(self) -> int:
        return len(self.pngs)

    @overload
    def __getitem__(self, index: int) -> Image.Image: ...

    @overload
    def __getitem__(self, index: slice) -> _Decoded: ...

    def __getitem__(self, index: int | slice) -> Image.Image | _Decoded:
        if isinstance(index, slice):
            return _Decoded(self.pngs[index])
        return gen_mod.open_built(self.pngs[index])


def _png(im: Image.Image, parameters: str | None = None) -> bytes:
    """`im` as PNG; with `parameters`, as `generation.png_with_infotext` writes it (which then keeps it)."""
    out = io.BytesIO()
    if parameters is None:
        im.save(out, format="PNG", compress_level=1)
    else:
        meta = PngImagePlugin.PngInfo()
        meta.add_text("parameters", parameters)
        im.save(out, format="PNG", pnginfo=meta, compress_level=4)
    return out.getvalue()


class ProgressState(BaseModel):
    skipped: bool
    interrupted: bool
    stopping_generation: bool
    job: str
    job_count: int
    job_timestamp: str
    job_no: int
    sampling_step: int
    sampling_steps: int


class ProgressAnswer(BaseModel):
    """A1111's ProgressResponse."""

    progress: float
    eta_relative: float
    state: ProgressState
    current_image: str | None
    textinfo: str | None


class ProgressQuery(BaseModel):
    skip_current_image: LooseBool = Field(False, description="true: no current_image in the answer.")


@a1111_endpoint(query=ProgressQuery, responses={200: ProgressAnswer})
async def progress(request: web.Request, query: ProgressQuery) -> web.StreamResponse:
    """Progress of the running generation (A1111 `/sdapi/v1/progress`); `current_image` is the newest live
    preview of the image being made (ComfyUI sends them when started with --preview-method)."""
    state = request.app[STATE]
    engine = _engine(request)
    task = await current_task(state, engine)
    base_state = {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "",
                  "job_count": 0, "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0}
    if task is None:
        return web.json_response({"progress": 0.0, "eta_relative": 0.0, "state": base_state,
                                  "current_image": None, "textinfo": None})
    # A slot of a task rebuilt from the store with no job is an image already finished.
    jobs = [await engine.find(j) if j else None for j in task.job_ids]
    job_count = max(1, len(jobs), task.size)
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
    current_image = None
    live = opts.value(state.options, "live_previews_enable") is not False
    wanted = current is not None and live and not query.skip_current_image
    found = await engine.latest_preview(current.id) if wanted and current is not None else None
    if found is not None:
        shown = {**opts.defaults(), **state.options}
        key = tuple(shown[k] for k in ("samples_format", "jpeg_quality", "webp_lossless"))
        cached = state.shown_preview
        if cached is None or cached[1] != key or cached[0] != found[1]:
            cached = state.shown_preview = (found[1], key, await image_io.run_in_pool(preview_image, found[1], shown))
        current_image = image_io.Base64(cached[2])
    return await json_answer({"progress": value, "eta_relative": max(0.0, eta - elapsed), "state": running_state,
                              "current_image": current_image, "textinfo": textinfo})


@a1111_endpoint(responses={200: Empty})
async def interrupt(request: web.Request) -> web.StreamResponse:
    """Stop the running generation; finished images are returned (A1111 `/sdapi/v1/interrupt`)."""
    state = request.app[STATE]
    engine = _engine(request)
    task = await current_task(state, engine)
    if task is not None:
        task.interrupted = True
        for job_id in await task.unfinished(engine):
            await engine.cancel(job_id)
    return web.json_response({})


@a1111_endpoint(responses={200: NULL})
async def skip(request: web.Request) -> web.StreamResponse:
    """Skip the image being generated and go on with the next (A1111 `/sdapi/v1/skip`)."""
    state = request.app[STATE]
    engine = _engine(request)
    task = await current_task(state, engine)
    pending = await task.unfinished(engine) if task is not None else []
    if pending:
        task.skipped = True
        await engine.cancel(pending[0])
    return web.json_response(None)


@a1111_endpoint(responses={200: Empty}, auth=False)
async def ping(request: web.Request) -> web.StreamResponse:
    """Liveness check for A1111 clients (A1111 `/internal/ping`)."""
    return web.json_response({})




ROUTES = (("GET", "progress", progress), ("POST", "interrupt", interrupt), ("POST", "skip", skip))
