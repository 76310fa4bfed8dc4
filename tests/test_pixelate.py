"""Pixelation methods against brute-force per-block computations, OpenCV and Pillow; the Pixelate node."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from pixart_nodes.core import pixelate as px
from pixart_nodes.nodes_pixelate import PixartPixelate


def _random(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _blocks(h: int, w: int, **kw):
    """Block rectangles computed independently of the module: by size with a remainder, or by floor(i*n/m)."""
    if kw.get("pixel_size"):
        p = kw["pixel_size"]
        ys = list(range(0, h, p)) + [h]
        xs = list(range(0, w, p)) + [w]
    else:
        oh, ow = kw["height"], kw["width"]
        ys = [i * h // oh for i in range(oh + 1)]
        xs = [i * w // ow for i in range(ow + 1)]
    return ys, xs


def _brute(img: np.ndarray, fn, **kw) -> np.ndarray:
    ys, xs = _blocks(img.shape[0], img.shape[1], **kw)
    out = np.zeros((len(ys) - 1, len(xs) - 1, img.shape[2]), np.uint8)
    for i in range(len(ys) - 1):
        for j in range(len(xs) - 1):
            out[i, j] = fn(img[ys[i]:ys[i + 1], xs[j]:xs[j + 1]])
    return out


def _mean_half_up(block: np.ndarray) -> np.ndarray:
    flat = block.reshape(-1, block.shape[2]).astype(np.int64)
    return (2 * flat.sum(0) + len(flat)) // (2 * len(flat))


def _median_half_up(block: np.ndarray) -> np.ndarray:
    return np.floor(np.median(block.reshape(-1, block.shape[2]), axis=0) + 0.5)


def _centre(block: np.ndarray) -> np.ndarray:
    return block[block.shape[0] // 2, block.shape[1] // 2]


SIZES = [
    dict(pixel_size=4),  # divides 32x48
    dict(pixel_size=5),  # remainder blocks
    dict(pixel_size=1),
    dict(width=7, height=5),  # uneven block sizes
    dict(width=48, height=32),  # identity
]


@pytest.mark.parametrize("kw", SIZES)
def test_box_is_the_block_mean(kw):
    img = _random(32, 48, seed=1)
    assert np.array_equal(px.pixelate(img, method="box", **kw), _brute(img, _mean_half_up, **kw))


@pytest.mark.parametrize("kw", SIZES)
def test_median_is_the_block_median(kw):
    img = _random(32, 48, seed=2)
    assert np.array_equal(px.pixelate(img, method="median", **kw), _brute(img, _median_half_up, **kw))


@pytest.mark.parametrize("kw", SIZES)
def test_nearest_is_the_block_centre(kw):
    img = _random(32, 48, seed=3)
    assert np.array_equal(px.pixelate(img, method="nearest", **kw), _brute(img, _centre, **kw))


@pytest.mark.parametrize("p", [2, 4, 8])
def test_box_matches_opencv_inter_area_where_sizes_divide(p):
    img = _random(64, 96, seed=4)
    ours = px.pixelate(img, pixel_size=p, method="box")
    cv = cv2.resize(img, (96 // p, 64 // p), interpolation=cv2.INTER_AREA)
    diff = ours.astype(int) - cv.astype(int)
    assert np.abs(diff).max() <= 1
    # the only disagreements are exact .5 ties, which OpenCV may round to even where we round up
    sums = img.reshape(64 // p, p, 96 // p, p, 3).sum(axis=(1, 3))
    ties = (sums % (p * p)) * 2 == p * p
    assert not np.any(diff[~ties])


def test_nearest_matches_pillow_where_sizes_divide():
    img = _random(40, 60, seed=5)
    pil = np.asarray(Image.fromarray(img).resize((15, 10), Image.NEAREST))
    assert np.array_equal(px.pixelate(img, pixel_size=4, method="nearest"), pil)


def _kmeans_reference(block: np.ndarray, k: int, iterations: int = 8) -> np.ndarray:
    """Plain per-block Lloyd's k-means with the module's documented start (evenly spaced brightness ranks)."""
    x = block.reshape(-1, block.shape[2]).astype(np.float64)
    n = len(x)
    k = min(k, n)
    order = np.argsort(x.sum(axis=1), kind="stable")
    centres = x[order[[int((j + 0.5) * n / k) for j in range(k)]]]
    for _ in range(iterations):
        labels = np.array([min(range(k), key=lambda j: ((p - centres[j]) ** 2).sum()) for p in x])
        new = np.array([x[labels == j].mean(axis=0) if np.any(labels == j) else centres[j] for j in range(k)])
        if np.allclose(new, centres, atol=1e-4):
            break
        centres = new
    labels = np.array([min(range(k), key=lambda j: ((p - centres[j]) ** 2).sum()) for p in x])
    counts = [int((labels == j).sum()) for j in range(k)]
    return np.floor(centres[int(np.argmax(counts))] + 0.5)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_kcentroid_matches_per_block_kmeans(k):
    # two-tone blocks with noise: clusters are clear, so float32 vs float64 cannot change the assignment
    rng = np.random.default_rng(k)
    base = rng.choice(np.array([[20, 30, 40], [200, 180, 60], [90, 220, 250], [250, 250, 250]], np.int64),
                      size=(24, 32))
    img = np.clip(base + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)
    ours = px.pixelate(img, pixel_size=4, method="kcentroid", k=k)
    ref = _brute(img, lambda b: _kmeans_reference(b, k), pixel_size=4)
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


def test_kcentroid_returns_the_majority_colour_not_the_average():
    block = np.zeros((4, 4, 3), np.uint8)
    block[...] = (240, 10, 10)  # 10 red pixels ...
    block.reshape(-1, 3)[:6] = (0, 0, 0)  # ... and 6 black outline pixels
    img = np.tile(block, (2, 3, 1))
    out = px.pixelate(img, pixel_size=4, method="kcentroid")
    assert np.all(out == (240, 10, 10))
    assert not np.all(px.pixelate(img, pixel_size=4, method="box") == (240, 10, 10))


def test_kcentroid_agrees_with_opencv_kmeans_on_separated_clusters():
    rng = np.random.default_rng(9)
    blocks = []
    for _ in range(12):
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        while np.abs(a - b).sum() < 120:
            b = rng.integers(0, 256, 3)
        major = rng.integers(9, 14)
        pix = np.array([a] * major + [b] * (16 - major)) + rng.integers(-3, 4, (16, 3))
        blocks.append(np.clip(pix, 0, 255).reshape(4, 4, 3).astype(np.uint8))
    img = np.concatenate(blocks, axis=1)  # 4 x 48
    ours = px.pixelate(img, pixel_size=4, method="kcentroid")[0]
    for blk, got in zip(blocks, ours):
        data = blk.reshape(-1, 3).astype(np.float32)
        crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.01)
        _, labels, centres = cv2.kmeans(data, 2, None, crit, 5, cv2.KMEANS_PP_CENTERS)
        expected = centres[np.bincount(labels.ravel()).argmax()]
        assert np.abs(got.astype(float) - expected).max() <= 1.0


def test_kcentroid_is_fast_enough_for_1024():
    img = _random(1024, 1024, seed=6)
    out = px.pixelate(img, pixel_size=8, method="kcentroid")  # a behaviour check; timing lives in bench/
    assert out.shape == (128, 128, 3)


def test_upscale_restores_size_and_fills_blocks():
    img = _random(30, 45, seed=7)
    small = px.pixelate(img, pixel_size=4, method="box")
    big = px.pixelate(img, pixel_size=4, method="box", upscale=True)
    assert small.shape == (8, 12, 3) and big.shape == img.shape
    assert np.array_equal(big[::4, ::4], small)
    assert np.array_equal(big[29, 44], small[7, 11])  # the partial corner block
    assert np.array_equal(big, cv2.resize(small, (48, 32), interpolation=cv2.INTER_NEAREST)[:30, :45])


def test_target_size_keeps_aspect_when_one_side_given():
    img = _random(60, 120, seed=8)
    assert px.pixelate(img, width=30).shape == (15, 30, 3)
    assert px.pixelate(img, height=10).shape == (10, 20, 3)


def test_box_with_alpha_ignores_colour_of_transparent_pixels():
    img = np.zeros((2, 2, 4), np.uint8)
    img[0, 0] = (200, 100, 50, 255)
    img[0, 1] = (0, 0, 0, 0)  # fully transparent black must not darken the block
    img[1, :] = (100, 50, 25, 255)
    out = px.pixelate(img, pixel_size=2, method="box")
    expected_rgb = np.floor((200 + 100 + 100) / 3 + 0.5), np.floor((100 + 50 + 50) / 3 + 0.5), np.floor(100 / 3 + 0.5)
    assert out[0, 0].tolist() == [*map(int, expected_rgb), round(3 * 255 / 4)]
    clear = np.zeros((2, 2, 4), np.uint8)
    clear[..., :3] = 40
    assert px.pixelate(clear, pixel_size=2, method="box")[0, 0].tolist() == [40, 40, 40, 0]


def test_grayscale_and_2d_input():
    img = _random(8, 8, c=1, seed=10)
    assert px.pixelate(img[..., 0], pixel_size=2).shape == (4, 4, 1)


@pytest.mark.parametrize("kw, field", [
    (dict(pixel_size=0), "pixel_size"),
    (dict(), "pixel_size"),
    (dict(pixel_size=2, width=4), "either pixel_size"),
    (dict(width=100), "larger than the image"),
    (dict(pixel_size=2, method="lanczos"), "method"),
    (dict(pixel_size=2, method="kcentroid", k=7), "k must"),
])
def test_bad_arguments_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        px.pixelate(_random(10, 10), **kw)


# --- node ------------------------------------------------------------------------------------------------------

def _to_u8(t: torch.Tensor) -> np.ndarray:
    return np.clip(t.numpy() * 255 + 0.5, 0, 255).astype(np.uint8)


def test_node_batch_with_mask_keeps_alpha():
    imgs = np.stack([_random(16, 24, seed=11), _random(16, 24, seed=12)])
    images = torch.from_numpy(imgs).float() / 255
    mask = torch.zeros((2, 16, 24))
    mask[:, :8] = 1.0  # top half transparent
    before = images.clone()
    out_img, out_mask = PixartPixelate().run(images, "box", 4, 0, 0, False, mask=mask)
    assert torch.equal(images, before)
    assert out_img.shape == (2, 4, 6, 3) and out_mask.shape == (2, 4, 6)
    assert torch.all(out_mask[:, :2] == 1) and torch.all(out_mask[:, 2:] == 0)
    # opaque half: plain block means of the input
    for i in range(2):
        expected = px.pixelate(imgs[i], pixel_size=4, method="box")
        assert np.array_equal(_to_u8(out_img[i])[2:], expected[2:])


def test_node_rgba_image_target_size_upscaled():
    rgba = _random(20, 20, c=4, seed=13)
    rgba[..., 3] = 255
    rgba[:10, :10, 3] = 0
    images = torch.from_numpy(np.stack([rgba, rgba])).float() / 255
    out_img, out_mask = PixartPixelate().run(images, "kcentroid", 8, 5, 5, True, k=3)
    assert out_img.shape == (2, 20, 20, 4) and out_mask.shape == (2, 20, 20)
    assert torch.all(out_mask[:, :8, :8] == 1) and torch.all(out_mask[:, 12:, 12:] == 0)
    expected = px.pixelate(rgba, width=5, height=5, method="kcentroid", k=3, upscale=True)
    assert np.array_equal(_to_u8(out_img[0]), expected)


def test_node_without_alpha_gives_opaque_mask():
    images = torch.from_numpy(_random(8, 8, seed=14)[None]).float() / 255
    out_img, out_mask = PixartPixelate().run(images, "median", 2, 0, 0, True, mask=torch.zeros((1, 64, 64)))
    assert out_img.shape == (1, 8, 8, 3) and torch.all(out_mask == 0)


@pytest.mark.parametrize("node", ["PixartPixelate", "PixartSnapToGrid", "PixartCleanup", "PixartQuantize",
                                  "PixartRGB565"])
@pytest.mark.parametrize("kind", ["grey", "grey with alpha", "bfloat16"])
def test_image_nodes_take_grey_and_bfloat16_images(node, kind):
    # a grey image (C = 1) with a mask crashed (its alpha was read from the 4th of three channels), grey plus
    # alpha (C = 2) made five channels or lost its alpha, and numpy has no bfloat16 (images or masks)
    import pixart_nodes
    from pixart_nodes.core.palette import palette_from_hex

    grey = torch.full((2, 16, 16, 1), 136 / 255)
    alpha = torch.ones_like(grey)
    alpha[:, :, :8] = 0  # the left half transparent
    image = {"grey": grey, "grey with alpha": torch.cat([grey, alpha], -1),
             "bfloat16": grey.expand(-1, -1, -1, 3).to(torch.bfloat16)}[kind]
    n = pixart_nodes.NODE_CLASS_MAPPINGS[node]()
    args = {"PixartPixelate": ("box", 4, 0, 0, False), "PixartSnapToGrid": (), "PixartCleanup": (),
            "PixartQuantize": (palette_from_hex(["#000000", "#888888", "#ffffff"]), "none", "rgb", False, 1.0, 128),
            "PixartRGB565": (16, 16, "stretch", "big", False, False, False, "x", "#000000")}[node]
    mask = torch.zeros(2, 16, 16, dtype=torch.bfloat16 if kind == "bfloat16" else torch.float32)
    out = getattr(n, n.FUNCTION)(image, *args, mask=mask)
    result = out["result"] if isinstance(out, dict) else out
    picture = next(r for r in result if isinstance(r, torch.Tensor) and r.ndim == 4)
    with_alpha = kind == "grey with alpha" and node != "PixartRGB565"  # an LCD frame has no alpha
    assert picture.shape[0] == 2 and picture.shape[-1] == (4 if with_alpha else 3)
    if with_alpha:  # the transparency kept, in the picture and in the mask
        masks = [r for r in result if isinstance(r, torch.Tensor) and r.ndim == 3]
        assert picture[..., 3].min() == 0 and picture[..., 3].max() == 1 and masks[0].max() == 1
    rgb = picture[..., :3].float() * 255
    if kind == "grey with alpha":  # where it shows (a transparent pixel has no colour; an LCD shows black there)
        rgb = rgb[picture[..., 3] > 0] if with_alpha else rgb[:, :, picture.shape[2] // 2:]
    assert torch.allclose(rgb, torch.full_like(rgb, 136), atol=4.5), rgb.unique()  # grey stays grey (RGB565: 4)


def test_node_metadata_has_tooltips():
    spec = PixartPixelate.INPUT_TYPES()
    for group in spec.values():
        for name, (_, opts) in group.items():
            assert opts.get("tooltip"), name
    assert PixartPixelate.CATEGORY.startswith("Pixart/")


# --- outline -----------------------------------------------------------------------------------------------------

INK, FILL, SKY = (25, 20, 35), (220, 180, 120), (120, 170, 230)


def _thin_frame(f: int = 8, line: int = 2, offset: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A 12x12-block drawing: sky, a filled box whose 1-block-wide border is drawn as a ``line``-px dark stroke
    ``offset`` px into each border block, and the block-level truth (True where the outline is)."""
    img = np.empty((12 * f, 12 * f, 3), np.uint8)
    img[...] = SKY
    img[3 * f:9 * f, 3 * f:9 * f] = FILL
    a, b = 3 * f + offset, 8 * f + offset
    img[a:a + line, a:b + line] = INK
    img[b:b + line, a:b + line] = INK
    img[a:b + line, a:a + line] = INK
    img[a:b + line, b:b + line] = INK
    truth = np.zeros((12, 12), bool)
    truth[3, 3:9] = truth[8, 3:9] = truth[3:9, 3] = truth[3:9, 8] = True
    return img, truth


