"""Hostile clients, over the ComfyUI protocol double: each hole of the probe stays closed.

Refused images are never decoded; decoding never runs on the event loop; a decompression bomb is a 413 in every image
field of every dialect; deep JSON is a 400/422; wrong keys are rate-limited and locked out; a synchronous request
whose client goes away cancels its jobs; slow headers and slow bodies are cut off and connections capped; a request
asking for too much work is refused; a prompt removed from ComfyUI's queue behind the bridge's back does not wedge
its job; a client holds only so many event streams; OPTIONS tells nothing without a key; served images carry no
graph; an unknown job's 404 repeats only the start of its id."""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import gzip
import io
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

import psutil
import pytest
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request
from PIL import Image

from bridge import api, server
from bridge import images as image_io
from bridge.adapters import ENABLED
from bridge.app import ENGINE, create_app
from bridge.config import load_settings
from bridge.comfyui_process import find_free_port
from tests.support.imaging import claimed_png, solid_png_b64
from tests.support.waiting import until

pytestmark = pytest.mark.asyncio

BOMB = base64.b64encode(claimed_png(60000, 60000)).decode()


def black_png_b64(side: int) -> str:
    out = io.BytesIO()
    Image.new("L", (side, side), 0).save(out, format="PNG", compress_level=9)
    return base64.b64encode(out.getvalue()).decode()


