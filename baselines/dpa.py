"""DPA: dual prototypes alignment (Ali, Silva, Khan, WACV'25), the Dassl trainer ``DPA``.

Two sets of class prototypes on CLIP's joint space, W (C x D, text, trainable, from the prompt ensemble) and Z (C x D,
image, fixed tensors rebuilt every epoch). Per training step, on a batch of unlabeled images (uint8, normalised on the
device; shared/research/baselines.md Sec. 9, official ``engine_self_training.py`` / ``utils/center.py``):

* no gradient, weak view f_w (unit):
  ``p_txt = softmax(s f_w W^T)``; queue <- batch mean of p_txt (last Q batches, persists across epochs);
  ``p_da = rownorm(p_txt / mean(queue))`` (distribution alignment); ``p_img = softmax(s f_w Z^T)``;
  ``p = a p_img + (1 - a) p_da``, ``y = argmax p``;
  ranking weight ``r = p_txt[y] / max p_txt * p_img[y] / max p_img`` (1 when both heads rank y first);
* with gradient, strong view f_s (unit): ``logits = s f_s W^T``
  ``L = mean(r * CE(logits, y)) + reg * (-mean_c log mean_b softmax(logits)_c) + align * CE(w Z W^T, arange(C))``
  (the alignment term reaches W only: Z is a fixed tensor);
* memory bank[index] <- (f_w, y); after the epoch, Z_c = normalize(mean of the bank's features labelled c), W_c for a
  class without sample.

Trainable: the vision LayerNorm affines and W (rows L2-normalised on use); the text tower is dropped after W is built.
Z starts from a zero-shot pass over the train split (argmax of ``s f W^T``). Test: ``argmax s f W^T`` on the test view.
AdamW (weight decay 0.1 except biases), per-iteration cosine to 2e-6, 15 epochs, batch 64. Defaults follow the
official code's numerics; every divergence is a switch of TRAINER.DPA (DEVIATIONS.md, DPA section).
"""

from __future__ import annotations

from typing import Dict, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from baselines._training_free import cached_split_features
from clipkit.blocks.losses import (
    fairness_loss,
    prototype_alignment_loss,
    running_class_marginal,
    weighted_cross_entropy,
)
from clipkit.blocks.patch_tap import encode_image_normalized
from clipkit.blocks.prototypes import FeatureMemoryBank
from clipkit.blocks.pseudo_labels import MarginalQueue, distribution_alignment, mix_probabilities, ranking_weights
from clipkit.blocks.schedule import PRECISIONS, autocast_context, optimizer_update, per_iteration_cosine_scheduler
from clipkit.blocks.text_classifier import classifier_from_templates, description_embeddings, mean_classifier
from clipkit.blocks.trainable import (
    TrainedStateMixin,
    enable_layernorm_affines,
    trainable_named_parameters,
    weight_decay_groups,
)
from clipkit.blocks.views import CROP_MODES, PixelNormalizer, strong_transform, view_transform
from clipkit.config import CN, cfg_extension
from clipkit.dassl import TRAINER_REGISTRY, build_data_loader, build_transform
from clipkit.trainer_base import CLIPTrainer

TEXT_PROTOTYPE_SOURCES = ("templates", "descriptions")
INIT_VIEWS = ("test", "weak")


