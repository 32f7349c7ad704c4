"""Trivial test-only trainers: a linear probe on mean RGB values (``TrivialProbe``) and a zero-shot classifier on the
tiny CLIP (``TrivialZeroShot``, training-free: run with ``--eval-only``).

``TRAINER.TRIVIAL.LOSS`` picks the probe's loss: ``entropy`` (label-free: mean prediction entropy) or
``cross_entropy`` (reads ground-truth labels: the label-leak guard must catch it).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from clipkit.config import CN, cfg_extension
from clipkit.dassl import TRAINER_REGISTRY, build_lr_scheduler, build_optimizer, compute_accuracy
from clipkit.trainer_base import CLIPTrainer


@cfg_extension
def _add_trivial_cfg(cfg):
    cfg.TRAINER.TRIVIAL = CN()
    cfg.TRAINER.TRIVIAL.LOSS = "entropy"  # entropy (label-free) | cross_entropy (supervised)
    cfg.TRAINER.TRIVIAL.LOG_TRAIN_ACC = True  # log_epoch_metrics the probe's train accuracy (labels for logging)


class MeanColorProbe(nn.Module):
    """(B, 3, H, W) -> (B, C) logits of a linear layer on the per-channel mean."""

    def __init__(self, num_classes):
        super().__init__()
        self.linear = nn.Linear(3, num_classes)

    def forward(self, images):
        return self.linear(images.mean(dim=(2, 3)))


@TRAINER_REGISTRY.register()
class TrivialProbe(CLIPTrainer):
    def check_cfg(self, cfg):
        if cfg.TRAINER.TRIVIAL.LOSS not in ("entropy", "cross_entropy"):
            raise ValueError(f"TRAINER.TRIVIAL.LOSS must be entropy or cross_entropy, got {cfg.TRAINER.TRIVIAL.LOSS}")

    def build_model(self):
        self.model = MeanColorProbe(self.num_classes).to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("probe", self.model, self.optim, self.sched)

    def before_epoch(self):
        super().before_epoch()
        self._train_correct = 0
        self._train_total = 0

    def forward_backward(self, batch):
        images, labels, _ = self.parse_batch_train(batch)
        logits = self.model(images)
        if self.cfg.TRAINER.TRIVIAL.LOSS == "cross_entropy":
            loss = F.cross_entropy(logits, labels)
        else:
            probs = logits.softmax(dim=-1)
            loss = -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1).mean()
        self.model_backward_and_update(loss)
        self._train_correct += int((logits.argmax(dim=1) == labels).sum())  # logging only
        self._train_total += len(labels)
        if self.batch_idx + 1 == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "acc": compute_accuracy(logits, labels)[0].item()}

    def after_epoch(self):
        if self.cfg.TRAINER.TRIVIAL.LOG_TRAIN_ACC:
            self.log_epoch_metrics({"train_acc": 100.0 * self._train_correct / max(self._train_total, 1)})
        super().after_epoch()


@TRAINER_REGISTRY.register()
class TrivialZeroShot(CLIPTrainer):
    """Zero-shot CLIP with the reader's templates (no model registered: eval-only)."""

    training_free = True

    def build_model(self):
        from clipkit.clip import tokenize

        self.clip_model = self.load_clip().eval()
        with torch.no_grad():
            rows = []
            for name in self.classnames:
                tokens = tokenize([t.format(name) for t in self.templates()]).to(self.device)
                emb = F.normalize(self.clip_model.encode_text(tokens).float(), dim=-1).mean(dim=0)
                rows.append(F.normalize(emb, dim=-1))
            self.text_classifier = torch.stack(rows)  # (C, D)

    @torch.no_grad()
    def model_inference(self, images):
        features = F.normalize(self.clip_model.encode_image(images).float(), dim=-1)
        return 100.0 * features @ self.text_classifier.T


def tiny_run_cfg(root, output_dir, trainer="TrivialProbe", **overrides):
    """A frozen config for a fast deterministic CPU run of ``trainer`` on TestImageFolder at ``root``.

    ``overrides`` are yacs keys with dots replaced by double underscores, e.g. ``OPTIM__MAX_EPOCH=2``.
    """
    import tests.plugins.image_folder_dataset  # noqa: F401  (registers TestImageFolder)
    from clipkit.config import extend_cfg
    from clipkit.dassl import get_cfg_default

    cfg = get_cfg_default()
    extend_cfg(cfg)
    opts = {
        "DATASET.ROOT": str(root),
        "DATASET.NAME": "TestImageFolder",
        "TRAINER.NAME": trainer,
        "OUTPUT_DIR": str(output_dir),
        "USE_CUDA": False,
        "DATALOADER.NUM_WORKERS": 0,
        "DATALOADER.TRAIN_X.BATCH_SIZE": 4,
        "DATALOADER.TEST.BATCH_SIZE": 4,
        "INPUT.SIZE": (32, 32),
        "INPUT.TRANSFORMS": ("random_resized_crop", "random_flip", "normalize"),
        "OPTIM.NAME": "sgd",
        "OPTIM.LR": 0.5,
        "OPTIM.MAX_EPOCH": 3,
        "OPTIM.LR_SCHEDULER": "cosine",
        "OPTIM.WARMUP_EPOCH": 1,
        "OPTIM.WARMUP_TYPE": "constant",
        "TRAIN.PRINT_FREQ": 10,
    }
    opts.update({key.replace("__", "."): value for key, value in overrides.items()})
    for key, value in opts.items():
        node = cfg
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    cfg.freeze()
    return cfg
