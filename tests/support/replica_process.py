"""A bridge replica as a process of its own (`python -m bridge` with the jobs API on a free loopback port), for the
tests and benchmarks of several replicas on one database: killed with a real signal, as a crash would be."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bridge.comfyui_process import find_free_port

ROOT = Path(__file__).resolve().parents[2]


def http(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 10) -> tuple[int, Any]:
    """(status, JSON answer) of one request; an HTTP error status is an answer, not an exception."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Replica:
    def __init__(self, database: str, data: Path, comfy: str, *, lease: float, max_queue: int = 5000,
                 log: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.port = find_free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "BRIDGE_DATABASE": database, "BRIDGE_LEASE": str(lease),
                    "BRIDGE_MAX_QUEUE": str(max_queue), "PYTHONPATH": str(ROOT), **(env or {})}
        self.log = log.open("wb") if log is not None else None
        out = self.log if self.log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--comfyui-url", comfy, "--data-dir", str(data), "--adapters", "jobs_api"],
                                     cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.id = ""

    def ready(self, timeout: float = 120) -> None:
        """Wait for /health; keep the replica's id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica on {self.port} exited with {self.proc.returncode}")
            try:
                status, body = http("GET", self.url + "/health", timeout=2)
                if status == 200:
                    self.id = body["replica"]["id"]
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"replica on {self.port} did not come up in {timeout:g} s")

    def cpu(self) -> float:
        """CPU seconds the replica's process has used."""
        import psutil

        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal it by its own pid (SIGKILL after 20 s of SIGTERM)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.log is not None:
            self.log.close()
