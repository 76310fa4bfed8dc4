"""The shared job store: PostgreSQL, for any number of bridge replicas behind a load balancer.

psycopg 3 (async, with its connection pool) is the driver: it is the PostgreSQL project's own Python adapter line,
speaks LISTEN/NOTIFY natively (`AsyncConnection.notifies()`), and ships binary wheels. Replicas coordinate only
through the database: row leases with `FOR UPDATE SKIP LOCKED` claims (so two replicas never take the same job, and
neither waits on the other's locks), an advisory lock around counting and inserting (an exact queue bound across
replicas), and `pg_notify` in the transaction that writes a change (a replica that hears of it reads the committed
row). No queue library is used: the engine's jobs are ComfyUI prompts with their own lifecycle (queued on a
backend, running, reconciled against `/history`), which a generic task queue would hold a second copy of.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from bridge.errors import redact

from .base import JobStore, Listener
from .schema import STEPS, check_version, fill_sql, table_sql

log = logging.getLogger("bridge.store.postgres")

CHANNEL = "pixart_events"
# Advisory lock keys (any 64-bit numbers, the same in every replica).
INSERT_LOCK = 7_220_111_001
MIGRATE_LOCK = 7_220_111_002
_NOW = "extract(epoch from clock_timestamp())::float8"
_PLACEHOLDER = re.compile(r"\?")
# meta's JSON as PostgreSQL reads it. Its JSON refuses two escapes that json.dumps writes: \u0000 (a NUL, a prompt's
# in the request meta echoes) and a lone surrogate (\ud800 with no low half after it: a `json` parameter's string,
# which the jobs API echoes too). One such job made every listing filtered on a meta key a 500, and the migration
# that fills a column from meta fail. Both become \ufffd, which keeps any JSON text valid and changes only string
# contents. An escaped backslash (two characters) is written \u005c first, so that each \u left is an escape: the
# text "\ud800" (a backslash, then "ud800") stays as it is. A surrogate pair is kept: its backslashes become
# chr(1), which no JSON text holds (json.dumps escapes control characters), while the lone halves left are
# replaced, and come back after. json.dumps writes hex digits in lower case; only a text with "\ud" takes the
# regular expressions.
_META_TEXT = r"replace(replace(meta, '\\', '\u005c'), '\u0000', '\ufffd')"
_META_JSON = (r"(CASE WHEN strpos(meta, '\ud') > 0 THEN replace(regexp_replace(regexp_replace(" + _META_TEXT
              + r", '\\(ud[89ab][0-9a-f]{2})\\(ud[c-f][0-9a-f]{2})', chr(1) || '\1' || chr(1) || '\2', 'g'), "
              + r"'\\ud[89a-f][0-9a-f]{2}', '\\ufffd', 'g'), chr(1), '\') ELSE " + _META_TEXT + r" END)::jsonb")
_META_KEY = f"({_META_JSON} ->> ?)"


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # Floats read back exactly, whatever the server or database is set to: the webhook log's compare-and-sets match
    # a due time read before (15 digits, `extra_float_digits = 0`, matched nothing). The pool's connections are in
    # autocommit, so the setting holds for the session (one left in a transaction, the pool would discard).
    await conn.execute("SET extra_float_digits = 3")


class PostgresStore(JobStore):
    shared = True
    kind = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.pool_size = pool_size
        self._pool: AsyncConnectionPool | None = None
        self._conn: contextvars.ContextVar[psycopg.AsyncConnection[Any] | None] = contextvars.ContextVar(
            f"pixart_pg_conn_{id(self)}", default=None)

    async def open(self) -> None:
        if self._pool is not None:
            return
        pool = AsyncConnectionPool(self.url, min_size=1, max_size=self.pool_size, open=False,
                                   kwargs={"autocommit": True}, name="pixart-store", configure=_configure)
        try:
            await pool.open(wait=True, timeout=30)
        except Exception as exc:
            await pool.close()
            raise ConnectionError(f"cannot reach the job database {redact(self.url)}: {exc}") from None
        self._pool = pool
        await self._migrate()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise RuntimeError("the job store is not open")
        return self._pool

    @staticmethod
    def _sql(sql: str) -> str:
        return _PLACEHOLDER.sub("%s", sql.replace("{now}", _NOW).replace("{least}", "LEAST")
                                .replace("{meta_key}", _META_KEY))

    async def _run(self, sql: str, args: Sequence[Any]) -> tuple[list[tuple[Any, ...]], int]:
        conn = self._conn.get()
        if conn is not None:
            cur = await conn.execute(self._sql(sql), tuple(args))  # type: ignore[arg-type]
            return (await cur.fetchall() if cur.description else []), cur.rowcount
        async with self.pool.connection() as conn:
            cur = await conn.execute(self._sql(sql), tuple(args))  # type: ignore[arg-type]
            return (await cur.fetchall() if cur.description else []), cur.rowcount

    async def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return (await self._run(sql, args))[0]

    async def _execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return (await self._run(sql, args))[1]

    @contextlib.asynccontextmanager
    async def _transaction(self, *, exclusive: bool = False) -> AsyncIterator[None]:
        if self._conn.get() is not None:
            yield
            return
        async with self.pool.connection() as conn, conn.transaction():
            token = self._conn.set(conn)
            try:
                if exclusive:
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (INSERT_LOCK,))
                yield
            finally:
                self._conn.reset(token)

    def _meta_is(self, value: str) -> str:
        # jsonb equality with a JSON string: `->>` gave the number 3 as "3" and true as "true"
        return f"({_META_JSON} -> ?) = to_jsonb(?::text)"

    def _claim_sql(self, condition: str) -> str:
        # SKIP LOCKED: a replica claiming at the same moment takes other jobs instead of waiting for these.
        return super()._claim_sql(condition).replace(" LIMIT ?)", " LIMIT ? FOR UPDATE SKIP LOCKED)")

    def _due_sql(self, skipped: int = 0) -> str:
        return super()._due_sql(skipped).replace(" LIMIT ?)", " LIMIT ? FOR UPDATE SKIP LOCKED)")

    def _notify_sql(self, payload: dict[str, Any]) -> tuple[str, Sequence[Any]]:
        return "SELECT pg_notify(?, ?)", (CHANNEL, json.dumps(payload, separators=(",", ":")))

    async def listen(self, listener: Listener, stopping: Callable[[], bool] = lambda: False) -> None:
        """Announcements of every replica (this one's too: the listener tells them apart), on a connection of
        its own; after a lost connection, `{"type": "resync"}` says some may have been missed."""
        delay = 0.2
        first = True
        while not stopping():
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    delay = 0.2
                    if not first:
                        listener({"type": "resync"})
                    first = False
                    async for note in conn.notifies():
                        if stopping():
                            return
                        try:
                            listener(json.loads(note.payload))
                        except Exception:  # noqa: BLE001 - one bad message must not end the subscription
                            log.exception("announcement not handled: %s", note.payload[:200])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database went away: keep trying
                log.warning("listening to %s lost: %s; again in %.1f s", redact(self.url), exc, delay)
                first = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _migrate(self) -> None:
        async with self._transaction():
            conn = self._conn.get()
            assert conn is not None
            # Replicas starting together: one upgrades, the others wait and then find nothing to do.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            found = (await (await conn.execute("SELECT MAX(version) FROM schema_version")).fetchone())[0] or 0
            check_version(found)
            pending = [s for s in STEPS if s.version > found]
            for step in pending:
                for body in step.tables:
                    await conn.execute(table_sql(body, "postgres"))  # type: ignore[arg-type]
                for col in step.columns:
                    await conn.execute(f"ALTER TABLE {col.table} ADD COLUMN IF NOT EXISTS "  # type: ignore[arg-type]
                                       f"{col.declaration('postgres')}")
                for column in step.fills:
                    sql, args = fill_sql(column)
                    await conn.execute(self._sql(sql), args)  # type: ignore[arg-type]
                for index in step.indexes:
                    await conn.execute(index)  # type: ignore[arg-type]
            if pending:
                await conn.execute("DELETE FROM schema_version")
                await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (pending[-1].version,))

    async def schema_version(self) -> int:
        return int((await self._fetch("SELECT MAX(version) FROM schema_version"))[0][0] or 0)
