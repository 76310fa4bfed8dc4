"""Pico LCD endpoint: option parsing, answer format, the conversion against OpenCV, the frame cache, and the upstream
A1111 passthrough against a local stand-in (no ComfyUI needed for any of these)."""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import pytest_asyncio
from aiohttp import web
from PIL import Image

from bridge.adapters.a1111 import models, pico
from bridge.app import SETTINGS
from bridge.config import load_settings
from tests.support.a1111_standin import StandIn, png_bytes, standin_image, start_standin
from tests.support.imaging import claimed_png


def opencv_frame(rgb: np.ndarray, width: int, height: int, byte_order: str = "be") -> bytes:
    """Independent reference: OpenCV resize (area, as the node's auto mode picks when shrinking) and OpenCV's
    RGB->BGR565 packing, which stores the 16-bit word little-endian."""
    small = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    packed = cv2.cvtColor(small, cv2.COLOR_RGB2BGR565)
    return (packed[..., ::-1] if byte_order == "be" else packed).tobytes()


def settings_with(tmp_path: Path, **overrides: str):
    pairs = {f"PICO_{k.upper()}": v for k, v in overrides.items()}
    return load_settings({"data_dir": tmp_path / "data", "comfyui_urls": ["http://127.0.0.1:9"]}, overrides=pairs,
                         env_file=None)



# ------------------------------------------------------------------ plain parts


def test_lcd_options_defaults_and_overrides():
    s = pico.PicoSettings()
    assert pico.lcd_options(s, {}, None) == pico.LcdOptions(240, 240, False, "be", "stretch", False)
    o = pico.lcd_options(s, {"lcd_width": "128", "byte_order": "le", "invert": "1"},
                         {"height": 160, "dither": True, "byte_order": "be", "resize_mode": "crop"})
    assert o == pico.LcdOptions(128, 160, True, "le", "crop", True)  # query beats body
    assert o.frame_size == 128 * 160 * 2 and o.format_name == "rgb565-le"


@pytest.mark.parametrize("query,body,field", [
    ({"lcd_width": "0"}, None, "lcd_width"), ({"lcd_height": "abc"}, None, "lcd_height"),
    ({"byte_order": "middle"}, None, "byte_order"), ({"resize_mode": "zoom"}, None, "resize_mode"),
    ({"invert": "maybe"}, None, "invert"), ({}, {"width": 5000}, "pico.width"), ({}, "x", "pico"),
])
def test_lcd_options_errors_name_the_field(query, body, field):
    with pytest.raises(models.A1111Error) as info:
        pico.lcd_options(pico.PicoSettings(), query, body)
    assert info.value.status == 400 and info.value.errors.startswith(field)


@pytest.mark.parametrize("query,accept,default,expected", [
    ({"format": "json"}, "application/octet-stream", "binary", "json"),
    ({"format": "raw"}, "", "json", "binary"),
    ({}, "application/octet-stream", "json", "binary"),
    ({}, "application/json", "binary", "json"),
    ({}, "*/*", "binary", "binary"),
    ({}, "application/json, application/octet-stream", "json", "json"),
])
def test_format_choice(query, accept, default, expected):
    assert pico.choose_format(query, accept, default) == expected


def test_a_long_format_is_quoted_by_its_start():
    # the whole query value came back (as long as the URL let it be)
    with pytest.raises(models.A1111Error) as info:
        pico.choose_format({"format": "x" * 5000}, "", "binary")
    assert info.value.errors == f"format: must be binary or json, got '{'x' * 40}…'"


def test_convert_png_equals_opencv_packing():
    rgb = np.asarray(standin_image(7, 512, 512))
    png = png_bytes(Image.fromarray(rgb))
    for order in ("be", "le"):
        opts = pico.LcdOptions(240, 240, False, order, "stretch", False)
        frame = pico.convert_png(png, opts)
        assert len(frame) == 115200
        assert frame == opencv_frame(rgb, 240, 240, order)
    inverted = pico.convert_png(png, pico.LcdOptions(240, 240, True, "be", "stretch", False))
    words = np.frombuffer(opencv_frame(rgb, 240, 240), ">u2")
    assert np.array_equal(np.frombuffer(inverted, ">u2"), words ^ 0xFFFF)


