"""NtUA (reconstruction): cache formation, rectification and test logits against from-scratch computations on the
tiny CLIP; the finetune mode trains only the keys; label-leak guard; both modes through train.py's main()."""

import json
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO

PLUGIN = "tests.plugins.image_folder_dataset"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SMALL = ["TRAINER.NTUA.SHOTS", "2", "TRAINER.NTUA.AUGMENT_EPOCHS", "2", "OPTIM.MAX_EPOCH", "2",
         "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.NUM_WORKERS", "0", "USE_CUDA", "False"]


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    """A second random tiny CLIP (another init seed) as the rectification teacher."""
    from clipkit.clip import build_tiny_clip, save_tiny_clip

    path = tmp_path_factory.mktemp("teacher") / "teacher_clip.pt"
    save_tiny_clip(build_tiny_clip(seed=1), str(path))
    return str(path)


@pytest.fixture(autouse=True)
def _plugins(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPKIT_EXTRA_PLUGINS", PLUGIN)
    monkeypatch.setenv("CLIPKIT_CACHE", str(tmp_path / "cache"))


def _argv(root, clip_path, output_dir, *opts, eval_only=False):
    return ["--root", root, "--trainer", "NtUA", "--output-dir", output_dir, "--seed", "1",
            "--config-file", os.path.join(REPO, "configs", "trainers", "NtUA", "tiny.yaml"),
            *(["--eval-only"] if eval_only else []),
            "DATASET.NAME", "TestImageFolder", "MODEL.BACKBONE.NAME", clip_path, "TRAINER.NTUA.TEACHER", "",
            *SMALL, *opts]


def _build(root, clip_path, output_dir, *opts):
    import train
    from clipkit.dassl import build_trainer

    return build_trainer(train.setup_cfg(train.build_parser().parse_args(_argv(root, clip_path, output_dir, *opts))))


def _run_main(argv):
    import train

    stdout = sys.stdout
    try:
        train.main(train.build_parser().parse_args(argv))
    finally:
        if sys.stdout is not stdout and hasattr(sys.stdout, "close"):
            sys.stdout.close()  # the log tee of setup_logger
        sys.stdout = stdout


# ------------------------------------------------------------------------------------------- references by hand
def _test_view(paths, side):
    from PIL import Image
    from torchvision import transforms as T

    preprocess = T.Compose([T.Resize(side, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(side),
                            T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
    return torch.stack([preprocess(Image.open(path).convert("RGB")) for path in paths])


def _prompt_ensemble(model, classnames, templates):
    from clipkit.clip import tokenize

    rows = []
    with torch.no_grad():
        for name in classnames:
            raw = model.encode_text(tokenize([t.format(name) for t in templates])).float()
            rows.append(F.normalize(F.normalize(raw, dim=-1).mean(0), dim=0))
    return torch.stack(rows)


def _encode(model, images):
    with torch.no_grad():
        return model.encode_image(images).float()


def _top_k_by_hand(probabilities, k):
    """For every predicted class, the k most confident members (ties: lower index), as a sorted list."""
    kept = []
    labels = [int(row.argmax()) for row in probabilities]
    for c in sorted(set(labels)):
        members = sorted((i for i in range(len(labels)) if labels[i] == c),
                         key=lambda i: (-float(probabilities[i].max()), i))
        kept.extend(members[:k])
    return sorted(kept)


@pytest.mark.parametrize("values_form, temperature, adaptive", [("hard", 1.0, True), ("soft", 2.0, True),
                                                                ("hard", 1.0, False)])
def test_cache_and_test_logits_match_a_from_scratch_computation(tiny_image_folder, tiny_clip_path, teacher_path,
                                                                tmp_path, values_form, temperature, adaptive):
    from clipkit.blocks.augmented_views import ResizedCropViewsDataset
    from clipkit.clip import load_clip

    root, _ = tiny_image_folder
    alpha, beta = 1.5, 3.0
    trainer = _build(root, tiny_clip_path, str(tmp_path / "run"), "TRAINER.NTUA.MODE", "training_free",
                     "TRAINER.NTUA.TEACHER", teacher_path, "TRAINER.NTUA.VALUES", values_form,
                     "TRAINER.NTUA.KD_TEMPERATURE", str(temperature), "TRAINER.NTUA.ADAPTIVE_WEIGHTS", str(adaptive),
                     "TRAINER.NTUA.ALPHA", str(alpha), "TRAINER.NTUA.BETA", str(beta))
    dataset, side = trainer.dm.dataset, trainer.cfg.INPUT.SIZE[0]
    student, teacher = load_clip(tiny_clip_path), load_clip(teacher_path)
    classnames, templates = trainer.classnames, dataset.templates

    # 1. label-free selection: the 2 most confident train images per zero-shot predicted class
    train_paths = [item.impath for item in dataset.train_x]
    W = _prompt_ensemble(student, classnames, templates)
    p = torch.softmax(100.0 * F.normalize(_encode(student, _test_view(train_paths, side)), dim=-1) @ W.T, dim=-1)
    shots = _top_k_by_hand(p, 2)
    assert [item.impath for item in trainer.shot_items] == [train_paths[i] for i in shots]

    # 2. rectification: the teacher's own prompt ensemble on the cached images' test view
    shot_paths = [train_paths[i] for i in shots]
    W_T = _prompt_ensemble(teacher, classnames, templates)
    q = torch.softmax(100.0 / temperature * F.normalize(_encode(teacher, _test_view(shot_paths, side)), dim=-1)
                      @ W_T.T, dim=-1)
    values = q if values_form == "soft" else F.one_hot(q.argmax(dim=1), len(classnames)).float()
    weights = q.max(dim=1).values if adaptive else torch.ones(len(shots))
    torch.testing.assert_close(trainer.cache.values, values, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(trainer.cache.weights, weights, rtol=1e-4, atol=1e-5)

    # 3. keys: mean of the raw features of the seed-1 views, normalised
    views = ResizedCropViewsDataset(shot_paths, 2, side, (0.5, 1.0), (0.75, 4 / 3), 0.5, seed=1)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    keys = torch.stack([F.normalize(_encode(student, (views[i].float() / 255.0 - mean) / std).mean(0), dim=0)
                        for i in range(len(shots))])
    torch.testing.assert_close(trainer.cache.keys.detach(), keys, rtol=1e-4, atol=1e-5)

    # 4. test logits: 100 f W^T + alpha sum_i w_i exp(-beta (1 - f k_i)) v_i
    f = F.normalize(_encode(student, _test_view([item.impath for item in dataset.test], side)), dim=-1)
    expected = 100.0 * f @ W.T
    for i in range(len(shots)):
        expected = expected + alpha * weights[i] * torch.exp(-beta * (1.0 - f @ keys[i]))[:, None] * values[i][None]
    (logits,) = trainer.split_logits("test", dataset.test, trainer.test_loader)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(trainer.model_inference(_test_view([item.impath for item in dataset.test], side)),
                               expected, rtol=1e-4, atol=1e-3)


def test_random_shots_per_true_class_and_finetune_loss_by_hand():
    from baselines.ntua import cache_entries, finetune_loss, random_shots_per_true_class
    from clipkit.blocks.cache_adapter import KeyValueCache

    labels = [0, 1, 1, 2, 0, 1, 2, 2, 2, 0]
    shots = random_shots_per_true_class(labels, 2, torch.Generator().manual_seed(0)).tolist()
    assert shots == sorted(shots) and len(shots) == 6
    assert sorted(labels[i] for i in shots) == [0, 0, 1, 1, 2, 2]
    probs = torch.tensor([[0.6, 0.4], [0.2, 0.8]])
    assert torch.equal(cache_entries(probs, "hard", adaptive=False)[1], torch.ones(2))

    generator = torch.Generator().manual_seed(3)
    keys = F.normalize(torch.randn(3, 4, generator=generator), dim=-1)
    classifier = F.normalize(torch.randn(2, 4, generator=generator), dim=-1)
    features = F.normalize(torch.randn(2, 4, generator=generator), dim=-1)
    values = torch.tensor([[1.0, 0.0], [0.3, 0.7], [0.0, 1.0]])
    weights = torch.tensor([0.5, 0.9, 0.8])
    cache = KeyValueCache(keys, values, weights, classifier, alpha=2.0, beta=1.0, logit_scale=100.0)
    targets, sample_weights = values[[1, 2]], weights[[1, 2]]
    total = 0.0
    for b in range(2):
        logit = [100.0 * float(features[b] @ classifier[c]) + 2.0 * sum(
            float(weights[i]) * math.exp(-(1.0 - float(features[b] @ keys[i]))) * float(values[i, c])
            for i in range(3)) for c in range(2)]
        log_z = math.log(sum(math.exp(v - max(logit)) for v in logit)) + max(logit)
        total += float(sample_weights[b]) * -sum(float(targets[b, c]) * (logit[c] - log_z) for c in range(2))
    assert abs(float(finetune_loss(cache, features, targets, sample_weights)) - total / 2) < 1e-3
    unweighted = finetune_loss(cache, features, targets)
    assert abs(float(unweighted) - float(F.cross_entropy(cache(features), targets))) < 1e-5


def test_training_order_depends_only_on_seed_and_epoch():
    from baselines.ntua import EpochPermutation

    sampler = EpochPermutation(7, seed=3)
    first = list(sampler)
    torch.manual_seed(0)  # the global RNG plays no part
    assert sorted(first) == list(range(7)) and list(sampler) == first and len(sampler) == 7
    sampler.epoch = 1
    assert list(sampler) != first and list(EpochPermutation(7, seed=4)) != first


def test_finetune_trains_only_the_keys_and_resumes(tiny_image_folder, tiny_clip_path, tmp_path):
    root, _ = tiny_image_folder
    out = str(tmp_path / "run")
    trainer = _build(root, tiny_clip_path, out)
    assert not trainer.training_free and trainer.max_epoch == 2
    clip_before = {k: v.clone() for k, v in trainer.clip_model.state_dict().items()}
    buffers_before = {k: v.clone() for k, v in trainer.cache.named_buffers()}
    keys_before = trainer.cache.keys.detach().clone()
    trainable = [f"{m}.{n}" for m in trainer.get_model_names() for n, p in trainer._models[m].named_parameters()
                 if p.requires_grad]
    assert trainable == ["ntua.keys"]
    assert not any(p.requires_grad for p in trainer.clip_model.parameters())
    trainer.train()
    assert not torch.equal(trainer.cache.keys.detach(), keys_before)
    assert all(torch.equal(v, clip_before[k]) for k, v in trainer.clip_model.state_dict().items())
    assert all(torch.equal(v, buffers_before[k]) for k, v in trainer.cache.named_buffers())
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["method"] == "NtUA" and [r["epoch"] for r in results["epochs"]] == [1, 2]
    size = len(trainer.shot_items)
    assert 1 <= size <= 6 and all("accuracy" in r and r["cache_size"] == size for r in results["epochs"])
    summary = results["run_summary"]
    assert summary["mode"] == "finetune" and summary["reconstruction"] is True
    assert summary["trainable_parameters"] == trainer.cache.keys.numel()
    assert not summary["subset_uses_class_membership"]
    # re-launched into the finished folder: resumes the trained keys (no epoch trained), same accuracy
    again = _build(root, tiny_clip_path, out)
    again.train()
    assert torch.equal(again.cache.keys.detach(), trainer.cache.keys.detach())
    assert json.load(open(os.path.join(out, "results.json")))["accuracy_last"] == results["accuracy_last"]


@pytest.mark.parametrize("eval_only", [True, False])
def test_both_modes_through_train_main(tiny_image_folder, tiny_clip_path, tmp_path, eval_only):
    root, _ = tiny_image_folder
    runs = {}
    for mode in ("training_free", "finetune"):
        if mode == "finetune" and eval_only:
            continue
        out = str(tmp_path / mode)
        _run_main(_argv(root, tiny_clip_path, out, "TRAINER.NTUA.MODE", mode, eval_only=eval_only))
        runs[mode] = json.load(open(os.path.join(out, "results.json")))
        log = open(os.path.join(out, "log.txt")).read()
        assert "the 2 most confident per zero-shot predicted class (label-free)" in log
        assert "Evaluate on the *test* set" in log
    free = runs["training_free"]
    assert free["epochs"] == [] and free["best_epoch"] == 0 and free["num_test"] == 6
    assert free["run_summary"]["trainable_parameters"] == 0
    if not eval_only:
        assert [r["epoch"] for r in runs["finetune"]["epochs"]] == [1, 2]
        assert runs["finetune"]["best_is_test_selection"] is True  # the tiny config tests every epoch


def test_no_label_leak_and_the_class_membership_switch_is_caught(tiny_image_folder, tiny_clip_path, tmp_path):
    from clipkit.testing import assert_no_label_leak

    root, _ = tiny_image_folder
    one_epoch = ("OPTIM.MAX_EPOCH", "1", "TEST.EVAL_EVERY_EPOCH", "False")
    assert_no_label_leak(lambda out: _build(root, tiny_clip_path, out, *one_epoch), str(tmp_path / "label_free"))
    with pytest.raises(AssertionError, match="label leak"):
        assert_no_label_leak(lambda out: _build(root, tiny_clip_path, out, *one_epoch, "TRAINER.NTUA.SUBSET",
                                                "random_per_true_class"), str(tmp_path / "true_classes"))


@pytest.mark.parametrize("opts, message", [
    (["TRAINER.NTUA.MODE", "tip"], "TRAINER.NTUA.MODE must be one of"),
    (["TRAINER.NTUA.RECTIFY", "False", "TRAINER.NTUA.VALUES", "soft"], "TRAINER.NTUA.RECTIFY True"),
    (["TRAINER.NTUA.BETA", "0.0"], "TRAINER.NTUA.BETA must be positive"),
    (["TRAINER.NTUA.SHOTS", "0"], "TRAINER.NTUA.SHOTS must be >= 1"),
])
def test_bad_config_names_the_key(tiny_image_folder, tiny_clip_path, tmp_path, opts, message):
    root, _ = tiny_image_folder
    with pytest.raises(ValueError, match=message):
        _build(root, tiny_clip_path, str(tmp_path / "run"), *opts)
