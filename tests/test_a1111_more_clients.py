"""More real A1111 clients, replayed request by request against the bridge over the protocol double: LibreChat's
Stable Diffusion tool, text-generation-webui's `sd_api_pictures` extension, the aiyabot Discord bot, Kobold Lite
(the web UI koboldcpp ships) and the Auto-Photoshop-StableDiffusion plugin. Each body is re-created from the
client's source, as sent (string numbers, floats in integer fields, keys A1111 ignores), and what is asserted is what that client reads back: a field it indexes
without a guard is a crash on the client's side when it is missing or of the wrong type.

The clients of test_a1111_clients.py (A1111's own tests, webuiapi, SillyTavern, Open WebUI) are not repeated."""
from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def client(bridge_factory):
    return await bridge_factory(adapters=["a1111"])


def graphs(double) -> list[dict[str, Any]]:
    return [p.get("prompt", p) for p in double.prompts]


def node_inputs(graph: dict[str, Any], cls: str) -> list[dict[str, Any]]:
    return [n["inputs"] for n in graph.values() if n["class_type"] == cls]


def encoded(size: tuple[int, int] = (64, 64), fmt: str = "PNG") -> str:
    im = Image.new("RGB", size)
    im.putdata([((x * 4) % 256, (y * 4) % 256, 90) for y in range(size[1]) for x in range(size[0])])
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


async def slow_run(client, comfy_double, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], asyncio.Task]:
    """Starts a request slow enough to be seen running; answers the first progress that shows sampling."""
    comfy_double.step_delay = 0.05
    gen = asyncio.create_task(client.post(path, json=body))
    for _ in range(300):
        await asyncio.sleep(0.02)
        p = await (await client.get("/sdapi/v1/progress")).json()
        if p["state"]["sampling_step"] >= 1:
            return p, gen
    raise AssertionError("progress never showed sampling")


# ---------------------------------------------------------------------------------------------------------------
# LibreChat: danny-avila/LibreChat, api/app/clients/tools/structured/StableDiffusion.js (`_call`)


async def test_librechat_stable_diffusion_tool(client, comfy_double):
    # the tool's whole body: the model's two prompts and fixed SDXL-sized settings
    payload = {"prompt": "photo of a lighthouse, coastline, overcast weather, waves, 8k uhd, dslr, film grain",
               "negative_prompt": "cgi, 3d, render, sketch, cartoon, drawing, low quality", "cfg_scale": 4.5,
               "steps": 22, "width": 1024, "height": 1024}
    resp = await client.post("/sdapi/v1/txt2img", json=payload)
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    # `Buffer.from(image.split(',', 1)[0], 'base64')`, then saved and served as `${file_id}.png`
    image = data["images"][0]
    im = decode(image.split(",", 1)[0])
    assert im.format == "PNG" and im.size == (1024, 1024)
    # `JSON.parse(info)`: height, width and seed go into the file record, the infotext's last line is shown
    info = json.loads(data["info"])
    assert (info["width"], info["height"]) == (1024, 1024)
    assert isinstance(info["seed"], int) and info["seed"] >= 0
    last = info["infotexts"][0].split("\n").pop()
    assert last.startswith("Steps: 22, ") and "CFG scale: 4.5," in last and f"Seed: {info['seed']}," in last
    # sharp re-embeds infotexts[0] as the PNG's `parameters`: it is the text the bridge wrote into the image
    assert im.info["parameters"] == info["infotexts"][0]
    (ks,) = node_inputs(graphs(comfy_double)[-1], "KSampler")
    assert (ks["steps"], ks["cfg"]) == (22, 4.5)


# ---------------------------------------------------------------------------------------------------------------
# text-generation-webui: oobabooga/text-generation-webui, extensions/sd_api_pictures/script.py

