"""The webhook sender (bridge.outbound.Poster): a POST written on a keep-alive connection and its answer read by
llhttp. Real servers on loopback: aiohttp's, and raw asyncio servers where a receiver misbehaves in ways aiohttp's
server never does (no length, garbage, silence, closing an idle connection)."""
from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bridge import outbound
from bridge.outbound import Outbound, OutboundPolicy, OutboundRefused

pytestmark = pytest.mark.asyncio

LOCAL = OutboundPolicy.from_list(["127.0.0.1", "localhost"])
HEADERS = {"content-type": "application/json", "webhook-id": "msg_1"}


class Receiver:
    """An aiohttp receiver that records each message and the client port it came from."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.answer = lambda: web.Response(status=204)

    async def hook(self, request: web.Request) -> web.StreamResponse:
        self.seen.append({"path": request.path_qs, "host": request.headers["Host"], "body": await request.read(),
                          "port": request.transport.get_extra_info("peername")[1],
                          "id": request.headers.get("webhook-id"), "headers": dict(request.headers)})
        return self.answer()


async def serve(aiohttp_server: Any, receiver: Receiver, **kwargs: Any) -> Any:
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", receiver.hook)
    return await aiohttp_server(app, host="127.0.0.1", **kwargs)


async def test_messages_share_one_connection_and_arrive_whole(aiohttp_server: Any) -> None:
    rec = Receiver()
    server = await serve(aiohttp_server, rec)
    out = Outbound(LOCAL)
    try:
        for i in range(20):
            body = b'{"n": %d}' % i + b" " * (i * 1000)
            assert await out.post(f"http://localhost:{server.port}/hooks/a b?x=1&y=%C3%A9#frag", body, HEADERS,
                                  5) == 204
    finally:
        await out.close()
    assert [s["body"].rstrip() for s in rec.seen] == [b'{"n": %d}' % i for i in range(20)]
    assert {len(s["body"]) for s in rec.seen} == {len(b'{"n": %d}' % i) + i * 1000 for i in range(20)}
    assert len({s["port"] for s in rec.seen}) == 1
    assert rec.seen[0]["path"] == "/hooks/a%20b?x=1&y=%C3%A9"
    assert rec.seen[0]["host"] == f"localhost:{server.port}"
    assert rec.seen[0]["id"] == "msg_1"


async def test_a_url_cannot_add_header_lines(aiohttp_server: Any) -> None:
    rec = Receiver()
    server = await serve(aiohttp_server, rec)
    url = f"http://127.0.0.1:{server.port}/h\r\nX-Evil: 1?a=\r\nX-Worse: 2"
    out = Outbound(LOCAL)
    poster = outbound.Poster(outbound.CheckedResolver(LOCAL))
    try:
        with pytest.raises(OutboundRefused, match="control characters"):  # the policy refuses such a URL
            await out.post(url, b"{}", HEADERS, 5)
        assert await poster.post(url, b"{}", HEADERS, 5) == 204  # and the sender adds no line of it
    finally:
        await out.close()
        poster.close()
    assert rec.seen[0]["path"] == "/hX-Evil:%201?a=X-Worse:+2"
    assert not {"X-Evil", "X-Worse"} & set(rec.seen[0]["headers"])


@pytest.mark.parametrize("answer, status", [
    (lambda: web.Response(status=200, text="ok"), 200),
    (lambda: web.json_response({"thanks": True}, status=202), 202),
    (lambda: web.Response(status=500, text="x" * 5000), 500),
    (lambda: web.Response(status=410), 410),
])
async def test_the_status_of_each_kind_of_answer(aiohttp_server: Any, answer: Any, status: int) -> None:
    rec = Receiver()
    rec.answer = answer
    server = await serve(aiohttp_server, rec)
    out = Outbound(LOCAL)
    try:
        assert [await out.post(f"http://127.0.0.1:{server.port}/h", b"{}", HEADERS, 5) for _ in range(3)] \
            == [status] * 3
    finally:
        await out.close()
    assert len({s["port"] for s in rec.seen}) == 1


async def test_a_long_answer_is_not_read_and_its_connection_not_kept(aiohttp_server: Any) -> None:
    rec = Receiver()
    rec.answer = lambda: web.Response(status=200, body=b"x" * (outbound.ANSWER_BYTES * 50))
    server = await serve(aiohttp_server, rec)
    out = Outbound(LOCAL)
    try:
        assert await out.post(f"http://127.0.0.1:{server.port}/h", b"{}", HEADERS, 5) == 200
        assert await out.post(f"http://127.0.0.1:{server.port}/h", b"{}", HEADERS, 5) == 200
    finally:
        await out.close()
    assert len({s["port"] for s in rec.seen}) == 2


async def test_an_idle_connection_the_receiver_closed_is_replaced(aiohttp_server: Any) -> None:
    rec = Receiver()
    server = await serve(aiohttp_server, rec, keepalive_timeout=0.2)
    out = Outbound(LOCAL)
    try:
        assert await out.post(f"http://127.0.0.1:{server.port}/h", b"1", HEADERS, 5) == 204
        await asyncio.sleep(0.6)  # the receiver closes the kept connection meanwhile
        assert await out.post(f"http://127.0.0.1:{server.port}/h", b"2", HEADERS, 5) == 204
    finally:
        await out.close()
    assert [s["body"] for s in rec.seen] == [b"1", b"2"]
    assert len({s["port"] for s in rec.seen}) == 2


@contextlib.asynccontextmanager
async def raw_receiver(handle: Any) -> AsyncIterator[tuple[str, Outbound]]:
    """A receiver written on asyncio streams (its URL) and a sender admitted to it."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    out = Outbound(LOCAL)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/h", out
    finally:
        await out.close()
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    return head + await reader.readexactly(length)


