"""Requests the bridge makes to addresses a client named: image inputs by URL and webhook receivers.

A client-supplied URL must not turn the bridge into a way into its own network (SSRF): every connection goes only
to public addresses, checked after DNS resolution by the resolver the connection itself uses (so a name that
resolves to a private address between a check and the connect still cannot reach it), and again on every redirect.
Loopback, private, link-local (cloud metadata at 169.254.169.254), carrier-grade NAT, multicast, reserved and
unspecified addresses are refused unless `BRIDGE_OUTBOUND_ALLOW` admits them (a host name, an address or a CIDR
network, e.g. a test's local server or an internal receiver).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import ipaddress
import re
import socket
import ssl
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import httptools
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

if sys.version_info >= (3, 11):
    from asyncio import timeout as deadline
else:  # aiohttp brings it on 3.10
    from async_timeout import timeout as deadline

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

REDIRECTS = (301, 302, 303, 307, 308)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class OutboundRefused(Exception):
    """A URL the bridge will not fetch or post to; the message says why in a client's words."""


# Hashed and compared by identity: check_url's cache hashes the policy on every call, and hashing its networks by
# value took about 8 us a webhook message in a profile of bench_delivery. A bridge makes its policy once.
@dataclass(frozen=True, eq=False)
class OutboundPolicy:
    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[Network, ...] = ()
    max_bytes: int = 32 * 1024 * 1024
    timeout: float = 20.0
    max_redirects: int = 5

    @classmethod
    def from_list(cls, entries: Iterable[str], **limits: Any) -> OutboundPolicy:
        hosts, networks = set(), []
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks), **limits)

    def admits(self, address: Address) -> bool:
        reached = _reached(address)
        if any(a in net for net in self.allow_networks for a in (address, reached)):  # an entry may name either
            return True
        # is_reserved too: this Python calls 64:ff9b:1::/48 (RFC 8215, local use) and ::a.b.c.d global
        return reached.is_global and not reached.is_multicast and not reached.is_reserved

    def check_address(self, host: str, address: Address) -> None:
        if host.lower().rstrip(".") in self.allow_hosts or self.admits(address):
            return
        raise OutboundRefused(f"{host} resolves to {_reached(address)}, a loopback, private, link-local or reserved "
                              f"address (BRIDGE_OUTBOUND_ALLOW admits it)")


