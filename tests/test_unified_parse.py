"""/generate request parsing, planning and error mapping, without ComfyUI (a scripted engine stands in for the
job engine's API; the real chain is in test_unified_generate.py)."""
from __future__ import annotations

import asyncio
import base64
import io
import random
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from bridge import images as image_io
from bridge.adapters import unified
from bridge.adapters.unified import UnifiedSettings, parse_request, plan_axera, plan_sd15
from bridge.app import create_app
from bridge.config import load_settings
from bridge.errors import BackendUnavailable, InvalidParameter, QueueFull



def parse(body: Any, **kw: Any) -> unified.GenerateRequest:
    return parse_request(body, rng=random.Random(0), **kw)


def test_defaults_and_random_seed():
    req = parse({"prompt": "a cat"})
    assert req.mode == "txt2img" and req.count == 1 and req.strength == 0.5
    assert 0 <= req.seed <= 2**32 - 1
    assert parse({"prompt": "a cat", "seed": -1}).seed == random.Random(0).randint(0, 2**32 - 1)
    assert parse({"prompt": "a cat", "seed": "42"}).seed == 42
    assert parse({"prompt": "x", "init_image": "AAAA"}).mode == "img2img"


def test_aliases_and_resize_modes():
    req = parse({"mode": "img2img", "prompt": "x", "init_images": ["QUJD"], "strength": 0.3, "resize_mode": "crop"})
    assert req.init_image == "QUJD" and req.strength == 0.3 and req.resize_mode == 1
    req = parse({"mode": "img2img", "prompt": "x", "init_image": "A", "denoising_strength": 0.9, "strength": 0.1,
                 "resize_mode": 2})
    assert req.strength == 0.9 and req.resize_mode == 2  # denoising_strength wins over its alias
    assert parse({"prompt": "x", "resize_mode": "resize and fill"}).resize_mode == 2


