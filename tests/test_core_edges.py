"""Edge cases of the core image modules, each a defect found by cross-checking against Pillow or brute force."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from pixart_nodes.core import imageio, indexed, tiling
from pixart_nodes.core import palette as pal


@pytest.mark.parametrize("n", [16, 64, 255])
def test_a_gif_of_a_sprite_keeps_its_colours_exactly(tmp_path, n):
    # an RGBA sprite of up to 255 colours fits a GIF with its transparent index; Pillow's RGBA -> P conversion
    # (fast octree) moved colours of a 64-colour palette by up to 14 code values, without a warning
    rng = np.random.default_rng(n)
    colours = np.unique(rng.integers(0, 256, (n * 4, 3), dtype=np.uint8), axis=0)[:n]
    assert len(colours) == n
    img = np.zeros((4, n + 3, 4), np.uint8)
    img[:2, :n, :3] = colours
    img[:2, :n, 3] = 255
    img[2, :n, :3], img[2, :n, 3] = colours[::-1], 200  # mostly opaque: still opaque in a GIF
    img[3, :n, :3], img[3, :n, 3] = colours, 40  # mostly clear: transparent, whatever its colour
    path = tmp_path / "sprite.gif"
    with warnings.catch_warnings():
        warnings.simplefilter("error", imageio.ColoursReduced)
        imageio.write_image(path, img)
    back = imageio.read_image(path)
    opaque = img[..., 3] >= 128
    assert back.shape == img.shape
    np.testing.assert_array_equal(back[..., 3], np.where(opaque, 255, 0))
    np.testing.assert_array_equal(back[opaque][:, :3], img[opaque][:, :3])


def test_a_gif_of_more_colours_than_it_holds_beside_transparency_warns(tmp_path):
    # 256 opaque colours leave no index for the transparent pixels: the reduction is said, as for 257 colours
    img = np.zeros((2, 256, 4), np.uint8)
    img[0, :, 0], img[0, :, 1], img[0, :, 3] = np.arange(256), 7, 255
    with pytest.warns(imageio.ColoursReduced):
        imageio.write_image(tmp_path / "many.gif", img)


@pytest.mark.parametrize("size,tile,overlap", [((60, 100), (64, 64), 8), ((100, 60), (64, 64), 8),
                                               ((60, 60), (64, 64), 16), ((500, 300), (512, 512), 64)])
def test_tiles_of_a_picture_a_little_smaller_than_a_tile_merge_back_unchanged(size, tile, overlap):
    # the only tile of a side sits at a small negative place; blending it into the black row before it (as
    # A1111's combine_grid does for any tile not at 0) darkened the first overlap - (tile - size) columns or rows
    w, h = size
    picture = np.random.default_rng(w + h).integers(1, 256, (h, w, 3)).astype(np.float64)
    tiles = tiling.split(picture, tile[0], tile[1], overlap)
    np.testing.assert_allclose(tiling.merge(tiles, w, h, overlap), picture)


def test_an_opaque_rgba_gif_of_256_colours_keeps_them(tmp_path):
    # a GIF holds 256 colours when no index goes to transparency: an RGBA image without a clear pixel fits
    img = np.zeros((2, 128, 4), np.uint8)
    img[..., 0] = np.arange(256).reshape(2, 128)
    img[..., 1], img[..., 2], img[..., 3] = 99, 3, 255
    with warnings.catch_warnings():
        warnings.simplefilter("error", imageio.ColoursReduced)
        imageio.write_image(tmp_path / "opaque.gif", img)
    np.testing.assert_array_equal(imageio.read_image(tmp_path / "opaque.gif"), img[..., :3])


@pytest.mark.parametrize("ms,stored", [(5, 20), (10, 20), (15, 20), (26, 30), (99, 100), (104, 100), (0, 0)])
def test_a_gif_frame_delay_is_the_nearest_hundredth_of_a_second(ms, stored):
    # a GIF stores hundredths: Pillow truncated, so 99 ms played as 90 and 5 ms lost its delay altogether; browsers
    # play 0 or 1 hundredth at 100 ms, so the shortest delay stored is two
    data = indexed.indexed_gif([np.zeros((2, 2, 3), np.uint8)] * 2, pal.palette_from_hex("#000 #fff"),
                               duration_ms=ms)
    assert Image.open(io.BytesIO(data)).info.get("duration", 0) == stored


def test_a_gif_of_many_colours_beside_transparency_keeps_the_alpha_threshold(tmp_path) -> None:
    # past 255 colours the image went to Pillow's RGBA conversion, which took alpha 40 as opaque
    rng = np.random.default_rng(3)
    img = np.concatenate([rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                          np.full((32, 32, 1), 255, np.uint8)], axis=2)
    img[:8, :, 3] = 40
    img[8:10, :, 3] = 128
    with pytest.warns(imageio.ColoursReduced, match="more than 255 colours beside transparency"):
        imageio.write_image(tmp_path / "many.gif", img)
    with Image.open(tmp_path / "many.gif") as im:
        back = np.asarray(im.convert("RGBA"))
    assert (back[:8, :, 3] == 0).all() and (back[8:, :, 3] == 255).all()
    # the opaque pixels' colours are median cut's: close to the source, not moved by the clear ones
    assert np.abs(back[8:, :, :3].astype(int) - img[8:, :, :3]).mean() < 24


def test_a_gif_of_no_opaque_pixel_is_clear_without_a_warning(tmp_path) -> None:
    # the hidden colours of clear pixels were counted when no pixel was opaque: 1,024 of them warned "more than 255
    # colours" and went through median cut for a picture that is one transparent index
    img = np.random.default_rng(4).integers(0, 256, (32, 32, 4), dtype=np.uint8)
    img[..., 3] = 50
    with warnings.catch_warnings():
        warnings.simplefilter("error", imageio.ColoursReduced)
        imageio.write_image(tmp_path / "clear.gif", img)
    assert (imageio.read_image(tmp_path / "clear.gif")[..., 3] == 0).all()


@pytest.mark.parametrize("alpha", [None, 40])
def test_a_gif_colour_warning_names_the_line_that_wrote_it(tmp_path, alpha) -> None:
    # the warning is the caller's: with stacklevel counted from a helper one call deeper, the plain RGB path named
    # the caller's caller (pytest's own frames here)
    img = np.random.default_rng(5).integers(0, 256, (32, 32, 3 if alpha is None else 4), dtype=np.uint8)
    if alpha is not None:
        img[..., 3], img[:4, :, 3] = 255, alpha
    with pytest.warns(imageio.ColoursReduced) as caught:
        imageio.write_image(tmp_path / "many.gif", img)
    assert [w.filename for w in caught] == [__file__]
