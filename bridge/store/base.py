"""The job store interface and the SQL both implementations share.

One replica on SQLite (the embedded default) and any number of replicas on PostgreSQL run the same engine over
this interface. What makes several replicas one service lives here, in SQL both databases run:

- **Ownership.** Every unfinished job has an `owner` (the replica that dispatches and follows it) and a
  `lease_until` (database clock). Owners renew their leases; a job whose lease ran out, or that its owner released
  (no backend could take it), is claimed by another replica. Every write of a job's state is fenced on its owner, so
  a replica that lost a job (it stalled past its lease) cannot change it, and never posts it to ComfyUI again.
- **Limits across replicas.** The queue bound and the per-client quota are checked in the same transaction that
  inserts the job; rate-limit buckets and failed-authentication counts are rows.
- **Events across replicas** (PostgreSQL's LISTEN/NOTIFY): each state change is announced in the transaction that
  writes it, so a replica that hears of it reads the committed row.

Statements are written once with `?` placeholders, `{now}` for the database's clock in unix seconds and `{least}`
for the smaller of two values; each implementation puts in its own.
"""
from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from .model import (DELIVERY_COLUMNS, JOB_COLUMNS, STATUSES, Delivery, Job, delivery_from_row, job_from_row,
                    job_values, storable)
from .schema import META_COLUMNS  # meta keys that are also indexed columns: a filter on meta's JSON reads every job

# A meta filter's key goes into SQLite's JSON path ('$.' || key), where "a.b" is a nested key, "" and "[0]" are
# errors and a quote is syntax; PostgreSQL reads any key as one label. Keys are the code's own, so only names that
# mean the same to both are taken.
_META_FILTER_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

UNFINISHED = "('queued', 'running')"
FINISHED = "('completed', 'failed', 'cancelled')"
_JOB_LIST = ", ".join(JOB_COLUMNS)
# A listing leaves the parameters out ({}): a job's may be as large as a request body (a `json` parameter, 32 MiB),
# and a listing of 1,000 jobs read them all (100 jobs of 1 MB: 200 MB at its peak, bench/bench_listing.py).
_JOB_LISTED = ", ".join("'{}'" if c == "params" else c for c in JOB_COLUMNS)
# A replica writes its whole copy of a job; a cancel another replica asked (`request_cancel`) after that copy was
# read stays asked: the write would otherwise undo it, and a cancel whose note went unheard was then lost for good.
_JOB_SETS = ", ".join(f"{c} = {c} OR ?" if c == "cancel_requested" else f"{c} = ?" for c in JOB_COLUMNS[1:])
_DELIVERY_LIST = ", ".join(DELIVERY_COLUMNS)
# Announcements: a callback gets each one's JSON object.
Listener = Callable[[dict[str, Any]], None]


T = TypeVar("T")


def _not_in(count: int) -> str:
    # a replica's claims skip the due times it handed to the others (webhooks.SHARED_POLL); none: no clause at all
    return f" AND next_at NOT IN ({', '.join('?' for _ in range(count))})" if count else ""


def _chunks(ids: Sequence[T], size: int = 500) -> Iterator[Sequence[T]]:
    """`ids` in lists of at most `size`, one `IN (...)` each: older SQLite builds take at most 999 parameters a
    statement."""
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


class LimitReached(Exception):
    """The job was not inserted: `which` ("queue" or "client") is full with `active` jobs."""

    def __init__(self, which: str, active: int) -> None:
        super().__init__(which)
        self.which = which
        self.active = active


