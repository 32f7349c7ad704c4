"""microCLIP: unsupervised fine-grained adaptation of CLIP (arXiv 2510.02270), the Dassl trainer ``MicroCLIP``.

Per training step (Algorithm 1), on a batch of unlabeled images (uint8 from the loader, normalised on the device):

* no gradient: the weak view gives the [CLS] feature g_w and (NCut -> SOAP) the [FG] feature l_w; the N crops go
  through the encoder in one batched pass; pseudo-labels ``argmax gamma * s(f_agg, W_LLM) + (1-gamma) * TF(x, W*)``
  on raw cosines (Eqs. 9-13);
* with gradient: the strong view's TokenFusion logits ``0.5 * 100 cos(CLS, W*) + 0.5 * 100 cos(FG, W*)`` (Eq. 8)
  trained with CE on the pseudo-labels plus the fairness term (Eq. 14, L_reg).

Trainable: the vision LayerNorm affines, W*_LLM and the SOAP projections (nothing else; the text tower is dropped
after the classifiers are built). Test: fused logits of the test view. Defaults follow the official code's numerics
(see DEVIATIONS.md (microCLIP section)); every paper variant and every ablation row is a switch of TRAINER.MICROCLIP.
"""

from __future__ import annotations

import copy
from typing import Dict, NamedTuple, Optional

import torch
from torch import nn
from torchvision.transforms.functional import pil_to_tensor

from clipkit.blocks.decoded_views import VIEW_PLACES, DecodedViews, views_on_device, with_collate
from clipkit.blocks.fusion import PL_FUSION_MODES, cosine_scores, token_fusion_scores
from clipkit.blocks.losses import microclip_loss
from clipkit.blocks.multicrop import aggregate_views, sample_square_crops
from clipkit.blocks.ncut import (
    NCUT_VARIANTS,
    SIGN_RULES,
    mask_size_statistics,
    ncut_mask,
    summarize_mask_statistics,
)
from clipkit.blocks.patch_tap import encode_image_normalized, encode_image_tapped, vision_width
from clipkit.blocks.pseudo_labels import dynamic_knowledge_aggregation
from clipkit.blocks.schedule import PRECISIONS, autocast_context, optimizer_update, per_iteration_cosine_scheduler
from clipkit.blocks.soap import FG_TOKEN_MODES, QUERY_MODES, SINK_MODES, SaliencyAttentionPool, project_fg_token
from clipkit.blocks.text_classifier import (
    classifier_from_templates,
    description_embeddings,
    mean_classifier,
    weighted_classifier,
)
from clipkit.blocks.trainable import TrainedStateMixin, enable_layernorm_affines, trainable_named_parameters
from clipkit.blocks.views import CROP_MODES, PixelNormalizer, strong_transform, view_transform
from clipkit.config import CN, cfg_extension
from clipkit.dassl import INTERPOLATION_MODES, TRAINER_REGISTRY, build_optimizer
from clipkit.trainer_base import CLIPTrainer

PRIOR_VIEWS = ("multi", "single")
PRIOR_CLASSIFIERS = ("fixed", "learnable")
PRIOR_ENCODERS = ("tuned", "frozen")
W_LLM_INITS = ("similarity_weighted", "mean", "handcrafted")
W_STAR_INITS = ("descriptions", "handcrafted")
HANDCRAFTED_NORMS = ("frobenius", "per_prompt")


