"""Quantize: nearest colour against brute force, palette-only output (with alpha), errors, and the node."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pixart_nodes.core import color
from pixart_nodes.core.palette import named_palette, nearest_indices, palette_from_hex
from pixart_nodes.core.quantize import DITHER_METHODS, quantize
from pixart_nodes.nodes_quantize import PixartQuantize

# The sRGB search of up to 32 colours has two implementations: AVX-512 VNNI integer keys where the CPU has them
# (dither._nearest_rgb_vnni), float32 keys elsewhere (dither._nearest_rgb); where the CPU has VNNI the tests run both
# (elsewhere both cases run the float32 search). OKLab has one search, whichever the CPU.
SEARCHES = pytest.mark.parametrize("distance, vnni", [("rgb", True), ("rgb", False), ("oklab", True)],
                                   ids=["rgb-vnni", "rgb-float32", "oklab"])


@pytest.fixture
def search(vnni, monkeypatch):
    from pixart_nodes.core import dither

    monkeypatch.setattr(dither, "USE_VNNI", vnni)


def _brute_force(img: np.ndarray, pal: np.ndarray, distance: str) -> np.ndarray:
    """Obvious per-pixel search with direct differences, in float64."""
    if distance == "oklab":
        # independent conversion: the sRGB formula evaluated per pixel, not the module's lookup table
        def to_lab(c):
            lin = color.srgb_to_linear(c.astype(np.float64) / 255.0)
            return np.cbrt(lin @ color.M1.T) @ color.M2.T

        pts, cands = to_lab(img.reshape(-1, 3)), to_lab(pal)
    else:
        pts, cands = img.reshape(-1, 3).astype(np.float64), pal.astype(np.float64)
    out = np.empty(len(pts), dtype=np.int64)
    for i, p in enumerate(pts):
        out[i] = int(np.argmin(((cands - p) ** 2).sum(axis=1)))
    return out.reshape(img.shape[:2])


@SEARCHES
@pytest.mark.parametrize("name", ["pico-8", "endesga-32"])
def test_nearest_equals_brute_force(distance, name, search):
    rng = np.random.default_rng(11)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    pal = named_palette(name).colors
    res = quantize(img, pal, distance=distance)
    assert np.array_equal(res.indices, _brute_force(img, pal, distance))
    assert np.array_equal(res.image, pal[res.indices])


def test_distances_differ_where_they_should():
    # dark saturated colours: RGB distance collapses them to black, OKLab keeps their hue
    img = np.array([[[0, 0, 50]], [[90, 0, 0]]], np.uint8)
    pal = named_palette("pico-8")
    assert quantize(img, pal, distance="rgb").indices.ravel().tolist() == [0, 0]  # black, black
    assert quantize(img, pal, distance="oklab").indices.ravel().tolist() == [1, 2]  # dark blue, dark purple


def test_ordered_dither_is_the_exact_nearest_of_the_offset_values():
    """Ordered dithering adds whole code values (``ordered_offsets``) and takes each value's exact nearest colour:
    brute force on the offset image."""
    from pixart_nodes.core.quantize import ordered_offsets

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pal = named_palette("sweetie-16").colors
    off = ordered_offsets("bayer-4x4", pal, 1.0)
    assert off.dtype == np.int64 and off.shape == (4, 4) and len(np.unique(off)) == 16
    q = np.clip(img + np.tile(off, (8, 8))[..., None], 0, 255).astype(np.uint8)
    for distance in ("rgb", "oklab"):
        res = quantize(img, pal, dither="bayer-4x4", distance=distance)
        assert np.array_equal(res.indices, _brute_force(q, pal, distance)), distance


def test_a_mask_of_another_size_is_scaled_to_the_image():
    # a picture pixelated without upscaling meets its LoadImage mask at the original size: its transparency was
    # dropped without a word; ComfyUI's JoinImageWithAlpha scales the mask
    pal = palette_from_hex(["#000000", "#ffffff"])
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :8] = 1.0  # the left half transparent
    image, out_mask, _ = PixartQuantize().run(torch.rand(1, 8, 8, 3), pal, "none", "rgb", False, 1.0, 128,
                                              mask=mask)["result"]
    assert image.shape == (1, 8, 8, 3) and torch.equal(out_mask[0, :, :4], torch.ones(8, 4))
    assert torch.equal(out_mask[0, :, 4:], torch.zeros(8, 4))
    # LoadImage's 64x64 zero mask of a picture without alpha stays "no alpha"
    _, out_mask, _ = PixartQuantize().run(torch.rand(1, 8, 8, 3), pal, "none", "rgb", False, 1.0, 128,
                                          mask=torch.zeros(1, 64, 64))["result"]
    assert not out_mask.any()


@pytest.mark.parametrize("method", ["bayer-4x4", "blue-noise"])
def test_a_colour_listed_twice_dithers_as_once(method):
    # each colour's nearest other colour was itself at distance 0: the offsets' amplitude fell to 0 and mid-grey
    # came out all white instead of dithered
    grey = np.full((32, 32, 3), 128, np.uint8)
    once = quantize(grey, palette_from_hex(["#000000", "#ffffff"]), dither=method, distance="rgb")
    twice = quantize(grey, palette_from_hex(["#000000", "#000000", "#ffffff", "#ffffff"]), dither=method,
                     distance="rgb")
    white = (once.image == 255).all(-1)
    assert 0.3 < white.mean() < 0.7 and np.array_equal((twice.image == 255).all(-1), white)


@pytest.mark.parametrize("method", DITHER_METHODS)
def test_output_holds_only_palette_colours(method):
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    pal = named_palette("gameboy").colors
    res = quantize(img, pal, dither=method, distance="rgb")
    assert res.image.shape == img.shape and res.image.dtype == np.uint8
    colours = set(map(tuple, res.image.reshape(-1, 3).tolist()))
    assert colours <= set(map(tuple, pal.tolist()))
    assert res.colors_used == len(colours)
    assert np.array_equal(res.image, pal[res.indices])


@pytest.mark.parametrize("method", ["none", "floyd-steinberg", "atkinson", "bayer-8x8", "blue-noise"])
def test_alpha_gives_palette_plus_transparent(method):
    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, (20, 20, 4), dtype=np.uint8)
    pal = named_palette("pico-8").colors
    res = quantize(img, pal, dither=method, alpha_threshold=100, distance="oklab")
    assert res.image.shape == (20, 20, 4)
    transparent = img[..., 3] < 100
    assert np.all(res.image[transparent] == 0)
    assert np.all(res.indices[transparent] == len(pal))
    opaque = res.image[~transparent]
    assert np.all(opaque[:, 3] == 255)
    assert set(map(tuple, opaque[:, :3].tolist())) <= set(map(tuple, pal.tolist()))


def test_index_dtype_and_colours_used():
    img = np.zeros((2, 3, 3), np.uint8)
    img[0, 0] = [255, 255, 255]
    res = quantize(img, palette_from_hex("#000 #fff #f00"))
    assert res.indices.dtype == np.uint8 and res.colors_used == 2
    big = np.random.default_rng(0).integers(0, 256, (256, 3), dtype=np.uint8)
    rgba = np.zeros((2, 2, 4), np.uint8)
    assert quantize(rgba, big).indices.dtype == np.uint16  # 256 colours + transparent


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dither": "bayer-3x3"}, "dither must be one of"),
        ({"distance": "lab"}, "distance must be one of"),
        ({"strength": 1.5}, "strength must be in 0..1"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        quantize(np.zeros((2, 2, 3), np.uint8), named_palette("1bit"), **kwargs)
    with pytest.raises(ValueError, match="image must be uint8"):
        quantize(np.zeros((2, 2), np.uint8), named_palette("1bit"))


def test_nearest_indices_chunks_agree():
    rng = np.random.default_rng(9)
    pts = rng.integers(0, 256, (5000, 3)).astype(np.float64)
    cen = rng.integers(0, 256, (37, 3)).astype(np.float64)
    ref = ((pts[:, None] - cen[None]) ** 2).sum(-1).argmin(1)
    assert np.array_equal(nearest_indices(pts, cen, chunk=64), ref)


def test_quantize_node_batch_rgb_and_rgba():
    node = PixartQuantize()
    pal = named_palette("pico-8")
    batch = torch.rand((3, 16, 12, 3), generator=torch.Generator().manual_seed(0))
    out = node.run(batch, pal, "floyd-steinberg", "oklab", True, 1.0, 128)
    image, mask, used = out["result"]
    assert tuple(image.shape) == (3, 16, 12, 3) and tuple(mask.shape) == (3, 16, 12)
    assert out["ui"] == {"colors_used": [used]} and 1 <= used <= 16
    cols = set(map(tuple, (image * 255).round().to(torch.int64).reshape(-1, 3).tolist()))
    assert cols <= set(map(tuple, pal.colors.tolist())) and len(cols) == used
    assert float(mask.abs().sum()) == 0.0

    rgba = torch.rand((2, 8, 8, 4), generator=torch.Generator().manual_seed(1))
    image, mask, used = node.run(rgba, pal, "bayer-4x4", "rgb", True, 1.0, 128)["result"]
    assert image.shape[-1] == 4
    transparent = rgba[..., 3] * 255 + 0.5 < 128
    assert torch.equal(mask, transparent.to(torch.float32))
    assert torch.all(image[transparent] == 0) and torch.all(image[~transparent][:, 3] == 1.0)

    # RGB image + MASK input: masked pixels come out transparent in the MASK output, RGB stays 3 channels
    m = torch.zeros((2, 8, 8))
    m[:, :4] = 1.0
    image, mask, _ = node.run(rgba[..., :3], pal, "none", "oklab", True, 1.0, 128, mask=m)["result"]
    assert image.shape[-1] == 3 and torch.equal(mask, m)
    with pytest.raises(ValueError, match="palette: expected a PIXART_PALETTE"):
        node.run(batch, "pico-8", "none", "oklab", True, 1.0, 128)


def _table_candidates(tab, cell):
    v = int(tab.info[cell])
    if v < np.iinfo(tab.info.dtype).max:
        return [v]
    s = int(tab.moff[cell])  # block: count, candidates
    return [int(c) for c in tab.cands[s + 1 : s + 1 + tab.cands[s]]]


def _palette(name, rng):
    if name.startswith("random-"):
        return rng.integers(0, 256, (int(name.split("-")[1]), 3), dtype=np.uint8)
    return named_palette(name).colors


def _near_tie_palette(rng, n, distance):
    """``n`` colours in pairs nearly equidistant from a chosen code value ``v`` (each pair: a random colour and
    its mirror image through ``v``, in the distance space, rounded to sRGB), plus those values."""
    pal, values = [], []
    while len(pal) < n:
        v = rng.integers(40, 216, 3)
        a = np.clip(v + rng.integers(-30, 31, 3), 0, 255)
        if distance == "oklab":
            la, lv = color.srgb_u8_to_oklab(a.astype(np.uint8)), color.srgb_u8_to_oklab(v.astype(np.uint8))
            b = color.oklab_to_srgb_u8(2 * lv - la).astype(np.int64)
        else:
            b = 2 * v - a  # an exact tie in sRGB
        if np.all((b >= 0) & (b <= 255)) and not np.array_equal(a, b):
            pal += [a, b]
            values.append(v)
    return np.array(pal[:n], np.uint8), np.array(values)


def _nearest_by_brute_force(values, pal, distance):
    """(index, distances to every colour) per code value; lowest index on ties."""
    if distance == "oklab":
        pts, ref = color.srgb_float_to_oklab(values.astype(np.float64)), color.srgb_u8_to_oklab(pal)
    else:
        pts, ref = values.astype(np.float64), pal.astype(np.float64)
    d = ((pts[:, None, :] - ref[None]) ** 2).sum(-1)
    return d.argmin(axis=1), d


@pytest.mark.parametrize("distance", ["rgb", "oklab"])
@pytest.mark.parametrize("gbits", [5, 6])
@pytest.mark.parametrize("name", ["pico-8", "endesga-32", "random-3", "random-256", "near-ties-24"])
def test_cell_tables_hold_the_true_nearest(distance, gbits, name):
    """Every cell's candidate list holds the nearest colour of every code value in the cell: brute force on random
    values, the cells' corners (where the bounds are tightest) and values nearly equidistant from two colours."""
    from pixart_nodes.core import dither

    rng = np.random.default_rng(21)
    if name.startswith("near-ties"):
        pal, ties = _near_tie_palette(rng, 24, distance)
    else:
        pal, ties = _palette(name, rng), np.zeros((0, 3), np.int64)
    tab = dither.cell_table(pal, distance == "oklab", gbits)
    assert tab.gbits == gbits and tab.info.size == 1 << (3 * gbits)
    assert tab.info.dtype == tab.memo.dtype == (np.uint16 if len(pal) >= 255 else np.uint8)
    size = 256 >> gbits
    corners = np.concatenate([np.arange(0, 256, size), np.arange(size - 1, 256, size)])
    values = np.concatenate([rng.integers(0, 256, (3000, 3)), rng.choice(corners, (1500, 3)),
                             np.clip(ties[:, None, :] + rng.integers(-2, 3, (len(ties), 20, 3)), 0, 255).reshape(-1, 3)])
    best, d = _nearest_by_brute_force(values, pal, distance)
    qi = values >> (8 - gbits)
    cells = (qi[:, 0] << (2 * gbits)) | (qi[:, 1] << gbits) | qi[:, 2]
    tol = 1e-12 if distance == "oklab" else 0.0  # float rounding between two ways of converting to OKLab
    multi = 0
    for i, cell in enumerate(cells):
        cand = _table_candidates(tab, int(cell))
        multi += len(cand) > 1
        assert cand == sorted(set(cand)) and all(0 <= c < len(pal) for c in cand)
        assert d[i, cand].min() <= d[i].min() + tol, (i, values[i], cand)
    assert 0 < multi < len(cells)  # the table prunes: most cells hold a single colour, not every one


