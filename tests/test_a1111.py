"""A1111 API and the Pico endpoint's ComfyUI path over the ComfyUI protocol double (real engine, real app): every
endpoint, bad input, auth, progress/interrupt/skip, and the `webuiapi` client driving the bridge."""
from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import pytest
import pytest_asyncio
import webuiapi
from PIL import Image

from pixart_nodes.core import rgb565
from tests.support.double import ComfyDouble, _colour
from tests.support.imaging import panel_shows

pytestmark = pytest.mark.asyncio



@pytest_asyncio.fixture
async def client(bridge_factory):
    return await bridge_factory(adapters=["a1111", "pico"])


def ksamplers(double: ComfyDouble) -> list[dict[str, Any]]:
    out = []
    for p in double.prompts:
        graph = p.get("prompt", p)
        for node in graph.values():
            if node["class_type"] == "KSampler":
                out.append(node["inputs"])
    return out


def png_b64(size=(96, 80), colour=(200, 30, 30), mode="RGB") -> str:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


async def test_txt2img_defaults_seeds_infotext(client, comfy_double):
    resp = await client.post("/sdapi/v1/txt2img", json={
        "prompt": "a red fox", "negative_prompt": "blurry", "seed": 42, "steps": 3, "width": 100, "height": 64,
        "batch_size": 2, "n_iter": 2, "sampler_name": "DPM++ 2M Karras", "controlnet_units": []})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert set(body) == {"images", "parameters", "info"} and len(body["images"]) == 4
    info = json.loads(body["info"])
    assert info["seed"] == 42 and info["all_seeds"] == [42, 43, 44, 45]
    assert info["sampler_name"] == "DPM++ 2M" and info["steps"] == 3 and info["width"] == 100
    assert info["extra_generation_params"]["Schedule type"] == "Automatic"
    assert body["parameters"]["sampler_name"] == "DPM++ 2M Karras" and body["parameters"]["cfg_scale"] == 7.0
    for i, b64 in enumerate(body["images"]):
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            assert im.format == "PNG" and im.size == (96, 64)  # width floored to the latent grid like A1111
            text = im.info["parameters"]
        assert text == info["infotexts"][i] and f"Seed: {42 + i}," in text and "Sampler: DPM++ 2M," in text
    ks = ksamplers(comfy_double)
    assert sorted(k["seed"] for k in ks) == [42, 43, 44, 45]
    assert {(k["sampler_name"], k["scheduler"], k["steps"]) for k in ks} == {("dpmpp_2m", "karras", 3)}


async def test_defaults_and_random_seed(client, comfy_double):
    resp = await client.post("/sdapi/v1/txt2img", json={"steps": 2, "width": 64, "height": 64})
    info = json.loads((await resp.json())["info"])
    # sampler_index's default (Euler) runs when sampler_name is absent; seed -1 draws one
    assert info["sampler_name"] == "Euler" and 0 <= info["seed"] < 4294967294 and info["cfg_scale"] == 7.0
    k = ksamplers(comfy_double)[-1]
    assert (k["sampler_name"], k["scheduler"], k["seed"], k["cfg"]) == ("euler", "normal", info["seed"], 7.0)
    resp = await client.post("/sdapi/v1/txt2img", json={"steps": 2, "width": 64, "height": 64,
                                                         "sampler_name": "Nope", "scheduler": "karras"})
    assert json.loads((await resp.json())["info"])["sampler_name"] == "DPM++ 2M"  # A1111 1.10's fallback