@cfg_extension
def _add_dpa_cfg(cfg):
    node = CN()
    # a: weight of the image-prototype head p_img in the pseudo-label mixture a p_img + (1 - a) p_da (official
    # per-dataset 0.01-0.5; dataset_overrides.yaml).
    node.ALPHA = 0.5
    # reg: weight of the fairness term -mean_c log mean_b softmax(logits)_c on the strong view (official 1; SUN 0.2).
    node.FAIRNESS_WEIGHT = 1.0
    # align: weight of the prototype-alignment term CE(w Z W^T, arange(C)) (official 1).
    node.ALIGN_WEIGHT = 1.0
    # w: scale of the alignment logits Z W^T (official 100; 1 for Flowers).
    node.ALIGN_TEMPERATURE = 100.0
    # Fixed scale s of every cosine logit: pseudo-labels, training loss, test (official 100).
    node.LOGIT_SCALE = 100.0
    # Distribution alignment: the mean of the last QUEUE_LENGTH batch means of p_txt (official 32).
    node.QUEUE_LENGTH = 32
    # eps in the ranking weight p[y] / (max p + eps) (official 1e-7).
    node.RANKING_EPS = 1e-7
    # Floor of the per-iteration cosine LR schedule (official 2 x --min_lr 1e-6 = 2e-6; no warmup). With OPTIM.LR
    # below it the LR rises to it, as the official code does.
    node.MIN_LR = 2e-6
    # Substrings of parameter names without weight decay (official: "bias"; its "LayerNorm.*" entries match nothing
    # in CLIP's naming).
    node.NO_DECAY = ("bias",)
    # Text prototypes W: "templates" (prompt ensemble, official and Table 1) or "descriptions" (mean of the CuPL/GPT-3
    # description embeddings: microCLIP's Table 8 variant).
    node.TEXT_PROTOTYPES = "templates"
    # View of the zero-shot pass that initialises Z and the memory bank: "test" (centre crop, read from the feature
    # cache the training-free methods share) or "weak" (the official Resize + RandomCrop pass, one random draw,
    # not cached).
    node.INIT_VIEW = "test"
    # Crop of the weak (pseudo-labelling) view after the short-side resize: "random" (official) or "center".
    node.WEAK_CROP = "random"
    # Crop of test images after the short-side resize (official "center").
    node.TEST_CROP = "center"
    # Strong view (official timm create_transform): RandomResizedCrop area range, then h-flip, then RandAugment.
    node.STRONG_RRC_SCALE = (0.3, 1.0)
    node.STRONG_HFLIP = 0.5
    node.STRONG_RANDAUGMENT = "rand-m9-mstd0.5-inc1"
    # Keep the last, incomplete training batch (official DataLoader drop_last=False: every sample is pseudo-labelled
    # and written to the memory bank every epoch). False = Dassl's drop_last.
    node.KEEP_LAST_BATCH = True
    # Autocast precision on the device: "fp32" (official), "bf16", "fp16".
    node.PREC = "fp32"
    cfg.TRAINER.DPA = node


