"""Compile the quantize/dither/extraction kernels ahead of time (numba ``pycc``) into ``core/_pixart_kernels``.

    python -m pixart_nodes.core.build_kernels [--output-dir DIR]

install.py runs this; without the module (no C compiler, a read-only install, numba without ``pycc``) the same
kernels run through numba's JIT instead, see ``jit``. One export per kernel and array-dtype variant the Python side
can pass (cell tables and indices are uint8 or uint16 by palette size); the signatures below must match the
arguments the callers in ``dither`` and ``palette`` build, which tests/test_quantize.py checks by running both.
A C compiler is needed (numba's pycc compiles a small C wrapper). Takes a minute or two.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from . import cluster, dither, jit

U8_U16 = ("uint8", "uint16")
# shared pieces of the loops' signatures: the palette and its cell table (``Lookup.loop_args``) ...
_LOOKUP = ("float64[:, ::1], float64[::1], float64[:, ::1], float64[:, ::1], {info}[::1], int32[::1], {info}[::1], "
           "int32[::1], int32[::1], int64")
# ... and where the loops write (``Target``)
_OUT = "uint8[::1], {idx}[:, ::1], uint8[:, :, ::1], uint8[::1]"


def exports(vnni: bool = False) -> dict[str, str]:
    """Export name -> numba signature (``vnni``: with the search for CPUs with AVX-512 VNNI, see ``simd``)."""
    out: dict[str, str] = {}
    for info in U8_U16:
        out[jit.export_name(dither, "_build", info)] = (
            f"Tuple((int32[::1], int64))(boolean, uint8[:, ::1], float64[:, ::1], float64[::1], float64[:, ::1], "
            f"float64[:, ::1], int64, {info}[::1], int32[::1], int32[::1])"
        )
        for idx in U8_U16:
            out[jit.export_name(dither, "_map", info, idx)] = (
                f"void(boolean, uint8[:, :, ::1], int64, int64[:, ::1], {_LOOKUP.format(info=info)}, "
                f"{_OUT.format(idx=idx)})"
            )
    for info, codes, idx in itertools.product(U8_U16, U8_U16, U8_U16):
        lookup = _LOOKUP.format(info=info)
        for loop in ("_diffuse_fixed", "_diffuse_vector_rgb", "_diffuse_vector_rgba", "_diffuse_vector_lab_rgb",
                     "_diffuse_vector_lab_rgba"):
            out[jit.export_name(dither, loop, info, codes, idx)] = (
                f"void(boolean, uint8[:, :, ::1], int64, int64[::1], int64[::1], int64, uint8[::1], boolean, {lookup}, "
                f"{codes}[::1], int64, uint64[::1], uint16[::1], {_OUT.format(idx=idx)})"
            )
    for idx in U8_U16:
        out[jit.export_name(dither, "dither_levels", idx)] = f"void({idx}[:, ::1], uint8[:, ::1])"
        out[jit.export_name(dither, "mapping_error", idx)] = (
            f"UniTuple(int64, 2)(uint8[:, :, ::1], uint8[:, :, ::1], {idx}[:, ::1], int64)")
    out[jit.export_name(dither, "_nearest_rgb")] = (
        "int64(uint8[::1], int64, int64, int64, int32[:, ::1], float32[:, ::1], int32[::1], float32[:, ::1], "
        "uint32[::1], uint16[::1], float32[:, ::1], uint8[::1], uint64[::1], uint32[::1], uint8[::1], uint8[::1], "
        "uint32[::1])"
    )
    out[jit.export_name(dither, "_float_triples")] = "boolean()"
    out[jit.export_name(dither, "_float_cells")] = "boolean()"
    if vnni:  # compiled only where the CPU has the instructions; elsewhere the float32 search serves
        out[jit.export_name(dither, "_nearest_rgb_vnni")] = (
            "int64(uint8[::1], int64, int64, int64, int32[:, ::1], int32[:, ::1], int32[::1], int32[:, ::1], "
            "uint16[::1], int32[:, ::1], uint32[::1], uint8[::1], uint8[::1], uint32[::1])"
        )
    out[jit.export_name(dither, "_pair_bits")] = (
        "void(uint8[:, ::1], int64[::1], int64[::1], int64[::1], int64, float32[::1], float32[:, ::1], "
        "float32[:, ::1], float32[:, ::1], float64, float64[::1], float64[:, ::1], float64[:, ::1], float64[:, ::1], "
        "uint64[::1])"
    )
    out[jit.export_name(dither, "_nearest_cells")] = (
        "void(boolean, uint8[::1], int64, int64, int64, int32[:, ::1], uint8[::1], int64, float32[::1], "
        "float32[:, ::1], float32[:, ::1], float32[:, ::1], float64, float64[::1], float64[:, ::1], float64[:, ::1], "
        "float64[:, ::1], uint32[::1], uint8[::1], uint8[::1], uint32[::1], uint8[::1])"
    )
    out[jit.export_name(cluster, "count_colours")] = (
        "int64(uint8[:, :, ::1], int64, uint32[::1], int64[::1], int64, int64)")
    out[jit.export_name(cluster, "bin_colours")] = "void(uint8[:, :, ::1], int64, float64[:, ::1])"
    out[jit.export_name(cluster, "seed_greedy")] = "float64[:, ::1](float64[:, ::1], float64[::1], int64, int64, int64)"
    out[jit.export_name(cluster, "lloyd")] = "int64[::1](float64[:, ::1], float64[::1], float64[:, ::1], int64, float64)"
    out[jit.export_name(cluster, "joint_pass")] = (
        "void(float64[:, :, ::1], uint8[:, ::1], float64[:, ::1], float64, int64, float64[::1], float64[:, ::1], "
        "float64[:, ::1], float64[:, ::1], float64[::1], float64[:, ::1], float64[::1])")
    out[jit.export_name(cluster, "dither_pass")] = (
        "void(float64[:, :, ::1], float64[:, :, ::1], float64[:, ::1], float64[:, ::1], float64[::1], "
        "float64[:, ::1], float64[:, ::1], float64, float64, float64[::1], float64[:, ::1], float64[:, ::1], "
        "float64[:, ::1], float64[::1])")
    return out


def _function(name: str):
    mod, fn = name.split("__")[:2]
    module = {"dither": dither, "cluster": cluster}[mod]
    jit.materialise(module)
    dispatcher = getattr(module, "_" + fn if hasattr(module, "_" + fn) else fn)
    return dispatcher.py_func


@contextlib.contextmanager
def _host_features() -> Iterator[bool]:
    """Compile for the features numba's JIT compiles for (this CPU's, less what numba's settings take away); yields
    whether it could. pycc gives LLVM the CPU's model name alone, and an LLVM older than the CPU takes it for an
    older model: LLVM 14 (numba 0.60) calls a Zen 4 "znver3", without AVX-512, so every kernel lost its wide
    vectors and the VNNI search's instruction aborted the compiler (a fatal LLVM error, not an exception)."""
    from numba.core import codegen

    aot = getattr(codegen, "AOTCPUCodegen", None)
    if aot is None or not hasattr(aot, "_customize_tm_features") or not hasattr(aot, "_get_host_cpu_features"):
        yield False  # another numba: its own choice stands, without the VNNI search
        return
    original = aot._customize_tm_features
    aot._customize_tm_features = lambda self: self._get_host_cpu_features()
    try:
        yield True
    finally:
        aot._customize_tm_features = original