async def test_img2img_and_inpaint(client, comfy_double):
    resp = await client.post("/sdapi/v1/img2img", json={
        "init_images": ["data:image/png;base64," + png_b64()], "steps": 2, "width": 64, "height": 64,
        "denoising_strength": 0.5, "resize_mode": 1, "seed": 7})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["parameters"]["init_images"] is None
    info = json.loads(body["info"])
    assert info["denoising_strength"] == 0.5 and "Denoising strength: 0.5" in info["infotexts"][0]
    k = ksamplers(comfy_double)[-1]
    assert k["denoise"] == 0.5 and k["seed"] == 7

    mask = Image.new("L", (96, 80))
    mask.paste(255, (30, 30, 50, 50))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    resp = await client.post("/sdapi/v1/img2img", json={
        "init_images": [png_b64()], "mask": base64.b64encode(buf.getvalue()).decode(), "steps": 2, "width": 64,
        "height": 64, "inpaint_full_res": True, "inpaint_full_res_padding": 8, "seed": 3})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    with Image.open(io.BytesIO(base64.b64decode(body["images"][0]))) as im:
        assert im.size == (96, 80)  # "only masked": pasted back into the full picture
        assert im.convert("RGB").getpixel((2, 2)) == (200, 30, 30)  # outside the mask: the original
    last = comfy_double.prompts[-1].get("prompt", comfy_double.prompts[-1])
    assert any(n["class_type"] == "LoadImageMask" for n in last.values())  # the inpaint workflow ran


def _source(graph: dict[str, Any], node: dict[str, Any], name: str) -> dict[str, Any]:
    link = node["inputs"][name]
    assert isinstance(link, list) and len(link) == 2, (name, link)
    return graph[link[0]]


def _mask_b64() -> str:
    mask = Image.new("L", (96, 80))
    mask.paste(255, (30, 30, 50, 50))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("fill", [0, 1, 2, 3])
async def test_inpainting_fill_rewires_the_latent_path(client, comfy_double, fill):
    resp = await client.post("/sdapi/v1/img2img", json={
        "init_images": [png_b64()], "mask": _mask_b64(), "inpainting_fill": fill, "steps": 2, "width": 64,
        "height": 64, "seed": 41, "denoising_strength": 1.0, "inpaint_full_res": False})
    assert resp.status == 200, await resp.text()
    info = json.loads((await resp.json())["info"])
    assert f"Masked content: {['fill', 'original', 'latent noise', 'latent nothing'][fill]}," in info["infotexts"][0]
    graph = comfy_double.prompts[-1]["prompt"]
    (sampler,) = [n for n in graph.values() if n["class_type"] == "KSampler"]
    assert sampler["inputs"]["seed"] == 41
    noise_mask = _source(graph, sampler, "latent_image")
    assert noise_mask["class_type"] == "SetLatentNoiseMask"
    mask_node = _source(graph, noise_mask, "mask")
    latent = _source(graph, noise_mask, "samples")
    if fill in (0, 1):
        # the encoded image itself (fill 0's colours were blurred in before upload)
        assert latent["class_type"] == "RepeatLatentBatch"
        assert _source(graph, latent, "samples")["class_type"] == "VAEEncode"
        return
    assert latent["class_type"] == "LatentCompositeMasked"
    encoded = _source(graph, latent, "destination")
    assert encoded["class_type"] == "RepeatLatentBatch" and _source(graph, encoded, "samples")["class_type"] == "VAEEncode"
    # the composite is masked by the same mask the sampler repaints, and keeps the position and size
    assert _source(graph, latent, "mask") is mask_node
    assert latent["inputs"]["x"] == 0 and latent["inputs"]["y"] == 0 and latent["inputs"]["resize_source"] is False
    source = _source(graph, latent, "source")
    if fill == 2:
        assert source["class_type"] == "PixartNoiseLatent"
        assert source["inputs"]["seed"] == 41  # the request's seed: KSampler's own noise
        assert _source(graph, source, "samples") is encoded
        assert _source(graph, source, "model") is _source(graph, sampler, "model")
    else:
        assert source["class_type"] == "LatentMultiply" and source["inputs"]["multiplier"] == 0.0
        assert _source(graph, source, "samples") is encoded


async def test_latent_fills_refused_by_an_inpaint_workflow_without_the_choice(bridge_factory, comfy_double,
                                                                                monkeypatch):
    # the img2img workflow stands in for a custom inpaint workflow that has no `fill` parameter
    monkeypatch.setenv("A1111_INPAINT_WORKFLOW", "img2img")
    client = await bridge_factory(adapters=["a1111"])
    before = len(comfy_double.prompts)
    resp = await client.post("/sdapi/v1/img2img", json={
        "init_images": [png_b64()], "mask": _mask_b64(), "inpainting_fill": 2, "steps": 1, "width": 64,
        "height": 64})
    err = await resp.json()
    assert resp.status == 400 and err["errors"].startswith("inpainting_fill:") and "'fill'" in err["errors"], err
    assert len(comfy_double.prompts) == before


