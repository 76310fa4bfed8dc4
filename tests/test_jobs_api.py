"""Image-generation job API over the ComfyUI protocol double: every endpoint's status codes, exact keys and types,
image sizes, the sampler/model/seed translation into the bound graph, and bad input (each a 4xx naming the field,
with the server still serving afterwards)."""
from __future__ import annotations

import asyncio
import base64
import io
import re
import time
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image

from tests.support.double import ComfyDouble, StyleDouble
from tests.support.imaging import decode_png_data_url, solid_png_b64
from tests.support.waiting import wait_healthy

pytestmark = pytest.mark.asyncio

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
JOB_KEYS = {"id", "type", "status", "request", "createdAt", "startedAt", "completedAt", "progress", "error", "result"}
ACCEPTED_KEYS = {"id", "type", "status", "request", "createdAt", "progress"}
RESULT_KEYS = {"images", "seed", "parameters", "timeTaken"}


@pytest_asyncio.fixture
async def comfy_double() -> Any:
    double = StyleDouble()
    await double.start()
    try:
        yield double
    finally:
        await double.stop()


@pytest_asyncio.fixture
async def client(bridge_factory: Any) -> Any:
    c = await bridge_factory(adapters=["jobs_api"])
    await wait_healthy(c)
    return c


async def wait_job(client: Any, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        resp = await client.get(f"/jobs/{job_id}")
        assert resp.status == 200
        job = await resp.json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        assert loop.time() < deadline, f"job {job_id} still {job['status']}"
        await asyncio.sleep(0.05)


def png_b64(width: int, height: int, colour: tuple[int, int, int] = (200, 30, 30), *, data_url: bool = True,
            mode: str = "RGB") -> str:
    return solid_png_b64(width, height, colour if mode == "RGB" else colour[0], mode, data_url=data_url)


decode_data_url = decode_png_data_url


def last_graph(double: ComfyDouble) -> dict[str, Any]:
    return double.prompts[-1]["prompt"]


def node_of(graph: dict[str, Any], cls: str) -> dict[str, Any]:
    found = [n for n in graph.values() if n["class_type"] == cls]
    assert len(found) == 1, f"{cls}: {len(found)} nodes"
    return found[0]["inputs"]


async def submit(client: Any, kind: str, body: dict[str, Any], status: int = 202) -> dict[str, Any]:
    resp = await client.post(f"/generate/{kind}", json=body)
    data = await resp.json()
    assert resp.status == status, data
    return data


# ---------------------------------------------------------------------------------------------- text2img


async def test_text2img_accepted_then_completed_with_exact_shapes(client: Any, comfy_double: StyleDouble) -> None:
    body = {"prompt": "a red apple", "negativePrompt": "blurry", "width": 72, "height": 64, "steps": 2,
            "guidanceScale": 6.5, "seed": 42, "sampler": "euler_a"}
    accepted = await submit(client, "text2img", body)
    assert set(accepted) == ACCEPTED_KEYS
    assert accepted["type"] == "text2img" and accepted["status"] == "queued" and accepted["progress"] == 0
    assert accepted["request"] == body
    assert ISO.match(accepted["createdAt"]) and re.match(r"^job_\d{13}_[0-9a-f]{8}$", accepted["id"])

    job = await wait_job(client, accepted["id"])
    assert set(job) == JOB_KEYS
    assert job["status"] == "completed" and job["progress"] == 100 and job["error"] is None
    assert all(ISO.match(job[k]) for k in ("createdAt", "startedAt", "completedAt"))
    result = job["result"]
    assert set(result) == RESULT_KEYS
    assert result["seed"] == 42 and isinstance(result["timeTaken"], int) and result["timeTaken"] >= 0
    assert len(result["images"]) == 1
    assert decode_data_url(result["images"][0]).size == (72, 64)
    params = result["parameters"]
    assert params["prompt"] == "a red apple" and params["negativePrompt"] == "blurry"
    assert (params["width"], params["height"], params["steps"], params["guidanceScale"]) == (72, 64, 2, 6.5)
    assert params["sampler"] == "euler_a" and params["model"] == "tiny_sd15.safetensors"

    graph = last_graph(comfy_double)
    ks = node_of(graph, "KSampler")
    assert (ks["seed"], ks["steps"], ks["cfg"], ks["sampler_name"], ks["scheduler"]) == \
        (42, 2, 6.5, "euler_ancestral", "normal")
    assert node_of(graph, "CheckpointLoaderSimple")["ckpt_name"] == "tiny_sd15.safetensors"
    texts = sorted(n["inputs"]["text"] for n in graph.values() if n["class_type"] == "CLIPTextEncode")
    assert texts == ["a red apple", "blurry"]


async def test_a_default_model_the_backend_lacks_is_the_settings_fault(bridge_factory: Any,
                                                                       comfy_double: StyleDouble) -> None:
    # Was a 400 "Model nope.safetensors not loaded" naming `model`, a field the request never sent.
    c = await bridge_factory(adapters=["jobs_api"], JOBS_API_DEFAULT_MODEL="nope.safetensors")
    await wait_healthy(c)
    data = await submit(c, "text2img", {"prompt": "x", "width": 64, "height": 64, "steps": 1}, 500)
    assert data.get("field") != "model" and "JOBS_API_DEFAULT_MODEL" in data["error"], data
    data = await submit(c, "text2img", {"prompt": "x", "model": "sdxl.safetensors"}, 400)  # the request's own
    assert data["field"] == "model", data


async def test_random_seed_is_chosen_reported_and_used(client: Any, comfy_double: StyleDouble) -> None:
    seeds = []
    for _ in range(2):
        accepted = await submit(client, "text2img", {"prompt": "x", "width": 64, "height": 64, "steps": 1})
        job = await wait_job(client, accepted["id"])
        seed = job["result"]["seed"]
        assert isinstance(seed, int) and 0 <= seed < 2**32
        assert job["result"]["parameters"]["seed"] == seed
        assert node_of(last_graph(comfy_double), "KSampler")["seed"] == seed
        seeds.append(seed)
    assert seeds[0] != seeds[1]


@pytest.mark.parametrize(("sampler", "comfy", "scheduler"), [
    ("euler_a", "euler_ancestral", "normal"),
    ("dpm++_2m", "dpmpp_2m", "karras"),
    ("ddim", "ddim", "ddim_uniform"),
    ("plms", "ipndm", "ddim_uniform"),
    ("DPM++ 2M Karras", "dpmpp_2m", "karras"),
    ("heun", "heun", "normal"),                   # ComfyUI's own name
    ("dpmpp_2m_sde", "dpmpp_2m_sde", "normal"),   # ComfyUI's own name
    # any other A1111 label, read as A1111 1.10 reads it (they were a 400)
    ("DPM2 Karras", "dpm_2", "karras"),
    ("LMS Karras", "lms", "karras"),
    ("DPM fast", "dpm_fast", "normal"),
    ("Restart", "heun", "karras"),                # below 20 steps, exactly Heun on Karras sigmas
])
async def test_sampler_names(client: Any, comfy_double: StyleDouble, sampler: str, comfy: str,
                             scheduler: str) -> None:
    accepted = await submit(client, "text2img", {"prompt": "x", "width": 64, "height": 64, "steps": 1,
                                                 "sampler": sampler, "seed": 1})
    job = await wait_job(client, accepted["id"])
    ks = node_of(last_graph(comfy_double), "KSampler")
    assert (ks["sampler_name"], ks["scheduler"]) == (comfy, scheduler)
    assert job["result"]["parameters"]["samplerName"] == comfy and job["result"]["parameters"]["sampler"] == sampler


async def test_a1111_cfg_pp_label_divides_the_guidance_as_a1111_does(client: Any, comfy_double: StyleDouble) -> None:
    accepted = await submit(client, "text2img", {"prompt": "x", "width": 64, "height": 64, "steps": 1,
                                                 "sampler": "DDIM CFG++", "guidanceScale": 5, "seed": 1})
    job = await wait_job(client, accepted["id"])
    ks = node_of(last_graph(comfy_double), "KSampler")
    assert (ks["sampler_name"], ks["scheduler"], ks["cfg"]) == ("euler_cfg_pp", "ddim_uniform", 0.4)
    assert job["result"]["parameters"]["guidanceScale"] == 5  # what the client sent


async def test_model_by_file_name_or_stem(client: Any, comfy_double: StyleDouble) -> None:
    for model in ("other.safetensors", "other"):
        accepted = await submit(client, "text2img", {"prompt": "x", "width": 64, "height": 64, "steps": 1,
                                                     "model": model})
        job = await wait_job(client, accepted["id"])
        assert job["result"]["parameters"]["model"] == "other.safetensors"
        assert node_of(last_graph(comfy_double), "CheckpointLoaderSimple")["ckpt_name"] == "other.safetensors"


# ---------------------------------------------------------------------------------------------- bad input


def big_png_b64(width: int, height: int) -> str:
    # A flat image compresses to a few hundred KB however many pixels it claims.
    img = Image.new("L", (width, height), 0)
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=9)
    return base64.b64encode(out.getvalue()).decode()


