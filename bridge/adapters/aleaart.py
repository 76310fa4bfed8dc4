"""AleaArt backend API: what AleaArt's Next.js front end calls on its Python backend (shared/seeds/aleaart-backend.md,
shared/reference/axera_aleaart.md topic B, issue 4 §3).

`POST /generate-image` accepts both bodies AleaArt sends:

- the on-chain form `{parameters: {promptIndex, styleIndex, samplerIndex, aspectIndex, steps, cfg, latentSeed,
  paletteId}, tokenId}`, mapped inside the `aleaart` workflow by the pack's `PixartAleaArtParams` node (the
  response's prompt and parameters come from the same `pixart_nodes.core.aleaart.resolve`);
- the resolved form `{prompt, steps, cfg_scale, seed, sampler, width, height, tokenId}` of its Python backend,
  which overrides the node's outputs in the same workflow.

Top-level resolved fields also override the on-chain form's values (e.g. `steps` or `width` for a quick preview),
and so do a top-level `paletteId` and `seed` (-1: a new random one); `tokenSeed` sent with `parameters` must derive
the same struct.
The answer is synchronous, as AleaArt's Flask backend was: `{success, imageUrl, imageBase64, tokenId, prompt,
parameters: {steps, cfg_scale, seed, sampler, width, height}}`. `imageUrl` names the job's own stored result
(`art_token_<tokenId>_<job id>.png`): the image is written once, and deleting or expiring the job removes it.
With `response_format: "url"` the answer carries a link (presigned when results live in S3) instead of base64.
With `applyPalette` (or `ALEAART_APPLY_PALETTE=true`) the image is mapped to Pixart's palette for paletteId.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, Field, PrivateAttr, create_model, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from bridge import images as image_io
from bridge import infotext
from bridge.api import Dialect, endpoint
from bridge.config import AdapterSettings
from bridge.engine import JobEngine
from bridge.errors import BridgeError, InvalidParameter, NotAvailable
from bridge.fields import (Bool, LooseFloat, LooseInt, NonBlank, Request, ResponseFormat, Seed, Text,
                           Webhook, asks_random_seed)
from bridge.http import json_answer
from bridge.keys import SETTINGS
from bridge.storage import BlobNotFound
from pixart_nodes.core import aleaart

from .toolkit import (ClientGone, JobGroup, Overdue, Submission, engine_of, live_choices, request_origin,
                      resolve_checkpoint)

log = logging.getLogger("bridge.adapters.aleaart")

API = "aleaart"
WORKFLOW = "aleaart"
IMAGES_PATH = "/generated_images"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.png")
# `art_token_<tokenId>_<job id>.png`: the name AleaArt's backend gives its files, with the job id as the unique part.
_JOB_FILENAME = re.compile(r"art_token_(?P<token>[A-Za-z0-9_-]{1,64})_(?P<job>[0-9a-f]{32})\.png")
# AleaArt Python backend defaults for the resolved form (python_backend.py).
DEFAULTS = {"steps": 20, "cfg_scale": 7.5, "sampler": "DPM++ 2M Karras", "width": 512, "height": 512}


class AleaArtSettings(AdapterSettings):
    """AleaArt adapter settings (environment `ALEAART_*`, or `--set ALEAART_...=...`)."""

    model_config = SettingsConfigDict(env_prefix="ALEAART_", extra="ignore", env_file_encoding="utf-8",
                                      populate_by_name=True)

    apply_palette: bool = Field(False, description="Map every image that has a paletteId (on chain, or top-level) "
                                                   "to its palette unless a request says applyPalette: false.")
    palette_dither: str = Field("none", description="Dither method when the palette is applied (PixartQuantize).")
    checkpoint: str = Field("", description="Checkpoint for AleaArt images; empty: the workflow's, else the first.")
    timeout: float = Field(600.0, gt=0, description="Seconds /generate-image waits for the image.")

    @field_validator("palette_dither")
    @classmethod
    def _dither(cls, value: str) -> str:
        # Checked here, at start-up: left to the engine, every applyPalette request was refused as the client's
        # 400 naming `palette_dither`, a field no AleaArt request has.
        from pixart_nodes.core.quantize import DITHER_METHODS

        if value not in DITHER_METHODS:
            raise ValueError(f"unknown dither method {value!r}; one of {', '.join(DITHER_METHODS)}")
        return value


SETTINGS_KEY = web.AppKey("aleaart_settings", AleaArtSettings)


# ---------------------------------------------------------------------------------------------------------------
# The dialect and the request


class AleaArtError(BaseModel):
    """AleaArt's Flask backend error shape."""

    success: bool = False
    error: str
    field: str | None = None
    validValues: list[str] | None = None