def test_the_cell_tables_cube_roots_are_within_1_2e_15_of_numpys():
    """The OKLab cell table's bounds take their cube roots by Newton steps (``_cbrt64``, compiled), not glibc's
    ``cbrt``: over the LMS values of code values (1.6e-5 and up) and beyond, within 1.2e-15 relative of numpy's (at
    most 1e-15 measured), and 0 for black."""
    from pixart_nodes.core import dither, jit

    jit.materialise(dither)  # the compiled kernel, also where the ahead-of-time module is built

    x = np.concatenate([[0.0], np.geomspace(1e-9, 1.0, 300_001), np.random.default_rng(5).random(100_000)])
    y = np.empty_like(x)
    dither._cbrt64(x, y, len(x))
    assert y[0] == 0.0
    assert np.abs(y[1:] / np.cbrt(x[1:]) - 1).max() <= 1.2e-15


@pytest.mark.parametrize("distance", ["rgb", "oklab"])
@pytest.mark.parametrize("name", ["pico-8", "random-40", "random-256", "near-ties-16", "near-ties-200"])
def test_memo_holds_the_exact_nearest(distance, name):
    """The memo of nearest colours, filled by the loops, against brute force: every code value quantized is
    looked up again from the memo, and every entry the loops wrote is each value's nearest colour (the lowest
    index on exact sRGB ties). Values: random, and clouds around values nearly equidistant from two colours."""
    from pixart_nodes.core import quantize as qz

    rng = np.random.default_rng(31)
    if name.startswith("near-ties"):
        pal, ties = _near_tie_palette(rng, int(name.split("-")[2]), distance)
    else:
        pal, ties = _palette(name, rng), np.zeros((0, 3), np.int64)
    values = np.concatenate([rng.integers(0, 256, (20000, 3)),
                             np.clip(ties[:, None, :] + rng.integers(-3, 4, (len(ties), 60, 3)), 0, 255).reshape(-1, 3)])
    img = np.ascontiguousarray(values.astype(np.uint8).reshape(1, -1, 3))
    qz._cached_lookup.cache_clear()

    res = _cell_loop(img, pal, distance)  # quantize searches small palettes without the memo
    best, d = _nearest_by_brute_force(values, pal, distance)
    if distance == "rgb":
        assert np.array_equal(res.indices.ravel(), best)
    else:
        chosen = d[np.arange(len(d)), res.indices.ravel().astype(np.int64)]
        assert np.all(chosen <= d.min(axis=1) + 1e-12)
        assert np.mean(res.indices.ravel() == best) > 0.999
    tab = qz._lookup(pal.tobytes(), distance == "oklab").table
    lb = 8 - tab.gbits
    qi = values >> lb
    cells = (qi[:, 0] << (2 * tab.gbits)) | (qi[:, 1] << tab.gbits) | qi[:, 2]
    low = values & ((1 << lb) - 1)
    multi = tab.info[cells] == np.iinfo(tab.info.dtype).max
    at = tab.blk[cells[multi]] + ((low[multi, 0] << (2 * lb)) | (low[multi, 1] << lb) | low[multi, 2])
    assert multi.sum() > 100 and np.all(tab.memo[at] > 0)  # every multi-candidate value went through the memo
    assert np.array_equal(tab.memo[at].astype(np.int64) - 1, res.indices.ravel()[multi])
    # and a second call reads the memo only: the same result
    assert np.array_equal(_cell_loop(img, pal, distance).indices, res.indices)


