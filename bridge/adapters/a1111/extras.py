"""A1111's extras routes: PNG Info (`/png-info`), upscaling one or many images (`/extra-single-image`,
`/extra-batch-images`) and `/interrogate`.

Upscaling runs as the `upscale` workflow (Lanczos or Nearest) or `upscale_model` (an upscale model file of the
backend), each image one job, with A1111's size rule: scale by `upscaling_resize` rounded down to a multiple of 8,
or to `upscaling_resize_w`x`_h` (cropped to exactly that size with `upscaling_crop`).
"""
from __future__ import annotations

import base64
import html
import io
from typing import Annotated, Any, Literal

from aiohttp import web
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from bridge import images as image_io
from bridge.errors import BridgeError

from ..toolkit import Submission, engine_of
from . import imaging
from . import infotext as infotext_mod
from . import upscalers
from .catalog import upscale_model_files
from .dialect import A1111Error, a1111_endpoint, run_task
from .models import field_error

# ---------------------------------------------------------------------------------------------------------------
# Request and answer bodies


class PNGInfoRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    image: str = Field(description="The image, base64 or a data URL.")


class PNGInfoAnswer(BaseModel):
    """The infotext the image carries, read back as A1111 parses it."""

    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


class InterrogateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    image: str | None = ""
    model: str | None = "clip"


class ExtrasBase(BaseModel):
    model_config = ConfigDict(extra="ignore")

    resize_mode: Literal[0, 1] | None = 0
    show_extras_results: bool | None = True
    gfpgan_visibility: Annotated[float, Field(ge=0, le=1)] | None = 0
    codeformer_visibility: Annotated[float, Field(ge=0, le=1)] | None = 0
    codeformer_weight: Annotated[float, Field(ge=0, le=1)] | None = 0
    upscaling_resize: Annotated[float, Field(gt=0, le=8)] | None = 2
    upscaling_resize_w: Annotated[int, Field(ge=1, le=8192)] | None = 512
    upscaling_resize_h: Annotated[int, Field(ge=1, le=8192)] | None = 512
    upscaling_crop: bool | None = True
    upscaler_1: str | None = "None"
    upscaler_2: str | None = "None"
    extras_upscaler_2_visibility: Annotated[float, Field(ge=0, le=1)] | None = 0
    upscale_first: bool | None = False


class ExtrasSingleRequest(ExtrasBase):
    image: str | None = ""


class FileData(BaseModel):
    data: str
    name: str


class ExtrasBatchRequest(ExtrasBase):
    imageList: Annotated[list[FileData], Field(max_length=64)]  # noqa: N815 - A1111's field name


class ExtrasSingleAnswer(BaseModel):
    html_info: str
    image: str


class ExtrasBatchAnswer(BaseModel):
    html_info: str
    images: list[str]


class CaptionAnswer(BaseModel):
    caption: str


# ---------------------------------------------------------------------------------------------------------------
# PNG Info


def read_infotext(img: Image.Image) -> tuple[str, dict[str, Any]]:
    """A1111's read_info_from_image: the `parameters` text chunk, or the EXIF UserComment of a JPEG/WebP, or a
    GIF's comment; and the remaining `info` items."""
    info = dict(img.info or {})
    text = info.pop("parameters", None)
    comment = _exif_user_comment(img)
    if comment:
        text = comment
    elif "comment" in info and text is None:
        raw = info["comment"]
        text = raw.decode("utf-8", "ignore") if isinstance(raw, bytes) else str(raw)
    return (text or ""), infotext_mod.items(info)


def _exif_user_comment(img: Image.Image) -> str | None:
    try:
        exif = img.getexif().get_ifd(0x8769)
    except Exception:  # noqa: BLE001 - a broken EXIF block means no comment, as for A1111's piexif
        return None
    raw = exif.get(0x9286)
    if not isinstance(raw, bytes) or len(raw) < 8:
        return raw if isinstance(raw, str) and raw else None
    code, body = raw[:8], raw[8:]
    if code.startswith(b"UNICODE"):
        # The EXIF 2.3 text type has no byte order; A1111 (piexif) writes big-endian, some tools little-endian.
        be = body.decode("utf-16-be", "ignore")
        le = body.decode("utf-16-le", "ignore")
        return be if sum(c.isprintable() for c in be) >= sum(c.isprintable() for c in le) else le
    return body.decode("utf-8" if code.startswith(b"ASCII") else "latin-1", "ignore").rstrip("\0")


