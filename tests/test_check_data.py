"""The data preflight (python -m clipkit.check_data, scripts/run_all.sh --check-data) on a generated Food-101 tree
with a truncated JPEG and a non-image file among its images."""

import json
import os
import subprocess

import numpy as np
from PIL import Image

from clipkit import check_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["apple_pie", "pho", "ramen"]


def build_food(root, rng=np.random.default_rng(0)):
    """Food-101 layout, 3 classes x (2 train + 1 test) 32 px JPEGs; returns {name: path} of two broken images."""
    d = root / "food-101"
    lines = {"train": [], "test": []}
    for folder in CLASSES:
        os.makedirs(d / "images" / folder)
        for i in range(3):
            pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(d / "images" / folder / f"{i}.jpg", quality=90)
            lines["train" if i < 2 else "test"].append(f"{folder}/{i}")
    os.makedirs(d / "meta")
    for name, entries in [("classes", CLASSES)] + list(lines.items()):
        (d / "meta" / f"{name}.txt").write_text("".join(f"{e}\n" for e in entries))
    truncated, not_image = d / "images" / "pho" / "1.jpg", d / "images" / "ramen" / "2.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])
    not_image.write_text("<html>404 Not Found</html>")
    return {"truncated": str(truncated), "not_image": str(not_image)}


def descriptions(path, classes):
    path.write_text(json.dumps({name.replace("_", " "): [f"a photo of {name}."] for name in classes}))
    return str(path)


def test_preflight_finds_truncated_and_non_image_files(tmp_path, capsys):
    bad = build_food(tmp_path)
    bad_files = tmp_path / "bad.txt"
    text = descriptions(tmp_path / "food.json", CLASSES[:2])  # "ramen" has no descriptions
    args = ["--root", str(tmp_path), "--datasets", "food101,dtd", "--workers", "1", "--bad-files", str(bad_files),
            "--opts", "DATASET.DESCRIPTIONS", text]
    assert check_data.main(args) == 1
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if line.startswith("| ") and "dataset" not in line}
    # train, paper train, test, paper test, classes, unreadable, no descriptions, status
    assert rows["food101"] == ["6", "75,750", "3", "25,250", "3", "2", "1", "FAIL"]
    assert rows["dtd"][-1] == "ERROR" and "dataset folder not found" in out  # not there: reported, others checked
    assert "differ from the paper's Table 10" in out
    listed = {line.split("\t")[1]: line.split("\t")[2] for line in bad_files.read_text().splitlines()}
    assert set(bad.values()) <= set(listed)
    assert "truncated" in listed[bad["truncated"]].lower()
    assert "cannot identify image file" in listed[bad["not_image"]]
    assert "'ramen'" in listed["-"] or any("ramen" in reason for reason in listed.values())

    for path in bad.values():  # repaired copies and complete descriptions: the check passes
        Image.new("RGB", (8, 8)).save(path)
    descriptions(tmp_path / "food.json", CLASSES)
    assert check_data.main(args[:3] + ["food101"] + args[4:]) == 0
    assert "all 1 datasets passed" in capsys.readouterr().out
    assert bad_files.read_text() == ""


def test_missing_descriptions_can_be_ignored(tmp_path, capsys):
    build_food(tmp_path)
    args = ["--root", str(tmp_path), "--datasets", "food101", "--workers", "2", "--bad-files",
            str(tmp_path / "bad.txt"), "--opts", "DATASET.DESCRIPTIONS", str(tmp_path / "none.json")]
    assert check_data.main(args) == 1
    assert "no description file" in capsys.readouterr().out
    for name in ("pho/1.jpg", "ramen/2.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / "food-101" / "images" / name)
    assert check_data.main(args + ["--ignore-descriptions"]) == 0


def test_preflight_takes_root_and_datasets_from_the_sweep_arguments(tmp_path, capsys):
    build_food(tmp_path)
    sweep_args = ["vit_b32", "--data-root", str(tmp_path), "--datasets", "food101", "--methods", "ZeroshotCLIP",
                  "--seeds", "1", "--gpus", "0,1"]
    args = ["--workers", "1", "--ignore-descriptions", "--bad-files", str(tmp_path / "bad.txt"), "--sweep-args"]
    assert check_data.main(args + sweep_args) == 1
    assert f"checking 1 datasets under {tmp_path}" in capsys.readouterr().out
    assert check_data.main(args + ["vit_b32", "--datasets", "food101"]) == 2  # the sweep's own rule
    assert "--data-root DIR is required" in capsys.readouterr().err


STUB_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
if [[ "$2" == clipkit.check_data ]]; then exit "$STUB_CHECK_RC"; fi
"""


def test_run_all_check_data_runs_the_preflight_before_the_sweep(tmp_path):
    """scripts/run_all.sh --check-data: the preflight gets $CHECK_DATA_OPTS and the sweep's arguments (without
    --check-data); the sweep runs only when it passes. A stub interpreter records both calls."""
    stub = tmp_path / "python"
    stub.write_text(STUB_PYTHON)
    stub.chmod(0o755)
    log = tmp_path / "calls.txt"
    script = os.path.join(REPO, "scripts", "run_all.sh")
    sweep_args = ["vit_b32", "--data-root", "/data", "--datasets", "dtd,food101"]
    for check_rc, expected_rc in ((1, 1), (0, 0)):
        log.unlink(missing_ok=True)
        env = dict(os.environ, PYTHON=str(stub), STUB_LOG=str(log), STUB_CHECK_RC=str(check_rc),
                   CHECK_DATA_OPTS="--workers 4 --ignore-descriptions")
        done = subprocess.run(["bash", script, *sweep_args[:1], "--check-data", *sweep_args[1:]], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == expected_rc, done.stderr
        calls = log.read_text().splitlines()
        check_call = "-m clipkit.check_data --workers 4 --ignore-descriptions --sweep-args " + " ".join(sweep_args)
        assert calls[0] == check_call
        if check_rc:
            assert len(calls) == 1 and "the data check failed" in done.stderr
        else:
            assert calls[1:] == ["-m clipkit.sweep " + " ".join(sweep_args)]
    log.unlink()
    subprocess.run(["bash", script, *sweep_args], env=env, check=True, timeout=60)
    assert log.read_text().splitlines() == ["-m clipkit.sweep " + " ".join(sweep_args)]  # no check without the flag
