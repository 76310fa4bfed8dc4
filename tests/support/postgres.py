"""A real PostgreSQL server for the tests: a fresh cluster in a temporary folder, started from the machine's server
binaries on a free loopback port, stopped by its own pid at the end of the session.

PostgreSQL refuses to run as root; where the tests run as root, the cluster belongs to an unprivileged user (the
`postgres` account Debian's packages create, or `nobody`) and `initdb`/`pg_ctl` run as that user through `runuser`.
Where no server binaries exist the fixtures skip, saying so. Each test that asks for `pg_url` gets a database of its
own on the shared server.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.comfyui_process import find_free_port
from tests.support.pg_bin import find_pg_bin

__all__ = ["postgres_server", "pg_url", "job_database", "PostgresServer", "find_pg_bin", "STORE_FIXTURES"]


@dataclass
class PostgresServer:
    bin: Path
    data: Path
    port: int
    user: str | None  # the account the server runs as, when the tests run as root
    superuser: str = "pixart"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str) -> list[str]:
        return (["runuser", "-u", self.user, "--"] if self.user else []) + list(args)

    def start(self) -> None:
        log = self.data.parent / "server.log"
        subprocess.run(self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "-t", "60",
                                 "-o", f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1 "
                                       f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                                       f"-c max_connections=200",
                                 "start"), check=True, capture_output=True, timeout=90)

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Fast shutdown by the postmaster's own pid; SIGKILL if it has not gone in 15 s."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def create_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _owner() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


def start_postgres(root: Path) -> PostgresServer:
    """initdb + start a cluster under `root` (made readable by the server's account). Raises RuntimeError with the
    reason when that is not possible here."""
    pg_bin = find_pg_bin()
    if pg_bin is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) found: install the postgresql package "
                           "or set PIXART_PG_BIN")
    user = _owner()
    if os.geteuid() == 0 and user is None:
        raise RuntimeError("running as root and no unprivileged account (postgres, nobody) to run PostgreSQL as")
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    data.mkdir()
    if user is not None:
        info = pwd.getpwnam(user)
        for path in (root, data):
            os.chown(path, info.pw_uid, info.pw_gid)
        os.chmod(root, 0o755)
        # the folders above must let that account through
        for parent in root.parents:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
    server = PostgresServer(pg_bin, data, find_free_port(), user)
    init = subprocess.run(server._cmd(str(pg_bin / "initdb"), "-D", str(data), "-U", server.superuser,
                                      "--auth=trust", "-E", "UTF8", "--no-sync", "-N"),
                          capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed: {init.stderr.strip()[-400:]}")
    server.start()
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed")
    root = Path(tempfile.mkdtemp(prefix="pixart-pg-"))
    try:
        server = start_postgres(root)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL cannot run here: {exc}")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A database of this test's own on the session's server."""
    return postgres_server.create_database()


# Tests that use any of these run once per job store: the engine and every dialect behave the same on both.
STORE_FIXTURES = ("bridge_factory", "bridge_settings", "bridge_client", "make_engine")


@pytest.fixture
def job_database(request: pytest.FixtureRequest) -> str:
    """BRIDGE_DATABASE for this test: "" (the data directory's SQLite file), or a fresh PostgreSQL database when
    the test is run for the "postgresql" store (see tests/conftest.py)."""
    kind = getattr(request, "param", "sqlite")
    return request.getfixturevalue("pg_url") if kind == "postgresql" else ""
