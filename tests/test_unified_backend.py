"""/generate's backend choice over the protocol double: `auto` runs the Axera workflows where the backend reports
the Axera model set and SD1.5 elsewhere; an explicit `axera` without the models is a 503 naming the setting and
the folder; /generate/options says which backend runs and why; text_time_ms on SD1.5 comes from ComfyUI's
execution messages."""
from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.asyncio


def workflows_run(double) -> list[str]:
    return [next(n["class_type"] for n in p.get("prompt", p).values() if n["class_type"] in
                 ("KSampler", "PixartAxeraTxt2Img")) for p in double.prompts]


async def test_auto_runs_sd15_without_axera_models_and_axera_with_them(bridge_factory, comfy_double):
    client = await bridge_factory(adapters=["unified"])
    opts = await (await client.get("/generate/options")).json()
    assert opts["backend"] == "sd15" and opts["backend_setting"] == "auto" and opts["backend_error"] is None
    assert "no Axera model set" in opts["backend_reason"] and "not a folder" in opts["backend_reason"]
    resp = await client.post("/generate", json={"prompt": "a fox", "width": 64, "height": 64, "steps": 2})
    data = await resp.json()
    assert resp.status == 200, data
    assert data["backend"] == "sd15" and workflows_run(comfy_double) == ["KSampler"]
    assert isinstance(data["text_time_ms"], float) and data["text_time_ms"] >= 0
    comfy_double.axera_models = True
    opts = await (await client.get("/generate/options")).json()
    assert opts["backend"] == "axera" and "model set found" in opts["backend_reason"]
    data = await (await client.post("/generate", json={"prompt": "a fox"})).json()
    assert data["backend"] == "axera" and workflows_run(comfy_double)[-1] == "PixartAxeraTxt2Img"


async def test_explicit_axera_without_models_is_503_naming_setting_and_folder(bridge_factory, comfy_double):
    client = await bridge_factory(adapters=["unified"], UNIFIED_BACKEND="axera",
                                  UNIFIED_AXERA_MODEL_DIR="no-such-build")
    resp = await client.post("/generate", json={"prompt": "a fox"})
    data = await resp.json()
    assert resp.status == 503 and data["status"] == "error" and data["field"] == "UNIFIED_BACKEND"
    assert "no-such-build" in data["error"] and "UNIFIED_AXERA_MODEL_DIR" in data["error"]
    assert resp.headers["Retry-After"]
    assert comfy_double.prompts == []  # answered at once, nothing queued
    opts = await (await client.get("/generate/options")).json()
    assert opts["backend"] == "axera" and opts["backend_error"] is not None


async def test_text_time_counts_the_encoders_and_zero_when_cached(bridge_factory, comfy_double):
    comfy_double.node_delay = 0.02
    client = await bridge_factory(adapters=["unified"], UNIFIED_BACKEND="sd15")
    body = {"prompt": "a fox", "width": 64, "height": 64, "steps": 2, "seed": 3}
    first = await (await client.post("/generate", json=body)).json()
    again = await (await client.post("/generate", json={**body, "seed": 4})).json()
    assert first["text_time_ms"] >= 2 * 20 * 0.8  # two encoders of 20 ms (the double's node delay)
    assert again["text_time_ms"] == 0.0  # same prompts: ComfyUI served both encoders from its cache


