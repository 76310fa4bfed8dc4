"""The requests four real A1111 clients send, as they send them, against the bridge over the protocol double:
AUTOMATIC1111's own API tests (`test/` at v1.10.1), the `webuiapi` package (driven for real), SillyTavern's
server-side calls (`src/endpoints/stable-diffusion.js`) and Open WebUI's `automatic1111` branch
(`backend/open_webui/routers/images.py`). Each body below is re-created from the client's source (notes of which
line in docs/api/a1111.md); what is asserted is what those clients read back.

Generation features that need a real model (hires fix, variation seeds, tiling, png-info, extras, samplers, LoRA,
VAE) are also proven against a real ComfyUI with tiny models in test_a1111_features_comfyui.py, and the A1111
features themselves (their parameters, infotexts and errors) over the double in test_a1111_features.py."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import random
from typing import Any

import pytest
import pytest_asyncio
import webuiapi
from PIL import Image, PngImagePlugin

from bridge.adapters.a1111 import infotext, options

pytestmark = pytest.mark.asyncio

STYLES_CSV = """name,prompt,negative_prompt
pixel,"pixel art, {prompt}, 16 colors","blurry"
sharp,"sharp edges","jpeg artifacts, blurry"
# comment,"x","y"
"""


@pytest_asyncio.fixture
async def client(bridge_factory, tmp_path):
    styles = tmp_path / "styles.csv"
    styles.write_text(STYLES_CSV, encoding="utf-8-sig")
    return await bridge_factory(adapters=["a1111"], A1111_STYLES_FILE=str(styles))


def graphs(double) -> list[dict[str, Any]]:
    return [p.get("prompt", p) for p in double.prompts]


def node_inputs(graph: dict[str, Any], cls: str) -> list[dict[str, Any]]:
    return [n["inputs"] for n in graph.values() if n["class_type"] == cls]


def a1111_test_image() -> str:
    """Like A1111's test/test_files/img2img_basic.png: 64x64 RGBA, opaque, with gamma and Software chunks."""
    im = Image.new("RGBA", (64, 64))
    im.putdata([(x * 4, y * 4, 128, 255) for y in range(64) for x in range(64)])
    meta = PngImagePlugin.PngInfo()
    meta.add_text("Software", "gif2png 2.4.2")
    buf = io.BytesIO()
    im.save(buf, format="PNG", pnginfo=meta)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def a1111_test_mask() -> str:
    im = Image.new("RGB", (64, 64))
    im.paste((255, 255, 255), (16, 16, 48, 48))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


# ---------------------------------------------------------------------------------------------------------------
# AUTOMATIC1111's own API tests (test/test_txt2img.py, test_img2img.py, test_extras.py, test_utils.py)

A1111_TXT2IMG = {"batch_size": 1, "cfg_scale": 7, "denoising_strength": 0, "enable_hr": False, "eta": 0,
                 "firstphase_height": 0, "firstphase_width": 0, "height": 64, "n_iter": 1, "negative_prompt": "",
                 "prompt": "example prompt", "restore_faces": False, "s_churn": 0, "s_noise": 1, "s_tmax": 0,
                 "s_tmin": 0, "sampler_index": "Euler a", "seed": -1, "seed_resize_from_h": -1,
                 "seed_resize_from_w": -1, "steps": 3, "styles": [], "subseed": -1, "subseed_strength": 0,
                 "tiling": False, "width": 64}


@pytest.mark.parametrize("change,count,size", [
    ({}, 1, (64, 64)),
    ({"negative_prompt": "example negative prompt"}, 1, (64, 64)),
    ({"prompt": "((emphasis)), (emphasis1:1.1), [to:1], [from::2], [from:to:0.3], [alt|alt1]"}, 1, (64, 64)),
    ({"height": 128}, 1, (64, 128)),
    ({"enable_hr": True}, 1, (128, 128)),  # hr_scale 2 by default: a 64x64 request answers 128x128
    ({"tiling": True}, 1, (64, 64)),
    ({"restore_faces": True}, 1, (64, 64)),
    ({"sampler_index": "PLMS"}, 1, (64, 64)),
    ({"sampler_index": "DDIM"}, 1, (64, 64)),
    ({"sampler_index": "UniPC"}, 1, (64, 64)),
    ({"n_iter": 2}, 2, (64, 64)),
    ({"batch_size": 2}, 2, (64, 64)),
])
async def test_a1111_own_txt2img_tests(client, comfy_double, change, count, size):
    resp = await client.post("/sdapi/v1/txt2img", json={**A1111_TXT2IMG, **change})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert len(body["images"]) == count and all(decode(i).size == size for i in body["images"])
    info = json.loads(body["info"])
    graph = graphs(comfy_double)[-1]
    if "sampler_index" in change:
        # sampler_index alone picks the sampler, and the infotext names what ran
        assert info["sampler_name"] == change["sampler_index"]
        assert f"Sampler: {change['sampler_index']}," in info["infotexts"][0]
        comfy = {"PLMS": "ipndm", "DDIM": "ddim", "UniPC": "uni_pc"}[change["sampler_index"]]
        assert [(k["sampler_name"], k["scheduler"]) for k in node_inputs(graph, "KSampler")] == [(comfy,
                                                                                                 "ddim_uniform")]
    if change.get("enable_hr"):
        # A1111 writes the first pass's size and the hires keys; the test sends denoising_strength 0
        assert "Size: 64x64, " in info["infotexts"][0] and "Denoising strength: 0.0" in info["infotexts"][0]
        assert "Hires upscale: 2.0" in info["infotexts"][0] and "Hires upscaler" not in info["infotexts"][0]
        first, second = node_inputs(graph, "KSampler")
        assert second["denoise"] == 0.0 and second["steps"] == 3
        assert node_inputs(graph, "PixartLatentUpscale")[0]["mode"] == "Latent"
    if change.get("tiling"):
        assert node_inputs(graph, "PixartSeamlessTiling")[0]["tiling"] == "both"
        assert "Tiling: True" in info["infotexts"][0]