@pytest.mark.parametrize(("kind", "body", "status", "field", "text"), [
    ("text2img", {}, 400, "prompt", "Prompt is required"),
    ("text2img", {"prompt": "   "}, 400, "prompt", "Prompt is required"),
    ("text2img", {"prompt": 5}, 400, "prompt", "prompt must be a string"),
    ("text2img", {"prompt": "x", "width": 100}, 400, "width", "width must be a multiple of 8, got 100"),
    ("text2img", {"prompt": "x", "height": 8}, 400, "height", "height must be between 64 and 2048, got 8"),
    ("text2img", {"prompt": "x", "steps": -3}, 400, "steps", "steps must be between 1 and 150, got -3"),
    ("text2img", {"prompt": "x", "steps": 2.5}, 400, "steps", "steps must be an integer, got 2.5"),
    ("text2img", {"prompt": "x", "guidanceScale": "high"}, 400, "guidanceScale", "guidanceScale must be a number"),
    ("text2img", {"prompt": "x", "seed": -7}, 400, "seed", "seed must be between 0"),
    ("text2img", {"prompt": "x", "sampler": "warp_drive"}, 400, "sampler", "Unknown sampler 'warp_drive'"),
    ("text2img", {"prompt": "x", "model": "stable-diffusion-xl"}, 400, "model",
     "Model stable-diffusion-xl not loaded"),
    ("img2img", {"prompt": "x"}, 400, "initImage", "initImage is required"),
    ("img2img", {"prompt": "x", "initImage": "data:image/png;base64,@@@not base64@@@"}, 400, "initImage",
     "initImage: not valid base64"),
    ("img2img", {"prompt": "x", "initImage": base64.b64encode(b"just some text, no image").decode()}, 400,
     "initImage", "initImage: not a PNG, JPEG or WebP image"),
    ("img2img", {"prompt": "x", "initImage": png_b64(64, 64), "strength": 1.5}, 400, "strength",
     "strength must be between 0 and 1"),
    ("inpaint", {"prompt": "x", "image": png_b64(64, 64)}, 400, "mask", "mask is required"),
    ("text2img", {"prompt": "a", "strength": None}, 400, "strength", "strength: not taken by text2img"),
    ("text2img", {"prompt": "a", "initImage": png_b64(64, 64)}, 400, "initImage", "initImage: not taken by text2img"),
    ("img2img", {"prompt": "a", "initImage": png_b64(64, 64), "mask": png_b64(64, 64)}, 400, "mask",
     "mask: not taken by img2img"),
    ("style-transfer", {"contentImage": png_b64(64, 64)}, 400, "styleImage", "styleImage is required"),
    ("style-transfer", {"contentImage": png_b64(64, 64), "styleImage": png_b64(64, 64), "contentStrength": -1},
     400, "contentStrength", "contentStrength must be between 0 and 1"),
])
async def test_bad_input_is_a_4xx_naming_the_field(client: Any, comfy_double: StyleDouble, kind: str,
                                                   body: dict[str, Any], status: int, field: str, text: str) -> None:
    before = len(comfy_double.prompts)
    resp = await client.post(f"/generate/{kind}", json=body)
    data = await resp.json()
    assert resp.status == status, data
    assert data["field"] == field and data["error"].startswith(text), data
    assert len(comfy_double.prompts) == before  # refused before anything reached ComfyUI
    ok = await submit(client, "text2img", {"prompt": "still fine", "width": 64, "height": 64, "steps": 1})
    assert (await wait_job(client, ok["id"]))["status"] == "completed"


