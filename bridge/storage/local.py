"""Blobs as files under the data directory (the embedded default): `<data_dir>/<key>`."""
from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from . import BlobInfo, BlobNotFound

# Keys are made by the bridge from checked job ids and names; anything else is refused, so no key can leave the
# folder.
_KEY = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


class LocalBlobs:
    kind = "local"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if not _KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
            raise ValueError(f"blob key {key!r} is not a safe relative path")
        return self.root / key

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        await asyncio.to_thread(self._put, self.path(key), data)

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own per writer: two writers of one key never rename each other's half-written file.
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new one

    async def get(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    async def delete_prefix(self, prefix: str) -> int:
        return await asyncio.to_thread(self._delete_prefix, prefix)

    def _delete_prefix(self, prefix: str) -> int:
        count = 0
        folder = self.path(prefix.rstrip("/")) if prefix.rstrip("/") else self.root
        if folder.is_dir() and prefix.endswith("/"):
            for f in sorted(folder.rglob("*"), reverse=True):
                if f.is_file():
                    f.unlink(missing_ok=True)
                    count += 1
                elif f.is_dir():
                    f.rmdir()
            if folder != self.root:
                folder.rmdir()
            return count
        parent = folder.parent
        if parent.is_dir():
            for f in parent.iterdir():
                if f.is_file() and str(f.relative_to(self.root)).startswith(prefix):
                    f.unlink(missing_ok=True)
                    count += 1
        return count

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:  # type: ignore[override]
        def scan() -> list[BlobInfo]:
            out = []
            for f in self.root.rglob("*"):
                if not f.is_file() or f.name.endswith(".tmp"):
                    continue
                key = f.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    st = f.stat()
                    out.append(BlobInfo(key, st.st_size, st.st_mtime))
            return out

        for info in await asyncio.to_thread(scan):
            yield info

    async def url(self, key: str, expires: float) -> str | None:
        return None

    async def close(self) -> None:
        return None
