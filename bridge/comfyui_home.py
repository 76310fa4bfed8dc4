"""Where ComfyUI lives, and how the Pixart node pack is linked into it.

Standard library only: ``install.py`` imports this before any virtual environment exists, and the bridge and the
test harness import it too, so the lookup order exists in exactly one place.

Lookup order: an explicit path (``--comfyui``), then ``$COMFYUI_DIR``, then ``DEFAULT_COMFYUI_DIR``
(``~/ComfyUI``, outside the repository so that ComfyUI's code is never committed with ours).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

DEFAULT_COMFYUI_DIR: Path = Path.home() / "ComfyUI"
COMFYUI_ENV = "COMFYUI_DIR"
PINNED_COMFYUI_TAG = "v0.3.64"
COMFYUI_GIT_URL = "https://github.com/comfyanonymous/ComfyUI"

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
NODE_PACK_DIR: Path = REPO_ROOT / "custom_nodes" / "pixart_nodes"
NODE_PACK_NAME = "pixart_nodes"


def is_comfyui_dir(path: str | os.PathLike[str] | None) -> bool:
    """A directory counts as a ComfyUI checkout when it has ``main.py`` and the ``comfy/`` package."""
    if not path:
        return False
    p = Path(path).expanduser()
    return (p / "main.py").is_file() and (p / "comfy").is_dir()


def candidate_dirs(explicit: str | os.PathLike[str] | None = None) -> list[tuple[str, Path]]:
    """The places looked at, in order, each with where it came from (for messages)."""
    out: list[tuple[str, Path]] = []
    if explicit:
        out.append(("--comfyui", Path(explicit).expanduser()))
    env = os.environ.get(COMFYUI_ENV)
    if env:
        out.append((COMFYUI_ENV, Path(env).expanduser()))
    out.append(("default", DEFAULT_COMFYUI_DIR))
    return out


def find_comfyui(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The first valid checkout among ``explicit``, ``$COMFYUI_DIR``, ``~/ComfyUI``; None when none is valid.

    An invalid explicit path or ``$COMFYUI_DIR`` falls through to the next candidate rather than failing, so a
    stale variable does not hide a good default; callers that need strictness check ``is_comfyui_dir`` first.
    """
    for _source, path in candidate_dirs(explicit):
        if is_comfyui_dir(path):
            return path.resolve()
    return None


def ensure_node_pack_linked(comfyui_dir: str | os.PathLike[str], pack_dir: str | os.PathLike[str] = NODE_PACK_DIR,
                            name: str = NODE_PACK_NAME) -> str:
    """Make ``<comfyui>/custom_nodes/<name>`` point at the pack; idempotent.

    Returns what happened: ``"ok"`` (already linked), ``"linked"``, ``"relinked"`` (a link to elsewhere was
    replaced), ``"copied"`` (symlinks unavailable, e.g. Windows without developer mode; re-copied every call so
    the copy tracks the source). A real directory that is not our copy is never deleted: that raises
    ``FileExistsError`` naming the path.
    """
    source = Path(pack_dir).resolve()
    if not (source / "__init__.py").is_file():
        raise FileNotFoundError(f"node pack not found at {source}")
    custom_nodes = Path(comfyui_dir).expanduser() / "custom_nodes"
    custom_nodes.mkdir(parents=True, exist_ok=True)
    target = custom_nodes / name
    copy_marker = ".pixart_copy"
    state = "linked"
    if target.is_symlink():
        if target.resolve() == source:
            return "ok"
        target.unlink()
        state = "relinked"
    elif target.exists():
        if not (target / copy_marker).is_file():
            raise FileExistsError(f"{target} exists and is not a Pixart link or copy; move it away first")
        shutil.rmtree(target)
        state = "copied"
    try:
        target.symlink_to(source, target_is_directory=True)
        return state
    except OSError:
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (target / copy_marker).write_text(str(source) + "\n")
        return "copied"