def user_comment(text: str) -> bytes:
    """`text` as an EXIF UserComment, the way A1111 writes the infotext into JPEG and WebP answers."""
    return b"UNICODE\0" + text.encode("utf-16-be")


def _open_for_info(data: str, field: str, max_bytes: int, max_pixels: int) -> tuple[str, dict[str, Any]]:
    raw = image_io.decode_base64(data.strip(), field, max_bytes=max_bytes)
    image_io.read_header(raw, field, max_pixels=max_pixels)
    with Image.open(io.BytesIO(raw)) as img:
        img.load()  # text chunks after the pixels are read with them
        return read_infotext(img)


@a1111_endpoint(body=PNGInfoRequest, responses={200: PNGInfoAnswer})
async def png_info(request: web.Request, body: PNGInfoRequest) -> web.StreamResponse:
    """The generation parameters an image carries (A1111 `/sdapi/v1/png-info`): `info` is the infotext,
    `parameters` its values as A1111 reads them back, `items` the image's other text and format values."""
    engine = engine_of(request)
    if not body.image.strip():
        raise field_error("image", "expected a base64-encoded image string", detail="Invalid encoded image")
    try:
        text, items = await image_io.run_in_pool(_open_for_info, body.image, "image", engine.max_image_bytes,
                                                 engine.max_image_pixels)
    except (OSError, ValueError, SyntaxError) as exc:
        raise field_error("image", f"image data is corrupt ({exc})", detail="Invalid encoded image") from None
    except BridgeError as exc:
        raise imaging.a1111_error(exc, "image") from None
    return web.json_response({"info": text, "items": items, "parameters": infotext_mod.parse(text)})


# ---------------------------------------------------------------------------------------------------------------
# Interrogate

CAPTION_NODES = ("WD14Tagger|pysssss",)


@a1111_endpoint(body=InterrogateRequest, responses={200: CaptionAnswer})
async def interrogate(request: web.Request, body: InterrogateRequest) -> web.StreamResponse:
    """Caption an image (A1111 `/sdapi/v1/interrogate`, models `clip` and `deepdanbooru`). ComfyUI core has no
    captioning model: the route answers A1111's 404 "Model not found", saying what to install on the backend."""
    if body.model not in ("clip", "deepdanbooru"):
        raise A1111Error(404, "Model not found")
    if body.image is None:
        raise A1111Error(404, "Image not found")
    # A1111's answer for a captioning model it does not have, with what to install.
    raise A1111Error(404, "Model not found: interrogate needs a captioning model on the ComfyUI backend, which core "
                          "ComfyUI does not have; install a tagger node pack there (e.g. ComfyUI-WD14-Tagger) and "
                          "serve a workflow for it through POST /workflows/{name}",
                     errors=f"model: no captioning model for {body.model!r} on the backend")


# ---------------------------------------------------------------------------------------------------------------
# Upscaling


def html_info(text: str) -> str:
    """A1111's plaintext_to_html: escaped lines joined with <br>, in one paragraph."""
    return "<p>" + "<br>\n".join(html.escape(line) for line in text.split("\n")) + "</p>" if text else "<p></p>"


