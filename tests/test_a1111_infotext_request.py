"""A request's `infotext` (A1111 1.9+): modules/api/api.py `Api.apply_infotext` reads it with
parse_generation_parameters and sets each paste field with an API name that the request left unset
(`request.dict(exclude_unset=True)`), then adds `get_override_settings(params)` to override_settings where the
request has no such key. Paste fields: ui.py's txt2img list (PasteField(..., api=...)), the Sampler, Seed and
Refiner scripts' infotext_fields; ui.py's img2img list is plain tuples (no API names), so only the scripts' fields
reach an img2img request."""
from __future__ import annotations

import json

import pytest

from tests.test_a1111_answers import client, png_b64  # noqa: F401 - the same bridge fixture

pytestmark = pytest.mark.asyncio

PASTED = ("a cat on a roof\nNegative prompt: blurry\nSteps: 3, Sampler: DPM++ 2M Karras, CFG scale: 5.5, Seed: 1234, "
          "Size: 64x96, Clip skip: 2, ENSD: 31337")


def _ksampler(double) -> dict:
    graph = double.prompts[-1]["prompt"]
    (node,) = [n for n in graph.values() if n["class_type"] == "KSampler"]
    return node["inputs"]


async def test_txt2img_takes_what_the_infotext_says_where_the_request_is_silent(client, comfy_double):
    resp = await client.post("/sdapi/v1/txt2img", json={"infotext": PASTED, "cfg_scale": 3})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    info = json.loads(body["info"])
    # the legacy label splits into sampler and schedule (get_sampler_and_scheduler: Karras is DPM++ 2M's own, so
    # "Automatic"); the cfg sent wins
    assert (info["prompt"], info["negative_prompt"], info["steps"], info["seed"]) == ("a cat on a roof", "blurry", 3,
                                                                                       1234)
    assert (info["width"], info["height"], info["cfg_scale"]) == (64, 96, 3)
    assert info["sampler_name"] == "DPM++ 2M" and "Schedule type: Automatic" in info["infotexts"][0]
    assert "Clip skip: 2" in info["infotexts"][0]
    ks = _ksampler(comfy_double)
    assert (ks["steps"], ks["cfg"], ks["sampler_name"], ks["scheduler"]) == (3, 3.0, "dpmpp_2m", "karras")
    # the echo is the request as A1111 mutated it: pasted fields and settings in, the sent value kept
    params = body["parameters"]
    assert (params["steps"], params["seed"], params["cfg_scale"], params["width"]) == (3, 1234, 3, 64)
    assert params["override_settings"] == {"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337}


async def test_a_setting_sent_keeps_its_value(client, comfy_double):
    resp = await client.post("/sdapi/v1/txt2img", json={
        "infotext": PASTED, "override_settings": {"CLIP_stop_at_last_layers": 1}})
    assert resp.status == 200, await resp.text()
    info = json.loads((await resp.json())["info"])
    assert "Clip skip" not in info["infotexts"][0] and info["seed"] == 1234


async def test_img2img_takes_only_the_scripts_fields(client, comfy_double):
    resp = await client.post("/sdapi/v1/img2img", json={"init_images": [png_b64()], "infotext": PASTED})
    assert resp.status == 200, await resp.text()
    info = json.loads((await resp.json())["info"])
    # Steps, Sampler and Seed are script fields; the prompt and the size are img2img's own (no API name)
    assert (info["steps"], info["seed"], info["sampler_name"]) == (3, 1234, "DPM++ 2M")
    assert info["prompt"] == "" and (info["width"], info["height"]) == (512, 512)


async def test_a_hires_infotext_turns_the_hires_fix_on_with_the_same_sampler(client, comfy_double):
    # the hires sampler pastes as "Use same sampler", which runs the first pass's sampler (A1111's own form sends
    # the same words; A1111's API hands them to create_sampler and answers 500)
    text = ("a cat\nSteps: 2, Sampler: Euler a, CFG scale: 7, Seed: 9, Size: 64x64, Denoising strength: 0.5, "
            "Hires upscale: 1.5, Hires upscaler: Latent")
    resp = await client.post("/sdapi/v1/txt2img", json={"infotext": text})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["parameters"]["enable_hr"] is True and body["parameters"]["hr_sampler_name"] == "Use same sampler"
    info = json.loads(body["info"])
    assert "Hires upscale: 1.5" in info["infotexts"][0] and "Hires sampler" not in info["infotexts"][0]
    graph = comfy_double.prompts[-1]["prompt"]
    samplers = {n["inputs"]["sampler_name"] for n in graph.values() if n["class_type"] == "KSampler"}
    assert samplers == {"euler_ancestral"}


async def test_a_bad_value_in_the_infotext_names_it(client, comfy_double):
    resp = await client.post("/sdapi/v1/txt2img", json={"infotext": "x\nSteps: 900, Sampler: Euler, Seed: 1"})
    assert resp.status == 422
    body = await resp.json()
    assert body["detail"][0]["loc"] == ["body", "infotext", "steps"] and "infotext.steps" in body["errors"]
    assert comfy_double.prompts == []


async def test_an_older_infotext_runs_though_it_implies_gpu_noise(client, comfy_double):
    # parse_generation_parameters adds "RNG: GPU" to a text without it; ComfyUI draws CPU noise, which a request's
    # own randn_source "GPU" is refused for. From the infotext it is left out rather than failing every paste.
    resp = await client.post("/sdapi/v1/txt2img", json={"infotext": "x\nSteps: 1, Sampler: Euler, Seed: 1, "
                                                                      "Size: 64x64"})
    assert resp.status == 200, await resp.text()
    assert "randn_source" not in (await resp.json())["parameters"]["override_settings"]


async def test_pico_reads_the_infotext_too(client, comfy_double):
    resp = await client.post("/pico/sdapi/v1/txt2img?format=json", json={"infotext": PASTED,
                                                                          "pico": {"width": 64, "height": 96}})
    assert resp.status == 200, await resp.text()
    ks = _ksampler(comfy_double)
    assert (ks["seed"], ks["steps"]) == (1234, 3)


async def test_a_refiner_in_the_infotext_is_left_out(client, comfy_double):
    # the Refiner script pastes `lookup_checkpoint(d.get("Refiner"))`: None (not set) where the file is not
    # installed; no backend here runs a refiner, and a refiner_checkpoint sent is refused
    resp = await client.post("/sdapi/v1/txt2img", json={"infotext": "x\nSteps: 1, Sampler: Euler, Seed: 1, "
                                                                      "Size: 64x64, Refiner: sdxl_refiner [7440042bbd], "
                                                                      "Refiner switch at: 0.8"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["parameters"]["refiner_checkpoint"] is None


async def test_any_denoising_strength_turns_txt2img_hires_on(client, comfy_double):
    # enable_hr's paste rule is "Denoising strength" plus a Hires key, and reading adds "Hires resize-1": 0 to
    # every text: an img2img infotext pasted into txt2img upscales by the default 2, in A1111 as here
    resp = await client.post("/sdapi/v1/txt2img", json={"infotext": "x\nSteps: 1, Sampler: Euler, Seed: 1, "
                                                                      "Size: 64x64, Denoising strength: 0.4"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["parameters"]["enable_hr"] is True and "Hires upscale: 2.0" in json.loads(body["info"])["infotexts"][0]


@pytest.mark.parametrize("written,pasted", [("true", True), ("True", True), ("False", False)])
async def test_a_boolean_setting_is_cast_as_a1111_casts_it(client, comfy_double, written, pasted):
    # Options.cast_value: for a boolean option only the text "False" is false, any other text bool(text)
    resp = await client.post("/sdapi/v1/txt2img", json={"infotext": f"x\nSteps: 1, Sampler: Euler, Seed: 1, "
                                                                      f"Size: 64x64, Tiling: {written}"})
    assert resp.status == 200, await resp.text()
    overrides = (await resp.json())["parameters"]["override_settings"]
    assert overrides == ({"tiling": True} if pasted else {})  # False is the option's value already: not added


def _text(extra: str) -> str:
    return f"x\nSteps: 1, Sampler: Euler, Seed: 1, Size: 64x64, {extra}"


HIRES = "Denoising strength: 0.4, Hires upscale: 2, Hires upscaler: Latent"
PICO = "/pico/sdapi/v1/txt2img"


@pytest.mark.parametrize("path,body,field", [
    # each value passes the request model and fails a check made later (the workflow's seed range, the hires
    # checkpoint, the binary answer's one frame)
    ("/sdapi/v1/txt2img", {"infotext": "x\nSteps: 1, Sampler: Euler, Seed: 12345678901234567890123456, "
                                       "Size: 64x64"}, "seed"),
    ("/sdapi/v1/txt2img", {"infotext": _text(f"{HIRES}, Hires checkpoint: nope")}, "hr_checkpoint_name"),
    (PICO, {"infotext": _text("Batch size: 2"), "pico": {"width": 64, "height": 64}}, "batch_size"),
    # a plot whose axes leave the pasted seed alone
    ("/sdapi/v1/txt2img", {"infotext": "x\nSteps: 1, Sampler: Euler, Seed: 12345678901234567890123456, "
                                       "Size: 64x64", "script_name": "x/y/z plot", "script_args": [4, "1,2", []]},
     "seed"),
])
async def test_a_pasted_value_a_later_check_refuses_is_named_as_pasted(client, comfy_double, path, body, field):
    resp = await client.post(path, json=body)
    assert resp.status == 400, await resp.text()
    answer = await resp.json()
    assert answer["errors"].startswith(f"infotext.{field}: ") and answer["detail"].startswith(f"infotext.{field}: ")
    assert comfy_double.prompts == []


@pytest.mark.parametrize("path,body,field", [
    ("/sdapi/v1/txt2img", {"infotext": _text(""), "seed": 12345678901234567890123456}, "seed"),
    ("/sdapi/v1/txt2img", {"infotext": _text(HIRES), "hr_checkpoint_name": "nope"}, "hr_checkpoint_name"),
    (PICO, {"infotext": _text("Batch size: 3"), "batch_size": 2, "pico": {"width": 64, "height": 64}},
     "batch_size"),
])
async def test_a_value_sent_beside_an_infotext_is_named_as_sent(client, comfy_double, path, body, field):
    resp = await client.post(path, json=body)
    assert resp.status == 400, await resp.text()
    answer = await resp.json()
    assert field in answer["errors"] and "infotext" not in answer["errors"] + answer["detail"]


@pytest.mark.parametrize("extra,args,field", [
    ("", [1, "12345678901234567890123456", []], "seed"),  # the Seed axis
    ("Clip skip: 2", [24, "1,99", []], "CLIP_stop_at_last_layers"),  # the Clip skip axis, a setting
])
async def test_a_plot_axis_over_a_pasted_value_is_named_as_the_axis_value(client, comfy_double, extra, args, field):
    resp = await client.post("/sdapi/v1/txt2img", json={
        "infotext": _text(extra), "script_name": "x/y/z plot", "script_args": args})
    assert resp.status == 400, await resp.text()
    errors = (await resp.json())["errors"]
    assert field in errors and "infotext" not in errors


async def test_a_bad_pasted_value_echoes_the_body_as_the_other_422s(client, comfy_double):
    # FastAPI's 422 (and this adapter's for a field sent) echoes the request body as the client sent it
    sent = {"infotext": "x\nSteps: 900, Sampler: Euler, Seed: 1", "cfg_scale": "3", "unknown_key": [1]}
    resp = await client.post("/sdapi/v1/txt2img", json=sent)
    assert resp.status == 422
    assert (await resp.json())["body"] == sent


async def test_an_eta_0_infotext_runs_again_as_written(client, comfy_double):
    # A1111 1.10 writes "Eta: 0.0" for an ancestral sampler run at eta 0 (Kobold Lite sends eta 0 with every
    # sampler); pasted, get_override_settings sets eta_ancestral 0, and the request, sending no eta, runs with it
    first = await client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                                         "sampler_name": "Euler a", "eta": 0, "seed": 5})
    assert first.status == 200, await first.text()
    text = json.loads((await first.json())["info"])["infotexts"][0]
    assert "Eta: 0.0" in text and _ksampler(comfy_double)["sampler_name"] == "euler"
    again = await client.post("/sdapi/v1/txt2img", json={"infotext": text})
    assert again.status == 200, await again.text()
    body = await again.json()
    assert body["parameters"]["override_settings"] == {"eta_ancestral": 0.0}
    assert json.loads(body["info"])["infotexts"][0] == text
    assert _ksampler(comfy_double)["sampler_name"] == "euler"


async def test_a_pasted_eta_0_a_sampler_cannot_run_names_the_pasted_setting(client, comfy_double):
    resp = await client.post("/sdapi/v1/txt2img", json={
        "infotext": "x\nSteps: 1, Sampler: DPM++ SDE, Seed: 1, Size: 64x64, Eta: 0.0"})
    assert resp.status == 400, await resp.text()
    errors = (await resp.json())["errors"]
    assert errors.startswith("infotext.eta_ancestral: DPM++ SDE runs with eta 1 here"), errors
    assert comfy_double.prompts == []


@pytest.mark.parametrize("vae,expected", [("vae-ft-mse-840000-ema-pruned.safetensors",
                                           "vae-ft-mse-840000-ema-pruned.safetensors"),
                                          ("someone_elses.safetensors", "None")])
async def test_the_vae_an_infotext_names_is_pasted_as_sd_vae(client, comfy_double, vae, expected):
    # sd_vae's OptionInfo has infotext='VAE': get_override_settings pastes it; a VAE A1111 lacks runs as "None"
    # (sd_vae.resolve_vae_from_setting: "Couldn't find VAE named ...; using None instead")
    resp = await client.post("/sdapi/v1/txt2img", json={"infotext": _text(f"VAE: {vae}")})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["parameters"]["override_settings"] == {"sd_vae": expected}
    graph = comfy_double.prompts[-1]["prompt"]
    loaders = {nid: n["inputs"]["vae_name"] for nid, n in graph.items() if n["class_type"] == "VAELoader"}
    used = [loaders[v[0]] for n in graph.values() for v in n["inputs"].values()
            if isinstance(v, list) and len(v) == 2 and v[0] in loaders]
    assert used == ([vae] if expected != "None" else [])
    assert (f"VAE: {vae}" in json.loads(body["info"])["infotexts"][0]) is (expected != "None")
