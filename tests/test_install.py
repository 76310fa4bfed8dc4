"""install.py and bridge.comfyui_home: help, ComfyUI lookup order, node-pack link, offline/no-git path, stamp.

install.py runs as a child process (as a user runs it) with ``--dry-run`` wherever it would otherwise clone or pip
install, and with HOME/COMFYUI_DIR/PATH pointed at temporary directories so the real ~/ComfyUI is never touched.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import comfyui_home

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "install.py"


def _fake_comfyui(path: Path) -> Path:
    (path / "comfy").mkdir(parents=True)
    (path / "main.py").write_text("# not really ComfyUI\n")
    (path / "requirements.txt").write_text("torch\ntorchvision\ntorchaudio\nnumpy>=1.25.0\n# comment\naiohttp>=3.11\n")
    return path


def _run_install(*args: str, home: Path, comfyui_env: Path | None = None, path: str | None = None,
                 timeout: float = 120, state_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_DIR", "PIXART_INSTALL_STATE_DIR")}
    env["HOME"] = str(home)
    # Never the real environment's install record: a test's run must not depend on what was installed before.
    env["PIXART_INSTALL_STATE_DIR"] = str(state_dir or home / ".install-state")
    if comfyui_env is not None:
        env["COMFYUI_DIR"] = str(comfyui_env)
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, str(INSTALL), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=str(REPO))


def _load_install_module():
    spec = importlib.util.spec_from_file_location("pixart_install_under_test", INSTALL)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_help_lists_the_options(tmp_path: Path) -> None:
    proc = _run_install("--help", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for option in ("--comfyui", "--no-comfyui", "--no-venv", "--use-current-python", "--test", "--run", "--force"):
        assert option in proc.stdout
    assert "COMFYUI_DIR" in proc.stdout


def test_is_comfyui_dir_needs_main_py_and_comfy_package(tmp_path: Path) -> None:
    assert not comfyui_home.is_comfyui_dir(tmp_path)
    (tmp_path / "main.py").write_text("")
    assert not comfyui_home.is_comfyui_dir(tmp_path)  # main.py alone is not enough
    (tmp_path / "comfy").mkdir()
    assert comfyui_home.is_comfyui_dir(tmp_path)
    assert not comfyui_home.is_comfyui_dir(None)


def test_find_order_explicit_then_env_then_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = _fake_comfyui(tmp_path / "explicit")
    from_env = _fake_comfyui(tmp_path / "env")
    default = _fake_comfyui(tmp_path / "default")
    monkeypatch.setattr(comfyui_home, "DEFAULT_COMFYUI_DIR", default)
    monkeypatch.setenv("COMFYUI_DIR", str(from_env))
    assert comfyui_home.find_comfyui(explicit) == explicit.resolve()
    assert comfyui_home.find_comfyui() == from_env.resolve()
    # An invalid explicit path or variable falls through instead of hiding a good checkout.
    assert comfyui_home.find_comfyui(tmp_path / "nowhere") == from_env.resolve()
    monkeypatch.setenv("COMFYUI_DIR", str(tmp_path / "nowhere"))
    assert comfyui_home.find_comfyui() == default.resolve()
    monkeypatch.delenv("COMFYUI_DIR")
    assert comfyui_home.find_comfyui() == default.resolve()
    monkeypatch.setattr(comfyui_home, "DEFAULT_COMFYUI_DIR", tmp_path / "absent")
    assert comfyui_home.find_comfyui() is None


def test_install_reports_the_same_order(tmp_path: Path) -> None:
    home = tmp_path / "home"
    default = _fake_comfyui(home / "ComfyUI")
    explicit = _fake_comfyui(tmp_path / "explicit")
    from_env = _fake_comfyui(tmp_path / "env")
    common = ("--dry-run", "--use-current-python")

    proc = _run_install(*common, "--comfyui", str(explicit), home=home, comfyui_env=from_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ComfyUI: {explicit} (from --comfyui)" in proc.stdout

    proc = _run_install(*common, home=home, comfyui_env=from_env)
    assert f"ComfyUI: {from_env} (from COMFYUI_DIR)" in proc.stdout

    proc = _run_install(*common, home=home)
    assert f"ComfyUI: {default} (from default)" in proc.stdout
    # Dry run: says it would link, and does not.
    assert "would link" in proc.stdout
    assert not (default / "custom_nodes").exists()

    proc = _run_install(*common, "--no-comfyui", home=home)
    assert "ComfyUI: skipped (--no-comfyui)" in proc.stdout
    assert "requirements" not in proc.stdout


def test_link_is_idempotent_and_never_deletes_foreign_dirs(tmp_path: Path) -> None:
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    target = comfy / "custom_nodes" / "pixart_nodes"
    assert comfyui_home.ensure_node_pack_linked(comfy) == "linked"
    assert target.is_symlink() and target.resolve() == comfyui_home.NODE_PACK_DIR.resolve()
    assert comfyui_home.ensure_node_pack_linked(comfy) == "ok"
    assert comfyui_home.ensure_node_pack_linked(comfy) == "ok"
    assert (target / "__init__.py").is_file()

    # A link to somewhere else (another clone of the repo) is replaced.
    target.unlink()
    elsewhere = tmp_path / "old_pack"
    elsewhere.mkdir()
    target.symlink_to(elsewhere, target_is_directory=True)
    assert comfyui_home.ensure_node_pack_linked(comfy) == "relinked"
    assert target.resolve() == comfyui_home.NODE_PACK_DIR.resolve()

    # A real directory we did not create is left alone, with an error naming it.
    target.unlink()
    target.mkdir()
    (target / "user_file.py").write_text("keep me")
    with pytest.raises(FileExistsError, match="pixart_nodes"):
        comfyui_home.ensure_node_pack_linked(comfy)
    assert (target / "user_file.py").read_text() == "keep me"


def test_link_falls_back_to_a_copy_where_symlinks_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    comfy = _fake_comfyui(tmp_path / "ComfyUI")

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError("symlinks not permitted")

    monkeypatch.setattr(Path, "symlink_to", refuse)
    target = comfy / "custom_nodes" / "pixart_nodes"
    assert comfyui_home.ensure_node_pack_linked(comfy) == "copied"
    assert not target.is_symlink()
    assert (target / "__init__.py").read_bytes() == (comfyui_home.NODE_PACK_DIR / "__init__.py").read_bytes()
    # A second run refreshes our own copy instead of refusing it as foreign.
    (target / "stale.py").write_text("old")
    assert comfyui_home.ensure_node_pack_linked(comfy) == "copied"
    assert not (target / "stale.py").exists()


def test_without_git_one_clear_line_then_carries_on(tmp_path: Path) -> None:
    # PATH holds only a python: no git anywhere. HOME has no ComfyUI and COMFYUI_DIR is unset.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    home = tmp_path / "home"
    home.mkdir()
    proc = _run_install("--dry-run", "--use-current-python", home=home, path=str(bin_dir))
    lines = proc.stdout.splitlines()
    git_lines = [line for line in lines if "git" in line.lower()]
    assert len(git_lines) == 1, proc.stdout
    assert "git not found" in git_lines[0] and "continuing without ComfyUI" in git_lines[0]
    # Carried on: the project install step still ran (dry) after the git line, and nothing failed.
    after = lines[lines.index(git_lines[0]) + 1:]
    assert any("pip install" in line and "-e" in line for line in after), proc.stdout
    assert not any("ComfyUI's requirements" in line or "comfyui-requirements" in line for line in lines)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (home / "ComfyUI").exists()


def test_clone_failure_is_one_line_and_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # A git that fails the way an offline clone does. The step is called in-process: a real clone attempt
    # must happen (so no --dry-run), but the pip steps after it must not.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git = bin_dir / "git"
    git.write_text("#!/bin/sh\necho \"fatal: unable to access 'https://github.com/': Could not resolve host\" >&2\n"
                   "exit 128\n")
    git.chmod(0o755)
    module = _load_install_module()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("COMFYUI_DIR", raising=False)
    monkeypatch.setattr(module.home, "DEFAULT_COMFYUI_DIR", tmp_path / "home" / "ComfyUI")
    inst = module.Installer(module.build_parser().parse_args(["--use-current-python"]))
    inst.ensure_comfyui()
    out = capsys.readouterr().out.splitlines()
    failure = [line for line in out if "could not clone" in line]
    assert len(failure) == 1 and "Could not resolve host" in failure[0] and "continuing" in failure[0], out
    assert inst.comfyui is None
    assert inst.warnings == ["ComfyUI clone failed"] and inst.errors == []


def test_comfyui_requirements_drop_torchaudio_and_add_requests(tmp_path: Path) -> None:
    module = _load_install_module()
    reqs = module.comfyui_requirements(_fake_comfyui(tmp_path / "c"))
    assert reqs == ["torch", "torchvision", "numpy>=1.25.0", "aiohttp>=3.11", "requests"]
    assert module.TORCH_PINS == ("torch==2.14.1", "torchvision==0.29.1")


def test_fingerprint_changes_with_inputs(tmp_path: Path) -> None:
    module = _load_install_module()
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[project]\nname='x'\n")
    base = module.install_fingerprint(pyproject, ["numpy"], "/py", "axera")
    assert module.install_fingerprint(pyproject, ["numpy"], "/py", "axera") == base
    assert module.install_fingerprint(pyproject, ["numpy", "scipy"], "/py", "axera") != base
    assert module.install_fingerprint(pyproject, None, "/py", "axera") != base
    assert module.install_fingerprint(pyproject, ["numpy"], "/other-py", "axera") != base
    assert module.install_fingerprint(pyproject, ["numpy"], "/py", "axera,test") != base
    pyproject.write_text("[project]\nname='y'\n")
    assert module.install_fingerprint(pyproject, ["numpy"], "/py", "axera") != base


def test_second_run_skips_pip_when_stamp_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    module = _load_install_module()
    args = module.build_parser().parse_args(["--use-current-python", "--no-comfyui"])
    inst = module.Installer(args)
    stamp = tmp_path / "stamp"
    monkeypatch.setattr(inst, "stamp_path", lambda: stamp)
    calls: list[list[str]] = []
    monkeypatch.setattr(inst, "run", lambda cmd, what: calls.append(cmd) or True)
    inst.install_packages()
    assert len(calls) == 1 and "-e" in calls[0] and stamp.is_file()
    inst.install_packages()
    assert len(calls) == 1  # unchanged: pip not run again
    assert "skipping pip" in capsys.readouterr().out
    args.force = True
    inst.install_packages()
    assert len(calls) == 2
    # A failed pip run leaves no stamp, so the next run tries again.
    stamp.unlink()
    monkeypatch.setattr(inst, "run", lambda cmd, what: calls.append(cmd) and False)
    args.force = False
    inst.install_packages()
    assert not stamp.exists()


def test_only_the_test_command_installs_the_test_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The main command (and a plain set-up: the Pi guide's, the Dockerfile's) installed the test extras too:
    pytest, schemathesis, SeaweedFS, onnx, ... on a Pi that only runs the bridge. Now only the test command does; an
    install with them satisfies a later main command (no pip run), not the other way round."""
    module = _load_install_module()
    stamp = tmp_path / "stamp"
    calls: list[list[str]] = []

    def installer(action: str) -> object:
        inst = module.Installer(module.build_parser().parse_args(["--use-current-python", "--no-comfyui"]),
                                tests=action == "test")
        monkeypatch.setattr(inst, "stamp_path", lambda: stamp)
        monkeypatch.setattr(inst, "run", lambda cmd, what: calls.append(cmd) or True)
        return inst

    installer("run").install_packages()
    assert calls[-1][-1].endswith("[axera]"), calls
    installer("test").install_packages()
    assert len(calls) == 2 and calls[-1][-1].endswith("[axera,test]"), calls
    installer("run").install_packages()
    assert len(calls) == 2  # the test install holds what the bridge needs
    installer("test").install_packages()
    assert len(calls) == 2


