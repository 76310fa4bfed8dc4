"""AleaArt backend API over the ComfyUI protocol double: both request forms, the response contract, the bound
`aleaart` graph (node links vs. overrides, the palette switch), stored images and their path checks, errors."""
from __future__ import annotations

import asyncio
import base64
import io
import re
import urllib.parse
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image

from bridge.keys import ENGINE
from pixart_nodes.core import aleaart
from tests.support.double import ComfyDouble
from tests.support.waiting import wait_healthy

pytestmark = pytest.mark.asyncio

RESPONSE_KEYS = {"success", "imageUrl", "imageBase64", "tokenId", "prompt", "parameters"}
PARAMETER_KEYS = {"steps", "cfg_scale", "seed", "sampler", "width", "height"}
CHAIN = {"promptIndex": 3, "styleIndex": 7, "samplerIndex": 2, "aspectIndex": 1, "steps": 20, "cfg": 75,
         "latentSeed": 12345, "paletteId": 5}


@pytest_asyncio.fixture
async def client(bridge_factory: Any) -> Any:
    c = await bridge_factory(adapters=["aleaart"])
    await wait_healthy(c)
    return c


def graph(double: ComfyDouble) -> dict[str, Any]:
    return double.prompts[-1]["prompt"]


def node_of(g: dict[str, Any], cls: str) -> tuple[str, dict[str, Any]]:
    found = [(nid, n["inputs"]) for nid, n in g.items() if n["class_type"] == cls]
    assert len(found) == 1
    return found[0]


def png_of(data_url: str) -> bytes:
    assert data_url.startswith("data:image/png;base64,")
    return base64.b64decode(data_url.split(",", 1)[1])


