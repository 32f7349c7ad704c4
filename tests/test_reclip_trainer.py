"""ReCLIP: agreement mask and losses by hand, trainable sets of both towers, slim state, label-leak guard, a tiny
train.py run with resume, and the transductive switch."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from baselines.reclip import (
    ReCLIPNet,
    agreement_mask,
    official_epochs,
    reclip_losses,
    select_trainable,
)
from clipkit.tinybench import generate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = generate.BenchmarkConfig(train_per_class=3, test_per_class=2)  # 20 classes, 60 train + 40 test images
CONFIG = os.path.join(REPO, "configs", "trainers", "ReCLIP", "tiny.yaml")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_agreement_mask_and_losses_against_hand_computation():
    torch.manual_seed(0)
    v_logits, t_logits = torch.randn(5, 4), torch.randn(5, 4)
    v_labels, t_labels = torch.tensor([0, 1, 2, 3, 1]), torch.tensor([0, 2, 2, 3, 0])
    mask = agreement_mask(v_labels, t_labels)
    assert mask.tolist() == [True, False, True, True, False]

    def ce(logits, label):  # -log softmax by hand
        values = logits.tolist()
        return -(values[int(label)] - math.log(sum(math.exp(z) for z in values)))

    agreed = [i for i in range(5) if v_labels[i] == t_labels[i]]
    ce_t = [ce(t_logits[i], t_labels[i]) for i in agreed]
    ce_v = [ce(v_logits[i], v_labels[i]) for i in agreed]
    official = reclip_losses(v_logits, t_logits, v_labels, t_labels, mask, "official")
    assert official.t.item() == pytest.approx(sum(ce_t) / 3, rel=1e-5)
    assert official.v.item() == pytest.approx(sum(ce_v) / 5 / 3, rel=1e-5)  # mean over the batch, then / sum(mask)
    fixed = reclip_losses(v_logits, t_logits, v_labels, t_labels, mask, "masked_mean")
    assert fixed.v.item() == pytest.approx(sum(ce_v) / 3, rel=1e-5)
    assert fixed.t.item() == pytest.approx(official.t.item())


def test_epoch_rule_is_the_official_one():
    assert official_epochs(3000, 100, 5000, 2) == 2
    assert official_epochs(76129, 100, 5000, 2) == 17
    assert official_epochs(10**6, 100, 5000, 2) == 100
    assert official_epochs(3000, 7, 0, 2) == 7


@pytest.fixture(scope="module")
def net():
    from clipkit.clip import build_tiny_clip, tokenize

    clip_model = build_tiny_clip(seed=0)
    text = torch.nn.functional.normalize(torch.randn(3, 64), dim=-1)
    model = ReCLIPNet(clip_model, text, tokenize(["a", "b", "c"]), 100.0)
    groups = select_trainable(model)
    return model, groups


def test_gradients_reach_exactly_the_layernorms_of_each_tower(net):
    model, groups = net
    v_ln = {n for n, m in model.v_visual.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    text_ln = {n for n, m in model.t_clip.transformer.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    expected_v = {f"v_visual.{m}.{p}" for m in v_ln for p in ("weight", "bias")}
    expected_t = {f"t_clip.transformer.{m}.{p}" for m in text_ln for p in ("weight", "bias")}
    expected_t |= {"t_clip.ln_final.weight", "t_clip.ln_final.bias"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected_v | expected_t and len(groups["v"]) == len(expected_v)
    assert not any(n.startswith("t_clip.visual.") for n in trainable)  # T's visual tower is frozen

    images = torch.randn(2, 3, 64, 64)
    labels = torch.tensor([0, 2])
    for loss_of, expected in (
        (lambda: torch.nn.functional.cross_entropy(model.v_logits(model.v_features(images)), labels), expected_v),
        (lambda: torch.nn.functional.cross_entropy(
            model.t_logits(model.t_image_features(images), model.t_text_classifier()), labels), expected_t),
    ):
        model.zero_grad(set_to_none=True)
        loss_of().backward()
        with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert with_grad == expected


def test_checkpoint_holds_the_layernorms_and_the_method_state(net):
    model, _ = net
    state = model.state_dict()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(state) == trainable | {"v_classifier", "t_seeds"}
    state = {k: v.clone() for k, v in state.items()}
    state["v_classifier"] = torch.eye(3, 64)
    model.load_state_dict(state)
    assert torch.equal(model.v_classifier, torch.eye(3, 64))


def _run(root, checkpoint, out, *opts):
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--root", root, "--trainer", "ReCLIP", "--seed", "1",
           "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "tiny.yaml"), "--config-file", CONFIG,
           "--output-dir", str(out), "MODEL.BACKBONE.NAME", checkpoint, "DATALOADER.TRAIN_X.BATCH_SIZE", "16",
           "DATALOADER.NUM_WORKERS", "0", "USE_CUDA", "False", *opts]
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_tiny_run_writes_results(tmp_path_factory, tiny_clip_path, tmp_path):
    """One run to the end (exact resume after a kill: tests/test_exact_resume.py)."""
    root = str(tmp_path_factory.mktemp("tiny_data_reclip"))
    generate.generate_dataset(root, SMALL, log=None)
    out = tmp_path / "run"
    # the official rule (the tiny config raises its offset to 4): 60 // 5000 + 2 = 2 epochs
    proc = _run(root, tiny_clip_path, out, "TRAINER.RECLIP.EPOCH_OFFSET", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "60 adaptation images -> 2 epochs" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "ReCLIP" and results["num_test"] == 40
    assert [r["epoch"] for r in results["epochs"]] == [1, 2]
    for record in results["epochs"]:
        for key in ("lp_accuracy_v", "lp_accuracy_t", "agreement_rate", "accuracy_v", "accuracy_t",
                    "accuracy_combined", "accuracy"):
            assert 0.0 <= record[key] <= 100.0
    assert results["epochs"][0]["agreement_rate"] == 100.0  # identical towers before training: same labels
    assert results["accuracy_last"] == pytest.approx(results["epochs"][-1]["accuracy_combined"])
    assert results["best_is_test_selection"] is True
    assert results["run_summary"]["transductive"] is False and results["run_summary"]["epochs"] == 2


def _make_trainer(root, checkpoint, output_dir, *opts):
    import tests.plugins.image_folder_dataset  # noqa: F401  (registers TestImageFolder)
    import train
    from clipkit.dassl import build_trainer

    argv = ["--root", root, "--trainer", "ReCLIP", "--output-dir", output_dir, "--seed", "1", "--config-file", CONFIG,
            "DATASET.NAME", "TestImageFolder", "MODEL.BACKBONE.NAME", checkpoint, "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "USE_CUDA", "False", "TRAINER.RECLIP.LP.K", "5", *opts]
    return build_trainer(train.setup_cfg(train.build_parser().parse_args(argv)))


def test_no_label_leak(tiny_image_folder, tiny_clip_path, tmp_path):
    """Permuting the train labels changes nothing: the pseudo-labels come from label propagation only."""
    from clipkit.testing import assert_no_label_leak

    root, _ = tiny_image_folder
    assert_no_label_leak(lambda out: _make_trainer(root, tiny_clip_path, out, "TRAINER.RECLIP.V_LOSS_NORM",
                                                   "masked_mean"), str(tmp_path))


def test_transductive_switch_adapts_on_the_test_split(tiny_image_folder, tiny_clip_path, tmp_path):
    root, _ = tiny_image_folder
    trainer = _make_trainer(root, tiny_clip_path, str(tmp_path / "t"), "TRAINER.RECLIP.TRAIN_SPLIT", "test")
    assert [d.impath for d in trainer.adapt_source] == [d.impath for d in trainer.dm.dataset.test]
    assert trainer.run_summary()["transductive"] is True
    with pytest.raises(ValueError, match="TRAINER.RECLIP.TRAIN_SPLIT must be one of"):
        _make_trainer(root, tiny_clip_path, str(tmp_path / "bad"), "TRAINER.RECLIP.TRAIN_SPLIT", "val")
    with pytest.raises(ValueError, match=r"TRAINER.RECLIP.LP.K must be smaller than the number of graph nodes \(15"):
        _make_trainer(root, tiny_clip_path, str(tmp_path / "k"), "TRAINER.RECLIP.LP.K", "15")
