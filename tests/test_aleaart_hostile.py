"""AleaArt routes under hostile or careless input, beyond the chain values themselves: bodies of the wrong shape,
fields that contradict each other, settings that would blame the client, jobs that end otherwise than completed,
and the stored-image route on a store that presigns links."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import pytest_asyncio

from bridge.adapters import AdapterLoadError
from bridge.keys import ENGINE
from pixart_nodes.core import aleaart
from tests.support.double import ComfyDouble
from tests.support.waiting import until, wait_healthy

pytestmark = pytest.mark.asyncio

CHAIN = {"promptIndex": 3, "styleIndex": 7, "samplerIndex": 2, "aspectIndex": 1, "steps": 20, "cfg": 75,
         "latentSeed": 12345, "paletteId": 5}
SMALL = {"steps": 1, "width": 64, "height": 64}
SEED = "0x" + "ab" * 32


@pytest_asyncio.fixture
async def client(bridge_factory: Any) -> Any:
    c = await bridge_factory(adapters=["aleaart"])
    await wait_healthy(c)
    return c


def alea_node(double: ComfyDouble) -> tuple[str, dict[str, Any]]:
    g = double.prompts[-1]["prompt"]
    [(nid, node)] = [(nid, n) for nid, n in g.items() if n["class_type"] == "PixartAleaArtParams"]
    return nid, node["inputs"]


def alea_report(double: ComfyDouble) -> dict[str, Any]:
    """What the AleaArt node reported it resolved, in the finished prompt's history."""
    nid, _ = alea_node(double)
    return double.history[double.prompts[-1]["prompt_id"]]["outputs"][nid]["aleaart"][0]


