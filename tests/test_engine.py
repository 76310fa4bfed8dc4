"""Job engine over the ComfyUI protocol double (tests/support/double.py)."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import heapq
import io
import json
import shutil
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
import pytest
import pytest_asyncio
from PIL import Image

from bridge.engine import JobEngine
from bridge.engine import client as client_module
from bridge.engine.client import BackendError, ComfyClient, queued_prompt_ids
from bridge.store import open_store
from bridge.errors import (BackendUnavailable, Conflict, InvalidParameter, JobNotFound, PayloadTooLarge, QueueFull,
                           WorkflowError, WorkflowNotFound)
from tests.support.double import ComfyDouble
from tests.support.imaging import image_size, panel_shows, solid_png_b64
from tests.support.spies import Reads
from tests.support.waiting import until

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
CORE = ("txt2img", "img2img", "inpaint")


def core_workflows(tmp_path: Path) -> Path:
    """A private copy of the three core workflows (tests may edit them)."""
    d = tmp_path / "workflows"
    d.mkdir(exist_ok=True)
    for name in CORE:
        shutil.copy(WORKFLOWS / f"{name}.json", d)
        shutil.copy(WORKFLOWS / f"{name}.manifest.json", d)
    return d


def add_websocket_variant(wf_dir: Path) -> None:
    """txt2img whose output node is SaveImageWebsocket (images arrive as binary frames)."""
    graph = json.loads((wf_dir / "txt2img.json").read_text())
    manifest = json.loads((wf_dir / "txt2img.manifest.json").read_text())
    out = manifest["outputs"]["images"]["node"]
    graph[out] = {"class_type": "SaveImageWebsocket", "inputs": {"images": graph[out]["inputs"]["images"]}}
    manifest.update(name="txt2img_ws", workflow="txt2img_ws.json")
    (wf_dir / "txt2img_ws.json").write_text(json.dumps(graph))
    (wf_dir / "txt2img_ws.manifest.json").write_text(json.dumps(manifest))


png_b64 = solid_png_b64


size_of = image_size


def posted(double: ComfyDouble, prompt_id: str) -> dict[str, Any]:
    return next(p["prompt"] for p in double.prompts if p["prompt_id"] == prompt_id)


def node_of(graph: dict[str, Any], cls: str) -> dict[str, Any]:
    return next(n for n in graph.values() if n["class_type"] == cls)


@pytest_asyncio.fixture
async def make_engine(tmp_path: Path, comfy_double: ComfyDouble, job_database: str):
    engines: list[JobEngine] = []
    wf_dir = core_workflows(tmp_path)

    async def make(backends: list[str] | None = None, *, data_dir: Path | None = None, workflows: Path | None = None,
                   **kwargs: Any) -> JobEngine:
        kwargs.setdefault("poll_interval", 0.5)
        kwargs.setdefault("reconnect_max_delay", 0.5)
        folder = data_dir or tmp_path / "data"
        if job_database:
            # One database per test: an engine made again (a restart) takes up the jobs of the one before.
            kwargs.setdefault("store", open_store(job_database, folder))
            kwargs.setdefault("lease", 1.0)
            kwargs.setdefault("claim_interval", 0.2)
        engine = JobEngine(backends or [comfy_double.url], folder, workflows or wf_dir, **kwargs)
        await engine.start()
        engines.append(engine)
        return engine

    make.wf_dir = wf_dir  # type: ignore[attr-defined]
    yield make
    for e in engines:
        await e.stop()


P = {"prompt": "a cat", "seed": 5, "steps": 3, "width": 64, "height": 64}


# ---------------------------------------------------------------------- happy paths
async def test_txt2img_completes_with_images_of_requested_size(make_engine, comfy_double):
    engine = await make_engine()
    job = await engine.submit("txt2img", {**P, "width": 72, "height": 64, "batch_size": 2, "sampler": "dpmpp_2m",
                                          "negative_prompt": "dog"}, meta={"who": "test"})
    assert job.status in ("queued", "running") and job.prompt_id and job.backend == comfy_double.url
    job = await engine.wait(job.id, timeout=10)
    assert job.status == "completed", job.error
    assert job.progress == 100 and job.step == 3 and job.steps == 3
    assert job.created_at <= job.started_at <= job.finished_at
    assert len(job.outputs["images"]) == 2
    for i in range(2):
        assert size_of(await engine.read_output(job, "images", i)) == (72, 64)
    graph = posted(comfy_double, job.prompt_id)
    ks = node_of(graph, "KSampler")
    assert (ks["seed"] if "seed" in ks else ks["inputs"]["seed"]) == 5
    assert ks["inputs"]["steps"] == 3 and ks["inputs"]["sampler_name"] == "dpmpp_2m"
    texts = sorted(n["inputs"]["text"] for n in graph.values() if n["class_type"] == "CLIPTextEncode")
    assert texts == ["a cat", "dog"]
    # The graph's checkpoint is not installed on the double, so the first live one is bound.
    assert node_of(graph, "CheckpointLoaderSimple")["inputs"]["ckpt_name"] == comfy_double.checkpoints[0]
    assert job.meta == {"who": "test"}
    assert engine.get(job.id) is job
    with pytest.raises(InvalidParameter) as e:
        await engine.read_output(job, "images", 2)
    assert e.value.field == "index"


async def test_random_seed_is_recorded(make_engine, comfy_double):
    engine = await make_engine()
    job = await engine.submit("txt2img", {**P, "seed": -1})
    seed = job.params["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**32
    await engine.wait(job.id, timeout=10)
    assert node_of(posted(comfy_double, job.prompt_id), "KSampler")["inputs"]["seed"] == seed


async def test_progress_events_are_monotonic_and_end_completed(make_engine, comfy_double):
    comfy_double.step_delay = 0.02
    engine = await make_engine()
    job = await engine.submit("txt2img", {**P, "steps": 8})
    seen = []
    async for event in engine.subscribe(job.id):
        seen.append(event)
    assert seen[-1]["type"] == "status" and seen[-1]["job"]["status"] == "completed"
    values = [e["job"]["progress"] for e in seen]
    assert values == sorted(values)
    middle = [v for v in values if 0 < v < 100]
    assert len(middle) >= 5  # per-step progress, not just start and end
    # Sampling carries most of the weight: halfway through the steps is past a third of the run.
    steps = [e["job"]["step"] for e in seen if e["type"] == "progress" and e["job"]["step"]]
    assert steps[-1] == 8


async def test_cached_nodes_count_as_done(make_engine, comfy_double):
    engine = await make_engine()
    first = await engine.wait((await engine.submit("txt2img", P)).id, timeout=10)
    second = await engine.wait((await engine.submit("txt2img", {**P, "seed": 6})).id, timeout=10)
    assert first.status == second.status == "completed"
    history = comfy_double.history[second.prompt_id]["status"]["messages"]
    cached = next(m[1]["nodes"] for m in history if m[0] == "execution_cached")
    assert cached  # the checkpoint loader and prompts did not run again
    assert second.progress == 100


@pytest.mark.parametrize("mode,expect_pad", [("just resize", False), ("crop and resize", False),
                                             ("resize and fill", True)])
async def test_img2img_uploads_and_resizes(make_engine, comfy_double, mode, expect_pad):
    engine = await make_engine()
    job = await engine.submit("img2img", {**P, "image": "data:image/png;base64," + png_b64(40, 30),
                                          "width": 64, "height": 80, "denoise": 0.4, "resize_mode": mode})
    assert job.params["image"]["width"] == 40 and job.params["image"]["format"] == "PNG"
    job = await engine.wait(job.id, timeout=10)
    assert job.status == "completed", job.error
    assert size_of(await engine.read_output(job, "images", 0)) == (64, 80)
    graph = posted(comfy_double, job.prompt_id)
    load = node_of(graph, "LoadImage")["inputs"]["image"]
    assert load in comfy_double.inputs and size_of(comfy_double.inputs[load]) == (40, 30)
    encode = node_of(graph, "VAEEncode")["inputs"]["pixels"]
    assert graph[encode[0]]["class_type"] == ("ResizeAndPadImage" if expect_pad else "ImageScale")
    assert node_of(graph, "ImageScale")["inputs"]["crop"] == ("center" if mode == "crop and resize" else "disabled")
    assert node_of(graph, "KSampler")["inputs"]["denoise"] == 0.4


async def test_inpaint_uploads_image_and_mask(make_engine, comfy_double):
    engine = await make_engine()
    job = await engine.submit("inpaint", {**P, "image": png_b64(64, 64), "mask": png_b64(64, 64, 255, "L"),
                                          "batch_size": 2})
    job = await engine.wait(job.id, timeout=10)
    assert job.status == "completed", job.error
    assert [size_of(await engine.read_output(job, "images", i)) for i in range(2)] == [(64, 64)] * 2
    graph = posted(comfy_double, job.prompt_id)
    assert node_of(graph, "LoadImageMask")["inputs"]["channel"] == "red"
    mask_file = node_of(graph, "LoadImageMask")["inputs"]["image"]
    with Image.open(io.BytesIO(comfy_double.inputs[mask_file])) as m:
        assert m.convert("RGB").getpixel((3, 3))[0] == 255  # white = repaint survives the re-encode


# ---------------------------------------------------------------------- bad input
async def test_bad_parameters_name_the_field(make_engine, comfy_double):
    engine = await make_engine()
    cases = [({"stepz": 3}, "stepz"), ({"steps": 0}, "steps"), ({"width": 65}, "width"), ({"cfg": "x"}, "cfg"),
             ({"sampler": "nope"}, "sampler"), ({"checkpoint": "missing.safetensors"}, "checkpoint"),
             ({"prompt": 3}, "prompt")]
    for params, field in cases:
        with pytest.raises(InvalidParameter) as e:
            await engine.submit("txt2img", params)
        assert e.value.field == field and field in e.value.message, (params, e.value.message)
    with pytest.raises(InvalidParameter) as e:
        await engine.submit("img2img", {"prompt": "x"})
    assert e.value.field == "image"
    with pytest.raises(InvalidParameter) as e:
        await engine.submit("img2img", {"image": "not base64 !!"})
    assert e.value.field == "image"
    with pytest.raises(WorkflowNotFound):
        await engine.submit("nope", {})
    assert engine.stats()["counts"]["queued"] == 0 and comfy_double.prompts == []
    big = PayloadTooLarge
    small = await make_engine(data_dir=Path(str(engine.data_dir) + "2"), max_image_pixels=100)
    with pytest.raises(big):
        await small.submit("img2img", {"image": png_b64(20, 20)})


async def test_comfyui_rejection_is_mapped_to_the_parameter(make_engine, comfy_double):
    wf_dir = make_engine.wf_dir
    manifest = json.loads((wf_dir / "txt2img.manifest.json").read_text())
    manifest["parameters"]["steps"]["max"] = 20000  # wider than KSampler's own limit
    (wf_dir / "txt2img.manifest.json").write_text(json.dumps(manifest))
    engine = await make_engine()
    with pytest.raises(InvalidParameter) as e:
        await engine.submit("txt2img", {"steps": 15000})
    assert e.value.field == "steps" and "bigger than max" in e.value.message
    assert await engine.list() == []


async def test_graph_rejected_outside_any_parameter_is_a_workflow_error(make_engine, comfy_double):
    graph_file = make_engine.wf_dir / "txt2img.json"
    graph = json.loads(graph_file.read_text())
    node_of(graph, "KSampler")["inputs"]["denoise"] = 2.0  # no parameter targets it; KSampler's max is 1.0
    graph_file.write_text(json.dumps(graph))
    engine = await make_engine()
    with pytest.raises(WorkflowError) as e:
        await engine.submit("txt2img", P)
    assert "workflow txt2img" in e.value.message and "denoise" in e.value.message and e.value.status == 500
    assert await engine.list() == [] and engine.stats()["queue_depth"] == 0


async def test_job_id_reuse_is_a_conflict(make_engine):
    engine = await make_engine()
    await engine.submit("txt2img", P, job_id="mine-1")
    with pytest.raises(Conflict):
        await engine.submit("txt2img", P, job_id="mine-1")
    with pytest.raises(InvalidParameter) as e:
        await engine.submit("txt2img", P, job_id="../etc")
    assert e.value.field == "job_id"


# ---------------------------------------------------------------------- failure, cancel, timeout, queue
async def test_node_failure_fails_the_job_with_the_node_named(make_engine, comfy_double):
    comfy_double.fail_class = "VAEDecode"
    comfy_double.fail_message = "out of memory (double)"
    engine = await make_engine()
    job = await engine.wait((await engine.submit("txt2img", P)).id, timeout=10)
    assert job.status == "failed"
    assert "VAEDecode" in job.error and "out of memory (double)" in job.error


async def test_a_check_of_a_prompt_that_straddles_its_cancel_leaves_the_job_cancelled(make_engine, comfy_double):
    """The watchdog's check of a queued prompt reads ComfyUI's history and queue; when a cancel deletes the prompt
    while those reads are out (seen under load on PostgreSQL), the check finds it gone. The job stays cancelled,
    both when the cancel has ended and while it is under way, and is not submitted again; nor does putting an ended
    job back in the queue revive it, and a cancel cut off while it waits for ComfyUI still ends its job."""
    comfy_double.step_delay = 0.2
    engine = await make_engine()
    tracker = engine._tracker
    first = await engine.submit("txt2img", {**P, "steps": 20})
    second = await engine.submit("txt2img", P)
    third = await engine.submit("txt2img", P)
    fourth = await engine.submit("txt2img", P)
    conn = tracker.connections[second.backend]
    pid, pid3 = second.prompt_id, third.prompt_id
    assert pid is not None and pid3 is not None
    assert await engine.cancel(second.id) is True
    await tracker.check_prompt(conn, second)  # what a check begun before the cancel goes on to do
    assert second.status == "cancelled" and second.prompt_id == pid
    tracker.dispatcher.requeue(second, front=True)
    assert second.status == "cancelled" and second.prompt_id == pid
    # a cancel under way: asked for, its delete sent, its own read of the queue not back yet
    tracker.runs.get(third.id).cancel_requested = True
    await conn.client.delete_from_queue([pid3])
    await tracker.check_prompt(conn, third)
    assert third.status == "queued" and third.prompt_id == pid3
    assert await engine.cancel(third.id) is True and third.status == "cancelled"
    comfy_double.queue_delay = 5.0  # the cancel's read of the queue hangs; its caller gives up
    cut = asyncio.create_task(engine.cancel(fourth.id))
    await asyncio.sleep(0.3)
    cut.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cut
    assert fourth.status == "cancelled"
    comfy_double.queue_delay = 0.0
    await engine.cancel(first.id)
    await asyncio.sleep(0.3)
    assert [p["prompt_id"] for p in comfy_double.prompts if p.get("prompt_id") in (pid, pid3)] == [pid, pid3]
    assert len(comfy_double.prompts) == 4 and not {pid, pid3, fourth.prompt_id} & set(comfy_double.executed_prompts)


async def test_cancel_queued_deletes_from_comfyui_queue(make_engine, comfy_double):
    comfy_double.step_delay = 0.2
    engine = await make_engine()
    first = await engine.submit("txt2img", {**P, "steps": 20})
    second = await engine.submit("txt2img", P)
    assert second.prompt_id is not None
    assert await engine.cancel(second.id) is True
    assert second.status == "cancelled" and second.prompt_id in comfy_double.deleted
    assert await engine.cancel(second.id) is False
    await engine.cancel(first.id)
    await asyncio.sleep(0.3)
    assert second.prompt_id not in comfy_double.executed_prompts
    with pytest.raises(JobNotFound):
        await engine.cancel("nope")


async def test_cancel_running_interrupts_by_prompt_id(make_engine, comfy_double):
    comfy_double.step_delay = 0.1
    engine = await make_engine()
    job = await engine.submit("txt2img", {**P, "steps": 50})
    for _ in range(100):
        if job.status == "running" and (job.step or 0) >= 1:
            break
        await asyncio.sleep(0.02)
    assert await engine.cancel(job.id) is True
    assert job.status == "cancelled" and job.prompt_id in comfy_double.interrupts
    assert comfy_double.history[job.prompt_id]["status"]["status_str"] == "error"  # ComfyUI really stopped
    assert job.finished_at is not None


async def test_a_job_cancelled_while_its_prompt_is_on_the_way_to_comfyui_never_runs_there(make_engine, comfy_double,
                                                                                         monkeypatch):
    """A dispatch writes the job (with its prompt id) before it posts the prompt. A cancel that lands between the two
    deletes from ComfyUI's queue a prompt that is not there yet: the prompt was then posted anyway and ran for a job
    that had ended. Forced both ways: the cancel lands while the write is out, and while the POST is out (the
    prompt reaches ComfyUI's queue after the cancel's delete)."""
    comfy_double.step_delay = 0.2
    engine = await make_engine()
    table, client = engine._table, engine.connections[comfy_double.url].client
    blocker = await engine.submit("txt2img", {**P, "steps": 150})  # what ComfyUI runs meanwhile: the rest wait
    await until(lambda: blocker.status == "running", what="the blocker to run")
    targets = {"in-write", "in-post"}
    persisted, queue_prompt = table.persisted, client.queue_prompt

    async def cancelled_in_write(job):
        ok = await persisted(job)
        if job.id == "in-write" and job.id in targets:
            targets.discard(job.id)
            assert await engine.cancel(job.id) is True
        return ok

    async def cancelled_in_post(graph, prompt_id, **kw):
        if kw.get("job_id") == "in-post" and "in-post" in targets:
            targets.discard("in-post")
            assert await engine.cancel("in-post") is True
        return await queue_prompt(graph, prompt_id, **kw)

    upload_image = client.upload_image

    async def cancelled_in_upload(data, filename, **kw):
        # before the dispatch gave the job its backend and prompt: the cancel's ending could not let go of them
        if filename.startswith("pixart_in-upload_") and "in-upload" in targets:
            targets.discard("in-upload")
            assert await engine.cancel("in-upload") is True
        return await upload_image(data, filename, **kw)

    targets.add("in-upload")
    monkeypatch.setattr(table, "persisted", cancelled_in_write)
    monkeypatch.setattr(client, "queue_prompt", cancelled_in_post)
    monkeypatch.setattr(client, "upload_image", cancelled_in_upload)
    in_write = await engine.submit("txt2img", P, job_id="in-write")
    in_post = await engine.submit("txt2img", P, job_id="in-post")
    in_upload = await engine.submit("img2img", {**P, "image": png_b64(8, 8)}, job_id="in-upload")
    assert not targets and {in_write.status, in_post.status, in_upload.status} == {"cancelled"}
    sent = {p["extra_data"].get("pixart_job"): p["prompt_id"] for p in comfy_double.prompts}
    assert "in-write" not in sent and "in-upload" not in sent  # ended before its POST: never posted
    # nothing of theirs is left in the dispatch's books (a job left in a backend's work skews where jobs go)
    assert not {"in-write", "in-upload"} & engine.connections[comfy_double.url].jobs
    assert engine._runs.get("in-write") is None and engine._runs.get("in-upload") is None
    # posted after the cancel: taken out of ComfyUI's queue again, before it could run
    await until(lambda: comfy_double.timeline[sent["in-post"]]["ended"] is not None, timeout=30,
                what="the prompt posted after its cancel to leave ComfyUI's queue")
    assert comfy_double.timeline[sent["in-post"]]["started"] is None
    await engine.cancel(blocker.id)
    assert sent["in-post"] not in comfy_double.executed_prompts
    assert (await engine.find("in-write")).status == "cancelled" and (await engine.find("in-post")).status == "cancelled"


async def test_a_job_deleted_while_its_results_are_stored_leaves_no_files(make_engine, comfy_double, monkeypatch):
    """Finishing a job stores its images before it looks at whether the job ended meanwhile. A DELETE while the
    storing took longer than cancel_grace ended the job (cancelled), removed its row and its folder of results,
    and the images still on their way were written after that: files of a job that no longer exists, never removed.
    Forced: the first image's write waits for the DELETE to return; two images, so one is written after it too."""
    engine = await make_engine(cancel_grace=0.2)
    put, held, deleted = engine.blobs.put, asyncio.Event(), asyncio.Event()
    job_id = "stored-late"

    async def put_after_the_delete(key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if key.startswith(f"outputs/{job_id}/") and not held.is_set():
            held.set()
            await asyncio.wait_for(deleted.wait(), 30)
        await put(key, data, content_type)

    finalize, finalized = engine._tracker.finalize, asyncio.Event()

    async def finalize_seen(conn, job, entry):
        try:
            await finalize(conn, job, entry)
        finally:
            if job.id == job_id:
                finalized.set()

    monkeypatch.setattr(engine.blobs, "put", put_after_the_delete)
    monkeypatch.setattr(engine._tracker, "finalize", finalize_seen)
    job = await engine.submit("txt2img", {**P, "batch_size": 2}, job_id=job_id)
    await asyncio.wait_for(held.wait(), 30)  # the prompt ended; its first image is on its way to the store
    await engine.delete(job_id)
    assert job.status == "cancelled"  # the cancel, not the result, ended it
    deleted.set()
    await asyncio.wait_for(finalized.wait(), 30)
    await engine._table.flush()
    assert await engine.find(job_id) is None and await engine.store.load(job_id) is None
    assert job_id not in [j.id for j in await engine.list()]
    assert engine.stats()["counts"] == {s: 0 for s in engine.stats()["counts"]}
    assert [b.key async for b in engine.blobs.list(f"outputs/{job_id}/")] == []


async def test_two_finalizes_of_one_job_keep_its_results(make_engine, comfy_double, monkeypatch):
    """The websocket's end and a watchdog's poll of ComfyUI's history can both finalize one job, storing the same
    keys. The one that finds the job completed by the other must leave those results alone. Forced: the first
    holds at its first image's write until the second has completed the job."""
    engine = await make_engine()
    finalize, put = engine._tracker.finalize, engine.blobs.put
    first_put, second_done, both_done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def twice(conn, job, entry):
        if job.id != "twice" or both_done.is_set() or first_put.is_set():
            return await finalize(conn, job, entry)
        first = asyncio.ensure_future(finalize(conn, job, entry))
        await asyncio.wait_for(first_put.wait(), 30)
        await finalize(conn, job, entry)  # the other one: it stores the images and completes the job
        second_done.set()
        await first
        both_done.set()

    async def held_put(key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if key.startswith("outputs/twice/") and not first_put.is_set():
            first_put.set()
            await asyncio.wait_for(second_done.wait(), 30)
        await put(key, data, content_type)

    monkeypatch.setattr(engine._tracker, "finalize", twice)
    monkeypatch.setattr(engine.blobs, "put", held_put)
    await engine.submit("txt2img", P, job_id="twice")
    await asyncio.wait_for(both_done.wait(), 30)
    done = await engine.find("twice")
    assert done is not None and done.status == "completed"
    assert image_size(await engine.read_output(done, "images", 0)) == (64, 64)


async def test_refreshes_asked_during_one_share_the_next(make_engine, comfy_double, monkeypatch):
    # /object_info is megabytes that ComfyUI rebuilds and the bridge decodes; A1111 clients refresh at will
    engine = await make_engine()
    await until(lambda: all(c.healthy for c in engine.connections.values()), what="the backend up")
    reads = []
    read = ComfyClient.object_info

    async def counted(self):
        reads.append(1)
        await asyncio.sleep(0.05)
        return await read(self)

    monkeypatch.setattr(ComfyClient, "object_info", counted)
    await asyncio.gather(*(engine.refresh_object_info() for _ in range(20)))
    assert len(reads) == 2  # the first, and one begun after the other nineteen asked
    await engine.refresh_object_info()
    assert len(reads) == 3  # asked after those ended: a read of its own


async def test_queued_jobs_share_one_read_of_comfyuis_queue(make_engine, comfy_double):
    # /queue carries every queued prompt's graph: one read per queued job at each look made a long queue cost its
    # square (a thousand jobs stalled the bridge).
    comfy_double.step_delay = 0.2
    engine = await make_engine(queue_poll_interval=0.2)
    blocker = await engine.submit("txt2img", {**P, "steps": 50})
    waiting = [await engine.submit("txt2img", {**P, "seed": i}) for i in range(30)]
    await until(lambda: all(j.prompt_id for j in waiting), what="every prompt posted")
    await until(lambda: blocker.status == "running", what="the first job running")
    queue_reads, history_reads = comfy_double.queue_reads, comfy_double.history_reads
    await asyncio.sleep(1.6)  # about three looks (the watchdog ticks every 0.5 s here), each due for all 30
    assert 1 <= comfy_double.queue_reads - queue_reads <= 8
    assert comfy_double.history_reads - history_reads <= 3  # a prompt still in the queue needs no history read
    assert all(j.status == "queued" for j in waiting) and blocker.status == "running"
    for job in [blocker, *waiting]:
        await engine.cancel(job.id)


async def test_a_reconnect_settles_its_queued_jobs_with_one_read_of_the_queue(make_engine, comfy_double):
    # A reconnect looks at every job the backend had before it reads the websocket again: one /queue read per job
    # made that cost the square of the queue, with no messages read meanwhile.
    comfy_double.step_delay = 0.2
    engine = await make_engine(queue_poll_interval=600)  # only the reconnect looks
    blocker = await engine.submit("txt2img", {**P, "steps": 150})
    waiting = [await engine.submit("txt2img", {**P, "seed": i}) for i in range(30)]
    await until(lambda: all(j.prompt_id for j in waiting) and blocker.status == "running", what="all posted")
    gone = waiting[0]
    comfy_double.pending = [item for item in comfy_double.pending if item[2] != gone.prompt_id]  # removed meanwhile
    queue_reads, history_reads = comfy_double.queue_reads, comfy_double.history_reads
    for ws in list(comfy_double.sockets.values()):
        await ws.close()
    await until(lambda: gone.reruns, what="the reconnect's look")
    assert comfy_double.queue_reads - queue_reads <= 3  # one for all 31, one again for the one gone (and a spare)
    assert comfy_double.history_reads - history_reads <= 4  # the one gone and the running one, perhaps twice
    assert all(j.status == "queued" for j in waiting) and blocker.status == "running"
    for job in [blocker, *waiting]:
        await engine.cancel(job.id)


async def test_a_prompt_being_posted_is_not_taken_for_one_removed_from_the_queue(make_engine, comfy_double):
    # ComfyUI validates a graph before queueing it; a look at the queue meanwhile finds nothing there, which must
    # not count as "removed outside the bridge" (that posted the prompt a second time).
    comfy_double.prompt_delay = 1.2
    engine = await make_engine(queue_poll_interval=0.2)
    job = await engine.submit("txt2img", P)
    done = await engine.wait(job.id, timeout=20)
    assert done.status == "completed" and not done.reruns
    assert [p["prompt_id"] for p in comfy_double.prompts] == [done.prompt_id]


async def test_a_websocket_handshake_nobody_answers_is_an_error_not_a_hang():
    # A server that accepts the connection and never answers (one shutting down, or frozen): the reconnect loop must
    # give up on it and settle the backend's jobs, not wait out aiohttp's five-minute default.
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            client = ComfyClient(f"http://127.0.0.1:{port}", session, "t", request_timeout=0.5)
            with pytest.raises(BackendError, match="websocket connect failed"):
                await asyncio.wait_for(client.ws_connect(), 10)
    finally:
        server.close()


async def test_an_endless_or_oversized_comfyui_answer_is_an_error_not_the_bridges_memory(aiohttp_server, monkeypatch):
    from aiohttp import web

    from bridge.engine import client as client_mod

    monkeypatch.setattr(client_mod, "JSON_ANSWER_BYTES", 1 << 20)
    monkeypatch.setattr(client_mod, "FILE_ANSWER_BYTES", 2 << 20)
    sent = []

    async def endless(request):  # chunked, no length: refused as the bytes pass the bound
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(1000):  # 64 MiB, if it were all read
            sent.append(1)
            await resp.write(b" " * 65536)
        return resp

    async def declared(request):  # a length past the bound: refused before a byte of the body is read
        return web.Response(body=b"{}", headers={"Content-Length": str(3 << 20)})

    async def image(request):
        return web.Response(body=b"\x89PNG" + bytes(int(request.query["filename"])))

    app = web.Application()
    app.router.add_get("/object_info", endless)
    app.router.add_get("/system_stats", declared)
    app.router.add_get("/view", image)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        client = ComfyClient(str(server.make_url("")), session, "t", request_timeout=30)
        with pytest.raises(BackendError, match=f"GET /object_info answered more than {1 << 20} bytes"):
            await client.object_info()
        assert len(sent) < 1000
        with pytest.raises(BackendError, match=f"GET /system_stats answered {3 << 20} bytes; the limit is {1 << 20}"):
            await client.system_stats()
        # files have their own, larger bound: an image over the JSON one arrives whole
        assert len(await client.view(str((1 << 20) + 10))) == (1 << 20) + 14
        with pytest.raises(BackendError, match="GET /view answered"):
            await client.view(str(3 << 20))


async def test_a_websocket_message_over_the_bound_says_so(make_engine, comfy_double, monkeypatch, caplog):
    from bridge.engine import client as client_mod

    monkeypatch.setattr(client_mod, "FILE_ANSWER_BYTES", 64)  # below a preview frame's size
    comfy_double.step_delay = 0.05
    engine = await make_engine()
    await engine.submit("txt2img", {**P, "steps": 20})
    for _ in range(200):
        if any("websocket error" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.05)
    said = [r.getMessage() for r in caplog.records if "websocket error" in r.getMessage()]
    assert said and "64" in said[0], said


async def test_a_websocket_handshake_cancelled_as_it_completes_stays_cancelled():
    # Engine.stop cancels each connection's reconnect loop and waits for it. A cancellation that lands as the
    # handshake completes must end the loop: asyncio.wait_for (Python 3.11) returned the completed handshake and
    # dropped the cancellation, and the loop went on serving the backend while stop waited for it (a CI run's
    # teardown hung past its 60 s).
    done = asyncio.get_running_loop().create_future()

    class Session:
        async def ws_connect(self, *args, **kwargs):
            return await done

    client = ComfyClient("http://127.0.0.1:9", Session(), "t", request_timeout=5)  # type: ignore[arg-type]
    task = asyncio.create_task(client.ws_connect())
    await asyncio.sleep(0)  # the handshake under way
    done.set_result("websocket")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_queue_read_is_shared_but_never_older_than_the_question(comfy_double):
    comfy_double.queue_delay = 0.3
    async with aiohttp.ClientSession() as session:
        client = ComfyClient(comfy_double.url, session, "t")
        first = asyncio.create_task(client.queued_ids())
        await until(lambda: comfy_double.queue_reads == 1, what="the first read")
        # A prompt arrives after the first read looked: whoever asks from now on must see it.
        heapq.heappush(comfy_double.pending, (0.0, 0, "late", {}, {}, []))
        later = [asyncio.create_task(client.queued_ids()) for _ in range(10)]
        assert "late" not in (await first)[1]
        assert all("late" in pending for _, pending in await asyncio.gather(*later))
        assert comfy_double.queue_reads == 2  # the ten shared one read, begun after they asked
        comfy_double.pending.clear()


async def test_a_failed_run_is_shared_whatever_its_error():
    # only a BackendError was shared: callers waiting behind a run that failed otherwise (an A1111 listing's own
    # error) each ran it again in turn, 10 runs of a hung backend's timeout one after another
    from bridge.engine.client import SharedRun

    shared: SharedRun[int] = SharedRun()
    gate = asyncio.Event()
    runs = 0

    async def failing() -> int:
        nonlocal runs
        runs += 1
        await gate.wait()
        raise ValueError("no listing")

    first = asyncio.create_task(shared(failing))
    await until(lambda: runs == 1, what="the first run")
    later = [asyncio.create_task(shared(failing)) for _ in range(10)]
    await asyncio.sleep(0.05)  # each has asked (taken its ticket) and waits for the run under way
    gate.set()
    assert [str(e) for e in await asyncio.gather(*later, return_exceptions=True)] == ["no listing"] * 10
    assert runs == 2, runs  # the ten shared one run, begun after they asked
    with pytest.raises(ValueError):
        await first


QUEUE = {"queue_running": [[0, "run", {"1": {"inputs": {"text": 'a ] } \\" ,'}}}, {"client_id": "c"}, ["9"]]],
         "queue_pending": [[n, f"p{n}", {"1": {"inputs": {"seed": n}}}, {}, ["9"]] for n in range(1, 40)],
         "other": {"queue_pending": [[0, "not this one"]]}}


@pytest.mark.parametrize("dump", [json.dumps, lambda o: json.dumps(o, indent=2),
                                  lambda o: json.dumps(o, separators=(",", ":")), lambda o: f" \n{json.dumps(o)}\r\n"])
async def test_queued_prompt_ids_read_each_item_as_json_loads_would(dump):
    want = ({"run"}, {f"p{n}" for n in range(1, 40)})
    assert await queued_prompt_ids(dump(QUEUE)) == want
    assert await queued_prompt_ids(dump({"queue_running": [], "queue_pending": []})) == (set(), set())
    assert await queued_prompt_ids(dump({})) == (set(), set())


@pytest.mark.parametrize("text", ["", "null", "[]", "{", '{"a": 1,}', '{"a" 1}', "{} x", '{,}',
                                  '{"queue_pending": {}}', '{"queue_pending": [[1, "a"] [2, "b"]]}',
                                  '{"queue_pending": [[1, "a"],]}', '{"queue_pending": [,[1, "a"]]}',
                                  '{"queue_pending": [[1, "a"]', '{"queue_running": [[0, "a"]], "queue_pending"'])
async def test_queued_prompt_ids_refuse_what_is_not_a_queue(text):
    with pytest.raises(ValueError):
        await queued_prompt_ids(text)


async def test_a_long_queue_is_read_with_turns_of_the_event_loop(monkeypatch):
    # /queue carries every queued graph: decoded in one json.loads it held the event loop (and the GIL) for the
    # whole answer, up to 111 ms at 500 jobs. Other tasks must run while it is read.
    monkeypatch.setattr(client_module, "QUEUE_SLICE", 0.0)
    turns = 0

    async def other_requests():
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_requests())
    await asyncio.sleep(0)
    before = turns
    running, pending = await queued_prompt_ids(json.dumps(QUEUE))
    other.cancel()
    assert len(pending) == 39 and turns - before >= 39


async def test_a_queue_answer_that_is_not_a_queue_is_a_backend_error():
    async def queue(request):
        return web.Response(text='{"queue_running": [[0, "a"]], "queue_pending": [',
                                    content_type="application/json")

    app = web.Application()
    app.router.add_get("/queue", queue)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            client = ComfyClient(f"http://127.0.0.1:{port}", session, "t")
            with pytest.raises(BackendError, match="GET /queue answered no queue"):
                await client.queued_ids()
    finally:
        await runner.cleanup()


async def test_timeout_fails_and_interrupts(make_engine, comfy_double):
    comfy_double.step_delay = 0.1
    engine = await make_engine()
    job = await engine.submit("txt2img", {**P, "steps": 100}, timeout=0.4)
    job = await engine.wait(job.id, timeout=10)
    assert job.status == "failed" and "timed out" in job.error
    assert job.prompt_id in comfy_double.interrupts


async def test_queue_full_answers_retry_after(make_engine, comfy_double):
    comfy_double.step_delay = 0.2
    engine = await make_engine(max_queue=2)
    a = await engine.submit("txt2img", {**P, "steps": 30})
    b = await engine.submit("txt2img", {**P, "steps": 30})
    with pytest.raises(QueueFull) as e:
        await engine.submit("txt2img", P)
    assert e.value.retry_after >= 1 and e.value.status == 503
    await engine.cancel(b.id)
    c = await engine.submit("txt2img", P)  # room again
    await engine.cancel(a.id)
    assert (await engine.wait(c.id, timeout=10)).status == "completed"


async def test_final_message_lost_falls_back_to_history(make_engine, comfy_double):
    comfy_double.drop_final = True
    engine = await make_engine(poll_interval=0.2)
    job = await engine.wait((await engine.submit("txt2img", P)).id, timeout=10)
    assert job.status == "completed" and len(job.outputs["images"]) == 1


async def test_a_job_whose_messages_tell_all_is_finished_without_reading_history(make_engine, comfy_double,
                                                                                  monkeypatch):
    engine = await make_engine()
    reads = Reads(monkeypatch)
    first = await engine.wait((await engine.submit("txt2img", P)).id, timeout=10)
    # the same parameters again: every node cached but the save node, whose prefix names the prompt
    again = await engine.wait((await engine.submit("txt2img", P)).id, timeout=10)
    assert first.status == again.status == "completed"
    assert reads.history == 0 and reads.view == 2
    assert [size_of(await engine.read_output(j, "images", 0)) for j in (first, again)] == [(64, 64)] * 2
    saved = [comfy_double.history[j.prompt_id]["outputs"] for j in (first, again)]
    names = [img["filename"] for outputs in saved for out in outputs.values() for img in out.get("images", [])]
    assert [n.split("_")[-3] for n in names] == [first.prompt_id[:8], again.prompt_id[:8]]


async def test_without_execution_success_the_outcome_comes_from_history(make_engine, comfy_double, monkeypatch):
    comfy_double.drop_success = True
    engine = await make_engine()
    reads = Reads(monkeypatch)
    job = await engine.wait((await engine.submit("txt2img", P)).id, timeout=10)
    assert job.status == "completed" and len(job.outputs["images"]) == 1
    assert reads.history == 1


async def test_a_failed_prompt_is_read_from_history_with_its_error(make_engine, comfy_double, monkeypatch):
    comfy_double.fail_class = "KSampler"
    comfy_double.fail_message = "out of cheese"
    engine = await make_engine()
    reads = Reads(monkeypatch)
    job = await engine.wait((await engine.submit("txt2img", P)).id, timeout=10)
    assert job.status == "failed" and "out of cheese" in job.error
    assert reads.history == 1 and reads.view == 0


# ---------------------------------------------------------------------- websocket image frames
@pytest.mark.parametrize("feature_flags,frame_type", [(True, 4), (False, 1)])
async def test_save_image_websocket_frames(make_engine, comfy_double, feature_flags, frame_type):
    add_websocket_variant(make_engine.wf_dir)
    engine = await make_engine(feature_flags=feature_flags)
    job = await engine.submit("txt2img_ws", {**P, "width": 80, "height": 64, "batch_size": 2})
    job = await engine.wait(job.id, timeout=10)
    assert job.status == "completed", job.error
    assert (len(comfy_double.metadata_clients) == 1) == (frame_type == 4)
    assert [size_of(await engine.read_output(job, "images", i)) for i in range(2)] == [(80, 64)] * 2
    assert comfy_double.history[job.prompt_id]["outputs"] == {}  # nothing came through /history


# ---------------------------------------------------------------------- persistence and restarts
async def test_restart_mid_job_loses_nothing(make_engine, comfy_double, tmp_path):
    comfy_double.step_delay = 0.05
    engine = await make_engine()
    running = await engine.submit("txt2img", {**P, "steps": 20})
    queued = await engine.submit("txt2img", {**P, "steps": 2})
    while running.status != "running":
        await asyncio.sleep(0.02)
    await engine.stop()
    engine2 = await make_engine()
    r = await engine2.wait(running.id, timeout=10)
    q = await engine2.wait(queued.id, timeout=10)
    assert r.status == q.status == "completed"
    assert r.prompt_id == running.prompt_id  # reconciled, not re-run
    assert len(comfy_double.prompts) == 2
    assert size_of(await engine2.read_output(r, "images", 0)) == (64, 64)


async def test_job_finished_while_engine_was_down_is_read_from_history(make_engine, comfy_double):
    comfy_double.step_delay = 0.02
    engine = await make_engine()
    job = await engine.submit("txt2img", {**P, "steps": 10})
    await engine.stop()
    for _ in range(200):
        if job.prompt_id in comfy_double.history:
            break
        await asyncio.sleep(0.02)
    engine2 = await make_engine()
    done = await engine2.wait(job.id, timeout=10)
    assert done.status == "completed" and done.progress == 100
    assert size_of(await engine2.read_output(done, "images", 0)) == (64, 64)


async def test_subscribe_all_sees_every_job(make_engine):
    engine = await make_engine()
    events: list[dict[str, Any]] = []

    async def collect() -> None:
        async for event in engine.subscribe():
            events.append(event)

    task = asyncio.create_task(collect())
    await asyncio.sleep(0)
    a = await engine.submit("txt2img", P)
    b = await engine.submit("txt2img", {**P, "seed": 8})
    await engine.wait(a.id, timeout=10)
    await engine.wait(b.id, timeout=10)
    await asyncio.sleep(0.05)
    task.cancel()
    finals = {e["job"]["id"] for e in events if e["type"] == "status" and e["job"]["status"] == "completed"}
    assert finals == {a.id, b.id}
    assert {e["job"]["status"] for e in events} >= {"running", "completed"}
    # each job's status events in the order its states came; a job dispatched at once can be running before its
    # first event goes out (an event carries the job's state when sent), so "queued" may not be among them
    rank = {"queued": 0, "running": 1, "completed": 2}
    for job in (a, b):
        seen = [rank[e["job"]["status"]] for e in events if e["type"] == "status" and e["job"]["id"] == job.id]
        assert seen == sorted(seen) and seen[-1] == 2, (job.id, seen)


async def test_jobs_accepted_while_backend_down_run_after_restart(make_engine, comfy_double, tmp_path):
    await comfy_double.kill()
    engine = await make_engine(connect_wait=0.5)
    job = await engine.submit("txt2img", P)
    assert job.status == "queued" and job.prompt_id is None
    await engine.stop()
    await comfy_double.start()
    engine2 = await make_engine()
    job = await engine2.wait(job.id, timeout=10)
    assert job.status == "completed"


async def test_jobs_accepted_before_their_workflow_was_edited_are_checked_again(make_engine, comfy_double):
    # Waiting jobs are bound into the workflow as it is when they go out; one whose values no longer fit fails
    # naming the parameter (a changed map or range once crashed the dispatcher with a KeyError).
    await comfy_double.kill()
    engine = await make_engine(connect_wait=0.5)
    fits = await engine.submit("txt2img", {**P, "steps": 4, "negative_prompt": "blurry"})
    too_many = await engine.submit("txt2img", {**P, "steps": 7})
    path = make_engine.wf_dir / "txt2img.manifest.json"
    manifest = json.loads(path.read_text())
    manifest["parameters"]["steps"].update(max=5, default=5)
    del manifest["parameters"]["negative_prompt"]  # every waiting job holds its default: dropped, not refused
    path.write_text(json.dumps(manifest))
    await engine.reload_workflows()
    await comfy_double.start()
    fits, too_many = [await engine.wait(j.id, timeout=20) for j in (fits, too_many)]
    assert fits.status == "completed", fits.error
    assert too_many.status == "failed" and too_many.error.startswith("steps must be at most 5, got 7; workflow")
    assert len(comfy_double.prompts) == 1
    sampler = next(n for n in comfy_double.prompts[0]["prompt"].values() if n["class_type"] == "KSampler")
    assert sampler["inputs"]["steps"] == 4


async def test_backend_killed_mid_job_fails_it_and_engine_recovers(make_engine, comfy_double):
    comfy_double.step_delay = 0.1
    engine = await make_engine()
    job = await engine.submit("txt2img", {**P, "steps": 50})
    while job.status != "running":
        await asyncio.sleep(0.02)
    await comfy_double.kill()
    # Within 10 s, unless a reconnect raced the double's shutdown into a handshake nobody answers: then when that
    # gives up (the request timeout, 30 s).
    job = await engine.wait(job.id, timeout=45)
    assert job.status == "failed" and comfy_double.url in job.error and "died" in job.error
    assert engine.backend_states()[0]["healthy"] is False
    with pytest.raises(BackendUnavailable):
        await engine.choices("KSampler.sampler_name")
    comfy_double.step_delay = 0.005
    await comfy_double.start()
    for _ in range(100):
        if engine.backend_states()[0]["healthy"]:
            break
        await asyncio.sleep(0.05)
    again = await engine.wait((await engine.submit("txt2img", P)).id, timeout=10)
    assert again.status == "completed"


async def test_backend_death_requeues_once_when_configured(make_engine, comfy_double):
    comfy_double.step_delay = 0.1
    engine = await make_engine(requeue_on_backend_death=True)
    job = await engine.submit("txt2img", {**P, "steps": 30})
    while job.status != "running":
        await asyncio.sleep(0.02)
    first_prompt = job.prompt_id
    await comfy_double.kill()
    await asyncio.sleep(0.3)
    assert job.status == "queued"
    comfy_double.step_delay = 0.005
    await comfy_double.start()
    job = await engine.wait(job.id, timeout=10)
    assert job.status == "completed" and job.prompt_id != first_prompt


async def test_least_pending_backend_first_and_unhealthy_skipped(make_engine, comfy_double):
    other = await ComfyDouble(step_delay=0.05).start()
    try:
        comfy_double.step_delay = 0.05
        engine = await make_engine([comfy_double.url, other.url])
        jobs = [await engine.submit("txt2img", {**P, "steps": 10}) for _ in range(4)]
        assert sorted(j.backend for j in jobs) == sorted([comfy_double.url] * 2 + [other.url] * 2)
        for j in jobs:
            await engine.wait(j.id, timeout=10)
        await other.kill()
        for _ in range(50):
            if not engine.backend_states()[1]["healthy"]:
                break
            await asyncio.sleep(0.05)
        more = [await engine.submit("txt2img", P) for _ in range(2)]
        assert {j.backend for j in more} == {comfy_double.url}
    finally:
        await other.stop()


# ---------------------------------------------------------------------- reads
async def test_list_stats_choices(make_engine, comfy_double):
    engine = await make_engine()
    a = await engine.wait((await engine.submit("txt2img", P)).id, timeout=10)
    comfy_double.fail_class = "KSampler"
    b = await engine.wait((await engine.submit("img2img", {**P, "image": png_b64(8, 8)})).id, timeout=10)
    assert [j.id for j in await engine.list()] == [b.id, a.id]
    assert [j.id for j in await engine.list(status="failed")] == [b.id]
    assert [j.id for j in await engine.list(workflow="txt2img")] == [a.id]
    assert [j.id for j in await engine.list(limit=1, offset=1)] == [a.id]
    assert await engine.list(status="done") == []  # requests are checked by their models, not here again
    # on a shared store the counts are the store's, refreshed every second: a refresh that read the store just
    # before an end was written (or before the start was) shows the job queued or running until the next one
    await until(lambda: engine.stats()["counts"]["completed"] == 1 and engine.stats()["counts"]["failed"] == 1
                and engine.stats()["queue_depth"] == 0, 3, "the store's counts to refresh")
    stats = engine.stats()
    assert stats["counts"]["completed"] == 1 and stats["counts"]["failed"] == 1 and stats["queue_depth"] == 0
    assert stats["average_duration"] > 0
    assert await engine.choices("KSampler.scheduler") == comfy_double.object_info["KSampler"]["input"][
        "required"]["scheduler"][0]
    assert await engine.choices("CheckpointLoaderSimple.ckpt_name") == comfy_double.checkpoints
    state = engine.backend_states()[0]
    assert state["healthy"] and state["version"] == "0.3.64" and state["pending"] == 0
    with pytest.raises(asyncio.TimeoutError):
        comfy_double.step_delay = 0.5
        comfy_double.fail_class = None
        await engine.wait((await engine.submit("txt2img", {**P, "seed": 99})).id, timeout=0.1)


# ---------------------------------------------------------------------- devices (/system_stats)
async def test_backend_states_carry_devices_and_health_reports_cuda(comfy_double, bridge_factory):
    client = await bridge_factory()
    body = await (await client.get("/health")).json()
    assert body["backends"][0]["devices"] == [{"name": "cpu", "type": "cpu"}]
    assert body["cuda_available"] is False
    await comfy_double.stop()
    comfy_double.devices = [{"name": "cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync", "type": "cuda"}]
    await comfy_double.start()
    for _ in range(100):  # the engine reconnects and re-reads /system_stats
        body = await (await client.get("/health")).json()
        if body["backends"][0]["healthy"] and body["backends"][0]["devices"][0]["type"] == "cuda":
            break
        await asyncio.sleep(0.05)
    assert body["backends"][0]["devices"] == [{"name": "cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync",
                                               "type": "cuda"}]
    assert body["cuda_available"] is True


# ---------------------------------------------------------------------- success without images
async def test_websocket_images_lost_to_a_bridge_restart_are_made_again(make_engine, comfy_double):
    add_websocket_variant(make_engine.wf_dir)
    comfy_double.step_delay = 0.03
    engine = await make_engine()
    job = await engine.submit("txt2img_ws", {**P, "steps": 10, "width": 80, "batch_size": 2})
    first_prompt = job.prompt_id
    await engine.stop()  # the frames go to a websocket nobody reads
    for _ in range(200):
        if first_prompt in comfy_double.history:
            break
        await asyncio.sleep(0.02)
    assert comfy_double.history[first_prompt]["status"]["status_str"] == "success"
    engine2 = await make_engine()
    done = await engine2.wait(job.id, timeout=10)
    assert done.status == "completed", done.error
    assert [size_of(await engine2.read_output(done, "images", i)) for i in range(2)] == [(80, 64)] * 2
    assert done.prompt_id != first_prompt and len(comfy_double.prompts) == 2
    assert posted(comfy_double, done.prompt_id) == posted(comfy_double, first_prompt)  # the same graph again
    assert [r["prompt_id"] for r in done.reruns] == [first_prompt]
    assert "websocket image frames" in done.reruns[0]["reason"]
    stored = await engine2.store.load(job.id)  # the reason is persisted with the job
    assert stored.reruns == done.reruns and done.to_dict()["reruns"] == done.reruns


async def test_websocket_images_missing_twice_fail_the_job(make_engine, comfy_double):
    add_websocket_variant(make_engine.wf_dir)
    comfy_double.lose_images = True
    engine = await make_engine()
    job = await engine.wait((await engine.submit("txt2img_ws", P)).id, timeout=10)
    assert job.status == "failed" and job.outputs == {}
    assert "'images' (node 9, SaveImageWebsocket) produced no images" in job.error
    assert "also after a re-run" in job.error
    assert len(comfy_double.prompts) == 2 and len(job.reruns) == 1


async def test_history_images_missing_fail_the_job_at_once(make_engine, comfy_double):
    comfy_double.lose_images = True
    engine = await make_engine()
    job = await engine.wait((await engine.submit("txt2img", P)).id, timeout=10)
    assert job.status == "failed" and "'images' (node 9, SaveImage) produced no images" in job.error
    assert "ComfyUI listed no images" in job.error
    assert len(comfy_double.prompts) == 1 and job.reruns == []


# ---------------------------------------------------------------------- output selection
def add_preview_branch(wf_dir: Path) -> None:
    """txt2img_two: SaveImage (node 9) plus a 16x16 PreviewImage branch (node 51) as a second images output."""
    graph = json.loads((wf_dir / "txt2img.json").read_text())
    manifest = json.loads((wf_dir / "txt2img.manifest.json").read_text())
    graph["50"] = {"class_type": "ImageScale", "inputs": {"image": ["8", 0], "upscale_method": "nearest-exact",
                                                          "width": 16, "height": 16, "crop": "disabled"}}
    graph["51"] = {"class_type": "PreviewImage", "inputs": {"images": ["50", 0]}}
    manifest["outputs"]["small"] = {"node": "51", "type": "images"}
    manifest.update(name="txt2img_two", workflow="txt2img_two.json")
    (wf_dir / "txt2img_two.json").write_text(json.dumps(graph))
    (wf_dir / "txt2img_two.manifest.json").write_text(json.dumps(manifest))


async def test_requested_outputs_run_only_their_output_nodes(make_engine, comfy_double):
    add_preview_branch(make_engine.wf_dir)
    engine = await make_engine()
    every = await engine.wait((await engine.submit("txt2img_two", P)).id, timeout=10)
    assert every.status == "completed" and set(every.outputs) == {"images", "small"}
    assert comfy_double.prompts[-1]["partial_execution_targets"] is None  # default: not sent, all outputs run
    assert set(comfy_double.history[every.prompt_id]["outputs"]) == {"9", "51"}

    small = await engine.wait((await engine.submit("txt2img_two", {**P, "seed": 7}, outputs=["small"])).id,
                              timeout=10)
    assert small.status == "completed", small.error
    assert comfy_double.prompts[-1]["partial_execution_targets"] == ["51"]
    assert set(comfy_double.history[small.prompt_id]["outputs"]) == {"51"}  # SaveImage did not run
    assert list(small.outputs) == ["small"] and size_of(await engine.read_output(small, "small", 0)) == (16, 16)
    with pytest.raises(InvalidParameter):
        await engine.read_output(small, "images", 0)

    main = await engine.wait((await engine.submit("txt2img_two", {**P, "seed": 8},
                                                  outputs=["images", "images"])).id, timeout=10)
    assert comfy_double.prompts[-1]["partial_execution_targets"] == ["9"] and list(main.outputs) == ["images"]
    assert set(comfy_double.history[main.prompt_id]["outputs"]) == {"9"}


@pytest.mark.parametrize("outputs", [[], ["nope"], "images", [1], {"images": 1}])
async def test_bad_output_selection_names_the_field(make_engine, comfy_double, outputs):
    engine = await make_engine()
    with pytest.raises(InvalidParameter) as e:
        await engine.submit("txt2img", P, outputs=outputs)
    assert e.value.field == "outputs" and "outputs" in e.value.message
    assert comfy_double.prompts == [] and await engine.list() == []


async def test_output_selection_survives_a_restart(make_engine, comfy_double):
    add_preview_branch(make_engine.wf_dir)
    await comfy_double.kill()
    engine = await make_engine(connect_wait=0.5)
    job = await engine.submit("txt2img_two", P, outputs=["small"])
    await engine.stop()
    await comfy_double.start()
    engine2 = await make_engine()
    # 30 s: the restarted engine first connects and (on PostgreSQL) claims the job; two loaded CI runs side by side
    # took over 10 s once
    done = await engine2.wait(job.id, timeout=30)
    assert done.status == "completed" and list(done.outputs) == ["small"]
    assert comfy_double.prompts[-1]["partial_execution_targets"] == ["51"]


async def test_pack_nodes_run_in_the_double_and_unrequested_rgb565_does_not(make_engine, comfy_double):
    from pixart_nodes.core import rgb565
    from tests.support.double import _colour

    engine = await make_engine(workflows=WORKFLOWS)
    # Every shipped workflow fits the double, except style_transfer (its CLIP-vision/style nodes are not modelled).
    assert set(engine.backend_states()[0]["workflow_problems"]) <= {"style_transfer"}
    full = await engine.wait((await engine.submit("axera_txt2img", {"seed": 3, "lcd_width": 40, "lcd_height": 30,
                                                                    "byte_order": "little"})).id, timeout=20)
    assert full.status == "completed", full.error
    assert set(comfy_double.history[full.prompt_id]["outputs"]) == {"2", "4", "5"}
    frame = base64.b64decode(full.outputs["rgb565"][0])
    r, g, b = _colour(3, full.prompt_id, 0)  # the double's picture for seed 3, through the pack's real packing
    assert (rgb565.from_rgb565(frame, 40, 30, byte_order="little")[5:] == panel_shows((r, g, b))).all()

    some = await engine.wait((await engine.submit("axera_txt2img", {"seed": 3}, outputs=["images", "timings"])).id,
                             timeout=20)
    assert some.status == "completed", some.error
    assert comfy_double.prompts[-1]["partial_execution_targets"] == ["4", "2"]
    assert set(comfy_double.history[some.prompt_id]["outputs"]) == {"2", "4"}  # PixartRGB565 never ran
    assert set(some.outputs) == {"images", "timings"} and size_of(await engine.read_output(some, "images", 0)) == (512, 512)


async def test_a_backends_workflow_problems_are_logged_once_until_they_change(caplog):
    """The object_info check runs on every reconnect and model refresh: a workflow that cannot run on a backend is
    logged once (one line naming every problem), again only when its problems change, and its recovery once."""
    import logging

    from bridge import workflows as W
    from bridge.engine.connection import Connection
    from tests.support.double import object_info_for

    workflows = W.load_workflows(W.DEFAULT_WORKFLOWS_DIR)
    conn = Connection("http://backend", None, lambda: {"txt2img": workflows["txt2img"]})  # type: ignore[arg-type]
    full = object_info_for(["tiny.safetensors"], [])
    missing = {k: v for k, v in full.items() if k != "KSampler"}
    caplog.set_level(logging.INFO, logger="bridge.engine.connection")
    for _ in range(3):
        await conn.update_object_info(missing)
    lines = [r.getMessage() for r in caplog.records]
    # a node type the backend lacks (a node pack it was set up without) is a warning that names it
    assert lines == ["backend http://backend: workflow txt2img cannot run there: node type 'KSampler' is not "
                     "installed (install the node pack that provides it)"] and not conn.can_run("txt2img")
    assert caplog.records[0].levelno == logging.WARNING
    await conn.update_object_info({k: v for k, v in missing.items() if k != "EmptyLatentImage"})
    assert len(caplog.records) == 2 and caplog.records[-1].getMessage().endswith(
        "node types 'KSampler', 'EmptyLatentImage' are not installed (install the node packs that provide them)")
    conn.healthy = True
    await conn.update_object_info(full)
    await conn.update_object_info(full)
    assert [r.getMessage() for r in caplog.records[2:]] == ["backend http://backend: workflow txt2img can run again"]
    assert conn.can_run("txt2img")
    # every node type there but the graph does not fit them (another ComfyUI version): an error naming each problem
    changed = {**full, "KSampler": {**full["KSampler"], "input": {"required": {"model": ["MODEL"]}}}}
    await conn.update_object_info(changed)
    assert caplog.records[-1].levelno == logging.ERROR and not conn.can_run("txt2img")
    assert "input 'seed' is not an input of KSampler" in caplog.records[-1].getMessage()
