"""libimagequant's dither map, written again in plain Python from its rule (``update_dither_map`` in
libimagequant's image.rs) for the tests of ``quantize(damping=True)`` and of the palette proxy."""
from __future__ import annotations

import numpy as np


def levels_reference(indices: np.ndarray, full: int = 240) -> np.ndarray:
    """Per pixel, the share of collected error it takes, in 256ths. Along each row, a change of colour (or the
    row's last pixel) closes the run that started after the previous change; its score n is 10 per column from
    that start to the change (the changing pixel excluded) plus 15 per pixel of those columns whose neighbour above
    or below has the run's colour, and every pixel from the start to the changing pixel included gets
    full * n // (20 + n). Pixels never reached (a one-column image) keep ``full``."""
    h, w = indices.shape
    out = np.full((h, w), full, np.int64)
    for y in range(h):
        run_colour, start = indices[y, 0], 0
        for col in range(1, w):
            if indices[y, col] == run_colour and col != w - 1:
                continue
            n = 10 * (col - start)
            n += 15 * sum(1 for i in range(start, col) if y > 0 and indices[y - 1, i] == run_colour)
            n += 15 * sum(1 for i in range(start, col) if y + 1 < h and indices[y + 1, i] == run_colour)
            out[y, start:col + 1] = full * n // (20 + n)
            run_colour, start = indices[y, col], col + 1
    return out