TGW_PARAMS = {"prompt_prefix": "(Masterpiece:1.1), detailed, intricate, colorful",
              "negative_prompt": "(worst quality, low quality:1.3)", "width": 512, "height": 512,
              "denoising_strength": 0.61, "restore_faces": False, "enable_hr": False, "hr_upscaler": "ESRGAN_4x",
              "hr_scale": "1.0", "seed": -1, "sampler_name": "DPM++ 2M", "steps": 32, "cfg_scale": 7}


def tgw_payload(description: str, params: dict[str, Any]) -> dict[str, Any]:
    # get_SD_pictures: the description wrapped as `({description}:1)` after the prefix
    return {"prompt": params["prompt_prefix"] + f"({description}:1)", "seed": params["seed"],
            "sampler_name": params["sampler_name"], "enable_hr": params["enable_hr"], "hr_scale": params["hr_scale"],
            "hr_upscaler": params["hr_upscaler"], "denoising_strength": params["denoising_strength"],
            "steps": params["steps"], "cfg_scale": params["cfg_scale"], "width": params["width"],
            "height": params["height"], "restore_faces": params["restore_faces"],
            "override_settings_restore_afterwards": True, "negative_prompt": params["negative_prompt"]}


async def test_text_generation_webui_sd_api_pictures(client, comfy_double):
    # SD_api_address_update / get_checkpoints / get_samplers
    assert (await client.get("/sdapi/v1/sd-models")).status == 200
    titles = [m["title"] for m in await (await client.get("/sdapi/v1/sd-models")).json()]
    current = (await (await client.get("/sdapi/v1/options")).json())["sd_model_checkpoint"]
    assert current in titles  # the dropdown's value must be one of its choices
    samplers = [s["name"] for s in await (await client.get("/sdapi/v1/samplers")).json()]
    assert TGW_PARAMS["sampler_name"] in samplers
    # load_checkpoint: the dropdown's title
    assert (await client.post("/sdapi/v1/options", json={"sd_model_checkpoint": titles[1]})).status == 200
    # "Manage VRAM": `requests.post(..., json='')` sends the JSON string "" as the body; raise_for_status
    for route in ("unload-checkpoint", "reload-checkpoint"):
        resp = await client.post(f"/sdapi/v1/{route}", json="")
        assert resp.status == 200, (route, await resp.text())
    # the default parameters: hr_scale a string, hr_upscaler one A1111 may not have (hires is off: not looked at)
    resp = await client.post("/sdapi/v1/txt2img", json=tgw_payload("a cat on a windowsill", TGW_PARAMS))
    assert resp.status == 200, await resp.text()
    r = await resp.json()
    for img_str in r["images"]:  # thumbnailed through PIL after `img_str.split(",", 1)[0]`
        assert decode(img_str.split(",", 1)[0]).size == (512, 512)
    graph = graphs(comfy_double)[-1]
    assert node_inputs(graph, "CheckpointLoaderSimple")[0]["ckpt_name"] == titles[1]
    assert [(k["sampler_name"], k["steps"]) for k in node_inputs(graph, "KSampler")] == [("dpmpp_2m", 32)]
    # after the Gradio widgets were touched: gr.Number gives floats (seed 42.0, CFG 6.5), the Hires. fix slider
    # 1.5, the upscaler textbox a name from /upscalers
    changed = {**TGW_PARAMS, "seed": 42.0, "cfg_scale": 6.5, "width": 256, "height": 256, "steps": 4,
               "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "R-ESRGAN 4x+"}
    resp = await client.post("/sdapi/v1/txt2img", json=tgw_payload("a dog", changed))
    assert resp.status == 200, await resp.text()
    r = await resp.json()
    assert decode(r["images"][0]).size == (384, 384)
    info = json.loads(r["info"])
    assert info["seed"] == 42 and "Hires upscale: 1.5, Hires upscaler: R-ESRGAN 4x+" in info["infotexts"][0]
    assert "Denoising strength: 0.61" in info["infotexts"][0]


# ---------------------------------------------------------------------------------------------------------------
# aiyabot: Kilvoctu/aiyabot, core/settings.py (startup_check, authenticate_user, populate_global_vars),
# core/stablecog.py (dream, update_progress), core/upscalecog.py, core/identifycog.py, core/viewhandler.py


async def test_aiyabot_start_up_reads_every_list(client, comfy_double):
    # startup_check: 401 means --api-auth, 404 means no --api; anything else goes on
    assert (await client.get("/sdapi/v1/cmd-flags")).status == 200
    # SD.Next's /sdapi/v1/version is tried and its failure expected; `requests.head(url)` only needs an answer
    await client.get("/sdapi/v1/version")
    await client.head("/")
    # authenticate_user: GET /config (401 means --gradio-auth), then POST /login without a body
    assert (await client.get("/config")).status != 401
    await client.post("/login")
    samplers = [s["name"] for s in await (await client.get("/sdapi/v1/samplers")).json()]
    styles = {s["name"]: (s["prompt"], s["negative_prompt"])
              for s in await (await client.get("/sdapi/v1/prompt-styles")).json()}
    facefix = [s["name"] for s in await (await client.get("/sdapi/v1/face-restorers")).json()]
    emb = await (await client.get("/sdapi/v1/embeddings")).json()
    sd1 = [name for name, e in emb["loaded"].items() if e["shape"] == 768]
    sd1 += [name for name, e in emb["skipped"].items() if e["shape"] == 768]
    hypers = await (await client.get("/sdapi/v1/hypernetworks")).json()
    assert isinstance(hypers, list)
    upscalers = [u["name"] for u in await (await client.get("/sdapi/v1/upscalers")).json()]
    loras = [lora["alias"] for lora in await (await client.get("/sdapi/v1/loras")).json()]
    models = await (await client.get("/sdapi/v1/sd-models")).json()
    # models.csv rows are matched on the file name; (title, name, hash) are kept, `model['hash']` indexed
    model_info = {m["filename"].split("/")[-1]: (m["title"], m.get("name") or m.get("model_name"), m["hash"])
                  for m in models}
    assert "Euler a" in samplers and styles == {} and facefix == [] and sd1 == ["easynegative"]
    assert "R-ESRGAN 4x+" in upscalers and loras[0] == "pixelstyle"
    assert model_info["other.safetensors"] == ("other.safetensors", "other", None)
    # `old_config = config_url.json()` is outside any try: the answer to /config must be JSON, whatever it says
    config = await client.get("/config")
    json.loads(await config.text())


def aiya_payload(**over: Any) -> dict[str, Any]:
    # dream(): numbers typed by Discord users arrive as the strings the bot keeps them as (guidance_scale "7.0",
    # strength "0.75"); the seed is drawn in 0..0xFFFFFFFF; the style is the bot's own "None" entry
    body = {"prompt": "a cozy cabin in the woods", "negative_prompt": "", "steps": 6, "width": 64, "height": 64,
            "cfg_scale": "7.0", "sampler_index": "Euler a", "seed": 4294967295, "seed_resize_from_h": -1,
            "seed_resize_from_w": -1, "denoising_strength": None, "n_iter": 1, "batch_size": 1, "styles": ["None"],
            "override_settings": {"CLIP_stop_at_last_layers": 1}}
    body.update(over)
    return body


async def test_aiyabot_draw_batch_hires_and_png_info(client, comfy_double):
    titles = [m["title"] for m in await (await client.get("/sdapi/v1/sd-models")).json()]
    assert (await client.post("/sdapi/v1/options", json={"sd_model_checkpoint": titles[1]})).status == 200
    # /draw with batch "2,2": n_iter 2, batch_size 2; hires "Latent (nearest)" adds hr_scale 1 and
    # `int(steps) / 2` steps, a float in Python
    body = aiya_payload(n_iter=2, batch_size=2, enable_hr=True, hr_upscaler="Latent (nearest)", hr_scale=1,
                        hr_second_pass_steps=int(6) / 2, denoising_strength="0.75")
    resp = await client.post("/sdapi/v1/txt2img", json=body)
    assert resp.status == 200, await resp.text()
    response_data = await resp.json()
    image_data = response_data["images"]
    assert len(image_data) == 4  # no grid: the bot lays out its own
    for i in image_data:
        image = decode(i)
        assert image.size == (64, 64)
        # every image's infotext through png-info; `.get("info")` goes into PngInfo.add_text, which needs a str
        png = await client.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + i})
        assert png.status == 200
        text = (await png.json()).get("info")
        assert isinstance(text, str) and "Sampler: Euler a," in text and "Hires upscaler: Latent (nearest)" in text
    seeds = json.loads(response_data["info"])["all_seeds"]
    assert seeds[0] == 4294967295 and len(set(seeds)) == 4
    ks = [k for g in graphs(comfy_double)[-4:] for k in node_inputs(g, "KSampler")]
    assert [k["steps"] for k in ks][:2] == [6, 3]  # the second pass: 3.0 read as 3
    assert node_inputs(graphs(comfy_double)[-1], "CheckpointLoaderSimple")[0]["ckpt_name"] == titles[1]
    # the unknown style "None" adds nothing, as in A1111
    (first,) = [n["text"] for n in node_inputs(graphs(comfy_double)[-1], "CLIPTextEncode")][:1]
    assert first == "a cozy cabin in the woods"


