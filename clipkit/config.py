"""Config extensions: every trainer and dataset module declares its own keys here, before any YAML is merged.

yacs rejects unknown keys, so all nodes must exist before merging (Dassl/CoOp's ``extend_cfg``). Modules register a
function with ``@cfg_extension``; ``extend_cfg(cfg)`` applies the toolkit-wide keys and then every registered function.
"""

from __future__ import annotations

from typing import Callable, List

from yacs.config import CfgNode as CN

_EXTENSIONS: List[Callable] = []


def cfg_extension(fn: Callable) -> Callable:
    """Decorator: ``fn(cfg)`` adds config keys (called once per config by ``extend_cfg``)."""
    if fn not in _EXTENSIONS:
        _EXTENSIONS.append(fn)
    return fn


def add_toolkit_keys(cfg) -> None:
    """Keys shared by all methods and datasets of the toolkit."""
    # Which train/test split a reader builds: "microclip" (the paper's protocol) or "coop" (CoOp's split files).
    cfg.DATASET.SPLIT_PROTOCOL = "microclip"
    # CuPL-format description JSON (class name -> list of sentences); "" = descriptions/<dataset_key>.json in the repo.
    cfg.DATASET.DESCRIPTIONS = ""
    # Folder holding downloaded OpenAI CLIP weights; "" = ~/.cache/clip.
    cfg.MODEL.BACKBONE.DOWNLOAD_ROOT = ""
    # File name of the machine-readable result written beside log.txt.
    cfg.TEST.RESULTS_FILE = "results.json"
    # What one run of this config asks a Slurm cluster for (scripts/run_all.sh --slurm submits one job array per
    # distinct set); "" / 0 = not asked (the cluster's default). The sweep's --gres / --time / --mem / --cpus-per-task
    # override them for every task. Not part of the run's recorded config (they do not change its numbers).
    cfg.SLURM = CN()
    cfg.SLURM.GRES = ""  # sbatch --gres, e.g. "gpu:1"
    cfg.SLURM.TIME = ""  # sbatch --time, e.g. "4:00:00"
    cfg.SLURM.MEM = ""  # sbatch --mem, e.g. "32G"
    cfg.SLURM.CPUS_PER_TASK = 0  # sbatch --cpus-per-task


def extend_cfg(cfg) -> None:
    """Declare the toolkit keys and every registered extension (import plugins first: clipkit.plugins)."""
    add_toolkit_keys(cfg)
    for fn in _EXTENSIONS:
        fn(cfg)


__all__ = ["CN", "cfg_extension", "extend_cfg", "add_toolkit_keys"]
