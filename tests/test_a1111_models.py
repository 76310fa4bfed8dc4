"""Unit tests of the A1111 adapter's plain parts: sampler resolution, request defaults, errors, infotext, img2img
image/mask steps. No engine, no ComfyUI."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from bridge import samplers as s
from bridge.adapters.a1111 import generation as g
from bridge.adapters.a1111 import imaging
from bridge.adapters.a1111 import models as m

COMFY_SAMPLERS = ["euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive",
                  "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "lcm", "ddim",
                  "uni_pc", "ipndm", "euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2m_sde_heun", "res_multistep"]
COMFY_SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                    "linear_quadratic", "kl_optimal"]


@pytest.mark.parametrize("sampler,scheduler,expected", [
    ("DPM++ 2M Karras", None, ("DPM++ 2M", "Automatic", "dpmpp_2m", "karras")),
    ("DPM++ 2M", "karras", ("DPM++ 2M", "Automatic", "dpmpp_2m", "karras")),
    ("DPM++ 2M", "Karras", ("DPM++ 2M", "Automatic", "dpmpp_2m", "karras")),
    ("DPM++ 2M", "Exponential", ("DPM++ 2M", "Exponential", "dpmpp_2m", "exponential")),
    ("DPM++ 2M SDE Exponential", None, ("DPM++ 2M SDE", "Automatic", "dpmpp_2m_sde", "exponential")),
    ("DPM++ SDE Karras", "automatic", ("DPM++ SDE", "Automatic", "dpmpp_sde", "karras")),
    ("Euler a", "automatic", ("Euler a", "Automatic", "euler_ancestral", "normal")),
    ("Euler a", "Automatic", ("Euler a", "Automatic", "euler_ancestral", "normal")),
    ("Euler", "SGMUniform", ("Euler", "SGM Uniform", "euler", "sgm_uniform")),
    ("Euler", "sgm_uniform", ("Euler", "SGM Uniform", "euler", "sgm_uniform")),
    ("Euler", "no such schedule", ("Euler", "Automatic", "euler", "normal")),
    ("LMS Karras", None, ("LMS", "Karras", "lms", "karras")),
    ("k_euler_a", None, ("Euler a", "Automatic", "euler_ancestral", "normal")),
    ("DDIM", "Karras", ("DDIM", "Karras", "ddim", "ddim_uniform")),
    # A1111 1.10: an unknown sampler silently becomes the first one, DPM++ 2M (Automatic = Karras)
    ("No Such Sampler", None, ("DPM++ 2M", "Automatic", "dpmpp_2m", "karras")),
    (None, None, ("DPM++ 2M", "Automatic", "dpmpp_2m", "karras")),
    # the three A1111 lists that core ComfyUI has no sampler of that name for: documented equivalents
    ("PLMS", None, ("PLMS", "Automatic", "ipndm", "ddim_uniform")),
    ("plms", "Karras", ("PLMS", "Karras", "ipndm", "ddim_uniform")),
    ("DDIM CFG++", None, ("DDIM CFG++", "Automatic", "euler_cfg_pp", "ddim_uniform")),
    ("Restart", None, ("Restart", "Automatic", "heun", "karras")),
])
def test_sampler_resolution_matches_a1111_1_10(sampler, scheduler, expected):
    r = s.resolve(sampler, scheduler, COMFY_SAMPLERS, COMFY_SCHEDULERS, steps=10)
    assert (r.sampler_name, r.scheduler_label, r.comfy_sampler, r.comfy_scheduler) == expected


def test_every_a1111_sampler_runs_as_itself_or_says_what_ran():
    names = [i["name"] for i in s.sampler_items(COMFY_SAMPLERS + ["dpmpp_2m_sde_heun"])]
    assert names == ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
                     "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
                     "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM"]
    for name in names:
        r = s.resolve(name, None, steps=10)
        assert r.sampler_name == name and r.requested == name
    # Restart is A1111's Heun on Karras sigmas below 20 steps; from 20 on its restarts are missing, so the names
    # say what ran (Heun with an explicit Karras schedule, which reproduces it)
    long = s.resolve("Restart", None, steps=20)
    assert (long.sampler_name, long.scheduler_label, long.comfy_sampler, long.comfy_scheduler, long.requested) == (
        "Heun", "Karras", "heun", "karras", "Restart")
    assert s.resolve("Heun", "Karras").comfy_scheduler == long.comfy_scheduler
    # CFG++: A1111 divides the CFG scale by 12.5
    assert s.resolve("DDIM CFG++", None).cfg_factor == pytest.approx(1 / 12.5)


@pytest.mark.parametrize("sampler,eta,options,expected", [
    ("DDIM", None, {}, ("ddim", None)),  # eta_ddim 0
    ("DDIM", 0.0, {}, ("ddim", None)),
    ("DDIM", 1.0, {}, ("euler_ancestral", "Eta DDIM")),  # webuiapi's eta 1.0: DDPM's noise, the ancestral step
    ("DDIM", None, {"eta_ddim": 1.0}, ("euler_ancestral", "Eta DDIM")),
    ("DDIM CFG++", 1.0, {}, ("euler_ancestral_cfg_pp", "Eta DDIM")),
    # A1111 1.10: `p.eta if p.eta is not None else opts.eta_ancestral`; at 0 the ancestral step adds no noise
    ("Euler a", 0.0, {}, ("euler", "Eta")),
    ("Euler a", None, {"eta_ancestral": 0.0}, ("euler", "Eta")),
    ("DPM2 a", 0.0, {}, ("dpm_2", "Eta")),
    ("DPM++ 2M SDE", 0.0, {}, ("dpmpp_2m", "Eta")),  # Kobold Lite's eta 0 with its SDE sampler
    ("DPM++ 2M SDE", None, {}, ("dpmpp_2m_sde", None)),
    ("DPM++ 2M SDE Heun", 0.0, {}, ("res_multistep", "Eta")),
    # ComfyUI runs DPM fast and adaptive at eta 0 only: sent, exactly; from the option (A1111's 1), said in the infotext
    ("DPM fast", 0.0, {}, ("dpm_fast", "Eta")),
    ("DPM adaptive", None, {}, ("dpm_adaptive", "Eta")),
    ("DPM fast", 1.0, {}, ("dpm_fast", "Eta")),  # webuiapi's eta 1.0: the option's value, read as the option
    ("DPM adaptive", 0.5, {"eta_ancestral": 0.5}, ("dpm_adaptive", "Eta")),
    ("Euler a", 1.0, {}, ("euler_ancestral", None)),
    ("Euler a", None, {}, ("euler_ancestral", None)),
    ("Euler", 0.3, {}, ("euler", None)),  # Euler takes no eta
])
def test_eta_runs_where_comfyui_can_run_it(sampler, eta, options, expected):
    r = s.resolve(sampler, None, COMFY_SAMPLERS, COMFY_SCHEDULERS, eta=eta, **options)
    assert (r.comfy_sampler, r.eta_key) == expected


@pytest.mark.parametrize("sampler,eta", [("DDIM", 0.5), ("Euler a", 0.5), ("DPM++ 2M SDE", 0.7),
                                         ("DPM++ SDE", 0.0), ("DPM++ 2S a", 0.0),
                                         ("DPM++ 3M SDE", 0.0), ("DPM fast", 0.7), ("DPM adaptive", 0.5)])
def test_eta_comfyui_cannot_run_is_refused(sampler, eta):
    with pytest.raises(s.EtaError, match="eta"):
        s.resolve(sampler, None, COMFY_SAMPLERS, COMFY_SCHEDULERS, eta=eta)


def test_dpm_fast_at_the_options_eta_runs_without_noise_and_says_so():
    r = s.resolve("DPM fast", None, COMFY_SAMPLERS, COMFY_SCHEDULERS)
    assert (r.comfy_sampler, r.eta, r.eta_key, r.ensd_noise) == ("dpm_fast", 0.0, "Eta", False)


def test_an_eta_zero_twin_the_backend_lacks_is_named():
    live = [x for x in COMFY_SAMPLERS if x != "res_multistep"]
    assert s.resolve("DPM++ 2M SDE Heun", None, live, COMFY_SCHEDULERS, eta=1.0).comfy_sampler == "dpmpp_2m_sde_heun"
    with pytest.raises(s.EtaError, match="res_multistep"):
        s.resolve("DPM++ 2M SDE Heun", None, live, COMFY_SCHEDULERS, eta=0.0)


def test_ensd_applies_to_samplers_whose_step_noise_a1111_reseeds():
    assert s.resolve("Euler a", None).ensd_noise and s.resolve("LCM", None).ensd_noise
    assert not s.resolve("Euler a", None, eta=0.0).ensd_noise  # no noise at eta 0
    assert not s.resolve("DPM++ 2M", None).ensd_noise  # no per-step noise
    assert not s.resolve("DPM++ SDE", None).ensd_noise  # Brownian noise from the image seed alone, in both
    assert s.resolve("DDIM", None, eta=1.0).ensd_noise and not s.resolve("DDIM", None).ensd_noise


def test_sampler_missing_on_backend_falls_back_and_lists_hide_it():
    live = [x for x in COMFY_SAMPLERS if x != "lms"]
    assert s.resolve("LMS", None, live, COMFY_SCHEDULERS).sampler_name == "DPM++ 2M"
    names = [i["name"] for i in s.sampler_items(live)]
    assert "LMS" not in names and names[0] == "DPM++ 2M" and "Euler a" in names
    # Every advertised sampler resolves to itself: a client picking from the list gets what it picked.
    for name in names:
        assert s.resolve(name, None, live, COMFY_SCHEDULERS).sampler_name == name
    sched = s.scheduler_items(["karras", "normal"])
    assert [i["name"] for i in sched] == ["automatic", "uniform", "karras", "normal"]
    assert all(set(i) == {"name", "label", "aliases", "default_rho", "need_inner_model"} for i in sched)


def test_request_defaults_are_a1111s():
    req = m.parse_request(m.Txt2ImgRequest, {})
    assert (req.steps, req.cfg_scale, req.width, req.height, req.seed, req.batch_size, req.n_iter) == \
        (50, 7.0, 512, 512, -1, 1, 1)
    assert req.sampler_name is None and req.sampler_index == "Euler" and req.denoising_strength == 0.75
    gen = g.resolve_generation(req, checkpoint="a.safetensors", live_samplers=COMFY_SAMPLERS,
                               live_schedulers=COMFY_SCHEDULERS, is_img2img=False)
    # No sampler_name: the handler uses sampler_index, whose default is Euler.
    assert gen.sampler.sampler_name == "Euler" and gen.steps == 50
    assert 0 <= gen.seeds[0] < g.MAX_SEED
    img = m.parse_request(m.Img2ImgRequest, {"init_images": ["x"]})
    assert (img.resize_mode, img.mask_blur_x, img.inpainting_fill, img.inpaint_full_res, img.denoising_strength) \
        == (0, 4, 0, True, 0.75)


def test_unknown_fields_ignored_and_parameters_echo_defaults():
    req = m.parse_request(m.Txt2ImgRequest, {"prompt": "cat", "controlnet_units": [1], "firstphase_width": 0})
    echo = m.parameters_echo(req)
    assert "controlnet_units" not in echo
    assert echo["prompt"] == "cat" and echo["steps"] == 50 and echo["sampler_name"] is None
    img = m.parse_request(m.Img2ImgRequest, {"init_images": ["abc"], "mask": "def"})
    assert m.parameters_echo(img)["init_images"] is None and m.parameters_echo(img)["mask"] is None


@pytest.mark.parametrize("body,field", [
    ({"steps": "many"}, "steps"), ({"width": 12.5}, "width"), ({"cfg_scale": "high"}, "cfg_scale"),
    ({"prompt": {"a": 1}}, "prompt"), ({"override_settings": [1]}, "override_settings"),
])
def test_bad_types_give_a1111_422_naming_the_field(body, field):
    with pytest.raises(m.A1111Error) as info:
        m.parse_request(m.Txt2ImgRequest, body)
    err = info.value
    assert err.status == 422
    out = err.to_json()
    assert set(out) == {"error", "detail", "body", "errors"}
    assert out["detail"][0]["loc"] == ["body", field] and field in out["errors"]


def test_floats_in_int_fields_are_cut_toward_zero_as_pydantic_v1_does():
    # pydantic v2 refused 20.7 ("must be an integer") and read 1e19 as past 2^63-1, while integer 10^19 was taken
    req = m.parse_request(m.Txt2ImgRequest, {"steps": 20.7, "width": 600.9, "seed": 1e19, "subseed": -0.5})
    assert (req.steps, req.width, req.seed, req.subseed) == (20, 600, 10**19, 0)
    assert all(type(v) is int for v in (req.steps, req.width, req.seed, req.subseed))
    for value in ("NaN", "Infinity"):  # Python's json reads these as floats; int() of them is no number
        with pytest.raises(m.A1111Error) as info:
            m.parse_request(m.Txt2ImgRequest, json.loads(f'{{"steps": {value}}}'))
        assert info.value.status == 422 and info.value.to_json()["detail"][0]["loc"] == ["body", "steps"]


def test_a_servers_size_limit_bounds_the_legacy_first_pass_too():
    model = m.limited(m.Txt2ImgRequest, 100, 1024)
    assert m.parse_request(model, {"firstphase_width": 1024, "width": 1024}).firstphase_width == 1024
    for field in ("width", "firstphase_width"):
        with pytest.raises(m.A1111Error) as info:
            m.parse_request(model, {field: 1025})
        assert info.value.status == 422 and info.value.errors.startswith(f"{field}: ") and "1024" in info.value.errors
    assert "firstphase_width" not in m.limited(m.Img2ImgRequest, 100, 1024).model_fields  # txt2img's alone


def test_body_must_be_an_object():
    with pytest.raises(m.A1111Error) as info:
        m.parse_request(m.Txt2ImgRequest, [1, 2])
    assert info.value.status == 422
    with pytest.raises(m.A1111Error) as info:
        m.parse_json_body(b"{not json")
    assert info.value.status == 422 and "JSON" in info.value.errors


@pytest.mark.parametrize("body,field", [
    ({"steps": 0}, "steps"), ({"steps": 100000}, "steps"), ({"width": 32}, "width"), ({"height": 99999}, "height"),
    ({"batch_size": 0}, "batch_size"), ({"n_iter": -1}, "n_iter"), ({"cfg_scale": 99}, "cfg_scale"),
    ({"seed": -5}, "seed"), ({"denoising_strength": 2}, "denoising_strength"),
])
def test_out_of_range_values_give_a1111_422_naming_the_field(body, field):
    with pytest.raises(m.A1111Error) as info:
        m.parse_request(m.Txt2ImgRequest, body)
    out = info.value.to_json()
    assert info.value.status == 422 and out["detail"][0]["loc"] == ["body", field]
    assert out["errors"].startswith(field) and out["detail"][0]["type"].startswith("value_error")


def test_the_server_limits_are_part_of_the_model():
    small = m.limited(m.Txt2ImgRequest, 20, 512)
    assert small.__name__ == m.Txt2ImgRequest.__name__
    assert small.model_validate({"steps": 20, "width": 512}).steps == 20
    with pytest.raises(m.A1111Error) as info:
        m.parse_request(small, {"steps": 21})
    assert info.value.to_json()["detail"][0]["msg"] == "ensure this value is less than or equal to 20"
    assert m.limited(m.Txt2ImgRequest, m.MAX_STEPS, m.MAX_SIZE) is m.Txt2ImgRequest


def test_more_images_than_a_request_may_make_names_batch_size():
    req = m.parse_request(m.Txt2ImgRequest, {"batch_size": 10, "n_iter": 10})
    with pytest.raises(m.A1111Error) as info:
        g.resolve_generation(req, checkpoint=None, live_samplers=None, live_schedulers=None, is_img2img=False)
    assert info.value.status == 400 and info.value.errors.startswith("batch_size")


def test_scripts_are_refused_like_a1111():
    req = m.parse_request(m.Txt2ImgRequest, {"script_name": "x/y/z plot"})
    with pytest.raises(m.A1111Error) as info:
        g.resolve_generation(req, checkpoint=None, live_samplers=None, live_schedulers=None, is_img2img=False)
    assert info.value.status == 422 and info.value.detail == "Script 'x/y/z plot' not found"


def test_seeds_numbered_like_a1111_and_infotext_format():
    req = m.parse_request(m.Txt2ImgRequest, {"prompt": "a cat, red", "negative_prompt": "blurry", "seed": 100,
                                             "batch_size": 2, "n_iter": 2, "steps": 20,
                                             "sampler_name": "DPM++ 2M", "scheduler": "Exponential"})
    gen = g.resolve_generation(req, checkpoint="sub/tiny.safetensors", live_samplers=COMFY_SAMPLERS,
                               live_schedulers=COMFY_SCHEDULERS, is_img2img=False)
    assert gen.seeds == [100, 101, 102, 103]
    text = g.infotext(gen, 2)
    lines = text.split("\n")
    assert lines[0] == "a cat, red" and lines[1] == "Negative prompt: blurry"
    fields = dict(part.split(": ", 1) for part in lines[2].split(", "))
    assert fields["Steps"] == "20" and fields["Sampler"] == "DPM++ 2M" and fields["Schedule type"] == "Exponential"
    assert fields["Seed"] == "102" and fields["Size"] == "512x512" and fields["Model"] == "sub_tiny"
    info = g.info(gen, [0, 1, 2, 3])
    assert info["seed"] == 100 and info["all_seeds"] == [100, 101, 102, 103]
    assert info["all_prompts"] == ["a cat, red"] * 4 and len(info["infotexts"]) == 4
    assert {"prompt", "negative_prompt", "sampler_name", "cfg_scale", "steps", "width", "height", "job_timestamp",
            "all_negative_prompts", "index_of_first_image", "extra_generation_params"} <= set(info)
    json.dumps(info)


def test_prompt_list_gives_one_prompt_per_image():
    req = m.parse_request(m.Txt2ImgRequest, {"prompt": ["a", "b"], "batch_size": 2, "seed": 5})
    gen = g.resolve_generation(req, checkpoint=None, live_samplers=None, live_schedulers=None, is_img2img=False)
    assert gen.prompts == ["a", "b"]


def test_png_infotext_chunk_round_trips():
    im = Image.new("RGB", (8, 8), (10, 20, 30))
    import io
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    out = g.png_with_infotext(buf.getvalue(), "cat\nSteps: 2, Seed: 3")
    with Image.open(io.BytesIO(out)) as back:
        assert back.info["parameters"] == "cat\nSteps: 2, Seed: 3"
        assert np.array_equal(np.asarray(back), np.asarray(im))


def test_decode_image_accepts_raw_and_data_url_and_names_bad_field():
    import base64
    import io
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buf, format="PNG")
    raw = base64.b64encode(buf.getvalue()).decode()
    assert imaging.decode_image(raw, "init_images[0]").size == (4, 4)
    assert imaging.decode_image("data:image/png;base64," + raw, "init_images[0]").size == (4, 4)
    with pytest.raises(m.A1111Error) as info:
        imaging.decode_image("not an image", "init_images[1]")
    assert info.value.detail == "Invalid encoded image" and "init_images[1]" in info.value.errors


def _rng_image(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_resize_modes_against_independent_computation():
    im = _rng_image(100, 50)
    assert imaging.resize_image(0, im, 64, 64).size == (64, 64)
    # crop and resize: scale to cover (128x64), centre crop 64x64 -> equals Pillow's ImageOps.fit
    from PIL import ImageOps
    cropped = np.asarray(imaging.resize_image(1, im, 64, 64)).astype(int)
    ref = np.asarray(ImageOps.fit(im, (64, 64), Image.LANCZOS, centering=(0.5, 0.5))).astype(int)
    assert np.abs(cropped - ref).mean() < 3
    # resize and fill: the picture sits in the middle, the bands repeat its edge rows
    filled = np.asarray(imaging.resize_image(2, im, 64, 64))
    inner = np.asarray(im.resize((64, 32), Image.LANCZOS))
    assert np.array_equal(filled[16:48], inner)
    assert np.abs(filled[0].astype(int) - inner[0].astype(int)).mean() < 8
    assert np.abs(filled[63].astype(int) - inner[31].astype(int)).mean() < 8


def test_mask_blur_matches_opencv_separable_gaussian():
    mask = Image.new("L", (40, 30))
    mask.paste(255, (10, 10, 30, 20))
    out = np.asarray(imaging.blur_mask(mask, 4, 2))
    ref = cv2.GaussianBlur(np.asarray(mask), (21, 1), 4)
    ref = cv2.GaussianBlur(ref, (1, 11), 2)
    assert np.array_equal(out, ref)


def test_binary_mask_uses_alpha_of_transparent_masks_and_luminance_otherwise():
    rgba = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 0, 255))
    assert list(imaging.binary_mask(rgba).getdata()) == [0, 255, 0, 0]
    grey = Image.new("L", (3, 1))
    grey.putdata([0, 128, 200])
    assert list(imaging.binary_mask(grey).getdata()) == [0, 0, 255]
    assert list(imaging.binary_mask(grey, round_mask=False).getdata()) == [0, 128, 200]


def test_only_masked_inpaint_crops_pastes_back_and_keeps_the_rest():
    src = _rng_image(120, 80, seed=1)
    mask = Image.new("L", (120, 80))
    mask.paste(255, (50, 30, 70, 50))
    plan = imaging.plan_img2img(src, mask, width=64, height=64, resize_mode=0, mask_blur_x=0, mask_blur_y=0,
                          mask_round=True, invert=False, fill=1, full_res=True, padding=4)
    assert plan.image.size == (64, 64) and plan.mask.size == (64, 64)
    x, y, w, h = plan.paste
    assert w == h and x <= 46 and y <= 26 and x + w >= 74 and y + h >= 54  # padded box, square like 64x64
    green = Image.new("RGB", (64, 64), (0, 255, 0))
    out = np.asarray(imaging.finish_img2img(green, plan))
    assert out.shape == (80, 120, 3)
    assert np.array_equal(out[:20], np.asarray(src)[:20])  # far from the mask: the original, bit for bit
    assert tuple(out[40, 60]) == (0, 255, 0)  # inside the mask: the generated pixels


def test_inverted_whole_picture_inpaint_repaints_outside():
    src = _rng_image(64, 64, seed=2)
    mask = Image.new("L", (64, 64))
    mask.paste(255, (16, 16, 48, 48))
    plan = imaging.plan_img2img(src, mask, width=64, height=64, resize_mode=0, mask_blur_x=0, mask_blur_y=0,
                          mask_round=True, invert=True, fill=0, full_res=False, padding=0)
    assert plan.paste is None
    # inpainting_fill=0 ("fill") replaced the area to repaint with colour from the kept area before generation
    assert not np.array_equal(np.asarray(plan.image)[2, 2], np.asarray(src)[2, 2])
    out = np.asarray(imaging.finish_img2img(Image.new("RGB", (64, 64), (0, 0, 255)), plan))
    assert np.array_equal(out[20:44, 20:44], np.asarray(src)[20:44, 20:44])
    assert tuple(out[2, 2]) == (0, 0, 255)


def test_mask_bbox_grows_the_masked_area_to_the_target_aspect_inside_the_image() -> None:
    import random

    from PIL import Image as _Image

    from bridge.adapters.a1111.imaging import mask_bbox

    rng = random.Random(7)
    for _ in range(300):
        w, h = rng.randint(16, 200), rng.randint(16, 200)
        tw, th = rng.choice([(64, 64), (128, 64), (64, 128), (96, 80)])
        x1, y1 = rng.randint(0, w - 2), rng.randint(0, h - 2)
        x2, y2 = rng.randint(x1 + 1, w), rng.randint(y1 + 1, h)
        pad = rng.randint(0, 16)
        mask = _Image.new("L", (w, h), 0)
        mask.paste(255, (x1, y1, x2, y2))
        bx1, by1, bx2, by2 = mask_bbox(mask, pad, tw, th)
        # inside the image, and holding the padded masked area
        assert 0 <= bx1 < bx2 <= w and 0 <= by1 < by2 <= h
        assert bx1 <= max(x1 - pad, 0) and by1 <= max(y1 - pad, 0)
        assert bx2 >= min(x2 + pad, w) and by2 >= min(y2 + pad, h)
        # grown to the target aspect unless the image is too small on the grown axis (int() truncates by < 1 px)
        bw, bh = bx2 - bx1, by2 - by1
        if bw / bh < tw / th and bw < w:
            assert abs(bw - bh * tw / th) < 1.0 + 1e-9
        if bw / bh > tw / th and bh < h:
            assert abs(bh - bw * th / tw) < 1.0 + 1e-9
    assert mask_bbox(_Image.new("L", (32, 32), 0), 4, 64, 64) is None