async def test_unknown_sampler_and_model_list_valid_values(client: Any) -> None:
    resp = await client.post("/generate/text2img", json={"prompt": "x", "sampler": "nope"})
    data = await resp.json()
    assert resp.status == 400
    assert {"euler_a", "dpm++_2m", "ddim", "plms", "euler", "dpmpp_2m_sde"} <= set(data["validValues"])
    assert "euler_a" in data["error"]
    resp = await client.post("/generate/text2img", json={"prompt": "x", "model": "stable-diffusion-xl"})
    data = await resp.json()
    assert resp.status == 400
    assert data["error"] == "Model stable-diffusion-xl not loaded"
    assert data["validValues"] == ["tiny_sd15.safetensors", "other.safetensors"]


async def test_broken_body_and_oversized_images(client: Any) -> None:
    resp = await client.post("/generate/text2img", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"].startswith("Request body must be valid JSON (")
    resp = await client.post("/generate/text2img", json=["prompt"])
    assert resp.status == 400 and (await resp.json())["error"] == "Request body must be a JSON object"
    huge = big_png_b64(10_000, 10_000)  # 100 megapixels, refused from the header before decoding
    resp = await client.post("/generate/img2img", json={"prompt": "x", "initImage": huge})
    data = await resp.json()
    assert resp.status == 413, data
    assert data["field"] == "initImage" and "10000x10000" in data["error"]
    ok = await submit(client, "text2img", {"prompt": "x", "width": 64, "height": 64, "steps": 1})
    assert (await wait_job(client, ok["id"]))["status"] == "completed"


# ---------------------------------------------------------------------------------------------- img2img / inpaint


async def test_img2img_takes_init_image_size_and_strength(client: Any, comfy_double: StyleDouble) -> None:
    accepted = await submit(client, "img2img", {"prompt": "watercolour", "initImage": png_b64(77, 50),
                                                "strength": 0.4, "steps": 2, "seed": 5})
    assert accepted["request"]["initImage"] == {"width": 77, "height": 50, "format": "PNG"}
    job = await wait_job(client, accepted["id"])
    assert job["status"] == "completed", job
    assert decode_data_url(job["result"]["images"][0]).size == (72, 64)  # 77x50 -> multiples of 8, min 64
    assert job["result"]["parameters"]["strength"] == 0.4
    graph = last_graph(comfy_double)
    assert node_of(graph, "KSampler")["denoise"] == 0.4
    uploaded = node_of(graph, "LoadImage")["image"]
    with Image.open(io.BytesIO(comfy_double.inputs[uploaded])) as im:
        assert im.size == (77, 50)


async def test_inpaint_maps_mask_and_strength(client: Any, comfy_double: StyleDouble) -> None:
    accepted = await submit(client, "inpaint", {"prompt": "a red car", "image": png_b64(64, 64),
                                                "mask": png_b64(64, 64, (255, 255, 255), data_url=False),
                                                "inpaintingStrength": 0.9, "steps": 2, "width": 64,
                                                "height": 64})
    job = await wait_job(client, accepted["id"])
    assert job["status"] == "completed", job
    assert job["result"]["parameters"]["inpaintingStrength"] == 0.9
    assert decode_data_url(job["result"]["images"][0]).size == (64, 64)
    graph = last_graph(comfy_double)
    assert node_of(graph, "KSampler")["denoise"] == 0.9
    mask_file = node_of(graph, "LoadImageMask")["image"]
    with Image.open(io.BytesIO(comfy_double.inputs[mask_file])) as im:
        assert im.convert("L").getextrema() == (255, 255)


# ---------------------------------------------------------------------------------------------- style transfer


async def test_style_transfer_maps_strengths_and_models(client: Any, comfy_double: StyleDouble) -> None:
    accepted = await submit(client, "style-transfer", {"contentImage": png_b64(64, 64), "styleImage":
                                                       png_b64(32, 32, (0, 0, 255)), "styleStrength": 0.8,
                                                       "contentStrength": 0.25, "steps": 2, "seed": 9})
    assert accepted["type"] == "style-transfer"
    job = await wait_job(client, accepted["id"])
    assert job["status"] == "completed", job
    params = job["result"]["parameters"]
    assert (params["styleStrength"], params["contentStrength"]) == (0.8, 0.25)
    assert (params["clipVision"], params["styleModel"]) == ("clip_vision_l.safetensors", "t2i_style.safetensors")
    assert params["prompt"] == ""
    assert decode_data_url(job["result"]["images"][0]).size == (64, 64)
    graph = last_graph(comfy_double)
    assert node_of(graph, "StyleModelApply")["strength"] == 0.8
    assert node_of(graph, "KSampler")["denoise"] == 0.75
    assert node_of(graph, "CLIPVisionLoader")["clip_name"] == "clip_vision_l.safetensors"
    assert node_of(graph, "StyleModelLoader")["style_model_name"] == "t2i_style.safetensors"


@pytest.mark.parametrize("missing", ["clip_vision", "style_models"])
async def test_style_transfer_without_models_fails_fast(client: Any, comfy_double: StyleDouble,
                                                        missing: str) -> None:
    setattr(comfy_double, missing, [])
    from bridge.app import ENGINE
    await client.app[ENGINE].refresh_object_info()
    before = len(comfy_double.prompts)
    resp = await client.post("/generate/style-transfer", json={"contentImage": png_b64(64, 64),
                                                               "styleImage": png_b64(64, 64)})
    data = await resp.json()
    assert resp.status == 400, data
    assert data["field"] == ("clipVision" if missing == "clip_vision" else "styleModel")
    assert f"models/{missing}" in data["error"] and data["validValues"] == []
    assert len(comfy_double.prompts) == before
    assert (await (await client.get("/jobs")).json())["jobs"] == []


async def test_configured_style_model_must_exist(bridge_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBS_API_CLIP_VISION", "missing_vit.safetensors")
    c = await bridge_factory(adapters=["jobs_api"])
    await wait_healthy(c)
    resp = await c.post("/generate/style-transfer", json={"contentImage": png_b64(64, 64),
                                                          "styleImage": png_b64(64, 64)})
    data = await resp.json()
    assert resp.status == 400
    assert "missing_vit.safetensors (JOBS_API_CLIP_VISION)" in data["error"]
    assert data["validValues"] == ["clip_vision_l.safetensors"]


# ---------------------------------------------------------------------------------------------- jobs, queue, models


async def test_list_filter_and_not_found(client: Any, comfy_double: StyleDouble) -> None:
    ids = []
    for _ in range(2):
        ids.append((await submit(client, "text2img", {"prompt": "x", "width": 64, "height": 64, "steps": 1}))["id"])
    for jid in ids:
        await wait_job(client, jid)
    resp = await client.get("/jobs", params={"status": "completed"})
    listed = (await resp.json())["jobs"]
    assert resp.status == 200 and {j["id"] for j in listed} == set(ids)
    assert all(set(j) == JOB_KEYS - {"request", "result"} and j["status"] == "completed" for j in listed)
    assert (await (await client.get("/jobs", params={"status": "queued"})).json())["jobs"] == []
    assert len((await (await client.get("/jobs", params={"limit": "1"})).json())["jobs"]) == 1
    resp = await client.get("/jobs", params={"status": "running"})
    data = await resp.json()
    assert resp.status == 400 and data["field"] == "status" and "processing" in data["error"]
    # a window far down the list is still read through by the database: refused past 10,000
    resp = await client.get("/jobs", params={"offset": "999999999", "limit": "1"})
    assert resp.status == 400 and (await resp.json())["field"] == "offset"
    assert (await (await client.get("/jobs", params={"offset": "10000"})).json())["jobs"] == []
    # digits of other scripts, which int() would read ("\u0663" is 3), are not a number here
    for value in ("\u0663", "1\u0660", "\uff11"):
        resp = await client.get("/jobs", params={"limit": value})
        assert resp.status == 400 and (await resp.json())["field"] == "limit", value
    resp = await client.get("/jobs/job_0_nothing")
    assert resp.status == 404 and (await resp.json())["error"] == "Job not found"
    resp = await client.post("/jobs/job_0_nothing/cancel")
    assert resp.status == 404 and (await resp.json())["error"] == "Job not found"


async def test_cancel_running_job(client: Any, comfy_double: StyleDouble) -> None:
    comfy_double.step_delay = 0.2
    accepted = await submit(client, "text2img", {"prompt": "slow", "width": 64, "height": 64, "steps": 50})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (await (await client.get(f"/jobs/{accepted['id']}")).json())["status"] != "processing":
        assert loop.time() < deadline
        await asyncio.sleep(0.05)
    listed = (await (await client.get("/jobs", params={"status": "processing"})).json())["jobs"]
    assert [j["id"] for j in listed] == [accepted["id"]]
    resp = await client.post(f"/jobs/{accepted['id']}/cancel")
    assert resp.status == 200 and await resp.json() == {"success": True}
    job = await wait_job(client, accepted["id"])
    assert job["status"] == "cancelled" and job["result"] is None
    assert comfy_double.interrupts  # the running prompt was really interrupted
    resp = await client.post(f"/jobs/{accepted['id']}/cancel")
    assert resp.status == 409 and await resp.json() == {"success": False, "error": "Job is already cancelled"}


async def test_queue_status(client: Any, comfy_double: StyleDouble) -> None:
    accepted = await submit(client, "text2img", {"prompt": "x", "width": 64, "height": 64, "steps": 2})
    await wait_job(client, accepted["id"])
    comfy_double.fail_class = "VAEDecode"
    failed = await submit(client, "text2img", {"prompt": "x", "width": 64, "height": 64, "steps": 1})
    job = await wait_job(client, failed["id"])
    assert job["status"] == "failed" and "VAEDecode" in job["error"] and job["result"] is None
    resp = await client.get("/queue/status")
    data = await resp.json()
    assert resp.status == 200
    assert set(data) == {"queuedJobs", "processingJobs", "completedJobs", "failedJobs", "cancelledJobs",
                         "averageProcessingTime"}
    assert all(isinstance(v, int) for v in data.values())
    assert (data["queuedJobs"], data["processingJobs"], data["completedJobs"], data["failedJobs"]) == (0, 0, 1, 1)
    assert data["averageProcessingTime"] >= 0


async def test_a_list_is_one_query_whatever_other_apis_stored(client: Any, comfy_double: StyleDouble) -> None:
    # Other dialects' jobs share the store: they were read page by page, 500 at a time, to fill a window.
    from bridge.app import ENGINE

    from bridge.store import Job

    engine = client.server.app[ENGINE]
    ours = []
    for _ in range(3):
        ours.append((await submit(client, "text2img", {"prompt": "x", "width": 64, "height": 64, "steps": 1}))["id"])
        await wait_job(client, ours[-1])
    later = time.time() + 60
    for i in range(600):  # newer than ours: more than a page of another API's jobs to get through
        await engine.store.insert(Job(id=f"theirs-{i}", workflow="txt2img", workflow_version=1, params={},
                                      status="completed", created_at=later + i, meta={"api": "a1111"}),
                                  owner=None, lease=0.0)
    queries: list[dict[str, Any]] = []
    query = engine.store.query

    async def counted(**kw: Any) -> Any:
        queries.append(kw)
        return await query(**kw)

    engine.store.query = counted
    listed = [j["id"] for j in (await (await client.get("/jobs")).json())["jobs"]]
    assert listed == ours[::-1] and len(queries) == 1
    window = (await (await client.get("/jobs", params={"offset": "1", "limit": "1"})).json())["jobs"]
    assert [j["id"] for j in window] == [ours[1]]
    assert (await (await client.get("/jobs", params={"type": "img2img"})).json())["jobs"] == []
    assert len(queries) == 3


async def test_models_lists_what_comfyui_has(client: Any) -> None:
    resp = await client.get("/models")
    data = await resp.json()
    assert resp.status == 200
    models = data["models"]
    assert all(set(m) == {"id", "name", "description", "type", "loaded", "version"} for m in models)
    assert [(m["id"], m["type"]) for m in models] == [
        ("tiny_sd15.safetensors", "base"), ("other.safetensors", "base"),
        ("clip_vision_l.safetensors", "clip_vision"), ("t2i_style.safetensors", "style")]
    assert models[0]["name"] == "tiny_sd15" and models[0]["version"] == "1.5" and models[1]["version"] is None
    assert all(m["loaded"] is True for m in models)


async def test_models_without_backend_is_503(bridge_factory: Any, comfy_double: StyleDouble) -> None:
    c = await bridge_factory(adapters=["jobs_api"])
    await wait_healthy(c)
    await comfy_double.kill()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (resp := await c.get("/models")).status != 503:
        assert loop.time() < deadline
        await asyncio.sleep(0.1)
    assert "No ComfyUI backend" in (await resp.json())["error"]