async def test_aiyabot_img2img_from_a_discord_attachment(client, comfy_double):
    body = aiya_payload(init_images=["data:image/png;base64," + encoded()], denoising_strength="0.75")
    resp = await client.post("/sdapi/v1/img2img", json=body)
    assert resp.status == 200, await resp.text()
    assert decode((await resp.json())["images"][0]).size == (64, 64)
    (ks,) = node_inputs(graphs(comfy_double)[-1], "KSampler")
    assert ks["denoise"] == 0.75


async def test_aiyabot_live_preview_polls_progress(client, comfy_double):
    # update_progress: `state.job != ''` means a job runs; idle must say '' or the bot polls on
    idle = await (await client.get("/sdapi/v1/progress")).json()
    assert idle["state"]["job"] == "" and idle["current_image"] is None and idle["eta_relative"] == 0
    p, gen = await slow_run(client, comfy_double, "/sdapi/v1/txt2img", aiya_payload(steps=10, n_iter=2))
    assert p["state"]["job"] != ""
    if p["eta_relative"] != 0:  # the bot's it/s
        (10 - p["state"]["sampling_step"]) / p["eta_relative"]
    round(p["progress"] * 100, 2)
    if p["current_image"] is not None:
        Image.open(io.BytesIO(base64.b64decode(p["current_image"]))).save(io.BytesIO(), "PNG")
    # the progress view's buttons: POST without a body
    assert (await client.post("/sdapi/v1/skip")).status == 200
    assert (await client.post("/sdapi/v1/interrupt")).status == 200
    resp = await gen
    assert resp.status == 200
    assert (await (await client.get("/sdapi/v1/progress")).json())["state"]["job"] == ""


