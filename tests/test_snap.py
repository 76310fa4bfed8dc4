"""Snap to grid: exact recovery from enlargements (every phase, non-integer and per-axis factors, alpha, drift),
robustness to blur/JPEG/noise, nothing detected on pictures without a grid; the cell colour against a
brute-force dominant colour (never a per-channel mix); the node."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pixart_nodes.core import snap as sn
from tests.support.pixelart import enlarge, enlarge_on, jpeg, nearest_palette, sprite


def _visible(n: int, s: float, head: float, tail: float) -> slice:
    """The sprite cells an enlargement shows at least ``PARTIAL`` of (what snap is expected to return)."""
    width = int(np.floor(n * s - head - tail))
    cells = np.minimum(np.floor((np.arange(width) + 0.5 + head) / s).astype(int), n - 1)
    counts = np.bincount(cells, minlength=n)
    keep = np.flatnonzero(counts >= sn.PARTIAL * s)
    return slice(int(keep[0]), int(keep[-1]) + 1)


@pytest.mark.parametrize("s", [2, 3, 4, 5, 8])
def test_exact_sprite_from_integer_enlargements_at_every_phase(s):
    spr = sprite(24, 20, seed=s)
    for phase in range(s):
        big = enlarge(spr, s, head=(phase, (phase * 3) % s), tail=((s - phase) % s, phase))
        res = sn.snap(big)
        assert res.detected, (phase, res.message)
        want = spr[_visible(24, s, (phase * 3) % s, phase), _visible(20, s, phase, (s - phase) % s)]
        assert res.image.shape == want.shape, (phase, res.message)
        assert np.array_equal(res.image, want), phase
        assert res.x.size == pytest.approx(s) and res.y.size == pytest.approx(s)


@pytest.mark.parametrize("sx,sy,head", [(2.5, 2.5, (0.3, 0.9)), (3.3, 3.3, (1.2, 0.0)), (4.75, 4.75, (2.0, 1.1)),
                                        (6.2, 6.2, (0.5, 2.5)), (3.0, 4.5, (1.0, 1.5)), (5.25, 3.6, (0.0, 0.7))])
def test_exact_sprite_from_non_integer_and_per_axis_factors(sx, sy, head):
    spr = sprite(28, 26, seed=int(sx * 10))
    big = enlarge(spr, sx, sy, head=head, tail=(0.4 * sx, 0.2 * sy))
    res = sn.snap(big)
    want = spr[_visible(28, sy, head[1], 0.2 * sy), _visible(26, sx, head[0], 0.4 * sx)]
    assert res.image.shape == want.shape, res.message
    assert np.array_equal(res.image, want)
    assert res.x.size == pytest.approx(sx, abs=0.02) and res.y.size == pytest.approx(sy, abs=0.02)


def test_alpha_is_recovered_with_the_colours():
    spr = sprite(24, 24, seed=7, alpha=True)
    res = sn.snap(enlarge(spr, 5, head=(2, 1)))
    assert res.image.shape == (24, 24, 4)
    assert np.array_equal(res.image, spr)


def test_blurred_jpeg_noisy_copy_is_mostly_right():
    spr = sprite(32, 30, seed=3)
    rng = np.random.default_rng(0)
    for s, quality in ((4, 70), (5.5, 80), (7, 60)):
        big = cv2.GaussianBlur(enlarge(spr, s, head=(1.0, 2.0)), (0, 0), 0.8)
        big = jpeg(big, quality)
        big = np.clip(big + rng.normal(0, 4, big.shape), 0, 255).astype(np.uint8)
        res = sn.snap(big)
        want = spr[_visible(32, s, 2.0, 0), _visible(30, s, 1.0, 0)]
        assert res.image.shape == want.shape, (s, res.message)
        colours = np.unique(spr.reshape(-1, 3), axis=0)
        right = nearest_palette(res.image, colours) == nearest_palette(want, colours)
        # the blur mixes a fifth of each neighbour into a 4-px cell's middle: a few cells between an outline and a
        # light fill land nearer a third colour
        assert right.mean() >= 0.95, (s, right.mean())


def test_drifting_grid_is_followed():
    spr = sprite(30, 30, seed=11)
    s = 6.0
    k = np.arange(31, dtype=np.float64)
    edges = s * k + 1.6 * np.sin(2 * np.pi * k / 14)  # cells between 5.3 and 6.7 px
    big = enlarge_on(spr, edges, edges)
    res = sn.snap(big)
    # Inside the drawing every cell edge is seen; in the flat margin nothing tells how wide the drifting cells
    # are, so a margin may gain or lose a cell: compare at the best placement.
    assert abs(res.image.shape[0] - 30) <= 1 and abs(res.image.shape[1] - 30) <= 1, res.message
    assert _best_overlap(res.image, spr) >= 0.97


def test_drifting_grids_keep_their_cell_count_across_flat_stretches():
    # Blurred JPEG enlargements whose cells swing by up to +-30% over 10-25 cells, as diffusion models draw them.
    # In the flat fill the drawing's edges are weak or absent, where a grid that skips a cell (a period a tenth
    # too large) scored a little above the true one: 11 of these 24 came out at the sprite's size (the sprite's
    # pixels right at the best placement: 95.7%), now 17. One came out at twice its height (a grid of half the
    # period scored a little above the true one, which the tracking followed badly): now none (98.7%).
    exact, overlap, worst = 0, [], 0.0
    for seed in range(24):
        rng = np.random.default_rng(seed)
        h, w = int(rng.integers(28, 48)), int(rng.integers(28, 48))
        spr = sprite(h, w, seed=seed)
        s = float(rng.uniform(5, 8))
        edges = []
        for n in (h, w):
            k = np.arange(n + 1, dtype=np.float64)
            amp, period, theta = rng.uniform(0.15, 0.3) * s, rng.uniform(10, 25), rng.uniform(0, 2 * np.pi)
            edges.append(np.maximum.accumulate(s * k + amp * (np.sin(2 * np.pi * k / period + theta) - np.sin(theta))))
        big = jpeg(cv2.GaussianBlur(enlarge_on(spr, *edges), (0, 0), 0.7), 80)
        res = sn.snap(big)
        exact += res.image.shape == spr.shape
        worst = max(worst, *(abs(a / b - 1) for a, b in zip(res.image.shape[:2], spr.shape[:2])))
        colours = np.unique(spr.reshape(-1, 3), axis=0)
        overlap.append(_best_overlap(nearest_palette(res.image, colours)[..., None],
                                     nearest_palette(spr, colours)[..., None]))
    assert exact >= 15, exact
    assert worst < 0.15, worst
    assert np.mean(overlap) >= 0.98, np.mean(overlap)


def _best_overlap(got: np.ndarray, want: np.ndarray) -> float:
    best = 0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            a = got[max(0, dy):, max(0, dx):]
            b = want[max(0, -dy):, max(0, -dx):]
            h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
            best = max(best, int((a[:h, :w] == b[:h, :w]).all(axis=2).sum()))
    return best / (want.shape[0] * want.shape[1])


def test_batch_shares_one_grid():
    frames = [sprite(20, 20, seed=s) for s in (1, 2, 3)]
    res = sn.snap([enlarge(f, 4, head=(1, 2)) for f in frames])
    assert all(r.detected for r in res)
    assert all(np.array_equal(r.x.edges, res[0].x.edges) and np.array_equal(r.y.edges, res[0].y.edges) for r in res)
    for r, f in zip(res, frames):
        assert np.array_equal(r.image, f)


def test_known_cell_size_still_finds_the_offset():
    spr = sprite(20, 20, seed=5)
    res = sn.snap(enlarge(spr, 6, head=(2, 4)), cell_width=6, cell_height=6)
    assert np.array_equal(res.image, spr)
    assert res.x.offset == 4 and res.y.offset == 2


@pytest.mark.parametrize("name", ["smooth", "gradient", "solid", "noise", "photo_like"])
def test_nothing_detected_returns_the_input(name):
    rng = np.random.default_rng(1)
    if name == "smooth":
        img = cv2.GaussianBlur(rng.integers(0, 256, (200, 220, 3), dtype=np.uint8), (0, 0), 6)
    elif name == "gradient":
        img = np.dstack([np.tile(np.linspace(0, 255, 300), (120, 1))] * 3).astype(np.uint8)
    elif name == "solid":
        img = np.full((90, 90, 3), 40, np.uint8)
    elif name == "noise":
        img = rng.integers(0, 256, (150, 160, 3), dtype=np.uint8)
    else:  # a smooth texture enlarged with a smooth filter: edges everywhere, no cells
        small = cv2.GaussianBlur(rng.integers(0, 256, (60, 60, 3), dtype=np.uint8), (0, 0), 1.2)
        img = cv2.resize(small, (300, 300), interpolation=cv2.INTER_CUBIC)
    res = sn.snap(img)
    assert not res.detected
    assert res.image is img
    assert "no pixel grid detected" in res.message
    assert res.to_dict() == {"detected": False, "message": res.message}


def test_pixel_art_at_its_true_size_is_returned():
    """Snapping what snap gave (or any sprite at its true size) fitted a grid of about 2 px to its one-pixel cells
    and halved it: the README's 32x32 house went to 17x13. Enlargements of 2-px cells are still snapped."""
    from pathlib import Path

    from PIL import Image

    house = np.asarray(Image.open(Path(__file__).parents[1] / "docs/images/pixelate_32.png").convert("RGB"))
    once = sn.snap(house)
    assert once.detected and once.image.shape[:2] == (32, 32)
    again = sn.snap(np.ascontiguousarray(once.image))
    assert not again.detected and again.image.shape[:2] == (32, 32), again.message
    assert "true size" in again.message
    for seed in range(6):  # 2-px grids on one axis too (2.27x6.00 halved one 24x24 sprite to 11x4)
        spr = sprite(24, 24, seed=seed)
        assert not sn.snap(spr).detected, (seed, sn.snap(spr).message)
        assert np.array_equal(sn.snap(enlarge(spr, 2)).image, spr)
        # crisp but not a clean enlargement (2% of its pixels changed to other sprite colours): still snapped
        big = enlarge(spr, 2).copy()
        rng = np.random.default_rng(seed)
        specks = rng.random(big.shape[:2]) < 0.02
        big[specks] = spr.reshape(-1, spr.shape[2])[rng.integers(0, spr.shape[0] * spr.shape[1], specks.sum())]
        assert sn.snap(big).image.shape[:2] == (24, 24), seed


