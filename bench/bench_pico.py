"""Benchmark: the RGB565 conversion's share of a Pico request (target: under 5 ms for 240x240 on one core).

Prints a table of medians with ratios against OpenCV references measured in the same run:

- pack: 240x240 RGB -> RGB565 bytes (`core.rgb565.to_rgb565`) vs `cv2.cvtColor(RGB2BGR565)` + byte swap
- node: the PixartRGB565 node's work on one 512x512 decoded image (fit to 240x240, pack, base64, preview), which is
  what runs inside ComfyUI in the `pico_rgb565` workflow
- passthrough: PNG bytes from an upstream A1111 -> frame (`pico.convert_png`) vs OpenCV imdecode + resize + pack
- request: a whole Pico request through the bridge's passthrough to the local A1111 stand-in; the conversion's
  share of it is reported
- with `--comfyui URL`: whole Pico requests through a real ComfyUI running the `pico_rgb565` workflow, and the node's
  share of them

    .venv/bin/python bench/bench_pico.py [--repeat 50] [--comfyui http://127.0.0.1:8188 --steps 4]
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

cv2.setNumThreads(1)


def median_ms(fn: Callable[[], Any], repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def amedian_ms(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        await fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def source_image(size: int = 512) -> np.ndarray:
    # a smooth picture with detail, like a generated image (random noise would flatter PNG decoding less)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rgb = np.stack([np.sin(x * 9) * 0.5 + 0.5, np.cos(y * 7) * 0.5 + 0.5, (x * y)], axis=-1)
    noise = np.random.default_rng(0).normal(0, 0.03, rgb.shape)
    return (np.clip(rgb + noise, 0, 1) * 255).astype(np.uint8)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--comfyui", help="URL of a running ComfyUI with the Pixart pack (adds real Pico requests)")
    ap.add_argument("--steps", type=int, default=4, help="sampling steps for the --comfyui requests")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from bridge.adapters.a1111 import pico
    from pixart_nodes.core import rgb565
    from pixart_nodes.nodes_rgb565 import PixartRGB565

    src = source_image()
    small = cv2.resize(src, (240, 240), interpolation=cv2.INTER_AREA)
    buf = io.BytesIO()
    Image.fromarray(src).save(buf, format="PNG")
    png = buf.getvalue()
    opts = pico.LcdOptions(240, 240, False, "be", "stretch", False)
    rows: list[tuple[str, float, str, float]] = []

    pack = median_ms(lambda: rgb565.to_rgb565(small, byte_order="big"), args.repeat)
    pack_cv = median_ms(lambda: cv2.cvtColor(small, cv2.COLOR_RGB2BGR565)[..., ::-1].tobytes(), args.repeat)
    rows.append(("pack 240x240 (core.rgb565)", pack, "OpenCV cvtColor + swap", pack_cv))

    tensor = torch.from_numpy(src.astype(np.float32) / 255.0)[None]
    node = PixartRGB565()
    node_ms = median_ms(lambda: node.run(tensor, 240, 240, "stretch", "big", False, False, False, "x", "#000000",
                                         "auto"), args.repeat)

    def cv_node_ref() -> bytes:
        arr = (tensor[0].numpy() * 255 + 0.5).astype(np.uint8)
        return cv2.cvtColor(cv2.resize(arr, (240, 240), interpolation=cv2.INTER_AREA),
                            cv2.COLOR_RGB2BGR565)[..., ::-1].tobytes()

    node_cv = median_ms(cv_node_ref, args.repeat)
    rows.append(("node: 512 IMAGE -> 240x240 frame", node_ms, "OpenCV to-uint8 + resize + pack", node_cv))

    conv = median_ms(lambda: pico.convert_png(png, opts), args.repeat)

    def cv_png_ref() -> bytes:
        arr = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return cv2.cvtColor(cv2.resize(arr, (240, 240), interpolation=cv2.INTER_AREA),
                            cv2.COLOR_RGB2BGR565)[..., ::-1].tobytes()

    conv_cv = median_ms(cv_png_ref, args.repeat)
    rows.append(("passthrough: 512 PNG -> frame", conv, "OpenCV imdecode + resize + pack", conv_cv))

    request_ms, comfy_ms = asyncio.run(_requests(args, png))
    print(f"{'measure':<36} {'median ms':>10}  {'reference':<34} {'median ms':>10} {'ratio':>7}")
    for name, ms, ref_name, ref_ms in rows:
        print(f"{name:<36} {ms:>10.3f}  {ref_name:<34} {ref_ms:>10.3f} {ms / ref_ms:>7.2f}")
    print(f"{'request: passthrough to stand-in':<36} {request_ms:>10.3f}  {'conversion share':<34} "
          f"{conv:>10.3f} {conv / request_ms:>7.1%}")
    if comfy_ms is not None:
        print(f"{'request: pico_rgb565 on ComfyUI':<36} {comfy_ms:>10.3f}  {'node conversion share':<34} "
              f"{node_ms:>10.3f} {node_ms / comfy_ms:>7.1%}")
    print(f"\ntarget: node conversion under 5 ms for 240x240 on one core -> "
          f"{'met' if node_ms < 5 else 'NOT met'} ({node_ms:.2f} ms)")
    return 0


async def _requests(args: argparse.Namespace, png: bytes) -> tuple[float, float | None]:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from bridge.adapters.a1111 import pico
    from bridge.app import SETTINGS, create_app
    from bridge.config import load_settings
    from tests.support.a1111_standin import StandIn, start_standin

    standin = StandIn()
    # Serve a fixed 512x512 PNG so the request measures the bridge, not the stand-in's picture maker.
    import tests.support.a1111_standin as standin_mod

    standin_mod.png_bytes = lambda _im: png  # type: ignore[assignment]
    server = await start_standin(standin)
    with tempfile.TemporaryDirectory() as tmp:
        app = web.Application()
        app[SETTINGS] = load_settings({"data_dir": Path(tmp), "comfyui_urls": ["http://127.0.0.1:9"]},
                                      overrides={"PICO_UPSTREAM_URL": str(server.make_url("")).rstrip("/"),
                                                 "PICO_CACHE": "false"}, env_file=None)
        pico.setup(app)
        client = TestClient(TestServer(app))
        await client.start_server()
        body = {"prompt": "x", "seed": 1, "width": 512, "height": 512}

        async def one() -> None:
            r = await client.post(pico.PATH, json=body)
            assert r.status == 200 and len(await r.read()) == 115200

        request_ms = await amedian_ms(one, max(10, args.repeat // 2))
        await client.close()
        await server.close()

        comfy_ms = None
        if args.comfyui:
            settings = load_settings({"data_dir": Path(tmp) / "c", "comfyui_urls": [args.comfyui]},
                                     overrides={"PICO_CACHE": "false"}, env_file=None)
            client = TestClient(TestServer(create_app(settings, adapter_names=["a1111", "pico"])))
            await client.start_server()
            seed = iter(range(1000, 100000))

            async def real() -> None:
                r = await client.post(pico.PATH, json={"prompt": "x", "seed": next(seed), "steps": args.steps,
                                                       "width": 512, "height": 512})
                assert r.status == 200, await r.text()
                await r.read()

            comfy_ms = await amedian_ms(real, 5)
            await client.close()
    return request_ms, comfy_ms


if __name__ == "__main__":
    raise SystemExit(main())
