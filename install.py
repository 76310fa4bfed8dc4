#!/usr/bin/env python3
"""Set up Pixart: virtual environment, project install, ComfyUI checkout and requirements, node-pack link.

    python3 install.py            set up (idempotent; a second run only checks)
    python3 install.py --test     set up, then run the whole test suite (the CI command)
    python3 install.py --run      set up, then start the bridge (python -m bridge)

Everything after ``--test`` goes to pytest (test paths relative to the current folder work from anywhere) and
everything after ``--run`` goes to the bridge, e.g.
``python3 install.py --test tests/test_install.py -q`` or ``python3 install.py --run --port 8080``.

Standard library only: this runs before any environment exists.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parent
VENV_DIR = REPO_ROOT / ".venv"
STAMP_NAME = ".pixart-install-stamp"

# Pinned because ComfyUI's requirements name torch/torchvision/torchaudio unpinned, and unpinned torch makes pip pull
# the newest multi-GB CUDA build. torch 2.14.1 and torchvision 0.29.1 are a matching pair (torchvision's compiled ops
# must match torch exactly, or `import torchvision` fails); this machine's pip config serves them from a local
# index. torchaudio is dropped: it is optional to ComfyUI (only its audio nodes need it) and would drag in another
# torch-matched wheel.
TORCH_PINS = ("torch==2.14.1", "torchvision==0.29.1")
DROPPED_REQUIREMENTS = ("torchaudio",)
# ComfyUI 0.3.64's app/frontend_management.py imports requests without listing it in requirements.txt.
EXTRA_COMFYUI_REQUIREMENTS = ("requests",)

# Browsers the /docs test can drive (Debian's package is "chromium").
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# pytest's "no tests were collected" status.
PYTEST_NO_TESTS = 5
PYTEST_INTERRUPTED = 2  # also a collection error: said only after a Ctrl-C


def _load_by_path(relative: str, name: str) -> ModuleType:
    # Loaded by file path, not `import bridge...`: the packages around these stdlib-only modules need third-party
    # packages that do not exist yet when this script first runs.
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


home = _load_by_path("bridge/comfyui_home.py", "_pixart_comfyui_home")
pg_bin = _load_by_path("tests/support/pg_bin.py", "_pixart_pg_bin")


# seconds the ahead-of-time kernel build may take (it takes a minute or two)
KERNEL_BUILD_TIMEOUT = 900


def say(message: str) -> None:
    print(f"[install] {message}", flush=True)


# The project's extras pip installs: the test command's tools only for it (pytest, schemathesis, SeaweedFS, ...:
# a Pi or a container that only runs the bridge had them all); the Axera nodes' runtime always.
EXTRAS = "axera"
TEST_EXTRAS = "axera,test"


class Installer:
    def __init__(self, args: argparse.Namespace, *, tests: bool = False) -> None:
        self.args = args
        self.extras = TEST_EXTRAS if tests else EXTRAS
        # warnings: ComfyUI unavailable (integration tests then skip); errors: the environment is incomplete.
        self.warnings: list[str] = []
        self.errors: list[str] = []
        self.python: str = sys.executable
        self.comfyui: Path | None = None

    # -- helpers --------------------------------------------------------------------------------------------
    def run(self, cmd: list[str], what: str) -> bool:
        """Run ``cmd``; on failure record one clear line (plus the command's last lines) and return False."""
        if self.args.dry_run:
            say(f"would run: {shlex.join(cmd)}")
            return True
        say(f"{what}: {shlex.join(cmd)}")
        # stdout streams (pip's progress); stderr is kept to explain a failure in a few lines.
        proc = subprocess.run(cmd, cwd=str(REPO_ROOT), text=True, stderr=subprocess.PIPE)
        if proc.returncode == 0:
            if proc.stderr.strip():
                print(proc.stderr.rstrip(), file=sys.stderr)
            return True
        err = (proc.stderr or "").strip().splitlines()
        hint = ""
        text = "\n".join(err).lower()
        if any(s in text for s in ("could not find a version", "connection", "network", "name resolution",
                                   "temporary failure", "no matching distribution", "timed out")):
            hint = " (network or package index unavailable?)"
        tail = "\n".join("    " + line for line in err[-8:])
        self.errors.append(f"{what} failed{hint}")
        say(f"{what} failed with exit code {proc.returncode}{hint}; carrying on.\n{tail}")
        return False

    # -- steps ----------------------------------------------------------------------------------------------
    def ensure_python(self) -> None:
        if self.args.no_venv:
            self.python = sys.executable
            say(f"using the current Python: {self.python}")
            return
        py = Path(self.venv_python())
        runs, has_pip = _python_state(py)
        # A .venv whose python cannot run (an interrupted first run, a system Python upgraded away from under its
        # links, a copy from another machine) never heals by itself: it is rebuilt from scratch, so that writes
        # never go through a dangling link and the old install record inside it goes too. One whose python runs
        # without pip (ensurepip interrupted, a `uv venv`) only gets pip: its packages stay.
        rebuild = not runs and (VENV_DIR.exists() or VENV_DIR.is_symlink())
        if runs and has_pip:
            say(f"virtual environment: {VENV_DIR} (exists)")
        elif self.args.dry_run:
            say(f"would {'re-create the broken' if rebuild else 'add pip to the' if runs else 'create the'} "
                f"virtual environment {VENV_DIR}")
        else:
            say(f"re-creating the virtual environment {VENV_DIR} (its python does not run)" if rebuild
                else f"adding pip to the virtual environment {VENV_DIR}" if runs
                else f"creating the virtual environment {VENV_DIR}")
            try:
                venv.create(VENV_DIR, with_pip=True, upgrade_deps=False, clear=rebuild)
            except Exception as exc:  # noqa: BLE001 - venv raises CalledProcessError/OSError/others
                raise SystemExit(f"[install] could not create {VENV_DIR}: {exc}. On Debian/Ubuntu install "
                                 "python3-venv, or pass --use-current-python.") from exc
        self.python = str(py)

    def ensure_comfyui(self) -> None:
        if self.args.no_comfyui:
            say("ComfyUI: skipped (--no-comfyui)")
            return
        explicit = self.args.comfyui
        if explicit and not home.is_comfyui_dir(explicit):
            why = "is not a ComfyUI checkout (needs main.py and comfy/)" if Path(explicit).expanduser().exists() \
                else "does not exist (ComfyUI is cloned there only if no other checkout is found)"
            say(f"--comfyui {explicit} {why}; looking at {home.COMFYUI_ENV} and {home.DEFAULT_COMFYUI_DIR}")
        env = os.environ.get(home.COMFYUI_ENV)
        if env and not home.is_comfyui_dir(env):
            why = "is not a ComfyUI checkout (needs main.py and comfy/)" if Path(env).expanduser().exists() \
                else "does not exist"
            say(f"{home.COMFYUI_ENV}={env} {why}; looking elsewhere")
        for source, path in home.candidate_dirs(explicit):
            if home.is_comfyui_dir(path):
                self.comfyui = path.resolve()
                say(f"ComfyUI: {self.comfyui} (from {source})")
                return
        # None found: clone where the user asked (a --comfyui path that does not exist yet, or an empty folder
        # made for it), else the default.
        asked = Path(explicit).expanduser() if explicit else None
        target = asked if asked is not None and (not asked.exists() or (asked.is_dir() and not any(asked.iterdir()))) \
            else home.DEFAULT_COMFYUI_DIR
        if target.exists() and any(target.iterdir()):
            self.warnings.append(f"{target} exists but is not a ComfyUI checkout")
            say(f"{target} exists but is not a ComfyUI checkout; not cloning over it. Continuing without ComfyUI "
                "(pass --comfyui PATH).")
            return
        git = shutil.which("git")
        if git is None:
            self.warnings.append("git not found, no ComfyUI")
            say(f"git not found: cannot clone ComfyUI {home.PINNED_COMFYUI_TAG}; continuing without ComfyUI "
                "(install git or pass --comfyui PATH).")
            return
        cmd = [git, "clone", "--depth", "1", "--branch", home.PINNED_COMFYUI_TAG, home.COMFYUI_GIT_URL, str(target)]
        if self.args.dry_run:
            say(f"would run: {shlex.join(cmd)}")
            return
        say(f"no ComfyUI found; cloning {home.PINNED_COMFYUI_TAG} into {target}")
        proc = subprocess.run(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if proc.returncode != 0 or not home.is_comfyui_dir(target):
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            self.warnings.append("ComfyUI clone failed")
            say(f"could not clone ComfyUI (network unavailable?): {last}; continuing without ComfyUI.")
            return
        self.comfyui = target.resolve()

    def stamp_path(self) -> Path | None:
        # Where the record of the last install is kept can be moved (PIXART_INSTALL_STATE_DIR), so that a run
        # with another HOME or interpreter - the install tests, a CI sandbox - never reads the real one.
        state_dir = os.environ.get("PIXART_INSTALL_STATE_DIR")
        if state_dir:
            return Path(state_dir) / STAMP_NAME
        if not self.args.no_venv:
            return VENV_DIR / STAMP_NAME
        # The current interpreter's prefix may be a system directory; no stamp then, pip just re-checks.
        prefix = Path(sys.prefix)
        return prefix / STAMP_NAME if os.access(prefix, os.W_OK) else None

    def install_packages(self) -> None:
        stamp = self.stamp_path()
        reqs = comfyui_requirements(self.comfyui) if self.comfyui else None
        # an install with the test extras holds everything the bridge alone needs
        enough = {extras: install_fingerprint(REPO_ROOT / "pyproject.toml", reqs, self.python, extras)
                  for extras in dict.fromkeys((self.extras, TEST_EXTRAS))}
        digest = enough[self.extras]
        done = stamp is not None and stamp.is_file() and stamp.read_text().strip() in enough.values()
        if done and not self.args.force:
            say(f"dependencies unchanged since the last install ({stamp.name}); skipping pip (--force reinstalls)")
            return
        if stamp is not None and not self.args.dry_run:
            # A pip run that dies midway may already have removed what the old record vouches for.
            stamp.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(prefix="pixart-install-") as tmp:
            constraints = Path(tmp) / "constraints.txt"
            constraints.write_text("\n".join(TORCH_PINS) + "\n")
            pip = [self.python, "-m", "pip", "install", "-c", str(constraints)]
            ok = self.run(pip + ["-e", f"{REPO_ROOT}[{self.extras}]"], "installing the project")
            if reqs is not None:
                req_file = Path(tmp) / "comfyui-requirements.txt"
                req_file.write_text("\n".join(reqs) + "\n")
                ok = self.run(pip + ["-r", str(req_file)], "installing ComfyUI's requirements") and ok
        if ok and stamp is not None and not self.args.dry_run:
            stamp.write_text(digest + "\n")

    def build_kernels(self) -> None:
        """The pack's quantize/dither kernels compiled ahead of time, so a fresh process skips numba's start-up
        (pixart_nodes/core/jit.py). Optional: without a C compiler the same kernels run through numba's JIT."""
        cmd = [self.python, "-m", "pixart_nodes.core.build_kernels"]
        if self.args.dry_run:
            say(f"would run: {shlex.join(cmd)}")
            return
        # never fatal: numba's pycc is deprecated, a C compiler may be missing, a build may hang
        try:
            proc = subprocess.run(cmd, cwd=str(REPO_ROOT), text=True, capture_output=True,
                                  timeout=KERNEL_BUILD_TIMEOUT)
            ok, why = proc.returncode == 0, (proc.stderr or proc.stdout).strip().splitlines()[-4:]
        except (OSError, subprocess.TimeoutExpired) as exc:
            ok, why, proc = False, [f"{type(exc).__name__}: {exc}"], None
        if ok and proc is not None:
            say(proc.stdout.strip() or "kernels built")
        else:
            self.warnings.append("kernels not built ahead of time (numba's JIT is used)")
            say("ahead-of-time kernel build failed; numba's JIT will be used:\n    " + "\n    ".join(why))

    def link_node_pack(self) -> None:
        if self.comfyui is None:
            return
        target = self.comfyui / "custom_nodes" / home.NODE_PACK_NAME
        if self.args.dry_run:
            say(f"would link {home.NODE_PACK_DIR} -> {target}")
            return
        try:
            state = home.ensure_node_pack_linked(self.comfyui)
        except OSError as exc:
            self.errors.append("node pack link failed")
            say(f"could not link the node pack into {target}: {exc}")
            return
        words = {"ok": "already linked", "linked": "linked", "relinked": "re-linked (it pointed elsewhere)",
                 "copied": "copied (symlinks unavailable; re-run after changing the pack)"}
        say(f"node pack: {target} {words.get(state, state)}")

    def setup(self) -> None:
        if sys.version_info < (3, 10):
            raise SystemExit("[install] Python 3.10 or newer is needed")
        self.ensure_python()
        self.ensure_comfyui()
        self.install_packages()
        self.build_kernels()
        self.link_node_pack()
        if self.args.dry_run:
            say("dry run: nothing was changed")
        elif self.errors:
            say("set-up INCOMPLETE: " + "; ".join(self.errors + self.warnings))
        elif self.warnings:
            head = "set-up done without ComfyUI" if self.comfyui is None and not self.args.no_comfyui \
                else "set-up done, with notes"
            say(f"{head}: " + "; ".join(self.warnings))
        else:
            say("set-up complete")

    def check_postgres(self) -> None:
        """The PostgreSQL server the shared-store tests start (in a temporary folder, from the machine's server
        binaries). Without it the bridge still runs (SQLite) and those tests are skipped, saying why."""
        found = pg_bin.find_pg_bin()
        if found:
            say(f"PostgreSQL server binaries: {found} (the shared-store tests start a server from them)")
            return
        self.warnings.append("no PostgreSQL server binaries (apt install postgresql, or set PIXART_PG_BIN)")
        say("PostgreSQL server binaries not found: the bridge keeps using SQLite, and the tests of several replicas "
            "on PostgreSQL are skipped. To run them: apt install postgresql (Debian/Ubuntu), brew install "
            "postgresql (macOS), or set PIXART_PG_BIN to the folder of initdb and pg_ctl.")

    def ensure_test_tools(self) -> None:
        """System programs some tests drive: Debian's chromium for the /docs browser test (installed with apt-get
        where that is possible: root, Debian/Ubuntu), and PostgreSQL's server binaries (looked for); elsewhere the
        tests that need them are skipped with the reason."""
        self.check_postgres()
        found = next((shutil.which(c) for c in CHROMIUM_NAMES if shutil.which(c)), None)
        if found:
            say(f"chromium: {found}")
            return
        apt = shutil.which("apt-get")
        if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
            self.warnings.append("no chromium (install Debian's chromium package for the /docs browser test)")
            say("chromium not found and apt-get is not usable here; the /docs browser test will be skipped")
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = [apt, "install", "-y", "-q", "--no-install-recommends", "chromium"]
        if self.args.dry_run:
            say(f"would run: {shlex.join(cmd)}")
            return
        say(f"installing chromium for the browser test: {shlex.join(cmd)}")
        ok = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        if not ok:  # a fresh machine may have no package lists yet
            subprocess.run([apt, "update", "-q"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ok = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        if not ok:
            self.warnings.append("chromium could not be installed")
            say("could not install chromium; the /docs browser test will be skipped")

    def venv_python(self) -> str:
        if self.args.no_venv:
            return sys.executable
        return str(VENV_DIR / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))


def comfyui_requirements(comfyui_dir: Path) -> list[str]:
    """ComfyUI's requirements.txt without comments and torchaudio, plus what it forgets to list."""
    req_file = comfyui_dir / "requirements.txt"
    lines = req_file.read_text(encoding="utf-8").splitlines() if req_file.is_file() else []
    out: list[str] = []
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name = line.replace(" ", "")
        for sep in ("==", ">=", "<=", "~=", "!=", ">", "<", "[", ";", "@"):
            name = name.split(sep, 1)[0]
        if name.lower() in DROPPED_REQUIREMENTS:
            continue
        out.append(line)
    present = {r.split("=")[0].split(">")[0].split("<")[0].strip().lower() for r in out}
    out += [r for r in EXTRA_COMFYUI_REQUIREMENTS if r not in present]
    return out


def install_fingerprint(pyproject: Path, comfyui_reqs: list[str] | None, python: str, extras: str) -> str:
    """What decides whether pip must run again: our dependencies and extras, ComfyUI's, the pins and the
    interpreter."""
    h = hashlib.sha256()
    h.update(b"extras:" + extras.encode())
    h.update(pyproject.read_bytes() if pyproject.is_file() else b"")
    h.update(b"\0comfyui:" + ("\n".join(comfyui_reqs).encode() if comfyui_reqs is not None else b"<none>"))
    h.update(b"\0pins:" + "\n".join(TORCH_PINS).encode())
    h.update(b"\0python:" + python.encode())
    return h.hexdigest()


def pytest_outcome(code: int, interrupted: bool = False) -> tuple[int, str]:
    """Map pytest's exit status to ours: "no tests collected" is not a failure, but it is said out loud."""
    if code == 0:
        return 0, "tests passed"
    if code == PYTEST_NO_TESTS:
        return 0, "NO TESTS RAN: pytest collected nothing (exit 5); treated as success, check the selection"
    if code == PYTEST_INTERRUPTED and interrupted:
        return code, "tests interrupted (pytest exit 2): the summary above covers the tests that ran"
    return code, f"tests failed (pytest exit {code})"


def wait_for(cmd: list[str]) -> tuple[int, bool]:
    """Run `cmd` in the repository; its status, and whether Ctrl-C came meanwhile. Ctrl-C reaches the child too
    (one process group): pytest stops and prints its summary, so this waits on for it instead of dying with a
    traceback of its own."""
    proc = subprocess.Popen(cmd, cwd=str(REPO_ROOT))
    interrupted = False
    while True:
        try:
            return proc.wait(), interrupted
        except KeyboardInterrupt:
            interrupted = True


def split_argv(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """Split at the first ``--test``/``--run``: what follows belongs to pytest or the bridge, not to us."""
    for i, arg in enumerate(argv):
        if arg in ("--test", "--run"):
            return argv[:i], arg[2:], argv[i + 1:]
    return argv, None, []


def _python_state(py: Path) -> tuple[bool, bool]:
    """(the interpreter runs, it imports pip)"""
    try:
        code = subprocess.run([str(py), "-c", "import sys, importlib.util; "
                               "sys.exit(0 if importlib.util.find_spec('pip') else 3)"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    except OSError:  # missing, a dangling link, not executable, another OS's binary
        return False, False
    return code in (0, 3), code == 0


def paths_from_here(args: list[str], here: Path) -> list[str]:
    """pytest runs in the repository (its configuration and testpaths are there), so test paths the user gave
    relative to where they stand are made absolute; only those that exist from there and not from the repository,
    and never the expression after -k or -m."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if not arg.startswith("-") and (i == 0 or args[i - 1] not in ("-k", "-m")):
            path, sep, node = arg.partition("::")
            if path and (here / path).exists() and not (REPO_ROOT / path).exists():
                arg = str((here / path).resolve()) + sep + node
        out.append(arg)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="install.py",
        description="Set up Pixart: .venv, the project and its dependencies, ComfyUI (found or cloned at "
                    f"{home.PINNED_COMFYUI_TAG}) with its requirements, and the node-pack link. Idempotent.",
        epilog="Then: --test [PYTEST ARGS...] runs the test suite with the venv's pytest (the CI command); "
               "--run [BRIDGE ARGS...] starts the bridge (python -m bridge). Everything after --test/--run is "
               "passed on (test paths may be relative to the current folder). ComfyUI is looked for at "
               f"--comfyui, then $COMFYUI_DIR, then {home.DEFAULT_COMFYUI_DIR}.")
    parser.add_argument("--comfyui", metavar="PATH",
                        help="ComfyUI checkout to use (or to clone into if absent or empty)")
    parser.add_argument("--no-comfyui", action="store_true", help="skip finding/cloning ComfyUI, its "
                        "requirements and the node-pack link")
    parser.add_argument("--no-venv", "--use-current-python", dest="no_venv", action="store_true",
                        help="install into the Python running this script instead of .venv")
    parser.add_argument("--force", action="store_true", help="run pip even when nothing changed")
    parser.add_argument("--skip-setup", action="store_true",
                        help="do no set-up at all; only --test/--run with the existing environment")
    parser.add_argument("--dry-run", action="store_true", help="print what would be done without doing it")
    parser.add_argument("--test", action="store_true", help="after set-up, run pytest with the remaining args")
    parser.add_argument("--run", action="store_true", help="after set-up, start the bridge with the remaining args")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, action, rest = split_argv(argv)
    args = build_parser().parse_args(ours)
    inst = Installer(args, tests=action == "test")
    if args.skip_setup:
        inst.python = inst.venv_python()
        if not Path(inst.python).is_file():
            raise SystemExit(f"[install] --skip-setup, but {inst.python} does not exist; run without --skip-setup")
    else:
        inst.setup()
    status = 1 if inst.errors else 0
    if args.skip_setup and not args.no_comfyui and args.comfyui:
        if home.is_comfyui_dir(args.comfyui):
            inst.comfyui = Path(args.comfyui).expanduser().resolve()
        else:  # set-up, which would look elsewhere or clone, is skipped: the tests and the bridge look themselves
            say(f"--comfyui {args.comfyui} is not a ComfyUI checkout (needs main.py and comfy/); not used")
    env_dir = os.environ.get(home.COMFYUI_ENV)
    if inst.comfyui is not None and (args.comfyui or (env_dir and not home.is_comfyui_dir(env_dir))):
        # The tests' harness and the bridge look ComfyUI up themselves (COMFYUI_DIR, then ~/ComfyUI, the bridge
        # its .env too): they miss a --comfyui checkout, and a stale COMFYUI_DIR that set-up stepped past stops
        # the bridge. Otherwise they find it as set-up did, and a COMFYUI_DIR in .env keeps its say.
        os.environ[home.COMFYUI_ENV] = str(inst.comfyui)
    if action == "test":
        if not args.skip_setup:
            inst.ensure_test_tools()
        cmd = [inst.python, "-m", "pytest", *paths_from_here(rest, Path.cwd())]
        if args.dry_run:
            say(f"would run: {shlex.join(cmd)}")
            return 0
        say(f"running the tests: {shlex.join(cmd)}")
        test_status, message = pytest_outcome(*wait_for(cmd))
        say(message)
        if inst.warnings:
            say("note: " + "; ".join(inst.warnings) + " (the tests that need them were skipped, each with its reason)")
        status = test_status or status
    elif action == "run":
        cmd = [inst.python, "-m", "bridge", *rest]
        if inst.errors and not args.dry_run:
            # a bridge started over a failed pip run or link dies on an import error or fails every job; the
            # failure above is the one to read (A1111's launch.py stops there too)
            say("the bridge was not started: set-up is INCOMPLETE (see above); mend that, or start it anyway "
                "with --skip-setup --run")
            return status
        if args.dry_run:
            say(f"would run: {shlex.join(cmd)}")
            return 0
        say(f"starting the bridge: {shlex.join(cmd)}")
        sys.stdout.flush()
        os.chdir(REPO_ROOT)
        if os.name == "nt":  # execv on Windows spawns and returns, losing Ctrl-C handling
            return subprocess.call(cmd)
        os.execv(cmd[0], cmd)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
