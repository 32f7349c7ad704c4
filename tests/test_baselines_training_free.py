"""Training-free baselines (ZeroshotCLIP, CuPL, WCA): end-to-end ``train.py --eval-only`` runs and their logits
against from-scratch reference computations on the tiny CLIP."""

import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, write_descriptions

PLUGIN = "tests.plugins.image_folder_dataset"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture
def image_root(tiny_image_folder):
    root, classnames = tiny_image_folder
    write_descriptions(root, classnames)
    return root


def _argv(method, root, tiny_clip_path, output_dir, *opts):
    return [
        "--root", root, "--trainer", method, "--output-dir", output_dir, "--eval-only",
        "--config-file", os.path.join(REPO, "configs", "trainers", method, "tiny.yaml"),
        "DATASET.NAME", "TestImageFolder", "MODEL.BACKBONE.NAME", tiny_clip_path, "DATALOADER.NUM_WORKERS", "0",
        *opts,
    ]


def _build(method, root, tiny_clip_path, tmp_path, *opts):
    """The trainer train.py would build (in-process, same config merge)."""
    os.environ.setdefault("CLIPKIT_EXTRA_PLUGINS", PLUGIN)
    import train

    argv = _argv(method, root, tiny_clip_path, str(tmp_path / "out" / method), *opts)
    with _extra_plugins():
        cfg = train.setup_cfg(train.build_parser().parse_args(argv))
    from clipkit.dassl import build_trainer

    return build_trainer(cfg)


class _extra_plugins:
    def __enter__(self):
        self.previous = os.environ.get("CLIPKIT_EXTRA_PLUGINS")
        os.environ["CLIPKIT_EXTRA_PLUGINS"] = PLUGIN

    def __exit__(self, *exc):
        if self.previous is None:
            os.environ.pop("CLIPKIT_EXTRA_PLUGINS", None)
        else:
            os.environ["CLIPKIT_EXTRA_PLUGINS"] = self.previous


# ------------------------------------------------------------------------------------------------ end to end


def _run_train_py(argv, in_process):
    """Run train.py with ``argv``: in this interpreter (train.main) or as a subprocess (the real CLI)."""
    if not in_process:
        cmd = [sys.executable, os.path.join(REPO, "train.py"), *argv]
        env = dict(os.environ, CLIPKIT_EXTRA_PLUGINS=PLUGIN)
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return
    import train

    stdout = sys.stdout
    try:
        with _extra_plugins():
            train.main(train.build_parser().parse_args(argv))
    finally:
        if sys.stdout is not stdout and hasattr(sys.stdout, "close"):
            sys.stdout.close()  # the log tee of setup_logger
        sys.stdout = stdout


# In process: the same argv parsing and main() as ``python train.py ...`` without a second interpreter start-up
# (run_train_py(argv, in_process=False) runs the real CLI; too slow on the shared test machine for every method).
@pytest.mark.parametrize("method, in_process", [("ZeroshotCLIP", True), ("CuPL", True), ("WCA", True)])
def test_eval_only_run_prints_result_block_and_writes_results(
    method, in_process, image_root, tiny_clip_path, tmp_path, monkeypatch
):
    monkeypatch.setenv("CLIPKIT_CACHE", str(tmp_path / "cache"))
    output_dir = str(tmp_path / method)
    opts = ["TRAINER.WCA.NUM_CROPS", "2", "TRAINER.WCA.CROP_SEEDS", "[1, 2]"] if method == "WCA" else []
    _run_train_py(_argv(method, image_root, tiny_clip_path, output_dir, *opts), in_process)
    log = open(os.path.join(output_dir, "log.txt")).read()
    block = re.search(r"=> result\n\* total: (\d+)\n\* correct: (\d+)\n\* accuracy: ([\d.]+)%\n\* error: [\d.]+%\n"
                      r"\* macro_f1: [\d.]+%", log)
    assert block, log[-2000:]
    assert "Evaluate on the *test* set" in log
    runs = 2 if method == "WCA" else 1
    assert int(block.group(1)) == 6 * runs  # 3 classes x 2 test images, pooled over crop seeds
    results = json.load(open(os.path.join(output_dir, "results.json")))
    assert results["method"] == method and results["dataset"] == "test_folder"
    assert results["best_epoch"] == 0 and results["epochs"] == []
    assert abs(results["accuracy_last"] - 100.0 * int(block.group(2)) / int(block.group(1))) < 1e-9
    if method == "WCA":
        summary = results["run_summary"]
        assert sorted(summary["runs"]) == ["crop_seed1", "crop_seed2"] and summary["num_images"] == 6
        per_run = list(summary["runs"].values())
        assert abs(summary["accuracy_mean"] - sum(per_run) / 2) < 1e-9
        assert abs(results["accuracy_last"] - summary["accuracy_mean"]) < 1e-9  # the block shows the mean
        assert "* crop_seed1: accuracy" in log
    else:
        assert "run_summary" not in results
    assert os.listdir(tmp_path / "cache" / "features" / "test_folder")  # features were cached


