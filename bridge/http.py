"""Common HTTP surface: the JSON error shape, API-key auth, CORS, body limit and per-key rate limit.

Every middleware here answers with `{"error": code, "message": text, "field": name | null}`. Responses a handler
returns are never rewritten: adapters with their own error dialects build those responses themselves.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from aiohttp import hdrs, payload, web
from aiohttp.typedefs import Handler

from bridge import jsontext
from bridge.errors import BridgeError, quote
from bridge.images import Base64

log = logging.getLogger("bridge.http")

API_KEY = web.RequestKey("api_key", str)  # the verified key, for the rate limiter and adapters

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "invalid_parameter",
    429: "rate_limited",
    431: "header_fields_too_large",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "timeout",
}


def error_code(status: int) -> str:
    return _STATUS_CODES.get(status, "http_%d" % status)


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": code, "message": message, "field": field}


def json_error(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(error_body(code, message, field), status=status, headers=headers)


class _JsonPieces(payload.Payload):
    """A JSON text written a piece at a time (`jsontext.Pieces`), the event loop turning between pieces. Its size is
    known where its long values are all `Base64` (a long text's length shows only once it is escaped: such an
    answer goes chunked)."""

    def __init__(self, pieces: jsontext.Pieces) -> None:
        super().__init__(pieces, content_type="application/json; charset=utf-8")
        self._pieces = pieces
        if all(isinstance(v, Base64) for v in pieces.values):
            self._size = sum(map(len, pieces.parts)) + sum(v.length for v in pieces.values)

    async def write(self, writer: Any) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        left = content_length
        for piece in self._pieces:
            if left is not None:
                if left <= 0:
                    break
                piece, left = piece[:left], left - len(piece)
            await writer.write(piece)
            await asyncio.sleep(0)  # a client reading as fast as we write never makes `write` wait

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._pieces).decode(encoding, errors)


def json_payload(body: Any) -> payload.Payload:
    """`body` as a JSON payload (an answer's, or a request's to another server) whose long values, `Base64`
    images and long texts, are encoded a piece at a time as it is written (`bridge.jsontext`)."""
    return _JsonPieces(jsontext.split(body))


async def json_answer(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """`web.json_response` for answers that may carry images (as `Base64` values) or long texts: see
    `json_payload`."""
    return web.Response(body=json_payload(body), status=status, headers=dict(headers or {}))


def bridge_error_response(exc: BridgeError) -> web.Response:
    """The common-shape response for an engine error (adapters with their own dialect translate instead)."""
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(float(retry_after))))
    return json_error(exc.status, exc.code, exc.message, exc.field, headers)


def _http_exception_response(request: web.Request, exc: web.HTTPException) -> web.Response:
    status = exc.status
    field: str | None = None
    if status == 404:
        message = f"no route for {request.method} {request.path}"
        field = "path"
    elif status == 405:
        allowed = exc.headers.get("Allow", "")
        message = f"method {request.method} is not allowed on {request.path} (allowed: {allowed})"
        field = "method"
    elif status == 413:
        message = f"request body is too large: {exc.text or ''}".strip()
        field = "body"
    else:
        text = exc.text or exc.reason
        # aiohttp's default bodies read "404: Not Found"; drop the repeated status.
        message = text.split(": ", 1)[1] if text.startswith(f"{status}: ") else text
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after", "www-authenticate",
                                                                      "location")}
    return json_error(status, error_code(status), message, field, headers)


# what a 500 says, whoever answers it (this middleware, or the server for what escapes it)
INTERNAL_ERROR = "internal server error; the bridge log has the details"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn exceptions that escape a handler into the common JSON shape; leave returned responses alone."""
    try:
        return await handler(request)
    except BridgeError as exc:
        return bridge_error_response(exc)
    except web.HTTPException as exc:
        # Redirects and adapter-built JSON errors (raised as HTTPException with a JSON body) pass as they are.
        if exc.status < 400 or (exc.content_type or "").startswith("application/json"):
            raise
        return _http_exception_response(request, exc)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(500, "internal_error", INTERNAL_ERROR)


