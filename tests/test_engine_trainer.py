"""Trainer contract: hook order, progress line, checkpoint layout and round trip, resume == uninterrupted run,
best_val / last_step deployment, test() fallback, evaluator block, registries, tensorboard tags."""

import os
import re

import pytest
import torch

from clipkit.dassl import (
    EVALUATOR_REGISTRY,
    TRAINER_REGISTRY,
    Registry,
    build_evaluator,
    build_trainer,
    get_cfg_default,
    set_random_seed,
)
from tests.plugins.trivial_trainer import TrivialProbe, tiny_run_cfg

CALLS = []


@TRAINER_REGISTRY.register()
class HookRecordingProbe(TrivialProbe):
    def check_cfg(self, cfg):
        CALLS.append(("check_cfg", hasattr(self, "cfg")))
        super().check_cfg(cfg)

    def build_data_loader(self):
        CALLS.append("build_data_loader")
        super().build_data_loader()

    def build_model(self):
        CALLS.append("build_model")
        super().build_model()

    def before_train(self):
        CALLS.append("before_train")
        super().before_train()

    def before_epoch(self):
        CALLS.append(f"before_epoch[{self.epoch}]")
        super().before_epoch()

    def after_epoch(self):
        CALLS.append(f"after_epoch[{self.epoch}]")
        super().after_epoch()

    def after_train(self):
        CALLS.append("after_train")
        super().after_train()


@TRAINER_REGISTRY.register()
class InterruptibleProbe(TrivialProbe):
    interrupt_at_epoch = None

    def before_epoch(self):
        if self.epoch == type(self).interrupt_at_epoch:
            raise RuntimeError("simulated interruption")
        super().before_epoch()


@pytest.fixture
def root(tiny_image_folder):
    return tiny_image_folder[0]


def test_hook_order(root, tmp_path):
    CALLS.clear()
    trainer = build_trainer(tiny_run_cfg(root, tmp_path, trainer="HookRecordingProbe", OPTIM__MAX_EPOCH=2))
    trainer.train()
    assert CALLS == [("check_cfg", False), "build_data_loader", "build_model", "before_train", "before_epoch[0]",
                     "after_epoch[0]", "before_epoch[1]", "after_epoch[1]", "after_train"]


def test_progress_lines_checkpoints_and_final_block(root, tmp_path, capsys):
    trainer = build_trainer(tiny_run_cfg(root, tmp_path))
    trainer.train()
    out = capsys.readouterr().out
    progress = [line for line in out.splitlines() if line.startswith("epoch [")]
    assert len(progress) == 9  # 3 epochs x 3 batches, all printed since 3 < PRINT_FREQ
    pattern = (r"epoch \[1/3\] batch \[1/3\] time \d+\.\d{3} \(\d+\.\d{3}\) data \d+\.\d{3} \(\d+\.\d{3}\) "
               r"loss \d\.\d{4} \(\d\.\d{4}\) acc \d+\.\d{4} \(\d+\.\d{4}\) lr 1\.0000e-05 eta \d+:\d\d:\d\d")
    assert re.fullmatch(pattern, progress[0]), progress[0]
    assert progress[2].split(" lr ")[1].startswith("5.0000e-01")  # LR printed after the epoch's last update_lr()
    tail = out[out.index("Finish training"):].splitlines()
    assert tail[:3] == ["Finish training", "Deploy the last-epoch model", "Evaluate on the *test* set"]
    assert re.fullmatch(r"\* total: 6", tail[4]) and tail[3] == "=> result"
    assert [line.split(":")[0] for line in tail[4:9]] == ["* total", "* correct", "* accuracy", "* error", "* macro_f1"]
    assert re.fullmatch(r"Elapsed: \d+:\d\d:\d\d", tail[9])

    ckpt_dir = tmp_path / "probe"
    assert sorted(os.listdir(ckpt_dir)) == ["checkpoint", "model.pth.tar-3"]
    assert (ckpt_dir / "checkpoint").read_text() == "model.pth.tar-3\n"
    state = torch.load(ckpt_dir / "model.pth.tar-3", weights_only=True)  # no pickled objects
    # Dassl's keys plus the exact-resume state (DEVIATIONS.md, engine)
    assert set(state) == {"state_dict", "epoch", "optimizer", "scheduler", "val_result", "format", "rng_state",
                          "loader_state", "trainer_state"}
    assert state["epoch"] == 3 and state["val_result"] is None

    # load_model round trip, including val_result=None (crashed in stock Dassl)
    trained = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with torch.no_grad():
        for param in trainer.model.parameters():
            param.zero_()
    trainer.load_model(str(tmp_path), epoch=3)
    assert f"Load {ckpt_dir / 'model.pth.tar-3'} to probe (epoch=3, val_result=None)" in capsys.readouterr().out
    assert all(torch.equal(trained[k], v) for k, v in trainer.model.state_dict().items())
    with pytest.raises(FileNotFoundError, match="No model at"):
        trainer.load_model(str(tmp_path), epoch=7)
    trainer.load_model("")
    assert "load_model() is skipped" in capsys.readouterr().out