async def test_a1111_own_img2img_tests(client, comfy_double):
    base = {"batch_size": 1, "cfg_scale": 7, "denoising_strength": 0.75, "eta": 0, "height": 64,
            "include_init_images": False, "init_images": [a1111_test_image()], "inpaint_full_res": False,
            "inpaint_full_res_padding": 0, "inpainting_fill": 0, "inpainting_mask_invert": False, "mask": None,
            "mask_blur": 4, "n_iter": 1, "negative_prompt": "", "override_settings": {}, "prompt": "example prompt",
            "resize_mode": 0, "restore_faces": False, "s_churn": 0, "s_noise": 1, "s_tmax": 0, "s_tmin": 0,
            "sampler_index": "Euler a", "seed": -1, "seed_resize_from_h": -1, "seed_resize_from_w": -1,
            "steps": 3, "styles": [], "subseed": -1, "subseed_strength": 0, "tiling": False, "width": 64}
    for change in ({}, {"mask": a1111_test_mask()}, {"mask": a1111_test_mask(), "inpainting_mask_invert": True}):
        resp = await client.post("/sdapi/v1/img2img", json={**base, **change})
        assert resp.status == 200, await resp.text()
        assert decode((await resp.json())["images"][0]).size == (64, 64)
    # test_img2img_sd_upscale_performed: Lanczos x2, tiles of 64x64 overlapping by 8
    resp = await client.post("/sdapi/v1/img2img", json={**base, "script_name": "sd upscale",
                                                        "script_args": ["", 8, "Lanczos", 2.0]})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert [decode(i).size for i in body["images"]] == [(128, 128)]
    text = json.loads(body["info"])["infotexts"][0]
    assert "Size: 64x64," in text and "SD upscale overlap: 8, SD upscale upscaler: Lanczos" in text
    graph = graphs(comfy_double)[-1]
    (split,) = node_inputs(graph, "PixartTileSplit")
    assert (split["tile_width"], split["tile_height"], split["overlap"]) == (64, 64, 8)
    assert node_inputs(graph, "PixartTileMerge")[0]["overlap"] == 8
    assert [(n["width"], n["height"], n["upscale_method"]) for n in node_inputs(graph, "ImageScale")] == [
        (128, 128, "lanczos")]


async def test_a1111_own_option_and_list_tests(client):
    # test_utils.py::test_options_write
    pre = (await (await client.get("/sdapi/v1/options")).json())["send_seed"]
    assert (await client.post("/sdapi/v1/options", json={"send_seed": not pre})).status == 200
    assert (await (await client.get("/sdapi/v1/options")).json())["send_seed"] is (not pre)
    assert (await client.post("/sdapi/v1/options", json={"send_seed": pre})).status == 200
    # test_utils.py::test_get_api_url
    for url in ("sdapi/v1/cmd-flags", "sdapi/v1/samplers", "sdapi/v1/upscalers", "sdapi/v1/sd-models",
                "sdapi/v1/hypernetworks", "sdapi/v1/face-restorers", "sdapi/v1/realesrgan-models",
                "sdapi/v1/prompt-styles", "sdapi/v1/embeddings"):
        resp = await client.get(f"/{url}")
        assert resp.status == 200, url
        await resp.json()


async def test_a1111_own_extras_tests(client, comfy_double):
    # test_extras.py: the "png-info" and "interrogate" tests post to extra-single-image with upscaler_1 "None"
    image = a1111_test_image()
    for body in ({"image": image}, {"image": image, "model": "clip"}):
        resp = await client.post("/sdapi/v1/extra-single-image", json=body)
        assert resp.status == 200, await resp.text()
        out = await resp.json()
        assert out["html_info"] == "<p></p>" and decode(out["image"]).size == (64, 64)
    # test_simple_upscaling_performed
    resp = await client.post("/sdapi/v1/extra-single-image", json={
        "resize_mode": 0, "show_extras_results": True, "gfpgan_visibility": 0, "codeformer_visibility": 0,
        "codeformer_weight": 0, "upscaling_resize": 2, "upscaling_resize_w": 128, "upscaling_resize_h": 128,
        "upscaling_crop": True, "upscaler_1": "Lanczos", "upscaler_2": "None", "extras_upscaler_2_visibility": 0,
        "image": image})
    assert resp.status == 200, await resp.text()
    out = await resp.json()
    assert decode(out["image"]).size == (128, 128)
    assert out["html_info"] == "<p>Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos</p>"
    graph = graphs(comfy_double)[-1]
    assert [(n["width"], n["height"], n["upscale_method"]) for n in node_inputs(graph, "ImageScale")][0] == (
        128, 128, "lanczos")


# ---------------------------------------------------------------------------------------------------------------
# Options: the whole key set, A1111's wire types, the whole answer accepted back


async def test_options_have_a1111_key_set_and_types(client, comfy_double):
    got = await (await client.get("/sdapi/v1/options")).json()
    table = options.defaults()
    assert list(got) == list(table) and len(got) == 329
    assert got["jpeg_quality"] == 80.0 and isinstance(got["jpeg_quality"], float)
    assert got["CLIP_stop_at_last_layers"] == 1.0 and isinstance(got["CLIP_stop_at_last_layers"], float)
    assert got["eta_noise_seed_delta"] == 0 and isinstance(got["eta_noise_seed_delta"], int)
    assert got["sd_model_checkpoint"] == comfy_double.checkpoints[0] and got["randn_source"] == "CPU"
    # Open WebUI switches models by posting back the whole dict it read
    got["sd_model_checkpoint"] = "other.safetensors"
    resp = await client.post("/sdapi/v1/options", json=got)
    assert resp.status == 200 and await resp.json() is None
    again = await (await client.get("/sdapi/v1/options")).json()
    assert again["sd_model_checkpoint"] == "other.safetensors" and again["jpeg_quality"] == 80.0
    assert (await client.post("/sdapi/v1/options", json={"jpeg_quality": 90})).status == 200
    assert (await (await client.get("/sdapi/v1/options")).json())["jpeg_quality"] == 90.0


