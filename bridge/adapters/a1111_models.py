"""A1111 request bodies, error bodies, infotext and `info` JSON: plain code with no aiohttp or engine in it.

Field lists and defaults follow A1111 1.10 (`modules/api/models.py` built from the processing dataclasses): no field
is required, unknown keys are ignored, `null` means "use the default".
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from . import a1111_samplers

API_VERSION = "pixart-a1111-1.10"
MAX_IMAGES_PER_REQUEST = 64
MAX_SEED = 4294967294  # A1111 draws random seeds from randrange(4294967294)


class A1111Error(Exception):
    """An error answered in A1111's shape `{error, detail, body, errors}`."""

    def __init__(self, status: int, detail: Any, *, error: str = "HTTPException", errors: str = "",
                 body: Any = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(errors or str(detail))
        self.status = status
        self.detail = detail
        self.error = error
        self.errors = errors
        self.body = body
        self.headers = headers or {}

    def to_json(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, "body": self.body, "errors": self.errors}


def field_error(field: str, message: str, status: int = 400, detail: str | None = None) -> A1111Error:
    """A bad value in a known field: A1111's body, with `errors` naming the field."""
    return A1111Error(status, detail or f"{field}: {message}", errors=f"{field}: {message}")


class _Common(BaseModel):
    # A1111's pydantic v1 models ignore unknown keys and accept every field under its own name.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    prompt: str | list[str] | None = ""
    negative_prompt: str | None = ""
    styles: list[str] | None = None
    seed: int | None = -1
    subseed: int | None = -1
    subseed_strength: float | None = 0
    seed_resize_from_h: int | None = -1
    seed_resize_from_w: int | None = -1
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int | None = 1
    n_iter: int | None = 1
    steps: int | None = 50
    cfg_scale: float | None = 7.0
    width: int | None = 512
    height: int | None = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool | None = False
    do_not_save_grid: bool | None = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool | None = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool | None = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    sampler_index: str | None = "Euler"
    script_name: str | None = None
    script_args: list[Any] | None = []
    send_images: bool | None = True
    save_images: bool | None = False
    alwayson_scripts: dict[str, Any] | None = {}
    force_task_id: str | None = None
    infotext: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_list_not_empty(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("prompt list is empty")
        return v


class Txt2ImgRequest(_Common):
    enable_hr: bool | None = False
    denoising_strength: float | None = 0.75
    firstphase_width: int | None = 0
    firstphase_height: int | None = 0
    hr_scale: float | None = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int | None = 0
    hr_resize_x: int | None = 0
    hr_resize_y: int | None = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | None = ""
    hr_negative_prompt: str | None = ""


class Img2ImgRequest(_Common):
    init_images: list[str] | None = None
    resize_mode: int | None = 0
    denoising_strength: float | None = 0.75
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int | None = 4
    mask_blur_y: int | None = 4
    mask_blur: int | None = None
    mask_round: bool | None = True
    inpainting_fill: int | None = 0
    inpaint_full_res: bool | None = True
    inpaint_full_res_padding: int | None = 0
    inpainting_mask_invert: int | None = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool | None = False


_V1_MESSAGES = {
    "int_type": ("value is not a valid integer", "type_error.integer"),
    "int_parsing": ("value is not a valid integer", "type_error.integer"),
    "int_from_float": ("value is not a valid integer", "type_error.integer"),
    "float_type": ("value is not a valid float", "type_error.float"),
    "float_parsing": ("value is not a valid float", "type_error.float"),
    "bool_type": ("value could not be parsed to a boolean", "type_error.bool"),
    "bool_parsing": ("value could not be parsed to a boolean", "type_error.bool"),
    "string_type": ("str type expected", "type_error.str"),
    "list_type": ("value is not a valid list", "type_error.list"),
    "dict_type": ("value is not a valid dict", "type_error.dict"),
}


def _validation_error(exc: ValidationError, body: Any) -> A1111Error:
    """FastAPI's 422 list under `detail` (what A1111 clients see) plus A1111's keys, `errors` naming fields."""
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not str(p).startswith(("str", "list[", "int", "float", "bool", "dict["))]
        # A `X | None` union reports one error per member; A1111 (pydantic v1) reports the field once.
        key = ".".join(loc)
        if key in seen:
            continue
        seen.add(key)
        msg, typ = _V1_MESSAGES.get(err["type"], (err["msg"], "value_error"))
        items.append({"loc": ["body", *loc], "msg": msg, "type": typ})
    text = "; ".join(f"{'.'.join(i['loc'][1:])}: {i['msg']}" for i in items)
    return A1111Error(422, items, error="RequestValidationError", errors=text, body=body)


def parse_request(model: type[_Common], body: Any) -> _Common:
    if not isinstance(body, dict):
        raise A1111Error(422, [{"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}],
                         error="RequestValidationError", errors="body: value is not a valid dict (a JSON object)")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _validation_error(exc, body) from None


def parse_json_body(raw: bytes) -> Any:
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise A1111Error(422, [{"loc": ["body", 0], "msg": "Expecting value", "type": "value_error.jsondecode"}],
                         error="RequestValidationError", errors=f"body: not valid JSON ({exc})") from None


def parameters_echo(req: _Common) -> dict[str, Any]:
    """The response's `parameters`: the request as parsed with defaults filled, as A1111 returns it."""
    data = req.model_dump()
    if isinstance(req, Img2ImgRequest) and not req.include_init_images:
        data["init_images"] = None
        data["mask"] = None
    return data


# ---------------------------------------------------------------------------------------------------------------
# Resolved generation settings


@dataclass
class Generation:
    """A request with every A1111 default and rule applied: what each image is generated with."""

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

    @property
    def count(self) -> int:
        return self.batch_size * self.n_iter


def _positive(name: str, value: int | None, default: int, low: int = 1, high: int | None = None) -> int:
    v = default if value is None else value
    if v < low or (high is not None and v > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise field_error(name, f"must be {bound}, got {v}")
    return v


def resolve_generation(req: _Common, *, checkpoint: str | None, live_samplers: list[str] | None,
                       live_schedulers: list[str] | None, is_img2img: bool,
                       max_steps: int = 150, max_size: int = 2048, clip_skip: int = 1) -> Generation:
    """Apply A1111's defaults and rules; bad values raise A1111Error naming the field."""
    if req.script_name:
        raise A1111Error(422, f"Script '{req.script_name}' not found")
    for name in (req.alwayson_scripts or {}):
        raise A1111Error(422, f"always on script {name} not found")

    batch_size = _positive("batch_size", req.batch_size, 1)
    n_iter = _positive("n_iter", req.n_iter, 1)
    if batch_size * n_iter > MAX_IMAGES_PER_REQUEST:
        raise field_error("batch_size", f"batch_size x n_iter must be at most {MAX_IMAGES_PER_REQUEST}, "
                                        f"got {batch_size * n_iter}")
    steps = _positive("steps", req.steps, 50, 1, max_steps)
    width = _positive("width", req.width, 512, 64, max_size)
    height = _positive("height", req.height, 512, 64, max_size)
    cfg = 7.0 if req.cfg_scale is None else float(req.cfg_scale)
    if not 0.0 <= cfg <= 30.0:
        raise field_error("cfg_scale", f"must be between 0 and 30, got {cfg}")
    denoise = req.denoising_strength
    if denoise is not None and not 0.0 <= denoise <= 1.0:
        raise field_error("denoising_strength", f"must be between 0 and 1, got {denoise}")

    count = batch_size * n_iter
    seed = req.seed
    if seed is None or seed == -1:
        seed = random.randrange(MAX_SEED)
    elif seed < 0:
        raise field_error("seed", f"must be -1 (random) or a non-negative integer, got {seed}")
    subseed = req.subseed
    if subseed is None or subseed == -1:
        subseed = random.randrange(MAX_SEED)
    # Image i of the job gets seed + i (A1111's numbering), and each runs as its own seed so that the seed in its
    # infotext reproduces it.
    seeds = [seed + i for i in range(count)]
    subseeds = [subseed + i for i in range(count)]

    if isinstance(req.prompt, list):
        prompts = [str(req.prompt[i % len(req.prompt)]) for i in range(count)]
    else:
        prompts = [req.prompt or ""] * count
    negative = req.negative_prompt or ""
    sampler_name = req.sampler_name or req.sampler_index
    resolved = a1111_samplers.resolve(sampler_name, req.scheduler, live_samplers, live_schedulers)

    return Generation(
        prompts=prompts, negative_prompts=[negative] * count, seeds=seeds, subseeds=subseeds, sampler=resolved,
        steps=steps, cfg_scale=cfg, width=width, height=height, batch_size=batch_size, n_iter=n_iter,
        denoising_strength=denoise if is_img2img else None, checkpoint=checkpoint, clip_skip=clip_skip,
        job_timestamp=datetime.now().strftime("%Y%m%d%H%M%S"), styles=list(req.styles or []), extra={},
    )


# ---------------------------------------------------------------------------------------------------------------
# Infotext and info


def _quote(value: Any) -> str:
    # A1111's `quote`: values with separators are JSON-quoted so the infotext parses back.
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def model_name(checkpoint: str | None) -> str | None:
    if not checkpoint:
        return None
    stem = checkpoint.rsplit(".", 1)[0] if "." in checkpoint else checkpoint
    return stem.replace("/", "_").replace("\\", "_")


def infotext(gen: Generation, index: int) -> str:
    params: dict[str, Any] = {
        "Steps": gen.steps,
        "Sampler": gen.sampler.sampler_name,
        "Schedule type": gen.sampler.scheduler_label,
        "CFG scale": gen.cfg_scale,
        "Seed": gen.seeds[index],
        "Size": f"{gen.width}x{gen.height}",
        "Model": model_name(gen.checkpoint),
        "Denoising strength": gen.denoising_strength,
        "Clip skip": gen.clip_skip if gen.clip_skip > 1 else None,
    }
    params.update(gen.extra)
    params["Version"] = API_VERSION
    line = ", ".join(f"{k}: {_quote(v)}" for k, v in params.items() if v is not None)
    negative = gen.negative_prompts[index]
    negative_line = f"\nNegative prompt: {negative}" if negative else ""
    return f"{gen.prompts[index]}{negative_line}\n{line}"


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
        "subseed_strength": 0,
        "width": gen.width,
        "height": gen.height,
        "sampler_name": gen.sampler.sampler_name,
        "cfg_scale": gen.cfg_scale,
        "steps": gen.steps,
        "batch_size": gen.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": model_name(gen.checkpoint),
        "sd_model_hash": None,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
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


# ---------------------------------------------------------------------------------------------------------------
# Images in requests


MAX_IMAGE_PIXELS = 4096 * 4096


def decode_image(data: Any, field: str) -> Image.Image:
    """Raw base64 or a `data:image/...;base64,` URL, as A1111's `decode_base64_to_image` takes them."""
    if not isinstance(data, str) or not data:
        raise field_error(field, "expected a base64-encoded image string", detail="Invalid encoded image")
    if data.startswith(("http://", "https://")):
        # A1111 refuses URLs unless api_enable_requests is on; fetching arbitrary URLs from the bridge is not offered.
        raise field_error(field, "image URLs are not accepted; send base64", detail="Requests not allowed")
    if data.startswith("data:"):
        data = data.split(";", 1)[1].split(",", 1)[1] if ";" in data and "," in data else ""
    try:
        raw = base64.b64decode(data, validate=False)
        im = Image.open(io.BytesIO(raw))
        if im.width * im.height > MAX_IMAGE_PIXELS:
            raise field_error(field, f"image is {im.width}x{im.height}, larger than allowed",
                              detail="Invalid encoded image")
        im.load()
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as exc:
        raise field_error(field, f"not a decodable image ({type(exc).__name__})",
                          detail="Invalid encoded image") from None
    return ImageOps.exif_transpose(im)


def resize_image(mode: int, im: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's `images.resize_image`: 0 just resize, 1 crop and resize, 2 resize and fill, 3 latent (as 0)."""
    im = im.convert("RGB") if im.mode not in ("RGB", "RGBA", "L") else im
    if mode in (0, 3):
        return im.resize((width, height), Image.LANCZOS)
    ratio = width / height
    src_ratio = im.width / im.height
    if mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = im.resize((max(1, src_w), max(1, src_h)), Image.LANCZOS)
        res = Image.new(im.mode, (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return res
    # mode 2: fit inside, then stretch the edge rows/columns into the empty bands (A1111's fill)
    src_w = width if ratio < src_ratio else im.width * height // im.height
    src_h = height if ratio >= src_ratio else im.height * width // im.width
    src_w, src_h = max(1, src_w), max(1, src_h)
    resized = im.resize((src_w, src_h), Image.LANCZOS)
    res = Image.new(im.mode, (width, height))
    res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        fill_h = height // 2 - src_h // 2
        if fill_h > 0:
            res.paste(resized.resize((width, fill_h), box=(0, 0, width, 0)), box=(0, 0))
            res.paste(resized.resize((width, fill_h), box=(0, resized.height, width, resized.height)),
                      box=(0, fill_h + src_h))
    elif ratio > src_ratio:
        fill_w = width // 2 - src_w // 2
        if fill_w > 0:
            res.paste(resized.resize((fill_w, height), box=(0, 0, 0, height)), box=(0, 0))
            res.paste(resized.resize((fill_w, height), box=(resized.width, 0, resized.width, height)),
                      box=(fill_w + src_w, 0))
    return res


def binary_mask(mask: Image.Image, round_mask: bool = True) -> Image.Image:
    """A1111's `create_binary_mask`: alpha of a (not fully opaque) RGBA mask, else luminance; white = repaint."""
    if mask.mode == "P":
        mask = mask.convert("RGBA")
    if mask.mode in ("RGBA", "LA") and mask.getchannel("A").getextrema() != (255, 255):
        m = mask.getchannel("A")
    else:
        m = mask.convert("L")
    return m.point(lambda v: 255 if v > 128 else 0) if round_mask else m


def blur_mask(mask: Image.Image, blur_x: int, blur_y: int) -> Image.Image:
    """A1111's separable mask blur: cv2.GaussianBlur with kernel 2*int(2.5*blur+0.5)+1 on each axis."""
    import cv2
    import numpy as np

    arr = np.asarray(mask.convert("L"))
    if blur_x > 0:
        k = 2 * int(2.5 * blur_x + 0.5) + 1
        arr = cv2.GaussianBlur(arr, (k, 1), blur_x)
    if blur_y > 0:
        k = 2 * int(2.5 * blur_y + 0.5) + 1
        arr = cv2.GaussianBlur(arr, (1, k), blur_y)
    return Image.fromarray(np.ascontiguousarray(arr))


def _grow_span(lo: int, hi: int, diff: int, limit: int) -> tuple[int, int]:
    """Grow [lo, hi) by diff, centred, then slide it back inside [0, limit) as A1111's expand_crop_region does."""
    lo -= diff // 2
    hi += diff - diff // 2
    if hi >= limit:
        lo -= hi - limit
        hi = limit
    if lo < 0:
        hi -= lo
        lo = 0
    return lo, min(hi, limit)


def mask_bbox(mask: Image.Image, padding: int, width: int, height: int) -> tuple[int, int, int, int] | None:
    """A1111's `get_crop_region` + `expand_crop_region`: the masked area plus padding, grown to width:height."""
    box = mask.point(lambda v: 255 if v > 0 else 0).getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    w, h = mask.size
    x1, y1, x2, y2 = max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, w), min(y2 + padding, h)
    ratio_crop = (x2 - x1) / max(1, (y2 - y1))
    ratio_proc = width / height
    if ratio_crop > ratio_proc:
        y1, y2 = _grow_span(y1, y2, int((x2 - x1) / ratio_proc - (y2 - y1)), h)
    else:
        x1, x2 = _grow_span(x1, x2, int((y2 - y1) * ratio_proc - (x2 - x1)), w)
    return x1, y1, x2, y2


# A1111's `inpainting_fill` values by index, as its infotext names them ("Masked content").
INPAINTING_FILLS = ("fill", "original", "latent noise", "latent nothing")
# The inpaint workflow's `fill` choice per `inpainting_fill`. Fill 0 is done in Pillow before upload
# (`fill_masked`), so the graph then keeps the pre-filled image as it is, like fill 1.
WORKFLOW_FILLS = ("original", "original", "latent noise", "latent nothing")


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's `masking.fill` (inpainting_fill=0): masked pixels replaced by ever-blurrier surrounding colour."""
    keep = ImageOps.invert(mask.convert("L"))
    # Blur in premultiplied alpha ("RGBa") so the empty masked area does not bleed black into the fill.
    premult = Image.new("RGBa", image.size)
    premult.paste(image.convert("RGBA").convert("RGBa"), mask=keep)
    base = Image.new("RGBA", image.size)
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = premult.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            base.alpha_composite(blurred)
    return base.convert("RGB")


def flatten(im: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """A1111's `images.flatten`: alpha composited onto img2img's background colour (white by default)."""
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        base.alpha_composite(rgba)
        return base.convert("RGB")
    return im.convert("RGB")


@dataclass
class InpaintPlan:
    """What one inpaint job gets, and how its result goes back into the picture (A1111's overlay/paste)."""

    image: Image.Image
    mask: Image.Image | None
    overlay: Image.Image | None = None
    paste: tuple[int, int, int, int] | None = None


def plan_img2img(init: Image.Image, mask: Image.Image | None, *, width: int, height: int, resize_mode: int,
                 mask_blur_x: int, mask_blur_y: int, mask_round: bool, invert: bool, fill: int,
                 full_res: bool, padding: int) -> InpaintPlan:
    """A1111's `StableDiffusionProcessingImg2Img.init` image/mask steps, in Pillow."""
    image = flatten(init)
    if mask is None:
        return InpaintPlan(resize_image(resize_mode, image, width, height), None)
    m = binary_mask(mask, mask_round)
    if invert:
        m = ImageOps.invert(m)
    m = blur_mask(m, mask_blur_x, mask_blur_y)
    crop = None
    if full_res:
        if m.size != image.size:
            m = m.resize(image.size, Image.LANCZOS)
        overlay_mask = m
        crop = mask_bbox(m, padding, width, height)
        job_mask = resize_image(2, m.crop(crop), width, height) if crop else m
    else:
        m = resize_image(resize_mode, m, width, height)
        image = resize_image(resize_mode, image, width, height)
        job_mask = m
        # A1111 doubles the blurred mask for the overlay so the original covers the feathered edge more.
        overlay_mask = m.point(lambda v: min(255, v * 2))
    if crop is None and full_res:
        # An empty mask in "only masked" mode: A1111 falls back to the whole picture.
        image = resize_image(resize_mode, image, width, height)
        job_mask = m.resize((width, height), Image.LANCZOS)
        overlay_mask = job_mask
    premult = Image.new("RGBa", image.size)
    premult.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(overlay_mask.convert("L")))
    overlay = premult.convert("RGBA")
    paste = None
    if crop is not None:
        x1, y1, x2, y2 = crop
        paste = (x1, y1, x2 - x1, y2 - y1)
        image = resize_image(2, image.crop(crop), width, height)
    if fill == 0:
        image = fill_masked(image, job_mask)
    return InpaintPlan(image, job_mask, overlay, paste)


def finish_img2img(result: Image.Image, plan: InpaintPlan) -> Image.Image:
    """A1111's `apply_overlay`: paste the crop back, then the untouched original over the unmasked area."""
    if plan.overlay is None:
        return result
    image = result.convert("RGB")
    if plan.paste is not None:
        x, y, w, h = plan.paste
        base = Image.new("RGBA", plan.overlay.size)
        base.paste(resize_image(1, image, w, h), (x, y))
        image = base
    out = image.convert("RGBA")
    if out.size != plan.overlay.size:
        out = out.resize(plan.overlay.size, Image.LANCZOS)
    out.alpha_composite(plan.overlay)
    return out.convert("RGB")