@dataclass(frozen=True)
class AleaArtDialect(Dialect):
    def error(self, status: int, message: str, field: str | None = None, *, code: str | None = None,
              headers: Mapping[str, str] | None = None, **extra: Any) -> web.Response:
        body = {"success": False, "error": message, **({"field": field} if field else {}),
                **{k: v for k, v in extra.items() if k == "validValues"}}
        return web.json_response(body, status=status, headers=dict(headers or {}))

    def bad_body(self, message: str, status: int = 400) -> web.Response:
        return self.error(status, f"Request body must be valid JSON: {message}" if status == 400 else message, "body")


DIALECT = AleaArtDialect("aleaart", AleaArtError, ("aleaart",), "Request body must be a JSON object")


def _range(name: str) -> Any:
    lo, hi = aleaart.RANGES[name]
    # LooseInt: ethers returns uint fields as BigInt, which front ends JSON-encode as decimal strings
    return Annotated[LooseInt, Field(ge=lo, le=hi)]


# The contract's RenderParams struct, with its ranges.
RenderParamsBody = create_model("RenderParams", __base__=Request,
                                __doc__="AleaArt's on-chain RenderParams (contract field names and ranges).",
                                **{name: (_range(name), ...) for name in aleaart.RANGES})


class GenerateImageBody(Request):
    """Either the on-chain form (parameters or tokenSeed) or the resolved form (prompt ...); top-level resolved
    fields also override the on-chain values."""

    parameters: RenderParamsBody | None = None  # type: ignore[valid-type]
    tokenSeed: Text | None = Field(None, description="0x + 64 hex: derive RenderParams as the contract does.")
    tokenId: str | int | None = Field(None, description="Echoed back and used in the file name.")
    prompt: NonBlank | None = None
    steps: Annotated[LooseInt, Field(ge=1, le=150)] | None = None
    cfg_scale: Annotated[LooseFloat, Field(ge=0.0, le=30.0)] | None = None
    seed: Seed = None
    sampler: Text | None = Field(None, description="AleaArt's sampler label (e.g. 'DPM++ 2M Karras') or a ComfyUI "
                                                   "sampler name.")
    width: Annotated[LooseInt, Field(ge=64, le=2048, multiple_of=8)] | None = None
    height: Annotated[LooseInt, Field(ge=64, le=2048, multiple_of=8)] | None = None
    applyPalette: Bool | None = Field(None, description="Map the image to Pixart's palette for paletteId.")
    paletteId: _range("paletteId") | None = None  # type: ignore[valid-type]
    model: Text | None = Field(None, description="Checkpoint file name or stem.")
    webhook: Webhook | None = Field(None, description="Also POST signed messages about the job there (a URL, or "
                                                      "{url, events}); see docs/api/webhooks.md.")
    response_format: ResponseFormat = "b64"
    # Whether the request asked for a random seed (-1): Seed reads it as None, like an absent seed, and only the
    # on-chain forms tell the two apart (absent: the token's latentSeed).
    _random_seed: bool = PrivateAttr(False)

    @model_validator(mode="wrap")
    @classmethod
    def _asked_for_random_seed(cls, data: Any, handler: Any) -> Any:
        body = handler(data)
        if isinstance(data, Mapping) and isinstance(body, GenerateImageBody):
            body._random_seed = asks_random_seed(data.get("seed"))
        return body

    @field_validator("tokenId", mode="before")
    @classmethod
    def _token(cls, value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not _TOKEN.fullmatch(str(value).strip()):
            raise ValueError("must be 1-64 characters of A-Z a-z 0-9 _ -")
        return value


class AleaArtParameters(BaseModel):
    steps: int
    cfg_scale: float
    seed: int
    sampler: str
    width: int
    height: int


class PaletteUsed(BaseModel):
    paletteId: int
    name: str
    colors: list[str]


class GenerateImageAnswer(BaseModel):
    """The image, served at imageUrl, and inline as a data URL (null with response_format "url")."""

    success: bool
    imageUrl: str
    imageBase64: str | None
    tokenId: str | int
    prompt: str
    parameters: AleaArtParameters
    palette: PaletteUsed | None = None


def _sampler(name: str, live: list[str] | None) -> tuple[str, str, str]:
    """(reported name, ComfyUI sampler_name, scheduler) for AleaArt's sampler label or a ComfyUI sampler name."""
    for label, sampler_name, scheduler in aleaart.SAMPLERS:
        if name.strip().lower() == label.lower():
            return label, sampler_name, scheduler
    if live is None or name in live:
        return name, name, "normal"
    valid = [label for label, _n, _s in aleaart.SAMPLERS] + list(live)
    raise NotAvailable("sampler", f"Unknown sampler {name!r}; valid samplers: {', '.join(valid)}", valid)


async def prepare(body: GenerateImageBody, engine: JobEngine, settings: AleaArtSettings,
                  rng: random.Random) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Workflow parameters, the reported `parameters`, and the prompt, for either request form."""
    params: dict[str, Any]
    palette_id: int | None
    if body.parameters is not None or body.tokenSeed is not None:
        seeded = None
        if body.tokenSeed is not None:
            try:
                seeded = aleaart.derive_params(aleaart.parse_seed(body.tokenSeed, field="tokenSeed"))
            except ValueError as exc:
                raise InvalidParameter("tokenSeed", str(exc)) from None
        if body.parameters is not None:
            render = aleaart.RenderParams(**body.parameters.model_dump())
            params = {"mode": "params"}
            if seeded is not None and seeded != render:
                # One of the two is not this token's: rendering either would hide the mistake.
                name = next(n for n in aleaart.RANGES if getattr(seeded, n) != getattr(render, n))
                raise InvalidParameter("tokenSeed", f"tokenSeed derives {name} {getattr(seeded, name)}, but "
                                                    f"parameters.{name} is {getattr(render, name)}: they are not "
                                                    f"the same token's; send one of them")
        else:
            render = seeded  # type: ignore[assignment]
            params = {"mode": "seed", "token_seed": body.tokenSeed.strip()}  # type: ignore[union-attr]
        if body.paletteId is not None and body.paletteId != render.paletteId:
            # A top-level override like steps or width. The node derives a seed's struct itself, palette included,
            # so an overridden one is handed to it as the struct.
            render = dataclasses.replace(render, paletteId=body.paletteId)
            params = {"mode": "params"}
        params.update(prompt_index=render.promptIndex, style_index=render.styleIndex,
                      sampler_index=render.samplerIndex, aspect_index=render.aspectIndex, chain_steps=render.steps,
                      chain_cfg=render.cfg, latent_seed=render.latentSeed, palette_id=render.paletteId)
        resolved = aleaart.resolve(render)
        effective = {"prompt": resolved["prompt"], "steps": resolved["steps"], "cfg_scale": resolved["cfg"],
                     "seed": resolved["seed"], "sampler": resolved["sampler"], "width": resolved["width"],
                     "height": resolved["height"]}
        palette_id = render.paletteId
        derived = True
    elif body.prompt is not None:
        effective = dict(DEFAULTS, seed=None, prompt=None)
        palette_id = body.paletteId
        params = {"mode": "params", **({"palette_id": palette_id} if palette_id is not None else {})}
        derived = False
    else:
        raise InvalidParameter("parameters", "Either parameters (AleaArt RenderParams) or prompt is required")

    # Resolved fields: the whole request in the resolved form, overrides in the on-chain form.
    overrides: dict[str, Any] = {k: getattr(body, k) for k in ("prompt", "steps", "cfg_scale", "width", "height")
                                 if getattr(body, k) is not None}
    if body.seed is not None:
        overrides["seed"] = body.seed
    elif not derived or body._random_seed:
        # AleaArt's backend leaves a missing seed to torch; choosing it here lets the response report it.
        overrides["seed"] = rng.randint(0, 2**32 - 1)
    if body.sampler is not None or not derived:
        live = await live_choices(engine, "KSampler.sampler_name")
        label, sampler_name, scheduler = _sampler(body.sampler if body.sampler is not None else DEFAULTS["sampler"],
                                                  live)
        overrides["sampler"] = label
        params.update(sampler=sampler_name, scheduler=scheduler)
    effective.update(overrides)
    for key, target in (("prompt", "prompt"), ("steps", "steps"), ("cfg_scale", "cfg"), ("seed", "seed"),
                        ("width", "width"), ("height", "height")):
        if key in overrides or not derived:
            params[target] = effective[key]
    if not derived:
        params["negative_prompt"] = ""  # AleaArt sends none

    # The setting maps the images that have a paletteId (the on-chain forms; the resolved form, which AleaArt's own
    # front end sends, has one only at top level); a request's own applyPalette: true needs one.
    apply = body.applyPalette if body.applyPalette is not None else settings.apply_palette and palette_id is not None
    if apply:
        if palette_id is None:
            raise InvalidParameter("paletteId", "applyPalette needs a paletteId (top-level, or in parameters)")
        params.update(palette="on", palette_dither=settings.palette_dither)
    checkpoint = await resolve_checkpoint(engine, WORKFLOW, body.model, settings.checkpoint,
                                          setting="ALEAART_CHECKPOINT")
    if checkpoint is not None:
        params["checkpoint"] = checkpoint
    reported = {k: effective[k] for k in ("steps", "cfg_scale", "seed", "sampler", "width", "height")}
    palette = None
    if apply:
        name, colors = aleaart.PALETTES[palette_id]  # type: ignore[index]
        palette = {"paletteId": palette_id, "name": name, "colors": list(colors)}
    return params, {"parameters": reported, "palette": palette}, effective["prompt"]


def image_key(filename: str) -> str:
    """Where images stored by earlier versions (a second copy of each result) live in the blob store; they are
    still served until retention removes them."""
    return f"generated_images/{filename}"


def image_name(token: str, job_id: str) -> str:
    return f"art_token_{token}_{job_id}.png"


@endpoint(dialect=DIALECT, body=GenerateImageBody, responses={200: GenerateImageAnswer})
async def generate_image(request: web.Request, body: GenerateImageBody) -> web.Response:
    """Generate an AleaArt image from on-chain RenderParams or a resolved prompt (synchronous)."""
    engine = engine_of(request)
    settings = request.app[SETTINGS_KEY]
    token = body.tokenId if body.tokenId is not None else "unknown"
    token_text = str(token).strip()
    params, extra, prompt = await prepare(body, engine, settings, random.Random())
    group = JobGroup(engine, request)
    used = extra["parameters"]
    # The graph derives the on-chain values itself, so the infotext is written from what this adapter resolved.
    text = infotext.write(prompt, "", {"Steps": used["steps"], "Sampler": used["sampler"],
                                       "CFG scale": used["cfg_scale"], "Seed": used["seed"],
                                       "Size": f"{used['width']}x{used['height']}", "Token": token_text})
    job = await group.submit(Submission(WORKFLOW, params, meta={"api": API, "tokenId": token_text,
                                                                "webhook": body.webhook, "infotext": text}))
    try:
        job = (await group.wait(settings.timeout))[0]
    except Overdue as exc:
        return DIALECT.error(504, f"Image generation took longer than {settings.timeout:g} s (ALEAART_TIMEOUT)"
                                  f"{exc.going_on()}")
    except ClientGone:
        return DIALECT.error(499, "the client closed the connection; the generation was cancelled")
    if job.status == "cancelled":
        # someone else's DELETE /jobs/{id}, or the bridge stopping: the job carries no error of its own
        return DIALECT.error(500, f"Image generation was cancelled before it finished (job {job.id})"
                                  + (f": {job.error}" if job.error else ""))
    if job.status != "completed":
        return DIALECT.error(500, f"Image generation {job.status}: {job.error or 'no error message'}")
    if body.response_format == "url":
        url, inline = await engine.result_link(job, "images", 0, request_origin(request)), None
    else:
        try:
            png = await engine.read_output(job, "images", 0)
        except (BridgeError, OSError) as exc:
            return DIALECT.error(500, f"The generated image cannot be read: {exc}")
        url, inline = f"{IMAGES_PATH}/{image_name(token_text, job.id)}", image_io.data_url(png)
    response = {"success": True, "imageUrl": url, "imageBase64": inline, "tokenId": token, "prompt": prompt,
                "parameters": extra["parameters"]}
    if extra["palette"] is not None:
        response["palette"] = extra["palette"]
    return await json_answer(response)


class ImageNotFound(BaseModel):
    """No such image."""

    error: str


@endpoint(dialect=DIALECT, responses={200: {"description": "The PNG.", "content": {"image/png": {
    "schema": {"type": "string", "format": "binary"}}}}, 404: ImageNotFound})
async def generated_image(request: web.Request) -> web.StreamResponse:
    """A stored AleaArt image by file name."""
    name = request.match_info["filename"]
    if not _FILENAME.fullmatch(name) or ".." in name:
        return web.json_response({"error": "Image not found"}, status=404)
    engine = engine_of(request)
    named = _JOB_FILENAME.fullmatch(name)
    if named is not None:
        job = await engine.find(named["job"])
        if (job is None or job.meta.get("api") != API or job.meta.get("tokenId") != named["token"]
                or not job.outputs.get("images")):
            return web.json_response({"error": "Image not found"}, status=404)
        try:
            link = await engine.blobs.url(job.outputs["images"][0], 300)
            if link is not None:
                raise web.HTTPTemporaryRedirect(link)  # the object store serves the bytes
            return web.Response(body=await engine.read_output(job, "images", 0), content_type="image/png")
        except BridgeError:
            return web.json_response({"error": "Image not found"}, status=404)
    # Served from here, not redirected: a store that presigns links signs one for any key without looking, so
    # every unknown name left as a link to the bucket's own error page instead of this route's 404.
    try:
        png = await engine.blobs.get(image_key(name))
    except BlobNotFound:
        return web.json_response({"error": "Image not found"}, status=404)
    return web.Response(body=png, content_type="image/png")


class AleaArtIndex(BaseModel):
    """The service name and its endpoints (AleaArt's backend answers GET / so)."""

    message: str
    endpoints: list[str]
    docs: str


@endpoint(dialect=DIALECT, responses={200: AleaArtIndex})
async def index(request: web.Request) -> web.Response:
    """The service name and its endpoints (a browser gets the page that links to the API docs)."""
    if "text/html" in request.headers.get("Accept", ""):
        from bridge import __version__, apidocs

        return apidocs.index_page(__version__)
    aleaart_paths = ["/generate-image", "/health", f"{IMAGES_PATH}/<filename>"]
    others = set()
    for route in request.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path and route.method != "HEAD":
            others.add(path.replace("{filename}", "<filename>"))
    rest = sorted(p for p in others if p not in aleaart_paths and p != "/")
    return web.json_response({"message": "AleaArt backend (Pixart bridge over ComfyUI)",
                              "endpoints": aleaart_paths + rest, "docs": "/docs"})


def setup(app: web.Application) -> None:
    settings = AleaArtSettings.from_settings(app[SETTINGS])
    app[SETTINGS_KEY] = settings
    r = app.router
    r.add_post("/generate-image", generate_image)
    r.add_get(IMAGES_PATH + "/{filename}", generated_image)
    r.add_get("/", index)
