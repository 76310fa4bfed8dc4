"""How long does each piece of heavy work hold the event loop? Measured in one run, before and after.

A probe coroutine sleeps 1 ms at a time on the loop and records how late it wakes while one piece of work runs on
the same loop (as the bridge runs it: on the loop, in a thread or in the image pool). Reported: the worst lateness
(median of --repeat runs) and how long the work took, with the work done

- as the bridge did before (the reference, patched in or written out here), and
- as shipped:

  pico        sixteen 1024x1024 RGB565 frames (2.8 MB of base64 each) decoded: on the loop, before; in the image
              pool (`images.run_small`), after;
  colours     a 4096x4096 editor result's colours counted (`pixart_editor.read_result`, in a thread both times):
              one Pillow getcolors over the whole image, before (it holds the interpreter lock throughout); a band
              of rows at a time, after; a 16-colour result and a 110,000-colour one;
  openapi     /openapi.json made: on the loop, before; in a thread, after (--workflows more large workflows
              loaded beside the shipped ones);
  webhook     a 44 MB webhook message (sixteen 1024x1024 RGB565 frames as a value output) written, signed and
              encoded: on the loop, before; long strings escaped a piece at a time and signed in the image pool,
              after;
  object_info every workflow checked against a backend's object_info (each reconnect, model refresh, reload): on
              the loop, before; in a thread, after;
  gc          a full collection of the garbage collector, which comes whenever enough objects have piled up and
              holds the loop throughout: the heap as started, before; settled at start-up (`server.settle_heap`:
              what lives as long as the process frozen out of the collector's sight), after.

Usage: .venv/bin/python bench/bench_loop_stalls.py [--workflows 100] [--repeat 3] [--only pico colours ...]
Goal: no piece of work holds the loop 50 ms.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from standardwebhooks.webhooks import Webhook  # noqa: E402

from bridge import images as image_io  # noqa: E402
from bridge import server  # noqa: E402
from bridge import workflows as wfmod  # noqa: E402
from bridge.adapters import pixart_editor as pe  # noqa: E402
from bridge.engine.connection import Connection, check_workflows  # noqa: E402
from bridge.webhooks import Webhooks  # noqa: E402

Work = Callable[[], Awaitable[Any]]


async def worst_lag(work: Work) -> tuple[float, float]:
    """(worst lateness of a 1 ms sleep on this loop while `work` runs, how long it ran), in ms."""
    worst, running = 0.0, True

    async def probe() -> None:
        nonlocal worst
        while running:
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - t0 - 0.001)

    task = asyncio.ensure_future(probe())
    await asyncio.sleep(0.01)
    worst = 0.0
    began = time.perf_counter()
    await work()
    took = time.perf_counter() - began
    running = False
    await task
    return worst * 1000, took * 1000


async def measure(work: Work, repeat: int) -> tuple[float, float]:
    runs = [await worst_lag(work) for _ in range(repeat)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


# ------------------------------------------------------------------------------------------------ the cases
def pico_case() -> tuple[str, Work, Work]:
    rng = np.random.default_rng(0)
    texts = [base64.b64encode(rng.bytes(1024 * 1024 * 2)).decode() for _ in range(16)]

    async def before() -> None:
        for text in texts:
            base64.b64decode(text)

    async def after() -> None:
        for text in texts:
            await image_io.run_small(lambda t=text: base64.b64decode(t), len(text))

    return "pico: 16 RGB565 frames of 1024x1024", before, after


def _colours_at_once(rgb: Image.Image) -> list[str]:
    counted = rgb.getcolors(maxcolors=rgb.width * rgb.height) or []
    counted.sort(key=lambda c: (-c[0], c[1]))
    return [f"#{r:02x}{g:02x}{b:02x}" for _, (r, g, b) in counted]


def colours_case(colours: int) -> tuple[str, Work, Work]:
    rng = np.random.default_rng(1)
    if 0 < colours <= 256:
        arr = rng.integers(0, 256, (colours, 3), dtype=np.uint8)[rng.integers(0, colours, (4096, 4096))]
    else:  # 48^3 colours, nearly all of them there
        arr = rng.integers(0, 48, (4096, 4096, 3), dtype=np.uint8) + 100
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG", compress_level=1)
    png = out.getvalue()
    shipped = pe.colors_by_use

    async def run(count: Callable[[Image.Image], list[str]]) -> None:
        pe.colors_by_use = count  # type: ignore[assignment]
        try:
            await asyncio.to_thread(pe.read_result, png, 4096, 4096)
        finally:
            pe.colors_by_use = shipped  # type: ignore[assignment]

    async def before() -> None:
        await run(_colours_at_once)

    async def after() -> None:
        await run(shipped)

    n = colours if 0 < colours <= 256 else 48 ** 3
    return f"colours: 4096x4096 result, {n:,} colours", before, after


def openapi_case(app: Any) -> tuple[str, Work, Work]:
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from bridge import app as app_module
    from bridge.http import path_matches
    from bridge.keys import ENGINE, OPENAPI_CACHE, SETTINGS
    from bridge.openapi import build_spec

    settings = app[SETTINGS]

    async def before() -> None:
        web.json_response(build_spec(
            app, title="Pixart bridge", version="x", secured=bool(settings.api_keys),
            exempt=lambda path: path_matches(path, settings.auth_exempt), description="d")).body

    async def after() -> None:
        app[OPENAPI_CACHE].clear()
        await app_module.openapi_handler(make_mocked_request("GET", "/openapi.json", app=app))

    return f"openapi: {len(app[ENGINE].workflows)} workflows", before, after


def webhook_case() -> tuple[str, Work, Work]:
    rng = np.random.default_rng(2)
    frames = [base64.b64encode(rng.bytes(1024 * 1024 * 2)).decode() for _ in range(16)]
    data = {"id": "job", "status": "completed", "outputs": {"rgb565": frames}, "meta": {}}
    signer = Webhook("whsec_" + base64.b64encode(rng.bytes(24)).decode())
    now = time.time()
    stamp = datetime.fromtimestamp(int(now), timezone.utc)

    async def before() -> None:
        text = json.dumps({"type": "job.completed", "timestamp": "t", "data": data}, separators=(",", ":"))
        signer.sign("msg_1", stamp, text)
        text.encode()

    async def after() -> None:
        text = await Webhooks._body("job.completed", data, now)
        await image_io.run_small(lambda: (signer.sign("msg_1", stamp, text), text.encode()), len(text))

    return "webhook: a 44 MB message", before, after


def object_info_case(workflows: dict[str, Any]) -> tuple[str, Work, Work]:
    from tests.support.double import ComfyDouble

    info = ComfyDouble().object_info
    conn = Connection("http://backend", None, lambda: workflows)  # type: ignore[arg-type]

    def on_loop() -> None:  # the reference: the workflows checked on the loop (Connection.set_object_info, gone)
        conn.apply(info, workflows, check_workflows(workflows, info))

    on_loop()

    async def before() -> None:
        on_loop()

    async def after() -> None:
        await conn.update_object_info(info)

    return f"object_info: {len(workflows)} workflows checked", before, after


def gc_measure() -> tuple[float, float]:
    """(a full collection's ms with the heap as started, after `settle_heap`)."""
    def full() -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            gc.collect()
            best = min(best, time.perf_counter() - t0)
        return best * 1000

    before = full()
    server.settle_heap()
    try:
        after = full()
    finally:
        gc.unfreeze()
    return before, after


# ------------------------------------------------------------------------------------- large workflows
def large_workflows(folder: Path, count: int, nodes: int = 1000, params: int = 100) -> None:
    """`count` workflows: the txt2img graph with `nodes` more text encoders (long texts, 1 MB a graph) and `params`
    more string parameters."""
    graph = json.loads((wfmod.DEFAULT_WORKFLOWS_DIR / "txt2img.json").read_text())
    manifest = json.loads((wfmod.DEFAULT_WORKFLOWS_DIR / "txt2img.manifest.json").read_text())
    clip = graph["6"]["inputs"]["clip"]
    for i in range(count):
        g = dict(graph)
        for k in range(nodes):
            g[str(100 + k)] = {"class_type": "CLIPTextEncode",
                               "inputs": {"clip": clip, "text": f"node {k} " + "lorem ipsum " * 80}}
        m = json.loads(json.dumps(manifest))
        m.update(name=f"large_{i:03d}", workflow=f"large_{i:03d}.json")
        for p in range(params):
            m["parameters"][f"extra_{p}"] = {"type": "string", "default": "", "max_length": 1000,
                                             "targets": [{"node": str(100 + p % nodes), "input": "text"}]}
        (folder / f"large_{i:03d}.json").write_text(json.dumps(g))
        (folder / f"large_{i:03d}.manifest.json").write_text(json.dumps(m))


async def run(args: argparse.Namespace) -> None:
    from bridge.app import create_app
    from bridge.config import load_settings
    from bridge.keys import ENGINE

    extra = Path(tempfile.mkdtemp(prefix="bench-workflows-"))
    data = Path(tempfile.mkdtemp(prefix="bench-data-"))
    rows: list[tuple[str, tuple[float, float], tuple[float, float]]] = []
    try:
        if args.workflows:
            print(f"writing and loading {args.workflows} large workflows (1,000 nodes, 100 more parameters each)...")
            large_workflows(extra, args.workflows)
        settings = load_settings({"data_dir": data, "comfyui_urls": ["http://127.0.0.1:9"],
                                  "extra_workflows_dirs": [str(extra)]}, env_file=None)
        app = create_app(settings)
        workflows = app[ENGINE].workflows
        cases = {"pico": pico_case, "colours": lambda: colours_case(16), "colours-many": lambda: colours_case(0),
                 "openapi": lambda: openapi_case(app), "webhook": webhook_case,
                 "object_info": lambda: object_info_case(workflows)}
        for name, make in cases.items():
            if args.only and name.split("-")[0] not in args.only:
                continue
            label, before, after = make()
            rows.append((label, await measure(before, args.repeat), await measure(after, args.repeat)))
            print(f"  measured {label}", flush=True)
        if not args.only or "gc" in args.only:
            gc_before, gc_after = gc_measure()
            objects = len(gc.get_objects())
            rows.append((f"gc: a full collection, {objects:,} objects", (gc_before, gc_before), (gc_after, gc_after)))
    finally:
        shutil.rmtree(extra, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
    print(f"\nworst lateness of a 1 ms sleep on the loop while the work runs (median of {args.repeat}), and the work's "
          f"time\n")
    print(f"{'work':<46}{'before ms':>10}{'after ms':>10}{'less':>8}   {'took before':>12}{'took after':>12}")
    for label, (lag_b, took_b), (lag_a, took_a) in rows:
        print(f"{label:<46}{lag_b:>10.1f}{lag_a:>10.1f}{lag_b / max(lag_a, 0.1):>7.0f}x   {took_b:>10.0f} ms"
              f"{took_a:>9.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workflows", type=int, default=0, help="large workflows loaded beside the shipped ones")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=[],
                    help="pico colours openapi webhook object_info gc")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
