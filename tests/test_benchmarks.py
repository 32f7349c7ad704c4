"""The training-step benchmarks run one step on the tiny architecture and print their table (no timing asserted)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("script, expected", [
    ("bench_microclip.py", ["training throughput", "NCut share", "peak memory"]),
    ("bench_dpa.py", ["training throughput", "prototype rebuild", "peak memory"]),
    ("bench_official_step.py", ["| clipkit |", "| official cost", "speed-up over the official step",
                                "max |difference| of [CLS] features and patch tokens"]),
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


def test_train_step_benchmark_covers_every_trainer_and_feeds_the_planner(tmp_path):
    throughput = tmp_path / "tiny.json"
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "bench_train_step.py"), "--trainer", "all", "--backbone",
           "tiny", "--batch-size", "8", "--steps", "1", "--warmup", "0", "--device", "cpu", "--threads", "1",
           "--json", str(throughput)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = ["DPA", "LaFTer", "MicroCLIP", "NtUA", "POUF", "ReCLIP", "UPL"]
    for method in trained + ["ZeroshotCLIP", "CuPL", "WCA"]:
        assert f"| {method} |" in proc.stdout, method
    import json

    rates = json.loads(throughput.read_text())
    assert sorted(rates) == trained and all(rates[m]["tiny"] > 0 for m in trained)
    from clipkit import sweep

    out = []
    assert sweep.main(["tiny", "--plan", "--throughput", str(throughput), "--output-root", str(tmp_path / "out")],
                      log=out.append) == 0
    assert "without a measured throughput" not in "\n".join(out)  # every trained method has its measured rate


def test_loader_benchmark_covers_every_trainer(tmp_path):
    rows = tmp_path / "loader.json"
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "bench_loader.py"), "--trainer", "all", "--workers", "0",
           "--batch-size", "2", "--batches", "1", "--images", "3", "--device", "cpu", "--json", str(rows)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for method in ["DPA", "LaFTer", "NtUA", "POUF", "ReCLIP", "UPL"]:
        assert f"| {method} | pil |" in proc.stdout, method
    for place in ("pil", "tensor", "device"):
        assert f"| MicroCLIP | {place} |" in proc.stdout, place
    for method in ["ZeroshotCLIP", "CuPL", "WCA"]:
        assert f"| {method} | - | no train loader" in proc.stdout, method
    import json

    measured = [row for row in json.loads(rows.read_text())["rows"] if not row.get("training_free")]
    assert all(row["samples_per_s"] > 0 and abs(sum(row["shares"].values()) - 1) < 1e-6 for row in measured)
