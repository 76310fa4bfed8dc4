"""The job engine: the only thing adapters talk to (API: docs/architecture.md, "Job engine").

One engine drives N ComfyUI backends; several engines (bridge replicas) may share one PostgreSQL store. Its parts,
each in its own module:

- `connection`: one backend's websocket turned into typed events (`events`), its health and back-off;
- `intake`: accepting a job (checks, images, the row, the first dispatch);
- `jobs`: this replica's job table (state machine, counts, ordered fenced persistence) and the event hub;
- `dispatcher`: which backend runs a job, the local queue, uploading inputs and queueing the bound graph;
- `tracker`: events and `/history` into job state and results (`results`), reconciliation and the watchdog;
- `replicas`: leases, take-over of jobs nobody holds, and the other replicas' announcements (shared store only);
- `runs`: live per-prompt tracking (progress weights, websocket frames);
- `outputs`, `backends`: the read side of the adapters' API (results, links, previews; choices, states, counts).

This module wires them and offers the adapters' API.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import gc
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from bridge import workflows as wfmod
from bridge.errors import BackendUnavailable, JobNotFound
from bridge.outbound import Outbound, OutboundPolicy
from bridge.storage import BlobStore
from bridge.storage.local import LocalBlobs
from bridge.store import STATUSES, TERMINAL, Job, JobStore, check_id, input_key, open_store, outputs_prefix
from bridge.webhooks import WebhookConfig, Webhooks
from bridge.workflows import Workflow

from . import retention
from .client import ComfyClient, SharedRun
from .connection import Connection, check_workflows
from .dispatcher import Dispatcher
from .intake import Intake
from .backends import Backends
from .jobs import EventHub, JobTable
from .options import EngineOptions
from .outputs import Outputs
from .replicas import Replicas
from .retention import Retention
from .runs import Run, Runs
from .tracker import Tracker

log = logging.getLogger("bridge.engine")

__all__ = ["JobEngine", "EngineOptions", "Job", "STATUSES", "TERMINAL", "CLIENT"]

# Who is submitting (an API key's fingerprint, or the client address): set per request by the app, read by submit
# for the per-client quota. A context variable, so every adapter's path is covered without passing it along.
CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("bridge_client", default=None)


class JobEngine(Outputs, Backends):
    def __init__(self, backends: list[str], data_dir: Path, workflows_dir: Path, options: EngineOptions | None = None,
                 *, extra_workflow_dirs: list[Path] | None = None, blobs: BlobStore | None = None,
                 webhooks: WebhookConfig | None = None, outbound: OutboundPolicy | None = None,
                 retention: Retention | None = None, store: JobStore | None = None, **knobs: Any) -> None:
        """`options` holds the engine's limits and timings; `knobs` (the same names) override single ones. The
        parts the engine uses (job store, blob store, webhook, outbound and retention policies) are given as
        objects; the job store defaults to the data directory's SQLite file."""
        if not backends:
            raise ValueError("at least one ComfyUI backend URL is needed")
        self.backend_urls = [u.rstrip("/") for u in backends]
        self.data_dir = Path(data_dir)
        self.workflows_dir = Path(workflows_dir)
        self.extra_workflow_dirs = [Path(d) for d in extra_workflow_dirs or ()]
        self._reloading = asyncio.Lock()
        self._next_reload: asyncio.Future[list[str]] | None = None
        # Loaded (and statically validated) here so a broken workflow stops the bridge at start-up.
        self.workflows: dict[str, Workflow] = wfmod.load_workflows(self.workflows_dir, self.extra_workflow_dirs)
        self.options = dataclasses.replace(options or EngineOptions(), **knobs)
        self.store: JobStore = store if store is not None else open_store("", self.data_dir)
        # The blob store for result and input images: given (S3), or the data directory's files.
        self.blobs: BlobStore = blobs if blobs is not None else LocalBlobs(self.data_dir)
        self.webhook_config = webhooks or WebhookConfig()
        self.retention = retention or Retention()
        # Every request to an address a client named (image URLs, webhook receivers) goes through this.
        self.outbound = Outbound(outbound or OutboundPolicy(max_bytes=self.options.max_image_bytes))
        self.webhooks: Webhooks | None = None
        self.hub = EventHub()
        # This process among the replicas sharing the store: the owner name of the jobs it runs.
        self.replica = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        # Set when the server begins to stop: long polls and synchronous requests stop waiting, so a graceful
        # shutdown is not held for minutes by clients waiting on jobs (the jobs themselves go on in ComfyUI).
        self.stopping = asyncio.Event()
        self.connections: dict[str, Connection] = {}
        self.intake = Intake(self)
        self._session: aiohttp.ClientSession | None = None
        self._table: JobTable | None = None
        self._runs = Runs()
        self._dispatcher: Dispatcher | None = None
        self._tracker: Tracker | None = None
        self._replicas: Replicas | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._started = False
        self._refreshes: SharedRun[None] = SharedRun()  # refresh_object_info's

    # Read by adapters that check an image before submitting it.
    @property
    def max_image_bytes(self) -> int:
        return self.options.max_image_bytes

    @property
    def max_image_pixels(self) -> int:
        return self.options.max_image_pixels

    # ================================================================= lifecycle
    async def start(self) -> None:
        """Open the store, take over the jobs left unfinished, connect every backend's websocket."""
        if self._started:
            return
        self._started = True
        opts = self.options
        await self.store.open()
        self._session = aiohttp.ClientSession()
        # ComfyUI sends a prompt's messages to the clientId that queued it. Alone on its store, the bridge keeps one
        # across restarts and so hears about prompts its last run queued; replicas each have their own, and follow
        # prompts taken over from another replica through /history.
        client_id = "pixart-" + self.replica if self.store.shared else await self.store.client_id()
        workflows = lambda: self.workflows  # noqa: E731 - read at call time: a reload swaps the dict
        for url in self.backend_urls:
            self.connections[url] = Connection(url, ComfyClient(url, self._session, client_id), workflows,
                                               reconnect_max_delay=opts.reconnect_max_delay,
                                               feature_flags=opts.feature_flags)
        table = self._table = JobTable(self.store, self.hub, self.replica, lease=opts.lease,
                                       keep_in_memory=opts.keep_in_memory,
                                       drop_inputs=lambda job_id: self._spawn(self.drop_inputs(job_id)),
                                       on_lost=self._lost)
        self._dispatcher = Dispatcher(table, self._runs, self.blobs, self.connections, workflows,
                                      comfyui_input_dirs=self.retention.comfyui_input_dirs)
        self._tracker = Tracker(table, self._runs, self.blobs, self._dispatcher, self.connections, workflows,
                                self._spawn, poll_interval=opts.poll_interval, cancel_grace=opts.cancel_grace,
                                requeue_on_backend_death=opts.requeue_on_backend_death,
                                queue_poll_interval=opts.queue_poll_interval, queue_timeout=opts.queue_timeout,
                                metadata=opts.output_metadata, comfyui_output_dirs=self.retention.comfyui_output_dirs,
                                max_output_bytes=opts.max_output_bytes)
        for job in await table.load(claim_all=not self.store.shared):
            await self.adopt(job, reconcile_now=False)
        await self._start_webhooks()
        for conn in self.connections.values():
            conn.start(self._tracker)
        self._tasks.append(asyncio.create_task(self._dispatcher.run(self._tracker.fail), name="engine-dispatch"))
        self._tasks.append(asyncio.create_task(self._tracker.watch(), name="engine-watchdog"))
        if self.retention.max_age > 0 or self.retention.max_bytes > 0:
            self._tasks.append(asyncio.create_task(retention.run(self.retention, self.sweep), name="engine-retention"))
        if self.store.shared:
            self._replicas = Replicas(self.store, table, self.replica, lease=opts.lease,
                                      claim_interval=opts.claim_interval, adopt=self.adopt, cancel=self.cancel,
                                      runnable=self._runnable, loads=self._dispatcher.set_loads)
            await self._replicas.start()
            self._dispatcher.release = self._release
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.first_attempt.wait() for c in self.connections.values())),
                                   opts.connect_wait)
        if self._replicas is not None:
            self._replicas.wake.set()  # take what was left to the shared queue while this replica was away

    async def stop(self) -> None:
        """Stop tracking; jobs keep running on ComfyUI and are picked up by the next start() (or, on a shared
        store, by another replica once this one's leases run out)."""
        if not self._started:
            return
        if self.webhooks is not None:
            with contextlib.suppress(ValueError):
                self.hub.listeners.remove(self.webhooks.on_event)
            if self._table is not None:
                await self._table.flush()  # the last ends' messages are recorded with them
                self._table.before_end = None
                self._table.after_end = None
            await self.webhooks.flush()
            await self.webhooks.stop()
            self.webhooks = None
        if self._replicas is not None:
            await self._replicas.stop()
            self._replicas = None
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*(c.close() for c in self.connections.values()), *self._tasks, return_exceptions=True)
        if self._tracker is not None:
            await self._tracker.copies.close()
        self._tasks.clear()
        self.connections.clear()
        if self._table is not None:
            await self._table.close()
        if self._session is not None:
            await self._session.close()
        await self.outbound.close()
        await self.store.close()
        self._started = False

    async def __aenter__(self) -> JobEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def _start_webhooks(self) -> None:
        assert self._session is not None
        cfg = self.webhook_config
        secret = cfg.secret or await self.store.webhook_secret()
        self.webhooks = Webhooks(self.store, secret, self.outbound.post, describe=self.describe, everyone=cfg.everyone,
                                 policy=cfg.policy)
        self.hub.listeners.append(self.webhooks.on_event)
        assert self._table is not None
        self._table.before_end = self.webhooks.end_messages
        self._table.after_end = self.webhooks.end_written
        self._tasks.append(asyncio.create_task(self.webhooks.run(), name="engine-webhooks"))

    # ================================================================= owning jobs
    async def adopt(self, job: Job, *, reconcile_now: bool = True) -> None:
        """Follow a job taken over (at start, or from a replica that went away): one sent to a backend is
        reconciled with it (`/history`, `/queue`); one never sent waits for a backend here."""
        table, dispatcher = self._parts()
        job = table.adopt(job)
        conn = self.connections.get(job.backend or "")
        if job.prompt_id and conn is not None:
            conn.jobs.add(job.id)
            self._runs.start(job, job.prompt_id, Run.for_job(self.workflows.get(job.workflow), job))
            if reconcile_now and conn.healthy and self._tracker is not None:
                self._spawn(self._tracker.poll(conn, job))
        else:
            dispatcher.requeue(job, front=False)
        if job.cancel_requested and reconcile_now:
            self._spawn(self.cancel(job.id))

    async def queue_again(self, job: Job, *, front: bool) -> None:
        """A job this replica could not send to a backend goes back into its queue (one that no backend here can
        run is released to the other replicas by the dispatcher's own round, see `_release`)."""
        _, dispatcher = self._parts()
        dispatcher.requeue(job, front=front)

    async def _release(self, job: Job) -> None:
        table, _ = self._parts()
        self._runs.stop(job)
        if await table.release(job):
            log.info("job %s: no backend here for %s; left for another replica", job.id, job.workflow)

    def _lost(self, job: Job) -> None:
        """Another replica runs the job now: stop following it here."""
        self._runs.stop(job)
        for conn in self.connections.values():
            conn.jobs.discard(job.id)
        if self._dispatcher is not None:
            self._dispatcher.remove(job.id)
        if job.status == "completed" and self._tracker is not None:
            # its end found no row to write: a DELETE elsewhere, which outwaited this replica's cancel, may have
            # removed the job's folder before this replica stored its results there
            self._spawn(self._tracker.drop_results_if_deleted(job))

    def _runnable(self) -> tuple[list[str], list[str]]:
        assert self._dispatcher is not None
        workflows = [name for name in self.workflows if self._dispatcher.pick(name) is not None]
        return workflows, list(self.connections)

    # ================================================================= adapter API
    def workflow(self, name: str) -> Workflow:
        return wfmod.get_workflow(self.workflows, name)

    def describe_workflow(self, name: str) -> dict[str, Any]:
        """`Workflow.describe`, with the values the healthy backends offer now as each `choices_from` parameter's
        `enum` (the manifest names only the node list they come from: a palette, a checkpoint, a sampler)."""
        wf = self.workflow(name)
        out = wf.describe()
        offered = self.intake.offered_choices(wf)
        if offered:
            props = dict(out["parameters"].get("properties", {}))
            for pname, values in offered.items():
                if pname in props:
                    props[pname] = {**props[pname], "enum": values}
            out["parameters"] = {**out["parameters"], "properties": props}
        return out

    async def reload_workflows(self) -> list[str]:
        """Read the workflow folders again (a workflow dropped in is served from now on); returns the names.

        A broken folder raises WorkflowError and leaves the served set as it was. A job already accepted is bound
        into the workflow as it is when the job is dispatched, its values checked again (`Workflow.recheck`): one
        that no longer fits fails the job naming the parameter. The folders are read in a thread, one reload at a
        time (the 15 shipped workflows held the event loop 0.3-0.56 s a call); calls that come while one reads
        share the next, which starts after them all, so any number of calls at once read the folders at most
        twice. The result is swapped in here, on the loop.
        """
        if self._next_reload is None:
            self._next_reload = asyncio.ensure_future(self._reload())
        # shielded: a caller that goes away does not cancel the reload the others wait for
        return await asyncio.shield(self._next_reload)

    async def _reload(self) -> list[str]:
        async with self._reloading:
            self._next_reload = None  # a call from now on may have changed the folders after this read began
            # Where the heap was settled at start-up (bridge.server.settle_heap), the replaced workflows' request
            # models (cycles) are frozen, and only a full collection of everything frees them: one, at the end.
            # Until then no collection runs: building a hundred large workflows set off one after another as the
            # heap grew, each longer (0.1-0.3 s of the event loop), nine of them.
            settled = gc.get_freeze_count() > 0 and gc.isenabled()
            if settled:
                gc.disable()
            try:
                return await self._reload_now()
            finally:
                if settled:
                    gc.unfreeze()
                    gc.collect()
                    gc.freeze()
                    gc.enable()

    async def _reload_now(self) -> list[str]:
        try:
            loaded = await asyncio.to_thread(wfmod.load_workflows, self.workflows_dir, self.extra_workflow_dirs)
        except Exception as exc:
            # also where every caller went away (the shield then drops the exception unread)
            log.warning("workflow reload failed, the served workflows stay as they were: %s", exc)
            raise
        async with contextlib.AsyncExitStack() as held:
            for conn in self.connections.values():
                await held.enter_async_context(conn.checks)
            checked = [(conn, conn.object_info) for conn in self.connections.values() if conn.object_info is not None]
            # checked in a thread (see Connection.update_object_info), and swapped in with their problems in one turn
            # of the loop: no job sees the new workflows with the old problems
            found = await asyncio.to_thread(lambda: [check_workflows(loaded, info) for _, info in checked])
            self.workflows = loaded
            for (conn, info), problems in zip(checked, found):
                conn.apply(info, loaded, problems)
        return sorted(loaded)

    async def submit(self, workflow: str, parameters: Mapping[str, Any] | None = None, *,
                     meta: Mapping[str, Any] | None = None, job_id: str | None = None,
                     timeout: float | None = None, outputs: list[str] | None = None) -> Job:
        """Accept a job: validate parameters, store inputs, queue on a backend (or until one is up).

        `outputs` names the manifest outputs wanted (None = all): ComfyUI is asked to run only the output
        nodes they need (`partial_execution_targets`), and `job.outputs` holds only those names.

        Raises InvalidParameter / PayloadTooLarge for bad input, WorkflowNotFound, Conflict for a reused
        job_id, QueueFull when max_queue jobs are waiting or running, TooManyJobs when the client has
        max_jobs_per_client, BackendUnavailable when no configured backend can run this workflow.
        """
        return await self.intake.submit(workflow, parameters, meta=meta, job_id=job_id, timeout=timeout,
                                        outputs=outputs, client=CLIENT.get())

    async def check_room(self) -> None:
        """QueueFull or TooManyJobs now, where `submit` would raise them: adapters ask before the costly part of a
        request (fetching and decoding its images), which a full queue refused only after it was done."""
        await self.intake.check_room(CLIENT.get())

    async def accepted(self, job_id: str) -> Job | None:
        return await self.intake.accepted(job_id)

    async def fetch_image(self, value: Any, field: str) -> Any:
        return await self.intake.fetch_image(value, field)

    async def request_cost(self, jobs: list[tuple[str, Mapping[str, Any]]]) -> None:
        """Refuse a request whose jobs together cost more than BRIDGE_MAX_REQUEST_COST, before any is submitted."""
        await self.intake.request_cost(jobs)

    def get(self, job_id: str) -> Job | None:
        """This replica's own copy of a job (one it runs, or one that finished recently), without a store read."""
        return self._table.get(job_id) if self._table is not None else None

    async def find(self, job_id: str) -> Job | None:
        """The job with this id, wherever it runs; None for an unknown id (or one that could not be a job's)."""
        if not isinstance(job_id, str) or self._table is None:
            return None
        try:
            check_id(job_id)
        except ValueError:
            return None
        return await self._table.find(job_id)

    async def list(self, status: str | None = None, workflow: str | None = None, limit: int = 100,
                   offset: int = 0, meta: Mapping[str, str] | None = None) -> list[Job]:
        """Jobs newest first; `meta`: only those whose meta has these text values (an adapter's own jobs). A job
        this replica does not hold comes without its params (`find` gives a whole job)."""
        table, _ = self._parts()
        return await table.list(status, workflow, limit, offset, meta)

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job; False if it had already finished. A queued job is deleted from ComfyUI's queue, a running
        one interrupted by prompt id (the call waits up to cancel_grace for ComfyUI to stop). A job another replica
        runs is cancelled by that replica (or by whichever takes it over)."""
        table, _ = self._parts()
        job = table.live(job_id)
        if job is None:
            found = await self.find(job_id)
            if found is None:
                raise JobNotFound(job_id)
            if found.done:
                return False
            return await self._cancel_elsewhere(found)
        assert self._tracker is not None
        cancelled = await self._tracker.cancel(job)
        # so every replica counts it as ended once this returns
        if not await table.persisted(job) and self._replicas is not None:
            # Its end could not be written: the job is not this replica's any more (released as the cancel ran, or
            # taken over), and another replica may run it now. Ended only here, it would run on there (and a
            # DELETE, waiting for an end that never comes, would remove its row under it): cancel it where it is.
            found = await self.find(job_id)
            if found is not None and not found.done:
                return await self._cancel_elsewhere(found)
        return cancelled

    async def _cancel_elsewhere(self, job: Job) -> bool:
        table, _ = self._parts()
        if not await self.store.request_cancel(job.id, notify={"type": "cancel", "id": job.id, "from": self.replica}):
            return False
        if self._replicas is not None:
            claimed = await self._replicas.claim(job.id)  # nobody holds it (released, or its replica is gone)
            if claimed:
                return True
            if table.live(job.id) is not None:
                # A claim of this replica's took it meanwhile (its copy read before the request): nobody else
                # will cancel it, and this replica ignores its own cancel note.
                return await self.cancel(job.id)
        with contextlib.suppress(asyncio.TimeoutError, JobNotFound):  # not found: deleted meanwhile, gone too
            await self.wait(job.id, timeout=self.options.cancel_grace + 2 * self.options.claim_interval)
        return True

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Return the job once it is completed, failed or cancelled (asyncio.TimeoutError after `timeout`;
        JobNotFound when it is deleted meanwhile, unfinished or not)."""
        job = await self.find(job_id)
        if job is None:
            raise JobNotFound(job_id)
        table, _ = self._parts()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not job.done:
            if self.stopping.is_set():
                raise asyncio.TimeoutError
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise asyncio.TimeoutError
            # Another replica's job ends by announcement; a look at the store now and then covers a lost one.
            step = left if table.get(job_id) is job else min(left or 5.0, 5.0)
            done = asyncio.ensure_future(table.done_event(job_id).wait())
            stop = asyncio.ensure_future(self.stopping.wait())
            try:
                await asyncio.wait({done, stop}, timeout=step, return_when=asyncio.FIRST_COMPLETED)
            finally:
                done.cancel()
                stop.cancel()
            found = table.get(job_id) or await self.find(job_id)
            if found is None and not job.done:  # done: this replica's own copy, ended here, then deleted
                raise JobNotFound(job_id)
            job = found or job
        return job

    async def subscribe(self, job_id: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Events {"type": "progress"|"status"|"preview", "job": {...}}. With a job id: its current state first,
        ending after its final status; without: every job's events until the consumer stops."""
        job = None
        if job_id is not None:
            job = await self.find(job_id)
            if job is None:
                raise JobNotFound(job_id)
        async for event in self.hub.stream(job_id, job):
            yield event

    async def delete(self, job_id: str) -> None:
        """Remove a job, its results, inputs and webhook log from every store; a job still queued or running is
        cancelled first (JobNotFound when there is none)."""
        job = await self.find(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if not job.done:
            await self.cancel(job_id)
            with contextlib.suppress(asyncio.TimeoutError):
                job = await self.wait(job_id, timeout=self.options.cancel_grace)
        table, _ = self._parts()
        await table.remove(job)
        if self._tracker is not None:
            self._tracker.previews.pop(job_id, None)
        await self.blobs.delete_prefix(outputs_prefix(job_id))
        await self.drop_inputs(job_id)

    async def sweep(self) -> list[str]:
        """One retention pass (BRIDGE_RESULT_MAX_AGE, BRIDGE_RESULT_MAX_BYTES); returns the removed job ids."""
        return await retention.sweep(self.retention, self.blobs, self.store.finished_jobs, self.delete)

    # ================================================================= helpers
    async def drop_inputs(self, job_id: str) -> None:
        try:
            await self.blobs.delete_prefix(input_key(job_id, "x").rsplit("/", 1)[0] + "/")
        except Exception as exc:  # noqa: BLE001 - a leftover input is harmless; retention removes it later
            log.info("job %s: inputs not removed: %s", job_id, exc)

    def _parts(self) -> tuple[JobTable, Dispatcher]:
        if not self._started or self._table is None or self._dispatcher is None:
            raise BackendUnavailable("the job engine is not started")
        return self._table, self._dispatcher

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[Any]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task failed: %r", task.exception())
