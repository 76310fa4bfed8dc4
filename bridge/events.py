"""GET /events: Server-Sent Events relaying the engine's job events to apps."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from bridge.engine import JobEngine
from bridge.engine.jobs import put_latest
from bridge.outbound import deadline

log = logging.getLogger("bridge.events")

HEARTBEAT_SECONDS = 15.0  # proxies drop idle connections after 30-60 s; a comment line keeps them open
# Events a stream holds for its client; past them the engine's subscription (EventHub: 1,000, the oldest events
# dropped) waits. Unbounded, a client that never read grew this queue with every event of every job.
STREAM_BUFFER = 16
WRITE_TIMEOUT = 60.0  # seconds a client may leave a write unread before its stream ends


class EventStreams:
    """Open SSE streams; shutdown ends them so that aiohttp's graceful stop does not wait on them."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.closing = False

    def open(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=STREAM_BUFFER)
        self._queues.add(queue)
        return queue

    def close(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._queues.discard(queue)

    def __len__(self) -> int:
        return len(self._queues)

    async def shutdown(self, app: web.Application | None = None) -> None:
        self.closing = True
        for queue in list(self._queues):
            put_latest(queue, None)  # the end in place of the oldest event: a stream must stop now


def format_event(event: dict[str, Any], event_id: int | None = None) -> bytes:
    data = json.dumps(event, separators=(",", ":"), default=str)
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event.get('type', 'message')}\ndata: {data}\n\n".encode()


async def _pump(source: AsyncIterator[dict[str, Any]], queue: asyncio.Queue[dict[str, Any] | None]) -> None:
    try:
        async for event in source:
            await queue.put(event)
    except asyncio.CancelledError:
        raise  # the stream ended and cancelled its pump: nobody reads an end
    except Exception:
        log.exception("event subscription failed")
    await queue.put(None)  # after the last event, not in the place of one


async def stream_events(
    request: web.Request,
    engine: JobEngine,
    streams: EventStreams,
    job_id: str | None,
    *,
    heartbeat: float = HEARTBEAT_SECONDS,
    on_unknown_job: Callable[[str], web.StreamResponse],
) -> web.StreamResponse:
    if job_id is not None and await engine.find(job_id) is None:
        return on_unknown_job(job_id)
    queue = streams.open()
    # With a job id the engine's subscription starts with the job's current state and ends after its final one.
    pump = asyncio.create_task(_pump(engine.subscribe(job_id), queue))
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # nginx would otherwise buffer the stream
    })
    counter = 0
    try:
        await response.prepare(request)
        await response.write(b"retry: 3000\n\n")
        while not streams.closing:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=heartbeat)
            except asyncio.TimeoutError:
                chunk = b": keep-alive\n\n"
            else:
                if event is None:
                    break
                counter += 1
                chunk = format_event(event, counter)
            async with deadline(WRITE_TIMEOUT):
                await response.write(chunk)
    except (ConnectionResetError, asyncio.TimeoutError):
        pass  # the client went away, or stopped reading (aiohttp closes a connection whose answer was cut short)
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump
        streams.close(queue)
    return response
