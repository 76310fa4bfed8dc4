"""Fixtures for the bridge's HTTP app over the ComfyUI protocol double.

`bridge_factory(adapters=[...], routes=fn, **settings)` builds the whole app (real JobEngine, real middleware) on
`comfy_double` and returns an aiohttp TestClient; `routes(app)` may add test routes before start-up.
`bridge_client` is the default app with no adapters. `fake_comfyui` is a checkout whose main.py only answers
/system_stats, for the bridge's managed-ComfyUI start-up and shutdown (the real one: `comfyui_dir`).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from bridge.app import create_app
from bridge.config import Settings, load_settings

__all__ = ["bridge_settings", "bridge_factory", "bridge_client", "fake_comfyui"]



@pytest.fixture
def bridge_settings(comfy_double: Any, tmp_path: Any, job_database: str) -> Callable[..., Settings]:
    """Settings on the double; lower-case names are core settings, UPPER_CASE ones adapter variables (`--set`).
    Each bridge made in a test gets its own data folder; on PostgreSQL they share the test's database (a short
    lease, so that a bridge made again takes up the jobs of the one before)."""
    made = [0]

    def make(**fields: Any) -> Settings:
        made[0] += 1
        overrides = {k: str(v) for k, v in fields.items() if k.isupper()}
        store = {"database": job_database, "lease": 2.0} if job_database else {}
        flags = {"data_dir": tmp_path / f"bridge-data-{made[0]}", "comfyui_urls": [comfy_double.url], **store,
                 **{k: v for k, v in fields.items() if not k.isupper()}}
        return load_settings(flags, overrides=overrides, env_file=None)

    return make


@pytest.fixture
def bridge_factory(aiohttp_client: Any, bridge_settings: Callable[..., Settings]) -> Callable[..., Awaitable[Any]]:
    async def make(*, adapters: Iterable[str] = (), routes: Callable[[web.Application], None] | None = None,
                   **fields: Any) -> Any:
        app = create_app(bridge_settings(**fields), adapter_names=list(adapters))
        if routes is not None:
            routes(app)
        return await aiohttp_client(app)

    return make


@pytest_asyncio.fixture
async def bridge_client(bridge_factory: Callable[..., Awaitable[Any]]) -> Any:
    return await bridge_factory()


@pytest.fixture
def fake_comfyui(tmp_path: Path) -> Path:
    """A checkout whose main.py serves /system_stats on --port, as ComfyUI does."""
    root = tmp_path / "ComfyUI"
    (root / "comfy").mkdir(parents=True)
    (root / "main.py").write_text(
        "import json, sys\n"
        "from http.server import BaseHTTPRequestHandler, HTTPServer\n"
        "port = int(sys.argv[sys.argv.index('--port') + 1])\n"
        "class H(BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = json.dumps({'system': {'argv': sys.argv}}).encode()\n"
        "        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
        "        self.wfile.write(body)\n"
        "HTTPServer(('127.0.0.1', port), H).serve_forever()\n")
    return root
