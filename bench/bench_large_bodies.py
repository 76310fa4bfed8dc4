"""Is the bridge still answering while large bodies come in and large images go out? Measured in one run, before
and after.

Two clients keep posting a 2300x2300 noise PNG (16 MB, 21 MB of base64) to A1111's /sdapi/v1/extra-single-image
with no upscaler (the image is checked, decoded, re-encoded with its infotext and sent back, no ComfyUI job), while
a third polls GET /health every 20 ms. Reported: p50, p99 and worst latency of the polls and the images served,
with the base64 work

- in one call per image, as the bridge did before (the reference, patched in here): `b64decode` of the whole text
  in the image pool, `b64encode` of the whole answer image and one `json.dumps` of the answer; binascii and json
  hold the interpreter lock for a whole call, so a thread of the pool stalls the event loop as much as the loop
  itself would; and
- as shipped: decoded and encoded 1 MiB at a time (`images.B64_PIECE`), the image's text cut out of the body before
  json.loads (`api._lift`), the answer written piece by piece (`http.json_answer`), the event loop turning between
  pieces.

Pillow's PNG decode and encode let go of the lock (measured: under 4 ms without it while a 16 MB PNG is encoded).
The bridge runs in this process (a background thread), the clients in processes of their own.

Also reported, in this process: the memory to make one answer (tracemalloc); how long the Pixart editor's body
digest held the loop with the same image as its sketch (one json.dumps and sha256 on the loop before,
`jsontext.digest` in a thread after); an A1111 answer echoing a long text (one json.dumps before, `jsontext` pieces
after); and hostile bodies of 32 MiB (the default body limit) parsed as `read_json` parses them, in a thread: how
long the loop was held and the memory taken before the body was refused, without (reference, `api.PRECOUNT_BYTES`
raised out of reach) and with the commas and backslashes counted first. Last, compressed bodies: a client posting
a gzip of 400 MB of spaces (400 KB sent) to the live bridge, which refuses it (415) before reading it, while a
second client polls GET /health every 20 ms: the worst poll with aiohttp's parser inflating the body as it drains
it (the reference: `auto_decompress` on, as aiohttp has it) and as shipped (off).
Usage: .venv/bin/python bench/bench_large_bodies.py [--seconds 10] [--clients 2]
Goal: /health under 100 ms at worst while images pass; a hostile body refused within 50 ms of the loop.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import io
import json
import multiprocessing
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import requests  # noqa: E402
from aiohttp import web  # noqa: E402
from PIL import Image  # noqa: E402

from bench.bench_responsiveness import pct  # noqa: E402
from bridge import images as image_io  # noqa: E402
from bridge.adapters.a1111 import extras  # noqa: E402
from tests.support.live_bridge import live_bridge  # noqa: E402

ROUTE = "/sdapi/v1/extra-single-image"


def noise_png(side: int) -> str:
    arr = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG", compress_level=1)
    return base64.b64encode(out.getvalue()).decode()


def _whole_decode(text: str) -> bytes:
    """The decode before: one regex over the text, one strict b64decode of it all."""
    text = re.sub(r"\s+", "", text)
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, altchars=b"-_" if ("-" in text or "_" in text) else None, validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


async def _whole_answer(body: Any, *, status: int = 200, headers: Any = None) -> web.Response:
    """The answer before: every image encoded whole, the answer in one json.dumps."""
    return web.json_response(body, status=status, headers=headers, dumps=lambda b: json.dumps(b, default=str))


def poll(url: str, stop_at: float, out: Any, told: Any = None) -> None:
    """GET /health every 20 ms until `stop_at` (or until `told` holds a word); the latencies into `out`."""
    session = requests.Session()
    lat: list[float] = []
    while time.time() < stop_at and (told is None or told.empty()):
        t0 = time.perf_counter()
        r = session.get(url + "/health", timeout=60)
        lat.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text
        time.sleep(0.02)
    out.put(lat)


def load(url: str, data: str, stop_at: float, served: Any) -> None:
    session = requests.Session()
    count = 0
    while time.time() < stop_at:
        r = session.post(url + ROUTE, timeout=120, json={"image": data, "upscaler_1": "None"})
        assert r.status_code == 200, r.text[:300]
        assert r.json()["image"][:8] == "iVBORw0K"  # a PNG came back
        count += 1
    served.put(count)


def measure(mode: str, seconds: float, clients: int, data: str) -> dict[str, Any]:
    from bridge import api

    saved = image_io._b64decode, extras.json_answer, api.LIFT_CHARS
    if mode == "whole":
        image_io._b64decode, extras.json_answer = _whole_decode, _whole_answer  # type: ignore[assignment]
        api.LIFT_CHARS = 1 << 62
    try:
        with live_bridge(Path(tempfile.mkdtemp()), adapters=["a1111"], max_body_mb=64) as url:
            stop_at = time.time() + seconds
            served: Any = multiprocessing.Queue()
            workers = [multiprocessing.Process(target=load, args=(url, data, stop_at, served))
                       for _ in range(clients)]
            for w in workers:
                w.start()
            time.sleep(0.3)
            polled: Any = multiprocessing.Queue()
            poller = multiprocessing.Process(target=poll, args=(url, stop_at, polled))
            poller.start()
            lat = polled.get()
            poller.join()
            count = sum(served.get() for _ in workers)
            for w in workers:
                w.join()
            return {"lat": lat, "served": count}
    finally:
        image_io._b64decode, extras.json_answer, api.LIFT_CHARS = saved  # type: ignore[assignment]


def answer_memory(png: bytes) -> tuple[float, float]:
    """Peak MB allocated making one answer's bytes (tracemalloc): whole, and piece by piece as written."""
    import tracemalloc

    from bridge import jsontext

    body = {"html_info": "", "image": image_io.Base64(png)}
    peaks = []
    for way in ("whole", "pieces"):
        tracemalloc.start()
        if way == "whole":
            json.dumps(body, default=str).encode()
        else:
            for _ in jsontext.split(body):  # what json_answer's payload writes
                pass
        peaks.append(tracemalloc.get_traced_memory()[1] / 1e6)
        tracemalloc.stop()
    return peaks[0], peaks[1]


