"""LaFTer: label-free tuning of CLIP with a text-trained classifier and visual prompts (Mirza et al., NeurIPS'23;
shared/research/baselines.md Sec. 7), the Dassl trainer ``LaFTer``.

Stage 1 (text only, in ``build_model``). Every text sample t (each description sentence of class c and each dataset
template filled with c; unit CLIP text embeddings) is a training sample of its class. A bias-free linear classifier
A (C x D) is trained full-batch for ``TEXT_STEPS`` AdamW steps on noisy embeddings::

    L_text = LS-CE_eps( A (t + n), y_t ),   n ~ N(0, sigma^2 I) redrawn every step,   sigma = 0.1, eps = 0.1

with LS-CE_eps(z, y) = (1 - eps) (-log softmax(z)_y) + eps * mean_c (-log softmax(z)_c). A frozen copy A_pl of the
result is the pseudo-labeller.

Stage 2 (unlabeled train images, two views per image: weak = CLIP test transform, strong = SimSiam augmentation)::

    y_hat = argmax_c A_pl normalize(E_v(x_weak))          no gradient; E_v WITHOUT prompts
    L     = LS-CE_eps( A E_v^P(x_strong), y_hat )          E_v^P: N prompt tokens after [CLS]; NOT normalised

Trainable: the N visual prompts (VPT-shallow, ``clipkit.blocks.visual_prompts``), every visual LayerNorm affine and A.
The official teacher E_v is the tower being tuned, so its LayerNorms drift (``TEACHER_ENCODER "tuned"``); "frozen" keeps
a frozen copy of the pretrained tower. AdamW at a constant LR (official MultiStepLR without milestones), weight decay
on everything but biases. Test logits: ``A E_v^P(x)`` on the test view. The official code reports the best epoch on
the test set; here the last epoch is reported and the best one is kept only as flagged test selection (per-epoch
test accuracy, ``EPOCH_TEST``). Divergences: DEVIATIONS.md (LaFTer section).
"""

from __future__ import annotations

import copy
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from clipkit.blocks.pseudo_labels import hard_pseudo_labels
from clipkit.blocks.schedule import PRECISIONS, autocast_context
from clipkit.blocks.text_classifier import description_embeddings, encode_texts, prompt_ready
from clipkit.blocks.trainable import (
    TrainedStateMixin,
    enable_layernorm_affines,
    trainable_named_parameters,
    weight_decay_groups,
)
from clipkit.blocks.views import PixelNormalizer, simsiam_transform, view_transform
from clipkit.blocks.visual_prompts import VisualPrompts
from clipkit.config import CN, cfg_extension
from clipkit.dassl import TRAINER_REGISTRY, build_optimizer
from clipkit.trainer_base import CLIPTrainer

TEXT_SAMPLE_SETS = ("descriptions_and_templates", "templates", "classnames")
TEACHER_ENCODERS = ("tuned", "frozen")


