"""Live previews over the protocol double (which sends ComfyUI's binary preview frames after each sampler step):
the newest one at /jobs/{id}/preview, throttled `preview` events on /events, and A1111's current_image."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

pytestmark = pytest.mark.asyncio


async def test_preview_route_and_events(bridge_factory, comfy_double):
    comfy_double.step_delay = 0.1
    client = await bridge_factory(adapters=["jobs_api"])
    job_id = (await (await client.post("/generate/text2img", json={"prompt": "a", "width": 64, "height": 64,
                                                                   "steps": 12})).json())["id"]
    resp = await client.get(f"/events?job={job_id}")
    kinds, previews = [], 0
    async for raw in resp.content:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        event = json.loads(line[5:])
        kinds.append(event["type"])
        if event["type"] == "preview":
            previews += 1
            assert event["preview"] == f"/jobs/{job_id}/preview"
            img = await client.get(event["preview"])
            assert img.status == 200 and img.content_type == "image/jpeg"
            assert Image.open(io.BytesIO(await img.read())).size == (8, 8)  # latent size: 1/8 of 64
        if event["type"] == "status" and event["job"]["status"] == "completed":
            break
    # 12 steps of 0.1 s, events at most every 0.5 s: a few, never one per frame
    assert 1 <= previews <= 4, kinds
    # after the end the last preview stays available
    assert (await client.get(f"/jobs/{job_id}/preview")).status == 200


async def test_no_preview_is_404_with_the_reason(bridge_factory, comfy_double):
    comfy_double.previews = False
    client = await bridge_factory(adapters=["jobs_api"])
    job_id = (await (await client.post("/generate/text2img", json={"prompt": "a", "width": 64, "height": 64,
                                                                   "steps": 2})).json())["id"]
    await client.get(f"/jobs/{job_id}?wait=10")
    resp = await client.get(f"/jobs/{job_id}/preview")
    assert resp.status == 404 and "preview-method" in await resp.text()
    assert (await client.get("/jobs/nope/preview")).status == 404
