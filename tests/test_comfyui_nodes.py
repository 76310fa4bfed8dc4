"""Integration: a real ComfyUI with the Pixart pack linked and the tiny models.

- the harness itself: the tiny checkpoint loads as SD1.5 with every key present, txt2img + ControlNet run, and a
  private server can be killed and restarted on the same URL;
- every Pixart node is registered with a ``Pixart/`` category, a description and a tooltip on every input;
- LoadImage -> Pixelate -> Palette -> Quantize -> SaveImage and LoadImage -> RGB565 run end to end, checked
  against numpy and OpenCV.

Inputs not under test take their defaults from ``/object_info``, so a node gaining an input with a default does
not break the graphs here.
"""
from __future__ import annotations

import io
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.support.real_comfyui import RunningComfyUI
from tests.support.tiny_models import TINY_CHECKPOINT, TINY_CONTROLNET

pytestmark = pytest.mark.comfyui

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
MY_COLOURS = ["#000000", "#ffffff", "#e04040", "#40a040", "#4060e0", "#f0d020"]


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _test_picture(width: int = 48, height: int = 40, seed: int = 7) -> np.ndarray:
    """Smooth gradients plus random 4x4 tiles: many distinct colours, and block structure to pixelate."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / (width - 1), y * 255 / (height - 1), (x + y) * 255 / (width + height - 2)], -1)
    tiles = rng.integers(-60, 60, size=(height // 4 + 1, width // 4 + 1, 3)).repeat(4, 0).repeat(4, 1)
    return np.clip(base + tiles[:height, :width], 0, 255).astype(np.uint8)


def _read_output(server: RunningComfyUI, entry: dict, node_id: str) -> np.ndarray:
    images = entry["outputs"][node_id]["images"]
    assert len(images) == 1, images
    info = images[0]
    data = server.view(info["filename"], info.get("subfolder", ""), info.get("type", "output"))
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _log_since(server: RunningComfyUI, offset: int) -> str:
    return server.process.log_path.read_bytes()[offset:].decode("utf-8", "replace")


# ------------------------------------------------------------------------------------------------ the harness
def test_tiny_models_load_as_sd15_and_generate(comfyui: RunningComfyUI) -> None:
    assert TINY_CHECKPOINT in comfyui.get_json("/models/checkpoints")
    assert TINY_CONTROLNET in comfyui.get_json("/models/controlnet")
    hint = comfyui.upload_image(_png(_test_picture(64, 64)), "harness_hint.png")
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_CHECKPOINT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a pixel cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "5": {"class_type": "LoadImage", "inputs": {"image": hint}},
        "6": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": TINY_CONTROLNET}},
        "7": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "control_net": ["6", 0], "image": ["5", 0],
            "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 3, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["7", 0], "negative": ["7", 1], "latent_image": ["4", 0], "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "harness/txt2img"}},
    }
    entry = comfyui.run_prompt(graph)
    img = _read_output(comfyui, entry, "10")
    assert img.shape == (48, 64, 3)
    # Random weights, but a real decode: not one flat colour (a missing VAE or NaNs would give that).
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 16
    # The session-wide server may have loaded the checkpoint for an earlier test, and ComfyUI logs detection and
    # missing-key warnings only on first load: read the whole log, not just this prompt's part.
    log = _log_since(comfyui, 0)
    assert "model_type EPS" in log  # detected as an SD1.5 (eps-prediction) UNet
    for bad in ("clip missing", "unet missing", "Missing VAE keys", "missing controlnet keys",
                "not a checkpoint file", "No VAE weights detected"):
        assert bad not in log, f"ComfyUI logged {bad!r}:\n{log[-3000:]}"


def test_private_server_can_be_killed_and_restarted(comfyui_factory) -> None:
    server = comfyui_factory()
    url = server.url
    assert server.get_json("/system_stats")["system"]["comfyui_version"]
    server.process.kill()
    assert not server.process.is_alive
    assert server.process.ping(timeout=1) is None
    server.process.restart()
    server.process.wait_ready_sync(timeout=180)
    assert server.url == url and server.process.starts == 2
    assert server.get_json("/prompt")["exec_info"]["queue_remaining"] == 0


# ------------------------------------------------------------------------------------------------ registration
def test_every_pixart_node_is_registered_with_category_and_tooltips(comfyui: RunningComfyUI) -> None:
    import pixart_nodes

    info = comfyui.get_json("/object_info")
    expected = set(pixart_nodes.NODE_CLASS_MAPPINGS)
    assert expected, "the pack exports no nodes"
    missing = sorted(expected - set(info))
    assert not missing, f"not registered in ComfyUI (import error? see {comfyui.process.log_path}): {missing}"
    problems: list[str] = []
    for name in sorted(expected):
        node = info[name]
        if not node["category"].startswith("Pixart/"):
            problems.append(f"{name}: category {node['category']!r}")
        if not node.get("description"):
            problems.append(f"{name}: no description")
        for section in ("required", "optional"):
            for input_name, spec in node["input"].get(section, {}).items():
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if not str(opts.get("tooltip", "")).strip():
                    problems.append(f"{name}.{input_name}: no tooltip")
    assert not problems, "\n".join(problems)
    log = comfyui.process.log_path.read_text(errors="replace")
    assert "pixart_nodes (IMPORT FAILED)" not in log


# ------------------------------------------------------------------------------------------------ a pixel workflow
def _default(spec: list) -> Any:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    if "default" in opts:
        return opts["default"]
    if isinstance(kind, list):
        return kind[0]
    if kind == "COMBO":  # newer list form: options under "options"
        return opts["options"][0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[kind]


def _is_widget(spec: list) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES or spec[0] == "COMBO"


def _widget_defaults(node: dict) -> dict[str, Any]:
    return {k: _default(v) for k, v in node["input"].get("required", {}).items() if _is_widget(v)}


def test_pixel_workflow_load_pixelate_palette_quantize_rgb565(comfyui: RunningComfyUI) -> None:
    info = comfyui.get_json("/object_info")
    src = _test_picture(48, 40)
    name = comfyui.upload_image(_png(src), "pixart_workflow_src.png")
    # Widget defaults from /object_info first, so an input added later with a default does not break the graph.
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "PixartPixelate", "inputs": {
            **_widget_defaults(info["PixartPixelate"]),
            "image": ["1", 0], "method": "box", "pixel_size": 4, "width": 0, "height": 0, "upscale": False}},
        "3": {"class_type": "PixartPalette", "inputs": {
            **_widget_defaults(info["PixartPalette"]), "source": "hex", "hex_colors": " ".join(MY_COLOURS)}},
        "4": {"class_type": "PixartQuantize", "inputs": {
            **_widget_defaults(info["PixartQuantize"]),
            "image": ["2", 0], "palette": ["3", 0], "dither": "none", "distance": "rgb"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "pixart/quant"}},
        "6": {"class_type": "PixartRGB565", "inputs": {
            **_widget_defaults(info["PixartRGB565"]),
            "image": ["1", 0], "width": 32, "height": 24, "mode": "stretch", "byte_order": "big", "invert": False,
            "dither": False, "save_file": False, "resample": "area"}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 1], "filename_prefix": "pixart/rgb565_preview"}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "pixart/pixelated"}},
    }
    entry = comfyui.run_prompt(graph)

    # Pixelate: 4x4 blocks, one output pixel per block, each the block mean (brute force over the source).
    pixelated = _read_output(comfyui, entry, "8")
    assert pixelated.shape == (10, 12, 3)
    block_means = src.reshape(10, 4, 12, 4, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(pixelated.astype(np.float64) - block_means).max() <= 1.0

    # Quantize: same size, every pixel one of our colours, and (no dither, RGB distance) each the nearest one by
    # brute force over the palette; comparing distances rather than colours tolerates exact ties.
    quantized = _read_output(comfyui, entry, "5")
    assert quantized.shape == (10, 12, 3)
    palette = np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in MY_COLOURS], dtype=np.int64)
    palette_set = {tuple(c) for c in palette.tolist()}
    used = {tuple(px) for px in quantized.reshape(-1, 3).tolist()}
    assert used <= palette_set, f"colours outside the palette: {sorted(used - palette_set)[:8]}"
    assert len(used) >= 3
    px = pixelated.reshape(-1, 1, 3).astype(np.int64)
    best = ((px - palette[None]) ** 2).sum(-1).min(1)
    got = ((px[:, 0] - quantized.reshape(-1, 3).astype(np.int64)) ** 2).sum(-1)
    np.testing.assert_array_equal(got, best)

    # RGB565: the preview has the LCD size and is what the panel shows for the words the node reports (Pillow's
    # BGR;16 decoder, full scale), and those words equal OpenCV's BGR565 packing of that preview (OpenCV stores
    # native little-endian words).
    preview = _read_output(comfyui, entry, "7")
    assert preview.shape == (24, 32, 3)
    import base64

    encoded = entry["outputs"]["6"]["rgb565_base64"][0]
    words = np.frombuffer(base64.b64decode(encoded), dtype=">u2").reshape(24, 32)
    shown = np.asarray(Image.frombytes("RGB", (32, 24), words.astype("<u2").tobytes(), "raw", "BGR;16"))
    np.testing.assert_array_equal(preview, shown)
    opencv_words = cv2.cvtColor(np.ascontiguousarray(preview), cv2.COLOR_RGB2BGR565).view("<u2")[..., 0]
    np.testing.assert_array_equal(words, opencv_words)
    # And the preview is the source, resized: close to OpenCV's INTER_AREA resize quantised to 5-6-5.
    expected = cv2.resize(src, (32, 24), interpolation=cv2.INTER_AREA)
    assert np.abs(preview.astype(int) - expected.astype(int)).max() <= 8 + 2
