"""Reading and writing image files for the command line and the documentation pictures (Pillow)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tga", ".tif", ".tiff")


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file."""


class FileTooLarge(ValueError):
    """A file is larger than its reader accepts; ``limit`` is that size in bytes."""

    def __init__(self, path: str | os.PathLike, limit: int) -> None:
        super().__init__(f"{path}: over {limit:,} bytes")
        self.limit = limit


def read_bounded(path: str | os.PathLike, limit: int) -> bytes:
    """The whole of ``path`` when it is at most ``limit`` bytes, else FileTooLarge.

    One byte past ``limit`` is read, never more: the path may name a device or a file far larger than any its reader
    takes, and reading it whole would cost memory in proportion. OSError (and ValueError for a NUL in the name, from
    ``open``) pass through for the caller to word.
    """
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(path, limit)
    return data


def read_image(path: str | os.PathLike, *, keep_alpha: bool = True) -> np.ndarray:
    """``uint8 [H,W,3]``, or ``[H,W,4]`` when the file has transparency and ``keep_alpha``.

    Palette images with a transparent index and LA images count as having alpha. EXIF rotation is applied, so the
    array is what a viewer shows.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            mode = "RGBA" if has_alpha and keep_alpha else "RGB"
            return np.asarray(im.convert(mode), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{path}: is a folder, not an image") from None
    except PermissionError:
        raise ImageReadError(f"{path}: permission denied") from None
    except Image.DecompressionBombError as exc:  # not an OSError: it ended the command with a traceback
        raise ImageReadError(f"{path}: too many pixels to read ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc})") from None


def write_image(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write ``uint8 [H,W,1|3|4]`` (format from the suffix; PNG keeps alpha, JPEG drops it)."""
    path = Path(path)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    im = Image.fromarray(arr)
    if path.suffix.lower() in (".jpg", ".jpeg") and im.mode == "RGBA":
        im = im.convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, optimize=path.suffix.lower() == ".png")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (by suffix), sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
