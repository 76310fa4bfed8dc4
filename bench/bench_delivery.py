"""Results leaving the box, measured in one run against a real ComfyUI (model-free 64x64 jobs, so ComfyUI's own
work is small and the bridge's part shows):

1. Throughput: jobs per second through the jobs API's generic endpoint (POST /workflows/bench_fill?wait=...) with
   4 concurrent clients, with the extras off (local files, no webhook) and on (results in S3 = SeaweedFS on
   loopback, answered as presigned links, plus a signed webhook per job to a local receiver). Runs alternate in a
   balanced order (see WILLIAMS).
2. Webhook delivery: from the job's end (its completedAt) to the receiver having the message: p50/p95.
3. Long polling: end-to-end latency of one job, POST /workflows/bench_fill then GET /jobs/{id}?wait=30 with the
   image inline, against ComfyUI driven directly (POST /prompt, websocket until done, /history, /view); p50 of
   each and of the difference.

The bridges run in this process (one loop thread); the 4 clients (one process) and the webhook receiver run in
processes of their own, as an app and its receiver would: sharing the bridges' interpreter lock, they slowed the bridges and
counted their own work as the bridges' (the CPU per job below is this process's only).

--pin puts the bridges and ComfyUI on one CPU and SeaweedFS, the receiver and the clients on another, as where the
S3 service and the app run on machines of their own: without it, on a small machine, the throughput ratio mostly
measures SeaweedFS's and the receiver's CPU taken from ComfyUI and the bridges.

Jobs per second move by up to a third between runs on a shared VM, more than the extras cost. So the configurations
alternate in short rounds; each round's ratio to the round's "off" run is kept, and their median and quartiles are
printed. With a managed ComfyUI the CPU both processes spend per job (this process and ComfyUI's) is printed too:
under --pin they share one CPU that limits throughput, so the ratio of those sums is the throughput the extras leave
on a saturated CPU, without the drift of wall-clock rates.

Usage: .venv/bin/python bench/bench_delivery.py [--jobs 30] [--rounds 2] [--comfyui-url URL] [--sd] [--pin]
Goals: extras on cost < 5% throughput; webhook p95 < 100 ms; long polling adds < 5 ms at p50.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_bridge import GRAPH, MANIFEST, DirectClient, _http, _pct, _wait_http  # noqa: E402


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 600) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


CONFIGS = ("off", "on", "s3", "hooks")
# The order of the configurations in each round, a Williams square: over four rounds each configuration runs once
# in every place and follows every other one once. A run's rate depends on its place and its neighbour: with the
# order alternating forwards and backwards, "on" always ran second or third next to "off", and with tiny-SD jobs
# it came out 0.944x even when it was given plain jobs, like "off"'s (6 rounds of 30).
WILLIAMS = ((0, 1, 3, 2), (1, 2, 0, 3), (2, 3, 1, 0), (3, 0, 2, 1))


def receiver_main(port: int) -> None:
    """A webhook receiver (a process of its own): records when each job's message arrived; GET /arrived lists them."""
    from aiohttp import web

    arrived: dict[str, float] = {}

    async def hook(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        arrived.setdefault(body["data"]["id"], time.time())
        return web.Response(status=204)

    async def listing(request: web.Request) -> web.Response:
        return web.json_response(arrived)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/arrived", listing)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, handle_signals=True)


def client_run(base: str, jobs: int, first_color: int, extras: dict[str, Any], sd: bool) -> tuple[float, list[dict]]:
    """`throughput` in the client process."""
    return asyncio.run(throughput(base, jobs, first_color, extras, sd))


async def start_bridge(settings: Any) -> tuple[Any, str]:
    from aiohttp import web

    from bridge.app import create_app
    from bridge.comfyui_process import find_free_port

    runner = web.AppRunner(create_app(settings, adapter_names=["jobs_api"]), access_log=None)
    await runner.setup()
    port = find_free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


SD_JOB = {"workflow": "txt2img", "parameters": {"prompt": "a pixel fox", "width": 64, "height": 64, "steps": 1,
                                             "checkpoint": "pixart_tiny_sd15.safetensors"}}


async def throughput(base: str, jobs: int, first_color: int, extras: dict[str, Any], sd: bool = False
                     ) -> tuple[float, list[dict]]:
    import aiohttp

    done: list[dict] = []
    colors = iter(range(first_color, first_color + jobs))
    async with aiohttp.ClientSession() as session:
        async def worker() -> None:
            for color in colors:
                if sd:
                    body = {"parameters": {**SD_JOB["parameters"], "seed": color}, **extras}
                    path = "/workflows/txt2img?wait=120"
                else:
                    body = {"parameters": {"color": color}, **extras}
                    path = "/workflows/bench_fill?wait=60"
                async with session.post(base + path, json=body) as resp:
                    job = await resp.json()
                    if job.get("status") != "completed":
                        raise RuntimeError(f"job not completed: {job}")
                    done.append(job)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(4)))
        return jobs / (time.perf_counter() - t0), done


