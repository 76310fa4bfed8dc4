"""Quantize: nearest colour against brute force, palette-only output (with alpha), errors, and the node."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pixart_nodes.core import color
from pixart_nodes.core.palette import named_palette, nearest_indices, palette_from_hex
from pixart_nodes.core.quantize import DITHER_METHODS, quantize
from pixart_nodes.nodes_quantize import PixartQuantize


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


@pytest.mark.parametrize("distance", ["rgb", "oklab"])
@pytest.mark.parametrize("name", ["pico-8", "endesga-32"])
def test_nearest_equals_brute_force(distance, name):
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


def test_compiled_nearest_is_exact_on_float_queries():
    """The dither loops pick colours through per-cell candidate lists; zero strength bypasses them, so
    compare an ordered dither against brute force on the offset image instead."""
    from pixart_nodes.core import dither

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pal = named_palette("sweetie-16").colors
    for distance in ("rgb", "oklab"):
        res = quantize(img, pal, dither="bayer-4x4", distance=distance)
        from pixart_nodes.core.quantize import ordered_spread

        off = np.tile(dither.threshold_matrix("bayer-4x4") * ordered_spread(pal), (8, 8))
        q = np.clip(img + off[..., None], 0, 255)
        if distance == "oklab":
            pts, cands = color.srgb_float_to_oklab(q.reshape(-1, 3)), color.srgb_u8_to_oklab(pal)
        else:
            pts, cands = q.reshape(-1, 3), pal.astype(np.float64)
        d = ((pts[:, None, :] - cands[None]) ** 2).sum(-1)
        chosen = d[np.arange(len(d)), res.indices.ravel()]
        # equal to the minimum up to the table interpolation of the linearisation (OKLab) / exactly (RGB)
        assert np.all(chosen <= d.min(axis=1) + (1e-9 if distance == "oklab" else 0)), distance


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


LUT = color.linear_lut(color.LUT_STEPS)


def _table_candidates(info, moff, cands, cell):
    v = int(info[cell])
    if v < np.iinfo(info.dtype).max:
        return [v]
    s = int(moff[cell])  # block: count, sub-cell table offset, candidates
    return [int(c) for c in cands[s + 2 : s + 2 + cands[s]]]


@pytest.mark.parametrize("distance", ["rgb", "oklab"])
@pytest.mark.parametrize("gbits", [5, 6])
@pytest.mark.parametrize("name", ["pico-8", "endesga-32", "random-3", "random-256"])
def test_cell_tables_hold_the_true_nearest(distance, gbits, name):
    """Every cell's candidate list holds the nearest colour of every value in the cell, checked against a
    brute-force search on random float values plus the cell boundaries (where bounds are tightest)."""
    from pixart_nodes.core import dither, jit

    rng = np.random.default_rng(21)
    if name.startswith("random-"):
        pal = rng.integers(0, 256, (int(name.split("-")[1]), 3), dtype=np.uint8)
    else:
        pal = named_palette(name).colors
    if distance == "oklab" and gbits == 6 and len(pal) > 64:
        pytest.skip("64^3 OKLab tables are never built for big palettes (build cost)")
    info, moff, cands, sub, gb = dither.cell_table(pal, distance == "oklab", gbits)
    assert gb == gbits and info.size == 1 << (3 * gbits)
    assert info.dtype == (np.uint16 if len(pal) >= 255 else np.uint8)
    size = 256 >> gbits
    edges = np.arange(0, 256, size, dtype=np.float64)
    q = np.concatenate(
        [
            rng.uniform(0, 255, (3000, 3)),
            rng.choice(np.concatenate([edges, edges + size - 1e-4, [255.0]]), (1500, 3)),
        ]
    )
    # the dither loops query clamped float32 values
    q = np.minimum(q, 255.0).astype(np.float32).astype(np.float64)
    if distance == "oklab":
        pts, ref = color.srgb_float_to_oklab(q), color.srgb_u8_to_oklab(pal)
    else:
        pts, ref = q, pal.astype(np.float64)
    d = ((pts[:, None, :] - ref[None]) ** 2).sum(-1)
    codes = np.minimum(q.astype(np.int64), 255)
    qi = codes >> (8 - gbits)
    cells = (qi[:, 0] << (2 * gbits)) | (qi[:, 1] << gbits) | qi[:, 2]
    tol = 1e-9 if distance == "oklab" else 0.0  # float rounding in the OKLab conversion
    multi = refined = 0
    for i, cell in enumerate(cells):
        cand = _table_candidates(info, moff, cands, int(cell))
        multi += len(cand) > 1
        assert cand == sorted(set(cand)) and all(0 <= c < len(pal) for c in cand)
        # the nearest colour is among the candidates
        assert d[i, cand].min() <= d[i].min() + tol, (i, q[i], cand)
        if len(cand) > 1:
            # and a sub-cell decided by one colour is decided by the nearest one
            k = jit.kernel(dither, "_refine")(distance == "oklab", int(moff[cell]), *[int(v) for v in codes[i]], gbits,
                                              *(2 * [ref if distance == "oklab" else pal.astype(np.float64)]), LUT,
                                              float(color.LUT_STEPS), color.M1, color.M2, cands)
            if k != dither.SUB_MULTI:
                refined += 1
                assert k in cand and d[i, k] <= d[i].min() + tol, (i, q[i], k)
    assert multi < len(cells)  # the table prunes: most cells hold a single colour
    assert refined > 0


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


@pytest.mark.parametrize("name", ["pico-8", "endesga-32", "random-3", "random-200", "random-256"])
def test_pair_codes_hold_the_true_nearest(name):
    """Floyd-Steinberg (sRGB) reads a pair of colours per cell, or per sub-cell of a cell with 3+ candidates;
    the nearest colour of every value is one of the two (or a sub-cell says "search"), and the pair is in
    palette order so the lower index wins ties. Brute force on random values plus cell/sub-cell edges."""
    from pixart_nodes.core import dither

    rng = np.random.default_rng(22)
    pal = rng.integers(0, 256, (int(name.split("-")[1]), 3), dtype=np.uint8) if name.startswith("random-") \
        else named_palette(name).colors
    info, moff, cands, _, gbits = dither.cell_table(pal, False, 5)
    codes, slot, sub_codes, shift = dither.pair_table(pal, info, moff, cands, gbits)
    assert codes.dtype == (np.uint8 if len(pal) <= 16 else np.uint16) and shift == (4 if len(pal) <= 16 else 8)
    edges = np.arange(0, 256, 2, dtype=np.float64)
    q = np.concatenate([rng.uniform(0, 255, (4000, 3)),
                        rng.choice(np.concatenate([edges, edges + 2 - 1e-4, [255.0]]), (3000, 3))])
    q = np.minimum(q, 255.0).astype(np.float32).astype(np.float64)
    d = ((q[:, None, :] - pal.astype(np.float64)[None]) ** 2).sum(-1)
    best = d.argmin(axis=1)  # lowest index on ties
    ic = q.astype(np.int64)
    cell = ((ic[:, 0] >> 3) << 10) | ((ic[:, 1] >> 3) << 5) | (ic[:, 2] >> 3)
    mask = (1 << shift) - 1
    pairs = searched = 0
    for i in range(len(q)):
        e = int(codes[cell[i]])
        a, b = e & mask, e >> shift
        if a > b:
            sub = ((ic[i, 0] >> 1) & 3) << 4 | ((ic[i, 1] >> 1) & 3) << 2 | ((ic[i, 2] >> 1) & 3)
            e = int(sub_codes[slot[cell[i]] * 64 + sub])
            a, b = e & mask, e >> shift
            if a > b:
                searched += 1
                continue
        pairs += a != b
        chosen = b if d[i, b] < d[i, a] else a
        assert chosen == best[i], (q[i], a, b, best[i])
    assert pairs > 0
    assert searched < len(q) // 10


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
out["numba"] = "numba" in sys.modules
print(json.dumps(out))
"""


def test_ahead_of_time_kernels_equal_the_jit(tmp_path):
    """Every export of the ahead-of-time module (when built: install.py) gives the JIT's result, for uint8 and
    uint16 tables and indices, every method, both distances, damping; with it, quantizing imports no numba."""
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
    assert aot == ref
