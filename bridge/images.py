"""Input images: decode base64 / data URLs, check format and limits, refuse decompression bombs.

The header is read before any pixel is decoded, so an image that claims 100k x 100k pixels is refused
without allocating it. Accepted images are re-encoded as PNG: that strips metadata, normalises odd modes
and gives ComfyUI's LoadImage a file it reads the same way on every backend.

Decoding and encoding run off the event loop in one bounded pool (`decode_async`, `run_in_pool`): a few large
images never stall other requests, and no more than `POOL_SIZE` images are held decoded at once whatever arrives.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import os
import re
import threading
import warnings
import weakref
import zlib
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image, UnidentifiedImageError
from pixart_nodes.core.imageio import narrow_grey, upright

from bridge.errors import InvalidParameter, PayloadTooLarge

T = TypeVar("T")

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
# Pillow releases the GIL while it decodes and compresses, so threads run in parallel; the bound is on memory.
POOL_SIZE = max(2, min(4, os.cpu_count() or 2))
_pool: ThreadPoolExecutor | None = None
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
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


# Base64 is decoded this many characters at a time. binascii and json hold the interpreter lock for a whole call
# (a 27 MB image in one call held every other thread, the event loop too, for 0.44 s even from the image pool);
# between pieces of 1 MiB (about 3 ms) the loop gets its turn.
B64_PIECE = 1 << 20
_URL_SAFE = bytes.maketrans(b"-_", b"+/")
_ASCII_SPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # what `\s` matches below 128
_SPACE = re.compile(r"\s+")


def _digits(text: str) -> bytes:
    """`text` without whitespace, as ASCII bytes, URL-safe digits made standard."""
    if not text.isascii():
        text = _SPACE.sub("", text)  # whitespace beyond ASCII, as re's \s removed it before
    return text.encode("ascii").translate(_URL_SAFE, _ASCII_SPACE)


def _b64decode(text: str) -> bytes:
    """`base64.b64decode(text without whitespace, padded to a multiple of 4, validate=True)` with URL-safe digits
    taken too, decoded B64_PIECE characters at a time; raises what that raises. Each call but the last decodes
    whole groups of 4 digits and holds the last group back, so the last call sees the padding as the whole one
    would; text with padding before its last piece is decoded in one call, strictness deciding."""
    out = bytearray()
    carry = b""
    for start in range(0, len(text), B64_PIECE):
        digits = carry + _digits(text[start:start + B64_PIECE])
        if b"=" in digits:
            carry = digits + _digits(text[start + B64_PIECE:])
            break
        whole = max(0, (len(digits) - 1) // 4 * 4)
        out += binascii.a2b_base64(digits[:whole], strict_mode=True)
        carry = digits[whole:]
    out += binascii.a2b_base64(carry + b"=" * (-len(carry) % 4), strict_mode=True)
    return bytes(out)


def decode_base64(value: str | bytes | bytearray, field: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Raw bytes from bytes, base64 text, or a data URL."""
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, str):
        text = value.strip()
        m = _DATA_URL.match(text, 0, 4096)  # a data URL's head is short; a long run without a comma is not one
        if m:
            if not m.group("b64"):
                raise InvalidParameter(field, f"{field}: only base64 data URLs are accepted")
            text = text[m.end():]
        # base64 grows by 4/3: refuse before decoding a huge string.
        if len(text) * 3 // 4 > max_bytes + 3:
            raise PayloadTooLarge(f"{field}: image is larger than {max_bytes} bytes", field=field)
        try:
            data = _b64decode(text)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise InvalidParameter(field, f"{field}: not valid base64 image data") from None
    else:
        raise InvalidParameter(field, f"{field} must be base64 text, a data URL or bytes")
    if not data:
        raise InvalidParameter(field, f"{field}: image is empty")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{field}: image is larger than {max_bytes} bytes", field=field)
    return data


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    format: str  # PNG | JPEG | WEBP


# What a file may hold before Pillow gets it. Pillow reads a JPEG's segments before its first scan, and every chunk of
# a PNG, one at a time in Python (a fill byte, an empty segment or chunk: 3-7 us each, the interpreter lock held):
# 4 MB of empty APP1 segments took 3.4 s to probe and 10.7 s to decode, 12 MB of empty PNG chunks 6.8 s and 19 s.
# Each scan of a progressive JPEG is a pass of libjpeg over every block of the image: a 185 KB file repeating one
# empty scan 10,000 times took 46 s of CPU to decode at 2048x2048. Encoders write about 10 scans (libjpeg's
# progression for colour), a few dozen segments (EXIF, XMP, ICC profile pieces) and PNG data in 8-64 KB chunks.
MAX_JPEG_SCANS = 100
MAX_JPEG_SEGMENTS = 1024  # before the first scan; fill and stray bytes count one each, as Pillow reads them
MAX_JPEG_TABLE_BYTES = 256 * 1024  # quantisation tables and Photoshop resources, parsed entry by entry in Python
MAX_PNG_CHUNKS = 16384
_PARSED_SEGMENTS = frozenset({0xDB, 0xED})  # DQT, APP13