@pytest.mark.parametrize("path,body,status,field", [
    ("/sdapi/v1/txt2img", {"steps": "ten"}, 422, "steps"),
    ("/sdapi/v1/txt2img", {"steps": 0}, 422, "steps"),
    ("/sdapi/v1/txt2img", {"width": 100000}, 422, "width"),
    ("/sdapi/v1/txt2img", {"script_name": "prompt matrix"}, 422, ""),
    ("/sdapi/v1/img2img", {"prompt": "x"}, 404, "init_images"),
    ("/sdapi/v1/img2img", {"init_images": ["!!notbase64"]}, 400, "init_images[0]"),
    ("/sdapi/v1/img2img", {"init_images": [png_b64()], "resize_mode": 9}, 422, "resize_mode"),
    ("/sdapi/v1/img2img", {"init_images": [png_b64()], "inpainting_fill": 4}, 422, "inpainting_fill"),
    ("/sdapi/v1/img2img", {"init_images": [png_b64()], "mask": "zzz"}, 400, "mask"),
    ("/sdapi/v1/options", [1], 422, "body"),
    # each style is applied to each image's prompt
    ("/sdapi/v1/txt2img", {"styles": ["a"] * 65}, 422, "styles"),
    # options without a type of their own hold a value or a short list, no more (they stay in memory for good)
    ("/sdapi/v1/options", {"interrogate_clip_skip_categories": [{}] * 3}, 400, "interrogate_clip_skip_categories"),
    ("/sdapi/v1/options", {"outdir_samples": ["x" * 6000] * 2}, 400, "outdir_samples"),
    ("/sdapi/v1/txt2img", {"override_settings": {"outdir_samples": [0] * 300}}, 400,
     "override_settings.outdir_samples"),
])
async def test_bad_input_a1111_shape_and_server_unharmed(client, path, body, status, field):
    resp = await client.post(path, data=json.dumps(body), headers={"Content-Type": "application/json"})
    assert resp.status == status
    err = await resp.json()
    assert set(err) == {"error", "detail", "body", "errors"}
    assert field in err["errors"] or field in json.dumps(err["detail"])
    ok = await client.post("/sdapi/v1/txt2img", json={"steps": 1, "width": 64, "height": 64})
    assert ok.status == 200


async def test_a_422_echoes_a_small_body_as_a1111_does_and_not_a_large_one(client):
    small = {"steps": 0, "prompt": "cat"}
    err = await (await client.post("/sdapi/v1/txt2img", json=small)).json()
    assert err["body"] == small and "steps" in err["errors"]
    large = {"steps": 0, "comments": {"a": "x" * 1_000_000}}
    resp = await client.post("/sdapi/v1/txt2img", json=large)
    err = await resp.json()
    assert resp.status == 422 and err["body"] == "" and "steps" in err["errors"]
    # a list of wrong items: the first 20 named, not each of them
    resp = await client.post("/sdapi/v1/txt2img", json={"prompt": [1] * 19_000})
    err = await resp.json()
    assert resp.status == 422 and len(err["detail"]) == 20 and err["detail"][0]["loc"][:2] == ["body", "prompt"]


async def test_invalid_json_body(client):
    resp = await client.post("/sdapi/v1/txt2img", data=b"{oops", headers={"Content-Type": "application/json"})
    assert resp.status == 422 and "JSON" in (await resp.json())["errors"]