@pytest.mark.parametrize("body,field,status", [
    ({"no_such_option": 1}, "no_such_option", 400),
    ({"samples_format": "bmp"}, "samples_format", 422),
    ({"jpeg_quality": 0}, "jpeg_quality", 422),
    ({"sd_vae": "missing.safetensors"}, "sd_vae", 400),
    ({"img2img_background_color": "white"}, "img2img_background_color", 422),
])
async def test_options_refused_naming_the_key(client, body, field, status):
    resp = await client.post("/sdapi/v1/options", json=body)
    assert resp.status == status
    err = await resp.json()
    assert field in err["errors"] and set(err) == {"error", "detail", "body", "errors"}


async def test_unknown_option_sent_as_null_is_accepted_like_a1111(client):
    assert (await client.post("/sdapi/v1/options", json={"no_such_option": None})).status == 200


async def test_samples_format_jpeg_carries_infotext_in_exif(client):
    await client.post("/sdapi/v1/options", json={"samples_format": "jpg", "jpeg_quality": 90})
    body = await (await client.post("/sdapi/v1/txt2img", json={"prompt": "cat", "width": 64, "height": 64,
                                                               "steps": 1, "seed": 3})).json()
    im = decode(body["images"][0])
    assert im.format == "JPEG"
    from bridge.adapters.a1111.extras import read_infotext
    text, _ = read_infotext(im)
    assert text == json.loads(body["info"])["infotexts"][0] and "Seed: 3," in text
    # png-info reads it back from the JPEG
    resp = await client.post("/sdapi/v1/png-info", json={"image": body["images"][0]})
    assert (await resp.json())["parameters"]["Seed"] == "3"


# ---------------------------------------------------------------------------------------------------------------
# Lists


async def test_lists_answer_what_the_backend_has(client, comfy_double):
    vaes = await (await client.get("/sdapi/v1/sd-vae")).json()
    assert vaes == [{"model_name": "vae-ft-mse-840000-ema-pruned.safetensors",
                     "filename": "vae-ft-mse-840000-ema-pruned.safetensors"}]
    ups = await (await client.get("/sdapi/v1/upscalers")).json()
    assert [u["name"] for u in ups] == ["None", "Lanczos", "Nearest", "4x_foolhardy", "R-ESRGAN 4x+"]
    assert ups[4]["model_path"] == "RealESRGAN_x4plus.pth" and ups[4]["scale"] == 4.0
    assert [m["name"] for m in await (await client.get("/sdapi/v1/latent-upscale-modes")).json()] == [
        "Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)", "Latent (nearest)",
        "Latent (nearest-exact)"]
    assert await (await client.get("/sdapi/v1/realesrgan-models")).json() == [
        {"name": "R-ESRGAN 4x+", "path": "RealESRGAN_x4plus.pth", "scale": 4}]
    loras = await (await client.get("/sdapi/v1/loras")).json()
    assert loras[0] == {"name": "pixel_style", "alias": "pixelstyle", "path": "pixel_style.safetensors",
                        "metadata": {"ss_tag_frequency": {"pixel": {"art": 3}}, "ss_output_name": "pixelstyle",
                                     "ss_network_dim": "8"}}
    assert loras[1] == {"name": "other_lora", "alias": "other_lora", "path": "sub/other_lora.safetensors",
                        "metadata": {}}
    emb = await (await client.get("/sdapi/v1/embeddings")).json()
    assert emb == {"loaded": {"easynegative": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                               "shape": 768, "vectors": 8}}, "skipped": {}}
    comfy_double.embeddings = None  # a backend without the Pixart pack: names from ComfyUI's /embeddings
    emb = await (await client.get("/sdapi/v1/embeddings")).json()
    assert emb == {"loaded": {}, "skipped": {}}
    styles = await (await client.get("/sdapi/v1/prompt-styles")).json()
    assert styles == [{"name": "pixel", "prompt": "pixel art, {prompt}, 16 colors", "negative_prompt": "blurry"},
                      {"name": "sharp", "prompt": "sharp edges", "negative_prompt": "jpeg artifacts, blurry"}]
    flags = await (await client.get("/sdapi/v1/cmd-flags")).json()
    assert len(flags) == 126 and flags["api"] is True and flags["api_auth"] is None
    assert flags["styles_file"] and flags["styles_file"][0].endswith("styles.csv")
    mem = await (await client.get("/sdapi/v1/memory")).json()
    assert set(mem["ram"]) == {"free", "used", "total"} and mem["cuda"] == {"error": "unavailable"}
    assert await (await client.get("/sdapi/v1/hypernetworks")).json() == []
    assert await (await client.get("/sdapi/v1/face-restorers")).json() == []
    assert await (await client.get("/sdapi/v1/extensions")).json() == []
    info = await (await client.get("/sdapi/v1/script-info")).json()
    assert [s["name"] for s in info] == ["x/y/z plot", "sd upscale", "x/y/z plot"]
    assert info[1]["args"][2]["choices"][:3] == ["None", "Lanczos", "Nearest"]
    for route in ("refresh-vae", "refresh-loras", "refresh-embeddings"):
        resp = await client.post(f"/sdapi/v1/{route}")
        assert resp.status == 200 and await resp.json() is None
    assert await (await client.post("/sdapi/v1/unload-checkpoint")).json() == {}