def test_tensorboard_tags(root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    build_trainer(tiny_run_cfg(root, tmp_path, OPTIM__MAX_EPOCH=2)).train()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "train/lr", "epoch/train_acc", "test/accuracy", "test/error_rate",
            "test/macro_f1"} <= tags
    assert [e.step for e in events.Scalars("train/lr")] == list(range(6))  # epoch * num_batches + batch_idx
    assert [e.step for e in events.Scalars("epoch/train_acc")] == [0, 1]


def _final_state(trainer):
    return ({k: v.clone() for k, v in trainer.model.state_dict().items()}, trainer.optim.param_groups[0]["lr"],
            {k: v["momentum_buffer"].clone() for k, v in trainer.optim.state_dict()["state"].items()})


def test_resume_after_interruption_equals_uninterrupted_run(root, tmp_path, capsys):
    # RNG-free data path (sequential sampler, no random transforms), so only checkpointed state matters.
    opts = dict(OPTIM__MAX_EPOCH=4, TRAIN__CHECKPOINT_FREQ=1, INPUT__TRANSFORMS=("normalize",),
                DATALOADER__TRAIN_X__SAMPLER="SequentialSampler", trainer="InterruptibleProbe")
    InterruptibleProbe.interrupt_at_epoch = None
    set_random_seed(3)
    reference = build_trainer(tiny_run_cfg(root, tmp_path / "straight", **opts))
    reference.train()

    InterruptibleProbe.interrupt_at_epoch = 2
    set_random_seed(3)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        build_trainer(tiny_run_cfg(root, tmp_path / "resumed", **opts)).train()
    InterruptibleProbe.interrupt_at_epoch = None
    capsys.readouterr()
    resumed = build_trainer(tiny_run_cfg(root, tmp_path / "resumed", **opts))
    resumed.train()
    out = capsys.readouterr().out
    assert f"Found checkpoint at {tmp_path / 'resumed'} (will resume training)" in out
    assert "Previous epoch: 2" in out and "epoch [3/4]" in out and "epoch [1/4]" not in out

    ref_weights, ref_lr, ref_momentum = _final_state(reference)
    res_weights, res_lr, res_momentum = _final_state(resumed)
    assert res_lr == pytest.approx(ref_lr) and ref_lr != pytest.approx(0.5)  # the LR kept annealing
    for key in ref_weights:
        assert torch.allclose(ref_weights[key], res_weights[key], atol=1e-6), key
    for key in ref_momentum:
        assert torch.allclose(ref_momentum[key], res_momentum[key], atol=1e-6)


def test_finished_run_is_not_retrained(root, tmp_path, capsys):
    build_trainer(tiny_run_cfg(root, tmp_path, OPTIM__MAX_EPOCH=1)).train()
    capsys.readouterr()
    build_trainer(tiny_run_cfg(root, tmp_path, OPTIM__MAX_EPOCH=1)).train()
    out = capsys.readouterr().out
    assert "Previous epoch: 1" in out and "epoch [" not in out and "Evaluate on the *test* set" in out


