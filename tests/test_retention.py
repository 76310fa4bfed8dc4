"""Results do not pile up: DELETE /jobs/{id} removes a job and its files from every store, finished jobs expire by
age and by total size (oldest first), and ComfyUI's own copy of each result is removed once the bridge holds it."""
from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.app import ENGINE
from bridge.engine.dispatcher import upload_name
from bridge.engine.retention import Retention, comfyui_files, remove_comfyui_files
from bridge.errors import InvalidParameter
from tests.support.imaging import solid_png_b64
from tests.support.spies import Reads
from tests.support.waiting import until, wait_healthy

pytestmark = pytest.mark.asyncio

SMALL = {"prompt": "a cat", "width": 64, "height": 64, "steps": 1}


async def done_job(client: Any, **extra: Any) -> str:
    job_id = (await (await client.post("/generate/text2img", json={**SMALL, **extra})).json())["id"]
    job = await (await client.get(f"/jobs/{job_id}?wait=30")).json()
    assert job["status"] == "completed", job
    return job_id


def stored(client: Any, job_id: str) -> list[Path]:
    root = Path(client.app[ENGINE].data_dir) / "outputs" / job_id
    return sorted(root.glob("*")) if root.exists() else []


async def test_delete_removes_the_job_and_its_files(bridge_factory: Any, comfy_double: Any) -> None:
    client = await bridge_factory(adapters=["jobs_api"])
    job_id = await done_job(client)
    assert stored(client, job_id)
    resp = await client.delete(f"/jobs/{job_id}")
    assert resp.status == 200 and await resp.json() == {"deleted": job_id}
    assert stored(client, job_id) == []
    assert (await client.get(f"/jobs/{job_id}")).status == 404
    assert (await client.get(f"/jobs/{job_id}/outputs/images/0")).status == 404
    assert await client.app[ENGINE].store.load(job_id) is None
    gone = await client.delete(f"/jobs/{job_id}")
    assert gone.status == 404 and (await gone.json())["field"] == "id"
    # a running job is cancelled first, then removed
    comfy_double.step_delay = 0.5
    running = (await (await client.post("/generate/text2img", json={**SMALL, "steps": 40})).json())["id"]
    for _ in range(100):
        if client.app[ENGINE].get(running).status == "running":
            break
        await asyncio.sleep(0.05)
    assert (await client.delete(f"/jobs/{running}")).status == 200
    assert client.app[ENGINE].get(running) is None and len(comfy_double.interrupts) >= 1
    counts = client.app[ENGINE].stats()["counts"]
    assert counts["running"] == 0 and counts["completed"] == 0


def held_refresh(monkeypatch: pytest.MonkeyPatch, table: Any) -> tuple[asyncio.Event, asyncio.Event, Any]:
    """The table's refresh of its counts (on a shared store, every lease/3), its read of the store's counts held
    from the moment it is taken until `answer` is set; the replicas' own rounds are kept out of the way."""
    refresh = table.refresh_counts
    monkeypatch.setattr(table, "refresh_counts", lambda: asyncio.sleep(0))
    read, taken, answer = table.store.counts, asyncio.Event(), asyncio.Event()

    async def counts() -> dict[str, int]:
        result = await read()
        taken.set()
        await answer.wait()
        return result

    monkeypatch.setattr(table.store, "counts", counts)
    return taken, answer, refresh


