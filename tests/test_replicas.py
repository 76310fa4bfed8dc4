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
from bridge.engine.client import BackendError
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


async def test_a_cancel_asked_while_the_runner_was_not_listening_is_carried_out_on_its_resync(replicas,
                                                                                              comfy_double, pg_url):
    # The cancel note is lost (the replica's LISTEN connection was down when it was sent); the row keeps the request.
    # Once listening again the replica hears "resync": it must find the request there, not run the job to its end.
    import psycopg

    comfy_double.step_delay = 0.2
    # A lease that cannot run out under a loaded machine, and a listener already connected: otherwise a late first
    # LISTEN (its own resync) or the replica re-claiming its lapsed job finds the request before the test's resync.
    a = await replicas(lease=60.0)

    def listening() -> bool:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            return bool(conn.execute("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND query LIKE 'LISTEN %'").fetchone())

    await until(listening, what="the replica to listen")
    job = await a.submit("txt2img", {**P, "steps": 150})
    await until(lambda: job.status == "running", what="the job to run")
    assert await a.store.request_cancel(job.id)  # no note: as if sent while nobody listened
    await asyncio.sleep(0.5)
    assert job.status == "running"  # nothing told this replica
    a._replicas._heard({"type": "resync"})
    done = await a.wait(job.id, timeout=60)
    assert done.status == "cancelled" and job.prompt_id not in comfy_double.executed_prompts


async def test_cancel_works_from_the_replica_that_does_not_run_the_job(replicas, comfy_double):
    comfy_double.step_delay = 0.1
    # A's lease cannot run out on a loaded machine: a 2 s lease lapsed once beside a second CI run, B claimed the
    # job and cancelled it itself (a right answer, but not the path this test is about) and A let it go
    a, b = await replicas(lease=60.0), await replicas()
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


async def orphans(replicas: Any, *params: dict[str, Any]) -> list[Any]:
    """Jobs posted to ComfyUI (the first one running there) by a replica that went away; their leases (30 s) hold
    them until the test lets them run out (`expire`), all at once."""
    gone = await replicas(lease=30.0)
    jobs = [await gone.submit("txt2img", p) for p in params]
    await until(lambda: jobs[0].status == "running" and all(j.prompt_id for j in jobs), what="the jobs posted")
    await gone.stop()
    return jobs


def expire(pg_url: str, *jobs: Any) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET lease_until = 0 WHERE id = ANY(%s)", ([j.id for j in jobs],))


