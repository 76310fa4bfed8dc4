"""A ComfyUI child the bridge owns when no COMFYUI_URL is set: started before the engine, restarted when it
dies, stopped on shutdown."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from bridge.comfyui_home import find_comfyui, is_comfyui_dir
from bridge.comfyui_process import ComfyUIProcess, ComfyUIStartError, PortInUseError
from bridge.config import Settings

log = logging.getLogger("bridge.managed")


class ManagedComfyUIError(RuntimeError):
    """The managed ComfyUI cannot be set up or did not start; the message says what to change."""


class ManagedComfyUI:
    def __init__(self, settings: Settings, *, check_interval: float = 1.0, max_backoff: float = 30.0) -> None:
        if settings.comfyui_dir is not None and not is_comfyui_dir(settings.comfyui_dir):
            raise ManagedComfyUIError(
                f"COMFYUI_DIR={settings.comfyui_dir} is not a ComfyUI checkout (no main.py and comfy/): fix it, run "
                "`python3 install.py`, or set COMFYUI_URL to use a running ComfyUI"
            )
        extra = settings.comfyui_extra_model_paths
        if extra is not None and not extra.expanduser().is_file():
            # ComfyUI would stop on it with a traceback in its log, after seconds of start-up.
            raise ManagedComfyUIError(f"COMFYUI_EXTRA_MODEL_PATHS={extra} is not a file")
        comfyui_dir = settings.comfyui_dir or find_comfyui()
        if comfyui_dir is None:
            raise ManagedComfyUIError(
                "no ComfyUI checkout found (looked at COMFYUI_DIR and ~/ComfyUI): run `python3 install.py`, set "
                "COMFYUI_DIR / --comfyui-dir, or set COMFYUI_URL to use a running ComfyUI"
            )
        try:
            self.process = ComfyUIProcess(
                settings.data_dir / "comfyui",
                comfyui_dir,
                port=settings.comfyui_port or None,
                cpu=settings.comfyui_cpu,
                extra_model_paths=[settings.comfyui_extra_model_paths] if settings.comfyui_extra_model_paths else (),
                extra_args=settings.comfyui_args,
            )
        except FileNotFoundError as exc:
            raise ManagedComfyUIError(f"COMFYUI_DIR: {exc}") from exc
        self.start_timeout = settings.comfyui_start_timeout
        self.check_interval = check_interval
        self.max_backoff = max_backoff
        self.restarts = 0
        self.last_exit_code: int | None = None
        self._started_at = 0.0
        self._stopping = False
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self.process.url

    def info(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "pid": self.process.pid,
            "alive": self.process.is_alive,
            "restarts": self.restarts,
            "last_exit_code": self.last_exit_code,
            "log": str(self.process.log_path),
            "comfyui_dir": str(self.process.comfyui_dir),
        }

    async def _launch(self) -> None:
        # start() may ask a child Python whether CUDA exists (seconds): keep the event loop free meanwhile.
        await asyncio.to_thread(self.process.start)
        self._started_at = time.monotonic()
        await self.process.wait_ready(timeout=self.start_timeout)

    async def start(self) -> None:
        """Start ComfyUI and wait until it answers, then watch it."""
        self._stopping = False
        log.info("starting managed ComfyUI from %s on %s (log %s)", self.process.comfyui_dir, self.url,
                 self.process.log_path)
        try:
            await self._launch()
        except PortInUseError as exc:
            raise ManagedComfyUIError(f"managed ComfyUI did not start: {exc} (perhaps a ComfyUI an earlier run "
                                      "left behind); stop it, or set COMFYUI_PORT to a free port, or 0 for any") \
                from exc
        except ComfyUIStartError as exc:
            await asyncio.to_thread(self.process.stop)
            raise ManagedComfyUIError(f"managed ComfyUI did not start: {exc}") from exc
        except OSError as exc:
            # Its folders under BRIDGE_DATA_DIR or the node-pack link in COMFYUI_DIR could not be made: a file where
            # a folder goes, no permission, a full disk. Said as a start-up error, not a traceback.
            raise ManagedComfyUIError(f"managed ComfyUI could not be set up: {exc}; check BRIDGE_DATA_DIR and "
                                      "COMFYUI_DIR") from exc
        log.info("managed ComfyUI answers on %s (pid %s)", self.url, self.process.pid)
        self._watchdog = asyncio.create_task(self._watch(), name="managed-comfyui-watchdog")

    async def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping:
            await asyncio.sleep(self.check_interval)
            if self._stopping or self.process.is_alive:
                continue
            self.last_exit_code = self.process.returncode
            uptime = time.monotonic() - self._started_at
            # A child that dies right after starting is crash-looping: wait longer each time.
            backoff = min(self.max_backoff, backoff * 2) if uptime < 30 else 1.0
            log.warning("managed ComfyUI exited with code %s after %.0f s; restarting in %.0f s (log %s)",
                        self.last_exit_code, uptime, backoff, self.process.log_path)
            await asyncio.sleep(backoff)
            if self._stopping:
                return
            self.restarts += 1
            try:
                await asyncio.to_thread(self.process.stop)  # reap it, close the log
                await self._launch()
                log.info("managed ComfyUI is back on %s (pid %s)", self.url, self.process.pid)
            except ComfyUIStartError as exc:
                log.error("managed ComfyUI restart failed: %s", exc)
            except Exception:  # noqa: BLE001 - the watchdog must outlive one bad restart
                log.exception("managed ComfyUI restart failed")

    async def stop(self) -> None:
        self._stopping = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        code = await asyncio.to_thread(self.process.stop)
        log.info("managed ComfyUI stopped (exit code %s)", code)
