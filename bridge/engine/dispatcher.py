"""Scheduling: which backend runs a job, and getting it there.

A job goes to the healthy backend with the least pending work that can run its workflow (ties: configured
order); on a shared store the work other replicas sent there counts too. Dispatching uploads the job's input
images, binds its parameters into a fresh graph (live choices from that backend), writes the job (fenced: a replica
that lost the job never posts it) and queues the prompt; a job cancelled meanwhile is not posted, and a prompt posted
as its cancel ran is taken out of ComfyUI again. Jobs that find no backend wait in a local queue, oldest
first, or on a shared store are released for a replica that has one; a job whose backend went away before it
started goes back to the front, and one whose dispatch a backend that stays up keeps failing fails.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bridge import workflows as wfmod
from bridge.errors import BackendUnavailable, BridgeError, InvalidParameter, WorkflowError
from bridge.storage import BlobStore
from bridge.store import Job

from .client import BackendError, PromptRejected
from .connection import Connection
from .jobs import JobTable
from .retention import CopyRemover
from .runs import Run, Runs

log = logging.getLogger("bridge.engine.dispatcher")


class NoBackend(Exception):
    pass


def upload_name(job_id: str, prompt_id: str, name: str) -> str:
    """The file a job's input image ``name`` is uploaded as into ComfyUI's input folder for one dispatch (its prompt
    id): removing a dispatch's files once no prompt will read them (`Dispatcher.drop_uploads`, a fraction of a
    second later) must never take the files of the next dispatch of the job, or of a later job given the same id."""
    return f"pixart_{job_id}_{prompt_id[:8]}_{name}.png"


# A job whose dispatch failed this many times, over at least this many seconds, on every backend that runs its
# workflow while they stayed up, is failed: its graph is what they cannot take (ComfyUI's /prompt answers 500 to an
# exception it did not foresee). Retried at the queue's front without end, it held every job behind it; the span
# lets a brief trouble of a backend (a network folder gone for a moment) pass without failing anything.
MAX_DISPATCH_FAILURES = 5
DISPATCH_FAILURE_SPAN = 10.0


@dataclass
class Failures:
    """One job's dispatches in a row that ended in a BackendError: how many, since when, on which backends."""
    count: int = 0
    since: float = field(default_factory=time.monotonic)
    backends: set[str] = field(default_factory=set)


def crashed(exc: Exception) -> str:
    """A job's error for a dispatch that broke in a way nobody foresaw (the loop's and the first dispatch's)."""
    return f"dispatch failed: {exc.__class__.__name__}: {exc}"


class LostJob(Exception):
    """Another replica runs the job now; this one must not send it anywhere."""


