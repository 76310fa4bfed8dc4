"""Bridge overhead against ComfyUI itself, measured in one run.

1. Added latency per job: the same model-free workflow (EmptyImage 64x64 -> SaveImage, a new colour per job so
   ComfyUI's cache never answers) is run alternately
   - directly: websocket-client + urllib, as ComfyUI's script_examples do (POST /prompt, wait for the final
     `executing` with node null, GET /history, GET /view), and
   - through the bridge: POST /bench/jobs (engine.submit + engine.wait behind the full middleware stack), then
     GET the stored image from the bridge.
   Reported: p50/p95 of each path, of the per-pair difference, and the ratio.
2. Status requests per second: while jobs keep running, a separate load-generator process (aiohttp client)
   hammers GET /bench/jobs/{id} on the bridge (pinned to one CPU) and, as the reference, ComfyUI's own
   GET /history/{prompt_id}.

The bridge runs as a child process (`--serve`) built with bridge.app.create_app and API-key auth on, plus two
bench-only routes shaped like a job API's submit and status calls.

Usage: .venv/bin/python bench/bench_bridge.py [--jobs 40] [--seconds 5] [--comfyui-url URL]
Without --comfyui-url (or COMFYUI_URL) it starts a ComfyUI with bridge.comfyui_process.
Goals: < 20 ms added per job at p50; >= 2000 status requests/s on one core.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

API_KEY = "bench-key"
GRAPH = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}},
}
MANIFEST = {
    "name": "bench_fill", "version": 1, "description": "A 64x64 solid colour, saved: a job with no model work.",
    "workflow": "bench_fill.json",
    "parameters": {"color": {"type": "int", "default": 0, "min": 0, "max": 0xFFFFFF,
                             "targets": [{"node": "1", "input": "color"}]}},
    "outputs": {"images": {"node": "2", "type": "images"}},
}


# --------------------------------------------------------------------------------------------- bridge child
def serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from bridge.app import ENGINE, create_app
    from bridge.config import load_settings

    if args.pin_cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.pin_cpu})
    settings = load_settings({
        "comfyui_urls": [args.comfyui_url], "workflows_dir": args.workflows_dir, "data_dir": args.data_dir,
        "api_keys": [API_KEY], "host": "127.0.0.1", "port": args.port, "log_level": "WARNING",
    }, env_file=None)

    async def submit(request: web.Request) -> web.Response:
        """Run one bench job and wait for it."""
        body = await request.json()
        engine = request.app[ENGINE]
        job = await engine.submit("bench_fill", {"color": int(body["color"])})
        job = await engine.wait(job.id, timeout=120)
        return web.json_response(job.to_dict())

    async def status(request: web.Request) -> web.Response:
        """A job's status."""
        job = request.app[ENGINE].get(request.match_info["job_id"])
        if job is None:
            raise web.HTTPNotFound()
        return web.json_response(job.to_dict())

    async def image(request: web.Request) -> web.Response:
        """A job's first image."""
        engine = request.app[ENGINE]
        return web.Response(body=await engine.read_output(request.match_info["job_id"], "images", 0),
                            content_type="image/png")

    async def make() -> web.Application:
        app = create_app(settings, adapter_names=[])
        app.router.add_post("/bench/jobs", submit)
        app.router.add_get("/bench/jobs/{job_id}", status)
        app.router.add_get("/bench/jobs/{job_id}/image", image)
        return app

    import logging

    logging.basicConfig(level=logging.WARNING)
    web.run_app(make(), host="127.0.0.1", port=args.port, access_log=None, print=None)


# --------------------------------------------------------------------------------------------- load child
def load(args: argparse.Namespace) -> None:
    import aiohttp

    async def run() -> None:
        count = 0
        errors = 0
        stop = time.perf_counter() + args.seconds
        headers = {"X-API-Key": API_KEY}
        conn = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=conn, headers=headers) as session:
            async def worker() -> None:
                nonlocal count, errors
                while time.perf_counter() < stop:
                    async with session.get(args.url) as resp:
                        await resp.read()
                        if resp.status == 200:
                            count += 1
                        else:
                            errors += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            elapsed = time.perf_counter() - started
        print(json.dumps({"rps": count / elapsed, "ok": count, "errors": errors}))

    if args.pin_cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.pin_cpu})
    asyncio.run(run())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to turn req/s into req per CPU-second."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(url: str, seconds: float, concurrency: int, pin: int | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--load", "--url", url, "--seconds", str(seconds),
           "--concurrency", str(concurrency)]
    if pin is not None:
        cmd += ["--pin-cpu", str(pin)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------- clients
def _http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        **({"Content-Type": "application/json"} if data else {}), **(headers or {})})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.read()


