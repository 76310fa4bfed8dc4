"""Blobs in any S3-compatible object store (AWS S3, SeaweedFS, MinIO, R2...), through `obstore`.

Why obstore: its client is the Rust `object_store` crate with native asyncio coroutines, one small wheel and no
other dependency, and it signs presigned GET URLs itself. aiobotocore would add botocore (tens of MB of service
models) and ties its version to aiohttp's; boto3 blocks the event loop.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import obstore
from obstore.exceptions import NotFoundError, PermissionDeniedError
from obstore.store import S3Store

from . import BlobInfo, BlobNotFound

# Presigned URLs: S3 (SigV4) refuses a lifetime over seven days.
MAX_URL_LIFETIME = 7 * 24 * 3600
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~/-]*")  # what SigV4's URI encoding keeps as is in a path
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_KEY_BYTES = 1024  # S3's longest object key


def parse_spec(spec: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    parts = urlsplit(spec)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"storage {spec!r}: expected s3://bucket or s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


class Presigner:
    """Presigned GET URLs (AWS Signature Version 4, query form) with static keys, signed in Python: obstore's
    `sign` took 40-50 us of the loop thread's CPU per link while the bridge ran jobs (in a tight loop 7.8 us, this
    one 4.2; bench_delivery prints both), twice per job answered with links. Used only where it reproduces obstore's
    own URL exactly (`matching`), so obstore still defines the URL's form: its host, path style and encoding."""

    def __init__(self, base: str, region: str, key_id: str, secret: str) -> None:
        self.base = base  # scheme://host/bucket/ as obstore writes it
        parts = urlsplit(base)
        self.host, self.path0 = parts.netloc, parts.path
        self.region, self.key_id, self._secret = region, key_id, secret
        self._day = ""

    def _for_day(self, day: str) -> None:
        # the signing key, the credential scope and its encoded form change once a day (UTC)
        k = hmac.new(("AWS4" + self._secret).encode(), day.encode(), hashlib.sha256).digest()
        for part in (self.region, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        self._scope = f"{day}/{self.region}/s3/aws4_request"
        self._credential = quote(f"{self.key_id}/{self._scope}", safe="~")
        self._day, self._key = day, k

    def url(self, path: str, seconds: int, now: float | None = None) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
        if stamp[:8] != self._day:
            self._for_day(stamp[:8])
        # the keys the bridge writes need no escapes: quote's per-character pass only where one does
        rel = path if _UNRESERVED.fullmatch(path) else quote(path, safe="/~")
        query = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={self._credential}"
                 f"&X-Amz-Date={stamp}&X-Amz-Expires={seconds}&X-Amz-SignedHeaders=host")
        canonical = f"GET\n{self.path0}{rel}\n{query}\nhost:{self.host}\n\nhost\nUNSIGNED-PAYLOAD"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{self._scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._key, to_sign.encode(), hashlib.sha256).hexdigest()
        return f"{self.base}{rel}?{query}&X-Amz-Signature={signature}"

    @classmethod
    def matching(cls, store: S3Store, region: str, key_id: str, secret: str) -> Presigner | None:
        """A presigner whose URL equals obstore's for a probe key (spaces, non-ASCII, reserved marks) signed at
        the same second, else None (obstore signs)."""
        probe = "pixart-probe/a b~ä+(1)!*'.png"
        theirs = obstore.sign(store, "GET", probe, dt.timedelta(seconds=60))
        at = theirs.find(quote(probe, safe="/~") + "?")
        stamp = dict(parse_qsl(urlsplit(theirs).query)).get("X-Amz-Date", "")
        if at < 0 or not stamp:
            return None
        now = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc).timestamp()
        ours = cls(theirs[:at], region, key_id, secret)
        return ours if ours.url(probe, 60, now) == theirs else None


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
        region = config["region"]
        client = {"timeout": dt.timedelta(seconds=timeout), "connect_timeout": dt.timedelta(seconds=min(timeout, 10))}
        if endpoint.startswith("http://"):
            client["allow_http"] = True
        # No store-level prefix: presigned URLs are signed for the full key, so the prefix is added here, once.
        self.store = S3Store(self.bucket, config=config, client_options=client)  # type: ignore[arg-type]
        self.spec = spec
        self.presigner = (Presigner.matching(self.store, region, access_key_id, secret_access_key)
                          if self._sign_in_place else None)

    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
            raise ValueError(f"blob key {key!r} is not a safe relative path")
        if _CONTROL.search(key):  # obstore refuses them, and the Python signer must not sign what it refuses
            raise ValueError(f"blob key {key!r} holds a control character")
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
        """Any object of the bucket by its full path (an `s3://bucket/path` input image), at most `max_bytes`. The
        path is a client's text: BlobNotFound, or ValueError for a path the store refuses or an object too large."""
        if not path or any(part in ("", ".", "..") for part in path.split("/")):
            raise ValueError(f"{path!r} is not an object key")
        if _CONTROL.search(path) or "\\" in path:
            # S3 answers 400 to a backslash (SeaweedFS), which object_store reports as a generic error: the
            # client's mistake, refused here by name
            raise ValueError(f"{path!r} holds a control character or a backslash")
        if len(path.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise ValueError(f"the object key has more than {MAX_KEY_BYTES} bytes")
        try:
            meta = await obstore.head_async(self.store, path)
            if int(meta["size"]) > max_bytes:
                raise ValueError(f"the object has {meta['size']} bytes; the limit is {max_bytes}")
            if not meta["size"]:
                return b""
            # at most one byte past the limit, whatever the object has become since the HEAD
            result = await obstore.get_async(self.store, path, options={"range": (0, max_bytes + 1)})
            data = bytes(await result.bytes_async())
        except (NotFoundError, FileNotFoundError):
            raise BlobNotFound(path) from None
        except PermissionDeniedError:
            raise ValueError(f"{path!r} cannot be read with the bridge's credentials") from None
        if len(data) > max_bytes:
            raise ValueError(f"the object has more than {max_bytes} bytes; the limit is {max_bytes}")
        return data

    async def url(self, key: str, expires: float) -> str | None:
        seconds = max(1, min(int(expires), MAX_URL_LIFETIME))
        if self.presigner is not None:
            return self.presigner.url(self._path(key), seconds)
        lifetime = dt.timedelta(seconds=seconds)
        if self._sign_in_place:
            return obstore.sign(self.store, "GET", self._path(key), lifetime)
        return await obstore.sign_async(self.store, "GET", self._path(key), lifetime)

    async def close(self) -> None:
        return None