def loop_hold(fn: Any) -> float:
    """The longest ms this thread waited for the interpreter lock (asking every 1 ms) while `fn` ran in another."""
    import threading

    done: list[bool] = []
    def run() -> None:
        try:
            fn()
        finally:
            done.append(True)

    worker = threading.Thread(target=run)
    worker.start()
    worst, last = 0.0, time.perf_counter()
    while not done:
        time.sleep(0.001)
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
    worker.join()
    return worst * 1000


def digest_figures(data: str) -> tuple[float, float]:
    """The Pixart editor's digest of a body carrying the image: ms the loop was held with one json.dumps and
    sha256 on it (before), and at worst with `jsontext.digest` in a thread (after)."""
    import hashlib

    from bridge.jsontext import digest

    body = {"id": "bench", "sketchData": "data:image/png;base64," + data, "width": 64, "height": 64}
    dumps = {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False}
    t0 = time.perf_counter()
    hashlib.sha256(json.dumps(body, **dumps).encode()).hexdigest()
    return (time.perf_counter() - t0) * 1000, loop_hold(lambda: digest(body, **dumps))


def echo_figures() -> tuple[float, float, float]:
    """An A1111 answer echoing `comments` of 16 million "é" (96 MB of JSON): ms on the loop for one json.dumps
    (before), and the longest single step of `jsontext` (the text around, each piece escaped) after; MB of JSON."""
    from bridge import jsontext

    answer = {"images": [], "parameters": {"prompt": "x", "comments": {"note": "\u00e9" * 16_000_000}}, "info": "{}"}
    t0 = time.perf_counter()
    whole = json.dumps(answer).encode()
    before = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    pieces = jsontext.split(answer)
    steps = [time.perf_counter() - t0]
    for _ in pieces:
        steps.append(time.perf_counter() - t0 - sum(steps))
    return before, max(steps) * 1000, len(whole) / 1e6


