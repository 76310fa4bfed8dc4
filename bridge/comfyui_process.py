"""A ComfyUI server run as a managed child process.

Used by the test harness (sync fixtures) and by the bridge (async; it restarts ComfyUI when it dies), so the
lifecycle methods are plain synchronous calls that return quickly, and readiness can be awaited either way:
``wait_ready()`` is a coroutine, ``wait_ready_sync()`` blocks.

Everything ComfyUI writes goes under ``base_dir`` (input/, output/, temp/, user/, comfyui.log, comfyui.db) so a
run never writes into the ComfyUI checkout apart from the node-pack link in its ``custom_nodes/``.

Standard library only (no aiohttp): readiness polls run urllib in a worker thread.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import IO, Sequence

from bridge.comfyui_home import ensure_node_pack_linked, find_comfyui

log = logging.getLogger("bridge.comfyui_process")
_LIVE: "weakref.WeakSet[ComfyUIProcess]" = weakref.WeakSet()
_CUDA_CACHE: dict[str, bool] = {}


class ComfyUIStartError(RuntimeError):
    """ComfyUI exited or never answered during start-up; the message ends with the tail of its log."""


# Flags `ComfyUIProcess.command` sets that the bridge relies on (why, for the message refusing them in COMFYUI_ARGS):
# the same flag given again comes later and wins, so the bridge would poll a port nobody listens on, or look for
# results in a folder ComfyUI no longer writes to.
BRIDGE_FLAGS = {
    "--port": "set COMFYUI_PORT instead",
    "--output-directory": "the bridge reads and removes results in its data directory's comfyui/output",
    "--input-directory": "the bridge removes the images it uploaded from its data directory's comfyui/input",
}


class PortInUseError(ComfyUIStartError):
    """Another program listens on the port ComfyUI was to listen on."""


def _started(pid: int) -> str | None:
    """When process ``pid`` started (Linux's /proc, clock ticks since boot): what tells it from a later process given
    the same pid. None when there is none (or it has ended: a zombie nobody reaped), or no /proc to ask."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after the name, which may hold spaces and parentheses
    return None if fields[0] == "Z" else fields[19]


def find_free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free right now (another process may still take it before ComfyUI binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def bind_error(host: str, port: int) -> OSError | None:
    """Why a server could not listen on (host, port) now, or None: a name that does not resolve, a port another
    program listens on, an address not of this machine. Bound as asyncio's and ComfyUI's servers bind: SO_REUSEADDR,
    so a just-stopped server's connections in TIME_WAIT do not count; IPv6 apart from IPv4; an address whose family
    is not enabled skipped while another of the name's binds."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except UnicodeError as exc:  # a label the IDNA codec refuses (empty, over 63 characters)
        return socket.gaierror(f"{host!r} is not a valid host name ({exc})")
    except OSError as exc:
        return exc
    unavailable: OSError | None = None
    bound = False
    for family, kind, proto, _name, address in infos:
        try:
            # inside: a kernel without IPv6 refuses the socket itself (EAFNOSUPPORT) for a name that resolves to ::1
            with socket.socket(family, kind, proto) as s:
                if os.name == "posix":  # elsewhere the option lets a bind take a port in use
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind(address)
        except OSError as exc:
            if exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                return exc
            unavailable = exc
        else:
            bound = True
    return None if bound else unavailable


def port_in_use(host: str, port: int) -> bool:
    """Whether another program listens on (host, port) now."""
    error = bind_error(host, port)
    return error is not None and error.errno == errno.EADDRINUSE


def cuda_available(python: str) -> bool:
    """Whether torch in ``python`` sees a CUDA device; asked in a child so this process need not import torch."""
    if python not in _CUDA_CACHE:
        try:
            proc = subprocess.run([python, "-c", "import torch; print(torch.cuda.is_available())"],
                                  capture_output=True, text=True, timeout=120)
            _CUDA_CACHE[python] = proc.returncode == 0 and proc.stdout.strip().endswith("True")
        except (OSError, subprocess.TimeoutExpired):
            _CUDA_CACHE[python] = False
    return _CUDA_CACHE[python]


def default_python() -> str:
    """The repository's ``.venv`` interpreter when present (install.py puts ComfyUI's requirements there)."""
    from bridge.comfyui_home import REPO_ROOT

    venv = REPO_ROOT / ".venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    return str(venv) if venv.is_file() else sys.executable


class ComfyUIProcess:
    """One ComfyUI server: ``start()``, ``await wait_ready()`` / ``wait_ready_sync()``, ``stop()``, ``restart()``.

    ``port=None`` picks a free port once; it is kept across restarts so ``url`` stays valid. ``cpu=None`` passes
    ``--cpu`` when torch in ``python`` sees no CUDA device. ``extra_model_paths`` are yaml files for
    ``--extra-model-paths-config``. ``link_pack`` links the Pixart node pack into the checkout first.
    """

    def __init__(self, base_dir: str | os.PathLike[str], comfyui_dir: str | os.PathLike[str] | None = None, *,
                 port: int | None = None, host: str = "127.0.0.1", python: str | None = None,
                 extra_model_paths: Sequence[str | os.PathLike[str]] = (), cpu: bool | None = None,
                 extra_args: Sequence[str] = (), link_pack: bool = True, log_path: str | os.PathLike[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        found = Path(comfyui_dir).expanduser().resolve() if comfyui_dir else find_comfyui()
        if found is None or not (found / "main.py").is_file():
            raise FileNotFoundError(f"comfyui_dir: no ComfyUI checkout (main.py) at {comfyui_dir or 'any known place'}")
        self.comfyui_dir: Path = found
        self.base_dir: Path = Path(base_dir).resolve()
        self.host = host
        self._auto_port = port is None
        self.port: int = port if port is not None else find_free_port(host)
        self.python: str = python or default_python()
        self.extra_model_paths = [Path(p).expanduser().resolve() for p in extra_model_paths]  # as checked (managed)
        self.cpu = cpu
        self.extra_args = list(extra_args)
        self.link_pack = link_pack
        self.log_path: Path = Path(log_path).resolve() if log_path else self.base_dir / "comfyui.log"
        self.env = env
        self.input_dir = self.base_dir / "input"
        self.output_dir = self.base_dir / "output"
        self.temp_dir = self.base_dir / "temp"  # ComfyUI appends "temp" to --temp-directory
        self.user_dir = self.base_dir / "user"
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    # -- properties -----------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def is_alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def command(self) -> list[str]:
        """ComfyUI's command line; BRIDGE_FLAGS are among its flags."""
        cpu = self.cpu if self.cpu is not None else not cuda_available(self.python)
        cmd = [self.python, str(self.comfyui_dir / "main.py"),
               "--listen", self.host, "--port", str(self.port), "--disable-auto-launch",
               "--output-directory", str(self.output_dir), "--input-directory", str(self.input_dir),
               "--temp-directory", str(self.base_dir), "--user-directory", str(self.user_dir),
               # The default database sits inside the checkout, which may be read-only or shared.
               "--database-url", f"sqlite:///{self.base_dir / 'comfyui.db'}"]
        if cpu:
            cmd.append("--cpu")
        if self.extra_model_paths:
            cmd += ["--extra-model-paths-config", *map(str, self.extra_model_paths)]
        if "--preview-method" not in self.extra_args:
            # Live previews for the bridge's clients; latent2rgb costs next to nothing and needs no model file.
            cmd += ["--preview-method", "latent2rgb"]
        return cmd + self.extra_args

    # -- lifecycle ------------------------------------------------------------------------------------------
    @property
    def pid_path(self) -> Path:
        """The child's pid and start time, and its parent's: see ``_stop_left_behind``."""
        return self.base_dir / "comfyui.pid"

    def start(self) -> None:
        """Launch the child (returns at once; then wait for readiness). A live child is left as it is."""
        if self.is_alive:
            return
        self._stop_left_behind()
        if port_in_use(self.host, self.port):
            # The readiness poll would take the other program's answers for ComfyUI's (another ComfyUI's, say),
            # while the child exits on "address already in use" and is restarted over and over.
            raise PortInUseError(f"port {self.port} on {self.host} is in use by another program (address already in "
                                 "use); ComfyUI cannot listen there")
        self._close_log()
        for d in (self.base_dir, self.input_dir, self.output_dir, self.user_dir):
            d.mkdir(parents=True, exist_ok=True)  # argparse rejects a missing --user-directory
        if self.link_pack:
            ensure_node_pack_linked(self.comfyui_dir)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        cmd = self.command()
        self._log.write(f"\n==== pixart: starting ComfyUI on {self.url}: {' '.join(cmd)}\n".encode())
        self._log.flush()
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONUNBUFFERED"] = "1"  # so the log is readable while it runs
        kwargs: dict[str, object] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True  # Ctrl-C in a terminal must not hit the child before we stop it
        self.popen = subprocess.Popen(cmd, cwd=str(self.comfyui_dir), stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, env=env, **kwargs)  # type: ignore[call-overload]
        child, parent = _started(self.popen.pid), _started(os.getpid())
        if child is not None and parent is not None:
            with contextlib.suppress(OSError):
                # whole or not at all: a record cut short could make a running bridge's ComfyUI look left behind
                part = self.pid_path.with_name(self.pid_path.name + ".part")
                part.write_text(f"{self.popen.pid} {child} {os.getpid()} {parent}\n")
                os.replace(part, self.pid_path)
        self.starts += 1
        _LIVE.add(self)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate, then kill after ``timeout`` seconds; returns the exit code (None when never started)."""
        proc = self.popen
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
                proc.wait(timeout)
        self._close_log()
        with contextlib.suppress(OSError, ValueError):
            if int(self.pid_path.read_text().split()[0]) == proc.pid:  # not another bridge's record since
                self.pid_path.unlink()
        return proc.returncode

    def _left_behind(self) -> tuple[int, str] | None:
        """(pid, start time) of the ComfyUI recorded in ``pid_path`` while that pid is still the process started then
        (its start time), runs under this folder (its command line names the output folder) and the bridge that
        started it has gone; else None."""
        try:
            child, child_start, parent, parent_start = self.pid_path.read_text().split()
            pid = int(child)
            if _started(pid) != child_start or _started(int(parent)) == parent_start:
                return None
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return (pid, child_start) if os.fsencode(str(self.output_dir)) in args else None

    def _stop_left_behind(self, timeout: float = 10.0) -> None:
        """Stop a ComfyUI started under this folder by a bridge that has gone without stopping it (SIGKILL, the OOM
        killer): leading a session of its own, it outlived that bridge with its memory (a loaded model) and port,
        and each restart of the bridge added another. Only as ``_left_behind`` finds it: another bridge's ComfyUI
        under the same folder is left alone (one record a folder: the last bridge to start there has it)."""
        found = self._left_behind()
        if found is None:
            return
        pid, started = found
        log.warning("stopping ComfyUI pid %s, left running under %s by a bridge that has gone", pid, self.base_dir)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)  # it leads its own session, as this class starts it
            except ProcessLookupError:
                break  # gone meanwhile
            except PermissionError:
                raise ComfyUIStartError(f"ComfyUI pid {pid}, left running under {self.base_dir} by a bridge that "
                                        "has gone, belongs to another user: stop it, then start again") from None
            deadline = time.monotonic() + timeout
            while _started(pid) == started and time.monotonic() < deadline:
                time.sleep(0.05)
            if _started(pid) != started:
                break
        else:
            # stuck (in the kernel: a driver's call): a second ComfyUI beside it would load its models again
            raise ComfyUIStartError(f"ComfyUI pid {pid}, left running under {self.base_dir} by a bridge that has "
                                    f"gone, did not stop within {2 * timeout:g} s of SIGTERM and SIGKILL")
        self.pid_path.unlink(missing_ok=True)

    def kill(self) -> None:
        """Hard kill without waiting for a clean exit (tests use it to simulate a crash)."""
        if self.is_alive:
            self._signal(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
            assert self.popen is not None
            self.popen.wait(10)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop (if alive) and start again on the same port; wait for readiness afterwards."""
        self.stop(timeout)
        self.start()

    def _signal(self, sig: int) -> None:
        assert self.popen is not None
        try:
            if os.name == "posix":
                os.killpg(self.popen.pid, sig)  # the child leads its own session (start_new_session)
            elif sig == signal.SIGTERM:
                self.popen.terminate()
            else:
                self.popen.kill()
        except (ProcessLookupError, PermissionError):
            pass

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- readiness ------------------------------------------------------------------------------------------
    def ping(self, timeout: float = 2.0) -> dict | None:
        """``/system_stats`` as a dict when the server answers, else None."""
        try:
            with urllib.request.urlopen(self.url + "/system_stats", timeout=timeout) as resp:
                if resp.status == 200:
                    data = json.loads(resp.read())
                    return data if isinstance(data, dict) else None
        except (OSError, ValueError, urllib.error.URLError):
            return None
        return None

    def _check_alive(self) -> None:
        if self.popen is None:
            raise ComfyUIStartError("ComfyUI was not started (call start() first)")
        code = self.popen.poll()
        if code is not None:
            raise ComfyUIStartError(f"ComfyUI exited with code {code} during start-up; log {self.log_path}:\n"
                                    + self.log_tail())

    def wait_ready_sync(self, timeout: float = 120.0, interval: float = 0.25) -> dict:
        """Block until ``/system_stats`` answers; raise ComfyUIStartError when the child dies or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            stats = self.ping()
            if stats is not None:
                return stats
            if time.monotonic() > deadline:
                raise ComfyUIStartError(f"ComfyUI did not answer on {self.url} within {timeout:.0f}s; log "
                                        f"{self.log_path}:\n" + self.log_tail())
            time.sleep(interval)

    async def wait_ready(self, timeout: float = 120.0, interval: float = 0.25) -> dict:
        """Await until ``/system_stats`` answers (same errors as ``wait_ready_sync``)."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            stats = await asyncio.to_thread(self.ping)
            if stats is not None:
                return stats
            if time.monotonic() > deadline:
                raise ComfyUIStartError(f"ComfyUI did not answer on {self.url} within {timeout:.0f}s; log "
                                        f"{self.log_path}:\n" + self.log_tail())
            await asyncio.sleep(interval)

    def start_and_wait(self, timeout: float = 120.0, attempts: int = 3) -> dict:
        """``start()`` + ``wait_ready_sync()``; with an auto-picked port, retries on a new port when the chosen
        one was taken between picking and binding."""
        for attempt in range(attempts):
            try:
                self.start()
                return self.wait_ready_sync(timeout)
            except ComfyUIStartError as exc:
                port_taken = isinstance(exc, PortInUseError) or "address already in use" in self.log_tail().lower()
                self.stop()
                if not (self._auto_port and port_taken) or attempt == attempts - 1:
                    raise
                self.port = find_free_port(self.host)
        raise AssertionError("unreachable")

    def log_tail(self, max_chars: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - max_chars))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self) -> "ComfyUIProcess":
        self.start_and_wait()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "alive" if self.is_alive else "stopped"
        return f"<ComfyUIProcess {self.url} pid={self.pid} {state} base={self.base_dir}>"


@atexit.register
def _stop_all() -> None:
    # A crashed test run or bridge must not leave ComfyUI servers behind.
    for proc in list(_LIVE):
        try:
            proc.stop(timeout=5)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
