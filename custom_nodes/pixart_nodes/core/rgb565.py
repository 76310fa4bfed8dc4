"""RGB565 packing for small SPI LCDs (ST7789 and friends on a Raspberry Pi Pico).

One pixel is the 16-bit word ``(R>>3)<<11 | (G>>2)<<5 | B>>3``. ST7789 panels want that word big-endian (high byte
first) and every Pico/ST7789 driver we know of sends it that way; little-endian is offered for firmware that fills a
native ``uint16`` buffer on the microcontroller (as OpenCV's ``COLOR_RGB2BGR565`` does on x86/ARM). Inversion is the
bitwise NOT of the word, which equals packing ``255 - value`` per channel; it is only needed when the receiving
firmware does not send the panel's INVON command.

The packer is a numba kernel working on bytes: it is a per-pixel loop that numpy cannot express without several
full-size temporaries (three times slower than OpenCV), while the compiled loop is as fast as OpenCV's SIMD path.
"""
from __future__ import annotations

import base64
import sys
from typing import Sequence

import cv2
import numpy as np

from .color import hex_colour
from .jit import compiled
from .messages import quote

BYTE_ORDERS = ("big", "little")
FIT_MODES = ("stretch", "letterbox", "crop")
RESAMPLE_METHODS = ("auto", "area", "lanczos", "bilinear", "nearest")
PIXEL_ART_COLOURS = 256  # "auto" enlarges a picture of at most this many colours by nearest neighbour


def _bayer(n: int) -> np.ndarray:
    m = np.zeros((1, 1), dtype=np.int64)
    while m.shape[0] < n:
        m = np.block([[4 * m, 4 * m + 2], [4 * m + 3, 4 * m + 1]])
    return m