class DirectClient:
    """ComfyUI's own protocol, the way script_examples/websockets_api_example.py drives it."""

    def __init__(self, base: str) -> None:
        import websocket  # websocket-client

        self.base = base
        self.client_id = uuid.uuid4().hex
        self.ws = websocket.WebSocket()
        self.ws.connect(base.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}")

    def run(self, color: int) -> tuple[str, bytes]:
        graph = json.loads(json.dumps(GRAPH))
        graph["1"]["inputs"]["color"] = color
        reply = json.loads(_http("POST", self.base + "/prompt", {"prompt": graph, "client_id": self.client_id}))
        prompt_id = reply["prompt_id"]
        while True:
            msg = self.ws.recv()
            if isinstance(msg, str):
                event = json.loads(msg)
                data = event.get("data", {})
                if event.get("type") == "executing" and data.get("node") is None and \
                        data.get("prompt_id") == prompt_id:
                    break
        history = json.loads(_http("GET", f"{self.base}/history/{prompt_id}"))[prompt_id]
        img = history["outputs"]["2"]["images"][0]
        query = urllib.parse.urlencode({"filename": img["filename"], "subfolder": img["subfolder"],
                                        "type": img["type"]})
        return prompt_id, _http("GET", f"{self.base}/view?{query}")

    def close(self) -> None:
        self.ws.close()


