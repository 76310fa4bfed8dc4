"""Integration: A1111 features against a real ComfyUI with tiny random-weight models built at test time (a
checkpoint, a kohya-style LoRA for it, a second VAE, an embedding, and here a tiny 4x ESRGAN upscale model): LoRA
strength 0 equals no LoRA and non-zero strengths change the pixels (through the node and through every dialect that
takes `loras`), `sd_vae` really switches the decoder, the embedding and LoRA lists come from the backend; hires fix
answers the upscaled size through every kind of upscaler and really runs its second pass; a variation seed at
strength 1 gives exactly the variation seed's picture (0: the seed's); eta noise seed delta moves only an ancestral
sampler's noise; `tiling` makes a picture whose wrap-around edges are as smooth as its inside while the plain one
has a seam; png-info reads the infotexts back; the extras upscalers match Pillow's and blend as A1111 does; every
sampler the bridge lists runs, and the documented equivalents equal the ComfyUI graphs they name; SD upscale tiles a
real picture."""
from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from bridge.app import create_app
from bridge.config import load_settings
from pixart_nodes.core.tiling import seam_ratio
from tests.support.tiny_models import TINY_CHECKPOINT, TINY_EMBEDDING, TINY_LORA, TINY_VAE

pytestmark = [pytest.mark.comfyui, pytest.mark.slow, pytest.mark.asyncio]

LORA_NAME = TINY_LORA.rsplit(".", 1)[0]


@pytest_asyncio.fixture
async def bridge(aiohttp_client, comfyui, tmp_path):
    settings = load_settings({"data_dir": tmp_path / "data", "comfyui_urls": [comfyui.url]}, env_file=None)
    return await aiohttp_client(create_app(settings, adapter_names=["a1111", "jobs_api"]))


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")).astype(int)


def lora_graph(loras: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_CHECKPOINT}},
        "2": {"class_type": "PixartLoraStack", "inputs": {"model": ["1", 0], "clip": ["1", 1], "loras": loras}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a pixel art cat", "clip": ["2", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["5", 0], "seed": 3, "steps": 2, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "lora_test"}},
    }


def run_graph(comfyui, graph: dict[str, Any]) -> np.ndarray:
    entry = comfyui.run_prompt(graph)
    image = next(iter(entry["outputs"].values()))["images"][0]
    data = comfyui.view(image["filename"], image["subfolder"], image["type"])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


async def test_lora_stack_node_applies_every_key_and_strength_zero_is_no_lora(comfyui):
    def runs() -> dict[str, np.ndarray]:
        return {
            "none": run_graph(comfyui, lora_graph("[]")),
            "zero": run_graph(comfyui, lora_graph(json.dumps([{"name": LORA_NAME, "strength": 0,
                                                                "clip_strength": 0}]))),
            "model": run_graph(comfyui, lora_graph(json.dumps([{"name": LORA_NAME, "strength": 1,
                                                                 "clip_strength": 0}]))),
            "clip": run_graph(comfyui, lora_graph(json.dumps([{"name": TINY_LORA, "strength": 0,
                                                                "clip_strength": 2}]))),
        }

    out = await asyncio.to_thread(runs)
    assert np.array_equal(out["none"], out["zero"])
    assert np.abs(out["model"] - out["none"]).mean() > 1.0
    assert np.abs(out["clip"] - out["none"]).mean() > 1.0
    # ComfyUI logs each LoRA key it could not match to a layer; the tiny LoRA's keys must all apply.
    assert "lora key not loaded" not in comfyui.process.log_path.read_text(errors="replace")


async def test_lora_stack_refuses_unknown_names_naming_them(comfyui):
    status, body = await asyncio.to_thread(comfyui.post_json, "/prompt", {"prompt": lora_graph(
        json.dumps([{"name": "nope", "strength": 1}]))})
    if status == 200:  # validation passes (the list is text); the node fails at run time
        hist = await asyncio.to_thread(_wait_history, comfyui, body["prompt_id"])
        message = json.dumps(hist["status"])
        assert "nope" in message and "not in the loras folder" in message
    else:
        raise AssertionError(body)