def test_frame_cache_limit_evicts_least_recently_used(tmp_path: Path):
    cache = pico.FrameCache(tmp_path / "c", max_bytes=250)
    cache.put("a", b"a" * 100)
    cache.put("b", b"b" * 100)
    os.utime(tmp_path / "c" / "a.rgb565", (1, 1))
    os.utime(tmp_path / "c" / "b.rgb565", (2, 2))
    assert cache.get("a") == b"a" * 100  # a hit makes "a" the most recently used
    cache.put("c", b"c" * 100)
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    cache.put("huge", b"x" * 1000)  # larger than the whole cache: not stored
    assert cache.get("huge") is None
    assert pico.FrameCache.key({"a": 1, "b": 2}) == pico.FrameCache.key({"b": 2, "a": 1})


# ------------------------------------------------------------------ passthrough over HTTP


async def _bridge(aiohttp_client: Any, tmp_path: Path, standin_url: str, **overrides: str):
    app = web.Application()
    app[SETTINGS] = settings_with(tmp_path, upstream_url=standin_url, **overrides)
    pico.setup(app)
    return await aiohttp_client(app)


@pytest_asyncio.fixture
async def standin():
    s = StandIn(username="pico", password="s3cret:x")
    server = await start_standin(s)
    s.url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    yield s
    await server.close()


BODY = {"prompt": "a lighthouse", "seed": 1234, "width": 320, "height": 256, "steps": 4}


@pytest.mark.asyncio
async def test_passthrough_binary_matches_opencv(aiohttp_client, tmp_path, standin):
    client = await _bridge(aiohttp_client, tmp_path, standin.url, upstream_username="pico",
                           upstream_password="s3cret:x")
    resp = await client.post(pico.PATH, json=BODY, headers={"Accept": "application/octet-stream"})
    assert resp.status == 200, await resp.text()
    data = await resp.read()
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Length"] == "115200" and len(data) == 115200
    assert (resp.headers["X-Image-Width"], resp.headers["X-Image-Height"], resp.headers["X-Image-Format"]) == \
        ("240", "240", "rgb565-be")
    assert data == opencv_frame(np.asarray(standin_image(1234, 320, 256)), 240, 240, "be")
    # the upstream got the A1111 body as sent, with Basic credentials
    assert standin.requests[0]["prompt"] == "a lighthouse" and standin.requests[0]["seed"] == 1234
    assert standin.auth_headers[0] == "Basic " + base64.b64encode(b"pico:s3cret:x").decode()


@pytest.mark.asyncio
async def test_passthrough_json_answer_and_overrides(aiohttp_client, tmp_path, standin):
    client = await _bridge(aiohttp_client, tmp_path, standin.url, upstream_username="pico",
                           upstream_password="s3cret:x", default_format="json", byte_order="le")
    body = dict(BODY, seed=99, pico={"width": 128, "height": 128})
    resp = await client.post(pico.PATH + "?lcd_height=64", json=body)
    assert resp.status == 200
    payload = await resp.json()
    assert payload["info"] == "128x64 RGB565 format for Pico LCD"
    assert payload["parameters"]["prompt"] == "a lighthouse" and payload["parameters"]["steps"] == 4
    frame = base64.b64decode(payload["images"][0])
    assert frame == opencv_frame(np.asarray(standin_image(99, 320, 256)), 128, 64, "le")
    assert "pico" not in standin.requests[0]  # Pico options are not forwarded to A1111


