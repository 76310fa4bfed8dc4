"""Results leaving the box, against a real ComfyUI with the tiny SD1.5 model: a signed webhook retried after two
500s and resumed by a restarted bridge, live preview frames (ComfyUI's latent2rgb previews) as `preview` events and
at /jobs/{id}/preview, and A1111's current_image while a generation runs."""
from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from standardwebhooks.webhooks import Webhook

from bridge.app import create_app
from bridge.config import load_settings
from tests.support.real_comfyui import TINY_CHECKPOINT
from tests.test_webhooks import SECRET, receiver, settled  # noqa: F401  (fixture)

pytestmark = [pytest.mark.comfyui, pytest.mark.slow, pytest.mark.asyncio]


def settings_for(comfyui: Any, data_dir: Path, **extra: Any) -> Any:
    return load_settings({"data_dir": data_dir, "comfyui_urls": [comfyui.url], "outbound_allow": ["127.0.0.1"],
                          "webhook_secret": SECRET, **extra}, overrides={"A1111_CHECKPOINT": TINY_CHECKPOINT},
                         env_file=None)


def job_body(**extra: Any) -> dict[str, Any]:
    return {"parameters": {"prompt": "a pixel fox", "width": 64, "height": 64, "steps": 1,
                           "checkpoint": TINY_CHECKPOINT}, **extra}


async def test_webhook_signed_retried_and_resumed_after_restart(comfyui: Any, receiver: Any, aiohttp_client: Any,
                                                                tmp_path: Path) -> None:
    settings = settings_for(comfyui, tmp_path / "data", webhook_retry_base=0.3)
    first = await aiohttp_client(create_app(settings, adapter_names=["jobs_api"]))
    receiver.answers = [500, 500]
    job = await (await first.post("/workflows/txt2img?wait=300", json=job_body(webhook=receiver.url))).json()
    assert job["status"] == "completed", job
    await receiver.wait_for(3, timeout=60)
    payloads = [Webhook(SECRET).verify(m["body"], m["headers"]) for m in receiver.got]
    assert {p["type"] for p in payloads} == {"job.completed"} and payloads[0]["data"]["id"] == job["id"]
    assert len({m["headers"]["webhook-id"] for m in receiver.got}) == 1  # one message, three attempts
    log = (await settled(first, job["id"], 3))[0]
    assert [a["status"] for a in log["attempts"]] == [500, 500, 204] and log["status"] == "delivered"
    # the bridge stops while a delivery is still failing; the next bridge on the same data delivers it
    receiver.got.clear()
    receiver.answers = [500]
    second_job = await (await first.post("/workflows/txt2img?wait=300",
                                         json=job_body(webhook=receiver.url))).json()
    await receiver.wait_for(1, timeout=60)
    await first.close()
    again = await aiohttp_client(create_app(settings, adapter_names=["jobs_api"]))
    await receiver.wait_for(2, timeout=60)
    assert Webhook(SECRET).verify(receiver.got[1]["body"], receiver.got[1]["headers"])["data"]["id"] == \
        second_job["id"]
    log = (await settled(again, second_job["id"], 2))[0]
    assert [a["status"] for a in log["attempts"]] == [500, 204]


async def test_preview_events_and_a1111_current_image_while_it_runs(comfyui: Any, aiohttp_client: Any,
                                                                    tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(settings_for(comfyui, tmp_path / "data"),
                                             adapter_names=["jobs_api", "a1111"]))
    # enough steps that the tiny model runs for a while on a CPU
    body = {"parameters": {"prompt": "a pixel fox", "width": 128, "height": 128, "steps": 30,
                           "checkpoint": TINY_CHECKPOINT}}
    accepted = await (await client.post("/workflows/txt2img", json=body)).json()
    job_id = accepted["id"]
    resp = await client.get(f"/events?job={job_id}")
    previews = 0
    async for raw in resp.content:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        event = json.loads(line[5:])
        if event["type"] == "preview":
            previews += 1
            frame = await client.get(event["preview"])
            assert frame.status == 200
            with Image.open(io.BytesIO(await frame.read())) as im:
                # a square picture of the square latent (ComfyUI scales its latent2rgb frame for display)
                assert im.size[0] == im.size[1] >= 32
        if event["type"] == "status" and event["job"]["status"] in ("completed", "failed", "cancelled"):
            assert event["job"]["status"] == "completed", event
            break
    assert previews >= 1
    # A1111: current_image is filled while the request runs
    task = asyncio.ensure_future(client.post("/sdapi/v1/txt2img", json={
        "prompt": "a pixel fox", "width": 128, "height": 128, "steps": 30, "seed": 3}))
    seen = None
    while not task.done():
        progress = await (await client.get("/sdapi/v1/progress")).json()
        if progress.get("current_image"):
            seen = progress["current_image"]
        await asyncio.sleep(0.05)
    answer = await task
    assert answer.status == 200, await answer.text()
    assert seen is not None
    with Image.open(io.BytesIO(base64.b64decode(seen))) as im:
        assert im.size[0] > 0


async def test_url_input_webp_answer_and_indexed_png_on_a_real_comfyui(comfyui: Any, aiohttp_client: Any,
                                                                       aiohttp_server: Any, tmp_path: Path) -> None:
    from aiohttp import web

    from tests.support.imaging import encode

    import numpy as np

    sketch = encode(np.random.default_rng(5).integers(0, 256, (48, 48, 3), dtype=np.uint8))

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=sketch, content_type="image/png")

    app = web.Application()
    app.router.add_get("/sketch.png", serve)
    server = await aiohttp_server(app, host="127.0.0.1")
    url = f"http://127.0.0.1:{server.port}/sketch.png"
    colours = ["#ff0000", "#0000ff", "#00ff00", "#101010"]
    body = {"parameters": {"sketch": url, "width": 16, "height": 16, "palette_source": "hex",
                           "palette_hex": " ".join(colours)}}
    refused = await aiohttp_client(create_app(load_settings({"data_dir": tmp_path / "refused",
                                                             "comfyui_urls": [comfyui.url]}, env_file=None),
                                              adapter_names=["jobs_api"]))
    resp = await refused.post("/workflows/pixel_art?wait=120", json=body)
    err = await resp.json()
    assert resp.status == 400 and err["field"] == "sketch" and "BRIDGE_OUTBOUND_ALLOW" in err["error"], err

    client = await aiohttp_client(create_app(settings_for(comfyui, tmp_path / "data"), adapter_names=["jobs_api"]))
    resp = await client.post("/workflows/pixel_art?wait=120", json={**body, "output_format": "webp",
                                                                     "output_quality": 100})
    job = await resp.json()
    assert resp.status == 200 and job["status"] == "completed", job
    webp = base64.b64decode(job["result"]["outputs"]["images"][0].split(",", 1)[1])
    with Image.open(io.BytesIO(webp)) as im:
        assert im.format == "WEBP" and im.size == (16, 16)
        used = {tuple(c) for c in np.asarray(im.convert("RGB")).reshape(-1, 3).tolist()}
    wanted = [tuple(bytes.fromhex(c[1:])) for c in colours]
    assert used <= set(wanted)  # lossless: only palette colours
    # the indexed output is a PNG whatever output_format says: its palette is the point
    png = base64.b64decode(job["result"]["outputs"]["indexed"][0].split(",", 1)[1])
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.mode == "P" and im.size == (16, 16)
        assert im.getpalette() == [v for c in wanted for v in c]
