"""The ahead-of-time kernel build never fails the set-up: without numba's pycc (deprecated; gone in some future
numba), with a build that fails or hangs, or with a missing, stale or broken module, the same kernels run through
numba's JIT with the same results."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from pixart_nodes.core import build_kernels, jit

REPO = Path(__file__).resolve().parent.parent


def test_build_without_pycc_says_why_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # a numba whose pycc is gone: importing it fails
    monkeypatch.setitem(sys.modules, "numba.pycc", None)
    assert build_kernels.main(["--output-dir", str(tmp_path), "--force"]) == 1
    err = capsys.readouterr().err
    assert "ahead-of-time build failed" in err and "the JIT will be used" in err and "numba.pycc" in err
    assert list(tmp_path.iterdir()) == []  # no module, no stamp: nothing a later import could pick up


def test_build_failing_in_the_compiler_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    class BrokenCC:  # pycc present, but the C compiler step fails
        def __init__(self, name: str) -> None:
            self.name = name

        def export(self, name: str, sig: str):
            return lambda fn: fn

        def compile(self) -> None:
            raise RuntimeError("no C compiler found")

    monkeypatch.setitem(sys.modules, "numba.pycc", types.SimpleNamespace(CC=BrokenCC))
    assert build_kernels.main(["--output-dir", str(tmp_path), "--force"]) == 1
    assert "RuntimeError: no C compiler found" in capsys.readouterr().err
    assert not (tmp_path / f"{jit.AOT_MODULE}.hash").exists()


def _record_builds(monkeypatch: pytest.MonkeyPatch, at_compile: Callable[[], Any]) -> list[tuple[set[str], Any]]:
    """numba's pycc replaced by a recorder: each build appends (the names exported, ``at_compile()`` when it
    compiles) to the returned list, and compiles nothing."""
    seen: list[tuple[set[str], Any]] = []

    class RecordingCC:
        def __init__(self, name: str) -> None:
            self.names: set[str] = set()

        def export(self, name: str, sig: str):
            self.names.add(name)
            return lambda fn: fn

        def compile(self) -> None:
            seen.append((self.names, at_compile()))

    monkeypatch.setitem(sys.modules, "numba.pycc", types.SimpleNamespace(CC=RecordingCC))
    return seen


def test_a_source_edited_during_the_build_leaves_the_module_stale(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The stamp is the sources' hash as the build began: a kernel source saved while the build compiles (the
    compiler has the old text) leaves a stamp the sources no longer match, so the JIT serves and the next build
    replaces the module (stamped after compiling, the stale module passed as up to date)."""
    hashes = ["as the build began"]
    monkeypatch.setattr(jit, "source_hash", lambda: hashes[-1])
    _record_builds(monkeypatch, lambda: hashes.append("edited while compiling"))
    (tmp_path / f"{jit.AOT_MODULE}.cpython-0.so").write_bytes(b"")  # a module, for the up-to-date check
    assert build_kernels.main(["--output-dir", str(tmp_path), "--force"]) == 0
    assert (tmp_path / f"{jit.AOT_MODULE}.hash").read_text().strip() == "as the build began"
    assert build_kernels.main(["--output-dir", str(tmp_path)]) == 0  # not up to date: built again
    assert hashes.count("edited while compiling") == 2


