"""Work that held the event loop, now done off it or in slices (bench/bench_loop_stalls.py measures how long):
RGB565 frames decoded in the image pool, a result's colours counted a band at a time, /openapi.json built in a
thread and kept as text, large webhook messages written and signed in the pool, workflows checked against a
backend's object_info in a thread, and the heap settled at start-up (the collector no longer walks what lives as
long as the process) and again after a workflow reload. Each answer stays what it was."""
from __future__ import annotations

import asyncio
import base64
import gc
import io
import json
import threading
import weakref
from typing import Any

import numpy as np
import pytest
from PIL import Image
from standardwebhooks.webhooks import Webhook

from bridge import images as image_io
from bridge import jsontext
from bridge.adapters import pixart_editor as pe
from bridge.keys import ENGINE
from tests.support.waiting import until, wait_healthy

pytestmark = pytest.mark.asyncio

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Threads:
    """Records the thread each call of a wrapped function ran on."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def wrap(self, fn: Any) -> Any:
        def spy(*args: Any, **kwargs: Any) -> Any:
            self.seen.append(threading.get_ident())
            return fn(*args, **kwargs)

        return spy


async def test_rgb565_frames_are_decoded_in_the_image_pool(bridge_factory, monkeypatch):
    """Sixteen 1024x1024 frames (2.8 MB of base64 each) decoded on the loop held it 63 ms."""
    client = await bridge_factory(adapters=["a1111", "pico"])
    await wait_healthy(client)
    loop_thread = threading.get_ident()
    decoded: list[tuple[int, int]] = []
    real = base64.b64decode

    def spy(value: Any, *args: Any, **kwargs: Any) -> bytes:
        out = real(value, *args, **kwargs)
        if len(out) == 1024 * 1024 * 2:
            decoded.append((threading.get_ident(), len(out)))
        return out

    monkeypatch.setattr(base64, "b64decode", spy)
    resp = await client.post("/pico/sdapi/v1/txt2img?format=json&lcd_width=1024&lcd_height=1024",
                             json={"prompt": "a", "width": 64, "height": 64, "steps": 1, "batch_size": 2})
    assert resp.status == 200, await resp.text()
    frames = [real(f) for f in (await resp.json())["images"]]
    assert [len(f) for f in frames] == [1024 * 1024 * 2] * 2
    assert len(decoded) == 2 and all(thread != loop_thread for thread, _ in decoded)


def _counted_at_once(rgb: Image.Image) -> list[str]:
    """The colours as the editor counted them before: one getcolors over the whole image."""
    counted = rgb.getcolors(maxcolors=rgb.width * rgb.height) or []
    counted.sort(key=lambda c: (-c[0], c[1]))
    return [f"#{r:02x}{g:02x}{b:02x}" for _, (r, g, b) in counted]


@pytest.mark.parametrize("size", [(1, 1), (3, 7), (70_000, 1), (1, 70_000), (777, 333)])
@pytest.mark.parametrize("colours", [1, 16, 256 ** 3])
async def test_colours_counted_in_bands_are_the_colours_counted_at_once(size, colours):
    rng = np.random.default_rng(sum(size) + colours)
    w, h = size
    if colours == 256 ** 3:  # every pixel a colour of its own, nearly: the numpy path
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        arr = rng.integers(0, 256, (colours, 3), dtype=np.uint8)[rng.integers(0, colours, (h, w))]
    rgb = Image.fromarray(arr)
    assert pe.colors_by_use(rgb) == _counted_at_once(rgb)


async def test_a_results_colours_are_counted_a_band_at_a_time(make_editor, monkeypatch):
    """Pillow's getcolors holds the interpreter lock for the whole image, thread or not: 110 ms at 4096x4096. The
    status answer's colours are the same as counted at once."""
    client = await make_editor()
    sizes: list[int] = []
    real = Image.Image.getcolors

    def spy(self: Image.Image, maxcolors: int = 256) -> Any:
        sizes.append(self.width * self.height)
        return real(self, maxcolors)

    monkeypatch.setattr(Image.Image, "getcolors", spy)
    body = {"id": "bands", "sketchData": _sketch(), "width": 512, "height": 384, "style": "pico-8", "useAI": False}
    resp = await client.post("/api/pixel-generation/generate", json=body)
    assert resp.status == 200, await resp.text()
    done = await _editor_done(client, "bands")
    assert done["status"] == "completed", done
    assert sizes and max(sizes) < 512 * 384  # never the whole result in one call
    image = Image.open(io.BytesIO(base64.b64decode(done["resultDataUrl"].split(",", 1)[1])))
    monkeypatch.setattr(Image.Image, "getcolors", real)
    assert done["metadata"]["colors"] == _counted_at_once(image.convert("RGB"))


