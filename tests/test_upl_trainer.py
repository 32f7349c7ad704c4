"""UPL through train.py on a small generated tiny benchmark: top-K subset, prompt learning, results, resume."""

import json
import os
import subprocess
import sys

import pytest

from clipkit.tinybench import generate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = generate.BenchmarkConfig(train_per_class=3, test_per_class=2)  # 20 classes, 60 train + 40 test images


@pytest.fixture(scope="module")
def small_benchmark_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_data_upl")
    generate.generate_dataset(str(root), SMALL, log=None)
    return str(root)


def _run_upl(root, checkpoint, out, *opts):
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--root", root, "--trainer", "UPL", "--seed", "1",
           "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "tiny.yaml"),
           "--config-file", os.path.join(REPO, "configs", "trainers", "UPL", "tiny.yaml"),
           "--output-dir", str(out), "MODEL.BACKBONE.NAME", checkpoint, "OPTIM.MAX_EPOCH", "2",
           "DATALOADER.TRAIN_X.BATCH_SIZE", "8", "DATALOADER.NUM_WORKERS", "0", "USE_CUDA", "False",
           "TRAINER.UPL.NUM_PSEUDO_PER_CLASS", "2", *opts]
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_upl_trains_on_the_top_k_subset_and_resumes(small_benchmark_root, tiny_clip_path, tmp_path):
    out = tmp_path / "run"
    proc = _run_upl(small_benchmark_root, tiny_clip_path, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "UPL pseudo-labels:" in proc.stdout and "of 60 train images kept (top 2 per predicted class" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "UPL" and results["dataset"] == "tiny" and results["num_test"] == 40
    summary = results["run_summary"]
    covered = summary["pl_classes_covered"]
    assert 1 <= covered <= 20 and covered <= summary["pl_subset_size"] <= 2 * covered
    assert summary["trainable_parameters"] == 16 * 64  # 16 context vectors of the tiny text width
    assert [r["epoch"] for r in results["epochs"]] == [1, 2]
    assert all(r["pl_subset_size"] == summary["pl_subset_size"] for r in results["epochs"])
    # Re-launched into the finished folder: resumes (no epoch trained) and writes the same accuracy.
    again = _run_upl(small_benchmark_root, tiny_clip_path, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["accuracy_last"] == results["accuracy_last"]


def test_upl_without_a_custom_template_says_how_to_set_one(small_benchmark_root, tiny_clip_path, tmp_path):
    proc = _run_upl(small_benchmark_root, tiny_clip_path, tmp_path / "run", "TRAINER.UPL.TEMPLATE", "")
    assert proc.returncode != 0
    assert "No custom template for dataset key 'tiny'" in proc.stderr and "TRAINER.UPL.TEMPLATE" in proc.stderr


def test_no_label_leak(tiny_image_folder, tiny_clip_path, tmp_path):
    """Permuting the train labels changes nothing in UPL's training: it learns from zero-shot pseudo-labels only."""
    import tests.plugins.image_folder_dataset  # noqa: F401  (registers TestImageFolder)
    import train
    from clipkit.dassl import build_trainer
    from clipkit.testing import assert_no_label_leak

    root, _ = tiny_image_folder

    def make_trainer(output_dir):
        argv = ["--root", root, "--trainer", "UPL", "--output-dir", output_dir, "--seed", "1",
                "--config-file", os.path.join(REPO, "configs", "trainers", "UPL", "tiny.yaml"),
                "DATASET.NAME", "TestImageFolder", "MODEL.BACKBONE.NAME", tiny_clip_path,
                "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "OPTIM.MAX_EPOCH", "2",
                "USE_CUDA", "False", "TRAINER.UPL.NUM_PSEUDO_PER_CLASS", "3"]
        return build_trainer(train.setup_cfg(train.build_parser().parse_args(argv)))

    assert_no_label_leak(make_trainer, str(tmp_path))
