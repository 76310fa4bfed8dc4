"""Waiting in async tests for state that background tasks change."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable


async def until(predicate: Callable[[], object], timeout: float = 15.0, what: str = "condition",
                interval: float = 0.05) -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(interval)


async def wait_healthy(client: Any, timeout: float = 10.0) -> dict[str, Any]:
    """Poll a bridge's ``/health`` (an aiohttp test client) until it answers 200 "healthy", its backends reached;
    returns that body, fails with the last answer after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        resp = await client.get("/health")
        body = await resp.json()
        if resp.status == 200 and body["status"] == "healthy":
            return body
        assert time.monotonic() < deadline, f"bridge never became healthy: {resp.status} {body}"
        await asyncio.sleep(0.05)
