"""A misbehaving (or hostile) ComfyUI, over the protocol double: what it answers on /prompt and /history and sends on
its websocket in shapes ComfyUI never uses. Every such job ends with an error that says what was wrong (or runs to
its end as if the odd message had not come); none hangs, and the engine's loops and websocket live on."""
from __future__ import annotations

import asyncio
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bridge.engine import JobEngine
from bridge.engine.results import MAX_OUTPUT_IMAGES
from tests.support.double import ComfyDouble
from tests.support.waiting import until
from tests.test_engine import add_websocket_variant

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
P = {"prompt": "a cat", "seed": 5, "steps": 3, "width": 64, "height": 64}


@pytest_asyncio.fixture
async def make_engine(tmp_path: Path, comfy_double: ComfyDouble):
    """Engines over txt2img and txt2img_ws (its images come as websocket frames), with the options given."""
    wf_dir = tmp_path / "workflows"
    wf_dir.mkdir()
    for name in ("txt2img.json", "txt2img.manifest.json"):
        shutil.copy(WORKFLOWS / name, wf_dir)
    add_websocket_variant(wf_dir)
    engines: list[JobEngine] = []

    async def make(**knobs: Any) -> JobEngine:
        eng = JobEngine([comfy_double.url], tmp_path / "data", wf_dir, poll_interval=0.5, reconnect_max_delay=0.5,
                        **knobs)
        await eng.start()
        engines.append(eng)
        return eng

    yield make
    for eng in engines:
        await eng.stop()


@pytest_asyncio.fixture
async def engine(make_engine: Any) -> JobEngine:
    eng = await make_engine()
    # `start` waits a few seconds for the backend; on a loaded machine it may still be connecting, and a job
    # submitted then waits in the local queue instead of reaching the double's hostile answers (with no wait at
    # start, the refusal tests below fail so: "DID NOT RAISE")
    await until(lambda: all(c.healthy and c.object_info is not None for c in eng.connections.values()), 30,
                "the backend to connect")
    return eng


def corrupt_history(double: ComfyDouble, change: Any) -> None:
    """Every history entry the double writes from now on goes through `change(entry)` (which returns the new one)."""
    write = double._finish_history

    def hostile(pid: str, *args: Any) -> None:
        write(pid, *args)
        double.history[pid] = change(double.history[pid])

    double._finish_history = hostile  # type: ignore[method-assign]


def socket_of(double: ComfyDouble, engine: JobEngine) -> Any:
    return double.sockets[engine.connections[double.url].client.client_id]


def with_outputs(outputs: Any) -> Any:
    return lambda entry: {**entry, "outputs": outputs}


# ---------------------------------------------------------------------- /history of odd shapes
@pytest.mark.parametrize("outputs", [
    {"9": ["not", "a", "dict"]},
    {"9": {"images": "ComfyUI_00001_.png"}},
    {"9": {"images": ["ComfyUI_00001_.png"]}},
    {"9": {"images": [{"subfolder": "", "type": "output"}]}},
    {"9": {"images": [{"filename": 5, "subfolder": [], "type": {}}]}},
    {"9": {"images": [{"filename": "a\x00b.png", "subfolder": "", "type": "output"}]}},
    ["9"],
    "outputs",
], ids=["node-output-list", "images-str", "images-of-str", "no-filename", "fields-of-wrong-types", "nul-in-name",
        "outputs-list", "outputs-str"])
async def test_a_history_entry_of_odd_shape_fails_the_job_naming_what_is_wrong(engine, comfy_double, outputs):
    comfy_double.drop_final = True  # the engine reads the outcome from /history
    corrupt_history(comfy_double, with_outputs(outputs))
    job = await engine.submit("txt2img", P)
    job = await engine.wait(job.id, timeout=15)
    assert job.status == "failed"
    assert "history" in job.error and comfy_double.url in job.error, job.error