def test_build_compiles_for_the_jits_features(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the module compiles, and only then, numba's AOT codegen is given the features its JIT compiles for
    (pycc alone gives LLVM the CPU's model name, which an older LLVM takes for an older model without AVX-512); the
    VNNI search is exported exactly where ``simd`` says numba compiles for VNNI, so never where LLVM could not
    select its instruction (numba's settings can take the features away)."""
    from numba.core import codegen, config
    from pixart_nodes.core import simd

    # at compile time: what a codegen made now would be told
    seen = _record_builds(monkeypatch, lambda: codegen.AOTCPUCodegen._customize_tm_features(
        object.__new__(codegen.AOTCPUCodegen)))
    vnni = jit.export_name("dither", "_nearest_rgb_vnni")
    original = codegen.AOTCPUCodegen._customize_tm_features
    for features in (None, "+avx2,+fma,-avx512f"):  # the host's, then what NUMBA_CPU_FEATURES could say
        monkeypatch.setattr(config, "CPU_FEATURES", features)
        simd.host_has_vnni.cache_clear()
        assert build_kernels.main(["--output-dir", str(tmp_path), "--force"]) == 0
        names, told = seen[-1]
        assert told == (features if features is not None else codegen.get_host_cpu_features())
        assert (vnni in names) == simd.host_has_vnni() == ("+avx512vnni" in told and "+avx512bw" in told)
        assert codegen.AOTCPUCodegen._customize_tm_features is original
    simd.host_has_vnni.cache_clear()



def test_build_leaves_out_avx512_where_pycc_cannot_be_told_the_features(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With a numba whose AOT codegen cannot be given the JIT's features, pycc compiles for the CPU's model name
    alone, which may lack AVX-512 (a fatal LLVM error for an AVX-512 instruction): while the module compiles, no
    kernel takes its AVX-512 code (``simd.wide_registers`` says no, and so does the float32 loop's switch; the VNNI
    search is not exported), and afterwards the JIT's view is back."""
    import contextlib

    from pixart_nodes.core import dither, simd

    seen = _record_builds(monkeypatch, lambda: (simd.wide_registers(), dither._FLOAT_WIDE))

    @contextlib.contextmanager
    def untold():
        yield False

    monkeypatch.setattr(build_kernels, "_host_features", untold)
    jit.materialise(dither)
    before = (simd.wide_registers(), dither._FLOAT_WIDE)
    assert build_kernels.main(["--output-dir", str(tmp_path), "--force"]) == 0
    names, switches = seen[-1]
    assert switches == (False, False)
    assert jit.export_name("dither", "_nearest_rgb") in names
    assert jit.export_name("dither", "_nearest_rgb_vnni") not in names
    assert (simd.wide_registers(), dither._FLOAT_WIDE) == before

_FALLBACK = r"""
import json, sys
from pathlib import Path
import numpy as np
from pixart_nodes.core import jit
case, here = sys.argv[1], Path(sys.argv[2])
if case != "reference":
    jit.HERE = here  # a folder holding copies of the kernel sources (so a stamp can match them)
if case == "missing":  # stamp matches, but the module is not there
    jit.AOT_MODULE = "_pixart_kernels_not_built"
    (here / f"{jit.AOT_MODULE}.hash").write_text(jit.source_hash() + "\n")
elif case == "broken":  # stamp matches, the module fails to load
    jit.AOT_MODULE = "_pixart_kernels_broken"
    (here / f"{jit.AOT_MODULE}.hash").write_text(jit.source_hash() + "\n")
    sys.modules["pixart_nodes.core._pixart_kernels_broken"] = None  # import raises ImportError
elif case == "stale":  # a stamp from other sources
    (here / f"{jit.AOT_MODULE}.hash").write_text("0" * 64 + "\n")
from pixart_nodes.core.palette import named_palette
from pixart_nodes.core.quantize import quantize
img = np.random.default_rng(5).integers(0, 256, (20, 24, 3), dtype=np.uint8)
out = {"aot": jit.aot_module() is not None}
for d in ("rgb", "oklab"):
    for m in ("none", "floyd-steinberg", "atkinson", "bayer-4x4"):
        out[f"{d} {m}"] = quantize(img, named_palette("pico-8"), dither=m, distance=d).indices.astype(int).tolist()
out["numba"] = "numba" in sys.modules
print(json.dumps(out))
"""


@pytest.mark.parametrize("case", ["missing", "broken", "stale"])
def test_without_a_usable_module_the_jit_gives_the_same_results(tmp_path: Path, case: str) -> None:
    for name in jit.SOURCES:
        shutil.copy(jit.HERE / name, tmp_path / name)
    env = {k: v for k, v in os.environ.items() if k != "PIXART_NO_AOT"}
    run = lambda *args: json.loads(subprocess.run(  # noqa: E731
        [sys.executable, "-c", *args], capture_output=True, text=True, check=True, env=env, timeout=600).stdout)
    fallback = run(_FALLBACK, case, str(tmp_path))
    assert fallback.pop("aot") is False and fallback.pop("numba") is True
    reference = run(_FALLBACK, "reference", str(tmp_path))  # the module install.py built
    if not reference.pop("aot"):
        pytest.skip("no ahead-of-time kernel module built here (install.py builds it): nothing to compare the JIT with")
    reference.pop("numba")
    assert fallback == reference


_NO_CACHE_FOLDER = """
import json, sys
import numba.core.caching as caching
if sys.argv[1] == "none":
    caching.CacheImpl._locator_classes = []  # no folder numba may keep its cache in: a read-only home and pack
import numpy as np
import pixart_nodes
from pixart_nodes.core import cleanup, rgb565, snap
from pixart_nodes.core.palette import named_palette
from pixart_nodes.core.quantize import quantize
rng = np.random.default_rng(7)
sprite = rng.integers(0, 4, (12, 10), dtype=np.uint8)
img = np.repeat(np.repeat(np.array([[0, 0, 0], [255, 0, 77], [41, 173, 255], [255, 236, 39]], np.uint8)[sprite],
                          5, axis=0), 5, axis=1)
out = {"nodes": len(pixart_nodes.NODE_CLASS_MAPPINGS),
       "snap": snap.snap(img).image.tolist(),
       "cleanup": cleanup.cleanup(img[::5, ::5]).image.tolist(),
       "rgb565": rgb565.to_rgb565(img, dither=True).hex(),
       "fs": quantize(img, named_palette("pico-8"), dither="floyd-steinberg").indices.astype(int).tolist()}
print(json.dumps(out))
"""


def test_without_a_writable_cache_folder_the_pack_imports_and_compiles_in_process() -> None:
    # numba raised at the decorator of every cached kernel: the pack failed to import (no node at all in ComfyUI)
    env = {**os.environ, "PIXART_NO_AOT": "1"}
    run = lambda case: subprocess.run(  # noqa: E731
        [sys.executable, "-c", _NO_CACHE_FOLDER, case], capture_output=True, text=True, env=env, timeout=600)
    uncached, cached = run("none"), run("usual")
    assert uncached.returncode == 0, uncached.stderr[-2000:]
    assert "no writable cache folder (set NUMBA_CACHE_DIR)" in uncached.stderr
    assert json.loads(uncached.stdout) == json.loads(cached.stdout) and json.loads(cached.stdout)["nodes"] > 0


def _install_module():
    spec = importlib.util.spec_from_file_location("pixart_install_kernels_test", REPO / "install.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script, timeout, why", [
    ("import sys; print('build_kernels: ahead-of-time build failed (ImportError: pycc)', file=sys.stderr); "
     "sys.exit(1)", 60, "ImportError: pycc"),
    ("import time; time.sleep(30)", 1, "TimeoutExpired"),
])
def test_install_carries_on_when_the_kernel_build_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], script: str,
                                                        timeout: int, why: str) -> None:
    # install.py runs `<python> -m pixart_nodes.core.build_kernels`; a python that fails or hangs stands in for it
    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}\n{script}\n")
    fake.chmod(0o755)
    module = _install_module()
    monkeypatch.setattr(module, "KERNEL_BUILD_TIMEOUT", timeout)
    inst = module.Installer(module.build_parser().parse_args(["--use-current-python"]))
    inst.python = str(fake)
    inst.build_kernels()  # returns: the set-up goes on
    out = capsys.readouterr().out
    assert "numba's JIT will be used" in out and why in out
    assert inst.warnings == ["kernels not built ahead of time (numba's JIT is used)"] and inst.errors == []


def test_the_built_module_matches_these_sources_or_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # what install.py built here is either current (stamp = source hash) or ignored; looked up afresh, because
    # test_install runs install.py, which rebuilds a stale module while this process may hold the old answer
    monkeypatch.setattr(jit, "_aot", False)
    stamp = jit.HERE / f"{jit.AOT_MODULE}.hash"
    if jit.aot_module() is not None:
        assert stamp.read_text().strip() == jit.source_hash()
        fn = jit.kernel(__import__("pixart_nodes.core.dither", fromlist=["dither"]), "_map", np.dtype(np.uint8), np.dtype(np.uint8))
        assert type(fn).__name__ == "builtin_function_or_method"  # the compiled export, not a numba dispatcher
    else:
        assert not stamp.exists() or stamp.read_text().strip() != jit.source_hash() or \
            os.environ.get("PIXART_NO_AOT", "") not in ("", "0")


def test_the_stamp_check_imports_neither_numba_nor_importlib_metadata() -> None:
    """The check of a built module reads numba's version from its dist-info folder: importing importlib.metadata
    cost 21-29 ms of a first call's 100 ms budget. The version read so equals importlib.metadata's, and a first
    quantize in a fresh process (the module built or not) leaves both unimported when the module is used."""
    import subprocess
    import sys
    from importlib.metadata import version

    assert jit.numba_version() == version("numba")
    code = ("import sys, numpy as np\n"
            "from pixart_nodes.core import jit\n"
            "from pixart_nodes.core.quantize import quantize\n"
            "quantize(np.zeros((4, 4, 3), np.uint8), np.array([[0, 0, 0], [255, 255, 255]], np.uint8))\n"
            "print(jit.aot_module() is not None, 'importlib.metadata' in sys.modules, 'numba' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "PIXART_NO_AOT"}
    used, metadata, numba = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                           env=env).stdout.split()
    if used == "True":
        assert metadata == "False" and numba == "False"
    else:
        pytest.skip("kernels not built ahead of time: the JIT imports numba (and numba importlib.metadata)")
