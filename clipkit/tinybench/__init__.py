"""The embedded tiny benchmark: a procedural fine-grained dataset and a tiny CLIP pretrained on CPU.

``python -m clipkit.tinybench.prepare`` writes both (cached): the dataset under ``<data_root>/tiny_finegrained`` and the
checkpoint at ``checkpoint_path()``, which ``load_clip("tiny-clip-bench")`` resolves once ``register_checkpoint()`` ran
(``datasets/tiny.py`` calls it at import).
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from clipkit import cache_root

CHECKPOINT_NAME = "tiny-clip-bench"
PREPARE_COMMAND = "python -m clipkit.tinybench.prepare"


def checkpoint_path() -> str:
    """Where the pretrained benchmark CLIP is cached: ``<cache_root>/tinybench/tiny_clip_bench.pt``."""
    return os.path.join(cache_root(), "tinybench", "tiny_clip_bench.pt")


def default_data_root() -> str:
    """Default ``--data-root`` of the prepare command (and of the reader when ``DATASET.ROOT`` is empty)."""
    return os.path.join(cache_root(), "data")


def register_checkpoint() -> None:
    """Make ``clipkit.clip.load_clip("tiny-clip-bench")`` resolve to ``checkpoint_path()``."""
    from clipkit.clip import register_checkpoint_name

    register_checkpoint_name(CHECKPOINT_NAME, checkpoint_path, hint=f"Create it with: {PREPARE_COMMAND}")


def ensure_pretrained(recipe=None, force: bool = False, path: Optional[str] = None,
                      log: Optional[Callable[[str], None]] = print, **pretrain_kwargs) -> str:
    """Pretrain and cache the benchmark CLIP unless a checkpoint made with the same recipe exists; returns its path."""
    from .pretrain import DEFAULT_RECIPE, is_pretrained, pretrain, save_pretrained

    recipe = recipe or DEFAULT_RECIPE
    path = path or checkpoint_path()
    if not force and is_pretrained(path, recipe):
        if log:
            log(f"[tinybench] pretrained tiny CLIP already cached at {path}; skipping pretraining")
        return path
    model, history = pretrain(recipe, log=log, **pretrain_kwargs)
    return save_pretrained(model, history, recipe, path)


__all__ = [
    "CHECKPOINT_NAME",
    "PREPARE_COMMAND",
    "checkpoint_path",
    "default_data_root",
    "ensure_pretrained",
    "register_checkpoint",
]