async def test_an_answer_without_a_length_ends_with_the_connection() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 201 Created\r\ncontent-type: text/plain\r\n\r\nthanks, the rest follows")
        await writer.drain()
        writer.close()

    async with raw_receiver(handle) as (url, out):
        assert await out.post(url, b"{}", HEADERS, 5) == 201
        assert await out.post(url, b"{}", HEADERS, 5) == 201


@pytest.mark.parametrize("reply", [b"SSH-2.0-OpenSSH_9.6\r\n", b"HTTP/1.1 2x0 OK\r\n\r\n", b""])
async def test_a_server_that_does_not_speak_http_is_an_error(reply: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
        writer.close()

    async with raw_receiver(handle) as (url, out):
        with pytest.raises((ConnectionError, OSError)):
            await out.post(url, b"{}", HEADERS, 5)


async def test_endless_headers_are_cut_off_after_a_few_kilobytes() -> None:
    # httptools builds a header value by appending to it: a receiver streaming one endless header held the event
    # loop for seconds, until the timeout could fire between two of its pieces
    sent = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        with contextlib.suppress(ConnectionError):
            while sent < 50_000_000:
                writer.write(b"a" * 65536)
                sent += 65536
                await writer.drain()
        writer.close()

    async with raw_receiver(handle) as (url, out):
        with pytest.raises(ConnectionError, match="headers ran past"):
            await out.post(url, b"{}", HEADERS, 30)
    assert sent < 20_000_000  # the sender closed the connection long before the 50 MB were written


async def test_a_silent_receiver_times_out_and_its_connection_is_closed() -> None:
    conns: list[int] = []
    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer.get_extra_info("peername")[1])
        try:
            while True:
                body = await read_request(reader)
                if body.endswith(b"answer"):
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                    await writer.drain()
        except asyncio.IncompleteReadError:
            closed.set()

    async with raw_receiver(handle) as (url, out):
        assert await out.post(url, b"answer", HEADERS, 5) == 204
        with pytest.raises(asyncio.TimeoutError):
            await out.post(url, b"silence", HEADERS, 0.3)
        # no socket left open, and a late answer to "silence" is never taken for the next message's
        await asyncio.wait_for(closed.wait(), 2)
        assert await out.post(url, b"answer", HEADERS, 5) == 204
    assert len(conns) == 2


async def test_a_message_the_receiver_drops_as_it_closes_a_kept_connection_goes_again_afresh() -> None:
    # a receiver's keep-alive timer can run out as a message arrives: it closes without an answer, and the message
    # goes again at once on a new connection (so it may arrive twice; receivers dedupe on webhook-id)
    seen: list[tuple[int, bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("peername")[1]
        seen.append((port, (await read_request(reader)).rsplit(b"\r\n", 1)[1]))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        seen.append((port, (await read_request(reader)).rsplit(b"\r\n", 1)[1]))
        writer.close()

    async with raw_receiver(handle) as (url, out):
        assert await out.post(url, b"one", HEADERS, 5) == 204
        assert await out.post(url, b"two", HEADERS, 5) == 204
    assert [body for _, body in seen] == [b"one", b"two", b"two"]
    assert seen[0][0] == seen[1][0] != seen[2][0]


async def test_a_receiver_behind_a_name_that_resolves_to_loopback_is_refused(aiohttp_server: Any) -> None:
    server = await serve(aiohttp_server, Receiver())
    out = Outbound(OutboundPolicy())
    try:
        with pytest.raises(OutboundRefused, match="127.0.0.1"):
            await out.post(f"http://localhost:{server.port}/h", b"{}", HEADERS, 5)
    finally:
        await out.close()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out",
                    str(cert)], check=True, capture_output=True)
    return cert, key


