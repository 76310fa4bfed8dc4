"""What an A1111 request generates: every default and rule applied (`Generation`), and the infotext and `info`
JSON A1111 writes for it."""
from __future__ import annotations

import io
import math
import random
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePath
from typing import Any

from PIL import Image

from bridge import samplers as a1111_samplers
from bridge.fields import SEED_MAX

from . import infotext as infotext_mod
from . import options as opts
from . import prompts as prompts_mod
from . import upscalers
from .models import API_VERSION, MAX_IMAGES_PER_REQUEST, MAX_SEED, A1111Error, GenerationRequest, field_error
from .styles import StyleBook
from .xyz import DRAWN_FACTOR, MAX_GRID_MP

# ---------------------------------------------------------------------------------------------------------------
# Resolved generation settings


# The largest side hires fix may upscale to (the txt2img_hires workflow's limit).
MAX_HIRES_SIZE = 4096


@dataclass
class Hires:
    """A1111's hires fix for one request: the upscale between the passes and the second pass."""

    upscaler: str | None  # as the request named it; None: A1111's default latent mode ("Latent")
    kind: str  # "latent" | "lanczos" | "nearest" | "model"
    latent_mode: str
    model_file: str | None
    width: int  # the size the first pass is upscaled to (A1111's hr_upscale_to_x/y, on the latent grid)
    height: int
    crop: tuple[int, int, int, int] | None  # (width, height, x, y) kept of the upscaled latent, in pixels
    steps: int
    second_pass_steps: int  # the request's hr_second_pass_steps (0: the first pass's steps)
    denoise: float
    sampler: a1111_samplers.Resolved
    sampler_named: str | None  # the request's hr_sampler_name
    scale: float
    resize: tuple[int, int]
    prompts: list[str] = field(default_factory=list)
    negative_prompts: list[str] = field(default_factory=list)
    model_prompts: list[str] = field(default_factory=list)
    model_negative_prompts: list[str] = field(default_factory=list)

    @property
    def output_size(self) -> tuple[int, int]:
        if self.crop is not None:
            return self.crop[0], self.crop[1]
        return self.width, self.height


@dataclass
class Generation:
    """A request with every A1111 default and rule applied: what each image is generated with.

    `prompts` are what the infotext shows (styles applied, comments removed, extra-network tags kept, as A1111
    writes them); `model_prompts` what the workflow encodes (tags taken out, embeddings named the ComfyUI way).
    """

    prompts: list[str]
    negative_prompts: list[str]
    seeds: list[int]
    subseeds: list[int]
    sampler: a1111_samplers.Resolved
    steps: int
    cfg_scale: float
    width: int
    height: int
    batch_size: int
    n_iter: int
    denoising_strength: float | None
    checkpoint: str | None
    clip_skip: int
    job_timestamp: str
    styles: list[str]
    extra: dict[str, Any]
    model_prompts: list[str] = field(default_factory=list)
    model_negative_prompts: list[str] = field(default_factory=list)
    loras: list[dict[str, Any]] = field(default_factory=list)
    subseed_strength: float = 0.0
    seed_resize_from: tuple[int, int] | None = None
    seed_resize_request: tuple[int, int] = (-1, -1)
    tiling: bool = False
    vae: str | None = None  # a VAE file of the backend; None: the checkpoint's own
    restore_faces: bool | None = None
    comments: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # the A1111 options in force (override_settings applied)
    hires: Hires | None = None
    noise_seed_delta: int = 0  # added to the seed of the sampler's own per-step noise (ENSD, where it applies)
    noise_multiplier: float = 1.0  # img2img's initial noise multiplier
    denoise_in_infotext: bool = False  # A1111 writes "Denoising strength" for img2img and hires fix only
    eta: float | None = None  # the request's eta (A1111 infotext and ENSD rules read it)

    @property
    def count(self) -> int:
        return self.batch_size * self.n_iter

    @property
    def output_size(self) -> tuple[int, int]:
        """The size of every image the request returns (the hires target with hires fix)."""
        if self.hires is not None:
            return self.hires.output_size
        return self.width // 8 * 8, self.height // 8 * 8


