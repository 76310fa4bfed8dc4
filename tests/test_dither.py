"""Dithering: kernel data, matrices, blue noise, and behaviour on flat greys."""
from __future__ import annotations

import numpy as np
import pytest

from pixart_nodes.core import dither
from pixart_nodes.core.palette import palette_from_hex
from pixart_nodes.core.quantize import quantize

# numerators row by row as printed in /work/shared/reference/pixel-art.md §3.1 (dx, dy, n)
REFERENCE_TAPS = {
    "floyd-steinberg": ([(1, 0, 7), (-1, 1, 3), (0, 1, 5), (1, 1, 1)], 16),
    "atkinson": ([(1, 0, 1), (2, 0, 1), (-1, 1, 1), (0, 1, 1), (1, 1, 1), (0, 2, 1)], 8),
    "jarvis-judice-ninke": (
        [(1, 0, 7), (2, 0, 5)] + [(dx, 1, n) for dx, n in zip(range(-2, 3), (3, 5, 7, 5, 3))]
        + [(dx, 2, n) for dx, n in zip(range(-2, 3), (1, 3, 5, 3, 1))],
        48,
    ),
    "stucki": (
        [(1, 0, 8), (2, 0, 4)] + [(dx, 1, n) for dx, n in zip(range(-2, 3), (2, 4, 8, 4, 2))]
        + [(dx, 2, n) for dx, n in zip(range(-2, 3), (1, 2, 4, 2, 1))],
        42,
    ),
    "burkes": ([(1, 0, 8), (2, 0, 4)] + [(dx, 1, n) for dx, n in zip(range(-2, 3), (2, 4, 8, 4, 2))], 32),
    "sierra": (
        [(1, 0, 5), (2, 0, 3)] + [(dx, 1, n) for dx, n in zip(range(-2, 3), (2, 4, 5, 4, 2))]
        + [(-1, 2, 2), (0, 2, 3), (1, 2, 2)],
        32,
    ),
    "sierra-two-row": ([(1, 0, 4), (2, 0, 3)] + [(dx, 1, n) for dx, n in zip(range(-2, 3), (1, 2, 3, 2, 1))], 16),
    "sierra-lite": ([(1, 0, 2), (-1, 1, 1), (0, 1, 1)], 4),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_TAPS))
def test_kernels_match_reference_and_weights_sum_to_one(name):
    k = dither.ERROR_KERNELS[name]
    taps, divisor = REFERENCE_TAPS[name]
    assert sorted(k.taps) == sorted(taps) and k.divisor == divisor
    assert k.weights.sum() == pytest.approx(1.0, abs=1e-12)
    # only Atkinson throws error away (6/8 of it is diffused)
    assert k.diffused == (0.75 if name == "atkinson" else 1.0)


def test_bayer_matrices_match_reference():
    assert dither.bayer_matrix(2).tolist() == [[0, 2], [3, 1]]
    assert dither.bayer_matrix(4).tolist() == [[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]]
    b8 = dither.bayer_matrix(8)
    assert b8[0].tolist() == [0, 32, 8, 40, 2, 34, 10, 42]
    assert b8[7].tolist() == [63, 31, 55, 23, 61, 29, 53, 21]
    assert sorted(b8.ravel().tolist()) == list(range(64))
    t = dither.threshold_matrix("bayer-8x8")
    assert t.min() > -0.5 and t.max() < 0.5 and abs(t.mean()) < 1e-12


def test_blue_noise_is_a_permutation_with_high_frequency_spectrum():
    ranks = dither.blue_noise_ranks()
    assert ranks.shape == (64, 64) and sorted(ranks.ravel().tolist()) == list(range(4096))
    assert np.array_equal(ranks, dither.blue_noise_ranks.__wrapped__())  # deterministic, not just cached

    def low_freq_share(binary):
        spec = np.abs(np.fft.fft2(binary - binary.mean())) ** 2
        f = np.fft.fftfreq(64)
        radius = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
        return spec[radius < 0.15].sum() / spec.sum()

    white = np.random.default_rng(0).permutation(4096).reshape(64, 64)
    for level in (0.1, 0.5):
        # blue noise puts far less energy at low frequencies than white noise at the same density
        assert low_freq_share((ranks < level * 4096).astype(float)) < 0.25 * low_freq_share(
            (white < level * 4096).astype(float)
        )


