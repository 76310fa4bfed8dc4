"""Tiny random-weight models that a real ComfyUI loads as genuine SD1.5 files.

Nothing here is a stand-in: the tensors are built by instantiating ComfyUI's own module classes (UNetModel,
CLIPTextModel, TAESD, ControlNet) in a child process whose ``sys.path`` holds the ComfyUI checkout, so the key
names and shapes are whatever that ComfyUI version expects. The builder then asks ComfyUI's own detector
(``comfy.model_detection``) whether the checkpoint is SD15 and refuses to write a file it would not load.
The child process matters: ComfyUI ships top-level packages named ``app``, ``utils`` and ``comfy`` that must not
leak into the pytest process.

Why these sizes (see shared reference comfyui.md §6): SD15 detection pins model_channels=320 and
context_dim=768 but not the depth, so the UNet is 1 level x 1 res block x transformer depth 1. CLIP-L cannot be
shrunk through CheckpointLoaderSimple (its config is fixed), so it dominates the file (~250 MB in fp16). The VAE
is TAESD (2.4 M params) instead of the 84 M-param SD VAE.

Layout written under ``dest_dir`` (one sub-folder per ComfyUI model folder key)::

    checkpoints/pixart_tiny_sd15.safetensors
    controlnet/pixart_tiny_controlnet.safetensors
    extra_model_paths.yaml          (written by write_extra_model_paths)

Adding models (e.g. the style-transfer pair, CLIP vision + style model): write a ``_build_<name>(dest, ...)``
function in the BUILDERS section below that returns the file's path relative to ``dest``, add it to
``BUILDERS`` and its folder key to ``MODEL_FOLDERS``. ``build_tiny_models`` then returns its path under the same
key, and the yaml exposes the folder to ComfyUI.

This module imports with the standard library only; torch and ComfyUI are imported in the child.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

TINY_CHECKPOINT = "pixart_tiny_sd15.safetensors"
TINY_CONTROLNET = "pixart_tiny_controlnet.safetensors"
TINY_LORA = "pixart_tiny_lora.safetensors"
TINY_VAE = "pixart_tiny_vae.safetensors"
TINY_EMBEDDING = "pixart_tiny_embedding.safetensors"

# ComfyUI model-folder keys this module may fill; each gets a line in extra_model_paths.yaml. "axera": the
# Axera integration tests link their tiny model set there (tiny_axera.axera_build), since requests to the bridge
# name only a sub-folder of the Axera model folders.
MODEL_FOLDERS: tuple[str, ...] = ("checkpoints", "controlnet", "clip_vision", "style_models", "loras", "vae",
                                  "embeddings", "upscale_models", "axera")

_STAMP = ".pixart_tiny_models.json"
_DECODER_GAIN = 10.0

# The UNet layout shared by the checkpoint and the ControlNet (a ControlNet must mirror its UNet's blocks).
_UNET_CONFIG: dict[str, Any] = {
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [1],
    "channel_mult": [1],
    "transformer_depth": [1],
    "transformer_depth_output": [1, 1],
    "transformer_depth_middle": 1,
    "context_dim": 768,
    "use_linear_in_transformer": False,
    "adm_in_channels": None,
    "use_spatial_transformer": True,
    "legacy": False,
    "use_checkpoint": False,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
    "num_heads": 8,
    "num_head_channels": -1,
}


class TinyModelBuildError(RuntimeError):
    """The child process could not build the models; the message carries its output."""


def _expected_paths(dest: Path) -> dict[str, Path]:
    return {
        "checkpoint": dest / "checkpoints" / TINY_CHECKPOINT,
        "controlnet": dest / "controlnet" / TINY_CONTROLNET,
        "lora": dest / "loras" / TINY_LORA,
        "vae": dest / "vae" / TINY_VAE,
        "embedding": dest / "embeddings" / TINY_EMBEDDING,
    }


def build_tiny_models(dest_dir: str | os.PathLike[str], comfyui_dir: str | os.PathLike[str] | None = None,
                      python: str | None = None, timeout: float = 600.0) -> dict[str, Path]:
    """Build (or reuse a matching earlier build of) the tiny models under ``dest_dir``.

    Returns ``{"checkpoint": Path, "controlnet": Path, "root": Path}``; the file names are what ComfyUI lists in
    ``CheckpointLoaderSimple.ckpt_name`` / ``ControlNetLoader.control_net_name`` (``TINY_CHECKPOINT``,
    ``TINY_CONTROLNET``). ``comfyui_dir`` defaults to ``find_comfyui()``; ``python`` to this interpreter (it
    needs torch, safetensors and ComfyUI's requirements).
    """
    dest = Path(dest_dir).resolve()
    return run_cached_builder(Path(__file__), dest, comfyui_dir, _expected_paths(dest), _STAMP, [Path(__file__)],
                              TinyModelBuildError, "tiny models", python=python, timeout=timeout)


def run_cached_builder(script: Path, dest: Path, comfyui_dir: str | os.PathLike[str] | None,
                       paths: dict[str, Path], stamp_name: str, sources: list[Path], error: type[Exception],
                       what: str, *, python: str | None = None, timeout: float = 600.0) -> dict[str, Path]:
    """Run ``script --comfyui DIR --dest DEST`` in a child process unless an earlier build still matches.

    A build is reused only while every file in ``paths`` exists and the stamp's fingerprint (the builder
    ``sources`` plus ComfyUI's version file) is unchanged: models built by older code must not pass for new ones.
    """
    if comfyui_dir is None:
        from bridge.comfyui_home import find_comfyui

        comfyui_dir = find_comfyui()
        if comfyui_dir is None:
            raise error("no ComfyUI checkout found (set COMFYUI_DIR)")
    comfy = Path(comfyui_dir).resolve()
    h = hashlib.sha256()
    for source in sources:
        h.update(source.read_bytes())
    version_file = comfy / "comfyui_version.py"
    if version_file.is_file():
        h.update(version_file.read_bytes())
    fingerprint = h.hexdigest()
    stamp = dest / stamp_name
    try:
        cached = json.loads(stamp.read_text())
    except (OSError, ValueError):
        cached = None
    if not (isinstance(cached, dict) and cached.get("fingerprint") == fingerprint
            and all(p.is_file() for p in paths.values())):
        dest.mkdir(parents=True, exist_ok=True)
        cmd = [python or sys.executable, str(script.resolve()), "--comfyui", str(comfy), "--dest", str(dest)]
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(dest))
        if proc.returncode != 0:
            raise error(f"building {what} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise error(f"builder exited 0 but did not write {missing}")
        stamp.write_text(json.dumps({"fingerprint": fingerprint, "files": {k: str(v) for k, v in paths.items()}}))
    return {**paths, "root": dest}


def write_extra_model_paths(yaml_path: str | os.PathLike[str], models_root: str | os.PathLike[str],
                            name: str = "pixart_tests") -> Path:
    """Write an ``extra_model_paths.yaml`` pointing ComfyUI's model folders at ``models_root``.

    Written by hand (JSON strings are valid YAML scalars) so no YAML library is needed here.
    """
    root = Path(models_root).resolve()
    lines = [f"{name}:", f"    base_path: {json.dumps(str(root))}"]
    lines += [f"    {folder}: {json.dumps(folder)}" for folder in MODEL_FOLDERS]
    out = Path(yaml_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


# --------------------------------------------------------------------------------------------------------------
# Child-process side: everything below runs with the ComfyUI checkout on sys.path.
# --------------------------------------------------------------------------------------------------------------

def _randomize(module: Any, torch: Any, seed: int) -> None:
    """randn*0.02 everywhere, except norm layers (weight 1, bias 0) so activations keep a sane scale.

    Needed because ComfyUI's ``disable_weight_init`` ops skip initialisation and leave raw memory.
    """
    gen = torch.Generator().manual_seed(seed)
    norm_types = (torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.BatchNorm2d)
    norm_params: set[int] = set()
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, norm_types):
                if getattr(sub, "weight", None) is not None:
                    sub.weight.fill_(1.0)
                    norm_params.add(id(sub.weight))
                if getattr(sub, "bias", None) is not None:
                    sub.bias.zero_()
                    norm_params.add(id(sub.bias))
        for p in module.parameters():
            if id(p) not in norm_params:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


def _fp16(sd: dict[str, Any], torch: Any) -> dict[str, Any]:
    return {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()}


def _build_checkpoint(dest: Path, torch: Any) -> Path:
    import comfy.clip_model
    import comfy.model_detection
    import comfy.ops
    import comfy.sd1_clip
    import comfy.supported_models
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from comfy.taesd.taesd import TAESD
    from safetensors.torch import save_file

    ops = comfy.ops.disable_weight_init
    unet = UNetModel(**_UNET_CONFIG, dtype=torch.float32, device="cpu", operations=ops)
    _randomize(unet, torch, seed=1)

    clip_config_path = Path(comfy.sd1_clip.__file__).with_name("sd1_clip_config.json")
    clip_config = json.loads(clip_config_path.read_text())
    clip = comfy.clip_model.CLIPTextModel(clip_config, torch.float32, "cpu", ops)
    _randomize(clip, torch, seed=2)

    taesd = TAESD()
    _randomize(taesd, torch, seed=3)
    with torch.no_grad():
        # TAESD's latent scale/shift are real parameters; keep the identity values the loader would default to.
        taesd.vae_scale.fill_(1.0)
        taesd.vae_shift.fill_(0.0)
        # ComfyUI maps TAESD output o to pixels as clamp(o, 0, 1); a small random o would decode to black.
        # Centre the last conv at mid-grey and widen it so random latents decode to visibly varied colours.
        last_conv = [m for m in taesd.taesd_decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last_conv.bias.fill_(0.5)
        last_conv.weight.mul_(_DECODER_GAIN)

    sd: dict[str, Any] = {}
    sd.update({f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()})
    sd.update({f"cond_stage_model.transformer.{k}": v for k, v in clip.state_dict().items()
               if k.startswith("text_model.")})
    sd.update({f"first_stage_model.{k}": v for k, v in taesd.state_dict().items()})
    sd = _fp16(sd, torch)

    detected = comfy.model_detection.detect_unet_config(sd, "model.diffusion_model.")
    model_config = comfy.model_detection.model_config_from_unet_config(detected, sd)
    if type(model_config) is not comfy.supported_models.SD15:
        raise SystemExit(f"ComfyUI would not detect the tiny checkpoint as SD15: {type(model_config)} {detected}")

    out = dest / "checkpoints" / TINY_CHECKPOINT
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    save_file(sd, str(tmp), metadata={"pixart": "tiny random-weight SD1.5 for tests"})
    tmp.replace(out)
    return out


def _build_controlnet(dest: Path, torch: Any) -> Path:
    import comfy.ops
    from comfy.cldm.cldm import ControlNet
    from safetensors.torch import save_file

    config = {k: v for k, v in _UNET_CONFIG.items() if k != "out_channels"}
    net = ControlNet(**config, hint_channels=3, dtype=torch.float32, device="cpu",
                     operations=comfy.ops.disable_weight_init)
    _randomize(net, torch, seed=4)
    sd = _fp16({f"control_model.{k}": v for k, v in net.state_dict().items()}, torch)
    out = dest / "controlnet" / TINY_CONTROLNET
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    save_file(sd, str(tmp), metadata={"pixart": "tiny random-weight SD1.5 ControlNet for tests"})
    tmp.replace(out)
    return out


def _build_lora(dest: Path, torch: Any) -> Path:
    """A rank-4 random LoRA for the tiny checkpoint in kohya's key form (what A1111 users download): every linear
    layer of the UNet's transformer blocks and of the text encoder, so ComfyUI applies each key it has."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(6)
    rank = 4
    sd: dict[str, Any] = {}

    def add(lora_key: str, shape: list[int]) -> None:
        out_dim, in_dim = shape
        sd[f"{lora_key}.lora_down.weight"] = torch.randn(rank, in_dim, generator=gen) * 0.1
        sd[f"{lora_key}.lora_up.weight"] = torch.randn(out_dim, rank, generator=gen) * 0.1
        sd[f"{lora_key}.alpha"] = torch.tensor(float(rank))

    with safe_open(str(dest / "checkpoints" / TINY_CHECKPOINT), framework="pt") as f:
        for key in f.keys():
            shape = f.get_slice(key).get_shape()
            if not key.endswith(".weight") or len(shape) != 2:
                continue
            if key.startswith("model.diffusion_model.") and ".transformer_blocks." in key:
                add("lora_unet_" + key[len("model.diffusion_model."):-len(".weight")].replace(".", "_"), shape)
            elif key.startswith("cond_stage_model.transformer.text_model.encoder.layers."):
                # lora_te_text_model_encoder_layers_<b>_<self_attn_q_proj|mlp_fc1|...>
                rest = key[len("cond_stage_model.transformer."):-len(".weight")]
                add("lora_te_" + rest.replace(".", "_"), shape)
    out = dest / "loras" / TINY_LORA
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.float16).contiguous() for k, v in sd.items()}, str(out),
              metadata={"ss_output_name": "pixart_tiny", "ss_network_dim": str(rank)})
    return out


