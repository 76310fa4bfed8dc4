"""Integration: Snap to Grid -> Pixel Art Cleanup -> SaveImage and Pixelate (outline) in a real ComfyUI.

The outputs must equal the core modules' results on the same input, and the grid must come back as the node's
UI text.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.support.pixelart import enlarge, sprite
from tests.support.real_comfyui import RunningComfyUI
from tests.test_comfyui_nodes import _read_output, _widget_defaults

pytestmark = pytest.mark.comfyui


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_snap_cleanup_and_outline_in_a_graph(comfyui: RunningComfyUI) -> None:
    from pixart_nodes.core import cleanup, pixelate, snap

    info = comfyui.get_json("/object_info")
    spr = sprite(20, 24, seed=6)
    big = enlarge(spr, 4.5, head=(1.5, 0.5))
    name = comfyui.upload_image(_png(big), "pixart_snap_src.png")
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "PixartSnapToGrid", "inputs": {**_widget_defaults(info["PixartSnapToGrid"]),
                                                           "image": ["1", 0]}},
        "3": {"class_type": "PixartCleanup", "inputs": {**_widget_defaults(info["PixartCleanup"]),
                                                        "image": ["2", 0], "background": "auto"}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "pixart/snap"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "pixart/clean"}},
        "6": {"class_type": "PixartPixelate", "inputs": {**_widget_defaults(info["PixartPixelate"]),
                                                         "image": ["1", 0], "method": "outline", "pixel_size": 4,
                                                         "width": 0, "height": 0, "upscale": False}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "pixart/outline"}},
        # what the AI workflow does: a grid with fewer cells than the result needs passes the picture through
        "8": {"class_type": "PixartSnapToGrid", "inputs": {**_widget_defaults(info["PixartSnapToGrid"]),
                                                           "image": ["1", 0], "min_columns": 25, "min_rows": 20}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "pixart/snap_coarse"}},
    }
    entry = comfyui.run_prompt(graph)
    snapped = _read_output(comfyui, entry, "4")
    assert np.array_equal(snapped, spr)
    assert np.array_equal(snapped, snap.snap(big).image)
    assert entry["outputs"]["2"]["text"][0].startswith("grid 4.50x4.50")
    cleaned = _read_output(comfyui, entry, "5")
    assert np.array_equal(cleaned, cleanup.cleanup(spr, background="auto").image[..., :3])
    assert np.array_equal(_read_output(comfyui, entry, "9"), big)
    assert "fewer cells than 25x20" in entry["outputs"]["8"]["text"][0]
    outlined = _read_output(comfyui, entry, "7")
    assert np.array_equal(outlined, pixelate.pixelate(big, pixel_size=4, method="outline"))