def _option(options: Mapping[str, Any], key: str) -> Any:
    return options.get(key, opts.defaults()[key])


def _apply_styles(styles: StyleBook | None, names: list[str], prompt: str, negative: str) -> tuple[str, str]:
    if not names:
        return prompt, negative
    if styles is None:
        return StyleBook("").apply(names, prompt, negative)
    try:
        return styles.apply(names, prompt, negative)
    except (OSError, ValueError) as exc:
        raise A1111Error(500, "", error=type(exc).__name__, errors=f"styles file: {exc}") from None


def image_count(req: GenerationRequest) -> int:
    """batch_size x n_iter, refused past MAX_IMAGES_PER_REQUEST: the one rule for every path that makes images, the
    upstream pass-through (Pico) too, which resolves no generation of its own."""
    count = (req.batch_size or 1) * (req.n_iter or 1)
    if count > MAX_IMAGES_PER_REQUEST:
        raise field_error("batch_size", f"batch_size x n_iter must be at most {MAX_IMAGES_PER_REQUEST}, got {count}")
    return count


def resolve_generation(req: GenerationRequest, *, checkpoint: str | None, live_samplers: list[str] | None,
                       live_schedulers: list[str] | None, is_img2img: bool, clip_skip: int = 1,
                       options: Mapping[str, Any] | None = None, styles: StyleBook | None = None,
                       lora_files: Sequence[str] = (), embeddings: Sequence[str] = (),
                       scripts: Sequence[str] = (), vae: str | None = None,
                       upscale_files: Sequence[str] = ()) -> Generation:
    """Apply A1111's defaults and rules; bad values raise A1111Error naming the field.

    `options` are the A1111 options in force for this request (stored values and `override_settings`);
    `lora_files`/`embeddings`/`upscale_files` what the backend has; `scripts` the script names the route runs
    itself.
    """
    options = options or {}
    if req.script_name and req.script_name.lower() not in scripts:
        raise A1111Error(422, f"Script '{req.script_name}' not found")
    for name in (req.alwayson_scripts or {}):
        raise A1111Error(422, f"always on script {name} not found")

    # Field limits were checked by the request model; what is left are A1111's defaults and the rules that
    # span fields.
    batch_size = req.batch_size or 1
    n_iter = req.n_iter or 1
    image_count(req)
    steps = req.steps or 50
    width = req.width or 512
    height = req.height or 512
    if not is_img2img and getattr(req, "enable_hr", False):
        # A1111's legacy firstphase size: it becomes the first pass, and hr_scale applies to it.
        for name in ("firstphase_width", "firstphase_height"):
            if 0 < (getattr(req, name, 0) or 0) < 64:  # the model bounds it above, as width
                raise field_error(name, f"must be 0 (the request's size) or at least 64, got {getattr(req, name)}")
        width = getattr(req, "firstphase_width", 0) or width
        height = getattr(req, "firstphase_height", 0) or height
    cfg = 7.0 if req.cfg_scale is None else float(req.cfg_scale)
    # A1111's default, for img2img and for txt2img's hires pass alike, where a request sends null
    denoise = 0.75 if req.denoising_strength is None else float(req.denoising_strength)

    count = batch_size * n_iter
    seed = req.seed
    if seed is None or seed == -1:
        seed = random.randrange(MAX_SEED)
    subseed = req.subseed
    if subseed is None or subseed == -1:
        subseed = random.randrange(MAX_SEED)
    strength = float(req.subseed_strength or 0.0)
    if not 0.0 <= strength <= 1.0:
        raise field_error("subseed_strength", f"must be between 0 and 1, got {strength}")
    # Image i gets seed + i (A1111's numbering) and runs as its own job, so the seed in its infotext reproduces
    # it; with a variation strength every image keeps the seed and the variation seed counts up instead.
    seeds = [seed + (i if strength == 0 else 0) for i in range(count)]
    subseeds = [subseed + i for i in range(count)]
    for name, first, drawn in (("seed", seed, seeds), ("subseed", subseed, subseeds if strength else [0])):
        if first <= SEED_MAX < drawn[-1]:  # named as sent: the client never sent the sum the workflow's check names
            raise field_error(name, f"{first} leaves no room for {count} images (seed + 0 .. seed + {count - 1}); "
                                    f"at most {SEED_MAX - count + 1} for this batch")
    resize_w, resize_h = req.seed_resize_from_w or 0, req.seed_resize_from_h or 0
    seed_resize = (resize_w, resize_h) if resize_w > 0 and resize_h > 0 else None

    if isinstance(req.prompt, list):
        base_prompts = [str(req.prompt[i % len(req.prompt)]) for i in range(count)]
    else:
        base_prompts = [req.prompt or ""] * count
    style_names = list(req.styles or [])
    prompts, negatives = [], []
    for text in base_prompts:
        prompt, negative = _apply_styles(styles, style_names, text, req.negative_prompt or "")
        if _option(options, "enable_prompt_comments"):
            prompt, negative = prompts_mod.strip_comments(prompt), prompts_mod.strip_comments(negative)
        sd_lora = _option(options, "sd_lora")
        if sd_lora and sd_lora != "None":
            prompt += f"<lora:{sd_lora}:{_option(options, 'extra_networks_default_multiplier')}>"
        prompts.append(prompt)
        negatives.append(negative)

    # A1111 activates the extra networks of the first prompt for the whole batch; every prompt loses its tags.
    _, networks = prompts_mod.take_networks(prompts[0])
    loras, missing = prompts_mod.lora_files(networks.loras, list(lora_files))
    comments = [f"Lora not found: {name}" for name in missing]
    if req.disable_extra_networks:
        loras = []
    model_prompts = prompts_mod.for_model(prompts, embeddings)
    model_negatives = prompts_mod.for_model(negatives, embeddings)

    for name, value in (("s_min_uncond", req.s_min_uncond), ("refiner_checkpoint", req.refiner_checkpoint)):
        if value not in (None, 0, 0.0, "", "None", "none"):
            what = ("skips the unconditional pass below a sigma, which ComfyUI's KSampler cannot" if name ==
                    "s_min_uncond" else "switches to a refiner checkpoint mid-sampling, which these workflows do not")
            raise field_error(name, f"{value!r} is not supported: it {what}; leave it unset")
    sampler_name = req.sampler_name or req.sampler_index
    eta_options = {"eta_ancestral": float(_option(options, "eta_ancestral")),
                   "eta_ddim": float(_option(options, "eta_ddim"))}
    try:
        resolved = a1111_samplers.resolve(sampler_name, req.scheduler, live_samplers, live_schedulers, steps=steps,
                                          eta=req.eta, **eta_options)
    except a1111_samplers.EtaError as exc:
        raise field_error(exc.field, str(exc)) from None
    tiling = req.tiling if req.tiling is not None else bool(_option(options, "tiling"))
    ensd = int(_option(options, "eta_noise_seed_delta") or 0)
    multiplier = 1.0
    if is_img2img:
        requested = getattr(req, "initial_noise_multiplier", None)
        multiplier = float(requested if requested is not None else _option(options, "initial_noise_multiplier"))

    gen = Generation(
        prompts=prompts, negative_prompts=negatives, seeds=seeds, subseeds=subseeds, sampler=resolved,
        steps=steps, cfg_scale=cfg, width=width, height=height, batch_size=batch_size, n_iter=n_iter,
        denoising_strength=denoise, checkpoint=checkpoint, clip_skip=clip_skip,
        job_timestamp=datetime.now().strftime("%Y%m%d%H%M%S"), styles=style_names, extra={},
        model_prompts=model_prompts, model_negative_prompts=model_negatives, loras=loras,
        subseed_strength=strength, seed_resize_from=seed_resize,
        seed_resize_request=(req.seed_resize_from_w if req.seed_resize_from_w is not None else -1,
                             req.seed_resize_from_h if req.seed_resize_from_h is not None else -1),
        tiling=bool(tiling), vae=vae, restore_faces=req.restore_faces, comments=comments, options=dict(options),
        noise_seed_delta=ensd if resolved.ensd_noise else 0, noise_multiplier=multiplier,
        denoise_in_infotext=is_img2img, eta=req.eta,
    )
    if not is_img2img:
        if getattr(req, "enable_hr", False):
            gen.hires = resolve_hires(req, gen, live_samplers, live_schedulers, eta_options, styles, embeddings,
                                      upscale_files)
            gen.denoise_in_infotext = True
            if gen.hires.sampler.ensd_noise:
                # One offset serves both passes (it only moves the seed of per-step noise): the hires sampler's
                # noise is A1111's re-seeded one as well.
                gen.noise_seed_delta = ensd
    if resolved.eta_key:
        gen.extra[resolved.eta_key] = resolved.eta
    if multiplier != 1.0:
        gen.extra["Noise multiplier"] = multiplier
    return gen


