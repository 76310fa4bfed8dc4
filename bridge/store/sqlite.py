"""The embedded job store: one SQLite file under the data directory, for one bridge process.

Writes go straight to SQLite in WAL mode with synchronous=NORMAL: a state change is a few hundred microseconds, and
a crash loses at most the last transactions, never the database. The calls run on the event loop: they are short,
and none of them waits on anything, so a transaction is never interleaved with another coroutine's statements.
"""
from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from .base import JobStore
from .schema import STEPS, check_version, fill_sql, table_sql

DB_NAME = "pixart.sqlite3"
# The database's own clock in unix seconds (the same machine's clock as the bridge's).
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
# meta's JSON as PostgreSQL's filters read it (`postgres._META_JSON`): a NUL or a lone surrogate half is U+FFFD,
# a surrogate pair and an escaped backslash (consumed whole, so that the text "\u0000", a backslash then "u0000",
# stays as it is) are kept. Calling into Python for each row costs several times the JSON read itself: only a
# filter on a value with a U+FFFD, which alone can equal such a string, takes it.
_ESCAPES = re.compile(r"\\\\|\\u0000|\\ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}|\\ud[89a-f][0-9a-f]{2}")
_READ_AS_POSTGRES = "pixart_meta_read"


def _read_as_postgres(text: str | None) -> str | None:
    if text is None or "\\u" not in text:
        return text
    return _ESCAPES.sub(lambda m: m.group() if m.group() == "\\\\" or len(m.group()) == 12 else "\\ufffd", text)


class SqliteStore(JobStore):
    shared = False
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._depth = 0

    async def open(self) -> None:
        if self._db is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.create_function(_READ_AS_POSTGRES, 1, _read_as_postgres, deterministic=True)
        self._db = db
        await self._migrate()

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the job store is not open")
        return self._db

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("{now}", _NOW).replace("{least}", "MIN").replace("{meta_key}", "json_extract(meta, '$.' || ?)")

    def _meta_is(self, value: str) -> str:
        # json_quote on both sides: a string under the key is quoted, the number 3 stays 3 and an object stays its
        # JSON, so only a string equals the quoted text.
        source = f"{_READ_AS_POSTGRES}(meta)" if "\ufffd" in str(value) else "meta"
        return f"json_quote(json_extract({source}, '$.' || ?)) = json_quote(?)"

    async def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.db.execute(self._sql(sql), tuple(args)).fetchall()

    async def _execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self.db.execute(self._sql(sql), tuple(args)).rowcount

    @contextlib.asynccontextmanager
    async def _transaction(self, *, exclusive: bool = False) -> AsyncIterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        # IMMEDIATE takes the write lock at once: counting and inserting are one step even for another process.
        self.db.execute("BEGIN IMMEDIATE" if exclusive else "BEGIN")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self.db.execute("ROLLBACK")
            raise
        self._depth = 0
        self.db.execute("COMMIT")

    async def _migrate(self) -> None:
        db = self.db
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        found = db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
        check_version(found)
        pending = [s for s in STEPS if s.version > found]
        if not pending:
            return
        async with self._transaction(exclusive=True):
            for step in pending:
                for body in step.tables:
                    db.execute(table_sql(body, "sqlite"))
                for col in step.columns:
                    have = {row[1] for row in db.execute(f"PRAGMA table_info({col.table})")}
                    if col.name not in have:
                        db.execute(f"ALTER TABLE {col.table} ADD COLUMN {col.declaration('sqlite')}")
                for column in step.fills:
                    sql, args = fill_sql(column)
                    db.execute(self._sql(sql), args)
                for index in step.indexes:
                    db.execute(index)
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (pending[-1].version,))

    async def schema_version(self) -> int:
        return int((await self._fetch("SELECT MAX(version) FROM schema_version"))[0][0] or 0)
