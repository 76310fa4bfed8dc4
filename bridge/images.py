"""Input images: decode base64 / data URLs, check format and limits, refuse decompression bombs.

The header is read before any pixel is decoded, so an image that claims 100k x 100k pixels is refused
without allocating it. Accepted images are re-encoded as PNG: that strips metadata, normalises odd modes
and gives ComfyUI's LoadImage a file it reads the same way on every backend.
"""
from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from bridge.errors import InvalidParameter, PayloadTooLarge

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 4096 * 4096

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,", re.I)


@dataclass(frozen=True)
class DecodedImage:
    png: bytes          # the re-encoded PNG that is uploaded
    width: int
    height: int
    source_format: str  # PNG | JPEG | WEBP
    mode: str           # Pillow mode after normalisation (RGB, RGBA, L)


def decode_base64(value: str | bytes | bytearray, field: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Raw bytes from bytes, base64 text, or a data URL."""
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, str):
        text = value.strip()
        m = _DATA_URL.match(text)
        if m:
            if not m.group("b64"):
                raise InvalidParameter(field, f"{field}: only base64 data URLs are accepted")
            text = text[m.end():]
        # base64 grows by 4/3: refuse before decoding a huge string.
        if len(text) * 3 // 4 > max_bytes + 3:
            raise PayloadTooLarge(f"{field}: image is larger than {max_bytes} bytes", field=field)
        text = re.sub(r"\s+", "", text)
        text += "=" * (-len(text) % 4)
        try:
            data = base64.b64decode(text, altchars=b"-_" if ("-" in text or "_" in text) else None, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidParameter(field, f"{field}: not valid base64 image data") from None
    else:
        raise InvalidParameter(field, f"{field} must be base64 text, a data URL or bytes")
    if not data:
        raise InvalidParameter(field, f"{field}: image is empty")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{field}: image is larger than {max_bytes} bytes", field=field)
    return data


def decode_image(value: str | bytes | bytearray, field: str, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    data = decode_base64(value, field, max_bytes=max_bytes)
    try:
        with warnings.catch_warnings():
            # The size check below replaces Pillow's bomb warning with a clear error.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt = (probe.format or "").upper()
                width, height = probe.size
    except Image.DecompressionBombError:
        # Pillow refuses sizes past twice its own limit before we see them; report the header's size.
        try:
            width, height = png_size(data)
            claimed = f"{width}x{height} = {width * height} pixels"
        except ValueError:
            claimed = "too many pixels"
        raise PayloadTooLarge(f"{field}: image is {claimed}, more than the limit of {max_pixels}",
                              field=field) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InvalidParameter(field, f"{field}: not a PNG, JPEG or WebP image") from None
    if fmt not in ALLOWED_FORMATS:
        raise InvalidParameter(field, f"{field}: format {fmt or 'unknown'} is not accepted (PNG, JPEG or WebP)")
    if width < 1 or height < 1:
        raise InvalidParameter(field, f"{field}: image has no pixels")
    if width * height > max_pixels:
        raise PayloadTooLarge(f"{field}: image is {width}x{height} = {width * height} pixels, "
                              f"more than the limit of {max_pixels}", field=field)
    try:
        with warnings.catch_warnings():
            # The size was checked against our own limit above; Pillow's threshold is not ours.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                # Only the first frame of an animation is used, as ComfyUI's LoadImage would for WebP.
                img.load()
                mode = img.mode
                if mode in ("P", "PA"):
                    img = img.convert("RGBA" if ("transparency" in img.info or mode == "PA") else "RGB")
                elif mode in ("LA",):
                    img = img.convert("RGBA")
                elif mode in ("CMYK", "YCbCr", "I", "I;16", "F", "1"):
                    img = img.convert("L" if mode in ("I", "I;16", "F", "1") else "RGB")
                out = io.BytesIO()
                img.save(out, format="PNG", compress_level=1)
                final_mode = img.mode
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidParameter(field, f"{field}: image data is corrupt ({exc})") from None
    return DecodedImage(out.getvalue(), width, height, fmt, final_mode)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG from its IHDR chunk (no decoding)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def sniff_image_type(data: bytes) -> str | None:
    """'png' | 'jpeg' | 'webp' from magic bytes, for naming stored outputs."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None
