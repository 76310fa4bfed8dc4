"""The adapters' shared request helpers (bridge.adapters.toolkit)."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.adapters.toolkit import JobGroup, Overdue, Submission
from bridge.errors import QueueFull

pytestmark = pytest.mark.asyncio


class _Engine:
    """Accepts jobs until it is told to fail with `error`; records what is cancelled."""

    def __init__(self, error: BaseException) -> None:
        self.error, self.accepted, self.cancelled = error, 0, []

    async def submit(self, workflow: str, params: Any, meta: Any = None, **_: Any) -> Any:
        if self.accepted == 2:
            raise self.error
        self.accepted += 1
        return SimpleNamespace(id=f"j{self.accepted}", meta=meta)

    async def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)


@pytest.mark.parametrize("error", [QueueFull(8), RuntimeError("unforeseen")])
async def test_a_group_whose_submission_fails_cancels_the_jobs_it_started(error: BaseException) -> None:
    # only a BridgeError cancelled them: anything else left the first jobs running for a request that had failed
    engine = _Engine(error)
    group = JobGroup(engine, request=None, keep_on_disconnect=False)  # type: ignore[arg-type]
    await group.submit(Submission("w", {}))
    await group.submit(Submission("w", {}))
    with pytest.raises(type(error)):
        await group.submit(Submission("w", {}))
    assert engine.cancelled == ["j1", "j2"]


@pytest.mark.parametrize("webhooks,cancelled", [((None, None), ["j1", "j2"]),
                                                ((None, "https://example.com/hook"), [])])
async def test_a_request_past_its_deadline_keeps_its_jobs_when_it_has_a_webhook(webhooks: tuple[str | None, ...],
                                                                               cancelled: list[str]) -> None:
    # a webhook is told when the request's jobs end: its deadline passing (a 504) does not make them unwanted (they
    # were cancelled, and the webhook told job.cancelled); the 504 names the jobs that go on
    engine = _Engine(RuntimeError("unused"))

    async def never(job_id: str) -> Any:
        await asyncio.Event().wait()

    engine.wait = never  # type: ignore[attr-defined]
    request = SimpleNamespace(transport=SimpleNamespace(is_closing=lambda: False))
    group = JobGroup(engine, request=request, keep_on_disconnect=False)  # type: ignore[arg-type]
    for webhook in webhooks:
        await group.submit(Submission("w", {}, meta={"webhook": webhook}))
    with pytest.raises(Overdue) as e:
        await group.wait(0.05)
    assert engine.cancelled == cancelled and e.value.kept == (["j1", "j2"] if not cancelled else [])
    assert ("j1, j2 go on" in e.value.going_on()) is not bool(cancelled)


async def test_an_engine_stopping_while_a_request_waits_is_overdue_too() -> None:
    # engine.wait raises a plain TimeoutError when the engine stops: the adapters, which answer Overdue with a 504,
    # let it through as a 500
    engine = _Engine(RuntimeError("unused"))

    async def stopping(job_id: str) -> Any:
        raise asyncio.TimeoutError

    engine.wait = stopping  # type: ignore[attr-defined]
    request = SimpleNamespace(transport=SimpleNamespace(is_closing=lambda: False))
    group = JobGroup(engine, request=request, keep_on_disconnect=False)  # type: ignore[arg-type]
    await group.submit(Submission("w", {}))
    with pytest.raises(Overdue) as e:
        await group.wait(30)
    assert e.value.kept == [] and e.value.going_on() == "" and engine.cancelled == ["j1"]
    assert "; job j1 goes on, and the webhook is told when it ends" == Overdue(["j1"]).going_on()


async def test_a_job_deleted_before_it_ended_is_cancelled_for_the_request() -> None:
    # engine.wait raises JobNotFound for a job deleted meanwhile (on another replica, or removed unfinished): it
    # escaped as a 404 naming a job id the client never saw (A1111: a 500) where a cancelled job has its answer
    from bridge.errors import JobNotFound
    from bridge.store import Job

    engine = _Engine(RuntimeError("unused"))

    async def submit(workflow: str, params: Any, meta: Any = None, **_: Any) -> Job:
        engine.accepted += 1
        return Job(id=f"j{engine.accepted}", workflow=workflow, workflow_version=1, params={}, meta=meta or {})

    async def wait(job_id: str) -> Job:
        if job_id == "j2":
            raise JobNotFound(job_id)
        return Job(id=job_id, workflow="w", workflow_version=1, params={}, status="completed")

    engine.submit, engine.wait = submit, wait  # type: ignore[method-assign, attr-defined]
    request = SimpleNamespace(transport=SimpleNamespace(is_closing=lambda: False))
    group = JobGroup(engine, request=request, keep_on_disconnect=False)  # type: ignore[arg-type]
    await group.submit(Submission("w", {}))
    await group.submit(Submission("w", {}))
    jobs = await group.wait(30)
    assert [(j.id, j.status) for j in jobs] == [("j1", "completed"), ("j2", "cancelled")]
    assert jobs[1].error == "the job was deleted before it ended"
