"""Exact resume: a run killed at a checkpoint or in the middle of writing one, then re-launched, writes the
results.json of the uninterrupted run (timing fields aside), for every trained method through train.py."""

import json
import os
import subprocess
import sys

import pytest
import torch

from clipkit.engine.checkpoint import STEP_FILE, checkpoint_epochs
import tests.plugins.image_folder_dataset  # noqa: F401  (registers TestImageFolder)
import tests.plugins.kill_switch as kill_switch
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIMING_FIELDS = ("wall_time_s", "peak_memory_mb")
EPOCHS = 3
METHOD_OPTS = {
    "UPL": ["TRAINER.UPL.NUM_PSEUDO_PER_CLASS", "3", "TRAINER.UPL.TEMPLATE", "a photo of a {}."],
    "MicroCLIP": ["DATALOADER.TEST.BATCH_SIZE", "6"],
    "DPA": ["TEST.FEATURE_CACHE", "False"],
    "ReCLIP": ["TRAINER.RECLIP.EPOCH_DIVISOR", "0", "TRAINER.RECLIP.LP.K", "5"],
    "LaFTer": ["TRAINER.LAFTER.TEXT_STEPS", "5", "TRAINER.LAFTER.NUM_PROMPTS", "4"],
    "POUF": ["TRAINER.POUF.ITERS_PER_EPOCH", "2"],
    "NtUA": ["TRAINER.NTUA.TEACHER", ""],  # "" = the student itself
}
# the methods added after microCLIP and UPL are checked in the harder case only (a torn checkpoint write)
KILL_MODES = {"UPL": ("after", "during"), "MicroCLIP": ("after", "during")}
CASES = [(method, when) for method in sorted(METHOD_OPTS) for when in KILL_MODES.get(method, ("during",))]


def argv(method, root, clip_path, out, *extra):
    return ["--root", root, "--trainer", method, "--seed", "1", "--output-dir", str(out),
            "--config-file", os.path.join(REPO, "configs", "trainers", method, "tiny.yaml"),
            "DATASET.NAME", "TestImageFolder", "MODEL.BACKBONE.NAME", clip_path, "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "OPTIM.MAX_EPOCH", str(EPOCHS), "USE_CUDA", "False",
            *METHOD_OPTS[method], *extra]


def run_in_process(args):
    import train

    train.main(train.build_parser().parse_args(args))


def results_without_timing(out):
    data = json.loads((out / "results.json").read_text())
    for key in TIMING_FIELDS:
        data.pop(key)
    return data


def final_weights(out):
    """{model/key: tensor} of the last checkpoints (the random tiny CLIP may predict one class whatever it learns, so
    the trained tensors are compared too)."""
    weights = {}
    for model_dir in sorted(d for d in out.iterdir() if (d / "checkpoint").is_file()):
        state = torch.load(model_dir / f"model.pth.tar-{EPOCHS}", map_location="cpu", weights_only=False)
        weights.update({f"{model_dir.name}/{k}": v for k, v in state["state_dict"].items()})
        weights.update({f"{model_dir.name}/optimizer/{k}": v for k, v in _flat_tensors(state["optimizer"]).items()})
    return weights


