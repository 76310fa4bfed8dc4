"""Defects found by probing the jobs API, /generate, AleaArt and Pixart editor adapters against their seed documents
and docs pages: each test is a request the contract calls valid, answered as the contract says."""
from __future__ import annotations

from typing import Any

import pytest
import pytest_asyncio

from bridge.adapters import pixart_editor as pe
from tests.support.imaging import solid_png_b64
from tests.support.waiting import wait_healthy

SKETCH = solid_png_b64(32, 32, (200, 30, 30), "RGB", data_url=True)


# ---------------------------------------------------------------------------------------------- Pixart editor


@pytest.mark.parametrize("style", ["pixel_modern", "PIXEL_MODERN", "Pixel Modern", "pixelmodern"])
def test_pixel_modern_is_found_however_it_is_spelled(style: str) -> None:
    # docs/api/pixart-editor.md: "Case, `-` and `_` are ignored, so `PICO_8` works": true of every named palette,
    # yet the default style itself, spelled so, was answered "style ... is unknown".
    choice = pe.resolve_palette(style, None, 32)
    assert choice.params == {"palette_source": "image", "palette_colors": 32}
    assert choice.label == "kmeans-32"


@pytest.mark.asyncio
async def test_pixel_modern_spelled_with_underscore_is_accepted_over_http(bridge_factory: Any,
                                                                          comfy_double: Any) -> None:
    client = await bridge_factory(adapters=["pixart_editor"])
    await wait_healthy(client)
    resp = await client.post("/api/pixel-generation/generate", json={
        "id": "hunt-modern", "sketchData": SKETCH, "prompt": "a box", "width": 16, "height": 16,
        "style": "PIXEL_MODERN", "timestamp": 1699000000000})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["id"] == "hunt-modern" and body["status"] in ("pending", "processing", "completed")
    done = await (await client.get("/api/pixel-generation/status/hunt-modern?wait=10")).json()
    assert done["status"] == "completed", done
    assert done["metadata"]["palette"] == "kmeans-32"


# ---------------------------------------------------------------------------------------------- jobs API


@pytest_asyncio.fixture
async def jobs_client(bridge_factory: Any, comfy_double: Any) -> Any:
    client = await bridge_factory(adapters=["jobs_api"])
    await wait_healthy(client)
    return client


@pytest.mark.asyncio
async def test_a_blank_scheduler_means_the_samplers_own_like_a_blank_sampler_or_model(jobs_client: Any,
                                                                                      comfy_double: Any) -> None:
    # Form-built clients send "" for a field left unset: "" as sampler or model already meant the default, while
    # "" as scheduler was a 400 "Unknown scheduler ''".
    resp = await jobs_client.post("/generate/text2img", json={
        "prompt": "a", "width": 64, "height": 64, "steps": 1, "sampler": "ddim", "scheduler": "", "model": ""})
    body = await resp.json()
    assert resp.status == 202, body
    job = await (await jobs_client.get(f"/jobs/{body['id']}?wait=10")).json()
    assert job["status"] == "completed", job
    assert job["result"]["parameters"]["scheduler"] == "ddim_uniform"
    ks = next(n["inputs"] for n in comfy_double.prompts[-1]["prompt"].values() if n["class_type"] == "KSampler")
    assert (ks["sampler_name"], ks["scheduler"]) == ("ddim", "ddim_uniform")
