"""A1111's X/Y/Z plot against hostile bodies, over the protocol double: the grid's size is checked before any job
runs (A1111's `img_max_size_mp`, each cell at the size it comes back), the init image and mask of an img2img plot
are decoded and planned once for all cells, a grid that passes the check is answered whatever Pillow's
decompression-bomb limit, and axis texts are bounded (a CSV field past the csv module's limit was a 500)."""
from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image, ImageDraw

from bridge.adapters.a1111 import imaging, xyz
from tests.support.imaging import b64, encode

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def client(bridge_factory):
    return await bridge_factory(adapters=["a1111"])


def header(text: str) -> tuple[str | None, tuple[int, int]]:
    """An answer image's format and size, read from its header (no pixels, so no decompression-bomb check)."""
    with Image.open(io.BytesIO(base64.b64decode(text))) as im:
        return im.format, im.size


def args(x_type: int, x_values: str, *more: Any) -> list[Any]:
    return [x_type, x_values, [], *more]


async def post(client, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await client.post(path, json={"prompt": "a fox", "steps": 1, "script_name": "x/y/z plot", **body})
    return resp.status, await resp.json()


SEED, SIZE, PROMPT_SR = 1, 41, 7  # txt2img axis indices (Seed and Prompt S/R are the same for img2img)
IMG2IMG_SIZE = 40


# ---------------------------------------------------------------------------------------------------------------
# The grid's size, before anything runs


async def test_a_grid_too_large_is_refused_before_any_job_runs(client, comfy_double):
    # 48 cells of 2048x2048: 201 MPixels. All of them ran, then the grid was a 500 (DecompressionBombError).
    status, body = await post(client, "/sdapi/v1/txt2img", {"width": 2048, "height": 2048,
                                                            "script_args": args(SEED, "1-48")})
    assert status == 400, body
    assert body["errors"] == ("script_args: Error: Resulting grid would be too large (201 MPixels) (max configured "
                              "size is 200 MPixels)")
    assert comfy_double.prompts == []


async def test_the_option_may_lower_the_limit_but_not_lift_it(client, comfy_double):
    # 4 cells of 512x512 are 1.05 MPixels: A1111 rounds it to 1, which is not below a limit of 1
    body = {"width": 512, "height": 512, "script_args": args(SEED, "1-4")}
    status, answer = await post(client, "/sdapi/v1/txt2img", {**body, "override_settings": {"img_max_size_mp": 1}})
    assert status == 400 and answer["errors"].endswith("(1 MPixels) (max configured size is 1 MPixels)"), answer
    assert comfy_double.prompts == []
    # any client may set options: a larger value does not lift the bound
    assert (await client.post("/sdapi/v1/options", json={"img_max_size_mp": 100000})).status == 200
    status, answer = await post(client, "/sdapi/v1/txt2img", {"width": 2048, "height": 2048,
                                                              "script_args": args(SEED, "1-48")})
    assert status == 400 and "(max configured size is 200 MPixels)" in answer["errors"], answer
    assert comfy_double.prompts == []


async def test_hires_fix_counts_at_the_size_it_comes_back(client, comfy_double):
    # 2 cells of 1024x1024 upscaled twice: 2.1 MPixels generated first, 8.4 come back
    status, body = await post(client, "/sdapi/v1/txt2img", {
        "width": 1024, "height": 1024, "enable_hr": True, "hr_scale": 2, "override_settings": {"img_max_size_mp": 5},
        "script_args": args(SEED, "1-2")})
    assert status == 400 and "(8 MPixels) (max configured size is 5 MPixels)" in body["errors"], body
    assert comfy_double.prompts == []


async def test_an_inpainted_cell_counts_at_the_init_images_size(client, comfy_double):
    # "only masked" pastes each 64x64 result back into the 1024x1024 picture: 4 cells come back as 4.2 MPixels
    mask = Image.new("L", (1024, 1024))
    ImageDraw.Draw(mask).rectangle((100, 100, 300, 300), fill=255)
    status, body = await post(client, "/sdapi/v1/img2img", {
        "init_images": [b64(encode(Image.new("RGB", (1024, 1024), (200, 30, 30))))], "mask": b64(encode(mask)),
        "width": 64, "height": 64, "override_settings": {"img_max_size_mp": 4}, "script_args": args(SEED, "1-4")})
    assert status == 400 and "(4 MPixels) (max configured size is 4 MPixels)" in body["errors"], body
    assert comfy_double.prompts == []


async def test_an_img2img_plot_decodes_and_plans_its_pictures_once(client, comfy_double, monkeypatch):
    # each cell decoded and planned the init image and mask again, and held its plan to the end: 230 MiB a cell
    # for a 4096x4096 picture. Now only a Size axis makes new plans (one per size).
    decoded, planned = [], []
    decode, plan = imaging.decode_image, imaging.plan_img2img

    def counting_decode(data, field, **kw):
        decoded.append(field)
        return decode(data, field, **kw)

    def counting_plan(init, mask, **kw):
        planned.append((kw["width"], kw["height"]))
        return plan(init, mask, **kw)

    monkeypatch.setattr(imaging, "decode_image", counting_decode)
    monkeypatch.setattr(imaging, "plan_img2img", counting_plan)
    mask = Image.new("L", (96, 96))
    ImageDraw.Draw(mask).rectangle((20, 20, 60, 60), fill=255)
    status, body = await post(client, "/sdapi/v1/img2img", {
        "init_images": [b64(encode(Image.new("RGB", (96, 96), (200, 30, 30))))], "mask": b64(encode(mask)),
        "width": 64, "height": 64, "script_args": args(SEED, "1-3", IMG2IMG_SIZE, "64x64,128x128", [])})
    assert status == 200, body
    assert len(comfy_double.prompts) == 6 and len(body["images"]) == 1
    assert sorted(decoded) == ["init_images[0]", "mask"]
    assert planned == [(64, 64), (128, 128)]
    seeds = json.loads(body["info"])["all_seeds"]
    assert seeds == [1, 2, 3, 1, 2, 3]


async def test_new_plans_stop_at_the_limit(client, comfy_double, monkeypatch):
    # a Size axis makes a plan per size, each holding an overlay of the init picture's size: the check runs again
    # after each, so that a plot past the limit is refused before all are made
    planned = []
    plan = imaging.plan_img2img
    monkeypatch.setattr(imaging, "plan_img2img", lambda init, mask, **kw: planned.append(kw["width"]) or
                        plan(init, mask, **kw))
    mask = Image.new("L", (1024, 1024))
    ImageDraw.Draw(mask).rectangle((100, 100, 300, 300), fill=255)
    status, body = await post(client, "/sdapi/v1/img2img", {
        "init_images": [b64(encode(Image.new("RGB", (1024, 1024), (200, 30, 30))))], "mask": b64(encode(mask)),
        "override_settings": {"img_max_size_mp": 3},
        "script_args": args(IMG2IMG_SIZE, "64x64,72x72,80x80,88x88,96x96,104x104")})
    assert status == 400 and "(max configured size is 3 MPixels)" in body["errors"], body
    assert planned == [64, 72, 80] and comfy_double.prompts == []


# ---------------------------------------------------------------------------------------------------------------
# A grid that passes is answered


async def test_a_grid_above_pillows_limit_is_answered(client, comfy_double, monkeypatch):
    # A grid below A1111's 200 MPixels can be above Pillow's 179 (44 cells of 2048x2048 are 185): it was made, then
    # re-opened through Image.open's check, a 500 after every job had run. Pillow's limit is lowered here so that
    # a small grid shows the same.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60_000)
    status, body = await post(client, "/sdapi/v1/txt2img", {"width": 192, "height": 192,
                                                            "script_args": args(SEED, "1-4")})
    assert status == 200, body
    monkeypatch.undo()
    fmt, (w, h) = header(body["images"][0])
    assert fmt == "PNG" and w >= 4 * 192 and h >= 192 and w * h > 2 * 60_000


async def test_a_grid_too_wide_for_webp_comes_back_as_png(client, comfy_double):
    # WebP holds at most 16,383 pixels a side: eight cells 2048 wide were a 500 after the jobs ran
    status, body = await post(client, "/sdapi/v1/txt2img", {
        "width": 2048, "height": 64, "override_settings": {"samples_format": "webp"},
        "script_args": args(SEED, "1-8")})
    assert status == 200, body
    assert header(body["images"][0]) == ("PNG", (8 * 2048, 64 + 2 * 12))


async def test_a_long_label_is_cut_to_fit_the_legend(client, comfy_double):
    # a Prompt S/R value of 9,000 characters was a legend band as wide (72,000 pixels at 12 points; at a large
    # cell's font, a picture of gigapixels)
    status, body = await post(client, "/sdapi/v1/txt2img", {
        "prompt": "a", "width": 64, "height": 64,
        "script_args": [0, "", [], PROMPT_SR, "a," + "B" * 9000, []]})
    assert status == 200, body
    _, (w, h) = header(body["images"][0])
    assert w <= 64 + 256 + 16 and h == 2 * 64  # the cell, and a band of at most 256 pixels (xyz.LABEL_ROOM)


async def test_the_size_checked_is_the_size_drawn():
    plot = xyz.read_script_args([SEED, "1-3", [], PROMPT_SR, "cat,a much longer dog", [], SIZE, "64x64,96x80",
                                 [], True, False, False, False, False, False, False, 7], is_img2img=False)
    sizes = [(64, 64)] * 6 + [(96, 80)] * 6
    images = [Image.new("RGB", s) for s in sizes]
    top, subs = xyz.draw_plot(plot, images)
    assert top.size == xyz.grid_size(plot, sizes) and len(subs) == 2


async def test_the_grid_limit_option_is_read_as_a_number_up_to_the_ceiling():
    assert [xyz.grid_limit(v) for v in (None, "x", True, float("nan"), 50, "20", 1e9)] == [200, 200, 200, 200, 50,
                                                                                          20, 200]


# ---------------------------------------------------------------------------------------------------------------
# Axis texts


@pytest.mark.parametrize("text", [
    "1" * 131_073,  # one CSV field past the csv module's limit: _csv.Error, a 500
    " " * 999_000 + "1-1x",
    " " * 20_000 + "1",  # read as one value before: the text is bounded as a prompt is
])
async def test_a_long_axis_text_is_refused_naming_it(client, comfy_double, text):
    status, body = await post(client, "/sdapi/v1/txt2img", {"width": 64, "height": 64,
                                                            "script_args": args(SEED, text)})
    assert status == 400, body
    assert body["errors"].startswith("script_args[1]: Seed: the values are ") and "at most 10,000" in body["errors"]
    assert len(body["errors"]) < 200 and comfy_double.prompts == []


async def test_a_csv_error_is_a_400_naming_the_axis(client, comfy_double, monkeypatch):
    # whatever the csv module refuses (its field limit lowered here) is the axis's error, not a 500
    import csv
    monkeypatch.setattr(xyz, "_csv", lambda text: (_ for _ in ()).throw(csv.Error("field larger than field limit")))
    status, body = await post(client, "/sdapi/v1/txt2img", {"width": 64, "height": 64,
                                                            "script_args": args(SEED, "1,2")})
    assert status == 400 and body["errors"].startswith("script_args[1]: Seed: cannot read the values '1,2'"), body


@pytest.mark.parametrize("options,fmt,text", [
    ({}, "PNG", True), ({"enable_pnginfo": False}, "PNG", False), ({"samples_format": "jpg"}, "JPEG", False)])
async def test_the_grid_carries_its_infotext_as_the_options_ask(client, comfy_double, options, fmt, text):
    # the grid is written with its infotext as it is made (not decoded a second time to add it)
    status, body = await post(client, "/sdapi/v1/txt2img", {
        "width": 64, "height": 64, "override_settings": options,
        "script_args": args(SEED, "1-2", 0, "", [], SEED, "5-6", [], True, False, True)})
    assert status == 200, body
    info = json.loads(body["info"])
    assert len(body["images"]) == 3  # the grid, then a sub-grid per z value
    for b64 in body["images"]:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            assert im.format == fmt
            assert im.info.get("parameters") == (info["infotexts"][0] if text else None)
