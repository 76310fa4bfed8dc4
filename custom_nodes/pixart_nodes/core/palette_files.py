"""Palette files people download and the tools that read them: Lospec `.hex`, GIMP/Aseprite `.gpl`, JASC `.pal`
(Paint Shop Pro, Aseprite, Pro Motion) and Microsoft's RIFF `.pal` (Windows, older palette sites) read by their
first bytes, Photoshop `.act`, Adobe Swatch Exchange `.ase` (Lospec's "Photoshop ASE", Illustrator, Krita),
paint.net `.txt` and a PNG swatch image (one pixel or one block per colour, square as Lospec serves them or not).
An Aseprite sprite (`.aseprite`, or `.ase` by its first bytes) is read for its palette, as Aseprite's Load Palette
does. Every reader and writer keeps the palette's order.

The format comes from the file extension (a RIFF palette from its first bytes); `.png` strips are read by measuring their block size, so a 1x, 8x or
32x Lospec image gives the same palette.

Whatever is sent, reading costs little: a file over `MAX_FILE_BYTES` (1 MiB), a strip of more than
`MAX_STRIP_PIXELS` pixels, `MAX_STRIP_ROWS` rows or `MAX_STRIP_CELLS` swatches, and the colour past `MAX_COLORS`
are refused (ValueError naming the file) before the rest is read; the PNG writer refuses a strip the reader would
refuse.
"""
from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .imageio import FileTooLarge, narrow_grey, read_bounded
from .color import ALPHA_THRESHOLD, hex_colour
from .palette import MAX_COLORS, Palette, add_colour, quote

FORMATS = ("hex", "gpl", "pal", "act", "ase", "txt", "png")
_ACT_SIZE = 768  # 256 RGB triplets; Photoshop appends a count and a transparent index (4 bytes) when < 256
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# decimal fields as GIMP and JASC programs write and read them; int() also takes signs, "1_0" and other scripts'
# digits ("\u0661\u0662" is 12), which no such program writes
_DECIMAL = re.compile(r"[0-9]+")
# a 256-colour .gpl with names is about 20 KB and a Lospec PNG strip a few KB: a file over this is not a palette,
# and reading it whole would cost memory in proportion to whatever was sent
MAX_FILE_BYTES = 1 << 20


def _palette(name: str, rgb: Sequence[tuple[int, int, int]] | np.ndarray, where: str) -> Palette:
    if len(rgb) == 0:
        raise ValueError(f"{where}: no colours found")
    return Palette(name, np.asarray(rgb, dtype=np.uint8).reshape(-1, 3))


def _lines(data: bytes, where: str) -> list[str]:
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        if b"\0" in data:  # binary, or UTF-16: no palette program writes NULs
            raise ValueError(f"{where}: not a text palette file (not UTF-8)") from None
    # older Windows tools write the palette's name, comments and colour names in their code page (Latin-1, cp1252):
    # one such byte refused the whole file, though the colours themselves are ASCII digits. Line by line: one stray
    # byte turned every UTF-8 name of the file into mojibake
    return [_line(raw) for raw in data.removeprefix(b"\xef\xbb\xbf").splitlines()]


