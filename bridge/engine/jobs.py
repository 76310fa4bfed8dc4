"""The job table: every job's state, its transitions, persistence and the events they publish.

Jobs live in memory for fast reads (unfinished ones always, finished ones up to `keep_in_memory`, most recent
first) and in the store, written on every state change, so a restarted bridge loses no accepted job. Each
transition updates the per-status counts that the queue bound, `/health` and `/metrics` read.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from bridge.errors import InvalidParameter
from bridge.store import STATUSES, TERMINAL, Job, Store

log = logging.getLogger("bridge.engine")


class EventHub:
    """Fan-out of job events to subscribers; a slow subscriber loses old progress, never the newest state."""

    def __init__(self, maxsize: int = 1000) -> None:
        self.maxsize = maxsize
        self._subs: list[tuple[str | None, asyncio.Queue[dict[str, Any]]]] = []
        # Called on every event, on the loop, before any subscriber (webhooks record deliveries here).
        self.listeners: list[Callable[[str, Job], None]] = []

    def emit(self, kind: str, job: Job) -> None:
        for listener in self.listeners:
            try:
                listener(kind, job)
            except Exception:  # noqa: BLE001 - a listener's failure must not stop the job's own events
                log.exception("event listener failed for job %s", job.id)
        if not self._subs:
            return
        event = {"type": kind, "job": job.to_dict()}
        if kind == "preview":
            event["preview"] = f"/jobs/{job.id}/preview"
        for job_filter, queue in self._subs:
            if job_filter is not None and job_filter != job.id:
                continue
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    async def stream(self, job_id: str | None, first: Job | None) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=self.maxsize)
        sub = (job_id, queue)
        self._subs.append(sub)
        try:
            if first is not None:
                yield {"type": "status", "job": first.to_dict()}
                if first.done:
                    return
            while True:
                event = await queue.get()
                yield event
                if job_id is not None and event["job"]["status"] in TERMINAL:
                    return
        finally:
            with contextlib.suppress(ValueError):
                self._subs.remove(sub)


class JobTable:
    def __init__(self, store: Store, hub: EventHub, *, keep_in_memory: int = 10000,
                 drop_inputs: Callable[[str], None] = lambda job_id: None) -> None:
        self.store = store
        self.hub = hub
        # Called with a job id when its stored input images are no longer needed (the engine removes them from
        # the blob store in the background).
        self.drop_inputs = drop_inputs
        self.keep_in_memory = keep_in_memory
        self._jobs: dict[str, Job] = {}
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._done: dict[str, asyncio.Event] = {}
        self.counts: dict[str, int] = {s: 0 for s in STATUSES}
        self._durations = [0, 0.0]  # completed jobs timed, their summed seconds

    def load(self) -> list[Job]:
        """Read counts and recent finished jobs from the store; returns the unfinished jobs (now in memory)."""
        self.counts = self.store.counts()
        n, total = self.store.duration_stats()
        self._durations = [n, total]
        for job in reversed(self.store.recent(min(self.keep_in_memory, 1000))):
            if job.done:
                self._remember(job)
        unfinished = self.store.unfinished()
        for job in unfinished:
            self._jobs[job.id] = job
        return unfinished

    # ------------------------------------------------------------------ reads
    def get(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None and isinstance(job_id, str):
            job = self.store.load(job_id)
            if job is not None and job.done:
                self._remember(job)
        return job

    def live(self, job_id: str) -> Job | None:
        """The in-memory job only (no store read): for event handlers on the hot path."""
        return self._jobs.get(job_id)

    def running(self) -> list[Job]:
        return [j for j in self._jobs.values() if j.status == "running"]

    def queued(self) -> list[Job]:
        return [j for j in self._jobs.values() if j.status == "queued"]

    def list(self, status: str | None, workflow: str | None, limit: int, offset: int) -> list[Job]:
        if status is not None and status not in STATUSES:
            raise InvalidParameter("status", f"status must be one of {', '.join(STATUSES)}")
        if not isinstance(limit, int) or not 0 < limit <= 1000:
            raise InvalidParameter("limit", "limit must be an integer between 1 and 1000")
        if not isinstance(offset, int) or offset < 0:
            raise InvalidParameter("offset", "offset must be a non-negative integer")
        rows = self.store.query(status=status, workflow=workflow, limit=limit, offset=offset)
        # The live copy has progress that is not written on every step.
        return [self._jobs.get(j.id, j) for j in rows]

    def active_for(self, client: str) -> int:
        """Jobs of one client waiting or running."""
        return sum(1 for j in self._jobs.values() if not j.done and j.meta.get("client") == client)

    @property
    def active(self) -> int:
        return self.counts["queued"] + self.counts["running"]

    def average_duration(self) -> float | None:
        n, total = self._durations
        return total / n if n else None

    def timed(self) -> int:
        return self._durations[0]

    # ------------------------------------------------------------------ transitions
    def add(self, job: Job) -> None:
        self._jobs[job.id] = job
        self.counts[job.status] += 1

    def forget(self, job: Job) -> None:
        """Drop a job refused at submit time (it was never accepted)."""
        self.counts[job.status] -= 1
        self._jobs.pop(job.id, None)
        self.store.delete(job.id)
        self.drop_inputs(job.id)

    def remove(self, job: Job) -> None:
        """Drop a finished job for good (DELETE /jobs/{id}, retention)."""
        known = self._jobs.pop(job.id, None) is not None
        if known or self.store.load(job.id) is not None:
            self.counts[job.status] = max(0, self.counts[job.status] - 1)
        self._finished.pop(job.id, None)
        self._done.pop(job.id, None)
        self.store.delete(job.id)
        self.store.delete_deliveries(job.id)

    def save(self, job: Job) -> None:
        self.store.save(job)

    def emit(self, kind: str, job: Job) -> None:
        self.hub.emit(kind, job)

    def mark_running(self, job: Job) -> bool:
        if job.status != "queued" or job.done:
            return False
        self._count(job, "running")
        job.status = "running"
        job.started_at = time.time()
        self.save(job)
        self.emit("status", job)
        return True

    def reset_to_queued(self, job: Job) -> None:
        """Back to waiting for a backend, as if never dispatched."""
        if job.status == "running":
            self._count(job, "queued")
        job.status, job.backend, job.prompt_id = "queued", None, None
        job.started_at, job.progress, job.step, job.steps = None, 0.0, None, None
        self.save(job)

    def finish(self, job: Job, status: str, error: str | None) -> bool:
        if job.done:
            return False
        self._count(job, status)
        job.status = status
        job.error = error
        job.finished_at = time.time()
        if status == "completed":
            job.progress = 100.0
            if job.started_at is not None:
                self._durations[0] += 1
                self._durations[1] += job.finished_at - job.started_at
        self.save(job)
        self.drop_inputs(job.id)
        self._remember(job)
        event = self._done.pop(job.id, None)
        if event is not None:
            event.set()
        self.emit("status", job)
        return True

    def done_event(self, job_id: str) -> asyncio.Event:
        return self._done.setdefault(job_id, asyncio.Event())

    def _count(self, job: Job, new_status: str) -> None:
        self.counts[job.status] -= 1
        self.counts[new_status] += 1

    def _remember(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._finished[job.id] = None
        self._finished.move_to_end(job.id)
        while len(self._finished) > self.keep_in_memory:
            old, _ = self._finished.popitem(last=False)
            self._jobs.pop(old, None)
