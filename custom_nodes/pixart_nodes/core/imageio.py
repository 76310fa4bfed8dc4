"""Reading and writing image files for the command line and the documentation pictures (Pillow)."""
from __future__ import annotations

import errno
import io
import os
import re
import stat
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from .color import ALPHA_THRESHOLD

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tga", ".tif", ".tiff")
# the longest side each format stores (16-bit header fields, libjpeg's and libwebp's limits): checked before
# encoding, since past them Pillow raises struct errors or libjpeg prints its own line on stderr
MAX_SIDE = {"GIF": 65_535, "TGA": 65_535, "JPEG": 65_500, "WEBP": 16_383}
# Pillow writes WebP lossy by default: a picture mapped to the 16 PICO-8 colours came out with 898 colours, none of
# them PICO-8's. Its JPEG default (quality 75, 4:2:0) halves the colour resolution, which smears a sprite's one-pixel
# edges into its neighbours' colours: quality 95 without chroma subsampling
_SAVE_OPTIONS = {"WEBP": {"lossless": True}, "JPEG": {"quality": 95, "subsampling": 0}}
NO_ALPHA = ("JPEG", "BMP")  # formats whose alpha no reader keeps


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file."""


class ImageWriteError(ValueError):
    """An output file could not be written; the message names the file."""


class FramesDropped(UserWarning):
    """An animated or multi-page image was read as its first frame; the message names the file."""


class ColoursReduced(UserWarning):
    """An image of more colours than its file's format holds was written with the format's own reduction."""


# the formats whose further frames are more pictures (an animation, pages): a phone's MPO JPEG holds a preview
# after its photo and a PSD its layers after the composite, which the first frame already is
_FRAME_FORMATS = ("GIF", "PNG", "WEBP", "TIFF", "FLI")


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
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            # between pixel_limit() and twice that Pillow only warns and decodes: refused here instead, naming the
            # file, as the command line refuses making such an image
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                limit = pixel_limit()
                if im.width * im.height > limit:
                    raise ImageReadError(f"{path}: too many pixels to read ({im.width}x{im.height} is "
                                         f"{im.width * im.height:,} pixels, over {limit:,})")
                fmt = im.format
                frames = _frame_count(im)
                try:
                    if frames != 1:
                        im.seek(0)
                    im.load()
                except (EOFError, IndexError, TypeError, struct.error) as exc:
                    # Pillow's seek back to the first frame of a damaged animation raises these
                    raise ImageReadError(f"{path}: not a readable image ({exc})") from None
                im = narrow_grey(upright(im), fmt)
                has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
                mode = "RGBA" if has_alpha and keep_alpha else "RGB"
                arr = np.asarray(im.convert(mode), dtype=np.uint8).copy()
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
    # Pillow's own warnings ("Corrupt EXIF data ...") name no file, come once per reading of a tag (a TIFF's three
    # times), and came before the error of a file that then failed: said once each, naming the file, only for a file
    # that was read
    for message, category in dict.fromkeys((str(w.message), w.category) for w in said):
        warnings.warn(f"{path}: {message}", category, stacklevel=2)
    if frames != 1:  # the rest were dropped without a word: a 3-frame GIF in, a still GIF out
        what = f"{frames} frames" if frames > 1 else "animated, the frames after the first unreadable"
        warnings.warn(FramesDropped(f"{path}: {what}; only the first is read"), stacklevel=2)
    return arr


# EXIF orientation -> the transposition that shows the picture upright (ImageOps.exif_transpose's table)
_ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                 8: Image.Transpose.ROTATE_90}


def upright(im: Image.Image) -> Image.Image:
    """The picture as a viewer shows it, by its EXIF orientation. ImageOps.exif_transpose also rewrites the EXIF
    without the orientation, and a damaged tag (a text where a number belongs) made that rewrite raise struct.error
    or TypeError, a traceback for a picture that reads; the EXIF is not kept here, so it is not rewritten."""
    try:
        method = _ORIENTATIONS.get(im.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # noqa: BLE001 - an EXIF block that cannot be parsed says nothing about the orientation
        method = None
    return im.transpose(method) if method is not None else im


def _frame_count(im: Image.Image) -> int:
    """Frames of an animation or pages of a file, 1 for a still image, -1 when the file is cut short or damaged
    after its first frame (Pillow's count raised there, and that frame still reads)."""
    if im.format not in _FRAME_FORMATS:
        return 1
    try:
        return im.n_frames if getattr(im, "is_animated", False) else 1
    except Exception:  # noqa: BLE001 - Pillow's seek raises IndexError (GIF), TypeError (TIFF), ... on damage there
        return -1


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
    Pillow gives 0-65535; a 32-bit TIFF's I has no declared range and keeps Pillow's clipping. A float image (mode
    F, a 32-bit float TIFF) holds 0.0-1.0 as float pixel data does (Pillow's convert rounded it to 0 and 1: a picture
    near black), highlights a little past 1 included; one with values past 2 is taken as 0-255. NaN is black,
    infinities the ends."""
    if im.mode == "F":
        values = np.asarray(im, dtype=np.float32)
        finite = values[np.isfinite(values)]
        scale = 255.0 if finite.size == 0 or float(finite.max()) <= 2.0 else 1.0
        values = np.nan_to_num(values * scale, nan=0.0, posinf=255.0, neginf=0.0)
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    if not (im.mode.startswith("I;16") or (im.mode == "I" and (fmt or im.format) in ("PNG", "PPM"))):
        return im
    wide = np.asarray(im)
    grey = (np.clip(wide, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
    clear = im.info.get("transparency")
    if isinstance(clear, int):
        return Image.fromarray(np.stack([grey, np.where(wide == clear, 0, 255).astype(np.uint8)], axis=-1), "LA")
    return Image.fromarray(grey, "L")


def _gif_with_alpha(arr: np.ndarray, opaque: np.ndarray) -> tuple[Image.Image, bool]:
    """``uint8 [H,W,4]`` and its ``opaque`` mask (alpha at least ``ALPHA_THRESHOLD``, some pixel not) as a P
    image: the rest is one transparent index, and the opaque colours are exact up to 255 of them, else 255 chosen by
    median cut (the flag returned). Pillow's own RGBA -> P conversion is a fast octree that moved the colours of a
    64-colour sprite (its palette lost) and kept a half-clear shadow as solid colour."""
    # clear pixels take an opaque pixel's colour (black when none is): counted and reduced, they add none
    fill = arr[np.unravel_index(np.argmax(opaque), opaque.shape)][:3] if opaque.any() else np.zeros(3, np.uint8)
    rgb = np.where(opaque[..., None], arr[..., :3], fill)
    im = Image.fromarray(rgb)
    # getcolors stops at the 256th colour, where counting them all (np.unique) took 1.3 s on a 2048x2048 photo
    found = im.getcolors(255)
    if found is None:
        reduced = im.quantize(255, method=Image.Quantize.MEDIANCUT)
        idx = np.array(reduced)
        flat = np.zeros((255, 3), np.uint8)  # the index past the reduced colours stays free for the clear pixels
        chosen = np.array(reduced.getpalette()[:765], np.uint8)
        flat.reshape(-1)[:len(chosen)] = chosen
    else:
        colours = np.array(sorted((r << 16) | (g << 8) | b for _, (r, g, b) in found), np.uint32)
        packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
        idx = np.searchsorted(colours, packed).astype(np.uint8)
        flat = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=1).astype(np.uint8)
    clear = len(flat)
    idx[~opaque] = clear
    out = Image.fromarray(idx, "P")
    out.putpalette(flat.reshape(-1).tolist() + [0, 0, 0], rawmode="RGB")
    out.info["transparency"] = clear
    return out, found is None


def write_image(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write ``uint8 [H,W,1|3|4]`` (format from the suffix; PNG keeps alpha, JPEG drops it, GIF keeps it as one
    transparent index for alpha below ``ALPHA_THRESHOLD``, and up to 255 other colours exactly).

    The file is encoded in memory first (an image the format cannot hold is an ImageWriteError naming the file),
    then written by ``write_file``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    # only the formats read back (IMAGE_SUFFIXES): Pillow's other writers change the picture (an ICO shrinks it to
    # icon sizes, 48x32 to 16x11; an ICNS scales it to 1024x1024) or make files no command here opens (PDF, EPS)
    fmt = Image.registered_extensions().get(suffix) if suffix in IMAGE_SUFFIXES else None
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
    if fmt == "GIF":
        opaque = arr[..., 3] >= ALPHA_THRESHOLD if im.mode == "RGBA" else None
        if opaque is not None and not opaque.all():
            im, reduced = _gif_with_alpha(arr, opaque)
            holds = 255 if reduced else None
        else:
            if opaque is not None:
                im = Image.fromarray(np.ascontiguousarray(arr[..., :3]))  # Pillow keeps 256 RGB colours exactly
            holds = 256 if im.getcolors(256) is None else None
        if holds:
            # A GIF holds 256 colours: Pillow picked them by median cut without a word (Aseprite asks first); the
            # pack's own extraction is the better choice, so it is named.
            beside = " beside transparency" if holds == 255 else ""
            warnings.warn(ColoursReduced(f"{path}: more than {holds} colours{beside}; a GIF holds {holds}{beside}, "
                                         f"here chosen by Pillow's median cut (pixart convert --colors {holds} "
                                         f"extracts them better)"), stacklevel=2)
    if fmt in NO_ALPHA and im.mode in ("RGBA", "LA"):
        if bool((arr[..., -1] < ALPHA_THRESHOLD).any()):  # clear as the pack's indexed writers count it
            # Pillow drops JPEG's alpha and writes BMP's as a fourth byte readers ignore: the clear pixels came
            # back as the colour under them, most often black
            raise ImageWriteError(f"{path}: {fmt} cannot store transparency; write a .png (or .webp, .gif, .tga, "
                                  f".tif), or give the picture a background first")
        im = im.convert(im.mode[:-1])
    out = io.BytesIO()
    try:
        im.save(out, format=fmt, optimize=fmt == "PNG", **_SAVE_OPTIONS.get(fmt, {}))
    except (ValueError, OSError, struct.error, OverflowError) as exc:
        raise ImageWriteError(f"{path}: cannot write as {fmt} ({exc})") from None
    write_file(path, out.getvalue())


def write_file(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a file beside ``path`` and move it over ``path`` (its folders made): an existing file, the
    input itself when OUT is IN, is replaced only by a complete one, never left cut short by a failed write.

    A symbolic link is followed (the file it names is replaced, the link stays); a pipe or device (``/dev/stdout``,
    a FIFO) is written to as it is. Failures are ImageWriteError naming ``path``.
    """
    path = Path(path)
    try:
        try:
            mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            mode = None
        if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            # moving a file over it put a plain file in the pipe's place (as root, over /dev/stdout or /dev/null)
            with open(path, "wb") as f:
                f.write(data)
            return
        target = Path(os.path.realpath(path))  # moved over a link, the file replaced the link, not what it names
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # a file where a folder of the path is: mkdir's words would be "File exists"
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)) from None
        # the name's start only: a whole name of 244 to 255 bytes, which the disk takes, made a part name it refused
        # ("File name too long"); 40 characters are at most 160 bytes
        part = target.with_name(f".{target.name[:40]}.{os.getpid()}.part")
        try:
            part.write_bytes(data)
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
    except OSError as exc:
        # the OSError named the hidden .part file, or only a folder, and the caller then blamed the input
        raise ImageWriteError(f"{path}: cannot write ({exc.strerror or exc})") from None


_DIGITS = re.compile(r"([0-9]+)")


def _natural(path: Path) -> tuple:
    # runs of digits compare as numbers: walk2 before walk10, as Aseprite's sequences, ImageMagick's %d and
    # ffmpeg order frames (walk1..walk11 became the frames 1, 10, 11, 2, ... of a GIF); the stem first, so that
    # walk.png comes before walk1.png
    parts = _DIGITS.split(path.stem)
    return tuple((0, int(p), p) if i % 2 else (1, p, "") for i, p in enumerate(parts)), path.suffix, path.name


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (by suffix), in name order with numbers compared as numbers."""
    folder = Path(folder)
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=_natural)
