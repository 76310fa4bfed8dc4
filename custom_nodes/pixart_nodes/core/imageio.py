"""Reading and writing image files for the command line and the documentation pictures (Pillow)."""
from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tga", ".tif", ".tiff")
# the longest side each format stores (16-bit header fields, libjpeg's and libwebp's limits): checked before
# encoding, since past them Pillow raises struct errors or libjpeg prints its own line on stderr
MAX_SIDE = {"GIF": 65_535, "TGA": 65_535, "JPEG": 65_500, "WEBP": 16_383}


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file."""


class ImageWriteError(ValueError):
    """An image file could not be written; the message names the file."""


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
        with warnings.catch_warnings():
            # between pixel_limit() and twice that Pillow only warns and decodes: refused here instead, naming the
            # file, as the command line refuses making such an image
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                limit = pixel_limit()
                if im.width * im.height > limit:
                    raise ImageReadError(f"{path}: too many pixels to read ({im.width}x{im.height} is "
                                         f"{im.width * im.height:,} pixels, over {limit:,})")
                im.load()
                fmt = im.format
                im = narrow_grey(ImageOps.exif_transpose(im), fmt)
                has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
                mode = "RGBA" if has_alpha and keep_alpha else "RGB"
                return np.asarray(im.convert(mode), dtype=np.uint8).copy()
    except ImageReadError:
        raise
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


def pixel_limit() -> int:
    """The most pixels the command line reads or makes: Pillow's bomb limit (its default where a process turned the
    check off), past which Pillow warns (printing its own source line) and from twice which it refuses."""
    return Image.MAX_IMAGE_PIXELS or 89_478_485


def enlarge(images: list[np.ndarray], scale: int) -> list[np.ndarray]:
    """Nearest-neighbour enlargement of each image by a whole factor, refused (ValueError) where all of them
    together would pass ``pixel_limit()``: they are allocated at once (a batch is one tensor), so an unbounded factor
    asks for terabytes, and the factor multiplies the cells of a snapped image, not the input."""
    scale = int(scale)
    if scale == 1:
        return list(images)
    pixels = sum(a.shape[0] * a.shape[1] for a in images)
    limit = pixel_limit()
    if pixels * scale * scale > limit:
        h, w = images[0].shape[:2]
        what = (f"{w}x{h} enlarged {scale} times would be {w * scale}x{h * scale}" if len(images) == 1 else
                f"{len(images)} images of {pixels:,} pixels enlarged {scale} times would be {pixels * scale * scale:,}")
        most = int((limit / pixels) ** 0.5)
        raise ValueError(f"{what}, over {limit:,} pixels " +
                         (f"(at most {most} times here)" if most >= 1 else "(over it at their own size)"))
    return [np.repeat(np.repeat(a, scale, axis=0), scale, axis=1) for a in images]


def narrow_grey(im: Image.Image, fmt: str | None = None) -> Image.Image:
    """A grey image of 16 bits as 8-bit: the top 8 bits (65535 -> 255), mode L, or LA where a tRNS grey value marks
    the transparent pixels (Pillow's convert clipped 99.6% of a 0-65472 ramp to white); any other image as it is.
    Sixteen bits are the I;16 modes and mode I read from a PNG or PGM (``fmt``, default the image's format), which
    Pillow gives 0-65535; a 32-bit TIFF's I has no declared range and keeps Pillow's clipping."""
    if not (im.mode.startswith("I;16") or (im.mode == "I" and (fmt or im.format) in ("PNG", "PPM"))):
        return im
    wide = np.asarray(im)
    grey = (np.clip(wide, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
    clear = im.info.get("transparency")
    if isinstance(clear, int):
        return Image.fromarray(np.stack([grey, np.where(wide == clear, 0, 255).astype(np.uint8)], axis=-1), "LA")
    return Image.fromarray(grey, "L")


def write_image(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write ``uint8 [H,W,1|3|4]`` (format from the suffix; PNG keeps alpha, JPEG drops it).

    The file is encoded in memory first (an image the format cannot hold is an ImageWriteError naming the file),
    then written by ``write_file``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise ImageWriteError(f"{path}: cannot write {f'{suffix!r} files' if suffix else 'a name without a suffix'};"
                              f" the suffix gives the format ({' '.join(IMAGE_SUFFIXES)})")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    h, w = arr.shape[:2]
    if fmt in MAX_SIDE and max(h, w) > MAX_SIDE[fmt]:
        raise ImageWriteError(f"{path}: {w}x{h} is too large for {fmt} (at most {MAX_SIDE[fmt]} pixels a side)")
    im = Image.fromarray(arr)
    if fmt == "JPEG" and im.mode == "RGBA":
        im = im.convert("RGB")
    out = io.BytesIO()
    try:
        im.save(out, format=fmt, optimize=fmt == "PNG")
    except (ValueError, OSError, struct.error, OverflowError) as exc:
        raise ImageWriteError(f"{path}: cannot write as {fmt} ({exc})") from None
    write_file(path, out.getvalue())


def write_file(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a file beside ``path`` and move it over ``path`` (its folders made): an existing file, the
    input itself when OUT is IN, is replaced only by a complete one, never left cut short by a failed write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        part.write_bytes(data)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (by suffix), sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
