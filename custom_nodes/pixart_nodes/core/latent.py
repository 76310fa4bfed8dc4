"""Seeded random latents as A1111 draws them: the "latent noise" inpainting fill, variation seeds, "resize seed
from", and A1111's latent upscale modes for hires fix.

A1111 fills the repainted part of the encoded init image with ``create_random_tensors(shape, seeds)``, which draws
the same numbers as the sampler's own initial noise. ComfyUI's KSampler draws its noise with
``torch.randn(latent.size(), generator=torch.manual_seed(seed), device="cpu")`` over the whole batch, so drawing
the same way here makes the fill, in the model's latent space, equal to the noise KSampler adds for that seed.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

SEED_MAX = 0xFFFFFFFFFFFFFFFF  # KSampler's seed range (torch generators take any uint64)


def seeded_noise(shape: Sequence[int], seed: int, dtype: torch.dtype = torch.float32,
                 batch_index: Sequence[int] | None = None) -> torch.Tensor:
    """Standard-normal noise of `shape` drawn on the CPU from a generator seeded with `seed`.

    A private generator, not ``torch.manual_seed``: the global RNG other nodes use stays untouched. The numbers
    are the same as ComfyUI's ``comfy.sample.prepare_noise`` for a latent of that shape and seed, and of that
    `batch_index` (a LATENT's own, from Latent From Batch and the like): image i gets draw ``batch_index[i]`` of
    one image each, which differs from one draw for the whole batch wherever an image is not a multiple of 16
    values.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: must be an integer, got {type(seed).__name__}")
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed: must be between 0 and {SEED_MAX}, got {seed}")
    dims = [int(d) for d in shape]
    if not dims or any(d <= 0 for d in dims):
        raise ValueError(f"shape: every dimension must be positive, got {list(shape)}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if batch_index is None:
        return torch.randn(dims, dtype=dtype, generator=generator, device="cpu")
    inds = [int(i) for i in batch_index]
    if len(inds) != dims[0] or min(inds) < 0:
        raise ValueError(f"batch_index: {inds[:8]} does not number the latent's {dims[0]} image(s)")
    wanted, draws = set(inds), {}
    for i in range(max(inds) + 1):  # every draw up to the last index, as prepare_noise, keeping the ones used
        draw = torch.randn([1, *dims[1:]], dtype=dtype, generator=generator, device="cpu")
        if i in wanted:
            draws[i] = draw
    return torch.cat([draws[i] for i in inds])


def noise_like(samples: torch.Tensor, seed: int,
               process_out: Callable[[torch.Tensor], torch.Tensor] | None = None,
               batch_index: Sequence[int] | None = None) -> torch.Tensor:
    """Seeded noise with the shape, dtype and device of `samples` (a LATENT's ``samples``), drawn per
    `batch_index` as `seeded_noise` says.

    ComfyUI's LATENT values are in the VAE's raw scale; the model works on ``process_latent_in(latent)`` (SD1.5:
    times 0.18215). A1111's fill noise is unit-variance in the model's space, so pass the model's
    ``latent_format.process_out`` to store the noise in raw scale: KSampler's ``process_latent_in`` then turns it
    back into exactly the unit noise.
    """
    if not isinstance(samples, torch.Tensor) or samples.ndim < 3:
        raise ValueError("samples: expected a latent tensor [B,C,H,W]")
    noise = seeded_noise(samples.shape, seed, batch_index=batch_index)
    if process_out is not None:
        noise = process_out(noise)
    return noise.to(device=samples.device, dtype=samples.dtype)


# ---------------------------------------------------------------------------------------------------------------
# A1111's initial noise: variation seeds ("subseeds"), "resize seed from", the batch numbering


def a1111_slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical blend of two noises of one image ``[C,H,W]``, the way A1111's ``rng.slerp`` does it.

    A1111 normalises along dim 1 of the per-image tensor (the rows), so every (channel, column) gets its own angle;
    two nearly parallel noises fall back to a linear mix whose weights A1111 writes the other way round
    (``low * t + high * (1 - t)``). Both quirks are kept: they decide the numbers a variation seed gives.
    """
    low_dir = low / torch.linalg.vector_norm(low, dim=1, keepdim=True)
    high_dir = high / torch.linalg.vector_norm(high, dim=1, keepdim=True)
    cos = (low_dir * high_dir).sum(1)
    if cos.mean() > 0.9995:
        return low * t + high * (1 - t)
    angle = torch.acos(cos)
    sin = torch.sin(angle)
    w_low = (torch.sin((1.0 - t) * angle) / sin).unsqueeze(1)
    w_high = (torch.sin(t * angle) / sin).unsqueeze(1)
    return w_low * low + w_high * high


def _centre_paste(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """`source` ``[C,h,w]`` centred on `target` ``[C,H,W]``; where it is larger, its centre is kept (A1111's
    "resize seed from" placement)."""
    out = target.clone()
    dx = (target.shape[2] - source.shape[2]) // 2
    dy = (target.shape[1] - source.shape[1]) // 2
    w = source.shape[2] if dx >= 0 else source.shape[2] + 2 * dx
    h = source.shape[1] if dy >= 0 else source.shape[1] + 2 * dy
    tx, ty = max(dx, 0), max(dy, 0)
    sx, sy = max(-dx, 0), max(-dy, 0)
    out[:, ty:ty + h, tx:tx + w] = source[:, sy:sy + h, sx:sx + w]
    return out


def a1111_image_noise(shape: Sequence[int], seed: int, subseed: int = 0, strength: float = 0.0,
                      resize_from: tuple[int, int] | None = None) -> torch.Tensor:
    """One image's initial noise ``[C,H,W]`` as A1111 draws it with its CPU generator (``ImageRNG.first``).

    Without a variation (`strength` 0) and without `resize_from` this is ``seeded_noise(shape, seed)``: the very
    numbers ComfyUI's KSampler draws for a batch of one. With `strength` the seed's noise is blended towards the
    `subseed`'s (`a1111_slerp`); with `resize_from` = (width, height) in pixels both are drawn at that size and put
    in the centre of the seed's full-size noise, so a picture keeps its composition at a new size.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"subseed_strength: must be between 0 and 1, got {strength}")
    full = tuple(int(d) for d in shape)
    if len(full) != 3:
        raise ValueError(f"shape: expected [C,H,W], got {list(shape)}")
    drawn = full
    if resize_from is not None and resize_from[0] > 0 and resize_from[1] > 0:
        drawn = (full[0], max(1, resize_from[1] // 8), max(1, resize_from[0] // 8))
    noise = seeded_noise(drawn, seed)
    if strength != 0:
        noise = a1111_slerp(strength, noise, seeded_noise(drawn, subseed))
    if drawn != full:
        noise = _centre_paste(seeded_noise(full, seed), noise)
    return noise


def a1111_batch_noise(shape: Sequence[int], seed: int, subseed: int = 0, strength: float = 0.0,
                      resize_from: tuple[int, int] | None = None) -> torch.Tensor:
    """Initial noise ``[B,C,H,W]`` with A1111's numbering: image i is drawn on its own from seed + i (or from
    `seed` for every image when a variation `strength` is set) and subseed + i, as A1111's ``all_seeds`` and
    ``all_subseeds`` are. A batch of one equals ``a1111_image_noise``."""
    batch, *rest = (int(d) for d in shape)
    return torch.stack([a1111_image_noise(rest, _wrap_seed(seed + (i if strength == 0 else 0)),
                                          _wrap_seed(subseed + i), strength, resize_from) for i in range(batch)])


def _wrap_seed(seed: int) -> int:
    return seed % (SEED_MAX + 1)


# ---------------------------------------------------------------------------------------------------------------
# A1111's latent upscale modes (hires fix): torch interpolation on the latent grid

LATENT_UPSCALE_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


def latent_upscale(samples: torch.Tensor, width: int, height: int, mode: str) -> torch.Tensor:
    """`samples` ``[B,C,h,w]`` resized to the latent grid of `width` x `height` pixels (each // 8) with one of
    A1111's six latent upscale modes (`LATENT_UPSCALE_MODES`: interpolation and antialiasing)."""
    if mode not in LATENT_UPSCALE_MODES:
        raise ValueError(f"mode: must be one of {', '.join(LATENT_UPSCALE_MODES)}, got {mode!r}")
    if width < 8 or height < 8:
        raise ValueError(f"width/height: must be at least 8 pixels, got {width}x{height}")
    # a video model's latent [B,C,T,H,W] (or an empty one) would fail inside torch, naming no input
    if samples.ndim != 4 or 0 in samples.shape[2:]:
        raise ValueError(f"samples: expected an image latent [B,C,H,W] with H, W > 0, got {list(samples.shape)}")
    interpolation, antialias = LATENT_UPSCALE_MODES[mode]
    size = (int(height) // 8, int(width) // 8)
    kwargs = {"antialias": True} if antialias else {}
    out = torch.nn.functional.interpolate(samples.float(), size=size, mode=interpolation, **kwargs)
    return out.to(samples.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Replacing a sampler's initial noise (used through ComfyUI's OUTER_SAMPLE wrapper by PixartVariationSeed)


@dataclass(frozen=True)
class NoisePlan:
    """What a sampler's initial noise becomes, and which seed its later (ancestral/SDE) noise is drawn from.

    `seed` draws the initial noise; `sampler_seed_delta` is added to the seed the sampler hands on to its own
    per-step noise (A1111's "eta noise seed delta"); `noise_multiplier` scales the initial noise (A1111's img2img
    "noise multiplier"). With `batch_seeds` "comfyui" the sampler's noise is left exactly as drawn unless something
    asks for a change; "a1111" always draws image i on its own (seed + i).
    """

    seed: int
    subseed: int = 0
    subseed_strength: float = 0.0
    resize_from: tuple[int, int] | None = None
    sampler_seed_delta: int = 0
    noise_multiplier: float = 1.0
    batch_seeds: str = "comfyui"

    def replaces_noise(self, shape: Sequence[int]) -> bool:
        # Nothing asked for: the sampler's own noise, from its own seed. (A graph tuned in the editor changes the
        # KSampler's seed; with the node's defaults that must still change the picture.)
        return (self.batch_seeds == "a1111" and int(shape[0]) > 1) or self.subseed_strength != 0 \
            or self.resize_from is not None or self.noise_multiplier != 1.0

    def apply(self, noise: torch.Tensor, sampler_seed: int | None) -> tuple[torch.Tensor, int | None]:
        """(initial noise, seed for the sampler's own noise) for a sampler about to start from `noise`."""
        out_seed = sampler_seed
        if sampler_seed is not None and self.sampler_seed_delta:
            out_seed = _wrap_seed(int(sampler_seed) + int(self.sampler_seed_delta))
        # An all-zero noise is a sampler told not to add any (KSamplerAdvanced add_noise off): it stays so.
        if noise.ndim != 4 or not torch.count_nonzero(noise) or not self.replaces_noise(noise.shape):
            return noise, out_seed
        fresh = a1111_batch_noise(noise.shape, self.seed, self.subseed, self.subseed_strength, self.resize_from)
        if self.noise_multiplier != 1.0:
            fresh = fresh * self.noise_multiplier
        return fresh.to(device=noise.device, dtype=noise.dtype), out_seed