def test_tiny_image_is_returned():
    img = np.zeros((3, 40, 3), np.uint8)
    res = sn.snap(img)
    assert not res.detected and res.image is img


def _dominant_brute(pixels: np.ndarray) -> np.ndarray:
    """Plain-Python reference of the cell colour: a majority of one exact colour wins; otherwise the sample with
    the most samples within the radius (fewest total squared distance on a tie, then the first), averaged with
    those samples and rounded half up; in a small cell where that group is not more than half, the mean of all."""
    px = [tuple(int(v) for v in p) for p in pixels]
    m = len(px)
    counts = {c: px.count(c) for c in px}
    top = max(counts.values())
    if 2 * top > m:
        return np.array(next(c for c in px if counts[c] == top))
    r2 = sn.DOMINANT_RADIUS ** 2

    def d2(a, b):
        return sum((x - y) ** 2 for x, y in zip(a, b))

    best = min(range(m), key=lambda i: (-sum(d2(px[i], q) <= r2 for q in px),
                                        sum(d2(px[i], q) for q in px if d2(px[i], q) <= r2), i))
    near = np.array([q for q in px if d2(px[best], q) <= r2], dtype=np.float64)
    if m <= sn.SMALL_CELL_SAMPLES and 2 * len(near) <= m:
        near = np.array(px, dtype=np.float64)
    return np.floor(near.mean(axis=0) + 0.5)