def _line(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


# ------------------------------------------------------------------------------------------------ readers
def _decimal_rgb(line: str, where: str, shape: str) -> tuple[int, int, int]:
    """'R G B [anything]' in decimal, each 0..255 (GIMP and JASC colour lines)."""
    parts = line.split(None, 3)
    if len(parts) < 3 or not all(_DECIMAL.fullmatch(p) for p in parts[:3]):
        raise ValueError(f"{where}: expected {shape} with decimal values, got {quote(line)}")
    r, g, b = (int(p) for p in parts[:3])
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise ValueError(f"{where}: colour values must be 0..255, got {quote(line)}")
    return r, g, b


def parse_gpl(lines: Sequence[str], where: str) -> tuple[str | None, list[tuple[int, int, int]]]:
    if not lines or lines[0].strip().lstrip("\ufeff") != "GIMP Palette":
        raise ValueError(f"{where}: line 1: expected 'GIMP Palette' header")
    name = None
    rgb = []
    for n, raw in enumerate(lines[1:], 2):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        # Aseprite writes "Channels: RGBA" and an alpha after each colour's R G B: read as the colour, in its place
        if sep and key.strip().lower() in ("name", "columns", "channels"):
            if key.strip().lower() == "name":
                name = value.strip() or None
            continue
        add_colour(rgb, _decimal_rgb(line, f"{where}: line {n}", "'R G B [name]'"), where)
    return name, rgb


def parse_hex_lines(lines: Sequence[str], where: str) -> list[tuple[int, int, int]]:
    rgb = []
    for n, raw in enumerate(lines, 1):
        line = raw.strip().lstrip("\ufeff")
        if not line or line.startswith(";") or line.startswith("//"):
            continue
        c = hex_colour(line)
        if c is None:
            raise ValueError(f"{where}: line {n}: expected one hex colour like ff8800, got {quote(line)}")
        add_colour(rgb, c, where)
    return rgb


def parse_jasc(lines: Sequence[str], where: str) -> list[tuple[int, int, int]]:
    if len(lines) < 3 or lines[0].strip() != "JASC-PAL":
        raise ValueError(f"{where}: line 1: expected 'JASC-PAL' header")
    if not _DECIMAL.fullmatch(lines[2].strip()):
        raise ValueError(f"{where}: line 3: expected the number of colours, got {quote(lines[2].strip())}")
    count = int(lines[2].strip())
    rgb = []
    for n, raw in enumerate(lines[3:], 4):
        if not raw.strip():
            continue
        add_colour(rgb, _decimal_rgb(raw.strip(), f"{where}: line {n}", "'R G B'"), where)
    if len(rgb) != count:
        raise ValueError(f"{where}: the header says {count} colours, the file has {len(rgb)}")
    return rgb


def parse_paintnet(lines: Sequence[str], where: str) -> list[tuple[int, int, int]]:
    rgb = []
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        if not re.fullmatch(r"[0-9A-Fa-f]{8}|[0-9A-Fa-f]{6}", line):
            raise ValueError(f"{where}: line {n}: expected AARRGGBB hex, got {quote(line)}")
        v = int(line[-6:], 16)
        add_colour(rgb, ((v >> 16) & 255, (v >> 8) & 255, v & 255), where)
    return rgb


def parse_act(data: bytes, where: str) -> list[tuple[int, int, int]]:
    if len(data) not in (_ACT_SIZE, _ACT_SIZE + 4):
        raise ValueError(f"{where}: a Photoshop .act file has 768 or 772 bytes, this one has {len(data)}")
    count = 256
    if len(data) == _ACT_SIZE + 4:
        count = int.from_bytes(data[768:770], "big") or 256
        if count > 256:
            raise ValueError(f"{where}: colour count {count} is over 256")
    arr = np.frombuffer(data[:count * 3], dtype=np.uint8).reshape(-1, 3)
    return [tuple(int(v) for v in c) for c in arr]  # type: ignore[misc]


def parse_riff_pal(data: bytes, where: str) -> list[tuple[int, int, int]]:
    """Microsoft's RIFF palette: 'RIFF' size 'PAL ', then chunks; the 'data' chunk is a LOGPALETTE (version, count,
    then R G B flags per colour). A file ending in .pal may be this binary form or JASC text."""
    pos = 12
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        body = data[pos + 8:pos + 8 + size]
        if tag == b"data":
            if len(body) < 4:
                raise ValueError(f"{where}: RIFF palette data chunk of {len(body)} bytes, too short")
            count = int.from_bytes(body[2:4], "little")
            if count > MAX_COLORS:
                raise ValueError(f"{where}: {count} colours, more than {MAX_COLORS}")
            if len(body) < 4 + 4 * count:
                raise ValueError(f"{where}: RIFF palette says {count} colours, holds {(len(body) - 4) // 4}")
            arr = np.frombuffer(body, dtype=np.uint8, count=4 * count, offset=4).reshape(-1, 4)[:, :3]
            return [tuple(int(v) for v in c) for c in arr]  # type: ignore[misc]
        pos += 8 + size + (size & 1)  # chunks are padded to an even length
    raise ValueError(f"{where}: RIFF palette without a 'data' chunk")


def _lab_d50_to_srgb(l: float, a: float, b: float) -> tuple[float, float, float]:
    """CIE L*a*b* (D50, as Adobe stores it) to sRGB 0..1, through XYZ and Bradford's adaptation to D65."""
    fy = (l + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200
    d = 6 / 29
    x, y, z = ((f ** 3 if f > d else 3 * d * d * (f - 4 / 29)) * white
               for f, white in ((fx, 0.96422), (fy, 1.0), (fz, 0.82521)))
    # Bradford D50 -> D65 then XYZ -> linear sRGB, folded into one matrix (Lindbloom's)
    lin = (3.1338561 * x - 1.6168667 * y - 0.4906146 * z,
           -0.9787684 * x + 1.9161415 * y + 0.0334540 * z,
           0.0719453 * x - 0.2289914 * y + 1.4052427 * z)
    r, g, b = (12.92 * v if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055 for v in lin)
    return r, g, b


_ASE_VALUES = {b"RGB ": 3, b"LAB ": 3, b"CMYK": 4, b"Gray": 1}


def parse_ase(data: bytes, where: str) -> tuple[str | None, list[tuple[int, int, int]]]:
    """Adobe Swatch Exchange: 'ASEF', version, block count, then blocks (type, length, body): colours (0x0001: a
    UTF-16 name, the model, its big-endian float32 values, the swatch type) and group starts and ends, in order.
    RGB and Gray are exact; CMYK is converted naively ((1-c)(1-k)), as without a print profile every reader must;
    Lab (D50, L in 0..1) colorimetrically. The palette's name is its group's when the file has exactly one."""
    if len(data) < 12 or data[:4] != b"ASEF":
        raise ValueError(f"{where}: not an Adobe Swatch Exchange file (no 'ASEF' header)")
    count = int.from_bytes(data[8:12], "big")
    pos, groups, rgb = 12, [], []
    for n in range(1, count + 1):
        if pos + 6 > len(data):
            raise ValueError(f"{where}: block {n} of {count} is missing (the file ends at byte {len(data)})")
        kind, size = int.from_bytes(data[pos:pos + 2], "big"), int.from_bytes(data[pos + 2:pos + 6], "big")
        body, pos = data[pos + 6:pos + 6 + size], pos + 6 + size
        if len(body) < size:
            raise ValueError(f"{where}: block {n} says {size} bytes, the file holds {len(body)}")
        if kind not in (0x0001, 0xC001):
            continue  # a group's end, or a block type newer than this reader: its length says where the next one is
        chars = int.from_bytes(body[:2], "big") if len(body) >= 2 else 0
        name = body[2:2 + 2 * chars].decode("utf-16-be", errors="replace").rstrip("\0")
        if kind == 0xC001:
            groups.append(name)
            continue
        model = body[2 + 2 * chars:6 + 2 * chars]
        values = _ASE_VALUES.get(model)
        if values is None:
            raise ValueError(f"{where}: block {n}: colour model {quote(model.decode('latin-1'))} is not one of RGB, "
                             "CMYK, LAB, Gray")
        raw = body[6 + 2 * chars:6 + 2 * chars + 4 * values]
        if len(raw) < 4 * values:
            raise ValueError(f"{where}: block {n}: {model.decode().strip()} colour {quote(name)} is cut short")
        v = struct.unpack(f">{values}f", raw)
        if model == b"RGB ":
            c = v
        elif model == b"Gray":
            c = (v[0],) * 3
        elif model == b"CMYK":
            c = tuple((1 - x) * (1 - v[3]) for x in v[:3])
        else:
            c = _lab_d50_to_srgb(v[0] * 100, v[1], v[2])
        if not all(map(np.isfinite, c)):
            raise ValueError(f"{where}: block {n}: colour {quote(name)} has a value that is not a number")
        add_colour(rgb, tuple(int(round(min(max(x, 0.0), 1.0) * 255)) for x in c), where)  # type: ignore[arg-type]
    return (groups[0] or None) if len(groups) == 1 else None, rgb


def parse_aseprite(data: bytes, where: str) -> list[tuple[int, int, int]]:
    """An Aseprite sprite's palette: the first frame's palette chunk (0x2019; the old 0x0004 one where a file has
    only that), entries in index order, those with alpha under ``ALPHA_THRESHOLD`` left out as elsewhere here."""
    if len(data) < 128 or data[4:6] != b"\xe0\xa5":
        raise ValueError(f"{where}: not an Aseprite file (no 0xA5E0 header)")
    pos = 128
    if len(data) < pos + 16 or data[pos + 4:pos + 6] != b"\xfa\xf1":
        raise ValueError(f"{where}: Aseprite file without a first frame")
    chunks = int.from_bytes(data[pos + 12:pos + 16], "little") or int.from_bytes(data[pos + 6:pos + 8], "little")
    end = min(len(data), pos + int.from_bytes(data[pos:pos + 4], "little"))
    pos += 16
    old: list[tuple[int, int, int]] | None = None
    for _ in range(chunks):
        if pos + 6 > end:
            break
        size, kind = int.from_bytes(data[pos:pos + 4], "little"), int.from_bytes(data[pos + 4:pos + 6], "little")
        body = data[pos + 6:pos + max(size, 6)]
        pos += max(size, 6)
        if kind == 0x2019 and len(body) >= 20:
            first, last = int.from_bytes(body[4:8], "little"), int.from_bytes(body[8:12], "little")
            if last < first or last - first >= MAX_COLORS:
                raise ValueError(f"{where}: palette chunk of entries {first}..{last}; a palette has at most "
                                 f"{MAX_COLORS} colours")
            rgb: list[tuple[int, int, int]] = []
            at = 20
            for i in range(first, last + 1):
                if at + 6 > len(body):
                    raise ValueError(f"{where}: palette entry {i} is cut short")
                flags, (r, g, b, a) = int.from_bytes(body[at:at + 2], "little"), body[at + 2:at + 6]
                at += 6
                if flags & 1:  # a name: a 16-bit length, then its bytes
                    at += 2 + int.from_bytes(body[at:at + 2], "little")
                if a >= ALPHA_THRESHOLD:
                    add_colour(rgb, (r, g, b), where)
            return rgb
        if kind == 0x0004 and old is None and len(body) >= 2:
            old, at = [], 2
            for _ in range(int.from_bytes(body[:2], "little")):
                n = body[at + 1] if at + 1 < len(body) else 0
                n, at = n or 256, at + 2
                for _ in range(n):
                    if at + 3 > len(body):
                        break
                    add_colour(old, tuple(body[at:at + 3]), where)  # type: ignore[arg-type]
                    at += 3
    if old:
        return old
    raise ValueError(f"{where}: Aseprite file without a palette chunk in its first frame")


# 256 swatches of 256x256 pixels: anything larger is not a palette, and converting it would take 4 bytes a pixel
MAX_STRIP_PIXELS = 1 << 24
# swatches a strip may hold: room for a palette laid out in rows with transparent padding; more cells cannot make a
# palette, and listing them (a 1-px checkerboard has millions) is what would cost the time and memory
MAX_STRIP_CELLS = 4 * MAX_COLORS
# a column of 256 swatches 256 px tall; Pillow keeps an image a row at a time, so a taller one costs far more to
# decode than its pixels (1 x 16M: 513 MB against 257 for 4096 x 4096), and no palette needs the rows
MAX_STRIP_ROWS = MAX_STRIP_PIXELS // 256


def _block_sides(packed: np.ndarray) -> tuple[int, int]:
    """The swatch width and height of a strip of packed colours [h,w]: per axis, the gcd of every equal-colour run's
    length along it. That equals the gcd of the run boundaries (every column where some row changes colour, every row
    where some column does) and the side, which one vectorised pass finds: a 1x strip gives 1x1, Lospec's 8x gives
    8x8, even when neighbouring swatches share a colour, as long as some run shows the block edge. Each axis on its
    own: one square side for both read swatches of 20x10 px as two colours each. (A strip of square swatches whose
    colours all come in equal pairs, a a b b, is the same picture as one of wide swatches, a b, and reads so.)"""
    h, w = packed.shape
    cols = np.flatnonzero((packed[:, 1:] != packed[:, :-1]).any(axis=0)) + 1
    rows = np.flatnonzero((packed[1:] != packed[:-1]).any(axis=1)) + 1
    return (int(np.gcd.reduce(np.concatenate(([w], cols)).astype(np.int64))),
            int(np.gcd.reduce(np.concatenate(([h], rows)).astype(np.int64))))


def _check_cells(where: str, w: int, h: int, block_w: int, block_h: int) -> None:
    cells = (h // block_h) * (w // block_w)
    if cells > MAX_STRIP_CELLS:
        raise ValueError(f"{where}: {w}x{h} in swatches of {block_w}x{block_h} px is {cells:,} swatches; a palette "
                         f"strip has at most {MAX_STRIP_CELLS:,}")


def _colour_table(im, where: str) -> list[tuple[int, int, int]]:
    """An indexed image's own colour table (PLTE) in its order, as Aseprite's Load Palette takes an indexed PNG (read
    as swatches, the pack's own --indexed sprite gave its pixels: 192 entries with repeats for a 16x12 sprite).
    Left out: transparent entries (a palette here holds colours; the indexed writers add their own clear index),
    and a table padded past the indices the pixels use with one repeated value (tools write 256 entries, most of
    them black, for a 2-colour picture)."""
    flat = im.getpalette("RGB") or []
    entries = [tuple(flat[i:i + 3]) for i in range(0, len(flat) - 2, 3)]
    clear = im.info.get("transparency")
    alphas = list(clear) if isinstance(clear, bytes) else [0 if i == clear else 255 for i in range(len(entries))]
    end = len(entries)
    if end >= 2 and entries[-1] == entries[-2]:
        used = im.getextrema()[1]  # the highest index a pixel uses
        start = end - 1
        while start - 1 > used and entries[start - 1] == entries[-1]:
            start -= 1
        if start > used and end - start >= 2:
            end = start
    rgb: list[tuple[int, int, int]] = []
    for i, colour in enumerate(entries[:end]):
        if (alphas[i] if i < len(alphas) else 255) >= ALPHA_THRESHOLD:
            add_colour(rgb, colour, where)
    return rgb


def parse_png(data: bytes, where: str) -> list[tuple[int, int, int]]:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # Pillow warns from 89M pixels; the strip limit below is far smaller
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:  # its words name the BytesIO, not the file
        raise ValueError(f"{where}: not a readable image (not a format Pillow identifies)") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable image is the same error to the user
        raise ValueError(f"{where}: not a readable image ({exc})") from None
    with im:
        if im.width * im.height > MAX_STRIP_PIXELS:
            raise ValueError(f"{where}: {im.width}x{im.height} is more than a palette strip needs "
                             f"({MAX_STRIP_PIXELS:,} pixels)")
        # the swatches' count needs the pixels (they need not be square: 256 of 3x10 px are a 768x10 strip)
        if im.height > MAX_STRIP_ROWS:
            raise ValueError(f"{where}: {im.width}x{im.height} is taller than a palette strip needs "
                             f"({MAX_STRIP_ROWS:,} rows)")
        if im.mode == "P":
            return _colour_table(im, where)
        try:
            # a 16-bit grey strip: Pillow's convert clips every value over 255, so each swatch read as white
            rgba = np.ascontiguousarray(narrow_grey(im).convert("RGBA"))
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{where}: not a readable image ({exc})") from None
    h, w = rgba.shape[:2]
    bw, bh = _block_sides(rgba.view(np.uint32)[..., 0])  # one RGBA pixel as one number: only equality is asked
    _check_cells(where, w, h, bw, bh)
    rgb: list[tuple[int, int, int]] = []
    for c in rgba[bh // 2::bh, bw // 2::bw].reshape(-1, 4).tolist():
        if c[3] >= ALPHA_THRESHOLD:  # transparent padding cells are skipped
            add_colour(rgb, (c[0], c[1], c[2]), where)
    return rgb


def read_palette(path: str | Path, data: bytes | None = None) -> Palette:
    """A palette file by its extension (`.hex`, `.gpl`, `.pal`, `.act`, `.txt`, `.png`), a RIFF palette, an Adobe
    swatch file and an Aseprite sprite (`.ase`, `.aseprite`) by their first bytes; another extension is read as .gpl
    when it starts with the GIMP header, else as .hex. Errors are ValueError naming file and line."""
    p = Path(path)
    where = p.name if len(p.name) <= 80 and p.name.isprintable() else quote(p.name, 80)
    too_large = f"{where}: over {MAX_FILE_BYTES:,} bytes; a palette file is far smaller"
    if data is None:
        try:
            data = read_bounded(p, MAX_FILE_BYTES)
        except FileTooLarge:
            raise ValueError(too_large) from None
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
            raise ValueError(f"{where}: {getattr(exc, 'strerror', None) or exc}") from None
    elif len(data) > MAX_FILE_BYTES:  # bytes an upload already holds: only the parsing is still to be bounded
        raise ValueError(too_large)
    ext = p.suffix.lower().lstrip(".")
    name: str | None = None
    if ext == "act":
        rgb = parse_act(data, where)
    elif data[:4] == b"ASEF":
        name, rgb = parse_ase(data, where)
    elif ext in ("ase", "aseprite") and data[4:6] == b"\xe0\xa5":
        rgb = parse_aseprite(data, where)
    elif ext in ("ase", "aseprite"):
        raise ValueError(f"{where}: neither an Adobe Swatch Exchange file ('ASEF') nor an Aseprite sprite")
    elif ext == "png" or data.startswith(_PNG_MAGIC):  # a strip from a pipe (/dev/fd/63) has no suffix
        rgb = parse_png(data, where)
    elif data[:4] == b"RIFF" and data[8:12] == b"PAL ":
        rgb = parse_riff_pal(data, where)
    else:
        lines = _lines(data, where)
        first = lines[0].strip().lstrip("\ufeff") if lines else ""
        if ext == "pal" or first == "JASC-PAL":
            rgb = parse_jasc(lines, where)
        elif ext == "gpl" or (ext != "hex" and first == "GIMP Palette"):
            name, rgb = parse_gpl(lines, where)
        elif ext == "txt" and any(re.fullmatch(r"[0-9A-Fa-f]{8}", ln.strip()) for ln in lines):
            rgb = parse_paintnet(lines, where)
        else:
            rgb = parse_hex_lines(lines, where)
    return _palette(name or p.stem, rgb, where)


# ------------------------------------------------------------------------------------------------ writers
# every character str.splitlines breaks at (what the readers split with)
_LINE_BREAKS = re.compile(r"[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+")
_SURROGATES = re.compile("[\ud800-\udfff]")


def _header_name(name: str) -> str:
    """The palette name as it goes into a header line: a line break in it would start a line of its own there,
    read back as a colour (or as an error). A lone surrogate (a name from a file name that is not UTF-8) cannot be
    encoded: it becomes U+FFFD."""
    name = _SURROGATES.sub("\ufffd", name)
    return _LINE_BREAKS.sub(" ", name).strip()


def _ase_block(kind: int, label: str, tail: bytes = b"") -> bytes:
    """One block of an Adobe swatch file: its name (cut at 1,000 characters: the length is a 16-bit count), then
    ``tail``."""
    text = (label[:1000] + "\0").encode("utf-16-be", errors="replace")
    body = (len(text) // 2).to_bytes(2, "big") + text + tail
    return kind.to_bytes(2, "big") + len(body).to_bytes(4, "big") + body


def palette_bytes(palette: Palette, fmt: str, *, block: int = 1) -> bytes:
    """The palette as a file of format `fmt` (one of FORMATS); `block` is the swatch size of a PNG strip."""
    colors = palette.colors.tolist()
    name = _header_name(palette.name)
    if fmt == "hex":
        return "".join(f"{r:02x}{g:02x}{b:02x}\n" for r, g, b in colors).encode()
    if fmt == "gpl":
        head = f"GIMP Palette\nName: {name}\nColumns: {min(16, len(colors))}\n#\n"
        return (head + "".join(f"{r:3d} {g:3d} {b:3d}\t#{r:02x}{g:02x}{b:02x}\n" for r, g, b in colors)).encode()
    if fmt == "pal":
        # JASC files are CRLF in the programs that write them
        return ("JASC-PAL\r\n0100\r\n" + f"{len(colors)}\r\n" +
                "".join(f"{r} {g} {b}\r\n" for r, g, b in colors)).encode()
    if fmt == "act":
        body = bytearray(_ACT_SIZE)
        body[:len(colors) * 3] = bytes(v for c in colors for v in c)
        return bytes(body) + len(colors).to_bytes(2, "big") + b"\xff\xff"  # no transparent index
    if fmt == "ase":
        # one group named as the palette (its name comes back), then a colour block a swatch named by its hex, RGB
        # floats, a normal (process) swatch
        swatches = [_ase_block(0x0001, f"#{r:02x}{g:02x}{b:02x}",
                               b"RGB " + struct.pack(">3f", r / 255, g / 255, b / 255) + (2).to_bytes(2, "big"))
                    for r, g, b in colors]
        blocks = [_ase_block(0xC001, name), *swatches, b"\xc0\x02\x00\x00\x00\x00"]
        return b"ASEF\x00\x01\x00\x00" + len(blocks).to_bytes(4, "big") + b"".join(blocks)
    if fmt == "txt":
        head = f";paint.net Palette File\n;Palette Name: {name}\n;Colors: {len(colors)}\n"
        return (head + "".join(f"FF{r:02X}{g:02X}{b:02X}\n" for r, g, b in colors)).encode()
    if fmt == "png":
        from PIL import Image

        if block < 1:
            raise ValueError("block must be at least 1")
        if len(colors) * block * block > MAX_STRIP_PIXELS:  # a strip read_palette would refuse is not written
            raise ValueError(f"block {block}: {len(colors)} swatches of {block}x{block} px are over "
                             f"{MAX_STRIP_PIXELS:,} pixels, more than a palette strip needs")
        strip = np.repeat(np.repeat(palette.colors[None, :, :], block, axis=0), block, axis=1)
        out = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(strip), "RGB").save(out, format="PNG")
        return out.getvalue()
    raise ValueError(f"palette format {fmt!r}: expected one of {', '.join(FORMATS)}")


def write_palette(path: str | Path, palette: Palette, *, block: int = 1) -> None:
    p = Path(path)
    fmt = p.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"{p.name}: unknown palette format; use one of .{', .'.join(FORMATS)}")
    from .imageio import write_file  # imports Pillow, which this module imports only where it reads PNGs

    write_file(p, palette_bytes(palette, fmt, block=block))
