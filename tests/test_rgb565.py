"""RGB565 packing, unpacking, framing and the two RGB565 nodes."""
from __future__ import annotations

import base64
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from pixart_nodes.core import rgb565
from pixart_nodes.nodes_rgb565 import PixartRGB565, PixartRGB565Preview

from tests.support.imaging import panel_shows


def _random(h: int, w: int, seed: int = 0, c: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _brute_force_words(img: np.ndarray) -> list[int]:
    return [((int(r) >> 3) << 11) | ((int(g) >> 2) << 5) | (int(b) >> 3) for r, g, b in img.reshape(-1, 3)[:, :3]]


def test_reference_pixels_big_endian():
    # pixel-art.md §4.1 test vectors
    px = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [0x12, 0x34, 0x56]]], np.uint8)
    assert rgb565.to_rgb565(px).hex() == "f80007e0001f11aa"
    assert rgb565.to_rgb565(px, byte_order="little").hex() == "00f8e0071f00aa11"


def test_opencv_rgb2bgr565_is_little_endian_value_with_red_on_top():
    # the premise of the cross-check below, verified rather than assumed
    px = np.array([[[0x12, 0x34, 0x56]]], np.uint8)
    cv = cv2.cvtColor(px, cv2.COLOR_RGB2BGR565)
    assert cv.shape == (1, 1, 2)
    assert int(cv.view("<u2")[0, 0, 0]) == 0x11AA


@pytest.mark.parametrize("shape", [(240, 240), (37, 53), (1, 1), (3, 250)])
@pytest.mark.parametrize("seed", [0, 1])
def test_bit_exact_against_opencv_both_byte_orders(shape, seed):
    img = _random(*shape, seed=seed)
    cv = cv2.cvtColor(img, cv2.COLOR_RGB2BGR565)  # [H,W,2] = little-endian words
    assert rgb565.to_rgb565(img, byte_order="little") == cv.tobytes()
    assert rgb565.to_rgb565(img, byte_order="big") == cv[..., ::-1].tobytes()


def test_bit_exact_against_per_pixel_formula():
    img = _random(17, 23, seed=5)
    words = np.frombuffer(rgb565.to_rgb565(img), dtype=">u2")
    assert words.tolist() == _brute_force_words(img)


@pytest.mark.parametrize("byte_order", ["big", "little"])
def test_inversion_is_per_channel_255_minus_value(byte_order):
    img = _random(64, 48, seed=2)
    inv = rgb565.to_rgb565(img, byte_order=byte_order, invert=True)
    assert inv == rgb565.to_rgb565(255 - img, byte_order=byte_order)
    cv = cv2.cvtColor(255 - img, cv2.COLOR_RGB2BGR565)
    assert inv == (cv.tobytes() if byte_order == "little" else cv[..., ::-1].tobytes())
    # and it is the bitwise NOT of every word
    plain = np.frombuffer(rgb565.to_rgb565(img, byte_order=byte_order), np.uint8)
    assert np.array_equal(np.frombuffer(inv, np.uint8), plain ^ 0xFF)


def test_frame_size_240():
    data = rgb565.to_rgb565(_random(240, 240))
    assert len(data) == 115_200


def test_alpha_channel_is_ignored_and_non_contiguous_input_works():
    img = _random(20, 30, seed=3, c=4)
    assert rgb565.to_rgb565(img) == rgb565.to_rgb565(np.ascontiguousarray(img[..., :3]))
    view = _random(40, 60, seed=4)[::2, ::2]
    assert rgb565.to_rgb565(view) == rgb565.to_rgb565(np.ascontiguousarray(view))


@pytest.mark.parametrize("byte_order", ["big", "little"])
@pytest.mark.parametrize("invert", [False, True])
def test_unpacked_frame_shows_the_panels_colours_and_packs_back_to_the_same_bytes(byte_order, invert):
    img = _random(31, 45, seed=6)
    data = rgb565.to_rgb565(img, byte_order=byte_order, invert=invert)
    back = rgb565.from_rgb565(data, 45, 31, byte_order=byte_order, inverted=invert)
    assert np.array_equal(back, panel_shows(img))
    assert rgb565.to_rgb565(back, byte_order=byte_order, invert=invert) == data


