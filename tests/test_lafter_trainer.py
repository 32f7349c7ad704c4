"""LaFTer (baselines/lafter.py) on the tiny CLIP: stage 1 loss and noise by hand, the student sees prompts and the
teacher does not, the trainable set, the teacher switch, label-leak guard, checkpoint state, end-to-end train.py run."""

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

TINY_YAML = os.path.join(REPO, "configs", "trainers", "LaFTer", "tiny.yaml")
FAST = ["TRAINER.LAFTER.TEXT_STEPS", "20", "TRAINER.LAFTER.NUM_PROMPTS", "4", "TRAINER.LAFTER.EPOCH_TEST", "False"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_trainer(image_root, clip_path, output_dir, opts=()):
    import train
    from clipkit.dassl import build_trainer, set_random_seed

    argv = ["--root", image_root, "--trainer", "LaFTer", "--config-file", TINY_YAML, "--output-dir", output_dir,
            "--seed", "1", "DATASET.NAME", "TestImageFolder", "MODEL.BACKBONE.NAME", clip_path,
            "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "6",
            "OPTIM.MAX_EPOCH", "1", "USE_CUDA", "False", *FAST, *opts]
    set_random_seed(1)
    return build_trainer(train.setup_cfg(train.build_parser().parse_args(argv)))


# ------------------------------------------------------------------------------------------------------- stage 1
def hand_label_smoothed_ce(logits, labels, eps):
    """Per sample: (1 - eps) * (-log p_y) + eps * mean_c (-log p_c), with log p from a hand log-sum-exp."""
    total = 0.0
    for row, label in zip(logits.tolist(), labels.tolist()):
        top = max(row)
        log_z = top + np.log(sum(np.exp(v - top) for v in row))
        log_p = [v - log_z for v in row]
        total += (1 - eps) * -log_p[label] + eps * sum(-lp for lp in log_p) / len(row)
    return total / len(labels)


def test_text_classifier_loss_and_noise_match_a_hand_computation():
    from baselines.lafter import class_samples, text_classifier_loss, train_text_classifier

    torch.manual_seed(0)
    per_class_a = [F.normalize(torch.randn(n, 5), dim=-1) for n in (2, 3)]  # e.g. descriptions
    per_class_b = [F.normalize(torch.randn(1, 5), dim=-1) for _ in range(2)]  # e.g. one template
    features, labels = class_samples([per_class_a, per_class_b])
    assert labels.tolist() == [0, 0, 1, 1, 1, 0, 1]
    assert torch.equal(features[2:5], per_class_a[1]) and torch.equal(features[6], per_class_b[1][0])

    weight = torch.randn(2, 5)
    noise = 0.1 * torch.randn(features.shape)
    logits = [[sum(w * (f + n) for w, f, n in zip(row_w, row_f, row_n)) for row_w in weight.tolist()]
              for row_f, row_n in zip(features.tolist(), noise.tolist())]
    expected = hand_label_smoothed_ce(torch.tensor(logits), labels, 0.1)
    assert text_classifier_loss(weight, features, labels, noise, 0.1).item() == pytest.approx(expected, rel=1e-5)

    # the first training step sees sigma * N(0, 1) noise drawn from the given generator
    parameter = torch.nn.Parameter(weight.clone())
    result = train_text_classifier(parameter, features, labels, steps=1, lr=1e-3, weight_decay=0.01, noise_std=0.3,
                                   smoothing=0.1, generator=torch.Generator().manual_seed(7))
    drawn = 0.3 * torch.randn(features.shape, generator=torch.Generator().manual_seed(7))
    noisy_logits = ((features + drawn) @ weight.t())
    assert result.first_loss == pytest.approx(hand_label_smoothed_ce(noisy_logits, labels, 0.1), rel=1e-5)
    assert not torch.equal(parameter.detach(), weight)

    # many steps fit separable text samples (class c around the axis e_c)
    separable = F.normalize(torch.eye(5)[labels] + 0.2 * torch.randn(features.shape), dim=-1)
    parameter = torch.nn.Parameter(torch.zeros(2, 5))
    result = train_text_classifier(parameter, separable, labels, steps=300, lr=0.05, weight_decay=0.01,
                                   noise_std=0.1, smoothing=0.1, generator=torch.Generator().manual_seed(0))
    assert result.final_loss < result.first_loss and result.train_accuracy == 100.0


def test_stage1_uses_descriptions_and_templates_and_freezes_a_copy(image_root, tiny_clip_path, tmp_path):
    trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path))
    # 3 descriptions + 2 templates of TestImageFolder per class
    assert trainer.num_text_samples == 3 * (3 + 2)
    model = trainer.model
    assert torch.equal(model.teacher_weight, model.classifier.weight.detach())
    assert "teacher_weight" not in dict(model.named_parameters())
    templates_only = make_trainer(image_root, tiny_clip_path, str(tmp_path / "t"),
                                  ["TRAINER.LAFTER.TEXT_SAMPLES", "templates"])
    assert templates_only.num_text_samples == 3 * 2


# ------------------------------------------------------------------------------------------------------- stage 2
def expected_trainable(model):
    names = {f"visual.{n}.{p}" for n, m in model.visual.named_modules() if isinstance(m, torch.nn.LayerNorm)
             for p in ("weight", "bias")}
    return names | {"prompt.prompts", "classifier.weight"}