@pytest.mark.parametrize("settings,missing", [
    ({"UNIFIED_BACKEND": "sd15"}, "holds no checkpoint"),
    ({"UNIFIED_BACKEND": "auto"}, "holds no checkpoint"),
    ({"UNIFIED_BACKEND": "sd15", "UNIFIED_SD15_CHECKPOINT": "dreamshaper_8.safetensors"}, "dreamshaper_8"),
])
async def test_sd15_without_its_checkpoint_is_503_at_once_saying_what_is_missing(bridge_factory, comfy_double,
                                                                                  settings, missing):
    if "UNIFIED_SD15_CHECKPOINT" not in settings:
        comfy_double.checkpoints = []
    client = await bridge_factory(adapters=["unified"], **settings)
    resp = await client.post("/generate", json={"prompt": "a fox", "width": 64, "height": 64, "steps": 2})
    data = await resp.json()
    assert resp.status == 503 and data["field"] == "UNIFIED_BACKEND" and missing in data["error"], data
    assert "models/checkpoints" in data["error"] and resp.headers["Retry-After"]
    assert comfy_double.prompts == []
    opts = await (await client.get("/generate/options")).json()
    assert opts["backend"] == "sd15" and missing in opts["backend_error"]


async def test_a_client_over_its_quota_gets_429_with_retry_after(bridge_factory, comfy_double):
    # the Pi service had no quotas; a refusal a client can retry must not read as a server fault (500)
    comfy_double.step_delay = 0.2
    client = await bridge_factory(adapters=["unified"], max_jobs_per_client=1)
    body = {"prompt": "a fox", "width": 64, "height": 64, "steps": 10}
    first = asyncio.ensure_future(client.post("/generate", json=body))
    for _ in range(200):
        if comfy_double.prompts:
            break
        await asyncio.sleep(0.01)
    resp = await client.post("/generate", json=body)
    data = await resp.json()
    assert resp.status == 429 and data["status"] == "error" and "BRIDGE_MAX_JOBS_PER_CLIENT" in data["error"], data
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await first).status == 200


async def test_an_axera_model_dir_the_workflows_refuse_stops_the_start(bridge_factory):
    # an absolute folder (or one with ..) was a 400 naming the setting in every request the Axera workflows got
    from bridge.adapters import AdapterLoadError

    for bad in ("/srv/axera/sd15", "../models", "lcm/../../etc"):
        with pytest.raises(AdapterLoadError, match="UNIFIED_AXERA_MODEL_DIR: model_dir must match the pattern"):
            await bridge_factory(adapters=["unified"], UNIFIED_AXERA_MODEL_DIR=bad)
    assert await bridge_factory(adapters=["unified"], UNIFIED_AXERA_MODEL_DIR="lcm-1024x768")


@pytest.mark.parametrize("backend", ["axera", "sd15"])
async def test_an_init_image_is_fetched_and_decoded_once_for_every_image_of_the_request(
        bridge_factory, comfy_double, aiohttp_server, monkeypatch, backend):
    # img2img runs one job per image (up to UNIFIED_MAX_IMAGES): each job fetched the URL and decoded the picture
    # again, 16 fetches and 16 decodes for one request (a 12 MB PNG: 8.8 s of the image pool)
    import base64
    import io

    from aiohttp import web
    from PIL import Image

    from bridge import images as image_io

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="PNG")
    fetched = []

    async def serve(request):
        fetched.append(request.path)
        return web.Response(body=buf.getvalue(), content_type="image/png")

    site = web.Application()
    site.router.add_get("/init.png", serve)
    server = await aiohttp_server(site)
    decoded = []
    real = image_io.decode_image
    monkeypatch.setattr(image_io, "decode_image", lambda *a, **k: decoded.append(1) or real(*a, **k))
    comfy_double.axera_models = backend == "axera"
    client = await bridge_factory(adapters=["unified"], UNIFIED_BACKEND=backend, outbound_allow=["127.0.0.1"])
    body = {"prompt": "a fox", "batch_size": 4, "seed": 1, "width": 64, "height": 64, "steps": 1}
    for init in (base64.b64encode(buf.getvalue()).decode(), str(server.make_url("/init.png"))):
        decoded.clear()
        resp = await client.post("/generate", json={**body, "init_image": init})
        data = await resp.json()
        assert resp.status == 200 and data["mode"] == "img2img" and len(data["images"]) == 4, data
        assert len(decoded) == 1
    assert fetched == ["/init.png"]
