"""Pico LCD endpoint: an A1111 txt2img request answered with raw RGB565 pixels for a small SPI panel.

`POST /pico/sdapi/v1/txt2img` (and `/sdapi/v1/txt2img` itself in Pico mode) takes the A1111 txt2img body. The image
is generated and converted inside ComfyUI by the `pico_rgb565` workflow (txt2img graph + the pack's RGB565 node), or,
when an upstream A1111 URL is configured, generated there and converted here with the same packing code
(`pixart_nodes.core.rgb565`), as the original Pico proxy did.

The answer is the frame as bytes (`application/octet-stream`, `X-Image-*` headers) or A1111-style JSON with the
frame base64-encoded, chosen by `?format=`, then the `Accept` header, then the configured default. LCD settings
(size, inversion, byte order, resize mode, dithering) can be overridden per request with query parameters
(`lcd_width`, `lcd_height`, `invert`, `byte_order`, `resize_mode`, `dither`) or a `pico` object in the body.
"""
from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import aiohttp
import numpy as np
from aiohttp import web
from PIL import Image, UnidentifiedImageError
from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic_settings import SettingsConfigDict

from bridge import images as image_io
from bridge import jsontext
from bridge.api import BodyError, parse_json
from bridge.config import AdapterSettings
from bridge.errors import BridgeError, quote
from bridge.fields import LooseBool, LooseInt, describe
from bridge.http import json_answer, json_payload
from bridge.keys import ADAPTERS, SETTINGS
from bridge.outbound import AnswerTooLarge, read_capped

from ..toolkit import Submission, engine_of
from . import models
from .dialect import DIALECT, PREFIX, A1111Error, Handler, a1111_endpoint, ensure_state, run_task
from .generation import Generation, image_count
from .routes import (GenerationAnswer, check_features, checkpoint_for, generation_for, job_params, names_pasted,
                     partial_image, with_infotext)

log = logging.getLogger("bridge.adapters.pico")

PATH = "/pico/sdapi/v1/txt2img"
BYTE_ORDERS = {"be": "big", "le": "little", "big": "big", "little": "little"}
RESIZE_MODES = ("stretch", "letterbox", "crop")
FORMATS = ("binary", "json")
MAX_LCD_SIDE = 1024