@pytest.fixture
def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every decode of image pixels, with the thread it ran on."""
    seen: list[str] = []
    original = image_io.open_image

    def counted(*args: Any, **kwargs: Any) -> Any:
        seen.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(image_io, "open_image", counted)
    return seen


# ------------------------------------------------------------------------------------------- 1. refused images
async def test_refused_images_are_never_decoded(bridge_factory: Any, count_decodes: list[str]) -> None:
    client = await bridge_factory(adapters=["a1111"])
    big = black_png_b64(4096)  # 16.7 MP each, 48 MiB decoded, 16 kB on the wire
    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    before = proc.memory_info().rss
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        # 20 images with batch_size 1: refused on the count. With batch_size 20: refused on their pixels together.
        first = await client.post("/sdapi/v1/img2img", json={"init_images": [big] * 20})
        second = await client.post("/sdapi/v1/img2img", json={"init_images": [big] * 20, "batch_size": 20})
    finally:
        stop.set()
        sampler.join()
    assert first.status == 400 and "bad number of images" in (await first.json())["errors"]
    body = await second.json()
    assert second.status == 413 and body["errors"].startswith("init_images") and "BRIDGE_MAX_REQUEST_PIXELS" in \
        body["errors"]
    assert count_decodes == []  # not one pixel decoded
    grown = (peak[0] - before) / 2**20
    assert grown < 200, f"RSS grew {grown:.0f} MiB for a refused 20-image body"  # was 1,350 MiB


async def test_a_batch_of_extras_that_will_be_refused_is_never_decoded(bridge_factory: Any,
                                                                      count_decodes: list[str]) -> None:
    client = await bridge_factory(adapters=["a1111"])
    big = black_png_b64(4096)
    proc = psutil.Process()
    before = proc.memory_info().rss
    resp = await client.post("/sdapi/v1/extra-batch-images", json={
        "imageList": [{"data": big, "name": f"{i}.png"} for i in range(40)], "upscaler_1": "Lanczos"})
    body = await resp.json()
    assert resp.status == 413 and body["errors"].startswith("imageList[2]"), body  # the third passes the budget
    assert "BRIDGE_MAX_REQUEST_PIXELS" in body["errors"]
    assert count_decodes == []
    assert (proc.memory_info().rss - before) / 2**20 < 200  # was 677 MiB for 40 such images


@pytest.mark.parametrize("adapter,path,body,images", [
    ("pixart_editor", "/api/pixel-generation/generate", {"id": "once", "sketchData": solid_png_b64(32, 32),
                                                         "width": 8, "height": 8}, 1),
    ("jobs_api", "/generate/img2img", {"prompt": "x", "initImage": solid_png_b64(64, 64), "steps": 1}, 1),
    ("jobs_api", "/generate/inpaint", {"prompt": "x", "image": solid_png_b64(64, 64), "mask": solid_png_b64(64, 64),
                                       "steps": 1}, 2),
    ("a1111", "/sdapi/v1/img2img", {"init_images": [solid_png_b64(64, 64)], "steps": 1, "width": 64,
                                    "height": 64}, 1),
])
async def test_an_accepted_image_is_decoded_once(bridge_factory: Any, count_decodes: list[str], adapter: str,
                                                 path: str, body: dict[str, Any], images: int) -> None:
    client = await bridge_factory(adapters=[adapter])
    resp = await client.post(path, json=body)
    assert resp.status in (200, 202), await resp.text()
    # the adapter looks at the image once and hands the engine the decoded picture; nothing decodes it again
    assert len(count_decodes) == images, count_decodes


# ------------------------------------------------------------------------------------------- 2. off the loop
async def test_decoding_runs_off_the_event_loop_and_health_answers_meanwhile(
        bridge_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client = await bridge_factory(adapters=["pixart_editor"])
    gate = threading.Event()
    running = []
    threads = []
    lock = threading.Lock()
    original = image_io.open_image

    def held(*args: Any, **kwargs: Any) -> Any:
        with lock:
            running.append(1)
            threads.append(threading.current_thread())
        try:
            gate.wait(20)  # a decode that takes as long as the test wants
            return original(*args, **kwargs)
        finally:
            with lock:
                running.pop()

    monkeypatch.setattr(image_io, "open_image", held)
    sketch = "data:image/png;base64," + black_png_b64(4096)  # 16.7 MP: about half a second each to decode
    posts = [asyncio.ensure_future(client.post("/api/pixel-generation/generate", json={
        "id": f"sketch-{i}", "sketchData": sketch, "width": 8, "height": 8, "style": "pico-8"})) for i in range(8)]
    for _ in range(200):
        if running:
            break
        await asyncio.sleep(0.01)
    assert running, "no decode started"
    # The loop is free while eight decodes wait: /health answers (it would hang if a decode held the loop).
    health = await asyncio.wait_for(client.get("/health"), 5)
    assert health.status == 200 and running
    assert len(running) <= image_io.POOL_SIZE  # the pool bounds how many images are held decoded at once
    gate.set()
    answers = await asyncio.gather(*posts)
    assert [a.status for a in answers] == [200] * 8
    main = threading.main_thread()
    assert threads and all(t is not main for t in threads)


# ------------------------------------------------------------------------------------------- 3. bombs
BOMB_CASES = [
    ("jobs_api", "/generate/img2img", {"prompt": "x", "initImage": BOMB}, "initImage"),
    ("jobs_api", "/generate/inpaint", {"prompt": "x", "image": solid_png_b64(64, 64), "mask": BOMB}, "mask"),
    ("jobs_api", "/generate/inpaint", {"prompt": "x", "image": BOMB, "mask": solid_png_b64(64, 64)}, "image"),
    ("jobs_api", "/generate/style-transfer", {"contentImage": BOMB, "styleImage": solid_png_b64(64, 64)},
     "contentImage"),
    ("jobs_api", "/generate/style-transfer", {"contentImage": solid_png_b64(64, 64), "styleImage": BOMB},
     "styleImage"),
    ("jobs_api", "/workflows/img2img", {"parameters": {"image": BOMB}}, "image"),
    ("pixart_editor", "/api/pixel-generation/generate", {"id": "b", "sketchData": BOMB, "width": 8, "height": 8},
     "sketchData"),
    ("a1111", "/sdapi/v1/img2img", {"init_images": [BOMB]}, "init_images[0]"),
    ("a1111", "/sdapi/v1/img2img", {"init_images": [solid_png_b64(64, 64)], "mask": BOMB}, "mask"),
    ("unified", "/generate", {"prompt": "x", "init_image": BOMB}, "init_image"),
    ("unified", "/generate", {"prompt": "x", "init_images": [BOMB]}, "init_image"),
    ("a1111", "/sdapi/v1/extra-single-image", {"image": BOMB}, "image"),
    ("a1111", "/sdapi/v1/extra-batch-images", {"imageList": [{"data": BOMB, "name": "a.png"}]}, "imageList[0]"),
    ("a1111", "/sdapi/v1/png-info", {"image": BOMB}, "image"),
] + [("jobs_api", f"/workflows/{name}", {"parameters": {**others, field: BOMB}}, field) for name, field, others in (
    ("inpaint", "mask", {"image": solid_png_b64(64, 64)}), ("pixel_art", "sketch", {}),
    ("pixel_art_ai", "sketch", {}), ("axera_img2img", "image", {}))]


@pytest.mark.parametrize("adapter,path,body,field", BOMB_CASES)
async def test_a_decompression_bomb_is_413_in_every_image_field(bridge_factory: Any, adapter: str, path: str,
                                                                 body: dict[str, Any], field: str) -> None:
    client = await bridge_factory(adapters=[adapter], UNIFIED_BACKEND="sd15")
    resp = await client.post(path, json=body)
    text = await resp.text()
    assert resp.status == 413, text
    assert field in text and "60000x60000" in text  # refused on the size its header claims


# ------------------------------------------------------------------------------------------- 4. deep JSON
async def test_deep_json_is_refused_on_every_post_route(bridge_factory: Any) -> None:
    client = await bridge_factory(adapters=list(ENABLED))
    spec = await (await client.get("/openapi.json")).json()
    deep = "[" * 100_000 + "]" * 100_000
    long_number = '{"width": 1' + "0" * 5000 + "}"
    # each item of a list may fail validation on its own: 200,000 errors took 3 s to word, a 35 MB answer
    many = json.dumps({"prompt": [1] * 20_001, "outputs": [1] * 10, "parameters": {"k": [1]}})
    # Every POST that reads a body (one per workflow among them); the others ignore whatever is sent.
    routes = [p for p, ops in spec["paths"].items() if "requestBody" in ops.get("post", {}) and "{" not in p]
    assert len(routes) > 15
    for path in routes:
        for body in (deep, long_number, '{"steps": NaN}', many):
            resp = await client.post(path, data=body, headers={"Content-Type": "application/json"})
            text = await resp.text()
            assert resp.status in (400, 422), (path, body[:20], resp.status, text[:300])
            assert "body" in text, (path, text[:300])
        assert "nested more than 64 levels" in (await (await client.post(
            path, data=deep, headers={"Content-Type": "application/json"})).text())
        assert "more than 20000 values" in (await (await client.post(
            path, data=many, headers={"Content-Type": "application/json"})).text())


async def test_a_large_body_of_many_values_is_refused_before_it_is_parsed(bridge_factory: Any,
                                                                          monkeypatch: Any) -> None:
    parsed: list[int] = []
    loads = json.loads
    monkeypatch.setattr(api.json, "loads", lambda raw, **kw: (parsed.append(len(raw)), loads(raw, **kw))[1])
    empties = "[" + "[]," * 1_000_000 + "[]]"  # 3 MB; in 32 MB, 9-10 s of the event loop and 760 MB to build
    escapes = '{"prompt": "' + "\\n" * 1_000_000 + '"}'
    image = json.dumps({"init_images": ["data:image/png;base64," + "A" * 3_000_000], "prompt": "a, b, c\n"})
    for body, needle in ((empties, "more than 80000 commas"), (escapes, "more than 80000 escaped characters")):
        with pytest.raises(api.BodyError, match=needle):
            api.parse_json(body.encode())
    assert parsed == []
    got = api.parse_json(image.encode())
    assert len(parsed) == 1 and parsed[0] < 200  # the image was cut out before json.loads saw the body
    assert got == loads(image)
    client = await bridge_factory(adapters=["a1111"])
    resp = await client.post("/sdapi/v1/txt2img", data=empties, headers={"Content-Type": "application/json"})
    assert resp.status == 422 and "80000 commas" in await resp.text()


@pytest.mark.parametrize("seed", range(4))
async def test_long_strings_cut_out_before_parsing_give_what_json_loads_gives(monkeypatch: Any, seed: int) -> None:
    # Long string values are decoded a piece at a time apart from the rest (json.loads held the loop 40 ms for one
    # 21 MB image); the same values, or the same error in the same words, as parsing the whole body.
    import random

    monkeypatch.setattr(api, "LIFT_CHARS", 8)
    monkeypatch.setattr(api, "PRECOUNT_BYTES", 0)
    monkeypatch.setattr(image_io, "B64_PIECE", 3)  # pieces split multi-byte characters
    rng = random.Random(seed)
    odd = ['"', "\\", '\\"', ":", ",", " ", "\n", "\x01", "\u00e9", "\u2028", "}", "]", "\ud83c"]

    def value(depth: int = 0) -> Any:
        r = rng.random()
        if depth > 3 or r < 0.4:
            return "".join(rng.choice("abcXYZ019+/= \u00e9\u2028") for _ in range(rng.randrange(30)))
        if r < 0.6:
            return rng.choice([1, 2.5, None, True])
        if r < 0.8:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {"k" * rng.randrange(1, 15) + str(i): value(depth + 1) for i in range(rng.randrange(4))}

    def parsed(raw: bytes, lift: int) -> tuple[str, Any]:
        monkeypatch.setattr(api, "LIFT_CHARS", lift)
        try:
            return "ok", api.parse_json(raw)
        except api.BodyError as exc:
            return "error", exc.message

    outcomes = set()
    for _ in range(2000):
        raw = bytearray(json.dumps(value(), ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1])).encode())
        for _ in range(rng.randrange(3) if rng.random() < 0.5 else 0):
            at = rng.randrange(len(raw) + 1)
            raw[at:at] = rng.choice(odd).encode("utf-8", "surrogatepass")
        got = parsed(bytes(raw), 8)
        assert got == parsed(bytes(raw), 1 << 62), bytes(raw)
        outcomes.add(got[0])
    assert outcomes == {"ok", "error"}


LONG = "x" * 2_000_000
LONG_TEXT_CASES = [
    ("jobs_api", "/generate/text2img", {"prompt": "x", "sampler": LONG}, "sampler"),
    ("jobs_api", "/generate/text2img", {"prompt": LONG}, "prompt"),
    ("jobs_api", "/workflows/txt2img", {"parameters": {"sampler": LONG}}, "sampler"),
    ("pixart_editor", "/api/pixel-generation/generate", {"id": "l", "sketchData": solid_png_b64(8, 8), "width": 8,
                                                         "height": 8, "colorPalette": [LONG]}, "colorPalette"),
    ("unified", "/generate", {"prompt": "x", "negative_prompt": LONG}, "negative_prompt"),
    ("aleaart", "/generate-image", {"prompt": "x", "sampler": LONG}, "sampler"),
]


@pytest.mark.parametrize("adapter,path,body,field", LONG_TEXT_CASES)
async def test_a_string_too_long_is_400_naming_the_field(bridge_factory: Any, comfy_double: Any, adapter: str,
                                                         path: str, body: dict[str, Any], field: str) -> None:
    client = await bridge_factory(adapters=[adapter], UNIFIED_BACKEND="sd15")
    before = len(comfy_double.prompts)
    resp = await client.post(path, json=body)
    text = await resp.text()
    assert resp.status == 400, text[:300]
    assert field in text and len(text) < 5000  # named, and the value is not echoed back
    assert len(comfy_double.prompts) == before


@pytest.mark.parametrize("field", ["sampler_name", "prompt", "styles"])
async def test_a1111_refuses_a_string_too_long_as_a1111_refuses_bad_values(bridge_factory: Any, comfy_double: Any,
                                                                          field: str) -> None:
    client = await bridge_factory(adapters=["a1111"])
    value: Any = [LONG] if field == "styles" else LONG
    resp = await client.post("/sdapi/v1/txt2img", json={"steps": 1, field: value})
    data = await resp.json()
    assert resp.status == 422 and data["detail"][0]["loc"][:2] == ["body", field], str(data)[:300]
    assert comfy_double.prompts == []  # (A1111's 422 echoes the body, as FastAPI's does; it is bounded by the limit)


@pytest.mark.parametrize("path, body, field", [
    ("/sdapi/v1/extra-single-image", {"image": "", "upscaler_1": LONG}, "upscaler_1"),
    ("/sdapi/v1/extra-batch-images", {"imageList": [{"data": "", "name": LONG}]}, "name"),
    ("/sdapi/v1/interrogate", {"image": "", "model": LONG}, "model"),
])
async def test_a1111_extras_refuse_a_string_too_long(bridge_factory: Any, path: str, body: dict[str, Any],
                                                     field: str) -> None:
    # their models took strings of any length, and the extras echoed an unknown upscaler's whole name: a 19 MB
    # body made a 114 MB answer
    client = await bridge_factory(adapters=["a1111"])
    resp = await client.post(path, json=body)
    text = await resp.text()
    assert resp.status == 422 and field in json.loads(text)["detail"][0]["loc"], text[:300]
    assert len(text) < len(LONG)  # FastAPI's 422 echoes the value, once, as A1111's does


async def test_a1111_names_a_dict_key_too_long_as_a_string(bridge_factory: Any, comfy_double: Any) -> None:
    # A dict key is a string in FastAPI's loc even when it is all digits: int() of this one (10,001 digits, over
    # the text limit) raised, a 500. Its first 80 characters only (FastAPI repeats it whole, in loc and msg: a
    # body of one long key made an answer twice its size).
    client = await bridge_factory(adapters=["a1111"])
    key = "7" * 10_001
    resp = await client.post("/sdapi/v1/txt2img", json={"steps": 1, "alwayson_scripts": {key: {"args": []}}})
    data = await resp.json()
    assert resp.status == 422, str(data)[:300]
    assert data["detail"][0]["loc"][:3] == ["body", "alwayson_scripts", key[:80] + "…"], str(data)[:300]
    assert comfy_double.prompts == []


# ------------------------------------------------------------------------------------------- 5. wrong keys
async def test_wrong_keys_are_rate_limited_by_address_and_locked_out(bridge_factory: Any) -> None:
    client = await bridge_factory(api_keys=["right"], rate_limit=1.0, rate_burst=5, auth_max_failures=0)
    statuses = [(await client.get("/workflows", headers={"X-API-Key": f"guess{i}"})).status for i in range(20)]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}  # refused keys are counted
    # The right key has its own budget: the address's flood does not starve it.
    assert (await client.get("/workflows", headers={"X-API-Key": "right"})).status == 404

    locked = await bridge_factory(api_keys=["right"], auth_max_failures=3, auth_lockout=60)
    assert [(await locked.get("/events", headers={"X-API-Key": "no"})).status for _ in range(3)] == [401] * 3
    resp = await locked.get("/events", headers={"X-API-Key": "right"})
    body = await resp.json()
    assert resp.status == 429 and body["error"] == "auth_locked_out" and int(resp.headers["Retry-After"]) > 0


async def test_behind_a_trusted_proxy_clients_are_known_by_their_forwarded_address(bridge_factory: Any) -> None:
    def by(addr: str) -> dict[str, str]:
        # what nginx sends: the client's claim, then the address it saw
        return {"X-Forwarded-For": f"203.0.113.250, {addr}"}

    proxied = await bridge_factory(rate_limit=1.0, rate_burst=2, trusted_proxies=["127.0.0.0/8"])
    first = [(await proxied.get("/workflows", headers=by("198.51.100.1"))).status for _ in range(3)]
    other = [(await proxied.get("/workflows", headers=by("198.51.100.2"))).status for _ in range(2)]
    assert first == [404, 404, 429] and other == [404, 404]  # each client its own bucket, not the proxy's
    # Not behind a trusted proxy: the header is the client's own say, and ignored.
    direct = await bridge_factory(rate_limit=1.0, rate_burst=2)
    statuses = [(await direct.get("/workflows", headers=by(f"198.51.100.{i}"))).status for i in range(3)]
    assert statuses == [404, 404, 429]


# ------------------------------------------------------------------------------------------- 6. disconnects
SYNC_ROUTES = [
    ("a1111", "/sdapi/v1/txt2img", {"steps": 40, "width": 64, "height": 64}),
    ("pico", "/pico/sdapi/v1/txt2img", {"steps": 40, "width": 64, "height": 64, "seed": 3}),
    ("unified", "/generate", {"prompt": "x", "steps": 40, "width": 64, "height": 64}),
    ("aleaart", "/generate-image", {"prompt": "x", "steps": 40, "width": 64, "height": 64}),
]


@pytest.mark.parametrize("adapter,path,body", SYNC_ROUTES)
async def test_a_synchronous_request_whose_client_leaves_cancels_its_job(bridge_factory: Any, comfy_double: Any,
                                                                         adapter: str, path: str,
                                                                         body: dict[str, Any]) -> None:
    comfy_double.step_delay = 0.25  # 40 steps: 10 s of "sampling"
    client = await bridge_factory(adapters=[adapter], UNIFIED_BACKEND="sd15", PICO_CACHE="false")
    engine = client.app[ENGINE]
    request = asyncio.ensure_future(client.post(path, json=body))
    for _ in range(400):
        running = await engine.list(status="running")
        if running:
            break
        await asyncio.sleep(0.02)
    assert running, "the job never started"
    job_id = running[0].id
    request.cancel()  # the client goes away: its connection closes
    with pytest.raises(asyncio.CancelledError):
        await request
    done = await engine.wait(job_id, timeout=10)
    assert done.status == "cancelled"
    assert running[0].prompt_id in comfy_double.interrupts


async def test_a_setting_keeps_jobs_of_clients_that_left(bridge_factory: Any, comfy_double: Any) -> None:
    comfy_double.step_delay = 0.02
    client = await bridge_factory(adapters=["a1111"], keep_jobs_on_disconnect=True)
    engine = client.app[ENGINE]
    request = asyncio.ensure_future(client.post("/sdapi/v1/txt2img", json={"steps": 40, "width": 64,
                                                                            "height": 64}))
    for _ in range(400):
        if await engine.list(status="running"):
            break
        await asyncio.sleep(0.01)
    job = (await engine.list(status="running"))[0]
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert (await engine.wait(job.id, timeout=20)).status == "completed"


# ------------------------------------------------------------------------------------------- 7. slow clients
def _settings(tmp_path: Path, url: str, **fields: Any) -> Any:
    return load_settings({"data_dir": tmp_path / "d", "comfyui_urls": [url], **fields}, env_file=None)


async def _serve(tmp_path: Path, url: str, **fields: Any) -> tuple[Any, Any, int]:
    port = find_free_port()
    runner, listener = await server.start(create_app(_settings(tmp_path, url, **fields), adapter_names=["jobs_api"]),
                                          _settings(tmp_path, url, **fields), host="127.0.0.1", port=port)
    return runner, listener, port


async def _stop(runner: Any, listener: Any) -> None:
    listener.close()
    await runner.cleanup()


def _read_answer(sock: socket.socket) -> bytes:
    """What the server sent on `sock` up to the end of its answer (by its Content-Length) or of the connection,
    whichever comes first (aiohttp drains an unread body up to 10 s before it closes). 60 s without a byte: a
    fail-safe far beyond any answer here, not a bound the test measures."""
    sock.settimeout(60)
    answer = b""
    try:
        while not _whole(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return answer


def _whole(answer: bytes) -> bool:
    head, blank, body = answer.partition(b"\r\n\r\n")
    lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    return bool(blank) and bool(lengths) and len(body) >= int(lengths[0])


def _get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return sock.recv(64)


async def test_slow_headers_are_cut_off(tmp_path: Path, comfy_double: Any) -> None:
    runner, listener, port = await _serve(tmp_path, comfy_double.url, header_timeout=0.5)
    try:
        def slowloris() -> int:
            """How many bytes of a header this client sent before the server hung up (None: it never did)."""
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sent = 0
                try:
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    # One byte every 0.1 s for up to 60 s: within aiohttp's limits on a header (16 KiB, 128 lines)
                    # and short of AppRunner's own keep-alive (3630 s), so only the header timeout can end it.
                    for sent in range(600):
                        time.sleep(0.1)
                        sock.sendall(b"a")
                except OSError:
                    return sent
            return None

        # Many at once, as an attack comes: every one is cut off, none is left holding the server.
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
            results = await asyncio.gather(*(loop.run_in_executor(pool, slowloris) for _ in range(50)))
        # No clock: a machine that pauses (CI once stood still 17 s) stretches any time measured. That the cut comes
        # from BRIDGE_HEADER_TIMEOUT, and not from a default, is what the server's connections say they use.
        assert all(sent is not None for sent in results), results
        with socket.create_connection(("127.0.0.1", port)):
            for _ in range(500):
                if runner.server.connections:
                    break
                await asyncio.sleep(0.01)
            assert [c.keepalive_timeout for c in runner.server.connections] == [0.5]
        assert (await asyncio.to_thread(_get, port, "/health")).startswith(b"HTTP/1.1 200")
    finally:
        await _stop(runner, listener)


async def test_slow_bodies_get_408_and_connections_are_capped(tmp_path: Path, comfy_double: Any) -> None:
    runner, listener, port = await _serve(tmp_path, comfy_double.url, body_timeout=0.5, max_connections=3)
    try:
        def trickle() -> bytes:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"POST /generate/text2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 200\r\n\r\n{\"prompt\": ")
                return _read_answer(sock)

        answer = await asyncio.to_thread(trickle)
        assert answer.startswith(b"HTTP/1.1 408") and b"BRIDGE_BODY_TIMEOUT" in answer

        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            # at the cap (the 408's connection counts too: aiohttp waits up to 10 s for the rest of its body)
            await until(lambda: len(runner.server.connections) >= 3, timeout=60, what="the cap reached")

            def one_more() -> bytes:
                with socket.create_connection(("127.0.0.1", port)) as extra:
                    return _read_answer(extra)

            refused = await asyncio.to_thread(one_more)
        finally:
            for sock in held:
                sock.close()
        assert refused.startswith(b"HTTP/1.1 503") and b"BRIDGE_MAX_CONNECTIONS" in refused
    finally:
        await _stop(runner, listener)


def _exchange(port: int, *parts: bytes) -> tuple[int, dict[str, Any] | None]:
    """Send `parts` (a pause between them) on one connection; the answer's status and JSON body (0, None: none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        for i, part in enumerate(parts):
            if i:
                time.sleep(0.3)  # the parser has the first part before the next arrives
            sock.sendall(part)
        answer = _read_answer(sock)
    if not answer:
        return 0, None
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), answer[:300]
    return int(head.split()[1]), json.loads(body)