async def test_loras_polled_by_many_clients_share_the_backend_reads(client, comfy_double, monkeypatch):
    # each listing asks the backend for every file's metadata: clients polling at once share one listing, read a
    # few files at a time, rather than each sending its own 256 requests (7,680 for 30 clients)
    from bridge.adapters.a1111 import catalog

    comfy_double.loras = [f"l{i}.safetensors" for i in range(256)]
    reads, busy, most = [], [0], [0]
    backend_json = catalog.backend_json

    async def counted(engine, path, **params):
        if path == "/view_metadata/loras":
            reads.append(params["filename"])
        busy[0] += 1
        most[0] = max(most[0], busy[0])
        try:
            return await backend_json(engine, path, **params)
        finally:
            busy[0] -= 1

    monkeypatch.setattr(catalog, "backend_json", counted)
    assert (await client.post("/sdapi/v1/refresh-loras")).status == 200
    answers = await asyncio.gather(*(client.get("/sdapi/v1/loras") for _ in range(30)))
    assert {r.status for r in answers} == {200}
    assert [len(await r.json()) for r in answers] == [256] * 30
    assert len(reads) <= 2 * 256 and most[0] <= 8, (len(reads), most[0])


async def test_unknown_routes_answer_like_fastapi(client):
    resp = await client.get("/sdapi/v1/artists")  # webuiapi's get_artists(): not an A1111 1.10 route
    assert resp.status == 404 and await resp.json() == {"detail": "Not Found"}
    resp = await client.post("/sdapi/v1/artist-categories")
    assert resp.status == 404 and await resp.json() == {"detail": "Not Found"}
    resp = await client.get("/sdapi/v1/txt2img")
    assert resp.status == 405 and await resp.json() == {"detail": "Method Not Allowed"}


# ---------------------------------------------------------------------------------------------------------------
# PNG Info


async def test_png_info_reads_an_a1111_infotext_back(client):
    text = ('pixel art cat, <lora:pix:0.8>\nNegative prompt: blurry, text\nSteps: 20, Sampler: DPM++ 2M, '
            'Schedule type: Karras, CFG scale: 7, Seed: 123, Size: 64x64, Variation seed: 456, '
            'Variation seed strength: 0.3, Hires prompt: "a, detailed", Version: v1.10.1')
    im = Image.new("RGB", (8, 8))
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", text)
    meta.add_text("Software", "test")
    buf = io.BytesIO()
    im.save(buf, format="PNG", pnginfo=meta, dpi=(96, 96))
    resp = await client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(buf.getvalue()).decode()})
    assert resp.status == 200
    out = await resp.json()
    assert out["info"] == text and out["items"] == {"Software": "test"}
    p = out["parameters"]
    assert p == infotext.parse(text)
    assert (p["Prompt"], p["Negative prompt"], p["Seed"], p["Size-1"], p["Size-2"]) == (
        "pixel art cat, <lora:pix:0.8>", "blurry, text", "123", "64", "64")
    assert p["Hires prompt"] == "a, detailed" and p["Clip skip"] == "1" and p["Masked area padding"] == 32
    # an image without an infotext: empty info and A1111's defaults
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    out = await (await client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(buf.getvalue()).decode()}
                                   )).json()
    assert out["info"] == "" and out["parameters"]["Prompt"] == "" and out["parameters"]["RNG"] == "GPU"


def _png_with(text: str) -> str:
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", text, zip=True)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=meta)
    return base64.b64encode(buf.getvalue()).decode()


async def test_infotext_pairs_are_what_a1111s_pattern_finds():
    # _pairs tries A1111's pattern at fewer places than its findall: the same pairs, on every short mix of the
    # characters the pattern cares about
    rnd = random.Random(7)
    alphabet = 'ab1 :,"\\-/.\t'
    for _ in range(20000):
        line = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 20)))
        assert infotext._pairs(line) == infotext._PARAM.findall(line), line


@pytest.mark.parametrize("text,want", [
    # A1111's own pattern takes time in the square of such lines (a 60,000-character one: 23 s; these: hours)
    ("cat\n" + "a" * 300_000, {"Prompt": "cat\n" + "a" * 300_000}),
    ("(x:" + "1" * 300_000 + "\nSteps: 2, Seed: 1, Size: 8x8", {"Steps": "2", "Prompt": "(x:" + "1" * 300_000}),
    ("(x:" + "1" * 300_000 + ")\nSteps: 2, Seed: 1, Size: 8x8", {"Steps": "2", "Emphasis": "Original"}),
    # A1111 answers 500 to these (a division by zero, a float overflow, int() of 5,000 digits): kept as written
    ("cat\nSteps: 20, Size: 0x0, First pass size: 0x0", {"Size-1": "0", "First pass size-2": "0"}),
    ("cat\nSteps: 2, Size: " + "9" * 400 + "x8, First pass size: 0x0", {"Size-1": "9" * 400}),
    ("cat\nSteps: 2, Size: 8x8, First pass size: " + "9" * 5000 + "x1", {"First pass size-2": "1", "Size-1": "8"}),
    ("p\nSteps: 1, Size-1: a, First pass size-1: b, Sampler: x", {"Size-1": "a", "First pass size-1": "b"}),
    # an old hires fix's first pass
    ("cat\nSteps: 2, Size: 1024x768, First pass size: 0x0", {"Size-1": 640, "Hires resize-1": 1024}),
])
async def test_png_info_reads_hostile_infotexts_as_text(client, text, want):
    resp = await client.post("/sdapi/v1/png-info", json={"image": _png_with(text)})
    assert resp.status == 200, await resp.text()
    out = await resp.json()
    assert out["info"] == text
    assert out["parameters"].items() >= want.items()


