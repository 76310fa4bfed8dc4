"""Blobs in any S3-compatible object store (AWS S3, SeaweedFS, MinIO, R2...), through `obstore`.

Why obstore: its client is the Rust `object_store` crate with native asyncio coroutines, one small wheel and no
other dependency, and it signs presigned GET URLs itself. aiobotocore would add botocore (tens of MB of service
models) and ties its version to aiohttp's; boto3 blocks the event loop.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import S3Store

from . import BlobInfo, BlobNotFound

# Presigned URLs: S3 (SigV4) refuses a lifetime over seven days.
MAX_URL_LIFETIME = 7 * 24 * 3600


def parse_spec(spec: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    parts = urlsplit(spec)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"storage {spec!r}: expected s3://bucket or s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


class S3Blobs:
    kind = "s3"

    def __init__(self, spec: str, *, endpoint: str = "", region: str = "", access_key_id: str = "",
                 secret_access_key: str = "", timeout: float = 30.0) -> None:
        self.bucket, self.prefix = parse_spec(spec)
        config: dict[str, Any] = {}
        if endpoint:
            config["endpoint"] = endpoint
            # SeaweedFS, MinIO and most self-hosted services take path-style requests only
            config["virtual_hosted_style_request"] = False
        config["region"] = region or "us-east-1"
        if access_key_id:
            config["access_key_id"] = access_key_id
            config["secret_access_key"] = secret_access_key
        # Signing with static keys is local arithmetic: done in place. The async call costs 5 to 12 times the CPU
        # (a hop to obstore's runtime and back to the loop; bench_delivery prints both), twice per job answered with
        # links.
        # Other credentials may have to be fetched (instance metadata, web identity): those stay async.
        self._sign_in_place = bool(access_key_id)
        client = {"timeout": dt.timedelta(seconds=timeout), "connect_timeout": dt.timedelta(seconds=min(timeout, 10))}
        if endpoint.startswith("http://"):
            client["allow_http"] = True
        # No store-level prefix: presigned URLs are signed for the full key, so the prefix is added here, once.
        self.store = S3Store(self.bucket, config=config, client_options=client)  # type: ignore[arg-type]
        self.spec = spec

    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
            raise ValueError(f"blob key {key!r} is not a safe relative path")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key(self, path: str) -> str:
        return path[len(self.prefix) + 1:] if self.prefix else path

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        # one PUT: S3 makes the object visible whole or not at all
        await obstore.put_async(self.store, self._path(key), data, attributes={"Content-Type": content_type})

    async def get(self, key: str) -> bytes:
        try:
            result = await obstore.get_async(self.store, self._path(key))
            return bytes(await result.bytes_async())
        except (NotFoundError, FileNotFoundError):
            raise BlobNotFound(key) from None

    async def delete_prefix(self, prefix: str) -> int:
        paths = [info.key async for info in self.list(prefix)]
        if paths:
            await obstore.delete_async(self.store, [self._path(k) for k in paths])
        return len(paths)

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:  # type: ignore[override]
        # object_store lists whole path segments: list the folder holding the prefix, keep the keys that match
        if prefix:
            full = self._path(prefix.rstrip("/")) + ("/" if prefix.endswith("/") else "")
            folder = full.rsplit("/", 1)[0] if "/" in full else ""
        else:
            folder = self.prefix
        stream = obstore.list(self.store, prefix=folder or None, chunk_size=1000)
        async for chunk in stream:
            for meta in chunk:
                key = self._key(meta["path"])
                if key.startswith(prefix):
                    modified = meta["last_modified"]
                    yield BlobInfo(key, int(meta["size"]), modified.timestamp())

    async def read_path(self, path: str, max_bytes: int) -> bytes:
        """Any object of the bucket by its full path (an `s3://bucket/path` input image), at most `max_bytes`."""
        if not path or any(part in ("", ".", "..") for part in path.split("/")):
            raise ValueError(f"{path!r} is not an object key")
        try:
            meta = await obstore.head_async(self.store, path)
            if int(meta["size"]) > max_bytes:
                raise ValueError(f"the object has {meta['size']} bytes; the limit is {max_bytes}")
            result = await obstore.get_async(self.store, path)
            return bytes(await result.bytes_async())
        except (NotFoundError, FileNotFoundError):
            raise BlobNotFound(path) from None

    async def url(self, key: str, expires: float) -> str | None:
        lifetime = dt.timedelta(seconds=max(1, min(int(expires), MAX_URL_LIFETIME)))
        if self._sign_in_place:
            return obstore.sign(self.store, "GET", self._path(key), lifetime)
        return await obstore.sign_async(self.store, "GET", self._path(key), lifetime)

    async def close(self) -> None:
        return None
