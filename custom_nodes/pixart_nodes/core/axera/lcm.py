"""The 4-step LCM schedule of the Axera SD1.5 + LCM-LoRA build, as the reference scripts compute it.

The UNet was compiled with its time-embedding MLP cut off, so the schedule is fixed: timesteps 999/759/499/259,
each fed as a precomputed row of ``time_input_txt2img.npy``. There is no classifier-free guidance: one conditional
UNet pass per step. The arithmetic is float32 numpy with torch's float32 ``linspace``/``cumprod`` for the
alphas and ``torch.Generator`` for noise, so that a seed gives the same latents as the Pi service.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

TIMESTEPS: tuple[int, ...] = (999, 759, 499, 259)
VAE_SCALE = 0.18215
TIMESTEP_SCALING = 10.0
SIGMA_DATA = 0.5
# the VAE posterior is sampled with its own generator seeded 0, as in the AXERA scripts and the Pi service;
# the request seed drives the initial latent and the per-step noise
POSTERIOR_SEED = 0

# (upper bound of denoising strength, first step index): the Pi service's mapping
STRENGTH_TABLE: tuple[tuple[float, int], ...] = ((0.35, 3), (0.60, 2), (0.85, 1))


@lru_cache(maxsize=1)
def alphas_cumprod() -> np.ndarray:
    """``float32 [1000]`` cumulative alphas of SD1.5's scaled-linear beta schedule."""
    import torch

    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    acp = torch.cumprod(1.0 - betas, dim=0).numpy()
    acp.setflags(write=False)
    return acp


def start_index(strength: float) -> int:
    """Index into TIMESTEPS where img2img starts: weaker strength skips the noisiest steps."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"denoising_strength: must be between 0 and 1, got {strength}")
    for bound, index in STRENGTH_TABLE:
        if strength <= bound:
            return index
    return 0


def boundary_coefficients(t: int) -> tuple[float, float]:
    """(c_skip, c_out) of the LCM consistency parametrisation at timestep t."""
    s = t * TIMESTEP_SCALING
    c_skip = SIGMA_DATA**2 / (s**2 + SIGMA_DATA**2)
    c_out = s / (s**2 + SIGMA_DATA**2) ** 0.5
    return c_skip, c_out


def step(latent: np.ndarray, eps: np.ndarray, t: int, prev_t: int, noise: np.ndarray | None) -> np.ndarray:
    """One LCM step from ``latent`` at t given the UNet's epsilon; ``noise`` is None on the last step."""
    acp = alphas_cumprod()
    a_t = acp[t]
    b_t = 1 - a_t
    c_skip, c_out = boundary_coefficients(t)
    x0 = (latent - b_t**0.5 * eps) / a_t**0.5
    denoised = c_out * x0 + c_skip * latent
    if noise is None:
        return denoised.astype(np.float32, copy=False)
    a_prev = acp[prev_t]
    return (a_prev**0.5 * denoised + (1 - a_prev) ** 0.5 * noise).astype(np.float32, copy=False)


def add_noise(x0: np.ndarray, noise: np.ndarray, t: int) -> np.ndarray:
    """DDPM forward noising of a clean latent to timestep t (img2img start)."""
    a_t = alphas_cumprod()[t]
    return (a_t**0.5 * x0 + (1 - a_t) ** 0.5 * noise).astype(np.float32, copy=False)


def make_generator(seed: int):
    import torch

    if not 0 <= seed < 2**64:
        raise ValueError(f"seed: must be between 0 and 2**64-1, got {seed}")
    return torch.Generator().manual_seed(seed)


def randn(shape: tuple[int, ...], generator) -> np.ndarray:
    import torch

    return torch.randn(shape, generator=generator, dtype=torch.float32).numpy()


def sample_posterior(moments: np.ndarray) -> np.ndarray:
    """Scaled latent from the VAE encoder's ``mean || logvar`` moments ``[1, 2C, h, w]``."""
    mean, logvar = np.split(moments.astype(np.float32, copy=False), 2, axis=1)
    # diffusers' DiagonalGaussianDistribution clamps logvar the same way before sampling
    std = np.exp(0.5 * np.clip(logvar, -30.0, 20.0))
    noise = randn(mean.shape, make_generator(POSTERIOR_SEED))
    return ((mean + std * noise) * np.float32(VAE_SCALE)).astype(np.float32, copy=False)