async def test_info_endpoints(client, comfy_double):
    models = await (await client.get("/sdapi/v1/sd-models")).json()
    assert [m["title"] for m in models] == comfy_double.checkpoints
    assert models[0]["model_name"] == "tiny_sd15"
    samplers = await (await client.get("/sdapi/v1/samplers")).json()
    assert samplers[0]["name"] == "DPM++ 2M" and {"Euler a", "Euler", "DDIM", "UniPC", "LCM"} <= \
        {s["name"] for s in samplers}
    schedulers = await (await client.get("/sdapi/v1/schedulers")).json()
    assert schedulers[0] == {"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1.0,
                             "need_inner_model": False}
    assert [u["name"] for u in await (await client.get("/sdapi/v1/upscalers")).json()] == \
        ["None", "Lanczos", "Nearest", "4x_foolhardy", "R-ESRGAN 4x+"]
    assert await (await client.get("/sdapi/v1/scripts")).json() == {"txt2img": ["x/y/z plot"], "img2img": ["sd upscale", "x/y/z plot"]}
    r = await client.post("/sdapi/v1/refresh-checkpoints")
    assert r.status == 200 and await r.json() is None
    assert await (await client.get("/internal/ping")).json() == {}
    progress = await (await client.get("/sdapi/v1/progress")).json()
    assert progress["progress"] == 0 and progress["state"]["job_count"] == 0 and progress["current_image"] is None


async def test_options_switch_checkpoint(client, comfy_double):
    opts = await (await client.get("/sdapi/v1/options")).json()
    assert opts["sd_model_checkpoint"] == "tiny_sd15.safetensors"
    r = await client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "other"})
    assert r.status == 200 and await r.json() is None
    assert (await (await client.get("/sdapi/v1/options")).json())["sd_model_checkpoint"] == "other.safetensors"
    await client.post("/sdapi/v1/txt2img", json={"steps": 1, "width": 64, "height": 64})
    last = comfy_double.prompts[-1].get("prompt", comfy_double.prompts[-1])
    assert [n["inputs"]["ckpt_name"] for n in last.values() if n["class_type"] == "CheckpointLoaderSimple"] == \
        ["other.safetensors"]
    r = await client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "missing.ckpt"})
    assert r.status == 400  # A1111 answers 500 with this body; a wrong name is the client's to mend
    err = await r.json()
    assert err["error"] == "RuntimeError" and err["errors"] == "model 'missing.ckpt' not found"
    assert err["detail"].startswith("sd_model_checkpoint: 'missing.ckpt'") and "tiny_sd15.safetensors" in err["detail"]
    assert (await (await client.get("/sdapi/v1/options")).json())["sd_model_checkpoint"] == "other.safetensors"


def clip_layers(double: ComfyDouble) -> list[int]:
    """stop_at_clip_layer of the last prompt's CLIPSetLastLayer, checked to feed both text encoders."""
    graph = double.prompts[-1]["prompt"]
    (nid, node), = [(i, n) for i, n in graph.items() if n["class_type"] == "CLIPSetLastLayer"]
    assert [n["inputs"]["clip"] for n in graph.values() if n["class_type"] == "CLIPTextEncode"] == [[nid, 0]] * 2
    return [node["inputs"]["stop_at_clip_layer"]]