def _is_ink(small: np.ndarray) -> np.ndarray:
    return np.abs(small[..., :3].astype(int) - INK).sum(-1) < 60


def test_outline_keeps_a_thin_dark_line_that_kcentroid_loses():
    img, truth = _thin_frame()
    out = px.pixelate(img, pixel_size=8, method="outline")
    kc = px.pixelate(img, pixel_size=8, method="kcentroid")
    assert not _is_ink(kc).any()  # 2 px of 8: every block's majority is sky or fill
    assert np.array_equal(_is_ink(out), truth)  # the 1-px outline, no thicker and no thinner
    # everything else keeps the dominant colour
    assert np.array_equal(out[~truth], kc[~truth])


def test_outline_line_on_a_block_border_stays_one_pixel_wide():
    img, _ = _thin_frame(offset=7)  # the 2-px stroke straddles two blocks (1 px in each)
    ink = _is_ink(px.pixelate(img, pixel_size=8, method="outline"))
    assert ink[3:9, 3:10].any(axis=1).all()  # the outline is there in every row of the box
    assert ink.sum(axis=1).max() <= 6 + 1  # but never doubled along a side (6 blocks + the corner)
    assert ink.sum() < 2 * 20


def test_outline_keeps_a_small_bright_detail():
    img = np.empty((64, 64, 3), np.uint8)
    img[...] = (30, 40, 60)
    img[20:22, 41:43] = (255, 250, 220)  # a 2x2 star in an 8x8 block
    out = px.pixelate(img, pixel_size=8, method="outline")
    assert tuple(out[2, 5]) == (255, 250, 220)
    assert (out.reshape(-1, 3) == (30, 40, 60)).all(axis=1).sum() == 63