_POST = b"POST /generate/text2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize("request_bytes, status, field", [
    (b"GET /health?" + b"a" * (server.MAX_URL + 1) + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "url"),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * (server.MAX_HEADER + 1) + b"\r\n\r\n", 431, "headers"),
    (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n", 431,
     "headers"),
    (_POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, "headers"),
    (_POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400, "body"),
    (b"G@T /health HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request line"),
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400, "request line"),  # TLS on the plain port
], ids=["long-url", "long-header", "many-headers", "two-lengths", "bad-chunk", "bad-method", "tls"])
async def test_requests_the_http_parser_refuses_get_the_json_error(tmp_path: Path, comfy_double: Any,
                                                                  request_bytes: bytes, status: int,
                                                                  field: str) -> None:
    runner, listener, port = await _serve(tmp_path, comfy_double.url)
    try:
        got, body = await asyncio.to_thread(_exchange, port, request_bytes)
        assert got == status and body is not None and body["field"] == field and body["message"], body
        assert (await asyncio.to_thread(_get, port, "/health")).startswith(b"HTTP/1.1 200")
    finally:
        await _stop(runner, listener)


@pytest.mark.parametrize("header", [b"X-API-Key: \xff\xfe", b"Authorization: Bearer \xffright"])
async def test_a_key_that_is_not_utf8_is_a_wrong_key(tmp_path: Path, comfy_double: Any, header: bytes) -> None:
    # aiohttp reads such bytes as lone surrogates: encoding them raised before the error middleware, a plain-text
    # 500 that neither the rate limit nor the lock-out counted
    runner, listener, port = await _serve(tmp_path, comfy_double.url, api_keys=["right"])
    try:
        got, body = await asyncio.to_thread(_exchange, port, b"GET /jobs HTTP/1.1\r\nHost: x\r\n" + header +
                                            b"\r\nConnection: close\r\n\r\n")
        assert got == 401 and body is not None and body["error"] == "invalid_api_key", body
        got, body = await asyncio.to_thread(_exchange, port, b"GET /jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: right"
                                                             b"\r\nConnection: close\r\n\r\n")
        assert got == 200, body
    finally:
        await _stop(runner, listener)