async def test_aiyabot_upscale_and_identify(client, comfy_double):
    # /upscale: every number as the option string the slash command keeps (resize '2.0', strengths '0.0'/'0.5')
    payload = {"upscaling_resize": "2.0", "upscaler_1": "R-ESRGAN 4x+", "image": "data:image/png;base64," + encoded(),
               "gfpgan_visibility": "0.0", "codeformer_visibility": "0.0", "upscale_first": False,
               "upscaler_2": "None", "extras_upscaler_2_visibility": "0.5"}
    resp = await client.post("/sdapi/v1/extra-single-image", json=payload)
    assert resp.status == 200, await resp.text()
    assert decode((await resp.json())["image"]).size == (128, 128)
    assert node_inputs(graphs(comfy_double)[-1], "UpscaleModelLoader")[0]["model_name"] == "RealESRGAN_x4plus.pth"
    # /identify: "clip" (caption) or "deepdanbooru" (tags); `len(caption)`
    for phrasing in ("clip", "deepdanbooru"):
        resp = await client.post("/sdapi/v1/interrogate", json={"image": "data:image/png;base64," + encoded(),
                                                                 "model": phrasing})
        assert resp.status == 200, await resp.text()
        assert len((await resp.json()).get("caption")) > 0


# ---------------------------------------------------------------------------------------------------------------
# Kobold Lite: LostRuins/lite.koboldai.net, index.html (connect_to_a1111, generate_a1111_image, generate_new_image,
# interrogate_new_image); koboldcpp ships the same page as klite.embd