def test_best_val_deploys_best_checkpoint_and_test_falls_back(root, tmp_path, capsys):
    trainer = build_trainer(tiny_run_cfg(root, tmp_path, OPTIM__MAX_EPOCH=2, TEST__FINAL_MODEL="best_val"))
    trainer.train()
    out = capsys.readouterr().out
    # no val split: "val" evaluation silently uses the test loader (Dassl)
    assert "Evaluate on the *val* set" not in out and out.count("Evaluate on the *test* set") == 3
    assert "Deploy the model with the best val performance" in out
    assert re.search(r"Load .*model-best\.pth\.tar to probe \(epoch=\d, val_result=\d+\.\d\)", out)
    assert os.path.isfile(tmp_path / "probe" / "model-best.pth.tar")


def test_detect_anomaly(root, tmp_path):
    trainer = build_trainer(tiny_run_cfg(root, tmp_path))
    with pytest.raises(FloatingPointError, match="infinite or NaN"):
        trainer.model_backward_and_update(torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(AssertionError, match="duplicate"):
        trainer.register_model("probe", trainer.model)


def test_registry_errors():
    cfg = get_cfg_default()
    cfg.TRAINER.NAME = "TrivialProb"
    with pytest.raises(ValueError, match=r"but got \[TrivialProb\] \(do you mean \[TrivialProbe\]\?\)"):
        build_trainer(cfg)
    registry = Registry("DEMO")

    @registry.register()
    class Thing:
        pass

    with pytest.raises(KeyError, match='already registered in "DEMO"'):
        registry.register(Thing)
    registry.register(Thing, force=True)
    assert registry.registered_names() == ["Thing"] and registry.get("Thing") is Thing
    with pytest.raises(KeyError, match="does not exist"):
        registry.get("Other")
    assert "Classification" in EVALUATOR_REGISTRY.registered_names()


def test_classification_block_exact(capsys, tmp_path):
    cfg = get_cfg_default()
    cfg.TEST.PER_CLASS_RESULT = True
    cfg.TEST.COMPUTE_CMAT = True
    cfg.OUTPUT_DIR = str(tmp_path)
    evaluator = build_evaluator(cfg, lab2cname={0: "cat", 1: "dog"})
    labels = torch.tensor([0] * 1000 + [1] * 234)
    scores = torch.zeros(1234, 2)
    scores[:900, 0] = 1.0  # 900 cats right, 100 cats wrong (predicted dog)
    scores[900:1000, 1] = 1.0
    scores[1000:, 1] = 1.0  # every dog right
    evaluator.process(scores, labels)
    results = evaluator.evaluate()
    out = capsys.readouterr().out.splitlines()
    assert out[:11] == [
        "Loading evaluator: Classification",
        "=> result",
        "* total: 1,234",
        "* correct: 1,134",
        "* accuracy: 91.9%",
        "* error: 8.1%",
        "* macro_f1: 88.6%",
        "=> per-class result",
        "* class: 0 (cat)\ttotal: 1,000\tcorrect: 900\tacc: 90.0%",
        "* class: 1 (dog)\ttotal: 234\tcorrect: 234\tacc: 100.0%",
        "* average: 95.0%",
    ]
    assert out[11] == f"Confusion matrix is saved to {tmp_path / 'cmat.pt'}"
    assert list(results) == ["accuracy", "error_rate", "macro_f1", "perclass_accuracy"]
    assert results["accuracy"] == pytest.approx(100 * 1134 / 1234)


def test_setup_logger_tees_and_never_overwrites(tmp_path, capsys):
    import sys

    from clipkit.dassl import BACKEND, setup_logger

    if BACKEND == "dassl":
        pytest.skip("Dassl's Logger closes the console on close(); tested on the internal engine")
    tee = setup_logger(str(tmp_path))
    try:
        print("first run")
    finally:
        tee.close()
    assert sys.stdout is not tee and (tmp_path / "log.txt").read_text() == "first run\n"
    tee = setup_logger(str(tmp_path))
    try:
        print("second run")
    finally:
        tee.close()
    reruns = [name for name in os.listdir(tmp_path) if name.startswith("log.txt-")]
    assert len(reruns) == 1 and re.fullmatch(r"log\.txt-\d{4}(-\d\d){5}", reruns[0])
    assert (tmp_path / "log.txt").read_text() == "first run\n"
    assert (tmp_path / reruns[0]).read_text() == "second run\n"
    assert "first run" in capsys.readouterr().out
