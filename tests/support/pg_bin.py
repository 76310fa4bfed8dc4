"""Where this machine's PostgreSQL server binaries are. Standard library only: install.py, which runs before any
package is installed, looks with the same rules as the tests that start a server."""
from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path


def find_pg_bin() -> Path | None:
    """The folder of `initdb` and `pg_ctl`: $PIXART_PG_BIN, then PATH, then Debian's and common install places."""
    explicit = os.environ.get("PIXART_PG_BIN")
    candidates = [explicit] if explicit else []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    candidates += ["/usr/local/pgsql/bin", "/opt/homebrew/bin", "/usr/local/bin"]
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None
