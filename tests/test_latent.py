"""PixartNoiseLatent and core.latent: seeded noise equal to what KSampler draws, scaled by the real latent format."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from pixart_nodes.core import latent
from pixart_nodes.nodes_latent import NODE_CLASS_MAPPINGS, PixartNoiseLatent


def _prepare_noise_reference(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """What ComfyUI's comfy.sample.prepare_noise does (global RNG seeded, CPU randn over the whole batch)."""
    state = torch.get_rng_state()
    try:
        generator = torch.manual_seed(seed)
        return torch.randn(shape, dtype=torch.float32, generator=generator, device="cpu")
    finally:
        torch.set_rng_state(state)


@pytest.mark.parametrize("seed", [0, 7, 2**32 + 5, latent.SEED_MAX])
def test_noise_equals_ksampler_noise_for_the_seed(seed):
    shape = (2, 4, 8, 6)
    got = latent.seeded_noise(shape, seed)
    assert got.shape == shape and got.dtype == torch.float32
    assert torch.equal(got, _prepare_noise_reference(shape, seed))


def test_noise_is_standard_normal_and_depends_on_the_seed():
    a = latent.seeded_noise((1, 4, 64, 64), 1)
    b = latent.seeded_noise((1, 4, 64, 64), 2)
    assert not torch.equal(a, b)
    assert abs(float(a.mean())) < 0.05 and abs(float(a.std()) - 1.0) < 0.05
    # the batch is one draw, as KSampler's: image 0 of a batch of 2 is the batch-of-1 noise
    assert torch.equal(latent.seeded_noise((2, 4, 8, 8), 3)[:1], latent.seeded_noise((1, 4, 8, 8), 3))


def test_global_rng_untouched():
    state = torch.get_rng_state()
    latent.seeded_noise((1, 4, 8, 8), 99)
    assert torch.equal(torch.get_rng_state(), state)


def test_noise_like_follows_the_reference_dtype_and_scale():
    ref = torch.zeros((1, 4, 5, 7), dtype=torch.float16)
    out = latent.noise_like(ref, 11, lambda t: t * 3.0)
    assert out.shape == ref.shape and out.dtype == torch.float16
    assert torch.allclose(out.float(), (latent.seeded_noise(ref.shape, 11) * 3.0).half().float())


@pytest.mark.parametrize("call, field", [
    (lambda: latent.seeded_noise((1, 4, 8, 8), -1), "seed"),
    (lambda: latent.seeded_noise((1, 4, 8, 8), latent.SEED_MAX + 1), "seed"),
    (lambda: latent.seeded_noise((1, 4, 8, 8), 1.5), "seed"),
    (lambda: latent.seeded_noise((1, 0, 8, 8), 1), "shape"),
    (lambda: latent.noise_like([[1.0]], 1), "samples"),
])
def test_bad_input_names_the_field(call, field):
    with pytest.raises((ValueError, TypeError), match=field):
        call()


class _Patcher:
    """Holds a model's latent format the way ComfyUI's ModelPatcher hands it out (get_model_object)."""

    def __init__(self, latent_format: object) -> None:
        self.latent_format = latent_format

    def get_model_object(self, name: str) -> object:
        return getattr(self, name)


def _comfy_latent_formats(comfyui_dir: Path):
    spec = importlib.util.spec_from_file_location("_comfy_latent_formats", comfyui_dir / "comfy" / "latent_formats.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_node_scales_into_raw_latent_space_with_comfyuis_sd15_format(comfyui_dir):
    formats = _comfy_latent_formats(comfyui_dir)
    fmt = formats.SD15()
    reference = {"samples": torch.randn((1, 4, 8, 8)), "noise_mask": torch.ones((1, 64, 64))}
    (out,) = PixartNoiseLatent().run(reference, 5, model=_Patcher(fmt))
    assert set(out) == {"samples"} and out["samples"].shape == (1, 4, 8, 8)
    unit = latent.seeded_noise((1, 4, 8, 8), 5)
    # KSampler's process_latent_in turns the stored latent back into exactly the unit noise
    assert torch.allclose(fmt.process_in(out["samples"]), unit, atol=1e-6)
    assert torch.allclose(out["samples"], unit / 0.18215, atol=1e-5)
    (plain,) = PixartNoiseLatent().run(reference, 5)
    assert torch.equal(plain["samples"], unit)


def test_node_declaration():
    assert NODE_CLASS_MAPPINGS["PixartNoiseLatent"] is PixartNoiseLatent
    spec = PixartNoiseLatent.INPUT_TYPES()
    assert PixartNoiseLatent.CATEGORY == "Pixart/Latent" and PixartNoiseLatent.DESCRIPTION
    for section in spec.values():
        for name, (_kind, opts) in section.items():
            assert opts.get("tooltip"), name
