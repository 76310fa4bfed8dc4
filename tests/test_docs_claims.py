"""Claims the docs make that the code can be held to: generated reference tables equal what their generator builds
from the code today, and README's command-line examples print what the README shows."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODES_MD = ROOT / "docs" / "nodes.md"


def _make_pictures():
    """docs/make_pictures.py as a module (importing it draws nothing; only main() writes files)."""
    spec = importlib.util.spec_from_file_location("_make_pictures_for_docs_test", ROOT / "docs" / "make_pictures.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _section(doc: str, key: str) -> str:
    """The text of `### key` up to the next heading."""
    match = re.search(rf"^### {re.escape(key)}\n(.*?)(?=^##)", doc + "\n## end", re.M | re.S)
    assert match, f"docs/nodes.md has no section for {key}"
    return match.group(1)


def test_nodes_md_tables_match_the_node_classes() -> None:
    """docs/nodes.md says it is generated from the node classes (inputs, defaults, ranges, tooltips, outputs); a
    node edited without re-running `python docs/make_pictures.py` leaves a stale reference (Save Indexed's frame_ms
    went to min 20 ms with a new tooltip in dd6e8cb; nodes.md still says 10..10000)."""
    mp = _make_pictures()
    import pixart_nodes

    doc = NODES_MD.read_text(encoding="utf-8")
    stale = []
    for key, cls in pixart_nodes.NODE_CLASS_MAPPINGS.items():
        lines = set(_section(doc, key).splitlines())
        for row in mp._input_rows(cls)[2:] + mp._output_rows(cls)[2:]:
            if row not in lines:
                stale.append(f"{key}: expected row {row!r}")
    assert not stale, "docs/nodes.md is out of date (re-run python docs/make_pictures.py):\n" + "\n".join(stale)


def test_export_editor_regenerates_every_copy_it_can(tmp_path: Path) -> None:
    """README ("`python -m bridge.workflows export-editor --url ...` regenerates the editor copies") and
    workflows/README.md: on a ComfyUI without the optional third-party caption packs (ComfyUI-Blip,
    ComfyUI-Custom-Scripts, ComfyUI-WD14-Tagger) the command stops at `interrogate_blip` with exit 1, so every
    workflow sorted after it (pico_rgb565, pixel_art, txt2img, ...) is neither written nor checked."""
    from bridge.workflows import load_workflows
    from bridge.workflows.__main__ import main
    from tests.support.double import object_info_for

    object_info = object_info_for(["tiny.safetensors"], ["example.png"])
    info_file = tmp_path / "object_info.json"
    info_file.write_text(json.dumps(object_info))
    out = tmp_path / "editor"
    workflows = load_workflows(ROOT / "workflows")
    exportable = {name for name, wf in workflows.items() if wf.node_types() <= set(object_info)}
    assert {"pico_rgb565", "pixel_art", "txt2img"} <= exportable  # the backend has what these need

    assert main(["export-editor", "--object-info", str(info_file), "--out", str(out)]) == 0
    written = {p.stem for p in out.glob("*.json")}
    assert exportable <= written, f"not regenerated: {sorted(exportable - written)}"
    # named on the command line, a workflow the backend cannot hold is still a failure
    assert main(["export-editor", "--object-info", str(info_file), "--out", str(out), "interrogate_blip"]) == 1


def _readme_cli_examples() -> list[tuple[str, list[str]]]:
    """(command, the output lines README shows for it) for each `$ pixart ...` line of README's command-line block
    that shows output; a command with `...` in it is a sketch, not something to run."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## The command line", 1)[1].split("```console", 1)[1].split("```", 1)[0]
    examples: list[tuple[str, list[str]]] = []
    for line in block.strip().splitlines():
        if line.startswith("$ "):
            examples.append((line[2:].split("  #")[0].strip(), []))
        elif examples:
            examples[-1][1].append(line)
    return [(cmd, out) for cmd, out in examples if out and "..." not in cmd]


_EXAMPLES = _readme_cli_examples()


@pytest.mark.parametrize("command,shown", _EXAMPLES, ids=[command for command, _ in _EXAMPLES])
def test_readme_cli_example_prints_what_readme_shows(command: str, shown: list[str], tmp_path: Path) -> None:
    """README's examples run on its input picture (`scene.png`: docs/images/input_scene.png, the picture the node
    reference draws from) and print the lines README shows, up to a `...` line; lines README cut with `...` are
    not compared."""
    import shlex
    import shutil

    shutil.copy(ROOT / "docs" / "images" / "input_scene.png", tmp_path / "scene.png")
    argv = shlex.split(command)
    assert argv[0] == "pixart"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "custom_nodes")}
    run = subprocess.run([sys.executable, "-m", "pixart_nodes", *argv[1:]], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    printed = (run.stdout + run.stderr).splitlines()
    for i, want in enumerate(shown):
        if want.strip() == "...":
            break
        if "..." in want:
            continue
        assert i < len(printed) and printed[i] == want, (
            f"README shows line {i + 1} of `{command}` as {want!r}; it prints {printed[i] if i < len(printed) else None!r}")
