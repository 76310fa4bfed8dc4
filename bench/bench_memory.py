"""Peak memory of pixelate + quantize + dither on a 1024x1024 batch of 4, relative to the input batch.

Runs the node path (float32 ComfyUI batch in, float32 batch out): each image is converted to uint8,
pixelated (core.pixelate, pixel_size 4, upscaled back), quantized with Floyd-Steinberg (OKLab) to PICO-8, and written
into the output batch. Peak is measured two ways: tracemalloc (numpy buffers; torch's allocator is invisible
to it, so the output batch is added by hand) and resident-set growth sampled every millisecond from
/proc/self/statm (everything, torch included). Prints both as ratios to the input's size.

    .venv/bin/python bench/bench_memory.py
"""
from __future__ import annotations

import argparse
import os
import threading
import time
import tracemalloc

import torch

from pixart_nodes.core.palette import named_palette
from pixart_nodes.core.quantize import quantize
from pixart_nodes.core.tensors import image_to_uint8

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def pipeline(batch: torch.Tensor, pal) -> torch.Tensor:
    from pixart_nodes.core.pixelate import pixelate

    out = torch.empty_like(batch)
    for i in range(batch.shape[0]):
        img = image_to_uint8(batch[i])
        small = pixelate(img, pixel_size=4, method="box", upscale=True)
        res = quantize(small, pal, dither="floyd-steinberg", distance="oklab")
        out[i] = torch.from_numpy(res.image).to(torch.float32).div_(255.0)
    return out


def main() -> None:
    pal = named_palette("pico-8")
    gen = torch.Generator().manual_seed(0)
    warm = torch.rand((1, 64, 64, 3), generator=gen)
    pipeline(warm, pal)  # numba compile / cache load and candidate tables outside the measurement
    batch = torch.rand((4, 1024, 1024, 3), generator=gen)
    in_bytes = batch.element_size() * batch.nelement()

    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

    base = rss()
    peak[0] = base
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    tracemalloc.start()
    t0 = time.perf_counter()
    out = pipeline(batch, pal)
    elapsed = time.perf_counter() - t0
    _, np_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    stop.set()
    t.join()
    out_bytes = out.element_size() * out.nelement()

    mib = 1 / 2**20
    print(f"{'measure':52s} {'MiB':>9s} {'x input':>8s}")
    print(f"{'input batch 4x1024x1024x3 float32':52s} {in_bytes * mib:9.1f} {1.0:8.2f}")
    print(f"{'output batch (torch)':52s} {out_bytes * mib:9.1f} {out_bytes / in_bytes:8.2f}")
    print(f"{'numpy peak during pipeline (tracemalloc)':52s} {np_peak * mib:9.1f} {np_peak / in_bytes:8.2f}")
    total = np_peak + out_bytes
    print(f"{'numpy peak + output batch':52s} {total * mib:9.1f} {total / in_bytes:8.2f}")
    grow = peak[0] - base
    print(f"{'resident-set growth, peak (all allocators)':52s} {grow * mib:9.1f} {grow / in_bytes:8.2f}")
    print(f"pipeline time {elapsed:.2f} s; limit: 4.00 x input")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # no options; --help says what it does
    main()