@pytest.mark.parametrize("entry", [["a", "list"], "text", 5], ids=["list", "str", "int"])
async def test_a_history_entry_that_is_not_an_object_fails_the_job(engine, comfy_double, entry):
    comfy_double.drop_final = True
    corrupt_history(comfy_double, lambda _: entry)
    job = await engine.submit("txt2img", P)
    job = await engine.wait(job.id, timeout=15)
    assert job.status == "failed" and "history" in job.error, job.error


@pytest.mark.parametrize("status", [
    "error",
    {"status_str": "error", "messages": [["execution_error", "boom"]]},
    {"status_str": "error", "messages": [["execution_error", ["a"]]]},
    {"status_str": "error", "messages": "execution_error"},
], ids=["status-str", "error-data-str", "error-data-list", "messages-str"])
async def test_a_history_status_of_odd_shape_fails_the_job(engine, comfy_double, status):
    comfy_double.drop_final = True
    corrupt_history(comfy_double, lambda entry: {**entry, "status": status})
    job = await engine.submit("txt2img", P)
    job = await engine.wait(job.id, timeout=15)
    assert job.status == "failed" and job.error, job.error


async def test_an_unforeseen_failure_reading_the_results_fails_the_job(engine, comfy_double, monkeypatch):
    """Whatever breaks while the results are read ends the job: raised, it left the job finishing, and the
    watchdog never looked at it again (it waited for its timeout, or forever without one)."""
    from bridge.engine import tracker

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a shape nobody foresaw")

    monkeypatch.setattr(tracker, "read_outcome", broken)
    job = await engine.submit("txt2img", P)
    job = await engine.wait(job.id, timeout=15)
    assert job.status == "failed" and "a shape nobody foresaw" in job.error and comfy_double.url in job.error


# ---------------------------------------------------------------------- websocket messages of odd shape
def frame4(meta: Any, image: bytes = b"x") -> bytes:
    text = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return struct.pack(">II", 4, len(text)) + text + image


def odd_texts(pid: str) -> list[str]:
    return ["not json", "[1, 2]", "5", "null", '"\\ud800"', "[" * 100_000 + "]" * 100_000,
            json.dumps({"type": "progress"}), json.dumps({"type": "progress", "data": "x"}),
            json.dumps({"type": "progress", "data": [1]}),
            '{"type": "progress", "data": {"prompt_id": "%s", "value": Infinity, "max": 3}}' % pid,
            '{"type": "progress", "data": {"prompt_id": "%s", "value": NaN, "max": 3}}' % pid,
            '{"type": "progress", "data": {"prompt_id": "%s", "value": 1, "max": 1%s}}' % (pid, "0" * 400),
            json.dumps({"type": "progress", "data": {"prompt_id": pid, "value": 10 ** 30, "max": 10 ** 30}}),
            json.dumps({"type": "execution_cached", "data": {"prompt_id": pid, "nodes": 5}}),
            json.dumps({"type": "executed", "data": {"prompt_id": pid, "node": "9", "output": ["x"]}}),
            json.dumps({"type": "executing", "data": {"prompt_id": [pid], "node": None}}),
            json.dumps({"type": "no such type", "data": {"prompt_id": pid}})]


def odd_frames(pid: str) -> list[bytes]:
    return [b"", b"\x00\x00\x00\x04", struct.pack(">II", 4, 10 ** 6) + b"{", frame4([1]), frame4("meta"),
            frame4({"prompt_id": [pid], "node_id": "3"}), frame4({"prompt_id": pid, "node_id": {"a": 1}}),
            frame4(b"\xff\xfe"), frame4(b"[" * 100_000), struct.pack(">II", 99, 0)]


async def test_parsing_a_message_never_raises() -> None:
    from bridge.engine.events import parse_frame, parse_text

    for text in odd_texts("p"):
        assert parse_text(text) is None, text[:80]
    for frame in odd_frames("p"):
        preview = parse_frame(frame)
        assert preview is None or isinstance(preview.image_type, str) and preview.prompt_id is None, frame[:80]