@pytest.mark.parametrize("distance", ["rgb", "oklab"])
def test_no_dither_equals_brute_force_with_alpha_and_big_palettes(distance):
    rng = np.random.default_rng(12)
    img = rng.integers(0, 256, (24, 30, 4), dtype=np.uint8)
    for pal in (rng.integers(0, 256, (256, 3), dtype=np.uint8), named_palette("sweetie-16").colors):
        res = quantize(img, pal, distance=distance, alpha_threshold=90)
        ref = _brute_force(img[..., :3], pal, distance)
        transparent = img[..., 3] < 90
        assert np.array_equal(res.indices[~transparent], ref[~transparent])
        assert np.all(res.indices[transparent] == len(pal))
        assert res.colors_used == len(np.unique(ref[~transparent]))


def _cell_loop(img, pal, distance, offsets=None, alpha_threshold=128):
    """The no-dither (or, with ``offsets``, ordered) loop of the cell table (exact: tested against brute force
    above), through the palette's cached cell table and memo (the ones quantize's other loops use)."""
    from pixart_nodes.core import dither
    from pixart_nodes.core import quantize as qz

    k, ch = len(pal), img.shape[2]
    table = np.zeros((k + 1, ch), np.uint8)
    table[:k, :3] = pal
    if ch == 4:
        table[:k, 3] = 255
    out = dither.Target(table, np.empty(img.shape[:2], np.uint16), np.empty_like(img), np.zeros(k + 1, np.uint8))
    dither.ordered_dither(img, qz._lookup(pal.tobytes(), distance == "oklab"),
                          np.zeros((1, 1), np.int64) if offsets is None else offsets, out,
                          alpha_threshold=alpha_threshold)
    return out


def _with_alpha(img, rng):
    """``img`` with an alpha channel: a third transparent (below 128), some at the threshold, the rest opaque."""
    alpha = rng.choice(np.array([0, 127, 128, 200, 255], np.uint8), img.shape[:2])
    return np.ascontiguousarray(np.concatenate([img, alpha[..., None]], axis=-1))