async def test_clip_skip_option_and_override_reach_the_graph(bridge_factory, comfy_double, monkeypatch):
    monkeypatch.setenv("PICO_MODE", "false")
    client = await bridge_factory(adapters=["a1111", "pico"])
    small = {"steps": 1, "width": 64, "height": 64, "seed": 1}
    resp = await client.post("/sdapi/v1/txt2img", json=small)
    assert "Clip skip" not in json.loads((await resp.json())["info"])["infotexts"][0]
    assert clip_layers(comfy_double) == [-1]

    assert (await client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2})).status == 200
    assert (await (await client.get("/sdapi/v1/options")).json())["CLIP_stop_at_last_layers"] == 2
    resp = await client.post("/sdapi/v1/txt2img", json=small)
    info = json.loads((await resp.json())["info"])
    assert info["clip_skip"] == 2 and "Clip skip: 2," in info["infotexts"][0]
    assert clip_layers(comfy_double) == [-2]
    resp = await client.post("/sdapi/v1/img2img", json={**small, "init_images": [png_b64()]})
    assert resp.status == 200 and clip_layers(comfy_double) == [-2]
    mask = png_b64(colour=(255, 255, 255))
    resp = await client.post("/sdapi/v1/img2img", json={**small, "init_images": [png_b64()], "mask": mask})
    assert resp.status == 200 and clip_layers(comfy_double) == [-2]
    assert any(n["class_type"] == "LoadImageMask" for n in comfy_double.prompts[-1]["prompt"].values())  # inpaint
    resp = await client.post("/pico/sdapi/v1/txt2img?format=json", json=small)
    assert resp.status == 200 and clip_layers(comfy_double) == [-2]
    assert any(n["class_type"] == "PixartRGB565" for n in comfy_double.prompts[-1]["prompt"].values())

    # override_settings wins for one request, as in A1111, and the option stays unless restore is turned off
    resp = await client.post("/sdapi/v1/txt2img", json={**small, "override_settings": {"CLIP_stop_at_last_layers": 3}})
    assert json.loads((await resp.json())["info"])["clip_skip"] == 3 and clip_layers(comfy_double) == [-3]
    assert (await (await client.get("/sdapi/v1/options")).json())["CLIP_stop_at_last_layers"] == 2
    await client.post("/sdapi/v1/txt2img", json={**small, "override_settings": {"CLIP_stop_at_last_layers": 4},
                                                 "override_settings_restore_afterwards": False})
    assert clip_layers(comfy_double) == [-4]
    assert (await (await client.get("/sdapi/v1/options")).json())["CLIP_stop_at_last_layers"] == 4


@pytest.mark.parametrize("path,body,field,status", [
    # the options' typed schema refuses them as FastAPI refuses a bad body field
    ("/sdapi/v1/options", {"CLIP_stop_at_last_layers": 0}, "CLIP_stop_at_last_layers", 422),
    ("/sdapi/v1/options", {"CLIP_stop_at_last_layers": 13}, "CLIP_stop_at_last_layers", 422),
    ("/sdapi/v1/options", {"CLIP_stop_at_last_layers": "2"}, "CLIP_stop_at_last_layers", 422),
    ("/sdapi/v1/options", {"CLIP_stop_at_last_layers": True}, "CLIP_stop_at_last_layers", 422),
    ("/sdapi/v1/txt2img", {"override_settings": {"CLIP_stop_at_last_layers": 40}},
     "override_settings.CLIP_stop_at_last_layers", 400),
])
async def test_bad_clip_skip_is_refused_naming_the_field(client, comfy_double, path, body, field, status):
    before = len(comfy_double.prompts)
    resp = await client.post(path, json=body)
    err = await resp.json()
    assert resp.status == status and err["errors"].startswith(field + ":"), err
    assert len(comfy_double.prompts) == before
    assert (await (await client.get("/sdapi/v1/options")).json())["CLIP_stop_at_last_layers"] == 1


async def test_progress_and_interrupt(client, comfy_double):
    comfy_double.step_delay = 0.05
    gen = asyncio.create_task(client.post("/sdapi/v1/txt2img", json={
        "steps": 10, "width": 64, "height": 64, "n_iter": 3, "seed": 1}))
    seen = None
    for _ in range(200):
        await asyncio.sleep(0.02)
        p = await (await client.get("/sdapi/v1/progress")).json()
        if p["state"]["sampling_step"] >= 2:
            seen = p
            break
    assert seen is not None, "progress never showed sampling"
    assert seen["state"]["job_count"] == 3 and seen["state"]["sampling_steps"] == 10
    assert 0 < seen["progress"] < 1 and seen["eta_relative"] >= 0 and seen["textinfo"]
    r = await client.post("/sdapi/v1/interrupt")
    assert r.status == 200 and await r.json() == {}
    resp = await gen
    assert resp.status == 200
    body = await resp.json()
    assert len(body["images"]) < 3  # the rest of the task was stopped
    idle = await (await client.get("/sdapi/v1/progress")).json()
    assert idle["state"]["job_count"] == 0


