"""Is the bridge still answering while it decodes large images? Measured in one run, before and after.

Eight clients keep posting 4096x4096 sketches (a few strokes on white, ~50 kB each, the probe's case) to the Pixart
editor API, while a ninth client polls GET /health and GET /api/pixel-generation/status/{id}. Reported: p50, p99
and the worst latency of those polls, with the image work

- on the event loop: `bridge.images.run_in_pool` replaced by a direct call, which is what the bridge did before the
  request-layer rework (the reference), and
- in the bounded image pool (the bridge as shipped).

The bridge runs in this process (a background thread), over the ComfyUI protocol double in a process of its own
(as ComfyUI is: its work must not share the bridge's interpreter lock); the posting clients are processes too. Usage: .venv/bin/python bench/bench_responsiveness.py [--seconds 8] [--clients 8]
Goal: /health under 100 ms at worst while images decode.
"""
from __future__ import annotations

import argparse
import base64
import io
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import requests  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from bridge import images as image_io  # noqa: E402
from tests.support.live_bridge import live_bridge  # noqa: E402


def sketch(side: int = 4096) -> str:
    img = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(img)
    for i in range(12):
        draw.line([(i * 300, 0), (side - i * 200, side)], fill=(i * 20, 40, 200 - i * 10), width=9)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def poll(url: str, mode: str, stop_at: float, out: Any) -> None:
    """The ninth client: /health and a status every 20 ms until `stop_at`; puts the latencies (ms) and when."""
    session = requests.Session()
    lat: dict[str, list[float]] = {"health": [], "status": [], "health_at": [], "status_at": []}
    while time.time() < stop_at:
        for name, path in (("health", "/health"), ("status", f"/api/pixel-generation/status/{mode}-probe")):
            t0 = time.perf_counter()
            r = session.get(url + path, timeout=60)
            lat[name].append((time.perf_counter() - t0) * 1000)
            lat[name + "_at"].append(stop_at - time.time())
            assert r.status_code == 200, r.text
        time.sleep(0.02)
    out.put(lat)


def load(url: str, mode: str, n: int, data: str, stop_at: float, posted: Any) -> None:
    """One posting client (in a process of its own): sketches until `stop_at`; puts how many it sent."""
    session = requests.Session()
    count = 0
    while time.time() < stop_at:
        count += 1
        session.post(url + "/api/pixel-generation/generate", timeout=120, json={
            "id": f"{mode}-{n}-{count}", "sketchData": data, "width": 16, "height": 16, "style": "pico-8"})
    posted.put(count)


async def _inline(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def measure(mode: str, seconds: float, clients: int, data: str, comfyui: str) -> dict[str, list[float]]:
    original = image_io.run_in_pool
    if mode == "loop":
        image_io.run_in_pool = _inline  # type: ignore[assignment]
    try:
        with live_bridge(Path(tempfile.mkdtemp()), adapters=["pixart_editor"], max_queue=100_000,
                         max_body_mb=64, comfyui_url=comfyui) as url:
            session = requests.Session()
            first = session.post(url + "/api/pixel-generation/generate", timeout=60, json={
                "id": f"{mode}-probe", "sketchData": data, "width": 16, "height": 16, "style": "pico-8"})
            assert first.status_code == 200, first.text
            stop_at = time.time() + seconds
            posted: Any = multiprocessing.Queue()
            # The posting clients are processes: threads here would share this process's GIL with the bridge, and
            # encoding their large bodies would stall its loop in their place.
            workers = [multiprocessing.Process(target=load, args=(url, mode, i, data, stop_at, posted))
                       for i in range(clients)]
            for w in workers:
                w.start()
            time.sleep(0.3)  # let the decodes start
            # The poller is a process too: its own wait for this process's interpreter lock is not the server's.
            polled: Any = multiprocessing.Queue()
            poller = multiprocessing.Process(target=poll, args=(url, mode, stop_at, polled))
            poller.start()
            lat = polled.get()
            poller.join()
            for w in workers:
                w.join()
            lat["posted"] = [float(sum(posted.get() for _ in workers))]
            return lat
    finally:
        image_io.run_in_pool = original  # type: ignore[assignment]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    data = sketch()
    print(f"sketch: 4096x4096, {len(data) * 3 // 4 // 1024} kB; {args.clients} clients posting for "
          f"{args.seconds:g} s per mode; the poller asks every 20 ms")
    from bench.bench_replicas import run_double
    from bridge.comfyui_process import find_free_port

    port = find_free_port()
    double = multiprocessing.Process(target=run_double, args=(port, 0.0), daemon=True)
    double.start()
    time.sleep(2)
    try:
        results = {mode: measure(mode, args.seconds, args.clients, data, f"http://127.0.0.1:{port}")
                   for mode in ("loop", "pool")}
    finally:
        double.terminate()
    print(f"\n{'image work':<22}{'route':<8}{'polls':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  posted")
    for mode, label in (("loop", "on the loop (before)"), ("pool", "in the pool (after)")):
        lat = results[mode]
        for route in ("health", "status"):
            v = lat[route]
            print(f"{label:<22}{route:<8}{len(v):>6}{statistics.median(v):>9.1f}{pct(v, 0.99):>9.1f}{max(v):>9.1f}"
                  f"  {int(lat['posted'][0])}")
    for route in ("health", "status"):
        after = results["pool"][route]
        top = sorted(range(len(after)), key=after.__getitem__)[-3:]
        print(f"{route}: the worst polls in the pool, seconds before the end: "
              + ", ".join(f"{after[i]:.0f} ms at {results['pool'][route + '_at'][i]:.2f} s" for i in top))
    for route in ("health", "status"):
        before, after = results["loop"][route], results["pool"][route]
        print(f"{route}: worst {max(before):.0f} -> {max(after):.0f} ms ({max(before) / max(after):.1f}x less)")


if __name__ == "__main__":
    main()