def test_unpack_matches_pillows_bgr16_decoder_for_every_word_and_white_is_full_white():
    words = np.arange(65536, dtype="<u2").tobytes()
    pil = np.asarray(Image.frombytes("RGB", (256, 256), words, "raw", "BGR;16"))
    assert np.array_equal(rgb565.from_rgb565(words, 256, 256, byte_order="little"), pil)
    assert rgb565.from_rgb565(b"\xff\xff", 1, 1).tolist() == [[[255, 255, 255]]]
    # OpenCV's decoder shifts instead (31 -> 248): the panel's white is not what it shows
    cv = cv2.cvtColor(np.frombuffer(words, np.uint8).reshape(256, 256, 2), cv2.COLOR_BGR5652RGB)
    assert cv[-1, -1].tolist() == [248, 252, 248]


def test_unpack_rejects_wrong_length_naming_data():
    with pytest.raises(ValueError, match="data: expected 8 bytes"):
        rgb565.from_rgb565(b"\x00" * 7, 2, 2)
    with pytest.raises(ValueError, match="byte_order"):
        rgb565.to_rgb565(_random(2, 2), byte_order="middle")


def _intensity(data: bytes, width: int) -> np.ndarray:
    """Each channel as the panel drives it (level k of 31 or 63 is k/31 or k/63 of full scale), on 0..255, [H,W,3]."""
    words = np.frombuffer(data, ">u2").astype(np.int64).reshape(-1, width)
    levels = np.stack([words >> 11, (words >> 5) & 63, words & 31], axis=-1)
    return levels * 255 / np.array([31, 63, 31])


def test_dither_keeps_flat_average_as_the_panel_shows_it_and_spreads_levels():
    flat = np.full((64, 64, 3), 100, np.uint8)
    plain = rgb565.from_rgb565(rgb565.to_rgb565(flat), 64, 64)
    dith = rgb565.from_rgb565(rgb565.to_rgb565(flat, dither=True), 64, 64)
    assert np.all(plain[..., 0] == 98)  # truncation to level 12 of 31 biases down
    assert set(np.unique(dith[..., 0])) == {98, 106}  # levels 12 and 13
    # every flat grey keeps its average to the 8x8 tile's resolution (1/64 of a level), the top levels included
    for v in (3, 100, 127, 200, 247, 250, 254):
        mean = _intensity(rgb565.to_rgb565(np.full((8, 8, 3), v, np.uint8), dither=True), 8).mean(axis=(0, 1))
        assert np.abs(mean - v).max() <= 255 / 31 / 64, (v, mean)
    # saturates instead of wrapping at the top
    white = rgb565.from_rgb565(rgb565.to_rgb565(np.full((8, 8, 3), 255, np.uint8), dither=True), 8, 8)
    assert np.all(white == 255)


def test_dithered_gradient_keeps_its_block_averages_where_truncation_does_not():
    ramp = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (32, 1, 3))

    def block_error(d: bool) -> float:
        # 8x8 block means are what the eye sees at a distance (one Bayer tile each)
        blocks = lambda a: a.reshape(4, 8, 32, 8, 3).mean(axis=(1, 3))  # noqa: E731
        shown = _intensity(rgb565.to_rgb565(ramp, dither=d), 256)
        return float(np.abs(blocks(shown) - blocks(ramp.astype(float))).mean())

    assert block_error(True) < 0.1 < 0.7 < block_error(False)


@pytest.mark.parametrize("mode", ["stretch", "letterbox", "crop"])
@pytest.mark.parametrize("size", [(100, 60), (60, 100), (240, 240)])
def test_fit_gives_exact_size(mode, size):
    img = _random(50, 80, seed=8)
    out = rgb565.fit(img, size[0], size[1], mode)
    assert out.shape == (size[1], size[0], 3) and out.dtype == np.uint8


def test_letterbox_keeps_aspect_and_pads_with_background():
    img = np.full((50, 100, 3), 200, np.uint8)  # 2:1
    out = rgb565.fit(img, 240, 240, "letterbox", "#102030")
    rows = np.flatnonzero((out != [16, 32, 48]).any(axis=2).any(axis=1))
    cols = np.flatnonzero((out != [16, 32, 48]).any(axis=2).any(axis=0))
    assert (cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1) == (240, 120)
    assert rows[0] == 60  # centred
    assert np.all(out[:60] == [16, 32, 48]) and np.all(out[180:] == [16, 32, 48])


def test_crop_keeps_the_centre():
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, 100:200] = 255  # the middle third is white
    out = rgb565.fit(img, 100, 100, "crop", resample="nearest")
    assert np.all(out == 255)


@pytest.mark.parametrize("size,target", [((300, 100), (100, 100)), ((90, 160), (240, 240)), ((512, 768), (240, 320)),
                                         ((1, 20000), (240, 240)), ((20000, 1), (240, 240))])
