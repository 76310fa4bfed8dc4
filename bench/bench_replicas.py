"""Bridge replicas: submit and status throughput with one replica on SQLite, one on PostgreSQL and three on
PostgreSQL, in one run; and the takeover time after a replica is killed.

Everything runs on this machine: a PostgreSQL cluster in a temporary folder (tests/support/postgres.py), the ComfyUI
protocol double in a process of its own (no model work: the bridge is what is measured), each replica a
`python -m bridge` process, and the load from separate processes spreading requests over the replicas as a
load balancer would: `wrk` for status requests where it is installed (Debian's package; a few microseconds of CPU
per request), else, and for submits, an aiohttp client process. Reported per configuration: submits/s (POST /generate/text2img,
202) and status requests/s (GET /jobs/{id} of finished jobs; the median of a few rounds that measure each configuration
in turn, and the three-to-one ratio round by round), and the replicas' CPU seconds per request, which is
what more replicas divide when the machine has cores to give them (on a 2-core machine, three replicas, the load
generator and PostgreSQL share two cores, so the throughput ratio there is bounded by the cores, not the bridge).

Takeover: three replicas, jobs queued in ComfyUI, one replica killed with SIGKILL; the time until the killed
replica holds no job (all claimed by the others), and until its jobs are all finished.

With `--busy N`, one more row: one replica on PostgreSQL while N other processes keep cores busy. On a machine
whose cores slow down when many are busy (a lower clock, hyperthreads of one core given out as separate cores), a
replica's CPU per request rises with three replicas for that reason alone; this row shows how much.

Usage: .venv/bin/python bench/bench_replicas.py [--seconds 5] [--concurrency 32] [--rounds 3] [--lease 3]
       [--busy 6]
Goals: three replicas serve >= 2.5x one replica's status requests; takeover within 10 s of the kill.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bridge.comfyui_process import find_free_port  # noqa: E402
from tests.support.replica_process import Replica  # noqa: E402

QUIET = {"BRIDGE_LOG_LEVEL": "WARNING"}

BODY = {"prompt": "a red house", "width": 64, "height": 64, "steps": 2}


# ------------------------------------------------------------------------------------------- processes
def run_double(port: int, step_delay: float) -> None:
    """The ComfyUI protocol double, alone in this process."""
    from tests.support.double import ComfyDouble

    async def main() -> None:
        double = ComfyDouble(step_delay=step_delay, port=port)
        await double.start()
        await asyncio.Event().wait()

    asyncio.run(main())


# ------------------------------------------------------------------------------------------- load
def spin() -> None:
    while True:
        pass


def load(kind: str, urls: list[str], ids: list[str], seconds: float, concurrency: int, out: Any) -> None:
    """In a process of its own: as many requests as the replicas answer for `seconds`; puts (count, errors)."""
    import aiohttp

    async def main() -> tuple[int, int]:
        done = errors = 0
        stop = time.monotonic() + seconds
        conn = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=conn) as session:
            async def worker(w: int) -> None:
                nonlocal done, errors
                i = w
                while time.monotonic() < stop:
                    url = urls[i % len(urls)]
                    try:
                        if kind == "submit":
                            async with session.post(url + "/generate/text2img", json={**BODY, "seed": i}) as r:
                                await r.read()
                                ok = r.status == 202
                        else:
                            async with session.get(f"{url}/jobs/{ids[i % len(ids)]}?response_format=url") as r:
                                await r.read()
                                ok = r.status == 200
                    except aiohttp.ClientError:
                        ok = False
                    done += ok
                    errors += not ok
                    i += concurrency
            await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return done, errors

    out.put(asyncio.run(main()))


WRK_STATUS = """
ids = {%s}
i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/jobs/" .. ids[(i %% #ids) + 1] .. "?response_format=url")
end
"""


def measure_wrk(replicas: list[Replica], ids: list[str], seconds: float, concurrency: int) -> dict[str, float]:
    """Status requests from wrk (C, a few microseconds of CPU per request: the load costs the replicas almost no
    core), one wrk per replica with its share of the connections, as a round-robin balancer would spread them."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(WRK_STATUS % ", ".join(f'"{i}"' for i in ids))
    cpu0 = sum(r.cpu() for r in replicas)
    per = max(1, concurrency // len(replicas))
    procs = [subprocess.Popen(["wrk", "-t1", f"-c{per}", f"-d{seconds:g}s", "-s", str(script), r.url],
                              stdout=subprocess.PIPE, text=True) for r in replicas]
    done = 0.0  # answers (wrk's Requests/sec counts completed requests, whatever their status)
    non_2xx = socket_errors = 0
    for proc in procs:
        out, _ = proc.communicate()
        for line in out.splitlines():
            if line.startswith("Requests/sec:"):
                done += float(line.split()[1]) * seconds
            if "Non-2xx" in line:
                non_2xx += int(line.split()[-1])
            if line.strip().startswith("Socket errors:"):  # connect/read/write/timeout: never answers
                socket_errors += sum(int(part.split()[-1]) for part in line.split(":", 1)[1].split(","))
    cpu = sum(r.cpu() for r in replicas) - cpu0
    # throughput counts 200 answers only (a refusal is not a status answer); CPU is per answer of any status,
    # since the replicas did the work of each
    return {"per_s": max(0.0, done - non_2xx) / seconds, "errors": non_2xx + socket_errors,
            "cpu_per_req_ms": 1000 * cpu / max(1, done), "wall": seconds}


def measure(kind: str, replicas: list[Replica], ids: list[str], seconds: float, concurrency: int) -> dict[str, float]:
    if kind == "status" and shutil.which("wrk"):
        return measure_wrk(replicas, ids, seconds, concurrency)
    queue: Any = multiprocessing.Queue()
    cpu0 = sum(r.cpu() for r in replicas)
    t0 = time.monotonic()
    proc = multiprocessing.Process(target=load, args=(kind, [r.url for r in replicas], ids, seconds, concurrency,
                                                      queue))
    proc.start()
    done, errors = queue.get()
    proc.join()
    wall = time.monotonic() - t0
    cpu = sum(r.cpu() for r in replicas) - cpu0
    return {"per_s": done / seconds, "errors": errors, "cpu_per_req_ms": 1000 * cpu / max(1, done),
            "wall": wall}


def finished_jobs(url: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        req = urllib.request.Request(url + "/generate/text2img", data=json.dumps({**BODY, "seed": 10_000 + i}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            ids.append(json.loads(resp.read())["id"])
    for job_id in ids:
        with urllib.request.urlopen(f"{url}/jobs/{job_id}?wait=60", timeout=90) as resp:
            assert json.loads(resp.read())["status"] == "completed"
    return ids


def drained(comfy: str, timeout: float = 300) -> None:
    """Wait until ComfyUI has nothing queued or running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(comfy + "/prompt", timeout=30) as resp:
            if json.loads(resp.read())["exec_info"]["queue_remaining"] == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{comfy} still busy after {timeout:g} s")


# ------------------------------------------------------------------------------------------- runs
class Configuration:
    """Replicas on one database with finished jobs to ask about; kept running while the rounds go on, so every
    configuration is measured in each round, one after the other, and a drift of the machine's speed (other tenants,
    clock) falls on all of them alike."""

    def __init__(self, name: str, database: str, count: int, comfy: str, root: Path, args: argparse.Namespace,
                 busy: int = 0) -> None:
        self.name, self.busy, self.args = name, busy, args
        data = Path(tempfile.mkdtemp(dir=root, prefix=name.replace(" ", "-").replace(",", "")))
        self.replicas = [Replica(database, data, comfy, lease=args.lease, max_queue=100000, env=QUIET)
                         for _ in range(count)]
        self.status: list[dict[str, float]] = []
        self.submit: dict[str, float] = {}
        self.ids: list[str] = []

    def start(self) -> None:
        for r in self.replicas:
            r.ready()
        self.ids = finished_jobs(self.replicas[0].url, 40)

    def measured(self, kind: str) -> dict[str, float]:
        spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(self.busy)]
        for s in spinners:
            s.start()
        try:
            return measure(kind, self.replicas, self.ids, self.args.seconds, self.args.concurrency)
        finally:
            for s in spinners:
                s.kill()
                s.join()

    def stop(self) -> None:
        for r in self.replicas:
            r.stop()

    def median(self, key: str) -> float:
        return statistics.median(m[key] for m in self.status)


def takeover(database: str, comfy_slow: str, root: Path, args: argparse.Namespace) -> dict[str, float]:
    import psycopg

    data = Path(tempfile.mkdtemp(dir=root, prefix="takeover"))
    replicas = [Replica(database, data, comfy_slow, lease=args.lease, max_queue=100000, env=QUIET)
                for _ in range(3)]
    try:
        for r in replicas:
            r.ready()
        victim = replicas[1]
        for i in range(60):
            req = urllib.request.Request(replicas[i % 3].url + "/generate/text2img",
                                         data=json.dumps({**BODY, "seed": i}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
            urllib.request.urlopen(req, timeout=30).read()
        held_sql = "SELECT COUNT(*) FROM jobs WHERE owner = %s AND status IN ('queued', 'running')"
        with psycopg.connect(database, autocommit=True) as conn:
            held = conn.execute(held_sql, (victim.id,)).fetchone()[0]
            victim_jobs = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE owner = %s", (victim.id,))]
            victim.stop(signal.SIGKILL)
            killed = time.monotonic()
            while conn.execute(held_sql, (victim.id,)).fetchone()[0]:
                time.sleep(0.02)
            claimed = time.monotonic() - killed
            while conn.execute("SELECT COUNT(*) FROM jobs WHERE id = ANY(%s) AND status IN ('queued', 'running')",
                               (victim_jobs,)).fetchone()[0]:
                time.sleep(0.05)
            finished = time.monotonic() - killed
        return {"held": held, "claimed_s": claimed, "finished_s": finished}
    finally:
        for r in replicas:
            r.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3, help="status measurements per configuration, interleaved")
    parser.add_argument("--busy", type=int, default=0, help="also one replica with this many busy processes beside it")
    args = parser.parse_args()

    from tests.support.postgres import start_postgres

    root = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    pg = start_postgres(root / "pg")
    fast_port, slow_port = find_free_port(), find_free_port()
    doubles = [multiprocessing.Process(target=run_double, args=(fast_port, 0.0), daemon=True),
               multiprocessing.Process(target=run_double, args=(slow_port, 0.05), daemon=True)]
    for d in doubles:
        d.start()
    time.sleep(2)
    try:
        fast, slow = f"http://127.0.0.1:{fast_port}", f"http://127.0.0.1:{slow_port}"
        rows = [Configuration("1 replica, SQLite", "", 1, fast, root, args),
                Configuration("1 replica, PostgreSQL", pg.create_database(), 1, fast, root, args),
                Configuration("3 replicas, PostgreSQL", pg.create_database(), 3, fast, root, args)]
        if args.busy:
            rows.append(Configuration(f"1 replica, {args.busy} busy", pg.create_database(), 1, fast, root, args,
                                      busy=args.busy))
        try:
            for row in rows:
                row.start()
            for _ in range(args.rounds):
                for row in rows:
                    row.status.append(row.measured("status"))
            # Submits last: each one adds a job, which the status rounds should not see grow. Each configuration
            # starts on an idle ComfyUI, not behind the jobs of the one before.
            for row in rows:
                drained(fast)
                row.submit = row.measured("submit")
        finally:
            for row in rows:
                row.stop()
        base, one, three = rows[:3]
        print(f"\n{os.cpu_count()} cores; {args.concurrency} connections; {args.seconds:g} s per measurement; "
              f"status measured in {args.rounds} rounds, each configuration in turn (median, lowest-highest)\n")
        print(f"{'configuration':24} {'status/s':>9} {'range':>13} {'x':>6} {'ms CPU/req':>11} {'submit/s':>9} "
              f"{'x':>6} {'ms CPU/req':>11}")
        for row in rows:
            sb = row.submit
            low, high = (f(m["per_s"] for m in row.status) for f in (min, max))
            print(f"{row.name:24} {row.median('per_s'):9.0f} {f'{low:.0f}-{high:.0f}':>13} "
                  f"{row.median('per_s') / base.median('per_s'):6.2f} {row.median('cpu_per_req_ms'):11.3f} "
                  f"{sb['per_s']:9.0f} {sb['per_s'] / base.submit['per_s']:6.2f} {sb['cpu_per_req_ms']:11.3f}")
        for single in (base, one):
            ratios = [t["per_s"] / s["per_s"] for t, s in zip(three.status, single.status)]
            print(f"three replicas / {single.name}, round by round: "
                  f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f}x; goal 2.5x)")
        cpu_one, cpu_three = one.median("cpu_per_req_ms"), three.median("cpu_per_req_ms")
        print(f"status requests per replica CPU-second: one replica {1000 / cpu_one:.0f}, three replicas "
              f"{1000 / cpu_three:.0f} (scaling with cores: 3 replicas on 3 free cores would serve about "
              f"{3 * cpu_one / cpu_three:.2f}x one)")
        t = takeover(pg.create_database(), slow, root, args)
        print(f"takeover: the killed replica held {t['held']} jobs; all claimed {t['claimed_s']:.2f} s after SIGKILL "
              f"(lease {args.lease:g} s), all finished {t['finished_s']:.2f} s after")
    finally:
        for d in doubles:
            d.terminate()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)  # the cluster and the replicas' data


if __name__ == "__main__":
    main()
