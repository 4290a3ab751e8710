"""benchmarks/limit.py at a tiny size: every engine runs, its output matches the source, and the
report has each engine's time, its ratios and the CPU bound (issue 30)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

LIMIT = Path(__file__).resolve().parent.parent / "benchmarks" / "limit.py"
ENGINES = ("lazyexport", "tensorstore", "dask-zarrs", "dask")
NUMBER = r"(\d+\.\d+)"


@pytest.mark.slow
def test_limit_benchmark_reports_every_engine_and_the_bound(tmp_path):
    cmd = [sys.executable, str(LIMIT), "--sizes", "4MiB", "--repeat", "1", "--jobs", "copy"]
    done = subprocess.run(cmd + ["--out", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    for engine in ENGINES:
        row = re.search(
            rf"^{engine} +{NUMBER} +{NUMBER} +\d+Mi +{NUMBER} +{NUMBER} +{NUMBER}  ok", text, re.M
        )
        assert row, f"no result row for {engine} in:\n{text}"
        assert float(row.group(1)) > 0
        assert f"round 1 {engine}: " in text
    parts = rf"\(decode {NUMBER} \+ compute {NUMBER} \+ encode {NUMBER} CPU-s\) / (\d+) cores"
    bound = re.search(rf"^bound: {NUMBER} s = {parts}", text, re.M)
    assert bound, f"no bound line in:\n{text}"
    decode, compute, encode, cores = (float(bound.group(i)) for i in range(2, 6))
    assert float(bound.group(1)) == pytest.approx((decode + compute + encode) / cores, abs=0.002)
    assert decode > 0 and encode > 0
