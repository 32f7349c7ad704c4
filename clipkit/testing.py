"""Reusable test helpers for trainers.

``assert_no_label_leak``: unsupervised methods may read ground-truth train labels only for logging. The guard trains
twice from the same seed, once with the train split's labels permuted across samples (each image gets another
image's label; the label -> class-name map, the class set and the sample order stay the same), and requires identical
trajectories: every per-step loss returned by ``forward_backward`` and every final trainable parameter.
"""

from __future__ import annotations

import contextlib
import os
import random
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch


def permuted_label_datums(data_source: Sequence, generator: random.Random) -> List:
    """New Datum list with the label column shuffled across samples (classname follows the new label)."""
    from clipkit.dassl import Datum

    labels = [item.label for item in data_source]
    if len(set(labels)) < 2:
        raise ValueError("the label-leak guard needs a train split with at least two classes")
    names = {item.label: item.classname for item in data_source}
    shuffled = list(labels)
    while shuffled == labels:  # at least one sample must change its label, or the guard could not fail
        generator.shuffle(shuffled)
    return [
        Datum(impath=item.impath, label=new, domain=item.domain, classname=names[new])
        for item, new in zip(data_source, shuffled)
    ]


@contextlib.contextmanager
def permuted_train_labels(seed: int = 0):
    """While active, every ``DatasetBase`` built gets its train_x (and train_u) labels permuted."""
    from clipkit.dassl import DatasetBase

    original_init = DatasetBase.__init__
    generator = random.Random(seed)

    def init_with_permuted_labels(self, train_x=None, train_u=None, val=None, test=None):
        train_x = permuted_label_datums(train_x, generator) if train_x else train_x
        train_u = permuted_label_datums(train_u, generator) if train_u else train_u
        original_init(self, train_x=train_x, train_u=train_u, val=val, test=test)

    DatasetBase.__init__ = init_with_permuted_labels
    try:
        yield
    finally:
        DatasetBase.__init__ = original_init


def _is_loss_key(key: str) -> bool:
    return key == "loss" or key.startswith("loss") or key.endswith("loss")


def _run(make_trainer_fn: Callable[[str], object], output_dir: str, seed: int, loss_keys: Optional[Iterable[str]]):
    from clipkit.dassl import set_random_seed

    set_random_seed(seed)
    trainer = make_trainer_fn(output_dir)
    steps: List[Dict[str, float]] = []
    forward_backward = trainer.forward_backward

    def recording_forward_backward(*args, **kwargs):
        summary = forward_backward(*args, **kwargs) or {}
        keys = loss_keys if loss_keys is not None else [k for k in summary if _is_loss_key(k)]
        values = {k: summary[k] for k in keys}
        steps.append({k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in values.items()})
        return summary

    trainer.forward_backward = recording_forward_backward
    trainer.train()
    params = {}
    for name in trainer.get_model_names():
        for pname, param in trainer._models[name].named_parameters():
            if param.requires_grad:
                params[f"{name}.{pname}"] = param.detach().cpu().clone()
    return trainer, steps, params


def assert_no_label_leak(make_trainer_fn: Callable[[str], object], workdir: str, seed: int = 1,
                         permutation_seed: int = 0, loss_keys: Optional[Iterable[str]] = None,
                         atol: float = 0.0) -> None:
    """Raise AssertionError if permuting the train labels changes the training trajectory.

    ``make_trainer_fn(output_dir)`` must build a fresh trainer (``build_trainer(cfg)`` with ``cfg.OUTPUT_DIR =
    output_dir``; use ``DATALOADER.NUM_WORKERS 0`` and ``USE_CUDA False`` for bitwise determinism). Both runs start from
    ``set_random_seed(seed)``. ``loss_keys`` (default: keys named ``loss*``/``*loss``) selects the per-step values
    compared; metrics such as a logged train accuracy may legitimately differ and are not compared.
    """
    loss_keys = list(loss_keys) if loss_keys is not None else None
    _, ref_steps, ref_params = _run(make_trainer_fn, os.path.join(workdir, "labels_true"), seed, loss_keys)
    with permuted_train_labels(permutation_seed):
        _, perm_steps, perm_params = _run(make_trainer_fn, os.path.join(workdir, "labels_permuted"), seed, loss_keys)

    if not ref_steps:
        raise AssertionError("label-leak guard: the trainer ran no training step (forward_backward never called)")
    if not any(ref_steps):
        raise AssertionError("label-leak guard: forward_backward returned no loss values to compare; pass loss_keys")
    if len(ref_steps) != len(perm_steps):
        raise AssertionError(f"label leak: {len(ref_steps)} steps with true labels, {len(perm_steps)} with permuted")
    for step, (ref, perm) in enumerate(zip(ref_steps, perm_steps)):
        for key in ref:
            if key not in perm or abs(ref[key] - perm[key]) > atol:
                raise AssertionError(
                    f"label leak: step {step} '{key}' = {ref[key]!r} with true labels but {perm.get(key)!r} with "
                    f"permuted train labels; the trainer reads ground-truth labels beyond logging"
                )
    if ref_params.keys() != perm_params.keys():
        raise AssertionError("label leak: the trainable parameter sets differ between the two runs")
    if not ref_params:
        raise AssertionError("label-leak guard: the trainer has no trainable registered parameters to compare")
    for name, ref in ref_params.items():
        if not torch.allclose(ref, perm_params[name], atol=atol, rtol=0.0):
            diff = (ref - perm_params[name]).abs().max().item()
            raise AssertionError(
                f"label leak: final parameter {name} differs by up to {diff:.3g} after training with permuted train "
                f"labels; the trainer reads ground-truth labels beyond logging"
            )


def assert_updated_exactly(model, trainable: Iterable[str], before: Dict[str, torch.Tensor]) -> None:
    """After one training step: every parameter named in ``trainable`` got a non-zero gradient and changed from
    ``before`` ({name: tensor} taken before the step); every other parameter got no gradient and is unchanged."""
    trainable = set(trainable)
    for name, param in model.named_parameters():
        if name in trainable:
            assert param.grad is not None and param.grad.abs().sum() > 0, f"{name} received no gradient"
            assert not torch.equal(param, before[name]), f"{name} was not updated"
        else:
            assert param.grad is None, f"frozen parameter {name} received a gradient"
            assert torch.equal(param, before[name]), f"frozen parameter {name} changed"


# Python source of a stand-in train.py's first lines (tests of the sweep and Slurm layers): parses the command line the
# sweep gives train.py (clipkit.sweep.train_command) into ``args``; the stand-in's own body follows it.
STAND_IN_TRAIN_ARGS = """import argparse, json, os, sys, time
parser = argparse.ArgumentParser()
for flag in ("--root", "--seed", "--trainer", "--dataset-config-file", "--config-file", "--output-dir"):
    parser.add_argument(flag)
parser.add_argument("--eval-only", action="store_true")
parser.add_argument("opts", nargs="*")
args = parser.parse_args()
"""


__all__ = ["STAND_IN_TRAIN_ARGS", "assert_no_label_leak", "assert_updated_exactly", "permuted_label_datums", "permuted_train_labels"]
