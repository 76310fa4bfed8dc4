"""Small pixel-art test material: sprites with outlines and dithering, exact enlargements with a known grid."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

PALETTE = np.array([
    (34, 32, 52), (69, 40, 60), (102, 57, 49), (143, 86, 59), (223, 113, 38), (217, 160, 102),
    (238, 195, 154), (251, 242, 54), (153, 229, 80), (55, 148, 110), (75, 105, 47), (82, 75, 36),
    (50, 60, 57), (63, 63, 116), (48, 96, 130), (91, 110, 225),
], dtype=np.uint8)


def sprite(h: int = 24, w: int = 20, *, seed: int = 0, alpha: bool = False) -> np.ndarray:
    """Background, two outlined shapes, a checkerboard patch and a lone highlight; RGBA on transparency."""
    rng = np.random.default_rng(seed)
    pal = PALETTE[rng.permutation(len(PALETTE))[:6]]
    img = np.empty((h, w, 3), np.uint8)
    img[...] = pal[0]
    y, x = np.mgrid[0:h, 0:w]
    inside = np.zeros((h, w), bool)
    for k, (cy, cx, ry, rx) in enumerate(((h * 0.45, w * 0.4, h * 0.3, w * 0.28),
                                          (h * 0.6, w * 0.65, h * 0.22, w * 0.25))):
        shape = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
        img[shape] = pal[2 + k]
        p = np.pad(shape, 1)
        edge = shape & ~(p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:])
        img[edge] = pal[1]
        inside |= shape
    img[2:6, w - 7:w - 2] = np.where(((y + x) % 2 == 0)[2:6, w - 7:w - 2, None], pal[4], pal[5])
    inside[2:6, w - 7:w - 2] = True
    img[h - 3, 2] = (255, 255, 255)
    inside[h - 3, 2] = True
    if not alpha:
        return img
    out = np.dstack([img, np.where(inside, 255, 0).astype(np.uint8)])
    out[~inside, :3] = 0
    return out


def enlarge(img: np.ndarray, sx: float, sy: float | None = None, *, head: tuple[float, float] = (0.0, 0.0),
            tail: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Nearest-neighbour enlargement by ``sx`` x ``sy`` (any real factors); ``head``/``tail`` (x, y) crop that
    many output pixels (fractions allowed) off the start/end of each axis. Pixel ``u`` shows cell
    ``floor((u + 0.5 + head) / s)``."""
    sy = sx if sy is None else sy
    h, w = img.shape[:2]
    width = int(np.floor(w * sx - head[0] - tail[0]))
    height = int(np.floor(h * sy - head[1] - tail[1]))
    cols = np.minimum(np.floor((np.arange(width) + 0.5 + head[0]) / sx).astype(int), w - 1)
    rows = np.minimum(np.floor((np.arange(height) + 0.5 + head[1]) / sy).astype(int), h - 1)
    return np.ascontiguousarray(img[np.ix_(rows, cols)])


def enlarge_on(img: np.ndarray, edges_y: np.ndarray, edges_x: np.ndarray) -> np.ndarray:
    """Nearest-neighbour enlargement onto given cell edges (``edges[k]``: where cell ``k`` starts, in output pixels,
    up to the last cell's end): pixel ``u`` shows the cell whose span holds ``u + 0.5``."""
    idx = [np.clip(np.searchsorted(e, np.arange(int(e[-1])) + 0.5, side="right") - 1, 0, len(e) - 2)
           for e in (edges_y, edges_x)]
    return np.ascontiguousarray(img[np.ix_(*idx)])


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def nearest_palette(img: np.ndarray, colours: np.ndarray) -> np.ndarray:
    d = ((img[..., None, :3].astype(np.int64) - colours[None, None].astype(np.int64)) ** 2).sum(-1)
    return d.argmin(-1)
