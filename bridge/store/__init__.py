"""The job store: jobs, webhook deliveries, leases and shared limits, behind one interface (`JobStore`) with two
implementations, chosen by `BRIDGE_DATABASE`:

- `sqlite` (the embedded default): `<BRIDGE_DATABASE path or data dir>/pixart.sqlite3`, one bridge process;
- `postgresql://user:pass@host/db`: any number of bridge replicas sharing the database (docs/scaling.md).

The images themselves live in the blob store (`bridge.storage`), under the keys `output_key` and `input_key` give.
"""
from __future__ import annotations

from pathlib import Path

from .base import JobStore, LimitReached
from .model import STATUSES, TERMINAL, Delivery, Job, check_id, input_key, output_key, outputs_prefix
from .schema import LATEST, SchemaTooNew

__all__ = ["JobStore", "LimitReached", "Job", "Delivery", "STATUSES", "TERMINAL", "check_id", "input_key",
           "output_key", "outputs_prefix", "open_store", "LATEST", "SchemaTooNew", "is_postgres"]


def is_postgres(database: str) -> bool:
    return database.startswith(("postgresql://", "postgres://"))


def open_store(database: str, data_dir: Path) -> JobStore:
    """The store `database` names (not yet opened): a PostgreSQL URL, an SQLite file path, or "" for the data
    directory's own SQLite file."""
    if is_postgres(database):
        from .postgres import PostgresStore

        return PostgresStore(database)
    from .sqlite import DB_NAME, SqliteStore

    if not database or database == "sqlite":
        return SqliteStore(Path(data_dir) / DB_NAME)
    path = Path(database.removeprefix("sqlite:///").removeprefix("sqlite://"))
    return SqliteStore(path / DB_NAME if path.is_dir() else path)
