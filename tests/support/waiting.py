"""Waiting in async tests for state that background tasks change."""
from __future__ import annotations

import asyncio
import time
from typing import Callable


async def until(predicate: Callable[[], object], timeout: float = 15.0, what: str = "condition",
                interval: float = 0.05) -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(interval)
