"""Async client for one ComfyUI server (routes and shapes: shared/reference/comfyui.md §1-§2)."""
from __future__ import annotations

import asyncio
import json
import re
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp

from ..outbound import AnswerTooLarge, deadline, read_capped

# Binary websocket frame types (ComfyUI protocol.py BinaryEventTypes).
PREVIEW_IMAGE = 1
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4


# ComfyUI is the operator's own server, but a broken one (or another program on its port) must not take the bridge's
# memory with it: one answer past these sizes fails its request like any other backend error (a bound per answer:
# reads at the same time each have their own). JSON answers (a large install's /object_info is tens of MB, /queue a
# few kB per queued prompt) and files (/view of one image, and a websocket message: a SaveImageWebsocket frame of the
# largest picture ComfyUI makes, 16384x16384, is 1 GiB as an RGBA PNG of noise).
JSON_ANSWER_BYTES = 256 * 1024 ** 2
FILE_ANSWER_BYTES = 2 * 1024 ** 3


class BackendError(Exception):
    """The backend could not be reached or answered something unexpected."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url


class AnswerTooLargeError(BackendError):
    """An answer past the bound its reader set."""


class PromptRejected(Exception):
    """POST /prompt answered 400: the graph failed ComfyUI's validation."""

    def __init__(self, error: dict[str, Any], node_errors: dict[str, Any]) -> None:
        self.error = error if isinstance(error, dict) else {"message": str(error)}
        self.node_errors = node_errors if isinstance(node_errors, dict) else {}
        super().__init__(self.describe())

    def input_errors(self) -> list[tuple[str, str, str | None, str]]:
        """(node_id, class_type, input_name or None, message) for every per-input error; parts in other shapes
        than ComfyUI's are passed over (raised, a refusal became an error of the bridge's)."""
        out = []
        for nid, entry in self.node_errors.items():
            errors = entry.get("errors") if isinstance(entry, dict) else None
            for err in errors if isinstance(errors, list) else []:
                if not isinstance(err, dict):
                    continue
                extra = err.get("extra_info") if isinstance(err.get("extra_info"), dict) else {}
                name = extra.get("input_name")
                msg = str(err.get("message", ""))
                if err.get("details"):
                    msg = f"{msg}: {err['details']}"
                out.append((str(nid), str(entry.get("class_type", "?")), name if isinstance(name, str) else None,
                            msg))
        return out

    def describe(self) -> str:
        parts = [str(self.error.get("message", "prompt rejected"))]
        if self.error.get("details"):
            parts[0] += f" ({self.error['details']})"
        for nid, cls, inp, msg in self.input_errors():
            parts.append(f"node {nid} ({cls}){' input ' + repr(inp) if inp else ''}: {msg}")
        return "; ".join(parts)


@dataclass(frozen=True)
class BinaryFrame:
    event: int
    image_type: str | None     # "image/png" | "image/jpeg" for image frames
    data: bytes
    node_id: str | None = None
    prompt_id: str | None = None


def parse_binary(frame: bytes) -> BinaryFrame:
    """Decode a binary websocket frame: [u32 event][payload], all integers big-endian."""
    if len(frame) < 8:
        raise ValueError("binary frame shorter than 8 bytes")
    (event,) = struct.unpack(">I", frame[:4])
    if event == PREVIEW_IMAGE:
        (fmt,) = struct.unpack(">I", frame[4:8])
        return BinaryFrame(event, "image/png" if fmt == 2 else "image/jpeg", frame[8:])
    if event == PREVIEW_IMAGE_WITH_METADATA:
        (n,) = struct.unpack(">I", frame[4:8])
        meta = json.loads(frame[8:8 + n])
        return BinaryFrame(event, meta.get("image_type", "image/png"), frame[8 + n:],
                           node_id=meta.get("node_id"), prompt_id=meta.get("prompt_id"))
    if event == TEXT:
        (n,) = struct.unpack(">I", frame[4:8])
        return BinaryFrame(event, None, frame[8 + n:], node_id=frame[8:8 + n].decode("utf-8", "replace"))
    return BinaryFrame(event, None, frame[4:])


_SPACE = re.compile(r"[ \t\n\r]*")
_QUEUES = ("queue_running", "queue_pending")
_VALUE_STARTS = '[{"-0123456789tfn'  # the first characters a JSON value may have
QUEUE_SLICE = 0.005  # seconds of decoding /queue between turns of the event loop


