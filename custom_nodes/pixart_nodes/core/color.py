"""sRGB <-> linear light <-> OKLab conversions (Ottosson 2020, as in CSS Color 4).

Quantization measures colour distance either in sRGB (what Pillow and most pixel-art tools do) or in OKLab,
where Euclidean distance tracks perceived difference much better (dark blues and greens stop collapsing into
black). The matrices are the reference ones from Björn Ottosson's post, also in /work/shared/reference.
"""
from __future__ import annotations

import re

import numpy as np

# A pixel whose alpha is below this is transparent everywhere in the pack (quantize, the indexed PNG and GIF
# writers, cleanup, palette extraction and palette files), so one picture has one set of clear pixels on every path.
ALPHA_THRESHOLD = 128

# linear sRGB -> LMS
M1 = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ],
    dtype=np.float64,
)
# cube-rooted LMS -> Lab
M2 = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ],
    dtype=np.float64,
)
M1_INV = np.linalg.inv(M1)
M2_INV = np.linalg.inv(M2)


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in 0..1 to linear light (IEC 61966-2-1 transfer function)."""
    v = np.asarray(v, dtype=np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    """Linear light in 0..1 to sRGB-encoded 0..1 (values outside 0..1 are clipped first)."""
    v = np.clip(np.asarray(v, dtype=np.float64), 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


# Exact table for uint8 inputs: indexing beats evaluating the power function per pixel (the compiled loops
# convert only code values, through this table).
LINEAR_U8 = srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0)


def linear_to_oklab(lin: np.ndarray) -> np.ndarray:
    """Linear sRGB ``[...,3]`` (0..1) to OKLab ``[...,3]`` float64."""
    lms = np.asarray(lin, dtype=np.float64) @ M1.T
    return np.cbrt(lms) @ M2.T


def oklab_to_linear(lab: np.ndarray) -> np.ndarray:
    """OKLab ``[...,3]`` to linear sRGB ``[...,3]`` (may fall outside 0..1 for out-of-gamut colours)."""
    lms_ = np.asarray(lab, dtype=np.float64) @ M2_INV.T
    return (lms_**3) @ M1_INV.T


def srgb_u8_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB ``[...,3]`` to OKLab ``[...,3]`` float64, exact (table lookup, no approximation)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise TypeError(f"expected uint8 sRGB, got {rgb.dtype}")
    return linear_to_oklab(LINEAR_U8[rgb])


def srgb_float_to_oklab(rgb255: np.ndarray) -> np.ndarray:
    """sRGB on the 0..255 scale (float, clipped to 0..255) to OKLab float64."""
    v = np.clip(np.asarray(rgb255, dtype=np.float64), 0.0, 255.0) / 255.0
    return linear_to_oklab(srgb_to_linear(v))


def oklab_to_srgb_u8(lab: np.ndarray) -> np.ndarray:
    """OKLab ``[...,3]`` to uint8 sRGB, clipping out-of-gamut colours and rounding to nearest."""
    srgb = linear_to_srgb(oklab_to_linear(lab))
    return np.clip(np.floor(srgb * 255.0 + 0.5), 0, 255).astype(np.uint8)


_HEX_TOKEN = re.compile(r"^(?:#|0x)?([0-9a-f]{6}|[0-9a-f]{3})$", re.IGNORECASE)


def hex_colour(token: str) -> tuple[int, int, int] | None:
    """``#rrggbb``, ``rrggbb``, ``0xrrggbb`` or CSS's ``#rgb`` as (r, g, b); None for anything else (int(x, 16) alone
    also took signs, spaces and other scripts' digits: "#-1-1-1" was (-1, -1, -1))."""
    m = _HEX_TOKEN.match(token.strip())
    if m is None:
        return None
    digits = m.group(1)
    if len(digits) == 3:  # CSS shorthand #f80 == #ff8800
        digits = "".join(c * 2 for c in digits)
    v = int(digits, 16)
    return (v >> 16) & 255, (v >> 8) & 255, v & 255
