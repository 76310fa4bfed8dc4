"""Integration: `/generate` through the bridge and a real ComfyUI, with the tiny Axera ONNX models (both modes) and
with the tiny SD1.5 checkpoint. Images are checked against the Axera pipeline run directly in this process."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from bridge.app import ENGINE, create_app
from bridge.config import load_settings
from pixart_nodes.core.axera.pipeline import AxeraPipeline
from tests.support.tiny_axera import axera_build, tiny_axera_dir  # noqa: F401  (fixture)
from tests.support.tiny_models import TINY_CHECKPOINT

pytestmark = [pytest.mark.comfyui, pytest.mark.slow, pytest.mark.asyncio]

PICKER = {  # what the picker client sends (hardware_exercises picker/sd_client.py with sd_config.py defaults)
    "prompt": "adult, face portrait photograph, a red fox, 8k, realistic",
    "negative_prompt": "white background, white wall, bad anatomy, watermark, text",
    "seed": -1, "steps": 7, "width": 512, "height": 512, "cfg_scale": 1.5, "sampler_name": "DPM++ 2M Karras",
    "denoising_strength": 0.5, "n_iter": 1, "batch_size": 1, "mode": "txt2img",
}



def make_app(comfyui, tmp_path, **overrides: str):
    settings = load_settings({"data_dir": tmp_path / "data", "comfyui_urls": [comfyui.url]}, overrides=overrides,
                             env_file=None)
    return create_app(settings, adapter_names=["unified"])


@pytest.fixture(scope="module")
def build_name(tiny_models, tiny_axera_dir):
    return axera_build(tiny_models["root"], tiny_axera_dir)


@pytest_asyncio.fixture
async def axera(aiohttp_client, comfyui, tmp_path, build_name):
    return await aiohttp_client(make_app(comfyui, tmp_path, UNIFIED_AXERA_MODEL_DIR=build_name,
                                         UNIFIED_AXERA_RUNTIME="onnxruntime"))


@pytest.fixture(scope="module")
def direct(tiny_axera_dir):
    return AxeraPipeline(tiny_axera_dir, "onnxruntime")


def decode(b64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        return np.asarray(im.convert("RGB"))


def png_b64(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


async def post(client, body, status=200):
    resp = await client.post("/generate", json=body)
    data = await resp.json()
    assert resp.status == status, data
    return data


async def test_picker_txt2img_matches_direct_pipeline(axera, direct):
    data = await post(axera, PICKER)
    assert data["status"] == "ok" and data["backend"] == "axera" and data["mode"] == "txt2img"
    assert data["images"][0] == data["image"] == data["base64"]
    assert 0 <= data["seed"] <= 2**32 - 1
    img = decode(data["images"][0])
    assert img.shape == (64, 64, 3)
    assert np.array_equal(img, direct.txt2img(PICKER["prompt"], data["seed"]).image)
    assert data["text_time_ms"] > 0 and data["total_time_ms"] >= data["text_time_ms"]
    notes = {n["field"]: n for n in data["unsupported"]}
    assert set(notes) == {"steps", "cfg_scale", "sampler_name", "negative_prompt", "width", "height"}
    assert notes["steps"]["used"] == 4 and notes["width"]["used"] == 64 and notes["cfg_scale"]["used"] == 1.0
    assert data["timings"][0]["runtime"] == "onnxruntime" and len(data["timings"][0]["unet_ms"]) == 4
    # ComfyUI's progress bar advanced once per UNet step, and the engine saw it
    job = axera.server.app[ENGINE].get(data["job_ids"][0])
    assert (job.step, job.steps) == (4, 4)


async def test_same_seed_same_image_and_batch_seeds(axera):
    body = {"mode": "txt2img", "prompt": "a pixel art cat", "seed": 77}
    a = await post(axera, body)
    b = await post(axera, body)
    assert a["images"][0] == b["images"][0] and a["unsupported"] == []
    batch = await post(axera, {**body, "batch_size": 2})
    assert batch["seeds"] == [77, 78] and len(batch["images"]) == 2
    # pixels, not bytes: SaveImage embeds the graph (with its batch size) in the PNG
    assert np.array_equal(decode(batch["images"][0]), decode(a["images"][0]))
    assert not np.array_equal(decode(batch["images"][1]), decode(a["images"][0]))


async def test_img2img_strength_and_resize_match_direct(axera, direct):
    init = np.random.default_rng(1).integers(0, 256, (40, 80, 3), dtype=np.uint8)
    body = {"mode": "img2img", "prompt": "a castle", "init_image": png_b64(init), "seed": 5, "strength": 0.7,
            "resize_mode": 1}
    data = await post(axera, body)
    assert data["steps"] == 3 and data["timings"][0]["timesteps"] == [759, 499, 259]
    job = axera.server.app[ENGINE].get(data["job_ids"][0])
    assert (job.step, job.steps) == (3, 3)
    want = direct.img2img("a castle", init, 0.7, 5, "crop").image
    assert np.array_equal(decode(data["image"]), want)
    pad = await post(axera, {**body, "denoising_strength": 0.2, "resize_mode": 2, "steps": 1})
    assert pad["steps"] == 1 and pad["unsupported"] == []
    assert np.array_equal(decode(pad["image"]), direct.img2img("a castle", init, 0.2, 5, "pad").image)


@pytest.mark.parametrize("body,field", [
    ({"mode": "txt2img"}, "prompt"),
    ({"mode": "img2img", "prompt": "x"}, "init_image"),
    ({"mode": "paint", "prompt": "x"}, "mode"),
    ({"mode": "txt2img", "prompt": "x", "seed": "abc"}, "seed"),
    ({"mode": "img2img", "prompt": "x", "init_image": "bm90IGFuIGltYWdl"}, "init_image"),
    ({"mode": "img2img", "prompt": "x", "init_image": "AAAA", "denoising_strength": 2}, "denoising_strength"),
])
async def test_bad_input_is_400_naming_field(axera, body, field):
    data = await post(axera, body, 400)
    assert data["status"] == "error" and data["field"] == field and field in data["error"]


async def test_options_axera(axera):
    await post(axera, {"prompt": "x", "seed": 1})
    resp = await axera.get("/generate/options")
    data = await resp.json()
    assert data["backend"] == "axera" and data["workflows_available"] == {"txt2img": True, "img2img": True}
    assert data["fields"]["width"]["supported"] is False and data["fields"]["width"]["fixed"] == 64
    assert data["fields"]["steps"]["fixed"] == 4 and data["fields"]["cfg_scale"]["supported"] is False


async def test_missing_models_fall_back_to_sd15_on_auto_and_503_on_axera(aiohttp_client, comfyui, tmp_path):
    missing = "no-such-build"  # looked for under the Axera model folders
    auto = await aiohttp_client(make_app(comfyui, tmp_path, UNIFIED_AXERA_MODEL_DIR=missing,
                                         UNIFIED_AXERA_RUNTIME="onnxruntime", UNIFIED_SD15_CHECKPOINT=TINY_CHECKPOINT))
    data = await post(auto, {"prompt": "x", "width": 64, "height": 64, "steps": 1, "seed": 4})
    assert data["backend"] == "sd15" and decode(data["image"]).shape == (64, 64, 3)
    opts = await (await auto.get("/generate/options")).json()
    assert opts["backend"] == "sd15" and opts["backend_setting"] == "auto" and missing in opts["backend_reason"]
    forced = await aiohttp_client(make_app(comfyui, tmp_path / "forced", UNIFIED_BACKEND="axera",
                                           UNIFIED_AXERA_MODEL_DIR=missing, UNIFIED_AXERA_RUNTIME="onnxruntime"))
    err = await post(forced, {"prompt": "x"}, 503)
    assert err["status"] == "error" and "UNIFIED_BACKEND" in err["error"] and missing in err["error"]


async def test_sd15_text_time_is_the_encoders_and_zero_when_comfyui_cached_them(aiohttp_client, comfyui, tmp_path):
    client = await aiohttp_client(make_app(comfyui, tmp_path, UNIFIED_BACKEND="sd15",
                                           UNIFIED_SD15_CHECKPOINT=TINY_CHECKPOINT))
    body = {"prompt": "text time probe 7f3a", "width": 64, "height": 64, "steps": 1, "seed": 5}
    first = await post(client, body)
    again = await post(client, {**body, "seed": 6})  # same prompts: ComfyUI reuses both encodings
    assert 0 < first["text_time_ms"] <= first["total_time_ms"]
    assert again["text_time_ms"] == 0


async def test_sd15_backend(aiohttp_client, comfyui, tmp_path):
    client = await aiohttp_client(make_app(comfyui, tmp_path, UNIFIED_BACKEND="sd15",
                                           UNIFIED_SD15_CHECKPOINT=TINY_CHECKPOINT))
    body = {**PICKER, "width": 64, "height": 64, "steps": 2, "seed": 9}
    data = await post(client, body)
    assert data["backend"] == "sd15" and data["seed"] == 9 and data["sampler_name"] == "DPM++ 2M"
    assert decode(data["images"][0]).shape == (64, 64, 3) and data["unsupported"] == []
    again = await post(client, body)
    assert np.array_equal(decode(again["images"][0]), decode(data["images"][0]))
    odd = await post(client, {**body, "width": 70, "sampler_name": "no such sampler"})
    notes = {n["field"]: n for n in odd["unsupported"]}
    assert notes["width"]["used"] == 64 and notes["sampler_name"]["used"] == "DPM++ 2M"
    init = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    img = await post(client, {"mode": "img2img", "prompt": "x", "init_image": png_b64(init), "width": 64,
                              "height": 64, "steps": 2, "seed": 3})
    assert decode(img["base64"]).shape == (64, 64, 3) and img["denoising_strength"] == 0.5
    opts = await (await client.get("/generate/options")).json()
    assert opts["backend"] == "sd15" and opts["fields"]["width"]["supported"] is True
    assert "DPM++ 2M" in opts["fields"]["sampler_name"]["choices"]
    # the default is named like the choices, and it is what a request without a sampler reports and runs
    assert opts["fields"]["sampler_name"]["default"] == "Euler" in opts["fields"]["sampler_name"]["choices"]
    small = {"prompt": "a pixel cat", "width": 64, "height": 64, "steps": 2}
    plain = await post(client, {**small, "seed": 99})
    assert plain["sampler_name"] == "Euler" and plain["seeds"] == [99]
    euler = await post(client, {**small, "seed": 99, "sampler_name": "Euler"})
    assert np.array_equal(decode(euler["image"]), decode(plain["image"])) and euler["unsupported"] == []


async def test_sd15_batch_seeds_reproduce_each_image(aiohttp_client, comfyui, tmp_path):
    client = await aiohttp_client(make_app(comfyui, tmp_path, UNIFIED_BACKEND="sd15",
                                           UNIFIED_SD15_CHECKPOINT=TINY_CHECKPOINT))
    small = {"prompt": "a pixel cat", "width": 64, "height": 64, "steps": 2}
    batch = await post(client, {**small, "seed": 99, "batch_size": 2})
    assert batch["seeds"] == [99, 100] and batch["seed"] == 99 and len(batch["images"]) == 2
    assert len(batch["job_ids"]) == 2
    for seed, image in zip(batch["seeds"], batch["images"]):
        alone = await post(client, {**small, "seed": seed})
        assert np.array_equal(decode(alone["image"]), decode(image))
    assert not np.array_equal(decode(batch["images"][0]), decode(batch["images"][1]))


async def test_pixelate_chain_and_rgb565_frame(aiohttp_client, comfyui, tmp_path, build_name, direct):
    client = await aiohttp_client(make_app(comfyui, tmp_path, UNIFIED_AXERA_MODEL_DIR=build_name,
                                           UNIFIED_AXERA_RUNTIME="onnxruntime", UNIFIED_POSTPROCESS="pixelate",
                                           UNIFIED_PIXEL_SIZE="8"))
    data = await post(client, {"prompt": "a cat", "seed": 3})
    img = decode(data["image"]).astype(int)
    raw = direct.txt2img("a cat", 3).image.astype(float)
    for by in range(0, 64, 8):
        for bx in range(0, 64, 8):
            block = img[by:by + 8, bx:bx + 8]
            assert (block == block[0, 0]).all()  # one colour per block
            assert np.abs(block[0, 0] - raw[by:by + 8, bx:bx + 8].mean(axis=(0, 1))).max() <= 1  # box mean
    job = client.server.app[ENGINE].get(data["job_ids"][0])
    frame = np.frombuffer(base64.b64decode(job.outputs["rgb565"][0]), dtype=">u2").reshape(240, 240)
    # centre of the top-left block (30x30 on the 240x240 LCD frame), unpacked from big-endian RGB565
    v = int(frame[15, 15])
    rgb = np.array([(v >> 11) << 3, ((v >> 5) & 63) << 2, (v & 31) << 3])
    assert np.abs(rgb - img[0, 0]).max() <= 8
