"""Dithering: kernel data, matrices, blue noise, and behaviour on flat greys."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from pixart_nodes.core import dither
from pixart_nodes.core.palette import palette_from_hex
from pixart_nodes.core.quantize import quantize
from tests.support.damping import levels_reference

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
    # 2x2 of value 100 -> B/W, left to right, no serpentine; sRGB Floyd-Steinberg diffuses integer error
    # (value rounded to a code value). Pixel (0,0): 100 -> black, error 100: right +43.75, below +31.25,
    # below-right +6.25. (0,1): 143.75 -> 144 -> white, error -111: below-left -20.8125, below -34.6875.
    # (1,0): 100 + 31.25 - 20.8125 = 110.44 -> 110 -> black, error 110: right +48.125.
    # (1,1): 100 + 6.25 - 34.6875 + 48.125 = 119.69 -> 120 -> black
    img = np.full((2, 2, 3), 100, np.uint8)
    res = quantize(img, BW, dither="floyd-steinberg", serpentine=False, distance="rgb")
    assert res.indices.tolist() == [[0, 1], [0, 0]]


def _diffusion_fixed_reference(img, pal, kernel, serpentine, strength, distance, damp_limit=-1, alpha_threshold=128,
                               levels=None):
    """``_one_band_reference`` in two bands for images of more than 128 rows, from the documented rule only: the
    first band rows 0..m-1, the second rows s..h-1 (as many), each dithered as an image of its own, the second's
    rows before m dropped; m the least with at least four such rows (2m - h >= 4) and s = h - m even."""
    args = (pal, kernel, serpentine, strength, distance, damp_limit, alpha_threshold)
    h = img.shape[0]
    if h <= 128:
        return _one_band_reference(img, *args, levels)
    m = next(m for m in range(h // 2, h) if 2 * m - h >= 4 and (h - m) % 2 == 0)
    s = h - m
    top = _one_band_reference(img[:m], *args, None if levels is None else levels[:m])
    bottom = _one_band_reference(img[s:], *args, None if levels is None else levels[s:])
    return np.concatenate([top, bottom[m - s:]])


def _one_band_reference(img, pal, kernel, serpentine, strength, distance, damp_limit=-1, alpha_threshold=128,
                        levels=None):
    """Plain-Python error diffusion in fixed point for any kernel, written from the documented rule only: tap
    weight W = floor(S * numerator * 16 / divisor) with S = round(256 * strength); value =
    clamp(floor((4096 * source + taken + 2048) / 4096), 0, 255), where taken is the collected error, or with
    damping floor((collected * level + 128) / 256) (level: ``levels``, 240 when None), then floor((4 taken + 2) / 5)
    when its squared length is over damp_limit * 4096^2; nearest colour by brute
    force (squared sRGB difference, or OKLab of the integer value; lowest index on ties); error e = value - colour,
    each channel replaced by floor((3e + 2) / 4) when its squared length exceeds ``damp_limit`` (>= 0); e * W sent
    to each tap (dx mirrored on right-to-left rows), dropped outside the image. Transparent pixels get index N and
    neither take nor pass on error."""
    from pixart_nodes.core import color

    s = int(round(strength * 256))
    taps = [(dx, dy, (s * num * 16) // kernel.divisor) for dx, dy, num in kernel.taps]
    h, w, ch = img.shape
    p = pal.astype(np.int64)
    plab = color.srgb_u8_to_oklab(pal)
    err = np.zeros((h + 2, w, 3), np.int64)
    out = np.empty((h, w), np.int64)
    for y in range(h):
        step = -1 if serpentine and y & 1 else 1
        for x in range(w - 1, -1, -1) if step < 0 else range(w):
            if ch == 4 and img[y, x, 3] < alpha_threshold:
                out[y, x] = len(pal)
                continue
            taken = err[y, x]
            if damp_limit >= 0:
                taken = (taken * (240 if levels is None else int(levels[y, x])) + 128) // 256
                if int((taken * taken).sum()) > damp_limit * 4096 * 4096:
                    taken = (4 * taken + 2) // 5
            v = np.clip((img[y, x, :3].astype(np.int64) * 4096 + taken + 2048) // 4096, 0, 255)
            if distance == "rgb":
                best = int(np.argmin(((p - v) ** 2).sum(axis=1)))
            else:
                best = int(np.argmin(((plab - color.srgb_u8_to_oklab(v.astype(np.uint8))) ** 2).sum(axis=1)))
            out[y, x] = best
            e = v - p[best]
            if damp_limit >= 0 and int((e * e).sum()) > damp_limit:
                e = (3 * e + 2) // 4
            for dx, dy, wt in taps:
                tx = x + dx * step
                if 0 <= tx < w:
                    err[y + dy, tx] += e * wt
    return out


# a kernel of two rows below whose rows are not symmetric (every such kernel of the library is): the pass that
# spreads a row's error to the rows below has a loop of its own for symmetric rows
_ASYMMETRIC = dither.ErrorKernel("asymmetric", dither._rows((0, (0, 0, 0, 6, 2)), (1, (1, 3, 4, 2, 0)),
                                                            (2, (0, 1, 2, 0, 1))), 22)


@pytest.mark.parametrize("distance", ["rgb", "oklab"])
@pytest.mark.parametrize("name", [*sorted(dither.ERROR_KERNELS), _ASYMMETRIC.name])
@pytest.mark.parametrize("shape", [(11, 14), (133, 3)])
def test_error_diffusion_matches_fixed_point_reference(name, distance, shape):
    """Every kernel (and one whose rows below are not symmetric) and distance (the vector loops, RGB and RGBA, and
    the loop shared by all, with and without damping) against the plain-Python reference: saturated noise drives
    values outside 0..255, a quarter of the pixels transparent (and the same pixels as RGB, and as RGBA with a
    threshold of 0); PICO-8, 40 random colours (cells with 3+ candidates) and 70 (OKLab: pair cells through the memo
    too); cell tables of both sizes the loops use; an image of one band and one of two (133 rows: five warm-up rows)."""
    from pixart_nodes.core import quantize as qz
    from pixart_nodes.core.palette import named_palette

    rng = np.random.default_rng(len(name) + (distance == "oklab"))
    img = (rng.integers(0, 2, (*shape, 4)) * 255).astype(np.uint8)
    img[::3] = rng.integers(0, 256, img[::3].shape, dtype=np.uint8)
    img[..., 3] = np.where(rng.random(shape) < 0.25, 0, 255)
    if shape[0] > 128:  # a flat colour across the bands' seam, where error lasts: the bands change the result
        img[40:100] = (90, 120, 150, 255)
    bands_matter = False
    kernel = dither.ERROR_KERNELS.get(name, _ASYMMETRIC)
    pals = (named_palette("pico-8").colors, rng.integers(0, 256, (40, 3), dtype=np.uint8),
            rng.integers(0, 256, (70, 3), dtype=np.uint8))
    for pal, gbits in itertools.product(pals, (dither.GBITS, dither.LAB_DIFFUSION_GBITS)):
        n = len(pal)
        lk = qz._lookup(pal.tobytes(), distance == "oklab", gbits)
        table = np.zeros((n + 1, 4), np.uint8)
        table[:n, :3] = pal
        table[:n, 3] = 255
        for serpentine, strength, limit in ((True, 1.0, -1), (False, 0.45, -1), (True, 1.0, 2500), (False, 0.7, 0)):
            out = dither.Target(table, np.empty(shape, np.uint8), np.empty_like(img), np.zeros(n + 1, np.uint8))
            dither.error_diffuse(img, pal, lk, kernel, out, strength=strength, serpentine=serpentine,
                                 damp_limit=limit)
            ref = _diffusion_fixed_reference(img, pal, kernel, serpentine, strength, distance, limit)
            assert np.array_equal(out.indices, ref), (n, serpentine, strength, limit)
            if shape[0] > 128 and not bands_matter:
                bands_matter = not np.array_equal(
                    ref, _one_band_reference(img, pal, kernel, serpentine, strength, distance, limit))
            assert np.array_equal(out.image, table[ref])
            assert np.array_equal(np.flatnonzero(out.used[:n]), np.unique(ref[ref < n]))
            # and without alpha (every pixel takes and passes on error)
            rgb = np.ascontiguousarray(img[..., :3])
            out = dither.Target(np.ascontiguousarray(table[:, :3]), np.empty(shape, np.uint8), np.empty_like(rgb),
                                np.zeros(n + 1, np.uint8))
            dither.error_diffuse(rgb, pal, lk, kernel, out, strength=strength, serpentine=serpentine,
                                 damp_limit=limit)
            ref = _diffusion_fixed_reference(rgb, pal, kernel, serpentine, strength, distance, limit)
            assert np.array_equal(out.indices, ref), ("rgb", n, serpentine, strength, limit)
            assert np.array_equal(out.image, pal[ref])
            # RGBA with a threshold of 0 (nothing transparent): without damping, the vector loops take four channels
            out = dither.Target(table, np.empty(shape, np.uint8), np.empty_like(img), np.zeros(n + 1, np.uint8))
            dither.error_diffuse(img, pal, lk, kernel, out, strength=strength, serpentine=serpentine,
                                 damp_limit=limit, alpha_threshold=0)
            ref = _diffusion_fixed_reference(img, pal, kernel, serpentine, strength, distance, limit, alpha_threshold=0)
            assert np.array_equal(out.indices, ref), ("rgba, threshold 0", n, serpentine, strength, limit)
            assert np.array_equal(out.image, table[ref]) and out.used[n] == 0
    assert bands_matter or shape[0] <= 128


@pytest.mark.parametrize("damping", [False, True])
def test_band_warm_up_rows_do_not_count_as_used(damping):
    """The colours used are those of the pixels that stand, not those the second band's warm-up rows picked (the
    first band's stand there): 256 colours on narrow noise, so some warm-up picks are colours no pixel that stands
    has (with either loop marking warm-up rows, 25 and 22 of 40 such images fail; eight of them here); the vector
    loops (no damping) and the loop shared by all (damping)."""
    from pixart_nodes.core import quantize as qz

    pal = np.random.default_rng(7).integers(0, 256, (256, 3), dtype=np.uint8)
    lk = qz._lookup(pal.tobytes(), False, dither.GBITS)
    for seed in range(8):
        img = np.random.default_rng(seed).integers(0, 256, (131, 4, 3), dtype=np.uint8)
        out = dither.Target(np.zeros((257, 3), np.uint8), np.empty((131, 4), np.uint16), np.empty_like(img),
                            np.zeros(257, np.uint8))
        dither.error_diffuse(img, pal, lk, dither.ERROR_KERNELS["floyd-steinberg"], out,
                             damp_limit=2500 if damping else -1)
        assert np.array_equal(np.flatnonzero(out.used), np.unique(out.indices)), seed


def _diffused(img, pal, lk, pairs, kernel, serpentine, strength, threshold):
    """Indices, image and colours used of ``error_diffuse`` (no damping). The image starts as a sentinel (77
    everywhere), so a pixel the loop never writes shows."""
    n, ch = len(pal), img.shape[2]
    table = np.zeros((n + 1, ch), np.uint8)
    table[:n, :3] = pal
    if ch == 4:
        table[:n, 3] = 255
    out = dither.Target(table, np.zeros(img.shape[:2], np.uint8 if n < 255 else np.uint16), np.full_like(img, 77),
                        np.zeros(n + 1, np.uint8))
    dither.error_diffuse(img, pal, lk, kernel, out, alpha_threshold=threshold, strength=strength,
                         serpentine=serpentine, pairs=pairs)
    return out.indices, out.image, out.used


@pytest.mark.parametrize("distance", ["rgb", "oklab"])
@pytest.mark.parametrize("size", [(64, 80), (1, 2), (2, 1), (1, 37), (29, 1), (3, 3), (135, 6)])
def test_vector_loops_match_the_general_loop(monkeypatch, size, distance):
    """The vector loops give exactly the general loop's indices, image and colours used, in both distances (OKLab:
    pair cells chosen by their masks, 32^3 cells), on noise, a gradient and a photo-like blend, for every kernel,
    both scan orders, two strengths, PICO-8 (8-bit pair codes), 40 random colours (16-bit pair codes, 3+ candidate
    cells) and 256 (16-bit cell table and indices; in OKLab every pair through the memo), RGB and RGBA (a fifth
    transparent, and a threshold of 0); sizes down to two pixels, where their reads of a word from the byte before
    a pixel meet the image's first and last bytes, and one of two bands (135 rows: side by side in the vector loops,
    one after the other in the general loop). Each palette's memo starts empty, so searches for values not in it yet
    happen in the vector loops too."""
    from pixart_nodes.core.palette import named_palette

    kernel_of = dither._jit.kernel
    taken = []

    def general(module, name, *variant):  # the same call, through the general loop
        taken.append(name)
        return kernel_of(module, "_diffuse_fixed" if name.startswith("_diffuse_vector") else name, *variant)

    h, w = size
    rng = np.random.default_rng(h * 100 + w)
    y, x = np.mgrid[0:h, 0:w]
    grad = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 255 // max(h + w - 2, 1)], -1)
    noise = rng.integers(0, 256, (h, w, 3))
    images = [noise, grad, (grad * 3 + noise) // 4]
    pals = [named_palette("pico-8").colors, rng.integers(0, 256, (40, 3), dtype=np.uint8),
            rng.integers(0, 256, (256, 3), dtype=np.uint8)]
    for pal, src in itertools.product(pals, images):
        lab = distance == "oklab"
        lk = dither.lookup(pal, lab, dither.LAB_DIFFUSION_GBITS if lab else dither.GBITS)  # not cached: empty memo
        pairs = dither.diffusion_pairs(lk, pal)
        rgba = np.concatenate([src, np.where(rng.random((h, w, 1)) < 0.2, 0, 255)], -1).astype(np.uint8)
        loop = "_diffuse_vector_lab_" if lab else "_diffuse_vector_"
        cases = [(np.ascontiguousarray(src, np.uint8), loop + "rgb", 128), (rgba, loop + "rgba", 128),
                 (rgba, loop + "rgba", 0)]
        for (img, name, threshold), kname in itertools.product(cases, sorted(dither.ERROR_KERNELS)):
            kernel = dither.ERROR_KERNELS[kname]
            for serpentine, strength in ((True, 1.0), (False, 0.6)):
                got = _diffused(img, pal, lk, pairs, kernel, serpentine, strength, threshold)
                with monkeypatch.context() as m:
                    m.setattr(dither._jit, "kernel", general)
                    want = _diffused(img, pal, lk, pairs, kernel, serpentine, strength, threshold)
                    assert taken.pop() == name  # what the vector loop's call took
                for a, b in zip(got, want):
                    assert np.array_equal(a, b), (size, len(pal), name, threshold, kname, serpentine)


@pytest.mark.parametrize(("channels", "method", "distance", "threshold", "damping", "loop"), [
    (3, "atkinson", "oklab", 128, False, "_diffuse_vector_lab_rgb"),
    (3, "atkinson", "rgb", 128, False, "_diffuse_vector_rgb"),
    (4, "stucki", "rgb", 0, False, "_diffuse_vector_rgba"),
    (3, "floyd-steinberg", "rgb", 128, False, "_diffuse_vector_rgb"),
    (4, "floyd-steinberg", "rgb", 128, False, "_diffuse_vector_rgba"),
    (3, "floyd-steinberg", "oklab", 128, False, "_diffuse_vector_lab_rgb"),
    (4, "atkinson", "oklab", 128, False, "_diffuse_vector_lab_rgba"),
    (4, "atkinson", "rgb", 0, True, "_diffuse_fixed"),
    (3, "sierra", "oklab", 128, True, "_diffuse_fixed"),
])
def test_error_diffusion_takes_the_loop_its_pixels_need(monkeypatch, channels, method, distance, threshold, damping,
                                                         loop):
    """Without damping, both distances go through the vector loops (RGB, and RGBA with transparent pixels); with
    damping through the general loop."""
    from pixart_nodes.core import quantize as qz
    from pixart_nodes.core.palette import named_palette

    taken = []
    kernel = dither._jit.kernel

    def recording(module, name, *variant):
        taken.append(name)
        return kernel(module, name, *variant)

    monkeypatch.setattr(dither._jit, "kernel", recording)
    img = np.random.default_rng(5).integers(0, 256, (9, 13, channels), dtype=np.uint8)
    qz.quantize(img, named_palette("pico-8"), dither=method, distance=distance, alpha_threshold=threshold,
                damping=damping)
    diffusion = [n for n in taken if n.startswith("_diffuse")]
    assert diffusion == [loop]


@pytest.mark.parametrize(("shape", "gbits", "distance"), [
    ((1, 1, 3), dither.GBITS, "rgb"), ((1, 1, 4), dither.GBITS, "rgb"), ((7, 9, 3), dither.LAB_DIFFUSION_GBITS, "rgb"),
    ((1, 1, 3), dither.LAB_DIFFUSION_GBITS, "oklab"), ((7, 9, 3), dither.GBITS, "oklab"),
])
def test_diffusion_falls_back_to_the_general_loop(monkeypatch, shape, gbits, distance):
    """An image of one pixel (the vector loops read the next pixel's word) and a cell table of another size than
    the vector loop's for the distance (its shifts are constants) go through the general loop, with the reference's
    result."""
    from pixart_nodes.core import quantize as qz
    from pixart_nodes.core.palette import named_palette

    taken = []
    kernel = dither._jit.kernel
    monkeypatch.setattr(dither._jit, "kernel", lambda m, name, *v: taken.append(name) or kernel(m, name, *v))
    img = np.random.default_rng(8).integers(0, 256, shape, dtype=np.uint8)
    pal = named_palette("pico-8").colors
    lk = qz._lookup(pal.tobytes(), distance == "oklab", gbits)
    table = np.zeros((17, shape[2]), np.uint8)
    table[:16, :3] = pal
    out = dither.Target(table, np.empty(shape[:2], np.uint8), np.empty_like(img), np.zeros(17, np.uint8))
    dither.error_diffuse(img, pal, lk, dither.ERROR_KERNELS["atkinson"], out)
    assert [n for n in taken if n.startswith("_diffuse")] == ["_diffuse_fixed"]
    ref = _diffusion_fixed_reference(img, pal, dither.ERROR_KERNELS["atkinson"], True, 1.0, distance)
    assert np.array_equal(out.indices, ref)


def test_damped_levels_match_the_reference():
    """The loop with damping and a levels map (each pixel takes levels / 256 of the error it collects) against the
    plain-Python reference, for kernels of one, two and three rows, both distances, alpha, and levels from 0 to
    255."""
    from pixart_nodes.core import quantize as qz
    from pixart_nodes.core.palette import named_palette

    rng = np.random.default_rng(12)
    img = rng.integers(0, 256, (13, 17, 4), dtype=np.uint8)
    img[..., 3] = np.where(rng.random((13, 17)) < 0.2, 0, 255)
    pal = named_palette("pico-8").colors
    levels = rng.integers(0, 257, (13, 17)).clip(0, 255).astype(np.uint8)
    levels[0] = 0  # a row that takes no error at all
    table = np.zeros((17, 4), np.uint8)
    table[:16, :3] = pal
    table[:16, 3] = 255
    for name, distance, limit in itertools.product(("floyd-steinberg", "sierra-lite", "jarvis-judice-ninke"),
                                                   ("rgb", "oklab"), (0, 150, 600, 3000)):
        lk = qz._lookup(pal.tobytes(), distance == "oklab", dither.GBITS if distance == "rgb"
                        else dither.LAB_DIFFUSION_GBITS)
        out = dither.Target(table, np.empty((13, 17), np.uint8), np.empty_like(img), np.zeros(17, np.uint8))
        dither.error_diffuse(img, pal, lk, dither.ERROR_KERNELS[name], out, damp_limit=limit, levels=levels)
        ref = _diffusion_fixed_reference(img, pal, dither.ERROR_KERNELS[name], True, 1.0, distance, limit,
                                         levels=levels)
        assert np.array_equal(out.indices, ref), (name, distance, limit)
    with pytest.raises(ValueError, match="levels"):
        dither.error_diffuse(img, pal, lk, dither.ERROR_KERNELS["sierra-lite"], out, damp_limit=0,
                             levels=levels[1:])


def test_dither_levels_are_libimagequants_map():
    """dither.dither_levels against the plain-Python reference of libimagequant's rule (tests/support/damping.py) on
    random maps of few colours (long runs), striped and single-colour images, a one-row and a one-column image; a
    flat area gets nearly the full 15/16 and a checkerboard little."""
    rng = np.random.default_rng(5)
    cases = [rng.integers(0, 3, (9, 23)), rng.integers(0, 300, (6, 7)), np.zeros((5, 8), int),
             np.tile([0, 0, 0, 1], (4, 5)), rng.integers(0, 2, (1, 12)), rng.integers(0, 2, (7, 1))]
    for idx in cases:
        for dtype in (np.uint8, np.uint16):
            if idx.max() > np.iinfo(dtype).max:
                continue
            got = dither.levels_for(idx.astype(dtype))
            assert got.dtype == np.uint8 and np.array_equal(got, levels_reference(idx)), (idx.shape, dtype)
    flat = dither.levels_for(np.zeros((10, 10), np.uint8))
    checker = dither.levels_for((np.indices((10, 10)).sum(0) % 2).astype(np.uint8))
    assert flat[5, 5] > 220 and checker[5, 5] < 100


def test_damping_is_libimagequants_rules():
    """quantize(damping=True) = the loop with the limit 2.4 x the undithered mean squared error and the levels of
    the undithered mapping (brute force), for an image of over 64k pixels too."""
    from pixart_nodes.core import quantize as qz
    from pixart_nodes.core.palette import named_palette

    rng = np.random.default_rng(4)
    pal = named_palette("pico-8").colors
    p = pal.astype(np.int64)
    for shape in ((40, 50), (260, 270)):
        img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        img[: shape[0] // 2] = img[: shape[0] // 2].mean(axis=(0, 1)).astype(np.uint8)  # a flat half: full levels
        d2all = ((img.astype(np.int64)[:, :, None, :] - p[None, None]) ** 2).sum(-1)
        plain = d2all.argmin(-1)
        limit = int(2.4 * d2all.min(-1).mean())
        res = quantize(img, pal, dither="floyd-steinberg", distance="rgb", damping=True)
        lk = qz._lookup(pal.tobytes(), False)
        table = np.zeros((17, 3), np.uint8)
        table[:16] = pal
        out = dither.Target(table, np.empty(shape, np.uint8), np.empty_like(img), np.zeros(17, np.uint8))
        dither.error_diffuse(img, pal, lk, dither.ERROR_KERNELS["floyd-steinberg"], out, damp_limit=limit,
                             levels=levels_reference(plain))
        assert np.array_equal(res.indices, out.indices), shape
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    res = quantize(img, pal, dither="floyd-steinberg", distance="rgb", damping=True)
    classic = quantize(img, pal, dither="floyd-steinberg", distance="rgb")
    assert not np.array_equal(res.indices, classic.indices)
    # damping lowers the per-pixel error
    err = lambda r: float(np.abs(img.astype(int) - r.image).sum())  # noqa: E731
    assert err(res) < err(classic)


def _floyd_steinberg_fixed_reference(
    img: np.ndarray, pal: np.ndarray, serpentine: bool, strength: float, alpha_threshold: int = 128
) -> np.ndarray:
    """Plain-Python sRGB Floyd-Steinberg in fixed point, written from the documented rule only: strength as
    S = round(256 * strength); value = clamp(floor((16*256*source + collected + 2048) / 4096), 0, 255);
    nearest colour by brute force over the whole palette (lowest index on ties); error (value - colour) * S
    sent as 7, 3, 5, 1 times itself to right, below-left, below, below-right (in scan direction).
    Transparent pixels (alpha below the threshold) get index N and neither take nor pass on error."""
    s = int(round(strength * 256))
    h, w, ch = img.shape
    p = pal.astype(np.int64)
    out = np.empty((h, w), np.int64)
    cur = np.zeros((w + 2, 3), np.int64)
    for y in range(h):
        nxt = np.zeros((w + 2, 3), np.int64)
        step = -1 if serpentine and y & 1 else 1
        right = np.zeros(3, np.int64)
        for x in range(w - 1, -1, -1) if step < 0 else range(w):
            if ch == 4 and img[y, x, 3] < alpha_threshold:
                out[y, x] = len(pal)
                right = np.zeros(3, np.int64)
                continue
            t = img[y, x, :3].astype(np.int64) * 4096 + cur[x + 1] + right
            v = np.clip((t + 2048) // 4096, 0, 255)
            best = int(np.argmin(((p - v) ** 2).sum(axis=1)))  # argmin: first (lowest) index on ties
            out[y, x] = best
            e = (v - p[best]) * s
            right = 7 * e
            nxt[x + 1 - step] += 3 * e
            nxt[x + 1] += 5 * e
            nxt[x + 1 + step] += e
        cur = nxt
    return out


@pytest.mark.parametrize("serpentine", [True, False])
@pytest.mark.parametrize("strength", [1.0, 0.45])
@pytest.mark.parametrize("channels", [3, 4])
def test_floyd_steinberg_rgb_matches_fixed_point_reference(serpentine, strength, channels):
    """Saturated noise with a mid-tone palette drives the diffused values well outside 0..255, so the loop's
    clamping is exercised at both ends, and its packed next-row error at its largest. Palettes: PICO-8 (4-bit
    pair codes), three mid-tones, one with equidistant colours (ties) and 40 random colours (8-bit pair
    codes, cells with 3+ candidates and the full search)."""
    from pixart_nodes.core.palette import named_palette

    rng = np.random.default_rng(21)
    img = (rng.integers(0, 2, (19, 23, channels)) * 255).astype(np.uint8)
    img[::3] = rng.integers(0, 256, (7, 23, channels), dtype=np.uint8)
    if channels == 4:
        img[..., 3] = np.where(rng.random((19, 23)) < 0.15, 0, 255)
    palettes = (
        named_palette("pico-8").colors,
        np.array([[64, 64, 64], [192, 192, 192], [128, 40, 200]], np.uint8),
        np.array([[100, 100, 100], [102, 102, 102], [101, 101, 99], [101, 101, 103], [0, 0, 0]], np.uint8),
        rng.integers(0, 256, (40, 3), dtype=np.uint8),
    )
    for pal in palettes:
        res = quantize(img, pal, dither="floyd-steinberg", distance="rgb", serpentine=serpentine,
                       strength=strength)
        ref = _floyd_steinberg_fixed_reference(img, pal, serpentine, strength)
        assert np.array_equal(res.indices, ref), len(pal)
        n = len(pal)
        # the output image is each index's colour (transparent: all zero)
        table = np.zeros((n + 1, channels), np.uint8)
        table[:n, :3] = pal
        if channels == 4:
            table[:n, 3] = 255
        assert np.array_equal(res.image, table[ref])
        assert res.colors_used == len(np.unique(ref[ref < n]))


def test_floyd_steinberg_rgb_strength_in_256ths():
    # strength is used in steps of 1/256: 0.45 acts as 115/256, and below 1/512 no error is passed on
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    from pixart_nodes.core.palette import named_palette

    pal = named_palette("pico-8").colors
    run = lambda s: quantize(img, pal, dither="floyd-steinberg", distance="rgb", strength=s).indices  # noqa: E731
    assert np.array_equal(run(0.45), run(115 / 256))
    assert not np.array_equal(run(0.45), run(116 / 256))
    assert np.array_equal(run(0.001), quantize(img, pal, distance="rgb").indices)
