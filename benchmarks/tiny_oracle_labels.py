"""Diagnostic only: ``train.py`` with microCLIP's pseudo-labels replaced by the TRUE labels of each batch.

Everything else (views, TokenFusion logits, fairness term, optimiser, schedule, evaluation) is the trainer's own, so the
result bounds what microCLIP's training recipe can reach on a dataset with perfect pseudo-labels. No method may use
it; ``pl_accuracy`` reads 100 in its log. Same arguments as train.py, e.g.::

    .venv/bin/python benchmarks/tiny_oracle_labels.py --root .cache/data --trainer MicroCLIP --seed 1 \\
        --dataset-config-file configs/datasets/tiny.yaml --config-file configs/trainers/MicroCLIP/tiny.yaml \\
        --output-dir output/diagnostics/microclip_true_labels/seed1
"""

from __future__ import annotations

import os
import runpy
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import trainers.microclip as microclip  # noqa: E402  (the module train.py's plugin import will reuse)

_true_labels = {}
_pseudo_label, _forward_backward = microclip.pseudo_label, microclip.MicroCLIP.forward_backward


def pseudo_label_with_truth(model, node, plan, weak, crops, cached_prior=None):
    """The trainer's pseudo-labeler (for its confidences and weak-view features), labels swapped for the truth."""
    _, confidences, weak_features = _pseudo_label(model, node, plan, weak, crops, cached_prior)
    return _true_labels["batch"], confidences, weak_features


def forward_backward_keeping_truth(self, batch):
    _true_labels["batch"] = batch["label"].to(self.device)
    return _forward_backward(self, batch)


if __name__ == "__main__":
    microclip.pseudo_label = pseudo_label_with_truth
    microclip.MicroCLIP.forward_backward = forward_backward_keeping_truth
    sys.argv = [os.path.join(REPO, "train.py")] + sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