async def test_a_job_deleted_between_its_claim_and_its_adoption_stays_deleted(replicas, comfy_double, pg_url,
                                                                             monkeypatch):
    """A replica that claimed jobs held them in the store before it followed them. A DELETE on it meanwhile found
    nobody to cancel the job (its own claim of it: nothing; its own cancel note: ignored), waited its cancel out,
    and removed the row; then the job was adopted from the copy claimed before the delete, ran to its end in
    ComfyUI and wrote its results after the delete. Forced twice: the claim's cancel of an earlier job it claimed
    (which waits up to cancel_grace) holds the rest back; and the claim's answer is still out."""
    comfy_double.step_delay = 0.05
    here = await replicas(cancel_grace=1.0)
    first, second = await orphans(replicas, {**P, "steps": 150}, {**P, "seed": 6, "steps": 20})
    assert await here.store.request_cancel(first.id)  # asked while nobody held it: the claim carries it out
    cancel, deleted = here._replicas.cancel, []

    async def cancel_after_a_delete(job_id: str) -> Any:
        if job_id == first.id and not deleted:
            deleted.append(None)
            await here.delete(second.id)
            deleted[0] = second.id
        return await cancel(job_id)

    monkeypatch.setattr(here._replicas, "cancel", cancel_after_a_delete)
    expire(pg_url, first, second)
    await until(lambda: deleted and deleted[0], timeout=30, what="the DELETE during the claim")
    # its prompt was taken out of ComfyUI's queue (or interrupted), not run to its end
    await until(lambda: comfy_double.timeline[second.prompt_id]["ended"] is not None, timeout=40,
                what="the deleted job's prompt to leave ComfyUI")
    assert second.prompt_id not in comfy_double.executed_prompts
    # the claim's answer out while a DELETE of one of its jobs gets as far as it can
    blocker, third = await orphans(replicas, {**P, "steps": 150}, {**P, "seed": 7, "steps": 20})
    claim, store_claim = here._replicas.claim, here.store.claim
    asked, called, answered, deleting = asyncio.Event(), asyncio.Event(), asyncio.Event(), []

    async def claim_asked(job_id: str | None = None) -> list[Any]:
        if job_id == third.id:
            asked.set()  # the DELETE's cancel claims the job itself (nobody holds it, as far as it knows)
        return await claim(job_id)

    async def held_claim(owner: str, lease: float, limit: int, **kw: Any) -> list[Any]:
        if kw.get("job_id") == third.id:
            called.set()
            try:
                return await store_claim(owner, lease, limit, **kw)
            finally:
                answered.set()
        jobs = await store_claim(owner, lease, limit, **kw)
        if any(j.id == third.id for j in jobs) and not deleting:
            deleting.append(asyncio.create_task(here.delete(third.id)))
            await until(lambda: asked.is_set() or deleting[0].done(), timeout=30, what="the DELETE's claim")
            if called.is_set():  # the DELETE's claim reached the store: its answer comes back first
                await answered.wait()
        return jobs

    monkeypatch.setattr(here._replicas, "claim", claim_asked)
    monkeypatch.setattr(here.store, "claim", held_claim)
    expire(pg_url, blocker, third)
    await until(lambda: deleting, timeout=30, what="the claim of the orphaned jobs")
    await asyncio.wait_for(deleting[0], 30)
    await until(lambda: comfy_double.timeline[third.prompt_id]["ended"] is not None, timeout=40,
                what="the deleted job's prompt to leave ComfyUI")
    assert third.prompt_id not in comfy_double.executed_prompts
    assert await here.cancel(blocker.id)
    await here._table.flush()
    for job in (second, third):
        assert here.get(job.id) is None and await here.store.load(job.id) is None
        assert [k async for k in here.blobs.list(f"outputs/{job.id}/")] == []


