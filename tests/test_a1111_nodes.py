"""The pack's A1111 nodes without ComfyUI: variation-seed noise (against a plain-numpy slerp), the noise plan a
sampler gets, A1111's latent upscale modes, wrap-around convolutions (against torch's own circular padding), and
the SD-upscale tile grid (against a Pillow re-creation of A1111's split_grid/combine_grid)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from pixart_nodes.core import latent, tiling
from pixart_nodes.nodes_latent import PixartLatentUpscale, PixartVariationSeed
from pixart_nodes.nodes_tiling import PixartSeamlessTiling, PixartTileMerge, PixartTileSplit

# ---------------------------------------------------------------------------------------------------------------
# Variation seeds


def numpy_slerp(t: float, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """A1111's blend written column by column: for every channel c and column x, the two column vectors over the
    rows are blended by the angle between them (weights applied to the unnormalised vectors)."""
    out = np.empty_like(low)
    cos_all = []
    for c in range(low.shape[0]):
        for x in range(low.shape[2]):
            a, b = low[c, :, x], high[c, :, x]
            cos_all.append(float(np.dot(a / np.linalg.norm(a), b / np.linalg.norm(b))))
    if np.mean(cos_all) > 0.9995:
        return low * t + high * (1 - t)
    k = 0
    for c in range(low.shape[0]):
        for x in range(low.shape[2]):
            angle = math.acos(cos_all[k])
            k += 1
            out[c, :, x] = (math.sin((1 - t) * angle) * low[c, :, x] + math.sin(t * angle) * high[c, :, x]) \
                / math.sin(angle)
    return out


@pytest.mark.parametrize("strength", [0.1, 0.5, 0.93])
def test_variation_blend_matches_a_column_by_column_slerp(strength):
    base = latent.seeded_noise((4, 6, 5), 11)
    sub = latent.seeded_noise((4, 6, 5), 12)
    got = latent.a1111_image_noise((4, 6, 5), 11, 12, strength)
    ref = numpy_slerp(strength, base.numpy().astype(np.float64), sub.numpy().astype(np.float64))
    assert np.allclose(got.numpy(), ref, atol=1e-5)


def test_variation_ends_and_seed_numbering():
    shape = (4, 8, 8)
    assert torch.equal(latent.a1111_image_noise(shape, 5), latent.seeded_noise(shape, 5))
    assert torch.allclose(latent.a1111_image_noise(shape, 5, 9, 1.0), latent.seeded_noise(shape, 9), atol=1e-5)
    # the same seed as variation seed: A1111's near-parallel branch, its weights the other way round
    same = latent.a1111_image_noise(shape, 5, 5, 0.25)
    assert torch.allclose(same, latent.seeded_noise(shape, 5), atol=1e-6)
    # A1111's batch rule: without variation image i has seed + i; with it, every image keeps the seed and the
    # variation seed counts up
    batch = latent.a1111_batch_noise((3, *shape), 5)
    assert all(torch.equal(batch[i], latent.seeded_noise(shape, 5 + i)) for i in range(3))
    varied = latent.a1111_batch_noise((2, *shape), 5, 20, 0.5)
    assert torch.allclose(varied[1], latent.a1111_image_noise(shape, 5, 21, 0.5))
    # a batch of one is ComfyUI's KSampler noise for that seed
    assert torch.equal(latent.a1111_batch_noise((1, *shape), 5)[0], latent.seeded_noise((1, *shape), 5)[0])


def test_resize_seed_from_centres_the_small_noise_in_the_seed_noise():
    full = latent.a1111_image_noise((4, 12, 10), 3, resize_from=(48, 64))  # drawn at 6x8 latents, centred
    small = latent.seeded_noise((4, 8, 6), 3)
    assert torch.equal(full[:, 2:10, 2:8], small)
    outside = latent.seeded_noise((4, 12, 10), 3)
    assert torch.equal(full[:, :2], outside[:, :2]) and torch.equal(full[:, :, 8:], outside[:, :, 8:])
    # larger than the picture: its centre is kept
    cropped = latent.a1111_image_noise((4, 4, 4), 3, resize_from=(64, 64))
    assert torch.equal(cropped, latent.seeded_noise((4, 8, 8), 3)[:, 2:6, 2:6])


def test_bad_strength_is_refused_naming_it():
    with pytest.raises(ValueError, match="subseed_strength"):
        latent.a1111_image_noise((4, 8, 8), 1, 2, 1.5)


def test_noise_plan_leaves_the_sampler_alone_unless_asked():
    noise = latent.seeded_noise((2, 4, 8, 8), 7)
    plan = latent.NoisePlan(seed=7)
    out, seed = plan.apply(noise, 7)
    assert out is noise and seed == 7  # ComfyUI's batch draw kept
    out, seed = latent.NoisePlan(seed=7, sampler_seed_delta=31337).apply(noise, 7)
    assert out is noise and seed == 7 + 31337  # ENSD: only the sampler's own later noise moves
    out, _ = latent.NoisePlan(seed=7, batch_seeds="a1111").apply(noise, 7)
    assert torch.equal(out[1], latent.seeded_noise((4, 8, 8), 8))  # image 1 from seed 8
    out, _ = latent.NoisePlan(seed=7, subseed=1, subseed_strength=0.3).apply(noise[:1], 7)
    assert torch.allclose(out[0], latent.a1111_image_noise((4, 8, 8), 7, 1, 0.3))
    out, _ = latent.NoisePlan(seed=7, noise_multiplier=0.5).apply(noise[:1], 7)
    assert torch.allclose(out, noise[:1] * 0.5)
    zeros = torch.zeros((1, 4, 8, 8))
    out, _ = latent.NoisePlan(seed=7, subseed_strength=0.5).apply(zeros, 7)
    assert out is zeros  # "add_noise: disable" stays noiseless


class _Patcher:
    """The ModelPatcher calls PixartVariationSeed makes (clone, wrappers by key)."""

    def __init__(self) -> None:
        self.wrappers: dict[str, dict[str, list]] = {}

    def clone(self) -> _Patcher:
        other = _Patcher()
        other.wrappers = {k: {kk: list(vv) for kk, vv in v.items()} for k, v in self.wrappers.items()}
        return other

    def remove_wrappers_with_key(self, kind: str, key: str) -> None:
        self.wrappers.get(kind, {}).pop(key, None)

    def add_wrapper_with_key(self, kind: str, key: str, fn) -> None:
        self.wrappers.setdefault(kind, {}).setdefault(key, []).append(fn)


def test_variation_node_wraps_outer_sample_once(monkeypatch):
    import sys
    import types

    ext = types.ModuleType("comfy.patcher_extension")
    ext.WrappersMP = types.SimpleNamespace(OUTER_SAMPLE="outer_sample")
    monkeypatch.setitem(sys.modules, "comfy", types.ModuleType("comfy"))
    monkeypatch.setitem(sys.modules, "comfy.patcher_extension", ext)
    node = PixartVariationSeed()
    (first,) = node.patch(_Patcher(), 5, 6, 0.5, 0, 0, "comfyui", 100, 1.0)
    (second,) = node.patch(first, 5, 6, 0.5, 0, 0, "comfyui", 0, 1.0)
    (wrapper,) = second.wrappers["outer_sample"]["pixart_variation_seed"]
    seen = {}

    def executor(noise, latent_image, sampler, sigmas, mask, callback, pbar, seed):
        seen.update(noise=noise, seed=seed)
        return "done"

    noise = latent.seeded_noise((1, 4, 8, 8), 5)
    assert wrapper(executor, noise, None, None, None, None, None, False, 5) == "done"
    assert seen["seed"] == 5 and torch.allclose(seen["noise"][0], latent.a1111_image_noise((4, 8, 8), 5, 6, 0.5))


def test_latent_upscale_modes_are_a1111s():
    src = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4, 4)
    (out,) = PixartLatentUpscale().upscale({"samples": src, "noise_mask": torch.ones(1)}, 64, 48, "Latent")
    assert out["samples"].shape == (2, 4, 6, 8) and "noise_mask" not in out
    # nearest-exact on an exact 2x grid repeats every cell twice
    (near,) = PixartLatentUpscale().upscale({"samples": src}, 64, 64, "Latent (nearest-exact)")
    assert torch.equal(near["samples"], src.repeat_interleave(2, 2).repeat_interleave(2, 3))
    # bilinear without antialias agrees with Pillow's bilinear on an upscale (no antialias filter involved)
    plane = np.random.default_rng(0).random((5, 7)).astype(np.float32)
    torch_up = latent.latent_upscale(torch.from_numpy(plane)[None, None], 14 * 8, 10 * 8, "Latent")[0, 0].numpy()
    pil_up = np.asarray(Image.fromarray(plane, mode="F").resize((14, 10), Image.BILINEAR))
    assert np.abs(torch_up - pil_up)[1:-1, 1:-1].max() < 1e-4
    aa = latent.latent_upscale(src, 16, 16, "Latent (antialiased)")  # a downscale: antialias matters
    assert not torch.allclose(aa, latent.latent_upscale(src, 16, 16, "Latent"))
    with pytest.raises(ValueError, match="mode"):
        latent.latent_upscale(src, 64, 64, "Lanczos")


# ---------------------------------------------------------------------------------------------------------------
# Seamless tiling


def _net(seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 3, 5, padding=2))


def test_circular_convs_equal_torchs_circular_padding_and_are_undone():
    net = _net(1)
    x = torch.randn(1, 3, 16, 16)
    plain = net(x)
    ref = _net(1)
    for m in ref.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.padding_mode = "circular"
    with tiling.circular_convs(net, "both") as switched:
        assert switched == 3
        wrapped = net(x)
    assert torch.allclose(wrapped, ref(x), atol=1e-6)
    assert torch.equal(net(x), plain)  # back to zero padding afterwards
    # a circular net commutes with circular shifts by its total stride: the picture has no edge
    with tiling.circular_convs(net, "both"):
        shifted = net(torch.roll(x, shifts=(4, 6), dims=(2, 3)))
    assert torch.allclose(shifted, torch.roll(wrapped, shifts=(2, 3), dims=(2, 3)), atol=1e-5)


def test_one_axis_wraps_alone():
    net = _net(2)
    x = torch.randn(1, 3, 16, 16)
    with tiling.circular_convs(net, "x only"):
        only_x = net(torch.roll(x, shifts=4, dims=3))
        base = net(x)
    assert torch.allclose(only_x, torch.roll(base, shifts=2, dims=3), atol=1e-5)
    with tiling.circular_convs(net, "x only"):
        moved_y = net(torch.roll(x, shifts=4, dims=2))
    assert not torch.allclose(moved_y, torch.roll(base, shifts=2, dims=2), atol=1e-3)
    with pytest.raises(ValueError, match="tiling"):
        with tiling.circular_convs(net, "diagonal"):
            pass


def test_seam_ratio_tells_a_tiling_picture_from_a_seamed_one():
    y, x = np.mgrid[0:64, 0:64]
    periodic = 128 + 100 * np.sin(2 * np.pi * x / 64) * np.cos(2 * np.pi * y / 32)
    ramp = x * 4.0
    # a sine is steepest where it wraps: pi/2 times its mean step
    assert tiling.seam_ratio(periodic, 1) < 2 and tiling.seam_ratio(periodic, 0) < 2
    assert tiling.seam_ratio(ramp, 1) > 20


class _Vae:
    def __init__(self) -> None:
        self.first_stage_model = _net(3)

    def decode(self, z):
        return self.first_stage_model(z)


def test_seamless_node_wraps_the_vae_only_in_its_copy():
    vae = _Vae()
    z = torch.randn(1, 3, 16, 16)
    plain = vae.decode(z)
    model, wrapped = PixartSeamlessTiling().apply.__func__(PixartSeamlessTiling(), "m", vae, "disabled")
    assert model == "m" and wrapped is vae
    from pixart_nodes import nodes_tiling

    copy_ = nodes_tiling._wrapping_vae(vae, "both")
    ref = _net(3)
    for m in ref.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.padding_mode = "circular"
    assert torch.allclose(copy_.decode(z), ref(z), atol=1e-6)
    assert torch.equal(vae.decode(z), plain)  # the original VAE object is untouched


# ---------------------------------------------------------------------------------------------------------------
# SD upscale grid


def pil_split_combine(image: Image.Image, tile_w: int, tile_h: int, overlap: int, change) -> Image.Image:
    """A1111's split_grid + combine_grid re-created with Pillow calls (crop, paste with an 8-bit mask)."""
    w, h = image.size
    cols = math.ceil((w - overlap) / (tile_w - overlap))
    rows = math.ceil((h - overlap) / (tile_h - overlap))
    dx = (w - tile_w) / (cols - 1) if cols > 1 else 0
    dy = (h - tile_h) / (rows - 1) if rows > 1 else 0
    grid = []
    for row in range(rows):
        y = min(int(row * dy), h - tile_h) if int(row * dy) + tile_h >= h else int(row * dy)
        cells = []
        for col in range(cols):
            x = int(col * dx)
            x = w - tile_w if x + tile_w >= w else x
            cells.append((x, change(image.crop((x, y, x + tile_w, y + tile_h)))))
        grid.append((y, cells))
    mask_w = Image.fromarray((np.arange(overlap, dtype=np.float32).reshape(1, overlap).repeat(tile_h, 0) * 255
                              / overlap).astype(np.uint8), "L")
    mask_h = Image.fromarray((np.arange(overlap, dtype=np.float32).reshape(overlap, 1).repeat(w, 1) * 255
                              / overlap).astype(np.uint8), "L")
    out = Image.new("RGB", (w, h))
    for y, cells in grid:
        row_im = Image.new("RGB", (w, tile_h))
        for x, tile in cells:
            if x == 0:
                row_im.paste(tile, (0, 0))
                continue
            row_im.paste(tile.crop((0, 0, overlap, tile_h)), (x, 0), mask=mask_w)
            row_im.paste(tile.crop((overlap, 0, tile_w, tile_h)), (x + overlap, 0))
        if y == 0:
            out.paste(row_im, (0, 0))
            continue
        out.paste(row_im.crop((0, 0, w, overlap)), (0, y), mask=mask_h)
        out.paste(row_im.crop((0, overlap, w, tile_h)), (0, y + overlap))
    return out


