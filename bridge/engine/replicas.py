"""Several bridge replicas on one shared store behave as one service.

This part runs only on a shared store (PostgreSQL). It keeps this replica's leases alive, takes over jobs nobody
holds (a replica that died, or a job released because its replica had no backend for it), follows what the other
replicas announce (a job's end wakes its waiters here, progress reaches subscribers here, a cancel asked of a job
this replica runs is carried out), and keeps the backend load the other replicas cause, for scheduling.

Timings: leases last `lease` seconds and are renewed every third of that; claims are looked for every
`claim_interval` seconds and whenever a job is released. A replica that dies leaves its jobs to the others within
one lease (plus one claim interval).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from bridge.store import TERMINAL, Job, JobStore

from .jobs import JobTable

log = logging.getLogger("bridge.engine.replicas")


class Replicas:
    def __init__(self, store: JobStore, table: JobTable, replica: str, *, lease: float, claim_interval: float,
                 adopt: Callable[[Job], Awaitable[None]], cancel: Callable[[str], Awaitable[Any]],
                 runnable: Callable[[], tuple[Collection[str], Collection[str]]],
                 loads: Callable[[dict[str, int]], None]) -> None:
        self.store = store
        self.table = table
        self.replica = replica
        self.lease = lease
        self.claim_interval = claim_interval
        self.adopt = adopt            # follow a job taken over (reconcile it, or queue it for dispatch)
        self.cancel = cancel          # cancel a job this replica runs
        self.runnable = runnable      # (workflows this replica can dispatch now, backends it is connected to)
        self.loads = loads            # every backend's unfinished jobs, all replicas together
        self.wake = asyncio.Event()
        self.takeovers = 0
        self.live: list[str] = [replica]  # the replicas seen lately, for /health
        self._tasks: list[asyncio.Task[Any]] = []
        # Held from a claim's query until its jobs are followed here: in between they are this replica's in the
        # store but not in its table, and a cancel of one of them (see `claim`) must not look in that gap.
        self._claiming = asyncio.Lock()
        # The loops also end on this flag: a cancellation that lands inside the database driver can be absorbed
        # there, and a loop that only stops on cancellation would then outlive stop().
        self._stopping = False

    async def start(self) -> None:
        await self.store.register_replica(self.replica)
        self._tasks = [asyncio.create_task(self._renew_loop(), name="replica-leases"),
                       asyncio.create_task(self._claim_loop(), name="replica-claims"),
                       asyncio.create_task(self.store.listen(self._heard, lambda: self._stopping),
                                           name="replica-listen")]

    async def stop(self) -> None:
        self._stopping = True
        self.wake.set()
        for task in self._tasks:
            task.cancel()
        _, stuck = await asyncio.wait(self._tasks, timeout=5) if self._tasks else (set(), set())
        for task in stuck:  # shutdown is never held by a driver that kept a cancellation to itself
            log.warning("%s did not stop; left behind", task.get_name())
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self.store.forget_replica(self.replica)

    # ------------------------------------------------------------------ leases
    async def _renew_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.lease / 3)
            if self._stopping:
                return
            # Only the jobs followed before the renewal are judged by it: one claimed meanwhile is not in it.
            followed = {job.id: job for job in self.table.owned()}
            try:
                held = await self.store.renew(self.replica, self.lease, list(followed))
            except Exception as exc:  # noqa: BLE001 - the store is away: the leases run out, others take over
                log.warning("leases not renewed: %s", exc)
                continue
            for job_id, job in followed.items():
                if job_id not in held and not job.done and not self.table.writing(job_id):
                    log.warning("job %s: taken over by another replica; let go here", job_id)
                    self.table.let_go(job)
            try:
                await self.table.refresh_counts()
                self.loads(await self.store.backend_loads())
                self.live = [r["id"] for r in await self.store.replicas(within=2 * self.lease)]
            except Exception as exc:  # noqa: BLE001 - counts stay as they were until the next round
                log.info("counts not refreshed: %s", exc)

    # ------------------------------------------------------------------ claims
    async def _claim_loop(self) -> None:
        while not self._stopping:
            # asyncio.wait, not wait_for: Python 3.11's wait_for can swallow a cancellation that arrives as its
            # timeout does, and this loop would then outlive stop().
            waiter = asyncio.ensure_future(self.wake.wait())
            try:
                await asyncio.wait({waiter}, timeout=self.claim_interval)
            finally:
                waiter.cancel()
            self.wake.clear()
            if self._stopping:
                return
            try:
                await self.claim()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - try again at the next interval
                log.warning("claiming jobs failed: %s", exc)

    async def claim(self, job_id: str | None = None) -> list[Job]:
        """Take over jobs nobody holds that this replica can carry on: ones on a backend it is connected to
        (reconciled there), and ones never dispatched whose workflow it can run now.

        Every job claimed is followed before any is cancelled, and a claim for one job (a cancel's, which looks
        in the table once it returns) waits for a claim under way: a job this replica holds in the store but does
        not follow yet finds nobody to cancel it, and a DELETE then removed it while it went on running here."""
        workflows, backends = self.runnable()
        if not workflows and not backends:
            return []
        async with self._claiming:
            claimed = await self.store.claim(self.replica, self.lease, 100, job_id=job_id,
                                             workflows=list(workflows), backends=list(backends))
            for job in claimed:
                self.takeovers += 1
                log.info("job %s: taken over (%s, prompt %s)", job.id, job.status, job.prompt_id)
                await self.adopt(job)
        for job in claimed:
            if job.cancel_requested:
                await self.cancel(job.id)
        return claimed

    # ------------------------------------------------------------------ what the others say
    def _heard(self, note: dict[str, Any]) -> None:
        kind = note.get("type")
        if kind == "resync":
            # Announcements may have been missed while listening was down: check on everything waited for, and on
            # the jobs run here (a cancel asked meanwhile would otherwise go unheard and its job run to its end).
            self.wake.set()
            asyncio.get_running_loop().create_task(self._recheck_waiters())
            asyncio.get_running_loop().create_task(self._recheck_cancels())
            return
        if note.get("from") == self.replica:
            return
        job_id = str(note.get("id") or "")
        if kind == "queued":
            self.wake.set()
        elif kind == "cancel":
            if self.table.live(job_id) is not None:
                asyncio.get_running_loop().create_task(self.cancel(job_id))
            elif self._claiming.locked():
                # a claim under way may be taking this job, its copy read before the request
                asyncio.get_running_loop().create_task(self._cancel_once_claimed(job_id))
        elif kind == "deleted":
            self.table.uncache(job_id)
            self.table.ended(job_id)
        elif kind in ("status", "progress", "preview"):
            if note.get("status") in TERMINAL:
                self.table.uncache(job_id)
                self.table.ended(job_id)
            if self.table.hub.wants(job_id):
                asyncio.get_running_loop().create_task(self._relay(kind, job_id))

    async def _relay(self, kind: str, job_id: str) -> None:
        """An event of a job another replica runs, to this replica's subscribers, from the committed row."""
        job = await self.store.load(job_id)
        if job is not None:
            self.table.hub.emit(kind, job, remote=True)

    async def _cancel_once_claimed(self, job_id: str) -> None:
        async with self._claiming:
            pass
        if self.table.live(job_id) is not None:
            await self.cancel(job_id)

    async def _recheck_cancels(self) -> None:
        for job in self.table.owned():
            row = await self.store.load(job.id)
            if row is not None and row.cancel_requested and self.table.live(job.id) is not None:
                await self.cancel(job.id)

    async def _recheck_waiters(self) -> None:
        for job_id in self.table.waited_on():
            job = await self.store.load(job_id)
            if job is None or job.done:
                self.table.ended(job_id)