@pytest.fixture
def make_editor(aiohttp_client, comfy_double, tmp_path):
    from bridge.app import create_app
    from bridge.config import load_settings

    async def make(**overrides: str):
        settings = load_settings({"data_dir": tmp_path / "data", "comfyui_urls": [comfy_double.url]},
                                 overrides=overrides, env_file=None)
        client = await aiohttp_client(create_app(settings, adapter_names=["pixart_editor"]))
        await wait_healthy(client)
        return client

    return make


def _sketch() -> str:
    img = Image.new("RGB", (64, 48), "white")
    img.paste((200, 30, 30), (8, 8, 40, 30))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


async def _editor_done(client: Any, cid: str) -> dict[str, Any]:
    for _ in range(400):
        body = await (await client.get(f"/api/pixel-generation/status/{cid}")).json()
        if body["status"] in ("completed", "failed"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{cid} did not finish")


async def test_openapi_is_built_in_a_thread_once_for_callers_that_come_meanwhile(bridge_factory, monkeypatch):
    """Every model's JSON Schema made on the loop held it 0.1 s with the shipped workflows (0.9 s with a hundred
    large ones). The document is the same text, answered with the same headers."""
    from bridge import app as app_module

    threads = Threads()
    built: list[dict[str, Any]] = []
    real = app_module.build_spec

    def build(*args: Any, **kwargs: Any) -> dict[str, Any]:
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(app_module, "build_spec", threads.wrap(build))
    client = await bridge_factory(adapters=["jobs_api", "a1111"])
    answers = await asyncio.gather(*(client.get("/openapi.json") for _ in range(3)))
    assert len(built) == 1 and threads.seen[0] != threading.get_ident()
    texts = [await a.read() for a in answers]
    assert texts == [json.dumps(built[0]).encode()] * 3
    assert {a.headers["Content-Type"] for a in answers} == {"application/json; charset=utf-8"}
    assert (await client.get("/openapi.json")).status == 200 and len(built) == 1  # kept
    assert (await client.post("/workflows/reload")).status == 200
    assert await (await client.get("/openapi.json")).read() == json.dumps(built[-1]).encode() and len(built) == 2


async def test_a_failed_openapi_build_is_tried_again(bridge_factory, monkeypatch):
    from bridge import app as app_module

    calls: list[int] = []
    real = app_module.build_spec

    def build(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a model that cannot be described")
        return real(*args, **kwargs)

    monkeypatch.setattr(app_module, "build_spec", build)
    client = await bridge_factory(adapters=["jobs_api"])
    assert (await client.get("/openapi.json")).status == 500
    assert (await client.get("/openapi.json")).status == 200 and len(calls) == 2


async def test_a_large_webhook_message_is_written_and_signed_off_the_loop(tmp_path, monkeypatch):
    """A job's value outputs can be megabytes (RGB565 frames): json.dumps, signing and encoding such a message held
    the loop 170 ms at 44 MB. The message is the text json.dumps writes, and its signature verifies."""
    from bridge import webhooks as wh
    from bridge.store import Job, open_store

    loop_thread = threading.get_ident()
    signed, escaped = Threads(), Threads()
    monkeypatch.setattr(Webhook, "sign", signed.wrap(Webhook.sign))
    monkeypatch.setattr(jsontext.Pieces, "escaped", escaped.wrap(jsontext.Pieces.escaped))
    frame = base64.b64encode(np.random.default_rng(0).bytes(3 * image_io.B64_PIECE)).decode()
    sent: list[tuple[bytes, dict[str, str]]] = []

    async def send(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        sent.append((body, headers))
        return 204

    async def describe(job: Job) -> dict[str, Any]:
        return {"id": job.id, "outputs": {"rgb565": [frame]}, "note": "é"}

    store = open_store(str(tmp_path / "jobs.sqlite3"), tmp_path)
    await store.open()
    hooks = wh.Webhooks(store, SECRET, send, describe=describe, everyone=wh.Receiver("http://r.example/hook"))
    try:
        job = Job(id="big", workflow="w", workflow_version=1, params={})
        await store.insert(job, owner="me", lease=30)
        job.status = "completed"
        assert await store.save(job, owner="me", lease=30, deliveries=await hooks.end_messages(job))
        hooks.end_written(job, True)
        await until(lambda: sent, 10, "the message")
    finally:
        await hooks.stop()
        await store.close()
    body, headers = sent[0]
    signed_by_bridge = list(signed.seen)
    payload = Webhook(SECRET).verify(body, headers)  # signs too
    assert payload["data"]["outputs"]["rgb565"] == [frame]
    assert body == json.dumps({"type": "job.completed", "timestamp": payload["timestamp"],
                               "data": await describe(job)}, separators=(",", ":")).encode()
    assert escaped.seen and loop_thread not in escaped.seen
    assert signed_by_bridge and loop_thread not in signed_by_bridge


async def test_a_small_webhook_message_is_written_as_before(tmp_path):
    from bridge import webhooks as wh

    data = {"id": "j", "outputs": {"images": ["https://x.example/1.png"]}, "error": None, "progress": 12.5}
    body = await wh.Webhooks._body("job.progress", data, 1700000000.25)
    assert body == json.dumps({"type": "job.progress", "timestamp": "2023-11-14T22:13:20.250000Z", "data": data},
                              separators=(",", ":"))


async def test_workflows_are_checked_against_object_info_off_the_loop(bridge_factory, monkeypatch):
    """On every reconnect, model refresh (A1111 clients refresh as often as they like) and reload, every workflow
    is checked against the backend's object_info: a hundred large ones held the loop 0.15 s."""
    from bridge import workflows as wfmod

    client = await bridge_factory(adapters=["a1111", "jobs_api"])
    await wait_healthy(client)
    threads = Threads()
    monkeypatch.setattr(wfmod, "check_object_info", threads.wrap(wfmod.check_object_info))
    assert (await client.post("/sdapi/v1/refresh-checkpoints")).status == 200
    refreshed = len(threads.seen)
    assert (await client.post("/workflows/reload")).status == 200
    engine = client.server.app[ENGINE]
    assert refreshed >= len(engine.workflows) and len(threads.seen) >= refreshed + len(engine.workflows)
    assert threading.get_ident() not in threads.seen
    conn = next(iter(engine.connections.values()))
    assert set(conn.workflow_problems) == set(engine.workflows)
    assert conn.can_run("txt2img")


async def test_the_heap_is_settled_and_a_reload_frees_what_it_replaced(bridge_factory):
    """What lives as long as the process is frozen out of the collector's sight (a full collection walked 100,000
    objects, 900,000 with a hundred large workflows); a reload frees the request models it replaced, with the
    collector off while it builds the new ones, and settles the heap again."""
    from bridge import server

    client = await bridge_factory(adapters=["jobs_api"])
    await wait_healthy(client)
    engine = client.server.app[ENGINE]
    models = [weakref.ref(wf.request_model) for wf in engine.workflows.values()]
    collections: list[int] = []

    def counted(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 2:
            collections.append(1)

    try:
        server.settle_heap()
        assert gc.get_freeze_count() > 0
        gc.callbacks.append(counted)
        assert (await client.post("/workflows/reload")).status == 200
        gc.callbacks.remove(counted)
        assert gc.isenabled() and gc.get_freeze_count() > 0
        assert collections == [1]  # the one that frees what the reload replaced
        assert not [m for m in models if m() is not None]
    finally:
        if counted in gc.callbacks:
            gc.callbacks.remove(counted)
        gc.unfreeze()
        gc.enable()
