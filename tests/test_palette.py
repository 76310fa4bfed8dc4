"""Palettes: named data against the reference, hex parsing, .hex/.gpl files, extraction, and the node."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pixart_nodes.core import color
from pixart_nodes.core.palette import (
    NAMED_PALETTES,
    Palette,
    extract_palette,
    load_palette_file,
    named_palette,
    palette_from_hex,
)
from pixart_nodes.core.tensors import image_to_uint8
from pixart_nodes.nodes_palette import PixartPalette, resolve_palette_file


def _rgb(hexes: str) -> np.ndarray:
    return np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in hexes.split()], dtype=np.uint8)


# typed in again from /work/shared/reference/pixel-art.md §2, independently of core/palettes.py
REFERENCE = {
    "pico-8": "000000 1D2B53 7E2553 008751 AB5236 5F574F C2C3C7 FFF1E8 "
    "FF004D FFA300 FFEC27 00E436 29ADFF 83769C FF77A8 FFCCAA",
    "gameboy": "0F380F 306230 8BAC0F 9BBC0F",
    "sweetie-16": "1A1C2C 5D275D B13E53 EF7D57 FFCD75 A7F070 38B764 257179 "
    "29366F 3B5DC9 41A6F6 73EFF7 F4F4F4 94B0C2 566C86 333C57",
    "endesga-32": "BE4A2F D77643 EAD4AA E4A672 B86F50 733E39 3E2731 A22633 E43B44 F77622 FEAE34 FEE761 "
    "63C74D 3E8948 265C42 193C3E 124E89 0099DB 2CE8F5 FFFFFF C0CBDC 8B9BB4 5A6988 3A4466 "
    "262B44 181425 FF0044 68386C B55088 F6757A E8B796 C28569",
    "cga": "000000 0000AA 00AA00 00AAAA AA0000 AA00AA AA5500 AAAAAA 555555 5555FF 55FF55 55FFFF FF5555 "
    "FF55FF FFFF55 FFFFFF",
    "retro-8bit": "000000 1d2b53 7e2553 008751 ab5236 5f574f c2c3c7 fff1e8",
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_named_palettes_have_reference_colours(name):
    assert np.array_equal(named_palette(name).colors, _rgb(REFERENCE[name]))


def test_retro_16bit_is_pico8_and_nes_is_distinct():
    assert np.array_equal(named_palette("retro-16bit").colors, _rgb(REFERENCE["pico-8"]))
    nes = named_palette("nes").colors
    assert len(nes) == 55 and len(np.unique(nes, axis=0)) == 55
    assert np.array_equal(nes[:4], _rgb("7C7C7C 0000FC 0000BC 4428BC"))


def test_named_palette_lookup_ignores_case_and_separators():
    for spelling in ("pico-8", "PICO8", "pico_8", "Pico 8"):
        assert named_palette(spelling) == named_palette("pico-8")
    assert named_palette("Game Boy") == named_palette("gameboy")
    assert {"pico-8", "gameboy", "nes", "cga", "sweetie-16", "endesga-32", "retro-8bit", "retro-16bit"} <= set(
        NAMED_PALETTES
    )
    with pytest.raises(ValueError, match="unknown palette 'zx-spectrum-9000'"):
        named_palette("zx-spectrum-9000")


def test_palette_from_hex_forms():
    p = palette_from_hex("#ff0000, 00ff00\n0x0000FF  #f80")
    assert p.colors.tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 136, 0]]
    assert palette_from_hex(["#ff0000", "00ff00"]).hex() == ["#ff0000", "#00ff00"]
    with pytest.raises(ValueError, match=r"colour 2 'zz0000'"):
        palette_from_hex("#ff0000 zz0000")
    with pytest.raises(ValueError, match="no colours"):
        palette_from_hex(" , ")
    with pytest.raises(ValueError, match="at most 256"):
        palette_from_hex(["#000000"] * 257)


def test_palette_from_hex_stops_at_the_colour_past_the_limit():
    # a bad word after the 257th colour: reached only when the whole text is parsed before counting
    with pytest.raises(ValueError, match=r"^hex colours: more than 256 colours; a palette holds at most 256$"):
        palette_from_hex("#fff " * 257 + "zz")
    with pytest.raises(ValueError, match="more than 256"):
        palette_from_hex(["#fff"] * 257 + [5])
    assert len(palette_from_hex(", ".join(["#fff"] * 256))) == 256
    with pytest.raises(ValueError, match=r"^colour 2 'xxxx.*\.\.\. \(100,000 characters\) is not a hex") as info:
        palette_from_hex("#fff " + "x" * 100_000)
    assert len(str(info.value)) < 200


def test_palette_validates_shape_and_is_read_only():
    with pytest.raises(ValueError, match=r"shape \[N,3\]"):
        Palette("x", np.zeros((4, 4), np.uint8))
    p = Palette("x", np.array([[1, 2, 3]]))
    assert p.colors.dtype == np.uint8
    with pytest.raises(ValueError):
        p.colors[0, 0] = 9


def test_hex_and_gpl_files(tmp_path):
    (tmp_path / "a.hex").write_text("ff0044\n\n00ff00\r\n#0000ff\n")
    assert load_palette_file(tmp_path / "a.hex").colors.tolist() == [[255, 0, 68], [0, 255, 0], [0, 0, 255]]
    (tmp_path / "b.gpl").write_text(
        "GIMP Palette\nName: Tiny\nColumns: 4\n# comment\n  0   0   0\tBlack\n255 255 255 White\n"
    )
    p = load_palette_file(tmp_path / "b.gpl")
    assert p.name == "Tiny" and p.colors.tolist() == [[0, 0, 0], [255, 255, 255]]


@pytest.mark.parametrize(
    "fname, text, message",
    [
        ("bad.hex", "ff0000\nnot-a-colour\n", r"bad.hex: line 2"),
        ("bad.gpl", "GIMP Palette\n10 20 30 ok\n10 twenty 30\n", r"bad.gpl: line 3"),
        ("range.gpl", "GIMP Palette\n10 20 300\n", r"range.gpl: line 2: colour values must be 0..255"),
        ("nohdr.gpl", "10 20 30\n", r"nohdr.gpl: line 1: expected 'GIMP Palette'"),
        ("empty.hex", "\n\n", r"empty.hex: no colours"),
    ],
)
def test_bad_palette_files_name_the_line(tmp_path, fname, text, message):
    (tmp_path / fname).write_text(text)
    with pytest.raises(ValueError, match=message):
        load_palette_file(tmp_path / fname)


def test_oklab_matches_reference_values():
    # white is L=1, a=b=0; pure red per Ottosson: (0.627955, 0.224863, 0.125846)
    lab = color.srgb_u8_to_oklab(np.array([[255, 255, 255], [255, 0, 0]], np.uint8))
    assert np.allclose(lab[0], [1.0, 0.0, 0.0], atol=1e-4)
    assert np.allclose(lab[1], [0.627955, 0.224863, 0.125846], atol=1e-4)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (500, 3), dtype=np.uint8)
    assert np.array_equal(color.oklab_to_srgb_u8(color.srgb_u8_to_oklab(rgb)), rgb)


def _blobs(seed=0, size=48):
    """An image made of 5 flat colours plus noise, so a good 5-colour palette is known."""
    rng = np.random.default_rng(seed)
    centres = np.array([[20, 30, 200], [230, 40, 40], [40, 200, 60], [240, 240, 220], [10, 10, 10]])
    labels = rng.integers(0, 5, (size, size))
    img = centres[labels] + rng.integers(-6, 7, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8), centres


def test_kmeans_finds_the_colours():
    img, centres = _blobs()
    p = extract_palette(img, 5, method="kmeans", seed=3)
    assert len(p) == 5
    # every true colour has an extracted colour close to it
    d = np.sqrt(((centres[:, None, :] - p.colors[None].astype(int)) ** 2).sum(-1)).min(axis=1)
    assert d.max() < 8, d


def test_median_cut_splits_at_the_median():
    # four equally populated clusters: the first cut (longest side, red) separates {A,B} from {C,D} at the
    # median, the next cuts (blue) separate A from B and C from D; each colour is its box's mean
    rng = np.random.default_rng(2)
    centres = np.array([[20, 20, 20], [20, 20, 120], [235, 40, 40], [235, 40, 140]])
    img = np.repeat(centres, 256, axis=0) + rng.integers(-5, 6, (1024, 3))
    img = np.clip(img, 0, 255).astype(np.uint8).reshape(32, 32, 3)
    p = extract_palette(img, 4, method="median-cut")
    means = img.reshape(4, 256, 3).astype(float).mean(axis=1)
    expected = sorted(map(tuple, np.floor(means + 0.5).astype(int).tolist()))
    assert sorted(map(tuple, p.colors.tolist())) == expected


def test_kmeans_is_deterministic_for_a_seed():
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    a = extract_palette(img, 12, seed=5)
    assert a == extract_palette(img.copy(), 12, seed=5)
    # pixel order does not matter either: extraction works on the colour histogram
    assert a == extract_palette(img[::-1, ::-1].copy(), 12, seed=5)


def test_seeds_act_modulo_2_32_and_any_integer_is_taken():
    img = np.random.default_rng(3).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    five = extract_palette(img, 8, seed=5).colors
    assert np.array_equal(extract_palette(img, 8, seed=5 + 2**32).colors, five)
    assert np.array_equal(extract_palette(img, 8, seed=-1).colors, extract_palette(img, 8, seed=2**32 - 1).colors)
    assert np.array_equal(extract_palette(img, 8, seed=2**63).colors, extract_palette(img, 8, seed=0).colors)


def test_extraction_few_colours_transparency_and_errors():
    img = np.zeros((4, 4, 4), np.uint8)
    img[..., 3] = 255
    img[:2, :, :3] = [255, 0, 0]
    img[3, 3] = [0, 255, 0, 0]  # transparent green must not appear
    p = extract_palette(img, 8)
    assert sorted(map(tuple, p.colors.tolist())) == [(0, 0, 0), (255, 0, 0)]
    with pytest.raises(ValueError, match="n_colors must be an integer in 2..256"):
        extract_palette(img, 1)
    with pytest.raises(ValueError, match="method must be one of"):
        extract_palette(img, 4, method="octree")


def test_palette_node_sources_and_batch(tmp_path, monkeypatch):
    node = PixartPalette()
    args = dict(name="pico-8", hex_colors="#000 #fff", file="", n_colors=4, method="kmeans", seed=0)
    p, sw, n = node.build("named", **args)
    assert n == 16 and p == named_palette("pico-8") and tuple(sw.shape) == (1, 16, 256, 3)
    p, _, n = node.build("hex", **args)
    assert n == 2 and p.hex() == ["#000000", "#ffffff"]
    with pytest.raises(ValueError, match="hex_colors: colour 1"):
        node.build("hex", **{**args, "hex_colors": "nope"})

    batch = torch.zeros((2, 8, 8, 3))
    batch[0, :, :4] = torch.tensor([1.0, 0.0, 0.0])
    batch[1, :4] = torch.tensor([0.0, 0.0, 1.0])
    p, _, n = node.build("image", **args, image=batch)
    assert sorted(map(tuple, p.colors.tolist())) == [(0, 0, 0), (0, 0, 255), (255, 0, 0)]
    with pytest.raises(ValueError, match="image: source is 'image'"):
        node.build("image", **args)
    y, x = np.mgrid[0:32, 0:48]
    ramp = torch.from_numpy(np.stack([x / 47, y / 31, (x + y) / 78], -1)[None].astype(np.float32))
    img = image_to_uint8(ramp[0])  # the node's own conversion
    p, _, _ = node.build("image", **{**args, "n_colors": 8}, image=ramp, for_dithering=True)
    # the palette is refined on the picture itself: a strip of its pixels diffuses no error sideways, has no blocks
    assert p == extract_palette(img, 8, dither=True) != extract_palette(img.reshape(-1, 1, 3), 8, dither=True)
    assert p != extract_palette(img, 8)

    import pixart_nodes.nodes_palette as np_mod

    monkeypatch.setattr(np_mod, "_PACK_PALETTES", tmp_path)
    (tmp_path / "mine.hex").write_text("123456\n")
    p, _, n = node.build("file", **{**args, "file": "mine.hex"})
    assert p.hex() == ["#123456"]
    for bad in ("../etc/passwd", "/etc/passwd", "missing.hex"):
        with pytest.raises(ValueError, match="file: "):
            resolve_palette_file(bad)
    with pytest.raises(ValueError, match="^file: 'a.+NUL character") as e:  # the OS's error names no field
        resolve_palette_file("a\x00b.hex" + "x" * 10_000)
    assert len(str(e.value)) < 200  # the name shortened, not echoed whole
    with pytest.raises(ValueError, match="^search: no library palette matches") as e:
        node.build("named", **{**args, "search": "zq" * 100})
    assert len(str(e.value)) < 200


def test_lloyd_with_bounds_equals_plain_lloyd():
    """cluster.lloyd skips searches with Hamerly's bounds; plain weighted Lloyd (every point searched every pass,
    numpy) from the same start must reach the same centres and assignment."""
    from pixart_nodes.core import cluster, jit

    rng = np.random.default_rng(11)
    pts = np.concatenate([rng.normal(c, 0.04, (300, 3)) for c in rng.uniform(-0.3, 1, (9, 3))])
    w = rng.integers(1, 50, len(pts)).astype(np.float64)
    start = pts[rng.choice(len(pts), 7, replace=False)].copy()
    cen = start.copy()
    assign = jit.kernel(cluster, "lloyd")(pts, w, cen, 500, 0.0)
    ref = start.copy()
    for _ in range(500):
        a = ((pts[:, None, :] - ref[None]) ** 2).sum(-1).argmin(axis=1)
        new = np.stack([np.bincount(a, weights=w * pts[:, c], minlength=7) for c in range(3)], 1)
        new /= np.bincount(a, weights=w, minlength=7)[:, None]
        if np.array_equal(new, ref):
            break
        ref = new
    assert np.allclose(cen, ref, atol=1e-12)
    assert np.array_equal(assign, ((pts[:, None, :] - ref[None]) ** 2).sum(-1).argmin(axis=1))


def test_centres_move_toward_the_geometric_medians():
    """The Weiszfeld step after k-means lowers each cluster's weighted sum of distances (what the mean OKLab error
    measures), checked against brute force: a grid search around one cluster finds no point much better than
    where the steps lead."""
    from pixart_nodes.core.palette import _toward_medians

    rng = np.random.default_rng(11)
    # skewed clusters: a heavy core and a light tail, where median and mean differ
    pts = np.concatenate([rng.normal(0.5, 0.01, (400, 3)), rng.normal(0.56, 0.05, (100, 3)),
                          rng.normal(0.2, 0.02, (300, 3))])
    w = rng.integers(1, 20, len(pts)).astype(np.float64)
    assign = np.repeat([0, 0, 1], [400, 100, 300])
    means = np.stack([np.average(pts[assign == j], axis=0, weights=w[assign == j]) for j in (0, 1)])

    def cost(cen):
        return np.array([(w[assign == j] * np.sqrt(((pts[assign == j] - cen[j]) ** 2).sum(1))).sum() for j in (0, 1)])

    stepped = _toward_medians(pts, w, means, assign)
    assert np.all(cost(stepped) < cost(means))
    # exactly one Weiszfeld step, written independently: sum(w x / d) / sum(w / d) over the cluster
    for j in (0, 1):
        x, wj = pts[assign == j], w[assign == j]
        d = np.linalg.norm(x - means[j], axis=1)
        assert np.allclose(stepped[j], (x * (wj / d)[:, None]).sum(0) / (wj / d).sum(), rtol=0, atol=1e-12)
    many = means
    for _ in range(200):
        many = _toward_medians(pts, w, many, assign)
    assert np.all(cost(many) <= cost(stepped))
    # the median of cluster 0 by brute force on a grid around the iterate: nothing lower by more than rounding
    grid = many[0] + np.stack(np.meshgrid(*[np.linspace(-0.004, 0.004, 9)] * 3), -1).reshape(-1, 3)
    brute = min(cost(np.stack([g, many[1]]))[0] for g in grid)
    assert cost(many)[0] <= brute + 1e-9
    # an empty cluster keeps its centre
    lone = _toward_medians(pts, w, np.concatenate([means, [[0.9, 0.0, 0.0]]]), assign)
    assert np.array_equal(lone[2], [0.9, 0.0, 0.0])
    # a one-colour cluster (its colour at its centre: distance 0, under the floor) stays where it is
    one = _toward_medians(np.array([[0.3, 0.01, -0.02]]), np.array([5.0]), np.array([[0.3, 0.01, -0.02]]),
                          np.array([0]))
    assert np.all(np.isfinite(one)) and np.allclose(one, [[0.3, 0.01, -0.02]], rtol=0, atol=1e-15)


def _classic_kmeans_palette(img: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """The extraction this pack shipped before greedy seeding: plain k-means++ (one candidate per centre, pixel
    counts as weights) and at most 40 Lloyd passes, in OKLab on the colour histogram."""
    from pixart_nodes.core.palette import _colour_histogram

    cols, w, _ = _colour_histogram(img)
    lab = color.srgb_float_to_oklab(cols)
    rng = np.random.default_rng(seed)
    cen = [lab[rng.choice(len(lab), p=w / w.sum())]]
    d2 = ((lab - cen[0]) ** 2).sum(1)
    for _ in range(1, k):
        cen.append(lab[rng.choice(len(lab), p=w * d2 / (w * d2).sum())])
        d2 = np.minimum(d2, ((lab - cen[-1]) ** 2).sum(1))
    cen = np.array(cen)
    for _ in range(40):
        a = ((lab[:, None] - cen[None]) ** 2).sum(-1).argmin(1)
        tot = np.bincount(a, weights=w, minlength=k)
        keep = tot > 0
        cen[keep] = (np.stack([np.bincount(a, weights=w * lab[:, c], minlength=k) for c in range(3)], 1)
                     / np.maximum(tot, 1e-300)[:, None])[keep]
    return np.unique(color.oklab_to_srgb_u8(cen), axis=0)


def _oklab_errors(src: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """bench_extract's measures: mean OKLab distance x100, and the same between 4x4-block means."""
    a, b = color.srgb_u8_to_oklab(src), color.srgb_u8_to_oklab(out)
    h, w = src.shape[0] // 4 * 4, src.shape[1] // 4 * 4
    blk = lambda x: x[:h, :w].reshape(h // 4, 4, w // 4, 4, 3).mean(axis=(1, 3))  # noqa: E731
    return (float(np.sqrt(((a - b) ** 2).sum(-1)).mean()) * 100,
            float(np.sqrt(((blk(a) - blk(b)) ** 2).sum(-1)).mean()) * 100)


@pytest.mark.parametrize("k", [8, 16])
def test_extraction_no_worse_than_classic_kmeans(k):
    """On the README scene (docs/images/input_scene.png, 128x128), the default extraction mapped without and with
    Floyd-Steinberg is no worse than the classic k-means by mean and by block error, over five seeds each."""
    from pathlib import Path

    from PIL import Image

    from pixart_nodes.core.quantize import quantize

    img = np.asarray(Image.open(Path(__file__).resolve().parents[1] / "docs/images/input_scene.png").convert("RGB"))
    totals = {"new": np.zeros(4), "classic": np.zeros(4)}
    for seed in range(5):
        for name, pal in (("new", extract_palette(img, k, seed=seed).colors),
                          ("classic", _classic_kmeans_palette(img, k, seed))):
            plain = _oklab_errors(img, quantize(img, pal).image)
            fs = _oklab_errors(img, quantize(img, pal, dither="floyd-steinberg").image)
            totals[name] += np.array(plain + fs)
    assert np.all(totals["new"] <= totals["classic"] * 1.0001), totals


def _dither_errors_reference(src, pal, limit):
    """Plain Python: damped serpentine Floyd-Steinberg in floats, each pixel taking its level / 256 of the error
    it collected (libimagequant's map of the undithered mapping; 4/5 of that when its squared length is over the
    limit), each value rounded to a code value, nearest colour in OKLab (lowest index on ties); (mean OKLab error,
    mean 4x4-block OKLab error, each pixel's colour)."""
    from tests.support.damping import levels_reference

    h, w, _ = src.shape
    pal_lab = color.srgb_u8_to_oklab(pal)
    src_lab = color.srgb_u8_to_oklab(src)
    levels = levels_reference(((src_lab[:, :, None] - pal_lab) ** 2).sum(-1).argmin(-1))
    err = np.zeros((h + 1, w + 2, 3))
    out = np.empty((h, w, 3))
    got = np.empty((h, w), np.int64)
    for y in range(h):
        step = -1 if y & 1 else 1
        for x in (range(w - 1, -1, -1) if step < 0 else range(w)):
            taken = err[y, x + 1] * levels[y, x] / 256
            if (taken * taken).sum() > limit:
                taken = taken * 0.8
            v = np.clip(np.floor(src[y, x] + taken + 0.5), 0, 255)
            best = int(np.argmin(((pal_lab - color.srgb_u8_to_oklab(v.astype(np.uint8))) ** 2).sum(axis=1)))
            out[y, x] = pal_lab[best]
            got[y, x] = best
            e = v - pal[best]
            if (e * e).sum() > limit:
                e = e * 0.75
            err[y, x + 1 + step] += e * 7 / 16
            for dx, wt in ((-1, 3 / 16), (0, 5 / 16), (1, 1 / 16)):
                err[y + 1, x + 1 + dx * step] += e * wt
    mean = np.sqrt(((src_lab - out) ** 2).sum(-1)).mean()
    hb, wb = h // 4 * 4, w // 4 * 4
    blocks = lambda a: a[:hb, :wb].reshape(hb // 4, 4, wb // 4, 4, 3).mean(axis=(1, 3))  # noqa: E731
    return mean, np.sqrt(((blocks(src_lab) - blocks(out)) ** 2).sum(-1)).mean(), got


def test_dither_proxy_matches_plain_python():
    """cluster.dither_pass against plain Python: the dithered errors (what refining a palette for dithering
    lowers), and the least-squares sums of the colours each pixel got, at three damping limits."""
    from pixart_nodes.core import cluster
    from pixart_nodes.core.jit import kernel

    rng = np.random.default_rng(8)
    src = rng.integers(0, 256, (13, 18, 3), dtype=np.uint8)
    src[4:9] = np.linspace(0, 255, 18)[None, :, None].astype(np.uint8)  # a ramp: error runs far
    pal = named_palette("pico-8").colors
    src_lab, pal_lab = color.srgb_u8_to_oklab(src), color.srgb_u8_to_oklab(pal)
    undithered = ((src.astype(np.float64) - pal[((src_lab[:, :, None] - pal_lab) ** 2).sum(-1).argmin(-1)]) ** 2)
    for damping in (1e9, 2.4, 0.5):
        k = len(pal)
        a_pix, b_pix, a_blk, b_blk = np.zeros(k), np.zeros((k, 3)), np.zeros((k, k)), np.zeros((k, 3))
        stats = np.zeros(4)
        kernel(cluster, "dither_pass")(src.astype(np.float64), np.ascontiguousarray(src_lab), pal.astype(np.float64),
                                       np.ascontiguousarray(pal_lab), color.LINEAR_U8, color.M1, color.M2, damping,
                                       1e-4, a_pix, b_pix, a_blk, b_blk, stats)
        mean, block, got = _dither_errors_reference(src, pal, damping * undithered.sum(-1).mean())
        assert np.allclose([stats[0] / stats[1], stats[2] / stats[3]], [mean, block], rtol=1e-9, atol=1e-12)
        value, a, b = _joint_reference(src_lab, np.ones(src.shape[:2]), pal_lab, near=got)
        assert np.isclose(mean + block, value, rtol=1e-9)
        assert np.allclose(np.diag(a_pix / stats[1]) + a_blk / stats[3], a, rtol=1e-9, atol=1e-12)
        assert np.allclose(b_pix / stats[1] + b_blk / stats[3], b, rtol=1e-9, atol=1e-12)


def test_one_palette_for_several_images():
    """A sequence of images gives one palette from all their pixels (RGB beside RGBA, transparent pixels left
    out), the same as one image holding them; with dither=True the palette is refined on each picture as drawn."""
    y, x = np.mgrid[0:40, 0:56]
    a = np.stack([x * 255 // 55, y * 255 // 39, (x + y) * 255 // 94], -1).astype(np.uint8)
    b = np.dstack([a[::-1, :, ::-1], np.full((40, 56), 255, np.uint8)])
    b[:4, :4, 3] = 0
    both = np.concatenate([np.dstack([a, np.full((40, 56), 255, np.uint8)]), b], axis=0)
    assert extract_palette([a, b], 8) == extract_palette(both, 8)
    assert extract_palette([a], 8, dither=True) == extract_palette(a, 8, dither=True) != extract_palette(a, 8)
    b[:4, :4, 3] = 255  # all opaque: the refinement under dithering applies, over both pictures
    strip = np.concatenate([np.dstack([a, np.full((40, 56), 255, np.uint8)]), b], axis=0).reshape(-1, 1, 4)
    spread = extract_palette([a, b], 8, dither=True)
    assert spread != extract_palette([a, b], 8) and spread != extract_palette(strip, 8, dither=True)
    with pytest.raises(ValueError, match="no image"):
        extract_palette([], 8)


def test_palette_for_dithering_reaches_the_ends_of_a_gradient():
    """dither=True moves the k-means colours outwards (k-means centres sit inside the image's colours, where
    error diffusion cannot mix the ends of a ramp): on a gradient the dithered result's 4x4-block error drops,
    without dither=True nothing changes, and transparent images keep the plain palette."""
    from pixart_nodes.core.quantize import quantize

    y, x = np.mgrid[0:96, 0:128]
    img = np.stack([x * 255 // 127, y * 255 // 95, (x + y) * 255 // 222], -1).astype(np.uint8)
    plain = extract_palette(img, 8)
    spread = extract_palette(img, 8, dither=True)
    assert np.array_equal(extract_palette(img, 8, dither=False).colors, plain.colors)
    lab = lambda p: color.srgb_u8_to_oklab(p.colors)  # noqa: E731
    centre = color.srgb_u8_to_oklab(img.reshape(-1, 3)).mean(axis=0)
    assert np.linalg.norm(lab(spread) - centre, axis=1).mean() > np.linalg.norm(lab(plain) - centre, axis=1).mean()

    def block_error(p):
        out = quantize(img, p, dither="floyd-steinberg", damping=True).image
        a, b = color.srgb_u8_to_oklab(img), color.srgb_u8_to_oklab(out)
        blocks = lambda v: v.reshape(24, 4, 32, 4, 3).mean(axis=(1, 3))  # noqa: E731
        return np.sqrt(((blocks(a) - blocks(b)) ** 2).sum(-1)).mean()

    assert block_error(spread) < 0.95 * block_error(plain)
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    rgba[0, 0, 3] = 0
    assert np.array_equal(extract_palette(rgba, 8, dither=True).colors, extract_palette(rgba, 8).colors)


def _histogram_reference(images, alpha_threshold=128, cap=20000):
    """np.unique over every opaque pixel's colour key; over ``cap`` colours, 5-bit bins holding their pixels' mean."""
    keys = []
    for img in images:
        rgb = img[..., :3].reshape(-1, 3).astype(np.int64)
        if img.shape[2] == 4:
            rgb = rgb[img[..., 3].reshape(-1) >= alpha_threshold]
        keys.append(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2])
    keys = np.concatenate(keys)
    uniq, counts = np.unique(keys, return_counts=True)
    cols = np.stack([uniq >> 16 & 255, uniq >> 8 & 255, uniq & 255], 1).astype(np.float64)
    if len(uniq) <= cap:
        return cols, counts.astype(np.float64), True
    bins = (uniq >> 19 & 31) << 10 | (uniq >> 11 & 31) << 5 | (uniq >> 3 & 31)
    tot = np.bincount(bins, weights=counts, minlength=32768)
    sums = np.stack([np.bincount(bins, weights=counts * cols[:, c], minlength=32768) for c in range(3)], 1)
    keep = tot > 0
    return sums[keep] / tot[keep, None], tot[keep], False


def test_colour_histogram_equals_a_sort_of_every_pixel():
    """The hashed count (cluster.count_colours) and the bins it falls back to (cluster.bin_colours) give what
    np.unique over every pixel gives: exact colours in key order up to 20000, bin means beyond, transparent pixels
    left out, several images counted together (the cap crossed in the second one), runs of one colour."""
    from pixart_nodes.core.palette import _colour_histogram

    rng = np.random.default_rng(21)
    few = rng.integers(0, 6, (64, 80, 3), dtype=np.uint8) * 51
    few[10:30] = 17  # a run of one colour across rows
    many = rng.integers(0, 256, (200, 150, 3), dtype=np.uint8)  # 30000 pixels, ~29000 colours
    rgba = np.dstack([many[:90], np.where(rng.random((90, 150)) < 0.5, 255, 0).astype(np.uint8)])  # ~6750 opaque
    edge = rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)  # exactly at the cap: 20000 pixels
    edge.reshape(-1, 3)[:] = np.stack([np.arange(20000) >> 16, np.arange(20000) >> 8 & 255, np.arange(20000) & 255], 1)
    cases = [[few], [many], [rgba], [few, rgba], [rgba, many[90:]], [edge], [edge, few[:1, :1]], [few[:1, :1]]]
    for images in cases:
        got, ref = _colour_histogram(images), _histogram_reference(images)
        assert got[2] == ref[2] and np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1]), \
            [a.shape for a in images]
    assert _colour_histogram([edge])[2] and not _colour_histogram([edge, few[:1, :1]])[2]
    with pytest.raises(ValueError, match="no opaque pixels"):
        _colour_histogram([np.zeros((4, 4, 4), np.uint8)])


def _joint_reference(lab, opaque, cen, floor=1e-4, near=None):
    """The joint objective and its reweighted least-squares system by brute force (numpy): (value, a, b). Each
    pixel's colour is its nearest, or ``near`` ([h,w]) when given."""
    h, w, _ = lab.shape
    px = lab.reshape(-1, 3)
    ok = opaque.reshape(-1) > 0
    d = np.sqrt(((px[:, None, :] - cen[None]) ** 2).sum(-1))
    near = d.argmin(1) if near is None else np.asarray(near).reshape(-1)
    r = d[np.arange(len(px)), near]
    k = len(cen)
    u = np.where(ok, 1 / np.maximum(r, floor), 0.0)
    a_pix = np.bincount(near, weights=u, minlength=k)
    b_pix = np.stack([np.bincount(near, weights=u * px[:, c], minlength=k) for c in range(3)], 1)
    pixels = ok.sum()
    value, a, b = r[ok].sum() / pixels, np.diag(a_pix) / pixels, b_pix / pixels
    a_blk, b_blk, errs = np.zeros((k, k)), np.zeros((k, 3)), []
    for by in range(h // 4):
        for bx in range(w // 4):
            cells = [(by * 4 + i) * w + bx * 4 + j for i in range(4) for j in range(4)]
            if not ok[cells].all():
                continue
            m = np.bincount(near[cells], minlength=k) / 16
            src = px[cells].mean(0)
            e = np.linalg.norm(src - m @ cen)
            v = 1 / max(e, floor)
            a_blk += v * np.outer(m, m)
            b_blk += v * np.outer(m, src)
            errs.append(e)
    if errs:
        value, a, b = value + np.mean(errs), a + a_blk / len(errs), b + b_blk / len(errs)
    return value, a, b


def test_joint_pass_equals_brute_force():
    """cluster.joint_pass (through palette._joint) gives the objective (mean pixel distance + mean 4x4-block error)
    and the normal equations of one reweighted least-squares step as a brute-force numpy computation does: partial
    blocks, transparent pixels (their blocks left out), a colour no pixel takes (its row held by the ridge)."""
    from pixart_nodes.core import palette as pm

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (27, 30, 4), dtype=np.uint8)
    img[5:12, 3:20, :3] = (200, 40, 90)
    img[..., 3] = np.where(rng.random((27, 30)) < 0.1, 0, 255)
    samples = pm._samples([img], 128, 10 ** 6)
    cen = color.srgb_u8_to_oklab(np.array([[0, 0, 0], [255, 255, 255], [200, 40, 90], [255, 0, 255], [1, 2, 250]],
                                          np.uint8))
    cen[3] = [5.0, 5.0, 5.0]  # far from every pixel: takes none
    got = pm._joint(samples, cen)
    value, a, b = _joint_reference(samples[0].lab, samples[0].opaque, cen)
    assert np.isclose(got.value, value, rtol=1e-12)
    ridge = 1e-9 * max(np.abs(a).max(), 1.0)  # added to the diagonal (and ridge x centre to b)
    assert np.allclose(got.a - ridge * np.eye(5), a, rtol=1e-9, atol=1e-12)
    assert np.allclose(got.b - ridge * cen, b, rtol=1e-9, atol=1e-12)
    assert np.allclose(np.linalg.solve(got.a, got.b)[3], cen[3])  # the unused colour stays put
    assert len(got.blocks) == sum(1 for by in range(6) for bx in range(7)
                                  if (img[by * 4:by * 4 + 4, bx * 4:bx * 4 + 4, 3] >= 128).all())


def test_refinement_lowers_both_errors_of_kmeans():
    """The palette after the joint refinement (the default extraction) against plain k-means (+ Weiszfeld) on two
    pictures where k-means makes a lightness ramp: a scene of hues at one lightness (warm and grey fur, as
    bench_extract's chelsea) and the README scene. On the whole picture the undithered result's 4x4-block error and
    its sum with the mean error are lower (the mean error alone may rise a little: what the objective trades for
    the blocks)."""
    from pathlib import Path

    from PIL import Image

    from pixart_nodes.core import palette as pm
    from pixart_nodes.core.quantize import quantize

    y, x = np.mgrid[0:96, 0:128]
    light = 60 + 120 * (y / 95) + 10 * np.sin(x / 5)
    warm = np.stack([light * 1.1, light * 0.8, light * 0.55], -1)
    grey = np.stack([light * 0.95, light * 0.9, light * 0.85], -1)
    fur = np.where(((x // 16 + y // 24) % 2 == 0)[..., None], warm, grey)
    fur = np.clip(fur + np.random.default_rng(2).normal(0, 6, fur.shape), 0, 255).astype(np.uint8)
    scene = np.asarray(Image.open(Path(__file__).resolve().parents[1] / "docs/images/input_scene.png").convert("RGB"))
    for img in (fur, scene):
        cols, w, _ = pm._colour_histogram(img)
        lab = color.srgb_float_to_oklab(cols)
        for k in (4, 8, 16):
            start = pm._kmeans_oklab(lab, w, k, 0)
            before = _oklab_errors(img, quantize(img, color.oklab_to_srgb_u8(start)).image)
            after = _oklab_errors(img, quantize(img, extract_palette(img, k).colors).image)
            assert sum(after) < sum(before) and after[1] < before[1], (img.shape, k, before, after)


def test_few_opaque_pixels_off_the_sample_grid():
    """An image whose few opaque pixels all fall between the refinement sample's pixels keeps its k-means palette
    (nothing to refine on, and no division by zero)."""
    import warnings

    from pixart_nodes.core.palette import _colour_histogram, _kmeans_oklab

    img = np.zeros((300, 300, 4), np.uint8)  # 90000 pixels: the sample takes every third pixel, from the second
    for (y, x), c in zip([(0, 0), (0, 2), (2, 0), (2, 2), (0, 3)], [(255, 0, 0), (0, 0, 255), (0, 255, 0), (9, 9, 9),
                                                                    (200, 200, 0)]):
        img[y, x] = (*c, 255)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pal = extract_palette(img, 3)
    cols, w, _ = _colour_histogram(img)
    plain = color.oklab_to_srgb_u8(_kmeans_oklab(color.srgb_float_to_oklab(cols), w, 3, 0))
    assert sorted(map(tuple, pal.colors.tolist())) == sorted(map(tuple, plain.tolist()))


def test_awkward_inputs_to_the_refinement():
    """A sprite beside a photo (too small to keep a sample pixel), a strip, a Fortran-ordered image, and opaque
    pixels only where the sparse swap pass does not look: no error, no warning, as many colours as asked for, and
    the same palette whatever the input's memory order."""
    import warnings

    rng = np.random.default_rng(17)
    photo = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    sparse = np.zeros((16, 16, 4), np.uint8)
    sparse[:, 4:8, :3] = rng.integers(0, 256, (16, 4, 3), dtype=np.uint8)  # the second column of 4x4 blocks only
    sparse[:, 4:8, 3] = 255
    rgba = rng.integers(0, 256, (60, 70, 4), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for images, k in (([photo, photo[:2, :2].copy()], 8), ([photo, photo[:30, :1].copy()], 8), (sparse, 3)):
            for dither in (False, True):
                assert len(extract_palette(images, k, dither=dither)) == k
        for dither in (False, True):
            assert extract_palette(np.asfortranarray(rgba), 6, dither=dither) == extract_palette(rgba, 6,
                                                                                                   dither=dither)


def test_a_palette_file_name_too_long_for_the_file_system_is_not_found():
    # was the OS's "File name too long" from pathlib, repeating the whole 1 MB name and naming no field
    for name in ("a" * 300 + ".hex", "a" * 1_000_000):
        with pytest.raises(ValueError, match="^file: palette file 'a+'... .+ not found") as e:
            resolve_palette_file(name)
        assert len(str(e.value)) < 400