def _wait_history(comfyui, prompt_id: str) -> dict[str, Any]:
    import time

    for _ in range(600):
        entry = comfyui.get_json(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None and entry["status"].get("status_str"):
            return entry
        time.sleep(0.1)
    raise AssertionError("no history")


async def test_a1111_lora_tags_vae_and_embeddings_on_a_real_backend(bridge):
    base = {"prompt": "a pixel art cat", "seed": 11, "width": 64, "height": 64, "steps": 2, "cfg_scale": 5,
            "sampler_name": "Euler"}

    async def one(**change) -> tuple[np.ndarray, dict[str, Any]]:
        resp = await bridge.post("/sdapi/v1/txt2img", json={**base, **change})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        return pixels(body["images"][0]), json.loads(body["info"])

    plain, _ = await one()
    zero, _ = await one(prompt=f"a pixel art cat <lora:{LORA_NAME}:0>")
    tagged, info = await one(prompt=f"a pixel art cat <lora:{LORA_NAME}:1>")
    assert np.array_equal(plain, zero) and np.abs(tagged - plain).mean() > 1.0
    assert info["prompt"] == f"a pixel art cat <lora:{LORA_NAME}:1>"  # the infotext keeps the tag, as A1111's
    vae, info = await one(override_settings={"sd_vae": TINY_VAE})
    assert np.abs(vae - plain).mean() > 1.0 and f"VAE: {TINY_VAE}," in info["infotexts"][0]
    emb_name = TINY_EMBEDDING.rsplit(".", 1)[0]
    with_emb, _ = await one(prompt=f"a pixel art cat, {emb_name}")
    as_text, _ = await one(prompt="a pixel art cat, embedding_not_installed")
    assert not np.array_equal(with_emb, as_text)
    listed = await (await bridge.get("/sdapi/v1/embeddings")).json()
    assert listed["loaded"][emb_name] == {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                          "shape": 768, "vectors": 2}
    loras = await (await bridge.get("/sdapi/v1/loras")).json()
    assert {"name": LORA_NAME, "alias": "pixart_tiny", "path": TINY_LORA} == \
        {k: v for k, v in loras[0].items() if k != "metadata"}
    assert loras[0]["metadata"]["ss_network_dim"] == "4"
    assert TINY_VAE in [v["model_name"] for v in await (await bridge.get("/sdapi/v1/sd-vae")).json()]


async def test_jobs_api_and_generic_endpoint_take_loras_on_a_real_backend(bridge):
    from tests.support.imaging import decode_png_data_url

    async def jobs_api(params: dict[str, Any]) -> np.ndarray:
        resp = await bridge.post("/generate/text2img", json={"prompt": "a pixel art cat", "seed": 5, "width": 64,
                                                             "height": 64, "steps": 2, **params})
        assert resp.status == 202, await resp.text()
        job_id = (await resp.json())["id"]
        for _ in range(1200):
            job = await (await bridge.get(f"/jobs/{job_id}")).json()
            if job["status"] in ("completed", "failed", "cancelled"):
                break
            await asyncio.sleep(0.1)
        assert job["status"] == "completed", job
        return np.asarray(decode_png_data_url(job["result"]["images"][0]).convert("RGB")).astype(int)

    async def generic(params: dict[str, Any]) -> np.ndarray:
        resp = await bridge.post("/workflows/txt2img?wait=300", json={"parameters": {
            "prompt": "a pixel art cat", "seed": 5, "width": 64, "height": 64, "steps": 2, **params}})
        job = await resp.json()
        assert job["status"] == "completed", job
        return np.asarray(decode_png_data_url(job["result"]["images"][0]).convert("RGB")).astype(int)

    for run in (jobs_api, generic):
        plain = await run({})
        zero = await run({"loras": [{"name": LORA_NAME, "strength": 0, "clip_strength": 0}]})
        strong = await run({"loras": [{"name": LORA_NAME, "strength": 1.0}]})
        assert np.array_equal(plain, zero) and np.abs(strong - plain).mean() > 1.0, run.__name__
    resp = await bridge.post("/generate/text2img", json={"prompt": "x", "loras": [{"name": "missing"}]})
    assert resp.status == 400 and "loras[0].name" in await resp.text()


# ---------------------------------------------------------------------------------------------------------------
# Hires fix, variation seeds, tiling, png-info, extras, samplers, SD upscale

TINY_UPSCALER = "RealESRGAN_x4plus.pth"  # A1111 lists this file as "R-ESRGAN 4x+"
BASE = {"prompt": "a pixel art cat", "negative_prompt": "blurry", "seed": 11, "width": 64, "height": 64,
        "steps": 3, "cfg_scale": 5, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def tiny_upscaler(tiny_models) -> str:
    """A 4x ESRGAN with random weights (spandrel's own architecture class, 8 filters, one block) in the test
    models' upscale_models folder, which ComfyUI's UpscaleModelLoader lists and spandrel loads."""
    import torch
    from spandrel.architectures.ESRGAN import ESRGAN

    folder = tiny_models["root"] / "upscale_models"
    folder.mkdir(exist_ok=True)
    path = folder / TINY_UPSCALER
    if not path.exists():
        generator = torch.Generator().manual_seed(0)
        model = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
        state = {k: torch.randn(v.shape, generator=generator) * 0.05 for k, v in model.state_dict().items()}
        torch.save(state, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    return TINY_UPSCALER


async def txt(bridge, **change) -> tuple[list[np.ndarray], dict[str, Any]]:
    """A txt2img of BASE with some fields changed."""
    return await a1111(bridge, **{**BASE, **change})


async def a1111(bridge, path: str = "/sdapi/v1/txt2img", **body) -> tuple[list[np.ndarray], dict[str, Any]]:
    resp = await bridge.post(path, json=body)
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    key = "images" if "images" in data else "image"
    images = data[key] if key == "images" else [data[key]]
    info = json.loads(data["info"]) if "info" in data else data
    return [pixels(i) for i in images], info


def last_graph(comfyui) -> dict[str, Any]:
    """The graph of the prompt the real ComfyUI ran last (from its /history)."""
    history = comfyui.get_json("/history")
    entry = max(history.values(), key=lambda e: e["prompt"][0])
    assert entry["status"]["status_str"] == "success"
    return entry["prompt"][2]


def upstream(graph: dict[str, Any], node: str) -> set[str]:
    seen: set[str] = set()
    todo = [node]
    while todo:
        for value in graph[todo.pop()]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and value[0] in graph and value[0] not in seen:
                seen.add(value[0])
                todo.append(value[0])
    return {graph[n]["class_type"] for n in seen}


async def test_hires_fix_on_a_real_backend(bridge, comfyui, tiny_upscaler):
    assert (await bridge.post("/sdapi/v1/refresh-checkpoints")).status == 200  # the new upscaler listed
    names = [u["name"] for u in await (await bridge.get("/sdapi/v1/upscalers")).json()]
    assert "R-ESRGAN 4x+" in names
    outs = {}
    for upscaler in ("Latent", "Latent (nearest-exact)", "Lanczos", "None", "R-ESRGAN 4x+"):
        [im], info = await txt(bridge, enable_hr=True, hr_scale=2, hr_upscaler=upscaler,
                                 denoising_strength=0.6)
        assert im.shape == (128, 128, 3), upscaler
        assert f"Hires upscale: 2.0, Hires upscaler: {upscaler}" in info["infotexts"][0]
        outs[upscaler] = im
        # what the real backend ran between the passes (the tiny VAE encodes every picture to the same latent, so
        # the image upscalers cannot be told apart by the pixels; their own output is checked in the extras test)
        graph = last_graph(comfyui)
        second = [nid for nid, n in graph.items() if n["class_type"] == "KSampler"
                  and "KSampler" in upstream(graph, nid)]
        assert len(second) == 1
        feeding = upstream(graph, second[0])
        expected = {"Latent": "PixartLatentUpscale", "Latent (nearest-exact)": "PixartLatentUpscale",
                    "Lanczos": "ImageScale", "None": "ImageScale", "R-ESRGAN 4x+": "ImageUpscaleWithModel"}[upscaler]
        assert expected in feeding, (upscaler, feeding)
        assert ("ImageUpscaleWithModel" in feeding) == (upscaler == "R-ESRGAN 4x+")
    # the latent modes give their own pictures
    assert np.abs(outs["Latent"] - outs["Latent (nearest-exact)"]).mean() > 0.5
    assert np.abs(outs["Latent"] - outs["Lanczos"]).mean() > 0.5
    # the second pass really samples: denoising 0 leaves the upscaled first pass as it was
    [kept], _ = await txt(bridge, enable_hr=True, hr_upscaler="Latent", denoising_strength=0.0)
    assert np.abs(kept - outs["Latent"]).mean() > 0.5
    # A1111's crop: both resize sides set, the longer one cut in the latent
    [cropped], info = await txt(bridge, enable_hr=True, hr_resize_x=128, hr_resize_y=96)
    assert cropped.shape == (96, 128, 3) and "Hires resize: 128x96" in info["infotexts"][0]
    resp = await bridge.post("/sdapi/v1/txt2img", json={**BASE, "enable_hr": True, "hr_upscaler": "ESRGAN 8x"})
    assert resp.status == 400 and "hr_upscaler" in (await resp.json())["errors"]


async def test_variation_seeds_and_eta_noise_seed_delta_on_a_real_backend(bridge):
    [seed5], _ = await txt(bridge, seed=5)
    [seed9], _ = await txt(bridge, seed=9)
    [none], _ = await txt(bridge, seed=5, subseed=9, subseed_strength=0)
    [full], _ = await txt(bridge, seed=5, subseed=9, subseed_strength=1.0)
    [half], info = await txt(bridge, seed=5, subseed=9, subseed_strength=0.5)
    assert not np.array_equal(seed5, seed9)
    # A1111's blend at 1 is the variation seed's noise, at 0 the seed's: with a deterministic sampler the pictures
    # are those seeds' own
    assert np.array_equal(none, seed5) and np.array_equal(full, seed9)
    assert np.abs(half - seed5).mean() > 0.5 and np.abs(half - seed9).mean() > 0.5
    assert "Variation seed: 9, Variation seed strength: 0.5" in info["infotexts"][0]
    [same_size], _ = await txt(bridge, seed=5, seed_resize_from_w=64, seed_resize_from_h=64)
    [other_size], info = await txt(bridge, seed=5, seed_resize_from_w=32, seed_resize_from_h=32)
    assert np.array_equal(same_size, seed5) and not np.array_equal(other_size, seed5)
    assert "Seed resize from: 32x32" in info["infotexts"][0]
    # eta noise seed delta: an ancestral sampler's step noise moves, a deterministic sampler is untouched
    [before_a], _ = await txt(bridge, seed=5, sampler_name="Euler a")
    assert (await bridge.post("/sdapi/v1/options", json={"eta_noise_seed_delta": 31337})).status == 200
    try:
        [after_a], info = await txt(bridge, seed=5, sampler_name="Euler a")
        [after_e], _ = await txt(bridge, seed=5)
    finally:
        await bridge.post("/sdapi/v1/options", json={"eta_noise_seed_delta": 0})
    assert np.abs(after_a - before_a).mean() > 0.5 and "ENSD: 31337" in info["infotexts"][0]
    assert np.array_equal(after_e, seed5)


async def test_tiling_is_seamless_on_a_real_backend(bridge):
    ratios = []
    for seed in (1, 2, 3):
        [plain], _ = await txt(bridge, seed=seed)
        [tiled], info = await txt(bridge, seed=seed, tiling=True)
        assert "Tiling: True" in info["infotexts"][0]
        ratios.append(([seam_ratio(plain, 1), seam_ratio(plain, 0)], [seam_ratio(tiled, 1), seam_ratio(tiled, 0)]))
        [again], _ = await txt(bridge, seed=seed)
        assert np.array_equal(again, plain)  # the loaded model was not left wrapping
    for plain_r, tiled_r in ratios:
        # the step across the wrap-around edge is like any step inside the tiled picture; the plain one has a seam
        assert max(tiled_r) < 2.0, ratios
        assert max(plain_r) > 3.0, ratios
    [hires_tiled], _ = await txt(bridge, tiling=True, enable_hr=True, hr_scale=2)
    assert max(seam_ratio(hires_tiled, 1), seam_ratio(hires_tiled, 0)) < 2.0


async def test_png_info_reads_the_bridges_infotexts_back(bridge):
    resp = await bridge.post("/sdapi/v1/txt2img", json={**BASE, "enable_hr": True, "hr_scale": 1.5, "subseed": 4,
                                                        "subseed_strength": 0.2, "tiling": True})
    data = await resp.json()
    text = json.loads(data["info"])["infotexts"][0]
    out = await (await bridge.post("/sdapi/v1/png-info", json={"image": data["images"][0]})).json()
    assert out["info"] == text
    p = out["parameters"]
    assert (p["Size-1"], p["Size-2"], p["Seed"], p["Variation seed"], p["Variation seed strength"]) == (
        "64", "64", "11", "4", "0.2")
    assert (p["Hires upscale"], p["Denoising strength"], p["Tiling"], p["Prompt"]) == ("1.5", "0.75", "True",
                                                                                      "a pixel art cat")


async def test_extras_upscalers_on_a_real_backend(bridge, tiny_upscaler):
    await bridge.post("/sdapi/v1/refresh-checkpoints")
    rng = np.random.default_rng(3)
    src = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    b64 = base64.b64encode(_png(src)).decode()
    [lanczos], out = await a1111(bridge, "/sdapi/v1/extra-single-image", image=b64, upscaler_1="Lanczos",
                                 upscaling_resize=2)
    assert lanczos.shape == (96, 128, 3) and "Postprocess upscaler: Lanczos" in out["html_info"]
    reference = np.asarray(Image.fromarray(src).resize((128, 96), Image.LANCZOS)).astype(int)
    assert np.abs(lanczos - reference).max() <= 2  # ComfyUI's lanczos is Pillow's, through float32
    [nearest], _ = await a1111(bridge, "/sdapi/v1/extra-single-image", image=b64, upscaler_1="Nearest",
                               upscaling_resize=2)
    assert np.array_equal(nearest, np.repeat(np.repeat(src.astype(int), 2, 0), 2, 1))
    [blend], out = await a1111(bridge, "/sdapi/v1/extra-single-image", image=b64, upscaler_1="Lanczos",
                               upscaler_2="Nearest", extras_upscaler_2_visibility=0.5, upscaling_resize=2)
    assert np.abs(blend - (lanczos + nearest) / 2).max() <= 1.0  # A1111's Image.blend
    [model], out = await a1111(bridge, "/sdapi/v1/extra-single-image", image=b64, upscaler_1="R-ESRGAN 4x+",
                               upscaling_resize=2)
    assert model.shape == (96, 128, 3) and np.abs(model - lanczos).mean() > 1.0
    images, _ = await a1111(bridge, "/sdapi/v1/extra-batch-images", imageList=[
        {"data": b64, "name": "a"}, {"data": b64, "name": "b"}], upscaler_1="R-ESRGAN 4x+", resize_mode=1,
        upscaling_resize_w=100, upscaling_resize_h=100)
    assert [i.shape for i in images] == [(100, 100, 3), (100, 100, 3)]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def direct_graph(sampler: str, scheduler: str, cfg: float, steps: int = 4) -> dict[str, Any]:
    """BASE as a plain ComfyUI graph: what a documented equivalent claims to run."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_CHECKPOINT}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": BASE["prompt"], "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": BASE["negative_prompt"], "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["5", 0], "seed": BASE["seed"], "steps": steps,
                                                   "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler,
                                                   "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "equivalent"}},
    }


async def test_every_listed_sampler_runs_and_equivalents_are_what_they_say(bridge, comfyui):
    await bridge.post("/sdapi/v1/options", json={"sd_model_checkpoint": TINY_CHECKPOINT})
    listed = [s["name"] for s in await (await bridge.get("/sdapi/v1/samplers")).json()]
    assert {"PLMS", "Restart", "DDIM CFG++"} <= set(listed)
    for name in listed:
        [im], info = await a1111(bridge, **{**BASE, "sampler_name": name, "steps": 2})
        assert im.shape == (64, 64, 3) and f"Sampler: {name}," in info["infotexts"][0], name
    for name, body, graph in (
            ("PLMS", {"sampler_name": "PLMS"}, direct_graph("ipndm", "ddim_uniform", 5.0)),
            ("DDIM CFG++", {"sampler_name": "DDIM CFG++", "cfg_scale": 12.5},
             direct_graph("euler_cfg_pp", "ddim_uniform", 1.0)),
            ("DDIM eta 1", {"sampler_name": "DDIM", "eta": 1.0}, direct_graph("euler_ancestral", "ddim_uniform", 5.0)),
            ("Restart", {"sampler_name": "Restart"}, direct_graph("heun", "karras", 5.0))):
        [ours], _ = await a1111(bridge, **{**BASE, "steps": 4, **body})
        direct = await asyncio.to_thread(run_graph, comfyui, graph)
        assert np.array_equal(ours, direct), name
    # Restart is Heun on Karras sigmas (exact below 20 steps): the same pixels as asking for that
    [restart], _ = await a1111(bridge, **{**BASE, "sampler_name": "Restart", "steps": 6})
    [heun], _ = await a1111(bridge, **{**BASE, "sampler_name": "Heun", "scheduler": "Karras", "steps": 6})
    assert np.array_equal(restart, heun)


async def test_sd_upscale_on_a_real_backend(bridge):
    [plain], _ = await txt(bridge)
    b64 = base64.b64encode(_png(plain.astype(np.uint8))).decode()
    [up], info = await a1111(bridge, "/sdapi/v1/img2img", **{**BASE, "init_images": [b64], "denoising_strength": 0.5,
                                                             "script_name": "sd upscale",
                                                             "script_args": ["", 8, "Lanczos", 2.0]})
    assert up.shape == (128, 128, 3)
    text = info["infotexts"][0]
    assert "Size: 64x64" in text and "SD upscale overlap: 8, SD upscale upscaler: Lanczos" in text
    lanczos = np.asarray(Image.fromarray(plain.astype(np.uint8)).resize((128, 128), Image.LANCZOS)).astype(int)
    assert np.abs(up - lanczos).mean() > 1.0  # the tiles were re-sampled
