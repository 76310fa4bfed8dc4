"""Integration: the Pixart editor API through the bridge and a real ComfyUI with the pack, the tiny random-weight
SD1.5 checkpoint and the tiny ControlNet built at test time.

Checks status codes, exact response keys and types, image sizes and palette membership (every pixel of the
decoded resultDataUrl is a palette colour). The model-free path is also checked pixel for pixel against a brute-force
expectation on sketches whose blocks are single palette colours."""
from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from bridge import workflows as W
from bridge.app import create_app
from bridge.config import load_settings
from pixart_nodes.core.palette import named_palette, palette_from_hex
from tests.support.tiny_models import TINY_CHECKPOINT, TINY_CONTROLNET
from tests.test_pixart_editor import METADATA_KEYS, STATUS_KEYS, hundred_megapixel_png

pytestmark = [pytest.mark.comfyui, pytest.mark.slow, pytest.mark.asyncio]

WORKFLOWS = W.DEFAULT_WORKFLOWS_DIR
EDITOR = W.DEFAULT_EDITOR_DIR
NAMES = ("pixel_art", "pixel_art_ai")
AI = {"PIXART_EDITOR_CHECKPOINT": TINY_CHECKPOINT, "PIXART_EDITOR_CONTROLNET": TINY_CONTROLNET,
      "PIXART_EDITOR_AI_SIZE": "64", "PIXART_EDITOR_STEPS": "2"}



@pytest_asyncio.fixture
async def bridge(aiohttp_client, comfyui, tmp_path):
    async def make(**overrides: str):
        settings = load_settings({"data_dir": tmp_path / f"data{len(overrides)}", "comfyui_urls": [comfyui.url]},
                                 overrides=overrides, env_file=None)
        return await aiohttp_client(create_app(settings, adapter_names=["pixart_editor"]))

    return make


def data_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


async def generate(client, body: dict[str, Any], timeout: float = 240.0) -> dict[str, Any]:
    resp = await client.post("/api/pixel-generation/generate", json=body)
    answer = await resp.json()
    assert resp.status == 200, answer
    assert set(answer) == {"id", "status", "progress"} and answer["id"] == body["id"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        resp = await client.get(f"/api/pixel-generation/status/{body['id']}")
        assert resp.status == 200
        state = await resp.json()
        assert set(state) == STATUS_KEYS
        assert state["status"] in ("pending", "processing", "completed", "failed")
        assert isinstance(state["progress"], int) and 0 <= state["progress"] <= 100
        if state["status"] in ("completed", "failed"):
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"{body['id']} did not finish")


def result_pixels(state: dict[str, Any], width: int, height: int) -> np.ndarray:
    """Decode resultDataUrl and check the completed answer's keys and types."""
    assert state["status"] == "completed", state["error"]
    assert state["error"] is None and state["progress"] == 100 and isinstance(state["processingTime"], int)
    md = state["metadata"]
    assert set(md) == METADATA_KEYS
    assert isinstance(md["colorsUsed"], int) and md["pixelCount"] == width * height
    url = state["resultDataUrl"]
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        assert im.format == "PNG" and im.size == (width, height)
        arr = np.asarray(im.convert("RGB"))
    colours = {tuple(int(v) for v in px) for px in arr.reshape(-1, 3)}
    assert md["colorsUsed"] == len(colours) == len(md["colors"])
    assert {"#%02x%02x%02x" % c for c in colours} == set(md["colors"])
    return arr


def assert_in_palette(arr: np.ndarray, palette: np.ndarray) -> None:
    allowed = {tuple(int(v) for v in c) for c in palette}
    found = {tuple(int(v) for v in px) for px in arr.reshape(-1, 3)}
    assert found <= allowed, f"colours outside the palette: {sorted(found - allowed)[:8]}"