async def test_compressed_bodies_are_refused_without_being_inflated(tmp_path: Path, comfy_double: Any,
                                                                    monkeypatch: Any) -> None:
    from aiohttp import compression_utils

    inflated: list[int] = []
    real = compression_utils.ZLibDecompressor.decompress_sync

    def counted(self: Any, data: bytes, max_length: int = 0) -> bytes:
        inflated.append(len(data))
        return real(self, data, max_length)

    monkeypatch.setattr(compression_utils.ZLibDecompressor, "decompress_sync", counted)
    bomb = gzip.compress(b" " * (64 << 20), 9)  # 64 MiB of spaces in 64 KiB
    runner, listener, port = await _serve(tmp_path, comfy_double.url)
    try:
        for encoding, body in (("gzip", bomb), ("br", b"\x0b\x00\x80{}\x03")):
            got, answer = await asyncio.to_thread(
                _exchange, port, _POST + b"Content-Encoding: %s\r\nContent-Length: %d\r\n\r\n" % (
                    encoding.encode(), len(body)) + body)
            assert got == 415 and answer is not None and answer["field"] == "body", answer
            assert repr(encoding) in answer["message"]
            # the refused body is drained as sent: aiohttp's parser inflated the bomb while it arrived (1.2 s of
            # the event loop for a 400 KB one) before `auto_decompress` was turned off, and refused br in plain text
            assert inflated == []
    finally:
        await _stop(runner, listener)


@pytest.mark.parametrize("broken", [web.RequestPayloadError("Not enough data to satisfy content length header."),
                                    ConnectionResetError("Connection lost")])
async def test_a_body_broken_midway_is_the_clients_error_not_the_servers(broken: Exception) -> None:
    # aiohttp's payload error (a body short of its length, a broken chunk) or a dropped connection while the
    # body is read: once a 500 and a traceback in the log
    payload = StreamReader(mock.Mock(_reading_paused=False), 2 ** 16, loop=asyncio.get_running_loop())
    payload.set_exception(broken)
    with pytest.raises(api.BodyError) as refused:
        await api.read_body(make_mocked_request("POST", "/generate/text2img", payload=payload,
                                                  app=web.Application()))
    assert refused.value.status == 400 and "could not be read" in refused.value.message


