"""AleaArt backend API: what AleaArt's Next.js front end calls on its Python backend (shared/seeds/aleaart-backend.md,
shared/reference/axera_aleaart.md topic B, issue 4 §3).

`POST /generate-image` accepts both bodies AleaArt sends:

- the on-chain form `{parameters: {promptIndex, styleIndex, samplerIndex, aspectIndex, steps, cfg, latentSeed,
  paletteId}, tokenId}`, mapped inside the `aleaart` workflow by the pack's `PixartAleaArtParams` node (the
  response's prompt and parameters come from the same `pixart_nodes.core.aleaart.resolve`);
- the resolved form `{prompt, steps, cfg_scale, seed, sampler, width, height, tokenId}` of its Python backend,
  which overrides the node's outputs in the same workflow.

Top-level resolved fields also override the on-chain form's values (e.g. `steps` or `width` for a quick preview).
The answer is synchronous, as AleaArt's Flask backend was: `{success, imageUrl, imageBase64, tokenId, prompt,
parameters: {steps, cfg_scale, seed, sampler, width, height}}`; the PNG is also stored and served at `imageUrl`.
With `applyPalette` (or `ALEAART_APPLY_PALETTE=true`) the image is mapped to Pixart's palette for paletteId.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import secrets
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bridge.config import AdapterSettings
from bridge.engine import JobEngine
from bridge.errors import BridgeError
from bridge.openapi import openapi

from .jobs_api import ApiError, data_url, get_float, get_int, live_choices, resolve_model

log = logging.getLogger("bridge.adapters.aleaart")

API = "aleaart"
WORKFLOW = "aleaart"
IMAGES_PATH = "/generated_images"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.png$")
# AleaArt Python backend defaults for the resolved form (python_backend.py).
DEFAULTS = {"steps": 20, "cfg_scale": 7.5, "sampler": "DPM++ 2M Karras", "width": 512, "height": 512}


class AleaArtSettings(AdapterSettings):
    """AleaArt adapter settings (environment `ALEAART_*`, or `--set ALEAART_...=...`)."""

    model_config = SettingsConfigDict(env_prefix="ALEAART_", extra="ignore", env_file_encoding="utf-8",
                                      populate_by_name=True)

    images_dir: Path | None = Field(None, description="Where generated images are stored and served from "
                                                      "(default: <BRIDGE_DATA_DIR>/generated_images).")
    apply_palette: bool = Field(False, description="Map every image to the paletteId palette unless a request "
                                                   "says applyPalette: false.")
    palette_dither: str = Field("none", description="Dither method when the palette is applied (PixartQuantize).")
    checkpoint: str = Field("", description="Checkpoint for AleaArt images; empty: the workflow's, else the first.")
    timeout: float = Field(600.0, gt=0, description="Seconds /generate-image waits for the image.")


SETTINGS_KEY = web.AppKey("aleaart_settings", AleaArtSettings)
IMAGES_DIR = web.AppKey("aleaart_images_dir", Path)


def _engine(request: web.Request) -> JobEngine:
    from bridge.app import ENGINE

    return request.app[ENGINE]


def _fail(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"success": False, "error": message, **extra}, status=status)


def _token_id(body: dict[str, Any]) -> tuple[Any, str]:
    """The tokenId as the client sent it (echoed back) and the form used in the file name."""
    token = body.get("tokenId", "unknown")
    if token is None:
        token = "unknown"
    if isinstance(token, bool) or not isinstance(token, (str, int)):
        raise ApiError(400, "tokenId must be a string or an integer", "tokenId")
    text = str(token).strip()
    if not _TOKEN.match(text):
        raise ApiError(400, "tokenId must be 1-64 characters of A-Z a-z 0-9 _ -", "tokenId")
    return token, text


def _sampler(name: Any, live: list[str] | None) -> tuple[str, str, str]:
    """(reported name, ComfyUI sampler_name, scheduler) for AleaArt's sampler label or a ComfyUI sampler name."""
    from pixart_nodes.core import aleaart

    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "sampler must be a string", "sampler")
    for label, sampler_name, scheduler in aleaart.SAMPLERS:
        if name.strip().lower() == label.lower():
            return label, sampler_name, scheduler
    if live is None or name in live:
        return name, name, "normal"
    valid = [label for label, _n, _s in aleaart.SAMPLERS] + list(live)
    raise ApiError(400, f"Unknown sampler {name!r}; valid samplers: {', '.join(valid)}", "sampler",
                   validValues=valid)