@pytest.mark.parametrize("body,field", [
    ([], "body"),
    ({}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": "x", "mode": "inpaint"}, "mode"),
    ({"prompt": "x", "mode": "img2img"}, "init_image"),
    ({"prompt": "x", "seed": -2}, "seed"),
    ({"prompt": "x", "seed": 2**64}, "seed"),
    ({"prompt": "x", "seed": True}, "seed"),
    ({"prompt": "x", "seed": 1.5}, "seed"),
    ({"prompt": "x", "width": "wide"}, "width"),
    ({"prompt": "x", "steps": 0}, "steps"),
    ({"prompt": "x", "cfg_scale": "nan"}, "cfg_scale"),
    ({"prompt": "x", "denoising_strength": 1.5}, "denoising_strength"),
    ({"prompt": "x", "resize_mode": 3}, "resize_mode"),
    ({"prompt": "x", "resize_mode": True}, "resize_mode"),  # was taken as 1 (crop): Python's True == 1
    ({"prompt": "x", "resize_mode": False}, "resize_mode"),
    ({"prompt": "x", "negative_prompt": 3}, "negative_prompt"),
    ({"prompt": "x", "n_iter": 4, "batch_size": 5}, "batch_size"),
])
def test_bad_fields_are_named(body, field):
    with pytest.raises(InvalidParameter) as info:
        parse(body)
    assert info.value.field == field and field in info.value.message


def test_axera_plan_reports_what_it_cannot_honour():
    s = UnifiedSettings()
    req = parse({"prompt": "x", "seed": 3, "steps": 7, "cfg_scale": 1.5, "sampler_name": "Euler a",
                 "negative_prompt": "blurry", "n_iter": 2, "batch_size": 2})
    plan = plan_axera(req, s)
    assert plan.jobs == [("axera_txt2img", {"prompt": "x", "runtime": "auto", "postprocess": "none",
                                            "pixel_size": 8, "seed": 3, "batch_size": 4})]
    assert plan.seeds == [3, 4, 5, 6] and plan.steps == 4
    assert [n["field"] for n in plan.unsupported] == ["steps", "cfg_scale", "sampler_name", "negative_prompt"]
    quiet = plan_axera(parse({"prompt": "x", "steps": 4, "cfg_scale": 1, "sampler_name": "LCM"}), s)
    assert quiet.unsupported == []


@pytest.mark.parametrize("strength,steps", [(0.0, 1), (0.35, 1), (0.5, 2), (0.6, 2), (0.85, 3), (0.86, 4)])
def test_axera_img2img_steps_follow_strength(strength, steps):
    req = parse({"mode": "img2img", "prompt": "x", "init_image": "A", "seed": 2**64 - 1, "batch_size": 2,
                 "denoising_strength": strength, "resize_mode": 2})
    plan = plan_axera(req, UnifiedSettings(axera_model_dir="/m"))
    assert plan.steps == steps
    assert [p["seed"] for _, p in plan.jobs] == [2**64 - 1, 0]  # one job per image, seeds wrap like the node's
    assert all(p["resize_mode"] == "pad" and p["model_dir"] == "/m" and p["denoise"] == strength
               for _, p in plan.jobs)


def test_sd15_plan_maps_a1111_names():
    s = UnifiedSettings(backend="sd15", sd15_checkpoint="tiny.safetensors", postprocess="pixelate")
    req = parse({"mode": "img2img", "prompt": "x", "init_image": "A", "width": 515, "height": 512, "steps": 7,
                 "cfg_scale": 1.5, "sampler_name": "DPM++ 2M Karras", "seed": 1, "resize_mode": 1})
    plan = plan_sd15(req, s, ["euler", "dpmpp_2m"], ["normal", "karras"])
    workflow, params = plan.jobs[0]
    assert workflow == "img2img"
    assert params["sampler"] == "dpmpp_2m" and params["scheduler"] == "karras" and params["cfg"] == 1.5
    assert params["width"] == 512 and params["resize_mode"] == "crop and resize"
    assert params["checkpoint"] == "tiny.safetensors" and params["denoise"] == 0.5
    assert {n["field"] for n in plan.unsupported} == {"width", "postprocess"}
    unknown = plan_sd15(parse({"prompt": "x", "sampler_name": "Nope"}), UnifiedSettings(backend="sd15"),
                        ["euler", "dpmpp_2m"], ["normal", "karras"])
    assert unknown.unsupported[0]["field"] == "sampler_name" and unknown.unsupported[0]["used"] == "DPM++ 2M"


def test_sd15_plan_runs_a1111_samplers_as_their_documented_equivalents():
    live = ["euler", "euler_ancestral", "dpmpp_2m", "ddim", "euler_cfg_pp", "ipndm", "heun"]
    schedulers = ["normal", "karras", "ddim_uniform", "simple"]
    cfgpp = plan_sd15(parse({"prompt": "x", "sampler_name": "DDIM CFG++", "cfg_scale": 6.25}),
                      UnifiedSettings(backend="sd15"), live, schedulers)
    _, params = cfgpp.jobs[0]
    # ComfyUI's CFG++ samplers take A1111's guidance scale divided by 12.5
    assert params["sampler"] == "euler_cfg_pp" and params["cfg"] == 0.5 and cfgpp.sampler == "DDIM CFG++"
    default_cfg = plan_sd15(parse({"prompt": "x", "sampler_name": "DDIM CFG++"}), UnifiedSettings(backend="sd15"),
                            live, schedulers)
    assert default_cfg.jobs[0][1]["cfg"] == 0.56  # the workflow's 7.0, divided too
    plms = plan_sd15(parse({"prompt": "x", "sampler_name": "PLMS"}), UnifiedSettings(backend="sd15"), live,
                     schedulers)
    assert (plms.jobs[0][1]["sampler"], plms.jobs[0][1]["scheduler"]) == ("ipndm", "ddim_uniform")


def test_loras_reach_every_sd15_job_and_are_noted_on_axera():
    loras = [{"name": "pixel_style", "strength": 0.7}]
    req = parse({"prompt": "x", "batch_size": 2, "loras": loras})
    assert req.loras == loras
    plan = plan_sd15(req, UnifiedSettings(backend="sd15"), None, None)
    assert [p["loras"] for _, p in plan.jobs] == [loras, loras]
    assert "loras" not in plan_sd15(parse({"prompt": "x"}), UnifiedSettings(), None, None).jobs[0][1]
    noted = plan_axera(req, UnifiedSettings())
    assert [n["field"] for n in noted.unsupported] == ["loras"] and "loras" not in noted.jobs[0][1]
    with pytest.raises(InvalidParameter) as info:
        parse({"prompt": "x", "loras": [{"strength": 1}]})
    assert info.value.field.startswith("loras")


def test_sd15_plan_one_job_per_image_and_default_sampler_in_a1111_naming():
    s = UnifiedSettings(backend="sd15")
    plan = plan_sd15(parse({"prompt": "x", "seed": 99, "batch_size": 2, "n_iter": 2}), s, ["euler"], ["normal"],
                     default_sampler="euler")
    # ComfyUI draws one batch of noise from one seed: only one job per image makes seed + i reproduce image i
    assert plan.seeds == [99, 100, 101, 102]
    assert [p["seed"] for _, p in plan.jobs] == plan.seeds and all(p["batch_size"] == 1 for _, p in plan.jobs)
    assert plan.sampler == "Euler" and "sampler" not in plan.jobs[0][1]  # the workflow's default runs
    wrap = plan_sd15(parse({"prompt": "x", "seed": 2**64 - 1, "batch_size": 2}), s, None, None)
    assert wrap.seeds == [2**64 - 1, 0] and wrap.sampler is None
    assert unified.a1111_sampler_name("dpmpp_2m") == "DPM++ 2M" and unified.a1111_sampler_name("odd") == "odd"


# ------------------------------------------------------------------------------------------ HTTP, scripted engine


def _png(color=(10, 20, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


class ScriptedEngine:
    """The job-engine calls /generate makes, answering as scripted."""

    def __init__(self, behaviour: str):
        self.behaviour = behaviour
        self.submitted: list[tuple[str, dict]] = []
        self.cancelled: list[str] = []
        self.workflows = {"axera_txt2img": None, "axera_img2img": None}
        self.stopping = asyncio.Event()

    async def start(self):
        pass

    async def stop(self):
        pass

    async def subscribe(self, job_id=None):
        await asyncio.Event().wait()
        yield {}

    max_image_bytes = image_io.DEFAULT_MAX_BYTES
    max_image_pixels = image_io.DEFAULT_MAX_PIXELS

    async def fetch_image(self, value, field):
        return value

    async def request_cost(self, jobs):
        self.costed = list(jobs)

    async def check_room(self):
        if self.behaviour == "queue_full":
            raise QueueFull(7.2)

    async def submit(self, workflow, params, meta=None, **kwargs):
        if self.behaviour == "queue_full":
            raise QueueFull(7.2)
        if self.behaviour == "no_backend":
            raise BackendUnavailable("no ComfyUI backend is healthy")
        if self.behaviour == "bad_image":
            raise InvalidParameter("image", "image: not a PNG, JPEG or WebP image")
        self.submitted.append((workflow, params))
        return SimpleNamespace(id=f"job{len(self.submitted)}", meta=dict(meta or {}))

    async def wait(self, job_id, timeout=None):
        if self.behaviour == "slow":
            await asyncio.wait_for(asyncio.Event().wait(), timeout)  # as the engine: TimeoutError
        status = "failed" if self.behaviour == "fail" else "completed"
        timings = [{"seed": 11, "text_encoder_ms": 2.0, "total_ms": 30.0}]
        return SimpleNamespace(id=job_id, status=status, error="PixartAxeraTxt2Img (node 2) failed: boom",
                               outputs={"images": ["a.png"], "timings": timings}, started_at=1.0, finished_at=2.0)

    async def read_output(self, job, name, index):
        return _png()

    async def backend_json(self, path, params=None, *, missing_ok=False, refused_ok=False):
        assert path == "/pixart/axera"
        return {"model_dir": "/models/axera", "found": True, "img2img": True, "runtime": "onnxruntime",
                "reason": "model set found in /models/axera"}

    async def cancel(self, job_id):
        self.cancelled.append(job_id)
        return True


async def _client(aiohttp_client, tmp_path, behaviour, **overrides):
    settings = load_settings({"data_dir": tmp_path / "d", "comfyui_urls": ["http://127.0.0.1:9"]},
                             overrides=overrides, env_file=None)
    engine = ScriptedEngine(behaviour)
    client = await aiohttp_client(create_app(settings, engine=engine, adapter_names=["unified"]))
    return client, engine


@pytest.mark.asyncio
async def test_ok_answer_fills_every_image_field(aiohttp_client, tmp_path):
    client, engine = await _client(aiohttp_client, tmp_path, "ok")
    resp = await client.post("/generate", json={"prompt": "x", "seed": 11, "width": 512})
    data = await resp.json()
    assert resp.status == 200
    assert data["images"] == [data["image"]] and data["image"] == data["base64"]
    assert base64.b64decode(data["base64"]) == _png()
    assert data["text_time_ms"] == 2.0 and data["total_time_ms"] == 30.0 and data["seed"] == 11
    assert data["unsupported"] == [{"field": "width", "requested": 512, "used": 8,
                                    "reason": "the NPU build has a fixed 8x8 size"}]
    opts = await (await client.get("/generate/options")).json()
    assert opts["fields"]["width"]["fixed"] == 8  # learnt from the run


@pytest.mark.asyncio
@pytest.mark.parametrize("behaviour,status,needle", [
    ("queue_full", 503, "queue is full"),
    ("no_backend", 503, "no ComfyUI backend"),
    ("fail", 500, "boom"),
    ("slow", 504, "UNIFIED_TIMEOUT"),
])
async def test_failures_map_to_status(aiohttp_client, tmp_path, behaviour, status, needle):
    client, engine = await _client(aiohttp_client, tmp_path, behaviour, UNIFIED_TIMEOUT="0.2")
    resp = await client.post("/generate", json={"prompt": "x"})
    data = await resp.json()
    assert resp.status == status and data["status"] == "error" and needle in data["error"]
    if behaviour == "queue_full":
        assert resp.headers["Retry-After"] == "7"
    if behaviour == "slow":
        assert engine.cancelled == ["job1"]  # nobody waits for it any more


@pytest.mark.asyncio
async def test_engine_field_names_are_translated(aiohttp_client, tmp_path):
    client, _ = await _client(aiohttp_client, tmp_path, "bad_image")
    png = base64.b64encode(_png()).decode()  # decoded by the adapter; the engine refuses it (a workflow's bound)
    for sent, field in ({"init_image": png}, "init_image"), ({"init_images": [png]}, "init_images[0]"):
        resp = await client.post("/generate", json={"mode": "img2img", "prompt": "x", **sent})
        data = await resp.json()
        assert resp.status == 400 and data["field"] == field and data["error"].startswith(field + ":"), data


@pytest.mark.asyncio
async def test_invalid_json_and_routes(aiohttp_client, tmp_path):
    client, _ = await _client(aiohttp_client, tmp_path, "ok")
    resp = await client.post("/generate", data=b"{not json")
    assert resp.status == 400 and (await resp.json())["field"] == "body"
    # only the two exact paths: /generate/text2img etc. belong to the job API
    paths = {r.resource.canonical for r in client.app.router.routes() if r.resource.canonical.startswith("/generate")}
    assert paths == {"/generate", "/generate/options"}


@pytest.mark.asyncio
async def test_an_axera_query_the_pack_refuses_finds_no_model_set_and_sd15_runs():
    # the pack answers 400 for a model_dir no Axera workflow takes (e.g. absolute, where no Axera workflow is
    # loaded to check the setting at start): that is "no model set", not a backend that does not answer
    from bridge.adapters import unified

    class Engine:
        async def backend_json(self, path, params=None, *, missing_ok=False, refused_ok=False):
            assert refused_ok, "a 400 would be a BackendError: every /generate a 503"
            return {"error": "model_dir: must name a sub-folder of the Axera model folders"}

        async def choices(self, ref):
            return ["sd15.safetensors"]

    s = unified.UnifiedSettings(backend="auto", axera_model_dir="/abs/models")
    choice = await unified.choose_backend(Engine(), s)
    assert choice.name == "sd15" and choice.error is None and "must name a sub-folder" in choice.reason
