"""The batch grid an A1111 answer puts first (with save_images, the `return_grid` option and no do_not_save_grid),
against hostile bodies, over the protocol double: its size as drawn (rows x columns of A1111's layout, each image at
the size it comes back) is checked against `img_max_size_mp` before any job is queued, as the x/y/z plot's is; a
grid that passes is made decoding one image at a time, past Pillow's decompression-bomb limit."""
from __future__ import annotations

import base64
import io
import json
import math
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image, ImageDraw

from bridge.adapters.a1111 import generation as gen_mod
from bridge.adapters.a1111 import routes
from tests.support.imaging import b64, encode, image_size

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def client(bridge_factory):
    return await bridge_factory(adapters=["a1111"])


def size_of(text: str) -> tuple[int, int]:
    """An answer image's size, read from its header (no pixels, so no decompression-bomb check)."""
    return image_size(base64.b64decode(text))


async def post(client, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await client.post(path, json={"prompt": "a fox", "steps": 1, "save_images": True, "seed": 1, **body})
    return resp.status, await resp.json()


def limited(mp: float, **options: Any) -> dict[str, Any]:
    return {"override_settings": {"img_max_size_mp": mp, **options}}


# ---------------------------------------------------------------------------------------------------------------
# Refused before any job is queued


async def test_a_grid_too_large_is_refused_before_any_job_runs(client, comfy_double):
    # 12 images upscaled by hires fix to 4096x4096 (hires steps 1, which the request cost bound admits) make a grid
    # of 3 rows of 4: 201 MPixels. Every job ran, then the grid was assembled with all 12 images decoded at once.
    status, body = await post(client, "/sdapi/v1/txt2img", {
        "width": 2048, "height": 2048, "enable_hr": True, "hr_scale": 2, "hr_second_pass_steps": 1, "n_iter": 2,
        "batch_size": 6})
    assert status == 400, body
    assert body["errors"] == ("batch_size: Error: Resulting grid would be too large (201 MPixels) (max configured "
                              "size is 200 MPixels): batch_size x n_iter 6 x 2, 12 images of 4096x4096 in 3 rows of "
                              "4; ask for fewer or smaller images, or send do_not_save_grid")
    assert comfy_double.prompts == []


async def test_the_largest_request_is_refused_before_any_job_runs(client, comfy_double):
    # the adapter's most images (64), hires to 4096x4096: a grid of 1,074 MPixels, past Pillow's limit (a 500 after
    # every job had run)
    status, body = await post(client, "/sdapi/v1/txt2img", {
        "width": 2048, "height": 2048, "enable_hr": True, "hr_scale": 2, "hr_second_pass_steps": 1, "n_iter": 8,
        "batch_size": 8})
    assert status == 400 and body["errors"].startswith("batch_size: Error: Resulting grid would be too large (1074 "
                                                       "MPixels) (max configured size is 200 MPixels): batch_size x "
                                                       "n_iter 8 x 8, 64 images of 4096x4096 in 8 rows of 8"), body
    assert comfy_double.prompts == []


async def test_the_option_may_lower_the_limit_but_not_lift_it(client, comfy_double):
    # 4 images of 616x616, 2 rows of 2: 1.52 MPixels, rounded to 2 as A1111 rounds the x/y/z grid's
    status, body = await post(client, "/sdapi/v1/txt2img", {"width": 616, "height": 616, "batch_size": 4,
                                                            **limited(2)})
    assert status == 400 and body["errors"].endswith(
        "(2 MPixels) (max configured size is 2 MPixels): batch_size x n_iter 4 x 1, 4 images of 616x616 in 2 rows of "
        "2; ask for fewer or smaller images, or send do_not_save_grid"), body
    assert comfy_double.prompts == []
    # any client may set options: a larger value does not lift the bound
    assert (await client.post("/sdapi/v1/options", json={"img_max_size_mp": 100000})).status == 200
    status, body = await post(client, "/sdapi/v1/txt2img", {
        "width": 2048, "height": 2048, "enable_hr": True, "hr_scale": 2, "hr_second_pass_steps": 1, "batch_size": 12})
    assert status == 400 and "(max configured size is 200 MPixels)" in body["errors"], body
    assert comfy_double.prompts == []


async def test_the_grid_counts_as_drawn_empty_spots_too(client, comfy_double):
    # 3 images of 640x640 are 1.2 MPixels, but A1111 draws them as 2 rows of 2: 1.6 MPixels, rounded to 2
    status, body = await post(client, "/sdapi/v1/txt2img", {"width": 640, "height": 640, "n_iter": 3,
                                                            **limited(2)})
    assert status == 400, body
    assert ("(2 MPixels) (max configured size is 2 MPixels): "
            "batch_size x n_iter 1 x 3, 3 images of 640x640 in 2 rows of 2") in body["errors"]
    assert comfy_double.prompts == []


async def test_hires_fix_counts_at_the_size_it_comes_back(client, comfy_double):
    # 2 images of 1024x1024 upscaled twice: 2.1 MPixels generated, 8.4 come back
    status, body = await post(client, "/sdapi/v1/txt2img", {
        "width": 1024, "height": 1024, "enable_hr": True, "hr_scale": 2, "batch_size": 2, **limited(5)})
    assert status == 400, body
    assert ("(8 MPixels) (max configured size is 5 MPixels): "
            "batch_size x n_iter 2 x 1, 2 images of 2048x2048 in 1 rows of 2") in body["errors"]
    assert comfy_double.prompts == []


async def test_an_inpainted_image_counts_at_the_init_images_size(client, comfy_double):
    # "only masked" pastes each 64x64 result back into the 1024x1024 picture: 4 images come back as 4.2 MPixels
    mask = Image.new("L", (1024, 1024))
    ImageDraw.Draw(mask).rectangle((100, 100, 300, 300), fill=255)
    status, body = await post(client, "/sdapi/v1/img2img", {
        "init_images": [b64(encode(Image.new("RGB", (1024, 1024), (200, 30, 30))))], "mask": b64(encode(mask)),
        "width": 64, "height": 64, "n_iter": 4, **limited(4)})
    assert status == 400, body
    assert ("(4 MPixels) (max configured size is 4 MPixels): "
            "batch_size x n_iter 1 x 4, 4 images of 1024x1024 in 2 rows of 2") in body["errors"]
    assert comfy_double.prompts == []


# ---------------------------------------------------------------------------------------------------------------
# Answered: under the limit, or with no grid to make


async def test_a_grid_just_under_the_limit_is_answered(client, comfy_double):
    # 4 images of 608x608, 2 rows of 2: 1.48 MPixels, rounded to 1, below 2
    status, body = await post(client, "/sdapi/v1/txt2img", {"width": 608, "height": 608, "batch_size": 4,
                                                            **limited(2)})
    assert status == 200, body
    assert len(comfy_double.prompts) == 4 and len(body["images"]) == 5
    assert json.loads(body["info"])["index_of_first_image"] == 1
    assert [size_of(b) for b in body["images"]] == [(1216, 1216)] + [(608, 608)] * 4


@pytest.mark.parametrize("extra", [
    {"save_images": False}, {"do_not_save_grid": True}, {"override_settings": {"img_max_size_mp": 2,
                                                                               "return_grid": False}},
    {"batch_size": 1, "width": 2048, "height": 2048}])
async def test_no_grid_no_check(client, comfy_double, extra):
    # the same request makes no grid without save_images, with do_not_save_grid, with return_grid off, or with
    # one image: nothing is refused
    status, body = await post(client, "/sdapi/v1/txt2img", {"width": 616, "height": 616, "batch_size": 4,
                                                            **limited(2), **extra})
    assert status == 200, body
    count = len(comfy_double.prompts)
    assert count in (1, 4) and len(body["images"]) == count
    assert json.loads(body["info"])["index_of_first_image"] == 0


async def test_rows_are_never_more_than_the_images(client, comfy_double):
    # A1111's image_grid: an `n_rows` above the number of images is that number (64 rows of 2 images were a grid
    # of 62 black rows)
    status, body = await post(client, "/sdapi/v1/txt2img", {"width": 64, "height": 96, "batch_size": 2,
                                                            "override_settings": {"n_rows": 64}})
    assert status == 200, body
    assert [size_of(b) for b in body["images"]] == [(64, 2 * 96), (64, 96), (64, 96)]


# ---------------------------------------------------------------------------------------------------------------
# The grid made one image at a time


async def test_a_grid_of_images_above_pillows_limit_is_answered(client, comfy_double, monkeypatch):
    # the grid's images are the bridge's own, bounded before they were asked for: opened past Pillow's
    # decompression-bomb limit (lowered here so that small images show it), as the x/y/z grid's cells are
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60_000)
    status, body = await post(client, "/sdapi/v1/txt2img", {"width": 384, "height": 384, "batch_size": 4})
    monkeypatch.undo()
    assert status == 200, body
    assert [size_of(b) for b in body["images"]] == [(768, 768)] + [(384, 384)] * 4