@pytest.mark.asyncio
async def test_passthrough_cache_only_for_fixed_seeds(aiohttp_client, tmp_path, standin):
    client = await _bridge(aiohttp_client, tmp_path, standin.url, upstream_username="pico",
                           upstream_password="s3cret:x")
    first = await client.post(pico.PATH, json=BODY)
    second = await client.post(pico.PATH, json=BODY)
    assert first.headers["X-Pico-Cache"] == "miss" and second.headers["X-Pico-Cache"] == "hit"
    assert await first.read() == await second.read() and len(standin.requests) == 1
    # a different LCD option is a different request
    third = await client.post(pico.PATH + "?invert=true", json=BODY)
    assert third.headers["X-Pico-Cache"] == "miss" and len(standin.requests) == 2
    for _ in range(2):
        r = await client.post(pico.PATH, json=dict(BODY, seed=-1))
        assert r.headers["X-Pico-Cache"] == "miss"
    assert len(standin.requests) == 4
    assert len(list((tmp_path / "data" / "pico_cache").glob("*.rgb565"))) == 2


@pytest.mark.asyncio
async def test_passthrough_retries_then_succeeds(aiohttp_client, tmp_path, standin):
    client = await _bridge(aiohttp_client, tmp_path, standin.url, upstream_username="pico",
                           upstream_password="s3cret:x", upstream_retries="2", cache="false")
    standin.fail_next = [503, 502]
    resp = await client.post(pico.PATH, json=BODY)
    assert resp.status == 200 and len(await resp.read()) == 115200
    assert len(standin.requests) == 3


@pytest.mark.asyncio
async def test_passthrough_errors_become_502(aiohttp_client, tmp_path, standin):
    client = await _bridge(aiohttp_client, tmp_path, standin.url, upstream_username="pico",
                           upstream_password="wrong", upstream_retries="0")
    resp = await client.post(pico.PATH, json=BODY)
    assert resp.status == 502
    err = await resp.json()
    assert set(err) == {"error", "detail", "body", "errors"} and "401" in err["detail"]
    assert standin.url in err["detail"]

    client = await _bridge(aiohttp_client, tmp_path, standin.url, upstream_username="pico",
                           upstream_password="s3cret:x", upstream_retries="0", cache="false")
    standin.fail_next = [500]
    resp = await client.post(pico.PATH, json=BODY)
    assert resp.status == 502 and "500" in (await resp.json())["detail"]
    # the bridge is unharmed: the next request works
    resp = await client.post(pico.PATH, json=BODY)
    assert resp.status == 200


@pytest.mark.asyncio
async def test_passthrough_unreachable_upstream(aiohttp_client, tmp_path):
    client = await _bridge(aiohttp_client, tmp_path, "http://127.0.0.1:9", upstream_retries="1",
                           upstream_timeout="5")
    resp = await client.post(pico.PATH, json=BODY)
    assert resp.status == 502
    assert "unreachable" in (await resp.json())["detail"] and "2 attempts" in (await resp.json())["detail"]


@pytest.mark.parametrize("status", [200, 500])
@pytest.mark.asyncio
async def test_an_endless_upstream_answer_is_read_only_up_to_its_limit(aiohttp_client, tmp_path, standin, monkeypatch,
                                                                      status):
    monkeypatch.setattr(pico, "UPSTREAM_ANSWER_BYTES", 1 << 20)
    written: list[int] = []

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=status)
        await resp.prepare(request)
        for _ in range(4096):  # 256 MB, for whoever reads it all
            await resp.write(b"A" * 65536)
            written.append(65536)
        return resp

    standin.answer = endless
    client = await _bridge(aiohttp_client, tmp_path, standin.url, upstream_retries="0", cache="false")
    resp = await client.post(pico.PATH, json=BODY)
    detail = (await resp.json())["detail"]
    assert resp.status == 502 and standin.url in detail
    assert ("more than 1048576 bytes" in detail) if status == 200 else detail.endswith(": " + "A" * 300)
    assert sum(written) < 32 << 20  # the bridge stopped reading, and the stand-in could not write on


