"""Seeded random latents, the source of A1111's "latent noise" inpainting fill.

A1111 fills the repainted part of the encoded init image with ``create_random_tensors(shape, seeds)``, which draws
the same numbers as the sampler's own initial noise. ComfyUI's KSampler draws its noise with
``torch.randn(latent.size(), generator=torch.manual_seed(seed), device="cpu")`` over the whole batch, so drawing
the same way here makes the fill, in the model's latent space, equal to the noise KSampler adds for that seed.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

SEED_MAX = 0xFFFFFFFFFFFFFFFF  # KSampler's seed range (torch generators take any uint64)


def seeded_noise(shape: Sequence[int], seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard-normal noise of `shape` drawn on the CPU from a generator seeded with `seed`.

    A private generator, not ``torch.manual_seed``: the global RNG other nodes use stays untouched. The numbers
    are the same as ComfyUI's ``comfy.sample.prepare_noise`` for a latent of that shape and seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: must be an integer, got {type(seed).__name__}")
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed: must be between 0 and {SEED_MAX}, got {seed}")
    dims = [int(d) for d in shape]
    if not dims or any(d <= 0 for d in dims):
        raise ValueError(f"shape: every dimension must be positive, got {list(shape)}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(dims, dtype=dtype, generator=generator, device="cpu")


def noise_like(samples: torch.Tensor, seed: int,
               process_out: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Seeded noise with the shape, dtype and device of `samples` (a LATENT's ``samples``).

    ComfyUI's LATENT values are in the VAE's raw scale; the model works on ``process_latent_in(latent)`` (SD1.5:
    times 0.18215). A1111's fill noise is unit-variance in the model's space, so pass the model's
    ``latent_format.process_out`` to store the noise in raw scale: KSampler's ``process_latent_in`` then turns it
    back into exactly the unit noise.
    """
    if not isinstance(samples, torch.Tensor) or samples.ndim < 3:
        raise ValueError("samples: expected a latent tensor [B,C,H,W]")
    noise = seeded_noise(samples.shape, seed)
    if process_out is not None:
        noise = process_out(noise)
    return noise.to(device=samples.device, dtype=samples.dtype)
