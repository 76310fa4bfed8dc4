"""Pixel-art cleanup: dither patterns kept, isolated pixels and single-pixel jaggies removed (against plain-Python
references of the same rules), rare and near-duplicate colours, background removal (against a BFS flood fill)."""
from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from pixart_nodes.core import cleanup as cu

GREY, INK, RED, WHITE = (200, 200, 200), (20, 20, 30), (220, 40, 40), (250, 250, 250)


def _canvas(h: int = 16, w: int = 16, colour=GREY) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[...] = colour
    return img


def test_checkerboard_stays_and_isolated_pixel_goes():
    img = _canvas()
    y, x = np.mgrid[0:16, 0:16]
    area = (slice(2, 9), slice(2, 10))
    img[area][((y + x) % 2 == 0)[area]] = INK
    img[12, 12] = RED
    res = cu.cleanup(img)
    assert np.array_equal(res.image[area], img[area])
    assert tuple(res.image[12, 12]) == GREY
    assert res.stats["isolated_pixels_removed"] == 1
    assert (res.image != img).any(axis=2).sum() == 1


@pytest.mark.parametrize("step", [2, 3])
def test_sparse_dither_and_dotted_lines_stay(step):
    img = _canvas(20, 20)
    img[2:14:2, 2:14:2] = INK  # one pixel in four: every pixel is alone among its 8 neighbours
    img[17, 1:19:step] = RED  # dotted line
    res = cu.cleanup(img, jaggies=False)
    if step == 2:
        assert np.array_equal(res.image, img)
    else:  # dots three apart are no pattern: each is a stray pixel
        assert np.array_equal(res.image[:16], img[:16])
        assert (res.image[17] == GREY).all()


def test_staircase_loses_its_doubled_corners_and_stays_connected():
    img = _canvas(12, 14)
    for i in range(6):
        img[2 + i, 2 + i] = INK
        img[2 + i, 3 + i] = INK  # doubled: 2-px steps of an L staircase
    res = cu.cleanup(img)
    ink = (res.image == INK).all(axis=2)
    assert res.stats["jaggies_removed"] >= 4
    assert ink.sum() < 12
    ys, xs = np.nonzero(ink)
    # still one 8-connected line from the first pixel to the last
    assert _connected8(ink)
    assert ink[2, 2] and ink[7, 8]


def test_rectangle_corners_and_filled_areas_are_kept():
    img = _canvas(14, 14)
    img[3, 3:11] = INK
    img[10, 3:11] = INK
    img[3:11, 3] = INK
    img[3:11, 10] = INK
    img[5:9, 5:9] = RED
    res = cu.cleanup(img)
    assert np.array_equal(res.image, img)


def test_a_doubled_outline_between_two_areas_loses_its_corners():
    """A 1-px dark line with 2-px steps between sky (above) and grass (below): each doubled corner sticks out
    into one of the two areas and takes its colour; the line stays one 8-connected line."""
    sky, grass = (120, 170, 230), (60, 150, 70)
    img = _canvas(14, 16, sky)
    for y in range(14):
        img[y, : max(y - 1, 0)] = grass  # grass below-left of the line
        if 2 <= y < 12:
            img[y, y - 1 : y + 1] = INK  # the line: two pixels a row, each row one step right (an L per step)
    res = cu.cleanup(img, merge=0, isolated=False)
    ink = (res.image == INK).all(axis=2)
    assert res.stats["jaggies_removed"] >= 4 and ink.sum() < (img == INK).all(axis=2).sum()
    assert _connected8(ink)
    changed = (res.image != img).any(axis=2)
    # every removed corner took the colour of the area it stuck into, sky or grass
    assert all(tuple(res.image[y, x]) in (sky, grass) for y, x in zip(*np.nonzero(changed)))


