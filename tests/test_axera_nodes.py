"""The Axera node classes, called as ComfyUI calls them, without ComfyUI."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from pixart_nodes import nodes_axera
from pixart_nodes.core.axera.pipeline import AxeraPipeline
from pixart_nodes.core.tensors import uint8_to_image
from tests.support.tiny_axera import tiny_axera_dir  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def loaded(tiny_axera_dir):
    out = nodes_axera.PixartAxeraLoader().load(str(tiny_axera_dir), "onnxruntime")
    return out


def test_conventions():
    for name, cls in nodes_axera.NODE_CLASS_MAPPINGS.items():
        assert name.startswith("Pixart") and name in nodes_axera.NODE_DISPLAY_NAME_MAPPINGS
        assert cls.CATEGORY == "Pixart/Axera" and cls.DESCRIPTION
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        for section in cls.INPUT_TYPES().values():
            for input_name, spec in section.items():
                assert spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"


def test_loader_reports_runtime(loaded):
    pipe, info = loaded["result"]
    assert isinstance(pipe, AxeraPipeline)
    described = json.loads(info)
    assert described["runtime"] == "onnxruntime" and described["providers"] == ["CPUExecutionProvider"]
    assert (described["width"], described["height"]) == (64, 64)
    assert loaded["ui"]["text"] == [info]


def test_loader_uses_env_var_when_empty(tiny_axera_dir, monkeypatch):
    monkeypatch.setenv("PIXART_AXERA_MODEL_DIR", str(tiny_axera_dir))
    pipe, _ = nodes_axera.PixartAxeraLoader().load("", "onnxruntime")["result"]
    assert pipe.folder == tiny_axera_dir


def test_loader_is_changed_follows_files(tiny_axera_dir):
    before = nodes_axera.PixartAxeraLoader.IS_CHANGED(str(tiny_axera_dir), "onnxruntime")
    target = tiny_axera_dir / "text_encoder" / "config.json"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    try:
        assert nodes_axera.PixartAxeraLoader.IS_CHANGED(str(tiny_axera_dir), "onnxruntime") != before
    finally:
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_loader_bad_folder_names_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_dir"):
        nodes_axera.PixartAxeraLoader().load(str(tmp_path / "missing"), "onnxruntime")


def test_txt2img_node_batch_uses_consecutive_seeds(loaded):
    pipe = loaded["result"][0]
    out = nodes_axera.PixartAxeraTxt2Img().generate(pipe, "a pixel art cat", 10, batch_size=2)
    images, timings_json = out["result"]
    assert isinstance(images, torch.Tensor) and images.shape == (2, 64, 64, 3) and images.dtype == torch.float32
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    timings = json.loads(timings_json)
    assert [t["seed"] for t in timings] == [10, 11]
    assert out["ui"]["axera_timings"] == timings and len(out["ui"]["text"]) == 2
    assert len(timings[0]["unet_ms"]) == 4 and timings[0]["total_ms"] > 0
    for i, seed in enumerate((10, 11)):
        expected = pipe.txt2img("a pixel art cat", seed).image
        assert torch.equal(images[i], uint8_to_image(expected)[0])


def test_img2img_node_each_image_and_strength(loaded):
    pipe = loaded["result"][0]
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (40, 80, 3), dtype=np.uint8) for _ in range(2)]
    batch = uint8_to_image(frames)
    out = nodes_axera.PixartAxeraImg2Img().generate(pipe, batch, "a castle", 5, denoise=0.7, resize_mode="crop")
    images, _ = out["result"]
    assert images.shape == (2, 64, 64, 3)
    timings = out["ui"]["axera_timings"]
    assert [t["timesteps"] for t in timings] == [[759, 499, 259]] * 2
    assert timings[1]["seed"] == 6 and timings[0]["vae_encoder_ms"] > 0
    expected = pipe.img2img("a castle", frames[1], 0.7, 6, "crop").image
    assert torch.equal(images[1], uint8_to_image(expected)[0])


def test_img2img_node_bad_strength_names_field(loaded):
    pipe = loaded["result"][0]
    with pytest.raises(ValueError, match="denoising_strength"):
        nodes_axera.PixartAxeraImg2Img().generate(pipe, torch.zeros(1, 8, 8, 3), "x", 0, denoise=1.5)


def test_img2img_node_names_an_empty_batch(loaded):
    # an IndexError from inside the node, as the other image nodes gave before
    with pytest.raises(ValueError, match="^image: the batch holds no image"):
        nodes_axera.PixartAxeraImg2Img().generate(loaded["result"][0], torch.zeros(0, 8, 8, 3), "x", 0)