def _encoded(header: str) -> bool:
    """Whether a Content-Encoding value names any coding but identity: a list ("identity, gzip") as well, and one
    nobody inflates ("compress"), which would be read as JSON all the same."""
    codings = (part.partition(";")[0].strip().lower() for part in header.split(","))
    return any(coding not in ("", "identity") for coding in codings)


def body_limit_middleware(max_bytes: int) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Refuse a declared oversize body, or a compressed one, before anyone reads it (aiohttp's client_max_size
    covers chunked bodies)."""

    @web.middleware
    async def body_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        encoding = ", ".join(request.headers.getall(hdrs.CONTENT_ENCODING, ()))
        if _encoded(encoding) and request.body_exists:
            # Bodies are read as sent, as A1111 (FastAPI) reads them: aiohttp would inflate a 2 MB gzip body of
            # spaces to 250 MB before the size limit, read a broken one as an empty body (a job of defaults)
            # and answer a broken deflate with a 500; its parser does not inflate them (`auto_decompress` off, set
            # in `bridge.app`), which would cost as much while it drains the refused body.
            refused = json_error(415, "unsupported_media_type",
                                 f"request bodies are read as sent; Content-Encoding {quote(encoding)} is not taken",
                                 "body")
            refused.force_close()  # its body stays unread: the connection cannot carry another request
            return refused
        length = request.content_length
        if length is not None and length > max_bytes:
            return json_error(
                413, "payload_too_large",
                f"request body is {length} bytes; the limit is {max_bytes} bytes (BRIDGE_MAX_BODY_MB)", "body",
            )
        return await handler(request)

    return body_limit


def path_matches(path: str, patterns: Iterable[str]) -> bool:
    for pattern in patterns:
        if pattern.endswith("*"):
            if path.startswith(pattern[:-1]):
                return True
        elif path == pattern:
            return True
    return False


def request_api_key(request: web.Request) -> str | None:
    """The key a client sent: `X-API-Key`, `Authorization: Bearer`, or (for EventSource, which cannot set
    headers) `?api_key=` on GET /events."""
    key = request.headers.get("X-API-Key")
    if key:
        return key.strip()
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.method == "GET" and request.path == "/events":
        return request.query.get("api_key") or None
    return None


CLIENT_ADDRESS = web.RequestKey("client_address", str)


def client_address(request: web.Request) -> str:
    """The address of whoever sent the request: the peer, or behind trusted proxies (a load balancer in front of
    the replicas) the address those proxies recorded in X-Forwarded-For."""
    return request.get(CLIENT_ADDRESS) or request.remote or "unknown"


def forwarded_for(trusted: Sequence[Any]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Take the client's address from X-Forwarded-For when the peer is one of the `trusted` proxy networks
    (BRIDGE_TRUSTED_PROXIES): the rightmost address that is not itself a trusted proxy, so a client cannot pass
    itself off as another by sending its own header. Everyone else is known by the peer address."""
    import ipaddress

    networks = [ipaddress.ip_network(str(n), strict=False) for n in trusted]

    def is_trusted(text: str) -> bool:
        try:
            address = ipaddress.ip_address(text.strip())
        except ValueError:
            return False
        return any(address in net for net in networks)

    @web.middleware
    async def resolve(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote or ""
        if networks and is_trusted(peer):
            hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if h.strip()]
            for hop in reversed(hops):
                if not is_trusted(hop):
                    request[CLIENT_ADDRESS] = hop  # type: ignore[assignment]
                    break
        return await handler(request)

    return resolve


