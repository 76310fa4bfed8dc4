"""ComfyUI's websocket messages as typed events (protocol: shared/reference/comfyui.md §2).

`parse_text` and `parse_frame` turn one message into one event, or None for messages the engine does not follow
(status broadcasts, other clients' prompts are filtered later by prompt id).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .client import PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA, parse_binary

MAX_STEP = 2 ** 31 - 1
# Text messages past this are not parsed (aiohttp has read them by then): ComfyUI's are a few kB (an `executed` ui dict of file names or some text),
# and json.loads of the 2 GiB a websocket message may carry (its frames' bound) holds the event loop for seconds
# (67 MiB of numbers: 0.43 s) and makes Python objects several times its size. What an ignored `executed`
# said is read from /history, as after a reconnect.
MAX_TEXT_CHARS = 16 * 1024 ** 2


@dataclass(frozen=True)
class Event:
    prompt_id: str


@dataclass(frozen=True)
class ExecutionStart(Event):
    pass


@dataclass(frozen=True)
class ExecutionCached(Event):
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Executing(Event):
    """A node started; node None is ComfyUI's reliable end-of-prompt signal (success, error or interrupt)."""

    node: str | None = None


@dataclass(frozen=True)
class Progress(Event):
    node: str | None = None
    value: float = 0.0
    max: float = 0.0


@dataclass(frozen=True)
class Executed(Event):
    node: str = ""
    output: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecutionError(Event):
    message: str = ""


@dataclass(frozen=True)
class ExecutionInterrupted(Event):
    pass


@dataclass(frozen=True)
class ExecutionSuccess(Event):
    """Every node ran: sent before ComfyUI writes the history entry and says `executing` None."""


@dataclass(frozen=True)
class Preview:
    """An image frame. Type-1 frames name neither node nor prompt: the connection fills them in from the last
    `executing` message, which is the node that sent the frame."""

    prompt_id: str | None
    node: str | None
    image_type: str
    data: bytes


def error_text(data: dict[str, Any]) -> str:
    return (f"{data.get('node_type', '?')} (node {data.get('node_id', '?')}) failed: "
            f"{data.get('exception_type', 'error')}: {str(data.get('exception_message', '')).strip()}")


def _step(value: Any) -> bool:
    # a step count, far below what the job's row stores (64-bit integers) and above any sampler's: JSON also gives
    # Infinity, NaN and 400-digit numbers, which the row cannot hold
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_STEP


def parse_text(text: str) -> Event | None:
    """The event a text message tells, or None; never raises, whatever the text (a message in a shape ComfyUI never
    sends is ignored like one the engine does not follow: raised, it dropped the websocket)."""
    if len(text) > MAX_TEXT_CHARS:
        return None
    try:
        msg = json.loads(text)
        kind, data = msg.get("type"), msg.get("data") or {}
        pid = data.get("prompt_id")
    except (ValueError, AttributeError, RecursionError):
        return None
    if not isinstance(pid, str) or not pid:
        return None
    node = str(data["node"]) if data.get("node") is not None else None
    if kind == "execution_start":
        return ExecutionStart(pid)
    if kind == "execution_cached":
        nodes = data.get("nodes") or []
        return ExecutionCached(pid, tuple(str(n) for n in nodes)) if isinstance(nodes, list) else None
    if kind == "executing":
        return Executing(pid, node)
    if kind == "progress":
        value, maximum = data.get("value"), data.get("max")
        if _step(value) and _step(maximum):
            return Progress(pid, node, float(value), float(maximum))
        return None
    if kind == "executed" and node is not None:
        output = data.get("output") or {}
        # anything else is no output: its result is then read from /history, which says what is wrong with it
        return Executed(pid, node, output) if isinstance(output, dict) else None
    if kind == "execution_error":
        return ExecutionError(pid, error_text(data))
    if kind == "execution_interrupted":
        return ExecutionInterrupted(pid)
    if kind == "execution_success":
        return ExecutionSuccess(pid)
    return None


def parse_frame(frame: bytes) -> Preview | None:
    """The image a binary frame carries, or None; never raises (see parse_text)."""
    try:
        parsed = parse_binary(frame)
    except (ValueError, AttributeError, RecursionError):
        return None
    if parsed.event not in (PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA):
        return None
    # type-4 metadata is JSON of the sender's choosing: only text is an id or an image type
    pid, node, image_type = parsed.prompt_id, parsed.node_id, parsed.image_type
    if pid is not None and not isinstance(pid, str) or node is not None and not isinstance(node, (str, int)):
        return None
    return Preview(pid, str(node) if node is not None else None,
                   image_type if isinstance(image_type, str) and image_type else "image/png", parsed.data)
