"""Indexed images whose palette is exactly the artist's palette, in its order: PNG (PLTE + tRNS) and GIF (one
global palette shared by every frame), as game engines, Aseprite and LCD drivers read them.

Each pixel takes its palette index: exact colours map to themselves (the usual case after Pixart Quantize), any
other colour to its nearest palette entry in OKLab. Pixels with alpha below the threshold use one extra entry after
the palette's colours, marked transparent, so the palette's own indices never move.
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from . import color
from .imageio import MAX_SIDE
from .palette import Palette, nearest_indices

FORMATS = ("png", "gif")
MAX_DURATION_MS = 655_350
GIF_MIN_DELAY_MS = 20  # the shortest delay browsers play as stored (Chromium, Firefox, WebKit)
MAX_LOOP = 65_535
MAX_GIF_SIDE = MAX_SIDE["GIF"]


def palette_indices(img: np.ndarray, palette: Palette, alpha_threshold: int = color.ALPHA_THRESHOLD) -> tuple[np.ndarray, bool]:
    """uint8 [H,W] indices into `palette` for an RGB(A) uint8 image, and whether any pixel is transparent (those
    get index len(palette))."""
    rgb = np.ascontiguousarray(img[..., :3], dtype=np.uint8)
    colors = palette.colors
    packed_pal = (colors[:, 0].astype(np.int64) << 16) | (colors[:, 1].astype(np.int64) << 8) | colors[:, 2]
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    # the first index of each colour (a palette may repeat a colour: the first one is what a reader expects)
    order = np.argsort(packed_pal, kind="stable")
    sorted_pal = packed_pal[order]
    pos = np.clip(np.searchsorted(sorted_pal, packed), 0, len(sorted_pal) - 1)
    exact = sorted_pal[pos] == packed
    idx = order[pos]
    if not exact.all():
        misses = np.unique(packed[~exact])
        miss_rgb = np.stack([(misses >> 16) & 255, (misses >> 8) & 255, misses & 255], axis=1).astype(np.uint8)
        near = nearest_indices(color.srgb_u8_to_oklab(miss_rgb), color.srgb_u8_to_oklab(colors))
        idx = idx.copy()
        idx[~exact] = near[np.searchsorted(misses, packed[~exact])]
    idx = idx.astype(np.uint8)
    transparent = False
    if img.shape[-1] == 4:
        clear = img[..., 3] < alpha_threshold
        if clear.any():
            if len(palette) >= 256:
                raise ValueError("a 256-colour palette leaves no index for transparency; use at most 255 colours")
            idx[clear] = len(palette)
            transparent = True
    return idx, transparent


def _flat_palette(palette: Palette, transparent: bool) -> list[int]:
    flat = palette.colors.reshape(-1).tolist()
    return flat + [0, 0, 0] if transparent else flat


def indexed_png(img: np.ndarray, palette: Palette, alpha_threshold: int = color.ALPHA_THRESHOLD) -> bytes:
    """A PNG of mode P whose PLTE is the palette in order (plus one transparent entry when needed)."""
    idx, transparent = palette_indices(img, palette, alpha_threshold)
    im = Image.fromarray(idx, "P")
    im.putpalette(_flat_palette(palette, transparent), rawmode="RGB")
    out = io.BytesIO()
    extra = {"transparency": len(palette)} if transparent else {}
    im.save(out, format="PNG", optimize=False, **extra)
    return out.getvalue()


def indexed_gif(frames: Sequence[np.ndarray], palette: Palette, *, duration_ms: int = 100, loop: int = 0,
                alpha_threshold: int = color.ALPHA_THRESHOLD) -> bytes:
    """A GIF (animated when several frames) with one global palette, the palette in order, for every frame; every
    frame is kept with its own delay, one equal to the frame before included."""
    if not frames:
        raise ValueError("no frames")
    # the GIF stores the delay in 16-bit hundredths of a second and the loop count in 16 bits
    if not 0 <= duration_ms <= MAX_DURATION_MS:
        raise ValueError(f"duration_ms must be 0..{MAX_DURATION_MS}, got {duration_ms}")
    if not 0 <= loop <= MAX_LOOP:
        raise ValueError(f"loop must be 0..{MAX_LOOP} (0 = forever), got {loop}")
    for n, f in enumerate(frames):
        if max(f.shape[:2]) > MAX_GIF_SIDE:
            raise ValueError(f"{f.shape[1]}x{f.shape[0]} is too large for a GIF (at most {MAX_GIF_SIDE} pixels a side)")
        if f.shape[:2] != frames[0].shape[:2]:  # the first frame's size is the GIF's screen
            raise ValueError(f"frame {n + 1} is {f.shape[1]}x{f.shape[0]}, the first {frames[0].shape[1]}x"
                             f"{frames[0].shape[0]}; GIF frames share one size")
    # the nearest hundredth, and at least two for any delay: Pillow truncates, so 99 ms played as 90; and browsers
    # play a delay of 0 or 1 hundredth at 100 ms, so 1..14 ms as stored played ten times slower than asked
    delay_ms = max(GIF_MIN_DELAY_MS, (duration_ms + 5) // 10 * 10) if duration_ms else 0
    mapped = [palette_indices(f, palette, alpha_threshold) for f in frames]
    transparent = any(t for _, t in mapped)
    flat = _flat_palette(palette, transparent)
    extra = {"transparency": len(palette), "disposal": 2} if transparent else {}
    # each frame is encoded on its own and the frames joined under the first one's header: Pillow's animation
    # writer merges a frame equal to the one before into it (adding the delays), so a walk cycle with a held
    # frame lost frames, and two held frames at the longest delay overflowed the 16-bit delay
    head = b""
    blocks = []
    for n, (idx, _) in enumerate(mapped):
        im = Image.fromarray(idx, "P")
        im.putpalette(flat, rawmode="RGB")
        out = io.BytesIO()
        # `palette` makes it the global table (every frame's the same, none local); the loop only once, first
        im.save(out, format="GIF", palette=bytes(flat), duration=delay_ms, optimize=False, interlace=False,
                **({"loop": loop} if n == 0 else {}), **extra)
        data = out.getvalue()
        end = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)  # header and global table
        if n == 0:
            head = data[:end]
        blocks.append(data[end:-1])  # the frame's extensions and image, without the trailer
    return head + b"".join(blocks) + b";"
