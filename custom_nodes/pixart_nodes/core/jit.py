"""Compiled kernels of the quantize/dither/extraction path: ahead of time when built, else numba's JIT.

Numba's first dispatch in a process costs about a third of a second even when every kernel is in its disk cache:
it sets up its compiler (installs its typing and lowering registries, imports scipy.linalg for BLAS), which no
kernel can skip. ``python -m pixart_nodes.core.build_kernels`` (run by install.py) compiles the kernels of
``dither`` and ``cluster`` ahead of time with numba's ``pycc`` into one extension module beside them; loading it
takes well under a millisecond and imports no numba, so the first call in a fresh process costs what any call
costs. The JIT stays the fallback, result for result the same code: when the module is missing, fails to load,
or was built from other sources or for another CPU (a hash of the kernel sources, the numba version and the CPU's
model and flags is stored beside it).

Kernels are declared with ``njit(...)`` from here: the plain function is kept, and only when the JIT is needed
does ``materialise`` wrap every kernel of the module with ``numba.njit`` (all at once, because a kernel calls
others through the module's globals). So importing the pack imports no numba. Kernels that call numba
intrinsics (``simd``) name them as module globals that ``materialise`` fills from the module's ``_intrinsics()``.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

AOT_MODULE = "_pixart_kernels"  # module name; tests point it elsewhere to see the fallback
HERE = Path(__file__).resolve().parent
# files whose text decides the compiled code: a change to any of them invalidates a built module
SOURCES = ("dither.py", "cluster.py", "jit.py", "build_kernels.py", "simd.py")

log = logging.getLogger(__name__)

_PENDING: dict[str, list[tuple[str, dict[str, Any]]]] = {}
_aot: ModuleType | None | bool = False  # False: not looked for yet


def njit(**options: Any) -> Callable[[Callable], Callable]:
    """``numba.njit(**options)``, applied when the module's kernels are first needed by the JIT path."""

    def register(fn: Callable) -> Callable:
        _PENDING.setdefault(fn.__module__, []).append((fn.__name__, options))
        return fn

    return register


def compiled(**options: Any) -> Callable[[Callable], Callable]:
    """``numba.njit(**options)`` now (the kernels outside the built module: cleanup, snap, rgb565). With
    ``cache=True`` and no folder numba may keep its cache in (the pack's own, ``NUMBA_CACHE_DIR``, the user's cache
    folder: a read-only container run by a user without a home), numba raised at the decorator and the whole pack
    failed to import; the kernel is then compiled in each process instead."""
    return lambda fn: _dispatcher(fn, options)


def _dispatcher(fn: Callable, options: dict[str, Any]) -> Any:
    import numba

    try:
        return numba.njit(**options)(fn)
    except RuntimeError as exc:
        if not options.get("cache") or "no locator available" not in str(exc):
            raise
    global _uncached
    if not _uncached:
        _uncached = True
        log.warning("numba finds no writable cache folder (set NUMBA_CACHE_DIR): kernels are compiled in each "
                    "process")
    return numba.njit(**{**options, "cache": False})(fn)


_uncached = False


def materialise(module: ModuleType) -> None:
    """Replace the declared kernels by numba dispatchers (once): those of every module that declared some, since a
    kernel may call another module's (through that module's attribute, resolved when it compiles)."""
    if module.__name__ not in _PENDING:
        return
    import numba

    while _PENDING:
        name_of_module, pending = _PENDING.popitem()
        mod = sys.modules[name_of_module]
        # numba intrinsics the kernels call: made only now, since making them imports numba
        intrinsics = getattr(mod, "_intrinsics", None)
        if intrinsics is not None:
            vars(mod).update(intrinsics())
        for name, options in pending:
            setattr(mod, name, _dispatcher(getattr(mod, name), options))