def klite_payload(**params: Any) -> dict[str, Any]:
    # generate_a1111_image: a random seed below 1e8, eta 0 and the s_* defaults, and override_settings that repeat
    # A1111 defaults, some as floats (ENSD 0.0, comma_padding_backtrack 20.0) and one option 1.10 no longer acts on
    body = {"prompt": "a knight on a hill", "seed": 31337, "sampler_name": "Euler", "batch_size": 1, "n_iter": 1,
            "steps": 4, "cfg_scale": 5, "width": 64, "height": 64, "negative_prompt": "", "do_not_save_samples": True,
            "do_not_save_grid": True, "enable_hr": False, "eta": 0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0,
            "s_noise": 1, "override_settings": {
                "sd_model_checkpoint": "other.safetensors", "eta_noise_seed_delta": 0.0,
                "CLIP_stop_at_last_layers": 1.0, "ddim_discretize": "uniform", "img2img_fix_steps": False,
                "sd_hypernetwork": "None", "inpainting_mask_weight": 1.0, "initial_noise_multiplier": 1.0,
                "comma_padding_backtrack": 20.0}}
    body.update(params)
    return body


async def test_kobold_lite_connects_and_lists_models(client, comfy_double):
    modelsdata = await (await client.get("/sdapi/v1/sd-models")).json()
    optionsdata = await (await client.get("/sdapi/v1/options")).json()
    # "Invalid data received or no models found" unless both hold
    assert optionsdata["samples_format"] is not None and len(modelsdata) > 0
    assert optionsdata["sd_model_checkpoint"] in [m["title"] for m in modelsdata]  # the `selected` option
    # an empty model dropdown sends "" as the override: A1111 drops an unknown checkpoint and keeps its own
    body = klite_payload()
    body["override_settings"]["sd_model_checkpoint"] = ""
    resp = await client.post("/sdapi/v1/txt2img", json=body)
    assert resp.status == 200, await resp.text()
    ckpt = node_inputs(graphs(comfy_double)[-1], "CheckpointLoaderSimple")[0]["ckpt_name"]
    assert ckpt == optionsdata["sd_model_checkpoint"]


@pytest.mark.parametrize("sampler,scheduler,comfy", [
    # the page's sampler list, and its scheduler list ("default" sends no scheduler)
    ("Euler", None, ("euler", "normal")),
    # ("Euler a" with the page's eta 0: test_kobold_lite_eta_0_runs_euler_a_without_noise)
    ("Euler", "karras", ("euler", "karras")),
    ("Heun", "simple", ("heun", "simple")),
    ("DPM2", "exponential", ("dpm_2", "exponential")),
    ("DPM++ 2M", "sgm_uniform", ("dpmpp_2m", "sgm_uniform")),
    ("DDIM", None, ("ddim", "ddim_uniform")),
    ("LCM", "karras", ("lcm", "karras")),
])
async def test_kobold_lite_txt2img(client, comfy_double, sampler, scheduler, comfy):
    body = klite_payload(sampler_name=sampler, clip_skip=2)  # clip_skip: top level, ignored by A1111
    if scheduler:
        body["scheduler"] = scheduler
    resp = await client.post("/sdapi/v1/txt2img", json=body)
    assert resp.status == 200, await resp.text()
    resp_json = await resp.json()
    assert resp_json["images"] and decode(resp_json["images"][0]).size == (64, 64)
    graph = graphs(comfy_double)[-1]
    (ks,) = node_inputs(graph, "KSampler")
    assert (ks["sampler_name"], ks["scheduler"], ks["seed"]) == (*comfy, 31337)
    assert node_inputs(graph, "CheckpointLoaderSimple")[0]["ckpt_name"] == "other.safetensors"
    text = json.loads(resp_json["info"])["infotexts"][0]
    assert f"Sampler: {sampler}," in text and "Clip skip" not in text