def _flat_tensors(obj, prefix=""):
    if torch.is_tensor(obj):
        return {prefix: obj}
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in _flat_tensors(value, f"{prefix}.{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, value in enumerate(obj) for k, v in _flat_tensors(value, f"{prefix}.{i}").items()}
    return {}


def assert_same_run(out, expected):
    results, weights = expected
    assert results_without_timing(out) == results
    assert_same_run_weights(out, weights)


@pytest.fixture(scope="module")
def reference(image_root, tiny_clip_path, tmp_path_factory):
    """Uninterrupted runs, one per method (module scope: shared by the kill tests)."""
    torch.set_num_threads(1)
    done = {}
    for method in METHOD_OPTS:
        out = tmp_path_factory.mktemp(f"reference_{method}")
        run_in_process(argv(method, image_root, tiny_clip_path, out))
        done[method] = (results_without_timing(out), final_weights(out))
    return done


@pytest.mark.parametrize("method, when", CASES)
def test_killed_and_resumed_run_equals_the_uninterrupted_one(method, when, reference, image_root, tiny_clip_path,
                                                              tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    monkeypatch.setenv(kill_switch.KILL_ENV, f"{when}:2")
    monkeypatch.setenv(kill_switch.HOW_ENV, "raise")
    with pytest.raises(kill_switch.SimulatedKill):
        run_in_process(argv(method, image_root, tiny_clip_path, out))
    assert not (out / "results.json").exists()
    monkeypatch.delenv(kill_switch.KILL_ENV)
    torch.manual_seed(12345)  # whatever the process did before, the resumed run restores its own RNG states
    capsys.readouterr()
    run_in_process(argv(method, image_root, tiny_clip_path, out))
    log = capsys.readouterr().out
    resumed_from = 2 if when == "after" else 1
    assert f"Previous epoch: {resumed_from}" in log
    if when == "during":
        assert "is unreadable" in log  # the torn model.pth.tar-2 was detected and epoch 1 used
    assert_same_run(out, reference[method])
    model_dirs = [d for d in out.iterdir() if (d / "checkpoint").is_file()]
    assert model_dirs and all(checkpoint_epochs(str(d)) == [EPOCHS] for d in model_dirs)  # only the newest is kept


def upl_subprocess(train_argv):
    """(command, environment) of train.py with ``train_argv`` in a fresh interpreter (one thread, the test plugins)."""
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1",
               CLIPKIT_EXTRA_PLUGINS="tests.plugins.image_folder_dataset,tests.plugins.kill_switch")
    cmd = [sys.executable, "-c", "import torch, sys, train; torch.set_num_threads(1); sys.exit(train.cli())",
           *train_argv]
    return cmd, env


def test_sigkill_during_a_checkpoint_write_then_resume(reference, image_root, tiny_clip_path, tmp_path):
    """A real SIGKILL in the middle of the write (a fresh interpreter each time): the half-written temporary file
    is ignored and removed, the previous checkpoint is used, and the result equals the uninterrupted run's."""
    out = tmp_path / "run"
    cmd, env = upl_subprocess(argv("UPL", image_root, tiny_clip_path, out))
    killed = subprocess.run(cmd, cwd=REPO, env=dict(env, CLIPKIT_TEST_KILL="during:2"), capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    model_dir = out / "prompt_learner"
    assert any(".tmp-" in p.name for p in model_dir.iterdir())  # the half-written file the kill left
    resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Previous epoch: 1" in resumed.stdout
    assert not any(".tmp-" in p.name for p in model_dir.iterdir())
    assert_same_run(out, reference["UPL"])


def test_shipped_configs_of_trained_methods_checkpoint_every_epoch():
    """A killed sweep job resumes from its last epoch only if the method's configs write a checkpoint every epoch."""
    import glob

    import yaml

    from clipkit import sweep

    trained = [name for name, free in sweep.registered_trainers([]).items() if not free]
    assert {"MicroCLIP", "UPL"} <= set(trained)
    for method in trained:
        for path in glob.glob(os.path.join(REPO, "configs", "trainers", method, "*.yaml")):
            if os.path.basename(path).endswith("overrides.yaml"):  # per-dataset opts, not backbone configs
                continue
            data = yaml.safe_load(open(path)) or {}
            assert data.get("TRAIN", {}).get("CHECKPOINT_FREQ") == 1, f"{path}: set TRAIN.CHECKPOINT_FREQ: 1"


# ------------------------------------------------------------------------------------ intra-epoch checkpoints
# Kill inside epoch 2 (of 3) at its intra-epoch checkpoint after step K ("after:2.K") or in the middle of writing it
# ("during:2.K": the previous checkpoint is used). With DATALOADER.NUM_WORKERS 0, intra-epoch checkpoints change no
# number, so the resumed run equals the reference run without them (config_digest apart: the key is part of it).
STEP_CASES = [("MicroCLIP", "after:2.2"), ("MicroCLIP", "during:2.2"), ("UPL", "after:2.1"), ("UPL", "during:2.1"),
              ("DPA", "after:2.1"), ("LaFTer", "after:2.1"), ("NtUA", "after:2.1"), ("POUF", "after:2.1"),
              ("ReCLIP", "after:2.1")]
EVERY_STEP = ["TRAIN.CHECKPOINT_EVERY_STEPS", "1"]
# UPL trains on the few pseudo-labelled images (one batch of 4): batches of 1 give it several steps per epoch
STEP_OPTS = {"UPL": ["DATALOADER.TRAIN_X.BATCH_SIZE", "1"]}


@pytest.fixture(scope="module")
def step_reference(reference, image_root, tiny_clip_path, tmp_path_factory):
    """The uninterrupted run of each method with its STEP_OPTS (the reference run where there are none)."""
    done = dict(reference)
    for method, opts in STEP_OPTS.items():
        out = tmp_path_factory.mktemp(f"step_reference_{method}")
        run_in_process(argv(method, image_root, tiny_clip_path, out, *opts))
        done[method] = (results_without_timing(out), final_weights(out))
    return done


def without_digest(expected):
    results, weights = expected
    return {k: v for k, v in results.items() if k != "config_digest"}, weights


def assert_same_run_but_digest(out, expected):
    results, weights = without_digest(expected)
    resumed = results_without_timing(out)
    assert isinstance(resumed.pop("config_digest"), str)
    assert resumed == results
    assert_same_run_weights(out, weights)


def assert_same_run_weights(out, weights):
    resumed = final_weights(out)
    assert sorted(resumed) == sorted(weights)
    different = [k for k in weights if not torch.equal(resumed[k], weights[k])]
    assert not different, different


def kill_then_resume(args, spec, monkeypatch, capsys):
    monkeypatch.setenv(kill_switch.KILL_ENV, spec)
    monkeypatch.setenv(kill_switch.HOW_ENV, "raise")
    with pytest.raises(kill_switch.SimulatedKill):
        run_in_process(args)
    monkeypatch.delenv(kill_switch.KILL_ENV)
    torch.manual_seed(12345)  # whatever the process did before, the resumed run restores its own RNG states
    capsys.readouterr()
    run_in_process(args)
    return capsys.readouterr().out


@pytest.mark.parametrize("method, spec", STEP_CASES)
def test_killed_inside_an_epoch_and_resumed_equals_the_uninterrupted_run(method, spec, step_reference, image_root,
                                                                          tiny_clip_path, tmp_path, monkeypatch,
                                                                          capsys):
    out = tmp_path / "run"
    args = argv(method, image_root, tiny_clip_path, out, *STEP_OPTS.get(method, []), *EVERY_STEP)
    log = kill_then_resume(args, spec, monkeypatch, capsys)
    when, where = spec.split(":")
    step = int(where.split(".")[1])
    if when == "after":
        assert f"Resuming inside epoch 2 after its step {step}" in log
    else:
        assert "is unreadable" in log  # the torn intra-epoch file was detected, the previous checkpoint used
        assert ("Previous epoch: 1" in log) and (step == 1 or f"after its step {step - 1}" in log)
    assert_same_run_but_digest(out, step_reference[method])
    for model_dir in (d for d in out.iterdir() if (d / "checkpoint").is_file()):
        assert checkpoint_epochs(str(model_dir)) == [EPOCHS]
        assert not [p.name for p in model_dir.iterdir() if STEP_FILE.match(p.name)]  # removed by the epoch checkpoint


def test_intra_epoch_resume_with_two_workers(image_root, tiny_clip_path, tmp_path, monkeypatch, capsys):
    """With workers, every batch reseeds its worker from its position: the remaining batches of a resumed epoch are
    the uninterrupted run's (the augmentation included)."""
    extra = [*STEP_OPTS["UPL"], *EVERY_STEP, "DATALOADER.NUM_WORKERS", "2"]
    reference_out = tmp_path / "reference"
    run_in_process(argv("UPL", image_root, tiny_clip_path, reference_out, *extra))
    expected = (results_without_timing(reference_out), final_weights(reference_out))
    out = tmp_path / "run"
    log = kill_then_resume(argv("UPL", image_root, tiny_clip_path, out, *extra), "after:2.1", monkeypatch, capsys)
    assert "Resuming inside epoch 2 after its step 1" in log
    assert_same_run(out, expected)


def test_sigterm_inside_an_epoch_writes_a_checkpoint_and_resumes(step_reference, image_root, tiny_clip_path,
                                                                  tmp_path):
    """SIGTERM (the sweep's stop; a Slurm task's on USR1 pre-emption) during the steps: the current step finishes, an
    intra-epoch checkpoint is written, the process dies of SIGTERM; the re-launch resumes there, exactly."""
    out = tmp_path / "run"
    cmd, env = upl_subprocess(argv("UPL", image_root, tiny_clip_path, out, *STEP_OPTS["UPL"],
                                   "TRAIN.CHECKPOINT_EVERY_STEPS", "1000"))
    stopped = subprocess.run(cmd, cwd=REPO, env=dict(env, CLIPKIT_TEST_KILL="term:2.1"), capture_output=True,
                             text=True, timeout=300)
    assert stopped.returncode == -15, stopped.stderr[-2000:]
    assert (out / "prompt_learner" / "model.pth.tar-2.step1").is_file()
    assert not (out / "results.json").exists()
    resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming inside epoch 2 after its step 1" in resumed.stdout
    assert_same_run_but_digest(out, step_reference["UPL"])


def test_shipped_configs_of_the_long_methods_checkpoint_inside_epochs():
    """An epoch of these methods over a large train split runs for hours: their real-dataset configs checkpoint
    every TRAIN.CHECKPOINT_EVERY_STEPS steps (the tiny configs need not)."""
    import glob

    import yaml

    for method in ("MicroCLIP", "DPA", "LaFTer", "ReCLIP"):
        paths = [p for p in glob.glob(os.path.join(REPO, "configs", "trainers", method, "*.yaml"))
                 if not p.endswith(("tiny.yaml", "overrides.yaml"))]
        assert paths, method
        for path in paths:
            data = yaml.safe_load(open(path)) or {}
            assert data["TRAIN"].get("CHECKPOINT_EVERY_STEPS", 0) > 0, f"{path}: set TRAIN.CHECKPOINT_EVERY_STEPS"
