"""Run folders never lie: a different config is refused (or archived with --force), --eval-only never overwrites a
trained result, one process per folder (fcntl lock), failed.txt on a crash, YAML errors name the file, and the log
tee gives stdout back intact (also with a stand-in for Dassl's Logger, which closes the console)."""

import io
import json
import os
import sys

import pytest

import tests.plugins.image_folder_dataset  # noqa: F401  (registers TestImageFolder)
import tests.plugins.trivial_trainer  # noqa: F401  (registers TrivialProbe / TrivialZeroShot)
from clipkit.run_folder import (ConfigMismatchError, RunFolder, RunLockedError, TrainedResultError,
                                       config_differences, numerics_config)

OPTS = ["DATASET.NAME", "TestImageFolder", "USE_CUDA", "False", "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "INPUT.SIZE", "(32, 32)", "OPTIM.NAME", "sgd", "OPTIM.LR", "0.5"]


def args_for(root, out, *extra, trainer="TrivialProbe", flags=()):
    return ["--root", root, "--output-dir", str(out), "--seed", "1", "--trainer", trainer, *flags, *OPTS,
            "OPTIM.MAX_EPOCH", "2", *extra]


def run(argv):
    import train

    train.main(train.build_parser().parse_args(argv))


@pytest.fixture
def finished(tiny_image_folder, tmp_path):
    root, _ = tiny_image_folder
    out = tmp_path / "run"
    run(args_for(root, out))
    return root, out, (out / "results.json").read_bytes()


def test_a_changed_config_is_refused_with_the_keys_and_force_archives(finished):
    root, out, before = finished
    with pytest.raises(ConfigMismatchError) as info:
        run(args_for(root, out, "OPTIM.LR", "0.2", "OPTIM.MAX_EPOCH", "3"))
    message = str(info.value)
    assert "OPTIM.LR: 0.5 (recorded) -> 0.2 (now)" in message and "OPTIM.MAX_EPOCH: 2 (recorded) -> 3 (now)" in message
    assert "--output-dir" in message and "--force" in message
    assert (out / "results.json").read_bytes() == before  # nothing touched

    run(args_for(root, out, "OPTIM.LR", "0.2", "OPTIM.MAX_EPOCH", "3", flags=["--force"]))
    archives = os.listdir(out / "archive")
    assert len(archives) == 1 and (out / "archive" / archives[0] / "results.json").read_bytes() == before
    results = json.loads((out / "results.json").read_text())
    assert results["best_epoch"] == 3 and [e["epoch"] for e in results["epochs"]] == [1, 2, 3]


def test_location_and_cadence_keys_and_other_methods_nodes_do_not_count(finished, tmp_path):
    root, out, before = finished
    # same experiment, other print/checkpoint cadence: resumes the finished run (no refusal, same result)
    run(args_for(root, out, "TRAIN.PRINT_FREQ", "1", "TRAIN.CHECKPOINT_FREQ", "1"))
    assert json.loads((out / "results.json").read_text())["accuracy_last"] == json.loads(before)["accuracy_last"]
    # identical configs in two folders have the same digest
    other = tmp_path / "elsewhere"
    run(args_for(root, other))
    digests = {json.loads((d / "results.json").read_text())["config_digest"] for d in (out, other)}
    assert len(digests) == 1

    import train

    cfg = train.setup_cfg(train.build_parser().parse_args(args_for(root, out, trainer="UPL")))
    kept = numerics_config(cfg)
    assert "OUTPUT_DIR" not in kept and "TRAINER.UPL.N_CTX" in kept
    assert not any(key.startswith("TRAINER.MICROCLIP.") for key in kept)


def test_intra_epoch_checkpoint_key_is_recorded_only_when_on(tiny_image_folder):
    """TRAIN.CHECKPOINT_EVERY_STEPS 0 (the default) leaves run_config.json and config_digest as before the key
    existed; a value > 0 (it reseeds DataLoader workers per batch) is recorded and a change against an older record
    without the key is refused."""
    import train

    root, _ = tiny_image_folder
    off = numerics_config(train.setup_cfg(train.build_parser().parse_args(args_for(root, "/tmp/x"))))
    on = numerics_config(train.setup_cfg(train.build_parser().parse_args(
        args_for(root, "/tmp/x", "TRAIN.CHECKPOINT_EVERY_STEPS", "100"))))
    assert "TRAIN.CHECKPOINT_EVERY_STEPS" not in off and on["TRAIN.CHECKPOINT_EVERY_STEPS"] == 100
    assert config_differences(off, on) == [("TRAIN.CHECKPOINT_EVERY_STEPS", 0, 100)]
    assert config_differences(off, dict(off)) == []


def test_eval_only_refuses_to_overwrite_a_trained_result(finished, tiny_clip_path):
    root, out, before = finished
    with pytest.raises(TrainedResultError) as info:
        run(args_for(root, out, flags=["--eval-only"]))
    message = str(info.value)
    assert "untrained model" in message and "--model-dir" in message and "--load-epoch" in message
    assert (out / "results.json").read_bytes() == before


def test_model_dir_without_best_checkpoint_names_load_epoch(finished, tmp_path):
    root, out, _ = finished
    with pytest.raises(FileNotFoundError) as info:
        run(args_for(root, tmp_path / "eval", flags=["--eval-only", "--model-dir", str(out)]))
    assert "--load-epoch" in str(info.value) and "[2]" in str(info.value)
    run(args_for(root, tmp_path / "eval", flags=["--eval-only", "--model-dir", str(out), "--load-epoch", "2"]))
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["accuracy_last"] >= 0


def test_a_locked_folder_is_not_run_twice(tiny_image_folder, tmp_path, capsys):
    import train

    root, _ = tiny_image_folder
    out = tmp_path / "run"
    holder = RunFolder(str(out))
    holder.acquire()
    try:
        with pytest.raises(RunLockedError, match="locked by another process"):
            run(args_for(root, out))
        assert train.cli(args_for(root, out)) == train.LOCKED_EXIT_CODE
    finally:
        holder.release()
    assert not (out / "results.json").exists() and not (out / "failed.txt").exists()
    run(args_for(root, out))  # released: runs
    assert (out / "results.json").exists()


def test_a_crash_leaves_failed_txt_and_a_later_success_removes_it(tiny_image_folder, tmp_path):
    import train

    root, _ = tiny_image_folder
    out = tmp_path / "run"
    with pytest.raises(ValueError):
        train.cli(args_for(root, out, "TRAINER.TRIVIAL.LOSS", "nonsense"))
    text = (out / "failed.txt").read_text()
    assert "error: ValueError: TRAINER.TRIVIAL.LOSS must be entropy or cross_entropy" in text
    assert train.cli(args_for(root, out)) == 0  # nothing was computed under the bad config: no refusal
    assert not (out / "failed.txt").exists() and (out / "results.json").exists()


def test_a_yaml_syntax_error_names_the_file(tiny_image_folder, tmp_path):
    root, _ = tiny_image_folder
    bad = tmp_path / "bad.yaml"
    bad.write_text("OPTIM:\n  LR: [0.1\n")
    with pytest.raises(ValueError, match=f"--config-file {bad}: not a valid YAML config"):
        run(args_for(root, tmp_path / "run", flags=["--config-file", str(bad)]))


class DasslLikeLogger:
    """Stand-in for Dassl 0.6's ``Logger`` (dassl/utils/logger.py): ``close()`` and ``__del__`` close the console."""

    def __init__(self, fpath):
        self.console = sys.stdout
        self.file = open(fpath, "w")

    def __del__(self):
        self.close()

    def write(self, msg):
        self.console.write(msg)
        if self.file is not None:
            self.file.write(msg)

    def flush(self):
        self.console.flush()
        if self.file is not None:
            self.file.flush()

    def close(self):
        self.console.close()
        if self.file is not None:
            self.file.close()


def test_dassl_logger_stand_in_never_closes_stdout(tiny_image_folder, tmp_path, monkeypatch):
    import gc

    import clipkit.dassl

    def dassl_setup_logger(output=None):  # Dassl's returns None and installs the Logger
        os.makedirs(output, exist_ok=True)
        sys.stdout = DasslLikeLogger(os.path.join(output, "log.txt"))

    monkeypatch.setattr(clipkit.dassl, "setup_logger", dassl_setup_logger)
    root, _ = tiny_image_folder
    console = io.StringIO()
    monkeypatch.setattr(sys, "stdout", console)
    run(args_for(root, tmp_path / "run"))
    gc.collect()  # the Logger's __del__ runs
    assert sys.stdout is console and not console.closed
    assert "Finish training" in (tmp_path / "run" / "log.txt").read_text()


def test_cuda_requested_but_missing_warns(tiny_image_folder, tmp_path, monkeypatch, capsys):
    import torch

    import train
    from clipkit.dassl import build_trainer

    root, _ = tiny_image_folder
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    argv = args_for(root, tmp_path / "run", "USE_CUDA", "True")
    trainer = build_trainer(train.setup_cfg(train.build_parser().parse_args(argv)))
    assert trainer.device.type == "cpu"
    assert "CUDA_VISIBLE_DEVICES=0,1" in capsys.readouterr().err
