"""The ``pixart`` command: the node pack's processing without ComfyUI (sprite folders, Pico frames, palettes).

    pixart convert IN OUT [--pixel-size N | --size WxH] [--method box] [--palette NAME|HEX|FILE | --colors N]
                          [--dither METHOD] [--damping] [--upscale] [--indexed] [--shared-palette]
    pixart convert FOLDER OUT.gif (--palette ... | --colors N) [--frame-ms 100]   (one animated GIF, one palette)
    pixart palettes [--search TEXT] [--colors N | --min N --max N] [--kind artist|hardware] [--long | --json]
    pixart rgb565 IN OUT.bin [--size 240x240] [--mode stretch|letterbox|crop] [--byte-order big] [--invert]
    pixart rgb565-preview IN.bin OUT.png [--size 240x240] [--byte-order big] [--inverted]
    pixart palette IMAGE [--colors 16] [--method kmeans] [--for-dithering] [--format hex|gpl] [-o FILE]
    pixart aleaart (--seed 0x... | --params JSON)
    pixart snap IN OUT [--cell-size W[xH]] [--min-size 2] [--max-size N] [--scale N] [--json FILE]
    pixart cleanup IN OUT [--merge 0.03] [--rare SHARE] [--no-isolated] [--no-jaggies]
                          [--background auto|#rrggbb] [--tolerance 0.05] [--everywhere]

IN may be a folder: every image in it is processed into the folder OUT, with a progress bar. An OUT ending in / is a
folder (made when missing), each output named after its input. IN ``-`` reads one image from standard input, OUT ``-``
writes one to standard output (``--format``, default PNG; rgb565 a raw frame), its summary line then on stderr; ``./-``
names a file called "-". Every error is one line on stderr naming the file or option, with exit status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, NoReturn, Sequence

import numpy as np

from .core import imageio, pixelate, rgb565
from .core.color import ALPHA_THRESHOLD


MAX_PARAMS_BYTES = 1 << 20  # aleaart --params @FILE: RenderParams are a few hundred bytes
STDIO = "-"  # IN or OUT: standard input or output, as Unix tools read it
OUT_FORMATS = tuple(dict.fromkeys(s.lstrip(".") for s in imageio.IMAGE_SUFFIXES))  # --format: what OUT - can be


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


class Ignored(UserWarning):
    """An option given where it has nothing to do: said, and the command runs as it would without it."""


class _Stream:
    """IN or OUT given as ``-``: standard input or output, named so in messages. ``suffix`` is the format written to
    standard output, so that the code choosing a writer by OUT's suffix reads it as it reads a file's."""

    def __init__(self, name: str, suffix: str = "") -> None:
        self.name, self.suffix = name, suffix

    def __str__(self) -> str:
        return self.name


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line (argparse prints the whole usage first); --help still shows the usage
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- option types: raising ArgumentTypeError makes argparse name the option ------------------------------------

def _path(text: str) -> str:
    """A file or folder argument. ``Path("")`` is ".", the working folder: an unset "$OUT" wrote there, an unset
    "$IN" converted every image in it."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    return text


def _decimal(text: str) -> int | None:
    """A plain decimal integer, as --size reads them: ``int(text, 0)`` refused "08" (Python's literal syntax has no
    leading zeros) and took "0x4", "0b11" and "1_0"."""
    text = text.strip()
    if not re.fullmatch(r"-?[0-9]+", text):
        return None
    try:
        return int(text)
    except ValueError:  # past Python's 4300-digit limit on int(): no count or size anyway
        return None