async def test_a_chunk_broken_after_the_handler_began_is_answered_by_the_body_timeout(
        tmp_path: Path, comfy_double: Any, caplog: Any) -> None:
    # aiohttp's parser leaves such a body waiting (no error reaches the handler): the body timeout ends it. (Should
    # a pause of the machine bring both parts in one read, the parser refuses the chunk at once: 400.)
    runner, listener, port = await _serve(tmp_path, comfy_double.url, body_timeout=1)
    try:
        with caplog.at_level("INFO"):
            got, answer = await asyncio.to_thread(_exchange, port, _POST + b"Transfer-Encoding: chunked\r\n\r\n"
                                                  b"2\r\n{\"\r\n", b"zz\r\nab\r\n0\r\n\r\n")
        assert got in (408, 400) and answer is not None and answer["field"] == "body", answer
        assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    finally:
        await _stop(runner, listener)


# ------------------------------------------------------------------------------------------- 8. cost and quota
async def test_a_request_asking_for_too_much_work_is_refused_naming_the_fields(bridge_factory: Any,
                                                                              comfy_double: Any) -> None:
    client = await bridge_factory(adapters=["a1111", "jobs_api"], max_request_cost=64 * 64 * 10 * 4)
    before = len(comfy_double.prompts)
    resp = await client.post("/sdapi/v1/txt2img", json={})  # A1111's defaults: 512 x 512, 50 steps
    body = await resp.json()
    assert resp.status == 400 and body["errors"].startswith("width") and "BRIDGE_MAX_REQUEST_COST" in body["errors"]
    assert "width x height x steps x batch_size = 13,107,200" in body["errors"]
    resp = await client.post("/sdapi/v1/txt2img", json={"width": 64, "height": 64, "steps": 10, "n_iter": 5})
    body = await resp.json()
    assert resp.status == 400 and "x jobs = 204,800" in body["errors"]  # five affordable images add up
    resp = await client.post("/generate/text2img", json={"prompt": "x", "width": 512, "height": 512})
    assert resp.status == 400 and (await resp.json())["field"] == "width"
    assert len(comfy_double.prompts) == before
    ok = await client.post("/sdapi/v1/txt2img", json={"width": 64, "height": 64, "steps": 10, "n_iter": 4})
    assert ok.status == 200


@pytest.mark.parametrize("workflow, params, field, shown", [
    # overlapping tiles: 64-pixel tiles overlapping by 32 cut an 8192x8192 upscale into 65,025 tiles, and the cost,
    # the upscaled size alone, was 1.95e9 (56, which cut a million, is refused by the manifest's checks)
    ("sd_upscale", {"width": 64, "height": 64, "overlap": 32, "upscaler": "nearest", "upscale_width": 8192,
                    "upscale_height": 8192, "steps": 29}, "upscale_width", "= 7,723,929,600 for"),
    # the first pass counts too: it was left out, a 2048x2048 batch of 16 at 150 steps cost 64x64x1
    ("txt2img_hires", {"width": 2048, "height": 2048, "batch_size": 16, "steps": 150, "hr_width": 64,
                       "hr_height": 64, "hr_steps": 1}, "width", "the cost of width, height, steps, hr_width"),
])
async def test_a_manifests_cost_formula_counts_what_its_product_missed(bridge_factory: Any, comfy_double: Any,
                                                                      workflow: str, params: dict[str, Any],
                                                                      field: str, shown: str) -> None:
    client = await bridge_factory(adapters=["jobs_api"])
    if workflow == "sd_upscale":
        params = {"image": solid_png_b64(64, 64), **params}
    resp = await client.post(f"/workflows/{workflow}", json={"parameters": params})
    body = await resp.json()
    assert resp.status == 400 and body.get("field") == field and "BRIDGE_MAX_REQUEST_COST" in str(body), body
    assert shown in str(body), body
    assert comfy_double.prompts == []
    if workflow == "sd_upscale":  # A1111's own use: 512-pixel tiles overlapping by 64 on a 2x upscale
        ok = {"image": solid_png_b64(64, 64), "width": 512, "height": 512, "overlap": 64, "upscale_width": 1024,
              "upscale_height": 1024, "steps": 20}
        assert (await client.post(f"/workflows/{workflow}", json={"parameters": ok})).status == 202


async def test_a_cost_formula_counts_the_tiles_of_the_picture_sent(bridge_factory: Any, comfy_double: Any) -> None:
    # `upscaler: none` tiles the image as sent, and the cost read upscale_width (default 1024): a 4096x4096 picture in
    # 64-pixel tiles overlapping by 32 (16,129 tiles, each sampled 40 steps) cost as 961 tiles, 1.6e8, and was queued
    client = await bridge_factory(adapters=["jobs_api"])
    params = {"image": solid_png_b64(4096, 4096), "width": 64, "height": 64, "overlap": 32, "upscaler": "none",
              "steps": 40}
    resp = await client.post("/workflows/sd_upscale", json={"parameters": params})
    body = await resp.json()
    assert resp.status == 400 and body.get("field") == "upscale_width", body
    assert "image.width" in body["error"] and "= 2,642,575,360 for" in body["error"], body
    assert comfy_double.prompts == []
    # A1111's own tiles on that picture: 81 of 512x512, 4.2e8
    ok = {**params, "width": 512, "height": 512, "overlap": 64, "steps": 20}
    assert (await client.post("/workflows/sd_upscale", json={"parameters": ok})).status == 202


@pytest.mark.parametrize("workflow, params, field, shown", [
    # each was accepted, then failed in ComfyUI naming a node's input (or, the overlap, cut a million tiles)
    ("sd_upscale", {"image": solid_png_b64(64, 64), "width": 64, "height": 512, "overlap": 40}, "overlap",
     "at most half the tile's width"),
    ("pixel_art", {"sketch": solid_png_b64(8, 8), "width": 600, "work_width": 512}, "width",
     "pixelating only shrinks: at most work_width (width <= work_width; here width = 600, work_width = 512)"),
    ("pixel_art_ai", {"prompt": "x", "sketch": solid_png_b64(8, 8), "height": 4096}, "height",
     "at most gen_height"),
])
async def test_a_manifests_checks_refuse_what_the_nodes_would(bridge_factory: Any, comfy_double: Any, workflow: str,
                                                              params: dict[str, Any], field: str, shown: str) -> None:
    client = await bridge_factory(adapters=["jobs_api"])
    resp = await client.post(f"/workflows/{workflow}", json={"parameters": params})
    body = await resp.json()
    assert resp.status == 400 and body.get("field") == field and shown in str(body), body
    assert comfy_double.prompts == []


async def test_a_client_may_hold_only_so_many_jobs(bridge_factory: Any, comfy_double: Any) -> None:
    comfy_double.step_delay = 0.2
    client = await bridge_factory(adapters=["jobs_api"], max_jobs_per_client=2)
    body = {"prompt": "x", "width": 64, "height": 64, "steps": 20}
    assert [(await client.post("/generate/text2img", json=body)).status for _ in range(2)] == [202, 202]
    resp = await client.post("/generate/text2img", json=body)
    assert resp.status == 429 and "BRIDGE_MAX_JOBS_PER_CLIENT" in (await resp.json())["error"]
    assert int(resp.headers["Retry-After"]) >= 1
    # a made-up key is no new identity: without configured keys the address is the client
    made_up = await client.post("/generate/text2img", json=body, headers={"X-API-Key": "fresh-1"})
    assert made_up.status == 429


