"""The job engine: the only thing adapters talk to (API: docs/architecture.md, "Job engine").

One engine drives N ComfyUI backends. Its parts, each in its own module:

- `connection`: one backend's websocket turned into typed events (`events`), its health and back-off;
- `jobs`: the job table (state machine, counts, persistence through `bridge.store`) and the event hub;
- `dispatcher`: which backend runs a job, the local queue, uploading inputs and queueing the bound graph;
- `tracker`: events and `/history` into job state and results (`results`), reconciliation and the watchdog;
- `runs`: live per-prompt tracking (progress weights, websocket frames).

This module wires them and offers the adapters' API.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from bridge import images as image_io
from bridge import workflows as wfmod
from bridge.errors import (BackendUnavailable, ResultGone, BridgeError, Conflict, CostTooHigh, InvalidParameter, JobNotFound,
                           QueueFull, TooManyJobs)
from bridge.storage import BlobNotFound, BlobStore
from bridge.outbound import Outbound, OutboundPolicy, OutboundRefused
from bridge.storage.local import LocalBlobs
from bridge.webhooks import WebhookConfig, Webhooks, new_secret
from bridge.store import STATUSES, TERMINAL, Job, Store, check_id, input_key
from bridge.workflows import Workflow

from . import retention
from .retention import Retention
from .client import BackendError, ComfyClient
from .connection import Connection
from .dispatcher import Dispatcher, NoBackend
from .jobs import EventHub, JobTable
from .runs import Run, Runs
from .tracker import Tracker

log = logging.getLogger("bridge.engine")

__all__ = ["JobEngine", "EngineOptions", "Job", "STATUSES", "TERMINAL", "CLIENT"]

# Who is submitting (an API key's fingerprint, or the client address): set per request by the app, read by submit
# for the per-client quota. A context variable, so every adapter's path is covered without passing it along.
CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("bridge_client", default=None)


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """The engine's limits and timings (the BRIDGE_* settings they come from are in bridge/config.py)."""

    max_queue: int = 100                    # jobs waiting or running before submissions get QueueFull
    job_timeout: float | None = 600         # seconds a job may run
    requeue_on_backend_death: bool = False  # run a job again once when its ComfyUI dies
    max_image_bytes: int = image_io.DEFAULT_MAX_BYTES
    max_image_pixels: int = image_io.DEFAULT_MAX_PIXELS
    reconnect_max_delay: float = 10.0       # longest back-off between websocket reconnects
    poll_interval: float = 2.0              # seconds between /history looks at a run whose messages stopped
    cancel_grace: float = 5.0               # seconds a cancel waits for ComfyUI to confirm
    feature_flags: bool = True              # ask ComfyUI for its feature flags on connect
    keep_in_memory: int = 10000             # finished jobs kept in memory (the store keeps all)
    connect_wait: float = 5.0               # seconds start() waits for the first websocket connection
    max_request_cost: int = 0               # workflow cost parameters' product per request; 0: no bound
    max_jobs_per_client: int = 0            # jobs one client may have waiting or running; 0: no bound
    queue_timeout: float | None = None      # seconds a job may wait in the queue
    queue_poll_interval: float = 5.0        # seconds between looks at a backend's queue
    output_metadata: str = "infotext"       # what stored PNGs carry: "infotext", "none", or "comfyui" (the graph)