def url_problem(url: str, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """What makes `url` no address of a server, said without the network (its scheme, host, port, characters,
    credentials), or None. Also the settings' check of the URLs they name (bridge.config)."""
    if _CONTROL.search(url):
        # urlsplit drops tabs and line breaks where a connection's URL parser may not, and a NUL in a receiver's
        # URL is kept by SQLite but refused by PostgreSQL
        return "the URL contains control characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a bad port
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if port == 0:  # no server listens there: each message would be retried for BRIDGE_WEBHOOK_RETRY_FOR
        return "not a valid URL: port 0"
    if parts.scheme not in schemes:
        return f"the URL must start with {' or '.join(s + '://' for s in schemes)}"
    host = parts.hostname
    if not host:
        return "the URL has no host"
    if parts.username or parts.password:
        return "credentials in the URL are not accepted"
    if _literal(host) is None:
        try:
            host.encode("idna")  # what the resolver does first; an empty or overlong label fails there
        except UnicodeError:
            return f"{host!r} is not a valid host name"
    return None


# A webhook receiver's URL is checked before every message (parsing and an address check, about 40 us in a
# profile of bench_delivery): the answer depends on the text and the (frozen) policy only, so it is kept; a refusal
# raises and is not kept.
@functools.lru_cache(maxsize=1024)
def check_url(url: str, policy: OutboundPolicy, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """`url_problem`, and a literal address's kind (names are checked when they resolve). Returns the host."""
    problem = url_problem(url, schemes)
    if problem is not None:
        raise OutboundRefused(problem)
    host = urlsplit(url).hostname or ""
    literal = _literal(host)
    if literal is not None:
        policy.check_address(host, literal)
    return host


def _redirect_target(url: str, location: str) -> str:
    """Where a redirect from ``url`` leads. The Location header is the server's text, not the client's: a form
    urljoin cannot read (``http://[::1``) is a refusal like any other, not an error of the bridge's."""
    try:
        target = urljoin(url, location)
        urlsplit(target).port  # raises on a malformed address or port, as check_url would
    except ValueError as exc:
        raise OutboundRefused(f"the server redirected to an invalid URL: {exc}") from None
    return target


@functools.lru_cache(maxsize=1024)
def _literal(host: str) -> Address | None:
    """The address a host names literally, else None (a name). Kept per host: check_target asks for every job
    with a webhook."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _reached(address: Address) -> Address:
    """The IPv4 address an IPv6 one leads to where it embeds one, else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1 is 127.0.0.1 to the kernel; a NAT64 gateway or a 6to4 relay (2002::/16) passes the
        # connection on to the IPv4 address embedded, which this Python's is_global does not look at (Teredo,
        # 2001::/32, is not global to it: refused as it is)
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


# Name lookups of webhook and image URLs run on threads of their own: a name whose server never answers holds a
# thread for the resolver's own timeouts, and in the event loop's default pool a few such names stalled every
# other use of it (large request bodies, stored files). Eight such names still make other lookups wait.
_LOOKUPS = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="pixart-dns")


class AnswerTooLarge(Exception):
    """An HTTP answer past the bound its reader set (`read_capped`); ``declared``: its Content-Length, where that
    told it before any byte was read."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        self.limit, self.declared = limit, declared
        super().__init__(f"{declared} bytes; the limit is {limit}" if declared is not None
                         else f"more than {limit} bytes")


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body of ``resp``, refused (AnswerTooLarge) as soon as it is known to pass ``limit`` bytes: by its
    declared length, or by the bytes read (decompressed), so a server cannot make the bridge hold more."""
    if resp.content_length is not None and resp.content_length > limit:
        raise AnswerTooLarge(limit, resp.content_length)
    parts, size = [], 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise AnswerTooLarge(limit)
        parts.append(chunk)
    return b"".join(parts)


class _LookupThreads:
    """The two calls aiohttp's ThreadedResolver makes of its event loop, run on `_LOOKUPS`: its parsing of the
    answers (IPv6 scopes, hosts without IPv6) is kept, its threads are ours."""

    async def getaddrinfo(self, host: str, port: int, *, family: int = 0, type: int = 0, proto: int = 0,
                          flags: int = 0) -> list[Any]:
        return await asyncio.get_running_loop().run_in_executor(
            _LOOKUPS, functools.partial(socket.getaddrinfo, host, port, family, type, proto, flags))

    async def getnameinfo(self, sockaddr: Any, flags: int = 0) -> tuple[str, str]:
        return await asyncio.get_running_loop().run_in_executor(_LOOKUPS, socket.getnameinfo, sockaddr, flags)


class CheckedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses the policy admits (none: the connection is refused)."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self._lookup = ThreadedResolver(_LookupThreads())  # type: ignore[arg-type]

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        results = await self._lookup.resolve(host, port, family)
        kept = []
        refusal: OutboundRefused | None = None
        for r in results:
            try:
                self.policy.check_address(host, ipaddress.ip_address(r["host"]))
                kept.append(r)
            except OutboundRefused as exc:
                refusal = exc
        if not kept:
            raise refusal or OutboundRefused(f"{host} does not resolve")
        return kept

    async def close(self) -> None:
        pass


@dataclass
class Outbound:
    """One HTTP client session whose every connection is checked by the policy."""

    policy: OutboundPolicy
    _session: aiohttp.ClientSession | None = field(default=None, init=False)
    _poster: Poster | None = field(default=None, init=False)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=CheckedResolver(self.policy), limit=64, ttl_dns_cache=0,
                                             use_dns_cache=False)
            # No cookies: the requests are made for many clients (their input URLs, their receivers), so a cookie
            # one server sets must not ride along on another client's request; and filtering the jar on every
            # request cost 30 us of a webhook's 220 us POST (aiohttp 3.14, keep-alive, loopback).
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._poster is not None:
            self._poster.close()

    async def fetch(self, url: str) -> bytes:
        """GET a URL's body: at most `max_bytes`, within `timeout` seconds in all, following at most
        `max_redirects` redirects (each target checked). OutboundRefused says what went wrong."""
        try:
            return await asyncio.wait_for(self._fetch(url), self.policy.timeout)
        except asyncio.TimeoutError:
            raise OutboundRefused(f"no complete answer within {self.policy.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, OutboundRefused):
                raise cause from None
            raise OutboundRefused(f"could not be fetched: {type(exc).__name__}: {exc}") from None
        except OSError as exc:
            raise OutboundRefused(f"could not be fetched: {exc}") from None

    async def _fetch(self, url: str) -> bytes:
        for _ in range(self.policy.max_redirects + 1):
            check_url(url, self.policy)
            try:
                async with self.session().get(url, allow_redirects=False) as resp:
                    if resp.status in REDIRECTS and "Location" in resp.headers:
                        url = _redirect_target(url, resp.headers["Location"])
                        continue
                    if resp.status != 200:
                        raise OutboundRefused(f"the server answered HTTP {resp.status}")
                    try:
                        return await read_capped(resp, self.policy.max_bytes)
                    except AnswerTooLarge as exc:
                        raise OutboundRefused(str(exc)) from None
            except OutboundRefused:
                raise
            except aiohttp.ClientConnectorError as exc:
                inner = exc.os_error if isinstance(exc.os_error, OutboundRefused) else None
                if inner is None and isinstance(exc.__cause__, OutboundRefused):
                    inner = exc.__cause__
                if inner is not None:
                    raise inner from None
                raise
        raise OutboundRefused(f"more than {self.policy.max_redirects} redirects")

    async def check_target(self, url: str) -> None:
        """Refuse, before accepting a job, a URL the bridge would refuse to call later (webhooks): its form, and
        every address its host resolves to now. Delivery checks again, so a name that changes its answer later
        still reaches nothing private."""
        host = check_url(url, self.policy)
        if _literal(host) is not None:
            return  # a literal address: check_url has judged it
        if host.lower().rstrip(".") in self.policy.allow_hosts:
            return
        try:
            await asyncio.wait_for(CheckedResolver(self.policy).resolve(host), self.policy.timeout)
        except asyncio.TimeoutError:
            raise OutboundRefused(f"{host} did not resolve within {self.policy.timeout:g} s") from None
        except (OSError, UnicodeError) as exc:
            raise OutboundRefused(f"{host} does not resolve: {exc}") from None

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        """POST to a checked URL without following redirects (webhooks) within ``timeout`` seconds (else
        TimeoutError); returns the status."""
        check_url(url, self.policy)
        if self._poster is None:
            self._poster = Poster(CheckedResolver(self.policy))
        return await self._poster.post(url, body, headers, timeout)


# A receiver's answer is read to its end so that the connection can serve the next message; past this many bytes
# the rest is not read and the connection is closed instead.
ANSWER_BYTES = 64 * 1024
# An answer's status line and headers may run this far (and through the read that crosses it, 256 KiB at most):
# httptools builds a header value by appending to it (the square of its length), and a receiver streaming one
# endless header held the event loop for seconds.
HEAD_BYTES = 16 * 1024
# Idle connections kept per receiver, and for how long (seconds): servers close theirs after 5-75 s.
IDLE_PER_HOST = 8
IDLE_FOR = 15.0
KNOWN_TARGETS = 1024  # receiver URLs whose request line the Poster keeps (all are dropped when full)


class _Exchange(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time; httptools (llhttp) reads the answers."""

    def __init__(self) -> None:
        self.parser: httptools.HttpResponseParser | None = None
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[int] | None = None
        self.received = False  # a byte of the current answer has arrived
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        self._body = 0
        self._head = 0  # bytes of the answer read before its headers ended
        self._headers_done = False
        self._sized = False  # the answer has a content-length or is chunked: it cannot end with the connection
        self._answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def usable(self) -> bool:
        # a TLS connection the receiver closed can take seconds to report it lost: is_closing() knows at once
        return not self.closed and self.reusable and self.transport is not None and not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        if self.answer is None or self.parser is None:
            # unasked (a 408 before an idle close): the connection's state is unknown now
            self._end(None)
            return
        self.received = True
        if not self._headers_done:
            if self._head > HEAD_BYTES:  # read before this data, and the headers went on
                self._end(ConnectionError(f"the answer's headers ran past {HEAD_BYTES} bytes"))
                return
            self._head += len(data)
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._end(ConnectionError(f"not an HTTP answer: {exc!r}"))

    def on_message_begin(self) -> None:
        if self._answered:  # more than the one answer asked for: what follows would be read as the next one's
            self._end(None)

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self._sized = True

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body += len(body)
        if self._body > ANSWER_BYTES and self.answer is not None and not self.answer.done():
            # the status is what counts: a receiver that answers at length costs a connection, not memory
            self.answer.set_result(self.parser.get_status_code())  # type: ignore[union-attr]
            self._end(None)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()  # type: ignore[union-attr]
        if status < 200:  # 100 Continue and the like come before the answer
            self._headers_done = self._sized = False
            return
        self._answered = True
        self.reusable = self.parser.should_keep_alive()  # type: ignore[union-attr]
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.answer is not None and not self.answer.done():
            if self._headers_done and not self._sized:  # an answer without a length ends with the connection
                self.answer.set_result(self.parser.get_status_code())  # type: ignore[union-attr]
            else:  # no answer, or one cut short: not delivered
                self.answer.set_exception(exc or ConnectionResetError("the receiver closed the connection"
                                                                      + (" mid-answer" if self.received else "")))

    def _end(self, exc: Exception | None) -> None:
        self.reusable = False
        if exc is not None and self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, request: bytes) -> int:
        # a parser per answer: llhttp keeps the last status code until a new status line, so a reused parser would
        # report the previous answer's status for a connection cut before this one's
        self.parser = httptools.HttpResponseParser(self)
        self.answer = asyncio.get_running_loop().create_future()
        self.received, self._body, self._head = False, 0, 0
        self._headers_done = self._sized = self._answered = False
        self.transport.write(request)  # type: ignore[union-attr]
        try:
            return await self.answer
        finally:
            self.answer = None


class Poster:
    """Webhook POSTs over keep-alive connections of its own. A message through aiohttp's client took 190-230 us of
    the bridge's CPU on loopback, a third of all a model-free job costs it; written directly on a transport and read
    by llhttp it takes 90-120 us, most of that the socket calls (bench/bench_delivery.py). Each connection goes to
    an address the resolver admitted, so the policy holds as in aiohttp's client."""

    def __init__(self, resolver: AbstractResolver) -> None:
        self.resolver = resolver
        self._idle: dict[tuple[str, str, int], list[_Exchange]] = {}
        self._busy: set[_Exchange] = set()
        self._tls: ssl.SSLContext | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._targets: dict[str, tuple[tuple[str, str, int], str]] = {}  # URL -> (connection key, request line)

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        known = self._targets.get(url)
        if known is None:
            target = URL(url)
            # yarl percent-encodes the path and drops CR and LF, so a URL cannot add header lines
            known = ((target.scheme, target.raw_host or "", target.port or 0),
                     f"POST {target.raw_path_qs} HTTP/1.1\r\nhost: {target.host_port_subcomponent}\r\n")
            if len(self._targets) >= KNOWN_TARGETS:
                self._targets.clear()
            self._targets[url] = known
        key, line = known
        head = line + f"content-length: {len(body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = (head + "\r\n").encode("latin-1") + body
        async with deadline(timeout):
            conn = self._take(key)
            if conn is not None:
                try:
                    return await self._send(key, conn, request)
                except (ConnectionError, OSError):
                    if conn.received:
                        raise
                    # the receiver had closed the idle connection as this message went out: once more, afresh
                    # (a message may then arrive twice, which at-least-once delivery allows)
            return await self._send(key, await self._connect(key), request)

    async def _send(self, key: tuple[str, str, int], conn: _Exchange, request: bytes) -> int:
        self._busy.add(conn)
        try:
            status = await conn.exchange(request)
        except BaseException:
            conn._end(None)  # cut off mid-answer (a timeout): the connection cannot carry another message
            raise
        finally:
            self._busy.discard(conn)
        self._give_back(key, conn)
        return status

    def _take(self, key: tuple[str, str, int]) -> _Exchange | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable() and now - conn.idle_since < IDLE_FOR:
                return conn
            conn._end(None)
        return None

    def _give_back(self, key: tuple[str, str, int], conn: _Exchange) -> None:
        idle = self._idle.setdefault(key, [])
        if not conn.usable() or len(idle) >= IDLE_PER_HOST:
            conn._end(None)
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(IDLE_FOR, self._sweep)

    def _sweep(self) -> None:
        # receivers come and go (one per client, for per-request webhooks), and some never close an idle connection:
        # what is idle past IDLE_FOR is closed here, also once messages stop
        self._sweeper = None
        now = time.monotonic()
        for key, idle in list(self._idle.items()):
            kept = [c for c in idle if c.usable() and now - c.idle_since < IDLE_FOR]
            for conn in idle:
                if conn not in kept:
                    conn._end(None)
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]
        if self._idle:
            self._sweeper = asyncio.get_running_loop().call_later(IDLE_FOR / 2, self._sweep)

    async def _connect(self, key: tuple[str, str, int]) -> _Exchange:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        error: OSError | None = None
        for address in await self.resolver.resolve(host, port, socket.AF_UNSPEC):
            try:
                _, conn = await loop.create_connection(
                    _Exchange, address["host"], address["port"], family=address["family"], ssl=tls,
                    server_hostname=host if tls else None)
                return conn
            except OSError as exc:
                error = exc
        raise error or OSError(f"cannot connect to {host}:{port}")

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in [c for idle in self._idle.values() for c in idle] + list(self._busy):
            conn._end(None)
        self._idle.clear()
