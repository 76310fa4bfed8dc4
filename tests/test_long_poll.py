"""`?wait=SECONDS` on job status routes: the answer comes as soon as the job ends, so a client needs one request
instead of dozens of polls; when the time is up the job comes as it stands."""
from __future__ import annotations

import time

import pytest

from tests.support.imaging import solid_png_b64

pytestmark = pytest.mark.asyncio


async def test_jobs_api_wait_answers_when_the_job_ends(bridge_factory, comfy_double):
    comfy_double.step_delay = 0.05
    client = await bridge_factory(adapters=["jobs_api"])
    job_id = (await (await client.post("/generate/text2img", json={"prompt": "a", "width": 64, "height": 64,
                                                                   "steps": 10})).json())["id"]
    started = time.monotonic()
    job = await (await client.get(f"/jobs/{job_id}?wait=120")).json()
    took = time.monotonic() - started
    # Bounds far from both the job's 0.5 s and the wait: a paused machine (CI once stalled 17 s) does not fail it.
    assert job["status"] == "completed" and job["result"]["images"] and took < 60
    # short wait: the job as it stands, no error
    comfy_double.step_delay = 0.5
    job_id = (await (await client.post("/generate/text2img", json={"prompt": "b", "width": 64, "height": 64,
                                                                   "steps": 100})).json())["id"]
    started = time.monotonic()
    job = await (await client.get(f"/jobs/{job_id}?wait=0.3")).json()
    assert job["status"] in ("queued", "processing") and 0.25 < time.monotonic() - started < 30
    resp = await client.get(f"/jobs/{job_id}?wait=9999")
    assert resp.status == 400 and "wait" in await resp.text()


async def test_editor_status_wait_answers_when_the_generation_ends(bridge_factory, comfy_double):
    comfy_double.node_delay = 0.05
    client = await bridge_factory(adapters=["pixart_editor"])
    resp = await client.post("/api/pixel-generation/generate", json={
        "id": "waited", "sketchData": solid_png_b64(32, 32), "width": 16, "height": 16, "useAI": False})
    assert resp.status == 200
    resp = await client.get("/api/pixel-generation/status/waited?wait=30")
    body = await resp.json()
    assert resp.status == 200, body
    assert body["status"] == "completed"


async def test_a_stopping_server_answers_long_polls_at_once_and_keeps_the_job(bridge_factory, comfy_double):
    import asyncio

    from bridge.app import ENGINE

    comfy_double.step_delay = 0.5
    client = await bridge_factory(adapters=["jobs_api"])
    job_id = (await (await client.post("/generate/text2img", json={"prompt": "c", "width": 64, "height": 64,
                                                                   "steps": 150})).json())["id"]
    poll = asyncio.ensure_future(client.get(f"/jobs/{job_id}?wait=600"))
    await asyncio.sleep(0.3)
    assert not poll.done()
    started = time.monotonic()
    await client.app.shutdown()  # what a graceful stop does first (on_shutdown)
    resp = await asyncio.wait_for(poll, 120)
    job = await resp.json()
    assert resp.status == 200 and job["status"] in ("queued", "processing") and time.monotonic() - started < 60
    # the job was only waited on, not cancelled: it goes on in ComfyUI
    assert client.app[ENGINE].get(job_id).status in ("queued", "running")
