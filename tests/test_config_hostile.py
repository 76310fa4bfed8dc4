"""Bad operator input: settings (environment, `--set`, `.env`, flags) that used to start the bridge on a wrong or
dangerous value, or stop it with a traceback or a hang, are refused with a message naming the variable; the
managed ComfyUI says what is wrong with its port, folders and files."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from bridge.comfyui_process import ComfyUIProcess, PortInUseError, _started
from bridge.config import SettingsError, load_settings
from bridge.managed import ManagedComfyUI, ManagedComfyUIError

REPO = Path(__file__).resolve().parent.parent


def refused(overrides: dict[str, str]) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        load_settings(overrides=overrides, env_file=None)
    return info.value


@pytest.mark.parametrize(("variable", "value"), [
    ("BRIDGE_MAX_BODY_MB", "inf"),  # int(inf) stopped create_app with an OverflowError
    ("BRIDGE_MAX_BODY_MB", "1e400"),
    ("COMFYUI_START_TIMEOUT", "inf"),
    ("BRIDGE_HEADER_TIMEOUT", "inf"),
    ("BRIDGE_JOB_TIMEOUT", "inf"),
    ("BRIDGE_LEASE", "inf"),
    ("BRIDGE_RATE_LIMIT", "nan"),
])
def test_non_finite_numbers_are_refused(variable: str, value: str) -> None:
    error = refused({variable: value})
    assert error.field == variable and "finite" in error.message


def test_a_burst_beyond_a_float_is_refused() -> None:
    # The token bucket holds it as a float: 10**400 stopped create_app with an OverflowError.
    error = refused({"BRIDGE_RATE_LIMIT": "1", "BRIDGE_RATE_BURST": "1" + "0" * 400})
    assert error.field == "BRIDGE_RATE_BURST"


@pytest.mark.parametrize(("url", "words"), [
    ("http://", "no host"),  # was kept as "http:"
    ("http://:8188", "no host"),
    ("http://comfy:99999", "Port out of range"),
    ("http://comfy:0", "port 0"),
    ("http://comfy:abc", "not a valid URL"),
    ("http://[::1:8188", "IPv6"),
    ("http://com fy:8188", "space"),
    ("http://comfy:8188\x00", "control character"),
    ("http://comfy:8188/?token=1", "query"),
    ("http://comfy:8188#top", "fragment"),
])
def test_unusable_comfyui_urls_are_refused(url: str, words: str) -> None:
    error = refused({"COMFYUI_URL": f"http://good:8188,{url}"})
    assert error.field == "COMFYUI_URL" and words in error.message


def test_comfyui_url_credentials_are_refused_unshown() -> None:
    # They would be served to anyone by /health and /metrics (no key needed) and in every job's "backend".
    error = refused({"COMFYUI_URL": "http://admin:s3cret@comfy:8188"})
    assert error.field == "COMFYUI_URL" and "credentials" in error.message
    assert "s3cret" not in str(error) and "admin" not in str(error)


@pytest.mark.parametrize("urls", [
    "http://comfy:8188,http://comfy:8188",
    "http://comfy:8188,http://COMFY:8188/",
    "http://comfy,http://comfy:80",
    "https://comfy/base/,https://comfy:443/base",
])
def test_one_comfyui_listed_twice_is_refused(urls: str) -> None:
    error = refused({"COMFYUI_URL": urls})
    assert error.field == "COMFYUI_URL" and "twice" in error.message


def test_usable_comfyui_urls_still_pass() -> None:
    s = load_settings(overrides={"COMFYUI_URL": "http://[::1]:8188/, https://comfy.example/base/, http://comfy:1,"
                                                "http://comfy:2"}, env_file=None)
    assert s.comfyui_urls == ["http://[::1]:8188", "https://comfy.example/base", "http://comfy:1", "http://comfy:2"]


def test_deeply_nested_json_list_names_the_variable() -> None:
    error = refused({"COMFYUI_URL": "[" * 100_000})  # was a RecursionError traceback
    assert error.field == "COMFYUI_URL" and "nested" in error.message


@pytest.mark.parametrize("host", ["", "   "])
def test_empty_host_is_refused(host: str) -> None:
    # asyncio listens on every interface for an empty host: `BRIDGE_HOST=` served on 0.0.0.0 and ::.
    error = refused({"BRIDGE_HOST": host})
    assert error.field == "BRIDGE_HOST" and "every interface" in error.message


def test_host_is_stripped() -> None:
    assert load_settings(overrides={"BRIDGE_HOST": " 10.0.0.1 "}, env_file=None).host == "10.0.0.1"


def test_empty_paths() -> None:
    for variable in ("BRIDGE_DATA_DIR", "BRIDGE_WORKFLOWS_DIR"):  # Path("") is the current directory
        assert refused({variable: ""}).field == variable
    s = load_settings(overrides={"COMFYUI_DIR": "", "COMFYUI_OUTPUT_DIR": " ", "COMFYUI_INPUT_DIR": "",
                                 "COMFYUI_EXTRA_MODEL_PATHS": "", "COMFYUI_CPU": ""}, env_file=None)
    assert (s.comfyui_dir, s.comfyui_output_dir, s.comfyui_input_dir, s.comfyui_extra_model_paths,
            s.comfyui_cpu) == (None, None, None, None, None)


@pytest.mark.parametrize(("variable", "value", "words"), [
    ("BRIDGE_PUBLIC_URL", "http://", "no host"),  # was kept as "http:"
    ("BRIDGE_PUBLIC_URL", "https://pixart.example:99999", "Port out of range"),
    ("BRIDGE_PUBLIC_URL", "https://pixart.example/?x=1", "query"),
    ("BRIDGE_WEBHOOK_URL", "http://hooks.example:0/in", "port 0"),
    ("BRIDGE_WEBHOOK_URL", "http://user:pw@hooks.example/in", "credentials"),
    ("BRIDGE_WEBHOOK_URL", "http://hooks.example/in\nX: y", "control character"),
    ("BRIDGE_S3_ENDPOINT", "s3.example.com", "http://"),
    ("BRIDGE_S3_ENDPOINT", "http://s3.example.com:70000", "Port out of range"),
])
def test_unusable_service_urls_are_refused(variable: str, value: str, words: str) -> None:
    error = refused({variable: value})
    assert error.field == variable and words in error.message


def test_usable_service_urls_still_pass() -> None:
    s = load_settings(overrides={"BRIDGE_WEBHOOK_URL": " https://hooks.example/in?token=1 ",
                                 "BRIDGE_PUBLIC_URL": "https://pixart.example/base/",
                                 "BRIDGE_S3_ENDPOINT": "http://127.0.0.1:8333"}, env_file=None)
    assert s.webhook_url == "https://hooks.example/in?token=1" and s.public_url == "https://pixart.example/base"
    assert s.s3_endpoint == "http://127.0.0.1:8333"


@pytest.mark.parametrize("secret", ["whsec_", "whsec_!?!?", "whsec_abcde"])
def test_unusable_webhook_secret_is_refused_unshown(secret: str) -> None:
    # The engine built its signer at start: EmptyWebhookSecretError / binascii.Error tracebacks.
    error = refused({"BRIDGE_WEBHOOK_SECRET": secret})
    assert error.field == "BRIDGE_WEBHOOK_SECRET" and "signing secret" in error.message
    assert secret == "whsec_" or secret.removeprefix("whsec_") not in str(error)


def test_a_made_webhook_secret_passes() -> None:
    from bridge.webhooks import new_secret

    secret = new_secret()
    assert load_settings(overrides={"BRIDGE_WEBHOOK_SECRET": secret}, env_file=None).webhook_secret == secret


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "hooks.lan:8080", "::::", "[::1]"])
def test_mistyped_outbound_allow_entries_are_refused(entry: str) -> None:
    # They were kept as host names that nothing matches, so what they meant to admit stayed refused.
    error = refused({"BRIDGE_OUTBOUND_ALLOW": f"127.0.0.1,{entry}"})
    assert error.field == "BRIDGE_OUTBOUND_ALLOW" and repr(entry) in error.message


def test_outbound_allow_still_takes_names_addresses_and_networks() -> None:
    s = load_settings(overrides={"BRIDGE_OUTBOUND_ALLOW": "10.0.0.0/8, hooks.lan, ::1, fd00::/8"}, env_file=None)
    assert s.outbound_allow == ["10.0.0.0/8", "hooks.lan", "::1", "fd00::/8"]


def test_database_url_with_a_bad_port_is_refused() -> None:
    # The pool retried it for 30 s, then failed with "pool initialization incomplete".
    error = refused({"BRIDGE_DATABASE": "postgresql://pixart:hunter2@db:99999/pixart"})
    assert error.field == "BRIDGE_DATABASE" and "port" in error.message and "hunter2" not in str(error)
    s = load_settings(overrides={"BRIDGE_DATABASE": "postgresql://u:p@db1:5432,db2:5432/pixart"}, env_file=None)
    assert s.database.startswith("postgresql://")  # libpq's several hosts stay allowed


@pytest.mark.parametrize("args", ["--port,9000", "--lowvram,--output-directory=/srv/out", "--input-directory,/x",
                                  "--output-dir=/srv/out"])
def test_comfyui_args_cannot_override_what_the_bridge_sets(args: str) -> None:
    # ComfyUI's parser takes the last --port: the bridge polled its own port for COMFYUI_START_TIMEOUT, then failed.
    error = refused({"COMFYUI_ARGS": args})
    assert error.field == "COMFYUI_ARGS" and "set by the bridge" in error.message
    assert load_settings(overrides={"COMFYUI_ARGS": "--lowvram,--listen,0.0.0.0"}, env_file=None).comfyui_args == [
        "--lowvram", "--listen", "0.0.0.0"]


# ------------------------------------------------------------------------------------------------------ env file


@pytest.mark.timeout(20)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_default_env_file_that_is_a_fifo_does_not_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / ".env")
    with pytest.raises(SettingsError) as info:  # reading it waited for a writer forever
        load_settings()
    assert info.value.field == "--env-file"


def test_a_named_env_file_may_be_dev_null_or_a_pipe(tmp_path: Path) -> None:
    from bridge.__main__ import build_parser, settings_from_args

    assert settings_from_args(build_parser().parse_args(["--env-file", "/dev/null"])).port == 8000
    read, write = os.pipe()  # what a shell's <(...) names as /dev/fd/N
    os.write(write, b"BRIDGE_PORT=9123\n")
    os.close(write)
    try:
        assert settings_from_args(build_parser().parse_args(["--env-file", f"/dev/fd/{read}"])).port == 9123
    finally:
        os.close(read)


def test_env_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.env"
    path.write_bytes(b"BRIDGE_PORT=9001\nDEMO_NAME=caf\xe9\n")
    with pytest.raises(SettingsError) as info:  # was a UnicodeDecodeError traceback
        load_settings(env_file=path)
    assert info.value.field == "--env-file" and "UTF-8" in info.value.message and str(path) in info.value.message


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("BRIDGE_", "COMFYUI_"))}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def _bridge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=60)


def test_explicit_env_file_must_be_a_file(tmp_path: Path) -> None:
    # A mistyped path started the bridge on defaults (no API keys, say); a directory was skipped without a word.
    proc = _bridge("--env-file", str(tmp_path / "prod.env"), "--print-settings", cwd=tmp_path)
    assert proc.returncode == 2 and "--env-file" in proc.stderr and "no such file" in proc.stderr
    (tmp_path / "conf").mkdir()
    proc = _bridge("--env-file", str(tmp_path / "conf"), "--print-settings", cwd=tmp_path)
    assert proc.returncode == 2 and "--env-file" in proc.stderr and "directory" in proc.stderr


def test_default_env_file_may_be_missing_or_a_virtual_environment(tmp_path: Path) -> None:
    proc = _bridge("--print-settings", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # no ./.env: defaults, as before
    (tmp_path / ".env" / "bin").mkdir(parents=True)  # `python -m venv .env`
    proc = _bridge("--print-settings", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------------------ listening, ComfyUI


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other program listens on, answering /system_stats as a ComfyUI would."""

    class Other(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"system": {"comfyui_version": "someone else's"}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Other)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_bridge_port_in_use_is_named_before_start_up(tmp_path: Path, busy_port: int) -> None:
    # Was a traceback (OSError: address already in use), after the app and a managed ComfyUI had started.
    proc = subprocess.run([sys.executable, "-m", "bridge", "--port", str(busy_port), "--comfyui-url",
                           "http://127.0.0.1:9", "--data-dir", str(tmp_path / "data")], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "BRIDGE_PORT" in proc.stderr and "Traceback" not in proc.stderr


def test_bridge_host_not_of_this_machine_is_named() -> None:
    from bridge.__main__ import listen_problem

    problem = listen_problem("192.0.2.1", 0)  # TEST-NET-1: no machine has it
    assert problem is not None and problem.startswith("BRIDGE_HOST:")
    assert listen_problem("127.0.0.1", 0) is None


def _managed(tmp_path: Path, fake_comfyui: Path, **overrides: str) -> ManagedComfyUI:
    settings = load_settings(overrides={"COMFYUI_DIR": str(fake_comfyui), "BRIDGE_DATA_DIR": str(tmp_path / "data"),
                                        "COMFYUI_CPU": "true", "COMFYUI_START_TIMEOUT": "20", **overrides},
                             env_file=None)
    return ManagedComfyUI(settings)


@pytest.mark.timeout(60)
def test_managed_comfyui_port_in_use_is_refused(tmp_path: Path, fake_comfyui: Path, busy_port: int) -> None:
    # The other program's /system_stats was taken for the child's: the bridge "started" on someone else's server
    # while its child exited on "address already in use" and was restarted for ever.
    managed = _managed(tmp_path, fake_comfyui, COMFYUI_PORT=str(busy_port))
    with pytest.raises(ManagedComfyUIError, match="COMFYUI_PORT") as info:
        asyncio.run(managed.start())
    assert "in use" in str(info.value) and managed.process.pid is None  # no child was started


@pytest.mark.timeout(60)
def test_process_refuses_a_port_in_use_and_start_and_wait_moves_an_auto_port(tmp_path: Path, fake_comfyui: Path,
                                                                               busy_port: int) -> None:
    proc = ComfyUIProcess(tmp_path / "fixed", fake_comfyui, port=busy_port, cpu=True, link_pack=False)
    with pytest.raises(PortInUseError):
        proc.start()
    auto = ComfyUIProcess(tmp_path / "auto", fake_comfyui, cpu=True, link_pack=False)
    auto.port = busy_port  # as if another program took the picked port before ComfyUI bound it
    try:
        stats = auto.start_and_wait(timeout=20)
        assert auto.port != busy_port and "--port" in stats["system"]["argv"]
    finally:
        auto.stop()


def _bridge_with_child(base: Path, fake_comfyui: Path, *, dies: bool = False) -> tuple[subprocess.Popen, int]:
    """(a bridge process, the pid of the ComfyUI it started under `base`): the bridge keeps running, or is SIGKILLed
    once its child answers (``dies``)."""
    script = (f"import os, signal, sys, time\nsys.path.insert(0, {str(REPO)!r})\n"
              "from bridge.comfyui_process import ComfyUIProcess\n"
              f"p = ComfyUIProcess({str(base)!r}, {str(fake_comfyui)!r}, cpu=True, link_pack=False)\n"
              "p.start_and_wait(timeout=20)\nprint(p.pid, flush=True)\n"
              + ("os.kill(os.getpid(), signal.SIGKILL)\n" if dies else "time.sleep(60)\n"))
    bridge = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    with bridge.stdout:
        return bridge, int(bridge.stdout.readline())


def _running(pid: int) -> bool:
    return _started(pid) is not None  # a zombie nobody reaped has ended


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
@pytest.mark.timeout(60)
def test_a_comfyui_left_behind_by_a_killed_bridge_is_stopped_at_the_next_start(tmp_path: Path,
                                                                                fake_comfyui: Path) -> None:
    """ComfyUI leads a session of its own (Ctrl-C must not reach it before the bridge stops it), so a bridge that
    was killed (SIGKILL, the OOM killer) left it running with its memory (a loaded model) and its port; each
    restart of the bridge added another. The next start under the same folder stops it first."""
    base = tmp_path / "comfyui"
    bridge, orphan = _bridge_with_child(base, fake_comfyui, dies=True)
    try:
        bridge.wait(10)
        assert _running(orphan)
        again = ComfyUIProcess(base, fake_comfyui, cpu=True, link_pack=False)
        try:
            again.start_and_wait(timeout=20)
            assert not _running(orphan) and again.pid != orphan
        finally:
            again.stop()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(orphan, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
@pytest.mark.timeout(60)
def test_a_comfyui_whose_bridge_still_runs_is_left_alone(tmp_path: Path, fake_comfyui: Path) -> None:
    """Only a ComfyUI whose bridge has gone is stopped: another bridge's, still running under the same folder,
    and a process that took over a recorded pid are not touched."""
    base = tmp_path / "comfyui"
    bridge, child = _bridge_with_child(base, fake_comfyui)
    try:
        again = ComfyUIProcess(base, fake_comfyui, cpu=True, link_pack=False)
        try:
            again.start_and_wait(timeout=20)
            assert _running(child)
        finally:
            again.stop()
        # a recorded pid now another process's: one that started later, or one that runs no ComfyUI of this folder
        # (its start time recorded, as after a reboot that gave the same pid at the same tick): not stopped
        stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        try:
            for started in ("1", _started(stranger.pid)):
                (base / "comfyui.pid").write_text(f"{stranger.pid} {started} {os.getpid() + 10**7} 1\n")
                again.start_and_wait(timeout=20)
                again.stop()
                assert stranger.poll() is None, started
        finally:
            stranger.kill()
            stranger.wait()
    finally:
        bridge.kill()
        bridge.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child, signal.SIGKILL)


def test_managed_comfyui_data_dir_that_is_a_file(tmp_path: Path, fake_comfyui: Path) -> None:
    data = tmp_path / "data"
    data.write_text("not a folder")
    managed = _managed(tmp_path, fake_comfyui)
    with pytest.raises(ManagedComfyUIError, match="BRIDGE_DATA_DIR"):  # was a NotADirectoryError traceback
        asyncio.run(managed.start())


def test_managed_comfyui_missing_extra_model_paths(tmp_path: Path, fake_comfyui: Path) -> None:
    # ComfyUI stopped on it with a traceback in its log, seconds into its start.
    with pytest.raises(ManagedComfyUIError, match="COMFYUI_EXTRA_MODEL_PATHS"):
        _managed(tmp_path, fake_comfyui, COMFYUI_EXTRA_MODEL_PATHS=str(tmp_path / "missing.yaml"))


def test_a_free_port_is_not_in_use() -> None:
    from bridge.comfyui_process import port_in_use

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert not port_in_use("127.0.0.1", free)


def test_a_family_the_kernel_lacks_is_passed_over_when_checking_the_bridges_address(monkeypatch) -> None:
    """A kernel without IPv6 refuses the socket itself for a name that resolves to ::1 too: the check raised that
    as a traceback before the start, where asyncio's server skips the family."""
    import errno
    import socket

    from bridge import comfyui_process

    real_socket, real_getaddrinfo = socket.socket, socket.getaddrinfo

    def no_ipv6(family=socket.AF_INET, *args, **kwargs):
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real_socket(family, *args, **kwargs)

    def both(host, port, *args, **kwargs):  # ::1 and 127.0.0.1, as /etc/hosts often gives localhost
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
                *real_getaddrinfo("127.0.0.1", port, *args, **kwargs)]

    monkeypatch.setattr(comfyui_process.socket, "socket", no_ipv6)
    monkeypatch.setattr(comfyui_process.socket, "getaddrinfo", both)
    assert comfyui_process.bind_error("localhost", 0) is None