def test_crop_cuts_the_centre_as_pillows_fit_before_scaling(size, target, monkeypatch):
    # scaled to cover first, a 1x20000 picture was 4,800,000 pixels tall before its centre was cut (3.4 GB)
    from PIL import ImageOps

    resize = rgb565._resize

    def no_larger_than_the_target(img, width, height, resample):
        assert (width, height) == target
        return resize(img, width, height, resample)

    monkeypatch.setattr(rgb565, "_resize", no_larger_than_the_target)

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1).astype(np.uint8)
    out = rgb565.fit(img, *target, "crop", resample="nearest")
    ref = np.asarray(ImageOps.fit(Image.fromarray(img), target, Image.NEAREST))
    assert out.shape == ref.shape
    # the same centre, sampled within a source pixel of Pillow's (its crop box is fractional): R follows x and G
    # follows y, each by 255 / (side - 1) a pixel
    for c, side in ((0, w), (1, h)):
        assert np.abs(out[..., c].astype(int) - ref[..., c]).max() <= (255 // (side - 1) + 1 if side > 1 else 0)


def test_fit_stretch_matches_opencv_area():
    img = _random(96, 96, seed=9)
    assert np.array_equal(rgb565.fit(img, 48, 32, "stretch"), cv2.resize(img, (48, 32), interpolation=cv2.INTER_AREA))


def test_fit_bad_options_name_the_field():
    img = _random(4, 4)
    with pytest.raises(ValueError, match="mode"):
        rgb565.fit(img, 4, 4, "zoom")
    with pytest.raises(ValueError, match="background"):
        rgb565.fit(img, 8, 4, "letterbox", "#12")
    with pytest.raises(ValueError, match="width and height"):
        rgb565.fit(img, 0, 4)


def test_composite_alpha_over_background():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[0, 0, 3] = 255
    rgba[0, 1, 3] = 0
    rgba[1, :, 3] = 128
    out = rgb565.composite(rgba, None, "#000000")
    assert out[0, 0].tolist() == [200] * 3 and out[0, 1].tolist() == [0] * 3
    assert out[1, 0].tolist() == [round(200 * 128 / 255)] * 3


def test_parse_size():
    assert rgb565.parse_size("240x135") == (240, 135)
    # "²" passes str.isdigit() but not int(); int() refuses 4300 digits or more
    for bad in ("240", "ax5", "0x5", "-3x4", "²x²", "9" * 5000 + "x1"):
        with pytest.raises(ValueError, match="size"):
            rgb565.parse_size(bad)


# --- nodes -----------------------------------------------------------------------------------------------------

def _batch(b: int, h: int, w: int, c: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.stack([_random(h, w, seed + i, c) for i in range(b)])).float() / 255.0


def test_node_batch_with_mask_no_file():
    images = _batch(2, 30, 40)
    mask = torch.zeros((2, 30, 40))
    mask[1, :, :20] = 1.0  # left half of the second image transparent -> background
    before = images.clone()
    ui_and_result = PixartRGB565().run(images, 24, 16, "stretch", "big", False, False, False, "x", "#ff0000",
                                       resample="nearest", mask=mask)
    ui, (encoded, preview) = ui_and_result["ui"], ui_and_result["result"]
    assert torch.equal(images, before)  # ComfyUI shares cached tensors between nodes: inputs must stay intact
    assert "rgb565" not in ui and len(ui["rgb565_base64"]) == 2
    assert ui["rgb565_base64"] == encoded
    frames = [base64.b64decode(e) for e in encoded]
    assert all(len(f) == 24 * 16 * 2 for f in frames)
    assert preview.shape == (2, 16, 24, 3)
    # transparent half shows the red background as the panel does: full red
    assert np.all(preview[1, :, :12].numpy() * 255 == np.array([255, 0, 0]))
    # first image is plain conversion of its nearest-resized pixels
    arr = np.clip(images[0].numpy() * 255 + 0.5, 0, 255).astype(np.uint8)
    expected = rgb565.to_rgb565(rgb565.fit(arr, 24, 16, "stretch", resample="nearest"))
    assert frames[0] == expected


def test_node_rgba_input_and_invert_preview_shows_intended_colours():
    images = _batch(1, 8, 8, c=4)
    images[..., 3] = 1.0
    out = PixartRGB565().run(images, 8, 8, "stretch", "little", True, False, False, "x", "#000000")
    data = base64.b64decode(out["ui"]["rgb565_base64"][0])
    arr = np.clip(images[0, ..., :3].numpy() * 255 + 0.5, 0, 255).astype(np.uint8)
    assert data == rgb565.to_rgb565(255 - arr, byte_order="little")
    assert np.array_equal(np.round(out["result"][1][0].numpy() * 255).astype(np.uint8), panel_shows(arr))


def test_node_bad_background_names_field():
    with pytest.raises(ValueError, match="background"):
        PixartRGB565().run(_batch(1, 4, 4), 4, 4, "stretch", "big", False, False, False, "x", "red")


def _comfyui_dir() -> Path | None:
    for cand in (os.environ.get("COMFYUI_DIR"), os.path.expanduser("~/ComfyUI")):
        if cand and (Path(cand) / "folder_paths.py").is_file():
            return Path(cand)
    return None


@pytest.mark.skipif(_comfyui_dir() is None, reason="no ComfyUI checkout (COMFYUI_DIR or ~/ComfyUI) for folder_paths")
def test_node_saves_bin_into_output_folder(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_comfyui_dir()))
    import folder_paths  # ComfyUI's own module: the node must use its naming and output folder

    old = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path))
    try:
        node = PixartRGB565()
        out = node.run(_batch(2, 240, 240), 240, 240, "crop", "big", False, False, True, "pico/frame", "#000000")
        again = node.run(_batch(1, 240, 240), 240, 240, "crop", "big", False, False, True, "pico/frame", "#000000")
    finally:
        folder_paths.set_output_directory(old)
    entries = out["ui"]["rgb565"]
    assert [e["filename"] for e in entries] == ["frame_00001_.bin", "frame_00002_.bin"]
    assert again["ui"]["rgb565"][0]["filename"] == "frame_00003_.bin"
    for e, b64 in zip(entries, out["ui"]["rgb565_base64"]):
        assert e | {} == {"filename": e["filename"], "subfolder": "pico", "type": "output", "bytes": 115_200,
                          "width": 240, "height": 240, "format": "rgb565-be"}
        assert (tmp_path / "pico" / e["filename"]).read_bytes() == base64.b64decode(b64)
    assert "frame_00001_.bin" in out["ui"]["text"][0]