def _bounded(side: float) -> int:
    return int(min(max(side, -1e9), 1e9)) if math.isfinite(side) else -1


def _hr_scale(req: GenerationRequest) -> float:
    # only null means A1111's default: `or 2.0` ran hr_scale 0 at twice the size, where A1111 (and -1 here) fails
    scale = getattr(req, "hr_scale", None)
    return 2.0 if scale is None else float(scale)


def _hires_target(req: GenerationRequest, width: int, height: int) -> tuple[int, int, int, int]:
    """A1111's calculate_target_resolution: (upscale_to_x, upscale_to_y, truncate_x, truncate_y)."""
    rx, ry = int(getattr(req, "hr_resize_x", 0) or 0), int(getattr(req, "hr_resize_y", 0) or 0)
    if rx == 0 and ry == 0:
        scale = _hr_scale(req)
        # int() of an infinite size (hr_scale 1e308) raises; any size past the limit is refused the same way
        return _bounded(width * scale), _bounded(height * scale), 0, 0
    if ry == 0:
        return rx, rx * height // width, 0, 0
    if rx == 0:
        return ry * width // height, ry, 0, 0
    if width / height < rx / ry:
        to_x, to_y = rx, rx * height // width
    else:
        to_x, to_y = ry * width // height, ry
    return to_x, to_y, (to_x - rx) // 8, (to_y - ry) // 8


