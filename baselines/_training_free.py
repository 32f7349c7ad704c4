"""Shared shell of the training-free baselines (zero-shot CLIP, CuPL, WCA): frozen CLIP, a text classifier, cached
image features.

A training-free method registers no model and is run with ``train.py --eval-only``. Its ``test()`` does what Dassl's
does (same printed lines, same evaluator) but reads the image features of the split from the feature cache
(clipkit/feature_cache.py) instead of running the encoder batch by batch, so a re-run costs only the classifier step.
Subclasses implement

* ``build_text_classifier() -> (C, D)`` unit rows, and optionally
* ``split_logits(split, data_source, loader) -> list of (N, C)`` logits, one tensor per evaluation *run* (several
  runs only for methods with random views, e.g. WCA's crop seeds; the default is one run of
  ``LOGIT_SCALE * <unit image feature, classifier row>``).

With several runs the evaluator receives the predictions of all runs pooled, so the printed Dassl block's accuracy is
the mean of the per-run accuracies (DEVIATIONS.md (baselines section)).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from clipkit import feature_cache
from clipkit.trainer_base import CLIPTrainer


def split_cache_key(cfg, clip_model, dataset_key: str, split: str, data_source: Sequence, transform: str,
                    num_crops: int = 0, crop_seed=None, backbone: str = "") -> Dict:
    """Feature-cache key of one split's images under ``transform`` for ``clip_model``, named ``backbone`` (default: the
    backbone of ``cfg``; another name for a second model, e.g. NtUA's teacher)."""
    return feature_cache.feature_cache_key(
        backbone=backbone or cfg.MODEL.BACKBONE.NAME,
        checkpoint_digest=feature_cache.model_digest(clip_model) if cfg.TEST.FEATURE_CACHE else "",
        dataset=dataset_key,
        split=split,
        transform=transform,
        image_paths=[item.impath for item in data_source],
        num_crops=num_crops,
        crop_seed=crop_seed,
    )


def cached_split_features(cfg, clip_model, dataset_key: str, split: str, data_source: Sequence, loader,
                          device, backbone: str = "") -> torch.Tensor:
    """(N, D) unit CLIP features of ``data_source`` through a sequential Dassl ``loader`` (its transform is part of
    the key), read from or written to the feature cache (TEST.FEATURE_CACHE), on ``device``. Shared by the
    training-free methods (test split) and the prototype initialisation of self-training methods (train split).
    ``backbone`` names ``clip_model`` in the key when it is not cfg's backbone (see ``split_cache_key``)."""
    transform = repr(getattr(loader.dataset, "transform", None))
    key = split_cache_key(cfg, clip_model, dataset_key, split, data_source, transform, backbone=backbone)
    paths = [item.impath for item in data_source]
    stored = feature_cache.load_or_compute(
        key,
        lambda: feature_cache.encode_loader(clip_model, loader, device, expected_paths=paths),
        enabled=bool(cfg.TEST.FEATURE_CACHE),
    )
    return F.normalize(stored["features"].to(device), dim=-1)


def cached_crop_features(cfg, clip_model, dataset_key: str, split: str, data_source: Sequence, num_crops: int,
                         side_range: Sequence[float], crop_seed: int, device) -> torch.Tensor:
    """(N, num_crops, D) unit CLIP features of ``num_crops`` random square crops per image (side ~ U(side_range) x
    short side, resized to INPUT.SIZE, crops seeded by (crop_seed, image index)), cached like
    ``cached_split_features``. Shared by WCA (test split) and microCLIP's fast-prior pool (train split)."""
    height, width = cfg.INPUT.SIZE
    if height != width:
        raise ValueError(f"square crops need a square INPUT.SIZE, got {tuple(cfg.INPUT.SIZE)}")
    mean, std = list(cfg.INPUT.PIXEL_MEAN), list(cfg.INPUT.PIXEL_STD)
    transform = (
        f"square_crop(side=U{tuple(float(v) for v in side_range)}*short_side) -> resize({height}, bicubic, "
        f"antialias) -> normalize(mean={mean}, std={std})"
    )
    key = split_cache_key(cfg, clip_model, dataset_key, split, data_source, transform, num_crops=num_crops,
                          crop_seed=crop_seed)
    crops = feature_cache.SquareCropDataset(
        [item.impath for item in data_source], num_crops, side_range, height, crop_seed
    )
    stored = feature_cache.load_or_compute(
        key,
        lambda: feature_cache.encode_square_crops(
            clip_model, crops, mean, std, device, batch_size=cfg.DATALOADER.TEST.BATCH_SIZE,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        ),
        enabled=bool(cfg.TEST.FEATURE_CACHE),
    )
    return F.normalize(stored["crop_features"].to(device), dim=-1)


