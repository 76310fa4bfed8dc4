"""GET /events: Server-Sent Events relaying the engine's job events to apps."""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from bridge.engine import CLIENT, JobEngine
from bridge.engine.jobs import put_latest
from bridge.errors import TooManyStreams
from bridge.outbound import deadline

log = logging.getLogger("bridge.events")

HEARTBEAT_SECONDS = 15  # proxies drop idle connections after 30-60 s; a comment line keeps them open
# Events a stream holds for its client; past them the engine's subscription (EventHub: 1,000, the oldest events
# dropped) waits. Unbounded, a client that never read grew this queue with every event of every job.
STREAM_BUFFER = 16
WRITE_TIMEOUT = 60.0  # seconds a client may leave a write unread before its stream ends
# Encoded events kept for the streams still to write them: every stream gets the same event objects from the hub,
# and each encoding them again was half the cost of many streams (200 of them: a 1-second job took 8.5 s, 4 s with
# one encoding). A stream further behind encodes its own copy.
ENCODED_KEPT = 2 * STREAM_BUFFER

Stream = asyncio.Queue[dict[str, Any] | None]


class EventStreams:
    """Open SSE streams, at most `max_per_client` (0: no bound) for each client identity (the per-client quota's:
    a valid API key, else the address); shutdown ends them so that aiohttp's graceful stop does not wait on them."""

    def __init__(self, max_per_client: int = 0) -> None:
        self.max_per_client = max_per_client
        self._queues: dict[Stream, str | None] = {}
        self._per_client: collections.Counter[str | None] = collections.Counter()
        self._encoded: dict[int, tuple[dict[str, Any], bytes]] = {}
        # The deadline of each stream's write under way: a client that stopped reading holds its stream in a write
        # for WRITE_TIMEOUT, past the end of the queue that shutdown puts in, and aiohttp's graceful stop waited on it.
        self._writes: dict[Stream, Any] = {}
        self.closing = False

    def open(self, client: str | None = None) -> Stream:
        """A new stream's queue (TooManyStreams when `client` has its bound open already)."""
        if self.max_per_client and client is not None and self._per_client[client] >= self.max_per_client:
            # A stream's client that has gone is noticed by its next write, a keep-alive at the latest.
            raise TooManyStreams(self.max_per_client, HEARTBEAT_SECONDS)
        queue: Stream = asyncio.Queue(maxsize=STREAM_BUFFER)
        self._queues[queue] = client
        self._per_client[client] += 1
        return queue

    def close(self, queue: Stream) -> None:
        if queue in self._queues:
            client = self._queues.pop(queue)
            self._per_client[client] -= 1
            if not self._per_client[client]:
                del self._per_client[client]

    @contextlib.asynccontextmanager
    async def writing(self, queue: Stream) -> AsyncIterator[None]:
        """A write of `queue`'s stream: asyncio.TimeoutError after WRITE_TIMEOUT, or at once when the streams close
        (a write that does not wait on its client ends before that)."""
        async with deadline(WRITE_TIMEOUT) as limit:
            self._writes[queue] = limit
            try:
                if self.closing:
                    _expire(limit)
                yield
            finally:
                self._writes.pop(queue, None)

    def encoded(self, event: dict[str, Any]) -> bytes:
        """`format_event(event)`, encoded once for all the streams that relay this event."""
        hit = self._encoded.get(id(event))
        if hit is None:
            # The entry holds the event itself, so that its id names no other event while it is kept.
            hit = self._encoded[id(event)] = (event, format_event(event))
            if len(self._encoded) > ENCODED_KEPT:
                del self._encoded[next(iter(self._encoded))]  # the oldest
        return hit[1]

    def __len__(self) -> int:
        return len(self._queues)

    async def shutdown(self, app: web.Application | None = None) -> None:
        self.closing = True
        for queue in list(self._queues):
            put_latest(queue, None)  # the end in place of the oldest event: a stream must stop now
        for limit in list(self._writes.values()):
            _expire(limit)


def _expire(limit: Any) -> None:
    """End a write's deadline now (asyncio's `reschedule`; async_timeout's `update` on Python 3.10)."""
    when = asyncio.get_running_loop().time()
    reschedule = getattr(limit, "reschedule", None)
    if reschedule is not None:
        reschedule(when)
    else:
        limit.update(when)


async def _deleted(engine: Any, job_id: str) -> bool:
    """Whether the store has no such job any more; False when it cannot say (a keep-alive needs no store)."""
    try:
        return await engine.find(job_id) is None
    except Exception as exc:  # noqa: BLE001 - a database away for a moment must not end every job's stream
        log.warning("events for job %s: the job store could not be read (%s)", job_id, exc)
        return False


def format_event(event: dict[str, Any]) -> bytes:
    """An SSE frame without its `id:` line, which each stream numbers itself."""
    data = json.dumps(event, separators=(",", ":"), default=str)
    return f"event: {event.get('type', 'message')}\ndata: {data}\n\n".encode()


async def _pump(source: AsyncIterator[dict[str, Any]], queue: Stream) -> None:
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
    queue = streams.open(CLIENT.get())
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
                if job_id is not None and engine.get(job_id) is None and await _deleted(engine, job_id):
                    # Deleted before it ended (its cancel unconfirmed): no final event will come, and the stream
                    # sent keep-alives for as long as its client stayed.
                    break
                chunk = b": keep-alive\n\n"
            else:
                if event is None:
                    break
                counter += 1
                chunk = b"id: %d\n" % counter + streams.encoded(event)
            async with streams.writing(queue):
                await response.write(chunk)
    except (ConnectionResetError, asyncio.TimeoutError):
        pass  # the client went away, or stopped reading (aiohttp closes a connection whose answer was cut short)
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump
        streams.close(queue)
    return response