async def queued_prompt_ids(text: str) -> tuple[set[str], set[str]]:
    """The prompt ids (each item's second field) of /queue's `queue_running` and `queue_pending`, the answer decoded
    one item at a time with a turn of the event loop every `QUEUE_SLICE` seconds: the answer carries every queued
    graph, and json.loads holds the GIL for the whole of it (a thread would not help), so one call on a queue of
    500 jobs kept every other request waiting up to 111 ms (bench_queue_backlog). ValueError where `text` is not
    such an object."""
    decode = json.JSONDecoder().raw_decode
    ids: dict[str, set[str]] = {name: set() for name in _QUEUES}
    began = time.perf_counter()

    def skip(i: int) -> int:
        return _SPACE.match(text, i).end()

    def expect(i: int, chars: str) -> int:
        """The place of the next of `chars` after white space at `i`."""
        i = skip(i)
        if i >= len(text) or text[i] not in chars:
            raise ValueError(f"expected one of {chars!r} at {i}")
        return i

    i = expect(0, "{") + 1
    if text[expect(i, '"}')] == '"':
        while True:
            key, i = decode(text, expect(i, '"'))
            i = skip(expect(i, ":") + 1)
            if key not in ids:
                _, i = decode(text, i)
            else:
                i = expect(i, "[") + 1
                if text[expect(i, "]" + _VALUE_STARTS)] != "]":
                    while True:
                        item, i = decode(text, skip(i))
                        if isinstance(item, list) and len(item) > 1 and isinstance(item[1], str):
                            ids[key].add(item[1])
                        if time.perf_counter() - began > QUEUE_SLICE:
                            await asyncio.sleep(0)
                            began = time.perf_counter()
                        i = expect(i, ",]")
                        if text[i] == "]":
                            break
                        i += 1
                i = expect(i, "]") + 1
            i = expect(i, ",}")
            if text[i] == "}":
                break
            i += 1
    i = expect(i, "}") + 1
    if skip(i) != len(text):
        raise ValueError(f"more after the object at {i}")
    return ids["queue_running"], ids["queue_pending"]


T = TypeVar("T")
_NOTHING: Any = object()


class SharedRun(Generic[T]):
    """One run of an action at a time. A caller that asks while one is under way shares the next run (its answer
    or its error), never one begun before it asked: what it gets is never older than its question. The error too:
    were only some shared, each caller waiting behind a failing run would run it again in turn."""

    def __init__(self) -> None:
        self._begun = 0
        self._last: T | Exception = _NOTHING
        self._lock = asyncio.Lock()

    async def __call__(self, action: Callable[[], Awaitable[T]]) -> T:
        ticket = self._begun
        async with self._lock:
            if self._begun <= ticket or self._last is _NOTHING:  # none begun since it asked, or that one was cut
                self._begun += 1
                self._last = _NOTHING
                try:
                    self._last = await action()
                except Exception as exc:  # noqa: BLE001 - shared with every caller, raised to each
                    self._last = exc
            last = self._last
        if isinstance(last, Exception):
            raise last
        return last


