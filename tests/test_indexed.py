"""Indexed GIF numbers: what the format can store, refused by name otherwise."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pixart_nodes.core import indexed
from pixart_nodes.core import palette as pal


def _frames() -> list[np.ndarray]:
    return [np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)]


@pytest.mark.parametrize("kw", [{"loop": -1}, {"loop": 70_000}, {"duration_ms": 100_000_000}, {"duration_ms": -5}])
def test_numbers_a_gif_cannot_store_are_refused_naming_them(kw):
    # 16-bit fields: these were OverflowErrors from inside Pillow (the Save Indexed node and the CLI showed those)
    with pytest.raises(ValueError, match=f"^{next(iter(kw))} must be"):
        indexed.indexed_gif(_frames(), pal.palette_from_hex("#000 #fff"), **kw)


def test_the_largest_numbers_are_written():
    data = indexed.indexed_gif(_frames(), pal.palette_from_hex("#000 #fff"), duration_ms=indexed.MAX_DURATION_MS,
                               loop=indexed.MAX_LOOP)
    im = Image.open(io.BytesIO(data))
    assert im.info["loop"] == indexed.MAX_LOOP and im.info["duration"] == indexed.MAX_DURATION_MS


def test_identical_frames_stay_frames_with_their_own_delay():
    # Pillow merges a frame equal to the one before into it (adding the delays): a 4-frame walk cycle came out as
    # 3 frames, and two equal frames at the longest delay overflowed the 16-bit field (an OverflowError traceback)
    a, b = _frames()
    two = pal.palette_from_hex("#000 #fff")
    for frames, ms in (([a, a, b, b], 80), ([a, a], indexed.MAX_DURATION_MS), ([a, b, b, a, a, a], 30)):
        data = indexed.indexed_gif(frames, two, duration_ms=ms, loop=3)
        im = Image.open(io.BytesIO(data))
        assert im.n_frames == len(frames) and im.info["loop"] == 3
        for n, frame in enumerate(frames):
            im.seek(n)
            assert im.info["duration"] == ms
            assert np.array_equal(np.asarray(im.convert("RGB")), frame)
        assert data[13:13 + 6] == bytes([0, 0, 0, 255, 255, 255])  # one global table, the palette in order


def test_identical_transparent_frames_keep_their_transparency():
    a = np.zeros((8, 8, 4), np.uint8)
    a[2:6, 2:6] = [255, 255, 255, 255]
    data = indexed.indexed_gif([a, a, a], pal.palette_from_hex("#000 #fff"), duration_ms=50)
    im = Image.open(io.BytesIO(data))
    assert im.n_frames == 3
    for n in range(3):
        im.seek(n)
        assert np.array_equal(np.asarray(im.convert("RGBA"))[..., 3], a[..., 3])


def test_a_frame_wider_than_a_gif_holds_is_refused_naming_its_size():
    wide = np.zeros((1, 70_000, 3), np.uint8)  # the GIF screen is 16-bit: this was an OverflowError from Pillow
    with pytest.raises(ValueError, match=r"^70000x1 is too large for a GIF \(at most 65535 pixels a side\)$"):
        indexed.indexed_gif([wide], pal.palette_from_hex("#000 #fff"))
    data = indexed.indexed_gif([np.zeros((1, 65_535, 3), np.uint8)], pal.palette_from_hex("#000 #fff"))
    assert Image.open(io.BytesIO(data)).size == (65_535, 1)


def test_frames_of_another_size_are_refused():
    # the first frame's size is the GIF's screen: a larger later frame made an image block past it (an invalid GIF)
    small, big = np.zeros((4, 4, 3), np.uint8), np.zeros((8, 6, 3), np.uint8)
    with pytest.raises(ValueError, match=r"^frame 2 is 6x8, the first 4x4; GIF frames share one size$"):
        indexed.indexed_gif([small, big], pal.palette_from_hex("#000 #fff"))


@pytest.mark.parametrize("prefix, message", [
    ("pixart/\x00x", "NUL character"),
    ("a" * 300, "at most 200 bytes, got one of 300"),
    ("ab\\" * 100, "at most 200 bytes, got one of 300"),  # a backslash is part of a name on POSIX
    ("sub/" + "é" * 150, "at most 200 bytes, got one of 300"),
    ("a/" * 600, "at most 1000 characters"),
    ("\ud800x", "lone surrogate"),
])
def test_save_node_refuses_prefixes_no_file_can_have_naming_the_field(prefix, message):
    # these reached open() past ComfyUI's folder check: "embedded null byte", or "File name too long" with the
    # whole path, naming no input (and a deep prefix left its folders behind first)
    import torch

    from pixart_nodes.nodes_rgb565 import PixartRGB565
    from pixart_nodes.nodes_save import PixartSaveIndexed

    image = torch.rand((1, 8, 8, 3))
    with pytest.raises(ValueError, match=f"^filename_prefix: .*{message}") as e:
        PixartSaveIndexed().run(image, pal.named_palette("pico-8"), "png", prefix)
    assert len(str(e.value)) < 200
    with pytest.raises(ValueError, match=f"^filename_prefix: .*{message}"):
        PixartRGB565().run(image, 8, 8, "stretch", "big", False, False, True, prefix, "#000000")
