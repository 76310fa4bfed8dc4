"""What adapters ask about the ComfyUI backends and the service as a whole: live choices of a node's list input,
read-only backend routes, counts and states, the replicas, and how long a refused client should wait. Part of
`JobEngine` (a base class: the methods read the engine's connections, table and store)."""
from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from bridge.errors import BackendUnavailable, InvalidParameter
from bridge.store import STATUSES

from .client import BackendError

if TYPE_CHECKING:
    from . import JobEngine

log = logging.getLogger("bridge.engine")


class Backends:
    async def choices(self: JobEngine, ref: str) -> list[str]:
        """Live list of a combo input, e.g. "CheckpointLoaderSimple.ckpt_name", from a healthy backend."""
        if not isinstance(ref, str) or "." not in ref:
            raise InvalidParameter("choices", "expected '<NodeClass>.<input>'")
        for conn in self.connections.values():
            if conn.healthy and conn.object_info is not None:
                values = conn.choices(ref)
                if values is None:
                    raise InvalidParameter("choices", f"{ref} is not a list input on {conn.url}")
                return values
        raise BackendUnavailable("no healthy ComfyUI backend to ask for " + ref)

    async def backend_json(self: JobEngine, path: str, params: dict[str, str] | None = None, *, missing_ok: bool = False,
                           refused_ok: bool = False) -> Any:
        """GET a read-only JSON route (`/embeddings`, `/view_metadata/loras`, `/system_stats`) from a healthy backend:
        the facts adapters report about the models a backend has, which only the backend can read. With
        `missing_ok` a 404 gives None, with `refused_ok` a 400's JSON body is the answer (see `get_json`)."""
        for conn in self.connections.values():
            if conn.healthy:
                try:
                    return await conn.client.get_json(path, params, missing_ok=missing_ok, refused_ok=refused_ok)
                except BackendError as exc:
                    log.info("%s: %s", conn.url, exc)
        raise BackendUnavailable(f"no healthy ComfyUI backend answers GET {path}")

    async def refresh_object_info(self: JobEngine) -> None:
        """Re-read /object_info (e.g. after models were added) on every healthy backend. Callers that ask while a
        refresh is under way share the next one: each is megabytes that ComfyUI rebuilds and the bridge decodes
        and checks every workflow against (A1111 clients call refresh-checkpoints as often as they like)."""
        await self._refreshes(self._refresh_all)

    async def _refresh_all(self: JobEngine) -> None:
        for conn in self.connections.values():
            if conn.healthy:
                with contextlib.suppress(BackendError):
                    await conn.update_object_info(await conn.client.object_info())

    def stats(self: JobEngine) -> dict[str, Any]:
        table = self._table
        counts = dict(table.counts) if table else {s: 0 for s in STATUSES}
        return {
            "counts": counts,
            "queue_depth": counts["queued"] + counts["running"],
            "max_queue": self.options.max_queue,
            "local_queue": len(self._dispatcher.local) if self._dispatcher else 0,
            "average_duration": table.average_duration() if table else None,
            "completed_timed": table.timed() if table else 0,
            "backends_total": len(self.connections),
            "backends_healthy": sum(1 for c in self.connections.values() if c.healthy),
            "store": self.store.kind,
            "replica": self.replica,
            "takeovers": self._replicas.takeovers if self._replicas is not None else 0,
            "replicas": list(self._replicas.live) if self._replicas is not None else [self.replica],
        }

    def backend_states(self: JobEngine) -> list[dict[str, Any]]:
        return [c.state() for c in self.connections.values()]

    def retry_after(self: JobEngine, active: int) -> float:
        """Seconds a client refused for a full queue should wait: the queue's excess times a job's duration."""
        avg = (self._table.average_duration() if self._table else None) or 10.0
        healthy = max(1, sum(1 for c in self.connections.values() if c.healthy))
        return max(1.0, avg * (active - self.options.max_queue + 1) / healthy)