# --------------------------------------------------------------------------------------------------------- model
class DPANet(TrainedStateMixin, nn.Module):
    """CLIP's vision tower, the text prototypes W (parameter), the image prototypes Z, the memory bank and the
    distribution-alignment queue (buffers, all checkpointed)."""

    extra_state_buffers = ("image_prototypes", "memory.features", "memory.labels", "queue.entries", "queue.count")

    def __init__(self, visual: nn.Module, text_prototypes: torch.Tensor, num_train: int, node, pixel_mean,
                 pixel_std):
        super().__init__()
        num_classes, dim = text_prototypes.shape
        self.visual = visual
        self.normalizer = PixelNormalizer(pixel_mean, pixel_std)
        self.text_prototypes = nn.Parameter(text_prototypes.detach().clone())  # (C, D) W, normalised on use
        self.register_buffer("image_prototypes", F.normalize(text_prototypes.detach().clone(), dim=-1))  # (C, D) Z
        self.memory = FeatureMemoryBank(num_train, dim)
        self.queue = MarginalQueue(node.QUEUE_LENGTH, num_classes)
        self.logit_scale = node.LOGIT_SCALE

    @property
    def num_classes(self) -> int:
        return self.text_prototypes.shape[0]

    def classifier(self) -> torch.Tensor:
        """(C, D) unit text prototypes W (with gradient)."""
        return F.normalize(self.text_prototypes, dim=-1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> (B, D) unit image features."""
        return encode_image_normalized(self.visual, self.normalizer(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Test logits (B, C) = s f W^T."""
        return self.logit_scale * self.encode(images) @ self.classifier().t()

    @torch.no_grad()
    def rebuild_image_prototypes(self) -> None:
        """Z <- class means of the memory bank, W_c where class c has no sample (official ``get_center``)."""
        self.image_prototypes.copy_(self.memory.prototypes(self.num_classes, self.classifier().detach()))


# ------------------------------------------------------------------------------------------------------ one step
class PseudoLabels(NamedTuple):
    labels: torch.Tensor  # (B,) y = argmax(a p_img + (1 - a) p_da)
    weights: torch.Tensor  # (B,) ranking weights r
    confidences: torch.Tensor  # (B,) max of the mixture p
    features: torch.Tensor  # (B, D) unit weak-view features (for the memory bank)


@torch.no_grad()
def pseudo_label(model: DPANet, node, weak: torch.Tensor) -> PseudoLabels:
    """DPA's pseudo-labeller on the weak view (no gradient); pushes the batch mean of p_txt onto the queue first."""
    features = model.encode(weak)
    scale = model.logit_scale
    probs_txt = torch.softmax(scale * features @ model.classifier().t(), dim=-1)
    model.queue.push(probs_txt.mean(dim=0))
    probs_da = distribution_alignment(probs_txt, model.queue.mean())
    probs_img = torch.softmax((scale * features @ model.image_prototypes.t()).float(), dim=-1)
    mixture = mix_probabilities(probs_img, probs_da, node.ALPHA)
    confidences, labels = mixture.max(dim=-1)
    weights = ranking_weights(probs_txt, labels, node.RANKING_EPS) * ranking_weights(probs_img, labels,
                                                                                     node.RANKING_EPS)
    return PseudoLabels(labels, weights, confidences, features)


class StepOutput(NamedTuple):
    loss: torch.Tensor  # total (scalar, with graph)
    loss_st: torch.Tensor  # weighted self-training CE
    loss_fair: torch.Tensor  # fairness term (before its weight)
    loss_align: torch.Tensor  # prototype alignment (before its weight)
    pseudo: PseudoLabels


def training_step_loss(model: DPANet, node, weak: torch.Tensor, strong: torch.Tensor) -> StepOutput:
    """Pseudo-labels on the weak view, then the three-term loss on the strong view (official order and scales)."""
    pseudo = pseudo_label(model, node, weak)
    classifier = model.classifier()
    logits = (model.logit_scale * model.encode(strong) @ classifier.t()).float()
    loss_st = weighted_cross_entropy(logits, pseudo.labels, pseudo.weights)
    loss_fair = fairness_loss(running_class_marginal(logits.softmax(dim=-1), None, 0.0))
    loss_align = prototype_alignment_loss(model.image_prototypes, classifier, node.ALIGN_TEMPERATURE)
    loss = loss_st + node.FAIRNESS_WEIGHT * loss_fair + node.ALIGN_WEIGHT * loss_align
    return StepOutput(loss, loss_st, loss_fair, loss_align, pseudo)


# ------------------------------------------------------------------------------------------------------- trainer
@TRAINER_REGISTRY.register()
class DPA(CLIPTrainer):
    """Dual prototypes alignment: LayerNorm + text-prototype self-training with image prototypes."""
    # per-epoch accumulators carried by intra-epoch checkpoints (TRAIN.CHECKPOINT_EVERY_STEPS)
    epoch_state_attrs = ("_sums", "_count")

    def check_cfg(self, cfg):
        node = cfg.TRAINER.DPA
        choices = [("TEXT_PROTOTYPES", node.TEXT_PROTOTYPES, TEXT_PROTOTYPE_SOURCES),
                   ("INIT_VIEW", node.INIT_VIEW, INIT_VIEWS), ("WEAK_CROP", node.WEAK_CROP, CROP_MODES),
                   ("TEST_CROP", node.TEST_CROP, CROP_MODES), ("PREC", node.PREC, tuple(PRECISIONS))]
        for key, value, allowed in choices:
            if value not in allowed:
                raise ValueError(f"TRAINER.DPA.{key} must be one of {allowed}, got {value!r}")
        if not 0.0 <= node.ALPHA <= 1.0:
            raise ValueError(f"TRAINER.DPA.ALPHA must lie in [0, 1], got {node.ALPHA}")
        if node.QUEUE_LENGTH < 1:
            raise ValueError(f"TRAINER.DPA.QUEUE_LENGTH must be >= 1, got {node.QUEUE_LENGTH}")
        if cfg.OPTIM.NAME != "adamw":
            print(f"Note: DPA uses AdamW officially; OPTIM.NAME={cfg.OPTIM.NAME!r}")

    @property
    def node(self):
        return self.cfg.TRAINER.DPA

    # ------------------------------------------------------------------------------------------------- data
    def build_data_loader(self):
        """Weak / strong views as uint8 tensors (batch keys img, img2) and the sample index; test view uint8."""
        cfg, node = self.cfg, self.node
        size = tuple(cfg.INPUT.SIZE)
        train_tfms = [
            view_transform(size, cfg.INPUT.INTERPOLATION, node.WEAK_CROP),
            strong_transform(size, node.STRONG_RRC_SCALE, node.STRONG_HFLIP, node.STRONG_RANDAUGMENT),
        ]
        self.build_data_loader_with(custom_tfm_train=train_tfms,
                                    custom_tfm_test=view_transform(size, cfg.INPUT.INTERPOLATION, node.TEST_CROP))
        if node.KEEP_LAST_BATCH and self.train_loader_x.drop_last:
            loader = self.train_loader_x  # same dataset and sampler, only the last batch kept
            self.train_loader_x = torch.utils.data.DataLoader(
                loader.dataset, batch_size=loader.batch_size, sampler=loader.sampler, num_workers=loader.num_workers,
                drop_last=False, pin_memory=loader.pin_memory,
            )

    # ------------------------------------------------------------------------------------------------ model
    def build_text_prototypes(self, clip_model) -> torch.Tensor:
        """(C, D) unit W at initialisation: the prompt ensemble (official) or the description mean (Table 8)."""
        if self.node.TEXT_PROTOTYPES == "descriptions":
            return mean_classifier(description_embeddings(clip_model, self.classnames, self.descriptions()))
        return classifier_from_templates(clip_model, self.classnames, self.templates())

    @torch.no_grad()
    def zero_shot_train_features(self, clip_model) -> torch.Tensor:
        """(N, D) unit features of every train image, in dataset order, for the initial Z and memory bank."""
        cfg = self.cfg
        train = list(self.dm.dataset.train_x)
        if self.node.INIT_VIEW == "test":
            loader = build_data_loader(cfg, sampler_type="SequentialSampler", data_source=train,
                                       batch_size=cfg.DATALOADER.TEST.BATCH_SIZE,
                                       tfm=build_transform(cfg, is_train=False), is_train=False)
            return cached_split_features(cfg, clip_model, self.dataset_key, "train", train, loader, self.device)
        weak = view_transform(tuple(cfg.INPUT.SIZE), cfg.INPUT.INTERPOLATION, "random")
        loader = build_data_loader(cfg, sampler_type="SequentialSampler", data_source=train,
                                   batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, tfm=weak, is_train=False)
        normalizer = PixelNormalizer(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD).to(self.device)
        return torch.cat([encode_image_normalized(clip_model.visual, normalizer(batch["img"].to(self.device)))
                          for batch in loader])

    def build_model(self):
        cfg, node = self.cfg, self.node
        clip_model = self.load_clip().float().eval()
        text_prototypes = self.build_text_prototypes(clip_model)
        features = self.zero_shot_train_features(clip_model)
        visual = clip_model.visual
        del clip_model  # the text tower is not needed after this point (official)
        self.model = DPANet(visual, text_prototypes, features.shape[0], node, cfg.INPUT.PIXEL_MEAN,
                            cfg.INPUT.PIXEL_STD).to(self.device)
        labels = (node.LOGIT_SCALE * features @ text_prototypes.t()).argmax(dim=-1)
        self.model.memory.write(torch.arange(features.shape[0]), features, labels)
        self.model.rebuild_image_prototypes()
        true_labels = torch.tensor([item.label for item in self.dm.dataset.train_x], device=labels.device)
        self.init_pl_accuracy = 100.0 * (labels == true_labels).float().mean().item()  # logging only
        print(f"DPA image prototypes from a zero-shot pass over {features.shape[0]} train images "
              f"({node.INIT_VIEW} view); its pseudo-label accuracy {self.init_pl_accuracy:.2f}% (logging only)")

        self.model.requires_grad_(False)
        enable_layernorm_affines(self.model.visual)
        self.model.text_prototypes.requires_grad_(True)
        params = trainable_named_parameters(self.model)
        self.trainable_names = sorted(params)
        print(f"DPA trainable parameters: {sum(p.numel() for p in params.values()):,} in {len(params)} tensors")
        self.optim = torch.optim.AdamW(
            weight_decay_groups(params, cfg.OPTIM.WEIGHT_DECAY, tuple(node.NO_DECAY)), lr=cfg.OPTIM.LR,
            betas=(cfg.OPTIM.ADAM_BETA1, cfg.OPTIM.ADAM_BETA2),
        )
        total_steps = max(1, cfg.OPTIM.MAX_EPOCH * len(self.train_loader_x))
        self.sched = per_iteration_cosine_scheduler(self.optim, total_steps, cfg.OPTIM.LR, node.MIN_LR)
        self.register_model("dpa", self.model, self.optim, self.sched)
        self.scaler = torch.amp.GradScaler(self.device.type) if node.PREC == "fp16" else None
        self._reset_epoch_state()

    def autocast(self):
        return autocast_context(self.device, self.node.PREC)

    # -------------------------------------------------------------------------------------------- one step
    def forward_backward(self, batch):
        weak = batch["img"].to(self.device, non_blocking=True)
        strong = batch["img2"].to(self.device, non_blocking=True)
        with self.autocast():
            out = training_step_loss(self.model, self.node, weak, strong)
        self.model.memory.write(batch["index"], out.pseudo.features, out.pseudo.labels)
        optimizer_update(out.loss, self.optim, self.scaler)
        self.update_lr()  # per-iteration cosine
        # the ground truth enters nothing but the logged pseudo-label accuracy
        true_labels = batch["label"].to(self.device)
        self._sums += torch.stack([(out.pseudo.labels == true_labels).sum().float(), out.pseudo.confidences.sum(),
                                   out.pseudo.weights.sum()]).detach()
        self._count += true_labels.shape[0]
        return {"loss": out.loss.detach(), "loss_st": out.loss_st.detach(), "loss_fair": out.loss_fair.detach(),
                "loss_align": out.loss_align.detach()}

    # ------------------------------------------------------------------------------------------ epoch metrics
    def _reset_epoch_state(self):
        self._sums = torch.zeros(3, device=self.device)
        self._count = 0

    def before_epoch(self):
        super().before_epoch()
        self._reset_epoch_state()

    def after_epoch(self):
        self.model.rebuild_image_prototypes()  # official: at the end of every epoch, before the evaluation
        metrics = {"init_pl_accuracy": self.init_pl_accuracy}
        if self._count:
            accuracy, confidence, weight = (self._sums / self._count).tolist()
            metrics.update(pl_accuracy=100.0 * accuracy, pl_confidence=confidence, mean_ranking_weight=weight)
        metrics.update(self.prototype_agreement())
        self.log_epoch_metrics(metrics)
        print("DPA epoch metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        super().after_epoch()  # test accuracy per epoch (TEST.EVAL_EVERY_EPOCH), checkpoint

    @torch.no_grad()
    def prototype_agreement(self) -> Dict[str, float]:
        """Share of classes whose image prototype's nearest text prototype is its own, and mean cos(Z_c, W_c)."""
        similarity = self.model.image_prototypes @ self.model.classifier().t()
        own = torch.arange(similarity.shape[0], device=similarity.device)
        return {"prototype_text_agreement": 100.0 * (similarity.argmax(dim=1) == own).float().mean().item(),
                "prototype_text_cosine": similarity.diagonal().mean().item()}

    # ----------------------------------------------------------------------------------------------- testing
    @torch.no_grad()
    def model_inference(self, images):
        with self.autocast():
            return self.model(images).float()

    def run_summary(self) -> Dict:
        return {"trainable_parameters": int(sum(p.numel() for p in self.model.parameters() if p.requires_grad)),
                "trainable_tensors": len(self.trainable_names), "init_pl_accuracy": self.init_pl_accuracy}


__all__ = ["DPA", "DPANet", "pseudo_label", "training_step_loss"]