def check_structure(data: bytes, field: str) -> None:
    """Refuse a PNG or JPEG whose structure would cost Pillow more than its pixels: too many chunks, segments or
    scans. The walk itself stops at the bound, and skips bytes with C-speed searches."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        pos, chunks, end = 8, 0, len(data)
        while pos + 12 <= end:
            chunks += 1
            if chunks > MAX_PNG_CHUNKS:
                raise InvalidParameter(field, f"{field}: the PNG has more than {MAX_PNG_CHUNKS} chunks")
            if data[pos + 4:pos + 8] == b"IEND":
                break
            pos += 12 + int.from_bytes(data[pos:pos + 4], "big")
    elif data.startswith(b"\xff\xd8\xff"):
        _check_jpeg(data, field)


def _check_jpeg(data: bytes, field: str) -> None:
    """Walk the JPEG's markers as a decoder reads them up to its end (EOI: what follows, a motion photo's video, is
    no part of it): segments by their lengths, each scan's entropy-coded data up to the next marker."""
    pos, segments, parsed, scans, end = 2, 0, 0, 0, len(data)

    def too_many_segments() -> InvalidParameter:
        return InvalidParameter(field, f"{field}: the JPEG has more than {MAX_JPEG_SEGMENTS} segments before its "
                                       f"image data")

    while pos + 1 < end:
        if data[pos] != 0xFF:  # stray bytes before the first scan: Pillow skips them one at a time
            nxt = data.find(b"\xff", pos)
            segments += (nxt if nxt >= 0 else end) - pos
            if segments > MAX_JPEG_SEGMENTS and not scans:
                raise too_many_segments()
            if nxt < 0:
                return
            pos = nxt
            continue
        marker = data[pos + 1]
        if marker == 0xD9:
            return
        if not scans:
            segments += 1
            if segments > MAX_JPEG_SEGMENTS:
                raise too_many_segments()
        if marker in (0xFF, 0x00) or 0xD0 <= marker <= 0xD8 or marker == 0x01:  # fill byte, standalone marker
            pos += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        pos += 2 + max(length, 2)
        if marker in _PARSED_SEGMENTS:
            parsed += length
            if parsed > MAX_JPEG_TABLE_BYTES:
                raise InvalidParameter(field, f"{field}: the JPEG's tables and resources are more than "
                                              f"{MAX_JPEG_TABLE_BYTES} bytes")
        if marker != 0xDA:
            continue
        scans += 1  # each scan is a pass of libjpeg over every block of the image
        if scans > MAX_JPEG_SCANS:
            raise InvalidParameter(field, f"{field}: the JPEG has more than {MAX_JPEG_SCANS} scans")
        while True:  # its entropy-coded data: 0xFF there is a stuffed byte (FF 00), a restart or fill, or a marker
            nxt = data.find(b"\xff", pos)
            if nxt < 0 or nxt + 1 >= end:
                return
            if data[nxt + 1] == 0x00 or 0xD0 <= data[nxt + 1] <= 0xD7 or data[nxt + 1] == 0xFF:
                pos = nxt + 1
                continue
            pos = nxt
            break