def test_a_two_tone_area_beside_an_outline_keeps_the_outline_straight():
    """The README house: a wall of two close beige shades inside a 1-px dark outline. A wall pixel can sit in an L
    of its own shade with a one-pixel arm; it is no line corner (its other neighbours are the outline and the
    other shade), so it must not take the outline's colour and notch it."""
    q, r = (208, 186, 151), (199, 193, 139)
    wall = np.array([[0, 1, 1, 1, 2, 1],
                     [0, 1, 2, 2, 1, 2],
                     [0, 1, 1, 2, 1, 1],   # (2, 1): an L of q (up, right) with a one-pixel right arm
                     [0, 2, 1, 1, 2, 1],
                     [0, 1, 2, 1, 1, 2],
                     [0, 0, 0, 0, 0, 0]])
    img = _canvas(10, 10, WHITE)
    img[2:8, 2:8] = np.array([INK, q, r], np.uint8)[wall]
    res = cu.cleanup(img, merge=0, isolated=False)
    outline = (img == INK).all(axis=2)
    assert np.array_equal((res.image == INK).all(axis=2), outline)  # no notch, no gap
    # the same corner on a line is still a jaggy: the staircase test above; and with one shade it is an area
    solid = img.copy()
    solid[(img == r).all(axis=2)] = q
    assert np.array_equal(cu.cleanup(solid, merge=0, isolated=False).image, solid)


def _connected8(mask: np.ndarray) -> bool:
    pts = list(zip(*np.nonzero(mask)))
    seen = {pts[0]}
    todo = deque([pts[0]])
    while todo:
        y, x = todo.popleft()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                q = (y + dy, x + dx)
                if q not in seen and 0 <= q[0] < mask.shape[0] and 0 <= q[1] < mask.shape[1] and mask[q]:
                    seen.add(q)
                    todo.append(q)
    return len(seen) == len(pts)


# --- plain-Python references of the two pixel rules -----------------------------------------------------------------