async def test_each_valid_key_has_its_own_quota(bridge_factory: Any, comfy_double: Any) -> None:
    comfy_double.step_delay = 0.2
    client = await bridge_factory(adapters=["jobs_api"], max_jobs_per_client=1, api_keys=["alice", "bob"])
    body = {"prompt": "x", "width": 64, "height": 64, "steps": 20}
    post = lambda key: client.post("/generate/text2img", json=body, headers={"X-API-Key": key})  # noqa: E731
    assert (await post("alice")).status == 202
    assert (await post("alice")).status == 429
    assert (await post("bob")).status == 202


async def test_a_client_may_hold_only_so_many_event_streams(bridge_factory: Any) -> None:
    # each stream relays every step of every job: 200 from one address held the loop 0.4 s (10 ms without) and made
    # a 1-second job take 8 to 14 s
    client = await bridge_factory()  # the default bound
    held = []
    try:
        while len(held) < 50 and (resp := await client.get("/events")).status == 200:
            held.append(resp)
        assert resp.status == 429, f"{len(held)} event streams from one client, all accepted"
        body = await resp.json()
        assert body["error"] == "too_many_streams" and "BRIDGE_MAX_STREAMS_PER_CLIENT" in body["message"]
        assert int(resp.headers["Retry-After"]) >= 1
        # a made-up key is no new identity: without configured keys the address is the client
        assert (await client.get("/events", headers={"X-API-Key": "fresh-1"})).status == 429
    finally:
        for resp in held:
            resp.close()

    keyed = await bridge_factory(max_streams_per_client=1, api_keys=["alice", "bob"])
    get = lambda key: keyed.get("/events", headers={"X-API-Key": key})  # noqa: E731
    alice, bob = await get("alice"), await get("bob")
    assert [alice.status, (await get("alice")).status, bob.status] == [200, 429, 200]
    alice.close()
    bob.close()


async def test_a_closed_stream_gives_its_place_back() -> None:
    from bridge.errors import TooManyStreams
    from bridge.events import EventStreams

    streams = EventStreams(max_per_client=2)
    first, _ = streams.open("addr:a"), streams.open("addr:a")
    with pytest.raises(TooManyStreams):
        streams.open("addr:a")
    streams.open("addr:b")  # another client's own
    streams.close(first)
    streams.open("addr:a")
    with pytest.raises(TooManyStreams):
        streams.open("addr:a")
    unbounded = EventStreams(max_per_client=0)
    for _ in range(50):
        unbounded.open("addr:a")
    assert len(unbounded) == 50


# ------------------------------------------------------------------------------------------- 10. queue cleared
async def test_a_prompt_cleared_from_comfyuis_queue_is_resubmitted_once_then_failed(bridge_factory: Any,
                                                                                   comfy_double: Any) -> None:
    comfy_double.step_delay = 0.2
    client = await bridge_factory(adapters=["a1111"], queue_poll_interval=0.2)
    engine = client.app[ENGINE]
    # 30 s: long enough that both clears happen while it runs, however loaded the machine is (cancelled at the end)
    blocker = await engine.submit("txt2img", {"steps": 150, "width": 64, "height": 64})
    victim = await engine.submit("txt2img", {"steps": 2, "width": 64, "height": 64})

    async def pending_at_comfyui(pid: str) -> None:
        # The bridge names a prompt, writes the job (on PostgreSQL a round trip) and only then posts it: a clear
        # before the post reaches ComfyUI would find nothing to remove, so the test waits for ComfyUI to hold it.
        for _ in range(200):
            async with client.session.get(comfy_double.url + "/queue") as resp:
                if any(item[1] == pid for item in (await resp.json())["queue_pending"]):
                    return
            await asyncio.sleep(0.05)
        raise AssertionError(f"prompt {pid} never reached ComfyUI's queue")

    for _ in range(200):
        if victim.prompt_id:
            break
        await asyncio.sleep(0.05)
    assert victim.status == "queued" and victim.prompt_id
    first = victim.prompt_id
    await pending_at_comfyui(first)
    async with client.session.post(comfy_double.url + "/queue", json={"clear": True}) as resp:
        assert resp.status == 200
    # Someone cleared ComfyUI's queue in its own page: the bridge notices and submits again, once.
    for _ in range(200):
        if victim.prompt_id and victim.prompt_id != first:
            break
        await asyncio.sleep(0.05)
    assert victim.prompt_id != first and victim.reruns and "removed from" in victim.reruns[0]["reason"]
    await pending_at_comfyui(victim.prompt_id)
    async with client.session.post(comfy_double.url + "/queue", json={"clear": True}) as resp:
        assert resp.status == 200
    done = await engine.wait(victim.id, timeout=20)
    assert done.status == "failed" and "outside the bridge (twice)" in done.error
    assert blocker.status == "running"  # both clears happened while it ran
    assert await engine.cancel(blocker.id)
    assert (await engine.wait(blocker.id, timeout=20)).status == "cancelled"
    progress = await (await client.get("/sdapi/v1/progress")).json()
    assert progress["state"]["job_count"] == 0  # nothing left that looks busy to webuiapi's wait_for_ready


async def test_a_reconnect_finds_a_prompt_cleared_while_the_websocket_was_down(bridge_factory: Any,
                                                                               comfy_double: Any) -> None:
    comfy_double.step_delay = 0.05
    # The queue timer is far off: only the look every reconnect takes can notice.
    client = await bridge_factory(adapters=["jobs_api"], queue_poll_interval=600)
    engine = client.app[ENGINE]
    blocker = await engine.submit("txt2img", {"steps": 40, "width": 64, "height": 64})
    victim = await engine.submit("txt2img", {"steps": 2, "width": 64, "height": 64})
    # On a loaded machine `submit` can return before the dispatch posts the prompt: wait until ComfyUI holds it
    # (bounded), or the clear below would find nothing to clear.
    await until(lambda: victim.prompt_id and any(item[2] == victim.prompt_id for item in comfy_double.pending), 10,
                "ComfyUI to hold the victim's prompt")
    first = victim.prompt_id
    assert victim.status == "queued" and first
    # The websocket drops, and while it is down the queue is cleared (ComfyUI announces nothing to anyone).
    comfy_double.pending.clear()
    for ws in list(comfy_double.sockets.values()):
        await ws.close()
    done = await engine.wait(victim.id, timeout=20)
    assert done.status == "completed" and done.prompt_id != first
    assert done.reruns and done.reruns[0]["prompt_id"] == first and "removed from" in done.reruns[0]["reason"]
    assert (await engine.wait(blocker.id, timeout=20)).status == "completed"


async def test_queued_jobs_have_a_deadline(bridge_factory: Any, comfy_double: Any) -> None:
    comfy_double.step_delay = 0.1
    client = await bridge_factory(queue_timeout=1.0)
    engine = client.app[ENGINE]
    blocker = await engine.submit("txt2img", {"steps": 100, "width": 64, "height": 64})
    waiting = await engine.submit("txt2img", {"steps": 2, "width": 64, "height": 64})
    # Submitting returns before the dispatch posts the prompt (a loaded machine takes a while): its id is read once
    # ComfyUI holds it, so the deadline below ends a job that is in ComfyUI's queue.
    for _ in range(100):
        if any(item[2] == waiting.prompt_id for item in comfy_double.pending):
            break
        await asyncio.sleep(0.01)
    prompt_id = waiting.prompt_id
    assert prompt_id and any(item[2] == prompt_id for item in comfy_double.pending)
    done = await engine.wait(waiting.id, timeout=10)
    assert done.status == "failed" and "BRIDGE_QUEUE_TIMEOUT" in done.error
    for _ in range(100):  # and it is taken out of ComfyUI's queue
        if prompt_id in comfy_double.deleted:
            break
        await asyncio.sleep(0.02)
    assert prompt_id in comfy_double.deleted
    await engine.cancel(blocker.id)


