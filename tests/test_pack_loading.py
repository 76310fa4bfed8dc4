"""The pack works however it is imported: as ComfyUI does (a module named by the folder's path) and as
``pixart_nodes`` (the ``pixart`` command, the bridge's tests), sharing one on-disk numba cache.

Regression: numba's cache records the defining module's name. Kernels compiled inside ComfyUI under the path name
made every later ``pixart_nodes`` process fail with ``ModuleNotFoundError: No module named
'/root/ComfyUI/custom_nodes/pixart_nodes'`` (and the reverse), because both write the same ``__pycache__``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACK = Path(__file__).resolve().parents[1] / "custom_nodes" / "pixart_nodes"

QUANTIZE = """
import numpy as np
rng = np.random.default_rng(0)
img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
for dither in ("floyd-steinberg", "atkinson", "bayer-4x4", "none"):
    for distance in ("rgb", "oklab"):
        quantize(img, named_palette("pico-8"), dither=dither, distance=distance)
print("OK", len(NODE_CLASS_MAPPINGS))
"""

AS_COMFYUI = """
import importlib.util, sys
folder = sys.argv[1]
# What ComfyUI 0.3.64's load_custom_node does for a package folder: the module is named by its path.
spec = importlib.util.spec_from_file_location(folder, folder + "/__init__.py", submodule_search_locations=[folder])
module = importlib.util.module_from_spec(spec)
sys.modules[folder] = module
spec.loader.exec_module(module)
NODE_CLASS_MAPPINGS = module.NODE_CLASS_MAPPINGS
from pixart_nodes.core.quantize import quantize
from pixart_nodes.core.palette import named_palette
"""

AS_PACKAGE = """
import sys
sys.path.insert(0, sys.argv[2])
import pixart_nodes
assert pixart_nodes.__file__.startswith(sys.argv[2]), pixart_nodes.__file__
from pixart_nodes import NODE_CLASS_MAPPINGS
from pixart_nodes.core.quantize import quantize
from pixart_nodes.core.palette import named_palette
"""


def _run(code: str, folder: Path, tmp_path: Path) -> str:
    # the JIT path: kernels built ahead of time (core/_pixart_kernels, copied with the pack) would bypass numba
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code) + QUANTIZE, str(folder), str(folder.parent)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "PIXART_NO_AOT": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("first,second", [(AS_COMFYUI, AS_PACKAGE), (AS_PACKAGE, AS_COMFYUI)],
                         ids=["comfyui-then-package", "package-then-comfyui"])
def test_numba_cache_is_shared_between_comfyui_and_package_imports(tmp_path: Path, first: str, second: str) -> None:
    # A private copy of the pack, so the numba cache starts empty and the first process really writes it.
    folder = tmp_path / "custom_nodes" / "pixart_nodes"
    shutil.copytree(PACK, folder, ignore=shutil.ignore_patterns("__pycache__"))
    out1 = _run(first, folder, tmp_path)
    assert list(folder.rglob("*.nbi")), "the first process should have cached compiled kernels"
    out2 = _run(second, folder, tmp_path)
    assert out1.split() == out2.split() and out1.startswith("OK")