def _dither_levels(bits: int) -> np.ndarray:
    # A panel shows level k of L = 2**bits - 1 as k/L of full scale (31 is white, not 248/255), so the unbiased
    # ordered dither picks floor(v*L/255 + t) with t = (M+0.5)/64 in [0, 1): averaged over the 8x8 tile the
    # levels shown reproduce v. Integer form of that floor; one row per threshold, one column per byte value.
    top = (1 << bits) - 1
    t = 2 * _bayer(8).reshape(64, 1) + 1
    v = np.arange(256, dtype=np.int64).reshape(1, 256)
    return np.minimum((128 * top * v + 255 * t) // (255 * 128), top).astype(np.uint8)


_LEVELS_RB = _dither_levels(5)  # R and B keep 5 bits
_LEVELS_G = _dither_levels(6)  # G keeps 6 bits
# What the panel shows for each level, as Pillow's BGR;16 decoder expands it: 31 -> 255, not 248.
_SHOWN_RB = (np.arange(32) * 255 // 31).astype(np.uint8)
_SHOWN_G = (np.arange(64) * 255 // 63).astype(np.uint8)


# Both kernels take the image as a flat byte array and write native uint16 words, byte-swapped for big-endian:
# constant byte offsets and a loop-invariant branch let LLVM vectorise the loop, which per-byte stores through a
# variable [y, x, hi] index did not (ten times slower).
@compiled(nogil=True, cache=True)
def _pack_plain(src, dst, swap, xor):  # pragma: no cover - compiled
    for i in range(dst.shape[0]):
        j = 3 * i
        r = np.uint16(src[j])
        g = np.uint16(src[j + 1])
        b = np.uint16(src[j + 2])
        v = (((r & 0xF8) << 8) | ((g & 0xFC) << 3) | (b >> 3)) ^ xor
        if swap:
            v = np.uint16((v >> 8) | (v << 8))
        dst[i] = v


@compiled(nogil=True, cache=True)
def _pack_dither(src, width, dst, swap, xor, levels_rb, levels_g):  # pragma: no cover - compiled
    for y in range(dst.shape[0] // width):
        row = (y & 7) * 8
        for x in range(width):
            i = y * width + x
            j = 3 * i
            t = row + (x & 7)
            r = np.uint16(levels_rb[t, src[j]])
            g = np.uint16(levels_g[t, src[j + 1]])
            b = np.uint16(levels_rb[t, src[j + 2]])
            v = np.uint16(((r << 11) | (g << 5) | b) ^ xor)
            if swap:
                v = np.uint16((v >> 8) | (v << 8))
            dst[i] = v


def _check_byte_order(byte_order: str) -> None:
    if byte_order not in BYTE_ORDERS:
        raise ValueError(f"byte_order must be one of {BYTE_ORDERS}, got {byte_order!r}")


def _check_image(img: np.ndarray, name: str = "image") -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {img.dtype}")
    if img.ndim != 3 or img.shape[2] < 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"{name} must be [H,W,3] or [H,W,4], got shape {img.shape}")
    return img


def to_rgb565(img: np.ndarray, *, byte_order: str = "big", invert: bool = False, dither: bool = False) -> bytes:
    """Pack ``uint8 [H,W,3|4]`` (alpha ignored) into ``H*W*2`` RGB565 bytes, row-major, no header.

    Without ``dither`` each channel is truncated, bit-exact with OpenCV's ``COLOR_RGB2BGR565``. ``dither`` picks each
    channel's level with an 8x8 ordered (Bayer) threshold, so flat areas keep their average colour as the panel
    shows it instead of banding down to the next lower 565 level.
    """
    img = _check_image(img)
    _check_byte_order(byte_order)
    # a fixed 3-byte stride is what lets the kernel vectorise; RGBA pays for one copy without its alpha
    src = img if img.shape[2] == 3 and img.flags.c_contiguous else np.ascontiguousarray(img[..., :3])
    h, w = src.shape[:2]
    dst = np.empty(h * w, dtype=np.uint16)
    # the kernel writes native words; swap when the host's order differs from the one asked for
    swap = (byte_order == "big") == (sys.byteorder == "little")
    xor = np.uint16(0xFFFF if invert else 0)
    if dither:
        _pack_dither(src.reshape(-1), w, dst, swap, xor, _LEVELS_RB, _LEVELS_G)
    else:
        _pack_plain(src.reshape(-1), dst, swap, xor)
    return dst.tobytes()


def from_rgb565(
    data: bytes | bytearray | memoryview,
    width: int,
    height: int,
    *,
    byte_order: str = "big",
    inverted: bool = False,
    field: str = "data",
) -> np.ndarray:
    """Unpack RGB565 bytes into ``uint8 [H,W,3]`` (what the LCD shows; ``inverted`` undoes a packing inversion).
    A wrong length is an error naming ``field`` (the caller's name for the bytes).

    Channels are expanded to full scale as the panel shows them (31 -> 255, as Pillow's ``BGR;16`` decoder does;
    OpenCV's ``COLOR_BGR5652RGB`` shifts, 31 -> 248, a white the panel never shows), and
    ``to_rgb565(from_rgb565(data))`` is ``data`` again.
    """
    _check_byte_order(byte_order)
    if int(width) < 1 or int(height) < 1:
        raise ValueError(f"width and height must be >= 1, got {width}x{height}")
    expected = int(width) * int(height) * 2
    if len(data) != expected:
        raise ValueError(f"{field}: expected {expected} bytes for {width}x{height} RGB565, got {len(data):,}")
    words = np.frombuffer(data, dtype=">u2" if byte_order == "big" else "<u2").astype(np.uint16)
    if inverted:
        words ^= 0xFFFF
    out = np.empty((int(height), int(width), 3), dtype=np.uint8)
    words = words.reshape(int(height), int(width))
    out[..., 0] = _SHOWN_RB[words >> 11]
    out[..., 1] = _SHOWN_G[(words >> 5) & 0x3F]
    out[..., 2] = _SHOWN_RB[words & 0x1F]
    return out


def to_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def from_base64(text: str, field: str = "rgb565") -> bytes:
    """Decode a base64 string (whitespace and a ``data:`` URL prefix allowed) with a clear error."""
    text = text.strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{field}: not valid base64 ({exc})") from None


def parse_size(text: str) -> tuple[int, int]:
    """``"240x240"`` -> ``(240, 240)``."""
    parts = [p.strip() for p in text.lower().replace("*", "x").split("x")]
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) <= 6 for p in parts):
        raise ValueError(f"size must look like 240x240, got {text[:40]!r}")
    w, h = int(parts[0]), int(parts[1])
    if w < 1 or h < 1 or w > 16384 or h > 16384:
        raise ValueError(f"size must be between 1x1 and 16384x16384, got {text!r}")
    return w, h


def parse_color(text: str | Sequence[int]) -> tuple[int, int, int]:
    """``"#1a2b3c"``, ``"1a2b3c"`` or ``(r, g, b)`` -> ``(r, g, b)``."""
    if not isinstance(text, str):
        values = tuple(int(v) for v in text)
        if len(values) != 3 or not all(0 <= v <= 255 for v in values):
            raise ValueError(f"background must be three values 0..255, got {text!r}")
        return values  # type: ignore[return-value]
    rgb = hex_colour(text)
    if rgb is None:
        raise ValueError(f"background must be a hex colour like #000000, got {quote(text)}")
    return rgb


def _few_colours(img: np.ndarray, most: int) -> bool:
    """Whether ``uint8 [H,W,C]`` has at most ``most`` colours (grey or RGB; alpha not counted)."""
    from PIL import Image

    colour = img.shape[2] >= 3
    flat = np.ascontiguousarray(img[..., :3] if colour else img[..., 0]).reshape((1, -1, 3) if colour else (1, -1))
    return Image.fromarray(flat).getcolors(most) is not None  # stops counting past ``most``


def _resize(img: np.ndarray, width: int, height: int, resample: str) -> np.ndarray:
    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img.copy()
    if resample == "auto":
        # area averaging is the alias-free choice when shrinking; Lanczos keeps edges crisp when enlarging a
        # picture, but blurs pixel art (a 4-colour sprite sent at 10x came out in 7,000 colours, ringing at every
        # edge): art of at most PIXEL_ART_COLOURS colours (the pack's quantized output) is enlarged by blocks
        if width <= w and height <= h:
            resample = "area"
        else:
            resample = "nearest" if _few_colours(img, PIXEL_ART_COLOURS) else "lanczos"
    flag = {
        "area": cv2.INTER_AREA,
        "lanczos": cv2.INTER_LANCZOS4,
        "bilinear": cv2.INTER_LINEAR,
        "nearest": cv2.INTER_NEAREST_EXACT,
    }[resample]
    out = cv2.resize(img, (width, height), interpolation=flag)
    if out.ndim == 2:  # cv2 drops a single channel axis
        out = out[..., None]
    return out


def fit(
    img: np.ndarray,
    width: int,
    height: int,
    mode: str = "stretch",
    background: tuple[int, int, int] | str = (0, 0, 0),
    *,
    resample: str = "auto",
) -> np.ndarray:
    """Resize ``uint8 [H,W,C]`` to exactly ``height x width``.

    ``stretch`` ignores the aspect ratio; ``letterbox`` scales to fit inside and centres the picture on
    ``background`` (extra channels such as alpha are padded with 0, i.e. transparent); ``crop`` scales to cover and
    keeps the centre.
    """
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"image must be uint8 [H,W,C], got {img.dtype} {img.shape}")
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be >= 1, got {width}x{height}")
    if mode not in FIT_MODES:
        raise ValueError(f"mode must be one of {FIT_MODES}, got {mode!r}")
    if resample not in RESAMPLE_METHODS:
        raise ValueError(f"resample must be one of {RESAMPLE_METHODS}, got {resample!r}")
    bg = parse_color(background)
    h, w = img.shape[:2]
    if mode == "stretch":
        return _resize(img, width, height, resample)
    if mode == "letterbox":
        scale = min(width / w, height / h)
        nw = min(width, max(1, round(w * scale)))
        nh = min(height, max(1, round(h * scale)))
        inner = _resize(img, nw, nh, resample)
        fill = np.zeros(img.shape[2], dtype=np.uint8)
        fill[: min(3, img.shape[2])] = bg[: min(3, img.shape[2])]
        out = np.empty((height, width, img.shape[2]), dtype=np.uint8)
        out[...] = fill
        y0, x0 = (height - nh) // 2, (width - nw) // 2
        out[y0 : y0 + nh, x0 : x0 + nw] = inner
        return out
    # the centre that shows, cut from the picture before it is scaled (as Pillow's ImageOps.fit): scaling all of a
    # 1x20000 picture to cover 240x240 made it 4,800,000 pixels tall first
    scale = max(width / w, height / h)
    cw, ch = min(w, max(1, round(width / scale))), min(h, max(1, round(height / scale)))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return _resize(np.ascontiguousarray(img[y0 : y0 + ch, x0 : x0 + cw]), width, height, resample)


def composite(img: np.ndarray, alpha: np.ndarray | None, background: tuple[int, int, int] | str = (0, 0, 0)) -> np.ndarray:
    """Flatten ``uint8 [H,W,3|4]`` (+ optional ``uint8 [H,W]`` alpha) onto ``background``; an LCD has no alpha."""
    img = np.asarray(img)
    if alpha is None and img.shape[2] == 4:
        alpha = img[..., 3]
    rgb = img[..., :3]
    if alpha is None:
        return np.ascontiguousarray(rgb)
    bg = np.asarray(parse_color(background), dtype=np.uint32)
    a = alpha.astype(np.uint32)[..., None]
    out = (rgb.astype(np.uint32) * a + bg * (255 - a) + 127) // 255
    return out.astype(np.uint8)
