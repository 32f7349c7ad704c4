"""Diagnostic only: a trainable method's own recipe with its pseudo-labels replaced by the TRUE labels.

Everything else (views, losses, optimiser, schedule, evaluation) is the trainer's own, so the result bounds what the
method's recipe (its tiny budget of epochs, learning rate and images) can reach with perfect pseudo-labels. No method
may use it: the substitution lives here, outside the library, as a patch of the method's pseudo-labelling step:

=========  =====================================================================================================
MicroCLIP  ``trainers.microclip.pseudo_label``: labels of each batch <- the batch's true labels
UPL        the kept subset: the top-K most confident images of each TRUE class, labelled with their true class
POUF       (no pseudo-labels) the transport + IM objective <- cross-entropy on the true labels, same logits
LaFTer     ``baselines.lafter.pseudo_label`` (stage 2): labels <- the batch's true labels
ReCLIP     both label propagations' labels <- the true labels of every adaptation image (all "agree")
DPA        ``baselines.dpa.pseudo_label``: labels <- the batch's true labels (weights, queue, memory bank kept)
NtUA       the cache values <- one-hot true labels of the selected shots (confidence weights 1)
=========  =====================================================================================================

One run (same arguments as train.py, plus ``--oracle-trainer`` when ``--trainer`` is not given first)::

    .venv/bin/python benchmarks/tiny_oracle_labels.py --root .cache/data --trainer DPA --seed 1 \\
        --dataset-config-file configs/datasets/tiny.yaml --config-file configs/trainers/DPA/tiny.yaml \\
        --output-dir output/diagnostics/oracle/DPA/seed1

Every trainable method's tiny config (the check of the tiny benchmark's issue 17: each oracle at least
``--margin`` points above zero-shot; exit status 1 otherwise)::

    .venv/bin/python benchmarks/tiny_oracle_labels.py --all --root .cache/data --output-root output/diagnostics/oracle

Trailing ``KEY VALUE`` config overrides go to every run of ``--all`` (zero-shot included), e.g. the table on another
checkpoint: ``... --output-root OUT MODEL.BACKBONE.NAME /path/to/candidate.pt``. A finished run folder is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
import time
from typing import Callable, Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

ZERO_SHOT = "ZeroshotCLIP"
DEFAULT_MARGIN = 5.0  # issue 17, point 3: every oracle ends at least this many points above zero-shot

_truth: Dict[str, object] = {}  # what the patched steps read: the current batch's / split's true labels


def _keep_batch_labels(cls) -> None:
    """Wrap ``cls.forward_backward(self, batch)`` to store the batch's true labels (on the trainer's device) first."""
    original = cls.forward_backward

    def wrapped(self, batch, *args, **kwargs):
        _truth["batch"] = batch["label"].to(self.device)
        return original(self, batch, *args, **kwargs)

    cls.forward_backward = wrapped


def patch_microclip() -> None:
    import trainers.microclip as module

    original = module.pseudo_label

    def with_truth(model, node, plan, weak, crops, cached_prior=None):
        _, confidences, weak_features = original(model, node, plan, weak, crops, cached_prior)
        return _truth["batch"], confidences, weak_features

    module.pseudo_label = with_truth
    _keep_batch_labels(module.MicroCLIP)


def patch_upl() -> None:
    import torch

    import baselines.upl as module

    original_select, original_top_k = module.UPL.select_pseudo_labelled_subset, module.top_k_per_class

    def truth_probabilities(probabilities):
        """The probabilities with each row's mass moved so that its arg-max is the true class (confidence kept)."""
        truth = _truth["split"]
        confidences = probabilities.max(dim=1).values
        out = torch.zeros_like(probabilities)
        out[torch.arange(len(truth)), truth] = confidences
        return out

    def select(self):
        _truth["split"] = torch.tensor([item.label for item in self.dm.dataset.train_x])
        return original_select(self)

    module.UPL.select_pseudo_labelled_subset = select
    module.top_k_per_class = lambda probabilities, k: original_top_k(truth_probabilities(probabilities), k)
    module.hard_pseudo_labels = lambda probabilities: (_truth["split"], probabilities.max(dim=1).values)


def patch_pouf() -> None:
    import torch.nn.functional as F

    import baselines.pouf as module

    original = module.pouf_loss

    def cross_entropy_on_truth(similarities, logit_scale, *args, **kwargs):
        terms = original(similarities, logit_scale, *args, **kwargs)  # still logged
        terms["loss"] = F.cross_entropy(logit_scale.exp() * similarities, _truth["batch"])
        return terms

    module.pouf_loss = cross_entropy_on_truth
    _keep_batch_labels(module.POUF)


def patch_lafter() -> None:
    import baselines.lafter as module

    original = module.pseudo_label

    def with_truth(model, weak):
        _, confidences = original(model, weak)
        return _truth["batch"], confidences

    module.pseudo_label = with_truth
    _keep_batch_labels(module.LaFTer)


