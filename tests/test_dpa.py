"""The DPA trainer on the tiny CLIP and a tiny image folder: pseudo-labels and loss against a plain re-derivation of
the official formulas, trainable set, prototype rebuild, label-leak guard, checkpoints, train.py end to end, resume."""

import json
import math
import random
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import tests.plugins.image_folder_dataset  # noqa: F401  (registers TestImageFolder)
from clipkit.testing import assert_updated_exactly
from tests.conftest import REPO

TINY_YAML = os.path.join(REPO, "configs", "trainers", "DPA", "tiny.yaml")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def base_opts(clip_path, epochs=1):
    return ["DATASET.NAME", "TestImageFolder", "MODEL.BACKBONE.NAME", clip_path, "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "5", "DATALOADER.TEST.BATCH_SIZE", "6", "OPTIM.MAX_EPOCH", str(epochs),
            "USE_CUDA", "False", "TEST.FEATURE_CACHE", "False"]


def make_trainer(image_root, clip_path, output_dir, opts=()):
    import train
    from clipkit.dassl import build_trainer, set_random_seed

    argv = ["--root", image_root, "--trainer", "DPA", "--config-file", TINY_YAML, "--output-dir", output_dir,
            "--seed", "1", *base_opts(clip_path), *opts]
    set_random_seed(1)
    return build_trainer(train.setup_cfg(train.build_parser().parse_args(argv)))


def _with_alpha(node, alpha):
    other = node.clone()
    other.defrost()
    other.ALPHA = alpha
    return other


def softmax_rows(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reference_step(f_w, f_s, w_raw, z, queue_before, node, align_distribution=True):
    """Plain numpy re-derivation of one official DPA step (engine_self_training.py, utils/center.py)."""
    w = w_raw / np.linalg.norm(w_raw, axis=1, keepdims=True)
    s = node.LOGIT_SCALE
    p_txt = softmax_rows(s * f_w @ w.T)
    queue = list(queue_before) + [p_txt.mean(axis=0)]
    queue = queue[-node.QUEUE_LENGTH:]
    p_da = p_txt / np.mean(queue, axis=0) if align_distribution else p_txt
    p_da = p_da / p_da.sum(axis=1, keepdims=True)
    p_img = softmax_rows(s * f_w @ z.T)
    p = node.ALPHA * p_img + (1 - node.ALPHA) * p_da
    y = p.argmax(axis=1)
    weights = np.array([p_txt[b, y[b]] / (p_txt[b].max() + node.RANKING_EPS)
                        * p_img[b, y[b]] / (p_img[b].max() + node.RANKING_EPS) for b in range(len(y))])
    logits = s * f_s @ w.T
    ce = [math.log(np.exp(logits[b]).sum()) - logits[b, y[b]] for b in range(len(y))]
    loss_st = float(np.mean(weights * np.array(ce)))
    mean_p = softmax_rows(logits).mean(axis=0)
    loss_fair = float(-np.log(mean_p).mean())
    align = node.ALIGN_TEMPERATURE * z @ w.T
    loss_align = float(np.mean([math.log(np.exp(align[c]).sum()) - align[c, c] for c in range(len(z))]))
    total = loss_st + node.FAIRNESS_WEIGHT * loss_fair + node.ALIGN_WEIGHT * loss_align
    return y, weights, loss_st, loss_fair, loss_align, total


@pytest.mark.parametrize("opts", [(), ("TRAINER.DPA.ALPHA", "0.1", "TRAINER.DPA.ALIGN_TEMPERATURE", "1.0",
                                       "TRAINER.DPA.QUEUE_LENGTH", "2", "TRAINER.DPA.FAIRNESS_WEIGHT", "0.3")])
def test_step_matches_a_plain_rederivation_of_the_official_formulas(image_root, tiny_clip_path, tmp_path, opts):
    from baselines.dpa import training_step_loss

    trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path), opts)
    model, node = trainer.model, trainer.node
    # the batch from fixed generators (the preconditions below depend on it, not on what building the trainer drew)
    torch.manual_seed(0)
    random.seed(0)
    batch = next(iter(trainer.train_loader_x))
    weak, strong = batch["img"], batch["img2"]
    # scale the text prototypes so that L2-normalisation on use matters; put two old entries in the queue
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        # soft heads: both prototype sets close to the batch's mean feature (the random tiny CLIP gives one-hot
        # zero-shot probabilities otherwise), text rows scaled so that L2-normalisation on use matters; then the
        # mixture weight and the distribution alignment both decide labels (checked below)
        mean_feature = model.encode(weak).mean(dim=0)
        noise = torch.randn(6, mean_feature.shape[0], generator=generator)
        soft = torch.nn.functional.normalize(mean_feature + 0.01 * noise, dim=-1)
        model.text_prototypes.copy_(soft[:3] * torch.tensor([[2.0], [0.5], [3.0]]))
        model.image_prototypes.copy_(soft[3:])
    old = [np.array([0.01, 0.98, 0.01]), np.array([0.05, 0.9, 0.05])]  # skewed: alignment matters
    for mean in old:
        model.queue.push(torch.tensor(mean, dtype=torch.float32))
    with torch.no_grad():
        f_w, f_s = model.encode(weak).double().numpy(), model.encode(strong).double().numpy()
    w_raw = model.text_prototypes.detach().double().numpy()
    z = model.image_prototypes.double().numpy()
    y, weights, loss_st, loss_fair, loss_align, total = reference_step(f_w, f_s, w_raw, z, old, node)
    y_text_only = reference_step(f_w, f_s, w_raw, z, old, _with_alpha(node, 0.0))[0]
    y_image_only = reference_step(f_w, f_s, w_raw, z, old, _with_alpha(node, 1.0))[0]
    assert y_text_only.tolist() != y_image_only.tolist(), "test precondition: the two heads must disagree"
    if node.ALPHA != 0.5:
        y_swapped = reference_step(f_w, f_s, w_raw, z, old, _with_alpha(node, 1.0 - node.ALPHA))[0]
        assert y.tolist() != y_swapped.tolist(), "test precondition: the mixture weight must change a label"
    y_unaligned = reference_step(f_w, f_s, w_raw, z, old, node, align_distribution=False)[0]
    assert y.tolist() != y_unaligned.tolist(), "test precondition: distribution alignment must change a label"
    out = training_step_loss(model, node, weak, strong)
    assert out.pseudo.labels.tolist() == y.tolist()
    assert np.allclose(out.pseudo.weights.numpy(), weights, atol=1e-5)
    assert out.loss_st.item() == pytest.approx(loss_st, rel=1e-4, abs=1e-4)
    assert out.loss_fair.item() == pytest.approx(loss_fair, rel=1e-5)
    assert out.loss_align.item() == pytest.approx(loss_align, rel=1e-4, abs=1e-5)
    assert out.loss.item() == pytest.approx(total, rel=1e-4, abs=1e-4)