HOSTILE = {
    "[[],[],...]": b"[" + b"[]," * (32 * 1024 * 1024 // 3) + b"[]]",
    '["","",...]': b"[" + b'"",' * (32 * 1024 * 1024 // 3) + b'""]',
    '"\\n\\n..."': b'["' + b"\\n" * (16 * 1024 * 1024) + b'"]',
}


def hostile_figures() -> list[tuple[str, float, float, float, float]]:
    """(shape, loop ms before, MB before, loop ms after, MB after) for each hostile body, until it is refused (or,
    before, for one string of escapes, parsed)."""
    import tracemalloc

    from bridge import api

    rows = []
    for shape, raw in HOSTILE.items():
        figures = []
        for precount in (1 << 62, api.PRECOUNT_BYTES):
            saved, api.PRECOUNT_BYTES = api.PRECOUNT_BYTES, precount
            tracemalloc.start()
            try:
                held = loop_hold(lambda: _refused(api, raw))
                figures += [held, tracemalloc.get_traced_memory()[1] / 1e6]
            finally:
                tracemalloc.stop()
                api.PRECOUNT_BYTES = saved
        rows.append((shape, *figures))
    return rows


def bomb_figures(posts: int) -> dict[str, tuple[list[float], float]]:
    """Per mode ("inflate": aiohttp's default; "as sent": the bridge's), the /health latencies while `posts` gzip
    bombs are refused one after another, and the median ms to each 415."""
    import gzip
    import socket

    from tests.support import live_bridge as live

    bomb = gzip.compress(b" " * (400 << 20), 9)
    head = (b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb))
    made = live.create_app
    out = {}
    for mode in ("inflate", "as sent"):
        def create_app(*args: Any, **kw: Any) -> web.Application:
            app = made(*args, **kw)
            if mode == "inflate":
                app._handler_args = {"auto_decompress": True}  # what the bridge had before (aiohttp's default)
            return app

        live.create_app = create_app  # type: ignore[assignment]
        try:
            with live.live_bridge(Path(tempfile.mkdtemp()), adapters=["a1111"]) as url:
                port = int(url.rsplit(":", 1)[1])
                told: Any = multiprocessing.Queue()
                polled: Any = multiprocessing.Queue()
                poller = multiprocessing.Process(target=poll, args=(url, time.time() + 600, polled, told))
                poller.start()
                time.sleep(0.5)
                answered = []
                for _ in range(posts):
                    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
                        t0 = time.perf_counter()
                        sock.sendall(head + bomb)
                        first = sock.recv(64)
                        answered.append((time.perf_counter() - t0) * 1000)
                        assert first.startswith(b"HTTP/1.1 415"), first
                    time.sleep(1.5)  # the drain after the answer (when it inflates) lands between posts
                told.put("stop")
                lat = polled.get(timeout=120)
                poller.join()
            out[mode] = (lat, statistics.median(answered))
        finally:
            live.create_app = made  # type: ignore[assignment]
    return out


def _refused(api: Any, raw: bytes) -> None:
    with contextlib.suppress(api.BodyError):  # one long string of escapes passes the value limit: it is parsed
        api.parse_json(raw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--side", type=int, default=2300)
    args = ap.parse_args()
    data = noise_png(args.side)
    print(f"image: {args.side}x{args.side} noise, {len(data) * 3 // 4 / 1e6:.1f} MB PNG, {len(data) / 1e6:.1f} MB "
          f"base64; {args.clients} clients posting for {args.seconds:g} s per mode; /health every 20 ms")
    results = {mode: measure(mode, args.seconds, args.clients, data) for mode in ("whole", "pieces")}
    print(f"\n{'base64 work':<34}{'polls':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'images':>8}")
    for mode, label in (("whole", "one call per image (before)"), ("pieces", "1 MiB pieces (after)")):
        lat = results[mode]["lat"]
        print(f"{label:<34}{len(lat):>6}{statistics.median(lat):>9.1f}{pct(lat, 0.99):>9.1f}{max(lat):>9.1f}"
              f"{results[mode]['served']:>8}")
    whole, pieces = answer_memory(base64.b64decode(data))
    print(f"memory to make one answer: {whole:.1f} MB whole, {pieces:.1f} MB in pieces")
    held, worst = digest_figures(data)
    print(f"Pixart editor body digest: the loop held {held:.0f} ms in one call (before), {worst:.0f} ms at worst "
          f"in pieces in a thread (after)")
    before, after = results["whole"]["lat"], results["pieces"]["lat"]
    print(f"/health worst {max(before):.0f} -> {max(after):.0f} ms ({max(before) / max(after):.1f}x less), "
          f"p99 {pct(before, 0.99):.0f} -> {pct(after, 0.99):.0f} ms")
    before, step, size = echo_figures()
    print(f"A1111 answer echoing 16M 'é' ({size:.0f} MB of JSON): {before:.0f} ms in one json.dumps (before), "
          f"{step:.1f} ms at most per step in pieces (after)")
    print(f"\n{'hostile 32 MiB body':<22}{'loop ms before':>15}{'MB before':>11}{'loop ms after':>15}{'MB after':>10}")
    for shape, held0, mb0, held1, mb1 in hostile_figures():
        print(f"{shape:<22}{held0:>15.0f}{mb0:>11.0f}{held1:>15.0f}{mb1:>10.0f}")
    bombs = bomb_figures(5)
    print(f"\n{'gzip of 400 MB refused (415), 5 posts':<40}{'polls':>6}{'p50 ms':>9}{'max ms':>9}{'415 in ms':>10}")
    for mode, label in (("inflate", "inflated while drained (before)"), ("as sent", "never inflated (after)")):
        lat, answer = bombs[mode]
        print(f"{label:<40}{len(lat):>6}{statistics.median(lat):>9.1f}{max(lat):>9.1f}{answer:>10.1f}")
    before, after = max(bombs["inflate"][0]), max(bombs["as sent"][0])
    print(f"/health worst {before:.0f} -> {after:.0f} ms ({before / after:.0f}x less)")


if __name__ == "__main__":
    main()