@cfg_extension
def _add_microclip_cfg(cfg):
    node = CN()
    # gamma of Eq. 13: weight of the multi-view prior s(f_agg, W_LLM) against TokenFusion(x, W*) in the pseudo-labels
    # (1 = prior only, 0 = TokenFusion only; Table 4, Fig. 5).
    node.GAMMA = 0.5
    # N of Eq. 9: random square crops per image for the multi-view prior (Fig. 6).
    node.N_CROPS = 8
    # (a, b) of Eq. 9: crop side ~ U(a, b) * short side of the original image (WCA's alpha, beta).
    node.CROP_SIDE_RANGE = (0.5, 0.9)
    # Temperature of the crop weights softmax_i(t * cos(f(x), f(x_i))) (Eq. 10; official: 1, no scaling).
    node.CROP_TEMPERATURE = 1.0
    # Fixed scale of the cosine logits in the loss and at test (official 100; not CLIP's learned logit_scale).
    node.LOGIT_SCALE = 100.0
    # Weight of the [CLS] logits in TokenFusion for the loss and the test logits (Eq. 8: 0.5; Table 7: 1.0 = global
    # logits only, 0.0 = local logits only; official --fusion_ratio).
    node.FUSION_CLS_WEIGHT = 0.5
    # Weight of the self-training cross-entropy L_st (Eq. 14; official ce_weight).
    node.CE_WEIGHT = 1.0
    # Weight of the fairness regulariser L_reg (Sec. 3.4; official fairness_weight).
    node.FAIRNESS_WEIGHT = 1.0
    # L_reg's class marginal: p_bar = m * sg(p_bar_prev) + (1 - m) * batch mean, restarted each epoch (official 0.5;
    # 0.0 = the paper's plain batch mean).
    node.FAIRNESS_MOMENTUM = 0.5
    # L_reg multiplier (official divides by 0.5 -> 2.0; the paper's form is 1.0).
    node.FAIRNESS_SCALE = 2.0
    # Floor of the per-iteration cosine LR schedule (official: 2 x --min_lr 1e-6 = 2e-6; no warmup). With OPTIM.LR
    # below it the LR rises to it, as the official code does.
    node.MIN_LR = 2e-6
    # Autocast precision on the device: "fp32" (official default, no autocast), "bf16", "fp16" (with a GradScaler).
    node.PREC = "fp32"
    # Crop of the weak (pseudo-labelling) view after the short-side resize: "random" (official RandomCrop) or
    # "center" (paper, Supp. A.2).
    node.WEAK_CROP = "random"
    # Crop of test images after the short-side resize: "center" (CLIP protocol, our default) or "random" (official,
    # which reuses the weak transform and makes evaluation stochastic).
    node.TEST_CROP = "center"
    # Strong view (official timm create_transform): RandomResizedCrop area range, then h-flip, then RandAugment.
    node.STRONG_RRC_SCALE = (0.3, 1.0)
    # Probability of the horizontal flip of the strong view (timm default 0.5).
    node.STRONG_HFLIP = 0.5
    # timm RandAugment policy string of the strong view (official "rand-m9-mstd0.5-inc1").
    node.STRONG_RANDAUGMENT = "rand-m9-mstd0.5-inc1"
    # After every epoch, log test accuracy of the fused / [CLS] / [FG] logits and NCut mask sizes (one test pass;
    # the official code evaluates every epoch too). Reported accuracy stays the last epoch's.
    node.EPOCH_TEST_METRICS = True

    node.PL = CN()
    # Views of the prior term: "multi" (softmax-weighted crops, Eqs. 9-12) or "single" (the weak view's [CLS];
    # Tables 2 and 4 "single-view alignment PL").
    node.PL.PRIOR_VIEWS = "multi"
    # Classifier of the prior term: "fixed" (frozen W_LLM) or "learnable" (shared W*; Tables 2 and 4 "shared").
    node.PL.PRIOR_CLASSIFIER = "fixed"
    # Encoder of the prior term (crops and their weighting anchor): "tuned" (official: the encoder being trained,
    # whose LayerNorms change) or "frozen" (a frozen copy of the pretrained tower: the paper's static CLIP prior).
    node.PL.PRIOR_ENCODER = "tuned"
    # Fast-prior mode (needs PRIOR_ENCODER "frozen"; not the official default): the frozen encoder's features of a
    # fixed pool of PRIOR_CACHE_POOL random square crops per train image (crop seed PRIOR_CACHE_SEED, sides as
    # CROP_SIDE_RANGE) and of each image's test view (the crop-weighting anchor) are computed once and kept in the
    # feature cache; every step draws N_CROPS of the pool per image, so a step encodes only the weak and strong views.
    node.PL.PRIOR_CACHE = False
    node.PL.PRIOR_CACHE_POOL = 32
    node.PL.PRIOR_CACHE_SEED = 0
    # TokenFusion inside the pseudo-labeler: "feature" (official: normalize(w g + (1-w) l) . W*) or "logit" (paper
    # Eqs. 8/13: w s(g, W*) + (1-w) s(l, W*)).
    node.PL.FUSION = "feature"
    # [CLS] weight w of that fusion (hard-coded 0.5 officially, independent of FUSION_CLS_WEIGHT).
    node.PL.FUSION_CLS_WEIGHT = 0.5

    node.NCUT = CN()
    # "official" (raw dot-product affinity, L_sym eigenvector, std threshold) or "tokencut" (cosine affinity,
    # generalized eigenvector, mean threshold; paper Supp. D).
    node.NCUT.VARIANT = "official"
    # "official" (invert the mask when the max-|z| token is outside it; sign-dependent with the std threshold) or
    # "canonical" (fix the eigenvector sign first).
    node.NCUT.SIGN_RULE = "official"
    # Affinity threshold: A_ij = 1 if s_ij > TAU else EPS (official 0.2, as TokenCut).
    node.NCUT.TAU = 0.2
    # Affinity value below TAU, and the regulariser of 1 / (sqrt(d) + EPS) (official 1e-6).
    node.NCUT.EPS = 1e-6

    node.SOAP = CN()
    # Query of the attention pooling: "ncut_mean" (q_sal, Eq. 4), "token_mean" or "random_token" (Table 3).
    node.SOAP.QUERY = "ncut_mean"
    # [FG] token: "soap" (Eq. 5), "ncut_mean" or "token_mean" (Table 3 rows without attention pooling).
    node.SOAP.FG_TOKEN = "soap"
    # Empty token appended to keys/values: "zero" (official fixed zero vector), "learnable" (official
    # --use_unr_token), "none".
    node.SOAP.SINK = "zero"

    node.CLASSIFIER = CN()
    # Frozen W_LLM: "similarity_weighted" (official: normalize(sum_j cos(e_cj, t_c) e_cj), t_c the template ensemble),
    # "mean" (paper Alg. 1: plain mean of the description embeddings), "handcrafted" (t_c; Table 5 "both").
    node.CLASSIFIER.W_LLM = "similarity_weighted"
    # Initial W*: "descriptions" (plain mean of description embeddings) or "handcrafted" (t_c; Table 5).
    node.CLASSIFIER.W_STAR = "descriptions"
    # Template ensemble t_c: "frobenius" (official: raw prompt embeddings averaged) or "per_prompt" (CLIP's).
    node.CLASSIFIER.HANDCRAFTED_NORM = "frobenius"
    cfg.TRAINER.MICROCLIP = node