def _png(size: tuple[int, int], colour: tuple[int, int, int], mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGB" else (*colour, 128)).save(out, format="PNG")
    return out.getvalue()


async def test_the_grid_decodes_one_image_at_a_time(monkeypatch):
    # every image was decoded at once before the grid was drawn: held twice, as itself and in the grid
    opened: list[Image.Image] = []
    built = gen_mod.open_built

    def one_at_a_time(data: bytes) -> Image.Image:
        for im in opened:  # every image opened before is closed, its pixels let go
            with pytest.raises(ValueError, match="closed image"):
                im.im  # noqa: B018
        opened.append(built(data))
        return opened[-1]

    monkeypatch.setattr(gen_mod, "open_built", one_at_a_time)
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    pngs = [_png((40, 30), c, "RGBA" if i == 2 else "RGB") for i, c in enumerate(colours)]
    grid = routes.image_grid(pngs, {"n_rows": -1, "grid_prevent_empty_spots": False}, 3)
    assert len(opened) >= len(pngs)
    with Image.open(io.BytesIO(grid)) as im:
        assert im.size == (80, 60) and im.mode == "RGB"
        assert [im.getpixel(xy) for xy in ((10, 10), (50, 10), (10, 40), (50, 40))] == [*colours, (0, 0, 0)]


@pytest.mark.parametrize("count,n_rows,batch_size,layout", [
    (3, -1, 3, (2, 2)), (5, -1, 5, (2, 3)), (7, -1, 1, (3, 3)), (64, -1, 8, (8, 8)), (2, 64, 2, (2, 1)),
    (6, 0, 3, (3, 2)), (2, 0, 8, (2, 1)), (6, 4, 1, (4, 2))])
async def test_grid_layout_is_a1111s(count, n_rows, batch_size, layout):
    assert routes.grid_layout(count, {"n_rows": n_rows, "grid_prevent_empty_spots": False}, batch_size) == layout


def _a1111_prevent_empty_rows(count: int) -> int:
    # A1111's modules/images.image_grid with n_rows -1 and grid_prevent_empty_spots, as it reads
    rows = math.floor(math.sqrt(count))
    while count % rows != 0:
        rows -= 1
    return rows


async def test_grid_prevent_empty_spots_fills_every_row():
    for count in range(1, 200):
        rows, cols = routes.grid_layout(count, {"n_rows": -1, "grid_prevent_empty_spots": True}, 1)
        assert rows == _a1111_prevent_empty_rows(count) and rows * cols == count, count
    # n_rows set wins, as in A1111
    assert routes.grid_layout(6, {"n_rows": 4, "grid_prevent_empty_spots": True}, 1) == (4, 2)


async def test_a_batch_grid_follows_grid_prevent_empty_spots(client, comfy_double):
    # 6 images: 2 rows of 3 (round(sqrt 6) = 2 as well), 5 images: 1 row of 5 instead of 2 rows of 3 with a gap
    status, body = await post(client, "/sdapi/v1/txt2img", {
        "width": 64, "height": 64, "batch_size": 5, "steps": 1, "save_images": True,
        "override_settings": {"return_grid": True, "grid_prevent_empty_spots": True}})
    assert status == 200, body
    assert size_of(body["images"][0]) == (5 * 64, 64)
    status, body = await post(client, "/sdapi/v1/txt2img", {
        "width": 64, "height": 64, "batch_size": 5, "steps": 1, "save_images": True,
        "override_settings": {"return_grid": True}})
    assert status == 200 and size_of(body["images"][0]) == (3 * 64, 2 * 64), body


async def test_the_images_that_came_back_are_checked_again(client, comfy_double, monkeypatch):
    # images that differ from what was checked (an interrupted x/y/z plot's cells) make no grid past the limit:
    # the images come back alone rather than as a 500
    monkeypatch.setattr(routes, "check_batch_grid", lambda *args: None)
    status, body = await post(client, "/sdapi/v1/txt2img", {"width": 616, "height": 616, "batch_size": 4,
                                                            **limited(2)})
    assert status == 200, body
    assert [size_of(b) for b in body["images"]] == [(616, 616)] * 4
    assert json.loads(body["info"])["index_of_first_image"] == 0