def client_identity(keys: ApiKeys | None) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Who is asking, for the per-client job quota: a fingerprint of a valid API key (never the key itself), else
    the address. A key that is not one of the configured ones (or any key where none are configured) is not an
    identity: otherwise a client could send a new made-up key with each request and never meet its quota."""
    from bridge.engine import CLIENT

    @web.middleware
    async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = request_api_key(request)
        if key and keys is not None and keys.valid(key):
            who = "key:" + hashlib.sha256(_key_bytes(key)).hexdigest()[:16]
        else:
            who = f"addr:{client_address(request)}"
        token = CLIENT.set(who)
        try:
            return await handler(request)
        finally:
            CLIENT.reset(token)

    return identify


def _key_bytes(key: str) -> bytes:
    # aiohttp reads header bytes that are not UTF-8 as lone surrogates (and Python environment variables likewise):
    # a strict encode raised on them, a 500 outside the error middleware that no rate limit or lock-out counted
    return key.encode("utf-8", "surrogateescape")


class ApiKeys:
    """The accepted keys; `valid` compares against every one so timing reveals neither which matched nor how many
    exist."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._encoded = [_key_bytes(k) for k in keys]

    def valid(self, key: str | None) -> bool:
        if not key:
            return False
        candidate = _key_bytes(key)
        return sum(hmac.compare_digest(candidate, k) for k in self._encoded) > 0


