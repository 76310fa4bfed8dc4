"""A full queue refuses a request before its images are fetched or decoded, in every dialect that takes images:
the refusal costs no decoding (a 20 MB picture posted again and again to a full bridge was decoded each time, then
refused), and it says the queue is full."""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bridge import images as image_io
from bridge.keys import ENGINE
from tests.support.double import ComfyDouble
from tests.support.imaging import solid_png_b64

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

IMAGE = solid_png_b64(64, 64)
REQUESTS = [
    ("/generate/img2img", {"prompt": "x", "initImage": IMAGE}),
    ("/generate/inpaint", {"prompt": "x", "image": IMAGE, "mask": IMAGE}),
    ("/generate", {"prompt": "x", "init_image": IMAGE}),
    ("/api/pixel-generation/generate", {"id": "full-1", "sketchData": "data:image/png;base64," + IMAGE,
                                        "prompt": "a red box", "width": 16, "height": 12, "style": "retro-16bit"}),
    ("/sdapi/v1/img2img", {"prompt": "x", "init_images": [IMAGE], "steps": 2}),
    ("/sdapi/v1/extra-single-image", {"image": IMAGE, "upscaler_1": "Lanczos", "upscaling_resize": 2}),
    ("/sdapi/v1/extra-batch-images", {"imageList": [{"data": IMAGE, "name": "a.png"}], "upscaler_1": "Lanczos"}),
    ("/sdapi/v1/interrogate", {"image": IMAGE, "model": "clip"}),
]


async def test_a_full_queue_refuses_before_any_image_is_decoded(bridge_factory: Any, comfy_double: ComfyDouble,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    comfy_double.step_delay = 0.2
    client = await bridge_factory(adapters=["jobs_api", "unified", "pixart_editor", "a1111"], max_queue=1)
    resp = await client.post("/generate/text2img", json={"prompt": "the one job", "steps": 50})
    assert resp.status == 202, await resp.text()
    decoded: list[str] = []
    decode = image_io.decode_base64

    def counted(value: Any, field: str, **kwargs: Any) -> bytes:
        decoded.append(field)
        return decode(value, field, **kwargs)

    monkeypatch.setattr(image_io, "decode_base64", counted)
    for path, body in REQUESTS:
        resp = await client.post(path, json=body)
        text = await resp.text()
        assert resp.status == 503 and "queue is full" in text and int(resp.headers["Retry-After"]) >= 1, \
            (path, resp.status, text)
        assert decoded == [], (path, decoded)
    # With room in the queue the same requests decode their images: the spy sees that path.
    engine = client.app[ENGINE]
    engine.options = dataclasses.replace(engine.options, max_queue=100)
    comfy_double.step_delay = 0.0
    for path, body in REQUESTS:
        decoded.clear()
        resp = await client.post(path, json={**body, "id": "room-1"} if "sketchData" in body else body)
        assert decoded, (path, resp.status, await resp.text())