@contextlib.contextmanager
def _portable(needed: bool) -> Iterator[None]:
    """Where pycc could not be told the JIT's features (``_host_features``), the kernels' AVX-512 code is left out
    for the build: ``simd.wide_registers`` says no, and so does the switch ``dither`` took from it."""
    if not needed:
        yield
        return
    from . import simd

    jit.materialise(dither)  # sets _FLOAT_WIDE (from wide_registers) if no kernel was made yet
    saved = dither._FLOAT_WIDE
    simd.NARROW = True
    dither._FLOAT_WIDE = False
    try:
        yield
    finally:
        simd.NARROW = False
        dither._FLOAT_WIDE = saved


def build(output_dir: Path, vnni: bool, stamp: str) -> bool:
    """Build the module into ``output_dir`` and mark it with ``stamp`` (``jit.source_hash()`` as the build began: a
    source edited while the build runs then no longer matches, and the next build replaces the module); returns
    whether it holds the VNNI search (asked for and possible)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycc's pending-deprecation notice
        from numba.pycc import CC
    cc = CC(jit.AOT_MODULE)
    cc.output_dir = str(output_dir)
    cc.target_cpu = "host"  # built where it runs (install.py): use this CPU's vector instructions
    cc.verbose = False
    with _host_features() as told, _portable(not told):
        vnni = vnni and told
        for name, sig in exports(vnni).items():
            cc.export(name, sig)(_function(name))
        cc.compile()
    (output_dir / f"{jit.AOT_MODULE}.hash").write_text(stamp + "\n")
    return vnni


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output-dir", type=Path, default=jit.HERE)
    ap.add_argument("--force", action="store_true", help="build even when the built module matches the sources")
    args = ap.parse_args(argv)
    stamp = args.output_dir / f"{jit.AOT_MODULE}.hash"
    built = list(args.output_dir.glob(f"{jit.AOT_MODULE}.*.so")) + list(args.output_dir.glob(f"{jit.AOT_MODULE}.*.pyd"))
    current = jit.source_hash()
    if not args.force and built and stamp.exists() and stamp.read_text().strip() == current:
        print(f"build_kernels: up to date ({built[0].name})")
        return 0
    t0 = time.perf_counter()
    try:
        from . import simd

        vnni = build(args.output_dir, simd.host_has_vnni(), current)
    except Exception as e:  # noqa: BLE001 - the JIT fallback still works; say why and fail the command
        print(f"build_kernels: ahead-of-time build failed ({type(e).__name__}: {e}); the JIT will be used",
              file=sys.stderr)
        return 1
    print(f"build_kernels: {len(exports(vnni))} kernels in {args.output_dir} ({time.perf_counter() - t0:.0f} s)"
          f"{', with the VNNI search' if vnni else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