def read_header(data: bytes, field: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Format and size from the header alone, checked against the limits; no pixel is decoded."""
    check_structure(data, field)
    try:
        with warnings.catch_warnings():
            # The size check below replaces Pillow's bomb warning with a clear error.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                # a phone's photo with a gain map or a second view (Ultra HDR, MPF) opens as MPO: a JPEG whose
                # first picture is the photo, all that is read of it
                fmt = (probe.format or "").upper().replace("MPO", "JPEG")
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
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InvalidParameter(field, f"{field}: not a PNG, JPEG or WebP image") from None
    if fmt not in ALLOWED_FORMATS:
        raise InvalidParameter(field, f"{field}: format {fmt or 'unknown'} is not accepted (PNG, JPEG or WebP)")
    if width < 1 or height < 1:
        raise InvalidParameter(field, f"{field}: image has no pixels")
    if width * height > max_pixels:
        raise PayloadTooLarge(f"{field}: image is {width}x{height} = {width * height} pixels, "
                              f"more than the limit of {max_pixels}", field=field)
    return Header(width, height, fmt)


def probe(value: str | bytes | bytearray, field: str, *, max_bytes: int = DEFAULT_MAX_BYTES,
          max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Every check but decoding the pixels: what a request with many images runs on all of them first."""
    return read_header(decode_base64(value, field, max_bytes=max_bytes), field, max_pixels=max_pixels)


async def probe_request(named: list[tuple[str, Any]], *, max_bytes: int = DEFAULT_MAX_BYTES,
                        max_pixels: int = DEFAULT_MAX_PIXELS, max_total: int = 0,
                        probe_one: Callable[..., Header] | None = None,
                        fetch: Callable[[Any, str], Awaitable[Any]] | None = None) -> list[tuple[str, Any]]:
    """Every image of a request, (field, value) pairs, checked from its header (format, bytes, pixels) in the
    image pool one after another, and their pixels together against `max_total` (BRIDGE_MAX_REQUEST_PIXELS; 0: no
    bound), with fetched files at most 4 bytes a pixel, before any of them is decoded: a request of many images that
    will be refused costs no memory. `fetch(value, field)` gives a value that names a URL its bytes first; the
    first image over the bound stops the fetching (64 URLs of 20 MB were all held, 1.25 GB, before any was checked).
    `probe_one` lets a dialect put its own words on a refusal (it raises them itself). Returns the pairs, fetched."""
    check = probe_one or probe
    out = []
    pixels = size = 0
    for field, value in named:
        if fetch is not None:
            value = await fetch(value, field)
        header = await run_in_pool(check, value, field, max_bytes=max_bytes, max_pixels=max_pixels)
        pixels += header.width * header.height
        size += len(value) if isinstance(value, (bytes, bytearray)) else 0
        if max_total and pixels > max_total:
            raise PayloadTooLarge(f"{field}: the request's images have more than {max_total:,} pixels together "
                                  f"(BRIDGE_MAX_REQUEST_PIXELS)", field=field)
        if max_total and size > 4 * max_total:
            raise PayloadTooLarge(f"{field}: the request's images are more than {4 * max_total:,} bytes together "
                                  f"(4 a pixel of BRIDGE_MAX_REQUEST_PIXELS)", field=field)
        out.append((field, value))
    return out


def open_image(value: str | bytes | bytearray, field: str, *, max_bytes: int = DEFAULT_MAX_BYTES,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, str]:
    """The checked image, loaded, upright (EXIF orientation applied, as ComfyUI's LoadImage does) and in a mode
    every consumer reads (RGB, RGBA or L); and its source format."""
    data = decode_base64(value, field, max_bytes=max_bytes)
    header = read_header(data, field, max_pixels=max_pixels)
    try:
        with warnings.catch_warnings():
            # The size was checked against our own limit above; Pillow's threshold is not ours.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            # Only the first frame of an animation is used, as ComfyUI's LoadImage would for WebP.
            img.load()
            img = narrow_grey(upright(img), header.format)
            mode = img.mode
            if mode in ("P", "PA"):
                img = img.convert("RGBA" if ("transparency" in img.info or mode == "PA") else "RGB")
            elif mode == "LA":
                img = img.convert("RGBA")
            elif mode == "1":
                img = img.convert("L")
            elif mode not in ("RGB", "RGBA", "L"):  # CMYK JPEGs, and whatever else a decoder may give
                img = img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidParameter(field, f"{field}: image data is corrupt ({exc})") from None
    return img, header.format


def decode_image(value: str | bytes | bytearray, field: str, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """The checked image re-encoded as the PNG that is uploaded."""
    img, fmt = open_image(value, field, max_bytes=max_bytes, max_pixels=max_pixels)
    return from_pil(img, fmt)


def from_pil(img: Any, source_format: str = "PNG") -> DecodedImage:
    """An image an adapter made itself (already checked): encoded once, as the engine will upload it."""
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=1)
    return DecodedImage(out.getvalue(), img.width, img.height, source_format, img.mode)


# How much lower the image threads' scheduling priority is than the server's (Linux nice levels): when the cores are
# busy decoding, the thread that answers requests still gets one first.
POOL_NICENESS = 5


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), POOL_NICENESS)  # this thread only, on Linux
    except (AttributeError, OSError):
        pass  # elsewhere, or not allowed: the pool still bounds the work


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="pixart-images",
                                   initializer=_lower_priority)
    return _pool