def test_student_sees_prompts_and_teacher_does_not(image_root, tiny_clip_path, tmp_path):
    from clipkit.clip import load_clip

    trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path))
    model = trainer.model
    visual = load_clip(tiny_clip_path).visual.eval()
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    mean = torch.tensor(trainer.cfg.INPUT.PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(trainer.cfg.INPUT.PIXEL_STD).view(1, 3, 1, 1)
    normalised = (images.float() / 255.0 - mean) / std
    with torch.no_grad():
        plain = visual(normalised)
        teacher = F.normalize(plain, dim=-1) @ model.teacher_weight.t()
        torch.testing.assert_close(model.teacher_logits(images), teacher, rtol=1e-4, atol=1e-5)
        student = model.student_logits(images)
        model.prompt.prompts.mul_(3.0)
        assert torch.equal(model.teacher_logits(images), model.teacher_logits(images))
        torch.testing.assert_close(model.teacher_logits(images), teacher, rtol=1e-4, atol=1e-5)  # no prompts
        assert not torch.allclose(model.student_logits(images), student, atol=1e-4)  # prompts enter
        model.prompt.prompts.data = model.prompt.prompts.data[:0]
        # without prompts the student is A on the UN-normalised plain feature
        torch.testing.assert_close(model.student_logits(images), plain @ model.classifier.weight.t(),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("teacher", ["tuned", "frozen"])
def test_one_step_gradients_reach_exactly_the_trainable_parameters(image_root, tiny_clip_path, tmp_path, teacher):
    trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path), ["TRAINER.LAFTER.TEACHER_ENCODER", teacher])
    model = trainer.model
    assert set(trainer.trainable_names) == expected_trainable(model)
    assert (model.teacher_visual is None) == (teacher == "tuned")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = next(iter(trainer.train_loader_x))
    assert batch["img"].dtype == torch.uint8 and batch["img2"].dtype == torch.uint8
    probe = batch["img"][:2]
    teacher_before = model.teacher_logits(probe)
    trainer.batch_idx, trainer.num_batches = 0, len(trainer.train_loader_x)
    summary = trainer.forward_backward(batch)
    assert torch.isfinite(summary["loss"])
    assert_updated_exactly(model, trainer.trainable_names, before)
    teacher_moved = not torch.allclose(model.teacher_logits(probe), teacher_before, atol=1e-7)
    assert teacher_moved == (teacher == "tuned")  # official: the teacher runs through the drifting LayerNorms
    # weight decay on everything but biases (official no_decay = ["bias", ...])
    decay, no_decay = trainer.optim.param_groups
    assert decay["weight_decay"] == trainer.cfg.OPTIM.WEIGHT_DECAY and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == sum(1 for n in trainer.trainable_names if "bias" in n)


def test_loss_is_label_smoothed_ce_on_the_teacher_argmax(image_root, tiny_clip_path, tmp_path):
    from baselines.lafter import training_step_loss

    trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path))
    model = trainer.model
    weak = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    strong = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    out = training_step_loss(model, weak, strong, 0.1)
    with torch.no_grad():
        probabilities = torch.softmax(model.teacher_logits(weak), dim=-1)
        student = model.student_logits(strong)
    assert out.pseudo_labels.tolist() == probabilities.argmax(1).tolist()
    torch.testing.assert_close(out.confidences, probabilities.max(1).values)
    expected = hand_label_smoothed_ce(student, out.pseudo_labels, 0.1)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def test_no_label_leak(image_root, tiny_clip_path, tmp_path):
    from clipkit.testing import assert_no_label_leak

    assert_no_label_leak(lambda out: make_trainer(image_root, tiny_clip_path, out), str(tmp_path))


def test_checkpoint_carries_prompts_layernorms_classifier_and_teacher(image_root, tiny_clip_path, tmp_path):
    trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path / "a"))
    trainer.train()
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert set(state) == expected_trainable(trainer.model) | {"teacher_weight"}  # slim: no frozen weights
    # another seed gives another stage 1 classifier and prompts; loading the checkpoint restores the trained state
    other = make_trainer(image_root, tiny_clip_path, str(tmp_path / "b"), ["SEED", "5"])
    assert not torch.equal(other.model.teacher_weight, state["teacher_weight"])
    other.load_model(str(tmp_path / "a"), epoch=1)
    for key, value in other.model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_bad_config_names_the_key(image_root, tiny_clip_path, tmp_path):
    with pytest.raises(ValueError, match="TRAINER.LAFTER.TEACHER_ENCODER must be one of"):
        make_trainer(image_root, tiny_clip_path, str(tmp_path), ["TRAINER.LAFTER.TEACHER_ENCODER", "ema"])


def test_train_py_end_to_end_writes_results_and_resumes(image_root, tiny_clip_path, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--root", image_root, "--trainer", "LaFTer", "--seed", "1",
           "--config-file", TINY_YAML, "--output-dir", str(out), "DATASET.NAME", "TestImageFolder",
           "MODEL.BACKBONE.NAME", tiny_clip_path, "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
           "OPTIM.MAX_EPOCH", "2", "USE_CUDA", "False", "TRAINER.LAFTER.TEXT_STEPS", "20",
           "TRAINER.LAFTER.NUM_PROMPTS", "4"]
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1",
               CLIPKIT_EXTRA_PLUGINS="tests.plugins.image_folder_dataset")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LaFTer stage 1: text classifier on 15 text samples" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "LaFTer" and results["num_test"] == 6
    epochs = results["epochs"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all({"pl_accuracy", "pl_confidence", "accuracy"} <= set(r) for r in epochs)
    assert results["best_is_test_selection"] is True
    assert results["accuracy_best"] == max(r["accuracy"] for r in epochs)
    assert epochs[-1]["accuracy"] == results["accuracy_last"]
    assert results["run_summary"]["text_samples"] == 15
    # TRAIN.CHECKPOINT_FREQ 1 with TRAIN.CHECKPOINT_KEEP 1: a checkpoint every epoch, only the newest kept
    assert os.path.isfile(out / "lafter" / "model.pth.tar-2") and not os.path.exists(out / "lafter" / "model.pth.tar-1")
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["accuracy_last"] == results["accuracy_last"]
