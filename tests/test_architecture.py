"""The boundaries docs/architecture.md draws, checked on the import statements themselves: adapters never import one
another (only `bridge.*` and `bridge.adapters.toolkit`), the engine and the request layer never import an adapter,
and the node pack's core never imports ComfyUI or the bridge."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = ROOT / "bridge" / "adapters"


def imports(path: Path, root: Path = ROOT) -> list[str]:
    """Absolute names of every module `path` imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1]).removeprefix("custom_nodes.")
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append(name)
            found += [f"{name}.{alias.name}" for alias in node.names]
    return found


def dialect_of(module: str, adapters: Path = ADAPTERS) -> str | None:
    """`bridge.adapters.a1111.routes` -> "a1111"; None for the toolkit, the registry package itself and names it
    defines (`bridge.adapters.AdapterLoadError`)."""
    parts = module.split(".")
    if parts[:2] != ["bridge", "adapters"] or len(parts) < 3 or parts[2] in ("toolkit", "__init__"):
        return None
    name = parts[2]
    return name if (adapters / name).is_dir() or (adapters / f"{name}.py").is_file() else None


ADAPTER_FILES = sorted(p for p in ADAPTERS.rglob("*.py") if p.parent != ADAPTERS or p.stem not in ("__init__",
                                                                                                     "toolkit"))


@pytest.mark.parametrize("path", ADAPTER_FILES, ids=lambda p: str(p.relative_to(ADAPTERS)))
def test_no_adapter_imports_another(path: Path) -> None:
    own = dialect_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
    others = {d for d in map(dialect_of, imports(path)) if d is not None and d != own}
    # a name imported from the adapters package itself (`from bridge.adapters import x`) counts as x
    assert not others, f"{path.relative_to(ROOT)} imports the {sorted(others)} adapter(s)"


@pytest.mark.parametrize("path", sorted((ROOT / "bridge").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_below_the_adapters_imports_one(path: Path) -> None:
    if ADAPTERS in path.parents:
        return
    if path == ADAPTERS / "__init__.py":
        return  # the registry is what wires adapters in
    bad = [m for m in imports(path) if dialect_of(m) is not None or m.startswith("bridge.adapters.toolkit")]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("path", sorted((ROOT / "custom_nodes" / "pixart_nodes" / "core").rglob("*.py")),
                         ids=lambda p: p.name)
def test_the_packs_core_needs_neither_comfyui_nor_the_bridge(path: Path) -> None:
    comfy = ("comfy", "comfy_extras", "folder_paths", "nodes", "server", "execution", "node_helpers")
    bad = [m for m in imports(path) if m.split(".")[0] in comfy or m.startswith("bridge")]
    assert not bad, f"{path.name} imports {bad}"


def test_the_check_catches_a_cross_import(tmp_path: Path) -> None:
    # The rule itself can fail: a file of one adapter that imports two others is found; its own package and the
    # toolkit are not counted.
    adapters = tmp_path / "bridge" / "adapters" / "a1111"
    adapters.mkdir(parents=True)
    (adapters / "x.py").write_text("from bridge.adapters.jobs_api import dialect\nfrom ..unified import plan\n"
                                   "from .models import A\nfrom ..toolkit import engine_of\n")
    for name in ("jobs_api", "unified"):
        (adapters.parent / name).mkdir()
    found = {dialect_of(m, adapters.parent) for m in imports(adapters / "x.py", tmp_path)} - {None, "a1111"}
    assert found == {"jobs_api", "unified"}