def resolve_hires(req: GenerationRequest, gen: Generation, live_samplers: list[str] | None,
                  live_schedulers: list[str] | None, eta_options: dict[str, float], styles: StyleBook | None,
                  embeddings: Sequence[str], upscale_files: Sequence[str]) -> Hires:
    """The hires fix A1111 1.10 runs for this request (`StableDiffusionProcessingTxt2Img.init`), its infotext keys
    in `gen.extra` in A1111's order."""
    name = getattr(req, "hr_upscaler", None)
    if name is None:
        kind, mode, file = "latent", "Latent", None
    else:
        found = upscalers.find(name, list(upscale_files), latent=True)
        if found is None:
            raise field_error("hr_upscaler", f"could not find upscaler named {name!r}; choose one of "
                                             f"{', '.join(upscalers.choices(list(upscale_files), latent=True))}")
        # A1111's "None" upscaler resizes the decoded first pass with Lanczos.
        kind = {"none": "lanczos"}.get(found.kind, found.kind)
        mode = found.name if found.kind == "latent" else "Latent"
        file = found.file
    if getattr(req, "firstpass_image", None):  # A1111 would skip the first pass and upscale this image
        raise field_error("firstpass_image", "a first-pass image for the hires fix is not supported: the hires pass "
                                             "runs on this request's own first pass; leave it unset")
    checkpoint = getattr(req, "hr_checkpoint_name", None)
    if checkpoint not in (None, "", "Use same checkpoint") and checkpoint not in (gen.checkpoint,
                                                                                  model_name(gen.checkpoint)):
        raise field_error("hr_checkpoint_name", f"{checkpoint!r}: a second checkpoint for the hires pass is not "
                                                f"supported; leave it unset or 'Use same checkpoint'")
    to_x, to_y, trunc_x, trunc_y = _hires_target(req, gen.width, gen.height)
    if not (8 <= to_x <= MAX_HIRES_SIZE and 8 <= to_y <= MAX_HIRES_SIZE):
        field = "hr_scale" if not (getattr(req, "hr_resize_x", 0) or getattr(req, "hr_resize_y", 0)) else \
            "hr_resize_x"
        scale = _hr_scale(req)
        size = "beyond any number" if field == "hr_scale" and not math.isfinite(gen.width * scale) else \
            f"{to_x}x{to_y}"
        raise field_error(field, f"the hires size would be {size}; each side must be 8..{MAX_HIRES_SIZE}")
    lat_w, lat_h = to_x // 8, to_y // 8
    crop = None
    if trunc_x or trunc_y:
        crop = ((lat_w - trunc_x) * 8, (lat_h - trunc_y) * 8, trunc_x // 2 * 8, trunc_y // 2 * 8)
    second = int(getattr(req, "hr_second_pass_steps", 0) or 0)
    if second < 0:
        raise field_error("hr_second_pass_steps", f"must be 0 or more, got {second}")
    # "Use same ...": what A1111's own form sends (its API passes the words on and fails the request)
    hr_sampler_name = _unless_same(getattr(req, "hr_sampler_name", None), infotext_mod.SAME_SAMPLER)
    hr_scheduler = _unless_same(getattr(req, "hr_scheduler", None), infotext_mod.SAME_SCHEDULER) or req.scheduler
    steps = second or gen.steps
    try:
        sampler = a1111_samplers.resolve(hr_sampler_name or req.sampler_name or req.sampler_index, hr_scheduler,
                                         live_samplers, live_schedulers, steps=steps, eta=req.eta, **eta_options)
    except a1111_samplers.EtaError as exc:
        raise field_error(exc.field, str(exc)) from None
    hires = Hires(upscaler=name, kind=kind, latent_mode=mode, model_file=file, width=lat_w * 8, height=lat_h * 8,
                  crop=crop, steps=steps, second_pass_steps=second, denoise=float(gen.denoising_strength or 0),
                  sampler=sampler, sampler_named=hr_sampler_name, scale=_hr_scale(req),
                  resize=(int(getattr(req, "hr_resize_x", 0) or 0), int(getattr(req, "hr_resize_y", 0) or 0)))
    # Second-pass prompts: the request's hr_prompt (styles applied, as A1111's setup_prompts), else the prompt.
    hr_prompt, hr_negative = getattr(req, "hr_prompt", "") or "", getattr(req, "hr_negative_prompt", "") or ""
    for i in range(gen.count):
        base = hr_prompt if hr_prompt else (req.prompt[i % len(req.prompt)] if isinstance(req.prompt, list)
                                            else req.prompt or "")
        prompt, negative = _apply_styles(styles, gen.styles, base, hr_negative or req.negative_prompt or "")
        if _option(gen.options, "enable_prompt_comments"):
            prompt, negative = prompts_mod.strip_comments(prompt), prompts_mod.strip_comments(negative)
        hires.prompts.append(prompt if hr_prompt else gen.prompts[i])
        hires.negative_prompts.append(negative if hr_negative else gen.negative_prompts[i])
    hires.model_prompts = prompts_mod.for_model(hires.prompts, embeddings)
    hires.model_negative_prompts = prompts_mod.for_model(hires.negative_prompts, embeddings)
    if hr_sampler_name is not None and sampler.sampler_name != gen.sampler.sampler_name:
        gen.extra["Hires sampler"] = sampler.sampler_name
    if sampler.scheduler_label != gen.sampler.scheduler_label:
        gen.extra["Hires schedule type"] = sampler.scheduler_label
    if hires.resize == (0, 0):
        gen.extra["Hires upscale"] = hires.scale
    else:
        gen.extra["Hires resize"] = f"{hires.resize[0]}x{hires.resize[1]}"
    if second:
        gen.extra["Hires steps"] = second
    if name is not None:
        gen.extra["Hires upscaler"] = name
    return hires


def _unless_same(value: str | None, same: str) -> str | None:
    return None if value == same else value


# ---------------------------------------------------------------------------------------------------------------
# Infotext and info


def model_name(checkpoint: str | None) -> str | None:
    if not checkpoint:
        return None
    stem = checkpoint.rsplit(".", 1)[0] if "." in checkpoint else checkpoint
    return stem.replace("/", "_").replace("\\", "_")


def _uses_ensd(gen: Generation) -> bool:
    """A1111's is_sampler_using_eta_noise_seed_delta: the sampler's `uses_ensd` option, unless its eta is 0."""
    sampler = a1111_samplers.by_name(gen.sampler.sampler_name)
    eta = gen.eta if gen.eta is not None else (gen.sampler.eta if gen.sampler.eta is not None else 1.0)
    return bool(sampler and sampler.options.get("uses_ensd")) and eta != 0


def hires_prompt_params(gen: Generation, index: int) -> dict[str, Any]:
    """The infotext's "Hires prompt"/"Hires negative prompt": written only where they differ from the prompts."""
    h = gen.hires
    if h is None:
        return {}
    return {"Hires prompt": h.prompts[index] if h.prompts[index] != gen.prompts[index] else None,
            "Hires negative prompt": h.negative_prompts[index]
            if h.negative_prompts[index] != gen.negative_prompts[index] else None}


def infotext(gen: Generation, index: int) -> str:
    """The image's `parameters` text, keys in A1111's order (its fixed list, then the extra parameters, then
    Version)."""
    options = gen.options
    variation = gen.subseed_strength != 0
    ensd = int(_option(options, "eta_noise_seed_delta") or 0)
    params: dict[str, Any] = {
        "Steps": gen.steps,
        "Sampler": gen.sampler.sampler_name,
        "Schedule type": gen.sampler.scheduler_label,
        "CFG scale": gen.cfg_scale,
        "Seed": gen.seeds[index],
        "Size": f"{gen.width}x{gen.height}",
        "Model": model_name(gen.checkpoint) if _option(options, "add_model_name_to_info") else None,
        "VAE": PurePath(gen.vae).name if gen.vae and _option(options, "add_vae_name_to_info") else None,
        "Variation seed": gen.subseeds[index] if variation else None,
        "Variation seed strength": gen.subseed_strength if variation else None,
        "Seed resize from": f"{gen.seed_resize_from[0]}x{gen.seed_resize_from[1]}" if gen.seed_resize_from
        else None,
        "Denoising strength": gen.denoising_strength if gen.denoise_in_infotext else None,
        "Clip skip": gen.clip_skip if gen.clip_skip > 1 else None,
        "ENSD": ensd if ensd and _uses_ensd(gen) else None,
        "RNG": _option(options, "randn_source") if _option(options, "randn_source") != "GPU" else None,
        "Tiling": True if gen.tiling else None,
    }
    # A1111 puts the hires keys in at init, the per-image hires prompts right after "Hires sampler".
    extra = dict(gen.extra)
    if gen.hires is not None:
        if "Hires sampler" in extra:
            params["Hires sampler"] = extra.pop("Hires sampler")
        params.update(hires_prompt_params(gen, index))
    params.update(extra)
    if _option(options, "add_version_to_infotext"):
        params["Version"] = API_VERSION
    return infotext_mod.write(gen.prompts[index], gen.negative_prompts[index], params)


def info(gen: Generation, indices: list[int]) -> dict[str, Any]:
    """`Processed.js()` keys, for the images actually returned (`indices` into the planned images)."""
    first = indices[0] if indices else 0
    extra: dict[str, Any] = {"Schedule type": gen.sampler.scheduler_label}
    if gen.denoise_in_infotext:
        extra["Denoising strength"] = gen.denoising_strength
    if gen.hires is not None:
        # A1111 keeps callables for the per-image hires prompts here; JSON shows them as null.
        extra.update({k: gen.extra[k] for k in gen.extra if k == "Hires sampler"})
        extra.update({"Hires prompt": None, "Hires negative prompt": None})
    extra.update(gen.extra)
    return {
        "prompt": gen.prompts[first],
        "all_prompts": [gen.prompts[i] for i in indices],
        "negative_prompt": gen.negative_prompts[first],
        "all_negative_prompts": [gen.negative_prompts[i] for i in indices],
        "seed": gen.seeds[first],
        "all_seeds": [gen.seeds[i] for i in indices],
        "subseed": gen.subseeds[first],
        "all_subseeds": [gen.subseeds[i] for i in indices],
        "subseed_strength": gen.subseed_strength,
        "width": gen.width,
        "height": gen.height,
        "sampler_name": gen.sampler.sampler_name,
        "cfg_scale": gen.cfg_scale,
        "steps": gen.steps,
        "batch_size": gen.batch_size,
        "restore_faces": gen.restore_faces,
        "face_restoration_model": None,
        "sd_model_name": model_name(gen.checkpoint),
        "sd_model_hash": None,
        "sd_vae_name": PurePath(gen.vae).stem if gen.vae else None,
        "sd_vae_hash": None,
        "seed_resize_from_w": gen.seed_resize_request[0],
        "seed_resize_from_h": gen.seed_resize_request[1],
        "denoising_strength": gen.denoising_strength,
        "extra_generation_params": extra,
        "index_of_first_image": 0,
        "infotexts": [infotext(gen, i) for i in indices],
        "styles": gen.styles,
        "job_timestamp": gen.job_timestamp,
        "clip_skip": gen.clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": API_VERSION,
    }


# The largest picture the bridge opens past Pillow's decompression-bomb limit (89.5 MP warns, 179 MP raises): what
# it assembles itself, an x/y/z grid, is refused before it runs above this.
BUILT_MAX_PIXELS = int(DRAWN_FACTOR * MAX_GRID_MP * 1_000_000)


def open_built(data: bytes) -> Image.Image:
    """A PNG the bridge or its backend made, whose size was bounded before it was asked for, opened without Pillow's
    decompression-bomb check up to BUILT_MAX_PIXELS (an x/y/z grid below A1111's 200 MP can be above Pillow's 179
    MP: it was a 500 after every job had run). Anything else opens as `Image.open` opens it, with Pillow's limit."""
    from PIL import PngImagePlugin

    try:
        im = PngImagePlugin.PngImageFile(io.BytesIO(data))
    except (SyntaxError, IndexError, TypeError, struct.error):
        return Image.open(io.BytesIO(data))
    if im.width * im.height > BUILT_MAX_PIXELS:
        im.close()
        return Image.open(io.BytesIO(data))
    return im


def png_with_infotext(png: bytes, text: str) -> bytes:
    """Re-save a PNG with A1111's `parameters` text chunk (what PNG Info and other tools read)."""
    from PIL import PngImagePlugin

    with open_built(png) as im:
        if im.info.get("parameters") == text:  # made with it (an x/y/z grid): kept as it is, not decoded again
            return png
        im.load()
        meta = PngImagePlugin.PngInfo()
        meta.add_text("parameters", text)
        out = io.BytesIO()
        im.save(out, format="PNG", pnginfo=meta, compress_level=4)
    return out.getvalue()


