"""Store writes of a webhook backlog for a receiver that never answers, in one run: the delivery loop as shipped
(a round's passed-over messages given back in one statement, due again after as long as the receiver has hung, at
least PASS_BACK_DELAY, at most a claim's hold) against the way it gave them back before (one UPDATE a message, due
again every PASS_BACK_DELAY), the rest of the loop the same.

--messages messages of one job to one receiver are due at the start; the receiver never answers (each attempt gives
up after the policy's 10 s and is retried later), so WAITING_PER_KEY of them are held in memory and the rest are
claimed and given back again and again. For --seconds of each configuration: the statements that write
`webhook_deliveries` (claims, give-backs, attempts' outcomes) and the rows they change, with the ratio before/after.
SQLite (a fresh file) unless --database names a PostgreSQL URL (a shared store: the delay does not grow there).

With --recovery the receiver answers (at once) after hanging --seconds, and what is measured is how much of the
backlog has gone out 5, 10, 20 and 40 s after that: as shipped against the due times of the messages given back
while it hung left as they were (the loop before the receiver's first answer moved them).

Usage: .venv/bin/python bench/bench_webhook_backlog.py [--messages 2000] [--seconds 60] [--database URL] [--recovery]
Goal: a hanging receiver's backlog costs a few statements a round, and fewer rows the longer it hangs; once it
answers again, the backlog goes out within seconds, not after up to a claim's hold.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bridge import webhooks as wh
from bridge.store import Delivery, Job, open_store


async def run(database: str, messages: int, seconds: float, before: bool) -> tuple[int, int, float]:
    with tempfile.TemporaryDirectory(prefix="bench-webhook-backlog-") as folder:
        return await measure(Path(folder), database, messages, seconds, before)


async def backlog(folder: Path, database: str, messages: int, answers: asyncio.Event) -> tuple[wh.Webhooks, str]:
    """Webhooks over a fresh store holding `messages` due messages of one job, to a receiver that hangs until
    `answers` is set (each attempt gives up after BRIDGE_WEBHOOK_TIMEOUT, as the bridge's sender does, and is
    retried later) and answers 204 at once after; (webhooks, job id)."""
    store = open_store(database or str(folder / "jobs.sqlite3"), folder)
    await store.open()
    job_id = f"bench-{time.time_ns()}"  # a PostgreSQL database is shared by both runs
    await store.insert(Job(id=job_id, workflow="w", workflow_version=1, params={}), owner="me", lease=3600)
    now = time.time()
    for i in range(messages):
        await store.save_delivery(Delivery(id=f"{job_id}-{i}", job_id=job_id, url="http://hangs.example/hook",
                                           event="job.progress", payload="{}", created_at=now, next_at=now))

    async def send(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        await asyncio.wait_for(answers.wait(), timeout)
        return 204

    async def describe(job: Job) -> dict:
        return {"id": job.id}

    return wh.Webhooks(store, "whsec_" + "A" * 32, send, describe=describe), job_id


async def measure(folder: Path, database: str, messages: int, seconds: float, before: bool) -> tuple[int, int, float]:
    hooks, _ = await backlog(folder, database, messages, asyncio.Event())
    store = hooks.store

    counts = [0, 0]
    execute, fetch = store._execute, store._fetch

    async def counted_execute(sql, args=()):
        changed = await execute(sql, args)
        if sql.startswith("UPDATE webhook_deliveries"):
            counts[0] += 1
            counts[1] += changed
        return changed

    async def counted_fetch(sql, args=()):
        rows = await fetch(sql, args)
        if sql.startswith("UPDATE webhook_deliveries"):
            counts[0] += 1
            counts[1] += len(rows)
        return rows

    store._execute, store._fetch = counted_execute, counted_fetch
    if before:
        reclaim = store.reclaim_deliveries

        async def one_by_one(held, until):
            if hooks._stopped or any(i in hooks._in_flight for i, _ in held):
                return await reclaim(held, until)  # stop()'s release, an attempt taking its message again: as ever
            return sum([await reclaim([h], time.time() + wh.PASS_BACK_DELAY) for h in held])

        store.reclaim_deliveries = one_by_one
    started = time.monotonic()
    loop = asyncio.create_task(hooks.run())
    await asyncio.sleep(seconds)
    loop.cancel()
    await hooks.stop()
    took = time.monotonic() - started
    await store.close()
    return counts[0], counts[1], took


async def recovery(database: str, messages: int, seconds: float, before: bool) -> list[int]:
    """Messages delivered 5, 10, 20 and 40 s after a receiver that hung `seconds` answers again."""
    with tempfile.TemporaryDirectory(prefix="bench-webhook-backlog-") as folder:
        answers = asyncio.Event()
        hooks, job_id = await backlog(Path(folder), database, messages, answers)
        if before:
            async def left(due, to):  # the due times given back with stay as they are
                return 0

            hooks.store.advance_deliveries = left
        loop = asyncio.create_task(hooks.run())
        await asyncio.sleep(seconds)
        answers.set()
        started, delivered = time.monotonic(), []
        for mark in (5, 10, 20, 40):
            await asyncio.sleep(started + mark - time.monotonic())
            await hooks.write_settled()
            delivered.append(sum(d.status == "delivered" for d in await hooks.store.deliveries_for(job_id)))
        loop.cancel()
        await hooks.stop()
        await hooks.store.close()
        return delivered


async def main_async(args: argparse.Namespace) -> None:
    print(f"{args.messages} messages due to a receiver that never answers, {args.seconds:g} s each, "
          f"{'PostgreSQL' if args.database else 'SQLite'}; WAITING_PER_KEY {wh.WAITING_PER_KEY}, "
          f"PASS_BACK_DELAY {wh.PASS_BACK_DELAY:g} s, hold {wh.Policy().timeout + 30:g} s")
    if args.recovery and args.database:
        raise SystemExit("--recovery measures a bridge of its own (SQLite): with a shared store the delay never grows")
    if args.recovery:
        print(f"  the receiver answers after {args.seconds:g} s; messages delivered 5 / 10 / 20 / 40 s after that:")
        for name, before in (("due times given back with kept", True), ("shipped (moved at the first answer)", False)):
            counts = await recovery(args.database, args.messages, args.seconds, before)
            print(f"  {name:42} " + " / ".join(f"{c:,}" for c in counts))
        return
    figures = {}
    for name, before in (("before (a statement a message, every 5 s)", True), ("shipped", False)):
        statements, rows, took = await run(args.database, args.messages, args.seconds, before)
        figures[name] = (statements, rows)
        print(f"  {name:42} {statements:7,} statements  {rows:8,} rows written  (loop ran {took:.1f} s)")
    (sb, rb), (sa, ra) = figures.values()
    print(f"  ratio before/after: statements {sb / max(sa, 1):.1f}x, rows {rb / max(ra, 1):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--database", default="", help="a PostgreSQL URL")
    parser.add_argument("--recovery", action="store_true", help="time the backlog's delivery once the receiver answers")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