async def test_png_info_items_are_bounded_and_a_comfyui_graph_is_kept(client):
    # 60 compressed chunks of a megabyte of control characters each (a 63 KB PNG) made a 377 MB answer, written on
    # the event loop; a ComfyUI PNG's graph still comes back whole
    from bridge.adapters.a1111.extras import PNG_INFO_ITEMS_MAX

    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", "cat\nSteps: 2, Sampler: Euler, Seed: 7", zip=True)
    graph = json.dumps({"1": {"class_type": "KSampler", "inputs": {"seed": 7, "text": "x" * 200_000}}})
    meta.add_text("workflow", graph, zip=True)
    for i in range(60):
        meta.add_text(f"junk{i}", "\x01" * 1_000_000, zip=True)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=meta)
    assert len(buf.getvalue()) < 100_000
    resp = await client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(buf.getvalue()).decode()})
    assert resp.status == 200
    body = await resp.read()
    out = json.loads(body)
    assert out["info"] == "cat\nSteps: 2, Sampler: Euler, Seed: 7" and out["parameters"]["Seed"] == "7"
    assert out["items"]["workflow"] == graph
    kept = [k for k in out["items"] if k.startswith("junk")]
    assert 0 < len(kept) < 60 and sum(len(k) + len(out["items"][k]) for k in out["items"]) <= PNG_INFO_ITEMS_MAX
    assert len(body) < 6 * PNG_INFO_ITEMS_MAX + 100_000


@pytest.mark.parametrize("body,status", [({}, 422), ({"image": ""}, 400), ({"image": "bm90IGFuIGltYWdl"}, 400)])
async def test_png_info_bad_input_names_the_field(client, body, status):
    resp = await client.post("/sdapi/v1/png-info", json=body)
    assert resp.status == status and "image" in (await resp.json())["errors"]


async def test_interrogate_runs_where_a_caption_pack_is_installed(client, comfy_double):
    for model, node, key in (("clip", "BlipCaption", "model_name"), ("deepdanbooru", "WD14Tagger|pysssss",
                                                                     "threshold")):
        resp = await client.post("/sdapi/v1/interrogate", json={"image": a1111_test_image(), "model": model})
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {"caption": "a picture of 64x64 pixels"}  # what the double's nodes report
        assert node_inputs(graphs(comfy_double)[-1], node)[0][key]
    resp = await client.post("/sdapi/v1/interrogate", json={"image": a1111_test_image(), "model": "blip2"})
    assert resp.status == 404 and (await resp.json())["detail"] == "Model not found"


async def test_interrogate_says_what_to_install(client, comfy_double):
    comfy_double.caption_packs = False
    assert (await client.post("/sdapi/v1/refresh-checkpoints")).status == 200  # the backend's nodes read again
    resp = await client.post("/sdapi/v1/interrogate", json={"image": a1111_test_image(), "model": "clip"})
    detail = (await resp.json())["detail"]
    assert resp.status == 404 and "ComfyUI-Blip" in detail and "BlipCaption" in detail and "not installed" in detail
    resp = await client.post("/sdapi/v1/interrogate", json={"image": a1111_test_image(), "model": "deepdanbooru"})
    assert resp.status == 404 and "ComfyUI-WD14-Tagger" in (await resp.json())["detail"]


# ---------------------------------------------------------------------------------------------------------------
# Prompts: styles, comments, LoRA tags, embeddings


async def test_styles_comments_loras_and_embeddings_reach_the_graph(client, comfy_double):
    body = {"prompt": "  a cat  # a comment\n<lora:pixel_style:0.8> (easynegative:1.2)", "negative_prompt": "low",
            "styles": ["pixel", "sharp"], "seed": 5, "width": 64, "height": 64, "steps": 1}
    resp = await client.post("/sdapi/v1/txt2img", json=body)
    assert resp.status == 200, await resp.text()
    info = json.loads((await resp.json())["info"])
    # the infotext keeps the styled prompt, comment gone, LoRA tag kept (as A1111 writes it)
    assert info["prompt"] == "pixel art,   a cat  \n<lora:pixel_style:0.8> (easynegative:1.2), 16 colors, sharp edges"
    assert info["negative_prompt"] == "low, blurry, jpeg artifacts, blurry" and info["styles"] == ["pixel", "sharp"]
    graph = graphs(comfy_double)[-1]
    texts = [n["text"] for n in node_inputs(graph, "CLIPTextEncode")]
    assert "pixel art,   a cat  \n (embedding:easynegative:1.2), 16 colors, sharp edges" in texts
    assert "<lora" not in " ".join(texts)
    stacks = node_inputs(graph, "PixartLoraStack")
    assert [json.loads(s["loras"]) for s in stacks] == [[{"name": "pixel_style.safetensors", "strength": 0.8,
                                                          "clip_strength": 0.8}]]


async def test_styles_repeated_to_grow_the_prompt_are_refused_naming_styles(bridge_factory, tmp_path, comfy_double):
    # `{prompt}` twice, named 64 times: 2**64 copies of the prompt before the bound (the process was killed)
    styles = tmp_path / "styles.csv"
    styles.write_text('name,prompt,negative_prompt\ntwice,"{prompt}, {prompt}",\n', encoding="utf-8")
    client = await bridge_factory(adapters=["a1111"], A1111_STYLES_FILE=str(styles))
    resp = await client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "styles": ["twice"] * 64,
                                                        "width": 64, "height": 64, "steps": 1})
    assert resp.status == 400
    body = await resp.json()
    assert set(body) == {"error", "detail", "body", "errors"} and body["errors"].startswith("styles: ")
    assert comfy_double.prompts == []
    ok = await client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "styles": ["twice"] * 2, "width": 64,
                                                      "height": 64, "steps": 1})
    assert ok.status == 200
    assert json.loads((await ok.json())["info"])["prompt"] == "a cat, a cat, a cat, a cat"


async def test_unknown_lora_is_skipped_as_a1111_does(client, comfy_double):
    resp = await client.post("/sdapi/v1/txt2img", json={"prompt": "cat <lora:nope:1>", "width": 64, "height": 64,
                                                        "steps": 1})
    assert resp.status == 200
    assert [json.loads(s["loras"]) for s in node_inputs(graphs(comfy_double)[-1], "PixartLoraStack")] == [[]]