async def post(client: Any, body: Any, status: int, *, raw: bytes | None = None) -> dict[str, Any]:
    resp = await client.post("/generate-image", data=raw if raw is not None else json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"})
    data = await resp.json()
    assert resp.status == status, data
    return data


# ---------------------------------------------------------------------------------------------------------------
# Fields that contradict each other


@pytest.mark.parametrize("form", [{"parameters": CHAIN}, {"tokenSeed": SEED}])
async def test_a_top_level_palette_id_overrides_the_on_chain_one(client: Any, comfy_double: ComfyDouble,
                                                                 form: dict[str, Any]) -> None:
    # Top-level fields override the on-chain values, one at a time; paletteId was read only with a prompt, so a
    # request asking for palette 17 was quantized to (and answered with) the token's own palette instead.
    chain_palette = CHAIN["paletteId"] if "parameters" in form else aleaart.derive_params(SEED).paletteId
    assert chain_palette != 17
    data = await post(client, {**form, "paletteId": 17, "applyPalette": True, **SMALL}, 200)
    name, colours = aleaart.PALETTES[17]
    assert data["palette"] == {"paletteId": 17, "name": name, "colors": list(colours)}
    report = alea_report(comfy_double)
    assert report["palette_id"] == 17 and report["palette_name"] == name  # the palette the graph applied
    # the rest of the token is unchanged: same prompt, seed and sampler as without the override
    expected = aleaart.resolve(aleaart.RenderParams.from_dict(CHAIN) if "parameters" in form
                               else aleaart.derive_params(SEED))
    assert data["prompt"] == expected["prompt"] == report["prompt"]
    assert (report["seed"], report["sampler_name"]) == (expected["seed"], expected["sampler_name"])
    # without the override the token's palette is used, as before
    data = await post(client, {**form, "applyPalette": True, **SMALL}, 200)
    assert data["palette"]["paletteId"] == chain_palette == alea_report(comfy_double)["palette_id"]
    if "tokenSeed" in form:
        assert alea_node(comfy_double)[1]["mode"] == "seed"  # the node still derives the token itself


async def test_token_seed_that_contradicts_parameters_is_refused(client: Any, comfy_double: ComfyDouble) -> None:
    # Both given: tokenSeed was silently dropped, so a mistyped struct rendered as if the seed had never been sent.
    derived = aleaart.derive_params(SEED).to_dict()
    other = {**derived, "promptIndex": (derived["promptIndex"] + 1) % 12}
    data = await post(client, {"parameters": other, "tokenSeed": SEED, **SMALL}, 400)
    assert data["success"] is False and data["field"] == "tokenSeed", data
    assert "promptIndex" in data["error"] and str(derived["promptIndex"]) in data["error"], data
    assert comfy_double.prompts == []
    # the same struct the seed derives (what a front end reads with both viewRenderParams and tokenSeed) is fine
    data = await post(client, {"parameters": derived, "tokenSeed": SEED, **SMALL}, 200)
    assert data["prompt"] == aleaart.build_prompt(aleaart.derive_params(SEED))


@pytest.mark.parametrize("random_seed", [-1, "-1"])
async def test_seed_minus_one_draws_a_seed_in_the_on_chain_form_too(client: Any, comfy_double: ComfyDouble,
                                                                     random_seed: Any) -> None:
    # -1 is "draw a random seed" in every form; with parameters it was dropped like an absent seed, so each re-roll
    # of a token rendered the token's latentSeed again.
    seeds = []
    for _ in range(2):
        data = await post(client, {"parameters": CHAIN, "seed": random_seed, **SMALL}, 200)
        seed = data["parameters"]["seed"]
        g = comfy_double.prompts[-1]["prompt"]
        [ks] = [n["inputs"] for n in g.values() if n["class_type"] == "KSampler"]
        assert ks["seed"] == seed and 0 <= seed < 2**32  # the seed used is the one reported
        seeds.append(seed)
    assert CHAIN["latentSeed"] not in seeds and seeds[0] != seeds[1]
    # null, blank or no seed keeps the token's own
    for body in ({"parameters": CHAIN, "seed": None, **SMALL}, {"parameters": CHAIN, "seed": " ", **SMALL},
                 {"parameters": CHAIN, **SMALL}):
        assert (await post(client, body, 200))["parameters"]["seed"] == CHAIN["latentSeed"]


# ---------------------------------------------------------------------------------------------------------------
# Settings that a client cannot fix


async def test_an_unknown_palette_dither_setting_is_refused_at_start(bridge_factory: Any) -> None:
    # It was read as any text: every applyPalette request then failed with a 400 naming `palette_dither`, a
    # field no AleaArt request has.
    with pytest.raises(AdapterLoadError) as info:
        await bridge_factory(adapters=["aleaart"], ALEAART_PALETTE_DITHER="bogus")
    assert "ALEAART_PALETTE_DITHER" in str(info.value) and "floyd-steinberg" in str(info.value)
    c = await bridge_factory(adapters=["aleaart"], ALEAART_PALETTE_DITHER="bayer-4x4")
    await wait_healthy(c)
    data = await post(c, {"prompt": "p", "paletteId": 2, "applyPalette": True, **SMALL}, 200)
    assert data["palette"]["paletteId"] == 2


async def test_a_configured_checkpoint_that_is_missing_is_not_blamed_on_the_client(bridge_factory: Any,
                                                                                   comfy_double: ComfyDouble) -> None:
    # Was a 400 "Model nope.safetensors not loaded" naming `model`, which the request never sent.
    c = await bridge_factory(adapters=["aleaart"], ALEAART_CHECKPOINT="nope.safetensors")
    await wait_healthy(c)
    data = await post(c, {"prompt": "p", **SMALL}, 500)
    assert data["success"] is False and data.get("field") != "model", data
    assert "ALEAART_CHECKPOINT" in data["error"] and "nope.safetensors" in data["error"], data
    assert comfy_double.prompts == []
    # a request's own model still wins, and its own mistake is still its 400
    assert (await post(c, {"prompt": "p", "model": "tiny_sd15.safetensors", **SMALL}, 200))["success"] is True
    data = await post(c, {"prompt": "p", "model": "sdxl.safetensors"}, 400)
    assert data["field"] == "model" and "sdxl.safetensors" in data["error"]


# ---------------------------------------------------------------------------------------------------------------
# Jobs that end otherwise


async def test_a_generation_cancelled_elsewhere_says_so(client: Any, comfy_double: ComfyDouble) -> None:
    # Was `Image generation cancelled: no error message`, with no job to look up.
    comfy_double.step_delay = 0.2
    engine = client.app[ENGINE]
    task = asyncio.ensure_future(client.post("/generate-image", json={"prompt": "p", "steps": 20, "width": 64,
                                                                      "height": 64, "tokenId": "c"}))
    jobs: list[Any] = []

    async def running() -> bool:
        jobs[:] = [j for j in await engine.list() if j.status == "running"]
        return bool(jobs)

    for _ in range(200):
        if await running():
            break
        await asyncio.sleep(0.02)
    assert jobs, "the job never started"
    await engine.cancel(jobs[0].id)
    resp = await task
    data = await resp.json()
    assert resp.status == 500 and data["success"] is False, data
    assert "cancelled" in data["error"] and jobs[0].id in data["error"], data
    assert "no error message" not in data["error"]
    resp = await client.get(f"/generated_images/art_token_c_{jobs[0].id}.png")
    assert resp.status == 404 and await resp.json() == {"error": "Image not found"}


async def test_a_failed_generation_has_no_stored_image(client: Any, comfy_double: ComfyDouble) -> None:
    comfy_double.fail_class = "VAEDecode"
    data = await post(client, {"prompt": "p", "tokenId": "f", **SMALL}, 500)
    assert "VAEDecode" in data["error"]
    [job] = [j for j in await client.app[ENGINE].list() if j.status == "failed"]
    resp = await client.get(f"/generated_images/art_token_f_{job.id}.png")
    assert resp.status == 404 and await resp.json() == {"error": "Image not found"}


async def test_the_same_request_twice_at_once_makes_two_images(client: Any, comfy_double: ComfyDouble) -> None:
    body = {"prompt": "same", "seed": 5, "tokenId": "9", **SMALL}
    answers = await asyncio.gather(*(client.post("/generate-image", json=body) for _ in range(3)))
    urls = [(await a.json())["imageUrl"] for a in answers]
    assert [a.status for a in answers] == [200] * 3 and len(set(urls)) == 3
    for url in urls:
        resp = await client.get(url)
        assert resp.status == 200 and resp.content_type == "image/png"


# ---------------------------------------------------------------------------------------------------------------
# Stored images on a store that presigns links


async def test_unknown_image_names_are_404_even_where_the_store_presigns(client: Any, comfy_double: ComfyDouble,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # An S3 store signs a link for any key without looking: every name of the right shape was redirected there,
    # and the client got S3's XML NoSuchKey instead of AleaArt's {"error": "Image not found"}.
    engine = client.app[ENGINE]
    data = await post(client, {"prompt": "p", "tokenId": "s", **SMALL}, 200)
    signed: list[str] = []

    async def presign(key: str, expires: float) -> str:
        signed.append(key)
        return f"https://bucket.example/{key}?X-Amz-Signature=x"

    monkeypatch.setattr(engine.blobs, "url", presign)
    for name in ("nothing_here.png", "art_token_1_deadbeef.png", "a" * 150 + ".png"):
        resp = await client.get(f"/generated_images/{name}", allow_redirects=False)
        assert resp.status == 404 and await resp.json() == {"error": "Image not found"}, name
    assert signed == []  # no link was made for a name that is not a job's
    # an image an earlier version stored is still served
    await engine.blobs.put("generated_images/art_token_1_aaaa1111.png", b"\x89PNG old")
    resp = await client.get("/generated_images/art_token_1_aaaa1111.png", allow_redirects=False)
    assert resp.status == 200 and await resp.read() == b"\x89PNG old" and resp.content_type == "image/png"
    # a job's own image still leaves as the store's link
    resp = await client.get(data["imageUrl"], allow_redirects=False)
    assert resp.status == 307 and resp.headers["Location"].startswith("https://bucket.example/outputs/")


# ---------------------------------------------------------------------------------------------------------------
# Bodies and values that must be refused by name, queueing nothing


@pytest.mark.parametrize(("raw", "field", "text"), [
    (b"hello", "body", "Request body must be valid JSON"),
    (b"[1, 2]", "body", "Request body must be a JSON object"),
    (b"null", "body", "Request body must be a JSON object"),
    (b"", "body", "Request body must be a JSON object"),
    (b'{"prompt": "a", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "body", "Request body must be valid JSON"),
    (b'{"prompt": "a", "cfg_scale": NaN}', "body", "Request body must be valid JSON"),
    (b'{"prompt": "a", "cfg_scale": 1e400}', "body", "Request body must be valid JSON"),
    (b'{"prompt": "a", "seed": ' + b"9" * 400 + b"}", "body", "Request body must be valid JSON"),
    (b'{"prompt": "caf\xe9"}', "body", "Request body must be valid JSON"),
    (b'{"prompt": "a", "steps": true}', "steps", "steps must be an integer"),
    (b'{"prompt": "a", "cfg_scale": "nan"}', "cfg_scale", "cfg_scale must be a number"),
    (b'{"prompt": "a", "cfg_scale": "1e999"}', "cfg_scale", "cfg_scale must be a finite number"),
    (b'{"prompt": "a", "width": 0}', "width", "width must be between 64 and 2048, got 0"),
    (b'{"prompt": "a", "height": -64}', "height", "height must be between 64 and 2048, got -64"),
    (b'{"prompt": "a", "seed": 18446744073709551616}', "seed", "seed must be between 0 and"),
    (b'{"prompt": "a", "applyPalette": 1, "paletteId": 1}', "applyPalette", "applyPalette must be true or false"),
    (b'{"prompt": "a", "tokenId": 1.5}', "tokenId", "tokenId must be 1-64 characters"),
    (b'{"prompt": "a", "tokenId": "\\ud800"}', "tokenId", "tokenId must be 1-64 characters"),
    (b'{"prompt": "a", "tokenId": "' + b"7" * 65 + b'"}', "tokenId", "tokenId must be 1-64 characters"),
    (b'{"prompt": "a", "sampler": 3}', "sampler", "sampler must be a string"),
    (b'{"prompt": "a", "response_format": null}', "response_format", "response_format must be one of"),
    (b'{"prompt": "' + b"a" * 10001 + b'"}', "prompt", "prompt is longer than 10000 characters"),
    (b'{"parameters": [1, 2]}', "parameters", "parameters must be a JSON object"),
    (b'{"tokenSeed": "' + b"ab " * 21 + b'a"}', "tokenSeed", "tokenSeed: not a hex string"),
    (b'{"prompt": "a", "paletteId": 24}', "paletteId", "paletteId must be between 0 and 23, got 24"),
])
async def test_hostile_bodies_are_refused_naming_the_field(client: Any, comfy_double: ComfyDouble, raw: bytes,
                                                           field: str, text: str) -> None:
    data = await post(client, None, 400, raw=raw)
    assert data["success"] is False and data["field"] == field and data["error"].startswith(text), data
    assert len(data["error"]) < 400, data
    assert comfy_double.prompts == []


@pytest.mark.parametrize("path", [
    "/generated_images/art_token_1_" + "0" * 32 + ".png",
    "/generated_images/art_token_1_" + "f" * 64 + ".png",
    "/generated_images/" + "a" * 5000 + ".png",
    "/generated_images/a%00.png",
    "/generated_images/art_token_%ED%A0%80_" + "0" * 32 + ".png",
])
async def test_garbage_image_names_are_404(client: Any, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 404 and await resp.json() == {"error": "Image not found"}


async def test_loose_but_valid_values_are_read_as_meant(client: Any, comfy_double: ComfyDouble) -> None:
    # numbers as strings (JS front ends), a BOM, duplicate keys (the last wins, as in every JSON reader)
    data = await post(client, {"prompt": "a", "steps": "1", "cfg_scale": " 7.5 ", "seed": "12",
                               "width": 64.0, "height": "64", "tokenId": " 7 "}, 200)
    assert data["parameters"] == {"steps": 1, "cfg_scale": 7.5, "seed": 12, "sampler": "DPM++ 2M Karras",
                                  "width": 64, "height": 64}
    assert data["tokenId"] == " 7 " and "/art_token_7_" in data["imageUrl"]
    raw = b"\xef\xbb\xbf" + b'{"prompt": "x", "prompt": "y", "steps": 1, "width": 64, "height": 64}'
    assert (await post(client, None, 200, raw=raw))["prompt"] == "y"
    await until(lambda: len(comfy_double.prompts) == 2, what="both prompts")


async def test_unknown_image_names_are_404_on_a_real_s3_store(bridge_factory: Any, comfy_double: ComfyDouble,
                                                             s3_server: Any) -> None:
    # The same on SeaweedFS: the name was a 307 to the bucket, which answered its XML NoSuchKey.
    import uuid

    from tests.test_storage import fetch

    c = await bridge_factory(adapters=["aleaart"], **s3_server.settings(f"alea-{uuid.uuid4().hex[:8]}"))
    await wait_healthy(c)
    resp = await c.get("/generated_images/nothing_here.png", allow_redirects=False)
    assert resp.status == 404 and await resp.json() == {"error": "Image not found"}
    data = await post(c, {"prompt": "p", "tokenId": "s3", **SMALL}, 200)
    resp = await c.get(data["imageUrl"], allow_redirects=False)
    assert resp.status == 307
    status, png, _ = await asyncio.to_thread(fetch, resp.headers["Location"])
    assert status == 200 and png.startswith(b"\x89PNG")
