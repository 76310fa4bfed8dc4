"""The node pack can be published and installed on its own: registry metadata and its requirements file."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "custom_nodes" / "pixart_nodes"

# Provided by ComfyUI itself (its process, its requirements) or optional at run time with a fallback.
PROVIDED = {"torch", "folder_paths", "comfy", "server", "comfy_api", "nodes", "PIL"}
OPTIONAL = {"axengine"}  # Axera's NPU runtime: a vendor wheel; onnxruntime is used when it is absent
# import name -> distribution name where they differ
DISTRIBUTION = {"cv2": "opencv-python-headless", "Crypto": "pycryptodome", "PIL": "pillow"}


def _third_party_imports() -> set[str]:
    names: set[str] = set()
    for path in PACK.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    return {n for n in names if n not in stdlib and n != "pixart_nodes"}


def _requirement_names(path: Path) -> set[str]:
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower())
    return out


def test_pack_requirements_cover_every_third_party_import() -> None:
    required = _requirement_names(PACK / "requirements.txt")
    missing = sorted(
        n for n in _third_party_imports() - PROVIDED - OPTIONAL if DISTRIBUTION.get(n, n).lower() not in required
    )
    assert not missing, f"custom_nodes/pixart_nodes/requirements.txt lacks {missing}"


def test_pyproject_carries_registry_metadata_and_the_pack_requirements() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    comfy = data["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    # The registry id rules: lowercase letters, digits, '-' and '_' only.
    assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*", data["project"]["name"])
    deps = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in data["project"]["dependencies"]}
    assert _requirement_names(PACK / "requirements.txt") - {"onnxruntime", "tokenizers"} <= deps


def test_shipped_palette_files_parse_to_the_named_palettes() -> None:
    import numpy as np

    from pixart_nodes.core.palette import load_palette_file, named_palette

    # library.json and CREDITS.md are the named-palette library itself, not example files
    files = sorted(p for p in (PACK / "palettes").glob("*.*") if p.name not in ("library.json", "CREDITS.md"))
    assert files, "the pack ships example palette files for the Palette node's file source"
    for path in files:
        loaded = load_palette_file(path)
        np.testing.assert_array_equal(loaded.colors, named_palette(path.stem).colors, err_msg=path.name)


def test_palette_library_ships_with_the_package() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = data["tool"]["setuptools"]["package-data"]["pixart_nodes"]
    assert "palettes/*" in shipped  # library.json and CREDITS.md live there
    assert (PACK / "palettes" / "library.json").is_file() and (PACK / "palettes" / "CREDITS.md").is_file()