def bridge_run(base: str, color: int) -> tuple[str, bytes]:
    headers = {"X-API-Key": API_KEY}
    job = json.loads(_http("POST", base + "/bench/jobs", {"color": color}, headers))
    if job["status"] != "completed":
        raise RuntimeError(f"bridge job failed: {job}")
    return job["id"], _http("GET", f"{base}/bench/jobs/{job['id']}/image", headers=headers)


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.2)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# --------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40, help="jobs per path (alternating)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each status-load run")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent status requests")
    parser.add_argument("--comfyui-url", default=os.environ.get("COMFYUI_URL"), help="use a running ComfyUI")
    parser.add_argument("--bridge-cpu", type=int, default=0, help="CPU the bridge is pinned to (-1: none)")
    parser.add_argument("--load-cpu", type=int, default=None, help="CPU for the load generator")
    # internal modes
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workflows-dir", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--pin-cpu", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args)
    if args.load:
        return load(args)

    from bridge.comfyui_process import ComfyUIProcess, find_free_port

    tmp = Path(tempfile.mkdtemp(prefix="bench_bridge_"))
    comfy = None
    bridge = None
    try:
        url = (args.comfyui_url or "").rstrip("/")
        if not url:
            comfy = ComfyUIProcess(tmp / "comfyui")
            t0 = time.perf_counter()
            comfy.start_and_wait(timeout=300)
            print(f"ComfyUI started in {time.perf_counter() - t0:.1f} s on {comfy.url}")
            url = comfy.url
        wf_dir = tmp / "workflows"
        wf_dir.mkdir()
        (wf_dir / "bench_fill.json").write_text(json.dumps(GRAPH))
        (wf_dir / "bench_fill.manifest.json").write_text(json.dumps(MANIFEST))
        port = find_free_port()
        cmd = [sys.executable, __file__, "--serve", "--port", str(port), "--comfyui-url", url,
               "--workflows-dir", str(wf_dir), "--data-dir", str(tmp / "bridge-data")]
        if args.bridge_cpu >= 0:
            cmd += ["--pin-cpu", str(args.bridge_cpu)]
        bridge = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp / "bridge.log", "wb"))
        base = f"http://127.0.0.1:{port}"
        _wait_http(base + "/metrics", 60)
        _wait_http(base + "/health", 60)  # 503 until the engine's websocket to ComfyUI is up

        direct = DirectClient(url)
        # Warm-up: first runs load nodes, open connections, create files.
        for i in range(3):
            direct.run(0x10000 + i)
            bridge_run(base, 0x20000 + i)
        d_times: list[float] = []
        b_times: list[float] = []
        for i in range(args.jobs):
            # Alternate the order so a drifting backend does not favour one path.
            order = ("direct", "bridge") if i % 2 == 0 else ("bridge", "direct")
            for path in order:
                t0 = time.perf_counter()
                if path == "direct":
                    _, png = direct.run(0x30000 + i)
                    d_times.append(time.perf_counter() - t0)
                else:
                    _, png = bridge_run(base, 0x40000 + i)
                    b_times.append(time.perf_counter() - t0)
                if not png.startswith(b"\x89PNG"):
                    raise RuntimeError(f"{path} path returned no PNG")
        diffs = [b - d for b, d in zip(b_times, d_times)]

        # Status load while jobs run: a background thread keeps the bridge and ComfyUI busy with jobs.
        job_id, _ = bridge_run(base, 0x50000)
        prompt_id, _ = direct.run(0x50001)
        stop = threading.Event()

        def keep_busy() -> None:
            n = 0
            while not stop.is_set():
                bridge_run(base, 0x60000 + n)
                n += 1

        busy = threading.Thread(target=keep_busy, daemon=True)
        busy.start()
        load_cpu = args.load_cpu
        if load_cpu is None and args.bridge_cpu >= 0 and (os.cpu_count() or 1) > 1:
            load_cpu = (args.bridge_cpu + 1) % (os.cpu_count() or 1)
        try:
            cpu0, wall0 = cpu_seconds(bridge.pid), time.perf_counter()
            bridge_load = run_load(f"{base}/bench/jobs/{job_id}", args.seconds, args.concurrency, load_cpu)
            # Includes the interpreter start of the load child (idle for the bridge) and the jobs it runs.
            bridge_cpu = cpu_seconds(bridge.pid) - cpu0
            bridge_wall = time.perf_counter() - wall0
            comfy_load = run_load(f"{url}/history/{prompt_id}", args.seconds, args.concurrency, load_cpu)
        finally:
            stop.set()
            busy.join(120)
        direct.close()

        ms = 1000.0
        print()
        print(f"jobs per path: {args.jobs} (EmptyImage 64x64 -> SaveImage, image fetched on both paths)")
        print(f"{'measure':<40} {'p50':>10} {'p95':>10}")
        print(f"{'direct ComfyUI job latency (ms)':<40} {statistics.median(d_times) * ms:>10.1f} "
              f"{_pct(d_times, 0.95) * ms:>10.1f}")
        print(f"{'bridge job latency (ms)':<40} {statistics.median(b_times) * ms:>10.1f} "
              f"{_pct(b_times, 0.95) * ms:>10.1f}")
        print(f"{'added by bridge, per pair (ms)':<40} {statistics.median(diffs) * ms:>10.1f} "
              f"{_pct(diffs, 0.95) * ms:>10.1f}")
        print(f"{'ratio bridge / direct':<40} {statistics.median(b_times) / statistics.median(d_times):>10.2f} "
              f"{_pct(b_times, 0.95) / _pct(d_times, 0.95):>10.2f}")
        print()
        pin = f"bridge pinned to CPU {args.bridge_cpu}" if args.bridge_cpu >= 0 else "bridge not pinned"
        print(f"status requests while jobs run ({args.seconds:.0f} s, {args.concurrency} concurrent, {pin}):")
        print(f"{'server':<40} {'req/s':>10} {'errors':>10}")
        print(f"{'bridge GET /bench/jobs/{id}':<40} {bridge_load['rps']:>10.0f} {bridge_load['errors']:>10}")
        print(f"{'ComfyUI GET /history/{id} (reference)':<40} {comfy_load['rps']:>10.0f} {comfy_load['errors']:>10}")
        print(f"{'ratio bridge / ComfyUI':<40} {bridge_load['rps'] / max(1e-9, comfy_load['rps']):>10.2f}")
        per_cpu = bridge_load["ok"] / max(1e-9, bridge_cpu)
        print(f"bridge CPU during its load run: {bridge_cpu:.2f} s over {bridge_wall:.2f} s wall "
              f"({100 * bridge_cpu / bridge_wall:.0f}% of one core) -> {per_cpu:.0f} status requests per CPU-second "
              f"(jobs it ran meanwhile included)")
        p50_added = statistics.median(diffs) * ms
        print()
        print(f"goal: added p50 < 20 ms -> {p50_added:.1f} ms {'MET' if p50_added < 20 else 'MISSED'}; "
              f"status >= 2000 req/s on one core -> {bridge_load['rps']:.0f} req/s measured, {per_cpu:.0f} per CPU-second "
              f"{'MET' if per_cpu >= 2000 else 'MISSED'}")
    finally:
        if bridge is not None:
            bridge.terminate()
            try:
                bridge.wait(30)
            except subprocess.TimeoutExpired:
                bridge.kill()
        if comfy is not None:
            comfy.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
