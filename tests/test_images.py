"""Input image checks: base64 / data URLs, formats, byte and pixel limits, decompression bombs."""
from __future__ import annotations

import base64
import binascii
import io
import random
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from bridge import images
from bridge.errors import InvalidParameter, PayloadTooLarge
from bridge.images import Base64, decode_base64, decode_image, png_size, sniff_image_type


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGBA"))


def patterned(w: int, h: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(3)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(rng.integers(0, 256, (h, w, channels), dtype=np.uint8), mode)


@pytest.mark.parametrize("wrap", [lambda b: b, lambda b: base64.b64encode(b).decode(),
                                  lambda b: "data:image/png;base64," + base64.b64encode(b).decode(),
                                  lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
                                  lambda b: "\n".join(base64.encodebytes(b).decode().split())])
def test_accepted_encodings_give_identical_pixels(wrap):
    src = patterned(13, 7, "RGBA")
    raw = encode(src, "PNG")
    out = decode_image(wrap(raw), "image")
    assert (out.width, out.height, out.source_format, out.mode) == (13, 7, "PNG", "RGBA")
    assert np.array_equal(pixels(out.png), np.asarray(src))


def test_jpeg_and_webp_become_png_with_the_same_pixels():
    src = patterned(16, 12)
    for fmt, kw in (("JPEG", {"quality": 95}), ("WEBP", {"lossless": True})):
        data = encode(src, fmt, **kw)
        out = decode_image(data, "init")
        assert out.source_format == fmt and out.png.startswith(b"\x89PNG")
        with Image.open(io.BytesIO(data)) as ref:  # Pillow's own decode of the original is the reference
            assert np.array_equal(pixels(out.png), np.asarray(ref.convert("RGBA")))


def test_palette_with_transparency_keeps_alpha():
    img = Image.new("P", (4, 4), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((1, 1), 1)
    img.info["transparency"] = 0
    out = decode_image(encode(img, "PNG", transparency=0), "mask")
    px = pixels(out.png)
    assert px[0, 0, 3] == 0 and tuple(px[1, 1]) == (0, 255, 0, 255)


@pytest.mark.parametrize("value,needle", [
    ("", "empty"), ("@@@", "not valid base64"), ("data:image/png,abc", "only base64"),
    (base64.b64encode(b"hello world").decode(), "not a PNG, JPEG or WebP"), (12, "must be base64"),
])
def test_bad_values_name_the_field(value, needle):
    with pytest.raises(InvalidParameter) as e:
        decode_image(value, "init_image")
    assert e.value.field == "init_image" and needle in e.value.message and "init_image" in e.value.message


def _whole_text(text: str) -> bytes | None:
    """The reference: base64's own strict decode of the whole text, whitespace removed, padded."""
    text = re.sub(r"\s+", "", text)
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, altchars=b"-_" if ("-" in text or "_" in text) else None, validate=True)
    except (binascii.Error, ValueError):
        return None


@pytest.mark.parametrize("piece", [4, 5, 7, 1 << 20])
def test_base64_decoded_in_pieces_as_the_whole_text_would_be(monkeypatch, piece):
    monkeypatch.setattr(images, "B64_PIECE", piece)
    rng = random.Random(piece)
    odd = "+/-_= \n\t\x0b\x1f\xa0\u2028\xe9!."
    cases = ["", "=", "ab", "ab==", "abcd====", "ab=c", "=abc", "ab" + " " * 9 + "==", "a\u2028b\xa0cd"]
    for _ in range(3000):
        chars = list(base64.b64encode(bytes(rng.randrange(256) for _ in range(rng.randrange(40)))).decode())
        for _ in range(rng.randrange(4)):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(odd))
        text = "".join(chars)
        cases.append(text.rstrip("=") if rng.random() < 0.3 else text)
    decoded = 0
    for text in cases:
        try:
            got = images._b64decode(text)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            got = None
        assert got == _whole_text(text), repr(text)
        decoded += got is not None
    assert 1000 < decoded < len(cases)  # both outcomes were exercised


def test_a_large_image_in_many_pieces_comes_back_whole(monkeypatch):
    monkeypatch.setattr(images, "B64_PIECE", 4096)
    raw = np.random.default_rng(1).integers(0, 256, 300_001, dtype=np.uint8).tobytes()
    for text in (base64.encodebytes(raw).decode(), "data:image/png;base64," + base64.urlsafe_b64encode(raw).decode()):
        assert decode_base64(text, "image") == raw


