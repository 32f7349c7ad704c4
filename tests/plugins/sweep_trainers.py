"""Test-only trainers for the sweep test (``CLIPKIT_EXTRA_PLUGINS=tests.plugins.sweep_trainers``).

* ``SweepZeroShot``: zero-shot tiny CLIP with the reader's templates; training-free (the sweep adds ``--eval-only``).
* ``SweepProbe``: a linear head on frozen CLIP image features, trained by prediction-entropy minimisation; logs the
  training-set pseudo-label accuracy per epoch (``pl_accuracy``, ground truth used for logging only).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from clipkit.config import CN, cfg_extension
from clipkit.dassl import TRAINER_REGISTRY, build_lr_scheduler, build_optimizer
from clipkit.trainer_base import CLIPTrainer

@cfg_extension
def _add_sweep_cfg(cfg):
    cfg.TRAINER.SWEEP = CN()
    cfg.TRAINER.SWEEP.LOGIT_SCALE = 100.0  # CLIP's logit scale for the zero-shot classifier


def text_classifier(trainer) -> torch.Tensor:
    """(C, D) unit-norm mean of the template embeddings of each class."""
    from clipkit.clip import tokenize

    rows = []
    with torch.no_grad():
        for name in trainer.classnames:
            tokens = tokenize([t.format(name) for t in trainer.templates()]).to(trainer.device)
            rows.append(F.normalize(F.normalize(trainer.clip_model.encode_text(tokens).float(), dim=-1).mean(0), dim=0))
    return torch.stack(rows)


@TRAINER_REGISTRY.register()
class SweepZeroShot(CLIPTrainer):
    training_free = True

    def build_model(self):
        self.clip_model = self.load_clip().eval()
        self.classifier = text_classifier(self)

    @torch.no_grad()
    def model_inference(self, images):
        features = F.normalize(self.clip_model.encode_image(images).float(), dim=-1)
        return self.cfg.TRAINER.SWEEP.LOGIT_SCALE * features @ self.classifier.T


@TRAINER_REGISTRY.register()
class SweepProbe(CLIPTrainer):
    def build_model(self):
        self.clip_model = self.load_clip().eval()
        for parameter in self.clip_model.parameters():
            parameter.requires_grad_(False)
        self.head = nn.Linear(self.clip_model.visual.output_dim, self.num_classes).to(self.device)
        with torch.no_grad():
            self.head.weight.copy_(self.cfg.TRAINER.SWEEP.LOGIT_SCALE * text_classifier(self))
            self.head.bias.zero_()
        self.optim = build_optimizer(self.head, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("head", self.head, self.optim, self.sched)

    def model_inference(self, images):
        with torch.no_grad():
            features = F.normalize(self.clip_model.encode_image(images).float(), dim=-1)
        return self.head(features)

    def before_epoch(self):
        super().before_epoch()
        self._pl_correct, self._pl_total = 0, 0

    def forward_backward(self, batch):
        images, labels, _ = self.parse_batch_train(batch)
        logits = self.model_inference(images)
        probs = logits.softmax(dim=-1)
        loss = -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1).mean()
        self.model_backward_and_update(loss)
        self._pl_correct += int((logits.argmax(dim=1) == labels).sum())  # logging only
        self._pl_total += len(labels)
        if self.batch_idx + 1 == self.num_batches:
            self.update_lr()
        return {"loss": loss.item()}

    def after_epoch(self):
        self.log_epoch_metrics({"pl_accuracy": 100.0 * self._pl_correct / max(self._pl_total, 1)})
        super().after_epoch()

