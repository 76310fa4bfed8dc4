"""``pixart snap``, ``pixart cleanup`` and ``pixart convert --method outline`` end to end on temporary files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.cli import run as _run
from tests.support.pixelart import enlarge, sprite


@pytest.fixture
def art(tmp_path: Path) -> Path:
    spr = sprite(20, 24, seed=4)
    Image.fromarray(enlarge(spr, 5, head=(2, 1))).save(tmp_path / "big.png")
    Image.fromarray(enlarge(spr, 3.5)).save(tmp_path / "big2.png")
    np.save(tmp_path / "sprite.npy", spr)
    return tmp_path


def test_snap_file_with_json_report(art, capsys):
    code, out, err = _run(capsys, "snap", str(art / "big.png"), str(art / "small.png"), "--json",
                          str(art / "grid.json"))
    assert code == 0, err
    assert "grid 5.00x5.00 px per cell" in out and "-> 24x20" in out
    small = np.asarray(Image.open(art / "small.png").convert("RGB"))
    assert np.array_equal(small, np.load(art / "sprite.npy"))
    grid = json.loads((art / "grid.json").read_text())
    assert grid["columns"] == 24 and grid["offset_x"] == 3 and len(grid["edges_y"]) == 21


def test_snap_folder_with_known_cell_size_and_scale(art, capsys):
    (art / "in").mkdir()
    for name in ("big.png", "big2.png"):
        (art / "in" / name).write_bytes((art / name).read_bytes())
    code, out, err = _run(capsys, "snap", str(art / "in"), str(art / "out"), "--scale", "2", "--json", "-", "-q")
    assert code == 0, err
    report = json.loads(out)
    assert sorted(Path(k).name for k in report) == ["big.png", "big2.png"]
    assert Image.open(art / "out" / "big.png").size == (48, 40)
    assert Image.open(art / "out" / "big2.png").size == (48, 40)
    code, out, err = _run(capsys, "snap", str(art / "big2.png"), str(art / "f.png"), "--cell-size", "3.5x3.5")
    assert code == 0 and "-> 24x20" in out


def test_snap_without_a_grid_writes_the_input_and_says_so(tmp_path, capsys):
    flat = np.full((40, 50, 3), 128, np.uint8)
    Image.fromarray(flat).save(tmp_path / "flat.png")
    code, out, _ = _run(capsys, "snap", str(tmp_path / "flat.png"), str(tmp_path / "o.png"))
    assert code == 0 and "no pixel grid detected" in out
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), flat)


def test_cleanup_background_and_report(art, capsys):
    img = np.full((16, 16, 3), 255, np.uint8)
    img[4:12, 4:12] = (200, 30, 30)
    img[1, 1] = (0, 0, 0)
    Image.fromarray(img).save(art / "c.png")
    code, out, err = _run(capsys, "cleanup", str(art / "c.png"), str(art / "c_out.png"), "--background", "auto")
    assert code == 0, err
    assert "1 isolated pixels removed" in out and "background #ffffff" in out
    res = np.asarray(Image.open(art / "c_out.png"))
    assert res.shape == (16, 16, 4) and res[0, 0, 3] == 0 and res[8, 8, 3] == 255 and res[1, 1, 3] == 0
    code, _, err = _run(capsys, "cleanup", str(art / "c.png"), str(art / "c.jpg"), "--background", "#fff")
    assert code == 2 and "JPEG cannot store" in err


def test_convert_outline_method(tmp_path, capsys):
    img = np.full((64, 64, 3), 230, np.uint8)
    img[30:32, 8:56] = 10  # a 2-px line through 8-px blocks
    Image.fromarray(img).save(tmp_path / "l.png")
    code, _, err = _run(capsys, "convert", str(tmp_path / "l.png"), str(tmp_path / "o.png"), "--pixel-size", "8",
                        "--method", "outline")
    assert code == 0, err
    out = np.asarray(Image.open(tmp_path / "o.png"))
    assert (out[3, 1:7] < 60).all() and (out[2] > 200).all()
    code, _, err = _run(capsys, "convert", str(tmp_path / "l.png"), str(tmp_path / "k.png"), "--pixel-size", "8",
                        "--method", "kcentroid")
    assert (np.asarray(Image.open(tmp_path / "k.png")) > 200).all()


@pytest.mark.parametrize("argv, needle", [
    (["snap", "{d}/big.png", "{d}/o.png", "--cell-size", "1"], "argument --cell-size"),
    (["snap", "{d}/big.png", "{d}/o.png", "--cell-size", "axb"], "argument --cell-size"),
    (["snap", "{d}/nope.png", "{d}/o.png"], "nope.png: no such file"),
    (["cleanup", "{d}/big.png", "{d}/o.png", "--background", "blue"], "--background"),
    (["cleanup", "{d}/big.png", "{d}/o.png", "--rare", "2"], "argument --rare"),
    (["cleanup", "{d}/big.png", "{d}/o.png", "--merge", "nan"], "merge:"),
    (["cleanup", "{d}/big.png", "{d}/o.png", "--background", "auto", "--tolerance", "nan"], "tolerance:"),
    (["snap", "{d}/big.png", "{d}/o.png", "--max-size", "inf"], "max_size:"),
    (["snap", "{d}/big.png", "{d}/o.png", "--min-size", "nan"], "min_size:"),
    (["snap", "{d}/big.png", "{d}/o.png", "--scale", "100000"], "--scale 100000"),  # was a 7 TiB MemoryError
])
def test_bad_input_exits_2_with_one_line(art, capsys, argv, needle):
    code, _, err = _run(capsys, *[a.replace("{d}", str(art)) for a in argv])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