def numba_version() -> str | None:
    """Numba's installed version, without importing numba or importlib.metadata (whose import took 21-29 ms, a
    quarter of a first call's budget): the name of the ``numba-<version>.dist-info`` folder beside the package,
    else importlib.metadata's answer; None when numba is not installed."""
    spec = importlib.util.find_spec("numba")
    if spec is None or not spec.origin:
        return None
    found = list(Path(spec.origin).parent.parent.glob("numba-*.dist-info"))
    if len(found) == 1:
        return found[0].name[len("numba-"):-len(".dist-info")]
    try:
        from importlib.metadata import version

        return version("numba")
    except Exception:  # noqa: BLE001 - installed some other way: unknown
        return None


def cpu_identity() -> str:
    """This CPU's model and instruction sets, which the built module's code depends on (``build_kernels`` compiles
    for the host): /proc/cpuinfo's lines about the first processor where there is one, else the machine's name."""
    keep = ("vendor_id", "model name", "flags", "Features", "CPU implementer", "CPU architecture", "CPU part")
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            lines = []
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough: they are alike
                if line.split(":", 1)[0].strip() in keep:
                    lines.append(line.strip())
        return "\n".join(lines)
    except OSError:
        import platform

        return platform.machine()


def source_hash() -> str:
    """The stamp a built module must match: the kernels' sources, numba's, numpy's and Python's versions, and the
    CPU (a module built on another CPU, as in a container image built elsewhere, may use instructions this one
    lacks: the JIT serves instead of an illegal instruction)."""
    import numpy

    h = hashlib.sha256()
    for name in SOURCES:
        h.update((HERE / name).read_bytes())
    # numba's version unknown: "?", which a built module's stamp never holds
    h.update((numba_version() or "?").encode())
    h.update(numpy.__version__.encode())
    h.update(sys.version.encode())
    h.update(cpu_identity().encode())
    return h.hexdigest()


def aot_module() -> ModuleType | None:
    """The ahead-of-time module when built for these sources (``PIXART_NO_AOT=1``: never)."""
    global _aot
    if os.environ.get("PIXART_NO_AOT", "") not in ("", "0"):
        return None  # asked each time: a process that forces the JIT for a while must not lose the module after
    if _aot is False:
        _aot = None
        stamp = HERE / f"{AOT_MODULE}.hash"
        try:
            if stamp.read_text().strip() == source_hash():
                _aot = importlib.import_module(f"{__package__}.{AOT_MODULE}")
        except Exception:  # noqa: BLE001 - missing, stale or broken (wrong ABI, truncated file): the JIT serves
            _aot = None
    return _aot  # type: ignore[return-value]


def export_name(module: ModuleType | str, name: str, *variant: Any) -> str:
    """The exported name of kernel ``name`` of ``module`` for the array dtypes ``variant`` (``uint8`` ...)."""
    mod = module if isinstance(module, str) else module.__name__.rsplit(".", 1)[-1]
    return "__".join([mod, name.lstrip("_"), *(str(v) for v in variant)])


# exports looked up by (module, kernel, variant, the built module): naming an export took 30 us a call (numpy's dtype
# names), 4 us with this table; quantize's Python around an error-diffusion call went from 75 us to 44
_exports: dict[tuple[str, str, tuple[Any, ...], ModuleType], Callable | None] = {}


def export(aot: ModuleType, module: ModuleType, name: str, *variant: Any) -> Callable | None:
    """The ahead-of-time module's export of kernel ``name`` for ``variant``, or None where it has none."""
    key = (module.__name__, name, variant, aot)
    try:
        return _exports[key]
    except KeyError:
        fn = _exports[key] = getattr(aot, export_name(module, name, *variant), None)
        return fn


def kernel(module: ModuleType, name: str, *variant: Any) -> Callable:
    """The compiled kernel: the ahead-of-time export for ``variant`` when there is one, else the JIT dispatcher."""
    aot = aot_module()
    if aot is not None:
        fn = export(aot, module, name, *variant)
        if fn is not None:
            return fn
    materialise(module)
    return getattr(module, name)