async def test_a_text_message_past_its_bound_is_not_read() -> None:
    """A 2 GiB text message (the websocket's bound, set for image frames) was parsed on the event loop into Python
    objects several times its size; what an `executed` message says is read from /history instead."""
    from bridge.engine.events import MAX_TEXT_CHARS, Executed, parse_text

    def executed(chars: int) -> str:
        output = {"text": ["a" * chars]}
        return json.dumps({"type": "executed", "data": {"prompt_id": "p", "node": "9", "output": output}})

    assert isinstance(parse_text(executed(1000)), Executed)
    big = executed(MAX_TEXT_CHARS)
    assert len(big) > MAX_TEXT_CHARS and parse_text(big) is None


async def test_messages_of_odd_shape_keep_the_websocket_and_the_job(engine, comfy_double):
    """Each used to raise in the connection's receive loop (or in the tracker, from a progress of Infinity), which
    dropped the websocket: a reconnect and a reconciliation of every job there, per message."""
    comfy_double.step_delay = 0.1
    conn = engine.connections[comfy_double.url]
    job = await engine.submit("txt2img", {**P, "steps": 10})
    await until(lambda: engine.get(job.id).status == "running")
    since, ws = conn.connected_since, socket_of(comfy_double, engine)
    for text in odd_texts(job.prompt_id):
        await ws.send_str(text)
    for frame in odd_frames(job.prompt_id):
        await ws.send_bytes(frame)
    job = await engine.wait(job.id, timeout=15)
    assert job.status == "completed", job.error
    assert job.step == job.steps == 10
    assert conn.connected_since == since and socket_of(comfy_double, engine) is ws


# ---------------------------------------------------------------------- POST /prompt refusals of odd shape
VALIDATION = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": ""}


@pytest.mark.parametrize("error,node_errors", [
    (VALIDATION, {"3": "bad"}),
    (VALIDATION, {"3": {"errors": "bad", "class_type": "KSampler"}}),
    (VALIDATION, {"3": {"errors": ["bad", {"message": 5, "extra_info": "steps"}], "class_type": ["KSampler"]}}),
    (VALIDATION, {"3": {"errors": [{"message": "bad", "extra_info": {"input_name": ["steps"]}}],
                        "class_type": "KSampler"}}),
    (VALIDATION, ["3"]),
    ({"message": 7, "details": ["x"]}, {}),
], ids=["entry-str", "errors-str", "errors-of-odd-items", "input-name-list", "node-errors-list", "message-int"])
async def test_a_refusal_of_odd_shape_is_the_clients_error_and_no_job_is_left(engine, comfy_double, error,
                                                                              node_errors):
    """It used to raise a TypeError or AttributeError out of submit (a 500), leaving the job's row queued with no
    dispatcher to send it anywhere."""
    from bridge.errors import BridgeError

    comfy_double._validate = lambda prompt, partial=None: (False, error, [], node_errors)  # type: ignore[method-assign]
    with pytest.raises(BridgeError) as refused:
        await engine.submit("txt2img", P)
    assert "rejected" in refused.value.message
    assert [j for j in await engine.list() if not j.done] == []


async def test_a_dispatch_that_breaks_unforeseen_fails_the_accepted_job(engine, comfy_double, monkeypatch):
    """As the dispatch loop does: raised out of submit it was a 500, and the job stayed queued with no dispatcher
    holding it (nothing would ever send or end it)."""
    from bridge.engine import dispatcher

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("an answer nobody foresaw")

    monkeypatch.setattr(dispatcher.wfmod, "name_saved_files", broken)
    job = await engine.submit("txt2img", P)
    assert job.status == "failed" and "an answer nobody foresaw" in job.error
    assert [j for j in await engine.list() if not j.done] == []


