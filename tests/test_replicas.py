"""Several bridge replicas on one real PostgreSQL (and one shared data folder) over the ComfyUI protocol double
behave as one service: any replica answers for any job, events and ends cross replicas, cancel works from
anywhere, the queue bound counts every replica's jobs, a replica without a backend leaves its jobs to one that has
one, and a replica that goes away leaves its jobs to the others once its leases run out."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bridge.engine import JobEngine
from bridge.keys import ENGINE
from bridge.errors import QueueFull
from bridge.store import open_store
from tests.support.imaging import image_size
from tests.support.waiting import until

pytestmark = pytest.mark.asyncio

P = {"prompt": "a cat", "seed": 5, "steps": 3, "width": 64, "height": 64}


@pytest_asyncio.fixture
async def replicas(pg_url: str, tmp_path: Path, comfy_double: Any):
    """`make(backends=None, **options)`: a started engine on the shared database and data folder."""
    from tests.test_engine import core_workflows

    engines: list[JobEngine] = []
    wf_dir = core_workflows(tmp_path)

    async def make(backends: list[str] | None = None, **options: Any) -> JobEngine:
        options.setdefault("poll_interval", 0.3)
        options.setdefault("reconnect_max_delay", 0.3)
        options.setdefault("lease", 2.0)
        options.setdefault("claim_interval", 0.2)
        engine = JobEngine(backends or [comfy_double.url], tmp_path / "shared", wf_dir,
                           store=open_store(pg_url, tmp_path / "shared"), **options)
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    for e in engines:
        await e.stop()


async def test_any_replica_answers_for_any_job(replicas, comfy_double):
    a, b = await replicas(), await replicas()
    job = await a.submit("txt2img", {**P, "steps": 10})
    seen = await b.find(job.id)
    assert seen is not None and seen.id == job.id and b.get(job.id) is None  # read from the store, not owned
    events = []

    async def follow() -> None:
        async for event in b.subscribe(job.id):
            events.append((event["type"], event["job"]["status"]))

    follower = asyncio.ensure_future(follow())
    done = await b.wait(job.id, timeout=15)  # woken by A's announcement
    assert done.status == "completed" and done.outputs["images"]
    assert image_size(await b.read_output(done, "images", 0)) == (64, 64)
    await asyncio.wait_for(follower, 5)
    assert events[0][0] == "status" and events[-1] == ("status", "completed")
    assert [j.id for j in await b.list()] == [job.id]
    comfy_double.step_delay = 0.0


async def test_cancel_works_from_the_replica_that_does_not_run_the_job(replicas, comfy_double):
    comfy_double.step_delay = 0.1
    a, b = await replicas(), await replicas()
    job = await a.submit("txt2img", {**P, "steps": 40})
    await until(lambda: job.status == "running", what="the job to run on A")
    assert await b.cancel(job.id)
    done = await b.wait(job.id, timeout=10)
    assert done.status == "cancelled" and job.status == "cancelled"  # A, which runs it, cancelled it
    assert job.prompt_id in comfy_double.interrupts
    assert not await b.cancel(job.id)  # already ended


async def test_the_queue_bound_counts_every_replicas_jobs(replicas, comfy_double):
    comfy_double.step_delay = 0.2
    a, b = await replicas(max_queue=3), await replicas(max_queue=3)
    first = [await a.submit("txt2img", {**P, "steps": 30}) for _ in range(2)]
    await b.submit("txt2img", {**P, "steps": 30})
    with pytest.raises(QueueFull):
        await a.submit("txt2img", P)
    with pytest.raises(QueueFull):
        await b.submit("txt2img", P)
    await a.cancel(first[0].id)
    assert (await b.submit("txt2img", P)).status in ("queued", "running")  # room again, seen from B


async def test_a_replica_without_a_backend_leaves_its_jobs_to_one_that_has_one(replicas, comfy_double):
    lonely = await replicas(["http://127.0.0.1:9"], connect_wait=0.5)  # its ComfyUI is unreachable
    working = await replicas()
    job = await lonely.submit("txt2img", P)
    done = await lonely.wait(job.id, timeout=15)  # the request's replica hears of the end
    assert done.status == "completed" and done.backend == comfy_double.url
    assert (await working.find(job.id)).status == "completed"
    assert image_size(await lonely.read_output(done, "images", 0)) == (64, 64)  # from the shared folder


async def test_a_replica_that_goes_away_leaves_its_jobs_to_the_others(replicas, comfy_double):
    comfy_double.step_delay = 0.05
    a = await replicas()
    b = await replicas()
    running = await a.submit("txt2img", {**P, "steps": 60})
    waiting = await a.submit("txt2img", {**P, "seed": 6})
    await until(lambda: running.status == "running", what="A's job to run")
    first = running.prompt_id
    await a.stop()  # gone: nobody renews its leases
    t0 = time.monotonic()
    done = await b.wait(running.id, timeout=30)
    taken = time.monotonic() - t0
    assert done.status == "completed" and done.prompt_id == first  # followed, never posted again
    assert len([p for p in comfy_double.prompts if p["extra_data"].get("pixart_job") == running.id]) == 1
    assert (await b.wait(waiting.id, timeout=30)).status == "completed"
    assert b.stats()["takeovers"] >= 2
    print(f"\ntaken over and finished {taken:.2f} s after A stopped (lease 2 s)")  # timed by bench_replicas


@pytest_asyncio.fixture
async def apps(pg_url: str, tmp_path: Path, bridge_factory: Any):
    """`make(**settings)`: a bridge app (test client) on the shared database and data folder."""
    async def make(**fields: Any) -> Any:
        return await bridge_factory(database=pg_url, data_dir=tmp_path / "shared-app", lease=2.0, **fields)

    return make


async def test_a1111_answers_when_another_replica_took_its_job_over_and_progress_from_any(apps, comfy_double,
                                                                                       pg_url):
    import psycopg

    comfy_double.step_delay = 0.05
    holder = await apps(adapters=["a1111"])
    other = await apps(adapters=["a1111"])
    request = asyncio.ensure_future(holder.post("/sdapi/v1/txt2img", json={
        "prompt": "a fox", "steps": 30, "width": 64, "height": 64, "seed": 3, "sampler_name": "Euler"}))
    deadline = time.monotonic() + 20
    while True:  # any replica reports the task, from the store
        progress = await (await other.get("/sdapi/v1/progress")).json()
        if progress["state"]["sampling_step"] > 0:
            break
        assert time.monotonic() < deadline, progress
        await asyncio.sleep(0.05)
    assert progress["state"]["job_count"] == 1 and 0 < progress["progress"] < 1
    # The holder loses the job (its lease ran out during a pause, and it belongs to nobody now): its next write is
    # refused, so it lets the job go; the other replica claims it and follows it to the end.
    async def claims_nothing(job_id: str | None = None) -> list[Any]:
        return []

    holder.app[ENGINE]._replicas.claim = claims_nothing  # so that it is the other replica that takes it
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET owner = 'gone', lease_until = 0 WHERE status IN ('queued', 'running')")
    resp = await asyncio.wait_for(request, 30)
    body = await resp.json()
    assert resp.status == 200 and len(body["images"]) == 1, body
    assert json_info(body)["seed"] == 3
    engine = other.app[ENGINE]
    assert engine.stats()["takeovers"] == 1  # the request's replica was not the one that finished the job


async def test_a1111_interrupt_reaches_the_replica_that_runs_the_job(apps, comfy_double):
    comfy_double.step_delay = 0.05
    holder = await apps(adapters=["a1111"])
    other = await apps(adapters=["a1111"])
    request = asyncio.ensure_future(holder.post("/sdapi/v1/txt2img", json={
        "prompt": "a fox", "steps": 100, "width": 64, "height": 64, "n_iter": 2}))
    deadline = time.monotonic() + 20
    while (await (await other.get("/sdapi/v1/progress")).json())["state"]["sampling_step"] == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert (await other.post("/sdapi/v1/interrupt")).status == 200
    resp = await asyncio.wait_for(request, 20)  # ends long before 2 x 100 steps
    assert resp.status == 200 and comfy_double.interrupts


def json_info(body: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(body["info"])
