"""Live A/B parity: the same scenarios under real Dassl (with clipkit's shims) and the internal engine, each backend
in its own subprocess (registries are process-global); normalised log.txt and results.json must be identical.

Skipped unless ``import dassl`` works in this interpreter (see README: "Checking parity with real Dassl").
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import write_descriptions

pytestmark = [
    pytest.mark.dassl,
    pytest.mark.skipif(importlib.util.find_spec("dassl") is None, reason="Dassl.pytorch is not installed"),
]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGINS = "tests.plugins.image_folder_dataset,tests.plugins.trivial_trainer"
COMMON = ["USE_CUDA", "False", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
          "DATALOADER.TEST.BATCH_SIZE", "4", "DATASET.NAME", "TestImageFolder"]
TRAIN = ["INPUT.SIZE", "(32, 32)", "INPUT.TRANSFORMS", "['random_resized_crop', 'random_flip', 'normalize']",
         "OPTIM.NAME", "sgd", "OPTIM.LR", "0.5", "OPTIM.MAX_EPOCH", "3", "OPTIM.LR_SCHEDULER", "cosine",
         "OPTIM.WARMUP_EPOCH", "1", "OPTIM.WARMUP_TYPE", "constant"]
# config_digest hashes the dump including OUTPUT_DIR (different per backend here); the dumps themselves are compared,
# with paths normalised, as part of log.txt.
VOLATILE_RESULT_KEYS = ("wall_time_s", "peak_memory_mb", "config_digest")


def normalise_log(text, out_dir):
    """Drop what legitimately differs between runs: timings, ETA, elapsed time, the system-info block, paths."""
    text = text.replace(str(out_dir), "<OUT>")
    text = re.sub(r"\*\* System info \*\*\n.*?(?=\nLoading trainer: )", "** System info **", text, flags=re.S)
    text = re.sub(r" time \d+\.\d+ \(\d+\.\d+\) data \d+\.\d+ \(\d+\.\d+\)", "", text)
    text = re.sub(r" eta \d+:\d\d:\d\d", "", text)
    return re.sub(r"Elapsed: \d+:\d\d:\d\d", "Elapsed: <T>", text)


def run_backend(backend, args, out_dir):
    # keep the caller's PYTHONPATH: Dassl may be importable through it rather than installed
    python_path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, CLIPKIT_ENGINE=backend, CLIPKIT_EXTRA_PLUGINS=PLUGINS, PYTHONPATH=python_path)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--output-dir", str(out_dir)] + args,
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{backend} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    if backend == "dassl":
        assert "[clipkit.dassl] shim:" in proc.stderr  # the real Dassl backend was live
    results = json.loads((out_dir / "results.json").read_text())
    for key in VOLATILE_RESULT_KEYS:
        results.pop(key)
    return normalise_log((out_dir / "log.txt").read_text(), out_dir), results


def assert_parity(args, tmp_path, name):
    dassl_log, dassl_results = run_backend("dassl", args, tmp_path / f"{name}_dassl")
    internal_log, internal_results = run_backend("internal", args, tmp_path / f"{name}_internal")
    assert dassl_log.splitlines() == internal_log.splitlines()
    assert dassl_results == internal_results
    return internal_log


def test_parity_warmup_cosine_training(tiny_image_folder, tmp_path):
    root, _ = tiny_image_folder
    log = assert_parity(["--root", root, "--seed", "1", "--trainer", "TrivialProbe"] + COMMON + TRAIN, tmp_path,
                        "train")
    assert "Finish training" in log and "lr 1.0000e-05" in log


def test_parity_best_val_per_class_and_every_epoch_test(tiny_image_folder, tmp_path):
    root, _ = tiny_image_folder
    args = (["--root", root, "--seed", "2", "--trainer", "TrivialProbe"] + COMMON + TRAIN
            + ["TEST.FINAL_MODEL", "best_val", "TEST.PER_CLASS_RESULT", "True", "TEST.EVAL_EVERY_EPOCH", "True",
               "TRAIN.CHECKPOINT_FREQ", "1"])
    log = assert_parity(args, tmp_path, "bestval")
    assert "Deploy the model with the best val performance" in log and "=> per-class result" in log


def test_parity_eval_only_training_free(tiny_image_folder, tmp_path, tiny_clip_path):
    root, classnames = tiny_image_folder
    write_descriptions(root, classnames)
    args = ["--root", root, "--trainer", "TrivialZeroShot", "--backbone", tiny_clip_path, "--eval-only",
            "INPUT.SIZE", "(64, 64)", "INPUT.TRANSFORMS", "['normalize']"] + COMMON
    assert "load_model() is skipped" in assert_parity(args, tmp_path, "zeroshot")


def test_parity_relaunch_of_finished_run(tiny_image_folder, tmp_path):
    root, _ = tiny_image_folder
    args = ["--root", root, "--seed", "1", "--trainer", "TrivialProbe"] + COMMON + TRAIN
    for backend in ("dassl", "internal"):
        out_dir = tmp_path / backend
        run_backend(backend, args, out_dir)
        first = (out_dir / "results.json").read_text()
        run_backend(backend, args, out_dir)
        assert (out_dir / "results.json").read_text() == first, backend