class TrainingFreeTrainer(CLIPTrainer):
    """Base class of the training-free baselines; ``cfg_node`` names the method's node under ``cfg.TRAINER``."""

    training_free = True
    cfg_node = ""

    # ------------------------------------------------------------------------------------------------------ config
    @property
    def method_cfg(self):
        return self.cfg.TRAINER[self.cfg_node]

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        node = cfg.TRAINER.get(self.cfg_node)
        if node is None:
            raise KeyError(f"cfg.TRAINER.{self.cfg_node} is missing; import the baselines plugins before extend_cfg")
        if float(node.LOGIT_SCALE) <= 0:
            raise ValueError(f"TRAINER.{self.cfg_node}.LOGIT_SCALE must be positive, got {node.LOGIT_SCALE}")

    # ------------------------------------------------------------------------------------------------------- model
    def build_model(self):
        print(f"Loading CLIP (backbone: {self.cfg.MODEL.BACKBONE.NAME})")
        self.clip_model = self.load_clip().to(self.device).eval()
        self.clip_model.requires_grad_(False)
        with torch.no_grad():
            classifier = self.build_text_classifier()
        if classifier.dim() != 2 or classifier.shape[0] != len(self.classnames):
            raise RuntimeError(
                f"{type(self).__name__}.build_text_classifier returned shape {tuple(classifier.shape)}, expected "
                f"({len(self.classnames)}, D)"
            )
        self.text_classifier = classifier.to(self.device)  # (C, D) unit rows
        print(f"Text classifier: {tuple(self.text_classifier.shape)}")

    def build_text_classifier(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def logit_scale(self) -> float:
        return float(self.method_cfg.LOGIT_SCALE)

    @torch.no_grad()
    def model_inference(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, C) logits = LOGIT_SCALE * cos(image, class) (Dassl's hook)."""
        features = F.normalize(self.clip_model.encode_image(images).float(), dim=-1)
        return self.logit_scale * features @ self.text_classifier.T

    # -------------------------------------------------------------------------------------------------- features
    def _cache_enabled(self) -> bool:
        return bool(self.cfg.TEST.FEATURE_CACHE)

    def _key(self, split: str, data_source: Sequence, transform: str, num_crops: int = 0, crop_seed=None) -> Dict:
        return split_cache_key(self.cfg, self.clip_model, self.dataset_key, split, data_source, transform,
                               num_crops=num_crops, crop_seed=crop_seed)

    def image_features(self, split: str, data_source: Sequence, loader) -> torch.Tensor:
        """(N, D) unit CLIP features of the split's images under the test transform (cached), on the device."""
        return cached_split_features(self.cfg, self.clip_model, self.dataset_key, split, data_source, loader,
                                     self.device)

    def crop_features(
        self, split: str, data_source: Sequence, num_crops: int, side_range: Sequence[float], crop_seed: int
    ) -> torch.Tensor:
        """(N, num_crops, D) unit CLIP features of random square crops (cached per crop seed), on the device."""
        return cached_crop_features(self.cfg, self.clip_model, self.dataset_key, split, data_source, num_crops,
                                    side_range, crop_seed, self.device)

    # ------------------------------------------------------------------------------------------------ evaluation
    def split_logits(self, split: str, data_source: Sequence, loader) -> List[torch.Tensor]:
        """One run: (N, C) = LOGIT_SCALE * unit image features @ classifier^T."""
        return [self.logit_scale * self.image_features(split, data_source, loader) @ self.text_classifier.T]

    def run_names(self) -> List[str]:
        """Names of the evaluation runs returned by ``split_logits`` (one per crop seed for WCA)."""
        return ["run0"]

    @torch.no_grad()
    def test(self, split=None):
        """Dassl's ``test()`` on cached features: prints ``Evaluate on the *<split>* set`` and the evaluator's block,
        writes ``<split>/<metric>`` scalars and returns the accuracy (the mean over runs when there are several)."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        split = self.cfg.TEST.SPLIT if split is None else split
        if split == "val" and self.val_loader is not None:
            loader, data_source = self.val_loader, self.dm.dataset.val
        else:
            split, loader, data_source = "test", self.test_loader, self.dm.dataset.test
        print(f"Evaluate on the *{split}* set")
        labels = torch.tensor([item.label for item in data_source], device=self.device)
        runs = self.split_logits(split, data_source, loader)
        self.run_accuracies = {}
        names = self.run_names()
        if len(names) != len(runs):
            raise RuntimeError(f"{type(self).__name__}: {len(runs)} evaluation runs but {len(names)} run names")
        for name, logits in zip(names, runs):
            correct = int((logits.argmax(dim=1) == labels).sum())
            self.run_accuracies[name] = 100.0 * correct / len(labels)
        self.num_images = len(labels)
        if len(runs) > 1:
            for name, accuracy in self.run_accuracies.items():
                print(f"* {name}: accuracy {accuracy:.2f}%")
            values = np.array(list(self.run_accuracies.values()))
            print(f"* {len(runs)} runs: accuracy mean {values.mean():.2f}% std {values.std():.2f}% (pooled below)")
        chunk = self.cfg.DATALOADER.TEST.BATCH_SIZE
        for logits in runs:
            for start in range(0, len(labels), chunk):
                self.evaluator.process(logits[start : start + chunk], labels[start : start + chunk])
        results = self.evaluator.evaluate()
        for key, value in results.items():
            self.write_scalar(f"{split}/{key}", value, self.epoch)
        return list(results.values())[0]

    def run_summary(self) -> Dict:
        """Per-run accuracies and their mean / std (population std, as the official WCA code) for results.json."""
        values = np.array(list(getattr(self, "run_accuracies", {}).values()))
        if values.size < 2:  # a single run is fully described by the schema's accuracy keys
            return {}
        return {
            "runs": dict(self.run_accuracies),
            "num_images": int(self.num_images),  # num_test counts runs x images (pooled evaluation)
            "accuracy_mean": float(values.mean()),
            "accuracy_std": float(values.std()),
        }
