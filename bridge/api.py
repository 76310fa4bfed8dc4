"""Endpoints: one declaration per route drives its request parsing, its error answers and its OpenAPI entry.

A handler is declared with `@endpoint(dialect=..., body=Model, query=Model, responses={200: Model})`. The wrapper
reads the body safely (size, depth, numbers), validates it into the model, and passes it to the handler; any
validation failure or engine error is answered in the dialect's own error shape, naming the field in the client's
words. `bridge.openapi` builds `/openapi.json` from the same declarations, so the spec and the checks agree.
"""
from __future__ import annotations

import asyncio
import codecs
import json
import math
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bridge import images as image_io
from bridge import jsontext
from bridge.errors import BridgeError
from bridge.fields import FieldError, field_errors

MAX_DEPTH = jsontext.MAX_DEPTH
# More values than any real request holds (the A1111 options answer, posted back whole: 340). Every item
# of a list can fail validation on its own, and 200,000 such errors took 3 s to word and made a 35 MB answer.
MAX_VALUES = 20_000
# Parsing a large body (megabytes of base64) takes long enough to stall other requests: off the loop above this.
THREAD_PARSE_BYTES = 256 * 1024
MAX_DIGITS = 40

H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])


class BodyError(Exception):
    """The body is not JSON the endpoint can read (not JSON, too deep, a number too large...), or it did not arrive
    in time (status 408)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"a number has more than {MAX_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is too large")
    return value


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_shape(value: Any) -> None:
    problem = jsontext.shape_problem(value, MAX_VALUES)
    if problem is not None:
        raise BodyError(f"the body {problem}")


# Counted before a large body is parsed: json.loads holds the interpreter lock, thread or not, while it builds every
# value (a 32 MiB body of `[],` held the event loop 9-10 s and took 760 MB before the value limit could refuse it;
# 16 million `\n` escapes in one string 0.1 s). Commas bound the values, backslashes the escapes (a non-ASCII text
# sent with ensure_ascii has one per character) and quotes the strings; image data has none of them but its
# quotes. Counted a piece at a time (one count of 32 MiB took 16 ms).
PRECOUNT_BYTES = 1 << 20
MAX_MARKS = 4 * MAX_VALUES


def _precount(raw: bytes) -> None:
    if len(raw) <= PRECOUNT_BYTES:
        return
    commas = slashes = quotes = 0
    step = image_io.B64_PIECE
    for at in range(0, len(raw), step):  # a piece at a time, the lock let go between
        end = at + step
        commas += raw.count(b",", at, end)
        slashes += raw.count(b"\\", at, end)
        quotes += raw.count(b'"', at, end)
        if commas > MAX_MARKS:
            raise BodyError(f"the body holds more than {MAX_VALUES} values (it has more than {MAX_MARKS} commas)")
        if slashes > MAX_MARKS:
            raise BodyError(f"the body holds more than {MAX_MARKS} escaped characters")
        if quotes > 4 * MAX_MARKS:  # two a string, keys too, and escaped ones
            raise BodyError(f"the body holds more than {MAX_VALUES} values (it has more than {4 * MAX_MARKS} "
                            f"quotes)")


# String values longer than this (an image's base64) are cut out of a large body before json.loads and decoded a
# piece at a time: parsing one 21 MB string held the event loop 40 ms, from a thread too.
LIFT_CHARS = 1 << 20
_CONTROLS = bytes(range(32))  # what a JSON string may not hold unescaped
_SPACES = re.compile(rb"[ \t\r\n]*")


def _lift(raw: bytes) -> tuple[bytes, dict[str, str]]:
    """`raw` with each long string value that has no escapes replaced by a token, and the values by token.
    Whatever does not look like that is left to json.loads (and its error message)."""
    if len(raw) <= LIFT_CHARS or json.detect_encoding(raw) != "utf-8":
        return raw, {}
    token = f"pixart-lift-{secrets.token_hex(16)}-"
    out: list[bytes] = []
    lifted: dict[str, str] = {}
    pos = scan = 0
    while (start := raw.find(b'"', scan)) >= 0:
        end = start
        while True:  # the closing quote: one after an even run of backslashes (the precount bounds them)
            end = raw.find(b'"', end + 1)
            if end < 0:
                return raw, {}
            slashes = end - 1
            while raw[slashes] == 0x5C:
                slashes -= 1
            if (end - 1 - slashes) % 2 == 0:
                break
        scan = end + 1
        if end - start - 1 <= LIFT_CHARS or raw.find(b"\\", start, end) >= 0:
            continue  # short, or with escapes
        follows = _SPACES.match(raw, scan).end()
        if raw[follows:follows + 1] == b":":
            continue  # a key
        decoder = codecs.getincrementaldecoder("utf-8")()
        text = []
        view = memoryview(raw)
        step = image_io.B64_PIECE
        for at in range(start + 1, end, step):
            piece = bytes(view[at:min(at + step, end)])
            if len(piece.translate(None, _CONTROLS)) != len(piece):
                return raw, {}  # json.loads words this one
            try:
                text.append(decoder.decode(piece, final=at + step >= end))
            except UnicodeDecodeError:
                return raw, {}
        key = f"{token}{len(lifted)}"
        lifted[key] = "".join(text)
        out += [raw[pos:start + 1], key.encode()]
        pos = end
    out.append(raw[pos:])
    return b"".join(out), lifted


def _put_back(data: Any, lifted: dict[str, str]) -> Any:
    if isinstance(data, str):
        return lifted.get(data, data)
    stack = [data]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            if isinstance(v, str) and v in lifted:
                node[k] = lifted[v]
            elif isinstance(v, (dict, list)):
                stack.append(v)
    return data


def parse_json(raw: bytes) -> Any:
    """JSON with limits: nesting depth, values, digits in a number, no NaN/Infinity. Raises BodyError with the
    reason."""
    _precount(raw)
    skeleton, lifted = _lift(raw)
    try:
        try:
            data = json.loads(skeleton, parse_int=_int, parse_float=_float, parse_constant=_constant)
        except ValueError:
            if not lifted:
                raise
            data = json.loads(raw, parse_int=_int, parse_float=_float, parse_constant=_constant)  # its own words
    except RecursionError:
        raise BodyError(f"the body is nested more than {MAX_DEPTH} levels deep") from None
    except UnicodeDecodeError:
        raise BodyError("the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BodyError(f"the body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:
        raise BodyError(f"the body is not acceptable JSON: {exc}") from None
    _check_shape(data)
    return _put_back(data, lifted) if lifted else data


async def read_body(request: web.Request) -> bytes:
    """The whole body, within BRIDGE_BODY_TIMEOUT: a client trickling bytes does not hold a handler forever."""
    from bridge.keys import SETTINGS

    settings = request.app.get(SETTINGS)
    timeout = settings.body_timeout if settings is not None else None
    try:
        return await asyncio.wait_for(request.read(), timeout)
    except asyncio.TimeoutError:
        raise BodyError(f"the body did not arrive within {timeout:g} s (BRIDGE_BODY_TIMEOUT)", status=408) from None
    except (web.RequestPayloadError, ConnectionResetError) as exc:
        # a broken chunk or a dropped connection midway: the client's fault, answered if it still listens
        raise BodyError(f"the body could not be read: {str(exc).strip() or type(exc).__name__}"[:300]) from None


async def read_json(request: web.Request, *, empty: Any = None) -> Any:
    """The request's JSON body (`empty` when there is none), parsed off the event loop when it is large."""
    raw = await read_body(request)
    if not raw.strip():
        return empty
    if len(raw) > THREAD_PARSE_BYTES:
        return await asyncio.to_thread(parse_json, raw)
    return parse_json(raw)


