"""Tiny random-weight style-transfer models (CLIP vision + T2I style adapter) that a real ComfyUI loads.

The `style_transfer` workflow runs ``CLIPVisionLoader -> CLIPVisionEncode -> StyleModelApply(StyleModelLoader)``,
so its integration tests need one file in ComfyUI's ``clip_vision`` folder and one in ``style_models``. As in
``tiny_models.py`` the tensors come from ComfyUI's own module classes, built in a child process whose ``sys.path``
holds the checkout, and the child then loads each file back through ComfyUI's own loaders
(``comfy.clip_vision.load``, ``comfy.sd.load_style_model``), encodes an image and refuses to keep a file that
loads with missing keys or yields non-finite conditioning.

Why these shapes (ComfyUI 0.3.64):

- ``comfy.clip_vision.load_clipvision_from_sd`` picks a fixed JSON config by probing layer keys; the smallest it
  recognises is ViT-L/14 (``vision_model.encoder.layers.22.*`` present, 257 position embeddings ->
  ``clip_vision_config_vitl.json``: 24 layers, width 1024). The config is never inferred from shapes, and absent
  tensors would stay uninitialised (``comfy.ops`` skips init), so every layer is written: 303 M parameters,
  ~607 MB in fp16. That is the floor for any SD1.5 style path through core nodes.
- ``comfy.sd.load_style_model`` builds ``StyleAdapter(width=1024, context_dim=768, num_head=8, n_layes=3,
  num_token=8)`` whenever the key ``style_embedding`` exists (the SD1.4/1.5 T2I style adapter layout) and loads it
  strictly: 38 M parameters, ~76 MB in fp16. Its 8 tokens of width 768 are appended to the positive conditioning.

Files written under ``dest_dir`` (the same models root as ``tiny_models.build_tiny_models``, whose
``extra_model_paths.yaml`` already lists the ``clip_vision`` and ``style_models`` folders)::

    clip_vision/pixart_tiny_clip_vision.safetensors
    style_models/pixart_tiny_style_model.safetensors

Imports with the standard library only; torch and ComfyUI are imported in the child.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

TINY_CLIP_VISION = "pixart_tiny_clip_vision.safetensors"
TINY_STYLE_MODEL = "pixart_tiny_style_model.safetensors"

_STAMP = ".pixart_tiny_style_models.json"


class TinyStyleModelBuildError(RuntimeError):
    """The child process could not build or verify the models; the message carries its output."""


def expected_paths(dest_dir: str | os.PathLike[str]) -> dict[str, Path]:
    dest = Path(dest_dir).resolve()
    return {
        "clip_vision": dest / "clip_vision" / TINY_CLIP_VISION,
        "style_model": dest / "style_models" / TINY_STYLE_MODEL,
    }



def build_tiny_style_models(dest_dir: str | os.PathLike[str], comfyui_dir: str | os.PathLike[str] | None = None,
                            python: str | None = None, timeout: float = 900.0) -> dict[str, Path]:
    """Build (or reuse a matching earlier build of) the CLIP vision and style model files under ``dest_dir``.

    Returns ``{"clip_vision": Path, "style_model": Path, "root": Path}``; the file names are what ComfyUI lists in
    ``CLIPVisionLoader.clip_name`` / ``StyleModelLoader.style_model_name`` (``TINY_CLIP_VISION``,
    ``TINY_STYLE_MODEL``).
    """
    # Imported here, not at the top: this file also runs as the child-process script, where ComfyUI's own
    # ``tests`` package shadows ours.
    from tests.support.tiny_models import run_cached_builder

    here = Path(__file__)
    return run_cached_builder(here, Path(dest_dir).resolve(), comfyui_dir, expected_paths(dest_dir), _STAMP,
                              [here, here.with_name("tiny_models.py")], TinyStyleModelBuildError,
                              "tiny style models", python=python, timeout=timeout)


# --------------------------------------------------------------------------------------------------------------
# Child-process side: everything below runs with the ComfyUI checkout on sys.path.
# --------------------------------------------------------------------------------------------------------------

def _shared_helpers() -> tuple[Any, Any]:
    """tiny_models' fp16 and randomise helpers, loaded by file path: ComfyUI's own ``tests`` package shadows ours."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_pixart_tiny_models", Path(__file__).with_name("tiny_models.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._fp16, module._randomize


def _save(sd: dict[str, Any], out: Path, note: str) -> None:
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    save_file(sd, str(tmp), metadata={"pixart": note})
    tmp.replace(out)


def _build_clip_vision(dest: Path, torch: Any) -> Path:
    import comfy.clip_model
    import comfy.clip_vision
    import comfy.ops
    _fp16, _randomize = _shared_helpers()
    config_path = Path(comfy.clip_vision.__file__).with_name("clip_vision_config_vitl.json")
    config = json.loads(config_path.read_text())
    model = comfy.clip_model.CLIPVisionModelProjection(config, torch.float32, "cpu", comfy.ops.disable_weight_init)
    _randomize(model, torch, seed=11)
    sd = _fp16(model.state_dict(), torch)
    out = expected_paths(dest)["clip_vision"]
    _save(sd, out, "tiny random-weight CLIP ViT-L/14 vision model for tests")
    return out


def _build_style_model(dest: Path, torch: Any) -> Path:
    from comfy.t2i_adapter.adapter import StyleAdapter

    _fp16, _randomize = _shared_helpers()

    # The exact constructor arguments comfy.sd.load_style_model uses for a "style_embedding" file.
    model = StyleAdapter(width=1024, context_dim=768, num_head=8, n_layes=3, num_token=8)
    _randomize(model, torch, seed=12)
    out = expected_paths(dest)["style_model"]
    _save(_fp16(model.state_dict(), torch), out, "tiny random-weight SD1.x T2I style adapter for tests")
    return out


def _verify(paths: dict[str, Path], torch: Any) -> dict[str, Any]:
    """Load both files the way the nodes do and run them once; raise SystemExit on any defect."""
    import logging

    import comfy.clip_vision
    import comfy.sd

    warnings: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage())

    logging.getLogger().addHandler(_Collect())
    clip_vision = comfy.clip_vision.load(str(paths["clip_vision"]))
    if clip_vision is None:
        raise SystemExit("ComfyUI did not recognise the tiny CLIP vision file")
    missing = [w for w in warnings if "missing" in w.lower()]
    if missing:
        raise SystemExit(f"ComfyUI loaded the tiny CLIP vision model with missing keys: {missing[:3]}")
    image = torch.rand((1, 64, 64, 3), generator=torch.Generator().manual_seed(0))
    encoded = clip_vision.encode_image(image, crop=True)
    hidden = encoded["last_hidden_state"]
    if tuple(hidden.shape) != (1, 257, 1024) or not torch.isfinite(hidden).all():
        raise SystemExit(f"CLIP vision output is wrong: shape {tuple(hidden.shape)}")
    style = comfy.sd.load_style_model(str(paths["style_model"]))
    cond = style.get_cond(encoded)
    if tuple(cond.shape) != (1, 8, 768) or not torch.isfinite(cond).all():
        raise SystemExit(f"style model conditioning is wrong: shape {tuple(cond.shape)}")
    return {"clip_vision_hidden_std": float(hidden.float().std()), "style_cond_std": float(cond.float().std())}