BW = palette_from_hex("#000000 #ffffff")


@pytest.mark.parametrize("serpentine", [True, False])
@pytest.mark.parametrize("distance", ["rgb", "oklab"])
def test_floyd_steinberg_half_grey_is_half_white(serpentine, distance):
    grey = np.full((64, 64, 3), 128, np.uint8)
    res = quantize(grey, BW, dither="floyd-steinberg", serpentine=serpentine, distance=distance)
    # error is diffused in sRGB, so 128/255 of the light comes out white
    assert abs((res.indices == 1).mean() - 128 / 255) < 0.01


@pytest.mark.parametrize("method", [m for m in dither.ERROR_KERNELS if m != "atkinson"])
def test_error_diffusion_keeps_mean_level(method):
    for level in (40, 128, 200):
        img = np.full((48, 48, 3), level, np.uint8)
        res = quantize(img, BW, dither=method, distance="rgb")
        assert abs((res.indices == 1).mean() - level / 255) < 0.02, (method, level)


@pytest.mark.parametrize("method", dither.ORDERED_METHODS)
def test_ordered_half_grey_is_half_white_in_rgb(method):
    res = quantize(np.full((128, 128, 3), 128, np.uint8), BW, dither=method, distance="rgb")
    assert abs((res.indices == 1).mean() - 0.5) < 0.01
    # and the pattern is the tiled matrix: pixels one period apart agree
    n = 64 if method == "blue-noise" else int(method[-1])
    assert np.array_equal(res.indices[:n, :n], res.indices[n : 2 * n, n : 2 * n])


def test_serpentine_and_strength_change_the_result():
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8)[None, :, None], (32, 1, 3))
    a = quantize(ramp, BW, dither="floyd-steinberg", serpentine=True).indices
    b = quantize(ramp, BW, dither="floyd-steinberg", serpentine=False).indices
    assert not np.array_equal(a, b)
    none = quantize(ramp, BW).indices
    assert np.array_equal(quantize(ramp, BW, dither="floyd-steinberg", strength=0.0).indices, none)
    half = quantize(ramp, BW, dither="bayer-4x4", strength=0.5).indices
    full = quantize(ramp, BW, dither="bayer-4x4", strength=1.0).indices
    # weaker dithering stays closer to plain thresholding
    assert (half != none).sum() < (full != none).sum()


def test_floyd_steinberg_tiny_case_by_hand():
    # 2x2 of value 100 -> B/W, left to right, no serpentine. Pixel (0,0): 100 -> black, error 100:
    # right +43.75, below-left dropped, below +31.25, below-right +6.25.
    # (0,1): 143.75 -> white, error -111.25: below-left -20.859375, below -34.765625
    # (1,0): 100 + 31.25 - 20.859375 = 110.39 -> black, error 110.39; right +48.296
    # (1,1): 100 + 6.25 - 34.765625 + 48.296 = 119.78 -> black
    img = np.full((2, 2, 3), 100, np.uint8)
    res = quantize(img, BW, dither="floyd-steinberg", serpentine=False, distance="rgb")
    assert res.indices.tolist() == [[0, 1], [0, 0]]