async def prepare(body: dict[str, Any], engine: JobEngine, settings: AleaArtSettings,
                  rng: random.Random) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Workflow parameters, the reported `parameters`, and the prompt, for either request form."""
    from pixart_nodes.core import aleaart

    chain = body.get("parameters")
    token_seed = body.get("tokenSeed")
    params: dict[str, Any]
    palette_id: int | None
    if chain is not None or token_seed is not None:
        try:
            if chain is not None:
                render = aleaart.RenderParams.from_dict(chain)
                params = {"mode": "params"}
            else:
                render = aleaart.derive_params(aleaart.parse_seed(token_seed, field="tokenSeed"))
                params = {"mode": "seed", "token_seed": str(token_seed).strip()}
        except ValueError as exc:
            field = str(exc).split(":", 1)[0]
            raise ApiError(400, str(exc), field if " " not in field else "parameters") from None
        params.update(prompt_index=render.promptIndex, style_index=render.styleIndex,
                      sampler_index=render.samplerIndex, aspect_index=render.aspectIndex, chain_steps=render.steps,
                      chain_cfg=render.cfg, latent_seed=render.latentSeed, palette_id=render.paletteId)
        resolved = aleaart.resolve(render)
        effective = {"prompt": resolved["prompt"], "steps": resolved["steps"], "cfg_scale": resolved["cfg"],
                     "seed": resolved["seed"], "sampler": resolved["sampler"], "width": resolved["width"],
                     "height": resolved["height"]}
        palette_id = render.paletteId
        derived = True
    elif body.get("prompt") is not None:
        effective = dict(DEFAULTS, seed=None, prompt=None)
        palette_id = get_int(body, "paletteId", None, *aleaart.RANGES["paletteId"])
        params = {"mode": "params", **({"palette_id": palette_id} if palette_id is not None else {})}
        derived = False
    else:
        raise ApiError(400, "Either parameters (AleaArt RenderParams) or prompt is required", "parameters")

    # Resolved fields: the whole request in the resolved form, overrides in the on-chain form.
    overrides: dict[str, Any] = {}
    if "prompt" in body and body["prompt"] is not None:
        prompt = body["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise ApiError(400, "prompt must be a non-empty string", "prompt")
        overrides["prompt"] = prompt
    steps = get_int(body, "steps", None, 1, 150)
    if steps is not None:
        overrides["steps"] = steps
    cfg = get_float(body, "cfg_scale", None, 0.0, 30.0)
    if cfg is not None:
        overrides["cfg_scale"] = cfg
    for side in ("width", "height"):
        value = get_int(body, side, None, 64, 2048, 8)
        if value is not None:
            overrides[side] = value
    seed = get_int(body, "seed", None, 0, 2**64 - 1) if body.get("seed") not in (None, -1) else None
    if seed is not None:
        overrides["seed"] = seed
    elif not derived:
        # AleaArt's backend leaves a missing seed to torch; choosing it here lets the response report it.
        overrides["seed"] = rng.randint(0, 2**32 - 1)
    sampler_in = body.get("sampler")
    if sampler_in is not None or not derived:
        live = await live_choices(engine, "KSampler.sampler_name")
        label, sampler_name, scheduler = _sampler(sampler_in if sampler_in is not None else DEFAULTS["sampler"],
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

    apply = body.get("applyPalette", settings.apply_palette)
    if not isinstance(apply, bool):
        raise ApiError(400, "applyPalette must be true or false", "applyPalette")
    if apply:
        if palette_id is None:
            raise ApiError(400, "applyPalette needs a paletteId (in parameters, or top-level with a prompt)",
                           "paletteId")
        params.update(palette="on", palette_dither=settings.palette_dither)
    checkpoint = await resolve_model(engine, _ModelSettings(settings.checkpoint), WORKFLOW, body.get("model"))
    if checkpoint is not None:
        params["checkpoint"] = checkpoint
    reported = {k: effective[k] for k in ("steps", "cfg_scale", "seed", "sampler", "width", "height")}
    palette = None
    if apply:
        name, colors = aleaart.PALETTES[palette_id]  # type: ignore[index]
        palette = {"paletteId": palette_id, "name": name, "colors": list(colors)}
    return params, {"parameters": reported, "palette": palette}, effective["prompt"]


class _ModelSettings:
    """The one field resolve_model reads, from this adapter's setting."""

    def __init__(self, default_model: str) -> None:
        self.default_model = default_model