async def test_a_refresh_of_the_counts_racing_a_delete_leaves_them_exact(bridge_factory: Any, comfy_double: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """CI, PostgreSQL: the store's counts were read while the job ran there and came back once it was cancelled
    here; used, they said one job running after it was deleted (and the queue bound counted it until the next
    refresh). So were an insert and a delete that overlapped a refresh."""
    client = await bridge_factory(adapters=["jobs_api"])
    engine = client.app[ENGINE]
    table = engine._table
    taken, answer, refresh = held_refresh(monkeypatch, table)
    comfy_double.step_delay = 0.5
    job_id = (await (await client.post("/generate/text2img", json={**SMALL, "steps": 40})).json())["id"]
    await until(lambda: engine.get(job_id).status == "running", timeout=30)
    await table.persisted(engine.get(job_id))
    reading = asyncio.create_task(refresh())
    await taken.wait()
    finish = table.finish
    monkeypatch.setattr(table, "finish", lambda job, *a: (finish(job, *a), answer.set())[0])
    assert (await client.delete(f"/jobs/{job_id}")).status == 200
    await reading
    counts = engine.stats()["counts"]
    assert counts["running"] == 0 and counts["cancelled"] == 0, counts
    # a read taken before a delete is written, back after it
    job_id = await done_job(client)
    await table.flush()
    taken.clear()
    answer.clear()
    delete = table.store.delete

    async def racing_delete(jid: str) -> None:
        reading = asyncio.create_task(refresh())
        await taken.wait()
        await delete(jid)
        answer.set()
        await reading

    monkeypatch.setattr(table.store, "delete", racing_delete)
    assert (await client.delete(f"/jobs/{job_id}")).status == 200
    assert engine.stats()["counts"]["completed"] == 0
    # a read taken after an insert is written, back before the job is counted here
    answer.set()
    insert = table.store.insert

    async def racing_insert(job: Any, **kw: Any) -> None:
        await insert(job, **kw)
        await refresh()

    monkeypatch.setattr(table.store, "insert", racing_insert)
    job_id = (await (await client.post("/generate/text2img", json={**SMALL, "steps": 40})).json())["id"]
    counts = engine.stats()["counts"]
    assert counts["queued"] + counts["running"] == 1, counts
    assert (await client.delete(f"/jobs/{job_id}")).status == 200
    await refresh()  # nothing raced this one: the store's counts, which agree
    assert engine.stats()["counts"] == {s: 0 for s in counts}


async def test_finished_jobs_expire_by_age_and_the_oldest_go_first_by_size(bridge_factory: Any) -> None:
    client = await bridge_factory(adapters=["jobs_api"])
    engine = client.app[ENGINE]
    ids = [await done_job(client, seed=i) for i in range(4)]
    sizes = [sum(p.stat().st_size for p in stored(client, j)) for j in ids]
    # by size: room for the two newest only
    engine.retention = Retention(max_age=0, max_bytes=sizes[2] + sizes[3])
    assert await engine.sweep() == ids[:2]
    assert [bool(stored(client, j)) for j in ids] == [False, False, True, True]
    # by age: everything finished before the cut-off goes, a job still running stays
    await asyncio.sleep(0.05)
    engine.retention = Retention(max_age=0.01, max_bytes=0)
    assert sorted(await engine.sweep()) == sorted(ids[2:])
    assert await engine.list(status=None, workflow=None, limit=10, offset=0) == []


async def test_loose_blobs_expire_by_age(bridge_factory: Any) -> None:
    client = await bridge_factory(adapters=["jobs_api"])
    engine = client.app[ENGINE]
    await engine.blobs.put("generated_images/art_token_1_aaaa.png", b"png")
    engine.retention = Retention(max_age=3600, max_bytes=0)
    await engine.sweep()
    assert await engine.blobs.get("generated_images/art_token_1_aaaa.png") == b"png"
    from bridge.engine import retention

    await retention.sweep(engine.retention, engine.blobs, _no_jobs, engine.delete, now=time.time() + 7200)
    assert [i async for i in engine.blobs.list("generated_images/")] == []


async def test_comfyui_copies_are_removed_inside_its_folder_only(tmp_path: Path) -> None:
    out = tmp_path / "output"
    (out / "sub").mkdir(parents=True)
    (out / "a.png").write_bytes(b"x")
    (out / "sub" / "b.png").write_bytes(b"x")
    outside = tmp_path / "secret.txt"
    outside.write_text("keep")
    entry = {"outputs": {"9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"},
                                          {"filename": "b.png", "subfolder": "sub", "type": "output"},
                                          {"filename": "secret.txt", "subfolder": "..", "type": "output"},
                                          {"filename": "t.png", "subfolder": "", "type": "temp"}]}}}
    files = comfyui_files(entry)
    assert files == [("", "a.png"), ("sub", "b.png"), ("..", "secret.txt")]
    assert remove_comfyui_files(out, files) == 2
    assert not (out / "a.png").exists() and not (out / "sub" / "b.png").exists() and outside.exists()