@pytest.mark.parametrize("sampler,runs,schedule", [("Euler a", "euler", "normal"),
                                                   ("DPM++ 2M SDE", "dpmpp_2m", "exponential")])
async def test_kobold_lite_eta_0_runs_without_noise(client, comfy_double, sampler, runs, schedule):
    # Kobold Lite sends eta 0 with every sampler. A1111 1.10 (modules/sd_samplers_common.py Sampler.initialize):
    # `self.eta = p.eta if p.eta is not None else opts.eta_ancestral`, passed to k-diffusion, and "Eta: 0.0" written
    # since it is not the default 1. sample_euler_ancestral at eta 0 is sample_euler step for step (sigma_up 0), and
    # DPM++ 2M SDE's at eta 0 DPM++ 2M's (tests/test_samplers_comfyui.py), on the sampler's own schedule; the bridge
    # ran euler_ancestral at eta 1, a different picture, and refused DPM++ 2M SDE.
    resp = await client.post("/sdapi/v1/txt2img", json=klite_payload(sampler_name=sampler))
    assert resp.status == 200, await resp.text()
    text = json.loads((await resp.json())["info"])["infotexts"][0]
    assert f"Sampler: {sampler}," in text and "Eta: 0.0" in text
    ksampler = node_inputs(graphs(comfy_double)[-1], "KSampler")[0]
    assert (ksampler["sampler_name"], ksampler["scheduler"]) == (runs, schedule)


async def test_kobold_lite_img2img_and_interrogate(client, comfy_double):
    # generate_new_image strips the data URL prefix: init_images holds bare base64 (a JPEG from compressImage)
    source = encoded((96, 64), "JPEG")
    resp = await client.post("/sdapi/v1/img2img", json=klite_payload(init_images=[source], denoising_strength=0.6,
                                                                       width=96, height=64))
    assert resp.status == 200, await resp.text()
    assert decode((await resp.json())["images"][0]).size == (96, 64)
    assert node_inputs(graphs(comfy_double)[-1], "KSampler")[0]["denoise"] == 0.6
    # "save remote images" adds save_images: one image, so no grid comes first
    resp = await client.post("/sdapi/v1/txt2img", json=klite_payload(save_images=True))
    assert len((await resp.json())["images"]) == 1
    resp = await client.post("/sdapi/v1/interrogate", json={"image": source, "model": "clip"})
    assert resp.status == 200 and (await resp.json())["caption"]


# ---------------------------------------------------------------------------------------------------------------
# Auto-Photoshop-StableDiffusion-Plugin: AbdullahAlfaraj/Auto-Photoshop-StableDiffusion-Plugin,
# utility/session.js (getSettings: the whole payload), utility/sdapi/python_replacement.js (txt2ImgRequest,
# img2ImgRequest, getAuto1111Metadata, convertMetadataToJson), typescripts/util/ts/sdapi.ts,
# typescripts/sd_tab/util.ts (lists), typescripts/session/{modes,progress,session}.ts, tool_bar/tool_bar.tsx

PS_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}