@pytest.mark.parametrize("noise", [0, 6, 40])
def test_sample_cells_is_the_dominant_colour_of_each_inner_part(noise):
    rng = np.random.default_rng(4 + noise)
    # cells of a few colours, some pixels of other colours, and noise: every branch of the rule is taken
    base = rng.integers(0, 256, (5, 3))
    img = base[rng.integers(0, 5, (40, 80))] + rng.normal(0, noise, (40, 80, 3)) * (noise > 0)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    ey = np.array([0, 3, 9, 14, 22, 31, 40])
    ex = np.array([0, 2, 7, 13, 20, 28, 37, 45, 50, 53, 80])  # the last, 27 px: 14 inner pixels, 8 sampled
    got = sn.sample_cells(img, ey, ex)
    for i in range(len(ey) - 1):
        for j in range(len(ex) - 1):
            cell = img[np.ix_(_inner(ey[i], ey[i + 1]), _inner(ex[j], ex[j + 1]))].reshape(-1, 3)
            assert np.array_equal(got[i, j], _dominant_brute(cell)), (noise, i, j)


def test_cell_colour_is_one_the_cell_shows_never_a_channel_mix():
    # 40% red, 30% blue, 30% green: the per-channel median is black, which no pixel has; the mean is a brown
    a, b, c = (200, 0, 0), (0, 0, 200), (0, 200, 0)
    cell = np.array([a] * 26 + [b] * 19 + [c] * 19, np.uint8)  # 64 samples: one 8 x 8 inner part
    img = np.zeros((16, 16, 3), np.uint8)
    img[4:12, 4:12] = cell.reshape(8, 8, 3)
    got = sn.sample_cells(img, np.array([0, 16]), np.array([0, 16]))
    assert tuple(got[0, 0]) == a
    # with noise on top the cell's colour stays near red, where the median stays near black
    rng = np.random.default_rng(0)
    noisy = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
    got = sn.sample_cells(noisy, np.array([0, 16]), np.array([0, 16]))[0, 0].astype(int)
    assert np.abs(got - a).max() <= 4
    assert np.abs(np.median(noisy[4:12, 4:12].reshape(-1, 3), axis=0) - a).max() > 100