# --------------------------------------------------------------------------------------------------- transforms
class MultiCropTransform:
    """PIL -> (N, 3, S, S) uint8 square crops of the original image (Eq. 9), resized bicubically to S."""

    def __init__(self, num_crops: int, side_range, out_size: int):
        self.num_crops, self.side_range, self.out_size = num_crops, tuple(side_range), out_size

    def __call__(self, image):
        return sample_square_crops(pil_to_tensor(image), self.num_crops, self.side_range, self.out_size)

    def __repr__(self):
        return f"MultiCropTransform(num_crops={self.num_crops}, side_range={self.side_range}, out_size={self.out_size})"


# --------------------------------------------------------------------------------------------------------- model
class TokenFeatures(NamedTuple):
    """Unit-norm (B, D) [CLS] and [FG] features of one view; ``fg`` / ``mask`` (B, n) are None when not computed."""

    cls: torch.Tensor
    fg: Optional[torch.Tensor]
    mask: Optional[torch.Tensor]


class MicroCLIPNet(TrainedStateMixin, nn.Module):
    """CLIP's vision tower + SOAP + the two-headed classifier (frozen W_LLM buffer, learnable W* parameter)."""

    def __init__(self, visual: nn.Module, w_llm: torch.Tensor, w_star: torch.Tensor, node, pixel_mean, pixel_std):
        super().__init__()
        self.visual = visual
        # frozen copy of the pretrained tower for the prior term (PL.PRIOR_ENCODER "frozen"), else None
        self.prior_visual = copy.deepcopy(visual).requires_grad_(False) if node.PL.PRIOR_ENCODER == "frozen" else None
        self.soap = SaliencyAttentionPool(vision_width(visual), node.SOAP.QUERY, node.SOAP.FG_TOKEN, node.SOAP.SINK)
        self.w_star = nn.Parameter(w_star.detach().clone())  # (C, D) W*_LLM; rows normalised where used
        self.register_buffer("w_llm", w_llm.detach().clone())  # (C, D) frozen W_LLM, unit rows
        self.normalizer = PixelNormalizer(pixel_mean, pixel_std)  # uint8 -> CLIP-normalised, on the device
        self.ncut_options = dict(variant=node.NCUT.VARIANT, tau=node.NCUT.TAU, eps=node.NCUT.EPS,
                                 sign_rule=node.NCUT.SIGN_RULE)
        self.logit_scale = node.LOGIT_SCALE
        self.fusion_cls_weight = node.FUSION_CLS_WEIGHT

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 (or float in [0, 255]) -> CLIP-normalised float."""
        return self.normalizer(images)

    def encode(self, images: torch.Tensor, with_fg: bool = True) -> TokenFeatures:
        """(B, 3, H, W) uint8 -> [CLS] feature and, if asked, the NCut mask and [FG] feature (Eqs. 1-6)."""
        tap = encode_image_tapped(self.visual, self.preprocess(images), return_patch_tokens=with_fg)
        if not with_fg:
            return TokenFeatures(tap.cls_feature, None, None)
        mask = ncut_mask(tap.patch_tokens, **self.ncut_options) if self.soap.uses_mask else None
        pooled, _ = self.soap(tap.patch_tokens, mask)
        return TokenFeatures(tap.cls_feature, project_fg_token(pooled, self.visual.proj), mask)

    @property
    def prior_encoder(self) -> nn.Module:
        """The tower of the prior term: the frozen pretrained copy if configured, else the tower being tuned."""
        return self.visual if self.prior_visual is None else self.prior_visual

    def encode_cls(self, images: torch.Tensor, encoder: Optional[nn.Module] = None) -> torch.Tensor:
        """(..., 3, S, S) uint8 -> (..., D) unit [CLS] features, one batched pass of ``encoder`` (default: tuned)."""
        encoder = self.visual if encoder is None else encoder
        features = encode_image_normalized(encoder, self.preprocess(images.flatten(0, -4)))
        return features.view(*images.shape[:-3], -1)

    def scores(self, features: torch.Tensor, classifier: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return cosine_scores(features, classifier, scale)

    def token_fusion_logits(self, features: TokenFeatures) -> torch.Tensor:
        """Eq. 8 with the fixed scale: (B, C) ``w * s(CLS, W*) + (1 - w) * s(FG, W*)``, scaled by LOGIT_SCALE."""
        return token_fusion_scores(features.cls, features.fg, self.w_star, self.fusion_cls_weight, self.logit_scale)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Test logits (B, C) of uint8 images: TokenFusion of the [CLS] and [FG] logits."""
        return self.token_fusion_logits(self.encode(images, with_fg=self.fusion_cls_weight < 1.0))

    # Checkpoints hold only what training changes (LayerNorm affines, W*, SOAP: ~2M values instead of the ~88M of a
    # ViT-B tower, 8 MB instead of 350 MB per checkpoint); the frozen weights are rebuilt from the CLIP checkpoint
    # (TrainedStateMixin).


