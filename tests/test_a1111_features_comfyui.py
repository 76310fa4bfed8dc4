"""Integration: A1111 features against a real ComfyUI with tiny random-weight models built at test time (a
checkpoint, a kohya-style LoRA for it, a second VAE, an embedding): LoRA strength 0 equals no LoRA and non-zero
strengths change the pixels (through the node and through every dialect that takes `loras`), `sd_vae` really
switches the decoder, the embedding and LoRA lists come from the backend, and an infotext written by the bridge
reads back through png-info."""
from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from bridge.app import create_app
from bridge.config import load_settings
from tests.support.tiny_models import TINY_CHECKPOINT, TINY_EMBEDDING, TINY_LORA, TINY_VAE

pytestmark = [pytest.mark.comfyui, pytest.mark.slow, pytest.mark.asyncio]

LORA_NAME = TINY_LORA.rsplit(".", 1)[0]


@pytest_asyncio.fixture
async def bridge(aiohttp_client, comfyui, tmp_path):
    settings = load_settings({"data_dir": tmp_path / "data", "comfyui_urls": [comfyui.url]}, env_file=None)
    return await aiohttp_client(create_app(settings, adapter_names=["a1111", "jobs_api"]))


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")).astype(int)


def lora_graph(loras: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_CHECKPOINT}},
        "2": {"class_type": "PixartLoraStack", "inputs": {"model": ["1", 0], "clip": ["1", 1], "loras": loras}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a pixel art cat", "clip": ["2", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["5", 0], "seed": 3, "steps": 2, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "lora_test"}},
    }


def run_graph(comfyui, graph: dict[str, Any]) -> np.ndarray:
    entry = comfyui.run_prompt(graph)
    image = next(iter(entry["outputs"].values()))["images"][0]
    data = comfyui.view(image["filename"], image["subfolder"], image["type"])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


async def test_lora_stack_node_applies_every_key_and_strength_zero_is_no_lora(comfyui):
    def runs() -> dict[str, np.ndarray]:
        return {
            "none": run_graph(comfyui, lora_graph("[]")),
            "zero": run_graph(comfyui, lora_graph(json.dumps([{"name": LORA_NAME, "strength": 0,
                                                                "clip_strength": 0}]))),
            "model": run_graph(comfyui, lora_graph(json.dumps([{"name": LORA_NAME, "strength": 1,
                                                                 "clip_strength": 0}]))),
            "clip": run_graph(comfyui, lora_graph(json.dumps([{"name": TINY_LORA, "strength": 0,
                                                                "clip_strength": 2}]))),
        }

    out = await asyncio.to_thread(runs)
    assert np.array_equal(out["none"], out["zero"])
    assert np.abs(out["model"] - out["none"]).mean() > 1.0
    assert np.abs(out["clip"] - out["none"]).mean() > 1.0
    # ComfyUI logs each LoRA key it could not match to a layer; the tiny LoRA's keys must all apply.
    assert "lora key not loaded" not in comfyui.process.log_path.read_text(errors="replace")


async def test_lora_stack_refuses_unknown_names_naming_them(comfyui):
    status, body = await asyncio.to_thread(comfyui.post_json, "/prompt", {"prompt": lora_graph(
        json.dumps([{"name": "nope", "strength": 1}]))})
    if status == 200:  # validation passes (the list is text); the node fails at run time
        hist = await asyncio.to_thread(_wait_history, comfyui, body["prompt_id"])
        message = json.dumps(hist["status"])
        assert "nope" in message and "not in the loras folder" in message
    else:
        raise AssertionError(body)