class JobStore:
    """Jobs, webhook deliveries, leases and shared limits, in one database."""

    #: True where several bridge replicas may share the database (they then coordinate through it).
    shared = False
    #: What /health and the docs call it.
    kind = "?"

    # ------------------------------------------------------------------ primitives (per database)
    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def _execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; returns the rows it changed."""
        raise NotImplementedError

    def _transaction(self, *, exclusive: bool = False) -> contextlib.AbstractAsyncContextManager[None]:
        """A transaction for the statements run inside it; `exclusive` also serialises it against every other
        exclusive one (the queue bound is counted and the job inserted as one step across replicas)."""
        raise NotImplementedError

    def _notify_sql(self, payload: dict[str, Any]) -> tuple[str, Sequence[Any]] | None:
        """The statement that announces `payload` to the other replicas, or None where there are none."""
        return None

    async def listen(self, listener: Listener, stopping: Callable[[], bool] = lambda: False) -> None:
        """Call `listener` for every announcement of other replicas until cancelled or `stopping()` (where there
        are any)."""

    async def publish(self, payload: dict[str, Any]) -> None:
        notify = self._notify_sql(payload)
        if notify is not None:
            await self._execute(*notify)

    async def now(self) -> float:
        return float((await self._fetch("SELECT {now}"))[0][0])

    # ------------------------------------------------------------------ jobs
    async def insert(self, job: Job, *, owner: str | None, lease: float, max_active: int = 0,
                     max_per_client: int = 0, notify: dict[str, Any] | None = None) -> None:
        """Add an accepted job, owned by `owner` for `lease` seconds (None: free for any replica to claim).
        Raises LimitReached when the queue (queued + running jobs) or the job's client is at its bound."""
        meta = job.meta if isinstance(job.meta, dict) else {}
        copied = {key: storable(value) if isinstance(value := meta.get(key), str) else None for key in META_COLUMNS}
        client = copied["client"]
        async with self._transaction(exclusive=bool(max_active or max_per_client)):
            if max_active:
                active = (await self._fetch(f"SELECT COUNT(*) FROM jobs WHERE status IN {UNFINISHED}"))[0][0]
                if active >= max_active:
                    raise LimitReached("queue", int(active))
            if max_per_client and client is not None:
                mine = await self.active_for(client)
                if mine >= max_per_client:
                    raise LimitReached("client", mine)
            await self._execute(
                f"INSERT INTO jobs ({_JOB_LIST}, owner, lease_until, {', '.join(META_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in JOB_COLUMNS)}, ?, {{now}} + ?{', ?' * len(META_COLUMNS)})",
                (*job_values(job), owner, lease if owner else 0.0, *copied.values()))
            await self._announce(notify)

    async def save(self, job: Job, *, owner: str | None, lease: float = 0.0,
                   notify: dict[str, Any] | None = None, deliveries: Sequence[Delivery] = ()) -> bool:
        """Write the job's state and renew its lease, only while `owner` owns it (None: whoever owns it), and add
        `deliveries` (the webhook messages about this state) in the same transaction: both or neither. With the
        messages of its end, the job's progress messages still pending are dropped. False when the job is gone or
        another replica took it over."""
        where = "id = ?" + (" AND owner = ?" if owner is not None else "")
        args = [*job_values(job)[1:], lease, job.id] + ([owner] if owner is not None else [])
        async with self._transaction():
            changed = await self._execute(f"UPDATE jobs SET {_JOB_SETS}, lease_until = {{now}} + ? WHERE {where}",
                                          args)
            if changed:
                if job.done:  # with or without messages of its own (a receiver may want progress only)
                    # Progress is lossy: once the end's messages are in, a progress message still waiting is stale,
                    # and one to a slow receiver would otherwise be retried for BRIDGE_WEBHOOK_RETRY_FOR.
                    await self._execute("DELETE FROM webhook_deliveries WHERE job_id = ? AND event = 'job.progress' "
                                        "AND status = 'pending'", (job.id,))
                for d in deliveries:
                    await self.save_delivery(d)
                await self._announce(notify)
        return bool(changed)

    async def _announce(self, payload: dict[str, Any] | None) -> None:
        if payload is not None:
            await self.publish(payload)

    async def load(self, job_id: str) -> Job | None:
        rows = await self._fetch(f"SELECT {_JOB_LIST} FROM jobs WHERE id = ?", (job_id,))
        return job_from_row(rows[0]) if rows else None

    async def owner_of(self, job_id: str) -> tuple[str | None, float] | None:
        """(owner, seconds left of its lease) of an unfinished job; None when it is finished or unknown."""
        rows = await self._fetch(f"SELECT owner, lease_until - {{now}} FROM jobs WHERE id = ? AND status IN "
                                 f"{UNFINISHED}", (job_id,))
        return (rows[0][0], float(rows[0][1])) if rows else None

    async def query(self, *, status: str | None = None, workflow: str | None = None, limit: int = 100,
                    offset: int = 0, meta: Mapping[str, str] | None = None) -> list[Job]:
        """Jobs newest first, without their params (`load` reads a whole job); `meta`: only those whose meta has
        these text values (one API's jobs, in the database: the jobs of other APIs were read page by page to find
        them). A key of META_COLUMNS is looked up in its indexed column; any other is read from meta in the rows
        those leave. A number, boolean, object or array under a key is no text: a filter never matches it (both
        databases alike). Keys are names (ValueError otherwise)."""
        where, args = [], []
        # Values are compared as the stores keep text (`storable`): a NUL failed PostgreSQL's whole statement and a
        # lone surrogate the driver's encoding of it, on either database.
        if status is not None:
            where.append("status = ?")
            args.append(storable(status))
        if workflow is not None:
            where.append("workflow = ?")
            args.append(storable(workflow))
        for key, value in (meta or {}).items():
            if not isinstance(key, str) or not _META_FILTER_KEY.fullmatch(key):
                raise ValueError(f"meta filter key {key!r} must be a name (A-Z a-z 0-9 _)")
            value = storable(value)
            if key in META_COLUMNS:
                where.append(f"{key} = ?")
                args.append(value)
            else:
                where.append(self._meta_is(value))
                args += [key, value]
        sql = f"SELECT {_JOB_LISTED} FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        return [job_from_row(r) for r in await self._fetch(sql, (*args, limit, offset))]

    def _meta_is(self, value: str) -> str:
        """The condition "meta's key (the first argument) holds the text `value` (the second)", in this
        database's SQL. Only a JSON string is text: PostgreSQL's `->>` gave "3" for the number 3 and "true" for
        true, SQLite's json_extract an object's JSON text, so the two answered one filter differently."""
        raise NotImplementedError

    async def unfinished(self) -> list[Job]:
        rows = await self._fetch(f"SELECT {_JOB_LIST} FROM jobs WHERE status IN {UNFINISHED} ORDER BY created_at, id")
        return [job_from_row(r) for r in rows]

    async def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for status, n in await self._fetch("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
            out[status] = int(n)
        return out

    async def duration_stats(self) -> tuple[int, float]:
        n, total = (await self._fetch(
            "SELECT COUNT(*), COALESCE(SUM(finished_at - started_at), 0) FROM jobs WHERE status = 'completed' "
            "AND started_at IS NOT NULL AND finished_at IS NOT NULL"))[0]
        return int(n), float(total)

    async def active_for(self, client: str) -> int:
        return int((await self._fetch(f"SELECT COUNT(*) FROM jobs WHERE client = ? AND status IN {UNFINISHED}",
                                      (client,)))[0][0])

    async def backend_loads(self) -> dict[str, int]:
        """Unfinished jobs per ComfyUI backend, whichever replica sent them."""
        rows = await self._fetch(f"SELECT backend, COUNT(*) FROM jobs WHERE status IN {UNFINISHED} AND backend IS NOT "
                                 f"NULL GROUP BY backend")
        return {str(b): int(n) for b, n in rows}

    async def finished_jobs(self, limit: int = 100000) -> list[tuple[str, float]]:
        """(id, finished_at) of finished jobs, oldest first."""
        rows = await self._fetch(f"SELECT id, COALESCE(finished_at, created_at) AS at FROM jobs WHERE status IN "
                                 f"{FINISHED} ORDER BY at LIMIT ?", (limit,))
        return [(r[0], float(r[1])) for r in rows]

    async def recent(self, limit: int) -> list[Job]:
        rows = await self._fetch(f"SELECT {_JOB_LIST} FROM jobs ORDER BY created_at DESC, id DESC LIMIT ?", (limit,))
        return [job_from_row(r) for r in rows]

    async def delete(self, job_id: str) -> None:
        """The job, its webhook log and its preview."""
        async with self._transaction():
            for table, column in (("jobs", "id"), ("webhook_deliveries", "job_id"), ("previews", "job_id")):
                await self._execute(f"DELETE FROM {table} WHERE {column} = ?", (job_id,))

    # ------------------------------------------------------------------ ownership
    async def renew(self, owner: str, lease: float, job_ids: Sequence[str]) -> set[str]:
        """Extend the lease of the jobs `owner` follows (`job_ids`) while it still holds them; returns the ids it
        still holds (any other was taken over). A job the owner holds but no longer follows is not renewed: its
        lease runs out and some replica takes it up. Also marks the replica as alive."""
        held: set[str] = set()
        for chunk in _chunks(list(job_ids)):
            rows = await self._fetch(f"UPDATE jobs SET lease_until = {{now}} + ? WHERE owner = ? AND status IN "
                                     f"{UNFINISHED} AND id IN ({', '.join('?' for _ in chunk)}) RETURNING id",
                                     (lease, owner, *chunk))
            held.update(r[0] for r in rows)
        await self._execute("UPDATE replicas SET seen_at = {now} WHERE id = ?", (owner,))
        return held

    async def claim(self, owner: str, lease: float, limit: int, *, every: bool = False, job_id: str | None = None,
                    workflows: Sequence[str] | None = None, backends: Sequence[str] | None = None) -> list[Job]:
        """Take unfinished jobs nobody holds (released, or their owner's lease ran out), oldest first. `every`
        takes every unfinished job (one replica starting on its own database); `job_id` only that one. With
        `workflows`/`backends`, only jobs this replica can carry on: dispatched ones on one of `backends`, and
        ones never dispatched of one of `workflows`."""
        conditions = ["1 = 1" if every else "(owner IS NULL OR lease_until < {now})"]
        args: list[Any] = [owner, lease]
        if job_id is not None:
            conditions.append("id = ?")
            args.append(job_id)
        if workflows is not None or backends is not None:
            either = []
            if backends:
                either.append(f"(prompt_id IS NOT NULL AND backend IN ({', '.join('?' for _ in backends)}))")
                args += list(backends)
            if workflows:
                either.append(f"(prompt_id IS NULL AND workflow IN ({', '.join('?' for _ in workflows)}))")
                args += list(workflows)
            conditions.append("(" + " OR ".join(either) + ")" if either else "1 = 0")
        rows = await self._fetch(self._claim_sql(" AND ".join(conditions)), [*args, limit])
        jobs = [job_from_row(r) for r in rows]
        jobs.sort(key=lambda j: (j.created_at, j.id))
        return jobs

    def _claim_sql(self, condition: str) -> str:
        return (f"UPDATE jobs SET owner = ?, lease_until = {{now}} + ? WHERE id IN (SELECT id FROM jobs WHERE "
                f"status IN {UNFINISHED} AND {condition} ORDER BY created_at, id LIMIT ?) RETURNING {_JOB_LIST}")

    async def release(self, job: Job, owner: str, *, notify: dict[str, Any] | None = None) -> bool:
        """Give a job back (saved as it is) for any replica to claim; False when `owner` no longer held it."""
        async with self._transaction():
            changed = await self._execute(f"UPDATE jobs SET {_JOB_SETS}, owner = NULL, lease_until = 0 WHERE id = ? AND "
                                          f"owner = ?", (*job_values(job)[1:], job.id, owner))
            if changed:
                await self._announce(notify)
        return bool(changed)

    async def request_cancel(self, job_id: str, notify: dict[str, Any] | None = None) -> bool:
        """Mark an unfinished job to be cancelled by whoever runs it; False when it has finished (or is unknown)."""
        async with self._transaction():
            changed = await self._execute(f"UPDATE jobs SET cancel_requested = TRUE WHERE id = ? AND status IN "
                                          f"{UNFINISHED}", (job_id,))
            if changed:
                await self._announce(notify)
        return bool(changed)

    async def register_replica(self, replica: str) -> None:
        await self._execute("INSERT INTO replicas (id, started_at, seen_at) VALUES (?, {now}, {now})", (replica,))

    async def forget_replica(self, replica: str) -> None:
        await self._execute("DELETE FROM replicas WHERE id = ?", (replica,))

    async def replicas(self, within: float) -> list[dict[str, Any]]:
        """Replicas seen in the last `within` seconds: id, started_at, seconds since last seen."""
        rows = await self._fetch("SELECT id, started_at, {now} - seen_at FROM replicas WHERE seen_at > {now} - ? "
                                 "ORDER BY started_at", (within,))
        return [{"id": r[0], "started_at": float(r[1]), "seen_ago": round(float(r[2]), 3)} for r in rows]

    # ------------------------------------------------------------------ webhook deliveries
    async def save_delivery(self, d: Delivery) -> None:
        values = [json.dumps(d.attempts) if c == "attempts" else storable(getattr(d, c)) for c in DELIVERY_COLUMNS]
        updates = ", ".join(f"{c} = excluded.{c}" for c in DELIVERY_COLUMNS[1:])
        await self._execute(f"INSERT INTO webhook_deliveries ({_DELIVERY_LIST}) VALUES "
                            f"({', '.join('?' for _ in DELIVERY_COLUMNS)}) ON CONFLICT (id) DO UPDATE SET {updates}",
                            values)

    async def _deliveries(self, where: str, args: Sequence[Any]) -> list[Delivery]:
        rows = await self._fetch(f"SELECT {_DELIVERY_LIST} FROM webhook_deliveries WHERE {where}", args)
        return [delivery_from_row(r) for r in rows]

    async def claim_deliveries(self, now: float, limit: int, hold: float, skip: Sequence[float] = ()) -> list[Delivery]:
        """Due deliveries, each kept from every other replica for `hold` seconds (its next_at moves on), so a
        message is sent by one replica at a time; one that dies while sending leaves it due again after `hold`.
        Those due at a time in `skip` are left to the other replicas (the few due times this one gave some back)."""
        claimed = []
        for row in await self._fetch(self._due_sql(len(skip)), (now + hold, now, *skip, limit)):
            d = delivery_from_row(row)
            d.client = row[-1] or ""  # the job's client (none: a job without one, or deleted meanwhile)
            claimed.append(d)
        return claimed

    async def reclaim_deliveries(self, held: Sequence[tuple[str, float]], until: float) -> int:
        """Hold messages this replica holds, each ``(id, the time its hold runs out)``, again until ``until``; returns
        how many it still held: one whose hold ran out and another replica claimed meanwhile (its ``next_at`` moved
        on), or no longer pending, is left as it is. A statement for each hold (a round's claims share one) and
        `_chunks`: a backlog for a hanging receiver is given back every few seconds, one UPDATE per message was
        thousands of writes."""
        by_hold: dict[float, list[str]] = {}
        for delivery_id, held_until in held:
            by_hold.setdefault(held_until, []).append(delivery_id)
        taken = 0
        for held_until, ids in by_hold.items():
            for chunk in _chunks(ids):
                taken += await self._execute(
                    f"UPDATE webhook_deliveries SET next_at = ? WHERE status = 'pending' AND next_at = ? AND id IN "
                    f"({', '.join('?' for _ in chunk)})", (until, held_until, *chunk))
        return taken

    async def settle_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Record attempts' outcomes (status, next attempt, attempts) in one transaction. Only rows still there are
        changed: a job deleted meanwhile keeps no webhook log."""
        async with self._transaction():
            for d in deliveries:
                await self._execute("UPDATE webhook_deliveries SET status = ?, next_at = ?, attempts = ? WHERE id = ?",
                                    (d.status, d.next_at, json.dumps(d.attempts), d.id))

    def _due_sql(self, skipped: int = 0) -> str:
        return (f"UPDATE webhook_deliveries SET next_at = ? WHERE id IN (SELECT id FROM webhook_deliveries WHERE "
                f"status = 'pending' AND next_at <= ?{_not_in(skipped)} ORDER BY next_at LIMIT ?) RETURNING "
                f"{_DELIVERY_LIST}, (SELECT client FROM jobs WHERE jobs.id = webhook_deliveries.job_id)")

    async def next_delivery_at(self, skip: Sequence[float] = ()) -> float | None:
        """The earliest time a pending message is due, but for those due at a time in `skip` (see
        `claim_deliveries`)."""
        row = (await self._fetch(f"SELECT MIN(next_at) FROM webhook_deliveries WHERE status = 'pending'"
                                 f"{_not_in(len(skip))}", skip))[0]
        return float(row[0]) if row[0] is not None else None

    async def advance_deliveries(self, due: Collection[float], to: float) -> int:
        """Pending messages due at a time in `due`, later than `to`, due at `to` instead; returns how many. The due
        times a bridge of its own (not a replica: a claim held until one of those times would move too) gave
        passed-over messages back with, while their receiver did not answer: once it answers they need not wait out
        the delay (up to a claim's hold)."""
        moved = 0
        for chunk in _chunks(sorted(due)):
            moved += await self._execute(
                f"UPDATE webhook_deliveries SET next_at = ? WHERE status = 'pending' AND next_at > ? AND next_at IN "
                f"({', '.join('?' for _ in chunk)})", (to, to, *chunk))
        return moved

    async def deliveries_for(self, job_id: str) -> list[Delivery]:
        return await self._deliveries("job_id = ? ORDER BY created_at, id", (job_id,))

    async def replace_payload(self, d: Delivery, payload: str, now: float) -> bool:
        """A newer body for a message still waiting as it was read (`d`: pending, due at ``d.next_at``) and due by
        `now`; False when it is claimed (a claim moves its time on: another replica may be sending it, before the
        read or since), settled, or waits for a retry."""
        return await self._execute("UPDATE webhook_deliveries SET payload = ? WHERE id = ? AND status = 'pending' "
                                   "AND next_at = ? AND next_at <= ?", (storable(payload), d.id, d.next_at, now)) == 1

    async def pending_delivery(self, job_id: str, url: str, event: str) -> Delivery | None:
        """The newest message of this kind to this receiver still to be delivered."""
        found = await self._deliveries("job_id = ? AND url = ? AND event = ? AND status = 'pending' "
                                       "ORDER BY created_at DESC, id DESC LIMIT 1", (job_id, url, event))
        return found[0] if found else None

    # ------------------------------------------------------------------ key/value
    async def get_value(self, key: str) -> str | None:
        rows = await self._fetch("SELECT value FROM kv WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    async def set_value(self, key: str, value: str, *, only_new: bool = False) -> str:
        """Set `key`; with `only_new` keep a value already there (several replicas making a secret at once agree
        on the first). Returns the value now stored."""
        action = "NOTHING" if only_new else "UPDATE SET value = excluded.value"
        await self._execute(f"INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO {action}", (key, value))
        return await self.get_value(key) or value

    # ------------------------------------------------------------------ shared limits
    async def take_token(self, client: str, rate: float, burst: float) -> float:
        """A token from the client's bucket (`rate` a second, at most `burst` saved up): 0.0 when allowed, else
        the seconds until one is. One statement, so the replicas sharing the database share the bucket."""
        refilled = "{least}(?, rate_buckets.tokens + ({now} - rate_buckets.at) * ?)"
        rows = await self._fetch(
            f"INSERT INTO rate_buckets (client, tokens, at, allowed) VALUES (?, ? - 1, {{now}}, 1) "
            f"ON CONFLICT (client) DO UPDATE SET "
            f"tokens = CASE WHEN {refilled} >= 1 THEN {refilled} - 1 ELSE {refilled} END, "
            f"allowed = CASE WHEN {refilled} >= 1 THEN 1 ELSE 0 END, at = {{now}} RETURNING tokens, allowed",
            (client, burst, *(burst, rate) * 4))
        tokens, allowed = float(rows[0][0]), int(rows[0][1])
        return 0.0 if allowed else (1.0 - tokens) / rate

    async def auth_locked_for(self, client: str) -> float:
        rows = await self._fetch("SELECT locked_until - {now} FROM auth_failures WHERE client = ?", (client,))
        return max(0.0, float(rows[0][0])) if rows else 0.0

    async def auth_failed(self, client: str, max_failures: int, window: float, lockout: float) -> bool:
        """Count a failed authentication from `client`; True when it starts a lock-out of `lockout` seconds."""
        async with self._transaction(exclusive=True):
            rows = await self._fetch("SELECT failures, since FROM auth_failures WHERE client = ?", (client,))
            now = await self.now()
            failures, since = (int(rows[0][0]), float(rows[0][1])) if rows else (0, now)
            if now - since >= window:
                failures, since = 0, now
            failures += 1
            locked = failures >= max_failures
            await self._execute(
                "INSERT INTO auth_failures (client, failures, since, locked_until) VALUES (?, ?, ?, ?) ON CONFLICT "
                "(client) DO UPDATE SET failures = excluded.failures, since = excluded.since, locked_until = "
                "excluded.locked_until", (client, 0 if locked else failures, now if locked else since,
                                          now + lockout if locked else 0.0))
        return locked

    # ------------------------------------------------------------------ previews
    async def save_preview(self, job_id: str, kind: str, data: bytes, *, notify: dict[str, Any] | None = None) -> None:
        async with self._transaction():
            await self._execute("INSERT INTO previews (job_id, kind, data, at) VALUES (?, ?, ?, {now}) ON CONFLICT "
                                "(job_id) DO UPDATE SET kind = excluded.kind, data = excluded.data, at = excluded.at",
                                (job_id, kind, data))
            await self._announce(notify)

    async def load_preview(self, job_id: str) -> tuple[str, bytes] | None:
        rows = await self._fetch("SELECT kind, data FROM previews WHERE job_id = ?", (job_id,))
        return (rows[0][0], bytes(rows[0][1])) if rows else None

    # ------------------------------------------------------------------ helpers
    async def client_id(self) -> str:
        """A ComfyUI clientId that survives restarts of a bridge on its own database: ComfyUI routes a prompt's
        messages to the clientId that queued it, so a restarted bridge keeps receiving them."""
        import uuid

        return await self.set_value("client_id", "pixart-" + uuid.uuid4().hex, only_new=True)

    async def webhook_secret(self) -> str:
        """The secret webhooks are signed with when no setting gives one: made by the first bridge on this
        database and kept, so receivers keep verifying across restarts and replicas."""
        from bridge.webhooks import new_secret

        return await self.set_value("webhook_secret", new_secret(), only_new=True)


__all__ = ["JobStore", "LimitReached", "Listener", "UNFINISHED", "FINISHED", "META_COLUMNS"]