async def test_a_prompt_the_backend_keeps_answering_500_fails_and_lets_the_queue_go_on(engine, comfy_double,
                                                                                          monkeypatch):
    """A graph ComfyUI's /prompt handler breaks on: retried at the queue's front without end, it held every job
    behind it; the backend stays up (its other prompts are taken), so after five tries over the span the job fails
    naming the answer."""
    from bridge.engine import dispatcher

    monkeypatch.setattr(dispatcher, "DISPATCH_FAILURE_SPAN", 1.0)
    comfy_double.prompt_fault = lambda prompt: "poison" in json.dumps(prompt)
    bad = await engine.submit("txt2img", dict(P, prompt="poison"))
    good = await engine.submit("txt2img", P)
    good = await engine.wait(good.id, timeout=20)
    bad = await engine.wait(bad.id, timeout=5)
    assert good.status == "completed", good.error
    assert bad.status == "failed" and "on every backend that runs it" in bad.error, bad.error
    assert "POST /prompt answered 500" in bad.error and comfy_double.url in bad.error
    assert engine._dispatcher.failures == {}


async def test_a_backend_that_fails_a_dispatch_is_avoided_for_that_job(tmp_path, comfy_double, monkeypatch):
    """With two backends, a job one of them keeps refusing goes to the other (least pending work and the order of
    the list sent it back to the failing one each time), and nothing is failed while one has not tried it."""
    from bridge.engine import dispatcher

    monkeypatch.setattr(dispatcher, "DISPATCH_FAILURE_SPAN", 0.0, raising=False)
    other = await ComfyDouble().start()
    wf_dir = tmp_path / "workflows"
    wf_dir.mkdir()
    for name in ("txt2img.json", "txt2img.manifest.json"):
        shutil.copy(WORKFLOWS / name, wf_dir)
    comfy_double.prompt_fault = lambda prompt: True
    eng = JobEngine([comfy_double.url, other.url], tmp_path / "data", wf_dir, poll_interval=0.5)
    await eng.start()
    try:
        await until(lambda: all(s["healthy"] for s in eng.backend_states()), timeout=10)
        jobs = [await eng.submit("txt2img", P) for _ in range(3)]
        done = [await eng.wait(j.id, timeout=20) for j in jobs]
        assert [(j.status, j.backend) for j in done] == [("completed", other.url)] * 3, [j.error for j in done]
    finally:
        await eng.stop()
        await other.stop()


