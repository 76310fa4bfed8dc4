"""Serving the app: aiohttp's server with the limits a hostile client must not get around.

- Header timeout (`BRIDGE_HEADER_TIMEOUT`): a connection must finish a request's headers within this many seconds of
  opening (or of the previous answer); aiohttp's keep-alive timer closes it otherwise, slow-headers clients included.
- Connection cap (`BRIDGE_MAX_CONNECTIONS`): a connection past the cap is answered 503 at once and closed, before
  any byte of a request is read.
- Requests HTTP's parser refuses (a URL over `MAX_URL`, a header over `MAX_HEADER` or too many, a bad chunk, a
  duplicate Content-Length, TLS on the plain port) get the common JSON error naming the part at fault, with 414 and
  431 where they apply, instead of aiohttp's plain text; a line of log each, not a traceback.
- The body read timeout (`BRIDGE_BODY_TIMEOUT`) is applied where bodies are read (`bridge.api.read_json`).
"""
from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
from collections.abc import Callable
from http import HTTPStatus

from aiohttp import http_exceptions, web

from bridge.config import Settings
from bridge.http import INTERNAL_ERROR, error_code, json_error

log = logging.getLogger("bridge.server")


class Refuse(asyncio.Protocol):
    """Answers one 503 and hangs up: what a connection past the cap gets."""

    BODY = json.dumps({"error": "too_many_connections", "message": "the server has as many connections as it takes "
                       "(BRIDGE_MAX_CONNECTIONS); retry shortly", "field": None}).encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                        b"Connection: close\r\nContent-Length: " + str(len(self.BODY)).encode() + b"\r\n\r\n"
                        + self.BODY)
        transport.close()


# The request line's limit and a header line's differ so that aiohttp's LineTooLong, which names only the limit it
# met, tells a long URL (414) from a long header (431). So with aiohttp's C parser (its wheels); its pure-Python
# fallback (AIOHTTP_NO_EXTENSIONS=1) applies the line limit to what each read brings, and may name a long header
# the URL there.
MAX_URL = 32 * 1024
MAX_HEADER = 16 * 1024


def _refusal(exc: BaseException | None, message: str | None) -> web.Response:
    """The common JSON error for a request aiohttp's parser refused with `exc`."""
    text = (message or str(exc or "malformed request")).split("\n", 1)[0].rstrip(":")[:200]
    if isinstance(exc, http_exceptions.LineTooLong):
        if exc.args[1] == MAX_URL:
            return json_error(414, error_code(414), f"the URL is over {MAX_URL} bytes", "url")
        return json_error(431, error_code(431), f"a header line is over {MAX_HEADER} bytes", "headers")
    if isinstance(exc, http_exceptions.BadStatusLine | http_exceptions.InvalidURLError):
        return json_error(400, error_code(400), text, "request line")
    if text.lower().startswith("too many headers"):
        return json_error(431, error_code(431), text, "headers")
    if isinstance(exc, http_exceptions.PayloadEncodingError) or "chunk" in text.lower():
        return json_error(400, error_code(400), text, "body")
    return json_error(400, error_code(400), text, "headers")


class JsonErrors(web.RequestHandler):
    """A connection that answers what its parser refused (and its own 5xx) in the common JSON shape. aiohttp offers
    no hook for these answers and builds its handlers itself, so `capped` gives each one this class (no new
    fields: `__slots__` stays as aiohttp laid it out)."""

    __slots__ = ()

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            super().handle_error(request, status, exc, message)  # logs the traceback; raises if an answer began
            answer = json_error(status, error_code(status),
                                INTERNAL_ERROR if status == 500 else HTTPStatus(status).phrase.lower())
        else:
            if request.writer.output_size > 0:
                raise ConnectionError("an answer has begun; no error can follow it")
            answer = _refusal(exc, message)
            # as aiohttp does, a bad method (most often TLS or another protocol on this port) only in debug
            log.log(logging.DEBUG if isinstance(exc, http_exceptions.BadHttpMethod) else logging.INFO,
                    "refused a malformed request from %s: %s %s", request.remote, answer.status, type(exc).__name__)
        answer.force_close()
        return answer


def capped(server: web.Server, max_connections: int) -> Callable[[], asyncio.Protocol]:
    def factory() -> asyncio.Protocol:
        if len(server.connections) >= max_connections:
            log.warning("refused a connection: %d open (BRIDGE_MAX_CONNECTIONS)", len(server.connections))
            return Refuse()
        handler = server()
        handler.__class__ = JsonErrors
        return handler

    return factory


async def start(app: web.Application, settings: Settings, *, host: str | None = None,
                port: int | None = None) -> tuple[web.AppRunner, asyncio.AbstractServer]:
    """Start serving `app`; returns the runner (cleanup() stops the app) and the listening server."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=settings.header_timeout,
                           max_field_size=MAX_HEADER, max_line_size=MAX_URL)
    await runner.setup()
    assert runner.server is not None
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(capped(runner.server, settings.max_connections),
                                        host if host is not None else settings.host,
                                        port if port is not None else settings.port,
                                        backlog=min(1024, settings.max_connections), reuse_address=True)
    return runner, listener


def settle_heap() -> None:
    """Put what the bridge made to start (modules, request models, workflows) out of the garbage collector's sight:
    it lives as long as the process, and every full collection walked all of it, holding the event loop: 100,000
    objects with the shipped workflows (40 ms), 900,000 with a hundred large ones (0.4 s), whenever one came. A
    workflow reload frees what it replaced and settles the heap again (`JobEngine.reload_workflows`)."""
    gc.collect()
    gc.freeze()


def run(app: web.Application, settings: Settings) -> None:
    """Serve until SIGINT, SIGTERM or SIGHUP, then stop the app (its cleanup contexts end the engine and ComfyUI
    child)."""

    async def main() -> None:
        runner, listener = await start(app, settings)
        settle_heap()
        for sock in listener.sockets:
            log.info("serving on http://%s:%s", *sock.getsockname()[:2])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = [signal.SIGINT, signal.SIGTERM]
        # A closed terminal (an SSH session ending) sends SIGHUP, whose default ends the process without this
        # shutdown: the managed ComfyUI, in a session of its own, ran on with its model loaded. Not where SIGHUP is
        # ignored (nohup): such a bridge is meant to outlive its terminal.
        if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:
            signals.append(signal.SIGHUP)
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            listener.close()
            await listener.wait_closed()
            await runner.cleanup()

    asyncio.run(main())
