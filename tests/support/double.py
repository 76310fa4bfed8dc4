"""A ComfyUI protocol double: an aiohttp server speaking ComfyUI 0.3.64's routes and websocket messages
(shared/reference/comfyui.md §1-§3) over a small `/object_info`, for fast engine tests.

It validates prompts the way ComfyUI does (same error types and JSON shapes), runs them one at a time
in `number` order, caches unchanged nodes between prompts (→ `execution_cached`), sends the same message
sequence as a real run, and really writes PNGs of the size the graph asks for (EmptyLatentImage
width/height, LoadImage's input size, ImageScale/ResizeAndPadImage targets, batch sizes). Knobs make it
slow, failing, or dead so cancel, timeout and kill paths can be tested.

Its /object_info also lists the core nodes of the pixel-art workflows and every class of the Pixart pack,
built from the node classes themselves (`pack_object_info`). Pack nodes run plausibly: sizes from the pack's own
code (PixartPixelate on a blank image of the input's size), real palettes and AleaArt parameters where no model is
needed, and PixartRGB565 packs the double's picture with the pack's real conversion, so its bytes are genuine
(`save_file` is ignored: the double has no output folder).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import heapq
import io
import json
import socket
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest_asyncio
from aiohttp import WSMsgType, web
from PIL import Image

__all__ = ["ComfyDouble", "comfy_double", "object_info_for", "pack_object_info", "pack_node_info", "SAMPLERS",
           "SCHEDULERS"]

SAMPLERS = ["euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
            "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
            "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
            "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
            "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
            "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde",
            "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2"]
SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic",
              "kl_optimal"]
UPSCALE = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
MAX_RES = 16384
DEFAULT_CONTROLNETS = ["tiny_canny.safetensors"]


def _node(name: str, category: str, required: dict[str, Any], outputs: list[str], *, output_node: bool = False,
          optional: dict[str, Any] | None = None, hidden: dict[str, Any] | None = None,
          output_names: list[str] | None = None) -> dict[str, Any]:
    inputs: dict[str, Any] = {"required": required}
    if optional:
        inputs["optional"] = optional
    if hidden:
        inputs["hidden"] = hidden
    order = {"required": list(required)}
    if optional:
        order["optional"] = list(optional)
    if hidden:
        order["hidden"] = list(hidden)
    return {"input": inputs, "input_order": order, "output": outputs, "output_is_list": [False] * len(outputs),
            "output_name": output_names or outputs, "name": name, "display_name": name, "description": "",
            "python_module": "nodes", "category": category, "output_node": output_node}


def pack_node_info(name: str, cls: type) -> dict[str, Any]:
    """The /object_info entry ComfyUI builds for a classic (V1) node class: from INPUT_TYPES, RETURN_TYPES,
    RETURN_NAMES, OUTPUT_IS_LIST, OUTPUT_NODE, CATEGORY, DESCRIPTION and OUTPUT_TOOLTIPS (server.py node_info)."""
    spec = cls.INPUT_TYPES()
    sections = {section: {k: [v[0], *(v[1:2] or [{}])] for k, v in spec.get(section, {}).items()}
                for section in ("required", "optional", "hidden")}
    returns = list(cls.RETURN_TYPES)
    info = _node(name, cls.CATEGORY, sections["required"], returns, optional=sections["optional"] or None,
                 hidden=sections["hidden"] or None, output_names=list(getattr(cls, "RETURN_NAMES", returns)),
                 output_node=bool(getattr(cls, "OUTPUT_NODE", False)))
    info["output_is_list"] = list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(returns)))
    info["description"] = getattr(cls, "DESCRIPTION", "")
    info["python_module"] = "custom_nodes.pixart_nodes"
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = list(cls.OUTPUT_TOOLTIPS)
    return info


def pack_object_info() -> dict[str, Any]:
    """Entries for every class of the Pixart node pack (`pixart_nodes.NODE_CLASS_MAPPINGS`)."""
    import pixart_nodes

    infos = {name: pack_node_info(name, cls) for name, cls in pixart_nodes.NODE_CLASS_MAPPINGS.items()}
    # Inside ComfyUI a pack node that feeds KSampler returns KSampler's own sampler/scheduler list objects as
    # output types (nodes_aleaart._ksampler_lists); outside it they fall back to STRING. Report what ComfyUI does.
    live = {"sampler_name": SAMPLERS, "scheduler": SCHEDULERS}
    for info in infos.values():
        info["output"] = [list(live[n]) if t == "STRING" and n in live else t
                          for t, n in zip(info["output"], info["output_name"])]
    return infos


def model_nodes(vaes: list[str], loras: list[str], upscale_models: list[str]) -> dict[str, Any]:
    """/object_info entries of ComfyUI 0.3.64's VAE, LoRA and upscale-model loaders (nodes.py,
    comfy_extras/nodes_upscale_model.py); VAELoader lists ComfyUI's built-in `pixel_space` after the files."""
    return {
        "VAELoader": _node("VAELoader", "loaders", {"vae_name": [[*vaes, "pixel_space"], {}]}, ["VAE"]),
        "LoraLoader": _node("LoraLoader", "loaders", {
            "model": ["MODEL", {}], "clip": ["CLIP", {}], "lora_name": [list(loras), {}],
            "strength_model": ["FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}],
            "strength_clip": ["FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}]},
            ["MODEL", "CLIP"]),
        "UpscaleModelLoader": _node("UpscaleModelLoader", "loaders", {"model_name": [list(upscale_models), {}]},
                                    ["UPSCALE_MODEL"]),
        "ImageUpscaleWithModel": _node("ImageUpscaleWithModel", "image/upscaling", {
            "upscale_model": ["UPSCALE_MODEL", {}], "image": ["IMAGE", {}]}, ["IMAGE"]),
    }


def caption_nodes() -> dict[str, Any]:
    """/object_info entries of the third-party captioning nodes the interrogate workflows use: WD14Tagger|pysssss
    (pythongosssss/ComfyUI-WD14-Tagger), BlipCaption (1038lab/ComfyUI-Blip), ShowText|pysssss
    (pythongosssss/ComfyUI-Custom-Scripts); inputs as their INPUT_TYPES declare them."""
    wd14_models = ["wd-v1-4-moat-tagger-v2", "wd-v1-4-convnext-tagger-v2", "wd-v1-4-swinv2-tagger-v2",
                   "wd-v1-4-convnextv2-tagger-v2", "wd-v1-4-vit-tagger-v2"]
    tagger = _node("WD14Tagger|pysssss", "image", {
        "image": ["IMAGE", {}], "model": [wd14_models, {}],
        "threshold": ["FLOAT", {"default": 0.35, "min": 0.0, "max": 1, "step": 0.05}],
        "character_threshold": ["FLOAT", {"default": 0.85, "min": 0.0, "max": 1, "step": 0.05}],
        "replace_underscore": ["BOOLEAN", {"default": False}], "trailing_comma": ["BOOLEAN", {"default": False}],
        "exclude_tags": ["STRING", {"default": ""}]}, ["STRING"], output_node=True)
    tagger["output_is_list"] = [True]
    blip = _node("BlipCaption", "🧪AILab/📝BlipCaption", {
        "image": ["IMAGE", {}],
        "model_name": [["Salesforce/blip-image-captioning-base", "Salesforce/blip-image-captioning-large"], {}],
        "max_length": ["INT", {"default": 50, "min": 1, "max": 100}],
        "use_nucleus_sampling": ["BOOLEAN", {"default": False}]}, ["STRING"], output_names=["caption"])
    show = _node("ShowText|pysssss", "utils", {"text": ["STRING", {"forceInput": True}]}, ["STRING"],
                 output_node=True, hidden={"unique_id": "UNIQUE_ID", "extra_pnginfo": "EXTRA_PNGINFO"})
    show["output_is_list"] = [True]
    return {"WD14Tagger|pysssss": tagger, "BlipCaption": blip, "ShowText|pysssss": show}


CAPTION_CLASSES = ("WD14Tagger|pysssss", "BlipCaption", "ShowText|pysssss")


DEFAULT_VAES = ["vae-ft-mse-840000-ema-pruned.safetensors"]
DEFAULT_LORAS = ["pixel_style.safetensors", "sub/other_lora.safetensors"]
DEFAULT_UPSCALE_MODELS = ["RealESRGAN_x4plus.pth", "4x_foolhardy.pth"]


def object_info_for(checkpoints: list[str], input_files: list[str], controlnets: list[str] | None = None, *,
                    pack: bool = True, vaes: list[str] | None = None, loras: list[str] | None = None,
                    upscale_models: list[str] | None = None) -> dict[str, Any]:
    """The subset of ComfyUI 0.3.64's /object_info the shipped workflows use (checked against a real server
    by tests/test_engine_comfyui.py), plus the Pixart pack's nodes unless `pack` is False."""
    files = sorted(input_files)
    hidden_save = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    controlnets = list(DEFAULT_CONTROLNETS if controlnets is None else controlnets)
    res = MAX_RES
    editor_nodes = {
        "InvertMask": _node("InvertMask", "mask", {"mask": ["MASK", {}]}, ["MASK"]),
        "EmptyImage": _node("EmptyImage", "image", {
            "width": ["INT", {"default": 512, "min": 1, "max": res, "step": 1}],
            "height": ["INT", {"default": 512, "min": 1, "max": res, "step": 1}],
            "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}],
            "color": ["INT", {"default": 0, "min": 0, "max": 16777215, "step": 1, "display": "color"}]}, ["IMAGE"]),
        "ImageCompositeMasked": _node("ImageCompositeMasked", "image", {
            "destination": ["IMAGE", {}], "source": ["IMAGE", {}],
            "x": ["INT", {"default": 0, "min": 0, "max": res, "step": 1}],
            "y": ["INT", {"default": 0, "min": 0, "max": res, "step": 1}],
            "resize_source": ["BOOLEAN", {"default": False}]}, ["IMAGE"], optional={"mask": ["MASK", {}]}),
        "Canny": _node("Canny", "image/preprocessors", {
            "image": ["IMAGE", {}],
            "low_threshold": ["FLOAT", {"default": 0.4, "min": 0.01, "max": 0.99, "step": 0.01}],
            "high_threshold": ["FLOAT", {"default": 0.8, "min": 0.01, "max": 0.99, "step": 0.01}]}, ["IMAGE"]),
        "ControlNetLoader": _node("ControlNetLoader", "loaders", {"control_net_name": [controlnets, {}]},
                                  ["CONTROL_NET"]),
        "ControlNetApplyAdvanced": _node("ControlNetApplyAdvanced", "conditioning/controlnet", {
            "positive": ["CONDITIONING", {}], "negative": ["CONDITIONING", {}], "control_net": ["CONTROL_NET", {}],
            "image": ["IMAGE", {}],
            "strength": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}],
            "start_percent": ["FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}],
            "end_percent": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}]},
            ["CONDITIONING", "CONDITIONING"], optional={"vae": ["VAE", {}]}, output_names=["positive", "negative"]),
        "ConditioningZeroOut": _node("ConditioningZeroOut", "advanced/conditioning",
                                     {"conditioning": ["CONDITIONING"]}, ["CONDITIONING"]),
    }
    models = model_nodes(DEFAULT_VAES if vaes is None else vaes, DEFAULT_LORAS if loras is None else loras,
                         DEFAULT_UPSCALE_MODELS if upscale_models is None else upscale_models)
    return {**_core_object_info(checkpoints, files, hidden_save), **editor_nodes, **models,
            **(pack_object_info() if pack else {})}