def _ref_isolated(k: np.ndarray) -> np.ndarray:
    h, w = k.shape
    out = k.copy()
    for y in range(h):
        for x in range(w):
            nb = [k[y + dy, x + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                  if (dy or dx) and 0 <= y + dy < h and 0 <= x + dx < w]
            if k[y, x] in nb or len(nb) < 5:
                continue
            two = [k[y + dy, x + dx] for dy in (-2, 0, 2) for dx in (-2, 0, 2)
                   if (dy or dx) and 0 <= y + dy < h and 0 <= x + dx < w]
            if k[y, x] in two:
                continue
            values, counts = np.unique(nb, return_counts=True)
            # ties go to the colour met first in raster order of the neighbourhood, as in the module
            best = max(values, key=lambda v: (counts[list(values).index(v)], -nb.index(v)))
            if counts[list(values).index(best)] * 8 >= 5 * len(nb):
                out[y, x] = best
    return out


def _ref_jaggies(k: np.ndarray) -> np.ndarray:
    h, w = k.shape
    out = k.copy()

    def same(y, x, c) -> int:
        return int(0 <= y < h and 0 <= x < w and out[y, x] == c)

    def run(y, x, dy, dx, c):
        n = 0
        y, x = y + dy, x + dx
        while same(y, x, c):
            n, y, x = n + 1, y + dy, x + dx
        return n

    for y in range(h):
        for x in range(w):
            c = out[y, x]
            if c == cu.TRANSPARENT:
                continue
            up, down, left, right = same(y - 1, x, c), same(y + 1, x, c), same(y, x - 1, c), same(y, x + 1, c)
            if up + down != 1 or left + right != 1:
                continue
            vy, hx = (-1 if up else 1), (-1 if left else 1)
            if same(y + vy, x + hx, c) or same(y - vy, x - hx, c):
                continue
            if run(y, x, vy, 0, c) > 1 and run(y, x, 0, hx, c) > 1:
                continue
            # outside the L: the two 4-neighbours and the pixels one step further out (those in the image) all hold
            # one colour other than the corner's
            outside = {out[yy, xx] for yy, xx in ((y - vy, x), (y, x - hx), (y - 2 * vy, x), (y, x - 2 * hx))
                       if 0 <= yy < h and 0 <= xx < w}
            if len(outside) == 1 and c not in outside:
                out[y, x] = outside.pop()
    return out


@pytest.mark.parametrize("seed", range(6))
def test_pixel_rules_match_plain_python(seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 3, (18, 22))
    base[rng.random((18, 22)) < 0.25] = 3  # sprinkle a fourth colour: isolated pixels, short lines, corners
    keys = base.astype(np.int64) * 1000 + 7
    got_iso, n_iso = cu._isolated(keys)
    assert np.array_equal(got_iso, _ref_isolated(keys))
    assert n_iso == int((got_iso != keys).sum())
    got_jag, n_jag = cu._jaggies(keys)
    assert np.array_equal(got_jag, _ref_jaggies(keys))
    assert n_jag == int((got_jag != keys).sum())


# --- colours ------------------------------------------------------------------------------------------------------

def test_near_duplicate_shades_join_the_most_common_one():
    img = _canvas(10, 10)
    img[:5] = (100, 140, 60)
    img[0, :3] = (101, 139, 61)  # noise shades of the green
    img[1, :2] = (99, 141, 60)
    img[7:, :] = (100, 140, 200)  # a distinct blue stays
    res = cu.cleanup(img, isolated=False, jaggies=False)
    assert res.stats["similar_colours_merged"] == 2
    assert (res.image[:5] == (100, 140, 60)).all()
    assert (res.image[7:] == (100, 140, 200)).all()


def test_rare_colour_takes_the_most_similar_neighbouring_colour():
    img = _canvas(20, 20, (40, 40, 120))
    img[:, 10:] = (200, 60, 60)
    img[5, 9] = (190, 70, 70)  # rare reddish pixel inside the blue half, next to the red half
    img[15, 3] = (60, 60, 140)  # rare bluish pixel far from red
    res = cu.cleanup(img, merge=0, rare=0.01, isolated=False, jaggies=False)
    assert tuple(res.image[5, 9]) == (200, 60, 60)
    assert tuple(res.image[15, 3]) == (40, 40, 120)
    assert res.stats["rare_pixels_replaced"] == 2


# --- background ---------------------------------------------------------------------------------------------------

def _flood(match: np.ndarray) -> np.ndarray:
    """BFS from every border pixel through 4-neighbours that match."""
    h, w = match.shape
    seen = np.zeros_like(match)
    todo = deque((y, x) for y in range(h) for x in range(w)
                 if (y in (0, h - 1) or x in (0, w - 1)) and match[y, x])
    for p in todo:
        seen[p] = True
    while todo:
        y, x = todo.popleft()
        for q in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
            if 0 <= q[0] < h and 0 <= q[1] < w and match[q] and not seen[q]:
                seen[q] = True
                todo.append(q)
    return seen


def test_background_from_the_border_stops_at_outlines_and_keeps_enclosed_areas():
    img = _canvas(20, 20, WHITE)
    yy, xx = np.mgrid[0:20, 0:20]
    ring = (np.abs(np.hypot(yy - 10, xx - 10) - 6) < 0.8)
    img[ring] = INK  # an 8-connected circle outline: diagonal steps the fill must not leak through
    img[4:7, 16:19] = RED
    res = cu.cleanup(img, background="auto", isolated=False, jaggies=False)
    assert res.image.shape == (20, 20, 4)
    clear = res.image[..., 3] == 0
    assert np.array_equal(clear, _flood((img == WHITE).all(axis=2)))
    assert not clear[10, 10]  # white inside the circle stays
    assert res.stats["background"] == list(WHITE)
    assert (res.image[clear, :3] == 0).all()


def test_background_colour_given_and_everywhere():
    img = _canvas(12, 12, (0, 255, 0))
    img[3:9, 3:9] = INK
    img[5:7, 5:7] = (0, 250, 3)  # near the key colour, enclosed
    res = cu.cleanup(img, background="#00ff00", connected=False, isolated=False, jaggies=False, merge=0)
    assert (res.image[5:7, 5:7, 3] == 0).all() and (res.image[3, 3:9, 3] == 255).all()
    res = cu.cleanup(img, background=(0, 255, 0), isolated=False, jaggies=False, merge=0)
    assert (res.image[5:7, 5:7, 3] == 255).all()


def test_transparent_input_loses_a_stray_speck():
    img = np.zeros((12, 12, 4), np.uint8)
    img[3:9, 3:9] = (*RED, 255)
    img[1, 10] = (*INK, 255)  # a speck on transparency
    res = cu.cleanup(img)
    assert res.image[1, 10, 3] == 0
    assert (res.image[3:9, 3:9, 3] == 255).all()


def test_half_transparent_pixels_no_step_changes_are_kept():
    # alpha < 128 was written as (0, 0, 0, 0) even with every step off, and the report said "nothing to clean"
    img = np.empty((8, 8, 4), np.uint8)
    img[...] = (200, 50, 50, 255)
    img[2:6, 2:6, 3] = 100
    img[0, 0] = (9, 8, 7, 0)  # a fully clear pixel stays black under alpha 0, as the node always showed it
    expected = img.copy()
    expected[0, 0] = 0
    for kw in ({"merge": 0, "isolated": False, "jaggies": False}, {}):
        res = cu.cleanup(img, **kw)
        assert np.array_equal(res.image, expected), kw
        assert res.summary() == "nothing to clean", kw
    res = cu.cleanup(img, background="auto")  # the red around goes, the half-clear block is no background
    assert np.array_equal(res.image[2:6, 2:6], img[2:6, 2:6]) and res.stats["background_pixels"] == 47
    # a half-clear speck a step does change is still made opaque, and counted
    img[2:6, 2:6, 3] = 255
    img[4, 4, 3] = 60
    res = cu.cleanup(img, merge=0, jaggies=False)
    assert tuple(res.image[4, 4]) == (200, 50, 50, 255) and res.stats["isolated_pixels_removed"] == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="uint8"):
        cu.cleanup(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="#rrggbb"):
        cu.cleanup(_canvas(), background="#12345")