def ps_payload(mode: str, **over: Any) -> dict[str, Any]:
    # getSettings() posts its whole settings object: the plugin's own keys (selection_info, mode, uniqueDocumentId,
    # the prompt-shortcut dictionary...) ride along, the seed is a string, mask_blur is pinned to 4
    body = {"selection_info": {"left": 0, "top": 0, "right": 64, "bottom": 64, "width": 64, "height": 64},
            "alwayson_scripts": {}, "prompt": "a red barn, oil painting", "negative_prompt": "blurry",
            "original_prompt": "a red barn, oil painting", "original_negative_prompt": "blurry", "clip_skip": 1,
            "steps": 4, "sampler_index": "Euler a", "width": 64, "height": 64, "denoising_strength": 0.5,
            "batch_size": 1, "cfg_scale": 7.0, "seed": "-1", "mask_blur": 4, "use_sharp_mask": "none",
            "use_prompt_shortcut": False, "prompt_shortcut_ui_dict": {}, "uniqueDocumentId": "d41d8cd9",
            "mode": mode, "restore_faces": False, "tiling": False}
    body.update(over)
    return body


def ps_metadata(info: str) -> dict[str, str]:
    # convertMetadataToJson: the last line minus its last character, split on ',' then ':'
    last = info.rfind("\n")
    settings: dict[str, str] = {}
    for setting in info[last + 1:-1].split(","):
        key, *value = [s.lstrip() for s in setting.split(":")]
        settings[key] = value[0] if value else None
    return settings


async def ps_images(client, r: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    for i in r["images"]:  # getAuto1111Metadata: png-info of every image, `json['info']`
        png = await client.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + i}, headers=PS_HEADERS)
        out.append(ps_metadata((await png.json())["info"]))
    return out