# ---------------------------------------------------------------------------------------------------------------
# Dialects: how a family of routes answers errors


class ErrorBody(BaseModel):
    """The common error shape of the bridge's own routes."""

    error: str
    message: str
    field: str | None


# What a 503 without its own estimate tells clients to wait: long enough for a backend to reconnect.
DEFAULT_RETRY_AFTER = 5


def retry_after(exc: BridgeError) -> int | None:
    if getattr(exc, "retry_after", None) is not None:
        return int(exc.retry_after)  # type: ignore[attr-defined]
    return DEFAULT_RETRY_AFTER if exc.status == 503 else None


def retry_headers(exc: BridgeError) -> dict[str, str]:
    seconds = retry_after(exc)
    return {"Retry-After": str(seconds)} if seconds is not None else {}


def renamed(exc: BridgeError, names: Mapping[str, str] | None) -> tuple[str, str | None]:
    """The engine error's message and field, with a workflow parameter named as the client knows it."""
    name = exc.field
    message = exc.message
    if name and names and name in names and names[name] != name:
        client = names[name]
        message = client + message[len(name):] if message.startswith(name) else message.replace(
            f"{name}:", f"{client}:", 1)
        if client not in message:
            message = f"{client}: {message}"
        return message, client
    return message, name


@dataclass(frozen=True)
class Dialect:
    """Error answers of one API family. Subclasses override `error` (and `invalid` when validation failures have
    their own shape, as A1111's FastAPI 422 does)."""

    name: str
    error_model: type[BaseModel] = ErrorBody
    tags: tuple[str, ...] = ()
    # What a body that is not a JSON object is told, in the dialect's own wording.
    not_an_object: str = "the request body must be a JSON object"
    # A query key given twice: aiohttp's servers (ComfyUI's too) read its first value, FastAPI's (A1111's) its last.
    query_last_wins: bool = False

    def query_values(self, query: Mapping[str, str]) -> dict[str, str]:
        return dict(query.items()) if self.query_last_wins else {k: query[k] for k in query}

    def error(self, status: int, message: str, field: str | None = None, *, code: str | None = None,
              headers: Mapping[str, str] | None = None, **extra: Any) -> web.Response:
        from bridge.http import error_code

        body = {"error": code or error_code(status), "message": message, "field": field}
        return web.json_response(body, status=status, headers=dict(headers or {}))

    def invalid(self, errors: Sequence[FieldError], body: Any, where: str = "body") -> web.Response:
        """`errors` of the request's `where` ("body" or "query"), whose values were `body`."""
        first = errors[0]
        if first.field is None:
            return self.error(400, self.not_an_object, "body", code="invalid_body")
        return self.error(400, first.message, first.field, code="invalid_parameter")

    def bad_body(self, message: str, status: int = 400) -> web.Response:
        return self.error(status, message, "body", code="invalid_body" if status == 400 else "request_timeout")

    def bridge_error(self, exc: BridgeError, names: Mapping[str, str] | None = None) -> web.Response:
        message, name = renamed(exc, names)
        extra: dict[str, Any] = {}
        if retry_after(exc) is not None:
            extra["retryAfter"] = retry_after(exc)
        if getattr(exc, "valid", None) is not None:
            extra["validValues"] = list(exc.valid)  # type: ignore[attr-defined]
        return self.error(exc.status, message, name, code=exc.code, headers=retry_headers(exc), **extra)