async def generate(client: Any, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    resp = await client.post("/generate-image", json=body)
    data = await resp.json()
    assert resp.status == status, data
    return data


async def test_chain_parameters_form(client: Any, comfy_double: ComfyDouble) -> None:
    data = await generate(client, {"parameters": CHAIN, "tokenId": "1"})
    assert set(data) == RESPONSE_KEYS and data["success"] is True and data["tokenId"] == "1"
    resolved = aleaart.resolve(aleaart.RenderParams.from_dict(CHAIN))
    assert data["prompt"] == resolved["prompt"] == (
        "steampunk machinery, brass and copper, Victorian era, intricate detail, digital art, photorealistic, "
        "detailed, sharp, landscape, 16:9 | max detail | 8k")
    assert data["parameters"] == {"steps": 20, "cfg_scale": 7.5, "seed": 12345, "sampler": "Euler a",
                                  "width": 1024, "height": 576}
    assert set(data["parameters"]) == PARAMETER_KEYS
    assert re.fullmatch(r"/generated_images/art_token_1_[0-9a-f]{32}\.png", data["imageUrl"])
    png = png_of(data["imageBase64"])
    with Image.open(io.BytesIO(png)) as im:
        assert im.size == (1024, 576)  # the size the AleaArt node derived for aspectIndex 1
    resp = await client.get(data["imageUrl"])
    assert resp.status == 200 and resp.content_type == "image/png" and await resp.read() == png
    # the name carries the job that holds the image: it is that job's one stored copy
    job_id = data["imageUrl"].rsplit("_", 1)[1].removesuffix(".png")
    engine = client.app[ENGINE]
    stored = [b.key async for b in engine.blobs.list("")]
    assert [k for k in stored if k.endswith(".png")] == [f"outputs/{job_id}/images_0.png"]
    assert (await client.get(data["imageUrl"].replace("art_token_1_", "art_token_2_"))).status == 404
    assert (await client.delete(f"/jobs/{job_id}")).status in (200, 204)
    assert (await client.get(data["imageUrl"])).status == 404
    g = graph(comfy_double)
    alea_id, alea = node_of(g, "PixartAleaArtParams")
    assert {k: alea[k] for k in CHAIN} == CHAIN and alea["mode"] == "params"
    _, ks = node_of(g, "KSampler")
    # Nothing overridden: every sampling input is still the node's output.
    assert all(ks[k][0] == alea_id for k in ("seed", "steps", "cfg", "sampler_name", "scheduler"))
    _, save = node_of(g, "SaveImage")
    assert g[save["images"][0]]["class_type"] == "VAEDecode"
    history = comfy_double.history[comfy_double.prompts[-1]["prompt_id"]]
    assert history["outputs"][alea_id]["aleaart"][0]["sampler_name"] == "euler_ancestral"
    assert "PixartQuantize" not in [g[n]["class_type"] for n in history["outputs"]]


async def test_chain_parameters_as_decimal_strings(client: Any, comfy_double: ComfyDouble) -> None:
    # ethers reads the contract's uint fields as BigInt, which JSON.stringify refuses: front ends send .toString()
    await generate(client, {"parameters": {k: str(v) for k, v in CHAIN.items()}, "tokenId": "1"})
    _, alea = node_of(graph(comfy_double), "PixartAleaArtParams")
    assert {k: alea[k] for k in CHAIN} == CHAIN
    data = await generate(client, {"parameters": {**CHAIN, "steps": "twenty"}}, 400)
    assert data["error"].startswith("parameters.steps") and data["field"] == "parameters.steps", data


async def test_response_format_url_answers_a_link_instead_of_base64(client: Any) -> None:
    data = await generate(client, {"prompt": "a fox", "steps": 2, "width": 64, "height": 64, "tokenId": "9",
                                   "response_format": "url"})
    assert data["imageBase64"] is None
    link = urllib.parse.urlsplit(data["imageUrl"])
    assert link.scheme == "http" and link.path.startswith("/jobs/") and link.path.endswith("/outputs/images/0")
    resp = await client.get(link.path)
    assert resp.status == 200
    with Image.open(io.BytesIO(await resp.read())) as im:
        assert im.size == (64, 64)
    bad = await generate(client, {"prompt": "a fox", "response_format": "jpeg"}, status=400)
    assert bad["success"] is False and bad["field"] == "response_format"


async def test_overrides_replace_only_what_they_name(client: Any, comfy_double: ComfyDouble) -> None:
    data = await generate(client, {"parameters": CHAIN, "tokenId": 7, "steps": 2, "width": 64, "height": 64})
    assert data["tokenId"] == 7
    assert data["parameters"] == {"steps": 2, "cfg_scale": 7.5, "seed": 12345, "sampler": "Euler a",
                                  "width": 64, "height": 64}
    with Image.open(io.BytesIO(png_of(data["imageBase64"]))) as im:
        assert im.size == (64, 64)
    g = graph(comfy_double)
    alea_id, _ = node_of(g, "PixartAleaArtParams")
    _, ks = node_of(g, "KSampler")
    assert ks["steps"] == 2 and ks["seed"][0] == alea_id and ks["sampler_name"][0] == alea_id
    _, latent = node_of(g, "EmptyLatentImage")
    assert (latent["width"], latent["height"]) == (64, 64)


async def test_resolved_form(client: Any, comfy_double: ComfyDouble) -> None:
    body = {"prompt": "a castle | max detail | 8k", "steps": 3, "cfg_scale": 9.5, "seed": 77,
            "sampler": "DPM++ SDE", "width": 64, "height": 72, "tokenId": "42"}
    data = await generate(client, body)
    assert data["prompt"] == body["prompt"]
    assert data["parameters"] == {"steps": 3, "cfg_scale": 9.5, "seed": 77, "sampler": "DPM++ SDE",
                                  "width": 64, "height": 72}
    with Image.open(io.BytesIO(png_of(data["imageBase64"]))) as im:
        assert im.size == (64, 72)
    g = graph(comfy_double)
    _, ks = node_of(g, "KSampler")
    assert (ks["steps"], ks["cfg"], ks["seed"], ks["sampler_name"], ks["scheduler"]) == \
        (3, 9.5, 77, "dpmpp_sde", "normal")
    texts = {n["inputs"]["text"] for n in g.values() if n["class_type"] == "CLIPTextEncode"}
    assert texts == {body["prompt"], ""}


async def test_resolved_form_defaults_and_random_seed(client: Any, comfy_double: ComfyDouble) -> None:
    data = await generate(client, {"prompt": "p"})
    params = data["parameters"]
    assert data["tokenId"] == "unknown" and "art_token_unknown_" in data["imageUrl"]
    assert {k: params[k] for k in ("steps", "cfg_scale", "sampler", "width", "height")} == \
        {"steps": 20, "cfg_scale": 7.5, "sampler": "DPM++ 2M Karras", "width": 512, "height": 512}
    assert isinstance(params["seed"], int) and 0 <= params["seed"] < 2**32
    _, ks = node_of(graph(comfy_double), "KSampler")
    assert ks["seed"] == params["seed"] and (ks["sampler_name"], ks["scheduler"]) == ("dpmpp_2m", "karras")


async def test_token_seed_form_derives_like_the_contract(client: Any, comfy_double: ComfyDouble) -> None:
    seed = "0x" + "ab" * 32
    data = await generate(client, {"tokenSeed": seed, "tokenId": "3", "steps": 1, "width": 64, "height": 64})
    derived = aleaart.derive_params(seed)
    assert data["prompt"] == aleaart.build_prompt(derived)
    assert data["parameters"]["seed"] == derived.latentSeed
    _, alea = node_of(graph(comfy_double), "PixartAleaArtParams")
    assert alea["mode"] == "seed" and alea["token_seed"] == seed


async def test_palette_switch(client: Any, comfy_double: ComfyDouble) -> None:
    data = await generate(client, {"parameters": CHAIN, "tokenId": "1", "applyPalette": True, "steps": 1,
                                   "width": 64, "height": 64})
    name, colours = aleaart.PALETTES[5]
    assert data["palette"] == {"paletteId": 5, "name": name, "colors": list(colours)}
    g = graph(comfy_double)
    alea_id, _ = node_of(g, "PixartAleaArtParams")
    qid, quant = node_of(g, "PixartQuantize")
    _, save = node_of(g, "SaveImage")
    assert save["images"] == [qid, 0] and quant["palette"] == [alea_id, 9] and quant["dither"] == "none"
    history = comfy_double.history[comfy_double.prompts[-1]["prompt_id"]]
    assert history["status"]["status_str"] == "success"
    resp = await client.post("/generate-image", json={"prompt": "p", "applyPalette": True})
    body = await resp.json()
    assert resp.status == 400 and body["success"] is False and "paletteId" in body["error"]


async def test_the_palette_setting_leaves_requests_without_a_palette_id_alone(bridge_factory: Any,
                                                                            comfy_double: Any) -> None:
    # AleaArt's front end sends the resolved form, which has no paletteId: with ALEAART_APPLY_PALETTE=true each of
    # its requests was a 400 "applyPalette needs a paletteId", for a flag and a field the client never sent.
    client = await bridge_factory(adapters=["aleaart"], ALEAART_APPLY_PALETTE="true")
    small = {"steps": 1, "width": 64, "height": 64}
    data = await generate(client, {"prompt": "a castle", "tokenId": "2", **small})
    assert "palette" not in data and len(comfy_double.prompts) == 1
    _, save = node_of(graph(comfy_double), "SaveImage")
    assert graph(comfy_double)[save["images"][0]]["class_type"] == "VAEDecode"  # the palette node is not run
    # a paletteId, top level or on chain, is mapped by the setting; a request's own false still wins
    data = await generate(client, {"prompt": "a castle", "paletteId": 3, **small})
    assert data["palette"]["paletteId"] == 3
    data = await generate(client, {"parameters": CHAIN, **small})
    assert data["palette"]["paletteId"] == CHAIN["paletteId"]
    data = await generate(client, {"parameters": CHAIN, "applyPalette": False, **small})
    assert "palette" not in data
    # a request that asks for the palette itself and gives no paletteId is still told so
    data = await generate(client, {"prompt": "p", "applyPalette": True}, status=400)
    assert data["field"] == "paletteId" and len(comfy_double.prompts) == 4


@pytest.mark.parametrize(("body", "text"), [
    ({}, "Either parameters (AleaArt RenderParams) or prompt is required"),
    ({"prompt": "  "}, "prompt must not be empty"),
    ({"parameters": {**CHAIN, "promptIndex": 12}}, "parameters.promptIndex must be between 0 and 11, got 12"),
    ({"parameters": {k: v for k, v in CHAIN.items() if k != "cfg"}}, "parameters.cfg is required"),
    ({"parameters": "0x12"}, "parameters must be a JSON object"),
    ({"tokenSeed": "0x1234"}, "tokenSeed: expected 32 bytes"),
    ({"prompt": "p", "width": 100}, "width must be a multiple of 8, got 100"),
    ({"prompt": "p", "steps": -1}, "steps must be between 1 and 150, got -1"),
    ({"prompt": "p", "sampler": "Warp 9"}, "Unknown sampler 'Warp 9'"),
    ({"prompt": "p", "tokenId": "../../etc"}, "tokenId must be 1-64 characters"),
    ({"prompt": "p", "applyPalette": "yes", "paletteId": 1}, "applyPalette must be true or false"),
    ({"prompt": "p", "model": "sdxl.safetensors"}, "Model sdxl.safetensors not loaded"),
])
async def test_bad_requests(client: Any, comfy_double: ComfyDouble, body: dict[str, Any], text: str) -> None:
    before = len(comfy_double.prompts)
    resp = await client.post("/generate-image", json=body)
    data = await resp.json()
    assert resp.status == 400, data
    assert data["success"] is False and data["error"].startswith(text), data
    assert len(comfy_double.prompts) == before
    assert (await generate(client, {"prompt": "ok", "steps": 1, "width": 64, "height": 64}))["success"] is True


async def test_unknown_sampler_lists_valid_values(client: Any) -> None:
    resp = await client.post("/generate-image", json={"prompt": "p", "sampler": "nope"})
    data = await resp.json()
    assert resp.status == 400
    assert data["validValues"][:6] == [s[0] for s in aleaart.SAMPLERS] and "euler" in data["validValues"]


async def test_generation_failure_is_500(client: Any, comfy_double: ComfyDouble) -> None:
    comfy_double.fail_class = "VAEDecode"
    data = await generate(client, {"prompt": "p", "steps": 1, "width": 64, "height": 64}, status=500)
    assert data["success"] is False and "VAEDecode" in data["error"]


@pytest.mark.parametrize("path", [
    "/generated_images/nothing_here.png",
    "/generated_images/..%2F..%2Fetc%2Fpasswd",
    "/generated_images/%2E%2E%2Fjobs.sqlite",
    "/generated_images/.hidden.png",
    "/generated_images/art.txt",
])
async def test_generated_images_refuses_unknown_and_traversal(client: Any, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 404
    assert await resp.json() == {"error": "Image not found"}


async def test_index_and_health(client: Any) -> None:
    data = await (await client.get("/")).json()
    assert data["endpoints"][:3] == ["/generate-image", "/health", "/generated_images/<filename>"]
    assert isinstance(data["message"], str)
    resp = await client.get("/health")
    health = await resp.json()
    assert resp.status == 200
    assert (health["status"], health["model_loaded"], health["cuda_available"]) == ("healthy", True, False)


async def test_a_full_queue_is_503_with_retry_after(bridge_factory: Any, comfy_double: ComfyDouble) -> None:
    comfy_double.step_delay = 0.1
    client = await bridge_factory(adapters=["aleaart"], max_queue=1)
    body = {"prompt": "a fox", "steps": 20, "width": 64, "height": 64}
    first = asyncio.ensure_future(client.post("/generate-image", json=body))
    for _ in range(200):
        if comfy_double.prompts:
            break
        await asyncio.sleep(0.01)
    resp = await client.post("/generate-image", json=body)
    data = await resp.json()
    assert resp.status == 503 and data["success"] is False, data
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await first).status == 200