async def test_skip_drops_only_the_current_image(client, comfy_double):
    comfy_double.step_delay = 0.05
    gen = asyncio.create_task(client.post("/sdapi/v1/txt2img", json={
        "steps": 6, "width": 64, "height": 64, "n_iter": 2, "seed": 10}))
    for _ in range(200):
        await asyncio.sleep(0.02)
        p = await (await client.get("/sdapi/v1/progress")).json()
        if p["state"]["sampling_step"] >= 1 and p["state"]["job_no"] == 0:
            break
    assert p["current_image"] is not None  # the live preview of the image being made
    assert (await client.get("/sdapi/v1/progress?skip_current_image=true")).status == 200
    bad = await client.get("/sdapi/v1/progress?skip_current_image=abc")  # FastAPI's loc for a query parameter
    assert bad.status == 422 and (await bad.json())["detail"][0]["loc"] == ["query", "skip_current_image"]
    # a key given twice: FastAPI reads the last value (aiohttp's first)
    assert (await client.get("/sdapi/v1/progress?skip_current_image=abc&skip_current_image=true")).status == 200
    assert (await client.get("/sdapi/v1/progress?skip_current_image=true&skip_current_image=abc")).status == 422
    assert await (await client.post("/sdapi/v1/skip")).json() is None
    body = await (await gen).json()
    info = json.loads(body["info"])
    # As A1111: the skipped image comes back partly finished (its last preview, at the image's size), then the next
    assert len(body["images"]) == 2 and info["all_seeds"] == [10, 11]
    partial = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    assert partial.size == (64, 64) and partial.getpixel((32, 32))[0] < 250  # stopped before the last step


async def test_basic_auth(bridge_factory, monkeypatch):
    monkeypatch.setenv("A1111_API_AUTH", "alice:wonder,bob:builder")
    client = await bridge_factory(adapters=["a1111"])
    r = await client.get("/sdapi/v1/sd-models")
    assert r.status == 401 and r.headers["WWW-Authenticate"] == "Basic"
    assert (await r.json())["detail"] == "Not authenticated"
    bad = "Basic " + base64.b64encode(b"alice:builder").decode()
    r = await client.get("/sdapi/v1/sd-models", headers={"Authorization": bad})
    assert r.status == 401 and (await r.json())["detail"] == "Incorrect username or password"
    for odd in ("Basic é", "Basic " + base64.b64encode(b"\xffbob:builder").decode()):  # not ASCII; not UTF-8
        r = await client.get("/sdapi/v1/sd-models", headers={"Authorization": odd})
        assert r.status == 401 and (await r.json())["detail"] == "Invalid authentication credentials"
    good = "Basic " + base64.b64encode(b"bob:builder").decode()
    assert (await client.get("/sdapi/v1/sd-models", headers={"Authorization": good})).status == 200
    assert (await client.get("/internal/ping")).status == 200  # not covered, as in A1111


async def test_pico_comfyui_path_and_mode(bridge_factory, comfy_double, monkeypatch):
    monkeypatch.setenv("PICO_MODE", "true")
    client = await bridge_factory(adapters=["a1111", "pico"])
    for path in ("/pico/sdapi/v1/txt2img", "/sdapi/v1/txt2img"):
        resp = await client.post(path + "?lcd_width=128&byte_order=le", json={"prompt": "x", "steps": 1,
                                                                              "width": 64, "height": 64})
        assert resp.status == 200, await resp.text()
        data = await resp.read()
        assert len(data) == 128 * 240 * 2
        assert resp.headers["X-Image-Format"] == "rgb565-le" and resp.headers["X-Image-Width"] == "128"
        # The double ran the pack's real conversion on its picture (the seed's colour below a gradient first
        # row): unpacked little-endian, the frame shows that colour to 565 precision.
        last = comfy_double.prompts[-1]
        seed = next(n for n in last["prompt"].values() if n["class_type"] == "KSampler")["inputs"]["seed"]
        r, g, b = _colour(seed, last["prompt_id"], 0)
        frame = rgb565.from_rgb565(data, 128, 240, byte_order="little")
        assert (frame[20:] == panel_shows((r, g, b))).all()
    last = comfy_double.prompts[-1].get("prompt", comfy_double.prompts[-1])
    node = next(n for n in last.values() if n["class_type"] == "PixartRGB565")
    assert (node["inputs"]["width"], node["inputs"]["height"], node["inputs"]["byte_order"]) == (128, 240, "little")
    resp = await client.post("/pico/sdapi/v1/txt2img?format=json", json={"steps": 1, "width": 64, "height": 64,
                                                                          "seed": 5, "batch_size": 2})
    body = await resp.json()
    assert body["info"] == "240x240 RGB565 format for Pico LCD" and len(body["images"]) == 2
    assert all(len(base64.b64decode(i)) == 115200 for i in body["images"])
    # the LCD workflow has no variation seeds: refused naming the field that asks for them
    resp = await client.post("/pico/sdapi/v1/txt2img", json={"steps": 1, "subseed_strength": 0.5})
    errors = (await resp.json())["errors"]
    assert resp.status == 400 and errors.startswith("subseed_strength: the workflow 'pico_rgb565' has no"), errors


