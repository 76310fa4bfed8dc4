"""Following submitted prompts to their end: websocket events into job state, those messages (or `/history` where
they fall short) into results, and the cases where messages are missed (a reconnect, a lost backend, a stalled run,
a timeout).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from bridge import images as image_io
from bridge import infotext
from bridge import workflows as wfmod
from bridge.storage import BlobStore, content_type
from bridge.store import Job, output_key, outputs_prefix

from .client import BackendError
from .connection import Connection
from .dispatcher import Dispatcher
from .events import (Event, ExecutionCached, ExecutionError, ExecutionInterrupted, ExecutionStart,
                     ExecutionSuccess, Executed, Executing, Preview, Progress)
from .jobs import JobTable
from .options import EngineOptions
from .results import Outcome, entry_from_run, past_bounds, read_outcome
from .retention import comfyui_files
from .runs import Run, Runs

# Live previews: "preview" events per job at most this often; the last previews of finished jobs kept.
PREVIEW_EVENT_INTERVAL = 0.5
PREVIEWS_KEPT = 256

log = logging.getLogger("bridge.engine.tracker")


def _restamp(png: bytes, text: str | None) -> bytes:
    stripped = image_io.strip_metadata(png)
    return image_io.add_text(stripped, "parameters", text) if text else stripped


class Tracker:
    def __init__(self, table: JobTable, runs: Runs, blobs: BlobStore, dispatcher: Dispatcher,
                 connections: Mapping[str, Connection], workflows: Callable[[], Mapping[str, wfmod.Workflow]],
                 spawn: Callable[[Coroutine[Any, Any, Any]], None], *, poll_interval: float = 2.0,
                 cancel_grace: float = 5.0, requeue_on_backend_death: bool = False,
                 queue_poll_interval: float = 5.0, queue_timeout: float | None = None,
                 metadata: str = "infotext", comfyui_output_dirs: Mapping[str, Path] | None = None,
                 max_output_bytes: int = EngineOptions.max_output_bytes) -> None:
        self.table = table
        self.runs = runs
        self.previews: dict[str, tuple[str, bytes]] = {}
        self.blobs = blobs
        self.dispatcher = dispatcher
        self.connections = connections
        self._workflows = workflows
        self.spawn = spawn
        self.poll_interval = poll_interval
        self.cancel_grace = cancel_grace
        self.requeue_on_backend_death = requeue_on_backend_death
        self.queue_poll_interval = queue_poll_interval
        self.queue_timeout = queue_timeout
        # What stored PNGs carry (BRIDGE_OUTPUT_METADATA): "infotext", "none", or "comfyui" (the graph as saved).
        self.metadata = metadata
        # ComfyUI output folders the bridge can reach (managed ComfyUI): its copies are removed once stored here.
        self.comfyui_output_dirs = dict(comfyui_output_dirs or {})
        self.copies = dispatcher.copies  # one remover, for results' copies and uploaded inputs alike
        self._queue_checked: dict[str, float] = {}
        self.max_output_bytes = max_output_bytes

    # ------------------------------------------------------------------ ending a job
    def finish(self, job: Job, status: str, error: str | None) -> None:
        if job.done:
            return
        conn = self.connections.get(job.backend or "")
        if conn is not None:
            conn.jobs.discard(job.id)
        run = self.runs.get(job.id)
        if run is not None and run.preview is not None:
            # An interrupted image's last preview is what A1111 answers with (its partly finished picture).
            self.previews[job.id] = run.preview
            while len(self.previews) > PREVIEWS_KEPT:
                self.previews.pop(next(iter(self.previews)))
        self.runs.stop(job)
        self.dispatcher.remove(job.id)
        self.table.finish(job, status, error)
        self.dispatcher.drop_uploads(job, job.prompt_id)
        self.dispatcher.wake.set()
        if error:
            log.info("job %s: %s: %s", job.id, status, error)

    def fail(self, job: Job, error: str) -> None:
        self.finish(job, "failed", error)

    def run_for(self, job: Job) -> Run:
        return self.runs.get(job.id) or Run.for_job(self._workflows().get(job.workflow), job)

    # ------------------------------------------------------------------ backend lifecycle (Listener)
    async def backend_up(self, conn: Connection) -> None:
        """After (re)connecting: settle jobs whose messages may have been missed, then let queued jobs through."""
        jobs = []
        for jid in list(conn.jobs):
            job = self.table.live(jid)
            if job is None or job.done or job.prompt_id is None:
                conn.jobs.discard(jid)
                continue
            jobs.append((job, job.prompt_id))
        if jobs:
            for job in self._not_waiting(jobs, await conn.client.queued_ids()):
                await self.check_prompt(conn, job)
        self.dispatcher.wake.set()

    def backend_down(self, conn: Connection, reason: str) -> None:
        for jid in list(conn.jobs):
            job = self.table.live(jid)
            conn.jobs.discard(jid)
            if job is None or job.done:
                continue
            if job.status == "running":
                if self.requeue_on_backend_death and job.attempts < 2:
                    log.warning("job %s: backend %s died (%s); re-queued once", jid, conn.url, reason)
                    self.dispatcher.requeue(job, front=True)
                else:
                    self.fail(job, f"ComfyUI backend {conn.url} died while running the job ({reason})")
            else:
                # It never started, so running it elsewhere cannot run it twice.
                self.dispatcher.requeue(job, front=True)

    def backend_event(self, conn: Connection, event: Event | Preview) -> None:
        jid = self.runs.job_for(event.prompt_id)
        job = self.table.live(jid) if jid else None
        run = self.runs.get(jid) if jid else None
        if job is None or run is None or job.done:
            return
        if isinstance(event, Preview):
            wf = self._workflows().get(job.workflow)
            if event.node is not None and wf is not None and event.node in wf.websocket_image_nodes():
                run.frames.setdefault(event.node, []).append(event.data)
                run.frame_count, run.frame_bytes = run.frame_count + 1, run.frame_bytes + len(event.data)
                run.last_event = time.monotonic()
                why = past_bounds(run.frame_count, run.frame_bytes, self.max_output_bytes)
                if why is not None:
                    # At once: the frames go on coming while the prompt runs.
                    self.spawn(self._interrupt(conn, job.prompt_id))
                    self.fail(job, f"{why} ({conn.url})")
            elif event.node is None or event.node == run.current:
                # A sampler's latent preview (ComfyUI started with --preview-method): the newest one is kept, and
                # announced at most every PREVIEW_EVENT_INTERVAL seconds.
                now = time.monotonic()
                run.preview = (event.image_type, event.data)
                run.last_event = now
                if now - run.preview_announced >= PREVIEW_EVENT_INTERVAL:
                    run.preview_announced = now
                    if self.table.shared:
                        # The other replicas serve it from the store (/jobs/{id}/preview, A1111's current_image),
                        # announced with it: the job's row has not changed
                        self.spawn(self.table.store.save_preview(job.id, event.image_type, event.data,
                                                                 notify=self.table.announcement("preview", job)))
                    self.table.emit("preview", job)
            return
        run.last_event = time.monotonic()
        if isinstance(event, ExecutionStart):
            self.mark_running(job)
        elif isinstance(event, ExecutionCached):
            self.mark_running(job)
            run.nodes_cached(event.nodes)
            self._progress(job, run)
        elif isinstance(event, Executing):
            if event.node is None:
                run.execution_ended()
                if not run.finishing:
                    run.finishing = True
                    self.spawn(self.finish_from_messages(conn, job, run))
                return
            self.mark_running(job)
            run.node_started(event.node)
            self._progress(job, run)
        elif isinstance(event, Progress):
            node = event.node if event.node is not None else run.current
            if event.max > 0:
                if node == run.current:
                    run.fraction = min(1.0, event.value / event.max)
                job.step, job.steps = int(event.value), int(event.max)
                self._progress(job, run)
        elif isinstance(event, Executed):
            run.executed[event.node] = event.output
        elif isinstance(event, ExecutionError):
            run.error = event.message
        elif isinstance(event, ExecutionInterrupted):
            run.interrupted = True
        elif isinstance(event, ExecutionSuccess):
            run.succeeded = True

    def mark_running(self, job: Job) -> None:
        if not self.table.mark_running(job):
            return
        run = self.runs.get(job.id)
        if run is not None and run.cancel_requested:
            conn = self.connections.get(job.backend or "")
            if conn is not None:
                self.spawn(conn.client.interrupt(job.prompt_id))

    def _progress(self, job: Job, run: Run) -> None:
        value = run.progress()
        if value != job.progress:
            job.progress = max(job.progress, value)
            self.table.emit("progress", job)

    # ------------------------------------------------------------------ completion
    async def finish_from_messages(self, conn: Connection, job: Job, run: Run) -> None:
        """A prompt that ended: from its websocket messages when they tell the whole outcome (success, and every
        wanted output's `executed` message), which spares a /history read; from /history otherwise."""
        entry = entry_from_run(self._workflows().get(job.workflow), job, run)
        if entry is None:
            await self.finish_from_history(conn, job)
        else:
            await self.finalize(conn, job, entry)

    async def finish_from_history(self, conn: Connection, job: Job) -> None:
        entry = None
        for delay in (0.0, 0.1, 0.3, 0.6, 1.0):
            await asyncio.sleep(delay)
            try:
                entry = await conn.client.history(job.prompt_id)
            except BackendError as exc:
                log.warning("job %s: history read failed: %s", job.id, exc)
                continue
            if entry is not None:
                break
        if job.done:
            return
        if entry is None:
            run = self.runs.get(job.id)
            if run is not None:
                run.finishing = False  # the watchdog retries
            return
        await self.finalize(conn, job, entry)

    async def finalize(self, conn: Connection, job: Job, entry: dict[str, Any]) -> None:
        if job.done:
            return
        wf = self._workflows()[job.workflow]
        folder = self.comfyui_output_dirs.get(job.backend or "")
        try:
            outcome = await read_outcome(conn.client, wf, job, self.run_for(job), entry, folder,
                                         max_bytes=self.max_output_bytes)
        except Exception as exc:  # noqa: BLE001 - an answer nobody foresaw fails its job; raised, it would leave the
            # job waiting (finishing, the watchdog never looks again) or break the reconnect that reconciles it
            log.exception("job %s: results of prompt %s not read", job.id, job.prompt_id)
            outcome = Outcome("failed", f"could not read the results from {conn.url}: "
                                        f"{exc.__class__.__name__}: {exc}")
        if job.done:
            return
        if outcome.status == "rerun":
            log.warning("job %s: %s", job.id, outcome.error)
            job.reruns.append({"prompt_id": job.prompt_id, "reason": outcome.error, "at": time.time()})
            self.dispatcher.requeue(job, front=True)
            self.table.status_changed(job)
            return
        if outcome.status != "completed":
            self.finish(job, outcome.status, outcome.error)
            return
        stored: dict[str, list[Any]] = dict(outcome.values)
        try:
            for name, images in outcome.images.items():
                if self.metadata != "comfyui":
                    # ComfyUI writes the whole graph into the PNG (server paths, model names); clients get pixels,
                    # and by default the infotext A1111 would have written.
                    text = (infotext.for_job(job.workflow, job.workflow_version, job.params,
                                             (job.meta or {}).get("infotext"))
                            if self.metadata == "infotext" else None)
                    def restamp(imgs: list[bytes] = images, t: str | None = text) -> list[bytes]:
                        return [_restamp(b, t) for b in imgs]
                    images = await image_io.run_small(restamp, sum(map(len, images)))
                fmt = (job.meta or {}).get("output_format")
                if fmt and fmt != "png":
                    quality = int((job.meta or {}).get("output_quality") or 90)
                    images = await image_io.run_in_pool(
                        lambda imgs=images: [image_io.convert_output(b, fmt, quality) for b in imgs])
                keys = []
                for i, data in enumerate(images):
                    key = output_key(job.id, name, i, image_io.sniff_image_type(data) or "bin")
                    await self.blobs.put(key, data, content_type(key))
                    keys.append(key)
                stored[name] = keys
        except Exception as exc:  # noqa: BLE001 - a store that refuses the result fails the job, never the bridge
            log.error("job %s: could not store its results: %s", job.id, exc)
            self.finish(job, "failed", f"could not store the results: {exc}")
            await self.drop_results_if_deleted(job)
            return
        if job.done:
            # Ended while its images were being stored (cancelled, timed out, or completed by another finalize):
            # a DELETE that ended it may have removed the job's folder before the writes above landed.
            await self.drop_results_if_deleted(job)
            return
        job.outputs = stored
        job.node_ms = dict(self.run_for(job).node_ms)
        self.finish(job, "completed", None)
        if folder is not None:  # after the answer: the client waits for its job, not for this
            self.copies.add(folder, comfyui_files(entry))

    async def drop_results_if_deleted(self, job: Job) -> None:
        """Remove the job's result images if its row is gone: a DELETE removed the job, and its folder, while this
        replica was still writing them (every write of the caller has returned). With the row there they stay:
        they may be another finalize's or another replica's (the same keys), and deleting the job removes them."""
        try:
            if await self.table.store.load(job.id) is None:
                await self.blobs.delete_prefix(outputs_prefix(job.id))
                log.info("job %s: deleted while its results were stored; they are removed", job.id)
        except Exception as exc:  # noqa: BLE001 - left over, they only take space
            log.warning("job %s: results of a deleted job not removed: %s", job.id, exc)

    async def check_prompt(self, conn: Connection, job: Job) -> None:
        """Where a prompt stands when its messages may have been missed: history, then the queue."""
        run = self.runs.get(job.id)
        if run is not None and run.posting:
            return  # not in ComfyUI's queue yet is no sign that someone removed it
        pid = job.prompt_id
        entry = await conn.client.history(pid)
        if entry is None:
            running, pending = await conn.client.queued_ids()
            if pid in running:
                self.mark_running(job)
                return
            if pid in pending:
                return
            entry = await conn.client.history(pid)  # it may have finished between the two reads
        if job.done:
            return  # ended (cancelled, say) while the reads were out
        if entry is not None:
            await self.finalize(conn, job, entry)
            return
        run = self.runs.get(job.id)
        if run is not None and run.cancel_requested:
            return  # a cancel under way deleted it: the cancel ends the job
        if job.status == "running" and not (self.requeue_on_backend_death and job.attempts < 2):
            self.fail(job, f"ComfyUI backend {conn.url} lost the job (it restarted while the job was running)")
            return
        if job.status == "queued" and conn.healthy:
            # Neither queued, running nor finished on a backend that answers: someone removed it (ComfyUI's own
            # page clears and deletes queue items) without telling the bridge.
            removed = [r for r in job.reruns if r.get("removed")]
            reason = f"prompt {pid} was removed from {conn.url}'s queue outside the bridge"
            if removed:
                self.fail(job, reason + " (twice)")
                return
            log.warning("job %s: %s; submitted again", job.id, reason)
            job.reruns.append({"prompt_id": pid, "reason": reason + "; submitted again", "at": time.time(),
                               "removed": True})
        else:
            log.warning("job %s: prompt %s unknown to %s; re-queued", job.id, pid, conn.url)
        self.dispatcher.requeue(job, front=True)

    # ------------------------------------------------------------------ cancelling
    async def cancel(self, job: Job) -> bool:
        """Cancel a job this replica runs: deleted from ComfyUI's queue when waiting there, interrupted by prompt
        id when running (waiting up to cancel_grace for ComfyUI to stop)."""
        if job.done:
            return False
        run = self.runs.get(job.id)
        if run is not None:
            run.cancel_requested = True
        conn = self.connections.get(job.backend or "")
        if job.prompt_id is None or conn is None:
            self.finish(job, "cancelled", None)
            return True
        pid = job.prompt_id
        try:
            if job.status == "queued":
                await conn.client.delete_from_queue([pid])
                running, _ = await conn.client.queued_ids()
                if pid not in running:
                    return True
            await conn.client.interrupt(pid)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.table.done_event(job.id).wait(), self.cancel_grace)
        except BackendError as exc:
            log.warning("job %s: cancel could not reach %s (%s)", job.id, conn.url, exc)
        finally:
            # also when the cancel is cut off (its caller went away): a job asked to stop never stays waiting
            self.finish(job, "cancelled", None)
        return True

    # ------------------------------------------------------------------ watchdog: timeouts, missed messages
    async def watch(self) -> None:
        while True:
            await asyncio.sleep(min(0.5, self.poll_interval))
            now = time.time()
            self._watch_queued(now)
            for job in self.table.running():
                run = self.runs.get(job.id)
                conn = self.connections.get(job.backend or "")
                if run is None or conn is None:
                    continue
                if job.timeout and job.started_at and now - job.started_at > job.timeout and not run.timed_out:
                    run.timed_out = True
                    self.spawn(self._timeout(conn, job))
                elif conn.healthy and not run.finishing and time.monotonic() - run.last_event > self.poll_interval:
                    run.last_event = time.monotonic()
                    self.spawn(self.poll(conn, job))

    def _watch_queued(self, now: float) -> None:
        """Queued jobs: a deadline (BRIDGE_QUEUE_TIMEOUT), and a look at the backend's queue every
        queue_poll_interval, since nothing is announced when a prompt is removed from ComfyUI's queue."""
        waiting: dict[str, list[tuple[Job, float]]] = {}  # by backend: its jobs, how long since their last look
        for job in self.table.queued():
            if self.queue_timeout and now - job.created_at > self.queue_timeout:
                self._spawn_cancel(job, f"waited more than {self.queue_timeout:g} s in the queue "
                                        f"(BRIDGE_QUEUE_TIMEOUT)")
                continue
            conn = self.connections.get(job.backend or "")
            if conn is None or not conn.healthy or job.prompt_id is None:
                continue
            waiting.setdefault(conn.url, []).append((job, now - self._queue_checked.get(job.id, job.created_at)))
        for url, jobs in waiting.items():
            if all(age < self.queue_poll_interval for _, age in jobs):
                continue
            # The read serves every job there: those half-way to their next look come along, so a backend's jobs
            # fall into step and are looked at with one read per interval, not one per tick.
            looked = [(job, job.prompt_id) for job, age in jobs if age >= self.queue_poll_interval / 2]
            for job, _ in looked:
                self._queue_checked[job.id] = now
            self.spawn(self._look_at_queue(self.connections[url], looked))
        if len(self._queue_checked) > 10_000:
            self._queue_checked = {k: v for k, v in self._queue_checked.items()
                                   if (j := self.table.live(k)) is not None and not j.done}

    async def _look_at_queue(self, conn: Connection, jobs: list[tuple[Job, str | None]]) -> None:
        try:
            queue = await conn.client.queued_ids()
        except BackendError as exc:
            log.debug("%s: queue look failed: %s", conn.url, exc)
            return
        for job in self._not_waiting([(j, pid) for j, pid in jobs if j.status == "queued"], queue):
            self.spawn(self.poll(conn, job))

    def _not_waiting(self, jobs: list[tuple[Job, str | None]], queue: tuple[set[str], set[str]]) -> list[Job]:
        """Jobs against one read of their backend's queue (a read per job made a long queue cost its square): a
        prompt still waiting there needs nothing, a running one marks its job running; the jobs returned, whose
        prompts the queue no longer holds, need a look each (their history first)."""
        running, pending = queue
        gone = []
        for job, pid in jobs:
            if self.table.live(job.id) is not job or job.prompt_id != pid or pid in pending:
                continue  # let go, dispatched again or ended meanwhile; or still waiting there
            if pid in running:
                self.mark_running(job)
            else:
                gone.append(job)
        return gone

    def _spawn_cancel(self, job: Job, reason: str) -> None:
        conn = self.connections.get(job.backend or "")
        if conn is not None and job.prompt_id is not None:
            self.spawn(conn.client.delete_from_queue([job.prompt_id]))
        self.fail(job, reason)

    @staticmethod
    async def _interrupt(conn: Connection, prompt_id: str | None) -> None:
        with contextlib.suppress(BackendError):
            await conn.client.interrupt(prompt_id)

    async def _timeout(self, conn: Connection, job: Job) -> None:
        await self._interrupt(conn, job.prompt_id)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.table.done_event(job.id).wait(), self.cancel_grace)
        self.fail(job, f"timed out after {job.timeout:g} s")

    async def poll(self, conn: Connection, job: Job) -> None:
        try:
            await self.check_prompt(conn, job)
        except BackendError as exc:
            log.debug("job %s: poll failed: %s", job.id, exc)
