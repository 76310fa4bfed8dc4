"""What every adapter needs from the bridge, written once: the engine and settings of a request, live choice lists,
and running a request's jobs to the end (cancelled when the client goes away).

Adapters import this module and `bridge.*`, never each other.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePath
from typing import Any

from aiohttp import web

from bridge.config import Settings
from bridge.engine import JobEngine
from bridge.errors import BackendUnavailable, BridgeError, InvalidParameter, JobNotFound, NotAvailable
from bridge.keys import ENGINE, SETTINGS
from bridge.store import Job

log = logging.getLogger("bridge.adapters")

# How often a waiting handler looks whether its client is still there.
DISCONNECT_POLL = 0.25


def request_origin(request: web.Request) -> str:
    """`scheme://host` the client reached: result links are made absolute with it when BRIDGE_PUBLIC_URL is unset."""
    return f"{request.scheme}://{request.host}"


def engine_of(request: web.Request) -> JobEngine:
    return request.app[ENGINE]


def settings_of(request: web.Request) -> Settings:
    return request.app[SETTINGS]


async def live_choices(engine: JobEngine, ref: str) -> list[str] | None:
    """A healthy backend's list for `"<NodeClass>.<input>"`: None when no backend answers right now, [] when the
    backend has no such node (e.g. the CLIP-vision loader of a minimal install)."""
    try:
        return await engine.choices(ref)
    except BackendUnavailable:
        return None
    except InvalidParameter:
        return []


async def resolve_checkpoint(engine: JobEngine, workflow: str, requested: str | None, default: str = "",
                             field: str = "model", setting: str = "") -> str | None:
    """The checkpoint a job will use: the request's (matched by file name or stem), else the configured default
    (the setting named `setting`), else the graph's when installed, else the first installed. None only when no
    backend answers and nothing was asked for (the engine then picks at dispatch)."""
    available = await live_choices(engine, "CheckpointLoaderSimple.ckpt_name")
    name = requested or default or None
    if available is None:
        return name
    if name:
        if name in available:
            return name
        by_stem = [c for c in available if PurePath(c).stem == name or PurePath(c).name == name]
        if len(by_stem) == 1:
            return by_stem[0]
        if not requested and setting:
            # The operator's file, not the request's: a 400 naming `model` would send the client to fix a field it
            # never sent.
            raise BridgeError(f"{setting} names {name}, which the ComfyUI server does not have (Model {name} not "
                              f"loaded); a request may name its own {field}")
        raise NotAvailable(field, f"Model {name} not loaded", available)
    graph_value = engine.workflow(workflow).graph_value("checkpoint")
    if graph_value in available:
        return graph_value
    if not available:
        raise NotAvailable(field, "No checkpoint is installed on the ComfyUI server (models/checkpoints)", [])
    return available[0]


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


class Overdue(asyncio.TimeoutError):
    """A request's deadline passed. ``kept``: the ids of its jobs that go on, for a request with a webhook (the end
    is told there); the others were cancelled."""

    def __init__(self, kept: Sequence[str] = ()) -> None:
        super().__init__()
        self.kept = list(kept)

    def going_on(self) -> str:
        """The words a 504 adds for the jobs that go on ("" when none)."""
        if not self.kept:
            return ""
        one = len(self.kept) == 1
        return (f"; {'job' if one else 'jobs'} {', '.join(self.kept)} {'goes' if one else 'go'} on, and the webhook "
                f"is told when {'it ends' if one else 'they end'}")


class ClientGone(Exception):
    """The client closed the connection while its jobs ran; they were cancelled (unless a setting keeps them)."""


@dataclass
class Submission:
    workflow: str
    params: Mapping[str, Any]
    meta: Mapping[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    outputs: list[str] | None = None
    job_id: str | None = None


@dataclass
class JobGroup:
    """The jobs one synchronous request started. Submitting stops at the first refusal (the others are cancelled);
    waiting ends when all are finished, the deadline passes, or the client goes away."""

    engine: JobEngine
    request: web.Request
    jobs: list[Job] = field(default_factory=list)
    keep_on_disconnect: bool | None = None

    def __post_init__(self) -> None:
        if self.keep_on_disconnect is None:
            self.keep_on_disconnect = settings_of(self.request).keep_jobs_on_disconnect

    @property
    def ids(self) -> list[str]:
        return [j.id for j in self.jobs]

    @property
    def keeps_on_disconnect(self) -> bool:
        return bool(self.keep_on_disconnect) or self.reported

    @property
    def reported(self) -> bool:
        """Whether a job has a webhook: the request's result is told there too, so neither the client leaving nor
        the deadline makes its jobs unwanted."""
        return any((j.meta or {}).get("webhook") for j in self.jobs)

    async def check_cost(self, subs: Sequence[Submission]) -> None:
        """The whole request's cost against BRIDGE_MAX_REQUEST_COST, before its first job is submitted."""
        await self.engine.request_cost([(s.workflow, s.params) for s in subs])

    async def submit(self, sub: Submission) -> Job:
        try:
            job = await self.engine.submit(sub.workflow, sub.params, meta=sub.meta, timeout=sub.timeout,
                                           outputs=sub.outputs, job_id=sub.job_id)
        except BaseException:  # a refusal, anything unforeseen, a shutdown: the request fails, its jobs unwanted
            await self.cancel()
            raise
        self.jobs.append(job)
        return job

    async def cancel(self) -> None:
        for job_id in self.ids:
            with contextlib.suppress(BridgeError):
                await self.engine.cancel(job_id)

    async def _ended(self, job: Job) -> Job:
        try:
            return await self.engine.wait(job.id)
        except JobNotFound:
            # deleted before it ended (by another replica, or removed unfinished): for this request it was cancelled,
            # which every dialect has an answer for; JobNotFound named a job id its client never saw
            return replace(job, status="cancelled", error=job.error or "the job was deleted before it ended")

    async def wait(self, timeout: float | None = None) -> list[Job]:
        """Every job once finished (in submission order). When one fails the others are cancelled at once (the
        request has failed). Raises Overdue after `timeout` seconds and ClientGone when the client disconnects; in
        both cases the jobs are cancelled first, but for a group with a webhook (`reported`), which goes on and
        tells it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waiters = {asyncio.ensure_future(self._ended(j)): j.id for j in self.jobs}
        finished: dict[str, Job] = {}
        try:
            while len(finished) < len(waiters):
                step = DISCONNECT_POLL if deadline is None else min(DISCONNECT_POLL, deadline - time.monotonic())
                if step <= 0:
                    raise asyncio.TimeoutError
                pending = [w for w in waiters if not w.done()]
                await asyncio.wait(pending, timeout=step, return_when=asyncio.FIRST_COMPLETED)
                for w in [w for w in pending if w.done()]:
                    job = w.result()
                    finished[job.id] = job
                    if job.status == "failed":
                        await self.cancel()
                if client_gone(self.request) and not self.keeps_on_disconnect and len(finished) < len(waiters):
                    log.info("client of %s %s went away; cancelling jobs %s", self.request.method,
                             self.request.path, ", ".join(self.ids))
                    raise ClientGone()
            return [finished[j] for j in self.ids]
        except BaseException as exc:
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
            # A cancelled handler is a client that went away (aiohttp cancels its handler) or a server stopping. A
            # TimeoutError is the deadline, or the engine stopping while it waited (engine.wait raises it then).
            overdue = isinstance(exc, asyncio.TimeoutError)
            kept = ((isinstance(exc, asyncio.CancelledError) and self.keeps_on_disconnect)
                    or (overdue and self.reported))
            if not kept:
                await asyncio.shield(self.cancel())
            if overdue:
                raise Overdue(self.ids if kept else ()) from None
            raise


async def long_poll(request: web.Request, job: Job, wait: float) -> Job | None:
    """A `?wait=` answer: the job once it ends, or as it stands when `wait` seconds are up, the server stops or its
    client left; None when it was deleted meanwhile. The bridge's server does not cancel the handler of a client
    that went away (aiohttp's default), so an abandoned `?wait=600` waited to its end: 50 of them held 200 tasks,
    reading another replica's job from the store every 5 s each, for 10 minutes."""
    engine = engine_of(request)
    waiter = asyncio.ensure_future(engine.wait(job.id, timeout=wait))
    try:
        while not waiter.done():
            await asyncio.wait({waiter}, timeout=DISCONNECT_POLL)
            if client_gone(request):
                return job  # nobody reads the answer
    finally:
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
    failure = waiter.exception()
    if failure is None:
        return waiter.result()
    if isinstance(failure, JobNotFound):
        return None
    if not isinstance(failure, asyncio.TimeoutError):
        raise failure
    # as it stands now (a copy read when the poll began is as old as the wait)
    return engine.get(job.id) or await engine.find(job.id)


async def run_jobs(request: web.Request, submissions: Sequence[Submission], *, timeout: float | None = None
                   ) -> list[Job]:
    """Submit every job, then wait for all of them (see JobGroup)."""
    group = JobGroup(engine_of(request), request)
    await group.check_cost(submissions)
    for sub in submissions:
        await group.submit(sub)
    return await group.wait(timeout)
