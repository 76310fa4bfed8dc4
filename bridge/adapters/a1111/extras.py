"""A1111's extras routes: PNG Info (`/png-info`), upscaling one or many images (`/extra-single-image`,
`/extra-batch-images`) and `/interrogate`.

Upscaling runs as the `upscale` workflow, one job per image, with A1111's upscalers (Lanczos, Nearest, or an
upscale model of the backend followed by a Lanczos resize to the exact size) and its size rule: scale by
`upscaling_resize` rounded down to a multiple of 8, or to `upscaling_resize_w`x`_h` (cropped to exactly that size
with `upscaling_crop`); `upscaler_2` is blended over the first by its visibility. Interrogate runs a captioning
workflow (one per A1111 model, `A1111_INTERROGATE_WORKFLOWS`) on a backend that has its node pack.
"""
from __future__ import annotations

import html
import io
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from aiohttp import web
from PIL import Image
from pydantic import BaseModel, Field

from bridge import images as image_io
from bridge.engine import JobEngine
from bridge.errors import BridgeError, PayloadTooLarge
from bridge.fields import ImageData, Request
from bridge.http import json_answer

from ..toolkit import Submission, engine_of, settings_of
from . import imaging
from . import infotext as infotext_mod
from . import options as opts
from . import upscalers
from .catalog import backend_unavailable, upscale_model_files
from .dialect import A1111Error, a1111_endpoint, ensure_state, run_task
from .models import field_error

# ---------------------------------------------------------------------------------------------------------------
# Request and answer bodies


class PNGInfoRequest(Request):
    image: ImageData = Field(description="The image, base64 or a data URL.")


class PNGInfoAnswer(BaseModel):
    """The infotext the image carries, read back as A1111 parses it."""

    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


class InterrogateRequest(Request):
    image: ImageData | None = ""
    model: str | None = "clip"


class ExtrasBase(Request):
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
    image: ImageData | None = ""


class FileData(Request):
    data: ImageData
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


# png-info's `items` text, in characters: items past it are left out. Pillow reads up to 64 MB of text chunks
# (MAX_TEXT_MEMORY) from an image of a few kilobytes (compressed chunks), and JSON writes a control character in six:
# a 63 KB PNG made a 377 MB answer. A ComfyUI PNG's graphs (`prompt`, `workflow`) take tens to hundreds of KB.
PNG_INFO_ITEMS_MAX = 4 << 20


def _read_info(data: str, field: str, max_bytes: int, max_pixels: int) -> bytes:
    """png-info's answer as JSON, in the image pool: a text chunk holds up to a megabyte (Pillow's MAX_TEXT_CHUNK),
    which takes a good part of a second to read as an infotext, and the answer's text as long to write."""
    raw = image_io.decode_base64(data.strip(), field, max_bytes=max_bytes)
    image_io.read_header(raw, field, max_pixels=max_pixels)
    with Image.open(io.BytesIO(raw)) as img:
        img.load()  # text chunks after the pixels are read with them
        text, items = read_infotext(img)
    kept, room = {}, PNG_INFO_ITEMS_MAX
    for key, value in items.items():
        size = len(key) + (len(value) if isinstance(value, str) else 0)
        if size <= room:
            kept[key], room = value, room - size
    return json.dumps({"info": text, "items": kept, "parameters": infotext_mod.parse(text)}).encode()


@a1111_endpoint(body=PNGInfoRequest, responses={200: PNGInfoAnswer})
async def png_info(request: web.Request, body: PNGInfoRequest) -> web.StreamResponse:
    """The generation parameters an image carries (A1111 `/sdapi/v1/png-info`): `info` is the infotext,
    `parameters` its values as A1111 reads them back, `items` the image's other text and format values."""
    engine = engine_of(request)
    if not body.image.strip():
        raise field_error("image", "expected a base64-encoded image string", detail="Invalid encoded image")
    try:
        answer = await image_io.run_in_pool(_read_info, body.image, "image", engine.max_image_bytes,
                                            engine.max_image_pixels)
    except (OSError, ValueError, SyntaxError) as exc:
        raise field_error("image", f"image data is corrupt ({exc})", detail="Invalid encoded image") from None
    except BridgeError as exc:
        raise imaging.a1111_error(exc, "image") from None
    return web.Response(body=answer, content_type="application/json")