# ---------------------------------------------------------------------- a server that only pretends to be ComfyUI
@pytest_asyncio.fixture
async def pretender():
    """A server on which each test puts the routes it needs: `await pretender({("GET", "/path"): handler})`."""
    from aiohttp import web

    runners: list[web.AppRunner] = []

    async def serve(routes: dict[tuple[str, str], Any]) -> str:
        app = web.Application()
        for (method, path), handler in routes.items():
            app.router.add_route(method, path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    yield serve
    for runner in runners:
        await runner.cleanup()


def answer(body: str, status: int = 200) -> Any:
    from aiohttp import web

    async def handler(request: Any) -> Any:
        return web.Response(text=body, status=status, content_type="application/json")
    return handler


@pytest.mark.parametrize("body", ["[1, 2]", '"x"', "5", "true"])
async def test_a_history_answer_that_is_not_an_object_is_a_backend_error(pretender, body):
    import aiohttp
    from bridge.engine.client import BackendError, ComfyClient

    url = await pretender({("GET", "/history/{pid}"): answer(body)})
    async with aiohttp.ClientSession() as session:
        with pytest.raises(BackendError, match="not an object"):
            await ComfyClient(url, session, "c").history("p")


@pytest.mark.parametrize("body", ["[1]", "{}", '{"name": 5}', '{"name": ""}', '{"name": "a.png", "subfolder": [1]}'])
async def test_an_upload_answer_without_a_file_name_is_a_backend_error(pretender, body):
    """A BackendError keeps the job queued for another try; a KeyError or TypeError was a 500 and a lost job."""
    import aiohttp
    from bridge.engine.client import BackendError, ComfyClient

    url = await pretender({("POST", "/upload/image"): answer(body)})
    async with aiohttp.ClientSession() as session:
        with pytest.raises(BackendError, match="no file name"):
            await ComfyClient(url, session, "c").upload_image(b"png", "a.png")


@pytest.mark.parametrize("body", ["Bad Request", "[1]", '"refused"', "\xff"])
async def test_a_400_from_prompt_in_other_words_than_comfyuis_is_a_refusal(pretender, body):
    import aiohttp
    from bridge.engine.client import ComfyClient, PromptRejected

    url = await pretender({("POST", "/prompt"): answer(body, 400)})
    async with aiohttp.ClientSession() as session:
        with pytest.raises(PromptRejected, match="ComfyUI answered 400"):
            await ComfyClient(url, session, "c").queue_prompt({}, "p")


async def test_a_backend_whose_greeting_fails_is_not_reconnected_to_in_a_busy_loop(pretender, tmp_path):
    """Its websocket opens, its /system_stats answers 500: every failed greeting connected again at once, over a
    thousand websockets a second (each greeting a request too)."""
    from aiohttp import web

    connects = 0

    async def ws(request: Any) -> Any:
        nonlocal connects
        connects += 1
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for _ in sock:
            pass
        return sock

    url = await pretender({("GET", "/ws"): ws, ("GET", "/system_stats"): answer("oops", 500)})
    wf_dir = tmp_path / "workflows"
    wf_dir.mkdir()
    for name in ("txt2img.json", "txt2img.manifest.json"):
        shutil.copy(WORKFLOWS / name, wf_dir)
    async with JobEngine([url], tmp_path / "data", wf_dir, reconnect_max_delay=0.5, connect_wait=0.5) as engine:
        await asyncio.sleep(1.5)
        conn = engine.connections[url]
        assert not conn.healthy and "system_stats answered 500" in conn.last_error
    assert 2 <= connects <= 8


async def test_removing_comfyuis_copies_passes_over_entries_of_odd_shape(tmp_path):
    """A completed job's entry is read for its wanted outputs only; the files of the others, listed to be removed
    from ComfyUI's folder, raised AttributeError (the copies stayed) or ValueError in the removal thread (the rest of
    the batch stayed)."""
    from bridge.engine.retention import comfyui_files, remove_comfyui_files

    entry = {"outputs": {"9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]},
                         "10": ["x"], "11": {"images": "b.png"}, "12": None,
                         "13": {"images": [{"filename": "c\x00.png"}, {"filename": "d.png", "subfolder": "s"}]}}}
    files = comfyui_files(entry)
    assert files == [("", "a.png"), ("", "c\x00.png"), ("s", "d.png")]
    assert comfyui_files({"outputs": ["9"]}) == [] and comfyui_files({"outputs": "x"}) == []
    (tmp_path / "s").mkdir()
    for name in ("a.png", "s/d.png"):
        (tmp_path / name).write_bytes(b"png")
    assert remove_comfyui_files(tmp_path, files) == 2
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "s" / "d.png").exists()


async def test_an_error_message_no_database_keeps_as_text_still_ends_the_job(bridge_factory, comfy_double):
    """A backend's error message with a NUL (PostgreSQL keeps none in text) or a lone surrogate (a JSON escape no
    driver encodes) failed the write of the job's end on every try: the job never ended in the store, each listing
    waited for that write (for ever), and so did the bridge's stop. Both are written as U+FFFD, on either store."""
    from bridge.keys import ENGINE

    client = await bridge_factory(adapters=["jobs_api"])
    comfy_double.fail_class, comfy_double.fail_message = "KSampler", "boom\x00\ud800"
    resp = await client.post("/generate/text2img", json={"prompt": "a cat", "width": 64, "height": 64, "steps": 1})
    job_id = (await resp.json())["id"]
    engine = client.app[ENGINE]
    await until(lambda: engine.get(job_id) is not None and engine.get(job_id).done, 10, "the job's end")
    listed = await asyncio.wait_for(client.get("/jobs"), 10)  # it waits for this replica's writes
    assert listed.status == 200
    [job] = (await listed.json())["jobs"]
    assert job["status"] == "failed"
    stored = await engine.store.load(job_id)
    assert stored.status == "failed" and stored.error.endswith("boom\ufffd\ufffd")


