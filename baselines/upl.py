"""UPL: unsupervised prompt learning (Huang et al., arXiv 2204.03649; shared/research/baselines.md Sec. 5).

1. Zero-shot CLIP with the dataset's single hand-written template (CoOp's CUSTOM_TEMPLATES,
   ``clipkit.text.get_custom_template``) labels the whole train split once, on the test view:
   ``p(x) = softmax(s * normalize(E_v(x)) . normalize(E_t(template(c)))^T)``, s = CLIP's learned temperature.
2. Class-balanced confident subset: for every predicted class, the K = ``NUM_PSEUDO_PER_CLASS`` images with the highest
   ``max p(x)`` (``clipkit.blocks.pseudo_labels.top_k_per_class``); the rest of the train split is not used.
3. A CoOp context (``N_CTX`` vectors shared by all classes, N(0, 0.02) init, class name at the end;
   ``clipkit.blocks.prompt_learner``) is learned with cross-entropy on that subset,
   ``logits = s * normalize(E_v(x)) . normalize(E_t([ctx] classname.))^T``; both CLIP towers stay frozen.
   Official recipe: SGD lr 0.002, 50 epochs, cosine with one constant warm-up epoch at 1e-5, batch 32,
   random resized crop + flip (configs/trainers/UPL/*.yaml).
Test logits come from the learned prompts. The paper's "prompt representation ensemble" averages the test logits of
16 runs with seeds 1-16; here each seed is one run (the sweep's seeds), see DEVIATIONS.md.
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F

from clipkit.blocks.prompt_learner import ContextPromptLearner, encode_prompted_text
from clipkit.blocks.pseudo_labels import hard_pseudo_labels, top_k_per_class
from clipkit.blocks.text_classifier import classifier_from_templates
from clipkit.config import CN, cfg_extension
from clipkit.dassl import (
    TRAINER_REGISTRY,
    Datum,
    build_data_loader,
    build_lr_scheduler,
    build_optimizer,
    build_transform,
)
from clipkit.trainer_base import CLIPTrainer


@cfg_extension
def _add_upl_cfg(cfg):
    cfg.TRAINER.UPL = CN()
    cfg.TRAINER.UPL.N_CTX = 16  # learnable context vectors (official 16)
    cfg.TRAINER.UPL.CTX_INIT = ""  # "" = random N(0, INIT_STD^2) init (official); else init words, e.g. "a photo of a"
    cfg.TRAINER.UPL.INIT_STD = 0.02  # std of the random context init (CoOp)
    cfg.TRAINER.UPL.CLASS_SPECIFIC_CONTEXT = False  # CoOp's CSC; UPL shares one context across classes
    cfg.TRAINER.UPL.NUM_PSEUDO_PER_CLASS = 16  # K of the top-K-per-class selection (official DATASET.NUM_SHOTS 16)
    # Template of the pseudo-labelling zero-shot classifier; "" = clipkit.text.get_custom_template(dataset key).
    cfg.TRAINER.UPL.TEMPLATE = ""
    # Temperature of the pseudo-label softmax and of the training / test logits. -1 = the checkpoint's own learned
    # exp(logit_scale), as the official code (100 for OpenAI CLIP); a positive value fixes it.
    cfg.TRAINER.UPL.LOGIT_SCALE = -1.0


@TRAINER_REGISTRY.register()
class UPL(CLIPTrainer):
    """Prompt learning on zero-shot CLIP's class-balanced confident train images (frozen CLIP)."""

    def check_cfg(self, cfg):
        node = cfg.TRAINER.UPL
        if node.NUM_PSEUDO_PER_CLASS < 1:
            raise ValueError(f"TRAINER.UPL.NUM_PSEUDO_PER_CLASS must be >= 1, got {node.NUM_PSEUDO_PER_CLASS}")
        if node.TEMPLATE and node.TEMPLATE.count("{}") != 1:
            raise ValueError(f"TRAINER.UPL.TEMPLATE must contain exactly one '{{}}', got {node.TEMPLATE!r}")

    @property
    def node(self):
        return self.cfg.TRAINER.UPL

    @classmethod
    def planned_training(cls, cfg, num_train: int, num_classes: int):
        """Epochs over the top-K-per-class subset (at most K x C images), not the whole split."""
        return int(cfg.OPTIM.MAX_EPOCH), min(num_train, cfg.TRAINER.UPL.NUM_PSEUDO_PER_CLASS * num_classes)

    def pseudo_label_template(self) -> str:
        if self.node.TEMPLATE:
            return self.node.TEMPLATE
        from clipkit.text import get_custom_template

        try:
            return get_custom_template(self.dataset_key)
        except KeyError as err:
            raise KeyError(f"{err.args[0]} Or set TRAINER.UPL.TEMPLATE to a template with one '{{}}'.") from None

    # ------------------------------------------------------------------------------------------------ model
    def build_model(self):
        cfg, node = self.cfg, self.node
        self.clip_model = self.load_clip().float().eval().requires_grad_(False)
        learned = float(self.clip_model.logit_scale.exp())
        self.logit_scale = learned if node.LOGIT_SCALE <= 0 else float(node.LOGIT_SCALE)
        print(f"UPL logit scale {self.logit_scale:.2f} (checkpoint's learned exp(logit_scale): {learned:.2f})")
        self.select_pseudo_labelled_subset()
        generator = torch.Generator().manual_seed(cfg.SEED) if cfg.SEED >= 0 else None
        self.prompt_learner = ContextPromptLearner(
            self.clip_model, self.classnames, node.N_CTX, node.CTX_INIT, node.CLASS_SPECIFIC_CONTEXT, node.INIT_STD,
            generator,
        ).to(self.device)
        print(f"UPL context: {self.prompt_learner.ctx.numel():,} trainable values "
              f"({self.prompt_learner.n_ctx} vectors{', class-specific' if node.CLASS_SPECIFIC_CONTEXT else ''})")
        self.optim = build_optimizer(self.prompt_learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("prompt_learner", self.prompt_learner, self.optim, self.sched)
        self._eval_classifier = None

    @torch.no_grad()
    def select_pseudo_labelled_subset(self) -> None:
        """Steps 1-2: zero-shot probabilities of every train image (test view), top-K per predicted class; replaces
        ``train_loader_x`` by a loader over the kept images with their pseudo-labels (true labels kept for logging)."""
        cfg, node = self.cfg, self.node
        train = list(self.dm.dataset.train_x)
        classifier = classifier_from_templates(self.clip_model, self.classnames, [self.pseudo_label_template()])
        loader = build_data_loader(cfg, sampler_type="SequentialSampler", data_source=train,
                                   batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, tfm=build_transform(cfg, is_train=False),
                                   is_train=False)
        probabilities = []
        for batch in loader:
            features = F.normalize(self.clip_model.encode_image(batch["img"].to(self.device)).float(), dim=-1)
            probabilities.append(torch.softmax(self.logit_scale * features @ classifier.t(), dim=-1).cpu())
        probabilities = torch.cat(probabilities)
        kept = top_k_per_class(probabilities, node.NUM_PSEUDO_PER_CLASS).tolist()
        pseudo_labels, _ = hard_pseudo_labels(probabilities)
        subset: List[Datum] = [
            Datum(impath=train[i].impath, label=int(pseudo_labels[i]), domain=train[i].domain,
                  classname=self.classnames[int(pseudo_labels[i])])
            for i in kept
        ]
        correct = sum(int(pseudo_labels[i]) == train[i].label for i in kept)
        self.subset_statistics = {
            "pl_subset_size": len(subset),
            "pl_subset_accuracy": 100.0 * correct / max(1, len(subset)),  # ground truth: logging only
            "pl_classes_covered": len(set(int(pseudo_labels[i]) for i in kept)),
        }
        print(f"UPL pseudo-labels: {len(subset)} of {len(train)} train images kept (top {node.NUM_PSEUDO_PER_CLASS} "
              f"per predicted class, {self.subset_statistics['pl_classes_covered']}/{len(self.classnames)} classes); "
              f"accuracy of the kept labels {self.subset_statistics['pl_subset_accuracy']:.2f}% (logging only)")
        self.train_loader_x = build_data_loader(
            cfg, sampler_type=cfg.DATALOADER.TRAIN_X.SAMPLER, data_source=subset,
            batch_size=cfg.DATALOADER.TRAIN_X.BATCH_SIZE, tfm=build_transform(cfg, is_train=True), is_train=True,
        )

    def class_text_features(self) -> torch.Tensor:
        """(C, D) unit text features of the current prompts (with gradient to the context)."""
        features = encode_prompted_text(self.clip_model, self.prompt_learner(), self.prompt_learner.tokens)
        return F.normalize(features.float(), dim=-1)

    def logits(self, images: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = F.normalize(self.clip_model.encode_image(images).float(), dim=-1)
        return self.logit_scale * features @ classifier.t()

    # -------------------------------------------------------------------------------------------- one step
    def forward_backward(self, batch) -> Dict[str, float]:
        images, pseudo_labels = batch["img"].to(self.device), batch["label"].to(self.device)
        logits = self.logits(images, self.class_text_features())
        loss = F.cross_entropy(logits, pseudo_labels)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "acc": (logits.argmax(dim=1) == pseudo_labels).float().mean().item() * 100.0}

    def after_epoch(self):
        self.log_epoch_metrics(dict(self.subset_statistics))
        super().after_epoch()

    # ----------------------------------------------------------------------------------------------- testing
    def test(self, split=None):
        self._eval_classifier = None  # the prompts may have changed since the last evaluation
        return super().test(split)

    @torch.no_grad()
    def model_inference(self, images):
        if self._eval_classifier is None:
            self._eval_classifier = self.class_text_features()
        return self.logits(images, self._eval_classifier)

    def run_summary(self) -> Dict:
        return dict(self.subset_statistics, trainable_parameters=int(self.prompt_learner.ctx.numel()))
