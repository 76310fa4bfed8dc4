"""Hostile input and hostile clients on the routes about jobs, over the ComfyUI protocol double and on both job
stores: the listing's and a job's query values, path values of the shared job routes, meta filters that no
database reads alike, long polls whose client left or whose job was deleted, and event streams that a client stopped
reading or whose job was deleted."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from bridge import workflows as W
from bridge.adapters.pixart_editor import DIALECT_NAME as EDITOR_DIALECT, client_job_id
from bridge.app import build_engine, create_app
from bridge.events import stream_events
from bridge.http import json_error
from bridge.keys import ENGINE, STREAMS
from bridge.server import start
from bridge.store import Job
from tests.support.imaging import solid_png_b64
from tests.support.waiting import until, wait_healthy

pytestmark = pytest.mark.asyncio

SMALL = {"prompt": "a", "width": 64, "height": 64}


async def submit(client: Any, steps: int = 1) -> str:
    resp = await client.post("/generate/text2img", json={**SMALL, "steps": steps})
    assert resp.status == 202, await resp.text()
    return (await resp.json())["id"]


async def slow_to_cancel(aiohttp_client: Any, bridge_settings: Any, routes: Any = None, *,
                         job_id: str = "job_elsewhere", meta: dict[str, Any] | None = None,
                         adapters: list[str] | None = None) -> tuple[Any, str]:
    """A bridge, and a job of its store that no replica runs (nobody serves its workflow: another replica's, gone)
    and that a DELETE therefore removes unfinished, its cancel never confirmed (after 0.3 s + 2 claim intervals)."""
    settings = bridge_settings()
    engine = build_engine(settings, settings.comfyui_urls)
    engine.options = dataclasses.replace(engine.options, cancel_grace=0.3)
    app = create_app(settings, engine=engine, adapter_names=adapters or ["jobs_api"])
    if routes is not None:
        routes(app)
    client = await aiohttp_client(app)
    await wait_healthy(client)
    await engine.store.insert(Job(id=job_id, workflow="served_elsewhere", workflow_version=1, params={},
                                  created_at=time.time(), meta=meta or {"api": "jobs", "type": "text2img"}),
                              owner=None, lease=0.0)
    return client, job_id


# ------------------------------------------------------------------------------------------------ query and path values


async def test_hostile_query_and_path_values_are_4xx_naming_the_field(bridge_factory: Any, comfy_double: Any) -> None:
    client = await bridge_factory(adapters=["jobs_api"])
    await wait_healthy(client)
    job_id = await submit(client)
    assert (await (await client.get(f"/jobs/{job_id}?wait=30")).json())["status"] == "completed"
    values = ["", "-1", "NaN", "inf", "9" * 401, "1e3", "1.5", "x" * 2000, "a\x00b", "\ud800", "\u00e9", "0x10"]
    for field in ("status", "type", "limit", "offset"):
        for value in values:
            resp = await client.get("/jobs", params={field: value})
            body = await resp.json()
            assert resp.status == 400 and body["field"] == field and len(body["error"]) < 1000, (field, value, body)
    for field in ("wait", "response_format"):
        for value in (v for v in values if v != "1.5"):
            resp = await client.get(f"/jobs/{job_id}", params={field: value})
            assert resp.status == 400 and (await resp.json())["field"] == field, (field, value)
    # a key given twice: its first value counts, as aiohttp (and ComfyUI) read it; A1111's routes read the last
    assert (await client.get(f"/jobs/{job_id}?wait=0&wait=x")).status == 200
    assert (await client.get(f"/jobs/{job_id}?wait=x&wait=0")).status == 400
    for value in ("nope", "..x", "a" * 200, "\u00e9", "%00", "%ED%A0%80"):
        for method, path in (("GET", f"/jobs/{value}"), ("POST", f"/jobs/{value}/cancel"), ("DELETE", f"/jobs/{value}"),
                             ("GET", f"/jobs/{value}/preview"), ("GET", f"/jobs/{value}/webhooks"),
                             ("GET", f"/jobs/{value}/files/answer_0123456789abcdef.png"),
                             ("GET", f"/jobs/{value}/outputs/images/0")):
            resp = await client.request(method, path)
            assert resp.status == 404 and (await resp.json())["field"] == "id", (method, path)
    for value in ("nope", "\u00e9", "x" * 2000, "%00"):
        resp = await client.get(f"/jobs/{job_id}/outputs/{value}/0")
        assert resp.status == 400 and (await resp.json())["field"] == "output" and len(await resp.text()) < 1000
        resp = await client.get(f"/jobs/{job_id}/files/{value}")
        assert resp.status == 404 and (await resp.json())["field"] == "name" and len(await resp.text()) < 1000
    assert (await client.get(f"/jobs/{job_id}/outputs/images/0")).status == 200


async def test_an_output_index_is_ascii_digits(bridge_factory: Any, comfy_double: Any) -> None:
    """int() read "\u0660" (an Arabic-Indic zero) and "0_0" as 0, so a mistyped link served the first image; and it
    took 4,300 digits, which the answer repeated whole."""
    client = await bridge_factory(adapters=["jobs_api"])
    await wait_healthy(client)
    job_id = await submit(client)
    await client.get(f"/jobs/{job_id}?wait=30")
    assert (await client.get(f"/jobs/{job_id}/outputs/images/00")).status == 200
    for index in ("\u0660", "0_0", "-0", "+0", "%200", "\uff10", "1.0", "0e0"):
        resp = await client.get(f"/jobs/{job_id}/outputs/images/{index}")
        body = await resp.json()
        assert resp.status == 400 and body["field"] == "index" and "whole number" in body["message"], (index, body)
    for index in ("1", "999999999", "9" * 4000):
        resp = await client.get(f"/jobs/{job_id}/outputs/images/{index}")
        body = await resp.json()
        assert resp.status == 400 and body["field"] == "index" and len(body["message"]) < 300, (index[:20], body)


# ------------------------------------------------------------------------------------------------ listings


async def raw_bridge(bridge_factory: Any, tmp_path: Path) -> Any:
    """A bridge serving "raw": txt2img with a `json` parameter, `extra`, written into the prompt's text."""
    folder = tmp_path / "shared"
    folder.mkdir()
    shutil.copy(W.DEFAULT_WORKFLOWS_DIR / "txt2img.json", folder / "raw.json")
    manifest = json.loads((W.DEFAULT_WORKFLOWS_DIR / "txt2img.manifest.json").read_text())
    manifest.update(name="raw", workflow="raw.json")
    manifest["parameters"]["extra"] = {"type": "json", "targets": [{"node": "6", "input": "text"}]}
    (folder / "raw.manifest.json").write_text(json.dumps(manifest))
    client = await bridge_factory(adapters=["jobs_api"], extra_workflows_dirs=[str(folder)])
    await wait_healthy(client)
    return client


async def test_a_json_parameter_with_a_lone_surrogate_fails_no_listing(bridge_factory: Any, comfy_double: Any,
                                                                       tmp_path: Path) -> None:
    """A `json` parameter takes any string, a lone surrogate too, and the jobs API echoes it in the job's meta;
    json.dumps writes it as the escape \\ud800, which PostgreSQL's JSON refuses: from then on GET /jobs?type=...
    was a 500 there for every client (the type is read from meta)."""
    client = await raw_bridge(bridge_factory, tmp_path)
    ids = []
    for text in ("a\\ud800b", "a\\udc00", "plain"):
        resp = await client.post("/workflows/raw?wait=30", data='{"parameters": {"extra": "%s", "width": 64, '
                                 '"height": 64, "steps": 1}}' % text, headers={"Content-Type": "application/json"})
        assert resp.status == 200, await resp.text()
        ids.append((await resp.json())["id"])
    for query in ("type=raw", "type=raw&status=completed", "type=raw&limit=1&offset=1"):
        resp = await client.get(f"/jobs?{query}")
        assert resp.status == 200, (query, await resp.text())
    listed = [j["id"] for j in (await (await client.get("/jobs?type=raw")).json())["jobs"]]
    assert listed == ids[::-1]
    assert [j["id"] for j in (await (await client.get("/jobs?type=raw&limit=1&offset=1")).json())["jobs"]] == [ids[1]]


async def test_a_large_json_parameter_is_neither_echoed_nor_listed(bridge_factory: Any, comfy_double: Any,
                                                                    tmp_path: Path) -> None:
    """A `json` parameter may be as large as the body (32 MiB): the job's `request` echoed it whole into meta, and
    every listing read each job's params and meta (100 jobs of 1 MB: 400 MB at the listing's peak)."""
    client = await raw_bridge(bridge_factory, tmp_path)
    big, small = ["x" * 5000, 1], [1, "two"]
    ids = []
    for extra in (big, small):
        resp = await client.post("/workflows/raw", json={"parameters": {"extra": extra, "width": 64, "height": 64,
                                                                        "steps": 1}})
        body = await resp.json()
        assert resp.status == 202, body
        assert body["request"]["extra"] == ("<JSON of more than 4096 characters>" if extra is big else small)
        ids.append(body["id"])
    shown = await (await client.get(f"/jobs/{ids[0]}?wait=30")).json()
    assert shown["status"] == "completed", shown
    # the request as echoed, and what the job ran with: by its size both times
    assert shown["request"]["extra"] == shown["result"]["parameters"]["extra"] == "<JSON of more than 4096 characters>"
    store = client.server.app[ENGINE].store
    assert {j.id: j.params for j in await store.query(meta={"api": "jobs"})} == {i: {} for i in ids}
    assert (await store.load(ids[0])).params["extra"] == big  # the job itself keeps it


async def test_paging_through_thousands_of_jobs_shows_each_once(bridge_factory: Any, comfy_double: Any) -> None:
    """Pages of GET /jobs over 2,500 jobs, many created in the same millisecond: every job once, newest first, the
    same on both stores; a window past the last job is empty and the bound past 10,000 named."""
    client = await bridge_factory(adapters=["jobs_api"])
    await wait_healthy(client)
    engine = client.server.app[ENGINE]
    for i in range(2_500):
        await engine.store.insert(Job(id=f"job_{i:05d}", workflow="txt2img", workflow_version=1, params={},
                                      status=("completed", "failed", "cancelled")[i % 3], created_at=1000.0 + i // 7,
                                      meta={"api": "jobs", "type": "text2img"}), owner=None, lease=0.0)
    seen: list[str] = []
    for offset in range(0, 3_000, 400):
        resp = await client.get("/jobs", params={"limit": "400", "offset": str(offset), "type": "text2img"})
        assert resp.status == 200
        seen += [j["id"] for j in (await resp.json())["jobs"]]
    assert seen == sorted((f"job_{i:05d}" for i in range(2_500)), key=lambda j: (int(j[4:]) // 7, j), reverse=True)
    failed = [j["id"] for j in (await (await client.get("/jobs?status=failed&limit=1000")).json())["jobs"]]
    assert failed == [j for j in seen if int(j[4:]) % 3 == 1]
    resp = await client.get("/jobs?limit=1000&offset=10001")
    assert resp.status == 400 and (await resp.json())["field"] == "offset"


# ------------------------------------------------------------------------------------------------ long polls


async def test_a_long_poll_on_a_job_deleted_unfinished_answers_404(aiohttp_client: Any, bridge_settings: Any,
                                                                   comfy_double: Any) -> None:
    """A DELETE whose cancel went unconfirmed removes the job unfinished, and its end never comes: a `?wait=` on it
    waited its whole time and then answered 200 with the deleted job, still "queued"."""
    client, job_id = await slow_to_cancel(aiohttp_client, bridge_settings)
    poll = asyncio.ensure_future(client.get(f"/jobs/{job_id}?wait=120"))
    await asyncio.sleep(0.5)
    assert (await client.delete(f"/jobs/{job_id}")).status == 200
    resp = await asyncio.wait_for(poll, 30)  # within the engine's look at the store (5 s), far from the wait's 120 s
    assert resp.status == 404 and await resp.json() == {"error": "Job not found", "field": "id"}
    assert (await client.get(f"/jobs/{job_id}/outputs/images/0")).status == 404


# The three `?wait=` routes: what a client sends to poll (a job of its own, or one it already submitted).
EDITOR = "/api/pixel-generation"
POLLS = {
    "jobs": lambda job_id: b"GET /jobs/%s?wait=600 HTTP/1.1\r\nHost: x\r\n\r\n" % job_id.encode(),
    "workflows": lambda _: post(b"/workflows/txt2img?wait=600",
                                {"parameters": {**SMALL, "steps": 150}}),
    "editor": lambda job_id: b"GET " + EDITOR.encode() + b"/status/%s?wait=60 HTTP/1.1\r\nHost: x\r\n\r\n"
                             % job_id.encode(),
}


def post(path: bytes, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path, len(data), data))


@pytest.mark.parametrize("route", sorted(POLLS))
async def test_a_long_poll_whose_client_left_stops_waiting(bridge_settings: Any, comfy_double: Any,
                                                           route: str) -> None:
    """The bridge's own server (not the test client's, which cancels the handler of a client that left) runs a
    handler to its end: 50 abandoned `?wait=600` held 200 tasks and their waits for 10 minutes, each reading
    another replica's job from the store every 5 s."""
    comfy_double.step_delay = 0.5
    comfy_double.node_delay = 5.0  # the editor's job runs on while its 20 polls come and go
    settings = bridge_settings()
    app = create_app(settings, adapter_names=["jobs_api", "pixart_editor"])
    runner, listener = await start(app, settings, host="127.0.0.1", port=0)
    port = listener.sockets[0].getsockname()[1]
    engine = app[ENGINE]
    waiting = [0]
    wait = engine.wait

    async def counted(job_id: str, timeout: float | None = None) -> Any:
        waiting[0] += 1
        try:
            return await wait(job_id, timeout)
        finally:
            waiting[0] -= 1

    engine.wait = counted  # type: ignore[method-assign]
    try:
        await until(lambda: any(b["healthy"] for b in engine.backend_states()), what="a healthy backend")

        async def request(raw: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw)
            await writer.drain()
            return reader, writer

        if route == "editor":
            reader, writer = await request(post(EDITOR.encode() + b"/generate", {
                "id": "left", "sketchData": solid_png_b64(32, 32), "width": 16, "height": 16, "useAI": False}))
            job_id = "left"
        else:
            reader, writer = await request(post(b"/generate/text2img", {**SMALL, "steps": 150}))
            job_id = json.loads((await reader.read()).split(b"\r\n\r\n", 1)[1])["id"]
        await reader.read()
        writer.close()
        polls = [await request(POLLS[route](job_id)) for _ in range(20)]
        await until(lambda: waiting[0] == 20, what="20 long polls")
        for _, writer in polls:
            writer.close()
        await until(lambda: waiting[0] == 0, timeout=10, what="the abandoned long polls to stop waiting")
        # only waited on: the jobs go on
        assert {j.status for j in await engine.list()} <= {"queued", "running"}
    finally:
        listener.close()
        await runner.cleanup()


async def test_the_editors_long_poll_on_a_generation_deleted_unfinished_answers_404(aiohttp_client: Any,
                                                                                      bridge_settings: Any,
                                                                                      comfy_double: Any) -> None:
    """As the jobs API's: the editor's `status?wait=` waited its whole time and answered "processing"."""
    client, job_id = await slow_to_cancel(aiohttp_client, bridge_settings, job_id=client_job_id("gone"),
                                          meta={"dialect": EDITOR_DIALECT}, adapters=["pixart_editor"])
    poll = asyncio.ensure_future(client.get(f"{EDITOR}/status/gone?wait=60"))
    await asyncio.sleep(0.5)
    await client.server.app[ENGINE].delete(job_id)
    resp = await asyncio.wait_for(poll, 30)  # within the engine's look again (5 s), far from the wait's 60 s
    body = await resp.json()
    assert resp.status == 404 and body["field"] == "id", body


# ------------------------------------------------------------------------------------------------ event streams


async def test_a_stream_whose_client_stopped_reading_ends_when_the_server_stops(bridge_factory: Any) -> None:
    """Shutdown ends every stream so that a graceful stop does not wait on them; one blocked in a write to a
    client that stopped reading stayed until the write's 60 s timeout, and aiohttp's stop waited that long."""
    client = await bridge_factory()
    app = client.server.app
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    writer.transport.pause_reading()
    await until(lambda: len(app[STREAMS]) == 1, what="the stream")
    big = Job(id="big", workflow="txt2img", workflow_version=1, params={"prompt": "p" * 20_000},
              meta={"request": {"prompt": "p" * 20_000}})
    for i in range(300):  # 12 MB of events: past what the sockets' buffers hold
        big.progress = i / 3
        app[ENGINE].hub.emit("progress", big)
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.5)
    assert len(app[STREAMS]) == 1
    await app.shutdown()
    await until(lambda: len(app[STREAMS]) == 0, timeout=20, what="the stream to end")  # it took 58.7 s
    writer.close()


async def test_a_job_stream_ends_when_its_job_is_deleted_unfinished(aiohttp_client: Any, bridge_settings: Any,
                                                                   comfy_double: Any) -> None:
    """The stream of one job ends after the job's final event; a job deleted unfinished has none, and its stream
    sent keep-alives for as long as its client stayed. (A route of the test's own, for a short keep-alive.)"""

    async def events(request: Any) -> Any:
        return await stream_events(request, request.app[ENGINE], request.app[STREAMS], request.query["job"],
                                   heartbeat=0.2, on_unknown_job=lambda j: json_error(404, "job_not_found", j, "job"))

    client, job_id = await slow_to_cancel(aiohttp_client, bridge_settings,
                                          lambda app: app.router.add_get("/t/events", events))
    resp = await client.get(f"/t/events?job={job_id}")
    assert resp.status == 200 and (await resp.content.readline()).startswith(b"retry:")
    assert (await client.delete(f"/jobs/{job_id}")).status == 200

    async def to_the_end() -> None:
        async for _ in resp.content:
            pass

    await asyncio.wait_for(to_the_end(), 15)
    await until(lambda: len(client.server.app[STREAMS]) == 0, what="the stream to close")
