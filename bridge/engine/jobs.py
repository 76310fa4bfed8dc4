"""The job table: this replica's view of the jobs, their transitions, persistence, and the events they publish.

In memory are the jobs this replica owns (every unfinished one it dispatches and follows) and recently finished
ones (up to `keep_in_memory`); any other job is read from the store. Transitions are synchronous (they run inside
websocket event handlers) and persisted by one writer task, in order, coalescing a job's changes that pile up; a
step that must be durable first (posting a prompt to ComfyUI) awaits `persisted(job)`. Every write is fenced on
ownership: a replica that lost a job to another one (it stalled past its lease) learns it from the failed write and
lets the job go (`on_lost`). On a shared store each write also announces the change to the other replicas, in the
same transaction.

Counts per status feed the queue bound's quick check, `/health` and `/metrics`: exact and in memory on one replica;
on a shared store they are the store's counts, refreshed every second (the exact bound is checked at insert). A
refresh whose read raced a change of the counts here (not yet in the store, or made while the read was out) is
dropped: used, it would count that change twice or undo it until the next refresh.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from bridge.store import STATUSES, TERMINAL, Delivery, Job, JobStore, LimitReached

log = logging.getLogger("bridge.engine")

# Which announcement wins when a job's changes are written together.
_RANK = {None: 0, "progress": 1, "status": 2}
# A progress change alone is written at most this often per job (every status change is written at once).
PROGRESS_WRITE_INTERVAL = 0.25


def put_latest(queue: asyncio.Queue[Any], item: Any) -> None:
    """Put `item`, dropping the oldest one when the queue is full: a slow reader loses old events, never new ones."""
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(item)


class EventHub:
    """Fan-out of job events to subscribers; a slow subscriber loses old progress, never the newest state."""

    def __init__(self, maxsize: int = 1000) -> None:
        self.maxsize = maxsize
        self._subs: list[tuple[str | None, asyncio.Queue[dict[str, Any]]]] = []
        # Called on every event of a job this replica runs, on the loop, before any subscriber (webhooks record
        # deliveries here); events heard from other replicas reach subscribers only.
        self.listeners: list[Callable[[str, Job], None]] = []

    def wants(self, job_id: str) -> bool:
        return any(f is None or f == job_id for f, _ in self._subs)

    def emit(self, kind: str, job: Job, *, remote: bool = False) -> None:
        if not remote:
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
            put_latest(queue, event)

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
    def __init__(self, store: JobStore, hub: EventHub, replica: str, *, lease: float = 30.0,
                 keep_in_memory: int = 10000, drop_inputs: Callable[[str], None] = lambda job_id: None,
                 on_lost: Callable[[Job], None] = lambda job: None) -> None:
        self.store = store
        self.hub = hub
        self.replica = replica
        self.lease = lease
        # Called with a job id when its stored input images are no longer needed (the engine removes them from
        # the blob store in the background).
        self.drop_inputs = drop_inputs
        # Called when a write finds the job taken over by another replica (or deleted): stop following it.
        self.on_lost = on_lost
        # Awaited before a job's end is written: the webhook messages about it, written in the same transaction.
        self.before_end: Callable[[Job], Awaitable[list[Delivery]]] | None = None
        # told once a job's end is written (True) or found to be another replica's (False)
        self.after_end: Callable[[Job, bool], None] | None = None
        self.keep_in_memory = keep_in_memory
        self._jobs: dict[str, Job] = {}
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._done: dict[str, asyncio.Event] = {}
        self.counts: dict[str, int] = {s: 0 for s in STATUSES}
        self._durations = [0, 0.0]  # completed jobs timed, their summed seconds
        # What a refresh of the counts checks (see the module's docstring): `_changes` moves with every change of
        # the counts here and again once the store has it; `_unwritten`: jobs whose status changed here and is not
        # written yet; `_settling`: such writes, inserts and deletes under way.
        self._changes = 0
        self._unwritten: set[str] = set()
        self._settling = 0
        # The writer: jobs with unwritten changes (the job, the announcement to send), in order of first change.
        self._dirty: dict[str, tuple[Job, str | None]] = {}
        self._writing: dict[str, asyncio.Future[bool]] = {}
        self._waiters: dict[str, list[asyncio.Future[bool]]] = {}
        self._wake = asyncio.Event()
        self._last_progress_write: dict[str, float] = {}
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def shared(self) -> bool:
        return self.store.shared

    # ------------------------------------------------------------------ start, stop
    async def load(self, *, claim_all: bool) -> list[Job]:
        """Read counts and recent finished jobs; on a store of its own (`claim_all`) take every unfinished job
        (the previous process of this bridge left them). Returns the jobs now owned."""
        await self.refresh_counts()
        for job in reversed(await self.store.recent(min(self.keep_in_memory, 1000))):
            if job.done:
                self._remember(job)
        owned = await self.store.claim(self.replica, self.lease, 1_000_000, every=True) if claim_all else []
        for job in owned:
            self._jobs[job.id] = job
        self._writer = asyncio.create_task(self._write_loop(), name="engine-writer")
        return owned

    async def close(self) -> None:
        """Write what is left, then stop the writer."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.flush(), 10)
        if self._writer is not None:
            self._closing = True
            self._wake.set()
            self._writer.cancel()
            # A cancellation absorbed inside the database driver must not hold shutdown: the flag ends the loop too.
            await asyncio.wait({self._writer}, timeout=5)

    async def refresh_counts(self) -> None:
        before = self._changes
        counts = await self.store.counts()
        n, total = await self.store.duration_stats()
        if self._changes != before or self._unwritten or self._settling:
            return  # a change here raced the read: the counts here stay as they are until the next refresh
        self.counts = counts
        self._durations = [n, total]

    # ------------------------------------------------------------------ reads
    def get(self, job_id: str) -> Job | None:
        """This replica's own copy (a job it runs, or one that finished recently); no store read."""
        return self._jobs.get(job_id)

    async def find(self, job_id: str) -> Job | None:
        """The job wherever it runs: this replica's copy, else the store's row."""
        job = self._jobs.get(job_id)
        if job is not None:
            return job
        job = await self.store.load(job_id)
        if job is not None and job.done:
            self._remember(job)
        return job

    def live(self, job_id: str) -> Job | None:
        """A job this replica runs (unfinished and owned): for event handlers on the hot path."""
        job = self._jobs.get(job_id)
        return job if job is not None and not job.done else None

    def owned(self) -> list[Job]:
        return [j for j in self._jobs.values() if not j.done]

    def running(self) -> list[Job]:
        return [j for j in self._jobs.values() if j.status == "running"]

    def queued(self) -> list[Job]:
        return [j for j in self._jobs.values() if j.status == "queued"]

    async def list(self, status: str | None, workflow: str | None, limit: int, offset: int,
                   meta: Mapping[str, str] | None = None) -> list[Job]:
        if self._dirty or self._writing:
            await self.flush()  # a listing shows this replica's own changes, however recent
        rows = await self.store.query(status=status, workflow=workflow, limit=limit, offset=offset, meta=meta)
        # This replica's copy of a job it runs has progress that is not written on every step.
        return [self._jobs.get(j.id, j) for j in rows]

    @property
    def active(self) -> int:
        return self.counts["queued"] + self.counts["running"]

    def active_here_for(self, client: str) -> int:
        return sum(1 for j in self._jobs.values() if not j.done and j.meta.get("client") == client)

    def average_duration(self) -> float | None:
        n, total = self._durations
        return total / n if n else None

    def timed(self) -> int:
        return self._durations[0]

    # ------------------------------------------------------------------ joining and leaving
    async def insert(self, job: Job, *, max_active: int, max_per_client: int, owned: bool = True) -> None:
        """Store an accepted job (LimitReached when the queue or its client is full) and, when `owned`, follow
        it here; otherwise it waits in the store for a replica with a backend to claim it."""
        announce = None if owned else self.announcement("queued", job)
        if self.shared:
            # The store counts every replica's jobs: this one's own ends must be in it first.
            await self.flush()
        else:
            # Alone, the counts here are exact (and include ends not written yet).
            if max_active and self.active >= max_active:
                raise LimitReached("queue", self.active)
            client = job.meta.get("client")
            if max_per_client and client is not None and self.active_here_for(client) >= max_per_client:
                raise LimitReached("client", self.active_here_for(client))
            max_active = max_per_client = 0
        self._settling += 1
        try:
            await self.store.insert(job, owner=self.replica if owned else None, lease=self.lease,
                                    max_active=max_active, max_per_client=max_per_client, notify=announce)
            self.counts[job.status] += 1
        finally:
            self._settling -= 1
            self._changes += 1
        if owned:
            self._jobs[job.id] = job

    def adopt(self, job: Job) -> Job:
        """A job claimed from the store is followed here from now on (the copy already here, if any, is kept)."""
        current = self._jobs.get(job.id)
        if current is not None and not current.done:
            return current
        self._finished.pop(job.id, None)
        self._jobs[job.id] = job
        return job

    def let_go(self, job: Job) -> None:
        """Stop following a job another replica runs now; its waiters hear of its end from the store."""
        if self._jobs.get(job.id) is job:
            del self._jobs[job.id]
        self._dirty.pop(job.id, None)
        self._unwritten.discard(job.id)  # never written here: a refresh may count it as the store has it

    async def release(self, job: Job) -> bool:
        """Hand a queued job to whichever replica can dispatch it (this one has no backend for it now)."""
        await self.persisted(job)
        released = await self.store.release(job, self.replica, notify=self.announcement("queued", job))
        self.let_go(job)
        return released

    def forget(self, job: Job) -> None:
        """Drop a job refused after it was stored (its backend rejected the graph): it was never accepted."""
        self.counts[job.status] -= 1
        self.let_go(job)
        if job.inputs:
            self.drop_inputs(job.id)

    async def remove(self, job: Job) -> None:
        """Drop a job for good (DELETE /jobs/{id}, retention), finished or not (a cancel never confirmed)."""
        if self._jobs.pop(job.id, None) is not None or self.counts[job.status] > 0:
            self.counts[job.status] = max(0, self.counts[job.status] - 1)
        self._finished.pop(job.id, None)
        self._dirty.pop(job.id, None)
        self._unwritten.discard(job.id)
        self._changes += 1
        self._settling += 1
        try:
            await self.store.delete(job.id)
        finally:
            self._settling -= 1
            self._changes += 1
            self.ended(job.id)  # its waiters look again: a job removed unfinished never ends
        await self.store.publish(self.announcement("deleted", job))

    def uncache(self, job_id: str) -> None:
        """Another replica changed or deleted a finished job: read it again next time."""
        job = self._jobs.get(job_id)
        if job is not None and job.done:
            del self._jobs[job_id]
            self._finished.pop(job_id, None)

    # ------------------------------------------------------------------ persistence
    def save(self, job: Job, kind: str | None = None) -> None:
        """Write the job's state soon (in order with its other changes), announcing `kind` to other replicas."""
        pending = self._dirty.get(job.id)
        if pending is not None and _RANK[pending[1]] >= _RANK[kind]:
            kind = pending[1]
        self._dirty[job.id] = (job, kind)
        self._wake.set()

    async def persisted(self, job: Job) -> bool:
        """Wait until the job's changes so far are in the store; False when another replica owns it now."""
        if job.id not in self._dirty and job.id not in self._writing:
            return self._jobs.get(job.id) is job or job.done
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job.id, []).append(future)
        self._wake.set()
        return await future

    def writing(self, job_id: str) -> bool:
        """The job has changes not yet in the store."""
        return job_id in self._dirty or job_id in self._writing

    async def flush(self) -> None:
        while self._dirty or self._writing:
            ids = list(self._dirty) + list(self._writing)
            jobs = [self._dirty[i][0] if i in self._dirty else None for i in ids]
            await asyncio.gather(*(self.persisted(j) for j in jobs if j is not None), return_exceptions=True)
            if not any(j is not None for j in jobs):
                await asyncio.sleep(0.01)

    async def _write_loop(self) -> None:
        delay = 0.05
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                job_id = next(iter(self._dirty))
                job, kind = self._dirty.pop(job_id)
                future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
                self._writing[job_id] = future
                status = False
                try:
                    messages: list[Delivery] = []
                    if job.done and self.before_end is not None:
                        try:
                            messages = await self.before_end(job)
                        except Exception:  # noqa: BLE001 - the end is written whatever a hook does
                            log.exception("job %s: making its end's messages failed", job_id)
                    # The job's values are read as the write starts: a status changed from here on is written again.
                    status = job_id in self._unwritten
                    self._unwritten.discard(job_id)
                    self._settling += status
                    try:
                        ok = await self.store.save(job, owner=self.replica, lease=self.lease,
                                                   notify=self.announcement(kind, job) if kind else None,
                                                   deliveries=messages)
                    finally:
                        self._settling -= status
                        self._changes += status
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the store is unreachable: keep the change, try again
                    log.warning("job %s: not written (%s); trying again in %.1f s", job_id, exc, delay)
                    self._dirty.setdefault(job_id, (job, kind))
                    if status:
                        self._unwritten.add(job_id)
                    self._writing.pop(job_id, None)
                    future.cancel()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                delay = 0.05
                self._writing.pop(job_id, None)
                if job.done and self.after_end is not None:
                    self.after_end(job, ok)
                if not ok and job_id not in self._dirty:
                    log.warning("job %s: another replica runs it now (or it was deleted); let go here", job_id)
                    self.let_go(job)
                    self.on_lost(job)
                if job_id not in self._dirty:
                    for waiter in self._waiters.pop(job_id, []):
                        if not waiter.done():
                            waiter.set_result(ok)
                future.set_result(ok)

    def announcement(self, kind: str, job: Job) -> dict[str, Any] | None:
        if not self.shared:
            return None
        return {"type": kind, "id": job.id, "status": job.status, "from": self.replica}

    # ------------------------------------------------------------------ transitions
    def emit(self, kind: str, job: Job) -> None:
        self.hub.emit(kind, job)
        if self.shared and kind == "progress":
            # Other replicas show progress from the store: written at most every PROGRESS_WRITE_INTERVAL.
            now = time.monotonic()
            if now - self._last_progress_write.get(job.id, -1e9) >= PROGRESS_WRITE_INTERVAL:
                self._last_progress_write[job.id] = now
                self.save(job, kind)

    def status_changed(self, job: Job) -> None:
        """Persist and announce a change of status (or of what a status answer shows)."""
        self.save(job, "status")
        self.hub.emit("status", job)

    def mark_running(self, job: Job) -> bool:
        if job.status != "queued" or job.done:
            return False
        self._count(job, "running")
        job.status = "running"
        job.started_at = time.time()
        self.status_changed(job)
        return True

    def reset_to_queued(self, job: Job) -> None:
        """Back to waiting for a backend, as if never dispatched."""
        if job.status == "running":
            self._count(job, "queued")
        job.status, job.backend, job.prompt_id = "queued", None, None
        job.started_at, job.progress, job.step, job.steps = None, 0.0, None, None
        self.save(job, "status")

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
        if job.inputs:
            # (a job without input images has nothing to remove: no listing of the store for it)
            self.drop_inputs(job.id)
        self._remember(job)
        self._last_progress_write.pop(job.id, None)
        self.save(job, "status")
        self.ended(job.id)
        self.hub.emit("status", job)
        return True

    def ended(self, job_id: str) -> None:
        """Wake whoever waits for the job's end (here, or heard from the replica that ran it)."""
        event = self._done.pop(job_id, None)
        if event is not None:
            event.set()

    def done_event(self, job_id: str) -> asyncio.Event:
        return self._done.setdefault(job_id, asyncio.Event())

    def waited_on(self) -> list[str]:
        return list(self._done)

    def _count(self, job: Job, new_status: str) -> None:
        self.counts[job.status] = max(0, self.counts[job.status] - 1)
        self.counts[new_status] += 1
        self._unwritten.add(job.id)
        self._changes += 1

    def _remember(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._finished[job.id] = None
        self._finished.move_to_end(job.id)
        while len(self._finished) > self.keep_in_memory:
            old, _ = self._finished.popitem(last=False)
            self._jobs.pop(old, None)
