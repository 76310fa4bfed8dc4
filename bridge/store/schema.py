"""The job store's schema, as numbered steps that bring any older database up to date in place (SQLite and
PostgreSQL alike).

The database records the last step applied (`schema_version`). A database made before steps were numbered has jobs
but no version row: every step is written so that applying it to a database that already has part of it changes
nothing (tables and indexes `IF NOT EXISTS`, columns added only when missing), so such a database is upgraded by
applying them all. A database newer than this code is refused rather than misread.
"""
from __future__ import annotations

from dataclasses import dataclass

# Column type per dialect: (sqlite, postgres).
_TYPES = {"text": ("TEXT", "TEXT"), "real": ("REAL", "DOUBLE PRECISION"), "int": ("INTEGER", "BIGINT"),
          "bool": ("INTEGER", "BOOLEAN"), "bytes": ("BLOB", "BYTEA")}


@dataclass(frozen=True)
class Column:
    table: str
    name: str
    kind: str
    default: str | None = None  # SQL literal, the same in both dialects
    not_null: bool = False

    def declaration(self, dialect: str) -> str:
        sql = f"{self.name} {_TYPES[self.kind][0 if dialect == 'sqlite' else 1]}"
        if self.not_null:
            sql += " NOT NULL"
        if self.default is not None:
            sql += f" DEFAULT {self.default}"
        return sql


@dataclass(frozen=True)
class Step:
    version: int
    what: str
    tables: tuple[str, ...] = ()       # CREATE TABLE IF NOT EXISTS bodies, with {text}/{real}/... type names
    columns: tuple[Column, ...] = ()   # added when missing
    indexes: tuple[str, ...] = ()      # CREATE INDEX IF NOT EXISTS statements
    # jobs columns that copy the meta key of the same name: filled from meta in the rows written before them
    fills: tuple[str, ...] = ()


# the jobs columns that copy the meta key of the same name (written at insert, filled by step 5 for older rows)
META_COLUMNS = ("client", "api")

STEPS: tuple[Step, ...] = (
    Step(1, "jobs and the key/value table", tables=(
        """jobs (
            id {text} PRIMARY KEY,
            workflow {text} NOT NULL,
            workflow_version {int} NOT NULL,
            params {text} NOT NULL,
            status {text} NOT NULL,
            progress {real} NOT NULL DEFAULT 0,
            step {int},
            steps {int},
            created_at {real} NOT NULL,
            started_at {real},
            finished_at {real},
            backend {text},
            prompt_id {text},
            error {text},
            outputs {text} NOT NULL DEFAULT '{{}}',
            meta {text} NOT NULL DEFAULT '{{}}',
            inputs {text} NOT NULL DEFAULT '{{}}',
            attempts {int} NOT NULL DEFAULT 0,
            timeout {real}
        )""",
        "kv (key {text} PRIMARY KEY, value {text} NOT NULL)",
    ), indexes=("CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created_at)",
                "CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at)")),
    Step(2, "output selection, re-runs and node timings", columns=(
        Column("jobs", "wanted", "text", "'null'", True),
        Column("jobs", "reruns", "text", "'[]'", True),
        Column("jobs", "node_ms", "text", "'{}'", True),
    )),
    Step(3, "webhook deliveries", tables=(
        """webhook_deliveries (
            id {text} PRIMARY KEY,
            job_id {text} NOT NULL,
            url {text} NOT NULL,
            event {text} NOT NULL,
            payload {text} NOT NULL,
            status {text} NOT NULL,
            attempts {text} NOT NULL DEFAULT '[]',
            created_at {real} NOT NULL,
            next_at {real}
        )""",
    ), indexes=("CREATE INDEX IF NOT EXISTS webhook_due ON webhook_deliveries(status, next_at)",
                "CREATE INDEX IF NOT EXISTS webhook_job ON webhook_deliveries(job_id, created_at)")),
    Step(4, "several replicas: job ownership with leases, per-client counts, cancel requests, shared rate limits, "
            "previews and the replica register", tables=(
        "rate_buckets (client {text} PRIMARY KEY, tokens {real} NOT NULL, at {real} NOT NULL, "
        "allowed {int} NOT NULL DEFAULT 1)",
        "auth_failures (client {text} PRIMARY KEY, failures {int} NOT NULL, since {real} NOT NULL, "
        "locked_until {real} NOT NULL DEFAULT 0)",
        "previews (job_id {text} PRIMARY KEY, kind {text} NOT NULL, data {bytes} NOT NULL, at {real} NOT NULL)",
        "replicas (id {text} PRIMARY KEY, started_at {real} NOT NULL, seen_at {real} NOT NULL)",
    ), columns=(
        Column("jobs", "owner", "text"),
        Column("jobs", "lease_until", "real", "0", True),
        Column("jobs", "client", "text"),
        Column("jobs", "cancel_requested", "bool", "FALSE", True),
    ), indexes=("CREATE INDEX IF NOT EXISTS jobs_lease ON jobs(status, lease_until)",
                "CREATE INDEX IF NOT EXISTS jobs_backend ON jobs(backend, status)",
                "CREATE INDEX IF NOT EXISTS jobs_client ON jobs(client, status)")),
    # A listing of one API's jobs filtered on meta's JSON, which no index serves: every job of every dialect was
    # read (on SQLite, on the event loop). One index without and one with the status the listing may filter on,
    # both ending in its order, so a page is read off the index. `client` (a column since step 4) is filled too, so
    # both columns say what meta says for every job.
    Step(5, "the API that owns a job, as a column listings filter on", columns=(
        Column("jobs", "api", "text"),
    ), indexes=("CREATE INDEX IF NOT EXISTS jobs_api ON jobs(api, created_at, id)",
                "CREATE INDEX IF NOT EXISTS jobs_api_status ON jobs(api, status, created_at, id)"),
        fills=META_COLUMNS),
)

LATEST = STEPS[-1].version


def fill_sql(column: str) -> tuple[str, tuple[str, ...]]:
    """The statement that fills a `Step.fills` column where it is empty and meta has the key, in the stores' shared
    SQL (`JobStore._fetch`), and its arguments."""
    return (f"UPDATE jobs SET {column} = {{meta_key}} WHERE {column} IS NULL AND {{meta_key}} IS NOT NULL",
            (column, column))


def table_sql(body: str, dialect: str) -> str:
    types = {name: t[0 if dialect == "sqlite" else 1] for name, t in _TYPES.items()}
    return "CREATE TABLE IF NOT EXISTS " + body.format(**types)


class SchemaTooNew(RuntimeError):
    pass


def check_version(found: int) -> None:
    if found > LATEST:
        raise SchemaTooNew(f"the job database is at schema version {found}, newer than this bridge knows "
                           f"({LATEST}); upgrade the bridge, or point BRIDGE_DATABASE at another database")