@pytest.mark.parametrize("size", range(8))
def test_base64_values_write_b64encode_text_piece_by_piece(monkeypatch, size):
    monkeypatch.setattr(images, "B64_PIECE", 4)  # 3 bytes a piece
    data = bytes(range(200, 200 + size))
    for prefix in ("", "data:image/png;base64,"):
        value = Base64(data, prefix)
        pieces = list(value.pieces())
        text = prefix + base64.b64encode(data).decode()
        assert b"".join(pieces).decode() == str(value) == text and value.length == len(text)
        assert len(pieces) == (prefix != "") + (size + 2) // 3


def test_other_formats_are_refused():
    for fmt in ("GIF", "BMP", "TIFF"):
        with pytest.raises(InvalidParameter) as e:
            decode_image(encode(patterned(4, 4), fmt), "image")
        assert fmt in e.value.message


def test_truncated_png_is_refused():
    data = encode(patterned(32, 32), "PNG")
    with pytest.raises(InvalidParameter) as e:
        decode_image(data[: len(data) // 2], "image")
    assert e.value.field == "image"


def test_byte_limit_before_and_after_decoding():
    data = encode(patterned(32, 32), "PNG")
    with pytest.raises(PayloadTooLarge):
        decode_image(data, "image", max_bytes=len(data) - 1)
    with pytest.raises(PayloadTooLarge):
        decode_base64(base64.b64encode(data).decode() * 4, "image", max_bytes=len(data))
    assert decode_image(data, "image", max_bytes=len(data)).width == 32


def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header (IHDR with a correct CRC) that claims a huge size, with tiny compressed data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_from_the_header():
    bomb = _png_claiming(60000, 60000)  # 3.6 gigapixels in a few hundred bytes
    assert len(bomb) < 1000 and png_size(bomb) == (60000, 60000)
    with pytest.raises(PayloadTooLarge) as e:
        decode_image(bomb, "image")
    assert "60000x60000" in e.value.message and e.value.field == "image"
    with pytest.raises(PayloadTooLarge) as e:
        decode_image(_png_claiming(10000, 10000), "image")  # under Pillow's own hard limit, over ours
    assert "10000x10000" in e.value.message
    with pytest.raises(PayloadTooLarge):
        decode_image(encode(patterned(20, 20), "PNG"), "image", max_pixels=399)


def test_png_size_and_sniff_agree_with_pillow():
    for w, h in ((1, 1), (17, 3), (300, 2)):
        data = encode(patterned(w, h), "PNG")
        with Image.open(io.BytesIO(data)) as im:
            assert png_size(data) == im.size
    assert sniff_image_type(encode(patterned(2, 2), "PNG")) == "png"
    assert sniff_image_type(encode(patterned(2, 2), "JPEG")) == "jpeg"
    assert sniff_image_type(encode(patterned(2, 2), "WEBP")) == "webp"
    assert sniff_image_type(b"GIF89a....") is None
    with pytest.raises(ValueError):
        png_size(b"not a png at all, not at all")


def test_size_probe_leaves_no_decompression_bomb_warning(monkeypatch):
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(PayloadTooLarge):
            decode_image(_png_claiming(10000, 10000), "image")  # 100 MP: over Pillow's warning threshold
        # Our own limit is the one that counts: an image past Pillow's threshold but within ours decodes.
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
        img = decode_image(encode(patterned(12, 10), "PNG"), "image", max_pixels=1000)
        monkeypatch.undo()
    assert (img.width, img.height) == (12, 10)
    assert np.array_equal(pixels(img.png), pixels(encode(patterned(12, 10), "PNG")))
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)], caught


@pytest.mark.parametrize("text", ["a cat\nSteps: 2, Sampler: Euler", "ünïcode ☃ prompt\nSeed: 3"])
def test_added_text_is_read_back_by_pillow_before_the_pixels_and_leaves_them_alone(text):
    from bridge.images import add_text, strip_metadata

    rgba = np.random.default_rng(5).integers(0, 256, (9, 7, 4), dtype=np.uint8)
    out = io.BytesIO()
    info = __import__("PIL.PngImagePlugin", fromlist=["PngInfo"]).PngInfo()
    info.add_text("prompt", '{"1": {"class_type": "CheckpointLoaderSimple"}}')
    Image.fromarray(rgba).save(out, format="PNG", pnginfo=info)
    stamped = add_text(strip_metadata(out.getvalue()), "parameters", text)
    with Image.open(io.BytesIO(stamped)) as im:
        assert im.info == {"parameters": text}  # known before the pixels are read, as A1111's PNG Info reads it
        assert np.array_equal(np.asarray(im), rgba)
    assert add_text(b"not a png", "parameters", text) == b"not a png"