# ---------------------------------------------------------------------------------------------------------------
# webuiapi 0.9.17, driven for real


async def test_webuiapi_start_up_lists_and_utilities(client, comfy_double):
    url = str(client.make_url("/sdapi/v1"))

    def drive() -> dict[str, Any]:
        api = webuiapi.WebUIApi(baseurl=url)  # the constructor asks for /scripts
        out: dict[str, Any] = {"scripts": api.get_scripts()}
        for name in ("get_cmd_flags", "get_samplers", "get_schedulers", "get_sd_vae", "get_upscalers",
                     "get_latent_upscale_modes", "get_loras", "get_sd_models", "get_hypernetworks",
                     "get_face_restorers", "get_realesrgan_models", "get_prompt_styles", "get_embeddings",
                     "get_memory", "get_artists", "get_artist_categories", "refresh_checkpoints", "get_options"):
            out[name] = getattr(api, name)()
        api.util_set_model("Other")  # lower-cased, then the closest title
        out["current"] = api.util_get_current_model()
        api.util_wait_for_ready(check_interval=0.01)
        out["png_info"] = api.png_info(Image.open(io.BytesIO(base64.b64decode(
            api.txt2img(prompt="boat", seed=7, width=64, height=64, steps=1).json["images"][0]))))
        out["extras"] = api.extra_single_image(Image.new("RGB", (64, 64)), upscaler_1="None")
        out["upscaled"] = api.extra_batch_images([Image.new("RGB", (64, 48))] * 2, upscaler_1="R-ESRGAN 4x+",
                                                 upscaler_2="Lanczos", extras_upscaler_2_visibility=0.5,
                                                 upscaling_resize=3)
        out["interrogate"] = api.interrogate(Image.new("RGB", (64, 64)))
        out["hires"] = api.txt2img(prompt="boat", seed=7, width=64, height=64, steps=2, enable_hr=True,
                                   hr_scale=1.5, hr_upscaler=webuiapi.HiResUpscaler.Latent)
        out["variation"] = api.txt2img(prompt="boat", seed=7, width=64, height=64, steps=2, subseed=40,
                                       subseed_strength=0.25, n_iter=2)
        return out

    out = await asyncio.to_thread(drive)
    assert out["scripts"] == {"txt2img": ["x/y/z plot"], "img2img": ["sd upscale", "x/y/z plot"]}
    assert out["get_artists"] == {"detail": "Not Found"} and out["refresh_checkpoints"] is None
    assert out["current"] == "other.safetensors"
    assert out["png_info"].info.startswith("boat\nSteps: 1,") and out["png_info"].parameters["Seed"] == "7"
    assert out["extras"].image.size == (64, 64) and out["extras"].info == "<p></p>"
    assert [im.size for im in out["upscaled"].images] == [(192, 144), (192, 144)]
    assert out["upscaled"].info == ("<p>Postprocess upscale by: 3.0, Postprocess upscaler: R-ESRGAN 4x+, "
                                    "Postprocess upscaler 2: Lanczos</p>")
    blend = [node_inputs(g, "ImageBlend")[0] for g in graphs(comfy_double) if node_inputs(g, "ImageBlend")]
    assert blend[-1]["blend_factor"] == 0.5  # upscaler_2 weighed in by its visibility
    assert out["interrogate"].info == "a picture of 64x64 pixels"
    # webuiapi's defaults: hr_upscaler "Latent", denoising 0.7, eta 1.0 (Euler a's own)
    assert out["hires"].image.size == (96, 96)
    text = out["hires"].info["infotexts"][0]
    assert "Size: 64x64," in text and "Denoising strength: 0.7," in text
    assert "Hires upscale: 1.5, Hires upscaler: Latent" in text
    info = out["variation"].info
    assert info["all_seeds"] == [7, 7] and info["all_subseeds"] == [40, 41] and info["subseed_strength"] == 0.25
    assert "Variation seed: 41, Variation seed strength: 0.25" in info["infotexts"][1]


async def test_webuiapi_runs_every_listed_sampler_with_its_defaults(client, comfy_double):
    # webuiapi sends eta 1.0 with every call (its parameter's default, A1111's eta_ancestral): a sampler the server
    # lists must run from the plain call, as on A1111, whatever eta ComfyUI gives it
    url = str(client.make_url("/sdapi/v1"))

    def drive() -> dict[str, Any]:
        api = webuiapi.WebUIApi(baseurl=url)
        return {s["name"]: api.txt2img(prompt="boat", seed=7, width=64, height=64, steps=2, sampler_name=s["name"])
                for s in api.get_samplers()}

    out = await asyncio.to_thread(drive)
    assert len(out) == 20 and "DPM fast" in out
    for name, result in out.items():
        assert result.image.size == (64, 64), name
        text = result.info["infotexts"][0]
        assert f"Sampler: {name}," in text, text
    # ComfyUI's KSampler runs DPM fast and adaptive without noise only: the infotext says the eta that ran, as it
    # does when no eta is sent (A1111 reads both alike: the sent 1.0 is its option's value)
    for name in ("DPM fast", "DPM adaptive"):
        assert "Eta: 0.0," in out[name].info["infotexts"][0]
    assert "Eta:" not in out["Euler a"].info["infotexts"][0]


# ---------------------------------------------------------------------------------------------------------------
# SillyTavern (server side: src/endpoints/stable-diffusion.js; body from generateAutoImage)

ST_HEADERS = {"Authorization": "Basic "}  # `Basic ${base64('')}` with the default empty auth


