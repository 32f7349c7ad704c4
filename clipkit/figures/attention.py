"""Fig. 1 / Fig. 9: where microCLIP looks. For test images of a finished run: the last block's [CLS] attention, the
SOAP [FG] attention and the NCut mask, each over the image, for the zero-shot backbone and for the adapted model."""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import torch

from clipkit.figures import FigureInputError, pyplot, save_figure

CHECKPOINT_POINTER = "checkpoint"  # file in <run>/<model name>/ naming the latest checkpoint (Dassl's layout)


def run_layout(run_dir: str) -> Dict[str, str]:
    """Backbone / dataset / method / seed from a sweep run folder ``<root>/<backbone>/<dataset>/<Method>/seed<S>``."""
    parts = os.path.abspath(run_dir).split(os.sep)
    if len(parts) < 4 or not parts[-1].startswith("seed"):
        raise FigureInputError(f"{run_dir}: not a <backbone>/<dataset>/<Method>/seed<S> run folder; pass "
                               f"--config-file, --dataset-config-file and --seed explicitly")
    return {"backbone": parts[-4], "dataset": parts[-3], "method": parts[-2], "seed": parts[-1][len("seed"):]}


def build_run_trainer(run_dir: str, data_root: str, config_file: Optional[str] = None,
                      dataset_config_file: Optional[str] = None, seed: Optional[int] = None,
                      opts: Sequence[str] = ()):
    """The run's trainer, rebuilt the way train.py built it (configs from the sweep layout unless given), with an
    output folder outside the run (nothing in the run folder is written). Weights: the pretrained backbone."""
    import tempfile

    import train
    from clipkit import REPO_ROOT
    from clipkit.dassl import build_trainer

    if config_file is None or seed is None:  # a sweep run: everything follows from its folder
        layout = run_layout(run_dir)
        config_file = config_file or os.path.join(REPO_ROOT, "configs", "trainers", layout["method"],
                                                  f"{layout['backbone']}.yaml")
        dataset_config_file = dataset_config_file or os.path.join(REPO_ROOT, "configs", "datasets",
                                                                  f"{layout['dataset']}.yaml")
        seed = int(layout["seed"]) if seed is None else seed
    trainer_name = os.path.basename(os.path.dirname(os.path.abspath(config_file)))  # configs/trainers/<Method>/
    argv = ["--root", data_root, "--seed", str(seed), "--trainer", trainer_name, "--config-file", config_file,
            "--output-dir", tempfile.mkdtemp(prefix="clipkit_figures_")]
    if dataset_config_file:
        argv += ["--dataset-config-file", dataset_config_file]
    argv += list(opts)
    cfg = train.setup_cfg(train.build_parser().parse_args(argv))
    return build_trainer(cfg)


def load_latest_weights(trainer, run_dir: str) -> None:
    """Load the latest checkpoint of every registered model of ``trainer`` from ``run_dir``."""
    from clipkit.dassl import load_checkpoint

    for name in trainer.get_model_names():
        pointer = os.path.join(run_dir, name, CHECKPOINT_POINTER)
        if not os.path.isfile(pointer):
            raise FigureInputError(f"no checkpoint of model '{name}' in {run_dir} ({pointer} missing): train the run "
                                   f"to the end first (it saves its last checkpoint), then draw its attention")
        with open(pointer) as handle:
            file_name = handle.readline().strip()
        path = file_name if os.path.isabs(file_name) else os.path.join(run_dir, name, os.path.basename(file_name))
        trainer._models[name].load_state_dict(load_checkpoint(path)["state_dict"])
        print(f"loaded {path}")


