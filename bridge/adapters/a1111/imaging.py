"""A1111's image steps in Pillow: decoding request images, resize modes, masks, "only masked" crops, the masked
content fill, and pasting results back (`modules/images.py`, `modules/masking.py`, `processing.py`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Awaitable, Callable
from typing import Any

from PIL import Image, ImageFilter, ImageOps

from bridge import images as image_io
from bridge.engine import JobEngine
from bridge.errors import BridgeError, PayloadTooLarge

from .models import A1111Error, field_error

# ---------------------------------------------------------------------------------------------------------------
# Images in requests


def _check_text(data: Any, field: str) -> None:
    if isinstance(data, bytes):  # fetched from a URL already
        return
    if not isinstance(data, str) or not data:
        raise field_error(field, "expected a base64-encoded image string", detail="Invalid encoded image")


def url_fetcher(engine: JobEngine) -> Callable[[Any, str], Awaitable[Any]]:
    """`probe_request`'s `fetch`: an image URL replaced by its bytes, as A1111 does with `api_enable_requests` on and
    `api_forbid_local_requests` on (its defaults): public addresses only, unless BRIDGE_OUTBOUND_ALLOW admits one."""
    async def fetch(value: Any, field: str) -> Any:
        try:
            return await engine.fetch_image(value, field)
        except BridgeError as exc:
            raise field_error(field, exc.message.removeprefix(f"{field}: "), detail="Invalid image url") from None
    return fetch


def a1111_error(exc: BridgeError, field: str) -> A1111Error:
    message = exc.message.removeprefix(f"{field}: ")
    if isinstance(exc, PayloadTooLarge):
        return field_error(field, message, status=413, detail="Image too large")
    return field_error(field, message, detail="Invalid encoded image")


def probe_image(data: Any, field: str, *, max_bytes: int, max_pixels: int) -> image_io.Header:
    """The checks that need no pixels (format, bytes, size): run on every image before any is decoded."""
    _check_text(data, field)
    try:
        return image_io.probe(data, field, max_bytes=max_bytes, max_pixels=max_pixels)
    except BridgeError as exc:
        raise a1111_error(exc, field) from None


def decode_image(data: Any, field: str, *, max_bytes: int = image_io.DEFAULT_MAX_BYTES,
                 max_pixels: int = image_io.DEFAULT_MAX_PIXELS) -> Image.Image:
    """Raw base64 or a `data:image/...;base64,` URL, as A1111's `decode_base64_to_image` takes them (upright, by
    its EXIF orientation), with the bridge's limits: a decompression bomb is a 413 naming the field."""
    _check_text(data, field)
    try:
        return image_io.open_image(data, field, max_bytes=max_bytes, max_pixels=max_pixels)[0]
    except BridgeError as exc:
        raise a1111_error(exc, field) from None


# A1111's crop and resize scales the whole picture to cover the target first; past this many times the target's
# pixels (a 16384x1 picture covering 512x512 was scaled to 8388608x512, 16 GiB) only the part that shows is scaled
COVER_LIMIT = 4


def _centre_of_scaled(im: Image.Image, src_w: int, src_h: int, width: int, height: int) -> Image.Image:
    """The centre `width` x `height` of `im` scaled to `src_w` x `src_h` (no smaller), as A1111's crop and resize
    pastes it. Where the scaled picture would be more than COVER_LIMIT times the target, Pillow's two passes are
    done one at a time over only the rows the vertical pass reads: the same pixels within 1-2 levels in RGB (Pillow
    orders its passes by cost, and a filter centre computed from a box rounds apart; a review measured 2 for
    4000x9 to 300x200), more in the colour of nearly transparent RGBA pixels, whose premultiplied colour rounds to
    few levels."""
    x0, y0 = src_w // 2 - width // 2, src_h // 2 - height // 2
    if src_w * src_h <= COVER_LIMIT * width * height:
        return im.resize((src_w, src_h), Image.LANCZOS).crop((x0, y0, x0 + width, y0 + height))
    mode = im.mode
    if mode == "RGBA":
        im = im.convert("RGBa")  # Pillow resamples premultiplied colours
    sx, sy = im.width / src_w, im.height / src_h
    reach = 3 * max(sy, 1.0) + 2  # Lanczos reads 3 source rows either side, more where it shrinks
    r0, r1 = max(0, math.floor(y0 * sy - reach)), min(im.height, math.ceil((y0 + height) * sy + reach))
    rows = im.crop((0, r0, im.width, r1)).resize((width, r1 - r0), Image.LANCZOS,
                                                 box=(x0 * sx, 0, (x0 + width) * sx, r1 - r0))
    out = rows.resize((width, height), Image.LANCZOS, box=(0, y0 * sy - r0, width, (y0 + height) * sy - r0))
    return out.convert(mode) if out.mode != mode else out


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
        return _centre_of_scaled(im, max(1, src_w), max(1, src_h), width, height)
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