@openapi(tags=["aleaart"], request={"type": "object", "properties": {
    "parameters": {"type": "object", "description": "AleaArt RenderParams: promptIndex, styleIndex, samplerIndex, "
                                                   "aspectIndex, steps (18..64), cfg (70..180), latentSeed, paletteId"},
    "tokenId": {"type": ["string", "integer"]},
    "prompt": {"type": "string"}, "steps": {"type": "integer"}, "cfg_scale": {"type": "number"},
    "seed": {"type": "integer"}, "sampler": {"type": "string"}, "width": {"type": "integer"},
    "height": {"type": "integer"}, "applyPalette": {"type": "boolean"}, "paletteId": {"type": "integer"},
    "tokenSeed": {"type": "string", "description": "0x + 64 hex: derive RenderParams as the contract does"},
}}, responses={200: {"description": "{success: true, imageUrl, imageBase64, tokenId, prompt, parameters}"},
               400: {"description": "{success: false, error}"}, 500: {"description": "{success: false, error}"}})
async def generate_image(request: web.Request) -> web.Response:
    """Generate an AleaArt image from on-chain RenderParams or a resolved prompt (synchronous)."""
    engine = _engine(request)
    settings = request.app[SETTINGS_KEY]
    from .jobs_api import read_json_object

    try:
        body = await read_json_object(request)
        token, token_text = _token_id(body)
        params, extra, prompt = await prepare(body, engine, settings, random.Random())
        try:
            job = await engine.submit(WORKFLOW, params, meta={"api": API, "tokenId": token_text})
        except BridgeError as exc:
            return _fail(exc.status, exc.message)
    except ApiError as exc:
        return _fail(exc.status, exc.message, **({"field": exc.field} if exc.field else {}), **exc.extra)
    try:
        job = await engine.wait(job.id, timeout=settings.timeout)
    except asyncio.TimeoutError:
        await engine.cancel(job.id)
        return _fail(504, f"Image generation took longer than {settings.timeout:g} s (ALEAART_TIMEOUT)")
    except asyncio.CancelledError:
        # The client went away: stop the work nobody will collect.
        with contextlib.suppress(Exception):
            await asyncio.shield(engine.cancel(job.id))
        raise
    if job.status != "completed":
        return _fail(500, f"Image generation {job.status}: {job.error or 'no error message'}")
    try:
        png = engine.read_output(job, "images", 0)
    except (BridgeError, OSError) as exc:
        return _fail(500, f"The generated image cannot be read: {exc}")
    filename = f"art_token_{token_text}_{secrets.token_hex(4)}.png"
    images_dir = request.app[IMAGES_DIR]
    path = images_dir / filename
    tmp = path.with_suffix(".partial")
    tmp.write_bytes(png)
    tmp.replace(path)
    response = {"success": True, "imageUrl": f"{IMAGES_PATH}/{filename}", "imageBase64": data_url(png),
                "tokenId": token, "prompt": prompt, "parameters": extra["parameters"]}
    if extra["palette"] is not None:
        response["palette"] = extra["palette"]
    return web.json_response(response)


@openapi(tags=["aleaart"], responses={200: {"description": "image/png"},
                                      404: {"description": "{\"error\": \"Image not found\"}"}})
async def generated_image(request: web.Request) -> web.StreamResponse:
    """A stored AleaArt image by file name."""
    name = request.match_info["filename"]
    images_dir = request.app[IMAGES_DIR]
    if not _FILENAME.match(name) or ".." in name:
        return web.json_response({"error": "Image not found"}, status=404)
    path = (images_dir / name).resolve()
    if path.parent != images_dir.resolve() or not path.is_file():
        return web.json_response({"error": "Image not found"}, status=404)
    return web.FileResponse(path, headers={"Content-Type": "image/png"})


@openapi(tags=["aleaart"])
async def index(request: web.Request) -> web.Response:
    """The service name and its endpoints."""
    aleaart_paths = ["/generate-image", "/health", f"{IMAGES_PATH}/<filename>"]
    others = set()
    for route in request.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path and route.method != "HEAD":
            others.add(path.replace("{filename}", "<filename>"))
    rest = sorted(p for p in others if p not in aleaart_paths and p != "/")
    return web.json_response({"message": "AleaArt backend (Pixart bridge over ComfyUI)",
                              "endpoints": aleaart_paths + rest})


def setup(app: web.Application) -> None:
    from bridge.app import SETTINGS

    settings = AleaArtSettings.from_settings(app[SETTINGS])
    app[SETTINGS_KEY] = settings
    images_dir = settings.images_dir or (Path(app[SETTINGS].data_dir) / "generated_images")
    images_dir.mkdir(parents=True, exist_ok=True)
    app[IMAGES_DIR] = images_dir
    r = app.router
    r.add_post("/generate-image", generate_image)
    r.add_get(IMAGES_PATH + "/{filename}", generated_image)
    r.add_get("/", index)