@pytest.mark.asyncio
async def test_an_upstream_image_of_too_many_pixels_is_refused_from_its_header(aiohttp_client, tmp_path, standin):
    async def bomb(request: web.Request) -> web.Response:
        return web.json_response({"images": [base64.b64encode(claimed_png(60000, 60000)).decode()]})

    standin.answer = bomb
    client = await _bridge(aiohttp_client, tmp_path, standin.url, upstream_retries="0", cache="false")
    resp = await client.post(pico.PATH, json=BODY)
    assert resp.status == 502 and "60000x60000" in (await resp.json())["detail"]


@pytest.mark.parametrize("answer,words", [
    (b'{"images": [' + b"[]," * (3 << 20) + b'[]]}', "more than"),  # counted before it is parsed
    (b'{"images": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested"),
    (b'{"images": ["' + b"A" * (2 << 20) + b'"], "info": NaN}', "NaN"),
    (b'{"pictures": []}', "images"),
    # each image becomes a frame, however small it came: 20,000 of one pixel would be 2.3 GB of 240x240 frames
    (json.dumps({"images": [base64.b64encode(png_bytes(Image.new("RGB", (1, 1)))).decode()] * 200}).encode(),
     "200 images"),
])
@pytest.mark.asyncio
async def test_an_upstream_answer_that_is_not_acceptable_json_is_a_502_naming_why(aiohttp_client, tmp_path,
                                                                                 standin, answer, words):
    async def odd(request: web.Request) -> web.Response:
        return web.Response(body=answer, content_type="application/json")

    standin.answer = odd
    client = await _bridge(aiohttp_client, tmp_path, standin.url, upstream_retries="0", cache="false")
    resp = await client.post(pico.PATH, json=BODY)
    detail = (await resp.json())["detail"]
    assert resp.status == 502 and "unusable answer" in detail and words in detail, detail

@pytest.mark.parametrize("path,body,status,field", [
    (pico.PATH, {"steps": "many"}, 422, "steps"),
    (pico.PATH + "?format=xml", BODY, 400, "format"),
    (pico.PATH + "?lcd_width=-3", BODY, 400, "lcd_width"),
    (pico.PATH, dict(BODY, batch_size=2), 400, "batch_size"),
    # the ComfyUI path's limit holds for the pass-through too: 64 x 64 images of up to 2 MB frames were forwarded
    (pico.PATH + "?format=json", dict(BODY, batch_size=64, n_iter=2), 400, "batch_size"),
    (pico.PATH, [1, 2], 422, "body"),
])
@pytest.mark.asyncio
async def test_bad_input_is_refused_with_the_field_named(aiohttp_client, tmp_path, standin, path, body, status,
                                                         field):
    client = await _bridge(aiohttp_client, tmp_path, standin.url, upstream_username="pico",
                           upstream_password="s3cret:x")
    resp = await client.post(path, data=json.dumps(body), headers={"Content-Type": "application/json"})
    assert resp.status == status
    err = await resp.json()
    assert field in err["errors"]
    assert standin.requests == []  # nothing was forwarded


@pytest.mark.asyncio
async def test_pico_mode_serves_the_a1111_path(aiohttp_client, tmp_path, standin):
    client = await _bridge(aiohttp_client, tmp_path, standin.url, upstream_username="pico",
                           upstream_password="s3cret:x", mode="true")
    resp = await client.post("/sdapi/v1/txt2img", json=BODY)
    assert resp.status == 200 and resp.headers["X-Image-Format"] == "rgb565-be"
    assert len(await resp.read()) == 115200


@pytest.mark.asyncio
async def test_basic_auth_guards_the_pico_path(aiohttp_client, tmp_path, standin, monkeypatch):
    monkeypatch.setenv("A1111_API_AUTH", "dev:pw")
    client = await _bridge(aiohttp_client, tmp_path, standin.url, upstream_username="pico",
                           upstream_password="s3cret:x")
    resp = await client.post(pico.PATH, json=BODY)
    assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Basic"
    ok = await client.post(pico.PATH, json=BODY, headers={"Authorization": "Basic " +
                                                          base64.b64encode(b"dev:pw").decode()})
    assert ok.status == 200
