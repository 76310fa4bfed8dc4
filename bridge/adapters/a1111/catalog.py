"""A1111's listing and settings routes: what the backend has (checkpoints, VAEs, LoRAs, embeddings, upscalers,
samplers, styles, memory) in A1111 1.10's shapes, and `/options`.

Clients call these at start-up (webuiapi asks for `/scripts` when constructed; SillyTavern for samplers,
schedulers, models, upscalers and VAEs; A1111's own tests for every list), so each answers what the ComfyUI
backend really has, read from its `/object_info` and model routes, never from this machine's disk.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path, PurePath
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, RootModel, create_model

from bridge import samplers
from bridge.engine import JobEngine
from bridge.errors import BridgeError

from ..toolkit import engine_of
from ..toolkit import live_choices as toolkit_choices
from . import generation as gen_mod
from . import options as opts
from . import upscalers
from .dialect import STATE, A1111Error, a1111_endpoint

CMD_FLAGS = Path(__file__).with_name("data") / "cmd_flags.json"
# A1111 reads at most this many LoRA files' metadata per listing; more would make one GET cost minutes.
MAX_LORA_METADATA = 256
METADATA_READS = 8  # of those, read from the backend at once


async def live_choices(engine: JobEngine, ref: str) -> list[str]:
    """The backend's list; A1111 clients get a 503 in A1111's shape while no backend answers."""
    found = await toolkit_choices(engine, ref)
    if found is None:
        raise backend_unavailable()
    return found


def backend_unavailable() -> A1111Error:
    return A1111Error(503, "backend unavailable: no ComfyUI backend answers", error="BackendUnavailable",
                      errors="no ComfyUI backend answers", headers={"Retry-After": "5"})


async def backend_json(engine: JobEngine, path: str, **params: str) -> Any:
    try:
        return await engine.backend_json(path, params or None, missing_ok=True)
    except BridgeError:
        raise backend_unavailable() from None


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_item(name: str) -> dict[str, Any]:
    # A1111's title carries a short sha256 once computed; the bridge never reads model files, so the title is the name
    return {"title": name, "model_name": gen_mod.model_name(name), "hash": None, "sha256": None,
            "filename": name, "config": None}


def match_checkpoint(value: str, names: list[str]) -> str | None:
    """A1111 accepts a title, a name or a model_name; the title may carry a ` [hash]` suffix."""
    wanted = value.strip()
    if wanted.endswith("]") and " [" in wanted:
        wanted = wanted[: wanted.rindex(" [")]
    for name in names:
        if wanted in (name, gen_mod.model_name(name)):
            return name
    return None


async def current_checkpoint(request: web.Request) -> str | None:
    state = request.app[STATE]
    chosen = state.options.get("sd_model_checkpoint")
    names = await live_choices(engine_of(request), "CheckpointLoaderSimple.ckpt_name")
    if chosen and chosen in names:
        return chosen
    # Like A1111 at start-up: the first checkpoint found is the loaded one.
    return names[0] if names else None


def match_vae(value: str, names: list[str]) -> str | None:
    """`Automatic` and `None` (the checkpoint's own VAE) or a file of the backend's `vae` folder."""
    if value in ("Automatic", "None"):
        return value
    for name in names:
        if value in (name, PurePath(name).name):
            return name
    return None


# ---------------------------------------------------------------------------------------------------------------
# Response models (for the OpenAPI document)

NULL = {"description": "null", "content": {"application/json": {"schema": {"type": "null"}}}}


class Empty(BaseModel):
    """An empty object."""


class A1111OptionsBase(BaseModel):
    """Every A1111 1.10 option and its value (A1111's shared.opts)."""

    model_config = ConfigDict(extra="allow")


# The options that act here are typed (their limits are in the schema); every other key round-trips as sent.
A1111Options = create_model("A1111Options", __base__=A1111OptionsBase, __doc__=A1111OptionsBase.__doc__,
                            **{key: (kind | None, None) for key, kind in opts.TYPES.items()})  # type: ignore

class SDModelItem(BaseModel):
    title: str
    model_name: str | None
    hash: str | None
    sha256: str | None
    filename: str
    config: str | None


class SDModelList(RootModel[list[SDModelItem]]):
    """Checkpoints."""


class SDVaeItem(BaseModel):
    model_name: str
    filename: str


class SDVaeList(RootModel[list[SDVaeItem]]):
    """VAE files (`model_name` is what `sd_vae` accepts)."""


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str]


class SamplerList(RootModel[list[SamplerItem]]):
    """Samplers the backend can run, in A1111's order."""


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None
    default_rho: float
    need_inner_model: bool


class SchedulerList(RootModel[list[SchedulerItem]]):
    """Schedule types the backend can run."""


class UpscalerItem(BaseModel):
    name: str
    model_name: str | None
    model_path: str | None
    model_url: str | None
    scale: float


class UpscalerList(RootModel[list[UpscalerItem]]):
    """Upscalers: None, Lanczos, Nearest and the backend's upscale model files."""


class LatentModeItem(BaseModel):
    name: str


class LatentModeList(RootModel[list[LatentModeItem]]):
    """Latent upscale modes (hires fix)."""


class RealesrganItem(BaseModel):
    name: str
    path: str | None
    scale: int | None


class RealesrganList(RootModel[list[RealesrganItem]]):
    """The Real-ESRGAN model files the backend has."""


class NamedPath(BaseModel):
    name: str
    path: str | None


class NamedPathList(RootModel[list[NamedPath]]):
    """Hypernetworks (none: ComfyUI core has no hypernetwork loader in the served workflows)."""


class FaceRestorerItem(BaseModel):
    name: str
    cmd_dir: str | None


class FaceRestorerList(RootModel[list[FaceRestorerItem]]):
    """Face restorers the backend can run."""


class PromptStyleItem(BaseModel):
    name: str
    prompt: str | None
    negative_prompt: str | None


class PromptStyleList(RootModel[list[PromptStyleItem]]):
    """Styles of the configured styles.csv files, in file order."""


class LoraItem(BaseModel):
    name: str
    alias: str
    path: str
    metadata: dict[str, Any]


class LoraList(RootModel[list[LoraItem]]):
    """LoRA files of the backend (`name` is what `<lora:name:weight>` takes)."""


class EmbeddingItem(BaseModel):
    step: int | None
    sd_checkpoint: str | None
    sd_checkpoint_name: str | None
    shape: int | None
    vectors: int | None


class EmbeddingsAnswer(BaseModel):
    """Textual-inversion embeddings the backend has, by the name a prompt uses."""

    loaded: dict[str, EmbeddingItem]
    skipped: dict[str, EmbeddingItem]


class ScriptsList(BaseModel):
    """Selectable scripts per mode."""

    txt2img: list[str]
    img2img: list[str]


class ScriptArg(BaseModel):
    label: str | None
    value: Any
    minimum: Any
    maximum: Any
    step: Any
    choices: list[str] | None


class ScriptInfo(BaseModel):
    name: str | None
    is_alwayson: bool | None
    is_img2img: bool | None
    args: list[ScriptArg]


class ScriptInfoList(RootModel[list[ScriptInfo]]):
    """The scripts and their arguments."""


class MemoryAnswer(BaseModel):
    """RAM and GPU memory of the backend (A1111's MemoryResponse)."""

    ram: dict[str, Any]
    cuda: dict[str, Any]


class FlagsAnswer(BaseModel):
    """A1111's command-line flags, as this bridge behaves."""

    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------------------------------------------------------
# Options


@a1111_endpoint(responses={200: A1111Options})
async def get_options(request: web.Request) -> web.StreamResponse:
    """Every option A1111 1.10 has and its value (A1111 `/sdapi/v1/options`)."""
    state = request.app[STATE]
    body = opts.current(state.options)
    body["sd_model_checkpoint"] = await current_checkpoint(request)
    return web.json_response(body)


@a1111_endpoint(body=A1111Options, responses={200: NULL})
async def set_options(request: web.Request, body: A1111Options) -> web.StreamResponse:
    """Change options; `sd_model_checkpoint` switches the checkpoint and `sd_vae` the VAE (A1111
    `/sdapi/v1/options`). The whole GET answer is a valid body."""
    state = request.app[STATE]
    engine = engine_of(request)
    updates = opts.checked_updates(body.model_dump(exclude_unset=True))
    if "sd_model_checkpoint" in updates:
        value = updates["sd_model_checkpoint"]
        if value is None:
            del updates["sd_model_checkpoint"]
        else:
            names = await live_choices(engine, "CheckpointLoaderSimple.ckpt_name")
            found = match_checkpoint(value, names) if isinstance(value, str) else None
            if found is None:
                # A1111 raises RuntimeError here (a 500); the body is its own, the status says whose fault it is.
                raise A1111Error(400, f"sd_model_checkpoint: {value!r} is not a checkpoint of the backend; choose "
                                      f"one of {names[:8]}", error="RuntimeError", errors=f"model {value!r} not found")
            updates["sd_model_checkpoint"] = found
    if "sd_vae" in updates:
        value = updates["sd_vae"]
        names = await live_choices(engine, "VAELoader.vae_name")
        found = match_vae(value, names) if isinstance(value, str) else None
        if found is None:
            raise A1111Error(400, f"sd_vae: {value!r} is not a VAE of the backend; choose Automatic, None or one "
                                  f"of {names[:8]}", errors=f"sd_vae: {value!r} not found")
        updates["sd_vae"] = found
    state.options.update(updates)
    return web.json_response(None)


# ---------------------------------------------------------------------------------------------------------------
# Lists


@a1111_endpoint(responses={200: SDModelList})
async def sd_models(request: web.Request) -> web.StreamResponse:
    """Checkpoints the backend has (A1111 `/sdapi/v1/sd-models`)."""
    names = await live_choices(engine_of(request), "CheckpointLoaderSimple.ckpt_name")
    return web.json_response([checkpoint_item(n) for n in names])


@a1111_endpoint(responses={200: SDVaeList})
async def sd_vae(request: web.Request) -> web.StreamResponse:
    """VAE files the backend has (A1111 `/sdapi/v1/sd-vae`)."""
    names = await live_choices(engine_of(request), "VAELoader.vae_name")
    return web.json_response([{"model_name": PurePath(n).name, "filename": n} for n in names
                              if n not in ("pixel_space", "taesd", "taesdxl", "taesd3", "taef1")])


@a1111_endpoint(responses={200: SamplerList})
async def get_samplers(request: web.Request) -> web.StreamResponse:
    """Sampler names, A1111 style, that the backend can run (A1111 `/sdapi/v1/samplers`)."""
    live = await live_choices(engine_of(request), "KSampler.sampler_name")
    return web.json_response(samplers.sampler_items(live or None))


@a1111_endpoint(responses={200: SchedulerList})
async def get_schedulers(request: web.Request) -> web.StreamResponse:
    """Schedule types, A1111 style, that the backend can run (A1111 `/sdapi/v1/schedulers`)."""
    live = await live_choices(engine_of(request), "KSampler.scheduler")
    return web.json_response(samplers.scheduler_items(live or None))


async def upscale_model_files(engine: JobEngine) -> list[str]:
    return await live_choices(engine, "UpscaleModelLoader.model_name")


@a1111_endpoint(responses={200: UpscalerList})
async def get_upscalers(request: web.Request) -> web.StreamResponse:
    """Upscalers (A1111 `/sdapi/v1/upscalers`): None, Lanczos, Nearest, then the backend's upscale models."""
    files = await upscale_model_files(engine_of(request))
    return web.json_response([u.item() for u in upscalers.listed(files)])


@a1111_endpoint(responses={200: LatentModeList})
async def latent_upscale_modes(request: web.Request) -> web.StreamResponse:
    """Latent upscale modes for hires fix (A1111 `/sdapi/v1/latent-upscale-modes`)."""
    return web.json_response([{"name": m} for m in upscalers.LATENT_MODES])


@a1111_endpoint(responses={200: RealesrganList})
async def realesrgan_models(request: web.Request) -> web.StreamResponse:
    """The Real-ESRGAN models the backend has (A1111 `/sdapi/v1/realesrgan-models`); A1111 lists its six
    definitions whether downloaded or not, the bridge only what can run."""
    files = await upscale_model_files(engine_of(request))
    found = [u for u in upscalers.model_upscalers(files) if PurePath(u.file or "").stem in upscalers.REAL_ESRGAN]
    return web.json_response([{"name": u.name, "path": u.file, "scale": int(u.scale)} for u in found])


@a1111_endpoint(responses={200: NamedPathList})
async def hypernetworks(request: web.Request) -> web.StreamResponse:
    """Hypernetworks (A1111 `/sdapi/v1/hypernetworks`): none; ComfyUI core loads none in these workflows."""
    return web.json_response([])


@a1111_endpoint(responses={200: FaceRestorerList})
async def face_restorers(request: web.Request) -> web.StreamResponse:
    """Face restorers (A1111 `/sdapi/v1/face-restorers`): none; `restore_faces` then changes nothing, as in an
    A1111 whose restorer models are missing."""
    return web.json_response([])


@a1111_endpoint(responses={200: PromptStyleList})
async def prompt_styles(request: web.Request) -> web.StreamResponse:
    """Styles of the configured styles.csv files (A1111 `/sdapi/v1/prompt-styles`; A1111_STYLES_FILE)."""
    book = request.app[STATE].styles
    try:
        styles = await asyncio.to_thread(book.styles)
    except (OSError, ValueError) as exc:
        raise A1111Error(500, "", error=type(exc).__name__, errors=f"styles file: {exc}") from None
    return web.json_response([{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
                              for s in styles])


def _lora_metadata(raw: Any) -> dict[str, Any]:
    """A1111's reading of a LoRA's safetensors metadata: JSON-looking strings decoded, training keys first."""
    meta: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        if isinstance(value, str) and value.startswith("{"):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        meta[key] = value
    first = ("ss_sd_model_name", "ss_resolution", "ss_clip_skip", "ss_num_train_images", "ss_tag_frequency")
    return {**{k: meta[k] for k in first if k in meta}, **{k: v for k, v in meta.items() if k not in first}}


@a1111_endpoint(responses={200: LoraList})
async def loras(request: web.Request) -> web.StreamResponse:
    """LoRA files of the backend (A1111's Lora extension `/sdapi/v1/loras`): `name` is the file stem, `alias` the
    name it was trained under (`ss_output_name`) when the file says, `path` the file in ComfyUI's loras folder."""
    engine = engine_of(request)
    # Requests that arrive while a listing runs share the next one: each costs the backend a request per file, and
    # 30 clients polling at once made 7,680 of them, which held up the jobs' own requests to ComfyUI for seconds.
    listed = await request.app[STATE].lora_listings(lambda: _lora_items(engine))
    return web.json_response(listed)


async def _lora_items(engine: JobEngine) -> list[dict[str, Any]]:
    files = await live_choices(engine, "LoraLoader.lora_name")
    safetensors = [f for f in files if f.endswith(".safetensors")][:MAX_LORA_METADATA]
    slots = asyncio.Semaphore(METADATA_READS)  # the engine's connections to ComfyUI stay free for jobs

    async def read(name: str) -> Any:
        async with slots:
            return await backend_json(engine, "/view_metadata/loras", filename=name)

    metadata = dict(zip(safetensors, await asyncio.gather(*(read(f) for f in safetensors))))
    by_name: dict[str, dict[str, Any]] = {}
    for f in files:
        meta = _lora_metadata(metadata.get(f))
        name = PurePath(f).stem
        alias = meta.get("ss_output_name") if isinstance(meta.get("ss_output_name"), str) else name
        by_name[name] = {"name": name, "alias": alias, "path": f, "metadata": meta}  # a repeated stem: last wins
    return list(by_name.values())


@a1111_endpoint(responses={200: EmbeddingsAnswer})
async def embeddings(request: web.Request) -> web.StreamResponse:
    """Textual-inversion embeddings of the backend (A1111 `/sdapi/v1/embeddings`). Their vector width and count
    come from the Pixart pack's `/pixart/embeddings` route on the backend; a backend without the pack lists names
    only (shape and vectors null)."""
    engine = engine_of(request)
    summary = await backend_json(engine, "/pixart/embeddings")
    if isinstance(summary, dict):
        loaded = {name: {"step": s.get("step"), "sd_checkpoint": s.get("sd_checkpoint"),
                         "sd_checkpoint_name": s.get("sd_checkpoint_name"), "shape": s.get("shape"),
                         "vectors": s.get("vectors")} for name, s in summary.items() if isinstance(s, dict)}
    else:
        names = await backend_json(engine, "/embeddings") or []
        loaded = {n: {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None,
                      "vectors": None} for n in names}
    return web.json_response({"loaded": loaded, "skipped": {}})


SCRIPTS = {"txt2img": ["x/y/z plot"], "img2img": ["sd upscale", "x/y/z plot"]}


@a1111_endpoint(responses={200: ScriptsList})
async def scripts(request: web.Request) -> web.StreamResponse:
    """Selectable scripts the bridge runs (A1111 `/sdapi/v1/scripts`). Clients decide what to send from this list
    (webuiapi adds ControlNet or ADetailer arguments only when listed), so it names only what runs."""
    return web.json_response(SCRIPTS)


@a1111_endpoint(responses={200: ScriptInfoList})
async def script_info(request: web.Request) -> web.StreamResponse:
    """The scripts and their arguments (A1111 `/sdapi/v1/script-info`)."""
    files = await upscale_model_files(engine_of(request))
    names = [u.name for u in upscalers.listed(files)]
    arg = {"label": None, "value": None, "minimum": None, "maximum": None, "step": None, "choices": None}
    sd_upscale = {"name": "sd upscale", "is_alwayson": False, "is_img2img": True, "args": [
        dict(arg, label="", value="<p>Will upscale the image by the selected scale factor; use width and height "
                                  "sliders to set tile size</p>"),
        dict(arg, label="Tile overlap", value=64, minimum=0, maximum=256, step=16),
        dict(arg, label="Upscaler", value="None", choices=names),
        dict(arg, label="Scale Factor", value=2.0, minimum=1.0, maximum=4.0, step=0.05)]}
    xyz_args = [dict(arg, label=f"{axis} type", value=default, choices=None) for axis, default in
                (("X", "Seed"), ("Y", "Nothing"), ("Z", "Nothing"))]
    xyz_info = [{"name": "x/y/z plot", "is_alwayson": False, "is_img2img": tab == "img2img", "args": [
        dict(arg, label="script_args", value="[x_type, x_values, x_values_dropdown, y_type, y_values, "
                                             "y_values_dropdown, z_type, z_values, z_values_dropdown, draw_legend, "
                                             "include_lone_images, include_sub_grids, no_fixed_seeds, vary_seeds_x, "
                                             "vary_seeds_y, vary_seeds_z, margin_size, csv_mode]"), *xyz_args]}
                for tab in ("txt2img", "img2img")]
    return web.json_response([xyz_info[0], sd_upscale, xyz_info[1]])


@a1111_endpoint(responses={200: FlagsAnswer})
async def cmd_flags(request: web.Request) -> web.StreamResponse:
    """A1111's command-line flags with the values that describe this bridge (A1111 `/sdapi/v1/cmd-flags`):
    API on, no web UI, credentials never shown."""
    flags = json.loads(CMD_FLAGS.read_text(encoding="utf-8"))
    state = request.app[STATE]
    styles_files = [str(f) for f in state.styles.files()]
    flags.update({"api": True, "nowebui": True, "api_auth": None, "styles_file": styles_files,
                  "use_cpu": [], "skip_load_model_at_start": True})
    return web.json_response(flags)


def _memory_half(free: Any, total: Any) -> dict[str, Any]:
    if not isinstance(free, (int, float)) or not isinstance(total, (int, float)):
        return {"error": "unavailable"}
    return {"free": float(free), "used": float(total - free), "total": float(total)}


@a1111_endpoint(responses={200: MemoryAnswer})
async def memory(request: web.Request) -> web.StreamResponse:
    """RAM and GPU memory of the backend, from ComfyUI's `/system_stats` (A1111 `/sdapi/v1/memory`)."""
    stats = await backend_json(engine_of(request), "/system_stats") or {}
    system = stats.get("system", {}) if isinstance(stats, dict) else {}
    ram = _memory_half(system.get("ram_free"), system.get("ram_total"))
    gpus = [d for d in stats.get("devices", []) if isinstance(d, dict) and d.get("type") == "cuda"]
    if not gpus:
        return web.json_response({"ram": ram, "cuda": {"error": "unavailable"}})
    gpu = gpus[0]
    torch_used = float(gpu.get("torch_vram_total", 0) - gpu.get("torch_vram_free", 0))
    # ComfyUI reports torch's reserved and free-within-reserved memory, not peaks or allocator events.
    cuda = {"system": _memory_half(gpu.get("vram_free"), gpu.get("vram_total")),
            "active": {"current": torch_used, "peak": torch_used},
            "allocated": {"current": torch_used, "peak": torch_used},
            "reserved": {"current": float(gpu.get("torch_vram_total", 0)),
                         "peak": float(gpu.get("torch_vram_total", 0))},
            "inactive": {"current": float(gpu.get("torch_vram_free", 0)),
                         "peak": float(gpu.get("torch_vram_free", 0))},
            "events": {"retries": 0, "oom": 0}}
    return web.json_response({"ram": ram, "cuda": cuda})


@a1111_endpoint(responses={200: NamedPathList})
async def extensions(request: web.Request) -> web.StreamResponse:
    """Installed A1111 extensions (A1111 `/sdapi/v1/extensions`): none, as a fresh A1111 answers."""
    return web.json_response([])


@a1111_endpoint(responses={200: NULL})
async def refresh_checkpoints(request: web.Request) -> web.StreamResponse:
    """Re-read the backend's model lists (A1111 `/sdapi/v1/refresh-checkpoints`, also `refresh-vae`,
    `refresh-loras` and `refresh-embeddings`)."""
    engine = engine_of(request)
    await engine.refresh_object_info()
    await live_choices(engine, "CheckpointLoaderSimple.ckpt_name")
    return web.json_response(None)


@a1111_endpoint(responses={200: Empty})
async def checkpoint_noop(request: web.Request) -> web.StreamResponse:
    """Unload or reload the checkpoint (A1111 `/sdapi/v1/unload-checkpoint`, `reload-checkpoint`): ComfyUI loads
    and frees models per job by itself, so there is nothing to do."""
    return web.json_response({})


ROUTES = (
    ("GET", "options", get_options), ("POST", "options", set_options),
    ("GET", "sd-models", sd_models), ("GET", "sd-vae", sd_vae),
    ("GET", "samplers", get_samplers), ("GET", "schedulers", get_schedulers),
    ("GET", "upscalers", get_upscalers), ("GET", "latent-upscale-modes", latent_upscale_modes),
    ("GET", "realesrgan-models", realesrgan_models), ("GET", "hypernetworks", hypernetworks),
    ("GET", "face-restorers", face_restorers), ("GET", "prompt-styles", prompt_styles),
    ("GET", "loras", loras), ("GET", "embeddings", embeddings),
    ("GET", "scripts", scripts), ("GET", "script-info", script_info),
    ("GET", "cmd-flags", cmd_flags), ("GET", "memory", memory), ("GET", "extensions", extensions),
    ("POST", "refresh-checkpoints", refresh_checkpoints), ("POST", "refresh-vae", refresh_checkpoints),
    ("POST", "refresh-loras", refresh_checkpoints), ("POST", "refresh-embeddings", refresh_checkpoints),
    ("POST", "unload-checkpoint", checkpoint_noop), ("POST", "reload-checkpoint", checkpoint_noop),
)
