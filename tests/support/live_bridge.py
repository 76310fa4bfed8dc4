"""A bridge (every adapter) over the ComfyUI protocol double, served on a loopback port from a background thread,
for clients that block: schemathesis, headless Chromium, `requests`. The double runs on a loop of its own, as a
real ComfyUI runs in a process of its own: its work never holds the bridge's loop."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge.app import create_app
from bridge.config import load_settings
from bridge.comfyui_process import find_free_port
from tests.support.double import ComfyDouble


class _LoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@contextmanager
def live_bridge(data_dir: Path, *, adapters: list[str] | None = None, double: Callable[[], ComfyDouble] = ComfyDouble,
                comfyui_url: str | None = None, **fields: Any) -> Iterator[str]:
    """Yield the base URL of a running bridge; everything stops on exit. With `comfyui_url` the bridge uses that
    server (a double in a process of its own, for benchmarks) instead of a double in a thread here."""
    comfy, bridge = _LoopThread("live-double"), _LoopThread("live-bridge")
    d = double() if comfyui_url is None else None
    runner = None
    try:
        if d is not None:
            comfy.run(d.start())
        url = comfyui_url or (d.url if d is not None else "")

        async def start() -> web.AppRunner:
            settings = load_settings({"data_dir": data_dir, "comfyui_urls": [url], **fields}, env_file=None)
            app_runner = web.AppRunner(create_app(settings, adapter_names=adapters))
            await app_runner.setup()
            return app_runner

        runner = bridge.run(start())
        port = find_free_port()
        bridge.run(web.TCPSite(runner, "127.0.0.1", port).start())
        yield f"http://127.0.0.1:{port}"
    finally:
        if runner is not None:
            bridge.run(runner.cleanup())
        if d is not None:
            comfy.run(d.stop())
        bridge.close()
        comfy.close()