async def test_webuiapi_client_over_the_double(client, comfy_double):
    url = str(client.make_url("/sdapi/v1"))

    def drive() -> dict[str, Any]:
        api = webuiapi.WebUIApi(baseurl=url, sampler="Euler a", steps=2)
        out: dict[str, Any] = {}
        out["models"] = api.util_get_model_names()
        out["samplers"] = api.util_get_sampler_names()
        api.set_options({"sd_model_checkpoint": "other.safetensors"})
        out["current"] = api.util_get_current_model()
        r = api.txt2img(prompt="a boat", seed=9, width=64, height=64, batch_size=2)
        out["txt"] = (len(r.images), r.info["all_seeds"], r.images[0].size, r.parameters["prompt"])
        r = api.img2img(images=[Image.new("RGB", (64, 64), (1, 2, 3))], prompt="x", seed=4, width=64, height=64,
                        denoising_strength=0.4)
        out["img"] = (len(r.images), r.info["seed"])
        r = api.img2img(images=[Image.new("RGB", (64, 64))], mask_image=Image.new("L", (64, 64), 255),
                        inpainting_fill=1, width=64, height=64, seed=1)
        out["inpaint"] = r.image.size
        out["progress"] = api.get_progress()
        out["interrupt"] = api.interrupt()
        return out

    out = await asyncio.to_thread(drive)
    assert out["models"] == sorted(comfy_double.checkpoints)
    assert "Euler a" in out["samplers"]
    assert out["current"] == "other.safetensors"
    assert out["txt"] == (2, [9, 10], (64, 64), "a boat")
    assert out["img"] == (1, 4) and out["inpaint"] == (64, 64)
    assert out["progress"]["state"]["job_count"] == 0 and out["interrupt"] == {}


@pytest.mark.asyncio
async def test_response_format_url_answers_links_to_the_same_bytes(client, comfy_double):
    import base64
    import urllib.parse

    body = {"prompt": "a fox", "steps": 2, "width": 64, "height": 64, "batch_size": 2, "seed": 5}
    inline = await (await client.post("/sdapi/v1/txt2img", json=body)).json()
    linked = await (await client.post("/sdapi/v1/txt2img", json={**body, "response_format": "url"})).json()
    assert len(linked["images"]) == 2 and json.loads(linked["info"])["seed"] == 5
    for link, b64 in zip(linked["images"], inline["images"]):
        path = urllib.parse.urlsplit(link).path
        assert path.startswith("/jobs/") and "/files/answer_" in path
        resp = await client.get(path)
        # the very image the base64 answer carries: pixels and A1111's infotext
        assert resp.status == 200 and await resp.read() == base64.b64decode(b64)
    # a file the job does not have names the file; a job that does not exist, the job
    job_path = path.rsplit("/", 1)[0]
    for name in ("evil.png", "answer_0123456789abcdef.png"):
        resp = await client.get(f"{job_path}/{name}")
        err = await resp.json()
        assert resp.status == 404 and err["field"] == "name" and name in err["message"], err
    resp = await client.get(f"/jobs/{'0' * 32}/files/{path.rsplit('/', 1)[1]}")
    assert resp.status == 404 and (await resp.json())["field"] == "id"
    bad = await client.post("/sdapi/v1/txt2img", json={**body, "response_format": "gif"})
    assert bad.status == 422