# ---------------------------------------------------------------------------------------------------------------
# Interrogate

# What each A1111 interrogate model needs on the backend, for the error that says what to install.
CAPTION_PACKS = {
    "clip": "the ComfyUI-Blip node pack (1038lab/ComfyUI-Blip: BlipCaption) and ComfyUI-Custom-Scripts "
            "(pythongosssss: ShowText|pysssss)",
    "deepdanbooru": "the ComfyUI-WD14-Tagger node pack (pythongosssss/ComfyUI-WD14-Tagger: WD14Tagger|pysssss)",
}


def _runnable(engine: JobEngine, workflow: str) -> tuple[bool, list[str]]:
    """Whether a healthy backend has every node of `workflow` (read from its /object_info), and the problems of
    those that lack something."""
    problems: list[str] = []
    for backend in engine.backend_states():
        if not backend.get("healthy"):
            continue
        found = (backend.get("workflow_problems") or {}).get(workflow)
        if not found:
            return True, []
        problems.extend(found)
    return False, problems


@a1111_endpoint(body=InterrogateRequest, responses={200: CaptionAnswer})
async def interrogate(request: web.Request, body: InterrogateRequest) -> web.StreamResponse:
    """Caption an image (A1111 `/sdapi/v1/interrogate`): model `clip` (a BLIP caption) or `deepdanbooru` (danbooru
    tags from the WD14 tagger), each run by its workflow on a backend that has the caption node pack; without one,
    A1111's 404 "Model not found" saying what to install on the backend."""
    engine = engine_of(request)
    workflows = ensure_state(request.app).settings.interrogate_workflows
    if body.model not in workflows:
        raise A1111Error(404, "Model not found")
    if body.image is None:
        raise A1111Error(404, "Image not found")
    workflow = workflows[body.model]
    try:
        engine.workflow(workflow)
    except BridgeError:
        raise A1111Error(404, f"Model not found: the workflow {workflow!r} for interrogate model {body.model!r} is "
                              f"not loaded", errors=f"model: no workflow {workflow!r}") from None
    ok, problems = _runnable(engine, workflow)
    if not ok:
        if not any(b.get("healthy") for b in engine.backend_states()):
            raise backend_unavailable()
        need = CAPTION_PACKS.get(body.model, "its caption nodes")
        raise A1111Error(404, f"Model not found: interrogate model {body.model!r} runs the workflow {workflow!r}, "
                              f"which needs {need} installed on the ComfyUI backend ({problems[0]})",
                         errors=f"model: no captioning nodes for {body.model!r} on the backend")
    limits = {"max_bytes": engine.max_image_bytes, "max_pixels": engine.max_image_pixels}
    await engine.check_room()  # before the image is fetched or decoded
    [(field, data)] = await image_io.probe_request([("image", body.image)], **limits, probe_one=imaging.probe_image,
                                                   fetch=imaging.url_fetcher(engine))
    image = await image_io.run_in_pool(lambda: image_io.from_pil(
        imaging.decode_image(data, field, **limits).convert("RGB")))
    _, jobs = await run_task(request, "extras", "", [Submission(workflow, {"image": image},
                                                                meta={"dialect": "a1111", "field": "image"})])
    if not jobs or jobs[0] is None:
        raise A1111Error(500, "", error="RuntimeError", errors="interrogate was interrupted")
    values = jobs[0].outputs.get("caption") or []
    caption = values[0] if values else ""
    while isinstance(caption, list):  # a node may report one list per image
        caption = caption[0] if caption else ""
    return web.json_response({"caption": str(caption)})


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