def _build_vae(dest: Path, torch: Any) -> Path:
    """A second tiny VAE (TAESD layout, other random weights): a `sd_vae` file that decodes visibly differently
    from the checkpoint's own."""
    from comfy.taesd.taesd import TAESD
    from safetensors.torch import save_file

    taesd = TAESD()
    _randomize(taesd, torch, seed=5)
    with torch.no_grad():
        taesd.vae_scale.fill_(1.0)
        taesd.vae_shift.fill_(0.0)
        last_conv = [m for m in taesd.taesd_decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last_conv.bias.fill_(0.5)
        last_conv.weight.mul_(_DECODER_GAIN)
    out = dest / "vae" / TINY_VAE
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(_fp16(taesd.state_dict(), torch), str(out))
    return out


def _build_embedding(dest: Path, torch: Any) -> Path:
    """A two-vector textual-inversion embedding for the tiny text encoder (width 768)."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(7)
    out = dest / "embeddings" / TINY_EMBEDDING
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.randn(2, 768, generator=gen)}, str(out))
    return out


# name -> builder(dest, torch) returning the written file, run in this order. Append new models here.
BUILDERS: dict[str, Callable[[Path, Any], Path]] = {
    "checkpoint": _build_checkpoint,
    "controlnet": _build_controlnet,
    "lora": _build_lora,  # reads the checkpoint's layer shapes
    "vae": _build_vae,
    "embedding": _build_embedding,
}


def _child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Build Pixart's tiny test models with ComfyUI's own classes.")
    parser.add_argument("--comfyui", required=True, help="ComfyUI checkout whose classes define the layout")
    parser.add_argument("--dest", required=True, help="models root (sub-folders per ComfyUI folder key)")
    args = parser.parse_args(argv)
    comfy_dir = str(Path(args.comfyui).resolve())
    sys.path.insert(0, comfy_dir)
    import torch

    import comfy.cli_args

    # Building needs no accelerator; without this ComfyUI probes CUDA at import and dies on driverless hosts.
    comfy.cli_args.args.cpu = True
    torch.set_grad_enabled(False)
    dest = Path(args.dest)
    written = {name: str(build(dest, torch)) for name, build in BUILDERS.items()}
    print(json.dumps(written))
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