def test_pytest_exit_5_is_not_a_failure_but_is_said(tmp_path: Path) -> None:
    module = _load_install_module()
    assert module.pytest_outcome(0)[0] == 0
    assert module.pytest_outcome(1)[0] == 1
    status, message = module.pytest_outcome(5)
    assert status == 0 and "NO TESTS RAN" in message

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _run_install("--skip-setup", "--use-current-python", "--test", str(empty), "-p", "no:cacheprovider",
                        home=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NO TESTS RAN" in proc.stdout

    failing = tmp_path / "failing"
    failing.mkdir()
    (failing / "test_fails.py").write_text("def test_fails():\n    assert 1 == 2\n")
    proc = _run_install("--skip-setup", "--use-current-python", "--test", str(failing), "-p", "no:cacheprovider",
                        home=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "tests failed" in proc.stdout


def test_split_argv_hands_the_rest_to_pytest_or_the_bridge() -> None:
    module = _load_install_module()
    assert module.split_argv(["--force", "--test", "-k", "x", "--comfyui", "y"]) == \
        (["--force"], "test", ["-k", "x", "--comfyui", "y"])
    assert module.split_argv(["--run", "--port", "1"]) == ([], "run", ["--port", "1"])
    assert module.split_argv(["--force"]) == (["--force"], None, [])


def test_ci_script_is_the_readme_test_command() -> None:
    script = (REPO / ".ci" / "run").read_text()
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script
    assert script.strip().splitlines()[-1] == "exec python3 install.py --test"
    assert os.access(REPO / ".ci" / "run", os.X_OK)


def test_test_command_on_a_machine_without_comfyui(tmp_path: Path) -> None:
    """The README's test command where no ComfyUI can be found or cloned (no git, empty HOME, no COMFYUI_DIR):
    set-up carries on, the tests run, and those that need ComfyUI are skipped with a visible reason."""
    module = _load_install_module()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    home = tmp_path / "home"
    home.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    # What this interpreter already has installed: the install step finds nothing to do (no pip run, no network).
    digest = module.install_fingerprint(REPO / "pyproject.toml", None, sys.executable, module.TEST_EXTRAS)
    (state / module.STAMP_NAME).write_text(digest + "\n")
    proc = _run_install("--use-current-python", "--test", "tests/test_engine_comfyui.py", "-k",
                        "double_object_info", "-rs", "-p", "no:cacheprovider", home=home, path=str(bin_dir),
                        state_dir=state, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "git not found" in out and "continuing without ComfyUI" in out
    assert "skipping pip" in out
    assert "1 skipped" in out and "no ComfyUI checkout" in out  # pytest's -rs line carries the reason
    assert "tests passed" in out and "note:" in out