def _core_object_info(checkpoints: list[str], files: list[str], hidden_save: dict[str, Any]) -> dict[str, Any]:
    return {
        "CheckpointLoaderSimple": _node("CheckpointLoaderSimple", "loaders",
                                        {"ckpt_name": [list(checkpoints), {"tooltip": "The name of the checkpoint (model) to load."}]},
                                        ["MODEL", "CLIP", "VAE"]),
        "CLIPTextEncode": _node("CLIPTextEncode", "conditioning",
                                {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}], "clip": ["CLIP", {}]},
                                ["CONDITIONING"]),
        "CLIPSetLastLayer": _node("CLIPSetLastLayer", "conditioning", {
            "clip": ["CLIP", {}],
            "stop_at_clip_layer": ["INT", {"default": -1, "min": -24, "max": -1, "step": 1}]}, ["CLIP"]),
        "EmptyLatentImage": _node("EmptyLatentImage", "latent", {
            "width": ["INT", {"default": 512, "min": 16, "max": MAX_RES, "step": 8}],
            "height": ["INT", {"default": 512, "min": 16, "max": MAX_RES, "step": 8}],
            "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}]}, ["LATENT"]),
        "KSampler": _node("KSampler", "sampling", {
            "model": ["MODEL", {}],
            "seed": ["INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True}],
            "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
            "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}],
            "sampler_name": [SAMPLERS, {}], "scheduler": [SCHEDULERS, {}],
            "positive": ["CONDITIONING", {}], "negative": ["CONDITIONING", {}], "latent_image": ["LATENT", {}],
            "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]}, ["LATENT"]),
        "VAEDecode": _node("VAEDecode", "latent", {"samples": ["LATENT", {}], "vae": ["VAE", {}]}, ["IMAGE"]),
        "VAEEncode": _node("VAEEncode", "latent", {"pixels": ["IMAGE", {}], "vae": ["VAE", {}]}, ["LATENT"]),
        "VAEEncodeForInpaint": _node("VAEEncodeForInpaint", "latent/inpaint", {
            "pixels": ["IMAGE", {}], "vae": ["VAE", {}], "mask": ["MASK", {}],
            "grow_mask_by": ["INT", {"default": 6, "min": 0, "max": 64, "step": 1}]}, ["LATENT"]),
        "SetLatentNoiseMask": _node("SetLatentNoiseMask", "latent/inpaint",
                                    {"samples": ["LATENT", {}], "mask": ["MASK", {}]}, ["LATENT"]),
        "RepeatLatentBatch": _node("RepeatLatentBatch", "latent/batch", {
            "samples": ["LATENT", {}], "amount": ["INT", {"default": 1, "min": 1, "max": 64}]}, ["LATENT"]),
        "LatentMultiply": _node("LatentMultiply", "latent/advanced", {
            "samples": ["LATENT", {}],
            "multiplier": ["FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}]}, ["LATENT"]),
        "LatentCompositeMasked": _node("LatentCompositeMasked", "latent", {
            "destination": ["LATENT", {}], "source": ["LATENT", {}],
            "x": ["INT", {"default": 0, "min": 0, "max": MAX_RES, "step": 8}],
            "y": ["INT", {"default": 0, "min": 0, "max": MAX_RES, "step": 8}],
            "resize_source": ["BOOLEAN", {"default": False}]}, ["LATENT"], optional={"mask": ["MASK", {}]}),
        "LatentCrop": _node("LatentCrop", "latent/transform", {
            "samples": ["LATENT", {}],
            "width": ["INT", {"default": 512, "min": 64, "max": MAX_RES, "step": 8}],
            "height": ["INT", {"default": 512, "min": 64, "max": MAX_RES, "step": 8}],
            "x": ["INT", {"default": 0, "min": 0, "max": MAX_RES, "step": 8}],
            "y": ["INT", {"default": 0, "min": 0, "max": MAX_RES, "step": 8}]}, ["LATENT"]),
        "ImageBlend": _node("ImageBlend", "image/postprocessing", {
            "image1": ["IMAGE", {}], "image2": ["IMAGE", {}],
            "blend_factor": ["FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}],
            "blend_mode": [["normal", "multiply", "screen", "overlay", "soft_light", "difference"], {}]}, ["IMAGE"]),
        "LoadImage": _node("LoadImage", "image", {"image": [files, {"image_upload": True}]}, ["IMAGE", "MASK"]),
        "LoadImageMask": _node("LoadImageMask", "mask", {
            "image": [files, {"image_upload": True}], "channel": [["alpha", "red", "green", "blue"], {}]}, ["MASK"]),
        "ImageScale": _node("ImageScale", "image/upscaling", {
            "image": ["IMAGE", {}], "upscale_method": [UPSCALE, {}],
            "width": ["INT", {"default": 512, "min": 0, "max": MAX_RES, "step": 1}],
            "height": ["INT", {"default": 512, "min": 0, "max": MAX_RES, "step": 1}],
            "crop": [["disabled", "center"], {}]}, ["IMAGE"]),
        "ResizeAndPadImage": _node("ResizeAndPadImage", "image/transform", {
            "image": ["IMAGE", {}],
            "target_width": ["INT", {"default": 512, "min": 1, "max": MAX_RES, "step": 1}],
            "target_height": ["INT", {"default": 512, "min": 1, "max": MAX_RES, "step": 1}],
            "padding_color": [["white", "black"], {}],
            "interpolation": [["area", "bicubic", "nearest-exact", "bilinear", "lanczos"], {}]}, ["IMAGE"]),
        "MaskToImage": _node("MaskToImage", "mask", {"mask": ["MASK", {}]}, ["IMAGE"]),
        "ImageToMask": _node("ImageToMask", "mask", {
            "image": ["IMAGE", {}], "channel": [["red", "green", "blue", "alpha"], {}]}, ["MASK"]),
        "SaveImage": _node("SaveImage", "image", {
            "images": ["IMAGE", {"tooltip": "The images to save."}],
            "filename_prefix": ["STRING", {"default": "ComfyUI"}]}, [], output_node=True, hidden=hidden_save),
        "PreviewImage": _node("PreviewImage", "image", {"images": ["IMAGE", {}]}, [], output_node=True,
                              hidden=hidden_save),
        "SaveImageWebsocket": _node("SaveImageWebsocket", "api node/image/", {"images": ["IMAGE", {}]}, [],
                                    output_node=True),
    }


@dataclass
class _Val:
    """What flows along a link in the double: a kind and a size, never real tensors."""
    kind: str
    width: int = 0
    height: int = 0
    batch: int = 1
    data: Any = None  # a real value where the pack's own code made one (a Palette, AleaArt parameters)


class _Interrupted(Exception):
    pass


class _NodeFailure(Exception):
    def __init__(self, node: str, cls: str, message: str) -> None:
        super().__init__(message)
        self.node, self.cls = node, cls


@dataclass
class ComfyDouble:
    """Knobs (change them at any time):

    step_delay   seconds per KSampler step (progress messages are sent per step)
    node_delay   seconds per other node
    fail_class   a class_type that raises during execution (→ execution_error)
    fail_message its exception message
    drop_final   do not send the final `executing {node: null}` (the engine must fall back to /history)
    drop_success do not send `execution_success` (as a bridge that reconnected mid-run missed it)
    lose_images  image output nodes succeed but deliver nothing: no websocket frames, no `images` in /history
    previews     send a JPEG preview frame after each sampler step (ComfyUI with --preview-method)
    queue_delay  seconds GET /queue waits between reading the queue and answering (a long queue's answer)
    prompt_delay seconds POST /prompt takes before the prompt joins the queue (ComfyUI validating a large graph)
    prompt_fault  POST /prompt answers aiohttp's 500 to a prompt for which prompt_fault(prompt) is true (an exception
                 in ComfyUI's handler that it did not foresee)
    caption_packs  the third-party captioning nodes of the interrogate workflows are installed (`caption_nodes`)
    checkpoints  files in models/checkpoints
    controlnets  files in models/controlnet
    devices      what /system_stats lists under "devices": [{"name", "type"}] (the vram fields are filled in);
                 ComfyUI lists its one torch device, {"name": "cpu", "type": "cpu"} under `--cpu`
    """

    step_delay: float = 0.005
    node_delay: float = 0.0
    fail_class: str | None = None
    fail_message: str = "double: forced failure"
    drop_final: bool = False
    drop_success: bool = False
    lose_images: bool = False
    previews: bool = True
    caption_packs: bool = True
    axera_models: bool = False  # what the pack's /pixart/axera reports: an Axera model set on this "machine"
    checkpoints: list[str] = field(default_factory=lambda: ["tiny_sd15.safetensors", "other.safetensors"])
    devices: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "cpu", "type": "cpu"}])
    controlnets: list[str] = field(default_factory=lambda: list(DEFAULT_CONTROLNETS))
    vaes: list[str] = field(default_factory=lambda: list(DEFAULT_VAES))
    loras: list[str] = field(default_factory=lambda: list(DEFAULT_LORAS))
    upscale_models: list[str] = field(default_factory=lambda: list(DEFAULT_UPSCALE_MODELS))
    # /view_metadata/loras answers (safetensors __metadata__) by file; a file not listed has none (404)
    lora_metadata: dict[str, dict[str, str]] = field(default_factory=lambda: {
        "pixel_style.safetensors": {"ss_output_name": "pixelstyle", "ss_network_dim": "8",
                                    "ss_tag_frequency": '{"pixel": {"art": 3}}'}})
    # embeddings folder: name -> what the Pixart pack's /pixart/embeddings reports (None: the pack is absent)
    embeddings: dict[str, dict[str, Any]] | None = field(default_factory=lambda: {
        "easynegative": {"shape": 768, "vectors": 8, "step": None, "sd_checkpoint": None,
                         "sd_checkpoint_name": None}})
    port: int = 0
    queue_delay: float = 0.0
    prompt_delay: float = 0.0
    prompt_fault: Callable[[dict[str, Any]], bool] | None = None
    # Recorded for assertions:
    queue_reads: int = 0
    history_reads: int = 0
    prompts: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    interrupts: list[str | None] = field(default_factory=list)
    executed_prompts: list[str] = field(default_factory=list)
    timeline: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.inputs: dict[str, bytes] = {"example.png": _png(64, 64, (128, 128, 128))}
        # Where set, uploads are also written here and LoadImage reads them from here, as ComfyUI does.
        self.input_dir: Path | None = None
        self.files: dict[tuple[str, str, str], bytes] = {}
        self._reset_state()
        self._runner: web.AppRunner | None = None
        self._counter = 0

    def _reset_state(self) -> None:
        self.pending: list[tuple[float, int, str, dict[str, Any], dict[str, Any], list[str]]] = []
        self.running: tuple[float, str, dict[str, Any], dict[str, Any], list[str]] | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.metadata_clients: set[str] = set()
        self.number = 0
        self._interrupt = False
        self._wake = asyncio.Event()
        self._cache: set[str] = set()
        self._ui_cache: dict[str, Any] = {}
        self._worker: asyncio.Task[None] | None = None
        self._current_node: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def object_info(self) -> dict[str, Any]:
        info = object_info_for(self.checkpoints, list(self.inputs), self.controlnets, vaes=self.vaes,
                               loras=self.loras, upscale_models=self.upscale_models)
        return {**info, **caption_nodes()} if self.caption_packs else info

    # ------------------------------------------------------------------ server lifecycle
    async def start(self) -> ComfyDouble:
        if not self.port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        app = web.Application(client_max_size=100 * 1024 * 1024)
        r = app.router
        r.add_get("/ws", self._ws)
        r.add_get("/object_info", lambda req: web.json_response(self.object_info))
        r.add_get("/object_info/{cls}", self._object_info_one)
        r.add_get("/system_stats", self._system_stats)
        r.add_get("/features", lambda req: web.json_response({"supports_preview_metadata": True,
                                                              "max_upload_size": 104857600}))
        r.add_get("/prompt", lambda req: web.json_response({"exec_info": {"queue_remaining": self._remaining()}}))
        r.add_post("/prompt", self._post_prompt)
        r.add_get("/queue", self._get_queue)
        r.add_post("/queue", self._post_queue)
        r.add_post("/interrupt", self._post_interrupt)
        r.add_get("/history", self._get_history_all)
        r.add_get("/history/{pid}", self._get_history)
        r.add_post("/upload/image", self._upload)
        r.add_get("/view", self._view)
        r.add_get("/embeddings", lambda req: web.json_response(sorted(self.embeddings or {})))
        r.add_get("/view_metadata/{folder}", self._view_metadata)
        r.add_get("/pixart/embeddings", self._pixart_embeddings)
        r.add_get("/pixart/axera", self._pixart_axera)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self._worker = asyncio.create_task(self._work())
        return self

    async def stop(self) -> None:
        """Like killing the process: sockets drop, the queue and history (in memory) are lost."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker
        for ws in list(self.sockets.values()):
            with contextlib.suppress(Exception):
                await ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._reset_state()

    kill = stop

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    # ------------------------------------------------------------------ websocket
    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        old = self.sockets.get(sid)
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        self.sockets[sid] = ws
        self.metadata_clients.discard(sid)
        try:
            await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining":
                                                                                    self._remaining()}}, "sid": sid}})
            if self.running is not None and self.running[3].get("client_id") == sid and self._current_node:
                await ws.send_json({"type": "executing", "data": {"node": self._current_node}})
            first = True
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and first:
                    with contextlib.suppress(json.JSONDecodeError, AttributeError):
                        data = json.loads(msg.data)
                        if data.get("type") == "feature_flags":
                            if (data.get("data") or {}).get("supports_preview_metadata"):
                                self.metadata_clients.add(sid)
                            await ws.send_json({"type": "feature_flags", "data": {
                                "supports_preview_metadata": True, "max_upload_size": 104857600}})
                first = False
        finally:
            if self.sockets.get(sid) is ws:
                del self.sockets[sid]
        return ws

    async def _send(self, mtype: str, data: dict[str, Any], sid: str | None, *, broadcast_if_none: bool = False) -> None:
        if sid is None:
            if not broadcast_if_none:
                return
            targets = list(self.sockets.values())
        else:
            targets = [self.sockets[sid]] if sid in self.sockets else []
        for ws in targets:
            with contextlib.suppress(Exception):
                await ws.send_json({"type": mtype, "data": data})

    async def _send_image_frame(self, png: bytes, sid: str | None, node: str, prompt_id: str,
                                image_type: str = "image/png") -> None:
        if sid is None or sid not in self.sockets:
            return
        if sid in self.metadata_clients:
            meta = json.dumps({"node_id": node, "prompt_id": prompt_id, "display_node_id": node,
                               "parent_node_id": None, "real_node_id": node, "image_type": image_type}).encode()
            frame = struct.pack(">II", 4, len(meta)) + meta + png
        else:
            frame = struct.pack(">II", 1, 2 if image_type == "image/png" else 1) + png
        with contextlib.suppress(Exception):
            await self.sockets[sid].send_bytes(frame)

    async def _broadcast_status(self) -> None:
        await self._send("status", {"status": {"exec_info": {"queue_remaining": self._remaining()}}}, None,
                         broadcast_if_none=True)

    def _remaining(self) -> int:
        return len(self.pending) + (1 if self.running else 0)

    # ------------------------------------------------------------------ HTTP routes
    async def _view_metadata(self, request: web.Request) -> web.Response:
        # server.py: 404 unless a .safetensors file of the folder with a __metadata__ block
        name = request.query.get("filename", "")
        meta = self.lora_metadata.get(name) if request.match_info["folder"] == "loras" else None
        return web.json_response(meta) if meta is not None else web.Response(status=404)

    async def _pixart_axera(self, request: web.Request) -> web.Response:
        folder = request.query.get("model_dir") or "/comfyui/models/axera"
        if self.axera_models:
            return web.json_response({"model_dir": folder, "found": True, "img2img": True, "runtime": "onnxruntime",
                                      "reason": f"model set found in {folder}"})
        return web.json_response({"model_dir": folder, "found": False, "img2img": False, "runtime": "onnxruntime",
                                  "reason": f"{folder} is not a folder"})

    async def _pixart_embeddings(self, request: web.Request) -> web.Response:
        if self.embeddings is None:
            raise web.HTTPNotFound()
        return web.json_response(self.embeddings)

    async def _object_info_one(self, request: web.Request) -> web.Response:
        cls = request.match_info["cls"]
        info = self.object_info.get(cls)
        return web.json_response({cls: info} if info else {})

    async def _system_stats(self, request: web.Request) -> web.Response:
        return web.json_response({"system": {"os": "posix", "ram_total": 0, "ram_free": 0,
                                             "comfyui_version": "0.3.64", "python_version": "3.11",
                                             "pytorch_version": "double", "embedded_python": False,
                                             "argv": ["main.py", "--double"]},
                                  "devices": [{"name": d["name"], "type": d["type"], "index": i,
                                               "vram_total": 0, "vram_free": 0, "torch_vram_total": 0,
                                               "torch_vram_free": 0} for i, d in enumerate(self.devices)]})

    async def _post_prompt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
        if self.prompt_delay:
            await asyncio.sleep(self.prompt_delay)
        number = body.get("number")
        if number is None:
            number = self.number
            if body.get("front"):
                number = -number
        self.number += 1
        prompt = body.get("prompt")
        if not isinstance(prompt, dict):
            return _bad("no_prompt", "No prompt provided", "No prompt provided")
        if self.prompt_fault is not None and self.prompt_fault(prompt):
            return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
        partial = body.get("partial_execution_targets")
        ok, error, outputs, node_errors = self._validate(prompt, partial)
        if not ok:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        pid = body.get("prompt_id") or str(uuid.uuid4())
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        self.prompts.append({"prompt_id": pid, "prompt": prompt, "client_id": body.get("client_id"),
                             "partial_execution_targets": partial, "extra_data": extra})
        # When each prompt was queued, started and ended (or left the queue): which job's prompts overlapped.
        self.timeline[pid] = {"job": extra.get("pixart_job"), "queued": time.monotonic(), "started": None,
                              "ended": None}
        self._counter += 1
        heapq.heappush(self.pending, (float(number), self._counter, pid, prompt, extra, outputs))
        self._wake.set()
        await self._broadcast_status()
        return web.json_response({"prompt_id": pid, "number": number, "node_errors": node_errors})

    async def _get_queue(self, request: web.Request) -> web.Response:
        self.queue_reads += 1
        running = [[self.running[0], self.running[1], self.running[2], self.running[3], self.running[4]]] \
            if self.running else []
        pending = [[n, pid, p, e, o] for (n, _c, pid, p, e, o) in self.pending]
        if self.queue_delay:
            await asyncio.sleep(self.queue_delay)
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def _post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            for item in self.pending:
                if item[2] in self.timeline:
                    self.timeline[item[2]]["ended"] = time.monotonic()
            self.pending.clear()
        for pid in body.get("delete", []) or []:
            self.deleted.append(pid)
            if pid in self.timeline and any(item[2] == pid for item in self.pending):
                self.timeline[pid]["ended"] = time.monotonic()
            self.pending = [item for item in self.pending if item[2] != pid]
            heapq.heapify(self.pending)
        await self._broadcast_status()
        return web.Response(status=200)

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        body = {}
        with contextlib.suppress(Exception):
            body = await request.json()
        pid = (body or {}).get("prompt_id")
        self.interrupts.append(pid)
        if pid is None or (self.running is not None and self.running[1] == pid):
            self._interrupt = True
        return web.Response(status=200)

    async def _get_history_all(self, request: web.Request) -> web.Response:
        return web.json_response(self.history)

    async def _get_history(self, request: web.Request) -> web.Response:
        self.history_reads += 1
        pid = request.match_info["pid"]
        return web.json_response({pid: self.history[pid]} if pid in self.history else {})

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        image = form.get("image")
        if image is None or not hasattr(image, "file") or not image.filename:
            return web.Response(status=400)
        kind = form.get("type", "input")
        if kind != "input":
            return web.Response(status=500)
        subfolder = str(form.get("subfolder", ""))
        name = image.filename
        if "/" in name or ".." in name or ".." in subfolder:
            return web.Response(status=400)
        data = image.file.read()
        overwrite = str(form.get("overwrite", "")).lower() in ("true", "1")
        key = f"{subfolder}/{name}" if subfolder else name
        if key in self.inputs and not overwrite and self.inputs[key] != data:
            stem, dot, ext = name.rpartition(".")
            i = 1
            while True:
                name = f"{stem} ({i}).{ext}" if dot else f"{name} ({i})"
                key = f"{subfolder}/{name}" if subfolder else name
                if key not in self.inputs or self.inputs[key] == data:
                    break
                i += 1
        self.inputs[key] = data
        if self.input_dir is not None:
            (self.input_dir / key).parent.mkdir(parents=True, exist_ok=True)
            (self.input_dir / key).write_bytes(data)
        return web.json_response({"name": name, "subfolder": subfolder, "type": "input"})

    async def _view(self, request: web.Request) -> web.Response:
        name = request.query.get("filename")
        if not name:
            return web.Response(status=400)
        if ".." in name or name.startswith("/"):
            return web.Response(status=400)
        kind = request.query.get("type", "output")
        subfolder = request.query.get("subfolder", "")
        if ".." in subfolder:
            return web.Response(status=403)
        data = self.inputs.get(f"{subfolder}/{name}" if subfolder else name) if kind == "input" \
            else self.files.get((kind, subfolder, name))
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="image/png",
                            headers={"Content-Disposition": f'filename="{name}"'})

    # ------------------------------------------------------------------ validation (execution.py shapes)
    def _validate(self, prompt: dict[str, Any], partial: list[str] | None = None,
                  ) -> tuple[bool, dict[str, Any], list[str], dict[str, Any]]:
        info = self.object_info
        for nid, node in prompt.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return False, _err("invalid_prompt", "Cannot execute because a node is missing the class_type "
                                                     "property.", f"Node ID '#{nid}'"), [], {}
            if node["class_type"] not in info:
                return False, _err("invalid_prompt", f"Cannot execute because node {node['class_type']} does not "
                                                     f"exist.", f"Node ID '#{nid}'"), [], {}
        # partial_execution_targets keeps only the listed output nodes; other ids in it are ignored (as in
        # execution.validate_prompt).
        outputs = [nid for nid, node in prompt.items() if info[node["class_type"]].get("output_node")
                   and (partial is None or nid in partial)]
        if not outputs:
            return False, _err("prompt_no_outputs", "Prompt has no outputs", ""), [], {}
        node_errors: dict[str, Any] = {}
        good = []
        for out in outputs:
            failed = False
            for nid in _ancestors(prompt, out):
                errs = self._validate_node(prompt, nid)
                if errs:
                    failed = True
                    entry = node_errors.setdefault(nid, {"errors": errs, "dependent_outputs": [],
                                                         "class_type": prompt[nid]["class_type"]})
                    entry["dependent_outputs"].append(out)
            if not failed:
                good.append(out)
        if not good:
            return False, _err("prompt_outputs_failed_validation", "Prompt outputs failed validation", ""), [], \
                node_errors
        return True, {}, good, node_errors

    def _validate_node(self, prompt: dict[str, Any], nid: str) -> list[dict[str, Any]]:
        node = prompt[nid]
        spec = self.object_info[node["class_type"]]["input"]
        errors = []
        for section in ("required", "optional"):
            for name, (kind, *rest) in spec.get(section, {}).items():
                opts = rest[0] if rest else {}
                if name not in node["inputs"]:
                    if section == "required":
                        errors.append({"type": "required_input_missing", "message": "Required input is missing",
                                       "details": name, "extra_info": {"input_name": name}})
                    continue
                value = node["inputs"][name]
                if isinstance(value, list):
                    if len(value) != 2 or value[0] not in prompt:
                        errors.append({"type": "bad_linked_input", "message": "Bad linked input, must be a length-2 "
                                       "list of [string, int]", "details": f"{name}, {value}",
                                       "extra_info": {"input_name": name, "input_config": [kind, opts],
                                                      "received_value": value}})
                    continue
                if isinstance(kind, list):
                    if value not in kind:
                        listed = kind if len(kind) <= 20 else None
                        details = f"{name}: '{value}' not in {kind if listed else f'(list of length {len(kind)})'}"
                        errors.append({"type": "value_not_in_list", "message": "Value not in list", "details": details,
                                       "extra_info": {"input_name": name, "input_config": listed,
                                                      "received_value": value}})
                    continue
                if kind in ("INT", "FLOAT"):
                    try:
                        value = int(value) if kind == "INT" else float(value)
                    except (TypeError, ValueError):
                        errors.append({"type": "invalid_input_type",
                                       "message": f"Failed to convert an input value to a {kind} value",
                                       "details": f"{name}, {value}, invalid", "extra_info": {
                                           "input_name": name, "input_config": [kind, opts], "received_value": value}})
                        continue
                    if "min" in opts and value < opts["min"]:
                        errors.append({"type": "value_smaller_than_min",
                                       "message": f"Value {value} smaller than min of {opts['min']}", "details": name,
                                       "extra_info": {"input_name": name, "input_config": [kind, opts],
                                                      "received_value": value}})
                    if "max" in opts and value > opts["max"]:
                        errors.append({"type": "value_bigger_than_max",
                                       "message": f"Value {value} bigger than max of {opts['max']}", "details": name,
                                       "extra_info": {"input_name": name, "input_config": [kind, opts],
                                                      "received_value": value}})
        if node["class_type"] in ("LoadImage", "LoadImageMask") and "image" in node["inputs"] \
                and not isinstance(node["inputs"]["image"], list) and node["inputs"]["image"] not in self.inputs:
            errors = [e for e in errors if e["type"] != "value_not_in_list"]
            errors.append({"type": "custom_validation_failed", "message": "Custom validation failed for node",
                           "details": f"image - Invalid image file: {node['inputs']['image']}",
                           "extra_info": {"input_name": "image"}})
        return errors

    # ------------------------------------------------------------------ execution
    async def _work(self) -> None:
        while True:
            while not self.pending:
                self._wake.clear()
                await self._wake.wait()
            number, _c, pid, prompt, extra, outputs = heapq.heappop(self.pending)
            self.running = (number, pid, prompt, extra, outputs)
            if pid in self.timeline:
                self.timeline[pid]["started"] = time.monotonic()
            self._interrupt = False
            await self._broadcast_status()
            try:
                await self._execute(pid, prompt, extra, outputs)
            finally:
                if pid in self.timeline:
                    self.timeline[pid]["ended"] = time.monotonic()
                self.running = None
                self._current_node = None
                await self._broadcast_status()
                if not self.drop_final:
                    await self._send("executing", {"node": None, "prompt_id": pid}, extra.get("client_id"))

    async def _execute(self, pid: str, prompt: dict[str, Any], extra: dict[str, Any], outputs: list[str]) -> None:
        sid = extra.get("client_id")
        messages: list[list[Any]] = []

        async def message(mtype: str, data: dict[str, Any], *, broadcast: bool = False) -> None:
            data = {**data, "prompt_id": pid, "timestamp": int(time.time() * 1000)}
            messages.append([mtype, data])
            await self._send(mtype, data, sid, broadcast_if_none=broadcast)

        await message("execution_start", {})
        needed: list[str] = []
        for out in outputs:
            for nid in _topo(prompt, out):
                if nid not in needed:
                    needed.append(nid)
        sigs = {nid: _signature(prompt, nid, self.inputs) for nid in needed}
        cached = [nid for nid in needed if sigs[nid] in self._cache
                  and prompt[nid]["class_type"] not in ("SaveImage", "PreviewImage", "SaveImageWebsocket")]
        await message("execution_cached", {"nodes": cached})
        values: dict[str, tuple[_Val | None, ...]] = {}
        ui_outputs: dict[str, Any] = {}
        executed: list[str] = []
        try:
            for nid in needed:
                values[nid] = self._evaluate(prompt, nid, values)
                if nid in cached:
                    # ComfyUI reports a cached node's ui dict again, in `executed` and in /history.
                    ui = self._ui_cache.get(sigs[nid])
                    if ui is not None:
                        ui_outputs[nid] = ui
                    await self._send("executed", {"node": nid, "display_node": nid, "output": ui,
                                                  "prompt_id": pid}, sid)
                    continue
                self._current_node = nid
                await self._send("executing", {"node": nid, "display_node": nid, "prompt_id": pid}, sid)
                await self._run_node(pid, prompt, nid, values, sid, ui_outputs)
                executed.append(nid)
                if nid in ui_outputs:
                    await self._send("executed", {"node": nid, "display_node": nid, "output": ui_outputs[nid],
                                                  "prompt_id": pid}, sid)
        except _Interrupted:
            await message("execution_interrupted", {"node_id": self._current_node,
                                                    "node_type": prompt[self._current_node]["class_type"],
                                                    "executed": executed}, broadcast=True)
            self._finish_history(pid, prompt, extra, outputs, ui_outputs, "error", False, messages)
            return
        except _NodeFailure as exc:
            await message("execution_error", {"node_id": exc.node, "node_type": exc.cls, "executed": executed,
                                              "exception_message": str(exc), "exception_type": "RuntimeError",
                                              "traceback": ["Traceback (double)"], "current_inputs": {},
                                              "current_outputs": []})
            self._finish_history(pid, prompt, extra, outputs, ui_outputs, "error", False, messages)
            return
        self._cache = set(sigs.values())
        self._ui_cache = {sigs[nid]: ui for nid, ui in ui_outputs.items() if nid in sigs}
        self.executed_prompts.append(pid)
        if self.drop_success:
            messages.append(["execution_success", {"prompt_id": pid, "timestamp": int(time.time() * 1000)}])
        else:
            await message("execution_success", {})
        self._finish_history(pid, prompt, extra, outputs, ui_outputs, "success", True, messages)

    def _finish_history(self, pid: str, prompt: dict[str, Any], extra: dict[str, Any], outputs: list[str],
                        ui_outputs: dict[str, Any], status: str, completed: bool, messages: list[Any]) -> None:
        self.history[pid] = {
            "prompt": [0, pid, prompt, {"client_id": extra.get("client_id")}, outputs],
            "outputs": ui_outputs,
            "status": {"status_str": status, "completed": completed, "messages": messages},
            "meta": {nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
                     for nid in ui_outputs},
        }

    async def _run_node(self, pid: str, prompt: dict[str, Any], nid: str, values: dict[str, Any], sid: str | None,
                        ui_outputs: dict[str, Any]) -> None:
        node = prompt[nid]
        cls, inputs = node["class_type"], node["inputs"]
        if cls not in _pack_classes():
            inputs = _scalars(inputs, values)
        if self.fail_class == cls:
            raise _NodeFailure(nid, cls, self.fail_message)
        if cls in ("KSampler", "KSamplerAdvanced"):
            steps = int(inputs.get("steps", 1))
            latent = _input_val(inputs.get("latent_image"), values)
            for step in range(1, steps + 1):
                await asyncio.sleep(self.step_delay)
                if self._interrupt:
                    raise _Interrupted()
                await self._send("progress", {"value": step, "max": steps, "prompt_id": pid, "node": nid}, sid,
                                 broadcast_if_none=True)
                if self.previews:
                    # As ComfyUI with --preview-method: a JPEG of the latent at 1/8 size after each step.
                    w, h = (max(1, latent.width // 8), max(1, latent.height // 8)) if latent else (8, 8)
                    await self._send_image_frame(_jpeg(w, h, (step * 255 // steps, 0, 0)), sid, nid, pid,
                                                 "image/jpeg")
            return
        await asyncio.sleep(self.node_delay)
        if self._interrupt:
            raise _Interrupted()
        if cls in _pack_classes():
            self._run_pack(pid, prompt, nid, values, ui_outputs)
            return
        if cls in ("WD14Tagger|pysssss", "ShowText|pysssss"):
            # Their ui lists the text (tags of each image; the text shown), as the packs report it.
            ui_outputs[nid] = {"tags" if cls.startswith("WD14") else "text": [values[nid][0].data]}
            return
        if cls in ("SaveImage", "PreviewImage", "SaveImageWebsocket"):
            img = _input_val(inputs.get("images"), values)
            if img is None or img.kind != "image":
                raise _NodeFailure(nid, cls, "images input is not an IMAGE")
            seed = _graph_seed(prompt)
            # SaveImage and PreviewImage embed the graph as ComfyUI does (nodes.py: `prompt` text chunk).
            meta = None if cls == "SaveImageWebsocket" else {"prompt": json.dumps(prompt)}
            pngs = [_png(img.width, img.height, _colour(seed, pid, i), meta) for i in range(img.batch)]
            if self.lose_images:
                return
            if cls == "SaveImageWebsocket":
                for i, png in enumerate(pngs):
                    await self._send("progress", {"value": i + 1, "max": len(pngs), "prompt_id": pid, "node": nid},
                                     sid, broadcast_if_none=True)
                    await self._send_image_frame(png, sid, nid, pid)
                return
            kind = "output" if cls == "SaveImage" else "temp"
            prefix = str(inputs.get("filename_prefix", "ComfyUI")) if cls == "SaveImage" else "ComfyUI_temp_dbl"
            subfolder, _, base = prefix.rpartition("/")
            images = []
            for png in pngs:
                n = sum(1 for (k, s, _f) in self.files if k == kind and s == subfolder) + 1
                fname = f"{base}_{n:05d}_.png"
                self.files[(kind, subfolder, fname)] = png
                images.append({"filename": fname, "subfolder": subfolder, "type": kind})
            ui_outputs[nid] = {"images": images}

    def _evaluate(self, prompt: dict[str, Any], nid: str, values: dict[str, Any]) -> tuple[_Val | None, ...]:
        """Sizes along the graph, the way ComfyUI's nodes would produce them."""
        node = prompt[nid]
        cls, inp = node["class_type"], node["inputs"]
        if cls not in _pack_classes():
            inp = _scalars(inp, values)
        get = lambda name: _input_val(inp.get(name), values)  # noqa: E731
        if cls == "EmptyLatentImage":
            return (_Val("latent", int(inp["width"]) // 8 * 8, int(inp["height"]) // 8 * 8, int(inp["batch_size"])),)
        if cls in ("LoadImage", "LoadImageMask"):
            data = self.inputs[inp["image"]]
            if self.input_dir is not None:  # ComfyUI reads the file as the node runs
                try:
                    data = (self.input_dir / inp["image"]).read_bytes()
                except OSError as exc:
                    raise _NodeFailure(nid, cls, str(exc)) from None
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
            return (_Val("image", w, h), _Val("mask", w, h)) if cls == "LoadImage" else (_Val("mask", w, h),)
        if cls == "ImageScale":
            src = get("image")
            w, h = int(inp["width"]), int(inp["height"])
            if w == 0 and h == 0:
                w, h = src.width, src.height
            elif w == 0:
                w = max(1, round(src.width * h / src.height))
            elif h == 0:
                h = max(1, round(src.height * w / src.width))
            return (_Val("image", w, h, src.batch),)
        if cls == "ResizeAndPadImage":
            src = get("image")
            return (_Val("image", int(inp["target_width"]), int(inp["target_height"]), src.batch),)
        if cls == "MaskToImage":
            src = get("mask")
            return (_Val("image", src.width, src.height, src.batch),)
        if cls == "ImageToMask":
            src = get("image")
            return (_Val("mask", src.width, src.height, src.batch),)
        if cls in ("VAEEncode", "VAEEncodeForInpaint"):
            src = get("pixels")
            return (_Val("latent", src.width // 8 * 8, src.height // 8 * 8, src.batch),)
        if cls in ("SetLatentNoiseMask", "LatentMultiply"):
            return (get("samples"),)
        if cls == "LatentCrop":
            src = get("samples")
            x = min(int(inp["x"]) // 8, max(0, src.width // 8 - 8))
            y = min(int(inp["y"]) // 8, max(0, src.height // 8 - 8))
            return (_Val("latent", min(int(inp["width"]) // 8, src.width // 8 - x) * 8,
                         min(int(inp["height"]) // 8, src.height // 8 - y) * 8, src.batch),)
        if cls == "UpscaleModelLoader":
            return (_Val("upscale_model"),)
        if cls == "ImageUpscaleWithModel":
            src = get("image")  # the double's upscale models are all 4x ones
            return (_Val("image", src.width * 4, src.height * 4, src.batch),)
        if cls == "ImageBlend":
            return (get("image1"),)
        if cls in CAPTION_CLASSES:
            src = get("image") or get("text")
            return (_Val("string", data=src.data if src is not None and src.kind == "string" else
                         f"a picture of {src.width}x{src.height} pixels" if src is not None else ""),)
        if cls == "LatentCompositeMasked":
            return (get("destination"),)
        if cls == "RepeatLatentBatch":
            src = get("samples")
            return (_Val("latent", src.width, src.height, src.batch * int(inp["amount"])),)
        if cls in ("KSampler", "KSamplerAdvanced"):
            return (get("latent_image"),)
        if cls == "VAEDecode":
            src = get("samples")
            return (_Val("image", src.width, src.height, src.batch),)
        if cls == "EmptyImage":
            return (_Val("image", int(inp["width"]), int(inp["height"]), int(inp["batch_size"])),)
        if cls == "ImageCompositeMasked":
            return (get("destination"),)
        if cls in ("InvertMask", "Canny"):
            return (get("mask" if cls == "InvertMask" else "image"),)
        if cls == "ControlNetLoader":
            return (_Val("control_net"),)
        if cls == "ControlNetApplyAdvanced":
            return (_Val("conditioning"), _Val("conditioning"))
        if cls in _pack_classes():
            try:
                return self._evaluate_pack(prompt, nid, values)
            except (ValueError, TypeError, KeyError) as exc:
                raise _NodeFailure(nid, cls, str(exc)) from None
        return (None, None, None)

    def _evaluate_pack(self, prompt: dict[str, Any], nid: str, values: dict[str, Any]) -> tuple[_Val | None, ...]:
        """Pixart pack nodes: sizes from the pack's own code where it decides them, else from the inputs."""
        node = prompt[nid]
        cls, inp = node["class_type"], node["inputs"]
        node_cls = _pack_classes()[cls]
        get = lambda name: _input_val(inp.get(name), values)  # noqa: E731
        if cls == "PixartPixelate":
            src = get("image")
            # Run on a blank image of the input's size: the output size is the pack's own arithmetic.
            import torch
            blank = torch.zeros((1, src.height, src.width, 3))
            widgets = {k: v for k, v in inp.items() if k not in ("image", "mask")}
            out = getattr(node_cls(), node_cls.FUNCTION)(image=blank, **widgets)[0]
            h, w = int(out.shape[1]), int(out.shape[2])
            return (_Val("image", w, h, src.batch), _Val("mask", w, h, src.batch))
        if cls == "PixartPalette" and inp.get("source") in ("named", "hex"):
            # named and hex palettes do not read the image input: the node runs on its widgets alone
            widgets = {k: v for k, v in inp.items() if not _is_link(v)}
            palette, swatch, count = getattr(node_cls(), node_cls.FUNCTION)(**widgets)
            return (_Val("palette", data=palette), _Val("image", int(swatch.shape[2]), int(swatch.shape[1])),
                    _Val("int", data=int(count)))
        if cls == "PixartAleaArtParams" and not any(_is_link(v) for v in inp.values()):
            res = getattr(node_cls(), node_cls.FUNCTION)(**inp)
            return tuple(_Val("value", data=v) for v in res["result"])
        if cls == "PixartLatentUpscale":
            src = get("samples")
            return (_Val("latent", int(inp["width"]) // 8 * 8, int(inp["height"]) // 8 * 8, src.batch),)
        if cls in ("PixartTileSplit", "PixartTileMerge"):
            from pixart_nodes.core.tiling import grid_positions

            if cls == "PixartTileMerge":
                ref = get("reference")
                return (_Val("image", ref.width, ref.height, ref.batch),)
            src = get("image")
            layout = grid_positions(src.width, src.height, int(inp["tile_width"]), int(inp["tile_height"]),
                                    int(inp["overlap"]))
            count = sum(len(xs) for _, xs in layout) * src.batch
            return (_Val("image", int(inp["tile_width"]), int(inp["tile_height"]), count),)
        if cls in ("PixartAxeraTxt2Img", "PixartAxeraImg2Img"):
            # The LCM SD1.5 UNet works at 512x512 (the Axera models are compiled for that size).
            src = get("image")
            batch = int(inp.get("batch_size", 1)) if not _is_link(inp.get("batch_size")) else 1
            return (_Val("image", 512, 512, src.batch if src else batch), _Val("string"))
        # Generic: an IMAGE/MASK output has the node's width/height inputs, else its first image's size.
        src = get("image")
        w, h = inp.get("width"), inp.get("height")
        if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
            size = (w, h)
        elif src is not None:
            size = (src.width, src.height)
        else:
            size = (512, 512)
        batch = src.batch if src is not None else 1
        return tuple(_Val(t.lower(), size[0], size[1], batch) if t in ("IMAGE", "MASK") else _Val(str(t).lower())
                     for t in node_cls.RETURN_TYPES)

    def _run_pack(self, pid: str, prompt: dict[str, Any], nid: str, values: dict[str, Any],
                  ui_outputs: dict[str, Any]) -> None:
        """The ui dicts the pack's nodes report, from the pack's own code where that needs no models."""
        node = prompt[nid]
        cls, inp = node["class_type"], node["inputs"]
        get = lambda name: _input_val(inp.get(name), values)  # noqa: E731
        if cls == "PixartRGB565":
            src = get("image")
            if src is None or src.kind != "image":
                raise _NodeFailure(nid, cls, "image input is not an IMAGE")
            from pixart_nodes.core.tensors import uint8_to_image
            seed = _graph_seed(prompt)
            pictures = uint8_to_image([_picture(src.width, src.height, _colour(seed, pid, i)) for i in range(src.batch)])
            widgets = {k: v for k, v in inp.items() if k not in ("image", "mask") and not _is_link(v)}
            # The double has no output folder, so no .bin files: only the bytes the node reports.
            widgets["save_file"] = False
            try:
                node_cls = _pack_classes()[cls]
                ui_outputs[nid] = getattr(node_cls(), node_cls.FUNCTION)(image=pictures, **widgets)["ui"]
            except (ValueError, TypeError) as exc:
                raise _NodeFailure(nid, cls, str(exc)) from None
        elif cls == "PixartQuantize":
            palette = get("palette")
            image = get("image")
            n = len(palette.data.colors) if palette is not None and palette.data is not None else 16
            ui_outputs[nid] = {"colors_used": [min(n, image.width * image.height if image else n)]}
        elif cls == "PixartSaveIndexed":
            # Real indexed files from the pack's own encoder, on a picture made of the palette's colours.
            import numpy as np

            from pixart_nodes.core import indexed
            from pixart_nodes.core.palette import named_palette

            image, palette = get("images"), get("palette")
            if image is None or image.kind != "image":
                raise _NodeFailure(nid, cls, "images input is not an IMAGE")
            pal = palette.data if palette is not None and palette.data is not None else named_palette("pico-8")
            seed = _graph_seed(prompt)
            frames = [pal.colors[(np.arange(image.width * image.height).reshape(image.height, image.width) + seed + i)
                                 % len(pal)] for i in range(image.batch)]
            fmt = inp.get("format", "png")
            subfolder, _, base = str(inp.get("filename_prefix", "pixart_indexed")).rpartition("/")
            blobs = [indexed.indexed_gif(frames, pal)] if fmt == "gif" else [indexed.indexed_png(f, pal)
                                                                            for f in frames]
            images = []
            for data in blobs:
                n = sum(1 for (k, s, _f) in self.files if k == "output" and s == subfolder) + 1
                fname = f"{base}_{n:05d}_.{fmt}"
                self.files[("output", subfolder, fname)] = data
                images.append({"filename": fname, "subfolder": subfolder, "type": "output"})
            ui_outputs[nid] = {"images": images}
        elif cls == "PixartAleaArtParams" and not any(_is_link(v) for v in inp.values()):
            node_cls = _pack_classes()[cls]
            ui_outputs[nid] = getattr(node_cls(), node_cls.FUNCTION)(**inp)["ui"]
        elif cls in ("PixartAxeraTxt2Img", "PixartAxeraImg2Img"):
            ui_outputs[nid] = {"axera_timings": [{"total_ms": 0.0, "double": True}],
                               "text": ["double: no NPU, no timings"]}


def _bad(kind: str, message: str, details: str) -> web.Response:
    return web.json_response({"error": _err(kind, message, details), "node_errors": {}}, status=400)


def _err(kind: str, message: str, details: str) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def _input_val(value: Any, values: dict[str, Any]) -> _Val | None:
    if isinstance(value, list) and len(value) == 2 and value[0] in values:
        outs = values[value[0]]
        return outs[value[1]] if value[1] < len(outs) else None
    return None


def _scalars(inputs: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Inputs with links to a pack node's plain values (AleaArt's width, steps, ...) replaced by those values, as
    ComfyUI hands a core node the linked INT/FLOAT/COMBO value itself."""
    out = dict(inputs)
    for name, v in inputs.items():
        if _is_link(v):
            val = _input_val(v, values)
            if val is not None and val.kind == "value" and val.data is not None:
                out[name] = val.data
    return out


def _ancestors(prompt: dict[str, Any], root: str) -> list[str]:
    return _topo(prompt, root)


def _topo(prompt: dict[str, Any], root: str) -> list[str]:
    order: list[str] = []

    def visit(nid: str) -> None:
        if nid in order or nid not in prompt:
            return
        for v in prompt[nid].get("inputs", {}).values():
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
                visit(v[0])
        order.append(nid)

    visit(root)
    return order


def _signature(prompt: dict[str, Any], nid: str, inputs: dict[str, bytes], memo: dict[str, str] | None = None) -> str:
    memo = {} if memo is None else memo
    if nid in memo:
        return memo[nid]
    node = prompt[nid]
    parts = [node["class_type"]]
    for name, v in sorted(node["inputs"].items()):
        if isinstance(v, list) and len(v) == 2 and v[0] in prompt:
            parts.append(f"{name}=<{_signature(prompt, v[0], inputs, memo)}:{v[1]}>")
        else:
            parts.append(f"{name}={json.dumps(v, sort_keys=True)}")
            if node["class_type"] in ("LoadImage", "LoadImageMask") and name == "image" and v in inputs:
                parts.append(hashlib.sha256(inputs[v]).hexdigest())  # LoadImage's IS_CHANGED hashes the file
    memo[nid] = hashlib.sha256("|".join(parts).encode()).hexdigest()
    return memo[nid]


def _graph_seed(prompt: dict[str, Any]) -> int:
    for node in prompt.values():
        seed = node["inputs"].get("seed", node["inputs"].get("noise_seed"))
        if isinstance(seed, int):
            return seed
    return 0


def _colour(seed: int, pid: str, index: int) -> tuple[int, int, int]:
    h = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return h[0], h[1], h[2]


def _picture(width: int, height: int, colour: tuple[int, int, int]) -> np.ndarray:
    """The picture the double "generates": one colour, with a gradient first row so that it depends on its size."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = colour
    img[0] = 0
    img[0, :, 0] = np.arange(width) * 255 // max(1, width - 1)
    return img


def _jpeg(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _png(width: int, height: int, colour: tuple[int, int, int], text: dict[str, str] | None = None) -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.fromarray(_picture(width, height, colour)).save(out, format="PNG", compress_level=1, pnginfo=info)
    return out.getvalue()


@functools.lru_cache(maxsize=1)
def _pack_classes() -> dict[str, type]:
    import pixart_nodes

    return dict(pixart_nodes.NODE_CLASS_MAPPINGS)


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def style_nodes(clip_vision: list[str], style_models: list[str]) -> dict[str, Any]:
    """/object_info entries of ComfyUI 0.3.64's style nodes (nodes.py; compared with a real server in
    test_jobs_api_comfyui.py)."""
    return {
        "CLIPVisionLoader": _node("CLIPVisionLoader", "loaders", {"clip_name": [list(clip_vision), {}]},
                                  ["CLIP_VISION"]),
        "CLIPVisionEncode": _node("CLIPVisionEncode", "conditioning", {
            "clip_vision": ["CLIP_VISION", {}], "image": ["IMAGE", {}], "crop": [["center", "none"], {}]},
            ["CLIP_VISION_OUTPUT"]),
        "StyleModelLoader": _node("StyleModelLoader", "loaders", {"style_model_name": [list(style_models), {}]},
                                  ["STYLE_MODEL"]),
        "StyleModelApply": _node("StyleModelApply", "conditioning/style_model", {
            "conditioning": ["CONDITIONING", {}], "style_model": ["STYLE_MODEL", {}],
            "clip_vision_output": ["CLIP_VISION_OUTPUT", {}],
            "strength": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.001}],
            "strength_type": [["multiply", "attn_bias"], {}]}, ["CONDITIONING"]),
    }


@dataclass
class StyleDouble(ComfyDouble):
    """The protocol double plus the core style-transfer nodes and their model folders."""

    clip_vision: list[str] = field(default_factory=lambda: ["clip_vision_l.safetensors"])
    style_models: list[str] = field(default_factory=lambda: ["t2i_style.safetensors"])

    @property
    def object_info(self) -> dict[str, Any]:
        return {**super().object_info, **style_nodes(self.clip_vision, self.style_models)}


@pytest_asyncio.fixture
async def comfy_double():
    """A running ComfyUI protocol double (`.url`, knobs, `.kill()`, `.restart()`, recorded requests)."""
    double = ComfyDouble()
    await double.start()
    try:
        yield double
    finally:
        await double.stop()