async def test_comfyuis_copies_go_in_batches_and_what_is_pending_goes_at_a_stop(tmp_path: Path,
                                                                                monkeypatch: Any) -> None:
    """The copies of many jobs go in one worker-thread call after the delay; files added while a batch is being
    removed go in the next; close() removes what is pending at once."""
    from bridge.engine import retention

    calls: list[list[str]] = []
    real = retention._remove_batch

    def remove(batch: list[tuple[Path, list[tuple[str, str]]]]) -> None:
        calls.append([name for _, files in batch for _, name in files])
        time.sleep(0.1)  # a slow disk: more files arrive meanwhile
        real(batch)

    monkeypatch.setattr(retention, "_remove_batch", remove)
    out = tmp_path / "output"
    out.mkdir()
    names = [f"{i}.png" for i in range(7)]
    for name in names:
        (out / name).write_bytes(b"x")

    async def gone(*wanted: str) -> bool:
        deadline = time.monotonic() + 5
        while any((out / n).exists() for n in wanted) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return not any((out / n).exists() for n in wanted)

    remover = retention.CopyRemover(delay=0.05)
    for name in names[:4]:
        remover.add(out, [("", name)])
    remover.add(out, [])  # a job whose images ComfyUI did not save
    assert all((out / n).exists() for n in names[:4])  # not one call per job
    while not calls:
        await asyncio.sleep(0.005)
    remover.add(out, [("", names[4])])  # while the first batch is being removed
    assert await gone(*names[:5])
    assert calls == [names[:4], [names[4]]]
    remover.add(out, [("", names[5]), ("", names[6])])
    await remover.close()
    assert calls[-1] == names[5:] and not any((out / n).exists() for n in names)


