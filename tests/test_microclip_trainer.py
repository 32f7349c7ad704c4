"""The MicroCLIP trainer on the tiny CLIP and a tiny image folder: trainable set, label-leak guard, every ablation and
variant config, end-to-end train.py run."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tests.plugins.image_folder_dataset  # noqa: F401  (registers TestImageFolder)
from clipkit.testing import assert_updated_exactly
from tests.conftest import REPO

CONFIG_DIR = os.path.join(REPO, "configs", "trainers", "MicroCLIP")
TINY_YAML = os.path.join(CONFIG_DIR, "tiny.yaml")
SWITCH_FILES = sorted(glob.glob(os.path.join(CONFIG_DIR, "ablations", "*.yaml"))) + sorted(
    glob.glob(os.path.join(CONFIG_DIR, "variants", "*.yaml"))
)
CLASSNAMES = ["red", "green", "blue"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_cfg(image_root, clip_path, output_dir, extra_files=(), opts=()):
    """The config train.py builds (tiny.yaml + extra YAMLs + opts) for a 1-epoch CPU run with batch 4."""
    import train

    argv = ["--root", image_root, "--trainer", "MicroCLIP", "--config-file", TINY_YAML, "--output-dir", output_dir,
            "--seed", "1"]
    for path in extra_files:
        argv += ["--extra-config-file", path]
    argv += ["DATASET.NAME", "TestImageFolder", "MODEL.BACKBONE.NAME", clip_path, "DATALOADER.NUM_WORKERS", "0",
             "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "6", "OPTIM.MAX_EPOCH", "1",
             "USE_CUDA", "False", *opts]
    return train.setup_cfg(train.build_parser().parse_args(argv))


def make_trainer(image_root, clip_path, output_dir, extra_files=(), opts=()):
    from clipkit.dassl import build_trainer, set_random_seed

    set_random_seed(1)
    return build_trainer(make_cfg(image_root, clip_path, output_dir, extra_files, opts))


def expected_trainable(model, with_soap=True):
    names = {f"visual.{n}" for n, m in model.visual.named_modules() if isinstance(m, torch.nn.LayerNorm)
             for n in (f"{n}.weight", f"{n}.bias")}
    names.add("w_star")
    if with_soap:
        names |= {"soap.query_proj.weight", "soap.key_proj.weight", "soap.value_proj.weight"}
    return names


def test_one_step_gradients_reach_exactly_the_trainable_parameters(image_root, tiny_clip_path, tmp_path):
    trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path))
    model = trainer.model
    assert set(trainer.trainable_names) == expected_trainable(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = next(iter(trainer.train_loader_x))
    assert batch["img"].dtype == torch.uint8 and batch["img3"].shape[1:] == (8, 3, 64, 64)
    summary = trainer.forward_backward(batch)
    assert torch.isfinite(summary["loss"])
    assert_updated_exactly(model, trainer.trainable_names, before)
    assert not hasattr(model, "transformer") and not hasattr(model, "token_embedding")  # text tower dropped
    lr = trainer.optim.param_groups[0]["lr"]
    assert lr < trainer.cfg.OPTIM.LR  # per-iteration schedule stepped once


def test_cls_only_training_freezes_soap(image_root, tiny_clip_path, tmp_path):
    table2 = os.path.join(CONFIG_DIR, "ablations", "table2_fixed_single_view_pl.yaml")
    trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path), [table2])
    assert set(trainer.trainable_names) == expected_trainable(trainer.model, with_soap=False)
    batch = next(iter(trainer.train_loader_x))
    assert "img3" not in batch  # single-view prior: no crops are sampled
    trainer.forward_backward(batch)
    assert trainer.model.soap.query_proj.weight.grad is None


def test_no_label_leak(image_root, tiny_clip_path, tmp_path):
    from clipkit.testing import assert_no_label_leak

    no_epoch_eval = ["TRAINER.MICROCLIP.EPOCH_TEST_METRICS", "False"]
    assert_no_label_leak(lambda out: make_trainer(image_root, tiny_clip_path, out, opts=no_epoch_eval), str(tmp_path))


def test_encode_matches_clip_preprocessing_and_test_logits(image_root, tiny_clip_path, tmp_path):
    trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path))
    from clipkit.clip import load_clip

    clip_model = load_clip(tiny_clip_path)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    mean = torch.tensor(trainer.cfg.INPUT.PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(trainer.cfg.INPUT.PIXEL_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = F.normalize(clip_model.encode_image((images.float() / 255 - mean) / std), dim=-1)
        features = trainer.model.encode(images)
        logits = trainer.model_inference(images)
    torch.testing.assert_close(features.cls, expected, rtol=1e-4, atol=1e-5)
    w_star = F.normalize(trainer.model.w_star, dim=-1)
    torch.testing.assert_close(logits, 50 * features.cls @ w_star.t() + 50 * features.fg @ w_star.t())


def test_official_w_llm_differs_from_w_star_and_paper_mean_equals_it(image_root, tiny_clip_path, tmp_path):
    official = make_trainer(image_root, tiny_clip_path, str(tmp_path / "a")).model
    assert not torch.allclose(official.w_llm, F.normalize(official.w_star, dim=-1))
    paper = make_trainer(image_root, tiny_clip_path, str(tmp_path / "b"),
                         [os.path.join(CONFIG_DIR, "variants", "paper_w_llm_mean.yaml")]).model
    torch.testing.assert_close(paper.w_llm, F.normalize(paper.w_star, dim=-1))


EXTRA_SWITCHES = [
    ["TRAINER.MICROCLIP.PREC", "bf16"],
    ["TRAINER.MICROCLIP.PREC", "fp16"],
    ["TRAINER.MICROCLIP.SOAP.SINK", "none"],
    ["TRAINER.MICROCLIP.CLASSIFIER.HANDCRAFTED_NORM", "per_prompt"],
    ["TRAINER.MICROCLIP.FAIRNESS_WEIGHT", "0.0"],
]


@pytest.mark.parametrize(
    "extra_files, opts",
    [([path], []) for path in SWITCH_FILES] + [([], opts) for opts in EXTRA_SWITCHES],
    ids=[os.path.relpath(p, CONFIG_DIR) for p in SWITCH_FILES] + [" ".join(o) for o in EXTRA_SWITCHES],
)
def test_every_ablation_and_switch_runs_one_training_step(image_root, tiny_clip_path, tmp_path, extra_files, opts):
    trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path), extra_files, opts)
    summary = trainer.forward_backward(next(iter(trainer.train_loader_x)))
    assert all(torch.isfinite(v) for v in summary.values())
    images, _ = trainer.parse_batch_test(next(iter(trainer.test_loader)))
    logits = trainer.model_inference(images)
    assert logits.shape == (images.shape[0], len(CLASSNAMES)) and torch.isfinite(logits).all()


def test_bad_switch_names_the_key(image_root, tiny_clip_path, tmp_path):
    with pytest.raises(ValueError, match="TRAINER.MICROCLIP.NCUT.VARIANT"):
        make_trainer(image_root, tiny_clip_path, str(tmp_path), opts=["TRAINER.MICROCLIP.NCUT.VARIANT", "sparse"])


def test_train_py_end_to_end_writes_results(image_root, tiny_clip_path, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, CLIPKIT_EXTRA_PLUGINS="tests.plugins.image_folder_dataset", PYTHONPATH=REPO,
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--root", image_root, "--trainer", "MicroCLIP",
           "--config-file", TINY_YAML, "--output-dir", str(out), "--seed", "1",
           "DATASET.NAME", "TestImageFolder", "MODEL.BACKBONE.NAME", tiny_clip_path, "DATALOADER.NUM_WORKERS", "0",
           "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "OPTIM.MAX_EPOCH", "2", "USE_CUDA", "False"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "MicroCLIP" and results["num_test"] == 6
    assert [e["epoch"] for e in results["epochs"]] == [1, 2]
    for key in ("pl_accuracy", "pl_confidence", "accuracy_fused", "accuracy_cls", "accuracy_fg",
                "train_ncut_mask_fraction", "test_ncut_mask_fraction"):
        assert key in results["epochs"][-1], key
    assert 0.0 <= results["epochs"][-1]["pl_accuracy"] <= 100.0
    # the final test is the fused logits of the last epoch's model on the same (centre-crop) test view
    assert results["accuracy_last"] == pytest.approx(results["epochs"][-1]["accuracy_fused"], abs=1e-3)
    # the per-epoch fused accuracy feeds the best-epoch statistic, flagged as test-set selection
    best = max(results["epochs"], key=lambda e: e["accuracy"])
    assert results["best_is_test_selection"] is True and results["best_epoch"] == best["epoch"]
    assert results["accuracy_best"] == pytest.approx(best["accuracy_fused"], abs=1e-9)


def test_frozen_prior_encoder_stays_pretrained(image_root, tiny_clip_path, tmp_path):
    frozen = os.path.join(CONFIG_DIR, "variants", "paper_frozen_prior_encoder.yaml")
    trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path), [frozen])
    model = trainer.model
    assert set(trainer.trainable_names) == expected_trainable(model)
    initial = {n: p.detach().clone() for n, p in model.prior_visual.named_parameters()}
    trainer.forward_backward(next(iter(trainer.train_loader_x)))
    for name, param in model.prior_visual.named_parameters():
        assert param.grad is None and torch.equal(param, initial[name]), name
    assert not torch.equal(model.visual.ln_post.weight, model.prior_visual.ln_post.weight)


def test_strong_view_survives_maximal_posterize_and_is_uint8():
    from PIL import Image

    from clipkit.blocks.views import posterize_keeping_zero_bits, strong_transform

    transform = strong_transform((64, 64), (0.3, 1.0), 0.5, "rand-m9-mstd0.5-inc1")
    posterize_ops = [op for stage in transform.transforms for op in getattr(stage, "ops", ())
                     if op.name == "PosterizeIncreasing"]
    assert posterize_ops and all(op.aug_fn is posterize_keeping_zero_bits for op in posterize_ops)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    assert np.asarray(posterize_ops[0].aug_fn(image, 0)).max() == 0  # magnitude 10 -> 0 bits -> black
    op = posterize_ops[0]
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0.0
    out = op(image)  # raised ValueError with timm's own posterize on recent Pillow
    assert np.asarray(out).max() == 0
    view = transform(image)
    assert view.dtype == torch.uint8 and view.shape == (3, 64, 64)


def test_checkpoint_holds_only_trained_tensors_and_round_trips(image_root, tiny_clip_path, tmp_path):
    trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path))
    model = trainer.model
    trainer.forward_backward(next(iter(trainer.train_loader_x)))
    state = model.state_dict()
    assert set(state) == set(trainer.trainable_names)
    trained = {name: tensor.clone() for name, tensor in state.items()}
    frozen_before = model.visual.conv1.weight.detach().clone()
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(1.0)
    model.load_state_dict(trained)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, trained[name]), name
    assert torch.equal(model.visual.conv1.weight, frozen_before)
    with pytest.raises(RuntimeError, match="missing"):
        model.load_state_dict({k: v for k, v in trained.items() if k != "w_star"})
