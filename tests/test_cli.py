"""train.py end to end in subprocesses (CoOp CLI, log.txt with Dassl's result block, results.json), merge order."""

import json
import os
import re
import subprocess
import sys

import pytest

from clipkit import results as results_io
from tests.conftest import write_descriptions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGINS = "tests.plugins.image_folder_dataset,tests.plugins.trivial_trainer"
COOP_FLAGS = ["--root", "--output-dir", "--resume", "--seed", "--source-domains", "--target-domains", "--transforms",
              "--trainer", "--backbone", "--head", "--config-file", "--dataset-config-file", "--eval-only",
              "--model-dir", "--load-epoch", "--no-train"]
RUN_OPTS = ["USE_CUDA", "False", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4"]


def run_train(args, timeout=300):
    env = dict(os.environ, CLIPKIT_EXTRA_PLUGINS=PLUGINS, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "train.py")] + args, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"train.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def write_yaml(path, text):
    path.write_text(text)
    return str(path)


def test_help_lists_the_coop_flags():
    out = run_train(["--help"]).stdout
    for flag in COOP_FLAGS:
        assert flag in out
    assert "opts" in out


def test_train_writes_dassl_log_and_results(tiny_image_folder, tmp_path):
    root, _ = tiny_image_folder
    method_yaml = write_yaml(tmp_path / "method.yaml", (
        "INPUT:\n  SIZE: (32, 32)\n  TRANSFORMS: [\"random_resized_crop\", \"random_flip\", \"normalize\"]\n"
        "OPTIM:\n  NAME: sgd\n  LR: 0.5\n  MAX_EPOCH: 2\n  LR_SCHEDULER: cosine\n  WARMUP_EPOCH: 1\n"
        "  WARMUP_TYPE: constant\nTEST:\n  EVAL_EVERY_EPOCH: True\n"))
    dataset_yaml = write_yaml(tmp_path / "dataset.yaml", "DATASET:\n  NAME: TestImageFolder\n")
    out_dir = tmp_path / "out"
    args = ["--root", root, "--output-dir", str(out_dir), "--seed", "1", "--trainer", "TrivialProbe",
            "--config-file", method_yaml, "--dataset-config-file", dataset_yaml] + RUN_OPTS
    run_train(args)

    log = (out_dir / "log.txt").read_text()
    assert "** Arguments **" in log and "** Config **" in log and "** System info **" in log
    assert "Loading trainer: TrivialProbe" in log and "Loading dataset: TestImageFolder" in log
    after = log[log.index("Finish training"):]
    assert re.search(r"=> result\n\* total: 6\n\* correct: \d\n\* accuracy: \d+\.\d%\n\* error: \d+\.\d%\n"
                     r"\* macro_f1: \d+\.\d%\n", after)
    results_path = out_dir / "results.json"
    data = results_io.read_results(str(results_path))
    assert data["method"] == "TrivialProbe" and data["dataset"] == "test_folder" and data["seed"] == 1
    assert len(data["epochs"]) == 2 and data["best_is_test_selection"] is True
    # Re-launching into the same folder (no retraining, identical results.json) is covered in-process by
    # tests/test_engine_clip_trainer.py::test_relaunch_of_finished_run_rewrites_identical_results.


def test_eval_only_training_free_writes_results(tiny_image_folder, tmp_path, tiny_clip_path):
    root, classnames = tiny_image_folder
    write_descriptions(root, classnames)
    out_dir = tmp_path / "zs"
    proc = run_train(["--root", root, "--output-dir", str(out_dir), "--trainer", "TrivialZeroShot", "--backbone",
                      tiny_clip_path, "--eval-only", "DATASET.NAME", "TestImageFolder", "INPUT.SIZE", "(64, 64)"]
                     + RUN_OPTS)
    assert "load_model() is skipped as no pretrained model is given" in proc.stdout
    data = json.loads((out_dir / "results.json").read_text())
    assert data["method"] == "TrivialZeroShot" and data["best_epoch"] == 0 and data["num_test"] == 6


def test_merge_order_and_bad_key_error(tmp_path):
    sys.path.insert(0, REPO)
    import train

    os.environ["CLIPKIT_EXTRA_PLUGINS"] = PLUGINS
    try:
        dataset_yaml = write_yaml(tmp_path / "d.yaml",
                                  "DATASET:\n  NAME: FromDataset\nOPTIM:\n  LR: 0.1\n  MAX_EPOCH: 7\n")
        method_yaml = write_yaml(tmp_path / "m.yaml", "OPTIM:\n  LR: 0.2\nSEED: 5\n")
        parser = train.build_parser()
        args = parser.parse_args(["--dataset-config-file", dataset_yaml, "--config-file", method_yaml,
                                  "--trainer", "FromCLI", "OPTIM.MAX_EPOCH", "9"])
        cfg = train.setup_cfg(args)
        assert cfg.DATASET.NAME == "FromDataset" and cfg.OPTIM.LR == 0.2 and cfg.TRAINER.NAME == "FromCLI"
        assert cfg.OPTIM.MAX_EPOCH == 9 and cfg.SEED == 5  # --seed not given (-1) keeps the YAML's seed
        assert cfg.is_frozen() and "TRIVIAL" in cfg.TRAINER and cfg.TEST.EVAL_EVERY_EPOCH is False
        cfg = train.setup_cfg(parser.parse_args(["--config-file", method_yaml, "--seed", "0"]))
        assert cfg.SEED == 0
        bad_yaml = write_yaml(tmp_path / "bad.yaml", "OPTIM:\n  LRR: 0.1\n")
        with pytest.raises(KeyError, match=r"--config-file .*bad\.yaml: .*OPTIM\.LRR"):
            train.setup_cfg(parser.parse_args(["--config-file", bad_yaml]))
        with pytest.raises(FileNotFoundError, match="--dataset-config-file .*missing.yaml: no such file"):
            train.setup_cfg(parser.parse_args(["--dataset-config-file", str(tmp_path / "missing.yaml")]))
    finally:
        os.environ.pop("CLIPKIT_EXTRA_PLUGINS", None)
