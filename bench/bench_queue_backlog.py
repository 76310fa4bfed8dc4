"""Does a long queue in ComfyUI slow the bridge? Measured in one run, before and after.

N jobs wait in ComfyUI's queue behind one long job while a client polls GET /health and a job's status every 20 ms
for a while (the bridge looks at its queued jobs every 5 s, BRIDGE_QUEUE_POLL_INTERVAL's default). Reported: the
bridge's CPU seconds per second of waiting, its reads of /queue, and p50 / p99 / worst latency of the polls,
with the bridge's look at its queued jobs done

- one job at a time: every due job read its /history entry and then the whole /queue, alone, which is what the
  bridge did before (the reference, patched in here); and
- one /queue read per backend for all its due jobs, shared by whoever asks meanwhile; /history only for a job
  that is no longer in the queue; the answer decoded in one json.loads (stop 38); and
- as shipped: that, with the answer decoded one queued prompt at a time, other requests served in between
  (`client.queued_prompt_ids`).

/queue carries every queued prompt's graph, so one read grows with the queue and one read per job made each look
cost the square of the queue's length.

The bridge runs in this process (a background thread), the ComfyUI protocol double in a process of its own (a new
one per measurement, so no run queues behind the last one's jobs), the poller in another.
Usage: .venv/bin/python bench/bench_queue_backlog.py [--jobs 100 500] [--seconds 12]
Goal: the bridge's CPU while jobs wait grows with the queue's length, not its square; polls stay under 100 ms.
"""
from __future__ import annotations

import argparse
import json
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

from bench.bench_replicas import run_double  # noqa: E402
from bench.bench_responsiveness import pct  # noqa: E402
from bridge.comfyui_process import find_free_port  # noqa: E402
from bridge.engine import client as client_module  # noqa: E402
from bridge.engine.client import ComfyClient  # noqa: E402
from bridge.engine.tracker import Tracker  # noqa: E402
from tests.support.live_bridge import live_bridge  # noqa: E402

BODY = {"prompt": "a red house", "width": 64, "height": 64, "steps": 2}


async def _each_job_alone(self: Tracker, conn: Any, jobs: list[tuple[Any, str]]) -> None:
    for job, _pid in jobs:
        self.spawn(self.poll(conn, job))


async def _read_every_time(self: ComfyClient) -> tuple[set[str], set[str]]:
    return await _at_once((await self.queue_text()).decode())


async def _at_once(text: str) -> tuple[set[str], set[str]]:
    q = json.loads(text)
    return ({item[1] for item in q.get("queue_running", [])}, {item[1] for item in q.get("queue_pending", [])})


def poll(url: str, job_id: str, stop_at: float, out: Any) -> None:
    session = requests.Session()
    lat: list[float] = []
    while time.time() < stop_at:
        for path in ("/health", f"/jobs/{job_id}"):
            t0 = time.perf_counter()
            r = session.get(url + path, timeout=120)
            lat.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text
        time.sleep(0.02)
    out.put(lat)


READS = [0]  # GET /queue requests the bridge made
_queue = ComfyClient.queue_text


async def _counted_queue(self: ComfyClient) -> bytes:
    READS[0] += 1
    return await _queue(self)


def measure(mode: str, jobs: int, seconds: float) -> dict[str, Any]:
    port = find_free_port()
    comfy = f"http://127.0.0.1:{port}"
    # 20 s a step: the first job runs through the whole measurement, the others wait behind it
    double = multiprocessing.Process(target=run_double, args=(port, 20.0), daemon=True)
    double.start()
    patched: dict[tuple[Any, str], Any] = {(ComfyClient, "queue_text"): _counted_queue}
    if mode == "before":
        patched.update({(Tracker, "_look_at_queue"): _each_job_alone, (ComfyClient, "queued_ids"): _read_every_time})
    elif mode == "at once":
        patched[(client_module, "queued_prompt_ids")] = _at_once
    original = {key: getattr(*key) for key in patched}
    for (cls, name), fn in patched.items():
        setattr(cls, name, fn)
    try:
        time.sleep(2)
        with live_bridge(Path(tempfile.mkdtemp()), adapters=["jobs_api"], max_queue=100_000, comfyui_url=comfy,
                         queue_poll_interval=5.0) as url:
            session = requests.Session()
            ids = []
            for i in range(jobs + 1):
                r = session.post(url + "/generate/text2img", json={**BODY, "seed": i}, timeout=60)
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
            time.sleep(1)  # the last posts reach ComfyUI
            queue_reads, cpu0 = READS[0], time.process_time()
            stop_at = time.time() + seconds
            out: Any = multiprocessing.Queue()
            poller = multiprocessing.Process(target=poll, args=(url, ids[-1], stop_at, out))
            poller.start()
            lat = out.get()
            poller.join()
            cpu = time.process_time() - cpu0
            return {"cpu_per_s": cpu / seconds, "reads": READS[0] - queue_reads, "lat": lat}
    finally:
        for (cls, name), fn in original.items():
            setattr(cls, name, fn)
        double.kill()
        double.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, nargs="+", default=[100, 500])
    ap.add_argument("--seconds", type=float, default=12.0)
    args = ap.parse_args()
    modes = ("before", "at once", "after")
    results = {(mode, n): measure(mode, n, args.seconds) for n in args.jobs for mode in modes}
    print(f"\n{args.seconds:g} s of waiting per row; looks every 5 s; a poll of /health and a status every 20 ms\n")
    labels = {"before": "one job at a time (before)", "at once": "one read, json.loads", "after": "one read, item by item"}
    print(f"{'look at queued jobs':<26}{'waiting':>8}{'CPU s/s':>9}{'/queue reads':>13}{'polls':>7}{'p50 ms':>8}"
          f"{'p99 ms':>8}{'max ms':>9}")
    for (mode, n), r in results.items():
        label = labels[mode]
        lat = r["lat"]
        print(f"{label:<26}{n:>8}{r['cpu_per_s']:>9.3f}{r['reads']:>13}{len(lat):>7}{statistics.median(lat):>8.1f}"
              f"{pct(lat, 0.99):>8.1f}{max(lat):>9.1f}")
    for n in args.jobs:
        before, at_once, after = (results[(mode, n)] for mode in modes)
        print(f"{n} jobs waiting: CPU {before['cpu_per_s'] / max(after['cpu_per_s'], 1e-9):.0f}x less, worst poll "
              f"{max(before['lat']):.0f} -> {max(at_once['lat']):.0f} (one json.loads) -> {max(after['lat']):.0f} ms")
    if len(args.jobs) > 1:
        lo, hi = min(args.jobs), max(args.jobs)
        for mode in modes:
            ratio = results[(mode, hi)]["cpu_per_s"] / max(results[(mode, lo)]["cpu_per_s"], 1e-9)
            print(f"{mode}: {hi / lo:g}x the jobs waiting cost {ratio:.1f}x the CPU")


if __name__ == "__main__":
    main()