@pytest.mark.parametrize("kw", [{"merge": float("nan")}, {"tolerance": float("nan")}, {"merge": float("inf")},
                                {"rare": float("nan")}, {"merge": -1}])
def test_amounts_out_of_range_or_not_finite_are_refused_naming_them(kw):
    # NaN passed "merge < 0": merge was silently off, the background tolerance silently matched nothing
    with pytest.raises(ValueError, match=f"^{next(iter(kw))}:"):
        cu.cleanup(_canvas(), background="auto", **kw)


def test_cleanup_node_puts_the_removed_background_in_the_mask():
    from pixart_nodes.core.tensors import uint8_to_image
    from pixart_nodes.nodes_cleanup import PixartCleanup

    img = _canvas(16, 16, WHITE)
    img[4:12, 4:12] = RED
    img[1, 1] = INK
    out = PixartCleanup().run(uint8_to_image(img), background="auto")
    image, mask, report = out["result"]
    assert image.shape == (1, 16, 16, 3)
    assert mask[0, 0, 0] == 1.0 and mask[0, 8, 8] == 0.0 and mask[0, 1, 1] == 1.0
    assert "1 isolated pixels removed" in report and "background #fafafa" in report


def test_a_huge_background_colour_is_not_echoed_whole():
    # the message repeated the whole value: a 1 MB string made a 1 MB error
    with pytest.raises(ValueError, match=r"^background colour must be #rrggbb, got 'xxx.+1,000,000 characters") as e:
        cu.cleanup(_canvas(), background="x" * 1_000_000)
    assert len(str(e.value)) < 200
    for text in ("#-1-1-1", "#1 2 34", "#\u0661\u0662\u0663\u0664\u0665\u0666"):
        with pytest.raises(ValueError, match="^background colour must be #rrggbb"):
            cu.parse_colour(text)
    assert cu.parse_colour("#F80") == 0xFF8800
    assert cu.parse_colour(0x102030) == 0x102030  # a key, as the node hands over the colour it parsed
    for key in (-1, 0x1000000, True):
        with pytest.raises(ValueError):
            cu.parse_colour(key)