def comfy_cpu_s(comfy: Any) -> Any:
    """A function giving the managed ComfyUI's CPU seconds so far (its process and children), or 0.0 without one."""
    if comfy is None or comfy.popen is None:
        return lambda: 0.0
    import psutil

    proc = psutil.Process(comfy.popen.pid)

    def seconds() -> float:
        t = proc.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    return seconds


def _quartiles(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return f"{q1:.3f}-{q3:.3f}"


def iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def presign_cpu_us(s3: Any, calls: int = 2000) -> tuple[float, float, float]:
    """CPU per presigned link (this thread, us): S3Blobs.url as the bridge signs with static keys (in Python,
    ``Presigner``), and obstore's signing in place and async, which it used before."""
    import datetime as dt

    import obstore

    from bridge.storage.s3 import S3Blobs

    cfg = s3.settings("presign")
    blobs = S3Blobs(cfg["storage"], endpoint=cfg["s3_endpoint"], access_key_id=cfg["s3_access_key_id"],
                    secret_access_key=cfg["s3_secret_access_key"])
    life = dt.timedelta(seconds=3600)
    out = []
    if blobs.presigner is None:
        raise RuntimeError("the Python signer does not reproduce obstore's links for this store")

    async def in_place() -> str:
        return obstore.sign(blobs.store, "GET", "presign/outputs/j/images_0.png", life)

    for sign in (lambda: blobs.url("outputs/j/images_0.png", 3600), in_place,
                 lambda: obstore.sign_async(blobs.store, "GET", "presign/outputs/j/images_0.png", life)):
        for _ in range(50):
            await sign()
        t0 = time.process_time()
        for _ in range(calls):
            await sign()
        out.append((time.process_time() - t0) / calls * 1e6)
    return out[0], out[1], out[2]


async def post_cpu_us(url: str, calls: int = 1000, repeats: int = 5) -> tuple[float, float]:
    """CPU per webhook POST to the receiver (this process, us, median of interleaved repeats): the bridge's sender
    (bridge.outbound.Poster) and aiohttp's client, which sent the messages before."""
    import aiohttp

    from bridge.outbound import Outbound, OutboundPolicy

    body = json.dumps({"type": "job.completed", "data": {"id": "job_bench", "status": "completed"}}).encode()
    headers = {"content-type": "application/json", "webhook-id": "msg_bench", "webhook-timestamp": "1795000000",
               "webhook-signature": "v1," + "A" * 44, "user-agent": "pixart-bridge-webhooks"}
    outbound = Outbound(OutboundPolicy.from_list(["127.0.0.1"]))
    session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())

    async def via_aiohttp() -> int:
        async with session.post(url, data=body, headers=headers, allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=10)) as resp:
            await resp.read()
            return resp.status

    figures: dict[str, list[float]] = {"poster": [], "aiohttp": []}
    try:
        for _ in range(repeats):
            for name, post in (("poster", lambda: outbound.post(url, body, headers, 10)), ("aiohttp", via_aiohttp)):
                for _ in range(50):
                    await post()
                t0 = time.process_time()
                for _ in range(calls):
                    if await post() != 204:
                        raise RuntimeError(f"{name}: the receiver did not take a message")
                figures[name].append((time.process_time() - t0) / calls * 1e6)
    finally:
        await outbound.close()
        await session.close()
    return statistics.median(figures["poster"]), statistics.median(figures["aiohttp"])


