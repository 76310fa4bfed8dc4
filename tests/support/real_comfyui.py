"""Real-ComfyUI harness: fixtures that start genuine ComfyUI servers with the Pixart pack and tiny models.

Fixtures (re-exported through tests/support/fixtures.py, so every test module can use them):

- ``comfyui_dir`` (session): the checkout found like install.py does (``COMFYUI_DIR``, then ``~/ComfyUI``);
  skips the test with the reason when there is none. Never fakes one.
- ``tiny_models`` (session): ``{"checkpoint", "controlnet", "root", "extra_model_paths"}`` paths; the file
  names are ``tiny_models.TINY_CHECKPOINT`` / ``TINY_CONTROLNET``. Built in a temp dir, or reused from
  ``$PIXART_TINY_MODELS_DIR`` when set (a persistent cache: saves ~15 s and 330 MB of writes per session).
- ``comfyui`` (session): one running server shared by all tests; a ``RunningComfyUI`` with ``.url``, ``.port``,
  ``.base_dir``, ``.input_dir``, ``.output_dir``, ``.process`` (the ``ComfyUIProcess``), plus small helpers.
  Tests that share it must not kill it; use ``comfyui_factory`` for that.
- ``comfyui_factory`` (function): ``comfyui_factory(**process_kwargs) -> RunningComfyUI`` starts a private
  server (ready on return) that the test may kill or restart; all are stopped at teardown.

Set ``PIXART_COMFYUI_LOG=1`` to copy the server log to the terminal when a server fails to start (the error
message always carries the log tail).
"""
from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from bridge.comfyui_home import find_comfyui
from bridge.comfyui_process import ComfyUIProcess, ComfyUIStartError
from tests.support.tiny_models import TINY_CHECKPOINT, TINY_CONTROLNET, build_tiny_models, write_extra_model_paths

__all__ = ["comfyui_dir", "tiny_models", "comfyui", "comfyui_factory", "RunningComfyUI",
           "TINY_CHECKPOINT", "TINY_CONTROLNET"]

START_TIMEOUT = float(os.environ.get("PIXART_COMFYUI_START_TIMEOUT", "180"))


@dataclass
class RunningComfyUI:
    """A started server. Helpers use only the standard library so tests need nothing beyond pytest."""

    process: ComfyUIProcess

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def base_dir(self) -> Path:
        return self.process.base_dir

    @property
    def input_dir(self) -> Path:
        return self.process.input_dir

    @property
    def output_dir(self) -> Path:
        return self.process.output_dir

    @property
    def ws_url(self) -> str:
        return "ws://" + self.url.split("://", 1)[1] + "/ws"

    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def post_json(self, path: str, body: Any, timeout: float = 30.0) -> tuple[int, Any]:
        """POST JSON; returns ``(status, parsed body or None)`` without raising on 4xx/5xx."""
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw, status = resp.read(), resp.status
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def upload_image(self, data: bytes, name: str = "pixart_test.png", overwrite: bool = True) -> str:
        """``POST /upload/image`` (multipart, built by hand to stay stdlib-only); returns the stored name."""
        boundary = uuid.uuid4().hex
        parts = [
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n",
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\n"
            f"{'true' if overwrite else 'false'}\r\n".encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        req = urllib.request.Request(self.url + "/upload/image", data=b"".join(parts), method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            info = json.loads(resp.read())
        return info["name"] if not info.get("subfolder") else f"{info['subfolder']}/{info['name']}"

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=30) as resp:
            return resp.read()

    def run_prompt(self, prompt: dict, timeout: float = 180.0) -> dict:
        """Queue ``prompt`` and wait on the websocket for ``executing`` with ``node: null`` (ComfyUI's reliable
        end signal), then return its ``/history`` entry. Raises AssertionError with ComfyUI's error body when
        the prompt is rejected or fails."""
        import websocket  # websocket-client; imported here so the module loads without it

        client_id = uuid.uuid4().hex
        ws = websocket.create_connection(f"{self.ws_url}?clientId={client_id}", timeout=timeout)
        try:
            status, body = self.post_json("/prompt", {"prompt": prompt, "client_id": client_id})
            if status != 200 or not isinstance(body, dict) or body.get("node_errors"):
                raise AssertionError(f"POST /prompt rejected ({status}): {json.dumps(body)[:4000]}")
            prompt_id = body["prompt_id"]
            deadline = time.monotonic() + timeout
            while True:
                if time.monotonic() > deadline:
                    raise AssertionError(f"prompt {prompt_id} did not finish within {timeout}s")
                msg = ws.recv()
                if not isinstance(msg, str):
                    continue  # binary preview frames
                event = json.loads(msg)
                data = event.get("data") or {}
                if event.get("type") == "executing" and data.get("node") is None \
                        and data.get("prompt_id") == prompt_id:
                    break
        finally:
            ws.close()
        entry = self.get_json(f"/history/{prompt_id}").get(prompt_id)
        if not entry:
            raise AssertionError(f"no history for prompt {prompt_id}")
        if entry.get("status", {}).get("status_str") != "success":
            raise AssertionError(f"prompt {prompt_id} failed: {json.dumps(entry.get('status'))[:4000]}")
        return entry


def _start(base_dir: Path, comfyui_dir: Path, tiny_models: dict[str, Path], **kwargs: Any) -> RunningComfyUI:
    kwargs.setdefault("extra_model_paths", [tiny_models["extra_model_paths"]])
    proc = ComfyUIProcess(base_dir, comfyui_dir, **kwargs)
    try:
        proc.start_and_wait(timeout=START_TIMEOUT)
    except ComfyUIStartError:
        if os.environ.get("PIXART_COMFYUI_LOG"):
            print(proc.log_tail(20000))
        raise
    return RunningComfyUI(proc)


@pytest.fixture(scope="session")
def comfyui_dir() -> Path:
    found = find_comfyui()
    if found is None:
        pytest.skip("no ComfyUI checkout: set COMFYUI_DIR or run `python3 install.py` (clones v0.3.64 to "
                    "~/ComfyUI)")
    return found


@pytest.fixture(scope="session")
def tiny_models(comfyui_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    cache = os.environ.get("PIXART_TINY_MODELS_DIR")
    root = Path(cache) if cache else tmp_path_factory.mktemp("tiny_models")
    paths = build_tiny_models(root, comfyui_dir)
    yaml_path = write_extra_model_paths(tmp_path_factory.mktemp("model_paths") / "extra_model_paths.yaml", root)
    try:
        yield {**paths, "extra_model_paths": yaml_path}
    finally:
        if not cache:
            # pytest keeps the last three temp roots; 330 MB of weights each is worth freeing now.
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def comfyui(comfyui_dir: Path, tiny_models: dict[str, Path],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningComfyUI]:
    server = _start(tmp_path_factory.mktemp("comfyui"), comfyui_dir, tiny_models)
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture
def comfyui_factory(comfyui_dir: Path, tiny_models: dict[str, Path],
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RunningComfyUI]]:
    started: list[RunningComfyUI] = []

    def factory(**kwargs: Any) -> RunningComfyUI:
        server = _start(tmp_path_factory.mktemp("comfyui_private"), comfyui_dir, tiny_models, **kwargs)
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in started:
            server.process.stop()
