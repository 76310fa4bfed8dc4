"""What an A1111 request generates: every default and rule applied (`Generation`), and the infotext and `info`
JSON A1111 writes for it."""
from __future__ import annotations

import io
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePath
from typing import Any

from PIL import Image

from bridge import samplers as a1111_samplers

from . import infotext as infotext_mod
from . import options as opts
from . import prompts as prompts_mod
from .models import API_VERSION, MAX_IMAGES_PER_REQUEST, MAX_SEED, A1111Error, GenerationRequest, field_error
from .styles import StyleBook

# ---------------------------------------------------------------------------------------------------------------
# Resolved generation settings


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

    @property
    def count(self) -> int:
        return self.batch_size * self.n_iter


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


def resolve_generation(req: GenerationRequest, *, checkpoint: str | None, live_samplers: list[str] | None,
                       live_schedulers: list[str] | None, is_img2img: bool, clip_skip: int = 1,
                       options: Mapping[str, Any] | None = None, styles: StyleBook | None = None,
                       lora_files: Sequence[str] = (), embeddings: Sequence[str] = (),
                       scripts: Sequence[str] = (), vae: str | None = None) -> Generation:
    """Apply A1111's defaults and rules; bad values raise A1111Error naming the field.

    `options` are the A1111 options in force for this request (stored values and `override_settings`);
    `lora_files`/`embeddings` what the backend has; `scripts` the script names the route runs itself.
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
    if batch_size * n_iter > MAX_IMAGES_PER_REQUEST:
        raise field_error("batch_size", f"batch_size x n_iter must be at most {MAX_IMAGES_PER_REQUEST}, "
                                        f"got {batch_size * n_iter}")
    steps = req.steps or 50
    width = req.width or 512
    height = req.height or 512
    cfg = 7.0 if req.cfg_scale is None else float(req.cfg_scale)
    denoise = req.denoising_strength

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
    model_prompts = [prompts_mod.with_embeddings(prompts_mod.take_networks(p)[0], list(embeddings))
                     for p in prompts]
    model_negatives = [prompts_mod.with_embeddings(prompts_mod.take_networks(n)[0], list(embeddings))
                       for n in negatives]

    sampler_name = req.sampler_name or req.sampler_index
    resolved = a1111_samplers.resolve(sampler_name, req.scheduler, live_samplers, live_schedulers)
    tiling = req.tiling if req.tiling is not None else bool(_option(options, "tiling"))

    return Generation(
        prompts=prompts, negative_prompts=negatives, seeds=seeds, subseeds=subseeds, sampler=resolved,
        steps=steps, cfg_scale=cfg, width=width, height=height, batch_size=batch_size, n_iter=n_iter,
        denoising_strength=denoise if is_img2img else None, checkpoint=checkpoint, clip_skip=clip_skip,
        job_timestamp=datetime.now().strftime("%Y%m%d%H%M%S"), styles=style_names, extra={},
        model_prompts=model_prompts, model_negative_prompts=model_negatives, loras=loras,
        subseed_strength=strength, seed_resize_from=seed_resize,
        seed_resize_request=(req.seed_resize_from_w if req.seed_resize_from_w is not None else -1,
                             req.seed_resize_from_h if req.seed_resize_from_h is not None else -1),
        tiling=bool(tiling), vae=vae, restore_faces=req.restore_faces, comments=comments, options=dict(options),
    )


# ---------------------------------------------------------------------------------------------------------------
# Infotext and info


def model_name(checkpoint: str | None) -> str | None:
    if not checkpoint:
        return None
    stem = checkpoint.rsplit(".", 1)[0] if "." in checkpoint else checkpoint
    return stem.replace("/", "_").replace("\\", "_")


def infotext(gen: Generation, index: int) -> str:
    """The image's `parameters` text, keys in A1111's order (its fixed list, then the extra parameters, then
    Version)."""
    options = gen.options
    variation = gen.subseed_strength != 0
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
        "Denoising strength": gen.denoising_strength,
        "Clip skip": gen.clip_skip if gen.clip_skip > 1 else None,
        "RNG": _option(options, "randn_source") if _option(options, "randn_source") != "GPU" else None,
        "Tiling": True if gen.tiling else None,
    }
    params.update(gen.extra)
    if _option(options, "add_version_to_infotext"):
        params["Version"] = API_VERSION
    return infotext_mod.write(gen.prompts[index], gen.negative_prompts[index], params)


def info(gen: Generation, indices: list[int]) -> dict[str, Any]:
    """`Processed.js()` keys, for the images actually returned (`indices` into the planned images)."""
    first = indices[0] if indices else 0
    extra = {"Schedule type": gen.sampler.scheduler_label, **gen.extra}
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


def png_with_infotext(png: bytes, text: str) -> bytes:
    """Re-save a PNG with A1111's `parameters` text chunk (what PNG Info and other tools read)."""
    from PIL import PngImagePlugin

    with Image.open(io.BytesIO(png)) as im:
        im.load()
        meta = PngImagePlugin.PngInfo()
        meta.add_text("parameters", text)
        out = io.BytesIO()
        im.save(out, format="PNG", pnginfo=meta, compress_level=4)
    return out.getvalue()


