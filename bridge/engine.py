"""The job engine: the only thing adapters talk to (API: docs/architecture.md, "Job engine").

One engine drives N ComfyUI backends. Each backend has one websocket (`/ws?clientId=...`, the clientId
persisted so a restarted bridge keeps receiving its prompts' messages) and a reconnect loop with
exponential backoff. A job is bound to a workflow by name, uploaded inputs, queued on the backend with
the least pending work, tracked by prompt id through websocket messages, and finished from `/history`
+ `/view` (or from SaveImageWebsocket binary frames). Jobs live in memory for fast reads and in SQLite
(bridge.store) so that a restart loses no accepted job.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bridge import images as image_io
from bridge import workflows as wfmod
from bridge.comfy_client import (PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA, BackendError, ComfyClient,
                                 PromptRejected, parse_binary)
from bridge.errors import (BackendUnavailable, BridgeError, Conflict, InvalidParameter, JobNotFound, QueueFull,
                           WorkflowError)
from bridge.store import STATUSES, TERMINAL, Job, Store, check_id
from bridge.workflows import Workflow

log = logging.getLogger("bridge.engine")

__all__ = ["JobEngine", "Job", "STATUSES", "TERMINAL"]


class _NoBackend(Exception):
    pass


@dataclass
class _Run:
    """Live tracking of one submitted prompt (not persisted: rebuilt from the graph on restart)."""

    weights: dict[str, float]
    total: float
    done: set[str] = field(default_factory=set)
    current: str | None = None
    fraction: float = 0.0
    frames: dict[str, list[bytes]] = field(default_factory=dict)
    executed: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    interrupted: bool = False
    cancel_requested: bool = False
    timed_out: bool = False
    last_event: float = field(default_factory=time.monotonic)
    finishing: bool = False


@dataclass
class _Backend:
    url: str
    client: ComfyClient
    healthy: bool = False
    version: str | None = None
    devices: list[dict[str, Any]] = field(default_factory=list)
    object_info: dict[str, Any] | None = None
    workflow_problems: dict[str, list[str]] = field(default_factory=dict)
    last_error: str | None = None
    jobs: set[str] = field(default_factory=set)
    connected_since: float | None = None
    current_prompt: str | None = None
    current_node: str | None = None
    first_attempt: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    ws: aiohttp.ClientWebSocketResponse | None = None


class JobEngine:
    def __init__(self, backends: list[str], data_dir: Path, workflows_dir: Path, *, max_queue: int = 100,
                 job_timeout: float | None = 600, requeue_on_backend_death: bool = False,
                 max_image_bytes: int = image_io.DEFAULT_MAX_BYTES, max_image_pixels: int = image_io.DEFAULT_MAX_PIXELS,
                 reconnect_max_delay: float = 10.0, poll_interval: float = 2.0, cancel_grace: float = 5.0,
                 feature_flags: bool = True, keep_in_memory: int = 10000, connect_wait: float = 5.0) -> None:
        if not backends:
            raise ValueError("at least one ComfyUI backend URL is needed")
        self.backend_urls = [u.rstrip("/") for u in backends]
        self.data_dir = Path(data_dir)
        self.workflows_dir = Path(workflows_dir)
        # Loaded (and statically validated) here so a broken workflow stops the bridge at start-up.
        self.workflows: dict[str, Workflow] = wfmod.load_workflows(self.workflows_dir)
        self.max_queue = max_queue
        self.job_timeout = job_timeout
        self.requeue_on_backend_death = requeue_on_backend_death
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self.reconnect_max_delay = reconnect_max_delay
        self.poll_interval = poll_interval
        self.cancel_grace = cancel_grace
        self.feature_flags = feature_flags
        self.keep_in_memory = keep_in_memory
        self.connect_wait = connect_wait
        self.store: Store | None = None
        self._session: aiohttp.ClientSession | None = None
        self._backends: dict[str, _Backend] = {}
        self._jobs: dict[str, Job] = {}
        self._finished_order: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._runs: dict[str, _Run] = {}
        self._by_prompt: dict[str, str] = {}
        self._local: collections.deque[str] = collections.deque()
        self._done_events: dict[str, asyncio.Event] = {}
        self._subs: list[tuple[str | None, asyncio.Queue[dict[str, Any]]]] = []
        self._counts: dict[str, int] = {s: 0 for s in STATUSES}
        self._durations = [0, 0.0]  # completed count, summed seconds
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False
        self._started = False
        self._rng = random.Random()

    # ================================================================= lifecycle
    async def start(self) -> None:
        """Open the store, reconcile persisted jobs, connect every backend's websocket."""
        if self._started:
            return
        self._started = True
        self._stopping = False
        self.store = Store(self.data_dir)
        client_id = self.store.client_id()
        self._session = aiohttp.ClientSession()
        for url in self.backend_urls:
            self._backends[url] = _Backend(url, ComfyClient(url, self._session, client_id))
        self._counts = self.store.counts()
        n, total = self.store.duration_stats()
        self._durations = [n, total]
        for job in reversed(self.store.recent(min(self.keep_in_memory, 1000))):
            if job.done:
                self._remember(job)
        for job in self.store.unfinished():
            self._jobs[job.id] = job
            b = self._backends.get(job.backend or "")
            if job.prompt_id and b is not None:
                # Reconciled against /history and /queue once the websocket is up.
                b.jobs.add(job.id)
                self._by_prompt[job.prompt_id] = job.id
                self._runs[job.id] = self._new_run(job)
            else:
                self._back_to_local(job, front=False)
        for b in self._backends.values():
            b.task = asyncio.create_task(self._backend_loop(b), name=f"comfyui-ws {b.url}")
        self._tasks.append(asyncio.create_task(self._dispatch_loop(), name="engine-dispatch"))
        self._tasks.append(asyncio.create_task(self._watchdog_loop(), name="engine-watchdog"))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(b.first_attempt.wait() for b in self._backends.values())),
                                   self.connect_wait)

    async def stop(self) -> None:
        """Stop tracking; jobs keep running on ComfyUI and are picked up by the next start()."""
        if not self._started:
            return
        self._stopping = True
        tasks = [b.task for b in self._backends.values() if b.task] + self._tasks
        for t in tasks:
            t.cancel()
        for b in self._backends.values():
            if b.ws is not None:
                with contextlib.suppress(Exception):
                    await b.ws.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
        if self.store is not None:
            self.store.close()
        self._started = False

    async def __aenter__(self) -> JobEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # ================================================================= adapter API
    def workflow(self, name: str) -> Workflow:
        return wfmod.get_workflow(self.workflows, name)

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
        self._require_started()
        wf = self.workflow(workflow)
        active = self._counts["queued"] + self._counts["running"]
        if active >= self.max_queue:
            raise QueueFull(self._retry_after(active))
        values = wf.coerce(parameters or {}, rng=self._rng)
        wanted = _wanted_outputs(wf, outputs)
        if job_id is not None:
            try:
                check_id(job_id)
            except ValueError as exc:
                raise InvalidParameter("job_id", str(exc)) from None
            if self.get(job_id) is not None:
                raise Conflict(f"job {job_id!r} already exists", field="job_id")
        jid = job_id or uuid.uuid4().hex
        self._check_backend_support(wf)
        decoded = {}
        for name, p in wf.parameters.items():
            if p.type == "image" and name in values:
                decoded[name] = image_io.decode_image(values[name], name, max_bytes=self.max_image_bytes,
                                                      max_pixels=self.max_image_pixels)
        params = dict(values)
        inputs: dict[str, str] = {}
        for name, img in decoded.items():
            inputs[name] = self.store.write_input(jid, name, img.png)
            params[name] = {"image": inputs[name], "width": img.width, "height": img.height,
                            "format": img.source_format}
        job = Job(id=jid, workflow=wf.name, workflow_version=wf.version, params=params, status="queued",
                  created_at=time.time(), meta=dict(meta or {}), inputs=inputs,
                  timeout=timeout if timeout is not None else self.job_timeout, wanted=wanted)
        self._jobs[jid] = job
        self._counts["queued"] += 1
        if not self._local and self._pick_backend(wf, peek=True) is not None:
            try:
                await self._dispatch(job)
            except BridgeError:
                # Refused by the backend's validation: the job was never accepted.
                self._forget(job)
                raise
            except (BackendError, _NoBackend) as exc:
                log.warning("job %s: direct dispatch failed (%s); queued locally", jid, exc)
                self._back_to_local(job, front=True)
        else:
            self._back_to_local(job, front=False)
        self._emit("status", job)
        return job

    def get(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None and self.store is not None and isinstance(job_id, str):
            job = self.store.load(job_id)
            if job is not None and job.done:
                self._remember(job)
        return job

    def list(self, status: str | None = None, workflow: str | None = None, limit: int = 100,
             offset: int = 0) -> list[Job]:
        self._require_started()
        if status is not None and status not in STATUSES:
            raise InvalidParameter("status", f"status must be one of {', '.join(STATUSES)}")
        if not isinstance(limit, int) or not 0 < limit <= 1000:
            raise InvalidParameter("limit", "limit must be an integer between 1 and 1000")
        if not isinstance(offset, int) or offset < 0:
            raise InvalidParameter("offset", "offset must be a non-negative integer")
        rows = self.store.query(status=status, workflow=workflow, limit=limit, offset=offset)
        # The live copy has progress that is not written on every step.
        return [self._jobs.get(j.id, j) for j in rows]

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job; False if it had already finished. A queued job is deleted from ComfyUI's queue,
        a running one interrupted by prompt id (the call waits up to cancel_grace for ComfyUI to stop)."""
        job = self.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.done:
            return False
        run = self._runs.get(job.id)
        if run is not None:
            run.cancel_requested = True
        b = self._backends.get(job.backend or "")
        if job.prompt_id is None or b is None:
            with contextlib.suppress(ValueError):
                self._local.remove(job.id)
            self._finish(job, "cancelled", error=None)
            return True
        pid = job.prompt_id
        try:
            if job.status == "queued":
                await b.client.delete_from_queue([pid])
                running, pending = await b.client.queued_ids()
                if pid not in running:
                    self._finish(job, "cancelled", error=None)
                    return True
            await b.client.interrupt(pid)
        except BackendError as exc:
            log.warning("job %s: cancel could not reach %s (%s)", job.id, b.url, exc)
            self._finish(job, "cancelled", error=None)
            return True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._done_event(job.id).wait(), self.cancel_grace)
        if not job.done:
            self._finish(job, "cancelled", error=None)
        return True

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Return the job once it is completed, failed or cancelled (asyncio.TimeoutError after `timeout`)."""
        job = self.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if not job.done:
            await asyncio.wait_for(self._done_event(job_id).wait(), timeout)
        return self._jobs.get(job_id, job)

    async def subscribe(self, job_id: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Events {"type": "progress"|"status", "job": {...}}. With a job id: its current state first,
        ending after its final status; without: every job's events until the consumer stops."""
        job = None
        if job_id is not None:
            job = self.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        sub = (job_id, queue)
        self._subs.append(sub)
        try:
            if job is not None:
                yield {"type": "status", "job": job.to_dict()}
                if job.done:
                    return
            while True:
                event = await queue.get()
                yield event
                if job_id is not None and event["job"]["status"] in TERMINAL:
                    return
        finally:
            with contextlib.suppress(ValueError):
                self._subs.remove(sub)

    def read_output(self, job: Job | str, name: str = "images", index: int = 0) -> bytes:
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
        return self.store.read_file(files[index])

    async def choices(self, ref: str) -> list[str]:
        """Live list of a combo input, e.g. "CheckpointLoaderSimple.ckpt_name", from a healthy backend."""
        if not isinstance(ref, str) or "." not in ref:
            raise InvalidParameter("choices", "expected '<NodeClass>.<input>'")
        for b in self._backends.values():
            if b.healthy and b.object_info is not None:
                values = wfmod.live_choices(b.object_info, ref)
                if values is None:
                    raise InvalidParameter("choices", f"{ref} is not a list input on {b.url}")
                return values
        raise BackendUnavailable("no healthy ComfyUI backend to ask for " + ref)

    async def refresh_object_info(self) -> None:
        """Re-read /object_info (e.g. after models were added) on every healthy backend."""
        for b in self._backends.values():
            if b.healthy:
                with contextlib.suppress(BackendError):
                    self._set_object_info(b, await b.client.object_info())

    def stats(self) -> dict[str, Any]:
        n, total = self._durations
        return {
            "counts": dict(self._counts),
            "queue_depth": self._counts["queued"] + self._counts["running"],
            "max_queue": self.max_queue,
            "local_queue": len(self._local),
            "average_duration": (total / n) if n else None,
            "completed_timed": n,
            "backends_total": len(self._backends),
            "backends_healthy": sum(1 for b in self._backends.values() if b.healthy),
        }

    def backend_states(self) -> list[dict[str, Any]]:
        return [{"url": b.url, "healthy": b.healthy, "pending": len(b.jobs), "version": b.version,
                 "devices": [dict(d) for d in b.devices],
                 "last_error": b.last_error, "connected_since": b.connected_since,
                 "workflow_problems": {k: v for k, v in b.workflow_problems.items() if v}}
                for b in self._backends.values()]

    # ================================================================= scheduling
    def _require_started(self) -> None:
        if not self._started or self.store is None:
            raise BackendUnavailable("the job engine is not started")

    def _retry_after(self, active: int) -> float:
        n, total = self._durations
        avg = total / n if n else 10.0
        healthy = max(1, sum(1 for b in self._backends.values() if b.healthy))
        return max(1.0, avg * (active - self.max_queue + 1) / healthy)

    def _check_backend_support(self, wf: Workflow) -> None:
        known = [b for b in self._backends.values() if b.object_info is not None]
        if known and all(b.workflow_problems.get(wf.name) for b in known):
            problems = next(b.workflow_problems[wf.name] for b in known)
            raise BackendUnavailable(f"no backend can run workflow {wf.name!r}: {problems[0]}", field="workflow")

    def _pick_backend(self, wf: Workflow, *, peek: bool = False) -> _Backend | None:
        usable = [b for b in self._backends.values()
                  if b.healthy and b.object_info is not None and not b.workflow_problems.get(wf.name)]
        if not usable:
            return None
        # Least pending work first; ties go to the configured order.
        return min(usable, key=lambda b: len(b.jobs))

    def _back_to_local(self, job: Job, *, front: bool) -> None:
        if job.prompt_id:
            self._by_prompt.pop(job.prompt_id, None)
        b = self._backends.get(job.backend or "")
        if b is not None:
            b.jobs.discard(job.id)
        self._runs.pop(job.id, None)
        if job.status == "running":
            self._count(job, "queued")
        job.status, job.backend, job.prompt_id = "queued", None, None
        job.started_at, job.progress, job.step, job.steps = None, 0.0, None, None
        if job.id not in self._local:
            (self._local.appendleft if front else self._local.append)(job.id)
        self._save(job)
        self._wake.set()

    async def _dispatch(self, job: Job) -> None:
        wf = self.workflows.get(job.workflow)
        if wf is None:
            raise InvalidParameter("workflow", f"workflow {job.workflow!r} no longer exists")
        b = self._pick_backend(wf)
        if b is None:
            raise _NoBackend()
        b.jobs.add(job.id)
        prompt_id = str(uuid.uuid4())
        try:
            values = {k: v for k, v in job.params.items() if k not in job.inputs}
            for name, rel in job.inputs.items():
                values[name] = await b.client.upload_image(self.store.read_file(rel), f"pixart_{job.id}_{name}.png")
            graph = wf.bind(values, lambda ref: wfmod.live_choices(b.object_info or {}, ref))
            targets = wfmod.execution_targets(wf, job.wanted, b.object_info or {}) if job.wanted else None
            job.backend, job.prompt_id = b.url, prompt_id
            job.attempts += 1
            self._by_prompt[prompt_id] = job.id
            self._runs[job.id] = self._new_run(job, graph)
            # Saved before POST: a crash right after it still knows which prompt to look for.
            self._save(job)
            await b.client.queue_prompt(graph, prompt_id, partial_execution_targets=targets)
        except PromptRejected as exc:
            self._undo_dispatch(job, b, prompt_id)
            raise self._map_rejection(wf, exc) from None
        except BaseException:
            self._undo_dispatch(job, b, prompt_id)
            raise
        log.info("job %s: queued on %s as prompt %s", job.id, b.url, prompt_id)

    def _undo_dispatch(self, job: Job, b: _Backend, prompt_id: str) -> None:
        b.jobs.discard(job.id)
        self._by_prompt.pop(prompt_id, None)
        self._runs.pop(job.id, None)
        job.backend = job.prompt_id = None

    @staticmethod
    def _map_rejection(wf: Workflow, exc: PromptRejected) -> BridgeError:
        for nid, cls, inp, msg in exc.input_errors():
            pname = wf.parameter_for_input(nid, inp) if inp else None
            if pname:
                return InvalidParameter(pname, f"{pname}: rejected by ComfyUI ({cls} node {nid}): {msg}")
        return WorkflowError(f"workflow {wf.name}: ComfyUI rejected the graph: {exc.describe()}", field="workflow")

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            while self._local:
                job = self._jobs.get(self._local[0])
                if job is None or job.done or job.status != "queued":
                    self._local.popleft()
                    continue
                wf = self.workflows.get(job.workflow)
                if wf is not None and self._pick_backend(wf) is None:
                    break
                self._local.popleft()
                try:
                    await self._dispatch(job)
                except _NoBackend:
                    self._local.appendleft(job.id)
                    break
                except BackendError as exc:
                    log.warning("job %s: dispatch failed: %s", job.id, exc)
                    self._local.appendleft(job.id)
                    await asyncio.sleep(0.5)
                except BridgeError as exc:
                    self._finish(job, "failed", error=exc.message)
                except Exception as exc:  # noqa: BLE001 - a job must fail, never the loop
                    log.exception("job %s: dispatch crashed", job.id)
                    self._finish(job, "failed", error=f"dispatch failed: {exc}")

    # ================================================================= backend connection
    async def _backend_loop(self, b: _Backend) -> None:
        delay = 0.25
        lost_reason: str | None = None
        while not self._stopping:
            try:
                ws = await b.client.ws_connect()
            except BackendError as exc:
                b.last_error = str(exc)
                b.first_attempt.set()
                if b.jobs:
                    self._backend_lost(b, lost_reason or f"cannot connect: {exc}")
                lost_reason = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_delay)
                continue
            b.ws = ws
            try:
                if self.feature_flags:
                    # Asks for type-4 binary frames, which name their node and prompt.
                    await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
                stats = await b.client.system_stats()
                b.version = (stats.get("system") or {}).get("comfyui_version")
                b.devices = _devices(stats)
                self._set_object_info(b, await b.client.object_info())
                b.healthy, b.connected_since, b.last_error = True, time.time(), None
                delay = 0.25
                b.first_attempt.set()
                await self._reconcile(b)
                self._wake.set()
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        self._on_text(b, msg.data)
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        self._on_binary(b, msg.data)
                    elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                        break
                lost_reason = "websocket closed"
            except asyncio.CancelledError:
                raise
            except BackendError as exc:
                lost_reason = str(exc)
            except Exception as exc:  # noqa: BLE001 - keep the connection loop alive
                log.exception("backend %s: connection loop error", b.url)
                lost_reason = f"{exc.__class__.__name__}: {exc}"
            finally:
                b.healthy = False
                b.ws = None
                b.current_prompt = b.current_node = None
                with contextlib.suppress(Exception):
                    await ws.close()
            b.last_error = lost_reason
            log.warning("backend %s: %s; reconnecting", b.url, lost_reason)
            # Reconnect at once: if that fails the backend is gone and its jobs are settled above.

    def _set_object_info(self, b: _Backend, info: dict[str, Any]) -> None:
        b.object_info = info
        b.workflow_problems = {name: wfmod.check_object_info(wf, info) for name, wf in self.workflows.items()}
        for name, problems in b.workflow_problems.items():
            for p in problems:
                log.error("backend %s: %s", b.url, p)

    def _backend_lost(self, b: _Backend, reason: str) -> None:
        for jid in list(b.jobs):
            job = self._jobs.get(jid)
            b.jobs.discard(jid)
            if job is None or job.done:
                continue
            if job.status == "running":
                if self.requeue_on_backend_death and job.attempts < 2:
                    log.warning("job %s: backend %s died (%s); re-queued once", jid, b.url, reason)
                    self._back_to_local(job, front=True)
                else:
                    self._finish(job, "failed", error=f"ComfyUI backend {b.url} died while running the job "
                                                      f"({reason})")
            else:
                # It never started, so running it elsewhere cannot run it twice.
                self._back_to_local(job, front=True)

    async def _reconcile(self, b: _Backend) -> None:
        """After (re)connecting: settle jobs whose messages may have been missed."""
        for jid in list(b.jobs):
            job = self._jobs.get(jid)
            if job is None or job.done or job.prompt_id is None:
                b.jobs.discard(jid)
                continue
            await self._check_prompt(b, job)

    async def _check_prompt(self, b: _Backend, job: Job) -> None:
        pid = job.prompt_id
        entry = await b.client.history(pid)
        if entry is None:
            running, pending = await b.client.queued_ids()
            if pid in running:
                self._mark_running(job)
                return
            if pid in pending:
                return
            entry = await b.client.history(pid)  # it may have finished between the two reads
        if entry is not None:
            await self._finalize(b, job, entry)
            return
        if job.status == "running" and not (self.requeue_on_backend_death and job.attempts < 2):
            self._finish(job, "failed", error=f"ComfyUI backend {b.url} lost the job (it restarted while the "
                                              f"job was running)")
        else:
            log.warning("job %s: prompt %s unknown to %s; re-queued", job.id, pid, b.url)
            self._back_to_local(job, front=True)

    # ================================================================= websocket messages
    def _on_text(self, b: _Backend, text: str) -> None:
        try:
            msg = json.loads(text)
            mtype, data = msg.get("type"), msg.get("data") or {}
        except (json.JSONDecodeError, AttributeError):
            return
        pid = data.get("prompt_id")
        if mtype == "executing" and pid:
            b.current_prompt, b.current_node = pid, data.get("node")
        jid = self._by_prompt.get(pid) if pid else None
        job = self._jobs.get(jid) if jid else None
        run = self._runs.get(jid) if jid else None
        if job is None or run is None or job.done:
            return
        run.last_event = time.monotonic()
        if mtype == "execution_start":
            self._mark_running(job)
        elif mtype == "execution_cached":
            self._mark_running(job)
            run.done.update(str(n) for n in data.get("nodes") or [])
            self._update_progress(job, run)
        elif mtype == "executing":
            node = data.get("node")
            if node is None:
                # ComfyUI's reliable end-of-prompt signal (success, error or interrupt).
                if not run.finishing:
                    run.finishing = True
                    self._spawn(self._finish_from_history(b, job))
                return
            self._mark_running(job)
            if run.current is not None:
                run.done.add(run.current)
            run.current, run.fraction = str(node), 0.0
            self._update_progress(job, run)
        elif mtype == "progress":
            node = str(data.get("node")) if data.get("node") is not None else run.current
            value, maximum = data.get("value"), data.get("max")
            if isinstance(value, (int, float)) and isinstance(maximum, (int, float)) and maximum > 0:
                if node == run.current:
                    run.fraction = min(1.0, value / maximum)
                job.step, job.steps = int(value), int(maximum)
                self._update_progress(job, run)
        elif mtype == "executed":
            if data.get("node") is not None:
                run.executed[str(data["node"])] = data.get("output") or {}
        elif mtype == "execution_error":
            run.error = (f"{data.get('node_type', '?')} (node {data.get('node_id', '?')}) failed: "
                         f"{data.get('exception_type', 'error')}: {data.get('exception_message', '').strip()}")
        elif mtype == "execution_interrupted":
            run.interrupted = True

    def _on_binary(self, b: _Backend, frame: bytes) -> None:
        try:
            parsed = parse_binary(frame)
        except (ValueError, json.JSONDecodeError):
            return
        if parsed.event not in (PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA):
            return
        # Type 1 frames carry no ids: they belong to the node the websocket last reported as executing.
        pid = parsed.prompt_id or b.current_prompt
        node = parsed.node_id or b.current_node
        jid = self._by_prompt.get(pid) if pid else None
        run = self._runs.get(jid) if jid else None
        job = self._jobs.get(jid) if jid else None
        if run is None or job is None or node is None or str(node) not in job_graph_ws_nodes(self, job):
            return
        run.frames.setdefault(str(node), []).append(parsed.data)
        run.last_event = time.monotonic()

    def _mark_running(self, job: Job) -> None:
        if job.status == "queued" and not job.done:
            self._count(job, "running")
            job.status = "running"
            job.started_at = time.time()
            self._save(job)
            self._emit("status", job)
            run = self._runs.get(job.id)
            if run is not None and run.cancel_requested:
                b = self._backends.get(job.backend or "")
                if b is not None:
                    self._spawn(b.client.interrupt(job.prompt_id))

    def _update_progress(self, job: Job, run: _Run) -> None:
        done = sum(run.weights.get(n, 0.0) for n in run.done)
        if run.current is not None and run.current not in run.done:
            done += run.weights.get(run.current, 0.0) * run.fraction
        value = min(99.0, 100.0 * done / run.total) if run.total else 0.0
        if value != job.progress:
            job.progress = max(job.progress, value)
            self._emit("progress", job)

    def _new_run(self, job: Job, graph: dict[str, Any] | None = None) -> _Run:
        wf = self.workflows.get(job.workflow)
        if graph is None:
            graph = wf.graph if wf else {}
        targets = [wf.outputs[n].node for n in (job.wanted or wf.outputs) if n in wf.outputs] if wf else []
        needed = wfmod.ancestors(graph, targets)
        weights = {}
        for nid in needed:
            steps = graph[nid]["inputs"].get("steps")
            # Sampling dominates the run time, so a sampler counts as many nodes as it has steps.
            weights[nid] = float(steps) if isinstance(steps, int) and steps > 0 else 1.0
        return _Run(weights=weights, total=sum(weights.values()) or 1.0)

    # ================================================================= completion
    async def _finish_from_history(self, b: _Backend, job: Job) -> None:
        entry = None
        for delay in (0.0, 0.1, 0.3, 0.6, 1.0):
            await asyncio.sleep(delay)
            try:
                entry = await b.client.history(job.prompt_id)
            except BackendError as exc:
                log.warning("job %s: history read failed: %s", job.id, exc)
                continue
            if entry is not None:
                break
        if job.done:
            return
        if entry is None:
            run = self._runs.get(job.id)
            if run is not None:
                run.finishing = False  # the watchdog retries
            return
        await self._finalize(b, job, entry)

    async def _finalize(self, b: _Backend, job: Job, entry: dict[str, Any]) -> None:
        if job.done:
            return
        run = self._runs.get(job.id) or self._new_run(job)
        status = entry.get("status") or {}
        messages = status.get("messages") or []
        kinds = [m[0] for m in messages if isinstance(m, list) and m]
        if status.get("status_str") != "success" or "execution_interrupted" in kinds or "execution_error" in kinds:
            if "execution_interrupted" in kinds or run.interrupted:
                if run.cancel_requested:
                    self._finish(job, "cancelled", error=None)
                elif run.timed_out:
                    self._finish(job, "failed", error=f"timed out after {job.timeout:g} s")
                else:
                    self._finish(job, "failed", error="interrupted on the ComfyUI server")
                return
            error = run.error
            for m in messages:
                if isinstance(m, list) and len(m) == 2 and m[0] == "execution_error":
                    d = m[1]
                    error = (f"{d.get('node_type', '?')} (node {d.get('node_id', '?')}) failed: "
                             f"{d.get('exception_type', 'error')}: {str(d.get('exception_message', '')).strip()}")
            self._finish(job, "failed", error=error or "ComfyUI reported an error")
            return
        wf = self.workflows[job.workflow]
        values: dict[str, list[Any]] = {}
        blobs: dict[str, list[bytes]] = {}
        missing: list[str] = []
        try:
            for name in [n for n in job.wanted or wf.outputs if n in wf.outputs]:
                out = wf.outputs[name]
                node_out = (entry.get("outputs") or {}).get(out.node) or run.executed.get(out.node) or {}
                if out.type == "value":
                    values[name] = list(node_out.get(out.key, []))
                    continue
                if wf.output_class(out) in wfmod.WEBSOCKET_IMAGE_CLASSES:
                    blobs[name] = list(run.frames.get(out.node, []))
                else:
                    blobs[name] = [await b.client.view(img["filename"], img.get("subfolder", ""),
                                                       img.get("type", "output"))
                                   for img in node_out.get("images", [])]
                if not blobs[name]:
                    missing.append(name)
        except BackendError as exc:
            if not job.done:
                self._finish(job, "failed", error=f"could not fetch the results: {exc}")
            return
        if job.done:
            return
        if missing:
            self._missing_images(wf, job, missing)
            return
        outputs: dict[str, list[Any]] = dict(values)
        for name, datas in blobs.items():
            outputs[name] = [self.store.write_output(job.id, name, i, data, image_io.sniff_image_type(data) or "bin")
                             for i, data in enumerate(datas)]
        job.outputs = outputs
        self._finish(job, "completed", error=None)

    def _missing_images(self, wf: Workflow, job: Job, missing: list[str]) -> None:
        """ComfyUI says success but an images output is empty: re-run once when the images only ever existed as
        websocket frames this engine did not see (it restarted or lost the socket mid-run); otherwise fail."""
        described = ", ".join(f"{n!r} (node {wf.outputs[n].node}, {wf.output_class(wf.outputs[n])})" for n in missing)
        frames_only = all(wf.output_class(wf.outputs[n]) in wfmod.WEBSOCKET_IMAGE_CLASSES for n in missing)
        if frames_only and not job.reruns:
            reason = (f"prompt {job.prompt_id} on {job.backend} finished while the bridge was not receiving its "
                      f"websocket image frames for {described}; submitted again")
            log.warning("job %s: %s", job.id, reason)
            job.reruns.append({"prompt_id": job.prompt_id, "reason": reason, "at": time.time()})
            self._back_to_local(job, front=True)
            self._emit("status", job)
            return
        why = ("its websocket image frames were not received" + (" (also after a re-run)" if job.reruns else "")
               if frames_only else "ComfyUI listed no images for it")
        self._finish(job, "failed", error=f"ComfyUI reported success but output {described} produced no images: "
                                          f"{why}")

    def _finish(self, job: Job, status: str, *, error: str | None) -> None:
        if job.done:
            return
        self._count(job, status)
        job.status = status
        job.error = error
        job.finished_at = time.time()
        if status == "completed":
            job.progress = 100.0
            if job.started_at is not None:
                self._durations[0] += 1
                self._durations[1] += job.finished_at - job.started_at
        b = self._backends.get(job.backend or "")
        if b is not None:
            b.jobs.discard(job.id)
        if job.prompt_id:
            self._by_prompt.pop(job.prompt_id, None)
        self._runs.pop(job.id, None)
        with contextlib.suppress(ValueError):
            self._local.remove(job.id)
        self._save(job)
        if self.store is not None:
            with contextlib.suppress(OSError, ValueError):
                self.store.remove_inputs(job.id)
        self._remember(job)
        ev = self._done_events.pop(job.id, None)
        if ev is not None:
            ev.set()
        self._emit("status", job)
        self._wake.set()
        if error:
            log.info("job %s: %s: %s", job.id, status, error)

    def _forget(self, job: Job) -> None:
        """Drop a job refused at submit time (it was never accepted)."""
        self._counts[job.status] -= 1
        self._jobs.pop(job.id, None)
        self.store.delete(job.id)
        with contextlib.suppress(OSError, ValueError):
            self.store.remove_inputs(job.id)

    # ================================================================= watchdog: timeouts, missed messages
    async def _watchdog_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(min(0.5, self.poll_interval))
            now = time.time()
            for job in [j for j in self._jobs.values() if j.status == "running"]:
                run = self._runs.get(job.id)
                b = self._backends.get(job.backend or "")
                if run is None or b is None:
                    continue
                if job.timeout and job.started_at and now - job.started_at > job.timeout and not run.timed_out:
                    run.timed_out = True
                    self._spawn(self._timeout(b, job))
                elif b.healthy and not run.finishing and time.monotonic() - run.last_event > self.poll_interval:
                    run.last_event = time.monotonic()
                    self._spawn(self._poll(b, job))

    async def _timeout(self, b: _Backend, job: Job) -> None:
        with contextlib.suppress(BackendError):
            await b.client.interrupt(job.prompt_id)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._done_event(job.id).wait(), self.cancel_grace)
        self._finish(job, "failed", error=f"timed out after {job.timeout:g} s")

    async def _poll(self, b: _Backend, job: Job) -> None:
        try:
            await self._check_prompt(b, job)
        except BackendError as exc:
            log.debug("job %s: poll failed: %s", job.id, exc)

    # ================================================================= helpers
    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: (self._tasks.remove(t) if t in self._tasks else None,
                                          t.cancelled() or t.exception() and log.error("task failed: %r",
                                                                                      t.exception())))

    def _done_event(self, job_id: str) -> asyncio.Event:
        return self._done_events.setdefault(job_id, asyncio.Event())

    def _count(self, job: Job, new_status: str) -> None:
        self._counts[job.status] -= 1
        self._counts[new_status] += 1

    def _save(self, job: Job) -> None:
        if self.store is not None:
            self.store.save(job)

    def _remember(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._finished_order[job.id] = None
        self._finished_order.move_to_end(job.id)
        while len(self._finished_order) > self.keep_in_memory:
            old, _ = self._finished_order.popitem(last=False)
            self._jobs.pop(old, None)

    def _emit(self, kind: str, job: Job) -> None:
        if not self._subs:
            return
        event = {"type": kind, "job": job.to_dict()}
        for job_filter, queue in self._subs:
            if job_filter is not None and job_filter != job.id:
                continue
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()  # a slow consumer loses old progress, not the newest state
            queue.put_nowait(event)


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


def _devices(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """{name, type} of each device `/system_stats` lists (type is torch's: cuda, cpu, mps, xpu, ...)."""
    found = []
    for d in stats.get("devices") or []:
        if isinstance(d, Mapping):
            found.append({"name": str(d.get("name", "")), "type": str(d.get("type", ""))})
    return found


def job_graph_ws_nodes(engine: JobEngine, job: Job) -> set[str]:
    """Node ids of the job's websocket image outputs (SaveImageWebsocket)."""
    wf = engine.workflows.get(job.workflow)
    if wf is None:
        return set()
    return {o.node for o in wf.outputs.values()
            if o.type == "images" and wf.output_class(o) in wfmod.WEBSOCKET_IMAGE_CLASSES}