def _upscaler(name: str | None, files: list[str], field: str) -> upscalers.Upscaler | None:
    """The upscaler a field names (None for "None"), or a 400 naming the field and the choices."""
    if name in (None, "None"):
        return None
    found = upscalers.find(name, files, latent=False)
    if found is None:
        raise field_error(field, f"could not find upscaler named {name}; choose one of "
                                 f"{', '.join(upscalers.choices(files, latent=False))}")
    return found


def _restorer_check(body: ExtrasBase) -> None:
    # A1111 without its face restorer models fails when it tries to fetch them; no ComfyUI node runs them here.
    for field in ("gfpgan_visibility", "codeformer_visibility"):
        if (getattr(body, field) or 0) > 0:
            raise field_error(field, "no face restorer (GFPGAN, CodeFormer) runs on this server "
                                     "(/sdapi/v1/face-restorers is empty); send 0")


def source_chunks(img: Image.Image) -> dict[str, str]:
    """The text an extras input passes on to its answer, as A1111's run_postprocessing keeps `existing_pnginfo`:
    the image's own text items and its infotext (a text chunk or a JPEG/WebP UserComment) as `parameters`, so an
    upscaled picture still says how it was generated. At most PNG_INFO_ITEMS_MAX characters in all: a PNG of a few
    kilobytes can carry 64 MB of compressed text, which would come back uncompressed in every answer."""
    text, _ = read_infotext(img)
    found = {"parameters": text} if text else {}  # first: a large graph chunk must not crowd it out
    found.update({k: v for k, v in (img.info or {}).items()
                  if isinstance(k, str) and isinstance(v, str) and k not in infotext_mod.NOT_ITEMS})
    kept, room = {}, PNG_INFO_ITEMS_MAX
    for key, value in found.items():
        if len(key) + len(value) <= room:
            kept[key], room = value, room - len(key) - len(value)
    return kept


async def _upscaled(request: web.Request, body: ExtrasBase, images: list[tuple[str, str]]
                    ) -> tuple[list[image_io.Base64], str]:
    """Upscale each (field, base64) image; returns the answer's PNGs, each with its source's text and the
    `postprocessing` infotext A1111 writes for the step (with the `enable_pnginfo` option), and that infotext."""
    engine = engine_of(request)
    limits = {"max_bytes": engine.max_image_bytes, "max_pixels": engine.max_image_pixels}
    _restorer_check(body)
    files = await upscale_model_files(engine)
    first = _upscaler(body.upscaler_1 or "None", files, "upscaler_1")
    second = _upscaler(body.upscaler_2 or "None", files, "upscaler_2") if first is not None else None
    visibility = float(body.extras_upscaler_2_visibility or 0)
    if first is not None and images:  # it queues a job per image
        await engine.check_room()
    # Every image checked from its header, and all of them against the request's pixel budget, before any is
    # decoded; then decoded one at a time in the image pool.
    try:
        images = await image_io.probe_request(images, **limits, max_total=settings_of(request).max_request_pixels,
                                              probe_one=imaging.probe_image, fetch=imaging.url_fetcher(engine))
    except PayloadTooLarge as exc:
        raise field_error(exc.field or "imageList", exc.message.split(": ", 1)[-1], status=413) from None
    decoded = [await image_io.run_in_pool(imaging.decode_image, data, field, **limits) for field, data in images]
    with_text = opts.value(ensure_state(request.app).options, "enable_pnginfo") is not False
    sources = (await image_io.run_in_pool(lambda: [source_chunks(im) for im in decoded]) if with_text
               else [{} for _ in decoded])

    def chunks(source: dict[str, str], info: str) -> dict[str, str]:
        return {**source, "postprocessing": info} if with_text else {}

    if first is None:
        # A1111 skips the whole upscale step without an upscaler_1.
        return await image_io.run_in_pool(lambda: [image_io.Base64(_png(im, chunks(s, "")))
                                                   for im, s in zip(decoded, sources)]), ""
    workflow = ensure_state(request.app).settings.upscale_workflow
    submissions, crops = [], []
    encoded = await image_io.run_in_pool(lambda: [image_io.from_pil(im) for im in decoded])
    for (field, _), im, image in zip(images, decoded, encoded):
        w, h, _factor, crop = target_size(body, im.width, im.height)
        params: dict[str, Any] = {"image": image, "width": w, "height": h, "upscaler": first.kind}
        if first.file:
            params["upscale_model"] = first.file
        if second is not None and visibility > 0:
            params.update({"upscaler_2": second.kind, "visibility_2": visibility})
            if second.file:
                params["upscale_model_2"] = second.file
        submissions.append(Submission(workflow, params, meta={"dialect": "a1111", "field": field}))
        crops.append(crop)
    _, jobs = await run_task(request, "extras", "", submissions)
    # an interrupted image's job is None: the finished ones keep their own crop and text
    done = [(await engine.read_output(job, "images", 0), crop, source)
            for job, crop, source in zip(jobs, crops, sources) if job is not None]
    if body.resize_mode == 1:
        info = f"Postprocess upscale to: {body.upscaling_resize_w}x{body.upscaling_resize_h}"
        if body.upscaling_crop is not False:
            info += f", Postprocess crop to: {body.upscaling_resize_w}x{body.upscaling_resize_h}"
    else:
        # as A1111 writes the value its model gives: a float when sent (2.0), its unvalidated default 2 when not
        info = f"Postprocess upscale by: {2 if body.upscaling_resize is None else body.upscaling_resize}"
    info += f", Postprocess upscaler: {first.name}"
    if second is not None and visibility > 0:
        info += f", Postprocess upscaler 2: {second.name}"
    fit = body.resize_mode == 1
    return await image_io.run_in_pool(lambda: [_answer(p, c if fit else None, chunks(s, info))
                                               for p, c, s in done]), info