@pytest.mark.parametrize("distance", ["rgb", "oklab"])
@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("name", ["endesga-32", "pico-8", "random-256"])
def test_floyd_steinberg_loop_matches_generic_kernel_loop(distance, channels, name):
    """The specialised Floyd-Steinberg loops keep error in locals (sRGB: through pair codes, 4-bit fields up
    to 16 colours, else 8-bit); the generic loop runs the kernel's taps through a buffer and searches each
    cell's candidate list. Both must give the same pixels, bit for bit (same float32 sums in the same order)."""
    from pixart_nodes.core import color
    from pixart_nodes.core.palette import named_palette
    from pixart_nodes.core.quantize import _LUT

    if distance == "oklab" and name != "endesga-32":
        pytest.skip("the OKLab loop has no palette-size variants")
    rng = np.random.default_rng(8)
    img = rng.integers(0, 256, (37, 45, channels), dtype=np.uint8)
    if channels == 4:
        img[..., 3] = np.where(rng.random((37, 45)) < 0.2, 0, 255)
    pal = rng.integers(0, 256, (256, 3), dtype=np.uint8) if name == "random-256" else named_palette(name).colors
    n = len(pal)
    use_lab = distance == "oklab"
    pal_cmp = color.srgb_u8_to_oklab(pal) if use_lab else pal.astype(np.float64)
    table = np.zeros((n + 1, channels), np.uint8)
    table[:n, :3] = pal
    if channels == 4:
        table[:n, 3] = 255
    tab = dither.cell_table(pal, use_lab, 5)
    k = dither.ERROR_KERNELS["floyd-steinberg"]
    for serpentine in (True, False):
        for strength in (1.0, 0.7):
            res = quantize(img, pal, dither="floyd-steinberg", distance=distance, serpentine=serpentine,
                           strength=strength, alpha_threshold=128)
            idx = np.empty(img.shape[:2], res.indices.dtype)
            out = np.empty_like(img)
            used = np.zeros(n + 1, np.uint8)
            ws = (k.weights * (k.diffused * strength)).astype(np.float32)
            dxs = np.array([t[0] for t in k.taps], np.int64)
            dys = np.array([t[1] for t in k.taps], np.int64)
            dither._diffuse(use_lab, img, 128, pal.astype(np.float32), pal_cmp, _LUT, float(color.LUT_STEPS),
                            color.M1, color.M2, *tab, dxs, dys, ws, serpentine, table, idx, out, used)
            assert np.array_equal(res.indices, idx), (serpentine, strength)
            assert np.array_equal(res.image, out)
            assert res.colors_used == int(np.count_nonzero(used[:n]))


def _floyd_steinberg_reference(img: np.ndarray, pal: np.ndarray, serpentine: bool, strength: float) -> np.ndarray:
    """Plain-Python Floyd-Steinberg, sRGB distance: float32 error sums in arrival order, float64 brute-force
    nearest colour with the lowest index on ties (no cell tables, no pair codes)."""
    f32 = np.float32
    k = dither.ERROR_KERNELS["floyd-steinberg"]
    w_r, w_bl, w_b, w_br = (f32(v) for v in (np.array([7, 3, 5, 1]) / 16 * (k.diffused * strength)).astype(f32))
    h, w, _ = img.shape
    p64 = pal.astype(np.float64)
    p32 = pal.astype(f32)
    out = np.empty((h, w), np.int64)
    cur = np.zeros((w + 2, 3), f32)
    for y in range(h):
        nxt = np.zeros((w + 2, 3), f32)
        step = -1 if serpentine and y & 1 else 1
        right = np.zeros(3, f32)
        for x in (range(w - 1, -1, -1) if step < 0 else range(w)):
            t = img[y, x, :3].astype(f32) + (cur[x + 1] + right)
            v = np.minimum(np.maximum(t, f32(0)), f32(255))
            q = v.astype(np.float64)
            best, best_d = 0, np.inf
            for j in range(len(pal)):
                d0, d1, d2 = q - p64[j]
                d = d0 * d0 + d1 * d1 + d2 * d2
                if d < best_d:
                    best, best_d = j, d
            out[y, x] = best
            e = v - p32[best]
            right = e * w_r
            nxt[x + 1 - step] += e * w_bl
            nxt[x + 1] += e * w_b
            nxt[x + 1 + step] += e * w_br
        cur = nxt
    return out


@pytest.mark.parametrize("serpentine", [True, False])
@pytest.mark.parametrize("strength", [1.0, 0.45])
def test_floyd_steinberg_rgb_matches_plain_reference(serpentine, strength):
    """Saturated noise with a mid-tone palette drives the diffused values well outside 0..255, so the loops'
    clamping (cell index from the unclamped value, float clamp for the error) is exercised at both ends."""
    from pixart_nodes.core.palette import named_palette

    rng = np.random.default_rng(21)
    img = (rng.integers(0, 2, (19, 23, 3)) * 255).astype(np.uint8)
    img[::3] = rng.integers(0, 256, (7, 23, 3), dtype=np.uint8)
    for pal in (named_palette("pico-8").colors, np.array([[64, 64, 64], [192, 192, 192], [128, 40, 200]], np.uint8)):
        res = quantize(img, pal, dither="floyd-steinberg", distance="rgb", serpentine=serpentine, strength=strength)
        assert np.array_equal(res.indices, _floyd_steinberg_reference(img, pal, serpentine, strength))
