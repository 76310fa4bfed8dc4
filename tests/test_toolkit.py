"""The adapters' shared request helpers (bridge.adapters.toolkit)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bridge.adapters.toolkit import JobGroup, Submission
from bridge.errors import QueueFull

pytestmark = pytest.mark.asyncio


class _Engine:
    """Accepts jobs until it is told to fail with `error`; records what is cancelled."""

    def __init__(self, error: BaseException) -> None:
        self.error, self.accepted, self.cancelled = error, 0, []

    async def submit(self, workflow: str, params: Any, **_: Any) -> Any:
        if self.accepted == 2:
            raise self.error
        self.accepted += 1
        return SimpleNamespace(id=f"j{self.accepted}")

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