# ---------------------------------------------------------------------- more result images than a job may have
@pytest.mark.parametrize("workflow", ["txt2img", "txt2img_ws"], ids=["history", "frames"])
async def test_result_images_past_the_jobs_bytes_fail_it_naming_the_bound(make_engine, comfy_double, workflow):
    """A ComfyUI that sends (or lists) image after image for one prompt fails its job at the bound, each image alone
    under the 2 GiB one answer may have; before, the bridge held every one of them."""
    roomy = await make_engine(max_output_bytes=10 ** 6)
    job = await roomy.wait((await roomy.submit(workflow, {**P, "batch_size": 2})).id, timeout=15)
    assert job.status == "completed", job.error
    await roomy.stop()
    eng = await make_engine(max_output_bytes=100)
    job = await eng.wait((await eng.submit(workflow, {**P, "batch_size": 2})).id, timeout=15)
    assert job.status == "failed", job.error
    assert "more than 100 bytes of result images" in job.error and "BRIDGE_MAX_OUTPUT_BYTES" in job.error, job.error
    if workflow == "txt2img_ws":
        await until(lambda: job.prompt_id in comfy_double.interrupts)  # the frames stop coming too


async def test_frames_past_the_jobs_image_count_fail_it(engine, comfy_double, monkeypatch):
    """The count bound holds for websocket frames as for a history's listing: each frame may be tiny, and ComfyUI
    sends them as long as the prompt runs."""
    from bridge.engine import results

    monkeypatch.setattr(results, "MAX_OUTPUT_IMAGES", 2)
    job = await engine.wait((await engine.submit("txt2img_ws", {**P, "batch_size": 2})).id, timeout=15)
    assert job.status == "completed", job.error
    job = await engine.wait((await engine.submit("txt2img_ws", {**P, "batch_size": 3})).id, timeout=15)
    assert job.status == "failed", job.error
    assert "more than 2 result images" in job.error, job.error
    await until(lambda: job.prompt_id in comfy_double.interrupts)  # the frames stop coming too


async def test_a_history_listing_more_images_than_a_job_may_have_fails_before_fetching_any(engine, comfy_double):
    comfy_double.drop_final = True
    many = [{"filename": f"ComfyUI_{i:05}_.png", "subfolder": "", "type": "output"}
            for i in range(MAX_OUTPUT_IMAGES + 1)]
    corrupt_history(comfy_double, with_outputs({"9": {"images": many}}))
    fetched: list[str] = []
    view = engine.connections[comfy_double.url].client.view

    async def counted(filename: str, *args: Any, **kwargs: Any) -> bytes:
        fetched.append(filename)
        return await view(filename, *args, **kwargs)

    engine.connections[comfy_double.url].client.view = counted  # type: ignore[method-assign]
    job = await engine.wait((await engine.submit("txt2img", P)).id, timeout=15)
    assert job.status == "failed"
    assert f"more than {MAX_OUTPUT_IMAGES} result images" in job.error, job.error
    assert fetched == []


async def test_the_bound_on_a_jobs_result_bytes_is_a_setting(tmp_path: Path) -> None:
    from bridge.app import build_engine
    from bridge.config import SettingsError, load_settings

    settings = load_settings({"data_dir": tmp_path / "data"}, {"BRIDGE_MAX_OUTPUT_BYTES": "1000"}, env_file=None)
    assert build_engine(settings, ["http://comfy:8188"]).options.max_output_bytes == 1000
    assert load_settings({"data_dir": tmp_path}, env_file=None).max_output_bytes == 2 * 1024 ** 3
    with pytest.raises(SettingsError, match="BRIDGE_MAX_OUTPUT_BYTES"):
        load_settings({"data_dir": tmp_path}, {"BRIDGE_MAX_OUTPUT_BYTES": "0"}, env_file=None)
