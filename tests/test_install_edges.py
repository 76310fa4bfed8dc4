"""install.py where a user's machine is not the tidy one: a stale COMFYUI_DIR, --comfyui pointing somewhere the
children never hear of, an empty folder made for the clone, a .venv left half-made or orphaned by a Python upgrade,
a pip run that died after the last good install, a summary line blaming ComfyUI for something else.

Steps run in-process with the slow or networked parts (pip, git, the kernel build, pytest, the bridge) replaced, so
nothing is installed and the real .venv, ~/ComfyUI and install record are never touched.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.test_install import INSTALL, _fake_comfyui, _load_install_module


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    mod = _load_install_module()
    # Every lookup lands in tmp_path: no real ~/ComfyUI, COMFYUI_DIR, .venv or install record.
    monkeypatch.setattr(mod.home, "DEFAULT_COMFYUI_DIR", tmp_path / "home" / "ComfyUI")
    monkeypatch.setattr(mod, "VENV_DIR", tmp_path / "venv")
    monkeypatch.setenv("PIXART_INSTALL_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    return mod


def _quiet_setup(module, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module.Installer, "install_packages", lambda self: None)
    monkeypatch.setattr(module.Installer, "build_kernels", lambda self: None)
    monkeypatch.setattr(module.Installer, "ensure_test_tools", lambda self: None)


@pytest.mark.parametrize("action", ["--test", "--run"])
def test_the_comfyui_install_found_is_the_one_tests_and_bridge_get(
        action: str, module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stale COMFYUI_DIR plus `--comfyui GOOD`: set-up uses GOOD, but pytest and the bridge read COMFYUI_DIR
    # themselves (tests/support/real_comfyui.py, bridge/managed.py). Left stale, the bridge refuses to start and
    # the integration tests skip with "no ComfyUI checkout", right after install.py printed that it found one.
    good = _fake_comfyui(tmp_path / "my ComfyUI é")
    monkeypatch.setenv("COMFYUI_DIR", str(tmp_path / "gone"))
    _quiet_setup(module, monkeypatch)
    seen: dict[str, str | None] = {}

    def fake_wait(cmd):  # pytest inherits this process's environment
        seen["COMFYUI_DIR"] = os.environ.get("COMFYUI_DIR")
        return 0, False

    def fake_execv(path, cmd):
        seen["COMFYUI_DIR"] = os.environ.get("COMFYUI_DIR")
        raise SystemExit(0)

    def fake_execve(path, cmd, env):
        seen["COMFYUI_DIR"] = env.get("COMFYUI_DIR")
        raise SystemExit(0)

    monkeypatch.setattr(module, "wait_for", fake_wait)
    monkeypatch.setattr(module.os, "execv", fake_execv)
    monkeypatch.setattr(module.os, "execve", fake_execve)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) if action == "--run" else contextlib.nullcontext():
        module.main(["--use-current-python", "--comfyui", good.name, action])
    assert seen["COMFYUI_DIR"] is not None and Path(seen["COMFYUI_DIR"]).resolve() == good.resolve()


def test_a_missing_comfyui_dir_is_called_missing(module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # "is not a ComfyUI checkout (needs main.py and comfy/)" sends the user looking for files in a folder that
    # is not there (a typo in the variable, an unmounted disk).
    _fake_comfyui(tmp_path / "home" / "ComfyUI")
    monkeypatch.setenv("COMFYUI_DIR", str(tmp_path / "typo"))
    inst = module.Installer(module.build_parser().parse_args(["--use-current-python"]))
    inst.ensure_comfyui()
    line = next(line for line in capsys.readouterr().out.splitlines() if "typo" in line)
    assert "does not exist" in line and "main.py" not in line, line


def test_an_empty_folder_given_to_comfyui_is_cloned_into(module, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # `mkdir /opt/ComfyUI && install.py --comfyui /opt/ComfyUI` (a mount point, a folder made with the right
    # owner first): git clones into an empty folder fine, yet the checkout went to ~/ComfyUI instead.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git = bin_dir / "git"
    git.write_text('#!/bin/sh\nfor a; do t="$a"; done\nmkdir -p "$t/comfy" && touch "$t/main.py"\n')
    git.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("COMFYUI_DIR", raising=False)
    wanted = tmp_path / "opt ComfyUI"
    wanted.mkdir()
    inst = module.Installer(module.build_parser().parse_args(["--use-current-python", "--comfyui", str(wanted)]))
    inst.ensure_comfyui()
    assert inst.comfyui == wanted.resolve()
    assert not module.home.DEFAULT_COMFYUI_DIR.exists()


def test_a_failed_forced_pip_run_does_not_leave_the_old_stamp(module, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # --force after a good install: pip uninstalls the old versions, then dies (network, disk full, Ctrl-C). The
    # stamp of the earlier good install still matched, so every later run said "unchanged; skipping pip" over a
    # broken environment.
    calls: list[list[str]] = []

    def installer(*flags: str, ok: bool):
        inst = module.Installer(module.build_parser().parse_args(["--use-current-python", "--no-comfyui", *flags]))
        monkeypatch.setattr(inst, "run", lambda cmd, what: bool(calls.append(cmd)) or ok)
        return inst

    installer(ok=True).install_packages()
    assert len(calls) == 1
    installer("--force", ok=False).install_packages()
    assert len(calls) == 2
    installer(ok=True).install_packages()
    assert len(calls) == 3, "pip was skipped after a failed run"


def test_a_venv_without_pip_is_repaired(module, tmp_path: Path) -> None:
    # Interrupted during ensurepip (Ctrl-C, a full disk) on the first run: bin/python exists, pip does not, and
    # every later run failed at "No module named pip" without ever fixing it.
    venv.create(module.VENV_DIR, with_pip=False)
    # what was installed stays (a `uv venv` has no pip by design): only pip is added
    kept = next((module.VENV_DIR / "lib").glob("python*/site-packages")) / "kept_module.py"
    kept.write_text("")
    inst = module.Installer(module.build_parser().parse_args([]))
    inst.ensure_python()
    assert subprocess.run([inst.python, "-c", "import pip"], capture_output=True).returncode == 0
    assert kept.exists()


def test_a_venv_whose_python_is_gone_is_rebuilt(module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The system Python the venv's links point at was upgraded away (python3.11 -> 3.12), or .venv was copied from
    # another machine. Re-creating over it failed with "No such file or directory ... install python3-venv", the
    # wrong advice; and had it worked, the old stamp inside .venv would have skipped pip for the new site-packages.
    old = tmp_path / "old-python"
    old.mkdir()
    shutil.copy(sys.executable, old / "python3")
    venv.EnvBuilder(symlinks=True, with_pip=False).create(module.VENV_DIR)
    for link in (module.VENV_DIR / "bin").glob("python*"):
        link.unlink()
        link.symlink_to(old / "python3")
    shutil.rmtree(old)
    (module.VENV_DIR / module.STAMP_NAME).write_text("old stamp\n")
    monkeypatch.delenv("PIXART_INSTALL_STATE_DIR")  # the stamp that matters here is the one inside .venv
    inst = module.Installer(module.build_parser().parse_args(["--no-comfyui"]))
    inst.ensure_python()
    assert subprocess.run([inst.python, "-c", "import pip"], capture_output=True).returncode == 0
    assert not (module.VENV_DIR / module.STAMP_NAME).exists()


def test_a_kernel_warning_is_not_reported_as_no_comfyui(module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # ComfyUI found and linked, only the optional ahead-of-time kernel build failed (no C compiler): the summary
    # said "set-up done without ComfyUI", sending the user after a ComfyUI that is there.
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    monkeypatch.delenv("COMFYUI_DIR", raising=False)
    monkeypatch.setattr(module.Installer, "install_packages", lambda self: None)
    monkeypatch.setattr(module.Installer, "build_kernels",
                        lambda self: self.warnings.append("kernels not built ahead of time (numba's JIT is used)"))
    inst = module.Installer(module.build_parser().parse_args(["--use-current-python", "--comfyui", str(comfy)]))
    inst.setup()
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert "kernels not built" in summary and "without ComfyUI" not in summary, summary


def test_test_paths_are_taken_from_where_the_user_stands(tmp_path: Path) -> None:
    # pytest runs in the repository (its config and testpaths live there), so `cd tests && python3 ../install.py
    # --test test_x.py`, or a test file outside the repository, ended in "file or directory not found" (exit 4).
    mine = tmp_path / "my tests"
    mine.mkdir()
    (mine / "test_mine.py").write_text("def test_ok():\n    assert True\n")
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_DIR"}
    env["PIXART_INSTALL_STATE_DIR"] = str(tmp_path)
    proc = subprocess.run([sys.executable, str(INSTALL), "--skip-setup", "--use-current-python", "--test",
                           "my tests/test_mine.py::test_ok", "-k", "ok", "-p", "no:cacheprovider"],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_a_failed_test_run_after_a_complete_set_up_exits_non_zero(module, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # A pytest killed by a signal (the OOM killer) reports a negative status; it must not read as success.
    _quiet_setup(module, monkeypatch)
    monkeypatch.setattr(module, "wait_for", lambda cmd: (-9, False))
    status = module.main(["--use-current-python", "--no-comfyui", "--test"])
    assert status != 0 and (status & 0xFF) != 0


def test_ctrl_c_during_the_tests_waits_for_pytests_summary(module, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    # Ctrl-C reaches pytest and install.py alike: install.py died with a KeyboardInterrupt traceback (and, through
    # subprocess.call, killed pytest before its summary) instead of waiting for pytest to stop on its own
    _quiet_setup(module, monkeypatch)
    waits: list[str] = []

    class Pytest:
        def __init__(self, cmd, **kw):
            assert cmd[1:3] == ["-m", "pytest"] and kw["cwd"] == str(module.REPO_ROOT)

        def wait(self):
            waits.append("wait")
            if len(waits) == 1:
                raise KeyboardInterrupt
            return 2  # pytest's own status once it has stopped and printed its summary

        def kill(self):
            raise AssertionError("pytest was killed before its summary")

    monkeypatch.setattr(module.subprocess, "Popen", Pytest)
    assert module.main(["--use-current-python", "--no-comfyui", "--test"]) == 2
    assert waits == ["wait", "wait"]
    assert "tests interrupted (pytest exit 2)" in capsys.readouterr().out


def test_printed_commands_can_be_pasted_back(module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # A repository or ComfyUI path with a space was printed bare ("... clone ... /tmp/my ComfyUI"), so the line a
    # user copies to retry a failed step by hand runs something else.
    import shlex

    monkeypatch.delenv("COMFYUI_DIR", raising=False)
    wanted = tmp_path / "my ComfyUI"
    inst = module.Installer(module.build_parser().parse_args(["--use-current-python", "--dry-run",
                                                              "--comfyui", str(wanted)]))
    inst.ensure_comfyui()
    line = next(line for line in capsys.readouterr().out.splitlines() if "would run:" in line)
    assert shlex.split(line.split("would run: ", 1)[1])[-1] == str(wanted), line


def test_help_says_what_happens_to_the_arguments_after_test(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(INSTALL), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "passed on unchanged" not in text  # test paths are re-based on the current folder
    assert "ComfyUI checkout to use (or to clone into if absent or empty)" in text  # an empty folder is cloned into


def test_pytest_exit_2_is_an_interruption_only_after_ctrl_c(module) -> None:
    # pytest exits 2 on a collection error (an ImportError in a test module) as well
    assert "interrupted" in module.pytest_outcome(2, True)[1]
    status, message = module.pytest_outcome(2, False)
    assert status == 2 and message == "tests failed (pytest exit 2)"


@pytest.mark.parametrize("env_dir", [None, "valid"])
def test_comfyui_dir_is_left_alone_where_the_tests_find_the_same_checkout(module, tmp_path: Path, env_dir,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # exported without need, it outranked a COMFYUI_DIR the bridge reads from .env (its settings take the process
    # environment first)
    found = _fake_comfyui(tmp_path / "ComfyUI")
    if env_dir:
        monkeypatch.setenv("COMFYUI_DIR", str(found))
    else:
        monkeypatch.delenv("COMFYUI_DIR", raising=False)
    _quiet_setup(module, monkeypatch)
    monkeypatch.setattr(module.Installer, "ensure_comfyui", lambda self: setattr(self, "comfyui", found))
    seen: dict[str, str | None] = {}

    def fake_wait(cmd):
        seen["COMFYUI_DIR"] = os.environ.get("COMFYUI_DIR")
        return 0, False

    monkeypatch.setattr(module, "wait_for", fake_wait)
    module.main(["--use-current-python", "--test"])
    assert seen["COMFYUI_DIR"] == (str(found) if env_dir else None)


def test_run_after_an_incomplete_set_up_does_not_start_the_bridge(module, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # a failed pip run was followed by the bridge's start and its ImportError, burying the failure that mattered
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    monkeypatch.delenv("COMFYUI_DIR", raising=False)
    monkeypatch.setattr(module.Installer, "install_packages", lambda self: self.errors.append("pip install failed"))
    monkeypatch.setattr(module.Installer, "build_kernels", lambda self: None)
    started: list[list[str]] = []
    monkeypatch.setattr(module.os, "execv", lambda path, cmd: started.append(cmd))
    monkeypatch.setattr(module.subprocess, "call", lambda cmd: started.append(cmd) or 0)
    assert module.main(["--use-current-python", "--comfyui", str(comfy), "--run"]) == 1
    assert started == []
    assert "the bridge was not started: set-up is INCOMPLETE" in capsys.readouterr().out
