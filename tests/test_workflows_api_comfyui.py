"""Integration: a workflow tuned in the editor becomes an endpoint with no Python written, against a real ComfyUI
with the pack and the tiny random-weight SD1.5 checkpoint built at test time.

The graph (txt2img, then the pack's Pixelate) is saved in the editor's format, drafted into a manifest by
`python -m bridge.workflows new` against the live /object_info, dropped into a folder the bridge is told about,
and run through POST /workflows/{name}?wait=."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from bridge import workflows as W
from bridge.app import create_app
from bridge.config import load_settings
from tests.support.imaging import decode_png_data_url
from tests.support.subgraphs import sampler_in_a_subgraph
from tests.support.tiny_models import TINY_CHECKPOINT

pytestmark = [pytest.mark.comfyui, pytest.mark.slow, pytest.mark.asyncio]


def tuned_graph() -> dict[str, Any]:
    """What an artist built: the shipped txt2img graph with the pack's Pixelate between decoder and saver."""
    graph = copy.deepcopy(W.load_workflow(W.DEFAULT_WORKFLOWS_DIR / "txt2img.manifest.json").graph)
    graph["20"] = {"class_type": "PixartPixelate", "inputs": {"image": ["8", 0], "method": "kcentroid",
                                                              "pixel_size": 8, "width": 0, "height": 0,
                                                              "upscale": False, "k": 2},
                   "_meta": {"title": "Pixelate"}}
    graph["9"]["inputs"]["images"] = ["20", 0]
    graph["4"]["inputs"]["ckpt_name"] = TINY_CHECKPOINT
    graph["3"]["inputs"].update(steps=2, cfg=2.0)
    graph["5"]["inputs"].update(width=64, height=64)
    return graph


@pytest_asyncio.fixture
async def served(comfyui: Any, aiohttp_client: Any, tmp_path: Path) -> Any:
    object_info = comfyui.get_json("/object_info")
    # Saved from the editor ("Save", not "Export (API)"): the format `new` has to read back through /object_info.
    editor_file = tmp_path / "pixel_scene.json"
    wf = W.Workflow(name="pixel_scene", version=1, description="", graph=tuned_graph(), parameters={}, outputs={})
    editor_file.write_text(json.dumps(W.export_editor(wf, object_info)))
    shared = tmp_path / "shared"
    code = W.main(["new", str(editor_file), "--name", "pixel_scene", "--url", comfyui.url, "--out", str(shared),
                   "--description", "A tiny SD scene, pixelated by the pack.",
                   "--nodes", "KSampler", "EmptyLatentImage", "Pixelate", "CLIPTextEncode"])
    assert code == 0
    # the same graph after "Convert to Subgraph" on the sampler, its seed shown on the instance
    sub_file = tmp_path / "pixel_scene_sub.json"
    sub_file.write_text(json.dumps(sampler_in_a_subgraph(json.loads(editor_file.read_text()), [3, "fixed"])))
    assert W.main(["new", str(sub_file), "--name", "pixel_scene_sub", "--url", comfyui.url, "--out", str(shared),
                   "--nodes", "Pixelate", "CLIPTextEncode", "KSampler"]) == 0
    settings = load_settings({"data_dir": tmp_path / "data", "comfyui_urls": [comfyui.url],
                              "extra_workflows_dirs": [str(shared)]}, env_file=None)
    return await aiohttp_client(create_app(settings, adapter_names=["jobs_api"]))


async def run(client: Any, parameters: dict[str, Any], name: str = "pixel_scene") -> dict[str, Any]:
    resp = await client.post(f"/workflows/{name}?wait=300", json={"parameters": parameters})
    job = await resp.json()
    assert resp.status == 200 and job["status"] == "completed", job
    return job


async def test_a_tuned_editor_graph_is_served_with_no_python(served: Any, comfyui: Any) -> None:
    desc = await (await served.get("/workflows/pixel_scene")).json()
    props = desc["parameters"]["properties"]
    # Drafted from the live /object_info: types, defaults and limits are ComfyUI's own.
    assert {"seed", "steps", "cfg", "sampler_name", "width", "height", "method", "pixel_size", "prompt",
            "negative_prompt"} <= set(props)
    assert props["steps"]["default"] == 2 and props["width"]["default"] == 64
    assert props["method"]["default"] == "kcentroid" and props["pixel_size"]["maximum"] == 512
    # a list input is described by the values this ComfyUI offers now (its samplers, the pack's methods)
    object_info = comfyui.get_json("/object_info")
    for name, ref in (("sampler_name", "KSampler.sampler_name"), ("method", "PixartPixelate.method")):
        assert props[name]["enum"] == W.choices_in(object_info, ref), name
    assert "kcentroid" in props["method"]["enum"]
    first = await run(served, {"seed": 7, "prompt": "a red house", "pixel_size": 8})
    again = await run(served, {"seed": 7, "prompt": "a red house", "pixel_size": 8})
    other = await run(served, {"seed": 8, "prompt": "a red house", "pixel_size": 8})
    coarse = await run(served, {"seed": 7, "prompt": "a red house", "pixel_size": 16})
    images = [np.asarray(decode_png_data_url(j["result"]["images"][0]).convert("RGB"))
              for j in (first, again, other, coarse)]
    assert images[0].shape == (8, 8, 3) and images[3].shape == (4, 4, 3)  # 64 px / block size, one pixel a block
    assert np.array_equal(images[0], images[1])  # the seed reproduces the picture
    assert not np.array_equal(images[0], images[2])
    assert first["result"]["parameters"]["seed"] == 7 and first["result"]["parameters"]["pixel_size"] == 8
    # Out-of-range values are refused by name before anything reaches ComfyUI.
    resp = await served.post("/workflows/pixel_scene", json={"parameters": {"pixel_size": 0}})
    body = await resp.json()
    assert resp.status == 400 and body["field"] == "pixel_size"


async def test_a_graph_with_a_subgraph_runs_as_the_same_graph_flat(served: Any) -> None:
    # flattened as the frontend queues it: the subgraph's shown seed is one parameter, and the picture is the
    # plain graph's, pixel for pixel
    props = (await (await served.get("/workflows/pixel_scene_sub")).json())["parameters"]["properties"]
    assert props["noise_seed"]["default"] == 3 and "seed" not in props
    flat = await run(served, {"seed": 9, "prompt": "a red house", "pixel_size": 8})
    nested = await run(served, {"noise_seed": 9, "prompt": "a red house", "pixel_size": 8}, "pixel_scene_sub")
    a, b = (np.asarray(decode_png_data_url(j["result"]["images"][0]).convert("RGB")) for j in (flat, nested))
    assert a.shape == (8, 8, 3) and np.array_equal(a, b)
