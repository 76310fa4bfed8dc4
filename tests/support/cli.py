"""The `pixart` command line as its tests run it, and the picture they feed it."""
from __future__ import annotations

import numpy as np
import pytest

from pixart_nodes import cli


def gradient(h: int = 32, w: int = 48) -> np.ndarray:
    """An RGB picture of h x w with every pixel different along both axes."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], -1).astype(np.uint8)


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `pixart ARGV`, argparse's usage errors included."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's usage errors exit from inside parse_args
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