@pytest.mark.parametrize("size,tile,overlap", [((128, 128), (64, 64), 8), ((200, 136), (64, 48), 16),
                                               ((64, 64), (64, 64), 8), ((150, 70), (64, 64), 0),
                                               # smaller than the tile on a side: tiles at negative places
                                               ((150, 40), (64, 64), 8), ((40, 150), (64, 64), 8),
                                               ((30, 20), (64, 64), 8)])
def test_grid_split_and_merge_match_a1111s_pillow_steps(size, tile, overlap):
    rng = np.random.default_rng(size[0])
    picture = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    pil = Image.fromarray(picture)
    # every tile changed differently, so the blends are visible
    counter = iter(range(1000))

    def darken(tile_im: Image.Image, k: int | None = None) -> Image.Image:
        k = next(counter) if k is None else k
        return Image.fromarray((np.asarray(tile_im).astype(int) * (k % 5 + 3) // 8).astype(np.uint8))

    expected = np.asarray(pil_split_combine(pil, tile[0], tile[1], overlap, darken)).astype(int)
    tiles = tiling.split(picture, tile[0], tile[1], overlap)
    assert tiles.shape == (len(tiles), tile[1], tile[0], 3)
    changed = np.stack([np.asarray(darken(Image.fromarray(t), k)) for k, t in enumerate(tiles)])
    merged = tiling.merge(changed.astype(np.float64), size[0], size[1], overlap)
    assert merged.shape == (size[1], size[0], 3)
    assert np.abs(np.rint(merged) - expected).max() <= 1


def test_grid_round_trip_nodes_and_bad_counts():
    picture = torch.rand(2, 100, 120, 3)
    (tiles,) = PixartTileSplit().split(picture, 64, 64, 16)
    per = sum(len(xs) for _, xs in tiling.grid_positions(120, 100, 64, 64, 16))
    assert tiles.shape == (2 * per, 64, 64, 3)
    (back,) = PixartTileMerge().merge(tiles, picture, 16)
    assert back.shape == picture.shape and torch.allclose(back, picture, atol=1e-5)
    with pytest.raises(ValueError, match="tiles"):
        PixartTileMerge().merge(tiles[:-1], picture, 16)
    with pytest.raises(ValueError, match="overlap"):
        tiling.grid_positions(128, 128, 64, 64, 64)


def test_a_grid_of_up_to_half_a_tile_of_overlap_is_cut_and_more_is_refused():
    # every picture size and tile, with an overlap up to half the tile, is cut (the limit never bites A1111's use)
    for width in (1, 40, 64, 100, 511, 512, 513, 1000, 2048):
        for height in (1, 63, 700):
            for tile in (64, 72, 512):
                for overlap in (0, 8, tile // 4, tile // 2):
                    tiling.grid_positions(width, height, tile, tile, overlap)
    # a 64-pixel tile overlapping by 56 cut 1024x1024 into 14,641 tiles, 57 times its area
    with pytest.raises(ValueError, match="overlap: 56 of a 64x64 tile makes 14641 tiles"):
        tiling.grid_positions(1024, 1024, 64, 64, 56)
    with pytest.raises(ValueError, match="overlap"):
        tiling.grid_positions(4096, 64, 64, 64, 56)  # along one side too


def test_new_nodes_declare_tooltips_and_categories():
    for cls in (PixartVariationSeed, PixartLatentUpscale, PixartSeamlessTiling, PixartTileSplit, PixartTileMerge):
        assert cls.DESCRIPTION and cls.CATEGORY.startswith("Pixart/")
        for section in cls.INPUT_TYPES().values():
            for name, (_kind, opts) in section.items():
                assert opts.get("tooltip"), (cls.__name__, name)


def test_latent_upscale_names_a_latent_it_cannot_resize():
    # a video latent [B,C,T,H,W] or one of no rows was an error from inside torch.nn.functional, naming nothing
    for shape in ((1, 16, 3, 8, 8), (1, 4, 8), (1, 4, 0, 8)):
        with pytest.raises(ValueError, match=r"^samples: expected an image latent \[B,C,H,W\]"):
            PixartLatentUpscale().upscale({"samples": torch.zeros(shape)}, 512, 512, "Latent")


def test_lora_stack_text_deep_or_huge_is_refused_naming_it():
    from pixart_nodes.core import loras

    # thousands of brackets: the JSON decoder's RecursionError, no ValueError and no field named
    with pytest.raises(ValueError, match="^loras: nested too deeply"):
        loras.parse_stack("[" * 100_000 + "]" * 100_000)
    # a 1 MB key or name came back whole in the message
    with pytest.raises(ValueError, match=r"^loras\[0\]: unknown keys 'kkk") as e:
        loras.parse_stack('[{"name": "a", "' + "k" * 1_000_000 + '": 1}]')
    assert len(str(e.value)) < 200
    with pytest.raises(ValueError, match="^LoRA 'xxx.+is not in the loras folder") as e:
        loras.resolve_name("x" * 1_000_000, ["a.safetensors"])
    assert len(str(e.value)) < 200