def patch_reclip() -> None:
    import baselines.reclip as module

    original_features, original_refresh = module.ReCLIP.adaptation_features, module.ReCLIP.refresh_pseudo_labels

    def features(self):
        v_feats, t_feats, truth = original_features(self)
        _truth["split"] = truth
        return v_feats, t_feats, truth

    def refresh(self):
        metrics = original_refresh(self)  # LP statistics and ReCLIP-V's centroids as the method computes them
        truth = _truth["split"].to(self.device)
        self._labels = (truth, truth)
        return metrics

    module.ReCLIP.adaptation_features = features
    module.ReCLIP.refresh_pseudo_labels = refresh


def patch_dpa() -> None:
    import baselines.dpa as module

    original = module.pseudo_label

    def with_truth(model, node, weak):
        return original(model, node, weak)._replace(labels=_truth["batch"])

    module.pseudo_label = with_truth
    _keep_batch_labels(module.DPA)


def patch_ntua() -> None:
    import torch
    import torch.nn.functional as F

    import baselines.ntua as module

    original_select, original_entries = module.NtUA.select, module.cache_entries

    def select(self, probabilities, train):
        shots = original_select(self, probabilities, train)
        _truth["split"] = torch.tensor([train[i].label for i in shots.tolist()], device=probabilities.device)
        return shots

    def entries(probabilities, form, adaptive):
        one_hot = F.one_hot(_truth["split"], probabilities.shape[1]).to(probabilities.dtype)
        return original_entries(one_hot, form, adaptive)

    module.NtUA.select = select
    module.cache_entries = entries


PATCHES: Dict[str, Callable[[], None]] = {
    "MicroCLIP": patch_microclip, "UPL": patch_upl, "POUF": patch_pouf, "LaFTer": patch_lafter,
    "ReCLIP": patch_reclip, "DPA": patch_dpa, "NtUA": patch_ntua,
}
TRAINABLE = tuple(PATCHES)  # every trainable method, in the sweep's order


def run_with_truth(train_args: List[str]) -> None:
    """``train.py <train_args>`` in this process, with the ``--trainer``'s pseudo-labels replaced by the truth."""
    trainer = train_args[train_args.index("--trainer") + 1] if "--trainer" in train_args else None
    if trainer not in PATCHES:
        raise SystemExit(f"tiny_oracle_labels.py: --trainer must be one of {sorted(PATCHES)} (got {trainer!r})")
    PATCHES[trainer]()
    sys.argv = [os.path.join(REPO, "train.py")] + train_args
    runpy.run_path(sys.argv[0], run_name="__main__")


def _accuracy(run_dir: str) -> float:
    with open(os.path.join(run_dir, "results.json")) as handle:
        return float(json.load(handle)["accuracy_last"])  # the reported number: the last epoch


def run_all(args) -> int:
    """Zero-shot, then every trainable method with true labels, each as a subprocess; prints the margin table."""
    rows = []
    for method in (ZERO_SHOT,) + tuple(args.methods):
        run_dir = os.path.join(args.output_root, method, f"seed{args.seed}")
        command = [sys.executable] + ([os.path.join(REPO, "train.py")] if method == ZERO_SHOT else [__file__]) + [
            "--root", args.root, "--trainer", method, "--seed", str(args.seed),
            "--dataset-config-file", os.path.join(REPO, "configs", "datasets", f"{args.dataset}.yaml"),
            "--config-file", os.path.join(REPO, "configs", "trainers", method, f"{args.backbone}.yaml"),
            "--output-dir", run_dir] + (["--eval-only"] if method == ZERO_SHOT else []) + list(args.opts)
        started = time.time()
        if not os.path.isfile(os.path.join(run_dir, "results.json")):
            log = os.path.join(args.output_root, f"{method}_seed{args.seed}.log")
            os.makedirs(args.output_root, exist_ok=True)
            with open(log, "w") as handle:
                if subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode:
                    raise SystemExit(f"{method} failed; see {log}")
        rows.append((method, _accuracy(run_dir), time.time() - started))
        print(f"[oracle] {method}: {rows[-1][1]:.2f}% ({rows[-1][2]:.0f}s)", flush=True)
    zero_shot = rows[0][1]
    print(f"\n| Method | true labels in place of pseudo-labels | minus zero-shot ({zero_shot:.2f}) | holds (>= "
          f"+{args.margin:g}) |\n|---|---|---|---|")
    failed = 0
    for method, accuracy, _ in rows[1:]:
        holds = accuracy - zero_shot >= args.margin
        failed += not holds
        print(f"| {method} | {accuracy:.2f} | {accuracy - zero_shot:+.2f} | {'yes' if holds else 'NO'} |")
    return 1 if failed else 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--all" not in argv:
        run_with_truth(argv)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="every trainable method's oracle and the margin check")
    parser.add_argument("--root", required=True, help="DATASET.ROOT (the folder holding tiny_finegrained/)")
    parser.add_argument("--output-root", required=True, help="one run folder per method under it (finished: reused)")
    parser.add_argument("--methods", nargs="+", default=list(TRAINABLE), choices=TRAINABLE)
    parser.add_argument("--backbone", default="tiny", help="config name: configs/trainers/<Method>/<backbone>.yaml")
    parser.add_argument("--dataset", default="tiny", help="configs/datasets/<dataset>.yaml")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="points above zero-shot (default 5)")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="config overrides added to every run, zero-shot included (e.g. MODEL.BACKBONE.NAME "
                             "/path/to/another_checkpoint.pt)")
    return run_all(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
