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


async def test_a_wait_on_a_job_deleted_meanwhile_ends_at_once(bridge_factory, comfy_double):
    """engine.wait, under every `?wait=` route and request: a job nobody here runs, deleted unfinished, never ends
    (JobNotFound within the engine's look at the store, not the wait's time); this replica's own job, cancelled by
    the DELETE, is answered as it ended even when its row is gone before the waiter looks."""
    import asyncio

    from bridge.app import ENGINE
    from bridge.errors import JobNotFound
    from bridge.store import Job

    import dataclasses

    comfy_double.step_delay = 0.5
    client = await bridge_factory(adapters=["jobs_api"])
    engine = client.app[ENGINE]
    engine.options = dataclasses.replace(engine.options, cancel_grace=0.3)  # the unconfirmed cancel's wait
    await engine.store.insert(Job(id="job_elsewhere", workflow="served_elsewhere", workflow_version=1, params={},
                                  created_at=time.time()), owner=None, lease=0.0)
    waiter = asyncio.ensure_future(engine.wait("job_elsewhere", timeout=120))
    await asyncio.sleep(0.3)
    await engine.delete("job_elsewhere")
    with pytest.raises(JobNotFound):
        await asyncio.wait_for(waiter, 60)
    job_id = (await (await client.post("/generate/text2img", json={"prompt": "d", "width": 64, "height": 64,
                                                                   "steps": 150})).json())["id"]
    waiter = asyncio.ensure_future(engine.wait(job_id, timeout=120))
    await asyncio.sleep(0.3)
    await engine.delete(job_id)
    assert (await asyncio.wait_for(waiter, 60)).status == "cancelled"
