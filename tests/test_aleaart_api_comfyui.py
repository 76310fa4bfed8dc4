"""AleaArt backend through a real ComfyUI with the tiny SD1.5 checkpoint: the pack's AleaArt node reports the same
mapping the response states, the stored image is the returned one, and the palette switch really leaves only
palette colours."""
from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from bridge.app import ENGINE, create_app
from bridge.config import load_settings
from pixart_nodes.core import aleaart
from tests.test_aleaart_api import CHAIN, PARAMETER_KEYS, RESPONSE_KEYS
from tests.support.waiting import wait_healthy

pytestmark = [pytest.mark.asyncio, pytest.mark.comfyui, pytest.mark.slow]

SMALL = {"steps": 2, "width": 64, "height": 64}


@pytest_asyncio.fixture
async def client(comfyui: Any, aiohttp_client: Any, tmp_path: Any) -> Any:
    settings = load_settings({"data_dir": tmp_path / "data", "comfyui_urls": [comfyui.url]}, env_file=None)
    c = await aiohttp_client(create_app(settings, adapter_names=["aleaart"]))
    await wait_healthy(c, timeout=30)
    return c


async def generate(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/generate-image", json=body)
    data = await resp.json()
    assert resp.status == 200, data
    return data


def image_of(data: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(data["imageBase64"].split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


async def test_chain_form_matches_the_node_report(client: Any, comfyui: Any) -> None:
    data = await generate(client, {"parameters": CHAIN, "tokenId": "11", **SMALL})
    assert set(data) == RESPONSE_KEYS and set(data["parameters"]) == PARAMETER_KEYS
    assert image_of(data).shape == (64, 64, 3) and image_of(data).std() > 1.0
    stored = await (await client.get(data["imageUrl"])).read()
    assert base64.b64decode(data["imageBase64"].split(",", 1)[1]) == stored
    # What the node inside ComfyUI derived is what the response says (and what the core resolves).
    job = (await client.app[ENGINE].list(workflow="aleaart"))[0]
    entry = comfyui.get_json(f"/history/{job.prompt_id}")[job.prompt_id]
    reports = [out["aleaart"][0] for out in entry["outputs"].values() if "aleaart" in out]
    assert len(reports) == 1
    report = reports[0]
    expected = aleaart.resolve(aleaart.RenderParams.from_dict(CHAIN))
    assert report["prompt"] == data["prompt"] == expected["prompt"]
    assert (report["cfg"], report["seed"], report["sampler"]) == \
        (data["parameters"]["cfg_scale"], data["parameters"]["seed"], data["parameters"]["sampler"])


async def test_palette_switch_leaves_only_palette_colours(client: Any) -> None:
    plain = await generate(client, {"parameters": CHAIN, "tokenId": "12", **SMALL})
    mapped = await generate(client, {"parameters": CHAIN, "tokenId": "12", "applyPalette": True, **SMALL})
    _name, colours = aleaart.palette_rgb(CHAIN["paletteId"])
    allowed = {tuple(c) for c in colours}
    used = {tuple(p) for p in image_of(mapped).reshape(-1, 3).tolist()}
    assert used <= allowed, used - allowed
    assert len({tuple(p) for p in image_of(plain).reshape(-1, 3).tolist()} - allowed) > 0


async def test_resolved_form(client: Any) -> None:
    data = await generate(client, {"prompt": "a castle", "steps": 2, "cfg_scale": 8.0, "seed": 9, "sampler": "LMS",
                                   "width": 72, "height": 64, "tokenId": "13"})
    assert data["parameters"] == {"steps": 2, "cfg_scale": 8.0, "seed": 9, "sampler": "LMS", "width": 72,
                                  "height": 64}
    assert image_of(data).shape == (64, 72, 3)
