"""What the job store keeps: jobs, webhook deliveries, and where their images live in the blob store.

    outputs/<job_id>/<output>_<index>.<ext>    stored results, in the blob store (bridge.storage)
    inputs/<job_id>/<name>.png                 decoded input images, kept so a re-submitted job can upload them
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
TERMINAL = frozenset({"completed", "failed", "cancelled"})
_SAFE = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass
class Job:
    id: str
    workflow: str
    workflow_version: int
    params: dict[str, Any]
    status: str = "queued"
    progress: float = 0.0
    step: int | None = None
    steps: int | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    backend: str | None = None
    prompt_id: str | None = None
    error: str | None = None
    outputs: dict[str, list[Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    # Internal bookkeeping (persisted, not part of to_dict()):
    inputs: dict[str, str] = field(default_factory=dict)   # image parameter -> stored file (relative path)
    attempts: int = 0                                       # times the job was (re)submitted to a backend
    timeout: float | None = None
    # Manifest outputs the caller asked for (None = all); only their output nodes run.
    wanted: list[str] | None = None
    # Each time the engine submitted the job again on its own: {"prompt_id": the abandoned one, "reason", "at"}.
    reruns: list[dict[str, Any]] = field(default_factory=list)
    # Milliseconds each node took, from ComfyUI's execution messages (0 for a node ComfyUI served from its cache).
    node_ms: dict[str, float] = field(default_factory=dict)
    # Someone asked to cancel the job on a replica that does not run it; whoever runs it (now or after taking it
    # over) cancels it.
    cancel_requested: bool = False

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "workflow": self.workflow, "workflow_version": self.workflow_version,
            "params": self.params, "status": self.status, "progress": round(self.progress, 1),
            "step": self.step, "steps": self.steps, "created_at": self.created_at,
            "started_at": self.started_at, "finished_at": self.finished_at, "backend": self.backend,
            "prompt_id": self.prompt_id, "error": self.error, "outputs": self.outputs, "meta": self.meta,
            "reruns": self.reruns, "node_ms": self.node_ms,
        }


@dataclass
class Delivery:
    """One webhook message to one receiver, and every attempt to deliver it."""

    id: str
    job_id: str
    url: str
    event: str
    payload: str  # the exact body, signed as sent
    status: str = "pending"  # pending | delivered | failed
    attempts: list[dict[str, Any]] = field(default_factory=list)
    created_at: float = 0.0
    next_at: float | None = None
    client: str = ""  # the job's client (the `jobs` row's), for the bound per client; not a column of its own

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "event": self.event, "status": self.status,
                "created_at": self.created_at, "next_attempt_at": self.next_at, "attempts": self.attempts}


JOB_COLUMNS = ("id", "workflow", "workflow_version", "params", "status", "progress", "step", "steps", "created_at",
               "started_at", "finished_at", "backend", "prompt_id", "error", "outputs", "meta", "inputs", "attempts",
               "timeout", "wanted", "reruns", "node_ms", "cancel_requested")
JSON_COLUMNS = frozenset({"params", "outputs", "meta", "inputs", "wanted", "reruns", "node_ms"})
DELIVERY_COLUMNS = ("id", "job_id", "url", "event", "payload", "status", "attempts", "created_at", "next_at")


# What neither database keeps as text: PostgreSQL refuses NUL, and neither driver encodes a lone surrogate. A
# backend's error message (or a receiver's URL) carrying one made the end's write fail on every try: the job never
# ended in the store, and each listing waited for that write. JSON columns are escaped text already.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def storable(value: Any) -> Any:
    """A text column's value as both databases keep it: those characters become U+FFFD."""
    if isinstance(value, str) and ("\x00" in value or not value.isascii()):
        return _UNSTORABLE.sub("\ufffd", value)
    return value


def job_values(job: Job) -> list[Any]:
    """The job's columns in JOB_COLUMNS order, JSON ones as text."""
    return [json.dumps(getattr(job, c)) if c in JSON_COLUMNS else storable(getattr(job, c)) for c in JOB_COLUMNS]


def job_from_row(row: Any) -> Job:
    data = {c: (json.loads(v) if c in JSON_COLUMNS and isinstance(v, str) else v) for c, v in zip(JOB_COLUMNS, row)}
    data["cancel_requested"] = bool(data["cancel_requested"])
    return Job(**data)


def delivery_from_row(row: Any) -> Delivery:
    return Delivery(**{c: (json.loads(v) if c == "attempts" and isinstance(v, str) else v)
                       for c, v in zip(DELIVERY_COLUMNS, row)})


def check_id(job_id: str) -> str:
    """Job ids become directory names: refuse anything that could escape the data directory."""
    if not isinstance(job_id, str) or not _SAFE.fullmatch(job_id) or job_id in (".", "..") or len(job_id) > 128:
        raise ValueError(f"job id {job_id!r} must be 1-128 characters of A-Z a-z 0-9 _ . -")
    return job_id


def output_key(job_id: str, name: str, index: int, ext: str = "png") -> str:
    """Where a job's result image is kept in the blob store (bridge.storage)."""
    return f"{outputs_prefix(job_id)}{_safe_name(name)}_{index}.{ext}"


def outputs_prefix(job_id: str) -> str:
    """The folder of a job's result images in the blob store."""
    return f"outputs/{check_id(job_id)}/"


def input_key(job_id: str, name: str) -> str:
    """Where a job's decoded input image is kept until the job ends (re-submissions upload it again)."""
    return f"inputs/{check_id(job_id)}/{_safe_name(name)}.png"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "x"
