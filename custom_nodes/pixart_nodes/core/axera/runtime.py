"""One inference-session API over two runtimes: Axera's ``axengine`` (NPU) and ``onnxruntime`` (CPU/GPU).

``axengine`` copies input arrays byte for byte into NPU memory: it does no casting and asserts that each input has
exactly the compiled shape and dtype. ``onnxruntime`` is more forgiving about some things and stricter about others
(unknown input names). ``GuardedSession`` applies axengine's rules on both runtimes, so that the pipeline, developed
and tested on onnxruntime, feeds the NPU exactly what it accepts. Each session holds a lock: an axengine session
owns one handle and one context and must not run twice at once, and the Pi service wraps its models the same way.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..palette import quote

RUNTIMES = ("auto", "axengine", "onnxruntime")

# onnxruntime reports element types as strings; the NPU exports only use these
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16,
    "tensor(uint16)": np.uint16,
    "tensor(int32)": np.int32,
    "tensor(uint32)": np.uint32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


class RuntimeUnavailable(RuntimeError):
    """The requested runtime cannot be used on this machine."""


class InputMismatch(ValueError, AssertionError):
    """An input array does not have the model's exact shape or dtype.

    axengine raises ``AssertionError`` here; deriving from both lets callers catch it either way.
    """


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | None, ...]  # None = dimension left dynamic by the export (onnxruntime only)
    dtype: np.dtype

    def describe(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype.name}[{dims}]"


_axengine_state: dict[str, Any] = {}


def axengine_status() -> tuple[bool, str]:
    """(importable, reason). Importing axengine initialises the NPU, so it is tried once per process."""
    if "ok" not in _axengine_state:
        try:
            import axengine  # noqa: F401  (import raises ImportError when neither NPU library is present)

            _axengine_state["ok"] = True
            _axengine_state["reason"] = "axengine imported"
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable here", and the reason is kept
            _axengine_state["ok"] = False
            _axengine_state["reason"] = f"axengine not usable: {type(exc).__name__}: {exc}"
    return bool(_axengine_state["ok"]), str(_axengine_state["reason"])


def check_runtime_name(value: str) -> None:
    """ValueError unless ``value`` is one of ``RUNTIMES``.

    The value is quoted back shortened: the status route passes on whatever a client of ComfyUI's port sent.
    """
    if value not in RUNTIMES:
        raise ValueError(f"runtime: must be one of {', '.join(RUNTIMES)}, got {quote(str(value))}")


def resolve_runtime(requested: str) -> str:
    """Map ``auto`` to the best runtime present; refuse an explicit runtime that is not installed."""
    check_runtime_name(requested)
    if requested == "onnxruntime":
        _require_onnxruntime()
        return "onnxruntime"
    ok, reason = axengine_status()
    if requested == "axengine":
        if not ok:
            raise RuntimeUnavailable(f"runtime: axengine was requested but {reason}")
        return "axengine"
    if ok:
        return "axengine"
    _require_onnxruntime()
    return "onnxruntime"


def model_extension(runtime: str) -> str:
    return ".axmodel" if runtime == "axengine" else ".onnx"


def _require_onnxruntime() -> None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise RuntimeUnavailable(
            "runtime: onnxruntime is not installed (pip install onnxruntime) and axengine is not usable"
        ) from exc


class GuardedSession:
    """A loaded model with axengine's input rules and a lock around ``run``."""

    def __init__(self, path: Path, runtime: str, providers: Sequence[str] | None = None):
        self.path = Path(path)
        self.runtime = runtime
        self._lock = threading.Lock()
        if runtime == "axengine":
            import axengine

            kwargs = {"providers": list(providers)} if providers else {}
            self._session = axengine.InferenceSession(str(self.path), **kwargs)
            got = self._session.get_providers()
            # axengine returns a single provider name as a string, onnxruntime a list
            self.providers = [got] if isinstance(got, str) else list(got)
            self.inputs = [_spec_from_axengine(n) for n in self._session.get_inputs()]
            self.outputs = [_spec_from_axengine(n) for n in self._session.get_outputs()]
        elif runtime == "onnxruntime":
            import onnxruntime as ort

            available = ort.get_available_providers()
            wanted = list(providers) if providers else [
                p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available
            ]
            options = ort.SessionOptions()
            options.log_severity_level = 3  # the exports carry unused initializers; their warnings are noise
            self._session = ort.InferenceSession(str(self.path), sess_options=options, providers=wanted)
            self.providers = list(self._session.get_providers())
            self.inputs = [_spec_from_ort(n) for n in self._session.get_inputs()]
            self.outputs = [_spec_from_ort(n) for n in self._session.get_outputs()]
        else:
            raise ValueError(f"runtime: unknown runtime {runtime!r}")
        self._by_name = {spec.name: spec for spec in self.inputs}

    def input(self, name: str) -> TensorSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"{self.path.name}: no input named {name!r}; inputs are {[s.name for s in self.inputs]}"
            ) from None

    def check_feed(self, feed: Mapping[str, np.ndarray]) -> None:
        """Raise as axengine would: ValueError for missing inputs, InputMismatch for shape or dtype."""
        missing = [s.name for s in self.inputs if s.name not in feed]
        if missing:
            raise ValueError(f"{self.path.name}: required inputs {missing} are missing from the input feed")
        unknown = [k for k in feed if k not in self._by_name]
        if unknown:
            raise ValueError(f"{self.path.name}: inputs {unknown} are not inputs of the model")
        for name, array in feed.items():
            spec = self._by_name[name]
            if not isinstance(array, np.ndarray):
                raise InputMismatch(f"{self.path.name}: input {name!r} must be a numpy array, got {type(array)}")
            shape_ok = len(array.shape) == len(spec.shape) and all(
                want is None or want == got for want, got in zip(spec.shape, array.shape)
            )
            if not shape_ok or array.dtype != spec.dtype:
                raise InputMismatch(
                    f"{self.path.name}: model input {name!r} expects shape {list(spec.shape)} and dtype "
                    f"{spec.dtype.name}, got shape {list(array.shape)} and dtype {array.dtype.name}"
                )

    def run(self, feed: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> list[np.ndarray]:
        self.check_feed(feed)
        prepared = {k: np.ascontiguousarray(v) for k, v in feed.items()}
        with self._lock:
            return list(self._session.run(list(output_names) if output_names else None, prepared))


def _spec_from_axengine(node: Any) -> TensorSpec:
    return TensorSpec(str(node.name), tuple(int(d) for d in node.shape), np.dtype(node.dtype))


def _spec_from_ort(node: Any) -> TensorSpec:
    if node.type not in _ORT_DTYPES:
        raise ValueError(f"input {node.name!r}: element type {node.type} is not supported")
    shape = tuple(d if isinstance(d, int) else None for d in node.shape)
    return TensorSpec(str(node.name), shape, np.dtype(_ORT_DTYPES[node.type]))