class PicoSettings(AdapterSettings):
    """Pico adapter settings (environment `PICO_*`, or `--set PICO_...=...`)."""

    model_config = SettingsConfigDict(env_prefix="PICO_", extra="ignore", env_file_encoding="utf-8",
                                      populate_by_name=True)

    mode: bool = Field(False, description="Pico mode: /sdapi/v1/txt2img itself answers in RGB565, so an "
                                          "unmodified Pico client pointed at the bridge works.")
    width: int = Field(240, ge=1, le=MAX_LCD_SIDE, description="LCD width in pixels.")
    height: int = Field(240, ge=1, le=MAX_LCD_SIDE, description="LCD height in pixels.")
    invert: bool = Field(False, description="Invert the data (255 - value); only for firmware without INVON.")
    byte_order: Literal["be", "le"] = Field("be", description="be = high byte first (ST7789 drivers); le = "
                                                              "native uint16 buffer.")
    resize_mode: Literal["stretch", "letterbox", "crop"] = Field("stretch", description="How the picture is "
                                                                                        "fitted to the LCD.")
    dither: bool = Field(False, description="Ordered dithering before packing to 565.")
    default_format: Literal["binary", "json"] = Field("binary", description="Answer when neither ?format= nor "
                                                                            "Accept decides.")
    workflow: str = Field("pico_rgb565", description="Workflow that generates and converts.")
    cache: bool = Field(True, description="Cache converted frames of deterministic (fixed-seed) requests.")
    cache_dir: Path | None = Field(None, description="Cache directory (default: <BRIDGE_DATA_DIR>/pico_cache).")
    cache_max_mb: float = Field(64.0, ge=0, description="Cache size limit on disk in MiB; oldest used go first.")
    upstream_url: str = Field("", description="Upstream A1111 base URL (e.g. http://host:7860); set: the Pico "
                                              "endpoint forwards there instead of ComfyUI.")
    upstream_username: str = Field("", description="Basic auth user for the upstream A1111.")
    upstream_password: str = Field("", repr=False, description="Basic auth password for the upstream A1111.")
    upstream_timeout: float = Field(120.0, gt=0, description="Seconds to wait for the upstream A1111.")
    upstream_retries: int = Field(2, ge=0, le=10, description="Extra attempts after a connection error or a "
                                                              "502/503/504 from the upstream.")

    @field_validator("upstream_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


@dataclass(frozen=True)
class LcdOptions:
    width: int
    height: int
    invert: bool
    byte_order: str  # "be" | "le"
    resize_mode: str
    dither: bool

    @property
    def frame_size(self) -> int:
        return self.width * self.height * 2

    @property
    def format_name(self) -> str:
        return f"rgb565-{self.byte_order}"


def _byte_order(value: Any) -> Any:
    key = str(value).strip().lower().removeprefix("rgb565-")
    return "be" if BYTE_ORDERS.get(key) == "big" else "le" if BYTE_ORDERS.get(key) == "little" else value


_LCD_TYPES: dict[str, TypeAdapter[Any]] = {
    "width": TypeAdapter(Annotated[LooseInt, Field(ge=1, le=MAX_LCD_SIDE)]),
    "height": TypeAdapter(Annotated[LooseInt, Field(ge=1, le=MAX_LCD_SIDE)]),
    "invert": TypeAdapter(LooseBool),
    "dither": TypeAdapter(LooseBool),
    "byte_order": TypeAdapter(Annotated[Literal["be", "le"], BeforeValidator(_byte_order)]),
    "resize_mode": TypeAdapter(Literal["stretch", "letterbox", "crop"]),
}


def _checked(key: str, name: str, value: Any) -> Any:
    """One LCD option through its shared field type; an error names the field as the client sent it."""
    try:
        return _LCD_TYPES[key].validate_python(value)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise models.field_error(name, describe(err, name).removeprefix(f"{name} ")) from None


def lcd_options(settings: PicoSettings, query: dict[str, str], body_opts: Any) -> LcdOptions:
    """Configured LCD settings with per-request overrides: query parameters win over the body's `pico` object."""
    if body_opts is not None and not isinstance(body_opts, dict):
        raise models.field_error("pico", "must be an object")
    body_opts = body_opts or {}
    merged: dict[str, tuple[str, Any]] = {}
    for key in ("width", "height", "invert", "byte_order", "resize_mode", "dither"):
        if key in body_opts:
            merged[key] = (f"pico.{key}", body_opts[key])
    for key, qkey in (("width", "lcd_width"), ("height", "lcd_height"), ("invert", "invert"),
                      ("byte_order", "byte_order"), ("resize_mode", "resize_mode"), ("dither", "dither")):
        if qkey in query:
            merged[key] = (qkey, query[qkey])
    values = {key: _checked(key, name, value) for key, (name, value) in merged.items()}
    width = values.get("width", settings.width)
    height = values.get("height", settings.height)
    invert = values.get("invert", settings.invert)
    dither = values.get("dither", settings.dither)
    byte_order = values.get("byte_order", settings.byte_order)
    resize_mode = values.get("resize_mode", settings.resize_mode)
    return LcdOptions(width, height, invert, byte_order, resize_mode, dither)


def choose_format(query: dict[str, str], accept: str, default: str) -> str:
    """`?format=` first, then an Accept header that asks for exactly one of the two, then the default."""
    if "format" in query:
        fmt = query["format"].strip().lower()
        aliases = {"raw": "binary", "bin": "binary", "binary": "binary", "octet-stream": "binary", "json": "json"}
        if fmt not in aliases:
            raise models.field_error("format", f"must be binary or json, got {quote(query['format'])}")
        return aliases[fmt]
    accept = accept.lower()
    wants_binary = "application/octet-stream" in accept
    wants_json = "application/json" in accept
    if wants_binary != wants_json:
        return "binary" if wants_binary else "json"
    return default


# ---------------------------------------------------------------------------------------------------------------
# Conversion (upstream path; the ComfyUI path runs the same code inside the RGB565 node)


def convert_png(png: bytes, opts: LcdOptions, max_pixels: int = image_io.DEFAULT_MAX_PIXELS) -> bytes:
    """Decoded image -> LCD frame with exactly the node's steps: flatten alpha on black, fit, pack. An image of
    more than `max_pixels` is refused from its header (a 230 KB upstream PNG of 9000x9000 took 900 MB)."""
    from pixart_nodes.core import rgb565

    image_io.read_header(png, "images", max_pixels=max_pixels)
    with Image.open(io.BytesIO(png)) as im:
        arr = np.asarray(im.convert("RGBA") if im.mode in ("RGBA", "LA", "P") else im.convert("RGB"))
    flat = rgb565.composite(arr, None, "#000000")
    framed = rgb565.fit(flat, opts.width, opts.height, opts.resize_mode, "#000000")
    return rgb565.to_rgb565(framed, byte_order=BYTE_ORDERS[opts.byte_order], invert=opts.invert,
                            dither=opts.dither)


# ---------------------------------------------------------------------------------------------------------------
# Cache


class FrameCache:
    """Frames of deterministic requests on disk, keyed by a hash of the whole request; oldest-used evicted."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    @staticmethod
    def key(payload: dict[str, Any]) -> str:
        return jsontext.digest(payload, sort_keys=True, default=str)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.rgb565"

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        _touch(path)
        return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self._path(key).with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, self._path(key))
        self._evict()

    def _evict(self) -> None:
        entries = []
        for path in self.directory.glob("*.rgb565"):
            try:
                st = path.stat()
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            try:
                path.unlink()
                total -= size
            except OSError:
                pass


def _touch(path: Path) -> None:
    # A hit refreshes the mtime so eviction drops the least recently used frames first.
    try:
        os.utime(path)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------------------------
# Upstream A1111


class UpstreamError(A1111Error):
    def __init__(self, message: str) -> None:
        super().__init__(502, message, error="UpstreamError", errors=message)


# The most images an upstream answer may hold: as many as a request may ask for, and A1111's grid. Each becomes a
# frame of up to 2 MB (1024x1024 RGB565), and the answer's own limits admit 20,000 images of one pixel (92 bytes each
# in base64): 40 GB of frames.
MAX_UPSTREAM_IMAGES = models.MAX_IMAGES_PER_REQUEST + 1

# An upstream answer is read up to this many bytes (many times a batch of LCD-sized images in base64): an upstream
# that never ended its answer grew the bridge by 3.9 GB in 5 s.
UPSTREAM_ANSWER_BYTES = 64 * 1024 * 1024


async def _read_answer(resp: aiohttp.ClientResponse, url: str) -> bytes:
    try:
        return await read_capped(resp, UPSTREAM_ANSWER_BYTES)
    except AnswerTooLarge as exc:
        raise UpstreamError(f"upstream A1111 at {url} answered {exc}") from None


def _upstream_images(raw: bytes, url: str, max_bytes: int) -> list[bytes]:
    """The images of an upstream txt2img answer, each decoded a piece at a time (run it in the image pool)."""
    try:
        # its own limits too: a 64 MiB answer of `[],` would hold the interpreter lock for seconds
        images = parse_json(raw)["images"]
        if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
            raise ValueError("no images in the answer")
        if len(images) > MAX_UPSTREAM_IMAGES:
            raise ValueError(f"{len(images)} images in the answer, more than the {MAX_UPSTREAM_IMAGES} a request "
                             f"can make")
        return [image_io.decode_base64(i, f"images[{n}]", max_bytes=max_bytes) for n, i in enumerate(images)]
    except BridgeError as exc:
        raise UpstreamError(f"upstream A1111 at {url} sent an unusable image: {exc.message}") from None
    except (BodyError, ValueError, KeyError, TypeError) as exc:
        raise UpstreamError(f"upstream A1111 at {url} sent an unusable answer: {exc}") from None


async def fetch_upstream(settings: PicoSettings, body: dict[str, Any], max_bytes: int) -> list[bytes]:
    """POST the txt2img body to the upstream A1111 and return its images (decoded from base64, at most
    `max_bytes` each)."""
    url = f"{settings.upstream_url}/sdapi/v1/txt2img"
    auth = (aiohttp.BasicAuth(settings.upstream_username, settings.upstream_password)
            if settings.upstream_username else None)
    timeout = aiohttp.ClientTimeout(total=settings.upstream_timeout)
    last = ""
    for attempt in range(settings.upstream_retries + 1):
        if attempt:
            await asyncio.sleep(min(0.5 * attempt, 5.0))
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.post(url, data=json_payload(body), auth=auth) as resp:
                    if resp.status != 200:
                        text = (await resp.content.read(300)).decode("utf-8", "replace")
                        last = f"upstream A1111 at {url} answered {resp.status}: {text}"
                        if resp.status in (502, 503, 504):
                            continue
                        raise UpstreamError(last)
                    raw = await _read_answer(resp, url)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            last = f"upstream A1111 at {url} unreachable: {type(exc).__name__} {exc}".strip()
            continue
        return await image_io.run_in_pool(_upstream_images, raw, url, max_bytes)
    raise UpstreamError(last + (f" (after {settings.upstream_retries + 1} attempts)" if settings.upstream_retries
                                else ""))


# ---------------------------------------------------------------------------------------------------------------
# Handler


@dataclass
class PicoState:
    settings: PicoSettings
    cache: FrameCache | None


STATE = web.AppKey("pico_state", PicoState)


class PicoTxt2ImgRequest(models.Txt2ImgRequest):
    """An A1111 txt2img body, plus optional LCD settings (query parameters win over them)."""

    # Unknown keys are kept: with an upstream A1111 the body is forwarded as the client sent it.
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    pico: dict[str, Any] | None = Field(None, description="width, height, invert, byte_order (be|le), "
                                                          "resize_mode (stretch|letterbox|crop), dither")


def workflow_params(gen: Generation, index: int, opts: LcdOptions) -> dict[str, Any]:
    params = job_params(gen, index)
    params.update({"lcd_width": opts.width, "lcd_height": opts.height, "invert": opts.invert,
                   "byte_order": BYTE_ORDERS[opts.byte_order], "resize_mode": opts.resize_mode,
                   "dither": opts.dither})
    return params


async def _generate_comfy(request: web.Request, gen: Generation, opts: LcdOptions) -> list[bytes]:
    state = request.app[STATE]
    engine = engine_of(request)
    if gen.hires is not None:
        raise models.field_error("enable_hr", f"the Pico workflow {state.settings.workflow!r} has no hires pass; "
                                              "send enable_hr false")
    submissions = [Submission(state.settings.workflow, workflow_params(gen, i, opts),
                              meta={"dialect": "pico", "index": i, "seed": gen.seeds[i]}) for i in range(gen.count)]
    check_features(engine, state.settings.workflow, submissions[0].params)
    task, jobs = await run_task(request, "txt2img", gen.job_timestamp, submissions)
    frames = []
    for index, job in enumerate(jobs):
        if job is None:
            # Skipped or interrupted: A1111 returns the picture as far as it got, so the frame is made from the
            # image's newest live preview (none when the job never reached its sampler).
            found = await engine.latest_preview(task.job_ids[index]) if index < len(task.job_ids) else None
            if found is not None:
                png = await image_io.run_in_pool(partial_image, found, *gen.output_size)
                frames.append(await image_io.run_in_pool(convert_png, png, opts))
            continue
        values = job.outputs.get("rgb565") or []
        if not values:
            raise A1111Error(500, "", error="RuntimeError", errors="the pico workflow returned no RGB565 frame")
        value = values[0]
        text = value[0] if isinstance(value, list) else value
        # A 1024x1024 frame is 2.8 MB of base64: sixteen of them decoded here held the event loop 63 ms.
        frame = await image_io.run_small(lambda: base64.b64decode(text),
                                         len(text) if isinstance(text, (str, bytes)) else 0)
        if len(frame) != opts.frame_size:
            raise A1111Error(500, "", error="RuntimeError",
                             errors=f"RGB565 frame has {len(frame)} bytes, expected {opts.frame_size}")
        frames.append(frame)
    return frames


FRAME_HEADERS = {"X-Image-Width": {"schema": {"type": "integer"}}, "X-Image-Height": {"schema": {"type": "integer"}},
                 "X-Image-Format": {"schema": {"enum": ["rgb565-be", "rgb565-le"]}},
                 "X-Pico-Cache": {"schema": {"enum": ["hit", "miss"]}}}


PICO_ANSWER = {
    "description": "One RGB565 frame (binary), or A1111-style JSON with the frames base64-encoded (format=json).",
    "headers": FRAME_HEADERS,
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": GenerationAnswer}}}


@names_pasted
async def pico_txt2img(request: web.Request, body: PicoTxt2ImgRequest) -> web.StreamResponse:
    """Text to image answered as RGB565 for a Pico LCD (binary or A1111-style JSON)."""
    state = request.app[STATE]
    settings = state.settings
    query = DIALECT.query_values(request.query)
    fmt = choose_format(query, request.headers.get("Accept", ""), settings.default_format)
    opts = lcd_options(settings, query, body.pico)
    upstream = bool(settings.upstream_url)
    req = body if upstream else await with_infotext(request, body)  # an upstream A1111 reads the infotext itself
    count = image_count(req)  # the pass-through resolves no generation, which checks it on the ComfyUI path
    if fmt == "binary" and count != 1:
        raise models.field_error("batch_size", f"a binary answer holds one frame; batch_size x n_iter is {count} "
                                               "(ask for format=json for several)")
    deterministic = req.seed is not None and req.seed >= 0
    # What the client sent (unknown keys too; the fields its infotext filled count as sent), without the LCD
    # settings: the upstream request and the cache key.
    sent = req.model_dump(mode="json", exclude_unset=True, exclude={"pico"})
    cache_key = None
    if state.cache is not None and deterministic:
        checkpoint = None if upstream else await checkpoint_for(request, req)
        source = settings.upstream_url if upstream else settings.workflow
        cache_key = await asyncio.to_thread(FrameCache.key, {"request": sent, "lcd": asdict(opts),
                                                             "checkpoint": checkpoint, "source": source})
    frames: list[bytes] = []
    cached = False
    if cache_key is not None:
        data = await asyncio.to_thread(state.cache.get, cache_key)  # type: ignore[union-attr]
        if data and len(data) % opts.frame_size == 0:
            frames = [data[i:i + opts.frame_size] for i in range(0, len(data), opts.frame_size)]
            cached = True
    if not frames:
        if upstream:
            # The pass-through has no engine of its own: the bridge's image limits are the defaults.
            pngs = await fetch_upstream(settings, sent, image_io.DEFAULT_MAX_BYTES)
            try:
                frames = await image_io.run_in_pool(lambda: [convert_png(p, opts) for p in pngs])
            except BridgeError as exc:
                raise UpstreamError(f"upstream A1111 sent an unusable image: {exc.message}") from None
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise UpstreamError(f"upstream A1111 sent an image that cannot be decoded: {exc}") from None
        else:
            gen = await generation_for(request, req, is_img2img=False)
            frames = await _generate_comfy(request, gen, opts)
        if cache_key is not None and frames and len(frames) == count:
            await asyncio.to_thread(state.cache.put, cache_key, b"".join(frames))  # type: ignore[union-attr]
    if not frames:
        raise A1111Error(500, "", error="RuntimeError", errors="generation was interrupted before a frame was made")
    headers = {"X-Image-Width": str(opts.width), "X-Image-Height": str(opts.height),
               "X-Image-Format": opts.format_name, "X-Pico-Cache": "hit" if cached else "miss"}
    if fmt == "binary":
        return web.Response(body=frames[0], content_type="application/octet-stream", headers=headers)
    payload = {"images": [image_io.Base64(f) for f in frames],
               "parameters": models.parameters_echo(req),
               "info": f"{opts.width}x{opts.height} RGB565 format for Pico LCD"}
    return await json_answer(payload, headers=headers)


def _settings(app: web.Application) -> PicoSettings:
    return PicoSettings.from_settings(app[SETTINGS])


def typed_route(app: web.Application) -> Handler:
    """The Pico handler, its body model carrying this server's A1111 limits."""
    settings = ensure_state(app).settings
    body = models.limited(PicoTxt2ImgRequest, settings.max_steps, settings.max_size)
    return a1111_endpoint(body=body, empty_body={}, responses={200: PICO_ANSWER})(pico_txt2img)


def mode_on(app: web.Application) -> bool:
    """Pico mode: /sdapi/v1/txt2img answers in RGB565 (PICO_MODE)."""
    return _settings(app).mode


def setup(app: web.Application) -> None:
    core = app[SETTINGS]
    settings = _settings(app)
    cache = None
    if settings.cache and settings.cache_max_mb > 0:
        cache = FrameCache(settings.cache_dir or Path(core.data_dir) / "pico_cache",
                           int(settings.cache_max_mb * 1024 * 1024))
    app[STATE] = PicoState(settings, cache)
    ensure_state(app)  # the A1111 request handling (tasks, auth, checkpoints) is shared
    handler = typed_route(app)
    app.router.add_post(PATH, handler)
    if settings.mode and "a1111" not in app.get(ADAPTERS, ()):
        # Without the A1111 adapter, Pico mode serves the A1111 path itself (with it, that adapter routes here).
        app.router.add_post(f"{PREFIX}/txt2img", handler)