async def run_in_pool(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run image work off the event loop, at most POOL_SIZE at a time (the others wait their turn)."""
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(POOL_SIZE)
    async with slots:
        return await loop.run_in_executor(_executor(), lambda: fn(*args, **kwargs))


# Byte work (base64, PNG chunks copied, no pixels decoded) on fewer bytes than this runs on the event loop: a hop to
# the pool and back cost more CPU than the work itself (0.1 ms of a model-free job's 4, bench_delivery).
INLINE_BYTES = 256 * 1024


async def run_small(fn: Callable[[], T], nbytes: int) -> T:
    """`fn()` on the event loop when it works through at most INLINE_BYTES, else in the image pool."""
    return fn() if nbytes <= INLINE_BYTES else await run_in_pool(fn)


async def decode_async(value: Any, field: str, *, max_bytes: int = DEFAULT_MAX_BYTES,
                       max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """`decode_image` in the image pool; an already decoded image is passed through."""
    if isinstance(value, DecodedImage):
        return value
    return await run_in_pool(decode_image, value, field, max_bytes=max_bytes, max_pixels=max_pixels)


class Base64:
    """Bytes an answer carries as base64 text, after `prefix` (a data URL's head). `bridge.http.json_answer`
    encodes them a piece at a time while it writes the answer: in one go, b64encode and json.dumps of 96 MB of
    images held the interpreter lock, and with it the event loop, for 0.25 s and 0.40 s, and the answer was in
    memory three times over (base64, JSON text, bytes)."""

    __slots__ = ("data", "prefix")

    def __init__(self, data: bytes, prefix: str = "") -> None:
        self.data = data
        self.prefix = prefix

    @property
    def length(self) -> int:
        """Characters of the text."""
        return len(self.prefix) + (len(self.data) + 2) // 3 * 4

    def pieces(self) -> Iterator[bytes]:
        """The text as ASCII bytes, about B64_PIECE at a time."""
        if self.prefix:
            yield self.prefix.encode("ascii")
        step = B64_PIECE // 4 * 3
        view = memoryview(self.data)
        for start in range(0, len(view), step):
            yield base64.b64encode(view[start:start + step])

    def __str__(self) -> str:
        return self.prefix + base64.b64encode(self.data).decode("ascii")

    def __repr__(self) -> str:
        return f"Base64({len(self.data)} bytes, prefix={self.prefix!r})"


def data_url(data: bytes) -> Base64:
    """Image bytes as a `data:image/<kind>;base64,` URL (the kind sniffed from the bytes)."""
    return Base64(data, f"data:image/{sniff_image_type(data) or 'png'};base64,")


_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def strip_metadata(data: bytes) -> bytes:
    """A PNG without its text chunks (ComfyUI's `prompt` and `workflow`: the whole graph, server paths and model
    names). Chunks are copied as they are, pixels untouched; anything that is not a well-formed PNG is returned
    unchanged."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out = bytearray(data[:8])
    pos = 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        end = pos + 12 + length
        if end > len(data):
            return data
        if data[pos + 4:pos + 8] not in _TEXT_CHUNKS:
            out += data[pos:end]
        pos = end
    return bytes(out) if pos == len(data) else data


def add_text(data: bytes, key: str, text: str) -> bytes:
    """A PNG with a text chunk added (tEXt, or iTXt for text beyond Latin-1, as Pillow writes them); pixels
    untouched. It goes before the image data, where readers that stop at the pixels (Pillow's `open().info`, so
    A1111's PNG Info) still find it. Anything that is not a well-formed PNG is returned unchanged."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    pos = 8
    while pos + 12 <= len(data) and data[pos + 4:pos + 8] != b"IDAT":
        pos += 12 + int.from_bytes(data[pos:pos + 4], "big")
    if pos + 12 > len(data):
        return data
    try:
        kind, body = b"tEXt", key.encode("latin-1") + b"\0" + text.encode("latin-1")
    except UnicodeEncodeError:
        kind, body = b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8")
    chunk = len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    return data[:pos] + chunk + data[pos:]


OUTPUT_FORMATS = ("png", "jpeg", "webp")


def convert_output(data: bytes, fmt: str, quality: int = 90) -> bytes:
    """A result image in `fmt` (indexed PNGs are left as they are): png as it is; jpeg (no alpha: transparent areas on
    white, as browsers show them) or webp (alpha kept; quality 100 is lossless, for pixel art) at `quality`."""
    if fmt == "png" or sniff_image_type(data) == fmt:
        return data
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25 and data[25] == 3:
        return data  # an indexed PNG stays one: its palette, in order, is what it is for
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        out = io.BytesIO()
        if fmt == "jpeg":
            if im.mode in ("RGBA", "LA", "P"):
                rgba = im.convert("RGBA")
                flat = Image.new("RGB", rgba.size, "white")
                flat.paste(rgba, mask=rgba.getchannel("A"))
                im = flat
            im.convert("RGB").save(out, format="JPEG", quality=quality)
        elif fmt == "webp":
            im = im if im.mode in ("RGB", "RGBA") else im.convert("RGBA" if "A" in im.getbands() else "RGB")
            # exact: lossless keeps the colour under transparent pixels too (libwebp clears it by default)
            im.save(out, format="WEBP", quality=quality, lossless=quality >= 100, exact=quality >= 100, method=4)
        else:
            raise ValueError(f"output format {fmt!r}: expected one of {', '.join(OUTPUT_FORMATS)}")
        return out.getvalue()


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, JPEG or WebP from its header (Pillow reads no pixels for this)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size


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
