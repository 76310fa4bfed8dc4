"""`python -m bridge`: help, settings precedence as a user sees it, start-up failures, and (integration) the
managed ComfyUI lifecycle."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("BRIDGE_", "COMFYUI_"))}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def _bridge(*args: str, cwd: Path, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_help(tmp_path: Path) -> None:
    proc = _bridge("--help", cwd=tmp_path, env=_env())
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for text in ("--comfyui-url", "--port", "--set NAME=VALUE", "COMFYUI_URL", "BRIDGE_PORT", "BRIDGE_API_KEYS",
                 "BRIDGE_CORS_ORIGINS", "BRIDGE_DATA_DIR"):
        assert text in out
    # every adapter's variables too (the docs send people here for them; it named only the core's)
    for text in ("A1111_STYLES_FILE", "PICO_DEFAULT_FORMAT", "UNIFIED_", "PIXART_EDITOR_LORAS", "JOBS_API_DEFAULT_MODEL",
                 "ALEAART_TIMEOUT", "Pico adapter settings (environment `PICO_*`"):
        assert text in out, text


def test_print_settings_precedence(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BRIDGE_PORT=9001\nBRIDGE_HOST=0.0.0.0\nBRIDGE_API_KEYS=a,b\n"
                                   "COMFYUI_URL=http://dotenv:8188\n")
    proc = _bridge("--print-settings", cwd=tmp_path, env=_env(BRIDGE_HOST="10.1.1.1"))
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["port"] == 9001 and shown["host"] == "10.1.1.1"
    assert shown["comfyui_urls"] == ["http://dotenv:8188"]
    assert shown["api_keys"] == ["***", "***"]  # never printed

    proc = _bridge("--print-settings", "--port", "9100", "--comfyui-url", "http://flag:1", "--set",
                   "BRIDGE_MAX_QUEUE=3", cwd=tmp_path, env=_env(BRIDGE_PORT="9002"))
    shown = json.loads(proc.stdout)
    assert shown["port"] == 9100 and shown["comfyui_urls"] == ["http://flag:1"] and shown["max_queue"] == 3


def test_bad_setting_exits_2_naming_it(tmp_path: Path) -> None:
    proc = _bridge("--print-settings", cwd=tmp_path, env=_env(BRIDGE_PORT="eighty"))
    assert proc.returncode == 2
    assert "BRIDGE_PORT" in proc.stderr
    proc = _bridge("--set", "oops", cwd=tmp_path, env=_env())
    assert proc.returncode == 2 and "NAME=VALUE" in proc.stderr
    # a name no setting reads would do nothing: refused, with the near ones (any adapter's, enabled or not)
    proc = _bridge("--print-settings", "--adapters", "jobs_api", "--set", "A1111_TIMEOUT=60", "--set",
                   "PICO_MODE=1", "--set", "unified_timeout=5", cwd=tmp_path, env=_env())
    assert proc.returncode == 2 and "--set A1111_TIMEOUT: no setting has this name" in proc.stderr
    assert "ALEAART_TIMEOUT" in proc.stderr and "PICO_MODE" not in proc.stderr and "unified" not in proc.stderr


def test_broken_adapter_stops_start_up(tmp_path: Path) -> None:
    proc = _bridge("--adapters", "no_such_adapter", "--comfyui-url", "http://127.0.0.1:9", "--port", "0",
                   "--data-dir", str(tmp_path / "data"), cwd=tmp_path, env=_env())
    assert proc.returncode == 1
    assert "adapter 'no_such_adapter'" in proc.stderr


def test_missing_comfyui_checkout_is_explained(tmp_path: Path) -> None:
    # No COMFYUI_URL: the bridge would manage a ComfyUI, but there is none at COMFYUI_DIR or under HOME.
    proc = _bridge("--port", "0", "--data-dir", str(tmp_path / "data"), cwd=tmp_path, env=_env(HOME=str(tmp_path)))
    assert proc.returncode == 1
    assert "no ComfyUI checkout found" in proc.stderr and "COMFYUI_URL" in proc.stderr
    proc = _bridge("--port", "0", "--data-dir", str(tmp_path / "data"), cwd=tmp_path,
                   env=_env(HOME=str(tmp_path), COMFYUI_DIR=str(tmp_path / "nothing")))
    assert proc.returncode == 1
    assert "COMFYUI_DIR=" in proc.stderr and "not a ComfyUI checkout" in proc.stderr


# ----------------------------------------------------------------------------------------------- integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _health(port: int) -> tuple[int, dict[str, Any]] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (OSError, ValueError):
        return None


def _wait_for(port: int, proc: subprocess.Popen[bytes], predicate: Any, timeout: float, what: str,
              log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"bridge exited with {proc.returncode} while waiting for {what}:\n"
                                 + log.read_text()[-4000:])
        last = _health(port)
        if last is not None and predicate(*last):
            return last[1]
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last /health: {last}\n" + log.read_text()[-4000:])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0); its state letter says otherwise
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _gone(pid: int, timeout: float = 30.0) -> bool:
    """Whether process `pid` has ended within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