# ------------------------------------------------------------------------------------------- 11. smaller
async def test_options_without_a_key_reveals_nothing(bridge_factory: Any) -> None:
    client = await bridge_factory(adapters=["jobs_api"], api_keys=["right"])
    resp = await client.options("/generate/text2img")
    assert resp.status == 401 and "Allow" not in resp.headers


async def test_served_images_carry_no_graph(bridge_factory: Any, comfy_double: Any) -> None:
    client = await bridge_factory(adapters=["aleaart"])
    resp = await client.post("/generate-image", json={"prompt": "x", "steps": 2, "width": 64, "height": 64})
    data = await resp.json()
    assert resp.status == 200, data
    png = await (await client.get(data["imageUrl"])).read()
    with Image.open(io.BytesIO(png)) as im:
        assert "prompt" not in im.info and "workflow" not in im.info
        # what A1111 would have written, by default: the prompt and the settings that made the picture
        assert im.info["parameters"].startswith("x\nSteps: 2, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: ")
        assert "Size: 64x64" in im.info["parameters"]
    # One bridge at a time: on PostgreSQL bridges alive together are replicas of one another, each with its own data
    # folder and metadata setting, and on a busy machine (a CI run) one let its job go to another and answered
    # without imageUrl.
    await client.close()
    none = await bridge_factory(adapters=["aleaart"], output_metadata="none")
    resp = await none.post("/generate-image", json={"prompt": "x", "steps": 2, "width": 64, "height": 64})
    data = await resp.json()
    assert resp.status == 200, data
    with Image.open(io.BytesIO(await (await none.get(data["imageUrl"])).read())) as im:
        assert not {"prompt", "workflow", "parameters"} & set(im.info)
    await none.close()
    keep = await bridge_factory(adapters=["aleaart"], output_metadata="comfyui")
    resp = await keep.post("/generate-image", json={"prompt": "x", "steps": 2, "width": 64, "height": 64})
    data = await resp.json()
    assert resp.status == 200, data
    with Image.open(io.BytesIO(await (await keep.get(data["imageUrl"])).read())) as im:
        assert "prompt" in im.info  # what ComfyUI wrote, when the operator asks for it


async def test_generate_refuses_init_images_that_are_not_a_list_of_images(bridge_factory: Any) -> None:
    client = await bridge_factory(adapters=["unified"], UNIFIED_BACKEND="sd15")
    for bad in (5, "abc", [5], []):
        resp = await client.post("/generate", json={"prompt": "x", "init_images": bad})
        body = await resp.json()
        assert resp.status == 400 and body["field"].startswith("init_images"), body


async def test_an_error_shows_only_the_start_of_a_wrong_value() -> None:
    # every route words its 422s with fields.describe: before bodies held at most 20,000 values, the repr of a
    # 12-million-item list took 0.7 s on the loop
    from bridge.fields import describe

    enum = {"type": "enum", "ctx": {"expected": "'a' or 'b'"}}
    assert describe({**enum, "input": list(range(1_000_000))}, "sampler") == \
        "sampler must be one of 'a' or 'b', got [0, 1, 2, 3, ...]"
    assert describe({**enum, "input": "x" * 1_000_000}, "sampler") == \
        f"sampler must be one of 'a' or 'b', got '{'x' * 40}…'"
    assert describe({**enum, "input": "short"}, "sampler") == "sampler must be one of 'a' or 'b', got 'short'"
    # a number too: 1e308 read as a whole number (an integer field takes a float without a fraction) is 309 digits
    at_most = {"type": "less_than_equal", "ctx": {"le": 100}}
    assert describe({**at_most, "input": int(1e308)}, "jpeg_quality") == "jpeg_quality must be at most 100, got 1e+308"
    assert describe({**at_most, "input": 101.0}, "jpeg_quality") == "jpeg_quality must be at most 100, got 101"
    assert describe({**at_most, "input": 10**400}, "x") == "x must be at most 100, got 1e+400"
    assert describe({**at_most, "input": 1e23}, "x") == "x must be at most 100, got 1e+23"
    assert describe({**at_most, "input": 2**64}, "seed") == "seed must be at most 100, got 18446744073709551616"


async def test_an_unknown_field_is_named_by_the_start_of_its_name(bridge_factory: Any) -> None:
    # a made-up key of 200,000 characters came back twice, in `field` and in the message (a 400 KB answer)
    client = await bridge_factory(adapters=["jobs_api"])
    resp = await client.post("/workflows/pixel_art", json={"parameters": {"x" * 200_000: 1}})
    body = await resp.json()
    assert resp.status == 400 and body["field"] == "parameters." + "x" * 80 + "….[key]", body["field"][:200]
    assert len(await resp.read()) < 1000, body


async def test_an_unknown_job_is_named_by_the_start_of_its_id(bridge_factory: Any) -> None:
    # the 404 repeated the whole id, as long as the URL (32 KiB), and named `job_id` where the path says `id`
    client = await bridge_factory(adapters=["jobs_api"])
    for method, path in [("DELETE", "/jobs/{id}"), ("GET", "/jobs/{id}/webhooks"), ("GET", "/jobs/{id}/preview"),
                         ("GET", "/jobs/{id}/outputs/images/0"),
                         ("GET", "/jobs/{id}/files/answer_0123456789abcdef.png")]:
        resp = await client.request(method, path.format(id="a" * 8000))
        assert resp.status == 404 and await resp.json() == {
            "error": "job_not_found", "message": f"job '{'a' * 80}…' does not exist", "field": "id"}, path
        resp = await client.request(method, path.format(id="a" * 80))
        assert (await resp.json())["message"] == f"job '{'a' * 80}' does not exist"


async def test_an_unknown_output_is_named_by_the_start_of_its_name(bridge_factory: Any, comfy_double: Any) -> None:
    # `/jobs/{id}/outputs/{name}/{index}` of a job that exists repeated the whole name, as long as the URL (8 KB)
    client = await bridge_factory(adapters=["unified"], UNIFIED_BACKEND="sd15")
    resp = await client.post("/generate", json={"prompt": "x", "width": 64, "height": 64, "steps": 1})
    job_id = (await resp.json())["job_ids"][0]
    resp = await client.get(f"/jobs/{job_id}/outputs/{'n' * 6000}/0")
    body = await resp.json()
    assert resp.status == 400 and body["field"] == "output" and f"'{'n' * 80}…'" in body["message"], str(body)[:300]
    assert len(await resp.read()) < 1000


async def test_an_unknown_workflow_is_named_by_the_start_of_its_name(bridge_factory: Any) -> None:
    # the 404 repeated the whole name, as long as the URL let it be (8 KB)
    client = await bridge_factory(adapters=["jobs_api"])
    for method in ("GET", "POST"):
        resp = await client.request(method, "/workflows/" + "w" * 8000, json={})
        assert resp.status == 404 and await resp.json() == {
            "error": f"workflow '{'w' * 80}…' does not exist", "field": "workflow"}, method
    resp = await client.get("/workflows/" + "w" * 80)
    assert (await resp.json())["error"] == f"workflow '{'w' * 80}' does not exist"


async def test_names_checked_by_pattern_refuse_a_last_newline(bridge_factory: Any, tmp_path: Path) -> None:
    # `$` also matches before a string's last newline: "x\n" passed `^...$`.match checks meant to be exact, and the
    # local store refused the key further on (a 500)
    from bridge.storage.local import LocalBlobs
    from bridge.store.model import check_id

    with pytest.raises(ValueError):
        check_id("abc\n")
    with pytest.raises(ValueError):
        LocalBlobs(tmp_path).path("inputs/abc\n/sketch.png")
    client = await bridge_factory(adapters=["aleaart"])
    resp = await client.get("/generated_images/a.png%0A")
    assert resp.status == 404 and await resp.json() == {"error": "Image not found"}


