"""The training-step benchmarks run one step on the tiny architecture and print their table (no timing asserted)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("script, expected", [
    ("bench_microclip.py", ["training throughput", "NCut share", "peak memory"]),
    ("bench_dpa.py", ["training throughput", "prototype rebuild", "peak memory"]),
])
def test_benchmark_prints_its_table(script, expected):
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", script), "--backbone", "tiny", "--batch-size", "4",
           "--steps", "1", "--warmup", "0", "--device", "cpu", "--threads", "1"]
    if script == "bench_dpa.py":
        cmd += ["--train-size", "100"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in expected:
        assert line in proc.stdout, (line, proc.stdout)
