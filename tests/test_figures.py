"""python -m clipkit.figures: every command writes a PNG and a PDF from tiny inputs; missing inputs say what to run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO



def run_figures(*args):
    env = dict(os.environ, PYTHONPATH=REPO, CLIPKIT_EXTRA_PLUGINS="tests.plugins.image_folder_dataset",
               OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "clipkit.figures", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def write_result(folder, method, dataset, seed, accuracy, epochs=()):
    os.makedirs(folder, exist_ok=True)
    data = {"method": method, "dataset": dataset, "seed": seed, "accuracy_last": accuracy,
            "epochs": [dict(epoch=i + 1, **e) for i, e in enumerate(epochs)]}
    with open(os.path.join(folder, "results.json"), "w") as handle:
        json.dump(data, handle)


def assert_figure(out_dir, name, min_side=150):
    png, pdf = os.path.join(out_dir, f"{name}.png"), os.path.join(out_dir, f"{name}.pdf")
    assert os.path.getsize(pdf) > 1000, pdf
    with Image.open(png) as image:
        assert min(image.size) >= min_side, image.size
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 5, "the PNG is blank"


@pytest.fixture
def sweep_root(tmp_path):
    root = tmp_path / "out"
    for seed, shift in ((1, 0.0), (2, 1.0)):
        write_result(root / "tiny" / "tiny" / "ZeroshotCLIP" / f"seed{seed}", "ZeroshotCLIP", "tiny", seed, 50.0)
        epochs = [{"pl_accuracy": 55 + i + shift, "accuracy": 51 + i + shift} for i in range(3)]
        write_result(root / "tiny" / "tiny" / "DPA" / f"seed{seed}", "DPA", "tiny", seed, 53 + shift, epochs)
        epochs = [{"pl_accuracy": 52 + shift, "accuracy": 48 + i, "accuracy_cls": 50.0, "accuracy_fg": 30.0}
                  for i in range(2)]
        write_result(root / "tiny" / "tiny" / "MicroCLIP" / f"seed{seed}", "MicroCLIP", "tiny", seed, 49.0, epochs)
    return root


def test_curves_and_deltas_from_a_sweep_root(sweep_root):
    proc = run_figures("curves", "--root", str(sweep_root))
    assert proc.returncode == 0, proc.stderr
    assert_figure(sweep_root / "figures", "curves")
    proc = run_figures("deltas", "--root", str(sweep_root))
    assert proc.returncode == 0, proc.stderr
    assert_figure(sweep_root / "figures", "deltas")


def test_epoch_series_mean_and_band_by_hand():
    from clipkit.figures.curves import epoch_series

    runs = [{"epochs": [{"epoch": 1, "a": 1.0}, {"epoch": 2, "a": 3.0}]},
            {"epochs": [{"epoch": 1, "a": 3.0}, {"epoch": 2, "a": 3.0}, {"epoch": 3, "a": 9.0}]}]
    epochs, mean, std = epoch_series(runs, "a")
    assert epochs == [1, 2] and mean == [2.0, 3.0] and std == [1.0, 0.0]  # epoch 3: only one run has it
    assert epoch_series(runs, "missing") is None


def test_ablation_sweep(tmp_path):
    root = tmp_path / "ablations"
    for value, accuracy in (("0.0", 40.0), ("0.5", 45.0), ("1.0", 42.0)):
        for seed in (1, 2):
            write_result(root / "dtd" / f"fig5_gamma_{value}" / f"seed{seed}", "MicroCLIP", "dtd", seed,
                         accuracy + seed)
    proc = run_figures("ablation", "--root", str(root), "--sweep", "gamma")
    assert proc.returncode == 0, proc.stderr
    assert_figure(root / "figures", "ablation_gamma")
    proc = run_figures("ablation", "--root", str(root), "--sweep", "crops")
    assert proc.returncode == 2 and "fig6_crops_" in proc.stderr and "--extra-config-file" in proc.stderr


def test_missing_inputs_name_what_to_run_first(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_figures("curves", "--root", str(empty))
    assert proc.returncode == 2 and "run_all.sh" in proc.stderr
    write_result(empty / "tiny" / "tiny" / "DPA" / "seed1", "DPA", "tiny", 1, 50.0)
    proc = run_figures("deltas", "--root", str(empty))
    assert proc.returncode == 2 and "ZeroshotCLIP" in proc.stderr
    proc = run_figures("curves", "--root", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "not a folder" in proc.stderr


def test_attention_of_a_trained_microclip_run(image_root, tiny_clip_path, tmp_path):
    run = tmp_path / "run"
    yaml = os.path.join(REPO, "configs", "trainers", "MicroCLIP", "tiny.yaml")
    opts = ["DATASET.NAME", "TestImageFolder", "MODEL.BACKBONE.NAME", tiny_clip_path, "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "OPTIM.MAX_EPOCH", "1", "USE_CUDA", "False"]
    common = ["--config-file", yaml, "--seed", "1"]
    # before training: no checkpoint, the message says to train first
    proc = run_figures("attention", "--run", str(run), "--data-root", image_root, "--images", "2", *common, *opts)
    assert proc.returncode == 2 and "no checkpoint" in proc.stderr and "train the run" in proc.stderr
    env = dict(os.environ, PYTHONPATH=REPO, CLIPKIT_EXTRA_PLUGINS="tests.plugins.image_folder_dataset",
               OMP_NUM_THREADS="1")
    train = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--root", image_root, "--trainer",
                            "MicroCLIP", "--output-dir", str(run), *common, *opts], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]
    proc = run_figures("attention", "--run", str(run), "--data-root", image_root, "--images", "2", *common, *opts)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_figure(run / "figures", "attention")


def test_attention_maps_are_distributions_over_the_patches(image_root, tiny_clip_path, tmp_path):
    import torch

    import tests.plugins.image_folder_dataset  # noqa: F401
    from clipkit.figures.attention import attention_maps, build_run_trainer

    opts = ["DATASET.NAME", "TestImageFolder", "MODEL.BACKBONE.NAME", tiny_clip_path, "DATALOADER.NUM_WORKERS", "0",
            "USE_CUDA", "False"]
    trainer = build_run_trainer(str(tmp_path), image_root,
                                os.path.join(REPO, "configs", "trainers", "MicroCLIP", "tiny.yaml"), None, 1, opts)
    images = next(iter(trainer.test_loader))["img"][:3]
    maps = attention_maps(trainer.model.eval(), images)
    for key in ("cls", "fg"):
        assert torch.allclose(maps[key].sum(dim=1), torch.ones(3), atol=1e-5), key
        assert (maps[key] >= 0).all()
    assert set(maps["ncut"].unique().tolist()) <= {0.0, 1.0}


def bright_object_attention_visual():
    """A tiny CLIP ViT whose last-block [CLS] query prefers bright patches: patch tokens carry their mean intensity in
    channel 0 (the sign survives the LayerNorms), earlier blocks pass tokens through, q = k = identity."""
    import torch

    from clipkit.clip import build_tiny_clip

    visual = build_tiny_clip(seed=0).visual.eval()
    patch = visual.conv1.kernel_size[0]
    with torch.no_grad():
        visual.conv1.weight.zero_()
        visual.conv1.weight[0] = 1.0 / (3 * patch * patch)  # channel 0 = mean over the patch
        visual.positional_embedding.zero_()
        visual.class_embedding.zero_()
        visual.class_embedding[0] = 1.0
        for block in visual.transformer.resblocks[:-1]:  # residual pass-through
            for linear in (block.attn.out_proj, block.mlp.c_proj):
                linear.weight.zero_()
                linear.bias.zero_()
        last = visual.transformer.resblocks[-1]
        width = last.attn.embed_dim
        last.attn.in_proj_weight[: 2 * width] = torch.eye(width).repeat(2, 1)
        last.attn.in_proj_bias.zero_()
    return visual


def test_attention_peaks_inside_a_bright_object_on_a_flat_background():
    import torch

    from clipkit.blocks.attention_maps import last_block_cls_attention
    from clipkit.figures.attention import patch_map_to_pixels

    visual = bright_object_attention_visual()
    side, patch = visual.input_resolution, visual.conv1.kernel_size[0]
    grid = side // patch
    image = -torch.ones(1, 3, side, side)
    rows, cols = slice(patch, 3 * patch), slice(side - 3 * patch, side - patch)  # patch rows 1-2, columns 5-6
    image[..., rows, cols] = 1.0
    attention = last_block_cls_attention(visual, image)[0]
    assert torch.allclose(attention.sum(), torch.tensor(1.0), atol=1e-5)
    row, col = divmod(int(attention.argmax()), grid)
    assert row in (1, 2) and col in (grid - 3, grid - 2)
    pixels = patch_map_to_pixels(attention, grid, side)
    object_mask = torch.zeros(side, side, dtype=torch.bool)
    object_mask[rows, cols] = True
    assert pixels[object_mask].min() > pixels[~object_mask].max()  # the overlay lights the object, only the object
