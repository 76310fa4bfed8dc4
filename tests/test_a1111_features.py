"""A1111 features over the protocol double: what each request field puts into the workflow graph (hires fix,
variation seeds, eta noise seed delta, samplers and eta, tiling, noise multiplier, the SD upscale script, extras
upscalers), the infotext A1111 writes for it, and the clear errors for what cannot run here. The pixels are
proven against a real ComfyUI in test_a1111_features_comfyui.py."""
from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image

from pixart_nodes.core import rgb565

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def client(bridge_factory):
    return await bridge_factory(adapters=["a1111", "pico"])


def graphs(double) -> list[dict[str, Any]]:
    return [p.get("prompt", p) for p in double.prompts]


def nodes(graph: dict[str, Any], cls: str) -> list[dict[str, Any]]:
    return [n["inputs"] for n in graph.values() if n["class_type"] == cls]


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def png_b64(size=(64, 64), colour=(40, 90, 200)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


async def txt2img(client, **body) -> tuple[dict[str, Any], dict[str, Any]]:
    resp = await client.post("/sdapi/v1/txt2img", json={"prompt": "a fox", "width": 64, "height": 64, "steps": 2,
                                                        "seed": 100, **body})
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    return data, json.loads(data["info"])


async def refused(client, path: str, body: dict[str, Any], status: int = 400) -> dict[str, Any]:
    resp = await client.post(path, json=body)
    assert resp.status == status, await resp.text()
    return await resp.json()


# ---------------------------------------------------------------------------------------------------------------
# Hires fix


async def test_hires_fix_runs_both_passes_and_writes_a1111s_infotext(client, comfy_double):
    data, info = await txt2img(client, enable_hr=True, hr_scale=2, hr_upscaler="Latent (bicubic antialiased)",
                               denoising_strength=0.55, hr_second_pass_steps=4, hr_sampler_name="DPM++ 2M",
                               hr_scheduler="Exponential", hr_prompt="a sharp fox", sampler_name="Euler a",
                               cfg_scale=6)
    assert decode(data["images"][0]).size == (128, 128)
    assert (info["width"], info["height"], info["denoising_strength"]) == (64, 64, 0.55)
    assert info["infotexts"][0] == (
        "a fox\nSteps: 2, Sampler: Euler a, Schedule type: Automatic, CFG scale: 6.0, Seed: 100, Size: 64x64, "
        "Model: tiny_sd15, Denoising strength: 0.55, RNG: CPU, Hires sampler: DPM++ 2M, Hires prompt: a sharp fox, "
        "Hires schedule type: Exponential, Hires upscale: 2.0, Hires steps: 4, "
        "Hires upscaler: Latent (bicubic antialiased), Version: pixart-a1111-1.10")
    graph = graphs(comfy_double)[-1]
    first, second = nodes(graph, "KSampler")
    assert (first["sampler_name"], first["steps"], first["denoise"]) == ("euler_ancestral", 2, 1.0)
    assert (second["sampler_name"], second["scheduler"], second["steps"], second["denoise"], second["cfg"],
            second["seed"]) == ("dpmpp_2m", "exponential", 4, 0.55, 6.0, 100)
    (up,) = nodes(graph, "PixartLatentUpscale")
    assert (up["width"], up["height"], up["mode"]) == (128, 128, "Latent (bicubic antialiased)")
    texts = [n["text"] for n in nodes(graph, "CLIPTextEncode")]
    assert "a sharp fox" in texts and "a fox" in texts
    assert info["extra_generation_params"]["Hires upscale"] == 2.0


@pytest.mark.parametrize("body,size,crop", [
    ({"hr_resize_x": 160, "hr_resize_y": 96}, (160, 96), (160, 96, 0, 32)),  # 160x160, 4 latent rows cut each side
    ({"hr_resize_x": 96}, (96, 96), None),
    ({"hr_resize_y": 80}, (80, 80), None),
    ({"hr_scale": 1.3}, (80, 80), None),  # int(64 * 1.3) = 83, on the latent grid 80
])
async def test_hires_target_size_follows_a1111(client, comfy_double, body, size, crop):
    data, info = await txt2img(client, enable_hr=True, **body)
    assert decode(data["images"][0]).size == size
    (c,) = nodes(graphs(comfy_double)[-1], "LatentCrop")
    if crop is None:
        assert (c["width"], c["x"], c["y"]) == (16384, 0, 0)  # the graph's default: nothing cut
    else:
        assert (c["width"], c["height"], c["x"], c["y"]) == crop
        assert "Hires resize: 160x96" in info["infotexts"][0]


async def test_hires_image_and_model_upscalers(client, comfy_double):
    await txt2img(client, enable_hr=True, hr_upscaler="Nearest")
    graph = graphs(comfy_double)[-1]
    (scale,) = nodes(graph, "ImageScale")
    assert scale["upscale_method"] == "nearest-exact" and graph[scale["image"][0]]["class_type"] == "VAEDecode"
    await txt2img(client, enable_hr=True, hr_upscaler="4x_foolhardy")
    graph = graphs(comfy_double)[-1]
    (scale,) = nodes(graph, "ImageScale")
    assert graph[scale["image"][0]]["class_type"] == "ImageUpscaleWithModel"
    assert nodes(graph, "UpscaleModelLoader")[0]["model_name"] == "4x_foolhardy.pth"


async def test_hires_refusals_name_the_field(client):
    err = await refused(client, "/sdapi/v1/txt2img", {"enable_hr": True, "hr_upscaler": "SwinIR 4x"})
    assert "hr_upscaler" in err["errors"] and "Latent (nearest-exact)" in err["errors"] and "Lanczos" in err["errors"]
    err = await refused(client, "/sdapi/v1/txt2img", {"enable_hr": True, "hr_checkpoint_name": "other.safetensors"})
    assert "hr_checkpoint_name" in err["errors"]
    # a first-pass image A1111 would upscale instead of its own first pass (without enable_hr it ignores it too)
    err = await refused(client, "/sdapi/v1/txt2img", {"enable_hr": True, "firstpass_image": png_b64()})
    assert err["errors"].startswith("firstpass_image: a first-pass image for the hires fix is not supported")
    assert (await client.post("/sdapi/v1/txt2img", json={"steps": 1, "width": 64, "height": 64,
                                                         "firstpass_image": png_b64()})).status == 200
    err = await refused(client, "/sdapi/v1/txt2img", {"enable_hr": True, "width": 2048, "height": 2048,
                                                      "hr_scale": 4})
    assert "hr_scale" in err["errors"] and "8192x8192" in err["errors"]
    for scale in (1e308, "1e308", -1e308):  # an infinite size (A1111 answers 500)
        err = await refused(client, "/sdapi/v1/txt2img", {"enable_hr": True, "hr_scale": scale})
        assert "hr_scale: the hires size would be beyond any number" in err["errors"]
    # the legacy first-pass size is bounded as width is, and named
    err = await refused(client, "/sdapi/v1/txt2img", {"enable_hr": True, "firstphase_width": 99999,
                                                      "firstphase_height": 64}, 422)
    assert err["errors"].startswith("firstphase_width") and "firstphase_height" not in err["errors"]
    err = await refused(client, "/sdapi/v1/txt2img", {"enable_hr": True, "firstphase_width": 7})
    assert err["errors"].startswith("firstphase_width: must be 0 (the request's size) or at least 64, got 7")
    for body in ({"hr_scale": -1}, {"hr_resize_x": -64}):  # a size below 8, said as it is
        err = await refused(client, "/sdapi/v1/txt2img", {"enable_hr": True, **body})
        assert "the hires size would be -" in err["errors"], err
    # the same name in any case is no upscaler in A1111 either
    err = await refused(client, "/sdapi/v1/txt2img", {"enable_hr": True, "hr_upscaler": "latent"})
    assert "hr_upscaler" in err["errors"]


async def test_hires_off_leaves_the_plain_workflow(client, comfy_double):
    data, info = await txt2img(client, enable_hr=False, hr_upscaler="nonsense", denoising_strength=0.3)
    assert "Hires" not in info["infotexts"][0] and "Denoising strength" not in info["infotexts"][0]
    assert info["denoising_strength"] == 0.3  # A1111's info keeps the field's value
    assert len(nodes(graphs(comfy_double)[-1], "KSampler")) == 1


# ---------------------------------------------------------------------------------------------------------------
# Seeds


async def test_variation_seed_reaches_the_noise_node_and_the_infotext(client, comfy_double):
    _, info = await txt2img(client, subseed=7, subseed_strength=0.3, batch_size=2, seed_resize_from_w=128,
                            seed_resize_from_h=96)
    assert info["all_seeds"] == [100, 100] and info["all_subseeds"] == [7, 8]
    assert "Variation seed: 8, Variation seed strength: 0.3, Seed resize from: 128x96" in info["infotexts"][1]
    for graph, subseed in zip(graphs(comfy_double)[-2:], (7, 8)):
        (v,) = nodes(graph, "PixartVariationSeed")
        assert (v["seed"], v["subseed"], v["subseed_strength"], v["seed_resize_from_width"],
                v["seed_resize_from_height"]) == (100, subseed, 0.3, 128, 96)
        assert nodes(graph, "KSampler")[0]["seed"] == 100
    # without a strength nothing of it is sent, and the infotext says nothing of it (A1111's rule)
    _, info = await txt2img(client, subseed=7, subseed_strength=0)
    (v,) = nodes(graphs(comfy_double)[-1], "PixartVariationSeed")
    assert v["subseed_strength"] == 0.0 and "Variation" not in info["infotexts"][0]


@pytest.mark.parametrize("sampler,applied,written", [
    ("Euler a", 31337, True), ("DPM++ 2M", 0, False), ("DPM++ SDE", 0, False), ("LCM", 31337, False)])
async def test_eta_noise_seed_delta_moves_only_the_samplers_step_noise(client, comfy_double, sampler, applied,
                                                                       written):
    assert (await client.post("/sdapi/v1/options", json={"eta_noise_seed_delta": 31337})).status == 200
    _, info = await txt2img(client, sampler_name=sampler)
    graph = graphs(comfy_double)[-1]
    (v,) = nodes(graph, "PixartVariationSeed")
    assert v["sampler_seed_delta"] == applied and nodes(graph, "KSampler")[0]["seed"] == 100
    assert ("ENSD: 31337" in info["infotexts"][0]) is written  # A1111 writes it for samplers marked uses_ensd


# ---------------------------------------------------------------------------------------------------------------
# Samplers and eta


@pytest.mark.parametrize("body,comfy,cfg,text", [
    ({"sampler_name": "DDIM CFG++", "cfg_scale": 1.0}, ("euler_cfg_pp", "ddim_uniform"), 0.08,
     "Sampler: DDIM CFG++, Schedule type: Automatic, CFG scale: 1.0"),
    ({"sampler_name": "PLMS"}, ("ipndm", "ddim_uniform"), 7.0, "Sampler: PLMS,"),
    ({"sampler_name": "Restart", "steps": 12}, ("heun", "karras"), 7.0, "Sampler: Restart, Schedule type: Automatic"),
    ({"sampler_name": "Restart", "steps": 20}, ("heun", "karras"), 7.0, "Sampler: Heun, Schedule type: Karras"),
    ({"sampler_name": "DDIM", "eta": 1.0}, ("euler_ancestral", "ddim_uniform"), 7.0, "Eta DDIM: 1.0"),
    ({"sampler_name": "DDIM", "eta": 0}, ("ddim", "ddim_uniform"), 7.0, "Sampler: DDIM,"),
])
async def test_samplers_run_as_themselves_or_documented_equivalents(client, comfy_double, body, comfy, cfg, text):
    _, info = await txt2img(client, **body)
    (ks,) = nodes(graphs(comfy_double)[-1], "KSampler")
    assert (ks["sampler_name"], ks["scheduler"]) == comfy and ks["cfg"] == pytest.approx(cfg)
    assert text in info["infotexts"][0]


async def test_listed_samplers_include_a1111s_whole_list(client):
    names = [s["name"] for s in await (await client.get("/sdapi/v1/samplers")).json()]
    assert {"PLMS", "Restart", "DDIM CFG++"} <= set(names) and names[14:18] == ["Restart", "DDIM", "DDIM CFG++",
                                                                               "PLMS"]


@pytest.mark.parametrize("body,field", [
    ({"sampler_name": "Euler a", "eta": 0.5}, "eta"),
    ({"sampler_name": "DDIM", "eta": 0.5}, "eta"),
    ({"s_min_uncond": 1.5}, "s_min_uncond"),
    ({"refiner_checkpoint": "other.safetensors"}, "refiner_checkpoint"),
])
async def test_what_cannot_run_is_refused_naming_the_field(client, body, field):
    err = await refused(client, "/sdapi/v1/txt2img", {"width": 64, "height": 64, **body})
    assert err["errors"].startswith(field)


async def test_fields_a1111_itself_ignores_are_accepted(client):
    # A1111 1.10 reads s_churn/s_tmin/s_tmax/s_noise from its options, never from the request (webuiapi sends them)
    await txt2img(client, s_churn=3, s_tmin=1, s_tmax=5, s_noise=0.9, refiner_checkpoint="None",
                  refiner_switch_at=0.8)


# ---------------------------------------------------------------------------------------------------------------
# Tiling, options


async def test_tiling_from_the_request_or_the_option(client, comfy_double):
    _, info = await txt2img(client, override_settings={"tiling": True})
    assert nodes(graphs(comfy_double)[-1], "PixartSeamlessTiling")[0]["tiling"] == "both"
    assert "Tiling: True" in info["infotexts"][0]
    _, info = await txt2img(client)
    assert nodes(graphs(comfy_double)[-1], "PixartSeamlessTiling")[0]["tiling"] == "disabled"
    assert "Tiling" not in info["infotexts"][0]


@pytest.mark.parametrize("body", [{"randn_source": "GPU"}, {"eta_ancestral": 0.5}, {"s_churn": 1.0},
                                  {"initial_noise_multiplier": 3}])
async def test_options_that_would_not_act_are_refused(client, body):
    err = await refused(client, "/sdapi/v1/options", body, status=422)
    assert next(iter(body)) in err["errors"]
    # and the same in a request's override_settings, where A1111 would apply them
    err = await refused(client, "/sdapi/v1/txt2img", {"steps": 1, "override_settings": body})
    assert f"override_settings.{next(iter(body))}" in err["errors"]


async def test_options_defaults_are_a1111s_where_the_bridge_does_the_same(client):
    got = await (await client.get("/sdapi/v1/options")).json()
    assert got["live_previews_enable"] is True and got["randn_source"] == "CPU"


async def test_live_previews_option_controls_current_image(client, comfy_double):
    comfy_double.step_delay = 0.05
    assert (await client.post("/sdapi/v1/options", json={"live_previews_enable": False})).status == 200
    task = asyncio.create_task(client.post("/sdapi/v1/txt2img", json={"steps": 8, "width": 64, "height": 64}))
    seen = None
    for _ in range(200):
        await asyncio.sleep(0.02)
        p = await (await client.get("/sdapi/v1/progress")).json()
        if p["state"]["sampling_step"] >= 2:
            seen = p
            break
    await client.post("/sdapi/v1/interrupt")
    await task
    assert seen is not None and seen["current_image"] is None


async def test_img2img_noise_multiplier(client, comfy_double):
    resp = await client.post("/sdapi/v1/img2img", json={"init_images": [png_b64()], "width": 64, "height": 64,
                                                        "steps": 2, "initial_noise_multiplier": 0.9})
    assert resp.status == 200, await resp.text()
    info = json.loads((await resp.json())["info"])
    assert nodes(graphs(comfy_double)[-1], "PixartVariationSeed")[0]["noise_multiplier"] == 0.9
    assert "Noise multiplier: 0.9" in info["infotexts"][0]
    # webuiapi sends 1: nothing changes
    await client.post("/sdapi/v1/img2img", json={"init_images": [png_b64()], "width": 64, "height": 64, "steps": 1,
                                                 "initial_noise_multiplier": 1})
    assert nodes(graphs(comfy_double)[-1], "PixartVariationSeed")[0]["noise_multiplier"] == 1.0


# ---------------------------------------------------------------------------------------------------------------
# Scripts


async def test_sd_upscale_with_a_model_and_batch_count(client, comfy_double):
    resp = await client.post("/sdapi/v1/img2img", json={
        "init_images": [png_b64((48, 40))], "width": 64, "height": 64, "steps": 2, "seed": 50, "n_iter": 2,
        "script_name": "SD upscale", "script_args": ["", 16, "R-ESRGAN 4x+", 3]})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    info = json.loads(body["info"])
    assert [decode(i).size for i in body["images"]] == [(144, 120), (144, 120)]  # 48*3, 40*3 on the 8-grid
    assert info["all_seeds"] == [50, 51] and "SD upscale upscaler: R-ESRGAN 4x+" in info["infotexts"][1]
    for graph, seed in zip(graphs(comfy_double)[-2:], (50, 51)):
        assert nodes(graph, "KSampler")[0]["seed"] == seed
        (v,) = nodes(graph, "PixartVariationSeed")
        assert v["batch_seeds"] == "a1111"  # tile k gets seed + k
        (scale,) = nodes(graph, "ImageScale")
        assert (scale["width"], scale["height"]) == (144, 120)
        assert graph[scale["image"][0]]["class_type"] == "ImageUpscaleWithModel"


@pytest.mark.parametrize("args,field", [
    (["", 16, "SwinIR", 2], "script_args[2]"),
    (["", 64, "Lanczos", 2], "script_args[1]"),  # not smaller than the 64x64 tile
    (["", 40, "Lanczos", 2], "script_args[1]"),  # more than half the tile: the workflow's check, named here
    (["", 8, "Lanczos", 20], "script_args[3]"),
    (["", "x", "Lanczos", 2], "script_args[1]"),
])
async def test_sd_upscale_bad_arguments_name_them(client, args, field):
    err = await refused(client, "/sdapi/v1/img2img", {"init_images": [png_b64()], "width": 64, "height": 64,
                                                      "script_name": "sd upscale", "script_args": args})
    assert err["errors"].startswith(field)


async def test_sd_upscale_upscaler_by_index_and_none(client, comfy_double):
    resp = await client.post("/sdapi/v1/img2img", json={"init_images": [png_b64((80, 64))], "width": 64,
                                                        "height": 64, "steps": 1, "script_name": "sd upscale",
                                                        "script_args": ["", 8, 0, 2.0]})
    assert resp.status == 200, await resp.text()
    # upscaler 0 is "None": the picture is tiled as it is
    assert decode((await resp.json())["images"][0]).size == (80, 64)
    (split,) = nodes(graphs(comfy_double)[-1], "PixartTileSplit")
    assert graphs(comfy_double)[-1][split["image"][0]]["class_type"] == "LoadImage"


async def test_unknown_scripts_still_answer_422(client):
    for path, body in (("/sdapi/v1/txt2img", {"script_name": "sd upscale"}),
                       ("/sdapi/v1/img2img", {"init_images": [png_b64()], "script_name": "loopback"}),
                       ("/sdapi/v1/txt2img", {"alwayson_scripts": {"ControlNet": {"args": []}}})):
        err = await refused(client, path, body, status=422)
        assert "not found" in err["detail"]


# ---------------------------------------------------------------------------------------------------------------
# Extras


async def test_extras_resize_to_size_with_crop_and_two_upscalers(client, comfy_double):
    resp = await client.post("/sdapi/v1/extra-single-image", json={
        "image": png_b64((64, 48)), "resize_mode": 1, "upscaling_resize_w": 100, "upscaling_resize_h": 100,
        "upscaling_crop": True, "upscaler_1": "Nearest", "upscaler_2": "4x_foolhardy",
        "extras_upscaler_2_visibility": 0.25})
    assert resp.status == 200, await resp.text()
    out = await resp.json()
    assert decode(out["image"]).size == (100, 100)
    assert out["html_info"] == ("<p>Postprocess upscale to: 100x100, Postprocess crop to: 100x100, Postprocess "
                                "upscaler: Nearest, Postprocess upscaler 2: 4x_foolhardy</p>")
    graph = graphs(comfy_double)[-1]
    first, second = nodes(graph, "ImageScale")
    # A1111 scales by max(100/64, 100/48) = 2.08, each side down to a multiple of 8 (128x96), then centres that on
    # a 100x100 canvas (so 2 black rows top and bottom, as A1111's rounding leaves them)
    assert (first["width"], first["height"], first["upscale_method"]) == (128, 96, "nearest-exact")
    im = decode(out["image"]).convert("RGB")
    assert im.getpixel((50, 0)) == (0, 0, 0) and im.getpixel((50, 99)) == (0, 0, 0) and im.getpixel((50, 50)) != (
        0, 0, 0)
    assert graph[second["image"][0]]["class_type"] == "ImageUpscaleWithModel"
    assert nodes(graph, "ImageBlend")[0]["blend_factor"] == 0.25


@pytest.mark.parametrize("body,field", [
    ({"upscaler_1": "SwinIR"}, "upscaler_1"),
    ({"upscaler_1": "Lanczos", "upscaler_2": "SwinIR", "extras_upscaler_2_visibility": 0.5}, "upscaler_2"),
    ({"upscaler_1": "Lanczos", "gfpgan_visibility": 0.5}, "gfpgan_visibility"),
    ({"codeformer_visibility": 1}, "codeformer_visibility"),
])
async def test_extras_refusals_name_the_field(client, body, field):
    err = await refused(client, "/sdapi/v1/extra-single-image", {"image": png_b64(), **body})
    assert err["errors"].startswith(field)


# ---------------------------------------------------------------------------------------------------------------
# Interrupted images


async def test_pico_returns_the_interrupted_images_latest_preview(bridge_factory, comfy_double):
    client = await bridge_factory(adapters=["a1111", "pico"])
    comfy_double.step_delay = 0.05
    task = asyncio.create_task(client.post("/pico/sdapi/v1/txt2img?format=json&lcd_width=64&lcd_height=64",
                                           json={"steps": 20, "width": 64, "height": 64, "seed": 3}))
    for _ in range(300):
        await asyncio.sleep(0.02)
        p = await (await client.get("/sdapi/v1/progress")).json()
        if p["state"]["sampling_step"] >= 3:
            break
    await client.post("/sdapi/v1/interrupt")
    resp = await task
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert len(body["images"]) == 1
    frame = rgb565.from_rgb565(base64.b64decode(body["images"][0]), 64, 64, byte_order="big")
    # the double's previews are red by the step reached (step * 255 // steps): part-way, never the last step's
    red = int(frame[32, 32, 0])
    assert 0 < red < 240