async def test_photoshop_plugin_start_up_lists(client, comfy_double):
    samplers = [s["name"] for s in await (await client.get("/sdapi/v1/samplers")).json()]
    models = await (await client.get("/sdapi/v1/sd-models")).json()
    options = await (await client.get("/sdapi/v1/options")).json()
    assert "Euler a" in samplers and models and options["CLIP_stop_at_last_layers"] == 1
    # requestGetHiResUpscalers: A1111's six latent modes, then /upscalers' names; each is a valid hr_upscaler
    upscalers = [u["name"] for u in await (await client.get("/sdapi/v1/upscalers")).json()]
    latent = [m["name"] for m in await (await client.get("/sdapi/v1/latent-upscale-modes")).json()]
    assert latent == ["Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                      "Latent (nearest)", "Latent (nearest-exact)"]
    assert upscalers[0] == "None"
    loras = [lora["name"] for lora in await (await client.get("/sdapi/v1/loras")).json()]
    embeddings = list(((await (await client.get("/sdapi/v1/embeddings")).json()).get("loaded") or {}))
    assert "pixel_style" in loras and embeddings == ["easynegative"]
    # isScriptInstalled('adetailer' / 'ultimate sd upscale'): `scripts?.txt2img?.includes(name)`
    scripts = await (await client.get("/sdapi/v1/scripts")).json()
    assert "adetailer" not in scripts["txt2img"] and "ultimate sd upscale" not in scripts["img2img"]
    # setInpaintMaskWeight and the VAE menu post single options
    for body in ({"inpainting_mask_weight": 1}, {"sd_vae": "vae-ft-mse-840000-ema-pruned.safetensors"}):
        resp = await client.post("/sdapi/v1/options", json=body, headers=PS_HEADERS)
        assert resp.status == 200, await resp.text()
        assert await resp.json() is None  # requestPost reads the answer as JSON


async def test_photoshop_plugin_txt2img_with_its_whole_settings(client, comfy_double):
    resp = await client.post("/sdapi/v1/txt2img", json=ps_payload("txt2img"), headers=PS_HEADERS)
    assert resp.status == 200, await resp.text()
    r = await resp.json()
    (meta,) = await ps_images(client, r)
    # last_seed = images_info[0].auto_metadata.Seed: the seed drawn for "-1"
    assert meta["Seed"] == str(json.loads(r["info"])["seed"]) and meta["Sampler"] == "Euler a"
    # Hires. fix (only sent from 512x512 up); the hires list's names
    resp = await client.post("/sdapi/v1/txt2img", headers=PS_HEADERS, json=ps_payload(
        "txt2img", width=512, height=512, steps=2, seed="7", enable_hr=True, hr_scale=2.0,
        hr_upscaler="Latent (bicubic antialiased)", hr_second_pass_steps=20))
    assert resp.status == 200, await resp.text()
    r = await resp.json()
    assert decode(r["images"][0]).size == (1024, 1024)
    (meta,) = await ps_images(client, r)
    assert meta["Seed"] == "7" and meta["Denoising strength"] == "0.5" and meta["Hires steps"] == "20"


async def test_photoshop_plugin_inpaint_and_interrogate(client, comfy_double):
    mask = Image.new("L", (64, 64))
    mask.paste(255, (16, 16, 48, 48))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    mask_b64 = base64.b64encode(buf.getvalue()).decode()
    # inpaint mode: bare base64 canvas and mask, "original" content, whole picture, and the plugin's own copy of
    # the mask (expanded_mask) beside A1111's
    body = ps_payload("inpaint", init_images=[encoded()], denoising_strength=0.7, mask=mask_b64,
                      expanded_mask=mask_b64, inpaint_full_res=False, inpaint_full_res_padding=0, inpainting_fill=1,
                      mask_expansion=0)
    resp = await client.post("/sdapi/v1/img2img", json=body, headers=PS_HEADERS)
    assert resp.status == 200, await resp.text()
    r = await resp.json()
    assert decode(r["images"][0]).size == (64, 64)
    (meta,) = await ps_images(client, r)
    assert meta["Denoising strength"] == "0.7" and meta["Mask blur"] == "4"
    assert node_inputs(graphs(comfy_double)[-1], "KSampler")[0]["denoise"] == 0.7
    # clipInterrogate: the selection as bare base64; `interrogate_result.caption`
    resp = await client.post("/sdapi/v1/interrogate", json={"image": encoded(), "model": "clip"}, headers=PS_HEADERS)
    assert (await resp.json())["caption"]


async def test_photoshop_plugin_polls_progress_and_interrupts(client, comfy_double):
    p, gen = await slow_run(client, comfy_double, "/sdapi/v1/txt2img", ps_payload("txt2img", steps=10, batch_size=2))
    resp = await client.get("/sdapi/v1/progress?skip_current_image=false")
    json_ = await resp.json()
    assert json_["progress"] > 0 and json_["current_image"]
    # requestInterrupt: JSON headers, no body; the answer read as JSON
    resp = await client.post("/sdapi/v1/interrupt", headers=PS_HEADERS)
    assert resp.status == 200 and await resp.json() == {}
    assert (await gen).status == 200


async def test_progress_current_image_is_in_samples_format(client, comfy_double):
    # A1111 1.10 modules/api/api.py progressapi: `encode_pil_to_base64(shared.state.current_image)`, which writes
    # opts.samples_format (PNG by default). The Photoshop plugin saves it as temp_progress_image.png and places it
    # as a layer (typescripts/session/progress.ts updateProgressImage); aiyabot decodes it with PIL.
    p, gen = await slow_run(client, comfy_double, "/sdapi/v1/txt2img", ps_payload("txt2img", steps=10))
    try:
        assert p["current_image"] and decode(p["current_image"]).format == "PNG"
        # the encoding kept between polls follows the option as it changes
        assert (await client.post("/sdapi/v1/options", json={"samples_format": "jpg"})).status == 200
        again = await (await client.get("/sdapi/v1/progress")).json()
        assert again["current_image"] and decode(again["current_image"]).format == "JPEG"
    finally:
        await client.post("/sdapi/v1/options", json={"samples_format": "png"})
        await client.post("/sdapi/v1/interrupt")
        await gen
