"""POUF: official effective learning rates, what each mode trains, the epoch-sized forever loader, label-leak guard,
and a tiny end-to-end train.py run with resume."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from clipkit.tinybench import generate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "configs", "trainers", "POUF", "tiny.yaml")
SMALL = generate.BenchmarkConfig(train_per_class=3, test_per_class=2)  # 20 classes, 60 train + 40 test images


def _make_trainer(root, clip_path, output_dir, *opts):
    import tests.plugins.image_folder_dataset  # noqa: F401  (registers TestImageFolder)
    import train
    from clipkit.dassl import build_trainer

    argv = ["--root", root, "--trainer", "POUF", "--output-dir", output_dir, "--seed", "1",
            "--config-file", TINY_CONFIG, "DATASET.NAME", "TestImageFolder", "MODEL.BACKBONE.NAME", clip_path,
            "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "OPTIM.MAX_EPOCH", "2",
            "TRAINER.POUF.ITERS_PER_EPOCH", "2", "USE_CUDA", "False", *opts]
    return build_trainer(train.setup_cfg(train.build_parser().parse_args(argv)))


def _one_step(trainer):
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 1
    trainer.before_epoch()
    batch = next(iter(trainer.train_loader_x))
    return trainer.forward_backward(batch)


# --------------------------------------------------------------------------------------------- learning rates
def _official_learning_rates(group_lrs, steps):
    """The official construction on dummy tensors: SGD(groups, lr=0.01) + LambdaLR(x -> 0.01 (1 + 2e-4 x)^-0.75),
    stepped once per iteration; returns the group LRs before each step."""
    params = [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in group_lrs]
    optimizer = torch.optim.SGD(params, 0.01, momentum=0.9, weight_decay=1e-3, nesterov=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda x: 0.01 * (1.0 + 0.0002 * float(x)) ** (-0.75))
    history = []
    for _ in range(steps):
        history.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return history


@pytest.mark.parametrize("mode, group_lrs, effective", [
    ("prompt", (0.1, 5e-5), (1e-3, 5e-7)),  # pouf.sh --learn-prompt -plr 0.1
    ("model", (5e-5,), (5e-7,)),
])
def test_effective_learning_rates_equal_the_official_ones(tiny_image_folder, tiny_clip_path, tmp_path, mode,
                                                          group_lrs, effective):
    root, _ = tiny_image_folder
    trainer = _make_trainer(root, tiny_clip_path, str(tmp_path / "run"), "TRAINER.POUF.MODE", mode)
    assert [g["lr"] for g in trainer.optim.param_groups] == pytest.approx(list(effective), rel=1e-12)
    assert all(g["momentum"] == 0.9 and g["nesterov"] and g["weight_decay"] == 1e-3
               for g in trainer.optim.param_groups)
    official = _official_learning_rates(group_lrs, steps=4)
    for step in range(4):
        assert [g["lr"] for g in trainer.optim.param_groups] == pytest.approx(official[step], rel=1e-12)
        decay = (1 + 0.0002 * step) ** -0.75
        assert official[step] == pytest.approx([lr * decay for lr in effective], rel=1e-12)
        _one_step(trainer)


def test_without_the_lambda_quirk_the_group_lrs_apply_as_written(tiny_image_folder, tiny_clip_path, tmp_path):
    root, _ = tiny_image_folder
    trainer = _make_trainer(root, tiny_clip_path, str(tmp_path / "run"), "TRAINER.POUF.LR_LAMBDA_TIMES_BASE_LR",
                            "False")
    assert [g["lr"] for g in trainer.optim.param_groups] == pytest.approx([0.1, 5e-5], rel=1e-12)


# ------------------------------------------------------------------------------------------- trained tensors
def test_prompt_mode_trains_only_the_context_and_the_logit_scale(tiny_image_folder, tiny_clip_path, tmp_path):
    root, _ = tiny_image_folder
    trainer = _make_trainer(root, tiny_clip_path, str(tmp_path / "run"))
    model = trainer.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"clip.logit_scale", "prompt_learner.ctx"}
    assert model.prompt_learner.ctx.shape == (4, model.clip.token_embedding.weight.shape[1])  # "a photo of a"
    trainer.model_zero_grad()
    _one_step(trainer)
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {"clip.logit_scale", "prompt_learner.ctx"}
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    # the logit scale's effective LR (5e-7) moves it by less than float32 resolution in one step (as officially)
    assert changed - {"clip.logit_scale"} == {"prompt_learner.ctx"}
    assert set(model.state_dict()) == {"clip.logit_scale", "prompt_learner.ctx"}  # slim checkpoints


def test_model_mode_trains_both_towers(tiny_image_folder, tiny_clip_path, tmp_path):
    root, _ = tiny_image_folder
    trainer = _make_trainer(root, tiny_clip_path, str(tmp_path / "run"), "TRAINER.POUF.MODE", "model")
    model = trainer.model
    assert not hasattr(model, "prompt_learner")
    assert all(p.requires_grad for p in model.clip.parameters())
    trainer.model_zero_grad()
    _one_step(trainer)
    grads = {name: p.grad for name, p in model.clip.named_parameters()}
    visual = [n for n in grads if n.startswith("visual.")]
    text = [n for n in grads if n.startswith("transformer.") or n in ("token_embedding.weight", "text_projection")]
    assert visual and text
    assert any(grads[n] is not None and grads[n].abs().sum() > 0 for n in visual)
    assert any(grads[n] is not None and grads[n].abs().sum() > 0 for n in text)
    assert grads["logit_scale"] is not None and grads["visual.proj"] is not None


def test_bad_mode_names_the_config_key(tiny_image_folder, tiny_clip_path, tmp_path):
    root, _ = tiny_image_folder
    with pytest.raises(ValueError, match="TRAINER.POUF.MODE must be one of"):
        _make_trainer(root, tiny_clip_path, str(tmp_path / "run"), "TRAINER.POUF.MODE", "prompts")


# ----------------------------------------------------------------------------------------------- pure pieces
def test_pouf_loss_uses_the_exponentiated_scale_and_the_official_weights():
    from baselines.pouf import pouf_loss
    from clipkit.blocks.losses import information_maximization_loss, transport_loss

    sim = torch.tensor([[0.3, -0.1, 0.5], [0.2, 0.4, 0.0]], dtype=torch.float64)
    log_scale = torch.tensor(math.log(20.0), dtype=torch.float64)
    terms = pouf_loss(sim, log_scale, 1.0, 0.3, 1e-5, 1e-6)
    expected = transport_loss(20.0 * sim, sim) + 0.3 * information_maximization_loss(20.0 * sim, 1e-5, 1e-6)
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-12)
    assert terms["im"].item() == pytest.approx((terms["entropy"] - terms["marginal_entropy"]).item(), rel=1e-12)


def test_inverse_decay_factor():
    from baselines.pouf import inverse_decay_factor

    assert inverse_decay_factor(0, 0.0002, 0.75, 0.01) == 0.01
    assert inverse_decay_factor(5000, 0.0002, 0.75, 0.01) == pytest.approx(0.01 * 2.0 ** -0.75)


def test_fixed_length_loader_streams_shuffled_passes_and_resumes_at_any_epoch():
    import torch

    from baselines.pouf import FixedLengthLoader

    base = torch.utils.data.DataLoader(list(range(5)), batch_size=2, shuffle=True, drop_last=True)  # 2 batches/pass
    torch.manual_seed(0)
    loader = FixedLengthLoader(base, 3)
    assert len(loader) == 3 and loader.batches_per_pass == 2
    stream = []
    for epoch in range(4):
        loader.set_epoch(epoch)
        stream += [batch.tolist() for batch in loader]
    assert len(stream) == 12
    for p in range(6):  # every pass: 2 batches of distinct samples in the order of that pass's permutation
        order = loader.pass_order(p)
        assert stream[2 * p] + stream[2 * p + 1] == order[:4]
    assert len({tuple(loader.pass_order(p)) for p in range(6)}) > 1  # passes are reshuffled
    # a loader rebuilt from the same seed and started at epoch 2 (a resumed run) gives the same batches
    torch.manual_seed(0)
    resumed = FixedLengthLoader(base, 3)
    resumed.set_epoch(2)
    assert [batch.tolist() for batch in resumed] == stream[6:9]


def test_train_view_square_resizes_before_the_crop():
    from PIL import Image

    from baselines.pouf import pouf_train_transform

    transform = pouf_train_transform((64, 64), (1.0, 1.0), 73, "bilinear", [0.5] * 3, [0.5] * 3)
    assert [type(t).__name__ for t in transform.transforms] == [
        "Resize", "RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert transform.transforms[0].size == (73, 73)
    assert transform(Image.new("RGB", (120, 40))).shape == (3, 64, 64)


# ----------------------------------------------------------------------------------------- label-leak guard
def test_no_label_leak(tiny_image_folder, tiny_clip_path, tmp_path):
    """Permuting the train labels changes nothing in POUF's training (labels only feed the logged train_acc)."""
    from clipkit.testing import assert_no_label_leak

    root, _ = tiny_image_folder
    assert_no_label_leak(lambda out: _make_trainer(root, tiny_clip_path, out), str(tmp_path))


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def small_benchmark_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_data_pouf")
    generate.generate_dataset(str(root), SMALL, log=None)
    return str(root)