def trainable_parameters(model: MicroCLIPNet, train_soap: bool) -> Dict[str, nn.Parameter]:
    """Freeze everything but the vision LayerNorm affines, W* and (if ``train_soap``) SOAP. Returns them by name."""
    model.requires_grad_(False)
    enable_layernorm_affines(model.visual)
    model.w_star.requires_grad_(True)
    if train_soap:
        model.soap.requires_grad_(True)
    return trainable_named_parameters(model)


class ComputePlan(NamedTuple):
    """Which branches a configuration needs; unneeded encoder outputs, crops and NCut calls are skipped."""

    fg_in_loss: bool  # [FG] enters the loss and the test logits (FUSION_CLS_WEIGHT < 1)
    token_fusion_in_pl: bool  # TokenFusion term of Eq. 13 (GAMMA < 1)
    fg_in_pl: bool  # [FG] of the weak view is needed by that term
    uses_crops: bool  # multi-view prior (GAMMA > 0 and PL.PRIOR_VIEWS == "multi")
    crops_from_cache: bool  # its crop and anchor features come from the fast-prior pool (PL.PRIOR_CACHE)

    @classmethod
    def from_cfg(cls, node) -> "ComputePlan":
        token_fusion_in_pl = node.GAMMA < 1.0
        uses_crops = node.GAMMA > 0.0 and node.PL.PRIOR_VIEWS == "multi"
        return cls(
            fg_in_loss=node.FUSION_CLS_WEIGHT < 1.0,
            token_fusion_in_pl=token_fusion_in_pl,
            fg_in_pl=token_fusion_in_pl and node.PL.FUSION_CLS_WEIGHT < 1.0,
            uses_crops=uses_crops,
            crops_from_cache=uses_crops and bool(node.PL.PRIOR_CACHE),
        )

    @property
    def crops_from_loader(self) -> bool:
        return self.uses_crops and not self.crops_from_cache


class CachedPrior(NamedTuple):
    """Frozen-encoder features from the fast-prior pool (PL.PRIOR_CACHE), on the device."""

    anchor: torch.Tensor  # (B, D) unit features of each image's test view (the crop-weighting anchor)
    crops: torch.Tensor  # (B, N, D) unit features of N crops drawn from the image's pool


class StepOutput(NamedTuple):
    loss: torch.Tensor  # total loss (scalar, with graph)
    loss_st: torch.Tensor  # L_st, Eq. 14
    loss_reg: torch.Tensor  # L_reg (fairness)
    marginal: torch.Tensor  # (C,) detached class marginal for the next step's running mean
    pseudo_labels: torch.Tensor  # (B,)
    confidences: torch.Tensor  # (B,) max aggregated raw score
    weak_mask: Optional[torch.Tensor]  # (B, n) NCut mask of the weak view, if computed


