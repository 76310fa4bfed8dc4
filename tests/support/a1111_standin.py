"""A small local stand-in that answers `POST /sdapi/v1/txt2img` like AUTOMATIC1111 does, for the Pico upstream
passthrough tests: same body shape (`images` = bare base64 PNG, `parameters`, `info` as a JSON string), HTTP Basic
auth with A1111's 401 body, and switches to fail the next requests with a chosen status.

The picture is a deterministic function of seed, width and height (a seeded random RGB field with a gradient), so a
test can rebuild exactly what the stand-in sent.
"""
from __future__ import annotations

import base64
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from tests.support.imaging import encode


def standin_image(seed: int, width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    arr = (noise.astype(np.float32) * 0.5 + ramp * 0.5).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


png_bytes = encode


@dataclass
class StandIn:
    username: str | None = None
    password: str | None = None
    fail_next: list[int] = field(default_factory=list)  # statuses to answer with, one per coming request
    requests: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    # answers every request in its place (a misbehaving upstream)
    answer: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None

    async def txt2img(self, request: web.Request) -> web.StreamResponse:
        if self.answer is not None:
            return await self.answer(request)
        self.auth_headers.append(request.headers.get("Authorization"))
        if self.username is not None:
            expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            if request.headers.get("Authorization") != expected:
                return web.json_response({"error": "HTTPException", "detail": "Incorrect username or password",
                                          "body": "", "errors": ""}, status=401,
                                         headers={"WWW-Authenticate": "Basic"})
        body = await request.json()
        self.requests.append(body)
        if self.fail_next:
            status = self.fail_next.pop(0)
            return web.json_response({"error": "OutOfMemoryError", "detail": "", "body": "",
                                      "errors": "CUDA out of memory (stand-in)"}, status=status)
        seed = body.get("seed", -1)
        if seed is None or seed == -1:
            seed = random.randrange(4294967294)
        width, height = int(body.get("width", 512)), int(body.get("height", 512))
        count = int(body.get("batch_size", 1)) * int(body.get("n_iter", 1))
        images = [base64.b64encode(png_bytes(standin_image(seed + i, width, height))).decode() for i in range(count)]
        info = {"prompt": body.get("prompt", ""), "seed": seed, "all_seeds": [seed + i for i in range(count)],
                "width": width, "height": height}
        return web.json_response({"images": images, "parameters": body, "info": json.dumps(info)})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/sdapi/v1/txt2img", self.txt2img)
        return app


async def start_standin(standin: StandIn) -> TestServer:
    """Start the stand-in on a free loopback port; the caller closes it (`await server.close()`)."""
    server = TestServer(standin.app(), host="127.0.0.1")
    await server.start_server()
    return server
