"""Answers compared with what A1111 1.10.1 itself answers, each test naming the A1111 source it follows."""
from __future__ import annotations

import base64
import io
import json

import pytest
import pytest_asyncio
from PIL import Image, PngImagePlugin

pytestmark = pytest.mark.asyncio

GENERATED = ("a lighthouse at dusk\nNegative prompt: blurry\nSteps: 3, Sampler: Euler a, Schedule type: Automatic, "
             "CFG scale: 5.0, Seed: 123, Size: 64x64, Model: tiny_sd15")


@pytest_asyncio.fixture
async def client(bridge_factory):
    return await bridge_factory(adapters=["a1111", "pico"])


def png_b64(size=(64, 64), colour=(200, 30, 30), parameters: str | None = None) -> str:
    meta = PngImagePlugin.PngInfo()
    if parameters is not None:
        meta.add_text("parameters", parameters)
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG", pnginfo=meta)
    return base64.b64encode(buf.getvalue()).decode()


def text_chunks(b64: str) -> dict[str, str]:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        im.load()
        return {k: v for k, v in im.info.items() if isinstance(v, str)}


@pytest.mark.parametrize("upscaler,postprocessing", [
    ("Lanczos", "Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos"),
    ("None", ""),
])
async def test_extras_keep_the_source_images_infotext(client, comfy_double, upscaler, postprocessing):
    # A1111 modules/postprocessing.py run_postprocessing: `parameters, existing_pnginfo =
    # images.read_info_from_image(image_data)`, put back as existing_pnginfo["parameters"], then with
    # opts.enable_pnginfo `pp.image.info = existing_pnginfo; pp.image.info["postprocessing"] = infotext`, and
    # api.encode_pil_to_base64 writes every str item as a PNG text chunk: an upscaled picture still says how it was
    # generated, so png-info on it gives the generation parameters back.
    resp = await client.post("/sdapi/v1/extra-single-image", json={
        "image": png_b64(parameters=GENERATED), "upscaler_1": upscaler, "upscaling_resize": 2})
    assert resp.status == 200, await resp.text()
    chunks = text_chunks((await resp.json())["image"])
    assert chunks.get("parameters") == GENERATED
    assert chunks.get("postprocessing") == postprocessing

    resp = await client.post("/sdapi/v1/extra-batch-images", json={
        "imageList": [{"data": png_b64(parameters=GENERATED), "name": "a"}, {"data": png_b64(), "name": "b"}],
        "upscaler_1": upscaler, "upscaling_resize": 2})
    assert resp.status == 200, await resp.text()
    first, second = [text_chunks(b) for b in (await resp.json())["images"]]
    assert first.get("parameters") == GENERATED and "parameters" not in second
    assert first.get("postprocessing") == second.get("postprocessing") == postprocessing


async def test_png_info_reads_the_upscaled_pictures_parameters(client, comfy_double):
    resp = await client.post("/sdapi/v1/extra-single-image", json={
        "image": png_b64(parameters=GENERATED), "upscaler_1": "Lanczos", "upscaling_resize": 2})
    image = (await resp.json())["image"]
    resp = await client.post("/sdapi/v1/png-info", json={"image": image})
    assert resp.status == 200, await resp.text()
    out = await resp.json()
    assert out["info"] == GENERATED and out["parameters"]["Seed"] == "123"
    assert out["items"]["postprocessing"] == "Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos"


async def test_img2img_parameters_echo_the_batch_size_sent(client, comfy_double):
    # A1111 api.py img2imgapi answers `parameters=vars(img2imgreq)`: the request as parsed; the batch rule (k init
    # images make a batch of k) acts on the processing object, so `info.batch_size` is 2 and the echo keeps 4.
    resp = await client.post("/sdapi/v1/img2img", json={
        "init_images": [png_b64(), png_b64(colour=(0, 0, 200))], "batch_size": 4, "steps": 2, "width": 64,
        "height": 64, "seed": 5})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert json.loads(body["info"])["batch_size"] == 2 and len(body["images"]) == 2
    assert body["parameters"]["batch_size"] == 4