def test_outline_does_not_grow_dark_regions():
    img = np.empty((64, 64, 3), np.uint8)
    img[...] = FILL
    img[:, :27] = INK  # a dark half ending 3 px into block column 3
    out = px.pixelate(img, pixel_size=8, method="outline")
    assert np.array_equal(out, px.pixelate(img, pixel_size=8, method="kcentroid"))


def test_outline_equals_kcentroid_without_details():
    rng = np.random.default_rng(3)
    small = PALETTE16[rng.integers(0, 16, (10, 12))]
    img = np.repeat(np.repeat(small, 6, 0), 6, 1)
    assert np.array_equal(px.pixelate(img, pixel_size=6, method="outline"), small)


PALETTE16 = np.array([(i * 16, 255 - i * 12, (i * 97) % 256) for i in range(16)], dtype=np.uint8)


def _outline_reference(img: np.ndarray, p: int, contrast: float) -> np.ndarray:
    """Plain-Python per-block version of the outline rule (documented in core.pixelate) for square blocks."""
    h, w = img.shape[0] // p, img.shape[1] // p
    f = img.astype(np.float64)
    y = f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114
    stats = {}
    for i in range(h):
        for j in range(w):
            blk = y[i * p:(i + 1) * p, j * p:(j + 1) * p].ravel()
            srt = np.sort(blk)
            k = len(blk) // 32
            stats[i, j] = (srt[len(blk) // 2], srt[k], srt[len(blk) - 1 - k])
    step = contrast * 255
    dark = np.zeros((h, w), bool)
    bright = np.zeros((h, w), bool)
    for i in range(h):
        for j in range(w):
            nb = sorted(stats[min(max(i + di, 0), h - 1), min(max(j + dj, 0), w - 1)][0]
                        for di in (-1, 0, 1) for dj in (-1, 0, 1) if di or dj)
            med, lo, hi = stats[i, j]
            dg, bg = min(med, nb[2]) - lo, hi - max(med, nb[-3])
            dark[i, j] = dg >= step and (bg < step or dg >= bg)
            bright[i, j] = bg >= step and not dark[i, j]
    return dark, bright


def test_outline_detail_decisions_match_a_plain_python_reference():
    rng = np.random.default_rng(8)
    img = np.repeat(np.repeat(PALETTE16[rng.integers(0, 16, (9, 10))], 8, 0), 8, 1)
    for _ in range(25):  # thin dark and bright strokes anywhere
        y0, x0 = rng.integers(0, 70), rng.integers(0, 78)
        colour = (10, 10, 10) if rng.random() < 0.6 else (250, 250, 250)
        if rng.random() < 0.5:
            img[y0:y0 + 2, x0:x0 + 10] = colour
        else:
            img[y0:y0 + 10, x0:x0 + 2] = colour
    dark, bright = _outline_reference(img, 8, px.OUTLINE_CONTRAST)
    re_, ce = px.grid(img.shape[0], img.shape[1], pixel_size=8)
    st = px._outline_stats(img, re_, ce)
    nb_lo, nb_hi = px._neighbour_extremes(st["med"])
    step = px.OUTLINE_CONTRAST * 255
    dg = np.minimum(st["med"], nb_lo) - st["lo"]
    bg = st["hi"] - np.maximum(st["med"], nb_hi)
    got_dark = (dg >= step) & ((bg < step) | (dg >= bg))
    got_bright = (bg >= step) & ~got_dark
    assert np.array_equal(got_dark, dark) and np.array_equal(got_bright, bright)
    assert dark.any() and bright.any()


def test_outline_with_alpha_keeps_the_outline_opaque():
    rgba = np.zeros((48, 48, 4), np.uint8)
    rgba[8:40, 8:40] = (*FILL, 255)
    rgba[10:12, 10:38] = (*INK, 255)  # top edge drawn 2 px thin inside the sprite
    out = px.pixelate(rgba, pixel_size=8, method="outline")
    assert (out[1, 1:5, 3] == 255).all() and _is_ink(out[1, 1:5]).all()
    assert (out[0, :, 3] == 0).all()


def test_outline_node_and_contrast():
    img, truth = _thin_frame()
    images = torch.from_numpy(img[None]).float() / 255
    out_img, _ = PixartPixelate().run(images, "outline", 8, 0, 0, False, contrast=0.9)
    assert not _is_ink(_to_u8(out_img[0])).any()  # no line is 90% of the range darker
    out_img, _ = PixartPixelate().run(images, "outline", 8, 0, 0, False)
    assert np.array_equal(_is_ink(_to_u8(out_img[0])), truth)
    with pytest.raises(ValueError, match="contrast"):
        px.pixelate(img, pixel_size=8, method="outline", contrast=0)


@pytest.mark.parametrize("node", ["PixartPixelate", "PixartSnapToGrid", "PixartCleanup", "PixartRGB565",
                                  "PixartSaveIndexed", "PixartTileSplit", "PixartPalette"])
def test_image_nodes_name_an_empty_batch(node):
    # a batch of no image (from a batch or crop node) was an IndexError from inside the node, naming nothing
    import pixart_nodes
    from pixart_nodes.core.palette import named_palette

    empty = torch.zeros((0, 16, 16, 3))
    args = {"PixartPixelate": ("box", 4, 0, 0, False), "PixartSnapToGrid": (), "PixartCleanup": (),
            "PixartRGB565": (16, 16, "stretch", "big", False, False, True, "x", "#000000"),
            "PixartSaveIndexed": (named_palette("pico-8"), "png", "x"), "PixartTileSplit": (64, 64, 8),
            "PixartPalette": ("image", "pico-8", "", "", 16, "kmeans", 0)}[node]
    n = pixart_nodes.NODE_CLASS_MAPPINGS[node]()
    if node == "PixartPalette":
        with pytest.raises(ValueError, match="^image: the batch holds no image"):
            n.build(*args, image=empty)
        return
    field = "images" if node == "PixartSaveIndexed" else "image"
    with pytest.raises(ValueError, match=f"^{field}: the batch holds no image"):
        getattr(n, n.FUNCTION)(empty, *args)


def test_masks_with_a_channel_axis_and_masks_of_nothing():
    # [B,1,H,W] (nodes that keep a channel axis) was a numpy concatenate error; JoinImageWithAlpha reads it as
    # [B,H,W], and so does every node here. A mask batch of no mask was an IndexError.
    image = torch.rand((1, 8, 8, 3))
    mask = torch.zeros((1, 8, 8))
    mask[:, :, :4] = 1
    flat = PixartPixelate().run(image, "box", 2, 0, 0, False, mask=mask)
    channel = PixartPixelate().run(image, "box", 2, 0, 0, False, mask=mask[:, None])
    assert torch.equal(flat[0], channel[0]) and torch.equal(flat[1], channel[1]) and flat[1].max() == 1
    for empty in ((0, 8, 8), (1, 0, 8), (2, 1, 0, 8)):
        with pytest.raises(ValueError, match="^mask: holds no pixels"):
            PixartPixelate().run(image, "box", 2, 0, 0, False, mask=torch.zeros(empty))


def test_nan_and_infinity_in_an_image_are_black_and_white_without_a_warning():
    # NaN reached numpy's float -> uint8 cast, which leaves it undefined and warns; a mask's NaN the same
    import warnings

    from pixart_nodes.core.tensors import image_to_uint8, mask_to_alpha

    image = torch.full((2, 2, 3), 0.5)
    image[0, 0] = float("nan")
    image[0, 1] = float("inf")
    image[1, 0] = float("-inf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = image_to_uint8(image)
        alpha = mask_to_alpha(torch.full((1, 2, 2), float("nan")), 0, (2, 2))
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == [255] * 3 and out[1, 0].tolist() == [0] * 3
    assert out[1, 1].tolist() == [128] * 3 and alpha.tolist() == [[0, 0], [0, 0]]
