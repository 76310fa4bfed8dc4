"""The job engine against a real ComfyUI 0.3.64 (tiny random-weight SD1.5, CPU, 64x64, 2 steps).

Also checks that the protocol double's /object_info matches the real one for the nodes it models (core, the
pixel-art workflows' core nodes, and every Pixart pack node), and that
the editor copies of the core workflows are what the real /object_info produces.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image

from bridge import workflows as W
from bridge.engine import JobEngine
from tests.support.double import object_info_for
from tests.support.real_comfyui import TINY_CHECKPOINT
from tests.support.imaging import image_size, solid_png_b64
from tests.support.waiting import until

pytestmark = [pytest.mark.comfyui, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
EDITOR = ROOT / "custom_nodes" / "pixart_nodes" / "example_workflows"
CORE = ("txt2img", "img2img", "inpaint")
# Combos filled from folders: their contents differ between servers.
FILE_LISTS = {("CheckpointLoaderSimple", "ckpt_name"), ("LoadImage", "image"), ("LoadImageMask", "image"),
              ("ControlNetLoader", "control_net_name"), ("VAELoader", "vae_name"), ("LoraLoader", "lora_name"),
              ("UpscaleModelLoader", "model_name")}
SMALL = {"prompt": "a red house", "negative_prompt": "blurry", "seed": 1, "steps": 2, "width": 64, "height": 64,
         "checkpoint": TINY_CHECKPOINT}


png_b64 = solid_png_b64


size_of = image_size


def workflow_dir(tmp_path: Path) -> Path:
    d = tmp_path / "workflows"
    d.mkdir(exist_ok=True)
    for name in CORE:
        shutil.copy(WORKFLOWS / f"{name}.json", d)
        shutil.copy(WORKFLOWS / f"{name}.manifest.json", d)
    # A SaveImageWebsocket variant: the image comes back as binary websocket frames.
    graph = json.loads((d / "txt2img.json").read_text())
    manifest = json.loads((d / "txt2img.manifest.json").read_text())
    out = manifest["outputs"]["images"]["node"]
    graph[out] = {"class_type": "SaveImageWebsocket", "inputs": {"images": graph[out]["inputs"]["images"]}}
    manifest.update(name="txt2img_ws", workflow="txt2img_ws.json")
    (d / "txt2img_ws.json").write_text(json.dumps(graph))
    (d / "txt2img_ws.manifest.json").write_text(json.dumps(manifest))
    return d


@pytest_asyncio.fixture
async def make_engine(tmp_path: Path):
    engines: list[JobEngine] = []
    wf_dir = workflow_dir(tmp_path)

    async def make(url: str, **kwargs: Any) -> JobEngine:
        kwargs.setdefault("poll_interval", 1.0)
        kwargs.setdefault("reconnect_max_delay", 1.0)
        kwargs.setdefault("connect_wait", 30.0)
        engine = JobEngine([url], tmp_path / "data", wf_dir, **kwargs)
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    for e in engines:
        await e.stop()


# ---------------------------------------------------------------------- the double is faithful
def test_double_object_info_matches_real_comfyui(comfyui):
    real = comfyui.get_json("/object_info")
    double = object_info_for(["x"], ["example.png"])
    for cls, mine in double.items():
        assert cls in real, cls
        theirs = real[cls]
        assert mine["output"] == theirs["output"], cls
        assert mine["output_node"] == theirs["output_node"], cls
        for section in ("required", "optional"):
            mine_inputs = mine["input"].get(section, {})
            their_inputs = theirs["input"].get(section, {})
            assert list(mine_inputs) == list(their_inputs), (cls, section)
            assert mine["input_order"].get(section, []) == theirs["input_order"].get(section, []), (cls, section)
            for name, spec in mine_inputs.items():
                kind, opts = spec[0], spec[1] if len(spec) > 1 else {}
                their_kind, their_opts = their_inputs[name][0], (their_inputs[name][1] if len(their_inputs[name]) > 1
                                                                 else {})
                if isinstance(kind, list):
                    their_list = their_opts.get("options") if their_kind == "COMBO" else their_kind
                    if (cls, name) not in FILE_LISTS:
                        assert kind == their_list, (cls, name)
                    continue
                assert kind == their_kind, (cls, name)
                for key in ("default", "min", "max", "control_after_generate", "image_upload"):
                    assert opts.get(key) == their_opts.get(key), (cls, name, key)


def test_core_workflows_validate_and_editor_copies_match_real_object_info(comfyui):
    real = comfyui.get_json("/object_info")
    workflows = W.load_workflows(WORKFLOWS)
    for name in CORE:
        assert W.check_object_info(workflows[name], real) == [], name
        expected = W.editor_json_text(W.export_editor(workflows[name], real))
        assert (EDITOR / f"{name}.json").read_text() == expected, name
    templates = comfyui.get_json("/workflow_templates")
    assert any(set(CORE) <= set(names) for names in templates.values()), templates


# ---------------------------------------------------------------------- end to end
@pytest.mark.asyncio
@pytest.mark.parametrize("workflow", CORE)
async def test_core_workflow_end_to_end(make_engine, comfyui, workflow):
    engine = await make_engine(comfyui.url)
    params = dict(SMALL)
    if workflow != "txt2img":
        params["image"] = png_b64(96, 80, (30, 120, 200))
    if workflow == "inpaint":
        mask = Image.new("L", (96, 80), 0)
        mask.paste(255, (20, 20, 70, 60))
        buf = io.BytesIO()
        mask.save(buf, format="PNG")
        params["mask"] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        params["resize_mode"] = "resize and fill"
    if workflow == "img2img":
        params["resize_mode"] = "crop and resize"
        params["height"] = 48 + 24  # 72: not the init image's aspect
    job = await engine.submit(workflow, params)
    job = await engine.wait(job.id, timeout=300)
    assert job.status == "completed", job.error
    assert job.progress == 100 and job.steps == 2
    assert size_of(await engine.read_output(job, "images", 0)) == (params["width"], params["height"])


@pytest.mark.asyncio
async def test_websocket_image_output(make_engine, comfyui):
    engine = await make_engine(comfyui.url)
    job = await engine.wait((await engine.submit("txt2img_ws", {**SMALL, "batch_size": 2})).id, timeout=300)
    assert job.status == "completed", job.error
    assert [size_of(await engine.read_output(job, "images", i)) for i in range(2)] == [(64, 64)] * 2


@pytest.mark.asyncio
async def test_cancel_queued_and_running(make_engine, comfyui):
    engine = await make_engine(comfyui.url)
    long = await engine.submit("txt2img", {**SMALL, "steps": 150, "width": 128, "height": 128, "seed": 11})
    queued = await engine.submit("txt2img", {**SMALL, "seed": 12})
    await until(lambda: long.status == "running" and (long.step or 0) >= 1, 120, what="the long job to sample")
    assert queued.status == "queued"
    assert await engine.cancel(queued.id) and queued.status == "cancelled"
    assert queued.prompt_id not in json.dumps(comfyui.get_json("/queue"))
    assert await engine.cancel(long.id)
    assert long.status == "cancelled"
    await until(lambda: comfyui.get_json(f"/history/{long.prompt_id}") != {}, 30, "interrupt to land")
    messages = [m[0] for m in comfyui.get_json(f"/history/{long.prompt_id}")[long.prompt_id]["status"]["messages"]]
    assert "execution_interrupted" in messages
    assert comfyui.get_json(f"/history/{queued.prompt_id}") == {}  # never ran
    after = await engine.wait((await engine.submit("txt2img", {**SMALL, "seed": 13})).id, timeout=300)
    assert after.status == "completed"


@pytest.mark.asyncio
async def test_engine_restart_mid_job_loses_nothing(make_engine, comfyui):
    engine = await make_engine(comfyui.url)
    job = await engine.submit("txt2img", {**SMALL, "steps": 10, "seed": 21})
    await until(lambda: job.status == "running" and (job.step or 0) >= 1, 120, what="the job to sample")
    await engine.stop()
    engine2 = await make_engine(comfyui.url)
    done = await engine2.wait(job.id, timeout=300)
    assert done.status == "completed", done.error
    assert done.prompt_id == job.prompt_id
    assert size_of(await engine2.read_output(done, "images", 0)) == (64, 64)


@pytest.mark.asyncio
async def test_websocket_frames_missed_during_a_bridge_restart_are_made_again(make_engine, comfyui):
    engine = await make_engine(comfyui.url)
    job = await engine.submit("txt2img_ws", {**SMALL, "steps": 4, "seed": 41})
    first = job.prompt_id
    await engine.stop()  # nobody reads the frames SaveImageWebsocket sends
    await until(lambda: comfyui.get_json(f"/history/{first}") != {}, 300, "the prompt to finish")
    engine2 = await make_engine(comfyui.url)
    done = await engine2.wait(job.id, timeout=300)
    assert done.status == "completed", done.error
    assert done.prompt_id != first and [r["prompt_id"] for r in done.reruns] == [first]
    assert size_of(await engine2.read_output(done, "images", 0)) == (64, 64)


@pytest.mark.asyncio
async def test_comfyui_killed_mid_job(make_engine, comfyui_factory):
    server = await asyncio.to_thread(comfyui_factory)
    engine = await make_engine(server.url)
    job = await engine.submit("txt2img", {**SMALL, "steps": 150, "width": 128, "height": 128, "seed": 31})
    await until(lambda: job.status == "running" and (job.step or 0) >= 1, 120, what="the job to sample")
    await asyncio.to_thread(server.process.kill)
    job = await engine.wait(job.id, timeout=60)
    assert job.status == "failed" and server.url in job.error and "died" in job.error
    await asyncio.to_thread(server.process.restart)
    await asyncio.to_thread(server.process.wait_ready_sync, 180)
    await until(lambda: engine.backend_states()[0]["healthy"], 60, "the backend to come back")
    again = await engine.wait((await engine.submit("txt2img", SMALL)).id, timeout=300)
    assert again.status == "completed", again.error


@pytest.mark.asyncio
async def test_queue_cleared_in_comfyui_behind_the_bridges_back(comfyui: Any, tmp_path: Path) -> None:
    """Someone clears the queue in ComfyUI's own page: the waiting job is submitted again once and finishes; the
    job that was running is not touched."""
    engine = JobEngine([comfyui.url], tmp_path / "data", WORKFLOWS, queue_poll_interval=0.3, poll_interval=0.5)
    async with engine:
        blocker = await engine.submit("txt2img", {**SMALL, "steps": 40, "width": 128, "height": 128, "seed": 5})
        victim = await engine.submit("txt2img", {**SMALL, "seed": 6})
        for _ in range(300):
            if blocker.status == "running":
                break
            await asyncio.sleep(0.05)
        assert blocker.status == "running" and victim.status == "queued"
        first = victim.prompt_id
        status, _ = await asyncio.to_thread(comfyui.post_json, "/queue", {"clear": True})
        assert status == 200
        done = await engine.wait(victim.id, timeout=300)
        assert done.status == "completed", done.error
        assert done.prompt_id != first and done.reruns[0]["prompt_id"] == first
        assert "removed from" in done.reruns[0]["reason"]
        assert (await engine.wait(blocker.id, timeout=300)).status == "completed"


@pytest.mark.asyncio
async def test_prompt_cleared_twice_in_comfyui_fails_its_job_saying_why(comfyui: Any, tmp_path: Path) -> None:
    """Cleared once, a waiting job is submitted again; cleared again, it fails with the reason, so a client never
    waits on a prompt ComfyUI no longer has."""
    engine = JobEngine([comfyui.url], tmp_path / "data", WORKFLOWS, queue_poll_interval=0.3, poll_interval=0.5)
    async with engine:
        blocker = await engine.submit("txt2img", {**SMALL, "steps": 150, "width": 256, "height": 256, "seed": 7})
        victim = await engine.submit("txt2img", {**SMALL, "seed": 8})
        await until(lambda: blocker.status == "running", 120, "the blocker to run")
        first = victim.prompt_id
        assert victim.status == "queued" and first
        # the bridge names a prompt before it posts it: a clear must come once ComfyUI holds it
        await until(lambda: first in _queue_ids(comfyui)[1], 30, "ComfyUI to hold the prompt")
        assert (await asyncio.to_thread(comfyui.post_json, "/queue", {"clear": True}))[0] == 200
        await until(lambda: victim.prompt_id not in (None, first), 30, "the job to be submitted again")
        assert victim.status == "queued" and blocker.status == "running"
        await until(lambda: victim.prompt_id in _queue_ids(comfyui)[1], 30, "ComfyUI to hold the prompt again")
        assert (await asyncio.to_thread(comfyui.post_json, "/queue", {"clear": True}))[0] == 200
        done = await engine.wait(victim.id, timeout=60)
        assert done.status == "failed" and "removed from" in done.error and "(twice)" in done.error
        assert len(done.reruns) == 1 and done.reruns[0]["prompt_id"] == first
        running, pending = await asyncio.to_thread(lambda: _queue_ids(comfyui))
        assert done.prompt_id not in running + pending
        await engine.cancel(blocker.id)


def _queue_ids(server: Any) -> tuple[list[str], list[str]]:
    queue = server.get_json("/queue")
    return [q[1] for q in queue["queue_running"]], [q[1] for q in queue["queue_pending"]]