class Dispatcher:
    def __init__(self, table: JobTable, runs: Runs, blobs: BlobStore, connections: Mapping[str, Connection],
                 workflows: Callable[[], Mapping[str, wfmod.Workflow]], *,
                 comfyui_input_dirs: Mapping[str, Path] | None = None) -> None:
        self.table = table
        self.runs = runs
        self.blobs = blobs
        self.connections = connections
        self._workflows = workflows
        self.local: collections.deque[str] = collections.deque()
        self.wake = asyncio.Event()
        # Shared store: unfinished jobs other replicas have on each backend, and where to give a job this replica
        # has no backend for (None: it waits here).
        self.others: dict[str, int] = {}
        self.release: Callable[[Job], Awaitable[None]] | None = None
        # Removes ComfyUI's files: uploads in the input folders the bridge can reach (managed ComfyUI,
        # COMFYUI_INPUT_DIR), and for the tracker the copies of results in its output folder.
        self.copies = CopyRemover()
        self.comfyui_input_dirs = dict(comfyui_input_dirs or {})
        self.failures: dict[str, Failures] = {}

    def set_loads(self, loads: Mapping[str, int]) -> None:
        """Every backend's unfinished jobs, all replicas together (this one's own are counted live)."""
        self.others = {url: max(0, n - len(conn.jobs)) for url, conn in self.connections.items()
                       for n in [loads.get(url, 0)]}

    # ------------------------------------------------------------------ choosing
    def pick(self, workflow: str, avoid: Collection[str] = ()) -> Connection | None:
        """The backend for a job of `workflow`; one not in `avoid` (those that failed the job) where there is one."""
        usable = [c for c in self.connections.values() if c.can_run(workflow)]
        usable = [c for c in usable if c.url not in avoid] or usable
        return min(usable, key=lambda c: len(c.jobs) + self.others.get(c.url, 0)) if usable else None

    def failed(self, job: Job, exc: BackendError) -> str | None:
        """Count a dispatch of `job` that `exc` ended; why the job fails now, or None while it is to be retried."""
        failures = self.failures.setdefault(job.id, Failures())
        failures.count += 1
        failures.backends.add(exc.url)
        usable = {c.url for c in self.connections.values() if c.can_run(job.workflow)}
        span = time.monotonic() - failures.since
        if failures.count < MAX_DISPATCH_FAILURES or span < DISPATCH_FAILURE_SPAN or not usable \
                or not usable <= failures.backends:
            return None
        del self.failures[job.id]
        return f"could not be queued {failures.count} times in {span:.0f} s on every backend that runs it: {exc}"

    def check_support(self, wf: wfmod.Workflow) -> None:
        """Refuse a workflow that every backend whose nodes are known has problems with."""
        known = [c for c in self.connections.values() if c.object_info is not None]
        if known and all(c.workflow_problems.get(wf.name) for c in known):
            problems = next(c.workflow_problems[wf.name] for c in known)
            raise BackendUnavailable(f"no backend can run workflow {wf.name!r}: {problems[0]}", field="workflow")

    # ------------------------------------------------------------------ queueing
    def requeue(self, job: Job, *, front: bool) -> None:
        """Back to the local queue, as if never dispatched (the backend's copy is abandoned); a job that has ended
        stays ended."""
        if job.done:
            return
        self.runs.stop(job)
        conn = self.connections.get(job.backend or "")
        if conn is not None:
            conn.jobs.discard(job.id)
        self.drop_uploads(job, job.prompt_id)
        self.table.reset_to_queued(job)
        if job.id not in self.local:
            (self.local.appendleft if front else self.local.append)(job.id)
        self.wake.set()

    def remove(self, job_id: str) -> None:
        self.failures.pop(job_id, None)
        try:
            self.local.remove(job_id)
        except ValueError:
            pass

    # ------------------------------------------------------------------ dispatching
    async def dispatch(self, job: Job) -> None:
        wf = self._workflows().get(job.workflow)
        if wf is None:
            raise InvalidParameter("workflow", f"workflow {job.workflow!r} no longer exists")
        conn = self.pick(wf.name, self.failures[job.id].backends if job.id in self.failures else ())
        if conn is None:
            raise NoBackend()
        conn.jobs.add(job.id)
        prompt_id = str(uuid.uuid4())
        try:
            values = wf.recheck({k: v for k, v in job.params.items() if k not in job.inputs}, job.inputs)
            for name, rel in job.inputs.items():
                values[name] = await conn.client.upload_image(await self.blobs.get(rel),
                                                              upload_name(job.id, prompt_id, name))
            graph = wf.bind(values, conn.choices)
            wfmod.name_saved_files(graph, prompt_id[:8])
            targets = wfmod.execution_targets(wf, job.wanted, conn.object_info or {}) if job.wanted else None
            job.backend, job.prompt_id = conn.url, prompt_id
            job.attempts += 1
            run = Run.for_job(wf, job, graph)
            run.posting = True
            self.runs.start(job, prompt_id, run)
            # Written before POST: a crash right after it still knows which prompt to look for, and a replica that
            # lost the job to another one learns it here, before it could run the job a second time.
            self.table.save(job)
            if not await self.table.persisted(job):
                raise LostJob(job.id)
            if job.done or run.cancel_requested:
                # Cancelled (or ended) while the uploads or the write were out: the cancel's delete found nothing
                # in ComfyUI's queue, so a prompt posted now would run for a job that has ended. Its ending may
                # have come before the job had a backend and a prompt, so this dispatch lets go of its own.
                run.posting = False
                self._let_go(job, conn, prompt_id)
                return
            await conn.client.queue_prompt(graph, prompt_id, partial_execution_targets=targets, job_id=job.id)
            run.posting = False
        except PromptRejected as exc:
            self._undo(job, conn, prompt_id)
            raise self._rejection(wf, exc) from None
        except BaseException:
            self._undo(job, conn, prompt_id)
            raise
        if job.done or run.cancel_requested:
            # A cancel that ran while the POST was out may have deleted the prompt before ComfyUI queued it; the
            # job has ended (or its cancel ends it), so nobody would stop the prompt from running now.
            await self._withdraw(conn, prompt_id)
            self._let_go(job, conn, prompt_id)
            return
        log.info("job %s: queued on %s as prompt %s", job.id, conn.url, prompt_id)

    async def _withdraw(self, conn: Connection, prompt_id: str) -> None:
        """Take a prompt of an ended job out of ComfyUI: out of its queue, or interrupted if it already runs (by
        prompt id, and only then: an older ComfyUI interrupts whatever runs)."""
        try:
            await conn.client.delete_from_queue([prompt_id])
            running, _ = await conn.client.queued_ids()
            if prompt_id in running:
                await conn.client.interrupt(prompt_id)
        except BackendError as exc:
            log.warning("prompt %s of an ended job left on %s: %s", prompt_id, conn.url, exc)

    def drop_uploads(self, job: Job, prompt_id: str | None) -> None:
        """Remove one dispatch's input images from ComfyUI's input folder, where the bridge has it, once no prompt
        will read them: the job ended, went back to the queue, or its dispatch failed (refused by ComfyUI, or the
        graph not made). Every known folder: they are known only where the bridge has one backend, and a job's
        backend is no longer set once it went back to the queue."""
        if prompt_id is None or not job.inputs:
            return
        files = [("", upload_name(job.id, prompt_id, name)) for name in job.inputs]
        for folder in self.comfyui_input_dirs.values():
            self.copies.add(folder, files)

    def _undo(self, job: Job, conn: Connection, prompt_id: str) -> None:
        self._let_go(job, conn, prompt_id)
        job.backend = job.prompt_id = None

    def _let_go(self, job: Job, conn: Connection, prompt_id: str) -> None:
        """What one dispatch holds of a job: its uploads, its place in the backend's work, its prompt's run."""
        self.drop_uploads(job, prompt_id)
        conn.jobs.discard(job.id)
        self.runs.forget_prompt(prompt_id, job.id)

    @staticmethod
    def _rejection(wf: wfmod.Workflow, exc: PromptRejected) -> BridgeError:
        for nid, cls, inp, msg in exc.input_errors():
            pname = wf.parameter_for_input(nid, inp) if inp else None
            if pname:
                return InvalidParameter(pname, f"{pname}: rejected by ComfyUI ({cls} node {nid}): {msg}")
        return WorkflowError(f"workflow {wf.name}: ComfyUI rejected the graph: {exc.describe()}", field="workflow")

    async def run(self, fail: Callable[[Job, str], None]) -> None:
        """The dispatch loop: whenever woken, send local jobs to backends until none can take the next one."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.local:
                job = self.table.live(self.local[0])
                if job is None or job.done or job.status != "queued":
                    self.failures.pop(self.local.popleft(), None)
                    continue
                if job.workflow in self._workflows() and self.pick(job.workflow) is None:
                    if self.release is None:
                        break
                    # Shared store: a replica with a backend for it takes it instead of it waiting here.
                    self.failures.pop(self.local.popleft(), None)
                    await self.release(job)
                    continue
                self.local.popleft()
                try:
                    await self.dispatch(job)
                    self.failures.pop(job.id, None)
                except NoBackend:
                    self.local.appendleft(job.id)
                    break
                except LostJob:
                    self.failures.pop(job.id, None)
                    continue
                except BackendError as exc:
                    log.warning("job %s: dispatch failed: %s", job.id, exc)
                    why = self.failed(job, exc)
                    if why is not None:
                        fail(job, why)
                        continue
                    self.local.appendleft(job.id)
                    await asyncio.sleep(0.5)
                except BridgeError as exc:
                    self.failures.pop(job.id, None)
                    fail(job, exc.message)
                except Exception as exc:  # noqa: BLE001 - a job must fail, never the loop
                    self.failures.pop(job.id, None)
                    log.exception("job %s: dispatch crashed", job.id)
                    fail(job, crashed(exc))
