"""One ComfyUI backend: its HTTP client, its websocket turned into typed events, its health, and its back-off.

The websocket uses the bridge's persisted clientId, so a restarted bridge keeps receiving its prompts' messages.
On every (re)connect the connection reads `/system_stats` and `/object_info`, checks every workflow against the
latter, and only then tells its listener it is up: the listener then reconciles the jobs it had there.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiohttp

from bridge import workflows as wfmod

from .client import BackendError, ComfyClient
from .events import Event, Executing, Preview, parse_frame, parse_text

log = logging.getLogger("bridge.engine.connection")


class Listener(Protocol):
    async def backend_up(self, conn: Connection) -> None: ...

    def backend_down(self, conn: Connection, reason: str) -> None: ...

    def backend_event(self, conn: Connection, event: Event | Preview) -> None: ...


def check_workflows(workflows: Mapping[str, wfmod.Workflow], info: Mapping[str, Any]) -> dict[str, list[str]]:
    return {name: wfmod.check_object_info(wf, info) for name, wf in workflows.items()}


def _devices(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """{name, type} of each device `/system_stats` lists (type is torch's: cuda, cpu, mps, xpu, ...)."""
    return [{"name": str(d.get("name", "")), "type": str(d.get("type", ""))}
            for d in stats.get("devices") or [] if isinstance(d, Mapping)]


class Connection:
    def __init__(self, url: str, client: ComfyClient, workflows: Callable[[], Mapping[str, wfmod.Workflow]], *,
                 reconnect_max_delay: float = 10.0, feature_flags: bool = True) -> None:
        self.url = url
        self.client = client
        self._workflows = workflows
        self.reconnect_max_delay = reconnect_max_delay
        self.feature_flags = feature_flags
        self.healthy = False
        self.version: str | None = None
        self.devices: list[dict[str, Any]] = []
        self.object_info: dict[str, Any] | None = None
        self.workflow_problems: dict[str, list[str]] = {}
        self.last_error: str | None = None
        self.connected_since: float | None = None
        # Job ids dispatched here and not finished: the scheduler's measure of load.
        self.jobs: set[str] = set()
        # What the websocket last said runs here: type-1 preview frames carry no ids.
        self.current_prompt: str | None = None
        self.current_node: str | None = None
        self.first_attempt = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        # held while an object_info update checks the workflows (and by a reload, for every backend): updates land in
        # the order they began, and never with workflows a reload has replaced meanwhile
        self.checks = asyncio.Lock()

    # ------------------------------------------------------------------ state
    def can_run(self, workflow: str) -> bool:
        return self.healthy and self.object_info is not None and not self.workflow_problems.get(workflow)

    def choices(self, ref: str) -> list[str] | None:
        return wfmod.choices_in(self.object_info or {}, ref)

    async def update_object_info(self, info: dict[str, Any]) -> None:
        """This backend's `/object_info`, and every workflow checked against it, in a thread, one update at a time
        (`checks`): a hundred large workflows took 0.15 s of the event loop to check, on every reconnect and model
        refresh (A1111 clients refresh as often as they like)."""
        async with self.checks:
            workflows = self._workflows()
            self.apply(info, workflows, await asyncio.to_thread(check_workflows, workflows, info))

    def apply(self, info: dict[str, Any], workflows: Mapping[str, wfmod.Workflow],
              problems: dict[str, list[str]]) -> None:
        """`info` and the `problems` of `workflows` found in it (`check_workflows`), logged where they changed."""
        self.object_info = info
        before = self.workflow_problems
        self.workflow_problems = problems
        # said once per backend and workflow, when it changes: this runs on every reconnect and model refresh
        for name, found in problems.items():
            if found and found != before.get(name):
                missing = wfmod.missing_node_types(workflows[name], info)
                if missing:
                    # a node pack this backend was set up without: a choice, not a fault (GET /health lists the rest)
                    many = len(missing) > 1
                    log.warning("backend %s: workflow %s cannot run there: node type%s %s %s not installed (install "
                                "the node pack%s)", self.url, name, "s" if many else "",
                                ", ".join(repr(m) for m in missing), "are" if many else "is",
                                "s that provide them" if many else " that provides it")
                else:
                    log.error("backend %s: %s", self.url, "; ".join(found))
            elif before.get(name) and not found:
                log.info("backend %s: workflow %s can run again", self.url, name)

    def state(self) -> dict[str, Any]:
        return {"url": self.url, "healthy": self.healthy, "pending": len(self.jobs), "version": self.version,
                "devices": [dict(d) for d in self.devices], "last_error": self.last_error,
                "connected_since": self.connected_since,
                "workflow_problems": {k: v for k, v in self.workflow_problems.items() if v}}

    # ------------------------------------------------------------------ lifecycle
    def start(self, listener: Listener) -> None:
        self.task = asyncio.create_task(self._run(listener), name=f"comfyui-ws {self.url}")

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self, listener: Listener) -> None:
        delay = 0.25  # after a failed connect
        again = 0.25  # after a greeting that failed on a websocket that opened: its own, so that one failure just
        # after an outage waits a quarter second, not the connect's grown delay
        lost_reason: str | None = None
        while True:
            try:
                ws = await self.client.ws_connect()
            except BackendError as exc:
                self.last_error = str(exc)
                self.first_attempt.set()
                if self.jobs:
                    listener.backend_down(self, lost_reason or f"cannot connect: {exc}")
                lost_reason = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_delay)
                continue
            self._ws = ws
            receiving = False
            try:
                await self._greet(ws)
                self.first_attempt.set()
                await listener.backend_up(self)
                delay = again = 0.25
                receiving = True
                lost_reason = await self._receive(ws, listener)
            except asyncio.CancelledError:
                raise
            except BackendError as exc:
                lost_reason = str(exc)
            except Exception as exc:  # noqa: BLE001 - keep the connection loop alive
                log.exception("backend %s: connection loop error", self.url)
                lost_reason = f"{exc.__class__.__name__}: {exc}"
            finally:
                self.healthy = False
                self._ws = None
                self.current_prompt = self.current_node = None
                with contextlib.suppress(Exception):
                    await ws.close()
            self.last_error = lost_reason
            log.warning("backend %s: %s; reconnecting", self.url, lost_reason)
            if not receiving:
                # Its websocket opens but its greeting or reconciliation fails (an HTTP route answering 500, or
                # garbage): connecting again at once did that over a thousand times a second.
                self.first_attempt.set()
                await asyncio.sleep(again)
                again = min(again * 2, self.reconnect_max_delay)
            # Else reconnect at once: if that fails the backend is gone and its jobs are settled above.

    async def _greet(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        if self.feature_flags:
            # Asks for type-4 binary frames, which name their node and prompt.
            await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        stats = await self.client.system_stats()
        self.version = (stats.get("system") or {}).get("comfyui_version")
        self.devices = _devices(stats)
        await self.update_object_info(await self.client.object_info())
        self.healthy, self.connected_since, self.last_error = True, time.time(), None

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse, listener: Listener) -> str:
        """Hand the backend's messages on until the websocket ends; returns why it ended."""
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                event = parse_text(msg.data)
                if isinstance(event, Executing):
                    self.current_prompt, self.current_node = event.prompt_id, event.node
                if event is not None:
                    listener.backend_event(self, event)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                frame = parse_frame(msg.data)
                if frame is not None:
                    listener.backend_event(self, Preview(frame.prompt_id or self.current_prompt,
                                                         frame.node or self.current_node, frame.image_type,
                                                         frame.data))
            elif msg.type == aiohttp.WSMsgType.ERROR:  # a message over client.FILE_ANSWER_BYTES, among others
                return f"websocket error: {msg.data}"
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                break
        return "websocket closed"