def _wait_history(comfyui, prompt_id: str) -> dict[str, Any]:
    import time

    for _ in range(600):
        entry = comfyui.get_json(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None and entry["status"].get("status_str"):
            return entry
        time.sleep(0.1)
    raise AssertionError("no history")


async def test_a1111_lora_tags_vae_and_embeddings_on_a_real_backend(bridge):
    base = {"prompt": "a pixel art cat", "seed": 11, "width": 64, "height": 64, "steps": 2, "cfg_scale": 5,
            "sampler_name": "Euler"}

    async def one(**change) -> tuple[np.ndarray, dict[str, Any]]:
        resp = await bridge.post("/sdapi/v1/txt2img", json={**base, **change})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        return pixels(body["images"][0]), json.loads(body["info"])

    plain, _ = await one()
    zero, _ = await one(prompt=f"a pixel art cat <lora:{LORA_NAME}:0>")
    tagged, info = await one(prompt=f"a pixel art cat <lora:{LORA_NAME}:1>")
    assert np.array_equal(plain, zero) and np.abs(tagged - plain).mean() > 1.0
    assert info["prompt"] == f"a pixel art cat <lora:{LORA_NAME}:1>"  # the infotext keeps the tag, as A1111's
    vae, info = await one(override_settings={"sd_vae": TINY_VAE})
    assert np.abs(vae - plain).mean() > 1.0 and f"VAE: {TINY_VAE}," in info["infotexts"][0]
    emb_name = TINY_EMBEDDING.rsplit(".", 1)[0]
    with_emb, _ = await one(prompt=f"a pixel art cat, {emb_name}")
    as_text, _ = await one(prompt="a pixel art cat, embedding_not_installed")
    assert not np.array_equal(with_emb, as_text)
    listed = await (await bridge.get("/sdapi/v1/embeddings")).json()
    assert listed["loaded"][emb_name] == {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                          "shape": 768, "vectors": 2}
    loras = await (await bridge.get("/sdapi/v1/loras")).json()
    assert {"name": LORA_NAME, "alias": "pixart_tiny", "path": TINY_LORA} == \
        {k: v for k, v in loras[0].items() if k != "metadata"}
    assert loras[0]["metadata"]["ss_network_dim"] == "4"
    assert TINY_VAE in [v["model_name"] for v in await (await bridge.get("/sdapi/v1/sd-vae")).json()]


async def test_jobs_api_and_generic_endpoint_take_loras_on_a_real_backend(bridge):
    from tests.support.imaging import decode_png_data_url

    async def jobs_api(params: dict[str, Any]) -> np.ndarray:
        resp = await bridge.post("/generate/text2img", json={"prompt": "a pixel art cat", "seed": 5, "width": 64,
                                                             "height": 64, "steps": 2, **params})
        assert resp.status == 202, await resp.text()
        job_id = (await resp.json())["id"]
        for _ in range(1200):
            job = await (await bridge.get(f"/jobs/{job_id}")).json()
            if job["status"] in ("completed", "failed", "cancelled"):
                break
            await asyncio.sleep(0.1)
        assert job["status"] == "completed", job
        return np.asarray(decode_png_data_url(job["result"]["images"][0]).convert("RGB")).astype(int)

    async def generic(params: dict[str, Any]) -> np.ndarray:
        resp = await bridge.post("/workflows/txt2img?wait=300", json={"parameters": {
            "prompt": "a pixel art cat", "seed": 5, "width": 64, "height": 64, "steps": 2, **params}})
        job = await resp.json()
        assert job["status"] == "completed", job
        return np.asarray(decode_png_data_url(job["result"]["images"][0]).convert("RGB")).astype(int)

    for run in (jobs_api, generic):
        plain = await run({})
        zero = await run({"loras": [{"name": LORA_NAME, "strength": 0, "clip_strength": 0}]})
        strong = await run({"loras": [{"name": LORA_NAME, "strength": 1.0}]})
        assert np.array_equal(plain, zero) and np.abs(strong - plain).mean() > 1.0, run.__name__
    resp = await bridge.post("/generate/text2img", json={"prompt": "x", "loras": [{"name": "missing"}]})
    assert resp.status == 400 and "loras[0].name" in await resp.text()