def _clean_up(proc: subprocess.Popen[bytes], pids: list[int]) -> None:
    """Kill the bridge `proc` if it still runs, and the ComfyUI process groups `pids` still alive."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)
    for pid in pids:
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)


def _started_bridge(tmp_path: Path, fake_comfyui: Path, *,
                    nohup: bool = False) -> tuple[subprocess.Popen[bytes], int, int, Path]:
    """(`python -m bridge` managing the fake checkout, under `nohup` if asked, its port, its ComfyUI's pid, its log)
    once /health answers."""
    tmp_path.mkdir(exist_ok=True)
    port = _free_port()
    log = tmp_path / "bridge.log"
    env = _env(COMFYUI_DIR=str(fake_comfyui), BRIDGE_PORT=str(port), BRIDGE_DATA_DIR=str(tmp_path / "data"),
               COMFYUI_CPU="true")
    with open(log, "wb") as out:
        proc = subprocess.Popen(["nohup"] * nohup + [sys.executable, "-m", "bridge"], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        body = _wait_for(port, proc, lambda status, b: "managed_comfyui" in b, 60, "the bridge's /health", log)
    except BaseException:
        proc.terminate()  # its shutdown stops its ComfyUI
        proc.wait(60)
        raise
    return proc, port, body["managed_comfyui"]["pid"], log


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP here")
@pytest.mark.timeout(120)
def test_a_closed_terminal_stops_the_bridge_and_its_comfyui(tmp_path: Path, fake_comfyui: Path) -> None:
    """Closing the terminal (an SSH session to a Pi ending) sends SIGHUP, whose default ended the bridge at once,
    without its shutdown: its ComfyUI, in a session of its own, ran on with its model loaded. SIGHUP now stops the
    bridge as SIGTERM does; under nohup, which ignores SIGHUP, it still runs on."""
    proc, _, child, log = _started_bridge(tmp_path, fake_comfyui)
    try:
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(60) == 0, log.read_text()[-4000:]
        assert _gone(child), "ComfyUI outlived the bridge"
    finally:
        _clean_up(proc, [child])
    if shutil.which("nohup") is None:
        return
    nohup, port, child, log = _started_bridge(tmp_path / "nohup", fake_comfyui, nohup=True)
    try:
        nohup.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        # still serving: a shutdown closes the listener first
        assert nohup.poll() is None and _alive(child) and _health(port) is not None
        nohup.send_signal(signal.SIGTERM)
        assert nohup.wait(60) == 0, log.read_text()[-4000:]
    finally:
        _clean_up(nohup, [child])


@pytest.mark.comfyui
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_managed_comfyui_start_restart_stop(comfyui_dir: Path, tiny_models: dict[str, Path],
                                            tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "bridge.log"
    env = _env(COMFYUI_DIR=str(comfyui_dir), COMFYUI_EXTRA_MODEL_PATHS=str(tiny_models["extra_model_paths"]),
               BRIDGE_PORT=str(port), BRIDGE_DATA_DIR=str(tmp_path / "data"))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bridge"], cwd=tmp_path, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    pids: list[int] = []
    try:
        body = _wait_for(port, proc, lambda status, b: status == 200 and b["status"] == "healthy", 400,
                         "a healthy managed ComfyUI", log)
        managed = body["managed_comfyui"]
        assert managed["alive"] and managed["restarts"] == 0
        [backend] = body["backends"]
        assert backend["healthy"] and backend["url"] == managed["url"] and backend["version"]
        first = managed["pid"]
        pids.append(first)

        os.kill(first, signal.SIGKILL)
        body = _wait_for(port, proc, lambda status, b: status == 200 and b["status"] == "healthy"
                         and b["managed_comfyui"]["restarts"] == 1, 400, "ComfyUI restarted", log)
        second = body["managed_comfyui"]["pid"]
        pids.append(second)
        assert second != first and _alive(second) and not _alive(first)
        assert body["managed_comfyui"]["last_exit_code"] == -signal.SIGKILL

        # a bridge killed outright (SIGKILL, the OOM killer) leaves its ComfyUI running, in a session of its own;
        # the next bridge on the same data directory stops it before it starts its own
        proc.kill()
        proc.wait(30)
        assert _alive(second)
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "bridge"], cwd=tmp_path, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        body = _wait_for(port, proc, lambda status, b: status == 200 and b["status"] == "healthy", 400,
                         "a healthy managed ComfyUI after the bridge was killed", log)
        third = body["managed_comfyui"]["pid"]
        pids.append(third)
        assert third != second and not _alive(second), "the ComfyUI left behind still runs"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, log.read_text()[-4000:]
        assert _gone(third), "ComfyUI outlived the bridge"
    finally:
        _clean_up(proc, pids)
