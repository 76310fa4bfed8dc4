"""Every node that takes pictures, masks or latents gives the same outputs when they arrive on the GPU.

ComfyUI hands nodes tensors on its intermediate device: the CPU by default, the GPU under `--gpu-only`. Each node is
called with its defaults twice, inputs on the CPU and on CUDA, and all its outputs compared exactly (tensors, palettes,
texts, counts). Not called: the nodes that need a model or an Axera pipeline (Lora Stack, Seamless Tiling, Variation
Seed, the Axera txt2img and img2img nodes) and the Axera loader, which reads model files. Runs where torch sees a
CUDA device (a GPU machine); skipped, saying so, elsewhere.
"""
from __future__ import annotations

import os
import sys
import types
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device here")

@pytest.fixture
def nodes(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    # ComfyUI's folder_paths, as far as the save nodes use it, where no ComfyUI is importable (a GPU machine)
    fp = types.ModuleType("folder_paths")
    fp.get_output_directory = fp.get_input_directory = lambda: str(tmp_path)  # type: ignore[attr-defined]

    def save_path(prefix: str, out: str, width: int = 0, height: int = 0) -> tuple[str, str, int, str, str]:
        sub = os.path.dirname(os.path.normpath(prefix))
        os.makedirs(os.path.join(out, sub), exist_ok=True)
        return os.path.join(out, sub), os.path.basename(os.path.normpath(prefix)), 1, sub, prefix

    fp.get_save_image_path = save_path  # type: ignore[attr-defined]
    fp.folder_names_and_paths = {}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    import pixart_nodes

    return dict(pixart_nodes.NODE_CLASS_MAPPINGS)


def _inputs(cls: Any, device: str, earlier: dict[str, Any]) -> dict[str, Any] | None:
    g = torch.Generator().manual_seed(0)
    made = {"IMAGE": torch.rand(2, 48, 40, 3, generator=g), "MASK": (torch.rand(2, 48, 40, generator=g) > 0.5).float(),
            "LATENT": {"samples": torch.randn(2, 4, 8, 6, generator=g)}}
    kwargs: dict[str, Any] = {}
    spec = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, (kind, *rest) in spec.get(section, {}).items():
            opts = rest[0] if rest and isinstance(rest[0], dict) else {}
            if isinstance(kind, list):
                kwargs[name] = opts.get("default", kind[0])
            elif kind in made:
                value = made[kind]
                kwargs[name] = ({k: v.to(device) for k, v in value.items()} if isinstance(value, dict)
                                else value.to(device))
            elif kind == "PIXART_PALETTE":
                kwargs[name] = earlier["palette"]
            elif kind in ("INT", "FLOAT", "BOOLEAN", "STRING"):
                kwargs[name] = opts.get("default", {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False, "STRING": ""}[kind])
            elif section == "required":
                return None  # a model, an Axera pipeline: nothing a default stands for
    if "overlap" in kwargs:
        kwargs["overlap"] = 8  # the defaults' 64 is more than the small test picture's tiles
    if "tiles" in kwargs:
        kwargs["tiles"] = earlier["tiles"].to(device)
    if "rgb565_base64" in kwargs:
        kwargs["rgb565_base64"] = earlier["frame"]
    return kwargs


def _run_all(nodes: dict[str, Any], device: str) -> dict[str, Any]:
    palette_node = nodes["PixartPalette"]
    earlier: dict[str, Any] = {"palette": getattr(palette_node(), palette_node.FUNCTION)(
        **_inputs(palette_node, "cpu", {}) or {})[0]}
    outputs: dict[str, Any] = {}
    # the nodes that take another's output after it (Tile Merge after Tile Split, the RGB565 preview after the frame)
    for key in sorted(nodes, key=lambda k: (k in ("PixartTileMerge", "PixartRGB565Preview"), k)):
        cls = nodes[key]
        kwargs = _inputs(cls, device, earlier)
        if kwargs is None or key == "PixartAxeraLoader":  # (the loader reads model files from disk)
            continue
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
        out = out.get("result", ()) if isinstance(out, dict) else out
        if key == "PixartTileSplit":
            earlier["tiles"] = out[0]
        if key == "PixartRGB565":
            earlier["frame"] = out[0][0] if isinstance(out[0], list) else out[0]
        for i, value in enumerate(out):
            value = value["samples"] if isinstance(value, dict) and "samples" in value else value
            outputs[f"{key}.{i}"] = value.detach().cpu() if isinstance(value, torch.Tensor) else value
    return outputs


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    return bool(a == b)


def test_nodes_give_the_same_outputs_for_inputs_on_the_gpu(nodes: dict[str, Any]) -> None:
    on_cpu = _run_all(nodes, "cpu")
    on_gpu = _run_all(nodes, "cuda")
    assert on_cpu.keys() == on_gpu.keys() and sum(isinstance(v, torch.Tensor) for v in on_cpu.values()) >= 16
    assert [k for k in on_cpu if not _same(on_cpu[k], on_gpu[k])] == []
