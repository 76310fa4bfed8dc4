"""Serving the app: aiohttp's server with the limits a hostile client must not get around.

- Header timeout (`BRIDGE_HEADER_TIMEOUT`): a connection must finish a request's headers within this many seconds of
  opening (or of the previous answer); aiohttp's keep-alive timer closes it otherwise, slow-headers clients included.
- Connection cap (`BRIDGE_MAX_CONNECTIONS`): a connection past the cap is answered 503 at once and closed, before
  any byte of a request is read.
- The body read timeout (`BRIDGE_BODY_TIMEOUT`) is applied where bodies are read (`bridge.api.read_json`).
"""
from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from bridge.config import Settings

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


def capped(server: web.Server, max_connections: int) -> Callable[[], asyncio.Protocol]:
    def factory() -> asyncio.Protocol:
        if len(server.connections) >= max_connections:
            log.warning("refused a connection: %d open (BRIDGE_MAX_CONNECTIONS)", len(server.connections))
            return Refuse()
        return server()

    return factory


async def start(app: web.Application, settings: Settings, *, host: str | None = None,
                port: int | None = None) -> tuple[web.AppRunner, asyncio.AbstractServer]:
    """Start serving `app`; returns the runner (cleanup() stops the app) and the listening server."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=settings.header_timeout,
                           max_field_size=16 * 1024, max_line_size=16 * 1024)
    await runner.setup()
    assert runner.server is not None
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(capped(runner.server, settings.max_connections),
                                        host if host is not None else settings.host,
                                        port if port is not None else settings.port,
                                        backlog=min(1024, settings.max_connections), reuse_address=True)
    return runner, listener


def run(app: web.Application, settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then stop the app (its cleanup contexts end the engine and ComfyUI child)."""

    async def main() -> None:
        runner, listener = await start(app, settings)
        for sock in listener.sockets:
            log.info("serving on http://%s:%s", *sock.getsockname()[:2])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            listener.close()
            await listener.wait_closed()
            await runner.cleanup()

    asyncio.run(main())