async def test_sillytavern_connect_set_model_and_generate(client, comfy_double):
    assert (await client.get("/sdapi/v1/options", headers=ST_HEADERS)).status == 200  # /ping
    ups, latent = await asyncio.gather(client.get("/sdapi/v1/upscalers", headers=ST_HEADERS),
                                       client.get("/sdapi/v1/latent-upscale-modes", headers=ST_HEADERS))
    names = [u["name"] for u in await ups.json()]
    names[1:1] = [m["name"] for m in await latent.json()]  # "0 = None, then Latent Upscalers, then Upscalers"
    assert names[0] == "None" and names[1] == "Latent"
    vaes = [v["model_name"] for v in await (await client.get("/sdapi/v1/sd-vae", headers=ST_HEADERS)).json()]
    samplers = [s["name"] for s in await (await client.get("/sdapi/v1/samplers", headers=ST_HEADERS)).json()]
    schedulers = [s["name"] for s in await (await client.get("/sdapi/v1/schedulers", headers=ST_HEADERS)).json()]
    titles = [m["title"] for m in await (await client.get("/sdapi/v1/sd-models", headers=ST_HEADERS)).json()]
    assert "DDIM" in samplers and "normal" in schedulers and titles == comfy_double.checkpoints
    # /set-model: POST the title, then poll /progress until idle
    resp = await client.post("/sdapi/v1/options", json={"sd_model_checkpoint": titles[1]}, headers=ST_HEADERS)
    assert resp.status == 200
    progress = await (await client.get("/sdapi/v1/progress", headers=ST_HEADERS)).json()
    assert progress["progress"] == 0.0 and progress["state"]["job_count"] == 0
    current = (await (await client.get("/sdapi/v1/options", headers=ST_HEADERS)).json())["sd_model_checkpoint"]
    assert current == titles[1]
    payload = {"url": "http://localhost:7860", "auth": "", "prompt": "best quality, absurdres, aesthetic, a cat",
               "negative_prompt": "lowres, bad anatomy", "sampler_name": "DDIM", "scheduler": "normal", "steps": 2,
               "cfg_scale": 7, "width": 64, "height": 64, "restore_faces": False, "enable_hr": False,
               "hr_upscaler": "Latent", "hr_scale": 2, "denoising_strength": 0.7, "hr_second_pass_steps": 0,
               "override_settings": {"CLIP_stop_at_last_layers": 1, "sd_vae": vaes[0]},
               "override_settings_restore_afterwards": True, "clip_skip": 1, "save_images": True,
               "send_images": True, "do_not_save_grid": False, "do_not_save_samples": False}
    resp = await client.post("/sdapi/v1/txt2img", json=payload, headers=ST_HEADERS)
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    assert decode(data["images"][0]).format == "PNG"  # `{format: 'png', data: data.images[0]}`
    graph = graphs(comfy_double)[-1]
    assert [n["vae_name"] for n in node_inputs(graph, "VAELoader")] == [vaes[0]]
    assert node_inputs(graph, "CheckpointLoaderSimple")[0]["ckpt_name"] == titles[1]
    info = json.loads(data["info"])
    assert f"VAE: {vaes[0]}," in info["infotexts"][0] and "Sampler: DDIM," in info["infotexts"][0]
    # the stream's client went away: ST fires POST /interrupt with no body
    resp = await client.post("/sdapi/v1/interrupt", headers=ST_HEADERS)
    assert resp.status == 200 and await resp.json() == {}
    # The "Hires. Fix" toggle, with each kind of upscaler ST lists (None, a latent mode, a model)
    for upscaler, kind in (("None", "lanczos"), ("Latent (nearest-exact)", "latent"), ("R-ESRGAN 4x+", "model")):
        resp = await client.post("/sdapi/v1/txt2img", headers=ST_HEADERS, json={
            **payload, "enable_hr": True, "hr_upscaler": upscaler, "hr_second_pass_steps": 3})
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        assert decode(data["images"][0]).size == (128, 128)
        text = json.loads(data["info"])["infotexts"][0]
        assert f"Hires steps: 3, Hires upscaler: {upscaler}" in text
        graph = graphs(comfy_double)[-1]
        second = node_inputs(graph, "KSampler")[1]
        assert (second["steps"], second["denoise"], second["sampler_name"]) == (3, 0.7, "ddim")
        sources = {"lanczos": "VAEEncode", "latent": "PixartLatentUpscale", "model": "VAEEncode"}
        crop = node_inputs(graph, "LatentCrop")[0]
        assert graph[crop["samples"][0]]["class_type"] == sources[kind]
    assert node_inputs(graph, "UpscaleModelLoader")[0]["model_name"] == "RealESRGAN_x4plus.pth"


async def test_sillytavern_batch_with_save_images_puts_a_grid_first(client):
    resp = await client.post("/sdapi/v1/txt2img", json={"prompt": "a", "width": 64, "height": 64, "steps": 1,
                                                        "batch_size": 3, "save_images": True, "seed": 1})
    data = await resp.json()
    info = json.loads(data["info"])
    assert len(data["images"]) == 4 and info["index_of_first_image"] == 1
    assert decode(data["images"][0]).size == (128, 128)  # 3 images: 2 rows of 2 (A1111's round(sqrt(n)))
    assert info["all_seeds"] == [1, 2, 3] and len(info["infotexts"]) == 4


# ---------------------------------------------------------------------------------------------------------------
# Open WebUI 0.12.4 (routers/images.py, automatic1111 branch)

OWUI_HEADERS = {"authorization": "Basic "}