class JobEngine:
    def __init__(self, backends: list[str], data_dir: Path, workflows_dir: Path, options: EngineOptions | None = None,
                 *, extra_workflow_dirs: list[Path] | None = None, blobs: BlobStore | None = None,
                 webhooks: WebhookConfig | None = None, outbound: OutboundPolicy | None = None,
                 retention: Retention | None = None, **knobs: Any) -> None:
        """`options` holds the engine's limits and timings; `knobs` (the same names) override single ones. The
        parts the engine uses (blob store, webhook, outbound and retention policies) are given as objects."""
        if not backends:
            raise ValueError("at least one ComfyUI backend URL is needed")
        self.backend_urls = [u.rstrip("/") for u in backends]
        self.data_dir = Path(data_dir)
        self.workflows_dir = Path(workflows_dir)
        self.extra_workflow_dirs = [Path(d) for d in extra_workflow_dirs or ()]
        # Loaded (and statically validated) here so a broken workflow stops the bridge at start-up.
        self.workflows: dict[str, Workflow] = wfmod.load_workflows(self.workflows_dir, self.extra_workflow_dirs)
        opts = dataclasses.replace(options or EngineOptions(), **knobs)
        self.options = opts
        self.max_queue = opts.max_queue
        self.job_timeout = opts.job_timeout
        self.requeue_on_backend_death = opts.requeue_on_backend_death
        self.max_image_bytes = opts.max_image_bytes
        self.max_image_pixels = opts.max_image_pixels
        self.reconnect_max_delay = opts.reconnect_max_delay
        self.poll_interval = opts.poll_interval
        self.cancel_grace = opts.cancel_grace
        self.feature_flags = opts.feature_flags
        self.keep_in_memory = opts.keep_in_memory
        self.connect_wait = opts.connect_wait
        self.max_request_cost = opts.max_request_cost
        self.max_jobs_per_client = opts.max_jobs_per_client
        self.queue_timeout = opts.queue_timeout
        self.queue_poll_interval = opts.queue_poll_interval
        self.output_metadata = opts.output_metadata
        self.store: Store | None = None
        # The blob store for result and input images: given (S3), or the data directory's files.
        self.blobs: BlobStore = blobs if blobs is not None else LocalBlobs(self.data_dir)
        self.webhook_config = webhooks or WebhookConfig()
        self.retention = retention or Retention()
        # Every request to an address a client named (image URLs, webhook receivers) goes through this.
        self.outbound = Outbound(outbound or OutboundPolicy(max_bytes=opts.max_image_bytes))
        self.webhooks: Webhooks | None = None
        self.hub = EventHub()
        # Set when the server begins to stop: long polls and synchronous requests stop waiting, so a graceful
        # shutdown is not held for minutes by clients waiting on jobs (the jobs themselves go on in ComfyUI).
        self.stopping = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._connections: dict[str, Connection] = {}
        self._table: JobTable | None = None
        self._runs = Runs()
        self._dispatcher: Dispatcher | None = None
        self._tracker: Tracker | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._started = False
        self._rng = random.Random()
        # Client-chosen job ids whose submission is under way (images being decoded and stored): a second
        # submission with the same id is refused at once instead of writing over the first one's inputs.
        self._submitting: dict[str, asyncio.Event] = {}

    # ================================================================= lifecycle
    async def start(self) -> None:
        """Open the store, reconcile persisted jobs, connect every backend's websocket."""
        if self._started:
            return
        self._started = True
        self.store = Store(self.data_dir)
        self._session = aiohttp.ClientSession()
        client_id = self.store.client_id()
        workflows = lambda: self.workflows  # noqa: E731 - read at call time: a reload swaps the dict
        for url in self.backend_urls:
            self._connections[url] = Connection(url, ComfyClient(url, self._session, client_id), workflows,
                                                reconnect_max_delay=self.reconnect_max_delay,
                                                feature_flags=self.feature_flags)
        table = self._table = JobTable(self.store, self.hub, keep_in_memory=self.keep_in_memory,
                                       drop_inputs=lambda job_id: self._spawn(self._drop_inputs(job_id)))
        self._dispatcher = Dispatcher(table, self._runs, self.blobs, self._connections, workflows)
        self._tracker = Tracker(table, self._runs, self.blobs, self._dispatcher, self._connections, workflows,
                                self._spawn, poll_interval=self.poll_interval, cancel_grace=self.cancel_grace,
                                requeue_on_backend_death=self.requeue_on_backend_death,
                                queue_poll_interval=self.queue_poll_interval, queue_timeout=self.queue_timeout,
                                metadata=self.output_metadata,
                                comfyui_output_dirs=self.retention.comfyui_output_dirs)
        for job in table.load():
            conn = self._connections.get(job.backend or "")
            if job.prompt_id and conn is not None:
                # Reconciled against /history and /queue once the websocket is up.
                conn.jobs.add(job.id)
                self._runs.start(job, job.prompt_id, Run.for_job(self.workflows.get(job.workflow), job))
            else:
                self._dispatcher.requeue(job, front=False)
        self._start_webhooks()
        for conn in self._connections.values():
            conn.start(self._tracker)
        self._tasks.append(asyncio.create_task(self._dispatcher.run(self._tracker.fail), name="engine-dispatch"))
        self._tasks.append(asyncio.create_task(self._tracker.watch(), name="engine-watchdog"))
        if self.retention.max_age > 0 or self.retention.max_bytes > 0:
            self._tasks.append(asyncio.create_task(retention.run(self.retention, self.sweep), name="engine-retention"))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.first_attempt.wait() for c in self._connections.values())),
                                   self.connect_wait)

    async def stop(self) -> None:
        """Stop tracking; jobs keep running on ComfyUI and are picked up by the next start()."""
        if not self._started:
            return
        if self.webhooks is not None:
            with contextlib.suppress(ValueError):
                self.hub.listeners.remove(self.webhooks.on_event)
            await self.webhooks.flush()
            await self.webhooks.stop()
            self.webhooks = None
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*(c.close() for c in self._connections.values()), *self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._connections.clear()
        if self._session is not None:
            await self._session.close()
        await self.outbound.close()
        if self.store is not None:
            self.store.close()
        self._started = False

    def _start_webhooks(self) -> None:
        assert self.store is not None and self._session is not None
        cfg = self.webhook_config
        secret = cfg.secret or self.store.get_value("webhook_secret")
        if not secret:
            secret = new_secret()
            self.store.set_value("webhook_secret", secret)
        self.webhooks = Webhooks(self.store, secret, self.outbound.post, describe=self.describe, everyone=cfg.everyone,
                                 policy=cfg.policy)
        self.hub.listeners.append(self.webhooks.on_event)
        self._tasks.append(asyncio.create_task(self.webhooks.run(), name="engine-webhooks"))

    async def describe(self, job: Job) -> dict[str, Any]:
        """A job as webhook messages carry it: state, timings, and links to its result images."""
        outputs: dict[str, list[Any]] = {}
        for name, values in job.outputs.items():
            if self.workflow_output_type(job.workflow, name) == "images":
                outputs[name] = [await self.result_link(job, name, i) for i in range(len(values))]
            else:
                outputs[name] = list(values)
        meta = {k: v for k, v in (job.meta or {}).items() if k in ("dialect", "client_id", "index", "seed")}
        return {"id": job.id, "status": job.status, "workflow": job.workflow, "workflow_version": job.workflow_version,
                "progress": round(job.progress, 1), "error": job.error, "created_at": job.created_at,
                "started_at": job.started_at, "finished_at": job.finished_at, "outputs": outputs, "meta": meta}

    def preview(self, job_id: str) -> tuple[str, bytes] | None:
        """The newest live preview of a running job (image type, bytes), or the last one of a job that ended;
        None when ComfyUI sent none (it sends them when started with a --preview-method)."""
        run = self._runs.get(job_id)
        if run is not None and run.preview is not None:
            return run.preview
        return self._tracker.previews.get(job_id) if self._tracker is not None else None

    async def delete(self, job_id: str) -> None:
        """Remove a job, its results, inputs and webhook log from every store; a job still queued or running is
        cancelled first (JobNotFound when there is none)."""
        job = self.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if not job.done:
            await self.cancel(job_id)
            with contextlib.suppress(asyncio.TimeoutError):
                await self.wait(job_id, timeout=self.cancel_grace)
            job = self.get(job_id) or job
        table, _ = self._parts()
        table.remove(job)
        if self._tracker is not None:
            self._tracker.previews.pop(job_id, None)
        await self.blobs.delete_prefix(f"outputs/{job_id}/")
        await self._drop_inputs(job_id)

    async def sweep(self) -> list[str]:
        """One retention pass (BRIDGE_RESULT_MAX_AGE, BRIDGE_RESULT_MAX_BYTES); returns the removed job ids."""
        assert self.store is not None
        return await retention.sweep(self.retention, self.blobs, self.store.finished_jobs, self.delete)

    async def fetch_image(self, value: Any, field: str) -> Any:
        """An image field's value with a URL replaced by the bytes it names: `http(s)://` through the outbound
        policy (public addresses only, size, time and redirect limits), `s3://bucket/key` from the configured S3
        store's own bucket only (the bridge's credentials read nothing else). Anything else comes back as it is."""
        if not isinstance(value, str) or not value.startswith(("http://", "https://", "s3://")):
            return value
        if value.startswith("s3://"):
            return await self._fetch_s3(value, field)
        try:
            return await self.outbound.fetch(value)
        except OutboundRefused as exc:
            raise InvalidParameter(field, f"{field}: the image URL was refused: {exc}") from None

    async def _fetch_s3(self, url: str, field: str) -> bytes:
        bucket = getattr(self.blobs, "bucket", None)
        parts = url[len("s3://"):].split("/", 1)
        if bucket is None or parts[0] != bucket or len(parts) < 2 or not parts[1]:
            where = f"s3://{bucket}/..." if bucket else "nothing: BRIDGE_STORAGE is not S3"
            raise InvalidParameter(field, f"{field}: s3:// images are read from the bridge's own bucket only "
                                          f"({where})")
        try:
            return await self.blobs.read_path(parts[1], self.outbound.policy.max_bytes)  # type: ignore[attr-defined]
        except BlobNotFound:
            raise InvalidParameter(field, f"{field}: {url} does not exist") from None
        except ValueError as exc:
            raise InvalidParameter(field, f"{field}: {exc}") from None

    async def result_link(self, job: Job, name: str, index: int, origin: str = "") -> str:
        """Where a client fetches a result image: a presigned store URL when the store gives one, else the
        bridge's own `/jobs/{id}/outputs/{name}/{index}`, absolute with BRIDGE_PUBLIC_URL or else `origin` (the
        scheme and host a request came to)."""
        key = job.outputs[name][index]
        url = await self.blobs.url(key, self.webhook_config.link_lifetime)
        base = self.webhook_config.public_url or origin
        return url or f"{base}/jobs/{job.id}/outputs/{name}/{index}"

    async def _drop_inputs(self, job_id: str) -> None:
        try:
            await self.blobs.delete_prefix(input_key(job_id, "x").rsplit("/", 1)[0] + "/")
        except Exception as exc:  # noqa: BLE001 - a leftover input is harmless; retention removes it later
            log.info("job %s: inputs not removed: %s", job_id, exc)

    async def __aenter__(self) -> JobEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # ================================================================= adapter API
    def workflow(self, name: str) -> Workflow:
        return wfmod.get_workflow(self.workflows, name)

    def reload_workflows(self) -> list[str]:
        """Read the workflow folders again (a workflow dropped in is served from now on); returns the names.

        A broken folder raises WorkflowError and leaves the served set as it was. Jobs already accepted keep the
        version they were accepted with until they are dispatched.
        """
        loaded = wfmod.load_workflows(self.workflows_dir, self.extra_workflow_dirs)
        self.workflows = loaded
        for conn in self._connections.values():
            if conn.object_info is not None:
                conn.set_object_info(conn.object_info)
        return sorted(loaded)

    async def submit(self, workflow: str, parameters: Mapping[str, Any] | None = None, *,
                     meta: Mapping[str, Any] | None = None, job_id: str | None = None,
                     timeout: float | None = None, outputs: list[str] | None = None) -> Job:
        """Accept a job: validate parameters, store inputs, queue on a backend (or locally until one is up).

        `outputs` names the manifest outputs wanted (None = all): ComfyUI is asked to run only the output
        nodes they need (`partial_execution_targets`), and `job.outputs` holds only those names.

        Raises InvalidParameter / PayloadTooLarge for bad input, WorkflowNotFound, Conflict for a reused
        job_id, QueueFull when max_queue jobs are waiting or running, BackendUnavailable when no
        configured backend can run this workflow.
        """
        table, dispatcher = self._parts()
        wf = self.workflow(workflow)
        if table.active >= self.max_queue:
            raise QueueFull(self._retry_after(table.active))
        client = CLIENT.get()
        self._check_client_quota(client)
        values = wf.coerce(parameters or {}, rng=self._rng)
        self.check_cost([(wf, values)])
        await self._check_webhook((meta or {}).get("webhook"))
        wanted = _wanted_outputs(wf, outputs)
        if job_id is not None:
            try:
                check_id(job_id)
            except ValueError as exc:
                raise InvalidParameter("job_id", str(exc)) from None
            if self.get(job_id) is not None or job_id in self._submitting:
                raise Conflict(f"job {job_id!r} already exists", field="job_id")
        jid = job_id or uuid.uuid4().hex
        self._submitting[jid] = asyncio.Event()
        try:
            return await self._accept(wf, values, jid, wanted, meta, timeout, client)
        except BaseException:
            if self.get(jid) is None:  # refused after its images were stored: nothing may keep them
                await self._drop_inputs(jid)
            raise
        finally:
            self._submitting.pop(jid).set()

    async def _accept(self, wf: Workflow, values: dict[str, Any], jid: str, wanted: list[str] | None,
                      meta: Mapping[str, Any] | None, timeout: float | None, client: str | None) -> Job:
        table, dispatcher = self._parts()
        dispatcher.check_support(wf)
        self._check_choices(wf, values)
        params = dict(values)
        inputs: dict[str, str] = {}
        for name, p in wf.parameters.items():
            if p.type != "image" or name not in values:
                continue
            # Adapters that looked at the image pass it decoded; anything else is decoded here, once, in the pool.
            img = await image_io.decode_async(await self.fetch_image(values[name], name), name, max_bytes=self.max_image_bytes,
                                              max_pixels=self.max_image_pixels)
            inputs[name] = input_key(jid, name)
            await self.blobs.put(inputs[name], img.png, "image/png")
            params[name] = {"image": inputs[name], "width": img.width, "height": img.height,
                            "format": img.source_format}
        if table.active >= self.max_queue:
            raise QueueFull(self._retry_after(table.active))  # submit() removes the stored inputs
        job_meta = dict(meta or {})
        if client is not None:
            job_meta["client"] = client
        job = Job(id=jid, workflow=wf.name, workflow_version=wf.version, params=params, status="queued",
                  created_at=time.time(), meta=job_meta, inputs=inputs,
                  timeout=timeout if timeout is not None else self.job_timeout, wanted=wanted)
        table.add(job)
        if not dispatcher.local and dispatcher.pick(wf.name) is not None:
            try:
                await dispatcher.dispatch(job)
            except BridgeError:
                # Refused by the backend's validation: the job was never accepted.
                table.forget(job)
                raise
            except (BackendError, NoBackend) as exc:
                log.warning("job %s: direct dispatch failed (%s); queued locally", jid, exc)
                dispatcher.requeue(job, front=True)
        else:
            dispatcher.requeue(job, front=False)
        table.emit("status", job)
        return job

    async def accepted(self, job_id: str) -> Job | None:
        """The job with this id once a submission of it under way has ended: the job, or None when that
        submission was refused (adapters answer a repeated identical request with the first one's job)."""
        pending = self._submitting.get(job_id)
        if pending is not None:
            await pending.wait()
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        return self._table.get(job_id) if self._table is not None else None

    async def find(self, job_id: str) -> Job | None:
        """The job with this id, or None (also for an id that could not be a job's)."""
        if not isinstance(job_id, str):
            return None
        try:
            check_id(job_id)
        except ValueError:
            return None
        return self.get(job_id)

    def list(self, status: str | None = None, workflow: str | None = None, limit: int = 100,
             offset: int = 0) -> list[Job]:
        table, _ = self._parts()
        return table.list(status, workflow, limit, offset)

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job; False if it had already finished. A queued job is deleted from ComfyUI's queue,
        a running one interrupted by prompt id (the call waits up to cancel_grace for ComfyUI to stop)."""
        table, dispatcher = self._parts()
        tracker = self._tracker
        assert tracker is not None
        job = self.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.done:
            return False
        run = self._runs.get(job.id)
        if run is not None:
            run.cancel_requested = True
        conn = self._connections.get(job.backend or "")
        if job.prompt_id is None or conn is None:
            tracker.finish(job, "cancelled", None)
            return True
        pid = job.prompt_id
        try:
            if job.status == "queued":
                await conn.client.delete_from_queue([pid])
                running, _ = await conn.client.queued_ids()
                if pid not in running:
                    tracker.finish(job, "cancelled", None)
                    return True
            await conn.client.interrupt(pid)
        except BackendError as exc:
            log.warning("job %s: cancel could not reach %s (%s)", job.id, conn.url, exc)
            tracker.finish(job, "cancelled", None)
            return True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(table.done_event(job.id).wait(), self.cancel_grace)
        tracker.finish(job, "cancelled", None)
        return True

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Return the job once it is completed, failed or cancelled (asyncio.TimeoutError after `timeout`)."""
        job = self.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if not job.done:
            assert self._table is not None
            if self.stopping.is_set():
                raise asyncio.TimeoutError
            done = asyncio.ensure_future(self._table.done_event(job_id).wait())
            stop = asyncio.ensure_future(self.stopping.wait())
            try:
                await asyncio.wait_for(asyncio.wait({done, stop}, return_when=asyncio.FIRST_COMPLETED), timeout)
            finally:
                done.cancel()
                stop.cancel()
            if not done.done() or done.cancelled():
                # the server is stopping: the wait ends like one whose time is up
                raise asyncio.TimeoutError
        return self.get(job_id) or job

    async def subscribe(self, job_id: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Events {"type": "progress"|"status", "job": {...}}. With a job id: its current state first,
        ending after its final status; without: every job's events until the consumer stops."""
        job = None
        if job_id is not None:
            job = self.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
        async for event in self.hub.stream(job_id, job):
            yield event

    def workflow_output_type(self, workflow: str, output: str) -> str | None:
        """`images` or `value` for a workflow's output; None when either is unknown (e.g. removed by a reload)."""
        wf = self.workflows.get(workflow)
        out = wf.outputs.get(output) if wf else None
        return out.type if out else None

    async def read_output(self, job: Job | str, name: str = "images", index: int = 0) -> bytes:
        """Bytes of a stored result image."""
        if isinstance(job, str):
            found = self.get(job)
            if found is None:
                raise JobNotFound(job)
            job = found
        wf = self.workflows.get(job.workflow)
        out = wf.outputs.get(name) if wf else None
        if out is None or out.type != "images":
            raise InvalidParameter("output", f"workflow {job.workflow!r} has no image output {name!r}")
        files = job.outputs.get(name) or []
        if not 0 <= index < len(files):
            raise InvalidParameter("index", f"output {name!r} of job {job.id} has {len(files)} images; "
                                            f"index {index} does not exist")
        try:
            return await self.blobs.get(files[index])
        except BlobNotFound:
            raise ResultGone(f"job {job.id}: result {name}[{index}] is no longer stored", field="job_id") from None

    async def choices(self, ref: str) -> list[str]:
        """Live list of a combo input, e.g. "CheckpointLoaderSimple.ckpt_name", from a healthy backend."""
        if not isinstance(ref, str) or "." not in ref:
            raise InvalidParameter("choices", "expected '<NodeClass>.<input>'")
        for conn in self._connections.values():
            if conn.healthy and conn.object_info is not None:
                values = conn.choices(ref)
                if values is None:
                    raise InvalidParameter("choices", f"{ref} is not a list input on {conn.url}")
                return values
        raise BackendUnavailable("no healthy ComfyUI backend to ask for " + ref)

    async def backend_json(self, path: str, params: dict[str, str] | None = None, *, missing_ok: bool = False) -> Any:
        """GET a read-only JSON route (`/embeddings`, `/view_metadata/loras`, `/system_stats`) from a healthy backend:
        the facts adapters report about the models a backend has, which only the backend can read. With
        `missing_ok` a 404 gives None."""
        for conn in self._connections.values():
            if conn.healthy:
                try:
                    return await conn.client.get_json(path, params, missing_ok=missing_ok)
                except BackendError as exc:
                    log.info("%s: %s", conn.url, exc)
        raise BackendUnavailable(f"no healthy ComfyUI backend answers GET {path}")

    async def refresh_object_info(self) -> None:
        """Re-read /object_info (e.g. after models were added) on every healthy backend."""
        for conn in self._connections.values():
            if conn.healthy:
                with contextlib.suppress(BackendError):
                    conn.set_object_info(await conn.client.object_info())

    def stats(self) -> dict[str, Any]:
        table = self._table
        counts = dict(table.counts) if table else {s: 0 for s in STATUSES}
        return {
            "counts": counts,
            "queue_depth": counts["queued"] + counts["running"],
            "max_queue": self.max_queue,
            "local_queue": len(self._dispatcher.local) if self._dispatcher else 0,
            "average_duration": table.average_duration() if table else None,
            "completed_timed": table.timed() if table else 0,
            "backends_total": len(self._connections),
            "backends_healthy": sum(1 for c in self._connections.values() if c.healthy),
        }

    def backend_states(self) -> list[dict[str, Any]]:
        return [c.state() for c in self._connections.values()]

    def request_cost(self, jobs: list[tuple[str, Mapping[str, Any]]]) -> None:
        """Refuse a request whose jobs together cost more than BRIDGE_MAX_REQUEST_COST, before any is submitted."""
        self.check_cost([(self.workflow(name), self.workflow(name).coerce(params, rng=self._rng))
                         for name, params in jobs])

    def check_cost(self, jobs: list[tuple[Workflow, Mapping[str, Any]]]) -> None:
        if not self.max_request_cost or not jobs:
            return
        total = sum(wf.cost(values) for wf, values in jobs)
        if total > self.max_request_cost:
            wf = jobs[0][0]
            terms = list(wf.cost_terms()) + (["jobs"] if len(jobs) > 1 else [])
            raise CostTooHigh(terms, total, self.max_request_cost)

    # ================================================================= helpers
    async def _check_webhook(self, spec: Any) -> None:
        """A job's own receiver is checked when the job is accepted: a client learns now, not from a failed
        delivery later, that it named an address the bridge will not call."""
        url = spec.get("url") if isinstance(spec, Mapping) else spec
        if not url:
            return
        try:
            await self.outbound.check_target(str(url))
        except OutboundRefused as exc:
            raise InvalidParameter("webhook", f"webhook: the receiver URL was refused: {exc}") from None

    def _check_client_quota(self, client: str | None) -> None:
        if not self.max_jobs_per_client or client is None or self._table is None:
            return
        mine = self._table.active_for(client)
        if mine >= self.max_jobs_per_client:
            raise TooManyJobs(self.max_jobs_per_client, self._retry_after(self._table.active))

    def _check_choices(self, wf: Workflow, values: dict[str, Any]) -> None:
        """A choice no healthy backend offers is refused now, before any image is decoded (dispatch checks the
        chosen backend's list again); LoRA names are resolved to the backend's files."""
        known = [c for c in self._connections.values() if c.healthy and c.object_info is not None]
        for name, p in wf.parameters.items():
            if p.type == "loras" and name in values and known:
                live = known[0].choices(p.choices_from or wfmod.LORA_LIST) or []
                # Names become the files the backend lists, so the job records exactly what it applies.
                values[name] = wfmod.resolve_loras(name, values[name], live)  # type: ignore[index]
                continue
            if p.type != "choice" or not p.choices_from or name not in values or not known:
                continue
            offered = [c.choices(p.choices_from) for c in known]
            if all(o is not None and values[name] not in o for o in offered):
                live = next(o for o in offered if o is not None)
                raise InvalidParameter(name, f"{name}: {values[name]!r} is not available on the backend; "
                                             f"choose one of {wfmod.short_list(live)}")


    def _parts(self) -> tuple[JobTable, Dispatcher]:
        if not self._started or self._table is None or self._dispatcher is None:
            raise BackendUnavailable("the job engine is not started")
        return self._table, self._dispatcher

    def _retry_after(self, active: int) -> float:
        avg = (self._table.average_duration() if self._table else None) or 10.0
        healthy = max(1, sum(1 for c in self._connections.values() if c.healthy))
        return max(1.0, avg * (active - self.max_queue + 1) / healthy)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[Any]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task failed: %r", task.exception())


def _wanted_outputs(wf: Workflow, outputs: Any) -> list[str] | None:
    """The caller's output selection, checked: None (all), or a non-empty list of the manifest's names."""
    if outputs is None:
        return None
    if not isinstance(outputs, (list, tuple)) or not outputs or not all(isinstance(o, str) for o in outputs):
        raise InvalidParameter("outputs", f"outputs must be a non-empty list of output names of workflow "
                                          f"{wf.name!r} ({', '.join(wf.outputs)})")
    unknown = [o for o in outputs if o not in wf.outputs]
    if unknown:
        raise InvalidParameter("outputs", f"outputs: workflow {wf.name!r} has no output {unknown[0]!r}; "
                                          f"known: {', '.join(wf.outputs)}")
    return list(dict.fromkeys(outputs))
