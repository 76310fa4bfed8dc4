"""Integration: the A1111 API and the Pico endpoint through a real ComfyUI with the tiny random-weight checkpoint.

`webuiapi` (unmodified) drives the bridge; the Pico frame is checked against OpenCV's RGB->BGR565 packing of the
image the plain txt2img workflow makes from the same request.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import pytest_asyncio
import torch
import webuiapi
from PIL import Image

from bridge.app import create_app
from bridge.config import load_settings
from tests.support.tiny_models import TINY_CHECKPOINT
from tests.support.imaging import encode

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"

pytestmark = [pytest.mark.comfyui, pytest.mark.slow, pytest.mark.asyncio]



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


async def test_an_infotext_pasted_as_the_request_makes_the_same_picture(bridge):
    """A1111 1.9+'s `infotext` field: an image's infotext sent as the whole request (prompts, seed, steps, size,
    sampler and schedule, CFG scale, and the Clip skip setting) generates that image again."""
    async def generate(body: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        resp = await bridge.post("/sdapi/v1/txt2img", json=body)
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        with Image.open(io.BytesIO(base64.b64decode(data["images"][0]))) as im:
            return np.asarray(im.convert("RGB")), json.loads(data["info"])

    first, info = await generate({"prompt": "a red kite", "negative_prompt": "fog", "seed": 91, "steps": 3,
                                  "width": 64, "height": 96, "cfg_scale": 4.5, "sampler_name": "DPM++ 2M",
                                  "scheduler": "Exponential",
                                  "override_settings": {"CLIP_stop_at_last_layers": 2}})
    text = info["infotexts"][0]
    assert "Clip skip: 2" in text and "Schedule type: Exponential" in text
    again, again_info = await generate({"infotext": text})
    assert again_info["infotexts"][0] == text
    assert np.array_equal(again, first)
    other, _ = await generate({"infotext": text, "seed": 92})  # a field sent wins over the text
    assert not np.array_equal(other, first)



@pytest.mark.parametrize("fill", ["original", "latent noise", "latent nothing"])
async def test_inpaint_fill_latent_the_sampler_gets(comfyui, fill):
    """The inpaint workflow as the bridge binds it, run in ComfyUI with the sampler's input latent saved: outside
    the mask the encoded image, inside it the image (original), KSampler's seeded noise in the model's scale
    (latent noise: A1111's `init_latent * mask + noise * nmask`) or zeros (latent nothing: `init_latent * mask`)."""
    from pixart_nodes.core.latent import seeded_noise
    from safetensors.torch import load_file

    from bridge import workflows as W

    rng = np.random.default_rng(5)
    image = comfyui.upload_image(encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))),
                                 "fill_src.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 24:56] = 255  # on the 8-pixel grid: latent rows 2..5, columns 3..6 exactly
    mask_name = comfyui.upload_image(encode(Image.fromarray(mask)), "fill_mask.png")
    wf = W.load_workflows(WORKFLOWS)["inpaint"]
    seed = 2**40 + 17
    graph = wf.bind(wf.coerce({"image": image, "mask": mask_name, "fill": fill, "seed": seed, "width": 64,
                               "height": 64, "steps": 1, "batch_size": 2,
                               "checkpoint": TINY_CHECKPOINT}))
    by_class = {n["class_type"]: nid for nid, n in graph.items()}
    # only what the sampler would get is computed: the image output is replaced by two latent savers
    del graph[by_class["SaveImage"]]
    prefix = f"fill_{fill.replace(' ', '_')}"
    graph["900"] = {"class_type": "SaveLatent", "inputs": {"samples": [by_class["RepeatLatentBatch"], 0],
                                                           "filename_prefix": f"{prefix}/encoded"}}
    graph["901"] = {"class_type": "SaveLatent", "inputs": {"samples": [by_class["SetLatentNoiseMask"], 0],
                                                           "filename_prefix": f"{prefix}/sampled"}}
    entry = await asyncio.to_thread(comfyui.run_prompt, graph)

    def latent(node: str) -> torch.Tensor:
        (saved,) = entry["outputs"][node]["latents"]
        return load_file(str(comfyui.output_dir / saved["subfolder"] / saved["filename"]))["latent_tensor"]

    encoded, sampled = latent("900"), latent("901")
    # a batch of 2: one noise draw over the whole batch, as KSampler draws its own
    assert encoded.shape == sampled.shape == (2, 4, 8, 8)
    inside = torch.zeros((8, 8), dtype=torch.bool)
    inside[2:6, 3:7] = True
    assert torch.equal(sampled[..., ~inside], encoded[..., ~inside])
    if fill == "original":
        expected = encoded[..., inside]
    elif fill == "latent nothing":
        expected = torch.zeros_like(encoded[..., inside])
    else:
        # unit noise in the model's space: the SD1.5 latent format divides by its scale 0.18215 on the way out
        expected = (seeded_noise(encoded.shape, seed) / 0.18215)[..., inside]
    assert torch.allclose(sampled[..., inside], expected, atol=1e-5), fill



async def test_inpainting_fills_change_only_the_masked_pixels(bridge):
    """Through the A1111 API: fills 1, 2 and 3 start the sampler from different latents inside the mask, so they
    give different pixels there; outside it A1111 pastes the original back, whatever the fill.

    The tiny checkpoint's random TAESD encodes images to latents near zero (mean |x| ~0.01), so "original" and
    "latent nothing" differ only slightly in pixels; the latent test above shows the zeros exactly. A low strength
    keeps most of the start latent, which is where the fills differ."""
    rng = np.random.default_rng(3)
    src = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    common = {"prompt": "a stone", "init_images": [base64.b64encode(encode(Image.fromarray(src))).decode()],
              "mask": base64.b64encode(encode(Image.fromarray(mask))).decode(), "inpaint_full_res": False,
              "mask_blur": 0, "denoising_strength": 0.3, "steps": 2, "seed": 21, "width": 64, "height": 64}
    results = {}
    for fill in (1, 2, 3):
        resp = await bridge.post("/sdapi/v1/img2img", json={**common, "inpainting_fill": fill})
        assert resp.status == 200, await resp.text()
        payload = await resp.json()
        assert f"Masked content: {['fill', 'original', 'latent noise', 'latent nothing'][fill]}," in \
            json.loads(payload["info"])["infotexts"][0]
        with Image.open(io.BytesIO(base64.b64decode(payload["images"][0]))) as im:
            results[fill] = np.asarray(im.convert("RGB")).astype(int)
    inside = (slice(16, 48), slice(16, 48))
    for a, b in ((1, 2), (2, 3)):  # seeded noise against the image or zeros: a different picture
        assert np.abs(results[a][inside] - results[b][inside]).mean() > 1.0, (a, b)
    assert not np.array_equal(results[1][inside], results[3][inside])
    far = np.ones((64, 64), bool)
    far[8:56, 8:56] = False
    for fill, out in results.items():
        assert np.array_equal(out[far], src[far]), fill