def target_size(body: ExtrasBase, width: int, height: int) -> tuple[int, int, float, tuple[int, int] | None]:
    """(upscaled width, height, factor, crop box size or None) by A1111's rule."""
    if body.resize_mode == 1:
        w_t, h_t = int(body.upscaling_resize_w or 512), int(body.upscaling_resize_h or 512)
        factor = max(w_t / width, h_t / height)
        crop = (w_t, h_t) if body.upscaling_crop is not False else None
    else:
        factor = float(body.upscaling_resize or 2)
        crop = None
    # A1111's upscalers round the target down to a multiple of 8.
    return max(8, int(width * factor) // 8 * 8), max(8, int(height * factor) // 8 * 8), factor, crop


async def _upscaled(request: web.Request, body: ExtrasBase, images: list[tuple[str, str]]) -> tuple[list[bytes], str]:
    """Upscale each (field, base64) image; returns PNGs and the infotext A1111 writes for the step."""
    engine = engine_of(request)
    limits = {"max_bytes": engine.max_image_bytes, "max_pixels": engine.max_image_pixels}
    name = body.upscaler_1 or "None"
    images = await imaging.fetch_urls(engine, images)
    for field, data in images:  # every image is checked before any is decoded
        imaging.probe_image(data, field, **limits)
    decoded = await image_io.run_in_pool(lambda: [imaging.decode_image(data, field, **limits)
                                                  for field, data in images])
    if name == "None":
        return await image_io.run_in_pool(lambda: [_png(im) for im in decoded]), ""
    files = await upscale_model_files(engine)
    up = upscalers.find(name, files, latent=False)
    if up is None:
        raise field_error("upscaler_1", f"could not find upscaler named {name}; choose one of "
                                        f"{', '.join(upscalers.choices(files, latent=False))}")
    submissions, crops = [], []
    for (field, _), im in zip(images, decoded):
        w, h, factor, crop = target_size(body, im.width, im.height)
        params: dict[str, Any] = {"image": image_io.from_pil(im), "width": w, "height": h}
        if up.kind == "model":
            params["upscale_model"] = up.file
            workflow = "upscale_model"
        else:
            params["method"] = up.kind
            workflow = "upscale"
        submissions.append(Submission(workflow, params, meta={"dialect": "a1111", "field": field}))
        crops.append(crop)
    _, jobs = await run_task(request, "extras", "", submissions)
    pngs = [await engine.read_output(job, "images", 0) for job in jobs if job is not None]
    if body.resize_mode == 1:
        info = f"Postprocess upscale to: {body.upscaling_resize_w}x{body.upscaling_resize_h}"
        if body.upscaling_crop is not False:
            info += f", Postprocess crop to: {body.upscaling_resize_w}x{body.upscaling_resize_h}"
        pngs = await image_io.run_in_pool(lambda: [_crop_centre(p, c) if c else p for p, c in zip(pngs, crops)])
    else:
        info = f"Postprocess upscale by: {_num(body.upscaling_resize)}"
    return pngs, f"{info}, Postprocess upscaler: {up.name}"


def _num(value: float | None) -> str:
    value = 2 if value is None else value
    return str(int(value)) if float(value).is_integer() else str(value)


def _crop_centre(png: bytes, size: tuple[int, int]) -> bytes:
    # A1111 pastes the upscaled image centred on a black canvas of the asked size.
    with Image.open(io.BytesIO(png)) as im:
        canvas = Image.new("RGB", size)
        canvas.paste(im.convert("RGB"), ((size[0] - im.width) // 2, (size[1] - im.height) // 2))
        return _png(canvas)


def _png(im: Image.Image, text: str | None = None) -> bytes:
    from PIL import PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    if text:
        meta.add_text("postprocessing", text)
    out = io.BytesIO()
    im.save(out, format="PNG", pnginfo=meta, compress_level=4)
    return out.getvalue()


def _with_info(png: bytes, text: str) -> str:
    if text:
        with Image.open(io.BytesIO(png)) as im:
            im.load()
            png = _png(im, text)
    return base64.b64encode(png).decode("ascii")


def _check_unsupported(body: ExtrasBase) -> None:
    if (body.upscaler_2 or "None") != "None" and (body.extras_upscaler_2_visibility or 0) > 0:
        raise field_error("upscaler_2", "a second upscaler is not offered; leave upscaler_2 None or its "
                                        "visibility 0")


@a1111_endpoint(body=ExtrasSingleRequest, responses={200: ExtrasSingleAnswer})
async def extra_single_image(request: web.Request, body: ExtrasSingleRequest) -> web.StreamResponse:
    """Upscale one image (A1111 `/sdapi/v1/extra-single-image`); upscaler "None" gives the image back."""
    _check_unsupported(body)
    pngs, info = await _upscaled(request, body, [("image", body.image or "")])
    encoded = await image_io.run_in_pool(_with_info, pngs[0], info)
    return web.json_response({"html_info": html_info(info), "image": encoded})


@a1111_endpoint(body=ExtrasBatchRequest, responses={200: ExtrasBatchAnswer})
async def extra_batch_images(request: web.Request, body: ExtrasBatchRequest) -> web.StreamResponse:
    """Upscale a list of images (A1111 `/sdapi/v1/extra-batch-images`), answered in the same order."""
    _check_unsupported(body)
    pngs, info = await _upscaled(request, body, [(f"imageList[{i}].data", f.data)
                                                 for i, f in enumerate(body.imageList)])
    encoded = await image_io.run_in_pool(lambda: [_with_info(p, info) for p in pngs])
    return web.json_response({"html_info": html_info(info), "images": encoded})


ROUTES = (("POST", "png-info", png_info), ("POST", "interrogate", interrogate),
          ("POST", "extra-single-image", extra_single_image), ("POST", "extra-batch-images", extra_batch_images))