# ---------------------------------------------------------------------------------------------- references


def _test_images(trainer):
    """(N, 3, S, S) CLIP-preprocessed test images, built by hand (resize short side bicubic, centre crop)."""
    from PIL import Image
    from torchvision import transforms as T

    side = trainer.cfg.INPUT.SIZE[0]
    preprocess = T.Compose([T.Resize(side, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(side),
                            T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
    return torch.stack([preprocess(Image.open(item.impath).convert("RGB")) for item in trainer.dm.dataset.test])


def _encode_text(model, texts):
    from clipkit.clip import tokenize

    with torch.no_grad():
        return F.normalize(model.encode_text(tokenize(texts)).float(), dim=-1)


def _encode_image(model, images):
    with torch.no_grad():
        return F.normalize(model.encode_image(images).float(), dim=-1)


def _logits(trainer):
    dataset = trainer.dm.dataset
    return trainer.split_logits("test", dataset.test, trainer.test_loader)


@pytest.mark.parametrize("per_prompt_norm", [True, False])
def test_zeroshot_logits_match_reference(per_prompt_norm, image_root, tiny_clip_path, tmp_path):
    trainer = _build("ZeroshotCLIP", image_root, tiny_clip_path, tmp_path,
                     "TRAINER.ZEROSHOTCLIP.PER_PROMPT_NORM", str(per_prompt_norm))
    model, templates = trainer.clip_model, trainer.dm.dataset.templates
    rows = []
    for name in trainer.classnames:
        from clipkit.clip import tokenize

        with torch.no_grad():
            raw = model.encode_text(tokenize([t.format(name) for t in templates])).float()
        prompts = F.normalize(raw, dim=-1) if per_prompt_norm else raw
        rows.append(F.normalize(prompts.mean(0), dim=0))
    expected = 100.0 * _encode_image(model, _test_images(trainer)) @ torch.stack(rows).T
    (logits,) = _logits(trainer)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    # the batch hook gives the same logits as the cached path
    torch.testing.assert_close(trainer.model_inference(_test_images(trainer)), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("text_source", ["descriptions", "both"])
def test_cupl_classifier_matches_reference(text_source, image_root, tiny_clip_path, tmp_path):
    trainer = _build("CuPL", image_root, tiny_clip_path, tmp_path, "TRAINER.CUPL.TEXT_SOURCE", text_source)
    descriptions = json.load(open(os.path.join(image_root, "descriptions.json")))
    rows = []
    for name in trainer.classnames:
        sentences = list(descriptions[name])
        if text_source == "both":
            sentences = [t.format(name) for t in trainer.dm.dataset.templates] + sentences
        rows.append(F.normalize(_encode_text(trainer.clip_model, sentences).mean(0), dim=0))
    torch.testing.assert_close(trainer.text_classifier, torch.stack(rows), rtol=1e-5, atol=1e-5)
    expected = 100.0 * _encode_image(trainer.clip_model, _test_images(trainer)) @ torch.stack(rows).T
    torch.testing.assert_close(_logits(trainer)[0], expected, rtol=1e-4, atol=1e-4)


def test_wca_logits_match_reference(image_root, tiny_clip_path, tmp_path):
    from clipkit.blocks.multicrop import sample_square_crops
    from clipkit.feature_cache import crop_generator, read_image_uint8

    seeds, num_crops = (4, 9), 3
    trainer = _build("WCA", image_root, tiny_clip_path, tmp_path, "TRAINER.WCA.NUM_CROPS", str(num_crops),
                     "TRAINER.WCA.CROP_SEEDS", str(list(seeds)), "TRAINER.WCA.CROP_SCALE", "(0.3, 0.8)")
    model = trainer.clip_model
    descriptions = json.load(open(os.path.join(image_root, "descriptions.json")))
    text_rows = []
    for name in trainer.classnames:
        desc = _encode_text(model, descriptions[name])
        anchor = _encode_text(model, [f"a photo of a {name}."])[0]
        weights = torch.softmax(math.exp(2.0) * desc @ anchor, dim=0)
        text_rows.append(F.normalize((weights[:, None] * desc).sum(0), dim=0))
    text = torch.stack(text_rows)
    global_view = _encode_image(model, _test_images(trainer))
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    runs = _logits(trainer)
    assert len(runs) == 2
    for seed, logits in zip(seeds, runs):
        for index, item in enumerate(trainer.dm.dataset.test):
            crops = sample_square_crops(read_image_uint8(item.impath), num_crops, (0.3, 0.8), 64,
                                        crop_generator(seed, index))
            crop_features = _encode_image(model, (crops.float() / 255 - mean) / std)
            weights = torch.softmax(math.exp(4.0) * crop_features @ global_view[index], dim=0)
            image = F.normalize((weights[:, None] * crop_features).sum(0), dim=0)
            torch.testing.assert_close(logits[index], 100.0 * image @ text.T, rtol=1e-4, atol=1e-4)
    assert not torch.equal(runs[0], runs[1])  # different crop seeds really draw different crops


def test_cache_hit_gives_identical_logits_to_fresh_computation(image_root, tiny_clip_path, tmp_path, monkeypatch):
    from clipkit import feature_cache

    monkeypatch.setenv("CLIPKIT_CACHE", str(tmp_path / "cache"))
    opts = ("TRAINER.WCA.NUM_CROPS", "2", "TRAINER.WCA.CROP_SEEDS", "[0]")
    fresh = _logits(_build("WCA", image_root, tiny_clip_path, tmp_path, *opts, "TEST.FEATURE_CACHE", "False"))
    assert not (tmp_path / "cache" / "features").exists()  # the switch really disables the cache
    cold = _logits(_build("WCA", image_root, tiny_clip_path, tmp_path, *opts))

    def no_encoding(*args, **kwargs):
        raise AssertionError("a warm cache must not run the image encoder")

    monkeypatch.setattr(feature_cache, "encode_loader", no_encoding)
    monkeypatch.setattr(feature_cache, "encode_square_crops", no_encoding)
    warm = _logits(_build("WCA", image_root, tiny_clip_path, tmp_path, *opts))
    assert torch.equal(warm[0], cold[0])
    torch.testing.assert_close(warm[0], fresh[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "method, opts, message",
    [
        ("WCA", ("TRAINER.WCA.CROP_SCALE", "(0.9, 0.5)"), "TRAINER.WCA.CROP_SCALE"),
        ("WCA", ("TRAINER.WCA.CROP_SEEDS", "[1, 1]"), "TRAINER.WCA.CROP_SEEDS"),
        ("WCA", ("TRAINER.WCA.ANCHOR_TEMPLATE", "a photo"), "TRAINER.WCA.ANCHOR_TEMPLATE"),
        ("CuPL", ("TRAINER.CUPL.TEXT_SOURCE", "templates"), "TRAINER.CUPL.TEXT_SOURCE"),
        ("ZeroshotCLIP", ("TRAINER.ZEROSHOTCLIP.LOGIT_SCALE", "0.0"), "TRAINER.ZEROSHOTCLIP.LOGIT_SCALE"),
    ],
)
def test_bad_config_names_the_key(method, opts, message, image_root, tiny_clip_path, tmp_path):
    with pytest.raises(ValueError, match=re.escape(message)):
        _build(method, image_root, tiny_clip_path, tmp_path, *opts)


def test_training_free_flag_for_the_sweep():
    from baselines.cupl import CuPL
    from baselines.wca import WCA
    from baselines.zeroshot_clip import ZeroshotCLIP

    assert ZeroshotCLIP.training_free and CuPL.training_free and WCA.training_free