class FailureLockout:
    """Failed authentications per client address: `max_failures` within `window` seconds lock the address out for
    `lockout` seconds (answered 429), so guessing keys stays slow whatever the rate limit says."""

    def __init__(self, max_failures: int, window: float, lockout: float, *, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._locked: dict[str, float] = {}

    def locked_for(self, client: str) -> float:
        """Seconds left of the client's lock-out (0 when not locked)."""
        until = self._locked.get(client)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._locked[client]
            return 0.0
        return left

    def failed(self, client: str) -> bool:
        """Record a failure; True when it starts a lock-out."""
        now = self._clock()
        times = [t for t in self._failures.pop(client, []) if now - t < self.window] + [now]
        self._failures[client] = times
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
        if len(times) >= self.max_failures:
            self._locked[client] = now + self.lockout
            self._failures.pop(client, None)
            return True
        return False


class SharedLimits:
    """The rate limit's buckets and the failed-authentication lock-outs, where every replica sees them: in memory
    on a bridge alone on its store, in the job store where replicas share one (PostgreSQL), so a client that spreads
    its requests over the replicas behind a load balancer meets the same limit."""

    def __init__(self, store: Callable[[], Any], bucket: TokenBucket | None = None,
                 lockout: FailureLockout | None = None) -> None:
        self._store = store  # the engine's job store, read at request time (it opens with the app)
        self.bucket = bucket
        self.lockout = lockout

    def _shared(self) -> Any:
        store = self._store()
        return store if store is not None and getattr(store, "shared", False) else None

    async def take(self, client: str) -> float:
        assert self.bucket is not None
        store = self._shared()
        if store is None:
            return self.bucket.acquire(client)
        return await store.take_token(client, self.bucket.rate, self.bucket.burst)

    async def locked_for(self, client: str) -> float:
        assert self.lockout is not None
        store = self._shared()
        return self.lockout.locked_for(client) if store is None else await store.auth_locked_for(client)

    async def failed(self, client: str) -> bool:
        assert self.lockout is not None
        store = self._shared()
        if store is None:
            return self.lockout.failed(client)
        lock = self.lockout
        return await store.auth_failed(client, lock.max_failures, lock.window, lock.lockout)


def auth_middleware(keys: ApiKeys, exempt: Sequence[str],
                    lockout: SharedLimits | None = None) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        # CORS preflights carry no credentials; the CORS middleware answers them before this one. Any other OPTIONS
        # is a request like the rest: without a key it learns nothing, not even a route's methods.
        if path_matches(request.path, exempt):
            return await handler(request)
        client = client_address(request)
        if lockout is not None:
            left = await lockout.locked_for(client)
            if left > 0:
                seconds = max(1, math.ceil(left))
                return json_error(429, "auth_locked_out",
                                  f"too many failed authentications from this address; retry after {seconds} s "
                                  f"(BRIDGE_AUTH_MAX_FAILURES)", "X-API-Key", {"Retry-After": str(seconds)})
        key = request_api_key(request)
        challenge = {"WWW-Authenticate": 'Bearer realm="pixart"'}
        if not keys.valid(key):
            if lockout is not None and await lockout.failed(client):
                assert lockout.lockout is not None
                log.warning("address %s locked out for %g s after %d failed authentications", client,
                            lockout.lockout.lockout, lockout.lockout.max_failures)
            if key is None:
                return json_error(401, "unauthorized",
                                  "an API key is required: send it as X-API-Key or Authorization: Bearer",
                                  "X-API-Key", challenge)
            return json_error(401, "invalid_api_key", "the API key is not valid", "X-API-Key", challenge)
        request[API_KEY] = key  # type: ignore[assignment]
        return await handler(request)

    return auth


class TokenBucket:
    """Per-client token buckets: `rate` tokens a second, at most `burst` saved up.

    Buckets of idle clients are dropped oldest first beyond `max_clients`; a dropped bucket would have refilled
    to full anyway once idle for burst/rate seconds, so only very recent clients lose state under that pressure.
    """

    def __init__(self, rate: float, burst: int, *, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def acquire(self, client: str) -> float:
        """Take one token; return 0.0 when allowed, else the seconds until one is available."""
        now = self._clock()
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


def rate_limit_middleware(limits: SharedLimits, exempt: Sequence[str],
                          keys: ApiKeys | None = None) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Runs before authentication: a request with a valid key counts against that key, every other request (a
    missing or wrong key among them) against its address, so a flood of wrong keys is limited too."""

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if path_matches(request.path, exempt):
            return await handler(request)
        key = request_api_key(request)
        by_key = keys is not None and keys.valid(key)
        client = f"key:{key}" if by_key else f"addr:{client_address(request)}"
        wait = await limits.take(client)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            who = "API key" if by_key else "client address"
            return json_error(429, "rate_limited",
                              f"too many requests for this {who}; retry after {seconds} s (BRIDGE_RATE_LIMIT)",
                              None, {"Retry-After": str(seconds)})
        return await handler(request)

    return rate_limit


class Cors:
    """CORS for a configured origin list. With credentials the allowed origin is echoed, never '*'."""

    def __init__(self, origins: Sequence[str], credentials: bool, max_age: int = 600) -> None:
        self.wildcard = "*" in origins
        if self.wildcard and credentials:
            raise ValueError("'*' in BRIDGE_CORS_ORIGINS cannot be combined with credentials")
        self.origins = {o.rstrip("/") for o in origins if o != "*"}
        self.credentials = credentials
        self.max_age = max_age

    @property
    def enabled(self) -> bool:
        return self.wildcard or bool(self.origins)

    def allow_origin(self, origin: str | None) -> str | None:
        """Value of Access-Control-Allow-Origin for this Origin, or None when it is not allowed."""
        if not origin:
            return None
        if origin.rstrip("/") in self.origins:
            return origin
        if self.wildcard:
            return "*"
        return None

    def _common(self, allowed: str) -> dict[str, str]:
        headers = {"Access-Control-Allow-Origin": allowed}
        if self.credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if request.method != "OPTIONS" or not origin or "Access-Control-Request-Method" not in request.headers:
            return await handler(request)
        allowed = self.allow_origin(origin)
        if allowed is None:
            return json_error(403, "cors_origin_not_allowed",
                              f"origin {origin!r} is not in BRIDGE_CORS_ORIGINS", "Origin", {"Vary": "Origin"})
        headers = self._common(allowed)
        headers.update({
            "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": request.headers.get(
                "Access-Control-Request-Headers", "Content-Type, Authorization, X-API-Key"),
            "Access-Control-Max-Age": str(self.max_age),
            "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        })
        return web.Response(status=204, headers=headers)

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Adds the headers to every response, streamed (SSE) and error ones included."""
        if "Access-Control-Allow-Origin" in response.headers:
            return
        allowed = self.allow_origin(request.headers.get("Origin"))
        if allowed is None:
            return
        response.headers.update(self._common(allowed))
        response.headers["Access-Control-Expose-Headers"] = "Retry-After, Content-Disposition"
        if allowed != "*":
            vary = response.headers.get("Vary")
            response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
