"""Where images live: the results the bridge keeps and the inputs it uploads, as named blobs.

A blob store holds bytes under keys such as `outputs/<job id>/images_0.png` and `inputs/<job id>/image.png` (the
keys jobs record). Two implementations, chosen by the `BRIDGE_STORAGE` setting:

- `local` (the default): files under the data directory, as the bridge has always kept them;
- `s3://bucket/prefix`: any S3-compatible object store (`storage.s3`), which also gives clients presigned URLs so
  results leave the box without passing through the bridge.

Every method is a coroutine so a slow store never blocks the event loop.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp",
                 "gif": "image/gif", "bin": "application/octet-stream"}


class BlobNotFound(KeyError):
    """No blob under that key."""


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    modified: float  # seconds since 1970


class BlobStore(Protocol):
    kind: str  # "local" | "s3"

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write the whole blob; readers see the old blob or the new one, never a part."""

    async def get(self, key: str) -> bytes:
        """The blob's bytes; BlobNotFound when there is none."""

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every blob whose key starts with `prefix` (a job's folder); returns how many."""

    def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Every blob under `prefix`, in no particular order."""

    async def url(self, key: str, expires: float) -> str | None:
        """A URL a client can GET the blob from for `expires` seconds without credentials (presigned), or None
        when the store cannot give one (the local folder: the bridge serves those itself)."""

    async def close(self) -> None:
        """Release connections."""


def content_type(key: str) -> str:
    return CONTENT_TYPES.get(key.rsplit(".", 1)[-1].lower(), "application/octet-stream")


def open_blob_store(spec: str, data_dir, **s3_options) -> BlobStore:  # type: ignore[no-untyped-def]
    """The store a `BRIDGE_STORAGE` value names: "local" (files under `data_dir`) or `s3://bucket/prefix`."""
    spec = (spec or "local").strip()
    if spec == "local":
        from .local import LocalBlobs

        return LocalBlobs(data_dir)
    if spec.startswith("s3://"):
        from .s3 import S3Blobs

        return S3Blobs(spec, **s3_options)
    raise ValueError(f"storage {spec!r}: expected 'local' or 's3://bucket/prefix'")


__all__ = ["BlobStore", "BlobInfo", "BlobNotFound", "CONTENT_TYPES", "content_type", "open_blob_store"]
