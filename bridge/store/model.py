"""Persistence of jobs: one SQLite table under the data directory, and the keys of their images.

Layout::

    <data_dir>/pixart.sqlite3          jobs table (one row per job, JSON columns for params/outputs/meta) and kv
    outputs/<job_id>/...               stored results (<output>_<index>.<ext>), in the blob store (bridge.storage)
    inputs/<job_id>/...                decoded input images, kept so a re-submitted job can re-upload them

The images themselves live in the blob store (the data directory by default, or S3), under these keys.

Writes go straight to SQLite in WAL mode with synchronous=NORMAL: a state change is a few hundred
microseconds, and a crash loses at most the last transactions, never the database.
"""
from __future__ import annotations

import json
import re
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
TERMINAL = frozenset({"completed", "failed", "cancelled"})
_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")


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


_COLUMNS = ("id", "workflow", "workflow_version", "params", "status", "progress", "step", "steps", "created_at",
            "started_at", "finished_at", "backend", "prompt_id", "error", "outputs", "meta", "inputs", "attempts",
            "timeout", "wanted", "reruns", "node_ms")
_JSON_COLUMNS = frozenset({"params", "outputs", "meta", "inputs", "wanted", "reruns", "node_ms"})
# Columns added after the first release: (name, SQL type and default) for ALTER TABLE on older databases.
_ADDED_COLUMNS = (("wanted", "TEXT NOT NULL DEFAULT 'null'"), ("reruns", "TEXT NOT NULL DEFAULT '[]'"),
                  ("node_ms", "TEXT NOT NULL DEFAULT '{}'"))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    workflow_version INTEGER NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    step INTEGER,
    steps INTEGER,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    backend TEXT,
    prompt_id TEXT,
    error TEXT,
    outputs TEXT NOT NULL DEFAULT '{}',
    meta TEXT NOT NULL DEFAULT '{}',
    inputs TEXT NOT NULL DEFAULT '{}',
    attempts INTEGER NOT NULL DEFAULT 0,
    timeout REAL,
    wanted TEXT NOT NULL DEFAULT 'null',
    reruns TEXT NOT NULL DEFAULT '[]',
    node_ms TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created_at);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    url TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL,
    next_at REAL
);
CREATE INDEX IF NOT EXISTS webhook_due ON webhook_deliveries(status, next_at);
CREATE INDEX IF NOT EXISTS webhook_job ON webhook_deliveries(job_id, created_at);
"""


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

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "event": self.event, "status": self.status,
                "created_at": self.created_at, "next_attempt_at": self.next_at, "attempts": self.attempts}


_DELIVERY_COLUMNS = ("id", "job_id", "url", "event", "payload", "status", "attempts", "created_at", "next_at")


def check_id(job_id: str) -> str:
    """Job ids become directory names: refuse anything that could escape the data directory."""
    if not isinstance(job_id, str) or not _SAFE.match(job_id) or job_id in (".", "..") or len(job_id) > 128:
        raise ValueError(f"job id {job_id!r} must be 1-128 characters of A-Z a-z 0-9 _ . -")
    return job_id


class Store:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / "pixart.sqlite3"
        self._db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, decl in _ADDED_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")

    def close(self) -> None:
        self._db.close()

    # ---------------------------------------------------------------- jobs
    def save(self, job: Job) -> None:
        values = [json.dumps(getattr(job, c)) if c in _JSON_COLUMNS else getattr(job, c) for c in _COLUMNS]
        self._db.execute(f"INSERT OR REPLACE INTO jobs ({', '.join(_COLUMNS)}) "
                         f"VALUES ({', '.join('?' for _ in _COLUMNS)})", values)

    def delete(self, job_id: str) -> None:
        self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def delete_deliveries(self, job_id: str) -> None:
        self._db.execute("DELETE FROM webhook_deliveries WHERE job_id = ?", (job_id,))

    def finished_jobs(self, limit: int = 100000) -> list[tuple[str, float]]:
        """(id, finished_at) of finished jobs, oldest first."""
        rows = self._db.execute("SELECT id, COALESCE(finished_at, created_at) AS at FROM jobs "
                                "WHERE status IN ('completed', 'failed', 'cancelled') ORDER BY at LIMIT ?", (limit,))
        return [(r[0], float(r[1])) for r in rows]

    def load(self, job_id: str) -> Job | None:
        row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _row_to_job(row) if row else None

    def unfinished(self) -> list[Job]:
        rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE status IN ('queued', 'running') "
                                f"ORDER BY created_at, rowid").fetchall()
        return [_row_to_job(r) for r in rows]

    def recent(self, limit: int) -> list[Job]:
        rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs ORDER BY created_at DESC, rowid DESC "
                                f"LIMIT ?", (limit,)).fetchall()
        return [_row_to_job(r) for r in rows]

    def query(self, *, status: str | None = None, workflow: str | None = None, limit: int = 100,
              offset: int = 0) -> list[Job]:
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if workflow is not None:
            where.append("workflow = ?")
            args.append(workflow)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?"
        rows = self._db.execute(sql, (*args, limit, offset)).fetchall()
        return [_row_to_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for status, n in self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
            out[status] = n
        return out

    def duration_stats(self) -> tuple[int, float]:
        n, total = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(finished_at - started_at), 0) FROM jobs "
            "WHERE status = 'completed' AND started_at IS NOT NULL AND finished_at IS NOT NULL").fetchone()
        return int(n), float(total)

    # ---------------------------------------------------------------- webhook deliveries
    def save_delivery(self, d: Delivery) -> None:
        values = [json.dumps(d.attempts) if c == "attempts" else getattr(d, c) for c in _DELIVERY_COLUMNS]
        self._db.execute(f"INSERT OR REPLACE INTO webhook_deliveries ({', '.join(_DELIVERY_COLUMNS)}) "
                         f"VALUES ({', '.join('?' for _ in _DELIVERY_COLUMNS)})", values)

    def _deliveries(self, where: str, args: tuple[Any, ...]) -> list[Delivery]:
        rows = self._db.execute(f"SELECT {', '.join(_DELIVERY_COLUMNS)} FROM webhook_deliveries WHERE {where}",
                                args).fetchall()
        return [Delivery(**{c: (json.loads(v) if c == "attempts" else v) for c, v in zip(_DELIVERY_COLUMNS, r)})
                for r in rows]

    def due_deliveries(self, now: float, limit: int) -> list[Delivery]:
        return self._deliveries("status = 'pending' AND next_at <= ? ORDER BY next_at LIMIT ?", (now, limit))

    def next_delivery_at(self) -> float | None:
        row = self._db.execute("SELECT MIN(next_at) FROM webhook_deliveries WHERE status = 'pending'").fetchone()
        return row[0] if row else None

    def deliveries_for(self, job_id: str) -> list[Delivery]:
        return self._deliveries("job_id = ? ORDER BY created_at, rowid", (job_id,))

    def pending_delivery(self, job_id: str, url: str, event: str) -> Delivery | None:
        found = self._deliveries("job_id = ? AND url = ? AND event = ? AND status = 'pending' LIMIT 1",
                                 (job_id, url, event))
        return found[0] if found else None

    # ---------------------------------------------------------------- key/value
    def get_value(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_value(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))

    def client_id(self) -> str:
        """A clientId that survives restarts: ComfyUI routes a prompt's messages to the clientId that
        queued it, so a restarted bridge reconnecting with the same id keeps receiving them."""
        value = self.get_value("client_id")
        if value is None:
            value = "pixart-" + uuid.uuid4().hex
            self.set_value("client_id", value)
        return value



def output_key(job_id: str, name: str, index: int, ext: str = "png") -> str:
    """Where a job's result image is kept in the blob store (bridge.storage)."""
    return f"outputs/{check_id(job_id)}/{_safe_name(name)}_{index}.{ext}"


def input_key(job_id: str, name: str) -> str:
    """Where a job's decoded input image is kept until the job ends (re-submissions upload it again)."""
    return f"inputs/{check_id(job_id)}/{_safe_name(name)}.png"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "x"


def _row_to_job(row: tuple[Any, ...]) -> Job:
    data = {c: (json.loads(v) if c in _JSON_COLUMNS else v) for c, v in zip(_COLUMNS, row)}
    return Job(**data)