def test_gradients_reach_exactly_the_layernorms_and_text_prototypes(image_root, tiny_clip_path, tmp_path):
    trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path))
    model = trainer.model
    expected = {f"visual.{n}.{p}" for n, m in model.visual.named_modules() if isinstance(m, torch.nn.LayerNorm)
                for p in ("weight", "bias")} | {"text_prototypes"}
    assert set(trainer.trainable_names) == expected
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    z_before = model.image_prototypes.clone()
    batch = next(iter(trainer.train_loader_x))
    trainer.forward_backward(batch)
    assert_updated_exactly(model, expected, before)
    assert torch.equal(model.image_prototypes, z_before)  # Z is a fixed tensor within the epoch
    assert not hasattr(model, "transformer")  # the text tower is dropped
    # weight decay 0.1 on weights and W, none on biases (official grouping)
    decay, no_decay = trainer.optim.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("bias") for p in no_decay["params"])
    assert not any(names[id(p)].endswith("bias") for p in decay["params"])
    # the memory bank received this batch's weak features and pseudo-labels
    assert (model.memory.labels[batch["index"]] >= 0).all()


def test_alignment_term_reaches_only_the_text_prototypes(image_root, tiny_clip_path, tmp_path):
    from clipkit.blocks.losses import prototype_alignment_loss

    model = make_trainer(image_root, tiny_clip_path, str(tmp_path)).model
    loss = prototype_alignment_loss(model.image_prototypes, model.classifier(), 100.0)
    loss.backward()
    assert model.text_prototypes.grad is not None and model.text_prototypes.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if n != "text_prototypes")