class Viewer:
    """Stands in for ComfyClient.view: what the engine asks ComfyUI for when the folder does not serve."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str]] = []

    async def view(self, filename: str, subfolder: str, kind: str, *, limit: int) -> bytes:
        from bridge.engine.client import AnswerTooLargeError

        self.asked.append((filename, subfolder, kind))
        data = b"from /view"
        if len(data) > limit:
            raise AnswerTooLargeError("http://comfyui", f"GET /view answered more than {limit} bytes")
        return data


async def test_results_are_read_from_the_folder_only_when_they_are_this_jobs(tmp_path: Path,
                                                                            monkeypatch: Any) -> None:
    from bridge.engine import client
    from bridge.engine.results import STALE_SLACK, OverBound, _image

    out, viewer = tmp_path / "output", Viewer()
    (out / "pixart").mkdir(parents=True)
    (out / "pixart" / "new.png").write_bytes(b"fresh")
    (out / "old.png").write_bytes(b"stale")
    (tmp_path / "secret.png").write_bytes(b"secret")
    now = time.time()
    old = now - STALE_SLACK - 60
    os.utime(out / "old.png", (old, old))
    os.symlink(tmp_path / "secret.png", out / "link.png")
    fresh = {"filename": "new.png", "subfolder": "pixart", "type": "output"}
    assert await _image(viewer, out, fresh, now, 10 ** 6) == b"fresh"
    with pytest.raises(OverBound):  # past what the job's images may still take: not read
        await _image(viewer, out, fresh, now, len(b"fresh") - 1)
    assert viewer.asked == []
    asked = [{"filename": "old.png", "subfolder": "", "type": "output"},        # written before the job
             {"filename": "../secret.png", "subfolder": "", "type": "output"},  # outside the folder
             {"filename": "secret.png", "subfolder": str(tmp_path), "type": "output"},
             {"filename": "link.png", "subfolder": "", "type": "output"},       # a link out of it
             {"filename": "new.png", "subfolder": "pixart", "type": "temp"},    # another folder of ComfyUI's
             {"filename": "gone.png", "subfolder": "", "type": "output"}]
    assert [await _image(viewer, out, img, now, 10 ** 6) for img in asked] == [b"from /view"] * len(asked)
    assert [a[0] for a in viewer.asked] == [img["filename"] for img in asked]
    assert await _image(viewer, None, {"filename": "new.png", "subfolder": "pixart"}, now, 10 ** 6) \
        == b"from /view"
    with pytest.raises(OverBound):  # /view past what the job's images may still take
        await _image(viewer, None, fresh, now, len(b"from /view") - 1)
    # past what one answer may be, but not the job's bound: a backend error, not the job's
    monkeypatch.setattr(client, "FILE_ANSWER_BYTES", 4)
    with pytest.raises(client.AnswerTooLargeError):
        await _image(viewer, None, fresh, now, 10 ** 6)


@pytest.mark.comfyui
@pytest.mark.slow
async def test_real_comfyui_copy_is_removed_once_the_bridge_holds_the_result(comfyui: Any, aiohttp_client: Any,
                                                                             tmp_path: Path, monkeypatch: Any) -> None:
    from bridge.app import create_app
    from bridge.config import load_settings
    from tests.support.real_comfyui import TINY_CHECKPOINT

    settings = load_settings({"data_dir": tmp_path / "data", "comfyui_urls": [comfyui.url],
                              "comfyui_output_dir": comfyui.output_dir}, env_file=None)
    client = await aiohttp_client(create_app(settings, adapter_names=["jobs_api"]))
    reads = Reads(monkeypatch)
    before = set(comfyui.output_dir.rglob("*.png"))
    resp = await client.post("/workflows/txt2img?wait=300", json={"parameters": {
        "prompt": "retention probe", "width": 64, "height": 64, "steps": 1, "seed": 77,
        "checkpoint": TINY_CHECKPOINT}})
    job = await resp.json()
    assert resp.status == 200 and job["status"] == "completed", job
    prompt_id = client.app[ENGINE].get(job["id"]).prompt_id
    history = comfyui.get_json(f"/history/{prompt_id}")[prompt_id]
    written = comfyui_files(history)
    assert written  # ComfyUI did save the image...
    deadline = time.monotonic() + 10  # ...and it is gone (removed just after the job's answer)
    while any((comfyui.output_dir / sub / name).exists() for sub, name in written) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert all(not (comfyui.output_dir / sub / name).exists() for sub, name in written)
    assert set(comfyui.output_dir.rglob("*.png")) <= before
    assert stored(client, job["id"])  # the bridge's copy stays
    # the outcome came from the websocket messages and the image from the folder: no request to ComfyUI for them
    assert (reads.history, reads.view) == (0, 0)


@pytest.mark.comfyui
@pytest.mark.slow
async def test_a_wrong_comfyui_output_folder_costs_a_request_not_the_result(comfyui: Any, aiohttp_client: Any,
                                                                           tmp_path: Path, monkeypatch: Any,
                                                                           caplog: Any) -> None:
    from bridge.app import create_app
    from bridge.config import load_settings
    from tests.support.real_comfyui import TINY_CHECKPOINT

    wrong = tmp_path / "not-comfyui-output"
    wrong.mkdir()
    settings = load_settings({"data_dir": tmp_path / "data", "comfyui_urls": [comfyui.url],
                              "comfyui_output_dir": wrong}, env_file=None)
    client = await aiohttp_client(create_app(settings, adapter_names=["jobs_api"]))
    reads = Reads(monkeypatch)
    jobs = []
    for seed in (78, 79):
        resp = await client.post("/workflows/txt2img?wait=300", json={"parameters": {
            "prompt": "retention probe", "width": 64, "height": 64, "steps": 1, "seed": seed,
            "checkpoint": TINY_CHECKPOINT}})
        jobs.append(await resp.json())
    assert [j["status"] for j in jobs] == ["completed", "completed"], jobs
    assert reads.view == 2 and all(stored(client, j["id"]) for j in jobs)
    assert sum("not readable in ComfyUI's output folder" in r.getMessage() for r in caplog.records) == 1


async def _no_jobs() -> list[tuple[str, float]]:
    return []


@pytest.mark.comfyui
@pytest.mark.slow
async def test_the_same_request_twice_gets_its_image_twice(comfyui: Any, aiohttp_client: Any, tmp_path: Path) -> None:
    # ComfyUI answers a prompt it ran before from its cache: the SaveImage node is not run again, and its `executed`
    # message names the file of the first run, which the bridge removed once it held that result
    from bridge.app import create_app
    from bridge.config import load_settings
    from tests.support.real_comfyui import TINY_CHECKPOINT

    settings = load_settings({"data_dir": tmp_path / "data", "comfyui_urls": [comfyui.url],
                              "comfyui_output_dir": comfyui.output_dir}, env_file=None)
    client = await aiohttp_client(create_app(settings, adapter_names=["jobs_api"]))
    jobs = []
    for _ in range(2):
        resp = await client.post("/workflows/txt2img?wait=300", json={"parameters": {
            "prompt": "cached twice", "width": 64, "height": 64, "steps": 1, "seed": 80,
            "checkpoint": TINY_CHECKPOINT}})
        jobs.append(await resp.json())
    assert [j["status"] for j in jobs] == ["completed", "completed"], jobs
    first, again = ([p.read_bytes() for p in stored(client, j["id"])] for j in jobs)
    assert first and first == again


# ---------------------------------------------------------------------- uploaded input images
# The double writes uploads into `input_dir` and its LoadImage reads them from there, as ComfyUI does: a removal that
# took a file a prompt still needs fails that job.
IMG2IMG = {"prompt": "x", "steps": 1, "width": 64, "height": 64, "image": solid_png_b64(40, 30)}


def uploads(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("pixart_*"))


async def uploaded_bridge(bridge_factory: Any, comfy_double: Any, folder: Path, **fields: Any) -> Any:
    folder.mkdir(exist_ok=True)
    comfy_double.input_dir = folder
    return await bridge_factory(adapters=["jobs_api"], comfyui_input_dir=folder, **fields)


async def test_a_jobs_uploaded_inputs_are_removed_from_comfyuis_input_folder_once_it_ends(
        bridge_factory: Any, comfy_double: Any, tmp_path: Path) -> None:
    folder = tmp_path / "comfyui-input"
    client = await uploaded_bridge(bridge_factory, comfy_double, folder)
    (folder / "mine.png").write_bytes(b"the operator's own")
    ended = []
    for knobs in ({}, {"fail_class": "KSampler"}):  # completed, failed
        comfy_double.fail_class = knobs.get("fail_class")
        job = await (await client.post("/workflows/img2img?wait=30", json={"parameters": IMG2IMG})).json()
        ended.append(job["status"])
        assert any(k.startswith(f"pixart_{job['id']}_") for k in comfy_double.inputs)  # it was uploaded...
        await until(lambda: not uploads(folder), what="the upload removed")  # ...and is gone
    assert ended == ["completed", "failed"]
    comfy_double.fail_class, comfy_double.step_delay = None, 0.5  # cancelled while ComfyUI runs it
    job = await (await client.post("/workflows/img2img", json={"parameters": {**IMG2IMG, "steps": 20}})).json()
    await until(lambda: uploads(folder), what="the upload")
    assert (await client.post(f"/jobs/{job['id']}/cancel")).status == 200
    await until(lambda: not uploads(folder), what="the cancelled job's upload removed")
    assert (folder / "mine.png").read_bytes() == b"the operator's own"


async def test_a_graph_comfyui_refuses_leaves_no_upload_and_its_id_can_be_used_again(
        bridge_factory: Any, comfy_double: Any, tmp_path: Path) -> None:
    client = await uploaded_bridge(bridge_factory, comfy_double, tmp_path / "in")
    engine = client.app[ENGINE]
    await wait_healthy(client)
    comfy_double.checkpoints.remove("other.safetensors")  # gone from ComfyUI since the bridge last looked
    with pytest.raises(InvalidParameter, match="checkpoint"):
        await engine.submit("img2img", {**IMG2IMG, "checkpoint": "other.safetensors"}, job_id="again")
    assert any(k.startswith("pixart_again_") for k in comfy_double.inputs)  # uploaded before ComfyUI refused
    # the same id at once, while the refused dispatch's removal is still pending: its own upload stays until it ends
    # (ComfyUI reads it after a job ahead of it, past the removal's delay)
    comfy_double.step_delay = 0.2
    ahead = await engine.submit("txt2img", {"steps": 3, "width": 64, "height": 64})
    job = await engine.submit("img2img", IMG2IMG, job_id="again")
    done = await engine.wait(job.id, timeout=30)
    assert done.status == "completed", done.error
    assert (await engine.wait(ahead.id, timeout=30)).started_at < done.started_at
    await until(lambda: not uploads(tmp_path / "in"), what="both dispatches' uploads removed")


async def test_a_job_sent_back_to_the_queue_leaves_no_upload_behind(bridge_factory: Any, comfy_double: Any,
                                                                  tmp_path: Path) -> None:
    # someone clears ComfyUI's queue: the bridge submits the job again, uploading its image again
    comfy_double.step_delay = 0.2
    client = await uploaded_bridge(bridge_factory, comfy_double, tmp_path / "in", queue_poll_interval=0.2)
    engine = client.app[ENGINE]
    blocker = await engine.submit("txt2img", {"steps": 150, "width": 64, "height": 64})
    victim = await engine.submit("img2img", IMG2IMG)
    await until(lambda: victim.prompt_id and comfy_double.pending, what="the job waiting in ComfyUI")
    first = victim.prompt_id
    async with client.session.post(comfy_double.url + "/queue", json={"clear": True}) as resp:
        assert resp.status == 200
    await until(lambda: victim.prompt_id and victim.prompt_id != first, what="the job submitted again")
    await until(lambda: upload_name(victim.id, first, "image") not in uploads(tmp_path / "in"),
                what="the first dispatch's upload removed")
    assert await engine.cancel(blocker.id)
    done = await engine.wait(victim.id, timeout=30)
    assert done.status == "completed", done.error  # its second upload was there when ComfyUI read it
    await until(lambda: not uploads(tmp_path / "in"), what="every upload removed")


@pytest.mark.comfyui
@pytest.mark.slow
async def test_real_comfyui_input_is_removed_once_the_job_ends(comfyui: Any, aiohttp_client: Any,
                                                               tmp_path: Path) -> None:
    from bridge.app import create_app
    from bridge.config import load_settings
    from tests.support.real_comfyui import TINY_CHECKPOINT

    settings = load_settings({"data_dir": tmp_path / "data", "comfyui_urls": [comfyui.url],
                              "comfyui_input_dir": comfyui.input_dir}, env_file=None)
    client = await aiohttp_client(create_app(settings, adapter_names=["jobs_api"]))
    resp = await client.post("/workflows/img2img?wait=300", json={"parameters": {
        **IMG2IMG, "checkpoint": TINY_CHECKPOINT, "seed": 81, "denoise": 0.5}})
    job = await resp.json()
    assert resp.status == 200 and job["status"] == "completed", job
    prompt_id = client.app[ENGINE].get(job["id"]).prompt_id
    name = upload_name(job["id"], prompt_id, "image")
    graph = comfyui.get_json(f"/history/{prompt_id}")
    assert name in json.dumps(graph)  # ComfyUI's LoadImage read the upload...
    await until(lambda: not (comfyui.input_dir / name).exists(), what="the upload removed")  # ...now gone
    assert stored(client, job["id"])


async def test_the_bridge_knows_the_folders_of_its_one_comfyui(tmp_path: Path) -> None:
    from bridge.app import build_engine
    from bridge.comfyui_process import ComfyUIProcess
    from bridge.config import load_settings

    checkout = tmp_path / "ComfyUI"
    checkout.mkdir()
    (checkout / "main.py").write_text("")
    managed = ComfyUIProcess(tmp_path / "managed", checkout, port=8199, link_pack=False)
    plain = load_settings({"data_dir": tmp_path / "data"}, env_file=None)
    policy = build_engine(plain, [managed.url], managed).retention
    assert (policy.comfyui_input_dirs, policy.comfyui_output_dirs) == (
        {managed.url: managed.input_dir}, {managed.url: managed.output_dir})
    given = load_settings({"data_dir": tmp_path / "data", "comfyui_input_dir": tmp_path / "in",
                           "comfyui_output_dir": tmp_path / "out"}, env_file=None)
    policy = build_engine(given, ["http://comfy:8188/"]).retention
    assert (policy.comfyui_input_dirs, policy.comfyui_output_dirs) == (
        {"http://comfy:8188": tmp_path / "in"}, {"http://comfy:8188": tmp_path / "out"})
    policy = build_engine(given, ["http://comfy:8188", "http://other:8188"]).retention  # whose folder would it be?
    assert (policy.comfyui_input_dirs, policy.comfyui_output_dirs) == ({}, {})
    assert build_engine(plain, ["http://comfy:8188"]).retention.comfyui_input_dirs == {}


async def test_a_job_whose_comfyui_died_leaves_no_upload_when_cancelled_while_it_waits(
        bridge_factory: Any, comfy_double: Any, tmp_path: Path) -> None:
    comfy_double.step_delay = 0.1
    client = await uploaded_bridge(bridge_factory, comfy_double, tmp_path / "in", requeue_on_backend_death=True)
    engine = client.app[ENGINE]
    job = await engine.submit("img2img", {**IMG2IMG, "steps": 30})
    await until(lambda: job.status == "running", what="the job running")
    assert uploads(tmp_path / "in")
    await comfy_double.kill()  # its files stay on disk, as a killed ComfyUI's do
    await until(lambda: job.status == "queued", what="the job back in the queue")
    assert await engine.cancel(job.id)
    await until(lambda: not uploads(tmp_path / "in"), what="the upload removed")