@SEARCHES
@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (5, 7), (37, 41), (64, 64)])
def test_vectorised_no_dither_equals_brute_force_and_the_cell_table(shape, distance, search):
    """Without dithering and up to 32 colours, quantize takes the vectorised search (``dither.nearest``):
    the cell-table loop agrees with it exactly, and brute force (lowest index on exact ties; in OKLab, through an
    independent conversion, within rounding) on random palettes of 1 to 32 colours, palettes of a few levels
    (exact ties, repeated colours), near or exact mirror ties, and images whose pixel count is not a multiple of 4
    (the last pixels past the packed words) or spans blocks; and with alpha, where transparent pixels take index N
    and RGBA 0,0,0,0 and the others their opaque colour."""
    rng = np.random.default_rng(sum(shape))
    h, w = shape
    for trial in range(24):
        k = int(rng.integers(1, 33)) if trial else 32
        if trial % 4 == 0:
            pal = rng.integers(0, 256, (k, 3), dtype=np.uint8)
        elif trial % 4 == 1:
            pal = (rng.integers(0, 3, (k, 3)) * 127).astype(np.uint8)
        elif trial % 4 == 2:
            pal = rng.choice(np.array([0, 255], np.uint8), (k, 3))
        else:
            pal, ties = _near_tie_palette(rng, max(k // 2 * 2, 2), distance)
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if trial % 4 == 3:  # the values each pair of colours is (nearly) equidistant from
            img.reshape(-1, 3)[: len(ties)] = ties[: h * w]
        elif trial % 2:
            img = (img // 64 * 64 + 32).astype(np.uint8)  # lands on the midpoints of level palettes: ties
        res = quantize(img, pal, distance=distance)
        ref = _brute_force(img, pal, distance)
        assert res.indices.dtype == np.uint8
        if distance == "rgb":
            assert np.array_equal(res.indices, ref), (trial, len(pal))
        else:
            lab = color.srgb_u8_to_oklab(img.reshape(-1, 3))
            d = ((lab[:, None, :] - color.srgb_u8_to_oklab(pal)[None]) ** 2).sum(-1)
            assert np.all(d[np.arange(len(d)), res.indices.ravel()] <= d.min(axis=1) + 1e-12), trial
        assert np.array_equal(res.image, pal[res.indices]) and res.colors_used == len(np.unique(res.indices))
        out = _cell_loop(img, pal, distance)
        assert np.array_equal(out.indices, res.indices) and np.array_equal(out.image, res.image), trial
        # with alpha (RGBA in, RGBA out, index len(pal) for transparent): the same colours where opaque
        rgba = _with_alpha(img, rng)
        thr = int(rng.choice([1, 128, 200]))
        res4 = quantize(rgba, pal, distance=distance, alpha_threshold=thr)
        out4 = _cell_loop(rgba, pal, distance, alpha_threshold=thr)
        assert np.array_equal(out4.indices, res4.indices) and np.array_equal(out4.image, res4.image), trial
        opaque = rgba[..., 3] >= thr
        assert np.array_equal(res4.indices[opaque], res.indices[opaque]) and np.all(res4.indices[~opaque] == len(pal))
        assert res4.colors_used == len(np.unique(res4.indices[opaque]))


@SEARCHES
@pytest.mark.parametrize("shape", [(7, 1), (3, 5), (9, 37), (2, 1500)])
def test_vectorised_ordered_dither_equals_the_cell_table(shape, distance, search):
    """Ordered dithering with up to 32 colours goes through the vectorised search too, a block per row segment with
    the pattern row tiled across the width: every method and several strengths give the cell-table loop's indices
    and image, with and without alpha, on widths below 4, not a multiple of 4, and above a block (1024)."""
    from pixart_nodes.core import dither
    from pixart_nodes.core.quantize import ordered_offsets

    rng = np.random.default_rng(shape[1])
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    rgba = _with_alpha(img, rng)
    for pal in (named_palette("sweetie-16").colors, rng.integers(0, 256, (32, 3), dtype=np.uint8),
                np.array([[0, 0, 0], [255, 255, 255]], np.uint8)):
        for method in dither.ORDERED_METHODS:
            for strength in (1.0, 0.35):
                offsets = ordered_offsets(method, pal, strength)
                for source in (img, rgba):
                    res = quantize(source, pal, dither=method, distance=distance, strength=strength)
                    out = _cell_loop(source, pal, distance, offsets)
                    assert np.array_equal(res.indices, out.indices), (method, strength, len(pal))
                    assert np.array_equal(res.image, out.image)
                    assert res.colors_used == len(np.unique(out.indices[out.indices < len(pal)]))


@pytest.mark.parametrize("distance", ["rgb", "oklab"])
def test_vectorised_search_equals_the_cell_table_on_every_code_value(distance, monkeypatch):
    """All 2^24 code values through the vectorised search and the cell-table loop, for named and random palettes
    of 16, 32 and 64 colours and the largest quantize searches so: the same index everywhere. OKLab's float32 search
    alone (``LAB_MARGIN`` 0: no exact second search of close calls) chooses differently on a few values, so the
    comparison sees the difference it guards."""
    from pixart_nodes.core import dither

    v = np.arange(1 << 24, dtype=np.uint32)
    cube = np.stack([v >> 16, (v >> 8) & 255, v & 255], axis=-1).astype(np.uint8).reshape(4096, 4096, 3)
    del v
    rng = np.random.default_rng(7)
    most = dither.NEAREST_SEARCH_MAX[distance == "oklab"]  # the largest palette quantize searches this way
    # in the cube's order every 16 pixels lie in one coarse cell (the sRGB searches of up to 32 colours then search
    # that cell's colours only): shuffled, most vectors span several cells and search every colour
    order = rng.permutation(1 << 24) if distance == "rgb" else None
    for pal in (named_palette("aap-64").colors, rng.integers(0, 256, (most, 3), dtype=np.uint8),
                named_palette("pico-8").colors, rng.integers(0, 256, (32, 3), dtype=np.uint8)):
        ref = _cell_loop(cube, pal, distance).indices
        for vnni in ((True, False) if distance == "rgb" and len(pal) <= 32 else (True,)):
            monkeypatch.setattr(dither, "USE_VNNI", vnni)
            assert np.array_equal(quantize(cube, pal, distance=distance).indices, ref), (len(pal), vnni)
            if order is not None and len(pal) <= 32:
                mixed = cube.reshape(-1, 3)[order].reshape(cube.shape)
                got = quantize(mixed, pal, distance=distance).indices.ravel()
                assert np.array_equal(got, ref.ravel()[order]), (len(pal), vnni, "shuffled")
    if distance == "oklab":
        monkeypatch.setattr(dither, "LAB_MARGIN", 0.0)
        assert 0 < np.count_nonzero(quantize(cube, pal, distance=distance).indices != ref) < 1000


@pytest.mark.parametrize("distance", ["rgb", "oklab"])
@pytest.mark.parametrize("n", [33, 64, 200, 254])
def test_big_palettes_search_after_the_cell_table(n, distance):
    """Beyond 32 colours (and in OKLab at any size) the vectorised search answers from the cell table where a cell
    holds one colour and searches the rest: the cell-table loop's indices and image with and without alpha, on
    random pixels, on every palette colour and its neighbours (exact and near ties), and with repeated colours; in
    sRGB also brute force, in OKLab brute force through an independent conversion. quantize takes it up to
    NEAREST_SEARCH_MAX colours."""
    from pixart_nodes.core import dither
    from pixart_nodes.core import quantize as qz
    from pixart_nodes.core.quantize import ordered_offsets

    def search(source, offsets):
        idx = np.empty(source.shape[:2], np.uint8)
        image = np.empty_like(source)
        mask = dither.nearest(source, qz._nearest_table(pal.tobytes(), distance == "oklab"), idx, image, offsets)
        return idx, image, mask

    rng = np.random.default_rng(n + (distance == "oklab"))
    pal = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    pal[n // 2] = pal[n // 3]  # a repeated colour: the lower index wins
    near = np.clip(pal[:, None, :].astype(int) + rng.integers(-2, 3, (n, 6, 3)), 0, 255).reshape(-1, 3)
    img = np.concatenate([rng.integers(0, 256, (3000, 3)), pal, near]).astype(np.uint8)
    img = np.ascontiguousarray(img[: len(img) // 50 * 50].reshape(50, -1, 3))
    rgba = _with_alpha(img, rng)
    idx, _, _ = search(img, None)
    if distance == "rgb":
        assert np.array_equal(idx, _brute_force(img, pal, distance))
    else:  # an independent conversion: within rounding
        lab = color.srgb_u8_to_oklab(img.reshape(-1, 3))
        d = ((lab[:, None, :] - color.srgb_u8_to_oklab(pal)[None]) ** 2).sum(-1)
        assert np.all(d[np.arange(len(d)), idx.ravel()] <= d.min(axis=1) + 1e-12)
    assert not np.isin(n // 2, idx)
    searched = n <= dither.NEAREST_SEARCH_MAX[distance == "oklab"]
    for source in (img, rgba):
        for method, strength in (("none", 1.0), ("bayer-4x4", 1.0), ("blue-noise", 0.5)):
            offsets = None if method == "none" else ordered_offsets(method, pal, strength)
            idx, image, mask = search(source, offsets)
            ref = _cell_loop(source, pal, distance, offsets)
            assert np.array_equal(idx, ref.indices) and np.array_equal(image, ref.image), method
            assert mask == sum(1 << int(k) for k in np.unique(ref.indices))
            if searched:  # above, quantize runs the loop itself
                out = quantize(source, pal, dither=method, distance=distance, strength=strength)
                assert np.array_equal(out.indices, ref.indices) and np.array_equal(out.image, ref.image), method
                assert out.colors_used == len(np.unique(ref.indices[ref.indices < n]))


def test_vectorised_search_keys_are_exact():
    """The keys stay whole numbers below 2^24 at every step for the extreme colours and pixels, so float32 holds
    them exactly; more than 32 colours take no keys (the index would not fit the key's low 5 bits): they need a
    cell table, as OKLab palettes of more than 254 colours refuse (uint8 cells and indices)."""
    from pixart_nodes.core import dither

    pal = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 255]] * 8, np.uint8)
    keys = dither.nearest_table(pal, False).rows.astype(np.float64)
    for p in ([0, 0, 0], [255, 255, 255], [255, 255, 0]):
        k = keys[:, 3] + p[0] * keys[:, 0]
        assert np.all((k > 0) & (k < 2**24))
        k = k + p[1] * keys[:, 1] + p[2] * keys[:, 2]
        assert np.all((k > 0) & (k < 2**24))
        d = ((pal.astype(np.int64) - p) ** 2).sum(axis=1)
        assert np.array_equal(k, 32 * (d - sum(v * v for v in p) + (1 << 18)) + np.arange(32))
    assert dither.nearest_table(pal, False).keys
    with pytest.raises(ValueError, match="1..32"):
        dither.nearest_table(np.zeros((33, 3), np.uint8), False)
    with pytest.raises(ValueError, match="1..254"):
        dither.nearest_table(np.zeros((255, 3), np.uint8), True)
    big = np.random.default_rng(5).integers(0, 256, (33, 3), dtype=np.uint8)
    table = dither.nearest_table(big, False, dither.cell_table(big, False))
    assert not table.keys and table.rows.shape == (34, 3) and table.gbits == dither.GBITS


def test_vnni_keys_rank_colours_exactly():
    """The integer keys of the VNNI search, evaluated here as the instructions do (signed bytes times pixel bytes
    plus the second word, shifted left six bits with the third word's top six bits appended, in int32): the
    greatest is the nearest colour, the lower index on exact ties, for extreme pixels and palettes and for pixels
    equidistant from colours of either parity; rows pad to multiples of eight with the last colour."""
    from pixart_nodes.core import dither

    rng = np.random.default_rng(9)
    pals = [np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 255]] * 8, np.uint8),
            np.array([[0, 0, 0], [2, 0, 0], [1, 1, 0], [0, 0, 1]], np.uint8),  # |c|^2 of both parities, ties
            rng.integers(0, 256, (32, 3), dtype=np.uint8), rng.integers(0, 256, (5, 3), dtype=np.uint8)]
    for pal in pals:
        table = dither.vnni_keys(pal)
        assert table.dtype == np.int32 and table.shape == (-(-len(pal) // 8) * 8, 3)
        assert np.array_equal(table[len(pal):], np.repeat(table[len(pal) - 1:len(pal)], len(table) - len(pal), 0))
        s = table[:, 0].view(np.uint32)[:, None] >> np.array([0, 8, 16, 24], np.uint32) & 255
        s = s.astype(np.int64) - 256 * (s > 127)
        assert np.array_equal(s[:, :3], pal[np.minimum(np.arange(len(table)), len(pal) - 1)].astype(int) - 128)
        assert not s[:, 3].any()
        pixels = np.concatenate([rng.integers(0, 256, (3000, 3)), pal, [[0, 0, 0], [255, 255, 255], [1, 0, 0]]])
        e = pixels @ s[:, :3].T + table[:, 1].astype(np.int64)
        assert e.min() >= -(1 << 25) and e.max() < (1 << 25)  # 64 e and six more bits stay within int32
        keys = (e << 6) | (table[:, 2].view(np.uint32).astype(np.int64) >> 26)
        d = ((pixels[:, None, :] - pal[None].astype(np.int64)) ** 2).sum(-1)
        assert np.array_equal(31 - (keys.max(axis=1) & 31), d.argmin(axis=1))


def _test_palette(name: str, rng) -> np.ndarray:
    """Palettes of up to 32 colours for the sRGB search: named ones, random ones, near ties, repeats, one colour."""
    if name.startswith("near-ties"):
        return _near_tie_palette(rng, 24, "rgb")[0]
    if name.startswith("repeats"):
        pal = rng.integers(0, 256, (12 if name == "repeats" else 15, 3), dtype=np.uint8)
        return np.concatenate([pal, pal[::3]])  # later copies never win
    if name.startswith("random-"):
        return rng.integers(0, 256, (int(name.split("-")[1]), 3), dtype=np.uint8)
    return named_palette(name).colors


def _coarse_cells(values: np.ndarray) -> np.ndarray:
    from pixart_nodes.core import dither

    g = dither.VNNI_COARSE_BITS
    v = values.astype(np.int64) >> (8 - g)
    return (v[:, 0] << (2 * g)) | (v[:, 1] << g) | v[:, 2]


@pytest.mark.parametrize("name", ["pico-8", "endesga-32", "random-32", "random-1", "near-ties-24", "repeats"])
def test_coarse_keys_hold_the_true_nearest(name):
    """The vector loops search only a coarse cell's colours where sixteen pixels share the cell: each cell's
    colours are in palette order, the table holds those rows of both searches' keys, and the nearest colour (the
    lower index on ties) of every value sampled in the cell is among them (brute force on the corners, the centre,
    the near-tie values and random values of every cell); the lists are shorter than the palette where it has more
    than a few colours."""
    from pixart_nodes.core import dither

    rng = np.random.default_rng(31)
    pal = _test_palette(name, rng)
    starts, index = dither.coarse_keys(pal)
    cells = 1 << (3 * dither.VNNI_COARSE_BITS)
    assert starts.shape == (cells + 1,) and starts[0] == 0 and starts[-1] == len(index)
    assert np.all(np.diff(starts) >= 1)
    for k in range(cells):
        assert np.all(np.diff(index[starts[k]:starts[k + 1]]) > 0), k
    table = dither.nearest_table(pal, False)
    assert np.array_equal(table.cstarts, starts)
    assert np.array_equal(table.ckeys, dither.vnni_keys(pal)[index])
    assert np.array_equal(table.cfkeys, table.rows[index])
    assert np.array_equal(31 - ((table.ckeys[:, 2].view(np.uint32) >> 26) & 31), index)
    assert np.array_equal(table.cfkeys[:, 3].astype(np.int64) & 31, index)
    size = 256 >> dither.VNNI_COARSE_BITS
    lo = np.stack(np.meshgrid(*[np.arange(0, 256, size)] * 3, indexing="ij"), -1).reshape(-1, 3)
    corners = [lo + size // 2] + [lo + (size - 1) * np.array([c & 1, (c >> 1) & 1, c >> 2]) for c in range(8)]
    values = np.concatenate(corners + [rng.integers(0, 256, (40000, 3))]
                            + ([_near_tie_palette(np.random.default_rng(31), 24, "rgb")[1]]
                               if name.startswith("near") else []))
    nearest, _ = _nearest_by_brute_force(values, pal, "rgb")
    cell = _coarse_cells(values)
    for k in np.unique(cell):
        at = cell == k
        assert np.isin(nearest[at], index[starts[k]:starts[k + 1]]).all(), k
    if len(pal) >= 16:
        assert np.diff(starts).mean() < len(pal) / 4


_SEARCH_PALETTES = ["endesga-32", "random-32", "random-5", "random-1", "near-ties-24", "repeats", "repeats-20"]
_TRIPLE_PALETTES = ["endesga-32", "random-32", "near-ties-24", "repeats-20"]  # 17 colours or more


@pytest.mark.parametrize("name, search", [(n, s) for s in ("vnni", "float32") for n in _SEARCH_PALETTES]
                         + [(n, s) for s in ("vnni-triples", "float32-triples") for n in _TRIPLE_PALETTES])
def test_vector_searches_match_brute_force(name, search, monkeypatch):
    """The vector loops' ways through a vector (one coarse cell's colours; its pixels' triples, and every colour
    where a pixel's cell has four or more candidates; every colour, for this vector and the next together or for
    this one alone) and the pixels after their last vector: images built so that vectors of every kind follow each
    other, at sizes around the loops' bounds (a 64-byte read per vector, so no vector below 22 pixels), against brute
    force, with the bit mask of indices used."""
    from pixart_nodes.core import dither, simd

    if search.startswith("vnni") and not simd.host_has_vnni():
        pytest.skip("no AVX-512 VNNI here: the loop under test does not run (the float32 search is tested beside)")
    if search == "float32-triples" and not simd.wide_registers():
        pytest.skip("numba does not compile for AVX-512 here: the float32 search reads no triples")
    rng = np.random.default_rng(17)
    pal = _test_palette(name, rng)
    triples = search.endswith("triples")
    assert not triples or len(pal) >= dither.TRIPLES_FROM
    monkeypatch.setattr(dither, "USE_VNNI", search.startswith("vnni"))
    cells = dither.cell_table(pal, False)
    table = dither.nearest_table(pal, False, cells if triples else None)
    assert (len(table.triples) > 0) == triples
    size = 256 >> dither.VNNI_COARSE_BITS
    starts, _ = dither.coarse_keys(pal)
    crowded = np.flatnonzero(np.diff(starts) > dither.TRIPLE_SHARED_MAX)  # coarse cells searched by triples
    many = np.flatnonzero(dither.triple_table(cells, len(pal))[:-1] == dither.PAIR_MANY)  # cells of 4+ colours
    fine = 1 << dither.GBITS
    if name == "endesga-32":  # the palette has vectors of both kinds to build
        assert len(crowded) and len(many)

    def run(kind, n):
        if kind in ("shared", "crowded"):  # sixteen values of one coarse cell
            top = crowded[rng.integers(len(crowded))] if kind == "crowded" and len(crowded) else None
            corner = (rng.integers(0, 256 // size, 3) if top is None else
                      np.array([top >> 6, (top >> 3) & 7, top & 7]))
            return (corner * size + rng.integers(0, size, (n, 3))).astype(np.uint8)
        out = rng.integers(0, 256, (n, 3), dtype=np.uint8)
        if kind == "many" and len(many):  # a few lanes in cells of four or more candidates
            at = rng.choice(n, min(n, 3), replace=False)
            cell = many[rng.integers(0, len(many), len(at))]
            out[at] = (np.stack([cell // fine // fine, cell // fine % fine, cell % fine], -1) * (256 // fine)
                       + rng.integers(0, 256 // fine, (len(at), 3)))
        return out

    kinds = ["shared", "mixed", "crowded", "many"]
    # every succession of two kinds, and odd runs of mixed vectors (the pairwise search leaves one alone)
    order = [kinds[k] for k in rng.integers(0, 4, 160)] + ["mixed"] * 3 + ["shared", "mixed", "shared"]
    body = np.concatenate([run(kind, 16) for kind in order])
    if name.startswith("near"):  # exact ties: mixed vectors of them, then vectors of one tie each (a shared cell)
        ties = _near_tie_palette(np.random.default_rng(31), 24, "rgb")[1]
        body[: 16 * 6] = np.resize(ties, (96, 3))
        body[16 * 6: 16 * 12] = np.repeat(ties[:6], 16, axis=0)
    guard = 64  # bytes after each output, which no store may reach

    def check(shape):
        n = shape[0] * shape[1]
        img = np.ascontiguousarray(body[:n].reshape(*shape, 3))
        idx_buf, image_buf = np.full(n + guard, 0xAB, np.uint8), np.full(3 * n + guard, 0xAB, np.uint8)
        idx, image = idx_buf[:n].reshape(shape), image_buf[: 3 * n].reshape(*shape, 3)
        mask = dither.nearest(img, table, idx, image)
        ref, _ = _nearest_by_brute_force(img.reshape(-1, 3), pal, "rgb")
        assert np.array_equal(idx.ravel(), ref), shape
        assert np.array_equal(image.reshape(-1, 3), pal[ref]), shape
        assert mask == sum(1 << int(k) for k in np.unique(ref)), shape
        assert (idx_buf[n:] == 0xAB).all() and (image_buf[3 * n:] == 0xAB).all(), shape
        # with alpha (the block loop): some pixels transparent, index N and 0, 0, 0, 0
        alpha = np.where(rng.random(shape) < 0.2, 0, 255).astype(np.uint8)
        rgba = np.ascontiguousarray(np.dstack([img, alpha]))
        idx4, image4 = np.empty(shape, np.uint8), np.empty_like(rgba)
        mask = dither.nearest(rgba, table, idx4, image4)
        want = np.where(alpha.ravel() >= 128, ref, len(pal))
        assert np.array_equal(idx4.ravel(), want), shape
        colours = np.vstack([np.hstack([pal, np.full((len(pal), 1), 255, np.uint8)]), np.zeros((1, 4), np.uint8)])
        assert np.array_equal(image4.reshape(-1, 4), colours[want]), shape
        assert mask == sum(1 << int(k) for k in np.unique(want)), shape

    for n in (1, 15, 16, 21, 22, 23, 37, 64, 65, 100, len(body)):
        check((1, n))
    check((29, 37))  # rows that do not end on a vector


@pytest.mark.parametrize("name", ["endesga-32", "random-32", "near-ties-24", "repeats-20", "random-1"])
def test_triple_table_holds_each_cells_candidates(name):
    """The triples decode to each cell's candidates of the cell table (one repeated, two with the second repeated,
    three), PAIR_MANY where a cell has four or more, and a spare zero; quantize builds them for 17 to 32 colours
    where a search reads them, with their columns for both searches, and 32 colours fit the 5-bit fields where 33
    do not."""
    from pixart_nodes.core import dither
    from pixart_nodes.core import quantize as qz

    pal = _test_palette(name, np.random.default_rng(5))
    cells = dither.cell_table(pal, False)
    codes = dither.triple_table(cells, len(pal))
    assert codes.dtype == np.uint16 and len(codes) == len(cells.info) + 1 and codes[-1] == 0
    f = dither.TRIPLE_FIELD
    a, b, c = codes[:-1] & 31, (codes[:-1] >> f) & 31, codes[:-1] >> (2 * f)
    for cell in np.random.default_rng(1).choice(len(cells.info), 3000, replace=False).tolist() + list(
            np.flatnonzero(cells.info >= len(pal))[:3000]):
        if cells.info[cell] < len(pal):
            want = [int(cells.info[cell])]
        else:
            start = cells.moff[cell]
            want = cells.cands[start + 1: start + 1 + cells.cands[start]].tolist()
        if len(want) > 3:
            assert codes[cell] == dither.PAIR_MANY, cell
            assert a[cell] > b[cell]  # the search's test for "more than three"
        else:
            assert [a[cell], b[cell], c[cell]] == (want + [want[-1]] * 2)[:3], (cell, want)
    with pytest.raises(ValueError, match="below 32"):
        dither.triple_table(dither.cell_table(np.tile(pal[:1], (33, 1)), False), 33)
    built = qz._nearest_table(pal.tobytes(), False)
    assert (len(built.triples) > 0) == (len(pal) >= dither.TRIPLES_FROM and dither.triples_read_here())
    assert (len(built.cells) > 0) == (len(pal) >= dither.TRIPLES_FROM and dither.cells_read_here())
    if len(built.triples):  # column k of ftcols is colour k's key row (the last one repeated up to 32)
        rows = built.rows[np.minimum(np.arange(32), len(built.rows) - 1)]
        assert built.ftcols.shape == (4, 32) and np.array_equal(built.ftcols.T, rows)
        assert np.array_equal(built.tcols.T, built.vnni[np.minimum(np.arange(32), len(built.vnni) - 1)])


def test_vnni_search_serves_where_the_cpu_has_it(monkeypatch):
    """Where numba compiles for AVX-512 VNNI here, the sRGB search runs it: the JIT's kernel, and the ahead-of-time
    export when the module is built; elsewhere the float32 search serves (the module has no such export)."""
    from pixart_nodes.core import dither, jit, simd

    aot = jit.aot_module()
    if aot is not None:
        assert hasattr(aot, jit.export_name(dither, "_nearest_rgb_vnni")) == simd.host_has_vnni()
    monkeypatch.setenv("PIXART_NO_AOT", "1")
    assert (dither._vnni_kernel() is not None) == simd.host_has_vnni()
    if not simd.host_has_vnni():
        pytest.skip("no AVX-512 VNNI here: only the float32 search runs")


def test_float32_search_pairs_vectors_and_reads_triples_only_with_avx512():
    """The float32 loop searches two vectors at once, and reads triples, only where numba compiles for AVX-512
    (with AVX2's registers the pair spilled and took longer, and gathers of the triples took longer than the search
    of every colour): its switch, set when the kernels are made, follows the target's features."""
    from pixart_nodes.core import dither, jit, simd

    jit.materialise(dither)
    assert dither._FLOAT_WIDE is simd.wide_registers()
    # so quantize builds triples where a search reads them: the compiled switch, ahead of time and by the JIT
    aot = jit.aot_module()
    if aot is not None:
        assert getattr(aot, jit.export_name(dither, "_float_triples"))() is simd.wide_registers()
    assert dither.triples_read_here() is (simd.host_has_vnni() or simd.wide_registers())
    # compiled for AVX2 without AVX-512 it reads each pixel's cell instead (test_avx2_search_...)
    assert dither._TABLE_FIRST is simd.table_first() is (not simd.wide_registers() and "avx2" in
                                                          simd._target_features())
    if aot is not None:
        assert getattr(aot, jit.export_name(dither, "_float_cells"))() is simd.table_first()
    assert dither.cells_read_here() is (not simd.host_has_vnni() and simd.table_first())


def test_table_for_the_avx2_search_holds_cells_and_colour_pairs(monkeypatch):
    """Where the search reads each pixel's cell first (compiled for AVX2), the table holds the cell table padded
    for four-byte gathers and the colour pairs it writes, and no triples (nothing reads them there); from 17
    colours only."""
    from pixart_nodes.core import dither

    monkeypatch.setattr(dither, "cells_read_here", lambda: True)
    pal = named_palette("endesga-32").colors.astype(np.uint8)
    cells = dither.cell_table(pal, False)
    table = dither.nearest_table(pal, False, cells)
    assert len(table.triples) == 0
    assert np.array_equal(table.cells, np.append(cells.info, np.zeros(4, np.uint8)))
    six = table.pairs.astype("<u8").view(np.uint8).reshape(32, 32, 8)  # [b, a]: R G B of a, R G B of b, 0, 0
    assert np.array_equal(six[:, :, :3], np.broadcast_to(pal[None, :, :], (32, 32, 3)))
    assert np.array_equal(six[:, :, 3:6], np.broadcast_to(pal[:, None, :], (32, 32, 3)))
    assert not six[:, :, 6:].any()
    small = dither.nearest_table(pal[:16], False, dither.cell_table(pal[:16], False))
    assert len(small.cells) == len(small.pairs) == 0


# The float32 search as numba compiles it for a CPU with AVX2 and no AVX-512 (most desktop CPUs): from 17 colours it
# reads each pixel's cell first (simd.table_first). Run in a process of its own, compiled by the JIT for Haswell.
_AVX2_CHECK = r"""
import numpy as np
from pixart_nodes.core import dither, simd
from pixart_nodes.core.palette import named_palette
from pixart_nodes.core.quantize import quantize

assert simd.table_first() and dither.cells_read_here() and not dither.triples_read_here()
rng = np.random.default_rng(7)
codes = np.arange(0, 1 << 24, 7, dtype=np.int64)[:2340 * 1024]  # every 7th code value: a band through each cell
band = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], -1).astype(np.uint8).reshape(-1, 1024, 3)
images = [rng.integers(0, 256, s + (3,), dtype=np.uint8) for s in ((512, 512), (37, 41), (1, 17), (3, 1376))]
run = np.arange(1 << 23, 3 << 22, dtype=np.int64)  # a quarter of the code values in order: vectors in one coarse cell
images.append(np.stack([run >> 16, (run >> 8) & 255, run & 255], -1).astype(np.uint8).reshape(-1, 2048, 3))
endesga = named_palette("endesga-32").colors
info = dither.cell_table(endesga, False).info
# pixels of cells of more than one colour only, so that each flush of the listed pixels alone says which colours
# were used: one colour (its every pixel among the first 100) found in the first flush only
v = rng.integers(0, 256, (400000, 3)).astype(np.uint8)
w = v.astype(np.int64) >> 2
v = v[info[w[:, 0] << 12 | w[:, 1] << 6 | w[:, 2]] == 255]
near = ((v[:, None].astype(np.int64) - endesga[None].astype(np.int64)) ** 2).sum(-1).argmin(1)
only = np.bincount(near, minlength=32).argmax()
first, rest = v[near == only][:100], v[near != only]
multi = np.concatenate([first, rest[:100], rest[100:4100]])[None]
# vectors in one coarse cell (sixteen copies of a pixel) and vectors of random pixels, in random order
kinds = rng.integers(0, 2, 300)
mixed = np.concatenate([np.repeat(rng.integers(0, 256, (1, 3)), 16, 0) if k else rng.integers(0, 256, (16, 3))
                        for k in kinds]).astype(np.uint8)[None]
images += [multi, mixed] + [rng.integers(0, 256, (1, n, 3), dtype=np.uint8) for n in (21, 22, 38)]
for pal in (endesga, endesga[:17], named_palette("pico-8").colors):
    c = pal.astype(np.int64)
    for img in images + [band]:
        res = quantize(img, pal, dither="none", distance="rgb")
        flat = img.reshape(-1, 3).astype(np.int64)
        want = np.concatenate([((flat[k:k + 65536, None] - c[None]) ** 2).sum(-1).argmin(1)
                               for k in range(0, len(flat), 65536)])
        assert np.array_equal(res.indices.reshape(-1), want), (len(pal), img.shape)
        assert np.array_equal(res.image.reshape(-1, 3), pal[want]), (len(pal), img.shape)
        assert res.colors_used == len(np.unique(want)), (len(pal), img.shape)
print("ok")
"""


def test_avx2_search_reads_cells_first_and_equals_brute_force(tmp_path):
    """Compiled for AVX2 without AVX-512 (numba's JIT told Haswell's features, in a process of its own), the sRGB
    search of 17-32 colours takes each pixel's colour from the cell table and searches the pixels of cells of more
    than one colour, or where sixteen pixels share a coarse cell searches its colours: indices, image and colours
    used equal brute force (ties to the lower index) on random images of awkward sizes, on every 7th code value and
    on a quarter of them in order; on pixels only of cells of more than one colour, one colour found only among the
    first listed pixels (the colours used come from each flush of them); on vectors in one coarse cell and not, in
    random order (the gathers go a vector ahead, skipped before the first); on images of no, one and two vectors; 16
    colours go through the search of every colour. Bounds checked where numba indexes."""
    import os
    import subprocess
    import sys

    with open("/proc/cpuinfo") as f:
        if " avx2 " not in f.read():
            pytest.skip("this CPU has no AVX2: the JIT cannot run code compiled for Haswell")
    env = {**os.environ, "PIXART_NO_AOT": "1", "NUMBA_CACHE_DIR": str(tmp_path), "NUMBA_CPU_NAME": "haswell",
           "NUMBA_BOUNDSCHECK": "1",
           "NUMBA_CPU_FEATURES": "+avx,+avx2,+fma,+bmi,+bmi2,+f16c,+popcnt,+sse4.2,+lzcnt,+movbe,-avx512f,"
                                 "-avx512bw,-avx512vl,-avx512dq,-avx512cd,-avx512vnni"}
    proc = subprocess.run([sys.executable, "-c", _AVX2_CHECK], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


@pytest.mark.parametrize("search", ["vnni", "float32"])
def test_vector_searches_read_the_triples(search, monkeypatch):
    """Where a search reads triples (VNNI; float32 compiled for AVX-512), its answers come from them: with every
    cell's triple forged to name colour 0, the vectors of random pixels all give 0, and so do the pixels after the
    last vector where the block search reads them too (VNNI); the float32 block search reads none."""
    from pixart_nodes.core import dither, simd

    if not (simd.host_has_vnni() if search == "vnni" else simd.wide_registers()):
        pytest.skip(f"the {search} search reads no triples on this CPU")
    monkeypatch.setattr(dither, "USE_VNNI", search == "vnni")
    pal = named_palette("endesga-32").colors.astype(np.uint8)
    table = dither.nearest_table(pal, False, dither.cell_table(pal, False))
    forged = table._replace(triples=np.zeros_like(table.triples))
    img = np.random.default_rng(3).integers(0, 256, (1, 1000, 3), dtype=np.uint8)
    idx, image = np.empty((1, 1000), np.uint8), np.empty_like(img)
    dither.nearest(img, forged, idx, image)
    ref, _ = _nearest_by_brute_force(img.reshape(-1, 3), pal, "rgb")
    vectors = (3 * 1000 - 64) // 48 + 1  # the vectors whose 64-byte reads stay within the image
    assert (idx.ravel()[: 16 * vectors] == 0).all()
    tail = idx.ravel()[16 * vectors:]
    assert (tail == 0).all() if search == "vnni" else np.array_equal(tail, ref[16 * vectors:])
    dither.nearest(img, table, idx, image)
    assert np.array_equal(idx.ravel(), ref)


@pytest.mark.parametrize("name", ["pico-8", "endesga-32", "random-3", "random-200", "random-256", "near-ties-24"])
def test_pair_codes_hold_the_true_nearest(name):
    """sRGB error diffusion reads a pair of colours per cell (or "3+ candidates": the memo); the nearest colour of
    every value is one of the two, and the pair is in palette order so the lower index wins ties. Brute force on
    random values, cell corners and exact ties."""
    from pixart_nodes.core import dither

    rng = np.random.default_rng(22)
    if name.startswith("near-ties"):
        pal, ties = _near_tie_palette(rng, 24, "rgb")
    else:
        pal, ties = _palette(name, rng), np.zeros((0, 3), np.int64)
    tab = dither.cell_table(pal, False)
    codes, shift = dither.pair_table(tab, len(pal))
    assert codes.dtype == (np.uint8 if len(pal) <= 16 else np.uint16) and shift == (4 if len(pal) <= 16 else 8)
    g, size = tab.gbits, 256 >> tab.gbits
    corners = np.concatenate([np.arange(0, 256, size), np.arange(size - 1, 256, size)])
    values = np.concatenate([rng.integers(0, 256, (4000, 3)), rng.choice(corners, (3000, 3)),
                             np.clip(ties[:, None, :] + rng.integers(-2, 3, (len(ties), 20, 3)), 0, 255).reshape(-1, 3)])
    best, d = _nearest_by_brute_force(values, pal, "rgb")
    qi = values >> (8 - g)
    cell = (qi[:, 0] << (2 * g)) | (qi[:, 1] << g) | qi[:, 2]
    mask = (1 << shift) - 1
    pairs = many = 0
    for i in range(len(values)):
        e = int(codes[cell[i]])
        a, b = e & mask, e >> shift
        if a > b:
            many += 1
            assert len(_table_candidates(tab, int(cell[i]))) >= 3
            continue
        pairs += a != b
        chosen = b if d[i, b] < d[i, a] else a
        assert chosen == best[i], (values[i], a, b, best[i])
    assert pairs > 0
    assert many < len(values) // 4



@pytest.mark.parametrize("gbits", [5, 6])
@pytest.mark.parametrize("name", ["pico-8", "endesga-32", "random-9", "random-32", "near-ties-24", "aap-64"])
def test_pair_masks_hold_the_exact_nearest(name, gbits):
    """OKLab error diffusion reads a pair cell's choice from its mask: for every code value of sampled pair cells
    (all 64 or 512 each), the bit says b exactly where b is nearer than a (brute force; ties to a). Other cells
    read the all-zero mask."""
    from pixart_nodes.core import dither

    rng = np.random.default_rng(23)
    if name.startswith("near-ties"):
        pal, _ = _near_tie_palette(rng, 24, "oklab")
    else:
        pal = _palette(name, rng)
    if name == "random-32":
        pal[17] = pal[5]  # pairs of two equal colours: every value to the lower index
    lk = dither.lookup(pal, True, gbits)
    tab = lk.table
    codes, shift, masks, slots = dither.diffusion_pairs(lk, pal)
    c = codes.astype(np.int64)
    a, b = c & ((1 << shift) - 1), c >> shift
    cells = np.flatnonzero(a < b)
    g = tab.gbits
    lb = 8 - g
    low = np.arange(1 << (3 * lb))
    words = max(1, len(low) // 64)
    assert len(cells) > 100 and len(masks) == (len(cells) + 1) * words and not masks[:words].any()
    assert np.array_equal(np.sort(slots[cells]), np.arange(1, len(cells) + 1)) and not slots[a >= b].any()
    pick = rng.choice(cells, min(len(cells), (300 if len(pal) > 40 else 1500) >> (3 * (6 - g))), replace=False)
    values = np.stack([((pick >> (2 * g))[:, None] << lb) + (low >> (2 * lb)),
                       (((pick >> g) & ((1 << g) - 1))[:, None] << lb) + ((low >> lb) & ((1 << lb) - 1)),
                       ((pick & ((1 << g) - 1))[:, None] << lb) + (low & ((1 << lb) - 1))], axis=-1).reshape(-1, 3)
    best, d = _nearest_by_brute_force(values, pal, "oklab")
    ca, cb = np.repeat(a[pick], len(low)), np.repeat(b[pick], len(low))
    if name == "random-32":
        same = cells[(a[cells] == 5) & (b[cells] == 17)]
        assert len(same) and not masks[slots[same].astype(np.int64)[:, None] * words + np.arange(words)].any()
    word = masks[slots[pick].astype(np.int64)[:, None] * words + (low >> 6)]
    bit = ((word >> (low & 63).astype(np.uint64)) & np.uint64(1)).ravel().astype(bool)
    rows = np.arange(len(values))
    da, db = d[rows, ca], d[rows, cb]
    tol = 1e-12  # float rounding between two ways of converting to OKLab
    assert np.all(np.where(bit, db < da + tol, da <= db + tol))
    assert np.all(np.minimum(da, db) <= d.min(axis=1) + tol)  # the pair holds the nearest colour
    clear = np.abs(da - db) > tol
    assert bit[clear].any() and (~bit[clear]).any()
    assert np.array_equal(bit[clear], (best == cb)[clear])


def test_big_palettes_have_no_pair_masks():
    """Beyond the palette size quantize searches with the vectorised search (NEAREST_SEARCH_MAX), masks would cost
    more than they save: every pair cell goes through the memo (and error diffusion stays exact: see test_dither's
    fixed-point reference with 70 colours)."""
    from pixart_nodes.core import dither

    pal = np.random.default_rng(25).integers(0, 256, (dither.NEAREST_SEARCH_MAX[True] + 1, 3), dtype=np.uint8)
    lk = dither.lookup(pal, True, dither.LAB_DIFFUSION_GBITS)
    prs = dither.diffusion_pairs(lk, pal)
    c = prs.codes.astype(np.int64)
    single = lk.table.info != np.iinfo(lk.table.info.dtype).max
    assert np.array_equal((c & 255) == (c >> 8), single) and np.all(c[~single] == dither.PAIR_MANY)
    assert not prs.masks.any() and not prs.slots.any() and len(prs.masks) == 1 << (3 * (8 - lk.table.gbits) - 6)


def test_pairs_of_another_cell_size_are_refused():
    """The loops index pair codes and masks by cell without bounds checks: pairs made for another cell table are a
    ValueError, not a read past the arrays."""
    from pixart_nodes.core import dither

    pal = named_palette("pico-8").colors
    img = np.zeros((4, 4, 3), np.uint8)
    out = dither.Target(np.zeros((17, 3), np.uint8), np.empty((4, 4), np.uint8), np.empty_like(img),
                        np.zeros(17, np.uint8))
    small, big = dither.lookup(pal, True, 5), dither.lookup(pal, True, 6)
    with pytest.raises(ValueError, match="cells"):
        dither.error_diffuse(img, pal, big, dither.ERROR_KERNELS["atkinson"], out,
                             pairs=dither.diffusion_pairs(small, pal))


def test_pairs_beyond_the_mask_limit_go_through_the_memo(monkeypatch):
    """Palettes with more pair cells than slots: the rest are marked 3+ and read from the memo; error diffusion
    gives the same result as with a mask for every pair. (At 64^3 cells; OKLab error diffusion's 32^3 cells never
    reach the real limit, so it is lowered here.)"""
    from pixart_nodes.core import dither

    rng = np.random.default_rng(24)
    pal = rng.integers(0, 256, (32, 3), dtype=np.uint8)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    results = []
    for limit in (dither.MAX_MASKS, 500):
        monkeypatch.setattr(dither, "MAX_MASKS", limit)
        lk = dither.lookup(pal, True)
        prs = dither.diffusion_pairs(lk, pal)
        c = prs.codes.astype(np.int64)
        many = np.count_nonzero((c & 255) > (c >> 8))
        results.append((many, len(prs.masks)))
        table = np.zeros((33, 3), np.uint8)
        table[:32] = pal
        out = dither.Target(table, np.empty((64, 64), np.uint8), np.empty_like(img), np.zeros(33, np.uint8))
        dither.error_diffuse(img, pal, lk, dither.ERROR_KERNELS["jarvis-judice-ninke"], out, pairs=prs)
        results.append(out.indices)
    assert results[2][1] == 501 and results[0][1] > 501
    assert results[2][0] == results[0][0] + results[0][1] - 501
    assert np.array_equal(results[1], results[3])


_AOT_CHECK = r"""
import json, sys
import numpy as np
from pixart_nodes.core import jit
from pixart_nodes.core.palette import extract_palette, named_palette
from pixart_nodes.core.quantize import DITHER_METHODS, quantize
rng = np.random.default_rng(3)
img = rng.integers(0, 256, (23, 31, 4), dtype=np.uint8)
img[..., 3] = np.where(rng.random((23, 31)) < 0.2, 0, 255)
out = {"aot": jit.aot_module() is not None, "numba": False}
pals = [named_palette("pico-8").colors, rng.integers(0, 256, (40, 3), dtype=np.uint8),
        rng.integers(0, 256, (255, 3), dtype=np.uint8), extract_palette(img, 12, seed=4).colors]
for i, pal in enumerate(pals):
    for m in DITHER_METHODS:
        for d in ("rgb", "oklab"):
            for damping in (False, True):
                r = quantize(img if i != 2 else img[..., :3].copy(), pal, dither=m, distance=d, damping=damping)
                out[f"{i} {m} {d} {damping}"] = r.indices.astype(int).ravel().tolist()
    # no alpha: the vectorised searches (keys up to 32 colours, table-first beyond, and in OKLab), without
    # dithering and ordered (31 columns: rows start off a multiple of 4), and the error-diffusion vector loops
    for m in ("none", "bayer-2x2", "bayer-8x8", "blue-noise", "floyd-steinberg", "jarvis-judice-ninke"):
        for d in ("rgb", "oklab"):
            r = quantize(img[..., :3].copy(), pal, dither=m, distance=d)
            out[f"{i} {m} {d} rgb"] = [r.indices.astype(int).ravel().tolist(), r.image.astype(int).ravel().tolist(),
                                       r.colors_used]
    # RGBA with nothing transparent: the error-diffusion vector loops with four channels
    for d in ("rgb", "oklab"):
        r = quantize(img, pal, dither="jarvis-judice-ninke", distance=d, alpha_threshold=0)
        out[f"{i} jjn {d} rgba 0"] = [r.indices.astype(int).ravel().tolist(), r.image.astype(int).ravel().tolist()]
out["numpy.ma"] = "numpy.ma" in sys.modules  # numpy 2 imports it for np.median and plain np.unique: 20-60 ms
# extraction's passes: the colour table and (over 20000 colours) its bins, the joint refinement with swaps, the
# refinement under dithering, for several images at once
big = rng.integers(0, 256, (150, 160, 3), dtype=np.uint8)
big[40:90] = big[40:90] // 32 * 32
for k, images in ((6, [big]), (8, [big, img[..., :3].copy()]), (12, [img])):
    for dither in (False, True):
        out[f"extract {k} {dither}"] = extract_palette(images, k, dither=dither).colors.astype(int).tolist()
out["numba"] = "numba" in sys.modules
print(json.dumps(out))
"""


def test_ahead_of_time_kernels_equal_the_jit(tmp_path):
    """Every export of the ahead-of-time module (when built: install.py) gives the JIT's result, for uint8 and
    uint16 tables and indices, every method, both distances, damping; with it, quantizing imports no numba (nor
    numpy.ma)."""
    import json
    import subprocess
    import sys

    from pixart_nodes.core import jit

    if jit.aot_module() is None:
        pytest.skip("kernels not built ahead of time (python -m pixart_nodes.core.build_kernels)")
    runs = {}
    for env in ({}, {"PIXART_NO_AOT": "1"}):
        import os

        proc = subprocess.run([sys.executable, "-c", _AOT_CHECK], capture_output=True, text=True, check=True,
                              env={**os.environ, **env})
        runs[bool(env)] = json.loads(proc.stdout)
    aot, ref = runs[False], runs[True]
    assert aot.pop("aot") and not ref.pop("aot")
    assert not aot.pop("numba") and ref.pop("numba")
    assert not aot.pop("numpy.ma")  # no first quantize imports it (the JIT's run, with numba, is not asked)
    ref.pop("numpy.ma")
    assert aot == ref


def test_empty_images_give_empty_results():
    """An image with no rows or no columns comes back empty, for every method, distance and damping (the loops are
    not entered: they read a first pixel before looking at the size)."""
    pal = np.array([[0, 0, 0], [255, 255, 255]], np.uint8)
    for shape in ((5, 0, 3), (0, 7, 4)):
        for m in DITHER_METHODS:
            for d in ("rgb", "oklab"):
                for damping in (False, True):
                    r = quantize(np.zeros(shape, np.uint8), pal, dither=m, distance=d, damping=damping)
                    assert r.image.shape == shape and r.indices.shape == shape[:2] and r.colors_used == 0
