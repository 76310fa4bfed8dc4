"""The runtime wrapper applies axengine's input rules on onnxruntime and serialises runs per session."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pixart_nodes.core.axera import runtime
from pixart_nodes.core.axera.runtime import GuardedSession, InputMismatch
from tests.support.tiny_axera import TIME_INPUT, tiny_axera_dir  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def unet(tiny_axera_dir):
    return GuardedSession(tiny_axera_dir / "unet.onnx", "onnxruntime")


def good_feed():
    return {
        "sample": np.zeros((1, 4, 8, 8), np.float32),
        TIME_INPUT: np.zeros((1, 1280), np.float32),
        "encoder_hidden_states": np.zeros((1, 77, 768), np.float32),
    }


def test_specs_read_from_model(unet):
    specs = {s.name: s for s in unet.inputs}
    assert specs["sample"].shape == (1, 4, 8, 8) and specs["sample"].dtype == np.float32
    assert specs[TIME_INPUT].shape == (1, 1280)
    assert unet.providers == ["CPUExecutionProvider"]
    out = unet.run(good_feed())
    assert len(out) == 1 and out[0].shape == (1, 4, 8, 8) and out[0].dtype == np.float32


def test_wrong_dtype_is_refused_not_cast(unet):
    feed = good_feed()
    feed["sample"] = feed["sample"].astype(np.float64)
    with pytest.raises(InputMismatch, match="sample.*float32.*float64"):
        unet.run(feed)
    # axengine raises AssertionError for this; callers written against it keep working
    with pytest.raises(AssertionError):
        unet.run(feed)


def test_wrong_shape_is_refused(unet):
    feed = good_feed()
    feed["encoder_hidden_states"] = np.zeros((1, 76, 768), np.float32)
    with pytest.raises(InputMismatch, match="encoder_hidden_states.*\\[1, 77, 768\\]"):
        unet.run(feed)
    feed = good_feed()
    feed[TIME_INPUT] = np.zeros((1280,), np.float32)
    with pytest.raises(InputMismatch):
        unet.run(feed)


def test_int_ids_dtype_must_match(tiny_axera_dir):
    te = GuardedSession(tiny_axera_dir / "text_encoder" / "sd15_text_encoder_sim.onnx", "onnxruntime")
    assert te.input("input_ids").dtype == np.int32
    with pytest.raises(InputMismatch, match="int32.*int64"):
        te.run({"input_ids": np.zeros((1, 77), np.int64)})
    assert te.run({"input_ids": np.zeros((1, 77), np.int32)})[0].shape == (1, 77, 768)


def test_missing_and_unknown_inputs(unet):
    feed = good_feed()
    del feed["sample"]
    with pytest.raises(ValueError, match="missing"):
        unet.run(feed)
    feed = good_feed()
    feed["t"] = np.zeros((1,), np.int64)
    with pytest.raises(ValueError, match="'t'"):
        unet.run(feed)


def test_non_contiguous_input_is_accepted(unet):
    feed = good_feed()
    feed["sample"] = np.zeros((1, 8, 8, 4), np.float32).transpose(0, 3, 1, 2)
    assert unet.run(feed)[0].shape == (1, 4, 8, 8)


def test_runs_on_one_session_never_overlap(unet):
    """The lock, not luck: a fake inner session records overlapping calls."""

    class Fake:
        active = 0
        overlaps = 0

        def run(self, names, feed):
            Fake.active += 1
            if Fake.active > 1:
                Fake.overlaps += 1
            time.sleep(0.01)
            Fake.active -= 1
            return [np.zeros(1)]

    guarded = GuardedSession.__new__(GuardedSession)
    guarded.__dict__.update(unet.__dict__)
    guarded._session = Fake()
    guarded._lock = threading.Lock()
    threads = [threading.Thread(target=guarded.run, args=(good_feed(),)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Fake.overlaps == 0


def test_runtime_resolution(monkeypatch):
    monkeypatch.setattr(runtime, "_axengine_state", {"ok": False, "reason": "axengine not usable: ImportError"})
    assert runtime.resolve_runtime("auto") == "onnxruntime"
    assert runtime.model_extension("onnxruntime") == ".onnx"
    with pytest.raises(runtime.RuntimeUnavailable, match="axengine"):
        runtime.resolve_runtime("axengine")
    with pytest.raises(ValueError, match="runtime"):
        runtime.resolve_runtime("tensorrt")
    monkeypatch.setattr(runtime, "_axengine_state", {"ok": True, "reason": "axengine imported"})
    assert runtime.resolve_runtime("auto") == "axengine"
    assert runtime.model_extension("axengine") == ".axmodel"


def test_axengine_status_reports_why(monkeypatch):
    import importlib.util

    if importlib.util.find_spec("axengine") is not None:
        pytest.skip("axengine is installed here")
    monkeypatch.setattr(runtime, "_axengine_state", {})
    ok, reason = runtime.axengine_status()
    assert ok is False and "ModuleNotFoundError" in reason


class FakeNodeArg:
    def __init__(self, name, dtype, shape):
        self.name, self.dtype, self.shape = name, dtype, shape


class FakeAxSession:
    """pyaxengine's session surface: NodeArg dtype is a numpy type, get_providers() a string, run(names, feed)."""

    def __init__(self, path, providers=None):
        self.path = path

    def get_inputs(self):
        return [FakeNodeArg("input_ids", np.int32, (1, 77))]

    def get_outputs(self):
        return [FakeNodeArg("last_hidden_state", np.float32, (1, 77, 768))]

    def get_providers(self):
        return "AXCLRTExecutionProvider"

    def run(self, names, feed):
        return [np.full((1, 77, 768), float(feed["input_ids"].sum()), np.float32)]


def test_axengine_path_of_the_wrapper(monkeypatch, tmp_path):
    import sys
    import types

    fake = types.ModuleType("axengine")
    fake.InferenceSession = FakeAxSession
    monkeypatch.setitem(sys.modules, "axengine", fake)
    session = GuardedSession(tmp_path / "te.axmodel", "axengine")
    assert session.providers == ["AXCLRTExecutionProvider"]
    assert session.input("input_ids").dtype == np.int32 and session.input("input_ids").shape == (1, 77)
    with pytest.raises(InputMismatch):
        session.run({"input_ids": np.ones((1, 77), np.int64)})
    assert session.run({"input_ids": np.ones((1, 77), np.int32)})[0][0, 0, 0] == 77