class ComfyClient:
    def __init__(self, url: str, session: aiohttp.ClientSession, client_id: str, *,
                 request_timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.session = session
        self.client_id = client_id
        self.timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._queue_reads: SharedRun[tuple[set[str], set[str]]] = SharedRun()

    async def _request(self, method: str, path: str, *, expect_json: bool = True, ok: tuple[int, ...] = (200,),
                       limit: int | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        try:
            async with self.session.request(method, self.url + path, **kwargs) as resp:
                body = await self._read(resp, f"{method} {path}", JSON_ANSWER_BYTES if limit is None else limit)
                if resp.status not in ok:
                    raise BackendError(self.url, f"{method} {path} answered {resp.status}: {body[:300]!r}")
                if resp.status == 404:
                    return None  # asked for with ok=(..., 404): "not there" is an answer, whatever the body
                if not expect_json:
                    return body
                return json.loads(body) if body else None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise BackendError(self.url, f"{method} {path} failed: {exc.__class__.__name__} {exc}") from exc
        except json.JSONDecodeError as exc:
            raise BackendError(self.url, f"{method} {path} answered non-JSON: {exc}") from exc

    async def _read(self, resp: aiohttp.ClientResponse, what: str, limit: int) -> bytes:
        try:
            return await read_capped(resp, limit)
        except AnswerTooLarge as exc:
            raise AnswerTooLargeError(self.url, f"{what} answered {exc}") from None

    async def system_stats(self) -> dict[str, Any]:
        return await self._request("GET", "/system_stats")

    async def get_json(self, path: str, params: dict[str, str] | None = None, *, missing_ok: bool = False,
                       refused_ok: bool = False) -> Any:
        """A read-only JSON route of ComfyUI's server (e.g. /embeddings, /view_metadata/loras); with `missing_ok`
        a 404 (ComfyUI's answer for "no such file" or "no metadata") gives None; with `refused_ok` a 400's JSON
        body is the answer (a route that refuses the query, saying why)."""
        ok = (200,) + ((404,) if missing_ok else ()) + ((400,) if refused_ok else ())
        return await self._request("GET", path, params=params, ok=ok)

    async def object_info(self) -> dict[str, Any]:
        return await self._request("GET", "/object_info", timeout=aiohttp.ClientTimeout(total=120))

    async def queue_prompt(self, graph: dict[str, Any], prompt_id: str, *,
                           partial_execution_targets: list[str] | None = None, job_id: str | None = None
                           ) -> dict[str, Any]:
        """POST /prompt. With `partial_execution_targets` (output node ids) ComfyUI runs only those outputs
        and what they depend on. `job_id` goes into the prompt's `extra_data` (kept in ComfyUI's queue and
        history), so a prompt can be traced to the bridge job it ran for."""
        body: dict[str, Any] = {"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id}
        if job_id is not None:
            body["extra_data"] = {"pixart_job": job_id}
        if partial_execution_targets is not None:
            body["partial_execution_targets"] = list(partial_execution_targets)
        try:
            async with self.session.post(self.url + "/prompt", json=body, timeout=self.timeout) as resp:
                text = await self._read(resp, "POST /prompt", JSON_ANSWER_BYTES)
                if resp.status == 400:
                    try:
                        data = json.loads(text)
                    except ValueError:
                        data = None
                    if not isinstance(data, dict):  # a refusal all the same, in words ComfyUI never uses
                        data = {"error": {"message": f"ComfyUI answered 400: {text[:300]!r}"}}
                    raise PromptRejected(data.get("error", {}), data.get("node_errors", {}))
                if resp.status != 200:
                    raise BackendError(self.url, f"POST /prompt answered {resp.status}: {text[:300]!r}")
                return json.loads(text)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise BackendError(self.url, f"POST /prompt failed: {exc.__class__.__name__} {exc}") from exc
        except json.JSONDecodeError as exc:
            raise BackendError(self.url, f"POST /prompt answered non-JSON: {exc}") from exc

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry, or None while the prompt is queued, running or unknown."""
        data = await self._request("GET", f"/history/{prompt_id}")
        if data is not None and not isinstance(data, dict):
            raise BackendError(self.url, f"GET /history/{prompt_id} answered {type(data).__name__}, not an object")
        return (data or {}).get(prompt_id)

    async def queue_text(self) -> bytes:
        """GET /queue's answer as it came (`queued_ids` reads it)."""
        return await self._request("GET", "/queue", expect_json=False)

    async def queued_ids(self) -> tuple[set[str], set[str]]:
        """(running prompt ids, pending prompt ids), as ComfyUI holds them after this call began.

        Callers that ask while a read is under way share the next one: /queue carries every queued prompt's whole
        graph, so with a long queue one answer is megabytes, and a read per caller made the bridge's looks at its
        queued jobs cost the square of the queue's length (a stalled event loop at a thousand jobs)."""
        return await self._queue_reads(self._read_queue)

    async def _read_queue(self) -> tuple[set[str], set[str]]:
        body = await self.queue_text()
        try:
            return await queued_prompt_ids(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BackendError(self.url, f"GET /queue answered no queue: {exc}") from exc

    async def delete_from_queue(self, prompt_ids: list[str]) -> None:
        await self._request("POST", "/queue", json={"delete": prompt_ids}, expect_json=False)

    async def interrupt(self, prompt_id: str | None) -> None:
        await self._request("POST", "/interrupt", json={"prompt_id": prompt_id} if prompt_id else {},
                            expect_json=False)

    async def view(self, filename: str, subfolder: str = "", type_: str = "output", *,
                   limit: int | None = None) -> bytes:
        """One file, at most `limit` bytes (FILE_ANSWER_BYTES)."""
        return await self._request("GET", "/view", params={"filename": filename, "subfolder": subfolder,
                                                           "type": type_}, expect_json=False,
                                   limit=FILE_ANSWER_BYTES if limit is None else limit,
                                   timeout=aiohttp.ClientTimeout(total=120))

    async def upload_image(self, data: bytes, filename: str, *, overwrite: bool = True) -> str:
        """Upload into the input folder; returns the name LoadImage must use (with subfolder when set)."""
        form = aiohttp.FormData()
        form.add_field("image", data, filename=filename, content_type="image/png")
        form.add_field("overwrite", "true" if overwrite else "false")
        form.add_field("type", "input")
        res = await self._request("POST", "/upload/image", data=form, timeout=aiohttp.ClientTimeout(total=120))
        name = res.get("name") if isinstance(res, dict) else None
        subfolder = res.get("subfolder") if isinstance(res, dict) else None
        if not isinstance(name, str) or not name or subfolder is not None and not isinstance(subfolder, str):
            raise BackendError(self.url, f"POST /upload/image answered no file name: {str(res)[:300]!r}")
        return f"{subfolder}/{name}" if subfolder else name

    async def ws_connect(self) -> aiohttp.ClientWebSocketResponse:
        ws_url = self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        try:
            # The handshake is bounded like any request: a server that accepts the connection and never answers (one
            # shutting down, or frozen) would otherwise hold the reconnect loop, and the backend's jobs, for the
            # session's default of five minutes. A deadline, not asyncio.wait_for: on Python 3.11 wait_for returns
            # a handshake that completes as its caller is cancelled and drops the cancellation, and the reconnect
            # loop then outlives Engine.stop.
            async with deadline(self.timeout.total):
                return await self.session.ws_connect(f"{ws_url}/ws?clientId={self.client_id}", heartbeat=20,
                                                     max_msg_size=FILE_ANSWER_BYTES,
                                                     timeout=aiohttp.ClientWSTimeout(ws_close=5))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise BackendError(self.url, f"websocket connect failed: {exc.__class__.__name__} {exc}") from exc