def _png(im: Image.Image, chunks: Mapping[str, str] | None = None) -> bytes:
    from PIL import PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    for key, value in (chunks or {}).items():
        meta.add_text(key, value)
    out = io.BytesIO()
    im.save(out, format="PNG", pnginfo=meta, compress_level=4)
    return out.getvalue()


def _answer(png: bytes, crop: tuple[int, int] | None, chunks: Mapping[str, str]) -> image_io.Base64:
    # encoded once, with exactly the answer's text: the stored output carries the bridge's own infotext
    # (BRIDGE_OUTPUT_METADATA), which is not what A1111 answers, with `enable_pnginfo` off too
    with Image.open(io.BytesIO(png)) as im:
        im.load()
        if crop:  # A1111 pastes the upscaled image centred on a black canvas of the asked size
            canvas = Image.new("RGB", crop)
            canvas.paste(im.convert("RGB"), ((crop[0] - im.width) // 2, (crop[1] - im.height) // 2))
            return image_io.Base64(_png(canvas, chunks))
        return image_io.Base64(_png(im, chunks))


@a1111_endpoint(body=ExtrasSingleRequest, responses={200: ExtrasSingleAnswer})
async def extra_single_image(request: web.Request, body: ExtrasSingleRequest) -> web.StreamResponse:
    """Upscale one image (A1111 `/sdapi/v1/extra-single-image`); upscaler "None" gives the image back."""
    encoded, info = await _upscaled(request, body, [("image", body.image or "")])
    return await json_answer({"html_info": html_info(info), "image": encoded[0]})


@a1111_endpoint(body=ExtrasBatchRequest, responses={200: ExtrasBatchAnswer})
async def extra_batch_images(request: web.Request, body: ExtrasBatchRequest) -> web.StreamResponse:
    """Upscale a list of images (A1111 `/sdapi/v1/extra-batch-images`), answered in the same order."""
    encoded, info = await _upscaled(request, body, [(f"imageList[{i}].data", f.data)
                                                    for i, f in enumerate(body.imageList)])
    return await json_answer({"html_info": html_info(info), "images": encoded})


ROUTES = (("POST", "png-info", png_info), ("POST", "interrogate", interrogate),
          ("POST", "extra-single-image", extra_single_image), ("POST", "extra-batch-images", extra_batch_images))