def test_preview_node_round_trip_and_errors():
    img = _random(12, 10, seed=11)
    b64 = "data:application/octet-stream;base64," + base64.b64encode(rgb565.to_rgb565(img, invert=True)).decode()
    (out,) = PixartRGB565Preview().run(b64, 10, 12, "big", True)
    assert out.shape == (1, 12, 10, 3)
    assert np.array_equal(np.round(out[0].numpy() * 255).astype(np.uint8), panel_shows(img))
    with pytest.raises(ValueError, match="rgb565_base64"):
        PixartRGB565Preview().run("", 10, 12, "big", False)
    with pytest.raises(ValueError, match="rgb565_base64"):
        PixartRGB565Preview().run("not base64!!", 10, 12, "big", False)
    with pytest.raises(ValueError, match="expected 240 bytes"):
        PixartRGB565Preview().run(base64.b64encode(b"\0" * 10).decode(), 10, 12, "big", False)


def test_pillow_unpacker_agrees():
    # a third, independent decoder: Pillow's BGR;16 raw unpacker reads little-endian words, R in the top bits
    img = _random(9, 7, seed=12)
    le = rgb565.to_rgb565(img, byte_order="little")
    pil = np.asarray(Image.frombytes("RGB", (7, 9), le, "raw", "BGR;16")).astype(np.int64)
    r5, g6, b5 = img[..., 0].astype(np.int64) >> 3, img[..., 1].astype(np.int64) >> 2, img[..., 2].astype(np.int64) >> 3
    expected = np.stack([r5 * 255 // 31, g6 * 255 // 63, b5 * 255 // 31], axis=-1)
    assert np.array_equal(pil, expected)


def test_background_huge_or_in_other_digits_is_refused_shortly():
    # a 1 MB value came back whole in the message; int() reads any script's digits, so "#١٢٣٤٥٦" was a colour
    with pytest.raises(ValueError, match="^background must be a hex colour") as e:
        rgb565.parse_color("x" * 1_000_000)
    assert len(str(e.value)) < 200
    # int(x, 16) also takes signs and spaces: "#-1-1-1" was (-1, -1, -1), an OverflowError in fit naming nothing
    for text in ("#\u0661\u0662\u0663\u0664\u0665\u0666", "#-1-1-1", "#+f+f+f", "#1 2 34"):
        with pytest.raises(ValueError, match="^background must be a hex colour"):
            rgb565.parse_color(text)
    assert rgb565.parse_color(" #F80 ") == (255, 136, 0) and rgb565.parse_color("0x0a0b0c") == (10, 11, 12)