async def test_extras_carry_at_most_the_png_info_cap_of_source_text(client, comfy_double):
    # A compressed chunk of a few kilobytes can hold megabytes of text; past the cap it is left out, the infotext
    # kept.
    from bridge.adapters.a1111.extras import PNG_INFO_ITEMS_MAX

    meta = PngImagePlugin.PngInfo()
    meta.add_text("prompt", "{}")
    part = 900_000  # Pillow refuses a text chunk over 1 MB; five of these pass the cap
    for i in range(5):
        meta.add_text(f"workflow{i}", "x" * part, zip=True)
    meta.add_text("parameters", GENERATED)
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, format="PNG", pnginfo=meta)
    resp = await client.post("/sdapi/v1/extra-single-image", json={
        "image": base64.b64encode(buf.getvalue()).decode(), "upscaler_1": "Lanczos"})
    assert resp.status == 200, await resp.text()
    chunks = text_chunks((await resp.json())["image"])
    assert chunks["parameters"] == GENERATED and chunks["prompt"] == "{}"
    assert sum(k.startswith("workflow") for k in chunks) == 4
    assert sum(len(k) + len(v) for k, v in chunks.items() if k != "postprocessing") <= PNG_INFO_ITEMS_MAX


async def test_extras_write_no_text_without_enable_pnginfo(client, comfy_double):
    # postprocessing.py: the text is set only `if opts.enable_pnginfo`
    assert (await client.post("/sdapi/v1/options", json={"enable_pnginfo": False})).status == 200
    resp = await client.post("/sdapi/v1/extra-single-image", json={
        "image": png_b64(parameters=GENERATED), "upscaler_1": "Lanczos"})
    assert resp.status == 200, await resp.text()
    assert text_chunks((await resp.json())["image"]) == {}


async def test_generated_images_carry_no_text_without_enable_pnginfo(client, comfy_double):
    # the extras' rule for txt2img too: the stored result's own text (the bridge's `parameters`, ComfyUI's graph)
    # came back as it was
    assert (await client.post("/sdapi/v1/options", json={"enable_pnginfo": False})).status == 200
    resp = await client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64})
    assert resp.status == 200, await resp.text()
    assert text_chunks((await resp.json())["images"][0]) == {}


@pytest.mark.parametrize("sent,written", [({}, "2"), ({"upscaling_resize": 2}, "2.0"),
                                          ({"upscaling_resize": "3"}, "3.0"), ({"upscaling_resize": 1.5}, "1.5")])
async def test_extras_write_the_factor_as_a1111s_model_gives_it(client, comfy_double, sent, written):
    # ExtrasBaseRequest's `upscaling_resize: float = Field(default=2)`: pydantic makes a sent value a float, the
    # unvalidated default stays the int 2; postprocessing_upscale puts it into the infotext as it is
    resp = await client.post("/sdapi/v1/extra-single-image", json={"image": png_b64(), "upscaler_1": "Lanczos",
                                                                   **sent})
    assert resp.status == 200, await resp.text()
    info = (await resp.json())["html_info"]
    assert info == f"<p>Postprocess upscale by: {written}, Postprocess upscaler: Lanczos</p>"


@pytest.mark.parametrize("body,field", [({"seed": 2**64 - 1, "batch_size": 2}, "seed"),
                                        ({"seed": 5, "subseed": 2**64 - 2, "n_iter": 3, "subseed_strength": 0.5},
                                         "subseed")])
async def test_a_seed_the_batch_counts_past_the_range_is_named_as_sent(client, comfy_double, body, field):
    # image i gets seed + i: the workflow's check named the sum (18446744073709551616), a number nobody sent
    resp = await client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                                        **body})
    assert resp.status == 400, await resp.text()
    errors = (await resp.json())["errors"]
    assert errors.startswith(f"{field}: {body[field]} leaves no room for") and "18446744073709551616" not in errors
    assert comfy_double.prompts == []
    ok = await client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                                      "seed": 2**64 - 2, "batch_size": 2})
    assert ok.status == 200, await ok.text()
    # without a variation strength A1111 draws nothing from the subseeds: past the range, they do no harm
    ok = await client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                                      "subseed": 2**64 - 1, "batch_size": 2})
    assert ok.status == 200, await ok.text()