def test_a_jobs_infotext_says_what_it_ran_with():
    from bridge.infotext import for_job

    params = {"prompt": "a red house", "negative_prompt": "blurry, dark", "steps": 20, "sampler": "euler",
              "scheduler": "normal", "cfg": 7.0, "seed": 42, "width": 512, "height": 384,
              "checkpoint": "sd15/dreamshaper_8.safetensors", "loras": [{"name": "pixel.safetensors", "strength": 0.8}],
              "sketch": {"image": "inputs/x.png"}}
    assert for_job("txt2img", 2, params) == (
        "a red house <lora:pixel:0.8>\nNegative prompt: blurry, dark\nSteps: 20, Sampler: euler, Schedule type: normal, "
        "CFG scale: 7.0, Seed: 42, Size: 512x384, Model: dreamshaper_8, Workflow: txt2img v2")
    assert for_job("pixel_art", 1, {"sketch": {}}) == "Workflow: pixel_art v1"
    assert for_job("x", 1, params, "given text") == "given text"


@pytest.mark.asyncio
async def test_byte_work_runs_on_the_loop_when_small_and_in_the_pool_when_large() -> None:
    import threading

    from bridge.images import INLINE_BYTES, run_small

    loop_thread = threading.get_ident()
    small = await run_small(threading.get_ident, INLINE_BYTES)
    large = await run_small(threading.get_ident, INLINE_BYTES + 1)
    assert small == loop_thread and large != loop_thread


