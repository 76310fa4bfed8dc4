"""ComfyUI's websocket messages as typed events (protocol: shared/reference/comfyui.md §2).

`parse_text` and `parse_frame` turn one message into one event, or None for messages the engine does not follow
(status broadcasts, other clients' prompts are filtered later by prompt id).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .client import PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA, parse_binary


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


def parse_text(text: str) -> Event | None:
    try:
        msg = json.loads(text)
        kind, data = msg.get("type"), msg.get("data") or {}
        pid = data.get("prompt_id")
    except (json.JSONDecodeError, AttributeError, RecursionError):
        return None
    if not isinstance(pid, str) or not pid:
        return None
    node = str(data["node"]) if data.get("node") is not None else None
    if kind == "execution_start":
        return ExecutionStart(pid)
    if kind == "execution_cached":
        return ExecutionCached(pid, tuple(str(n) for n in data.get("nodes") or []))
    if kind == "executing":
        return Executing(pid, node)
    if kind == "progress":
        value, maximum = data.get("value"), data.get("max")
        if isinstance(value, (int, float)) and isinstance(maximum, (int, float)):
            return Progress(pid, node, float(value), float(maximum))
        return None
    if kind == "executed" and node is not None:
        return Executed(pid, node, data.get("output") or {})
    if kind == "execution_error":
        return ExecutionError(pid, error_text(data))
    if kind == "execution_interrupted":
        return ExecutionInterrupted(pid)
    if kind == "execution_success":
        return ExecutionSuccess(pid)
    return None


def parse_frame(frame: bytes) -> Preview | None:
    try:
        parsed = parse_binary(frame)
    except (ValueError, json.JSONDecodeError):
        return None
    if parsed.event not in (PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA):
        return None
    return Preview(parsed.prompt_id, str(parsed.node_id) if parsed.node_id is not None else None,
                   parsed.image_type or "image/png", parsed.data)
