"""Indexed GIF numbers: what the format can store, refused by name otherwise."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pixart_nodes.core import indexed
from pixart_nodes.core import palette as pal


def _frames() -> list[np.ndarray]:
    return [np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)]


@pytest.mark.parametrize("kw", [{"loop": -1}, {"loop": 70_000}, {"duration_ms": 100_000_000}, {"duration_ms": -5}])
def test_numbers_a_gif_cannot_store_are_refused_naming_them(kw):
    # 16-bit fields: these were OverflowErrors from inside Pillow (the Save Indexed node and the CLI showed those)
    with pytest.raises(ValueError, match=f"^{next(iter(kw))} must be"):
        indexed.indexed_gif(_frames(), pal.palette_from_hex("#000 #fff"), **kw)


def test_the_largest_numbers_are_written():
    data = indexed.indexed_gif(_frames(), pal.palette_from_hex("#000 #fff"), duration_ms=indexed.MAX_DURATION_MS,
                               loop=indexed.MAX_LOOP)
    im = Image.open(io.BytesIO(data))
    assert im.info["loop"] == indexed.MAX_LOOP and im.info["duration"] == indexed.MAX_DURATION_MS