# ------------------------------------------------------------------------------------------ structure before decoding
def _jpeg_segments(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each scan of a JPEG Pillow wrote: its SOS segment and the entropy-coded data after it."""
    pos, out = 2, []
    while data[pos + 1] != 0xD9:
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if data[pos + 1] != 0xDA:
            pos += 2 + length
            continue
        end = pos + 2 + length
        while data[end] != 0xFF or data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
            end = data.index(b"\xff", end + (data[end] == 0xFF) * 2)
        out.append((pos, end))
        pos = end
    return out


def _progressive(size: int, extra_scans: int) -> bytes:
    """A flat progressive JPEG with its last scan repeated: each repeat costs libjpeg a pass over every block of the
    image (a 185 KB file with 10,000 of them took 46 s of CPU to decode at 2048x2048), for 16 bytes."""
    data = encode(Image.new("RGB", (size, size), (120, 50, 200)), "JPEG", progressive=True, quality=90)
    start, end = _jpeg_segments(data)[-1]
    return data[:end] + data[start:end] * extra_scans + data[end:]


def test_a_jpeg_with_thousands_of_scans_is_refused_before_decoding():
    normal = _progressive(64, 0)
    assert len(_jpeg_segments(normal)) >= 6  # a real progression
    assert decode_image(normal, "init_image").width == 64 and images.probe(normal, "init_image").format == "JPEG"
    bomb = _progressive(64, 5000)
    for check in (decode_image, images.probe):
        with pytest.raises(InvalidParameter) as e:
            check(bomb, "init_image")
        assert e.value.field == "init_image" and "scans" in e.value.message and "init_image" in e.value.message


@pytest.mark.parametrize("filler", [b"\xff\xe1\x00\x02", b"\xff\xfe\x00\x02", b"\xff"])
def test_a_jpeg_header_of_endless_small_segments_is_refused(filler):
    # Pillow walks the segments before the first scan in Python, a fill byte at a time: 4 MB of empty APP1
    # segments took 3.4 s to probe and 10.7 s to decode, holding the interpreter lock
    plain = encode(patterned(8, 8), "JPEG")
    bomb = plain[:2] + filler * 20_000 + plain[2:]
    with pytest.raises(InvalidParameter) as e:
        images.probe(bomb, "image")
    assert e.value.field == "image" and "segments" in e.value.message
    # a few are a JPEG like any other (EXIF, ICC profile pieces, comments)
    assert decode_image(plain[:2] + filler * 20 + plain[2:], "image").width == 8


def test_jpeg_tables_parsed_in_python_are_bounded():
    # DQT segments are read table by table in Python: 4 MB of them took 1.4 s to decode
    plain = encode(patterned(8, 8), "JPEG")
    body = (b"\x00" + bytes(64)) * 1000
    dqt = b"\xff\xdb" + (len(body) + 2).to_bytes(2, "big") + body
    with pytest.raises(InvalidParameter) as e:
        images.probe(plain[:2] + dqt * 8 + plain[2:], "image")
    assert e.value.field == "image" and "tables" in e.value.message


def _chunk(kind: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_a_png_of_endless_small_chunks_is_refused():
    # 12 MB of empty ancillary chunks took Pillow 6.8 s to probe and 19 s to decode (a chunk at a time in Python)
    plain = encode(patterned(8, 8), "PNG")
    bomb = plain[:33] + _chunk(b"abCd") * 50_000 + plain[33:]
    for check in (decode_image, images.probe):
        with pytest.raises(InvalidParameter) as e:
            check(bomb, "mask")
        assert e.value.field == "mask" and "chunks" in e.value.message
    # the image data split into many IDAT chunks, as some encoders write it, is still read
    raw = encode(patterned(64, 64), "PNG")
    pos, head, idat = 8, b"", b""
    while pos < len(raw):
        length = int.from_bytes(raw[pos:pos + 4], "big")
        kind, body = raw[pos + 4:pos + 8], raw[pos + 8:pos + 8 + length]
        if kind == b"IDAT":
            idat += body
        elif kind != b"IEND":
            head += raw[pos:pos + 12 + length]
        pos += 12 + length
    split = raw[:8] + head + b"".join(_chunk(b"IDAT", idat[i:i + 8]) for i in range(0, len(idat), 8)) + _chunk(b"IEND")
    assert split.count(b"IDAT") > 1000
    assert np.array_equal(pixels(decode_image(split, "mask").png), pixels(raw))


def test_16_bit_grey_is_scaled_to_8_bits_not_clipped():
    # Pillow's convert("L") clips a 16-bit grey PNG at 255: a 0-65520 ramp came back 99.6% white
    ramp = (np.arange(4 * 256).reshape(4, 256) * 64).astype(np.uint16)
    decoded = decode_image(encode(Image.fromarray(ramp), "PNG"), "image")
    grey = pixels(decoded.png)
    assert decoded.mode == "L" and np.array_equal(grey[..., 0], (ramp >> 8).astype(np.uint8))
    # its tRNS grey value is the transparent one
    clear = decode_image(encode(Image.fromarray(ramp), "PNG", transparency=640), "image")
    rgba = pixels(clear.png)
    assert clear.mode == "RGBA" and np.array_equal(rgba[..., 3] == 0, ramp == 640)
    assert np.array_equal(rgba[..., 0], (ramp >> 8).astype(np.uint8))


def test_a_jpeg_is_walked_to_its_end_marker_and_no_further():
    # a motion photo carries its video after the JPEG's end: counting FF DA pairs to the end of the file took a
    # 10 MB random trailer for 149 scans and refused the picture (this one holds 200 such pairs in 13 KB)
    plain = encode(patterned(64, 64), "JPEG", progressive=True)
    rng = random.Random(5)
    trailer = b"".join(b"\xff\xda" + rng.randbytes(64) for _ in range(200))
    assert trailer.count(b"\xff\xda") > images.MAX_JPEG_SCANS
    assert decode_image(plain + trailer, "image").width == 64
    # stray bytes running to the end of the file count as the segments Pillow reads them as (they were added up
    # but never checked: 19 MB of them held Pillow's byte-at-a-time loop 2.2 s)
    stray = plain[:2] + b"\xff\xe0\x00\x02" + b"\x01" * (images.MAX_JPEG_SEGMENTS + 10)
    with pytest.raises(InvalidParameter) as e:
        images.probe(stray, "image")
    assert e.value.field == "image" and "segments" in e.value.message


def test_a_phone_photo_with_a_second_picture_is_a_jpeg():
    # JPEGs with an MPF index (Ultra HDR gain maps, Samsung's) open in Pillow as MPO: they were refused as "format MPO"
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 40)).save(out, format="MPO", save_all=True,
                                                   append_images=[Image.new("RGB", (32, 24), (0, 0, 255))])
    assert Image.open(io.BytesIO(out.getvalue())).format == "MPO"
    assert images.probe(out.getvalue(), "image").format == "JPEG"
    decoded = decode_image(out.getvalue(), "image")
    assert (decoded.width, decoded.height, decoded.source_format) == (32, 24, "JPEG")
    assert np.abs(pixels(decoded.png)[..., :3].astype(int) - [200, 30, 40]).max() <= 8  # the first picture


def test_a_damaged_exif_tag_does_not_stop_an_input_image() -> None:
    """ImageOps.exif_transpose raised TypeError rewriting an EXIF whose XResolution holds text: an error no
    adapter catches, for a photo any viewer shows. It is read upright (orientation 6: width and height swapped)."""
    from tests.support.imaging import damaged_exif_jpeg

    y, x = np.mgrid[0:32, 0:48]
    img = np.stack([x * 5, y * 7, (x + y) * 3], -1).astype(np.uint8)
    decoded = decode_image(base64.b64encode(damaged_exif_jpeg(img)).decode(), "init_images[0]")
    assert (decoded.width, decoded.height) == (32, 48)
