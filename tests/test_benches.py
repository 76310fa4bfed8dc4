"""Every benchmark that needs no service still runs, at its smallest size, to its ratio line: a refactor once
removed a method bench_loop_stalls called, and nothing noticed until a run by hand. The figures themselves are
not asserted (timings belong to the benches); only that each prints its comparison against its reference."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# script, smallest options, a line its run must print (the comparison against its reference)
BENCHES = [
    ("bench_rgb565.py", ["--size", "64x64", "--repeat", "3", "--seed-repeat", "1"],
     r"faster than the seed loop .*x OpenCV's time"),
    ("bench_quantize.py", ["--runs", "1", "--size", "64", "--cold-runs", "0"], r"pixart none rgb.*\d\.\d{3}"),
    ("bench_snap.py", ["--per-condition", "1"], r"all +pixart snap +\d+\.\d%"),
    ("bench_cleanup.py", ["--images", "2"], r"pixart cleanup, background auto +\d+\.\d+%"),
    ("bench_outline.py", ["--images", "2"], r"pixart kcentroid .* \d\.\d\d$"),
    ("bench_listing.py", ["--jobs", "5", "--param-mb", "0.1"], r"ratio before/after: memory \d+x, time [\d.]+x"),
    ("bench_loop_stalls.py", ["--repeat", "1"], r"object_info: \d+ workflows checked .* \d+x"),
    ("bench_memory.py", [], r"resident-set growth, peak .* \d\.\d\d$"),
]


@pytest.mark.parametrize("script,args,line", BENCHES, ids=[b[0] for b in BENCHES])
def test_bench_runs_to_its_comparison(script: str, args: list[str], line: str) -> None:
    run = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert re.search(line, run.stdout, re.MULTILINE), run.stdout[-3000:]