@torch.no_grad()
def attention_maps(model, images: torch.Tensor) -> Dict[str, torch.Tensor]:
    """(B, 3, S, S) uint8 -> {"cls", "fg", "ncut"}: (B, n) maps over the patches ([CLS] and SOAP attention rows sum
    to 1; the NCut mask is 0/1). ``model``: a ``MicroCLIPNet``."""
    from clipkit.blocks.attention_maps import last_block_cls_attention
    from clipkit.blocks.ncut import ncut_mask
    from clipkit.blocks.patch_tap import encode_image_tapped

    pixels = model.preprocess(images)
    cls_attention = last_block_cls_attention(model.visual, pixels)
    tap = encode_image_tapped(model.visual, pixels, return_patch_tokens=True)
    mask = ncut_mask(tap.patch_tokens, **model.ncut_options)
    maps = {"cls": cls_attention, "ncut": mask.float()}
    if model.soap.uses_attention:
        _, attention = model.soap.attend(model.soap.build_query(tap.patch_tokens, mask), tap.patch_tokens)
        patches = attention[:, : tap.patch_tokens.shape[1]]  # the sink token (if any) is dropped
        maps["fg"] = patches / patches.sum(dim=1, keepdim=True)
    return maps


def patch_map_to_pixels(patch_map: torch.Tensor, grid: int, side: int) -> torch.Tensor:
    """(n,) map over the patches in ViT order (row-major over the grid) -> (side, side) map over the pixels."""
    import torch.nn.functional as F

    return F.interpolate(patch_map.float().view(1, 1, grid, grid), size=(side, side), mode="nearest")[0, 0]


def _overlay(axis, image, patch_map, grid: int, title: str, cmap: str) -> None:
    upsampled = patch_map_to_pixels(patch_map, grid, image.shape[-1])
    axis.imshow(image.permute(1, 2, 0).numpy())
    axis.imshow(upsampled.numpy(), cmap=cmap, alpha=0.55)
    axis.set_title(title, fontsize=8)
    axis.axis("off")


def attention_figure(run_dir: str, data_root: str, out_dir: str, num_images: int = 4,
                     config_file: Optional[str] = None, dataset_config_file: Optional[str] = None,
                     seed: Optional[int] = None, opts: Sequence[str] = ()) -> List[str]:
    """Rows: test images; columns: image, then [CLS] / [FG] attention and NCut mask before and after adaptation."""
    trainer = build_run_trainer(run_dir, data_root, config_file, dataset_config_file, seed, opts)
    model = getattr(trainer, "model", None)
    if model is None or not hasattr(model, "soap"):
        raise FigureInputError(f"{run_dir}: attention maps need a microCLIP run (trainer {trainer.cfg.TRAINER.NAME})")
    images = []
    for batch in trainer.test_loader:
        images.append(batch["img"])
        if sum(len(b) for b in images) >= num_images:
            break
    images = torch.cat(images)[:num_images].to(trainer.device)
    model.eval()
    before = attention_maps(model, images)
    load_latest_weights(trainer, run_dir)
    model.eval()
    after = attention_maps(model, images)
    grid = int(round(before["cls"].shape[1] ** 0.5))
    columns = [("cls", "[CLS] attention", "inferno"), ("fg", "[FG] (SOAP) attention", "inferno"),
               ("ncut", "NCut mask", "viridis")]
    columns = [c for c in columns if c[0] in before]
    plt = pyplot()
    figure, axes = plt.subplots(len(images), 1 + 2 * len(columns), figsize=(2.0 * (1 + 2 * len(columns)),
                                                                          2.1 * len(images)), squeeze=False)
    shown = images.cpu()
    for row in range(len(images)):
        axes[row][0].imshow(shown[row].permute(1, 2, 0).numpy())
        axes[row][0].set_title("test image", fontsize=8)
        axes[row][0].axis("off")
        for index, (key, label, cmap) in enumerate(columns):
            _overlay(axes[row][1 + 2 * index], shown[row], before[key][row].cpu(), grid, f"{label}\nzero-shot", cmap)
            _overlay(axes[row][2 + 2 * index], shown[row], after[key][row].cpu(), grid, f"{label}\nadapted", cmap)
    return save_figure(figure, out_dir, "attention")


__all__ = ["attention_figure", "attention_maps", "build_run_trainer", "load_latest_weights", "patch_map_to_pixels",
           "run_layout"]