@cfg_extension
def _add_lafter_cfg(cfg):
    node = CN()
    # Stage 1 text samples (official --txt_cls): "descriptions_and_templates" (official "lafter": every description
    # sentence + every dataset template filled with the class name), "templates" ("templates_only"), "classnames"
    # ("cls_only": the bare class name). Descriptions come from DATASET.DESCRIPTIONS, else the reader's CuPL file.
    node.TEXT_SAMPLES = "descriptions_and_templates"
    # Stage 1 full-batch AdamW steps (official text_cls_epochs[dataset]: 400-600; per dataset in
    # configs/trainers/LaFTer/dataset_overrides.yaml).
    node.TEXT_STEPS = 500
    # Stage 1 learning rate (official: the same --lr as stage 2, 5e-4 in scripts/LaFTer.sh).
    node.TEXT_LR = 0.0005
    # Stage 1 weight decay of the classifier weight (official 0.01; AdamW betas: OPTIM.ADAM_BETA1/2, (0.9, 0.999)).
    node.TEXT_WEIGHT_DECAY = 0.01
    # sigma of the Gaussian noise added to the unit text embeddings at every stage 1 step (official 0.1).
    node.TEXT_NOISE_STD = 0.1
    # eps of the label-smoothed cross-entropy of both stages (official 0.1).
    node.LABEL_SMOOTHING = 0.1
    # N visual prompt tokens inserted after [CLS] (official 50 for every backbone).
    node.NUM_PROMPTS = 50
    # Patch side p in the prompt init bound sqrt(6 / (3 p^2 + W)) (official hard-codes 16, also for ViT-B/32;
    # 0 = the backbone's own patch size). W is always read from the model.
    node.PROMPT_INIT_PATCH_SIZE = 16
    # Encoder of the pseudo-labelling pass: "tuned" (official: the tower being trained, un-prompted, so its LayerNorm
    # affines drift) or "frozen" (a frozen copy of the pretrained tower).
    node.TEACHER_ENCODER = "tuned"
    # Strong view (official SimSiam-style get_random_transform): RandomResizedCrop area range.
    node.STRONG_RRC_SCALE = (0.2, 1.0)
    # Interpolation of that crop (official: torchvision's default, bilinear).
    node.STRONG_INTERPOLATION = "bilinear"
    # Probability of the horizontal flip (official 0.5).
    node.STRONG_HFLIP = 0.5
    # ColorJitter (brightness, contrast, saturation, hue) and its probability (official (0.4, 0.4, 0.4, 0.1), 0.8).
    node.STRONG_COLOR_JITTER = (0.4, 0.4, 0.4, 0.1)
    node.STRONG_COLOR_JITTER_P = 0.8
    # Probability of the grayscale conversion (official 0.2).
    node.STRONG_GRAYSCALE_P = 0.2
    # PIL Gaussian blur radius range and probability (official U(0.1, 2) on every image: p = 1).
    node.STRONG_BLUR_SIGMA = (0.1, 2.0)
    node.STRONG_BLUR_P = 1.0
    # Evaluate on the test split after every epoch (official: every epoch, reporting the max). Feeds the per-epoch
    # "accuracy" log and results.json's accuracy_best (flagged best_is_test_selection); the reported accuracy stays the
    # last epoch's.
    node.EPOCH_TEST = True
    # Autocast precision on the device: "fp32" (official), "bf16", "fp16".
    node.PREC = "fp32"
    cfg.TRAINER.LAFTER = node