async def test_an_unknown_option_is_named_by_the_start_of_its_key(bridge_factory: Any) -> None:
    # the key came back whole, as its repr, in `detail` and in `errors`: 5 MB of \x7f made a 50 MB answer
    client = await bridge_factory(adapters=["a1111"])
    raw = json.dumps({"\x7f" * 1_000_000: 1}, ensure_ascii=False).encode()
    resp = await client.post("/sdapi/v1/options", data=raw, headers={"Content-Type": "application/json"})
    shown = repr("\x7f" * 80 + "…")
    assert resp.status == 400 and await resp.json() == {
        "error": "KeyError", "detail": f"unknown option {shown}", "body": "", "errors": shown}
    assert len(await resp.read()) < 1000
    resp = await client.post("/sdapi/v1/options", json={"no_such_option": 1})
    assert resp.status == 400 and (await resp.json())["errors"] == "'no_such_option'"


@pytest.mark.parametrize("encoding", ["gzip, identity", "identity,gzip", "gzip;q=1", "deflate,br", "compress"])
async def test_any_coding_but_identity_in_content_encoding_is_refused(bridge_factory: Any, encoding: str) -> None:
    # the whole header was looked up as one name: a list got past the 415 and the compressed body was answered
    # "not UTF-8" (400) or 422, and `compress` (which nobody inflates) was read as JSON
    client = await bridge_factory(adapters=["a1111", "jobs_api"])
    plain = json.dumps({"parameters": {"prompt": "x"}}).encode()
    body = plain if encoding == "compress" else gzip.compress(plain)
    for path in ("/workflows/txt2img", "/sdapi/v1/txt2img"):
        resp = await client.post(path, data=body, headers={"Content-Type": "application/json",
                                                           "Content-Encoding": encoding})
        err = await resp.json()
        assert resp.status == 415 and err["field"] == "body" and repr(encoding) in err["message"], err
    assert await client.server.app[ENGINE].list() == []
    from multidict import CIMultiDict

    twice = CIMultiDict([("Content-Type", "application/json"), ("Content-Encoding", "identity"),
                         ("Content-Encoding", "gzip")])
    assert (await client.post("/workflows/txt2img", data=gzip.compress(plain), headers=twice)).status == 415
    ok = await client.post("/workflows/txt2img", data=plain, headers={"Content-Type": "application/json",
                                                                      "Content-Encoding": "identity, Identity"})
    assert ok.status == 202, await ok.text()


async def test_an_unknown_key_inside_a_parameter_is_named_where_it_is(bridge_factory: Any) -> None:
    # any extra key was taken for an unknown parameter: "unknown parameter 'loras' ... known: ..., loras, ..."
    client = await bridge_factory(adapters=["jobs_api"])
    resp = await client.post("/workflows/txt2img", json={"parameters": {"loras": [{"name": "a", "zzz": 1}]}})
    assert resp.status == 400 and await resp.json() == {
        "error": "loras[0].zzz: Extra inputs are not permitted", "field": "loras[0].zzz"}
    resp = await client.post("/workflows/txt2img", json={"parameters": {"zzz": 1}})
    body = await resp.json()
    assert resp.status == 400 and body["field"] == "zzz" and body["error"].startswith("unknown parameter 'zzz'")
    # a made-up name of a megabyte is named by its start (the jobs API's check shortened it before the workflow's;
    # the workflow's own, which every adapter's parameters go through, echoed it whole, twice)
    from bridge.errors import InvalidParameter
    from bridge.workflows.loader import load_workflow

    with pytest.raises(InvalidParameter) as caught:
        load_workflow(Path(__file__).parents[1] / "workflows" / "txt2img.manifest.json").coerce({"k" * 1_000_000: 1})
    assert len(caught.value.message) < 2000 and caught.value.field == "k" * 80 + "…"


async def test_a1111_names_a_list_item_as_the_client_wrote_it(bridge_factory: Any) -> None:
    # pydantic's tag "list[constrained-str]" was kept: loc ["body", "prompt", "list", "constrained-str", 1]
    client = await bridge_factory(adapters=["a1111"])
    resp = await client.post("/sdapi/v1/txt2img", json={"prompt": ["ok", 1]})
    body = await resp.json()
    assert resp.status == 422 and [d["loc"] for d in body["detail"]] == [["body", "prompt"], ["body", "prompt", 1]]
    assert body["errors"] == "prompt: str type expected; prompt[1]: str type expected"


async def test_a_number_too_large_for_an_integer_is_refused_by_its_limit(bridge_factory: Any) -> None:
    # pydantic reads no float past 2^63 into an int and says "Unable to parse input string as an integer, exceeded
    # maximum size"; A1111's answer named the field twice ("width: width: Unable to parse ...")
    client = await bridge_factory(adapters=["a1111", "jobs_api"])
    for field, value, errors in [
            ("width", 1e308, "width: ensure this value is less than or equal to 2048"),
            ("width", -1e308, "width: ensure this value is greater than or equal to 64"),
            ("steps", 1e20, "steps: ensure this value is less than or equal to 150"),
            ("seed", -1e308, "seed: ensure this value is greater than or equal to -1")]:
        resp = await client.post("/sdapi/v1/txt2img", json={field: value})
        body = await resp.json()
        assert resp.status == 422 and body["errors"] == errors, body
        assert body["detail"][0]["loc"] == ["body", field] and body["detail"][0]["msg"] == errors.split(": ", 1)[1]
    # a seed without a limit of A1111's own is read, as pydantic v1 reads it, and refused by what the workflow takes
    resp = await client.post("/sdapi/v1/txt2img", json={"seed": 1e308})
    assert resp.status == 400 and (await resp.json())["errors"] == \
        f"seed must be between 0 and {2**64 - 1}, got 1e+308"
    resp = await client.post("/workflows/txt2img", json={"parameters": {"width": 1e308}})
    assert resp.status == 400 and await resp.json() == {
        "error": "width must be between 64 and 2048, got 1e+308", "field": "width"}


@pytest.mark.parametrize("url", ["ftp://x", "http://"])
async def test_a_short_webhook_url_is_refused_as_not_http(bridge_factory: Any, url: str) -> None:
    # a URL under 8 characters was answered "webhook.url must not be empty"
    client = await bridge_factory(adapters=["jobs_api"])
    resp = await client.post("/workflows/txt2img", json={"parameters": {"prompt": "x"}, "webhook": url})
    assert resp.status == 400 and await resp.json() == {
        "error": f"webhook.url must match the pattern ^https?://[^\\s]+$, got {url!r}", "field": "webhook.url"}
    resp = await client.post("/workflows/txt2img", json={"parameters": {"prompt": "x"}, "webhook": ""})
    assert resp.status == 400 and await resp.json() == {"error": "webhook.url must not be empty",
                                                        "field": "webhook.url"}


async def test_hr_scale_0_is_refused_as_a_negative_scale_is(bridge_factory: Any) -> None:
    # `hr_scale or 2.0` ran 0 at twice the size; A1111 computes a 0-pixel target
    client = await bridge_factory(adapters=["a1111"])
    small = {"prompt": "x", "steps": 1, "width": 64, "height": 64, "enable_hr": True}
    for scale, size in ((0, "0x0"), (-1, "-64x-64")):
        resp = await client.post("/sdapi/v1/txt2img", json={**small, "hr_scale": scale})
        body = await resp.json()
        assert resp.status == 400 and body["errors"].startswith(f"hr_scale: the hires size would be {size};"), body
    for given in ({}, {"hr_scale": None}):  # absent or null: A1111's default, 2
        resp = await client.post("/sdapi/v1/txt2img", json={**small, **given})
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        assert json.loads(data["info"])["extra_generation_params"]["Hires upscale"] == 2.0
        with Image.open(io.BytesIO(base64.b64decode(data["images"][0]))) as im:
            assert im.size == (128, 128)