@torch.no_grad()
def pseudo_label(model: MicroCLIPNet, node, plan: ComputePlan, weak: torch.Tensor, crops: Optional[torch.Tensor],
                 cached_prior: Optional[CachedPrior] = None):
    """Eq. 13 on the weak view (no gradient): (labels (B,), confidences (B,), weak-view TokenFeatures).

    Prior term: ``s(f_agg, W)`` with f_agg the softmax-weighted crops (Eqs. 9-12) or the weak [CLS] (single view);
    TokenFusion term: ``TF(weak, W*)`` on raw cosines (feature fusion officially). With ``cached_prior`` (fast-prior
    mode) the crop and anchor features come from the frozen encoder's cached pool instead of an encoder pass.
    """
    weak_features = model.encode(weak, with_fg=plan.fg_in_pl)
    prior = token_fusion = None
    if node.GAMMA > 0.0:
        classifier = model.w_llm if node.PL.PRIOR_CLASSIFIER == "fixed" else model.w_star
        frozen = model.prior_visual is not None
        if cached_prior is not None:
            anchor = cached_prior.anchor
        else:
            anchor = model.encode_cls(weak, model.prior_visual) if frozen else weak_features.cls
        if plan.uses_crops:
            if cached_prior is not None:
                crop_features = cached_prior.crops
            elif crops is None:
                raise ValueError("the multi-view prior needs the crops (batch key img3)")
            else:
                crop_features = model.encode_cls(crops, model.prior_encoder)
            view_features, _ = aggregate_views(crop_features, anchor, node.CROP_TEMPERATURE)
        else:
            view_features = anchor
        prior = model.scores(view_features, classifier)  # Eq. 12, raw cosines
    if plan.token_fusion_in_pl:
        token_fusion = token_fusion_scores(
            weak_features.cls, weak_features.fg, model.w_star, node.PL.FUSION_CLS_WEIGHT, 1.0, node.PL.FUSION
        )
    labels, confidences = dynamic_knowledge_aggregation(prior, token_fusion, node.GAMMA)
    return labels, confidences, weak_features


def training_step_loss(model: MicroCLIPNet, node, plan: ComputePlan, weak, strong, crops,
                       previous_marginal: Optional[torch.Tensor],
                       cached_prior: Optional[CachedPrior] = None) -> StepOutput:
    """One self-training step up to the loss (Alg. 1 lines 33-41): pseudo-labels on the weak view / crops, then
    CE + fairness on the strong view's TokenFusion logits. Images are uint8 on the model's device."""
    labels, confidences, weak_features = pseudo_label(model, node, plan, weak, crops, cached_prior)
    logits = model.token_fusion_logits(model.encode(strong, with_fg=plan.fg_in_loss)).float()
    loss, loss_st, loss_reg, marginal = microclip_loss(
        logits, labels, previous_marginal, node.FAIRNESS_MOMENTUM, node.FAIRNESS_SCALE, node.CE_WEIGHT,
        node.FAIRNESS_WEIGHT,
    )
    return StepOutput(loss, loss_st, loss_reg, marginal, labels, confidences, weak_features.mask)