# ------------------------------------------------------------------------------------------------------- stage 1
def class_samples(groups: Sequence[Sequence[torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stack per-class text embeddings into one labelled training set.

    ``groups``: one entry per text source (descriptions, templates, ...), each a per-class list of (n_c, D) tensors.
    Returns (T, D) features and (T,) long labels, source by source and class by class (the official order).
    """
    features, labels = [], []
    for group in groups:
        for label, embeddings in enumerate(group):
            features.append(embeddings)
            labels.append(torch.full((embeddings.shape[0],), label, dtype=torch.long, device=embeddings.device))
    if not features:
        raise ValueError("class_samples got no text embeddings")
    return torch.cat(features), torch.cat(labels)


def text_classifier_loss(weight: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor,
                         smoothing: float) -> torch.Tensor:
    """L_text: label-smoothed CE of the bias-free classifier ``weight`` (C, D) on ``features + noise`` (T, D)."""
    return F.cross_entropy((features + noise) @ weight.t(), labels, label_smoothing=smoothing)


class TextStageResult(NamedTuple):
    first_loss: float  # L_text of the first step (noisy)
    final_loss: float  # L_text of the last step (noisy)
    train_accuracy: float  # % of the noise-free text samples the final classifier gets right


def train_text_classifier(weight: nn.Parameter, features: torch.Tensor, labels: torch.Tensor, steps: int,
                          lr: float, weight_decay: float, noise_std: float, smoothing: float,
                          generator: Optional[torch.Generator] = None, betas=(0.9, 0.999)) -> TextStageResult:
    """Stage 1 in place on ``weight`` (C, D): ``steps`` full-batch AdamW steps (``betas``: torch's defaults, as the
    official code) of L_text, fresh noise ``noise_std * N(0, 1)`` (drawn from ``generator``, on the features' device)
    at every step."""
    optim = torch.optim.AdamW([weight], lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    losses = []
    with torch.enable_grad():
        for _ in range(steps):
            noise = noise_std * torch.randn(features.shape, generator=generator, device=features.device,
                                            dtype=features.dtype)
            loss = text_classifier_loss(weight, features, labels, noise, smoothing)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            losses.append(loss.detach())
    with torch.no_grad():
        accuracy = 100.0 * ((features @ weight.t()).argmax(dim=1) == labels).float().mean().item()
    first, final = (losses[0].item(), losses[-1].item()) if losses else (float("nan"), float("nan"))
    return TextStageResult(first, final, accuracy)


# --------------------------------------------------------------------------------------------------------- model
class LaFTerNet(TrainedStateMixin, nn.Module):
    """CLIP's vision tower + visual prompts + the trained classifier A + the frozen pseudo-labeller A_pl (buffer)."""

    extra_state_buffers = ("teacher_weight",)

    def __init__(self, visual: nn.Module, num_classes: int, node, pixel_mean, pixel_std):
        super().__init__()
        embed_dim = visual.proj.shape[1]
        self.visual = visual
        # the official code builds the adapter, then draws the prompts, both from the global RNG
        self.classifier = nn.Linear(embed_dim, num_classes, bias=False)  # A, PyTorch's default init before stage 1
        self.prompt = VisualPrompts(visual, node.NUM_PROMPTS, node.PROMPT_INIT_PATCH_SIZE)
        self.register_buffer("teacher_weight", torch.zeros(num_classes, embed_dim))  # A_pl, set after stage 1
        self.teacher_visual = copy.deepcopy(visual) if node.TEACHER_ENCODER == "frozen" else None
        self.normalizer = PixelNormalizer(pixel_mean, pixel_std)

    @property
    def teacher_encoder(self) -> nn.Module:
        return self.visual if self.teacher_visual is None else self.teacher_visual

    def freeze_teacher(self) -> None:
        """A_pl <- copy(A) (after stage 1)."""
        self.teacher_weight.copy_(self.classifier.weight.detach())

    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> (B, C) ``A_pl normalize(E_v(x))``: un-prompted, no gradient."""
        features = F.normalize(self.teacher_encoder(self.normalizer(images)).float(), dim=-1)
        return features @ self.teacher_weight.t()

    def student_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> (B, C) ``A E_v^P(x)`` (prompted, un-normalised features)."""
        return self.classifier(self.prompt(self.visual, self.normalizer(images)).float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Test logits (official ``eval_clip``): the student's."""
        return self.student_logits(images)


def trainable_parameters(model: LaFTerNet) -> Dict[str, nn.Parameter]:
    """Freeze everything but the prompts, the visual LayerNorm affines and A; returns them by name."""
    model.requires_grad_(False)
    enable_layernorm_affines(model.visual)
    model.prompt.requires_grad_(True)
    model.classifier.requires_grad_(True)
    return trainable_named_parameters(model)


class StepOutput(NamedTuple):
    loss: torch.Tensor  # LS-CE of the student on the pseudo-labels (scalar, with graph)
    logits: torch.Tensor  # (B, C) student logits of the strong view
    pseudo_labels: torch.Tensor  # (B,)
    confidences: torch.Tensor  # (B,) max softmax probability of the pseudo-labeller


def pseudo_label(model: LaFTerNet, weak: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(labels (B,), confidences (B,)): argmax and max of ``softmax(A_pl normalize(E_v(x_weak)))``."""
    return hard_pseudo_labels(model.teacher_logits(weak).float().softmax(dim=-1))


def training_step_loss(model: LaFTerNet, weak: torch.Tensor, strong: torch.Tensor, smoothing: float) -> StepOutput:
    """One stage 2 step up to the loss: teacher labels on the weak view, student LS-CE on the strong view."""
    labels, confidences = pseudo_label(model, weak)
    logits = model.student_logits(strong).float()
    loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
    return StepOutput(loss, logits, labels, confidences)


# ------------------------------------------------------------------------------------------------------- trainer
@TRAINER_REGISTRY.register()
class LaFTer(CLIPTrainer):
    """LaFTer: text-only classifier (stage 1), then visual prompts + LayerNorms + classifier on pseudo-labels."""
    # per-epoch accumulators carried by intra-epoch checkpoints (TRAIN.CHECKPOINT_EVERY_STEPS)
    epoch_state_attrs = ("_pl_sums", "_pl_count")

    def check_cfg(self, cfg):
        node = cfg.TRAINER.LAFTER
        choices = [("TEXT_SAMPLES", node.TEXT_SAMPLES, TEXT_SAMPLE_SETS),
                   ("TEACHER_ENCODER", node.TEACHER_ENCODER, TEACHER_ENCODERS),
                   ("PREC", node.PREC, tuple(PRECISIONS)),
                   ("STRONG_INTERPOLATION", node.STRONG_INTERPOLATION, ("bilinear", "bicubic", "nearest"))]
        for key, value, allowed in choices:
            if value not in allowed:
                raise ValueError(f"TRAINER.LAFTER.{key} must be one of {allowed}, got {value!r}")
        for key in ("TEXT_STEPS", "NUM_PROMPTS", "PROMPT_INIT_PATCH_SIZE"):
            if node[key] < 0:
                raise ValueError(f"TRAINER.LAFTER.{key} must be >= 0, got {node[key]}")
        for key in ("LABEL_SMOOTHING", "STRONG_HFLIP", "STRONG_COLOR_JITTER_P", "STRONG_GRAYSCALE_P", "STRONG_BLUR_P"):
            if not 0.0 <= node[key] <= 1.0:
                raise ValueError(f"TRAINER.LAFTER.{key} must lie in [0, 1], got {node[key]}")
        if node.TEXT_NOISE_STD < 0:
            raise ValueError(f"TRAINER.LAFTER.TEXT_NOISE_STD must be >= 0, got {node.TEXT_NOISE_STD}")
        low, high = node.STRONG_RRC_SCALE
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"TRAINER.LAFTER.STRONG_RRC_SCALE must satisfy 0 < a <= b <= 1, got {(low, high)}")
        if cfg.OPTIM.NAME != "adamw":
            print(f"Note: LaFTer uses AdamW officially; OPTIM.NAME={cfg.OPTIM.NAME!r}")

    @property
    def node(self):
        return self.cfg.TRAINER.LAFTER

    @property
    def evaluates_every_epoch(self) -> bool:
        return bool(self.node.EPOCH_TEST) or super().evaluates_every_epoch

    # ------------------------------------------------------------------------------------------------- data
    def build_data_loader(self):
        """Weak (CLIP test view) and strong (SimSiam) views as uint8 tensors; test view uint8 (normalised on device)."""
        cfg, node = self.cfg, self.cfg.TRAINER.LAFTER
        size = tuple(cfg.INPUT.SIZE)
        test_view = view_transform(size, cfg.INPUT.INTERPOLATION, "center")
        strong = simsiam_transform(
            size, node.STRONG_RRC_SCALE, node.STRONG_HFLIP, node.STRONG_COLOR_JITTER, node.STRONG_COLOR_JITTER_P,
            node.STRONG_GRAYSCALE_P, node.STRONG_BLUR_SIGMA, node.STRONG_BLUR_P, node.STRONG_INTERPOLATION,
        )
        self.build_data_loader_with(custom_tfm_train=[test_view, strong], custom_tfm_test=test_view)

    # ------------------------------------------------------------------------------------------------ model
    def text_samples(self, clip_model) -> Tuple[torch.Tensor, torch.Tensor]:
        """(T, D) unit text embeddings and (T,) labels of the stage 1 training set (TEXT_SAMPLES)."""
        classnames, source = self.classnames, self.node.TEXT_SAMPLES
        groups: List[List[torch.Tensor]] = []
        if source == "descriptions_and_templates":
            groups.append(description_embeddings(clip_model, classnames, self.descriptions()))
        if source in ("descriptions_and_templates", "templates"):
            templates = self.templates()
            texts = [template.format(prompt_ready(name)) for name in classnames for template in templates]
            features = F.normalize(encode_texts(clip_model, texts), dim=-1)
            groups.append(list(features.view(len(classnames), len(templates), -1)))
        if source == "classnames":
            features = F.normalize(encode_texts(clip_model, [prompt_ready(name) for name in classnames]), dim=-1)
            groups.append(list(features[:, None, :]))
        return class_samples(groups)

    def build_model(self):
        cfg, node = self.cfg, self.node
        clip_model = self.load_clip().float().eval().requires_grad_(False)
        features, labels = self.text_samples(clip_model)
        visual = clip_model.visual
        del clip_model  # the text tower is not needed after the text samples are embedded
        self.model = LaFTerNet(visual, len(self.classnames), node, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)
        self.model.to(self.device)

        generator = torch.Generator(device=features.device)
        generator.manual_seed(cfg.SEED if cfg.SEED >= 0 else torch.initial_seed())
        self.model.requires_grad_(False)
        self.model.classifier.weight.requires_grad_(True)
        self.text_stage = train_text_classifier(
            self.model.classifier.weight, features, labels, node.TEXT_STEPS, node.TEXT_LR, node.TEXT_WEIGHT_DECAY,
            node.TEXT_NOISE_STD, node.LABEL_SMOOTHING, generator, (cfg.OPTIM.ADAM_BETA1, cfg.OPTIM.ADAM_BETA2),
        )
        self.model.freeze_teacher()
        self.num_text_samples = int(features.shape[0])
        print(f"LaFTer stage 1: text classifier on {self.num_text_samples} text samples ({node.TEXT_SAMPLES}), "
              f"{node.TEXT_STEPS} steps, loss {self.text_stage.first_loss:.4f} -> {self.text_stage.final_loss:.4f}, "
              f"noise-free text accuracy {self.text_stage.train_accuracy:.2f}%")

        params = trainable_parameters(self.model)
        self.trainable_names = sorted(params)
        print(f"LaFTer trainable parameters: {sum(p.numel() for p in params.values()):,} in {len(params)} tensors "
              f"({self.model.prompt.num_tokens} prompt tokens, teacher encoder {node.TEACHER_ENCODER})")
        groups = weight_decay_groups(params, cfg.OPTIM.WEIGHT_DECAY)
        self.optim = build_optimizer(None, cfg.OPTIM, param_groups=groups)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.optim, lambda _: 1.0)  # constant LR (official)
        self.register_model("lafter", self.model, self.optim, self.sched)
        self._reset_epoch_state()

    def autocast(self):
        return autocast_context(self.device, self.node.PREC)

    # -------------------------------------------------------------------------------------------- one step
    def parse_batch_train(self, batch):
        """-> weak, strong (B, 3, S, S) uint8 on the device, and the ground-truth labels, which are used ONLY for
        logging pseudo-label accuracy."""
        to_device = lambda x: x.to(self.device, non_blocking=True)  # noqa: E731
        return to_device(batch["img"]), to_device(batch["img2"]), to_device(batch["label"])

    def forward_backward(self, batch):
        weak, strong, true_labels = self.parse_batch_train(batch)
        with self.autocast():
            out = training_step_loss(self.model, weak, strong, self.node.LABEL_SMOOTHING)
        self.model_backward_and_update(out.loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        self._accumulate_pl_statistics(out.pseudo_labels, out.confidences, true_labels)
        agreement = (out.logits.argmax(dim=1) == out.pseudo_labels).float().mean() * 100.0
        return {"loss": out.loss.detach(), "acc_pl": agreement.detach()}

    # ------------------------------------------------------------------------------------------ epoch metrics
    def _reset_epoch_state(self):
        self._pl_sums = torch.zeros(2, device=self.device)  # correct pseudo-labels, summed confidences
        self._pl_count = 0

    def _accumulate_pl_statistics(self, pseudo_labels, confidences, true_labels):
        """Device-side sums for the epoch log; the ground truth enters nothing but ``pl_accuracy``."""
        self._pl_sums += torch.stack([(pseudo_labels == true_labels).sum().float(), confidences.float().sum()])
        self._pl_count += pseudo_labels.shape[0]

    def before_epoch(self):
        super().before_epoch()
        self._reset_epoch_state()

    def after_epoch(self):
        if self._pl_count:
            pl_correct, pl_confidence = (self._pl_sums / self._pl_count).tolist()
            metrics = {"pl_accuracy": 100.0 * pl_correct, "pl_confidence": pl_confidence}
            self.log_epoch_metrics(metrics)
            print("LaFTer epoch metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        super().after_epoch()  # test accuracy ("accuracy") when EPOCH_TEST, checkpoint

    # ----------------------------------------------------------------------------------------------- testing
    def model_inference(self, images):
        with self.autocast():
            return self.model(images).float()

    def run_summary(self) -> Dict:
        """Extra results.json entry: the stage 1 statistics and the size of the trainable set."""
        return {
            "text_samples": self.num_text_samples,
            "text_steps": int(self.node.TEXT_STEPS),
            "text_first_loss": self.text_stage.first_loss,
            "text_final_loss": self.text_stage.final_loss,
            "text_train_accuracy": self.text_stage.train_accuracy,
            "trainable_parameters": int(sum(p.numel() for p in self.model.parameters() if p.requires_grad)),
            "trainable_tensors": len(self.trainable_names),
        }
