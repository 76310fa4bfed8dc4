"""Job API through a real ComfyUI with tiny random-weight models (SD1.5 checkpoint, CLIP vision, style model):
the workflows really run, images have the asked size, seeds and styleStrength really change the pixels, /models
lists the files ComfyUI has, bad input is refused and the server keeps serving."""
from __future__ import annotations

import asyncio
import io
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from bridge.app import create_app
from bridge.config import load_settings
from tests.support.double import style_nodes
from tests.support.real_comfyui import TINY_CHECKPOINT
from tests.support.tiny_style_models import TINY_CLIP_VISION, TINY_STYLE_MODEL
from tests.support.waiting import wait_healthy
from tests.test_jobs_api import (ACCEPTED_KEYS, JOB_KEYS, RESULT_KEYS, big_png_b64, decode_data_url, png_b64,
                                 submit)

# asyncio is marked per test: the module also holds a plain sync check, which an asyncio mark would warn about
pytestmark = [pytest.mark.comfyui, pytest.mark.slow]


@pytest_asyncio.fixture
async def client(tiny_style_models: Any, comfyui: Any, aiohttp_client: Any,
                 tmp_path: Any) -> Any:
    settings = load_settings({"data_dir": tmp_path / "data", "comfyui_urls": [comfyui.url]}, env_file=None)
    c = await aiohttp_client(create_app(settings, adapter_names=["jobs_api"]))
    await wait_healthy(c, timeout=30)
    return c


async def finish(client: Any, job_id: str, timeout: float = 300.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        job = await (await client.get(f"/jobs/{job_id}")).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            assert job["status"] == "completed", job
            return job
        assert loop.time() < deadline, f"job {job_id} still {job['status']}"
        await asyncio.sleep(0.2)


def pixels(job: dict[str, Any]) -> np.ndarray:
    return np.asarray(decode_data_url(job["result"]["images"][0]).convert("RGB"), dtype=np.int16)


def noise_png(width: int, height: int, seed: int) -> str:
    import base64
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


@pytest.mark.asyncio
async def test_text2img_seed_determines_the_image(client: Any) -> None:
    base = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2, "sampler": "euler_a"}
    jobs = []
    for seed in (1, 1, 2):
        accepted = await submit(client, "text2img", {**base, "seed": seed})
        assert set(accepted) == ACCEPTED_KEYS
        jobs.append(await finish(client, accepted["id"]))
    assert set(jobs[0]) == JOB_KEYS and set(jobs[0]["result"]) == RESULT_KEYS
    assert jobs[0]["result"]["parameters"]["model"] == TINY_CHECKPOINT
    a, b, c = (pixels(j) for j in jobs)
    assert a.shape == (64, 64, 3)
    assert np.array_equal(a, b)                 # same seed, same picture
    assert np.abs(a - c).mean() > 1.0           # another seed, another picture
    assert a.std() > 1.0                        # a real decode, not a flat fill


@pytest.mark.asyncio
async def test_img2img_and_inpaint_sizes(client: Any) -> None:
    accepted = await submit(client, "img2img", {"prompt": "x", "initImage": noise_png(80, 64, 1), "strength": 0.5,
                                                "steps": 2, "seed": 3})
    job = await finish(client, accepted["id"])
    assert decode_data_url(job["result"]["images"][0]).size == (80, 64)
    accepted = await submit(client, "inpaint", {"prompt": "x", "image": noise_png(64, 64, 2),
                                                "mask": png_b64(64, 64, (255, 255, 255)), "steps": 2, "seed": 3,
                                                "width": 64, "height": 64, "sampler": "dpm++_2m"})
    job = await finish(client, accepted["id"])
    assert decode_data_url(job["result"]["images"][0]).size == (64, 64)


@pytest.mark.asyncio
async def test_style_transfer_style_strength_changes_the_result(client: Any) -> None:
    body = {"contentImage": noise_png(64, 64, 10), "styleImage": noise_png(96, 80, 11), "contentStrength": 0.3,
            "steps": 2, "seed": 5, "prompt": "oil painting"}
    results = {}
    for strength in (0.0, 5.0):
        accepted = await submit(client, "style-transfer", {**body, "styleStrength": strength})
        job = await finish(client, accepted["id"], timeout=600)
        params = job["result"]["parameters"]
        assert (params["clipVision"], params["styleModel"]) == (TINY_CLIP_VISION, TINY_STYLE_MODEL)
        results[strength] = pixels(job)
    assert results[0.0].shape == (64, 64, 3)
    assert np.abs(results[0.0] - results[5.0]).mean() > 1.0


@pytest.mark.asyncio
async def test_models_lists_the_real_files(client: Any) -> None:
    models = (await (await client.get("/models")).json())["models"]
    by_type = {(m["type"], m["id"]) for m in models}
    assert {("base", TINY_CHECKPOINT), ("clip_vision", TINY_CLIP_VISION), ("style", TINY_STYLE_MODEL)} <= by_type


@pytest.mark.asyncio
async def test_bad_input_leaves_the_server_working(client: Any) -> None:
    resp = await client.post("/generate/text2img", json={"prompt": "x", "model": "stable-diffusion-xl"})
    data = await resp.json()
    assert resp.status == 400 and data["error"] == "Model stable-diffusion-xl not loaded"
    assert TINY_CHECKPOINT in data["validValues"]
    resp = await client.post("/generate/img2img", json={"prompt": "x", "initImage": big_png_b64(10_000, 10_000)})
    assert resp.status == 413
    resp = await client.post("/generate/text2img", json={"prompt": "x", "width": 65})
    assert resp.status == 400
    accepted = await submit(client, "text2img", {"prompt": "x", "width": 64, "height": 64, "steps": 1})
    assert (await finish(client, accepted["id"]))["status"] == "completed"


def test_double_style_nodes_match_comfyui(comfyui: Any) -> None:
    """The fast tests' /object_info entries for the style nodes are what ComfyUI 0.3.64 really lists."""
    real = comfyui.get_json("/object_info")
    ours = style_nodes(["a"], ["b"])
    for cls, entry in ours.items():
        got = real[cls]
        assert got["output"] == entry["output"] and list(got["input"]["required"]) == \
            list(entry["input"]["required"])
        for name, (kind, opts) in entry["input"]["required"].items():
            real_kind, *rest = got["input"]["required"][name]
            if isinstance(kind, list) and name not in ("clip_name", "style_model_name"):
                assert real_kind == kind
            elif not isinstance(kind, list):
                assert real_kind == kind
                real_opts = rest[0] if rest else {}
                assert {k: real_opts.get(k) for k in opts} == opts