def _positive_int(text: str) -> int:
    v = _decimal(text)
    if v is None or v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An integer option whose bounds come from the core that stores it (checked before any work is done)."""
    def parse(text: str) -> int:
        v = _decimal(text)
        if v is None or not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer {lo}..{hi}, got {text!r}")
        return v
    return parse


def _colour_count(text: str) -> int:
    """A palette's size, as extraction makes them (the core's own check, worded for --colors, not n_colors)."""
    from .core.palette import MAX_COLORS, _check_n

    try:
        return _check_n(_positive_int(text))
    except (ValueError, argparse.ArgumentTypeError):  # one wording for 0, 1 and 300
        raise argparse.ArgumentTypeError(f"expected 2..{MAX_COLORS} colours, got {text!r}") from None


def _size(text: str) -> tuple[int, int]:
    try:
        return rgb565.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _colour(text: str) -> tuple[int, int, int]:
    try:
        return rgb565.parse_color(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("background must be", "expected")) from None


def _unit_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in 0..1, got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in 0..1, got {text!r}")
    return v


def _palette_spec(text: str):
    """A palette file, a list of hex colours, or a built-in name, in that order of precedence."""
    from .core import palette as pal
    from .core.color import hex_colour
    from .core.palette_files import FORMATS

    path = Path(text)
    try:
        exists = path.exists()
        is_dir = exists and path.is_dir()
    except OSError:  # a name too long to be a file (ENAMETOOLONG): a hex list of 32+ colours is one
        exists = is_dir = False
    looks_like_path = path.suffix.lower().lstrip(".") in FORMATS or "/" in text or "\\" in text
    try:
        if exists and not is_dir:  # a file, or a pipe: `--palette <(curl ...)` is /dev/fd/63
            return pal.load_palette_file(text)
        if looks_like_path:  # not a name nor a colour list gone wrong
            raise ValueError(f"{text}: {'is a folder, not a palette file' if is_dir else 'no such palette file'}")
        try:
            # a built-in name first: "c64" and "a64" are also shorthand hex colours
            return pal.named_palette(text)
        except ValueError:
            # "pico 8" and "Sweetie 16" are names (spaces are ignored in names); "fab ace 000" is three colours
            if not (any(c in text for c in "#,;") or text.lower().startswith("0x")
                    or all(hex_colour(w) for w in text.split())):
                raise
        return pal.palette_from_hex(text)
    except (ValueError, OSError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _is_stdout(path: Path | _Stream) -> bool:
    """Whether ``path`` is where standard output goes (``/dev/stdout``, ``/dev/fd/1``, the file it is redirected to),
    so that a summary line printed after the data does not join it: ``pixart rgb565 a.png /dev/stdout | nc ...``.
    Not OUT ``-``: its summary goes to stderr instead (``_say``, ``_run_jobs``)."""
    if isinstance(path, _Stream):
        return False
    try:
        here, there = os.fstat(sys.stdout.fileno()), os.stat(path)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # no real stdout (captured), no file
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _say(path: Path | _Stream, line: str) -> None:
    """A summary line about the file ``path`` just written: on stderr for OUT ``-``, none where the file is
    standard output by another name (the line would join the data)."""
    if isinstance(path, _Stream):
        print(line, file=sys.stderr)
    elif not _is_stdout(path):
        print(line)


def _same_file(a: Path | _Stream, b: Path | _Stream) -> bool:
    """Whether ``b`` names the file ``a`` (through links, or not written yet: then by its resolved path)."""
    if isinstance(a, _Stream) or isinstance(b, _Stream):
        return False
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return os.path.realpath(a) == os.path.realpath(b)
    except (OSError, ValueError):
        return False


# --- standard input and output (IN or OUT "-") ------------------------------------------------------------------

def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # None (no console), or closed
        return False


def _out_stream(args: argparse.Namespace, suffix: str) -> _Stream | None:
    """Standard output when OUT is ``-``, in the format --format names (else ``suffix``'s); None for a file OUT."""
    fmt = getattr(args, "format", None)
    if args.output != STDIO:
        if fmt is not None:  # "o.png --format jpg" asks for two formats; the file would silently be a PNG
            raise CliError("--format: only for OUT - (standard output); a file's format comes from its suffix")
        return None
    if _is_terminal(sys.stdout):  # a screenful of binary that leaves the terminal garbled (gzip refuses too)
        raise CliError("OUT -: standard output is a terminal; redirect it to a file or a pipe")
    return _Stream("standard output", f".{fmt}" if fmt else suffix)


def _stream_jobs(args: argparse.Namespace, dst: _Stream | None,
                 hint: str = "") -> tuple[list[tuple[Path | _Stream, Path | _Stream]], bool] | None:
    """The one pair (IN, OUT) when either is ``-``, as ``_jobs`` returns pairs; None when neither is."""
    if args.input != STDIO and dst is None:
        return None
    if args.input == STDIO:
        src: Path | _Stream = _Stream("standard input")
        if dst is None:
            if Path(args.output).is_dir() or _names_folder(args.output):
                raise CliError(f"{args.output}: standard input has no name to give a file in the folder; name the "
                               f"output file")
            dst = Path(args.output)
    else:
        src = Path(args.input)
        if src.is_dir():
            raise CliError(f"{src}: IN is a folder; standard output takes one image{hint}")
    return [(src, dst)], False


def _stdin_bytes(limit: int) -> bytes:
    """Standard input whole when it is at most ``limit`` bytes, else FileTooLarge (as ``imageio.read_bounded``)."""
    if _is_terminal(sys.stdin):  # it would wait for a picture typed in
        raise CliError("IN -: standard input is a terminal; pipe an image in")
    try:
        data = sys.stdin.buffer.read(limit + 1)
    except AttributeError:
        raise CliError("IN -: no standard input to read") from None
    if len(data) > limit:
        raise imageio.FileTooLarge("standard input", limit)
    if not data:
        raise CliError("standard input: empty (nothing was piped in)")
    return data


@contextlib.contextmanager
def _worded_as(tmp: Path, name: str):
    """Errors and warnings about ``tmp`` worded about ``name``: the readers and writers take file names, so standard
    input and output pass through a temporary file, whose name would point the user nowhere."""
    said: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            yield
    except (ValueError, OSError) as exc:
        raise CliError(str(exc).replace(str(tmp), name)) from None
    finally:  # after the recording stopped, before the error: as a file's warnings come
        for w in said:
            warnings.warn(w.category(str(w.message).replace(str(tmp), name)), stacklevel=3)


def _read_image(src: Path | _Stream) -> np.ndarray:
    if not isinstance(src, _Stream):
        return imageio.read_image(src)
    # Pillow decodes from a file it can seek in; any image the readers take fits (16-bit RGBA, uncompressed, at the
    # most pixels they read), and past that a pipe of zeros would fill the memory
    data = _stdin_bytes(imageio.pixel_limit() * 8 + (1 << 20))
    with tempfile.TemporaryDirectory(prefix="pixart-") as tmp:
        path = Path(tmp) / "stdin"
        path.write_bytes(data)
        with _worded_as(path, src.name):
            return imageio.read_image(path)


def _write_image(dst: Path | _Stream, img: np.ndarray) -> None:
    if not isinstance(dst, _Stream):
        imageio.write_image(dst, img)
        return
    with tempfile.TemporaryDirectory(prefix="pixart-") as tmp:  # the writer's own checks and options, one of each
        path = Path(tmp) / f"stdout{dst.suffix}"
        with _worded_as(path, dst.name):
            imageio.write_image(path, img)
        data = path.read_bytes()
    _write_bytes(dst, data)


def _write_bytes(dst: Path | _Stream, data: bytes) -> None:
    if not isinstance(dst, _Stream):
        imageio.write_file(dst, data)
        return
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


# --- helpers ---------------------------------------------------------------------------------------------------

def _names_folder(text: str) -> bool:
    """Whether OUT ends in a path separator: ``Path`` drops it, so ``o/new.png/`` became the file ``o/new.png``."""
    return text.endswith(tuple(s for s in (os.sep, os.altsep) if s))


def _file_in(src: Path, out: str, suffix: str) -> Path:
    """OUT for the one file ``src``: OUT itself, or ``src``'s stem with ``suffix`` in the folder OUT names (an
    existing folder, or any name ending in a separator: made here)."""
    dst = Path(out)
    if _names_folder(out) and not dst.is_dir():
        if dst.exists():
            raise CliError(f"{out}: not a folder (OUT ending in {out[-1]} names a folder to write into)")
        dst.mkdir(parents=True, exist_ok=True)
    return dst / (src.stem + suffix) if dst.is_dir() else dst


def _jobs(src: Path, out: str, suffix: str, *, hint: str = "") -> tuple[list[tuple[Path, Path]], bool]:
    """Input/output pairs; a folder IN maps to a folder OUT with the same stems and ``suffix``."""
    dst = Path(out)
    if src.is_dir():
        if dst.exists() and not dst.is_dir():
            raise CliError(f"{dst}: IN is a folder, so OUT must be a folder too")
        if not dst.exists() and not _names_folder(out) and dst.suffix.lower() in (*imageio.IMAGE_SUFFIXES, suffix):
            # a folder named like the file asked for (o/cl.png) was made and filled, and nothing said so
            raise CliError(f"{dst}: IN is a folder, so OUT must be a folder, not a {dst.suffix} file (end it with / "
                           f"for a folder of that name{hint})")
        files = imageio.list_images(src)
        if not files:
            raise CliError(f"{src}: no images in this folder ({', '.join(imageio.IMAGE_SUFFIXES)})")
        # a.png and a.jpg would both be written as OUT/a.png, the second over the first, both counted as written
        first: dict[str, Path] = {}
        for f in files:
            other = first.setdefault((f.stem + suffix).casefold(), f)  # one file on a case-insensitive disk
            if other is not f:
                raise CliError(f"{other} and {f} have the same output {dst / (f.stem + suffix)}; rename one")
        pairs = [(f, dst / (f.stem + suffix)) for f in files]
        _not_over_inputs(pairs, out)
        dst.mkdir(parents=True, exist_ok=True)
        return pairs, True
    if not src.exists():
        raise CliError(f"{src}: no such file or folder")
    pairs = [(src, _file_in(src, out, suffix))]
    if Path(out).is_dir():  # named after IN inside OUT: IN itself when OUT is IN's own folder ("OUT IN" is asked)
        _not_over_inputs(pairs, out)
    return pairs, False


def _not_over_inputs(pairs: list[tuple[Path, Path]], out: str) -> None:
    # an output named after its input in IN's own folder replaced the input, silently
    for src, dst in pairs:
        if _same_file(src, dst):
            raise CliError(f"{out}: writing {dst.name} there would replace the input {src}; name another folder")


def _naming(exc: Exception, src: Path | str, *others: Path | str) -> str:
    """``exc``'s message naming its file: the readers and writers name theirs; an error from the processing ("no
    opaque pixels") does not, and gets ``src`` in front."""
    text = str(exc)
    return text if any(str(p) in text for p in (src, *others)) else f"{src}: {text}"


def _run_jobs(jobs: list[tuple[Path, Path]], folder: bool, quiet: bool, desc: str,
              work: Callable[[Path, Path], str], data_on_stdout: bool = False) -> int:
    """Run ``work`` per pair; in folder mode a bad file is reported and skipped, and the exit status is 2. With
    ``data_on_stdout`` (an image or a report written to ``-``) the summary lines go to stderr, so that stdout stays
    data."""
    say = functools.partial(print, file=sys.stderr if data_on_stdout else sys.stdout)
    failed = 0
    items: Sequence[tuple[Path, Path]] = jobs
    bar = None
    if folder and not quiet:
        from tqdm import tqdm

        bar = tqdm(jobs, desc=desc, unit="img", file=sys.stderr)
        items = bar
    for src, dst in items:
        try:
            line = work(src, dst)
        except BrokenPipeError:  # the reader of OUT - left: no failed file, main stops quietly
            raise
        except (CliError, ValueError, OSError) as exc:
            message = _naming(exc, src, dst)
            if not folder:
                raise CliError(message) from None
            failed += 1
            (bar.write if bar is not None else print)(f"pixart {desc}: error: {message}", file=sys.stderr)
            continue
        if not quiet and not folder and not _is_stdout(dst):
            say(line)
    if bar is not None:
        bar.close()
    if folder and not quiet:
        say(f"{desc}: {len(jobs) - failed} of {len(jobs)} written to {jobs[0][1].parent}")
    return 2 if failed else 0


# --- subcommands -------------------------------------------------------------------------------------------------

def _has_clear(img: np.ndarray) -> bool:
    return img.ndim == 3 and img.shape[2] == 4 and bool((img[..., 3] < ALPHA_THRESHOLD).any())


def _opaque_colours_fit(img: np.ndarray, most: int) -> bool:
    from PIL import Image

    opaque = img[..., :3][img[..., 3] >= ALPHA_THRESHOLD]
    return len(opaque) == 0 or Image.fromarray(np.ascontiguousarray(opaque)[None]).getcolors(most) is not None


def _cmd_convert(args: argparse.Namespace) -> int:
    from .core import indexed
    from .core import palette as pal
    from .core import quantize as qz

    if args.palette is not None and args.colors is not None:
        raise CliError("--palette and --colors exclude each other: give a palette, or a number of colours to extract")
    if args.pixel_size is not None and args.size is not None:
        raise CliError("--pixel-size and --size exclude each other")
    if args.palette is None and args.colors is None and args.pixel_size is None and args.size is None:
        raise CliError("nothing to do: give --pixel-size or --size, and/or --palette or --colors")
    if args.indexed and args.palette is None and args.colors is None:
        raise CliError("--indexed needs a palette: give --palette or --colors")
    args.dither = args.dither.lower()  # as palette names: "FLOYD-STEINBERG" was refused
    if args.dither not in qz.DITHER_METHODS:
        raise CliError(f"--dither must be one of {', '.join(qz.DITHER_METHODS)}, got {args.dither!r}")
    src_path = Path(args.input)
    stream = _out_stream(args, ".png")
    dst_path: Path | _Stream = stream or Path(args.output)
    # a folder into one .gif: every image is a frame of one animation, all sharing one palette
    animation = (args.input != STDIO and src_path.is_dir() and dst_path.suffix.lower() == ".gif"
                 and (stream is not None or (not Path(args.output).is_dir() and not _names_folder(args.output))))
    if animation and args.palette is None and args.colors is None:
        raise CliError(f"{dst_path}: an animated GIF is indexed: give --palette or --colors")
    if animation:
        # OUT inside IN: the GIF a previous run wrote there is no frame of this one
        files = [f for f in imageio.list_images(src_path) if stream or f.resolve() != Path(args.output).resolve()]
        if not files:
            raise CliError(f"{src_path}: no images in this folder ({', '.join(imageio.IMAGE_SUFFIXES)})")
        jobs, folder = [(f, dst_path) for f in files], True
    else:
        jobs, folder = (_stream_jobs(args, stream, hint=" (--format gif: one animated GIF)")
                        or _jobs(src_path, args.output, ".png", hint="; only OUT.gif takes a folder: one animated GIF"))
    # one palette extracted from every input: asked for, or what several indexed files / an animation need
    shared = args.colors is not None and folder and (
        animation or (args.shared_palette if args.shared_palette is not None else args.indexed))
    if animation and args.shared_palette is False:
        raise CliError("--no-shared-palette: the frames of one GIF share its global palette")
    # options with nothing to do here are said, not refused: the result is what was asked, and a script that passes
    # the same options for a file and for a folder keeps working
    if args.shared_palette is not None and (args.colors is None or not folder):
        flag = f"--{'' if args.shared_palette else 'no-'}shared-palette"
        why = "only with --colors, whose extracted palette it shares" if args.colors is None else \
            "IN is one image, not a folder"
        warnings.warn(Ignored(f"{flag}: {why}; ignored"))
    if args.upscale and args.pixel_size is None and args.size is None:
        warnings.warn(Ignored("--upscale: nothing is pixelated (no --pixel-size or --size); ignored"))
    # an extracted palette that error diffusion will use is refined for it (what bench_extract measures)
    for_dithering = args.dither in qz.ERROR_DIFFUSION and args.strength > 0

    def extract(img: np.ndarray | list[np.ndarray]):
        # a GIF holds 255 colours beside the clear index: extracting 256 there left the writer to merge two
        n = args.colors
        if dst_path.suffix.lower() == ".gif" and any(_has_clear(a) for a in (img if isinstance(img, list) else [img])):
            n = min(n, 255)
        return pal.extract_palette(img, n, method=args.extract_method, seed=args.seed, dither=for_dithering)

    def prepare(src: Path | _Stream) -> tuple[np.ndarray, tuple | None]:
        img = _read_image(src)
        edges = None
        if args.pixel_size is not None or args.size is not None:
            w, h = args.size if args.size is not None else (None, None)
            if w is not None and (w > img.shape[1] or h > img.shape[0]):
                raise CliError(f"{src}: --size {w}x{h} is larger than the image {img.shape[1]}x{img.shape[0]}")
            edges = pixelate.grid(img.shape[0], img.shape[1], out_width=w, out_height=h, pixel_size=args.pixel_size)
            img = pixelate.pixelate(img, width=w, height=h, pixel_size=args.pixel_size, method=args.method, k=args.k,
                                    contrast=args.contrast)
        return img, edges

    def finish(img: np.ndarray, edges: tuple | None, palette) -> tuple[np.ndarray, str]:
        used = ""
        if palette is not None:
            result = qz.quantize(img, palette, dither=args.dither, distance=args.distance,
                                 serpentine=not args.no_serpentine, strength=args.strength, damping=args.damping)
            img = result.image
            used = f", {result.colors_used} of {len(palette)} colours ({palette.name}{', shared' if shared else ''})"
        if args.upscale and edges is not None:
            img = pixelate.expand_blocks(img, *edges)
        return img, used

    def write(dst: Path | _Stream, img: np.ndarray, palette, used: str) -> str:
        # a GIF is indexed whatever is asked: with a palette, written as the palette (Pillow's median cut merged
        # two colours of a 256-colour palette beside transparency, and the summary still said 256), except where
        # the palette fills all 256 indices and the picture has clear pixels: then the writer keeps the colours
        # used, up to 255, beside the clear index, as Aseprite does
        as_gif = palette is not None and dst.suffix.lower() == ".gif"
        if as_gif and len(palette) >= 256 and _has_clear(img) and _opaque_colours_fit(img, 255):
            as_gif = False
        if args.indexed or as_gif:
            fmt = dst.suffix.lower().lstrip(".")
            if fmt not in indexed.FORMATS:
                raise CliError(f"{dst}: --indexed writes PNG or GIF (--format png or gif)" if stream else
                               f"{dst}: --indexed writes .png or .gif files")
            try:
                data = indexed.indexed_png(img, palette) if fmt == "png" else indexed.indexed_gif([img], palette)
            except ValueError as exc:  # what the format cannot hold: the file is what it is about
                raise CliError(f"{dst}: {exc}") from None
            _write_bytes(dst, data)
            return f"{dst}: {img.shape[1]}x{img.shape[0]} indexed{used}"
        _write_image(dst, img)
        return f"{dst}: {img.shape[1]}x{img.shape[0]}{used}"

    if not shared and not animation:
        def work(src: Path, dst: Path) -> str:
            img, edges = prepare(src)
            palette = args.palette
            if palette is None and args.colors is not None:
                palette = extract(img)
            img, used = finish(img, edges, palette)
            return write(dst, img, palette, used)

        return _run_jobs(jobs, folder, args.quiet, "convert", work, data_on_stdout=stream is not None)

    # two passes: read (and pixelate) everything, then one palette for all, then quantize and write
    prepared: dict[Path, tuple[np.ndarray, tuple | None]] = {}

    def read(src: Path, dst: Path) -> str:
        prepared[src] = prepare(src)
        return ""

    code = _run_jobs(jobs, folder, True, "convert", read) if not animation else 0
    if animation:  # a frame that cannot be read would silently shorten the animation: stop instead
        for src, _ in jobs:
            try:
                prepared[src] = prepare(src)
            except (ValueError, OSError) as exc:  # the reader's own words name the file already
                raise CliError(_naming(exc, src)) from None
    if not prepared:
        raise CliError(f"{src_path}: no image could be read")
    palette = args.palette
    if palette is None:
        palette = extract([img for img, _ in prepared.values()])
    if animation:
        frames = []
        for src, (img, edges) in prepared.items():
            img, _ = finish(img, edges, palette)
            if frames and img.shape[:2] != frames[0].shape[:2]:
                raise CliError(f"{src}: {img.shape[1]}x{img.shape[0]} differs from the first frame "
                               f"{frames[0].shape[1]}x{frames[0].shape[0]}; GIF frames share one size")
            frames.append(img)
        try:
            data = indexed.indexed_gif(frames, palette, duration_ms=args.frame_ms, loop=args.loop)
        except ValueError as exc:
            raise CliError(f"{dst_path}: {exc}") from None
        _write_bytes(dst_path, data)
        if not args.quiet:
            _say(dst_path, f"{dst_path}: {len(frames)} frames {frames[0].shape[1]}x{frames[0].shape[0]}, one "
                           f"palette of {len(palette)} colours ({palette.name})")
        return 0
    if not args.quiet:
        print(f"convert: one palette of {len(palette)} colours from {len(prepared)} images")
    todo = [(s, d) for s, d in jobs if s in prepared]

    def work_shared(src: Path, dst: Path) -> str:
        img, used = finish(*prepared.pop(src), palette)
        return write(dst, img, palette, used)

    return max(code, _run_jobs(todo, folder, args.quiet, "convert", work_shared))


def _cmd_rgb565(args: argparse.Namespace) -> int:
    width, height = args.size
    fmt = f"rgb565-{'be' if args.byte_order == 'big' else 'le'}"
    stream = _out_stream(args, ".bin")
    jobs, folder = _stream_jobs(args, stream) or _jobs(Path(args.input), args.output, ".bin")

    def work(src: Path | _Stream, dst: Path | _Stream) -> str:
        # the frame is raw bytes: written as OUT.png it replaced the picture when OUT was IN, or made a ".png" no
        # viewer opens
        if dst.suffix.lower() in imageio.IMAGE_SUFFIXES:
            raise CliError(f"{dst}: rgb565 writes raw frames, not {dst.suffix} images; name it .bin "
                           f"(rgb565-preview makes an image of a frame)")
        if _same_file(src, dst):
            raise CliError(f"{dst}: OUT is IN; the raw frame would replace the image")
        img = rgb565.composite(_read_image(src), None, args.background)
        framed = rgb565.fit(img, width, height, args.mode, args.background, resample=args.resample)
        data = rgb565.to_rgb565(framed, byte_order=args.byte_order, invert=args.invert, dither=args.dither)
        _write_bytes(dst, data)
        return f"{dst}: {width}x{height} {fmt}{' inverted' if args.invert else ''}, {len(data)} bytes"

    return _run_jobs(jobs, folder, args.quiet, "rgb565", work, data_on_stdout=stream is not None)


def _cmd_rgb565_preview(args: argparse.Namespace) -> int:
    width, height = args.size
    stream = _out_stream(args, ".png")
    pair = _stream_jobs(args, stream)
    src, dst = pair[0][0] if pair else (Path(args.input), None)
    frame = width * height * 2
    try:
        # a longer file is no frame of this size: reading it all would not help
        data = _stdin_bytes(frame) if isinstance(src, _Stream) else imageio.read_bounded(src, frame)
    except imageio.FileTooLarge:
        raise CliError(f"{src}: data: expected {frame} bytes for {width}x{height} RGB565, got more (check --size)") \
            from None
    except OSError as exc:
        raise CliError(f"{src}: cannot read ({exc.strerror or exc})") from None
    try:
        img = rgb565.from_rgb565(data, width, height, byte_order=args.byte_order, inverted=args.inverted)
    except ValueError as exc:
        raise CliError(f"{src}: {exc} (check --size)") from None
    img = _enlarge(img, args.scale)
    dst = dst or _file_in(src, args.output, ".png")
    _write_image(dst, img)
    if not args.quiet:
        _say(dst, f"{dst}: {img.shape[1]}x{img.shape[0]}")
    return 0


def _enlarge(img: np.ndarray, scale: int) -> np.ndarray:
    try:
        return imageio.enlarge([img], scale)[0]
    except ValueError as exc:
        raise CliError(f"--scale {scale}: {exc}") from None


def _write_palette_out(p, output: str | None, fmt: str, quiet: bool, block: int = 1) -> int:
    """``fmt``: a text format (--format offers only those; the binary ones go to a file by its suffix)."""
    from .core import palette_files

    if output:
        if _names_folder(output):  # "p.gpl/" was written as the file p.gpl
            raise CliError(f"{output}: -o names a palette file, not a folder (its suffix gives the format)")
        try:
            palette_files.write_palette(output, p, block=block)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        if not quiet:
            _say(Path(output), f"{output}: {len(p)} colours")
    else:
        sys.stdout.write(palette_files.palette_bytes(p, fmt).decode())
    return 0


def _cmd_palette(args: argparse.Namespace) -> int:
    from .core import palette as pal

    src = _Stream("standard input") if args.image == STDIO else Path(args.image)
    if args.output and _same_file(src, Path(args.output)):
        raise CliError(f"{args.output}: -o is IMAGE; the palette would replace the picture it comes from")
    img = _read_image(src)
    try:
        p = pal.extract_palette(img, args.colors, method=args.method, seed=args.seed, dither=args.for_dithering)
    except ValueError as exc:  # "image has no opaque pixels" said nothing of which image, in a script's loop
        raise CliError(_naming(exc, src)) from None
    p = pal.Palette(args.name or ("palette" if isinstance(src, _Stream) else src.stem), p.colors)
    return _write_palette_out(p, args.output, args.format, args.quiet)


def _cmd_palette_file(args: argparse.Namespace) -> int:
    """Convert a palette (file of any format, built-in name or hex list) to another format, order kept."""
    from .core import palette as pal

    p = args.palette
    if args.name:
        p = pal.Palette(args.name, p.colors)
    return _write_palette_out(p, args.output, args.format, args.quiet, block=args.block)


def _cmd_palettes(args: argparse.Namespace) -> int:
    """The palette library as a table (or JSON), filtered by words and size."""
    from .core import palettes as lib

    if args.colors is not None and (args.min is not None or args.max is not None):
        raise CliError("--colors and --min/--max exclude each other")
    if args.min is not None and args.max is not None and args.min > args.max:
        raise CliError(f"--min {args.min} is larger than --max {args.max}")
    found = lib.search(args.search or "", colors=args.colors, min_colors=args.min, max_colors=args.max,
                       kind=args.kind)
    if args.json:
        print(json.dumps([{"name": p.name, "title": p.title, "size": p.size, "author": p.author, "source": p.source,
                           "kind": p.kind, "colors": [f"#{c}" for c in p.colors]} for p in found], indent=1,
                         ensure_ascii=False))
        return 0
    if not found:
        print("no palette matches; 'pixart palettes' lists them all", file=sys.stderr)
        return 1
    rows = [(p.name, str(p.size), p.author, *((p.title, p.source) if args.long else ())) for p in found]
    head = ("name", "colours", "author", *(("title", "source") if args.long else ()))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(v.rjust(w) if i == 1 else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip())
    if not args.quiet:
        print(f"{len(found)} of {len(lib.LIBRARY)} palettes")
    return 0


def _cmd_aleaart(args: argparse.Namespace) -> int:
    from .core import aleaart

    if args.seed is not None:
        params = aleaart.derive_params(args.seed)
    else:
        text = args.params
        if text.startswith("@"):
            try:
                data = imageio.read_bounded(text[1:], MAX_PARAMS_BYTES)
            except imageio.FileTooLarge:
                raise CliError(f"--params: {text[1:]}: larger than {MAX_PARAMS_BYTES // 1024} KiB, not RenderParams") \
                    from None
            except OSError as exc:
                raise CliError(f"--params: {text[1:]}: cannot read ({exc.strerror or exc})") from None
            try:
                text = data.decode("utf-8-sig")  # Notepad starts its UTF-8 with a BOM, which json refuses
            except UnicodeDecodeError:
                raise CliError(f"--params: {text[1:]}: not UTF-8 text") from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(f"--params: not valid JSON ({exc.msg} at character {exc.pos})") from None
        except RecursionError:
            raise CliError("--params: JSON nested too deeply") from None
        try:
            params = aleaart.RenderParams.from_dict(raw)
        except ValueError as exc:
            raise CliError(f"--params: {exc}") from None
    out = {"params": params.to_dict(), **aleaart.resolve(params)}
    print(json.dumps(out, indent=None if args.compact else 2))
    return 0


def _cell_size(text: str) -> tuple[float, float]:
    """``8``, ``5.5`` or ``5.5x6`` (width x height) in input pixels."""
    try:
        parts = [float(v) for v in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a cell size like 8, 5.5 or 5.5x6, got {text!r}") from None
    if len(parts) not in (1, 2) or any(not v >= 2 for v in parts):
        raise argparse.ArgumentTypeError(f"expected a cell size of at least 2 pixels like 8 or 5.5x6, got {text!r}")
    return (parts[0], parts[-1])


def _cmd_snap(args: argparse.Namespace) -> int:
    from .core import snap as sn

    if args.json not in (None, "-") and _names_folder(args.json):  # "g.json/" was written as the file g.json
        raise CliError(f"--json {args.json}: names a file to write, not a folder")
    stream = _out_stream(args, ".png")
    if stream and args.json == STDIO:
        raise CliError("--json -: standard output carries the image (OUT -); name a file for the JSON")
    jobs, folder = _stream_jobs(args, stream) or _jobs(Path(args.input), args.output, ".png")
    if args.json not in (None, "-") and any(_same_file(p, Path(args.json)) for job in jobs for p in job):
        raise CliError(f"--json {args.json}: is an image this command reads or writes; name another file")
    report: dict[str, dict] = {}
    width, height = args.cell_size if args.cell_size else (None, None)
    try:  # once, before any image: a folder of 300 said the same 300 times, each blamed on a file
        sn.check_sizes(min_size=args.min_size, max_size=args.max_size, cell_width=width, cell_height=height)
    except ValueError as exc:
        raise CliError(str(exc)) from None

    def work(src: Path | _Stream, dst: Path | _Stream) -> str:
        img = _read_image(src)
        res = sn.snap(img, min_size=args.min_size, max_size=args.max_size, cell_width=width, cell_height=height)
        out = res.image
        if res.detected:
            out = _enlarge(out, args.scale)
        _write_image(dst, out)
        report[str(src)] = res.to_dict(edges=True)
        return f"{dst}: {res.message}"

    code = _run_jobs(jobs, folder, args.quiet, "snap", work, data_on_stdout=args.json == "-" or stream is not None)
    if args.json:
        text = json.dumps(report if folder else next(iter(report.values()), {}), indent=1)
        if args.json == "-":
            print(text)
        else:  # as the images are written: its folders made, a complete file or none
            imageio.write_file(args.json, (text + "\n").encode("utf-8"))
    return code


def _cmd_cleanup(args: argparse.Namespace) -> int:
    from .core import cleanup as cu

    background = args.background
    if background not in (None, "auto"):
        try:
            background = cu.parse_colour(background)  # the key the core takes, parsed once
        except ValueError as exc:
            raise CliError(f"--background: {exc}") from None
    try:  # once: checked per image, a folder of 300 repeated the same error 300 times, each blamed on a file
        cu.check_options(merge=args.merge, rare=args.rare, tolerance=args.tolerance)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    stream = _out_stream(args, ".png")
    jobs, folder = _stream_jobs(args, stream) or _jobs(Path(args.input), args.output, ".png")

    def work(src: Path | _Stream, dst: Path | _Stream) -> str:
        res = cu.cleanup(_read_image(src), merge=args.merge, rare=args.rare, isolated=not args.no_isolated,
                         jaggies=not args.no_jaggies, background=background, tolerance=args.tolerance,
                         connected=not args.everywhere)
        _write_image(dst, res.image)
        return f"{dst}: {res.summary()}"

    return _run_jobs(jobs, folder, args.quiet, "cleanup", work, data_on_stdout=stream is not None)


def _add_snap_parser(sub, common: argparse.ArgumentParser) -> None:
    n = sub.add_parser("snap", parents=[common], help="recover true-resolution pixel art from an enlarged copy",
                       description="Detect the pixel grid of enlarged or AI-made pixel art (cell size per axis, "
                                   "offset, drift) and write one pixel per cell. Images without a grid are "
                                   "written unchanged, with a message saying so.")
    n.add_argument("input", metavar="IN", type=_path, help="image file or folder of images; - for stdin")
    n.add_argument("output", metavar="OUT", type=_path, help="output image or folder (PNG files); - for stdout")
    n.add_argument("--format", type=str.lower, choices=OUT_FORMATS, metavar="FORMAT",
                   help="the format of OUT - (standard output): {} (default png)".format(", ".join(OUT_FORMATS)))
    n.add_argument("--cell-size", type=_cell_size, help="known cell size W or WxH in pixels (offset still found)")
    n.add_argument("--min-size", type=float, default=2.0, help="smallest cell size to consider (default 2)")
    n.add_argument("--max-size", type=float, default=None, help="largest cell size (default a third of the image)")
    n.add_argument("--scale", type=_positive_int, default=1, help="enlarge the result N times (nearest neighbour)")
    n.add_argument("--json", metavar="FILE", type=_path,
                   help="write the detected grid(s) as JSON to FILE ('-' = stdout)")
    n.set_defaults(func=_cmd_snap)


def _add_cleanup_parser(sub, common: argparse.ArgumentParser) -> None:
    c = sub.add_parser("cleanup", parents=[common], help="clean stray pixels, jaggies, rare colours, background",
                       description="Clean pixel art at its true resolution: merge near-duplicate shades, replace "
                                   "rare colours, remove isolated pixels and single-pixel jaggies, make the "
                                   "background transparent. Dither patterns are kept.")
    c.add_argument("input", metavar="IN", type=_path, help="image file or folder of images; - for stdin")
    c.add_argument("output", metavar="OUT", type=_path, help="output image or folder (PNG files); - for stdout")
    c.add_argument("--format", type=str.lower, choices=OUT_FORMATS, metavar="FORMAT",
                   help="the format of OUT - (standard output): {} (default png)".format(", ".join(OUT_FORMATS)))
    c.add_argument("--merge", type=float, default=0.03, help="OKLab distance for near-duplicate colours (0 = off)")
    c.add_argument("--rare", type=_unit_float, default=0.0, help="replace colours under this share of pixels "
                                                                  "(below 1)")
    c.add_argument("--no-isolated", action="store_true", help="keep isolated pixels")
    c.add_argument("--no-jaggies", action="store_true", help="keep doubled corners of 1-px lines")
    c.add_argument("--background", help="make the background transparent: auto (border colour) or #rrggbb")
    c.add_argument("--tolerance", type=float, default=0.05, help="OKLab distance still counted as background")
    c.add_argument("--everywhere", action="store_true",
                   help="remove the background colour everywhere, not only where connected to the border")
    c.set_defaults(func=_cmd_cleanup)


# --- parser ------------------------------------------------------------------------------------------------------

def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("pixart-nodes")
    except metadata.PackageNotFoundError:  # python -m pixart_nodes in a checkout that was not pip-installed
        import tomllib

        try:
            text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8")
            return str(tomllib.loads(text)["project"]["version"])
        except (OSError, KeyError, ValueError):
            return "unknown"


def build_parser() -> argparse.ArgumentParser:
    from .core import indexed

    parser = _Parser(prog="pixart", description="Pixel-art processing from the Pixart node pack, without ComfyUI.")
    # -q works before or after the subcommand; SUPPRESS keeps a subparser's default from overwriting the global one
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary lines")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bar or summary lines")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    c = sub.add_parser("convert", parents=[common], help="pixelate and/or map to a palette (files or folders)",
                       description="Pixelate (downscale) and/or map to a palette, optionally dithered. A folder IN "
                                   "and an OUT ending in .gif make one animated GIF of every image, sharing one "
                                   "palette.")
    c.add_argument("input", metavar="IN", type=_path, help="image file or folder of images; - for stdin")
    c.add_argument("output", metavar="OUT", type=_path,
                   help="output image (format from its suffix) or folder (PNG files); - for stdout")
    c.add_argument("--format", type=str.lower, choices=OUT_FORMATS, metavar="FORMAT",
                   help="the format of OUT - (standard output): {} (default png; gif with a folder IN: one "
                        "animated GIF)".format(", ".join(OUT_FORMATS)))
    c.add_argument("--pixel-size", type=_positive_int, help="pixelate with blocks of N x N pixels")
    c.add_argument("--size", type=_size, help="pixelate to exactly WxH pixels (e.g. 64x64)")
    c.add_argument("--method", choices=pixelate.METHODS, default="box", help="colour of each block (default box)")
    c.add_argument("--k", type=int, choices=(2, 3, 4), default=2, help="clusters per block for kcentroid")
    c.add_argument("--contrast", type=_unit_float, default=pixelate.OUTLINE_CONTRAST,
                   help="outline: brightness step (0..1) that makes a thin line or dot a detail to keep")
    c.add_argument("--upscale", action="store_true", help="enlarge back to the input size (nearest neighbour)")
    c.add_argument("--palette", type=_palette_spec,
                   help="library palette name (pico-8, ...; see 'pixart palettes'), hex list ('#000,#fff'), or a "
                        "palette file (.hex .gpl .pal .act .ase .txt .png)")
    c.add_argument("--colors", type=_colour_count,
                   help="extract a palette of N colours instead (per image, or one for all: see --shared-palette); "
                        "with an error-diffusion --dither its colours are refined for the dithered image, which "
                        "moves them out so the dither reaches the darkest and brightest areas")
    c.add_argument("--shared-palette", action=argparse.BooleanOptionalAction, default=None,
                   help="with --colors and a folder: extract one palette from all images (held in memory) and use "
                        "it for every one; default on with --indexed and for an animated GIF")
    c.add_argument("--extract-method", choices=("kmeans", "median-cut"), default="kmeans",
                   help="palette extraction for --colors (default kmeans)")
    c.add_argument("--seed", type=_int_in(0, 2**63 - 1), default=0, help="seed for k-means palette extraction")
    c.add_argument("--dither", default="none", help="none, floyd-steinberg, atkinson, bayer-4x4, blue-noise, ...")
    c.add_argument("--distance", choices=("oklab", "rgb"), default="oklab", help="colour distance (default oklab)")
    c.add_argument("--strength", type=_unit_float, default=1.0, help="dither strength 0..1 (default 1)")
    c.add_argument("--no-serpentine", action="store_true", help="error diffusion left to right on every row")
    c.add_argument("--damping", action="store_true",
                   help="error diffusion with libimagequant's rules: a pixel whose error is far above the image's "
                        "mean passes on only 3/4 of it, and textured areas take less error (fewer stray dots at edges)")
    c.add_argument("--indexed", action="store_true",
                   help="write an indexed PNG (or GIF) whose palette is the palette, in its order")
    c.add_argument("--frame-ms", type=_int_in(1, indexed.MAX_DURATION_MS), default=100,
                   help="a folder into one .gif: milliseconds each frame shows (default 100; stored in hundredths,"
                        f" at least {indexed.GIF_MIN_DELAY_MS})")
    c.add_argument("--loop", type=_int_in(0, indexed.MAX_LOOP), default=0,
                   help="a folder into one .gif: times to loop, 0 = forever")
    c.set_defaults(func=_cmd_convert)

    r = sub.add_parser("rgb565", parents=[common], help="raw RGB565 frames for small LCDs (Pico / ST7789)",
                       description="Convert images to raw RGB565 frames (240x240 -> 115,200 bytes).")
    r.add_argument("input", metavar="IN", type=_path, help="image file or folder of images; - for stdin")
    r.add_argument("output", metavar="OUT", type=_path,
                   help="output .bin file, or folder for a folder IN; - for stdout")
    r.add_argument("--size", type=_size, default=(240, 240), help="frame size WxH (default 240x240)")
    r.add_argument("--mode", choices=rgb565.FIT_MODES, default="stretch", help="how to fit (default stretch)")
    r.add_argument("--byte-order", choices=rgb565.BYTE_ORDERS, default="big", help="default big (ST7789)")
    r.add_argument("--invert", action="store_true", help="store 255 - value (firmware without INVON)")
    r.add_argument("--dither", action="store_true", help="565-aware ordered dithering")
    r.add_argument("--background", type=_colour, default=(0, 0, 0), help="letterbox/transparency colour (#000000)")
    r.add_argument("--resample", choices=rgb565.RESAMPLE_METHODS, default="auto",
                   help="resize filter (auto: area when shrinking; when enlarging, nearest for pixel art of at most "
                        "256 colours, else Lanczos)")
    r.set_defaults(func=_cmd_rgb565)

    v = sub.add_parser("rgb565-preview", parents=[common], help="unpack an RGB565 frame into a PNG",
                       description="Unpack a raw RGB565 frame into an image, as the LCD shows it.")
    v.add_argument("input", metavar="IN", type=_path, help="raw .bin frame; - for stdin")
    v.add_argument("output", metavar="OUT", type=_path,
                   help="output image (PNG), or a folder (existing, or a name ending in /); - for stdout")
    v.add_argument("--format", type=str.lower, choices=OUT_FORMATS, metavar="FORMAT",
                   help="the format of OUT - (standard output): {} (default png)".format(", ".join(OUT_FORMATS)))
    v.add_argument("--size", type=_size, default=(240, 240), help="frame size WxH (default 240x240)")
    v.add_argument("--byte-order", choices=rgb565.BYTE_ORDERS, default="big", help="default big")
    v.add_argument("--inverted", action="store_true", help="the frame was packed with --invert")
    v.add_argument("--scale", type=_positive_int, default=1, help="enlarge N times (nearest neighbour)")
    v.set_defaults(func=_cmd_rgb565_preview)

    p = sub.add_parser("palette", parents=[common], help="extract a palette from an image",
                       description="Extract a palette from an image; prints .hex lines or a GIMP .gpl palette.")
    p.add_argument("image", metavar="IMAGE", type=_path, help="image file; - for stdin")
    p.add_argument("--colors", type=_colour_count, default=16, help="number of colours (default 16)")
    p.add_argument("--method", choices=("kmeans", "median-cut"), default="kmeans", help="default kmeans")
    p.add_argument("--seed", type=_int_in(0, 2**63 - 1), default=0, help="k-means seed (default 0)")
    p.add_argument("--for-dithering", action="store_true",
                   help="kmeans, images without transparent pixels: the palette is for error diffusion; its "
                        "colours are refined for the dithered image, so dithering reaches the image's extremes (what "
                        "'convert --colors N --dither floyd-steinberg' does)")
    p.add_argument("--format", choices=("hex", "gpl", "pal", "txt"), default="hex",
                   help="standard output format: hex (Lospec), gpl (GIMP/Aseprite), pal (JASC), txt (paint.net)")
    p.add_argument("--name", help="palette name written into the file (default: image name)")
    p.add_argument("-o", "--output", type=_path, help="write to this file (.hex .gpl .pal .act .ase .txt .png) instead")
    p.set_defaults(func=_cmd_palette)

    pf = sub.add_parser("palette-file", parents=[common], help="convert a palette file to another format",
                        description="Read a palette (a .hex .gpl .pal .act .ase .txt file, an Aseprite sprite, a "
                                    "PNG swatch strip or indexed PNG, a built-in name or a hex list) and write it in "
                                    "another format, in the same order.")
    pf.add_argument("palette", metavar="PALETTE", type=_palette_spec, help="palette file, name or hex list")
    pf.add_argument("-o", "--output", type=_path, help="output file; the format comes from its suffix")
    pf.add_argument("--format", choices=("hex", "gpl", "pal", "txt"), default="hex",
                    help="standard output format when no -o is given")
    pf.add_argument("--block", type=_positive_int, default=1, help="PNG strip: swatch size in pixels (default 1)")
    pf.add_argument("--name", help="palette name written into the file")
    pf.set_defaults(func=_cmd_palette_file)

    ls = sub.add_parser("palettes", parents=[common], help="list and search the palette library",
                        description="List the library's named palettes (name, colours, author), most used first; "
                                    "filter by words in the name, title or author and by size. Any name works "
                                    "wherever a palette is asked for (--palette, palette-file, the Palette node).")
    ls.add_argument("--search", metavar="TEXT", help="words that must all appear (e.g. 'gameboy', 'endesga 16')")
    ls.add_argument("--colors", type=_positive_int, help="exactly N colours")
    ls.add_argument("--min", type=_positive_int, help="at least N colours")
    ls.add_argument("--max", type=_positive_int, help="at most N colours")
    ls.add_argument("--kind", choices=("artist", "hardware"), help="palettes by pixel artists, or machines' own")
    out = ls.add_mutually_exclusive_group()
    out.add_argument("-l", "--long", action="store_true", help="add the title and source columns")
    out.add_argument("--json", action="store_true", help="every match as JSON, with its colours")
    ls.set_defaults(func=_cmd_palettes)

    a = sub.add_parser("aleaart", parents=[common], help="AleaArt render parameters from a token seed or parameter JSON",
                       description="Print the generation settings AleaArt derives for a seed or parameter set.")
    g = a.add_mutually_exclusive_group(required=True)
    g.add_argument("--seed", help="token seed, 32 bytes as 0x + 64 hex digits")
    g.add_argument("--params", help="RenderParams as JSON (or @file.json)")
    a.add_argument("--compact", action="store_true", help="one-line JSON")
    a.set_defaults(func=_cmd_aleaart)
    _add_snap_parser(sub, common)
    _add_cleanup_parser(sub, common)
    return parser


def _tolerant_stdout() -> None:
    """Outside Python's UTF-8 mode (a UTF-8 locale such as en_US.UTF-8) stdout is strict: a file name that is not
    UTF-8 (a lone surrogate in Python) failed the summary line after its file was written, exit 2. It is written
    escaped instead, as stderr writes it."""
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        try:
            sys.stdout.reconfigure(errors="backslashreplace")
        except (ValueError, OSError, io.UnsupportedOperation):
            pass


def _warning_printer(prog: str):
    """Warnings as one line each (Python's own format adds the source line that issued them), above the progress
    bar when one is drawn."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = f"{prog}: warning: {' '.join(str(message).split())}"
        if "tqdm" in sys.modules:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)
    return show


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"pixart {args.command}"
    _tolerant_stdout()
    with warnings.catch_warnings():
        # one per file, not one per run
        warnings.simplefilter("always", imageio.FramesDropped)
        warnings.simplefilter("always", imageio.ColoursReduced)
        warnings.simplefilter("always", Ignored)
        warnings.showwarning = _warning_printer(prog)
        try:
            code = int(args.func(args))
            sys.stdout.flush()  # a reader that left is found here, not while Python exits (a second message)
            return code
        except BrokenPipeError:
            # the reader of stdout stopped (`pixart palettes --json | head`): "error: [Errno 32] Broken pipe" and
            # exit 2 made a usual pipeline look like a failed command; stop quietly, as Unix tools do (128 + SIGPIPE)
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError, io.UnsupportedOperation):
                pass
            return 141
        except (CliError, ValueError, OSError) as exc:
            # ImageReadError and the core modules' ValueErrors already name the file or the field
            message = (str(exc) if not isinstance(exc, OSError) or not exc.filename
                       else f"{exc.filename}: {exc.strerror}")
            print(f"{prog}: error: {message}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