async def test_a_job_deleted_while_another_replica_finishes_it_leaves_nothing(replicas, comfy_double, monkeypatch):
    """A DELETE of a job another replica runs asks it to cancel, waits, then removes the row and the job's folder of
    results. When that replica does not cancel in time (its cancel note late), it finished the job after the
    delete: the job's end could not be written (no row) and was let go, but its images, written after the
    delete's removal of the folder, stayed for good. Forced: the cancel note never reaches the running replica,
    and its first image's write waits for the DELETE to return."""
    runner, other = await replicas(), await replicas(cancel_grace=0.3)
    job_id, held, deleted, notes = "finished-late", asyncio.Event(), asyncio.Event(), []
    put = runner.blobs.put

    async def put_after_the_delete(key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if key.startswith(f"outputs/{job_id}/") and not held.is_set():
            held.set()
            await asyncio.wait_for(deleted.wait(), 30)
        await put(key, data, content_type)

    async def cancel_note_lost(job_id: str) -> None:
        notes.append(job_id)

    monkeypatch.setattr(runner.blobs, "put", put_after_the_delete)
    monkeypatch.setattr(runner._replicas, "cancel", cancel_note_lost)
    job = await runner.submit("txt2img", {**P, "batch_size": 2}, job_id=job_id)
    await asyncio.wait_for(held.wait(), 30)  # its prompt ended on the runner; the first image on its way
    await other.delete(job_id)
    deleted.set()
    await until(lambda: job.done, timeout=30, what="the runner to finish the job")
    assert job.status == "completed" and notes == [job_id]  # the runner never heard of the cancel
    await runner._table.flush()
    await until(lambda: runner.get(job_id) is None, timeout=30, what="the runner to let the job go")
    for engine in (runner, other):
        assert await engine.find(job_id) is None and job_id not in [j.id for j in await engine.list()]
    assert await other.store.load(job_id) is None
    # counts from the store again at the next refresh (the runner's own end was never written)
    await until(lambda: all(not any(e.stats()["counts"].values()) for e in (runner, other)), timeout=30,
                what="no job counted anywhere")
    left = ["?"]
    for _ in range(200):  # the runner removes what it wrote once it finds the job deleted (in the background)
        left = [b.key async for b in runner.blobs.list(f"outputs/{job_id}/")]
        if not left:
            break
        await asyncio.sleep(0.05)
    assert left == []


async def test_a_job_deleted_as_its_replica_releases_it_does_not_run_elsewhere(replicas, comfy_double, monkeypatch):
    """A replica with no backend for a job (any longer) releases it (the store's owner set to none), and follows it until the
    release returns. A DELETE on it in between cancelled its own copy, whose end could not be written (nobody owns
    the row now), waited cancel_grace for nothing and removed the row, while a replica with a backend had claimed
    the job and ran it to its end in ComfyUI. Forced: the release returns only after the other replica runs the job
    and the DELETE has returned."""
    comfy_double.step_delay = 0.05
    lonely, working = await replicas(cancel_grace=0.3), await replicas()
    job_id, deleting = "released-then-deleted", []
    release = lonely.store.release

    # Its backend goes away after the job is accepted (as the first dispatch fails): the job is released.
    async def backend_gone(job: Any) -> None:
        monkeypatch.setattr(lonely._dispatcher, "pick", lambda workflow: None)
        raise BackendError(comfy_double.url, "gone")

    def started() -> bool:
        return any(t["job"] == job_id and t["started"] is not None for t in comfy_double.timeline.values())

    async def release_then_delete(job: Any, owner: str, **kw: Any) -> bool:
        released = await release(job, owner, **kw)
        if job.id == job_id and not deleting:
            deleting.append(None)
            await until(started, timeout=30, what="the other replica to run the released job")
            await lonely.delete(job_id)
            deleting[0] = job_id
        return released

    monkeypatch.setattr(lonely.store, "release", release_then_delete)
    monkeypatch.setattr(lonely._dispatcher, "dispatch", backend_gone)
    await lonely.submit("txt2img", {**P, "steps": 150}, job_id=job_id)
    await until(lambda: deleting and deleting[0], timeout=60, what="the DELETE during the release")
    pid = next(p for p, t in comfy_double.timeline.items() if t["job"] == job_id)
    await until(lambda: comfy_double.timeline[pid]["ended"] is not None, timeout=40,
                what="the deleted job's prompt to leave ComfyUI")
    assert pid not in comfy_double.executed_prompts  # interrupted, not run to its end
    await until(lambda: working.get(job_id) is None or working.get(job_id).done, timeout=30,
                what="the other replica to end the job")
    await working._table.flush()
    for engine in (lonely, working):
        assert await engine.store.load(job_id) is None and job_id not in [j.id for j in await engine.list()]
    assert [b.key async for b in working.blobs.list(f"outputs/{job_id}/")] == []


async def test_a_cancel_heard_while_a_claim_takes_the_job_is_carried_out(replicas, comfy_double, pg_url,
                                                                        monkeypatch):
    """A cancel note for a job that a claim here has just taken from the store (its copy read before the request)
    but does not follow yet: nobody here runs the job when the note comes, so it went unheard and the job ran to
    its end although its cancel had answered. Forced: the note comes as the claim's answer returns."""
    comfy_double.step_delay = 0.1
    here = await replicas()
    blocker, target = await orphans(replicas, {**P, "steps": 150}, {**P, "seed": 8, "steps": 60})
    store_claim, heard = here.store.claim, []

    async def noted_claim(owner: str, lease: float, limit: int, **kw: Any) -> list[Any]:
        jobs = await store_claim(owner, lease, limit, **kw)
        if any(j.id == target.id for j in jobs) and not heard:
            heard.append(target.id)
            assert not next(j for j in jobs if j.id == target.id).cancel_requested
            assert await here.store.request_cancel(target.id)
            here._replicas._heard({"type": "cancel", "id": target.id, "from": "another replica"})
        return jobs

    monkeypatch.setattr(here.store, "claim", noted_claim)
    expire(pg_url, blocker, target)
    await until(lambda: heard, timeout=30, what="the claim of the orphaned jobs")
    done = await here.wait(target.id, timeout=60)
    assert done.status == "cancelled" and target.prompt_id not in comfy_double.executed_prompts
    assert await here.cancel(blocker.id)


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