# ------------------------------------------------------------------------------------------------------- trainer
@TRAINER_REGISTRY.register()
class MicroCLIP(CLIPTrainer):
    """microCLIP self-training (Algorithm 1) with TokenFusion, SOAP and Dynamic Knowledge Aggregation."""
    # per-epoch accumulators carried by intra-epoch checkpoints (TRAIN.CHECKPOINT_EVERY_STEPS)
    epoch_state_attrs = ("_marginal", "_pl_sums", "_pl_count", "_mask_sums", "_mask_count")

    supported_views = VIEW_PLACES  # DATALOADER.VIEWS: pil (official), tensor, device

    def check_cfg(self, cfg):
        node = cfg.TRAINER.MICROCLIP
        choices = [
            ("PREC", node.PREC, tuple(PRECISIONS)), ("WEAK_CROP", node.WEAK_CROP, CROP_MODES),
            ("TEST_CROP", node.TEST_CROP, CROP_MODES), ("PL.PRIOR_VIEWS", node.PL.PRIOR_VIEWS, PRIOR_VIEWS),
            ("PL.PRIOR_CLASSIFIER", node.PL.PRIOR_CLASSIFIER, PRIOR_CLASSIFIERS),
            ("PL.PRIOR_ENCODER", node.PL.PRIOR_ENCODER, PRIOR_ENCODERS),
            ("PL.FUSION", node.PL.FUSION, PL_FUSION_MODES), ("NCUT.VARIANT", node.NCUT.VARIANT, NCUT_VARIANTS),
            ("NCUT.SIGN_RULE", node.NCUT.SIGN_RULE, SIGN_RULES), ("SOAP.QUERY", node.SOAP.QUERY, QUERY_MODES),
            ("SOAP.FG_TOKEN", node.SOAP.FG_TOKEN, FG_TOKEN_MODES), ("SOAP.SINK", node.SOAP.SINK, SINK_MODES),
            ("CLASSIFIER.W_LLM", node.CLASSIFIER.W_LLM, W_LLM_INITS),
            ("CLASSIFIER.W_STAR", node.CLASSIFIER.W_STAR, W_STAR_INITS),
            ("CLASSIFIER.HANDCRAFTED_NORM", node.CLASSIFIER.HANDCRAFTED_NORM, HANDCRAFTED_NORMS),
        ]
        for key, value, allowed in choices:
            if value not in allowed:
                raise ValueError(f"TRAINER.MICROCLIP.{key} must be one of {allowed}, got {value!r}")
        for key in ("GAMMA", "FUSION_CLS_WEIGHT", "FAIRNESS_MOMENTUM"):
            if not 0.0 <= node[key] <= 1.0:
                raise ValueError(f"TRAINER.MICROCLIP.{key} must lie in [0, 1], got {node[key]}")
        if not 0.0 <= node.PL.FUSION_CLS_WEIGHT <= 1.0:
            raise ValueError(
                f"TRAINER.MICROCLIP.PL.FUSION_CLS_WEIGHT must lie in [0, 1], got {node.PL.FUSION_CLS_WEIGHT}"
            )
        if node.N_CROPS < 1:
            raise ValueError(f"TRAINER.MICROCLIP.N_CROPS must be >= 1, got {node.N_CROPS}")
        if node.PL.PRIOR_CACHE:
            if node.PL.PRIOR_ENCODER != "frozen":
                raise ValueError("TRAINER.MICROCLIP.PL.PRIOR_CACHE needs the frozen prior encoder: set "
                                 "TRAINER.MICROCLIP.PL.PRIOR_ENCODER frozen (the tuned encoder's crop features change "
                                 "every step and cannot be cached)")
            if node.PL.PRIOR_CACHE_POOL < node.N_CROPS:
                raise ValueError(f"TRAINER.MICROCLIP.PL.PRIOR_CACHE_POOL ({node.PL.PRIOR_CACHE_POOL}) must be >= "
                                 f"N_CROPS ({node.N_CROPS}): each step draws N_CROPS distinct crops of the pool")
        low, high = node.CROP_SIDE_RANGE
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"TRAINER.MICROCLIP.CROP_SIDE_RANGE must satisfy 0 < a <= b <= 1, got {(low, high)}")
        if cfg.OPTIM.NAME != "adamw":
            print(f"Note: microCLIP uses AdamW officially; OPTIM.NAME={cfg.OPTIM.NAME!r}")

    @property
    def node(self):
        return self.cfg.TRAINER.MICROCLIP

    @property
    def plan(self) -> ComputePlan:
        return ComputePlan.from_cfg(self.node)

    # ------------------------------------------------------------------------------------------------- data
    def build_data_loader(self):
        """Weak / strong / crops as uint8 tensors from the workers (list of train transforms); test view uint8.

        DATALOADER.VIEWS "tensor" / "device": one ``DecodedViews`` transform decodes each image once and cuts the weak
        view and the crops from the uint8 tensor (on the workers, or on the device in ``parse_batch_train``)."""
        cfg, node = self.cfg, self.cfg.TRAINER.MICROCLIP
        size = tuple(cfg.INPUT.SIZE)
        strong = strong_transform(size, node.STRONG_RRC_SCALE, node.STRONG_HFLIP, node.STRONG_RANDAUGMENT)
        test_tfm = view_transform(size, cfg.INPUT.INTERPOLATION, node.TEST_CROP)
        if self.views_place != "pil":
            train_tfm = DecodedViews(size, INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION], node.WEAK_CROP, strong,
                                     node.N_CROPS if self.plan.crops_from_loader else 0, node.CROP_SIDE_RANGE,
                                     max(size), self.views_place)
            self.build_data_loader_with(custom_tfm_train=train_tfm, custom_tfm_test=test_tfm)
            self.train_loader_x = with_collate(self.train_loader_x)
            return
        train_tfms = [view_transform(size, cfg.INPUT.INTERPOLATION, node.WEAK_CROP), strong]
        if self.plan.crops_from_loader:
            train_tfms.append(MultiCropTransform(node.N_CROPS, node.CROP_SIDE_RANGE, max(size)))
        self.build_data_loader_with(custom_tfm_train=train_tfms, custom_tfm_test=test_tfm)

    @property
    def views_place(self) -> str:
        return self.cfg.DATALOADER.VIEWS

    # ------------------------------------------------------------------------------------------------ model
    def build_classifiers(self, clip_model):
        """(W_LLM, W*_init), both (C, D) unit rows, from the text tower (Supp. A.1, official variants)."""
        node = self.node.CLASSIFIER
        needs_handcrafted = "handcrafted" in (node.W_LLM, node.W_STAR) or node.W_LLM == "similarity_weighted"
        needs_descriptions = node.W_LLM != "handcrafted" or node.W_STAR != "handcrafted"
        handcrafted = descriptions = None
        if needs_handcrafted:
            handcrafted = classifier_from_templates(
                clip_model, self.classnames, self.templates(), per_prompt_norm=node.HANDCRAFTED_NORM == "per_prompt"
            )
        if needs_descriptions:
            descriptions = description_embeddings(clip_model, self.classnames, self.descriptions())
        if node.W_LLM == "similarity_weighted":
            w_llm = weighted_classifier(descriptions, handcrafted, weighting="similarity")
        elif node.W_LLM == "mean":
            w_llm = mean_classifier(descriptions)
        else:
            w_llm = handcrafted
        w_star = handcrafted if node.W_STAR == "handcrafted" else mean_classifier(descriptions)
        return w_llm, w_star

    def build_model(self):
        cfg, node = self.cfg, self.node
        clip_model = self.load_clip()
        w_llm, w_star = self.build_classifiers(clip_model)
        if self.plan.crops_from_cache:
            self.build_prior_pool(clip_model)
        visual = clip_model.visual
        del clip_model  # the text tower is not needed after this point (Sec. 3.2)
        self.model = MicroCLIPNet(visual, w_llm, w_star, node, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)
        self.model.to(self.device)
        train_soap = self.plan.fg_in_loss and (self.model.soap.uses_attention or node.SOAP.SINK == "learnable")
        params = trainable_parameters(self.model, train_soap)
        self.trainable_names = sorted(params)
        print(f"microCLIP trainable parameters: {sum(p.numel() for p in params.values()):,} in {len(params)} tensors")
        self.optim = build_optimizer(list(params.values()), cfg.OPTIM)
        total_steps = max(1, cfg.OPTIM.MAX_EPOCH * len(self.train_loader_x))
        base_lr, min_lr = cfg.OPTIM.LR, node.MIN_LR
        self.sched = per_iteration_cosine_scheduler(self.optim, total_steps, base_lr, min_lr)
        self.register_model("microclip", self.model, self.optim, self.sched)
        self.scaler = torch.amp.GradScaler(self.device.type) if node.PREC == "fp16" else None
        self._reset_epoch_state()

    def autocast(self):
        return autocast_context(self.device, self.node.PREC)

    @torch.no_grad()
    def build_prior_pool(self, clip_model) -> None:
        """Fast-prior mode: the pretrained (frozen) encoder's unit features of PRIOR_CACHE_POOL random square crops per
        train image and of each image's test view, from the feature cache; kept on the CPU, gathered per batch."""
        from baselines._training_free import cached_crop_features, cached_split_features
        from clipkit.dassl import build_data_loader, build_transform

        cfg, node = self.cfg, self.node
        train = list(self.dm.dataset.train_x)
        self.prior_pool_crops = cached_crop_features(
            cfg, clip_model, self.dataset_key, "train", train, node.PL.PRIOR_CACHE_POOL, node.CROP_SIDE_RANGE,
            node.PL.PRIOR_CACHE_SEED, self.device).cpu()  # (N, K, D)
        test_view_cfg = cfg.clone()
        test_view_cfg.defrost()
        test_view_cfg.INPUT.TRANSFORMS = ["normalize"]  # CLIP's test preprocessing for the cached anchor
        loader = build_data_loader(cfg, sampler_type="SequentialSampler", data_source=train,
                                   batch_size=cfg.DATALOADER.TEST.BATCH_SIZE,
                                   tfm=build_transform(test_view_cfg, is_train=False), is_train=False)
        self.prior_pool_anchor = cached_split_features(cfg, clip_model, self.dataset_key, "train", train, loader,
                                                       self.device).cpu()  # (N, D)
        print(f"microCLIP fast-prior pool: {node.PL.PRIOR_CACHE_POOL} crops per image for {len(train)} train images "
              f"(crop seed {node.PL.PRIOR_CACHE_SEED}); {node.N_CROPS} drawn per image and step")

    def draw_cached_prior(self, indices: torch.Tensor) -> CachedPrior:
        """N_CROPS distinct pool crops per image (torch's global generator: seeded, checkpointed with the run)."""
        indices = indices.long().cpu()
        pool = self.prior_pool_crops[indices]  # (B, K, D)
        choice = torch.rand(pool.shape[0], pool.shape[1]).argsort(dim=1)[:, : self.node.N_CROPS]
        crops = pool.gather(1, choice.unsqueeze(-1).expand(-1, -1, pool.shape[-1]))
        return CachedPrior(self.prior_pool_anchor[indices].to(self.device), crops.to(self.device))

    # -------------------------------------------------------------------------------------------- one step
    def parse_batch_train(self, batch):
        """-> weak (B,3,S,S), strong (B,3,S,S), crops (B,N,3,S,S) or None (uint8 on the device), and the
        ground-truth labels, which are used ONLY for logging pseudo-label accuracy."""
        to_device = lambda x: x.to(self.device, non_blocking=True)  # noqa: E731
        if self.views_place == "device":  # DATALOADER.VIEWS device: weak view and crops resized here
            size = tuple(self.cfg.INPUT.SIZE)
            weak, crops = views_on_device(batch, size, INTERPOLATION_MODES[self.cfg.INPUT.INTERPOLATION], max(size),
                                          self.device)
            return weak, to_device(batch["img2"]), crops, to_device(batch["label"])
        crops = to_device(batch["img3"]) if self.plan.crops_from_loader else None
        return to_device(batch["img"]), to_device(batch["img2"]), crops, to_device(batch["label"])

    def forward_backward(self, batch):
        weak, strong, crops, true_labels = self.parse_batch_train(batch)
        cached_prior = self.draw_cached_prior(batch["index"]) if self.plan.crops_from_cache else None
        with self.autocast():
            out = training_step_loss(self.model, self.node, self.plan, weak, strong, crops, self._marginal,
                                     cached_prior)
        self._marginal = out.marginal
        self.optimizer_step(out.loss)
        self.update_lr()  # per-iteration cosine schedule
        self._accumulate_pl_statistics(out.pseudo_labels, out.confidences, true_labels, out.weak_mask)
        return {"loss": out.loss.detach(), "loss_st": out.loss_st.detach(), "loss_reg": out.loss_reg.detach()}

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """Plain backward + AdamW step (no anomaly detection, no create_graph); GradScaler under fp16."""
        optimizer_update(loss, self.optim, self.scaler)

    # ------------------------------------------------------------------------------------------ epoch metrics
    def _reset_epoch_state(self):
        self._marginal = None  # fairness running mean restarts every epoch (official)
        self._pl_sums = torch.zeros(2, device=self.device)  # correct pseudo-labels, summed confidences
        self._pl_count = 0
        self._mask_sums = torch.zeros(3, device=self.device)
        self._mask_count = 0

    def _accumulate_pl_statistics(self, pseudo_labels, confidences, true_labels, mask):
        """Device-side sums for the epoch log; the ground truth enters nothing but ``pl_accuracy``."""
        self._pl_sums += torch.stack([(pseudo_labels == true_labels).sum().float(), confidences.float().sum()])
        self._pl_count += pseudo_labels.shape[0]
        if mask is not None:
            self._mask_sums += mask_size_statistics(mask)
            self._mask_count += mask.shape[0]

    def before_epoch(self):
        super().before_epoch()
        self._reset_epoch_state()

    def after_epoch(self):
        metrics = {}
        if self._pl_count:
            pl_correct, pl_confidence = (self._pl_sums / self._pl_count).tolist()
            metrics.update(pl_accuracy=100.0 * pl_correct, pl_confidence=pl_confidence)
        if self._mask_count:
            mask_statistics = summarize_mask_statistics(self._mask_sums, self._mask_count)
            metrics.update({f"train_{k}": v for k, v in mask_statistics.items()})
        if self.node.EPOCH_TEST_METRICS:
            metrics.update(self.evaluate_branches())
        self.log_epoch_metrics(metrics)
        print("microCLIP epoch metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        super().after_epoch()

    @torch.no_grad()
    def evaluate_branches(self) -> Dict[str, float]:
        """Test accuracy (%) of the fused, [CLS]-only and [FG]-only logits, and the test NCut mask sizes."""
        self.set_model_mode("eval")
        model = self.model
        correct = torch.zeros(3, device=self.device)
        mask_sums, total = torch.zeros(3, device=self.device), 0
        for batch in self.test_loader:
            images, labels = self.parse_batch_test(batch)
            with self.autocast():
                features = model.encode(images, with_fg=True)
                cls_logits = model.scores(features.cls, model.w_star, model.logit_scale)
                fg_logits = model.scores(features.fg, model.w_star, model.logit_scale)
                fused = model.token_fusion_logits(features)
            predictions = torch.stack([fused.argmax(-1), cls_logits.argmax(-1), fg_logits.argmax(-1)])
            correct += (predictions == labels).sum(dim=1).float()
            if features.mask is not None:
                mask_sums += mask_size_statistics(features.mask)
            total += labels.shape[0]
        self.set_model_mode("train")
        fused_acc, cls_acc, fg_acc = (100.0 * correct / max(total, 1)).tolist()
        # "accuracy" is the fused (reported) accuracy: results.json's accuracy_best (test-set selection) reads it
        metrics = {"accuracy": fused_acc, "accuracy_fused": fused_acc, "accuracy_cls": cls_acc, "accuracy_fg": fg_acc}
        if self.model.soap.uses_mask:
            metrics.update({f"test_{k}": v for k, v in summarize_mask_statistics(mask_sums, total).items()})
        return metrics

    # ----------------------------------------------------------------------------------------------- testing
    def model_inference(self, images):
        with self.autocast():
            return self.model(images).float()

    def run_summary(self) -> Dict:
        """Extra results.json entry: size of the trainable set."""
        return {"trainable_parameters": int(sum(p.numel() for p in self.model.parameters() if p.requires_grad)),
                "trainable_tensors": len(self.trainable_names)}