def _child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Build Pixart's tiny style-transfer models with ComfyUI's classes.")
    parser.add_argument("--comfyui", required=True, help="ComfyUI checkout whose classes define the layout")
    parser.add_argument("--dest", required=True, help="models root (clip_vision/ and style_models/ go under it)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(args.comfyui).resolve()))
    import torch

    import comfy.cli_args

    # No accelerator is needed; without this ComfyUI probes CUDA at import and dies on driverless hosts.
    comfy.cli_args.args.cpu = True
    torch.set_grad_enabled(False)
    dest = Path(args.dest).resolve()
    paths = {"clip_vision": _build_clip_vision(dest, torch), "style_model": _build_style_model(dest, torch)}
    try:
        report = _verify(paths, torch)
    except BaseException:
        for p in paths.values():
            p.unlink(missing_ok=True)
        raise
    print(json.dumps({**{k: str(v) for k, v in paths.items()}, **report}))
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))


# --------------------------------------------------------------------------------------------------------------
# pytest fixture (registered in tests/support/fixtures.py)
# --------------------------------------------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # the builder itself runs without pytest (child process, scripts)
    pytest = None  # type: ignore[assignment]

if pytest is not None:
    @pytest.fixture(scope="session")
    def tiny_style_models(tiny_models: dict[str, Path], comfyui_dir: Path) -> dict[str, Path]:
        """The CLIP vision + style model pair, built beside the tiny checkpoint (same extra_model_paths root), so
        the session's ComfyUI lists them. ~45 s and 685 MB on the first build; reused through
        ``$PIXART_TINY_MODELS_DIR`` like the checkpoint."""
        return build_tiny_style_models(tiny_models["root"], comfyui_dir)

__all__ = ["tiny_style_models", "build_tiny_style_models", "TINY_CLIP_VISION", "TINY_STYLE_MODEL"]