async def test_open_webui_verify_models_switch_and_generate(client, comfy_double):
    assert (await client.get("/sdapi/v1/options", headers=OWUI_HEADERS)).status == 200  # verify_connection
    models = await (await client.get("/sdapi/v1/sd-models", headers=OWUI_HEADERS)).json()
    listed = [{"id": m["title"], "name": m["model_name"]} for m in models]
    assert listed[1] == {"id": "other.safetensors", "name": "other"}
    # set_image_model: GET options, change the checkpoint, POST the whole dict back
    opts = await (await client.get("/sdapi/v1/options", headers=OWUI_HEADERS)).json()
    opts["sd_model_checkpoint"] = listed[1]["id"]
    assert (await client.post("/sdapi/v1/options", json=opts, headers=OWUI_HEADERS)).status == 200
    # image_generations: get_image_model, then txt2img with the admin's extra params merged in
    assert (await (await client.get("/sdapi/v1/options", headers=OWUI_HEADERS)).json())["sd_model_checkpoint"] \
        == "other.safetensors"
    data = {"prompt": "a cat", "batch_size": 2, "width": 64, "height": 64, "steps": 2,
            "cfg_scale": 7, "sampler_name": "Euler a", "scheduler": "Karras"}
    res = await (await client.post("/sdapi/v1/txt2img", json=data, headers=OWUI_HEADERS)).json()
    assert "info" in res and len(res["images"]) == 2
    for b64 in res["images"]:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            assert Image.MIME.get(im.format) == "image/png"
    assert node_inputs(graphs(comfy_double)[-1], "CheckpointLoaderSimple")[0]["ckpt_name"] == "other.safetensors"


# ---------------------------------------------------------------------------------------------------------------
# Scripts


async def test_xyz_plot_runs_every_cell_and_answers_the_grid_first(client, comfy_double):
    # x: CFG Scale 5,7,9 (txt2img axis 6); y: Sampler from the dropdown list (axis 9); legend on, lone images too
    args = [6, "5,7,9", [], 9, "", ["Euler", "DDIM"], 0, "", [], True, True, False, False, False, False, False, 0,
            False]
    resp = await client.post("/sdapi/v1/txt2img", json={"prompt": "cat", "width": 64, "height": 64, "steps": 1,
                                                        "script_name": "X/Y/Z plot", "script_args": args})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    info = json.loads(body["info"])
    grid = decode(body["images"][0])
    assert len(body["images"]) == 1 + 6 and info["index_of_first_image"] == 1
    assert grid.width > 3 * 64 and grid.height > 2 * 64  # cells plus the legend band
    assert len(set(info["all_seeds"])) == 1  # seeds fixed once for every cell
    samplers = [ks for g in graphs(comfy_double)[-6:] for ks in node_inputs(g, "KSampler")]
    assert [(k["cfg"], k["sampler_name"]) for k in samplers] == [
        (5.0, "euler"), (7.0, "euler"), (9.0, "euler"), (5.0, "ddim"), (7.0, "ddim"), (9.0, "ddim")]
    assert "CFG scale: 9.0" in info["infotexts"][3] and "Sampler: DDIM" in info["infotexts"][6]


async def test_xyz_prompt_search_and_replace_is_bounded_before_it_is_made(client, comfy_double):
    # y: Prompt S/R (axis 7): each cell's prompt and negative prompt with the first value replaced by the cell's
    args = [0, "", [], 7, "cat,dog,red fox", []]
    resp = await client.post("/sdapi/v1/txt2img", json={
        "prompt": "a cat on a mat", "negative_prompt": "cat hair", "width": 64, "height": 64, "steps": 1,
        "script_name": "x/y/z plot", "script_args": args})
    assert resp.status == 200, await resp.text()
    texts = [(n["text"]) for g in graphs(comfy_double)[-3:] for n in node_inputs(g, "CLIPTextEncode")]
    assert texts == ["a cat on a mat", "cat hair", "a dog on a mat", "dog hair", "a red fox on a mat", "red fox hair"]
    # a list of prompts, one per image, each replaced
    resp = await client.post("/sdapi/v1/txt2img", json={
        "prompt": ["a cat", "two cats"], "batch_size": 2, "width": 64, "height": 64, "steps": 1,
        "script_name": "x/y/z plot", "script_args": [0, "", [], 7, "cat,dog", []]})
    assert resp.status == 200, await resp.text()
    texts = [n["text"] for g in graphs(comfy_double)[-4:] for n in node_inputs(g, "CLIPTextEncode")][::2]
    assert texts == ["a cat", "two cats", "a dog", "two dogs"]
    # a 10,000-character prompt of the searched text, each match made 2,000 characters: 20 MB a cell
    args = [0, "", [], 7, "a," + ",".join(["B" * 2000] * 4), []]
    resp = await client.post("/sdapi/v1/txt2img", json={"prompt": "a" * 10000, "width": 64, "height": 64,
                                                        "script_name": "x/y/z plot", "script_args": args})
    errors = (await resp.json())["errors"]
    assert resp.status == 400 and errors.startswith("script_args[4]: Prompt S/R: replacing 'a' with 'BBB")
    assert "makes the prompt 20,000,000 characters long; at most 10,000" in errors


@pytest.mark.parametrize("args,field", [
    ([13, "0,1", []], "script_args[0]"),  # Sigma Churn: no effect here, refused rather than drawn
    ([99, "1", []], "script_args[0]"),
    ([4, "1-x", []], "script_args[1]"),
    ([4, "1-1000", []], "script_args[1]"),
    # counted before they are made: two billion values were a list of two billion first
    ([4, "1-2000000000", []], "script_args[1]"),
    ([4, "1-2 [2000000000]", []], "script_args[1]"),
    ([6, "1-2 [1e400]", []], "script_args[1]"),
    ([4, ",".join(["1"] * 100), []], "script_args[1]"),
    ([4, "1-3", [], 0, "", [], 0, "", [], True, False, False, False, False, False, False, "wide"], "script_args[16]"),
])
async def test_xyz_plot_bad_axes_name_the_argument(client, args, field):
    resp = await client.post("/sdapi/v1/txt2img", json={"width": 64, "height": 64, "script_name": "x/y/z plot",
                                                        "script_args": args})
    assert resp.status == 400 and field in (await resp.json())["errors"]
