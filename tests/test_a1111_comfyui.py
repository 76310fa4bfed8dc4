"""Integration: the A1111 API and the Pico endpoint through a real ComfyUI with the tiny random-weight checkpoint.

`webuiapi` (unmodified) drives the bridge; the Pico frame is checked against OpenCV's RGB->BGR565 packing of the
image the plain txt2img workflow makes from the same request.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from typing import Any

import cv2
import numpy as np
import pytest
import pytest_asyncio
import webuiapi
from PIL import Image

from bridge.app import create_app
from bridge.config import load_settings
from tests.support.tiny_models import TINY_CHECKPOINT

pytestmark = [pytest.mark.comfyui, pytest.mark.slow, pytest.mark.asyncio]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(("PICO_", "A1111_", "BRIDGE_")):
            monkeypatch.delenv(name)


@pytest_asyncio.fixture
async def bridge(aiohttp_client, comfyui, tmp_path):
    settings = load_settings({"data_dir": tmp_path / "data", "comfyui_urls": [comfyui.url]}, env_file=None)
    app = create_app(settings, adapter_names=["a1111", "pico"])
    return await aiohttp_client(app)


async def test_webuiapi_round_trips(bridge):
    url = str(bridge.make_url("/sdapi/v1"))

    def drive() -> dict[str, Any]:
        api = webuiapi.WebUIApi(baseurl=url, sampler="Euler a", steps=2)
        out: dict[str, Any] = {"models": [m["title"] for m in api.get_sd_models()],
                               "samplers": [s["name"] for s in api.get_samplers()]}
        api.set_options({"sd_model_checkpoint": TINY_CHECKPOINT})
        out["current"] = api.util_get_current_model()
        r = api.txt2img(prompt="a small boat", negative_prompt="blurry", seed=123, width=64, height=64,
                        batch_size=2, cfg_scale=5)
        out["txt"] = r
        out["again"] = api.txt2img(prompt="a small boat", negative_prompt="blurry", seed=124, width=64, height=64,
                                   cfg_scale=5)
        src = Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 96, 3), dtype=np.uint8))
        out["img"] = api.img2img(images=[src], prompt="x", seed=5, width=64, height=64, denoising_strength=0.5,
                                 resize_mode=1)
        mask = Image.new("L", (96, 80))
        mask.paste(255, (30, 20, 70, 60))
        out["inpaint"] = api.img2img(images=[src], mask_image=mask, inpainting_fill=1, prompt="y", seed=6,
                                     width=64, height=64, denoising_strength=1.0, inpaint_full_res=False,
                                     mask_blur=0)
        out["src"] = src
        out["progress"] = api.get_progress()
        out["interrupt"] = api.interrupt()
        return out

    out = await asyncio.to_thread(drive)
    assert TINY_CHECKPOINT in out["models"] and out["current"] == TINY_CHECKPOINT
    assert "Euler a" in out["samplers"] and "DPM++ 2M" in out["samplers"]
    txt = out["txt"]
    assert len(txt.images) == 2 and txt.images[0].size == (64, 64)
    assert txt.info["all_seeds"] == [123, 124] and txt.info["sampler_name"] == "Euler a"
    assert "Seed: 124," in txt.info["infotexts"][1] and "Model: pixart_tiny_sd15" in txt.info["infotexts"][0]
    # image 1 of the batch was made with seed 124, so asking for seed 124 alone reproduces it bit for bit
    assert np.array_equal(np.asarray(txt.images[1]), np.asarray(out["again"].image))
    assert not np.array_equal(np.asarray(txt.images[0]), np.asarray(txt.images[1]))
    assert out["img"].image.size == (64, 64) and out["img"].info["denoising_strength"] == 0.5
    # whole-picture inpaint: outside the (unblurred) mask the result is the resized original
    inpainted = np.asarray(out["inpaint"].image.convert("RGB")).astype(int)
    original = np.asarray(out["src"].resize((64, 64), Image.LANCZOS)).astype(int)
    assert np.array_equal(inpainted[:8], original[:8])
    assert not np.array_equal(inpainted[24:40, 30:40], original[24:40, 30:40])
    assert out["progress"]["state"]["job_count"] == 0 and out["interrupt"] == {}


async def test_pico_frame_equals_opencv_packing(bridge):
    body = {"prompt": "a lighthouse", "seed": 77, "steps": 2, "width": 240, "height": 240, "cfg_scale": 4}
    resp = await bridge.post("/sdapi/v1/txt2img", json=body)
    assert resp.status == 200, await resp.text()
    png = base64.b64decode((await resp.json())["images"][0])
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    resp = await bridge.post("/pico/sdapi/v1/txt2img", json=body, headers={"Accept": "application/octet-stream"})
    assert resp.status == 200, await resp.text()
    frame = await resp.read()
    assert resp.headers["Content-Length"] == "115200" and len(frame) == 240 * 240 * 2
    assert resp.headers["X-Image-Format"] == "rgb565-be"

    # OpenCV packs the 16-bit word little-endian; the Pico wants big-endian.
    ref = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR565)[..., ::-1].tobytes()
    # ComfyUI's SaveImage truncates float*255 while the RGB565 node rounds, so a channel may sit one level higher
    # in the node's input: each channel must equal the packing of v or of v+1. A channel crosses a 565 level that
    # way only when v % 8 == 7 (green: v % 4 == 3) and the float rounded up, so about 77 % of pixels match exactly;
    # a byte-order or channel mix-up would match almost none and fail the per-channel rule everywhere.
    got = np.frombuffer(frame, ">u2").reshape(240, 240)
    up = cv2.cvtColor(np.minimum(rgb.astype(int) + 1, 255).astype(np.uint8), cv2.COLOR_RGB2BGR565)
    low = np.frombuffer(ref, ">u2").reshape(240, 240)
    high = up.view("<u2")[..., 0]
    for shift, bits in ((11, 0x1F), (5, 0x3F), (0, 0x1F)):
        g, lo, hi = (got >> shift) & bits, (low >> shift) & bits, (high >> shift) & bits
        assert np.all((g == lo) | (g == hi))
    assert np.mean(got == low) > 0.6

    # the JSON answer carries the same bytes; little-endian is the byte-swapped frame
    resp = await bridge.post("/pico/sdapi/v1/txt2img?format=json&byte_order=le", json=body)
    payload = await resp.json()
    assert payload["info"] == "240x240 RGB565 format for Pico LCD"
    le = base64.b64decode(payload["images"][0])
    assert np.array_equal(np.frombuffer(le, "<u2"), got.ravel())


async def test_progress_while_generating(bridge):
    task = asyncio.create_task(bridge.post("/sdapi/v1/txt2img", json={"steps": 12, "width": 64, "height": 64,
                                                                       "n_iter": 2, "seed": 3}))
    seen: dict[str, Any] | None = None
    for _ in range(600):
        await asyncio.sleep(0.05)
        p = await (await bridge.get("/sdapi/v1/progress")).json()
        if p["state"]["sampling_step"] > 0:
            seen = p
            break
    resp = await task
    assert resp.status == 200
    assert seen is not None and seen["state"]["job_count"] == 2 and seen["state"]["sampling_steps"] == 12
    info = json.loads((await resp.json())["info"])
    assert info["all_seeds"] == [3, 4]


async def test_clip_skip_changes_the_pixels(bridge):
    """The bug this guards against: `Clip skip: 2` in the infotext while the pixels equal clip skip 1."""
    body = {"prompt": "a lighthouse", "seed": 77, "steps": 2, "width": 64, "height": 64}

    async def pixels(extra: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        resp = await bridge.post("/sdapi/v1/txt2img", json={**body, **extra})
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        with Image.open(io.BytesIO(base64.b64decode(data["images"][0]))) as im:
            return np.asarray(im.convert("RGB")), json.loads(data["info"])

    plain, plain_info = await pixels({})
    assert (await bridge.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2})).status == 200
    try:
        skipped, info = await pixels({})
    finally:
        await bridge.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1})
    assert "Clip skip" not in plain_info["infotexts"][0] and "Clip skip: 2," in info["infotexts"][0]
    assert np.abs(plain.astype(int) - skipped.astype(int)).max() > 0
    # the per-request form gives the same picture as the option, and the option is back at 1 afterwards
    overridden, _ = await pixels({"override_settings": {"CLIP_stop_at_last_layers": 2}})
    assert np.array_equal(overridden, skipped)
    again, _ = await pixels({})
    assert np.array_equal(again, plain)