def _run_pouf(root, checkpoint, out, epochs, *opts):
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--root", root, "--trainer", "POUF", "--seed", "1",
           "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "tiny.yaml"),
           "--config-file", TINY_CONFIG, "--output-dir", str(out), "MODEL.BACKBONE.NAME", checkpoint,
           "OPTIM.MAX_EPOCH", str(epochs), "DATALOADER.TRAIN_X.BATCH_SIZE", "16", "DATALOADER.NUM_WORKERS", "0",
           "USE_CUDA", "False", "TRAINER.POUF.ITERS_PER_EPOCH", "3", *opts]
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_pouf_end_to_end_logs_per_epoch(small_benchmark_root, tiny_clip_path, tmp_path):
    """One run to the end (exact resume after a kill: tests/test_exact_resume.py)."""
    out = tmp_path / "run"
    proc = _run_pouf(small_benchmark_root, tiny_clip_path, out, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "POUF" and results["dataset"] == "tiny" and results["num_test"] == 40
    assert [r["epoch"] for r in results["epochs"]] == [1, 2]
    for record in results["epochs"]:
        for key in ("transport", "im", "entropy", "marginal_entropy", "accuracy", "train_loss", "logit_scale"):
            assert key in record, key
        assert record["train_loss"] == pytest.approx(record["transport"] + 0.3 * record["im"], rel=1e-6)
    # the per-step schedule: 6 steps in all, the LR after them
    assert results["epochs"][1]["lr"] == pytest.approx(0.1 * 0.01 * (1 + 0.0002 * 6) ** -0.75, rel=1e-9)
    assert results["accuracy_last"] == pytest.approx(results["epochs"][-1]["accuracy"])
    assert results["best_is_test_selection"] is True  # best-over-epochs is only the flagged test selection
    assert results["run_summary"]["mode"] == "prompt" and results["run_summary"]["trainable_parameters"] == 4 * 64 + 1