CORE = Dialect("core", tags=("bridge",))


# ---------------------------------------------------------------------------------------------------------------
# Endpoint declarations


@dataclass(frozen=True)
class Endpoint:
    dialect: Dialect
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    responses: Mapping[int, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    summary: str | None = None
    description: str | None = None
    # Workflow parameter -> client field, for engine errors.
    names: Mapping[str, str] | None = None
    # What an empty body means ({} for dialects that treat it as "all defaults", None: refused).
    empty_body: Any = None
    request_content: str = "application/json"
    response_content: Mapping[int, str] = field(default_factory=dict)
    headers: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    # For a route with a path parameter that names a workflow: (concrete path, body model, description) per value,
    # so OpenAPI shows one typed path each.
    expand: Callable[[web.Application], list[tuple[str, type[BaseModel], str]]] | None = None


ATTR = "__endpoint__"


def endpoint(*, dialect: Dialect = CORE, body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
             responses: Mapping[int, Any] | None = None, tags: Sequence[str] | None = None,
             summary: str | None = None, description: str | None = None, names: Mapping[str, str] | None = None,
             empty_body: Any = None, request_content: str = "application/json",
             response_content: Mapping[int, str] | None = None,
             headers: Mapping[int, Mapping[str, Any]] | None = None,
             expand: Callable[[web.Application], list[tuple[str, type[BaseModel], str]]] | None = None,
             ) -> Callable[[H], H]:
    """Declare a route handler. With `body`/`query` models the handler is called as `handler(request, body=...,
    query=...)` with validated instances; errors never escape as a bare 500."""
    spec = Endpoint(dialect, body, query, dict(responses or {}), tuple(tags or dialect.tags), summary, description,
                    names, empty_body, request_content, dict(response_content or {}), dict(headers or {}), expand)

    def decorate(fn: H) -> H:
        async def handler(request: web.Request) -> web.StreamResponse:
            kwargs: dict[str, Any] = {}
            try:
                if spec.query is not None:
                    try:
                        values = spec.dialect.query_values(request.query)
                        kwargs["query"] = spec.query.model_validate(values)
                    except ValidationError as exc:
                        return spec.dialect.invalid(field_errors(exc, spec.query), values, "query")
                if spec.body is not None:
                    try:
                        raw = await read_json(request, empty=spec.empty_body)
                    except BodyError as exc:
                        return spec.dialect.bad_body(exc.message, exc.status)
                    try:
                        kwargs["body"] = spec.body.model_validate(raw)
                    except ValidationError as exc:
                        return spec.dialect.invalid(field_errors(exc, spec.body), raw)
                return await fn(request, **kwargs)
            except BridgeError as exc:
                return spec.dialect.bridge_error(exc, spec.names)

        handler.__name__ = fn.__name__
        handler.__qualname__ = fn.__qualname__
        handler.__doc__ = fn.__doc__
        handler.__module__ = fn.__module__
        setattr(handler, ATTR, spec)
        return handler  # type: ignore[return-value]

    return decorate


def describe(handler: Any) -> Endpoint | None:
    return getattr(handler, ATTR, None)
