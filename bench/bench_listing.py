"""Memory and time of one job listing (`GET /jobs`, A1111's progress across replicas): the store's rows, read as the
bridge did before (every column, the parameters too) and as shipped (the parameters left out), in one run.

Jobs whose parameters are large are a client's to make: a `json` parameter of a shared workflow may be a whole
request body (32 MiB by default). Reported for --jobs jobs of --param-mb each, on SQLite (a fresh file) and, with
--database postgresql://..., on PostgreSQL: the peak of Python's allocations during the listing (tracemalloc) and
its time, with the ratio before/after.

Usage: .venv/bin/python bench/bench_listing.py [--jobs 100] [--param-mb 1] [--database URL]
Goal: a listing's memory does not grow with the jobs' parameters.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import tracemalloc
from pathlib import Path

import bridge.store.base as base
from bridge.store import Job, open_store


async def measure(database: str, jobs: int, param_mb: float) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-listing-"))
    store = open_store(database or str(folder / "jobs.sqlite3"), folder)
    await store.open()
    try:
        text = "x" * int(param_mb * 1_000_000)
        for i in range(jobs):
            await store.insert(Job(id=f"bench_{i}", workflow="raw", workflow_version=1, params={"extra": {"a": [text]}},
                                   created_at=1000.0 + i, meta={"api": "jobs", "type": "raw"}), owner=None, lease=0.0)
        shipped = base._JOB_LISTED
        figures = {}
        for name, columns in (("before (every column)", base._JOB_LIST), ("shipped (params left out)", shipped)):
            base._JOB_LISTED = columns
            tracemalloc.start()
            started = time.perf_counter()
            rows = await store.query(limit=jobs, meta={"api": "jobs"})
            took = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert len(rows) == jobs
            del rows
            figures[name] = (peak, took)
            print(f"  {name:28} peak {peak / 1e6:8.1f} MB  {took * 1000:7.0f} ms")
        base._JOB_LISTED = shipped
        (pb, tb), (pa, ta) = figures.values()
        print(f"  ratio before/after: memory {pb / max(pa, 1):.0f}x, time {tb / max(ta, 1e-9):.1f}x")
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--param-mb", type=float, default=1.0)
    parser.add_argument("--database", default="", help="a PostgreSQL URL (a fresh database: jobs are inserted)")
    args = parser.parse_args()
    print(f"listing {args.jobs} jobs of {args.param_mb:g} MB parameters each "
          f"({'PostgreSQL' if args.database else 'SQLite'})")
    asyncio.run(measure(args.database, args.jobs, args.param_mb))


if __name__ == "__main__":
    main()