def noisy_sketch(w: int = 96, h: int = 72, seed: int = 0) -> Image.Image:
    """Random colours, a gradient and a transparent corner: nothing here is a palette colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 0] = (x * 255 // (w - 1)).astype(np.uint8)
    rgba[..., 1] = (y * 255 // (h - 1)).astype(np.uint8)
    rgba[..., 2] = rng.integers(0, 256, (h, w), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[: h // 4, : w // 4, 3] = 0
    return Image.fromarray(rgba, "RGBA")


# ---------------------------------------------------------------------------------------------------------------


async def test_workflows_match_the_real_object_info(comfyui):
    real = comfyui.get_json("/object_info")
    workflows = W.load_workflows(WORKFLOWS)
    for name in NAMES:
        assert W.check_object_info(workflows[name], real) == [], name
        expected = W.editor_json_text(W.export_editor(workflows[name], real))
        assert (EDITOR / f"{name}.json").read_text() == expected, f"{name}: regenerate the editor copy"
    # The protocol double's entries for these nodes are checked against the same server by
    # tests/test_engine_comfyui.py::test_double_object_info_matches_real_comfyui.


async def test_block_aligned_sketch_comes_back_exactly(bridge):
    """Blocks of single palette colours survive pixelate + quantize unchanged; transparency becomes the palette
    colour nearest to the white background (#fff1e8 in PICO-8, by RGB and OKLab alike)."""
    client = await bridge()
    pal = named_palette("retro-16bit").colors
    rng = np.random.default_rng(3)
    w, h, f = 12, 9, 4
    small = pal[rng.integers(0, len(pal), (h, w))]
    alpha = np.full((h, w), 255, np.uint8)
    alpha[0, :] = 0
    alpha[4, 5] = 0
    rgba = np.concatenate([small, alpha[..., None]], axis=2)
    big = np.repeat(np.repeat(rgba, f, axis=0), f, axis=1)
    state = await generate(client, {"id": "aligned", "sketchData": data_url(Image.fromarray(big, "RGBA")),
                                    "prompt": "", "width": w, "height": h, "style": "retro-16bit",
                                    "timestamp": 1})
    out = result_pixels(state, w, h)
    expected = small.copy()
    expected[alpha == 0] = (0xFF, 0xF1, 0xE8)
    assert np.array_equal(out, expected)
    assert state["metadata"]["algorithm"] == "pixel_art"

    # a sketch smaller than the target is enlarged with nearest neighbour: every pixel becomes a 2x2 block
    tiny = pal[rng.integers(0, len(pal), (5, 7))]
    state = await generate(client, {"id": "enlarged", "sketchData": data_url(Image.fromarray(tiny)),
                                    "width": 14, "height": 10, "style": "pico-8", "timestamp": 2})
    assert np.array_equal(result_pixels(state, 14, 10), np.repeat(np.repeat(tiny, 2, axis=0), 2, axis=1))


@pytest.mark.parametrize("style,palette_colors,dither", [
    ("retro-8bit", None, "none"),
    ("retro-16bit", None, "floyd-steinberg"),
    ("gameboy", None, "bayer-4x4"),
    ("nes", None, "atkinson"),
    ("retro-8bit", ["#000000", "#ffffff", "#ff0000", "#0000ff"], "blue-noise"),
])
async def test_every_pixel_is_a_palette_colour(bridge, style, palette_colors, dither):
    client = await bridge()
    body = {"id": f"pal-{style}-{dither}", "sketchData": data_url(noisy_sketch()), "prompt": "noise",
            "width": 24, "height": 18, "style": style, "colorPalette": palette_colors, "dither": dither,
            "timestamp": 3}
    state = await generate(client, body)
    out = result_pixels(state, 24, 18)
    palette = palette_from_hex(palette_colors).colors if palette_colors else named_palette(style).colors
    assert_in_palette(out, palette)
    assert state["metadata"]["colorsUsed"] >= 2 and state["metadata"]["dither"] == dither


async def test_pixel_modern_extracts_at_most_32_colours(bridge):
    client = await bridge()
    state = await generate(client, {"id": "modern", "sketchData": data_url(noisy_sketch(seed=5)), "prompt": "x",
                                    "width": 40, "height": 30, "style": "pixel-modern", "timestamp": 4})
    out = result_pixels(state, 40, 30)
    assert 2 <= state["metadata"]["colorsUsed"] <= 32 and state["metadata"]["palette"] == "kmeans-32"
    # the extracted palette represents the picture: mean colour stays close to the block average of the sketch
    src = np.asarray(noisy_sketch(seed=5).convert("RGB"), np.float64)
    assert np.abs(out.reshape(-1, 3).mean(0) - src.reshape(-1, 3).mean(0)).max() < 40


async def test_ai_path_with_the_tiny_models(bridge):
    client = await bridge(**AI)
    sketch = noisy_sketch(64, 48, seed=9)
    base = {"sketchData": data_url(sketch), "prompt": "a tiny castle", "width": 24, "height": 16,
            "style": "retro-8bit", "timestamp": 5, "seed": 42}
    first = await generate(client, {"id": "ai-1", **base})
    out = result_pixels(first, 24, 16)
    assert first["metadata"]["algorithm"] == "pixel_art_ai" and first["metadata"]["seed"] == 42
    assert_in_palette(out, named_palette("retro-8bit").colors)
    again = await generate(client, {"id": "ai-2", **base})
    assert np.array_equal(result_pixels(again, 24, 16), out)  # same seed, same picture
    plain = await generate(client, {"id": "ai-off", **base, "useAI": False, "prompt": ""})
    assert plain["metadata"]["algorithm"] == "pixel_art" and plain["metadata"]["seed"] is None
    assert_in_palette(result_pixels(plain, 24, 16), named_palette("retro-8bit").colors)
    resp = await client.post("/api/pixel-generation/generate", json={"id": "ai-none", **base, "prompt": ""})
    body = await resp.json()
    assert resp.status == 400 and body["field"] == "prompt"


async def test_bad_input_leaves_the_real_stack_working(bridge, comfyui):
    client = await bridge()
    good = {"id": "after-bad", "sketchData": data_url(noisy_sketch(32, 24)), "prompt": "", "width": 8,
            "height": 8, "style": "gameboy", "timestamp": 6}
    bad = [({"sketchData": "data:image/png;base64," + base64.b64encode(hundred_megapixel_png()).decode()}, 413,
            "sketchData"),
           ({"sketchData": "%%%"}, 400, "sketchData"),
           ({"sketchData": base64.b64encode(b"GIF89a but not really").decode()}, 400, "sketchData"),
           ({"width": -16}, 400, "width"),
           ({"style": "sepia"}, 400, "style")]
    for i, (fields, code, field) in enumerate(bad):
        resp = await client.post("/api/pixel-generation/generate", data=json.dumps({**good, "id": f"b{i}", **fields}),
                                 headers={"Content-Type": "application/json"})
        body = await resp.json()
        assert resp.status == code and body["field"] == field, body
    assert comfyui.get_json("/system_stats")["system"]
    assert_in_palette(result_pixels(await generate(client, good), 8, 8), named_palette("gameboy").colors)