def test_initial_and_rebuilt_prototypes_follow_the_zero_shot_labels(image_root, tiny_clip_path, tmp_path):
    trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path))
    model = trainer.model
    features, labels = model.memory.features.clone(), model.memory.labels.clone()
    # the initial bank is the zero-shot pass: every train image labelled by argmax s f W^T
    w = torch.nn.functional.normalize(model.text_prototypes.detach(), dim=-1)
    assert torch.equal(labels, (100.0 * features @ w.t()).argmax(dim=1))
    # rebuild with one class emptied: it falls back to its (normalised) text prototype
    emptied = int(labels[0])
    model.memory.labels[labels == emptied] = (emptied + 1) % 3
    model.rebuild_image_prototypes()
    for c in range(3):
        members = features[model.memory.labels == c]
        expected = members.mean(0) if len(members) else w[c]
        assert torch.allclose(model.image_prototypes[c], expected / expected.norm(), atol=1e-6), c


def test_no_label_leak(image_root, tiny_clip_path, tmp_path):
    from clipkit.testing import assert_no_label_leak

    no_eval = ["TEST.EVAL_EVERY_EPOCH", "False", "OPTIM.MAX_EPOCH", "2"]  # 2 epochs: the rebuilt Z is used
    assert_no_label_leak(lambda out: make_trainer(image_root, tiny_clip_path, out, no_eval), str(tmp_path))


def test_checkpoint_carries_trained_tensors_and_method_state(image_root, tiny_clip_path, tmp_path):
    trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path))
    model = trainer.model
    trainer.forward_backward(next(iter(trainer.train_loader_x)))
    state = model.state_dict()
    assert set(state) == set(trainer.trainable_names) | {"image_prototypes", "memory.features", "memory.labels",
                                                         "queue.entries", "queue.count"}
    saved = {k: v.clone() for k, v in state.items()}
    fresh = make_trainer(image_root, tiny_clip_path, str(tmp_path / "other")).model
    fresh.load_state_dict(saved)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, saved[key]), key
    with pytest.raises(RuntimeError, match="missing"):
        fresh.load_state_dict({k: v for k, v in saved.items() if k != "queue.count"})


def test_bad_switch_names_the_key(image_root, tiny_clip_path, tmp_path):
    with pytest.raises(ValueError, match="TRAINER.DPA.INIT_VIEW"):
        make_trainer(image_root, tiny_clip_path, str(tmp_path), ["TRAINER.DPA.INIT_VIEW", "center"])


@pytest.mark.parametrize("opts", [("TRAINER.DPA.INIT_VIEW", "weak"), ("TRAINER.DPA.TEXT_PROTOTYPES", "descriptions"),
                                  ("TRAINER.DPA.KEEP_LAST_BATCH", "False")])
def test_switches_build_and_step(image_root, tiny_clip_path, tmp_path, opts):
    trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path), opts)
    batches = list(trainer.train_loader_x)
    keep_last = trainer.node.KEEP_LAST_BATCH
    assert len(batches) == (3 if keep_last else 2)  # 12 train images in batches of 5
    summary = trainer.forward_backward(batches[0])
    assert torch.isfinite(summary["loss"])


def run_train_py(image_root, clip_path, out, epochs, *opts):
    env = dict(os.environ, CLIPKIT_EXTRA_PLUGINS="tests.plugins.image_folder_dataset", PYTHONPATH=REPO,
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--root", image_root, "--trainer", "DPA",
           "--config-file", TINY_YAML, "--output-dir", str(out), "--seed", "1", *base_opts(clip_path, epochs), *opts]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_train_py_end_to_end_writes_results(image_root, tiny_clip_path, tmp_path):
    full = tmp_path / "full"
    proc = run_train_py(image_root, tiny_clip_path, full, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((full / "results.json").read_text())
    assert results["method"] == "DPA" and results["num_test"] == 6
    assert [e["epoch"] for e in results["epochs"]] == [1, 2]
    for key in ("pl_accuracy", "pl_confidence", "mean_ranking_weight", "prototype_text_agreement", "accuracy"):
        assert key in results["epochs"][-1], key
    assert results["accuracy_last"] == pytest.approx(results["epochs"][-1]["accuracy"])
    assert results["best_is_test_selection"] is True
    # exact resume after a kill (also during a checkpoint write): tests/test_exact_resume.py