def _inner(a: int, b: int) -> list[int]:
    """Brute force: the cell's pixels without a quarter of its width (rounded) on each side, at least one pixel;
    of more than 8, the 8 at the centres of 8 equal parts."""
    width = b - a
    margin = min(int(np.floor(width * 0.25 + 0.5)), (width - 1) // 2)
    pixels = list(range(a + margin, b - margin))
    if len(pixels) <= 8:
        return pixels
    return [pixels[int((i + 0.5) * len(pixels) / 8)] for i in range(8)]


def test_result_json():
    spr = sprite(20, 22, seed=9)
    res = sn.snap(enlarge(spr, 3.5, head=(1.0, 0.0)))
    d = json.loads(json.dumps(res.to_dict(edges=True)))
    assert d["detected"] and d["columns"] == 22 and d["rows"] == 20
    assert d["cell_width"] == pytest.approx(3.5, abs=0.01)
    assert len(d["edges_x"]) == 23 and d["edges_x"][0] == 0 and d["edges_x"][-1] == res.x.edges[-1]


def test_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        sn.snap(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="share a size"):
        sn.snap([np.zeros((10, 10, 3), np.uint8), np.zeros((12, 10, 3), np.uint8)])


def test_snap_node_reports_the_grid_and_passes_through_without_one():
    import torch

    from pixart_nodes.core.tensors import iter_batch_uint8, uint8_to_image
    from pixart_nodes.nodes_pixelate import PixartSnapToGrid

    spr = sprite(20, 24, seed=2, alpha=True)
    big = enlarge(spr, 4, head=(1, 2))
    mask = 1.0 - torch.from_numpy(big[..., 3]).float()[None] / 255.0  # Load Image's convention
    out = PixartSnapToGrid().run(uint8_to_image(big[..., :3]), scale=2, mask=mask)
    image, mask_out, grid, cw, ch = out["result"]
    assert image.shape == (1, 40, 48, 3) and mask_out.shape == (1, 40, 48)
    alpha = np.repeat(np.repeat(spr[..., 3], 2, 0), 2, 1)
    assert np.array_equal((1.0 - mask_out[0].numpy()) * 255, alpha)
    assert (cw, ch) == (pytest.approx(4.0), pytest.approx(4.0))
    info = json.loads(grid)
    assert (info["columns"], info["rows"], info["offset_x"], info["offset_y"]) == (24, 20, 3, 2)
    assert out["ui"]["text"][0].startswith("grid 4.00x4.00")

    out = PixartSnapToGrid().run(uint8_to_image(enlarge(spr[..., :3], 3)))
    assert np.array_equal(next(iter_batch_uint8(out["result"][0])), spr[..., :3])

    flat = np.full((64, 64, 3), 90, np.uint8)
    image, _, grid, cw, _ = PixartSnapToGrid().run(uint8_to_image(flat))["result"]
    assert image.shape == (1, 64, 64, 3) and cw == 0.0 and json.loads(grid)["detected"] is False


def test_snap_node_passes_a_grid_coarser_than_asked_through():
    from pixart_nodes.core.tensors import iter_batch_uint8, uint8_to_image
    from pixart_nodes.nodes_pixelate import PixartSnapToGrid

    spr = sprite(20, 24, seed=3)  # 24 columns, 20 rows
    big = enlarge(spr, 4)
    out = PixartSnapToGrid().run(uint8_to_image(big), min_columns=24, min_rows=20)
    assert np.array_equal(next(iter_batch_uint8(out["result"][0])), spr)  # enough cells: snapped
    out = PixartSnapToGrid().run(uint8_to_image(big), min_columns=32, min_rows=20)
    image, _, grid, cw, _ = out["result"]
    assert np.array_equal(next(iter_batch_uint8(image)), big) and cw == 0.0
    info = json.loads(grid)
    assert info["detected"] is False and "fewer cells than 32x20" in info["message"]
    assert out["ui"]["text"][0] == info["message"]


@pytest.mark.parametrize("kw,field", [({"cell_width": 0.5}, "cell_width"), ({"cell_height": 1.9}, "cell_height"),
                                      ({"min_size": 8, "max_size": 4}, "max_size"),
                                      ({"max_size": float("inf")}, "max_size"),
                                      ({"min_size": float("nan")}, "min_size"),
                                      ({"cell_width": float("inf")}, "cell_width")])
def test_sizes_no_grid_can_have_are_refused_naming_them(kw, field):
    # a 0.5-pixel cell read the picture as a grid twice its size; max below min quietly found "no grid"; NaN and
    # infinity passed the bounds (a traceback, a nameless message, a 1x1 "grid")
    with pytest.raises(ValueError, match=field):
        sn.snap(np.zeros((32, 32, 3), np.uint8), **kw)


def test_snap_node_refuses_a_scale_past_the_pixel_limit(monkeypatch):
    # scale multiplies the cells: 2-px cells at 64x made 1024 times the input's pixels (1024x1024 in: 32768x32768,
    # tens of GB), allocated before anything was checked; a batch is allocated at once, so the bound is the batch's
    import pixart_nodes.core.imageio as imageio
    from pixart_nodes.core.tensors import uint8_to_image
    from pixart_nodes.nodes_pixelate import PixartSnapToGrid

    spr = sprite(20, 24, seed=3)  # 20 rows of 24 cells
    image = uint8_to_image(enlarge(spr[..., :3], 3))
    monkeypatch.setattr(imageio, "pixel_limit", lambda: 24 * 20 * 16)  # 4x fits, 5x does not
    out = PixartSnapToGrid().run(image, scale=4)
    assert out["result"][0].shape[1:3] == (20 * 4, 24 * 4)
    with pytest.raises(ValueError, match=r"^scale: 24x20 enlarged 5 times would be 120x100.+at most 4 times here"):
        PixartSnapToGrid().run(image, scale=5)
    with pytest.raises(ValueError, match=r"^scale: 2 images of 960 pixels enlarged 4 times would be 15,360.+at most 2 "):
        PixartSnapToGrid().run(image.repeat(2, 1, 1, 1), scale=4)