def long_poll(base: str, color: int) -> bytes:
    accepted = json.loads(_http("POST", base + "/workflows/bench_fill", {"parameters": {"color": color}}))
    job = json.loads(_http("GET", f"{base}/jobs/{accepted['id']}?wait=30"))
    if job["status"] != "completed":
        raise RuntimeError(f"job not completed: {job}")
    import base64

    return base64.b64decode(job["result"]["images"][0].split(",", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30, help="jobs per throughput run and latency path")
    parser.add_argument("--rounds", type=int, default=2, help="throughput runs per configuration (alternating)")
    parser.add_argument("--comfyui-url", default=os.environ.get("COMFYUI_URL"), help="use a running ComfyUI")
    parser.add_argument("--sd", action="store_true", help="throughput of real generation instead: the shipped "
                                                          "txt2img workflow, 64x64, 1 step, on a tiny random SD1.5 "
                                                          "checkpoint built here (needs --comfyui-url unset)")
    parser.add_argument("--pin", action="store_true", help="bridges and ComfyUI on the first CPU this process may use, "
                                                           "SeaweedFS, the receiver and the clients on the second")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if args.pin and len(cpus) < 2:
        parser.error("--pin needs two CPUs (Linux)")
    # a thread's CPU set is inherited by the threads and processes it starts: the main thread starts the outside
    # services while on the second CPU, then moves to the first before the bridges' loop thread and ComfyUI start
    bridge_cpu, outside_cpu = ({cpus[0]}, {cpus[1]}) if args.pin else (set(cpus), set(cpus))
    if args.pin:
        os.sched_setaffinity(0, outside_cpu)

    from bridge.comfyui_process import ComfyUIProcess, find_free_port
    from bridge.config import load_settings
    from tests.support.seaweed import start_seaweed

    tmp = Path(tempfile.mkdtemp(prefix="bench_delivery_"))
    wf_dir = tmp / "workflows"
    wf_dir.mkdir()
    (wf_dir / "bench_fill.json").write_text(json.dumps(GRAPH))
    (wf_dir / "bench_fill.manifest.json").write_text(json.dumps(MANIFEST))
    comfy = None
    seaweed = start_seaweed()
    runners: list[Any] = []
    try:
        s3 = next(seaweed)
        spawn = multiprocessing.get_context("spawn")
        receiver_port = find_free_port()
        receiver = spawn.Process(target=receiver_main, args=(receiver_port,), daemon=True)
        receiver.start()
        hook = f"http://127.0.0.1:{receiver_port}/hook"
        clients = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn)
        clients.submit(int).result()  # the client process starts now, on the outside CPU
        if args.pin:
            for task in os.listdir("/proc/self/task"):  # every thread of this process, so far and from now on
                os.sched_setaffinity(int(task), bridge_cpu)
        loop = LoopThread()
        url = (args.comfyui_url or "").rstrip("/")
        if not url:
            extra_paths = ()
            if args.sd:
                from bridge.comfyui_process import find_comfyui
                from tests.support.tiny_models import build_tiny_models, write_extra_model_paths

                build_tiny_models(tmp / "models", find_comfyui())
                extra_paths = (write_extra_model_paths(tmp / "extra_model_paths.yaml", tmp / "models"),)
            comfy = ComfyUIProcess(tmp / "comfyui", extra_model_paths=extra_paths)
            comfy.start_and_wait(timeout=300)
            url = comfy.url
        common = {"comfyui_urls": [url], "extra_workflows_dirs": [str(wf_dir)], "log_level": "WARNING",
                  "outbound_allow": ["127.0.0.1"], "max_queue": 1000}
        if comfy is not None:
            # as on a machine that runs both: the bridges remove ComfyUI's copy of each result. Left in place, the
            # files slowed every job (SaveImage lists the folder to number its file): from 147 to 32 jobs/s over
            # a run of 12,000 jobs, a drift that buried the extras' cost
            common["comfyui_output_dir"] = str(comfy.output_dir)
        bases = {}
        # one data folder per bridge: bridges sharing one would share ComfyUI's client id, and ComfyUI sends a
        # client's events to one websocket only
        for name, s3_on in (("off", False), ("on", True), ("s3", True), ("hooks", False)):
            settings = load_settings({**common, "data_dir": tmp / name, **(s3.settings(name) if s3_on else {})},
                                     env_file=None)
            runner, base = loop.run(start_bridge(settings))
            runners.append(runner)
            bases[name] = base
        for base in bases.values():  # wait for the engines' websockets, then warm up
            _wait_http(base + "/health", 60)
        _wait_http(f"http://127.0.0.1:{receiver_port}/arrived", 30)
        for name in bases:
            clients.submit(client_run, bases[name], 4, 0x100, {}, args.sd).result()

        rates: dict[str, list[float]] = {"off": [], "on": [], "s3": [], "hooks": []}
        cpu_ms: dict[str, list[float]] = {name: [] for name in rates}
        comfy_ms: dict[str, list[float]] = {name: [] for name in rates}
        comfy_cpu = comfy_cpu_s(comfy)
        configs = {"off": {}, "on": {"webhook": hook, "response_format": "url"}, "s3": {"response_format": "url"},
                   "hooks": {"webhook": hook}}
        webhook_ms: list[float] = []
        color = 0x1000
        for r in range(args.rounds):
            for name in (CONFIGS[i] for i in WILLIAMS[r % len(WILLIAMS)]):
                extras = configs[name]
                cpu0, c0 = resource.getrusage(resource.RUSAGE_SELF), comfy_cpu()
                rate, jobs = clients.submit(client_run, bases[name], args.jobs, color, extras, args.sd).result()
                cpu1, c1 = resource.getrusage(resource.RUSAGE_SELF), comfy_cpu()
                cpu_ms[name].append((cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) * 1000 / args.jobs)
                comfy_ms[name].append((c1 - c0) * 1000 / args.jobs)
                color += args.jobs
                rates[name].append(rate)
                if name == "on":
                    deadline = time.time() + 30
                    while True:
                        arrived = json.loads(_http("GET", f"http://127.0.0.1:{receiver_port}/arrived"))
                        if time.time() > deadline or all(j["id"] in arrived for j in jobs):
                            break
                        time.sleep(0.05)
                    webhook_ms += [(arrived[j["id"]] - iso_seconds(j["completedAt"])) * 1000
                                   for j in jobs if j["id"] in arrived]

        direct = DirectClient(url)
        for i in range(3):
            direct.run(0x20000 + i)
            long_poll(bases["off"], 0x21000 + i)
        d_times, b_times = [], []
        for i in range(args.jobs):
            for path in (("direct", "bridge") if i % 2 == 0 else ("bridge", "direct")):
                t0 = time.perf_counter()
                png = direct.run(0x30000 + i)[1] if path == "direct" else long_poll(bases["off"], 0x40000 + i)
                (d_times if path == "direct" else b_times).append(time.perf_counter() - t0)
                if not png.startswith(b"\x89PNG"):
                    raise RuntimeError(f"{path}: no PNG")
        direct.close()
        diffs = [b - d for b, d in zip(b_times, d_times)]

        off = statistics.median(rates["off"])
        # each round's runs are next to each other: the median of the per-round ratios is steadier than the
        # ratio of medians when the machine's speed drifts between rounds
        print(f"{'':<44} {'value':>10} {'reference':>10} {'ratio':>8} {'per-round ratio':>16}"
              f" {'(quartiles)':>14}")
        for name, label in (("on", "S3 + webhooks on"), ("s3", "S3 results only"), ("hooks", "webhooks only")):
            value = statistics.median(rates[name])
            paired = [a / b for a, b in zip(rates[name], rates["off"])]
            print(f"{'jobs/s, ' + label + ' vs off':<44} {value:>10.1f} {off:>10.1f} {value / off:>8.2f} "
                  f"{statistics.median(paired):>16.3f} {_quartiles(paired):>14}")
        # CPU of this process per job: the bridges and their S3 client (not the clients, the receiver, ComfyUI or
        # SeaweedFS)
        base_cpu = statistics.median(cpu_ms["off"])
        for name, label in (("on", "S3 + webhooks"), ("s3", "S3 results only"), ("hooks", "webhooks only")):
            value = statistics.median(cpu_ms[name])
            print(f"{'bridge-process CPU ms/job, ' + label:<44} {value:>10.2f} {base_cpu:>10.2f} {value / base_cpu:>8.2f}")
        if comfy is not None and comfy.popen is not None:
            # the shared CPU's work per job, bridges and ComfyUI: its inverse is the throughput of a saturated CPU
            shared = {name: [b + c for b, c in zip(cpu_ms[name], comfy_ms[name])] for name in rates}
            base_shared = statistics.median(shared["off"])
            print(f"{'ComfyUI CPU ms/job, both off':<44} {statistics.median(comfy_ms['off']):>10.2f}")
            for name, label in (("on", "S3 + webhooks"), ("s3", "S3 results only"), ("hooks", "webhooks only")):
                value = statistics.median(shared[name])
                paired = [b / a for a, b in zip(shared[name], shared["off"])]
                print(f"{'CPU-bound jobs/s (bridges + ComfyUI), ' + label:<44} {1000 / value:>10.1f} "
                      f"{1000 / base_shared:>10.1f} {base_shared / value:>8.2f} {statistics.median(paired):>16.3f} "
                      f"{_quartiles(paired):>14}")
        python, in_place, via_async = asyncio.run(presign_cpu_us(s3))
        print(f"{'presigned link, process CPU us, Python vs obstore':<44} {python:>10.1f} {in_place:>10.1f} "
              f"{python / in_place:>8.2f}")
        print(f"{'presigned link, process CPU us, Python vs async':<44} {python:>10.1f} {via_async:>10.1f} "
              f"{python / via_async:>8.2f}")
        poster, via_aiohttp = asyncio.run(post_cpu_us(hook))
        print(f"{'webhook POST, process CPU us, Poster vs aiohttp':<44} {poster:>10.1f} {via_aiohttp:>10.1f} "
              f"{poster / via_aiohttp:>8.2f}")
        print(f"{'webhook after job end p50 (ms)':<44} {statistics.median(webhook_ms):>10.1f}")
        print(f"{'webhook after job end p95 (ms)':<44} {_pct(webhook_ms, 0.95):>10.1f}")
        print(f"{'messages received / jobs':<44} {len(webhook_ms):>10} {args.jobs * args.rounds:>10}")
        ms = 1000
        print(f"{'long-poll job latency p50 (ms) vs direct':<44} {statistics.median(b_times) * ms:>10.1f} "
              f"{statistics.median(d_times) * ms:>10.1f} {statistics.median(b_times) / statistics.median(d_times):>8.2f}")
        print(f"{'added by the bridge p50 / p95 (ms)':<44} {statistics.median(diffs) * ms:>10.1f} "
              f"{_pct(diffs, 0.95) * ms:>10.1f}")
        if args.pin:
            print(f"pinned: bridges and ComfyUI on CPU {min(bridge_cpu)}; SeaweedFS, receiver, clients on CPU "
                  f"{min(outside_cpu)}")
    finally:
        for runner in reversed(runners):
            loop.run(runner.cleanup())
        if "clients" in locals():
            clients.shutdown()
        if "receiver" in locals():
            receiver.terminate()
            receiver.join(10)
        if comfy is not None:
            comfy.stop()
        seaweed.close()
        shutil.rmtree(tmp, ignore_errors=True)  # ComfyUI's copy, the bridges' stores: about 340 MiB a run


if __name__ == "__main__":
    main()
