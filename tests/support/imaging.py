"""Image helpers the tests share: encoding pictures the way clients send them and decoding what comes back."""
from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image

DATA_URL_PNG = "data:image/png;base64,"


def encode(img: Image.Image | np.ndarray, fmt: str = "PNG") -> bytes:
    """A PIL image or a uint8 ``[H,W,C]`` array as file bytes."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def b64(data: bytes, *, data_url: bool = False) -> str:
    text = base64.b64encode(data).decode()
    return DATA_URL_PNG + text if data_url else text


def solid_png_b64(width: int, height: int, colour: Any = (200, 10, 10), mode: str = "RGB", *,
                  data_url: bool = False) -> str:
    """A one-colour PNG, base64 (optionally as a data URL)."""
    return b64(encode(Image.new(mode, (width, height), colour)), data_url=data_url)


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def decode_png_data_url(url: str) -> Image.Image:
    """A PNG data URL back to a loaded image; fails unless it really is one."""
    assert url.startswith(DATA_URL_PNG), url[:40]
    img = Image.open(io.BytesIO(base64.b64decode(url[len(DATA_URL_PNG):])))
    assert img.format == "PNG"
    img.load()
    return img


def claimed_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (1-bit grey) with a few bytes of data: a decompression bomb's shape,
    refused from the header alone."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def damaged_exif_jpeg(img: np.ndarray) -> bytes:
    """A JPEG of `img` rotated by its EXIF (orientation 6: shown with width and height swapped) whose XResolution tag,
    a rational, holds text: Pillow's ImageOps.exif_transpose raises TypeError rewriting such an EXIF."""
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[0x0112] = 6
    exif[0x010F] = "cam"  # Make, text; renamed below to XResolution
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif)
    data = buf.getvalue()
    for make, xres in ((b"\x0f\x01\x02\x00", b"\x1a\x01\x02\x00"), (b"\x01\x0f\x00\x02", b"\x01\x1a\x00\x02")):
        data = data.replace(make, xres)
    assert Image.open(io.BytesIO(data)).getexif().get(0x011A) == "cam"
    return data


def panel_shows(rgb: Any) -> np.ndarray:
    """What an RGB565 panel shows for 8-bit colours (``[..., 3]``): OpenCV's truncating pack, expanded to full scale
    by Pillow's ``BGR;16`` decoder (two implementations the pack does not share)."""
    import cv2

    arr = np.asarray(rgb, np.uint8)
    flat = arr.reshape(1, -1, 3)
    words = cv2.cvtColor(flat, cv2.COLOR_RGB2BGR565).tobytes()  # little-endian words
    shown = Image.frombytes("RGB", (flat.shape[1], 1), words, "raw", "BGR;16")
    return np.asarray(shown).reshape(arr.shape)