async def test_https_receivers_are_verified(aiohttp_server: Any, certificate: tuple[Path, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    rec = Receiver()
    server = await serve(aiohttp_server, rec, ssl=context)
    url = f"https://localhost:{server.port}/h"
    untrusting = Outbound(LOCAL)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            await untrusting.post(url, b"{}", HEADERS, 5)
    finally:
        await untrusting.close()
    # a receiver with a private CA: the machine's trust store (here SSL_CERT_FILE) vouches for it
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    trusting = Outbound(LOCAL)
    try:
        assert await trusting.post(url, b"{}", HEADERS, 5) == 204
        assert await trusting.post(url, b"{}", HEADERS, 5) == 204
    finally:
        await trusting.close()
    assert len(rec.seen) == 2 and len({s["port"] for s in rec.seen}) == 1


async def test_connections_left_idle_by_receivers_gone_quiet_are_closed(aiohttp_server: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbound, "IDLE_FOR", 0.2)
    servers = [await serve(aiohttp_server, Receiver()) for _ in range(3)]
    out = Outbound(LOCAL)
    try:
        for server in servers:
            assert await out.post(f"http://127.0.0.1:{server.port}/h", b"{}", HEADERS, 5) == 204
        poster = out._poster
        assert poster is not None and len(poster._idle) == 3
        assert sum(len(s.handler.connections) for s in servers) == 3
        # no further message: the sweep runs on its own (IDLE_FOR, then every IDLE_FOR / 2 while any are idle)
        await asyncio.sleep(0.6)
        assert poster._idle == {} and poster._sweeper is None
        assert sum(len(s.handler.connections) for s in servers) == 0
        assert await out.post(f"http://127.0.0.1:{servers[0].port}/h", b"{}", HEADERS, 5) == 204
    finally:
        await out.close()
    assert poster._sweeper is None


def answering(*replies: bytes) -> Any:
    """A raw receiver that answers the n-th request on each connection with replies[n], then closes after the
    last one."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for reply in replies:
                await read_request(reader)
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()
    return handle


@pytest.mark.parametrize("cut", [b"H", b"\r\n", b"HTTP/1.1 204 No Con", b"HTTP/1.1 200 OK\r\nContent-Le",
                                 b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc",
                                 b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab"])
async def test_an_answer_cut_short_on_a_kept_connection_is_not_a_delivery(cut: bytes) -> None:
    # llhttp keeps the last status until a new status line: a cut answer must not pass for the previous 204
    async with raw_receiver(answering(b"HTTP/1.1 204 No Content\r\n\r\n", cut)) as (url, out):
        assert await out.post(url, b"one", HEADERS, 5) == 204
        with pytest.raises(ConnectionError, match="mid-answer"):
            await out.post(url, b"two", HEADERS, 5)


@pytest.mark.parametrize("cut", [b"HTTP/1.1 200 OK\r\nContent-Le",
                                 b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc"])
async def test_an_answer_cut_short_on_a_new_connection_is_not_a_delivery(cut: bytes) -> None:
    async with raw_receiver(answering(cut)) as (url, out):
        with pytest.raises(ConnectionError):
            await out.post(url, b"{}", HEADERS, 5)


async def test_interim_answers_and_chunked_bodies_are_read_through() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n"
    chunked = b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    ports: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ports.append(writer.get_extra_info("peername")[1])
        await answering(interim + chunked, chunked, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")(reader, writer)

    async with raw_receiver(handle) as (url, out):
        assert [await out.post(url, b"{}", HEADERS, 5) for _ in range(3)] == [202, 202, 200]
    assert len(ports) == 1


async def test_bytes_after_the_answer_cost_the_connection_not_the_next_message() -> None:
    # a second answer nobody asked for (or stray bytes) after a complete one: read as the next message's answer,
    # it would report 200 for a message the receiver never saw
    stray = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    ports: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ports.append(writer.get_extra_info("peername")[1])
        await answering(stray, b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")(reader, writer)

    async with raw_receiver(handle) as (url, out):
        assert await out.post(url, b"one", HEADERS, 5) == 204
        await asyncio.sleep(0.05)
        assert await out.post(url, b"two", HEADERS, 5) == 204
    assert len(ports) == 2


async def test_a_protocol_switch_is_an_error_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    switch = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(switch)
        await writer.drain()
        await asyncio.sleep(1)  # keeps the connection open: the answer alone must end the exchange
        writer.close()

    async with raw_receiver(handle) as (url, out):
        with pytest.raises(ConnectionError, match="not an HTTP answer"):
            await out.post(url, b"{}", HEADERS, 5)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
