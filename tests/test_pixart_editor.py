"""Pixart editor API (`/api/pixel-generation/...`): planning functions, and the HTTP routes over the ComfyUI protocol
double (real engine, real app). The double only tracks sizes, so palette membership and pixel content are checked
through a real ComfyUI in test_pixart_editor_comfyui.py; here the graphs the adapter sends are inspected instead."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import urllib.parse
import math
import random
import struct
import warnings
import zlib
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bridge import images as image_io
from bridge.adapters import pixart_editor as pe
from bridge.app import create_app
from bridge.config import load_settings
from bridge.errors import BridgeError, InvalidParameter
from bridge.store import check_id
from pixart_nodes import nodes_quantize
from pixart_nodes.core.palette import NAMED_PALETTES, named_palette
from tests.support.double import ComfyDouble
from tests.support.imaging import decode_png_data_url, encode

CHECKPOINT = "tiny_sd15.safetensors"
CONTROLNET = "tiny_canny.safetensors"  # the protocol double's default controlnet file
STATUS_KEYS = {"id", "status", "progress", "resultDataUrl", "resultUrl", "error", "processingTime", "metadata"}
METADATA_KEYS = {"colorsUsed", "pixelCount", "algorithm", "style", "palette", "dither", "seed", "colors"}
DITHERS = list(nodes_quantize.qz.DITHER_METHODS)



@pytest.fixture
def make_client(aiohttp_client, comfy_double, tmp_path):
    async def make(**overrides: str):
        settings = load_settings({"data_dir": tmp_path / "data", "comfyui_urls": [comfy_double.url]},
                                 overrides=overrides, env_file=None)
        return await aiohttp_client(create_app(settings, adapter_names=["pixart_editor"]))

    return make


AI = {"PIXART_EDITOR_CHECKPOINT": CHECKPOINT, "PIXART_EDITOR_CONTROLNET": CONTROLNET}


png_bytes = encode


def sketch(size=(40, 30), mode="RGBA") -> str:
    img = Image.new(mode, size, (0, 0, 0, 0) if mode == "RGBA" else (255, 255, 255))
    img.paste((200, 30, 30) if mode != "RGBA" else (200, 30, 30, 255), (5, 5, size[0] - 5, size[1] - 5))
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode()


def request_body(**fields: Any) -> dict[str, Any]:
    body = {"id": "req-1", "sketchData": sketch(), "prompt": "a red box", "width": 16, "height": 12,
            "style": "retro-16bit", "colorPalette": None, "timestamp": 1699000000000}
    body.update(fields)
    return body


def graph_of(double: ComfyDouble, index: int = -1) -> dict[str, dict[str, Any]]:
    """The prompt the double received, keyed by class_type (each class appears once in these workflows)."""
    graph = double.prompts[index]["prompt"]
    return {node["class_type"]: node["inputs"] for node in graph.values()}


async def wait_done(client, client_id: str, timeout: float = 20.0) -> dict[str, Any]:
    seen = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        resp = await client.get(f"/api/pixel-generation/status/{client_id}")
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        seen.append((body["status"], body["progress"]))
        if body["status"] in ("completed", "failed"):
            body["_seen"] = seen
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {client_id} did not finish: {seen[-5:]}")


decode_data_url = decode_png_data_url


def settings_with(**overrides: str) -> pe.PixartEditorSettings:
    return pe.PixartEditorSettings.from_settings(load_settings({}, overrides=overrides, env_file=None))


def decoded(size=(40, 30)) -> image_io.DecodedImage:
    return image_io.decode_image(sketch(size), "sketchData")


# ---------------------------------------------------------------------------------------------------------------
# Pure planning


def test_client_ids_map_to_safe_distinct_job_ids():
    # "req-1\n": `$` matches before a last newline, so `^...$`.match took it for a plain id (a 500 further on)
    ids = ["req-1", "a b", "ünïcode", "../../etc", ".", "x" * 100, "x" * 101, "pxe-1", "h-" + "0" * 40, "req-1\n"]
    jobs = [pe.client_job_id(i) for i in ids]
    assert len(set(jobs)) == len(ids)
    for j in jobs:
        assert check_id(j) == j
    assert pe.client_job_id("req-1") == "pxe-req-1"  # plain ids stay readable in logs and the job API
    assert pe.client_job_id("a b").startswith("pxeh-")


def test_work_size_is_the_smallest_whole_multiple_covering_the_sketch():
    rng = random.Random(1)
    for _ in range(3000):
        w, h = rng.randint(1, 300), rng.randint(1, 300)
        sw, sh = rng.randint(1, 3000), rng.randint(1, 3000)
        ww, wh, method = pe.work_size(w, h, sw, sh, 4096 * 4096)
        f = ww // w
        assert ww == w * f and wh == h * f and f >= 1
        if method == "nearest-exact":
            assert ww >= sw and wh >= sh
            # brute force: no smaller factor covers the sketch
            assert f == 1 or not ((f - 1) * w >= sw and (f - 1) * h >= sh)
        else:
            assert ww * wh <= 4096 * 4096 or f == 1
    assert pe.work_size(64, 64, 512, 512, 4096 * 4096) == (512, 512, "nearest-exact")
    assert pe.work_size(64, 64, 32, 32, 4096 * 4096) == (64, 64, "nearest-exact")
    assert pe.work_size(16, 16, 100, 20, 4096 * 4096) == (112, 112, "nearest-exact")
    # capped: a 4000x10 sketch into 4x1000 cannot be covered within 1 MP; area averaging shrinks instead
    ww, wh, method = pe.work_size(4, 1000, 4000, 10, 1_000_000)
    assert method == "area" and ww * wh <= 1_000_000 and ww % 4 == 0 and wh % 1000 == 0


def test_generation_size_is_on_the_latent_grid_and_never_below_the_target():
    for w in range(1, 300, 7):
        for h in range(1, 300, 11):
            gw, gh = pe.generation_size(w, h, 512)
            assert gw % 8 == 0 and gh % 8 == 0 and gw >= w and gh >= h
            assert max(gw, gh) <= max(512, -(-max(w, h) // 8) * 8) + 8
    assert pe.generation_size(64, 64, 512) == (512, 512)
    assert pe.generation_size(32, 24, 64) == (64, 48)
    assert pe.generation_size(1000, 10, 512) == (1000, 16)


@pytest.mark.parametrize("style", ["retro-8bit", "retro-16bit", *NAMED_PALETTES])
def test_named_styles_use_the_pack_palette(style):
    choice = pe.resolve_palette(style, None, 32)
    assert choice.params == {"palette_source": "named", "palette_name": named_palette(style).name}


def test_palette_resolution():
    assert pe.resolve_palette("pixel-modern", None, 24).params == {"palette_source": "image", "palette_colors": 24}
    assert pe.resolve_palette("PICO_8", [], 32).params["palette_name"] == "pico-8"  # aliases; [] = no override
    custom = pe.resolve_palette("retro-8bit", ["#FF0000", "00ff00", "#00f"], 32)
    assert custom.params == {"palette_source": "hex", "palette_hex": "#ff0000 #00ff00 #0000ff"}
    assert custom.label == "custom"
    with pytest.raises(InvalidParameter) as err:
        pe.resolve_palette("vaporwave", None, 32)
    assert err.value.field == "style" and "retro-8bit" in err.value.message and "pixel-modern" in err.value.message
    with pytest.raises(InvalidParameter) as err:
        pe.resolve_palette("retro-8bit", ["#000000", "#12345g"], 32)
    assert err.value.field == "colorPalette" and "colorPalette[1]" in err.value.message
    # an entry of two colours: 200 of them were 400 colours, refused further on with a 500
    for bad in ("#ffffff", [1, 2], ["#000000"] * 257, ["#000000 #111111"] * 200, ["#000000 #111111"]):
        with pytest.raises(InvalidParameter) as err:
            pe.resolve_palette("retro-8bit", bad, 32)
        assert err.value.field == "colorPalette"


def test_plan_chooses_the_path_and_fills_parameters():
    plain = pe.plan_request(request_body(), settings_with(), decoded((40, 30)), DITHERS)
    assert plain.workflow == "pixel_art" and not plain.use_ai
    p = plain.params
    assert (p["sketch_width"], p["sketch_height"], p["work_width"], p["work_height"]) == (40, 30, 48, 36)
    assert p["scale_method"] == "nearest-exact" and p["background"] == 0xFFFFFF and p["dither"] == "none"
    assert "prompt" not in p and "seed" not in p

    ai_settings = settings_with(**AI, PIXART_EDITOR_AI_SIZE="64")
    ai = pe.plan_request(request_body(seed=5), ai_settings, decoded(), DITHERS)
    assert ai.workflow == "pixel_art_ai" and ai.use_ai
    assert ai.params["prompt"] == "pixel art, a red box, sprite, flat colors, sharp edges"
    assert (ai.params["gen_width"], ai.params["gen_height"]) == (64, 48) and ai.params["seed"] == 5
    assert ai.params["checkpoint"] == CHECKPOINT and ai.params["controlnet"] == CONTROLNET
    assert pe.plan_request(request_body(), ai_settings, decoded(), DITHERS).params["seed"] == -1
    refused = pe.plan_request(request_body(useAI=False, prompt=""), ai_settings, decoded(), DITHERS)
    assert refused.workflow == "pixel_art"

    # an extracted palette for error diffusion is spread, where the chosen workflow declares the parameter
    fs = request_body(style="pixel-modern", dither="floyd-steinberg")
    assert pe.plan_request(fs, settings_with(), decoded(), DITHERS).params[pe.FOR_DITHERING] is True
    shipped = {"pixel_art": SimpleNamespace(parameters={pe.FOR_DITHERING: SimpleNamespace(max=None)})}
    assert pe.plan_request(fs, settings_with(), decoded(), DITHERS, shipped).params[pe.FOR_DITHERING] is True
    lacking = pe.plan_request(fs, settings_with(), decoded(), DITHERS, {"pixel_art": SimpleNamespace(parameters={})})
    assert pe.FOR_DITHERING not in lacking.params


@pytest.mark.parametrize("fields,settings,field", [
    ({"prompt": ""}, AI, "prompt"),
    ({"prompt": "   "}, AI, "prompt"),
    ({"prompt": None, "useAI": True}, AI, "prompt"),
    ({"useAI": True}, {}, "useAI"),
    ({"useAI": "yes"}, {}, "useAI"),
    ({"width": 0}, {}, "width"),
    ({"width": -8}, {}, "width"),
    ({"width": 8.5}, {}, "width"),
    ({"width": "64"}, {}, "width"),
    ({"width": None}, {}, "width"),
    ({"height": -1}, {}, "height"),
    ({"height": 100000}, {}, "height"),
    ({"style": "nope"}, {}, "style"),
    ({"style": 3}, {}, "style"),
    ({"dither": "floyd"}, {}, "dither"),
    ({"timestamp": "yesterday"}, {}, "timestamp"),
    ({"prompt": 5}, {}, "prompt"),
    ({"seed": -2}, AI, "seed"),
])
def test_plan_refuses_bad_fields_by_name(fields, settings, field):
    with pytest.raises(InvalidParameter) as err:
        pe.plan_request(request_body(**fields), settings_with(**settings), decoded(), DITHERS)
    assert err.value.field == field and field in err.value.message


def test_prompt_is_optional_without_ai_and_widths_need_no_multiple_of_8():
    plan = pe.plan_request(request_body(prompt=None, width=13, height=7), settings_with(), decoded(), DITHERS)
    assert plan.params["width"] == 13 and plan.params["height"] == 7


def test_engine_errors_are_renamed_to_request_fields_or_settings():
    def rendered(exc: BridgeError) -> tuple[int, dict]:
        resp = pe.DIALECT.bridge_error(exc)
        return resp.status, json.loads(resp.body)

    status, err = rendered(InvalidParameter("palette_name", "palette_name: 'x' is not available on the backend"))
    assert err["field"] == "style" and status == 400 and err["message"].startswith("style: ")
    assert err["detail"] == err["message"] and err["error"] == "invalid_parameter"
    status, err = rendered(InvalidParameter("checkpoint", "checkpoint: 'a.safetensors' is not available"))
    assert status == 503 and err["field"] == "PIXART_EDITOR_CHECKPOINT"
    assert "PIXART_EDITOR_CHECKPOINT" in err["message"]
    status, err = rendered(BridgeError("boom", field=None))
    assert status == 500 and err == {"error": "internal_error", "message": "boom", "field": None, "detail": "boom"}


def test_read_result_counts_colours_like_numpy_and_checks_the_size():
    rng = np.random.default_rng(0)
    pal = named_palette("pico-8").colors
    arr = pal[rng.integers(0, 16, (12, 16))]
    result = pe.read_result(png_bytes(Image.fromarray(arr)), 16, 12)
    flat = arr.reshape(-1, 3)
    uniq, counts = np.unique(flat, axis=0, return_counts=True)
    assert len(result.colors) == len(uniq)
    most = uniq[np.argmax(counts)]
    assert result.colors[0] == "#%02x%02x%02x" % tuple(int(v) for v in most)
    assert np.array_equal(np.asarray(decode_data_url(str(result.data_url)).convert("RGB")), arr)
    with pytest.raises(ValueError, match="16x12"):
        pe.read_result(png_bytes(Image.fromarray(arr)), 16, 13)


def test_settings_validation():
    from bridge.config import SettingsError

    with pytest.raises(SettingsError, match="PIXART_EDITOR_PROMPT_TEMPLATE"):
        settings_with(PIXART_EDITOR_PROMPT_TEMPLATE="pixel art")
    for colour in ("white-ish", "#000000 #ffffff", "#000,#fff", ""):  # one colour, not the first of several
        with pytest.raises(SettingsError, match="PIXART_EDITOR_BACKGROUND"):
            settings_with(PIXART_EDITOR_BACKGROUND=colour)
    assert pe.parse_colour(settings_with(PIXART_EDITOR_BACKGROUND=" #102030 ").background, "x") == 0x102030
    assert not settings_with(PIXART_EDITOR_CHECKPOINT=CHECKPOINT).ai_configured
    assert settings_with(**AI).ai_configured


# ---------------------------------------------------------------------------------------------------------------
# HTTP over the protocol double


async def post(client, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    resp = await client.post("/api/pixel-generation/generate", data=data,
                             headers={"Content-Type": "application/json"})
    return resp.status, await resp.json()


@pytest.mark.asyncio
async def test_a_request_is_encoded_for_its_digest_once(make_client, monkeypatch):
    # the digest JSON-encodes the whole body, sketch included
    calls = []
    digest = pe.body_digest
    monkeypatch.setattr(pe, "body_digest", lambda body: (calls.append(body.id), digest(body))[1])
    client = await make_client()
    status, body = await post(client, request_body(id="once"))
    assert status == 200 and calls == ["once"]
    status, body = await post(client, request_body(id="once"))  # the same request again: the same job
    assert status == 200 and body["id"] == "once" and calls == ["once", "once"]


@pytest.mark.asyncio
async def test_plain_generation_round_trip(make_client, comfy_double):
    client = await make_client()
    status, body = await post(client, request_body(width=20, height=15))
    assert status == 200, body
    assert set(body) == {"id", "status", "progress"} and body["id"] == "req-1"
    assert body["status"] in ("pending", "processing", "completed") and isinstance(body["progress"], int)
    done = await wait_done(client, "req-1")
    assert set(done) - {"_seen"} == STATUS_KEYS, done
    assert done["status"] == "completed" and done["progress"] == 100 and done["error"] is None
    assert isinstance(done["processingTime"], int) and done["processingTime"] >= 0
    assert set(done["metadata"]) == METADATA_KEYS
    md = done["metadata"]
    assert md["pixelCount"] == 300 and md["algorithm"] == "pixel_art" and md["seed"] is None
    assert md["style"] == "retro-16bit" and md["palette"] == "retro-16bit" and md["dither"] == "none"
    im = decode_data_url(done["resultDataUrl"])
    assert im.size == (20, 15)
    assert md["colorsUsed"] == len({px for px in im.convert("RGB").getdata()}) == len(md["colors"])
    for status_name, progress in done["_seen"]:
        assert status_name in ("pending", "processing", "completed") and 0 <= progress <= 100
    g = graph_of(comfy_double)
    assert "KSampler" not in g and "CheckpointLoaderSimple" not in g
    assert (g["EmptyImage"]["width"], g["EmptyImage"]["height"], g["EmptyImage"]["color"]) == (40, 30, 0xFFFFFF)
    assert (g["ImageScale"]["width"], g["ImageScale"]["height"]) == (40, 30)  # f = 2
    assert g["ImageScale"]["upscale_method"] == "nearest-exact"
    assert (g["PixartPixelate"]["width"], g["PixartPixelate"]["height"]) == (20, 15)
    assert g["PixartPixelate"]["upscale"] is False and g["PixartPixelate"]["method"] == "kcentroid"
    assert (g["PixartPalette"]["source"], g["PixartPalette"]["name"]) == ("named", "retro-16bit")
    assert g["PixartQuantize"]["dither"] == "none"
    uploaded = comfy_double.inputs[g["LoadImage"]["image"]]
    with Image.open(io.BytesIO(uploaded)) as up:
        assert up.size == (40, 30) and up.mode == "RGBA"  # alpha travels to LoadImage's mask


@pytest.mark.asyncio
async def test_response_format_url_sends_a_link_in_place_of_the_data_url(make_client):
    client = await make_client()
    status, body = await post(client, request_body(id="url-1", width=20, height=15, response_format="url"))
    assert status == 200, body
    done = await wait_done(client, "url-1")
    assert done["status"] == "completed" and done["resultDataUrl"] is None
    link = urllib.parse.urlsplit(done["resultUrl"])
    resp = await client.get(link.path)
    assert resp.status == 200
    with Image.open(io.BytesIO(await resp.read())) as im:
        assert im.size == (20, 15) and done["metadata"]["colorsUsed"] == len(set(im.convert("RGB").getdata()))
    # the status route may ask for the other form on its own
    inline = await (await client.get("/api/pixel-generation/status/url-1?response_format=b64")).json()
    assert decode_data_url(inline["resultDataUrl"]).size == (20, 15)
    bad = await client.get("/api/pixel-generation/status/url-1?response_format=gif")
    assert bad.status == 400 and (await bad.json())["field"] == "response_format"


@pytest.mark.asyncio
async def test_styles_palettes_and_dither_reach_the_graph(make_client, comfy_double):
    client = await make_client()
    cases = [
        ({"style": "pixel-modern"}, {"source": "image", "n_colors": 32, "for_dithering": False}),
        # error diffusion: the extracted palette is spread out for it
        ({"style": "pixel-modern", "dither": "floyd-steinberg"}, {"source": "image", "for_dithering": True}),
        ({"style": "pixel-modern", "dither": "bayer-4x4"}, {"source": "image", "for_dithering": False}),
        ({"style": "gameboy", "dither": "bayer-4x4"}, {"source": "named", "name": "gameboy"}),
        ({"style": "retro-8bit", "colorPalette": ["#112233", "#445566"]},
         {"source": "hex", "hex_colors": "#112233 #445566"}),
    ]
    for i, (fields, expected) in enumerate(cases):
        status, body = await post(client, request_body(id=f"s{i}", **fields))
        assert status == 200, body
        done = await wait_done(client, f"s{i}")
        assert done["status"] == "completed"
        g = graph_of(comfy_double)
        for key, value in expected.items():
            assert g["PixartPalette"][key] == value, (fields, key)
        assert g["PixartQuantize"]["dither"] == fields.get("dither", "none")
        assert done["metadata"]["style"] == fields["style"]
    assert done["metadata"]["palette"] == "custom"


@pytest.mark.asyncio
async def test_same_id_same_body_is_the_same_job_and_another_body_conflicts(make_client, comfy_double):
    client = await make_client()
    body = request_body(id="dup")
    first = await post(client, body)
    again = await post(client, dict(reversed(list(body.items()))))  # key order does not matter
    assert first[0] == again[0] == 200 and again[1]["id"] == "dup"
    await wait_done(client, "dup")
    status, done = await post(client, body)
    assert status == 200 and done == {"id": "dup", "status": "completed", "progress": 100}
    assert len(comfy_double.prompts) == 1
    status, err = await post(client, {**body, "width": 24})
    assert status == 409 and err["field"] == "id" and err["error"] == "conflict" and "dup" in err["message"]
    assert err["detail"] == err["message"]
    status, err = await post(client, {**body, "timestamp": 1699000000001})
    assert status == 409
    assert len(comfy_double.prompts) == 1


@pytest.mark.asyncio
async def test_concurrent_identical_requests_make_one_job(make_client, comfy_double):
    client = await make_client()
    body = request_body(id="race")
    answers = await asyncio.gather(*(post(client, body) for _ in range(4)))
    assert [a[0] for a in answers] == [200] * 4 and {a[1]["id"] for a in answers} == {"race"}
    await wait_done(client, "race")
    assert len(comfy_double.prompts) == 1


@pytest.mark.asyncio
async def test_ids_with_any_characters_round_trip(make_client):
    client = await make_client()
    from urllib.parse import quote

    for cid in ("sketch #7 / ünï?", "abc\n"):
        status, body = await post(client, request_body(id=cid))
        assert status == 200 and body["id"] == cid
        done = await wait_done(client, quote(cid, safe=""))
        assert done["id"] == cid and done["status"] == "completed"


@pytest.mark.asyncio
async def test_unknown_id_is_404(make_client):
    client = await make_client()
    resp = await client.get("/api/pixel-generation/status/never-sent")
    assert resp.status == 404
    body = await resp.json()
    assert body["field"] == "id" and "never-sent" in body["message"] and body["error"] == "job_not_found"


def hundred_megapixel_png() -> bytes:
    """A genuine, valid 10000 x 10000 1-bit greyscale PNG (100 MP), 12 kB on the wire."""
    w = h = 10000
    row = b"\x00" + b"\x00" * ((w + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_hundred_megapixel_png_is_real():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(io.BytesIO(hundred_megapixel_png()))
    with im:
        assert im.size == (10000, 10000) and im.mode == "1"


BAD_REQUESTS = [
    ("broken base64", {"sketchData": "data:image/png;base64,@@@not-base64@@@"}, 400, "sketchData"),
    ("not an image", {"sketchData": base64.b64encode(b"hello, this is text not a picture").decode()}, 400,
     "sketchData"),
    ("gif", {"sketchData": base64.b64encode(png_bytes(Image.new("RGB", (8, 8)), "GIF")).decode()}, 400,
     "sketchData"),
    ("truncated png", {"sketchData": base64.b64encode(png_bytes(Image.new("RGB", (64, 64)))[:60]).decode()}, 400,
     "sketchData"),
    ("100 MP", {"sketchData": "data:image/png;base64," + base64.b64encode(hundred_megapixel_png()).decode()}, 413,
     "sketchData"),
    ("no sketch", {"sketchData": None}, 400, "sketchData"),
    ("negative width", {"width": -64}, 400, "width"),
    ("negative height", {"height": -1}, 400, "height"),
    ("zero width", {"width": 0}, 400, "width"),
    ("too wide", {"width": 5000}, 400, "width"),
    ("unknown style", {"style": "watercolour"}, 400, "style"),
    ("bad palette", {"colorPalette": ["#zzzzzz"]}, 400, "colorPalette"),
    ("bad dither", {"dither": "random"}, 400, "dither"),
    ("ai unavailable", {"useAI": True}, 400, "useAI"),
    ("no id", {"id": None}, 400, "id"),
    ("empty id", {"id": ""}, 400, "id"),
    # larger than the workflow takes (4096 a side): named as the client sent it, not as the workflow's sketch_height
    ("sketch too tall", {"sketchData": sketch((8, 5000), "RGB")}, 400, "sketchData"),
]


@pytest.mark.asyncio
async def test_bad_input_is_refused_naming_the_field_and_the_server_is_unharmed(make_client, comfy_double):
    client = await make_client()
    for label, fields, code, field in BAD_REQUESTS:
        status, body = await post(client, {**request_body(id=f"bad-{label}"), **fields})
        assert status == code, (label, body)
        assert body["field"] == field and field in body["message"], (label, body)
        assert set(body) == {"error", "message", "field", "detail"}
    for raw, field in ((b"{not json", "body"), (b"[1, 2]", "body"), (b"", "body")):
        status, body = await post(client, raw)
        assert status == 400 and body["field"] == field
    assert comfy_double.prompts == []  # nothing bad reached ComfyUI
    status, _ = await post(client, request_body(id="bad-no-sketch"))  # a refused id is still free
    assert status == 200
    assert (await wait_done(client, "bad-no-sketch"))["status"] == "completed"


@pytest.mark.asyncio
async def test_a_long_value_is_quoted_by_its_start_in_the_error(make_client, comfy_double):
    # an unknown style, a colour and a status id were repeated whole (twice, in message and detail): a 9,000
    # character style made a 27 KB answer
    client = await make_client()
    long = "z" * 9000
    for fields, field in (({"style": long}, "style"), ({"colorPalette": ["#000000", "#" + long]}, "colorPalette")):
        status, body = await post(client, request_body(id=f"long-{field}", **fields))
        assert status == 400 and body["field"] == field and field in body["message"], body
        assert long[:100] not in json.dumps(body) and "zzz" in body["message"]
    resp = await client.get("/api/pixel-generation/status/" + "q" * 4000)
    body = await resp.json()
    assert resp.status == 404 and body["field"] == "id" and "q" * 100 not in json.dumps(body)
    assert comfy_double.prompts == []


@pytest.mark.asyncio
async def test_a_tall_result_is_enlarged_only_as_far_as_the_workflow_takes(make_client, comfy_double):
    # 64x1024 from the editor's 512x512 canvas: the whole factor covering the sketch (8) made a 512x8192 work
    # image, past the workflow's 4096 a side: refused with a 400 naming work_height, a field no client sends
    client = await make_client()
    status, body = await post(client, request_body(id="tall", sketchData=sketch((512, 512)), width=64, height=1024))
    assert status == 200, body
    graph = graph_of(comfy_double)
    assert (await wait_done(client, "tall"))["status"] == "completed"
    work = [n for n in graph.values() if "width" in n and "height" in n and n.get("width", 0) > 64]
    assert max(max(n["width"], n["height"]) for n in work) <= 4096
    assert pe.work_size(64, 1024, 512, 512, 4096 * 4096, 4096) == (256, 4096, "area")


@pytest.mark.asyncio
async def test_a_narrow_ai_result_is_generated_at_least_as_wide_as_a_latent_takes(make_client, comfy_double):
    # 8x600: the generation was 8 pixels wide, under ComfyUI's EmptyLatentImage's 16: refused naming gen_width
    client = await make_client(**AI, PIXART_EDITOR_STEPS="1")
    status, body = await post(client, request_body(id="narrow", width=8, height=600))
    assert status == 200, body
    latent = graph_of(comfy_double)["EmptyLatentImage"]
    assert latent["width"] >= 16 and latent["height"] >= 600
    assert pe.generation_size(8, 600, 512) == (16, 600)


@pytest.mark.asyncio
async def test_an_ai_result_wider_than_the_model_path_draws_is_refused_naming_width(make_client, comfy_double):
    # PIXART_EDITOR_MAX_SIDE may reach 4096 where pixel_art_ai draws at most 2048: refused naming gen_width
    client = await make_client(**AI, PIXART_EDITOR_MAX_SIDE="4096")
    status, body = await post(client, request_body(id="wide", width=3000, height=100))
    assert status == 400 and body["field"] == "width" and "at most 2048" in body["message"], body
    assert comfy_double.prompts == []


@pytest.mark.asyncio
async def test_ai_path_binds_prompt_sizes_seed_and_models(make_client, comfy_double):
    client = await make_client(**AI, PIXART_EDITOR_AI_SIZE="64", PIXART_EDITOR_STEPS="3")
    status, body = await post(client, request_body(id="ai", seed=1234, width=32, height=24))
    assert status == 200, body
    done = await wait_done(client, "ai")
    assert done["status"] == "completed" and done["metadata"]["algorithm"] == "pixel_art_ai"
    assert done["metadata"]["seed"] == 1234
    assert decode_data_url(done["resultDataUrl"]).size == (32, 24)
    g = graph_of(comfy_double)
    assert g["KSampler"]["seed"] == 1234 and g["KSampler"]["steps"] == 3
    assert (g["EmptyLatentImage"]["width"], g["EmptyLatentImage"]["height"]) == (64, 48)
    assert (g["EmptyImage"]["width"], g["EmptyImage"]["height"]) == (64, 48)
    assert g["ImageCompositeMasked"]["resize_source"] is True
    assert g["CheckpointLoaderSimple"]["ckpt_name"] == CHECKPOINT
    assert g["ControlNetLoader"]["control_net_name"] == CONTROLNET
    texts = [n["inputs"]["text"] for n in comfy_double.prompts[-1]["prompt"].values()
             if n["class_type"] == "CLIPTextEncode"]
    assert "pixel art, a red box, sprite, flat colors, sharp edges" in texts
    # a random seed is drawn, used and reported
    status, _ = await post(client, request_body(id="ai-random"))
    done = await wait_done(client, "ai-random")
    assert isinstance(done["metadata"]["seed"], int) and graph_of(comfy_double)["KSampler"]["seed"] == \
        done["metadata"]["seed"]
    # the AI server still pixelates the sketch alone on request, without a prompt
    status, _ = await post(client, request_body(id="no-ai", useAI=False, prompt=""))
    assert status == 200
    assert (await wait_done(client, "no-ai"))["metadata"]["algorithm"] == "pixel_art"
    status, err = await post(client, request_body(id="ai-no-prompt", prompt=""))
    assert status == 400 and err["field"] == "prompt"


@pytest.mark.asyncio
async def test_missing_model_on_the_backend_is_a_server_error_naming_the_setting(make_client, comfy_double):
    client = await make_client(PIXART_EDITOR_CHECKPOINT="absent.safetensors", PIXART_EDITOR_CONTROLNET=CONTROLNET)
    status, err = await post(client, request_body(id="missing-model"))
    assert status == 503 and err["field"] == "PIXART_EDITOR_CHECKPOINT" and "absent.safetensors" in err["message"]
    assert (await client.get("/api/pixel-generation/status/missing-model")).status == 404


@pytest.mark.asyncio
async def test_a_failing_node_reports_failed_with_the_error(make_client, comfy_double):
    comfy_double.fail_class = "PixartQuantize"
    comfy_double.fail_message = "palette exploded"
    client = await make_client()
    status, _ = await post(client, request_body(id="fails"))
    assert status == 200
    done = await wait_done(client, "fails")
    assert done["status"] == "failed" and "palette exploded" in done["error"]
    assert done["resultDataUrl"] is None and done["metadata"] is None and isinstance(done["processingTime"], int)


@pytest.mark.asyncio
async def test_styles_route_and_openapi(make_client):
    client = await make_client()
    body = await (await client.get("/api/pixel-generation/styles")).json()
    assert body["styles"][:3] == ["retro-8bit", "retro-16bit", "pixel-modern"]
    assert set(NAMED_PALETTES) <= set(body["styles"])
    assert body["palettes"]["gameboy"] == named_palette("gameboy").hex()
    assert body["dither"] == DITHERS and body["ai"] == {"available": False, "default": False}
    spec = await (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert paths["/api/pixel-generation/generate"]["post"]["summary"].startswith("Start a sketch-to-pixel-art")
    assert "/api/pixel-generation/status/{id}" in paths


@pytest.mark.asyncio
async def test_results_survive_a_bridge_restart(aiohttp_client, comfy_double, tmp_path):
    settings = load_settings({"data_dir": tmp_path / "data", "comfyui_urls": [comfy_double.url]}, env_file=None)
    first = await aiohttp_client(create_app(settings, adapter_names=["pixart_editor"]))
    status, _ = await post(first, request_body(id="keep"))
    done = await wait_done(first, "keep")
    await first.close()
    second = await aiohttp_client(create_app(settings, adapter_names=["pixart_editor"]))
    again = await wait_done(second, "keep")
    assert again["resultDataUrl"] == done["resultDataUrl"] and again["metadata"] == done["metadata"]
    status, body = await post(second, request_body(id="keep"))
    assert status == 200 and body["status"] == "completed"
    assert math.isclose(again["processingTime"], done["processingTime"])


@pytest.mark.asyncio
async def test_an_operators_workflow_without_palette_for_dithering_still_serves_pixel_modern(
        aiohttp_client, comfy_double, tmp_path):
    """PIXART_EDITOR_WORKFLOW may name a workflow written before palette_for_dithering existed: error diffusion
    with pixel-modern then uses the plain extracted palette instead of failing on an unknown parameter."""
    from bridge.workflows import DEFAULT_WORKFLOWS_DIR

    extra = tmp_path / "mine"
    extra.mkdir()
    manifest = json.loads((DEFAULT_WORKFLOWS_DIR / "pixel_art.manifest.json").read_text())
    del manifest["parameters"]["palette_for_dithering"]
    manifest["name"] = "my_pixels"
    (extra / "my_pixels.manifest.json").write_text(json.dumps(manifest))
    (extra / "pixel_art.json").write_text((DEFAULT_WORKFLOWS_DIR / "pixel_art.json").read_text())
    settings = load_settings({"data_dir": tmp_path / "data", "comfyui_urls": [comfy_double.url],
                              "extra_workflows_dirs": [str(extra)]},
                             overrides={"PIXART_EDITOR_WORKFLOW": "my_pixels"}, env_file=None)
    client = await aiohttp_client(create_app(settings, adapter_names=["pixart_editor"]))
    status, body = await post(client, request_body(id="mine", style="pixel-modern", dither="floyd-steinberg"))
    assert status == 200, body
    done = await wait_done(client, "mine")
    assert done["status"] == "completed" and done["metadata"]["algorithm"] == "my_pixels"
    assert graph_of(comfy_double)["PixartPalette"]["for_dithering"] is False


def test_results_read_for_status_answers_are_held_within_a_count_and_a_byte_budget():
    def result(nbytes: int, colours: int = 1) -> pe.Result:
        return pe.Result(image_io.Base64(b"\0" * nbytes, "data:image/png;base64,"), ["#000000"] * colours)

    kept = pe.Results(count=3, nbytes=1000)
    for i in range(5):
        kept.put(f"j{i}", result(10))
    assert [kept.get(f"j{i}") is not None for i in range(5)] == [False, False, True, True, True]  # by count
    kept.put("big", result(800))
    assert kept.get("j2") is None and kept.get("j3") is None and kept.get("j4") is not None  # by bytes
    kept.put("big", result(10))  # a result read again replaces its entry and its size
    kept.put("colours", result(10, colours=14))  # 14 colour names count ~900 bytes
    assert kept.get("big") is not None and kept.get("colours") is not None and kept.get("j4") is None
    kept.put("huge", result(5000))  # the newest stays even alone over the budget
    assert kept.get("huge") is not None and kept.get("colours") is None
