"""Evaluators (Dassl's ``Classification`` and its printed result block) and ``compute_accuracy``."""

from __future__ import annotations

import os.path as osp
from collections import OrderedDict, defaultdict

import numpy as np
import torch

from .registry import Registry, check_availability

EVALUATOR_REGISTRY = Registry("EVALUATOR")


def build_evaluator(cfg, **kwargs):
    """Instantiate ``EVALUATOR_REGISTRY[cfg.TEST.EVALUATOR](cfg, **kwargs)``."""
    check_availability(cfg.TEST.EVALUATOR, EVALUATOR_REGISTRY.registered_names())
    if cfg.VERBOSE:
        print(f"Loading evaluator: {cfg.TEST.EVALUATOR}")
    return EVALUATOR_REGISTRY.get(cfg.TEST.EVALUATOR)(cfg, **kwargs)


def compute_accuracy(output, target, topk=(1,)):
    """Top-k accuracies in percent. output: (B, C) logits (or a tuple whose first item is), target: (B,).
    Returns a list of 1-element tensors, one per k."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    pred = output.topk(max(topk), dim=1, largest=True, sorted=True).indices.t()  # (maxk, B)
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / target.size(0)) for k in topk]


class EvaluatorBase:
    def __init__(self, cfg):
        self.cfg = cfg

    def reset(self):
        raise NotImplementedError

    def process(self, mo, gt):
        raise NotImplementedError

    def evaluate(self):
        raise NotImplementedError


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    """Accuracy, error rate, macro-F1 (over the labels present), optional per-class accuracy and confusion matrix."""

    def __init__(self, cfg, lab2cname=None, **kwargs):
        super().__init__(cfg)
        self._lab2cname = lab2cname
        self._per_class_res = None
        if cfg.TEST.PER_CLASS_RESULT:
            assert lab2cname is not None, "TEST.PER_CLASS_RESULT needs lab2cname"
        self.reset()

    def reset(self):
        self._correct = 0
        self._total = 0
        self._y_true = []
        self._y_pred = []
        if self.cfg.TEST.PER_CLASS_RESULT:
            self._per_class_res = defaultdict(list)

    def process(self, mo, gt):
        """mo: (B, C) scores; gt: (B,) labels."""
        pred = mo.max(1)[1]
        matches = pred.eq(gt).float()
        self._correct += int(matches.sum().item())
        self._total += gt.shape[0]
        self._y_true.extend(gt.cpu().tolist())
        self._y_pred.extend(pred.cpu().tolist())
        if self._per_class_res is not None:
            for label, match in zip(gt.cpu().tolist(), matches.cpu().tolist()):
                self._per_class_res[label].append(int(match))

    def evaluate(self):
        from sklearn.metrics import f1_score

        results = OrderedDict()
        acc = 100.0 * self._correct / self._total
        err = 100.0 - acc
        macro_f1 = 100.0 * f1_score(self._y_true, self._y_pred, average="macro", labels=np.unique(self._y_true))
        results["accuracy"] = acc  # the first value is what trainer.test() returns
        results["error_rate"] = err
        results["macro_f1"] = macro_f1
        print(
            "=> result\n"
            f"* total: {self._total:,}\n"
            f"* correct: {self._correct:,}\n"
            f"* accuracy: {acc:.1f}%\n"
            f"* error: {err:.1f}%\n"
            f"* macro_f1: {macro_f1:.1f}%"
        )
        if self._per_class_res is not None:
            print("=> per-class result")
            accs = []
            for label in sorted(self._per_class_res):
                res = self._per_class_res[label]
                correct, total = sum(res), len(res)
                class_acc = 100.0 * correct / total
                accs.append(class_acc)
                print(
                    f"* class: {label} ({self._lab2cname[label]})\t"
                    f"total: {total:,}\tcorrect: {correct:,}\tacc: {class_acc:.1f}%"
                )
            mean_acc = np.mean(accs)
            print(f"* average: {mean_acc:.1f}%")
            results["perclass_accuracy"] = mean_acc
        if self.cfg.TEST.COMPUTE_CMAT:
            from sklearn.metrics import confusion_matrix

            cmat = confusion_matrix(self._y_true, self._y_pred, normalize="true")
            save_path = osp.join(self.cfg.OUTPUT_DIR, "cmat.pt")
            torch.save(cmat, save_path)
            print(f"Confusion matrix is saved to {save_path}")
        return results
