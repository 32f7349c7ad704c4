"""ReCLIP (Hu et al., WACV'24): projection space, label propagation and cross-modality self-training of two CLIPs.

Inductive by default, as microCLIP's Table 1 row ReCLIP† (train on the unlabeled train split, test on the test split);
the official code is transductive (TRAIN_SPLIT "test" reproduces it). Recipe: shared/research/baselines.md Sec. 8;
official code michiganleon/ReCLIP_WACV (``reclip.py``, ``models.py``).

Two models start from the same CLIP:
* ReCLIP-V: the visual LayerNorm affines are trained; its classifier is a fixed (C, D) tensor, first the template
  ensemble ``W_0`` of all the dataset's templates, then, every epoch, the per-class centroids of the label-propagated
  nodes (un-projected features, seeds included): ``v_logits = 100 * normalize(E_v^V(x)) . W_V^T``;
* ReCLIP-T: the text LayerNorm affines (every text block and ``ln_final``) are trained, its visual tower is frozen;
  it classifies with one template (``templates[0]``): ``t_logits = 100 * normalize(E_v(x)) . normalize(E_t(t_0(c)))^T``.

Projection space: ``P = U' U'^T`` with ``U' = U[:, 1:CUT_DIM]`` from the SVD of the (D, C) text matrix (the first,
class-agnostic singular direction removed). Every epoch, before training, over all train images (CLIP preprocess, no
augmentation, no gradient), label propagation (``clipkit.blocks.label_propagation``) on the kNN graph of the
projected nodes [C class seeds; N image features] gives a label per image:
* ``y_T = LP(P_T, seeds S_T, frozen visual features)``, ``S_T`` = T's full-template ensemble, re-encoded with the
  tuned text tower after every epoch, ``P_T`` from ``S_T``;
* ``y_V = LP(P_0, seeds W_0, V's current features)``; ``W_V`` <- class means of the nodes labelled c.
Training: only samples on which the two labels agree, ``m_i = [y_T,i == y_V,i]``:
``L_T = sum_i m_i CE(t_logits_i, y_T,i) / sum_i m_i`` and ``L_V = mean_i(m_i CE(v_logits_i, y_V,i)) / sum_i m_i``
(the official normalisation, an extra 1/B; ``V_LOSS_NORM "masked_mean"`` divides by sum m only); SGD (momentum 0.9,
lr 1e-3 for both, weight decay 1e-4), batch 64, ``min(100, N // 5000 + 2)`` epochs, a batch with no agreement is
skipped. Inference: ``argmax (t_logits + v_logits) / 2``.
"""

from __future__ import annotations

import copy
from typing import Dict, List, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from clipkit.blocks.label_propagation import label_propagation, projection_without_first_direction
from clipkit.blocks.prototypes import class_mean_prototypes
from clipkit.blocks.text_classifier import classifier_from_templates, prompt_ready
from clipkit.blocks.trainable import TrainedStateMixin, enable_layernorm_affines, trainable_named_parameters
from clipkit.config import CN, cfg_extension
from clipkit.dassl import TRAINER_REGISTRY, build_data_loader, build_transform
from clipkit.trainer_base import CLIPTrainer

TRAIN_SPLITS = ("train", "test")
V_LOSS_NORMS = ("official", "masked_mean")
CG_DTYPES = {"float64": torch.float64, "float32": torch.float32}


@cfg_extension
def _add_reclip_cfg(cfg):
    node = CN()
    # Images the two models adapt on: "train" = the unlabeled train split (inductive, microCLIP's ReCLIP†; default);
    # "test" = the test split itself (TRANSDUCTIVE, as the official code: trains on the images it is evaluated on).
    node.TRAIN_SPLIT = "train"
    # Fixed scale of the cosine logits of both heads (official 100; not CLIP's learned logit_scale).
    node.LOGIT_SCALE = 100.0
    # Index of the template ReCLIP-T trains and classifies with (official templates[0]); the full set builds the
    # label-propagation seeds, the projection and ReCLIP-V's initial classifier.
    node.TRAIN_TEMPLATE_INDEX = 0
    # Learning rate of ReCLIP-T's text LayerNorms; <= 0 = OPTIM.LR (official lrt = lrv = 1e-3).
    node.TEXT_LR = -1.0
    # Epochs: min(OPTIM.MAX_EPOCH, N // EPOCH_DIVISOR + EPOCH_OFFSET) with N the number of adaptation images
    # (official: min(100, N // 5000 + 2)); EPOCH_DIVISOR 0 = OPTIM.MAX_EPOCH as given.
    node.EPOCH_DIVISOR = 5000
    node.EPOCH_OFFSET = 2
    # ReCLIP-V's loss normalisation: "official" = mean_i(m_i CE_i) / sum_i m_i (reclip.py L232, an extra 1/batch);
    # "masked_mean" = sum_i m_i CE_i / sum_i m_i, as ReCLIP-T's loss.
    node.V_LOSS_NORM = "official"
    # After every epoch, test accuracy of V, T and the combined head (epoch/accuracy_v, _t, _combined; logging).
    node.EPOCH_TEST_METRICS = True
    # Also log the combined accuracy as epoch/accuracy, so results.json's accuracy_best is the best epoch (the
    # official code reports the best epoch); it is flagged best_is_test_selection, accuracy_last stays the result.
    node.REPORT_BEST_EPOCH = True
    node.LP = CN()
    node.LP.K = 20  # neighbours per node in the kNN graph (official neighbor_size 20)
    node.LP.ALPHA = 0.99  # diffusion weight alpha of (I - alpha Wn) f = e_c (official 0.99)
    node.LP.CUT_DIM = 768  # projection keeps singular directions 1 .. CUT_DIM - 1 (official 768; 250 if C > 500)
    node.LP.CG_MAXITER = 20  # conjugate-gradient iterations (official scipy cg maxiter 20)
    node.LP.CG_TOL = 1e-6  # CG relative residual tolerance (official tol 1e-6)
    node.LP.CG_DTYPE = "float64"  # CG precision ("float64": scipy's, as the official code; "float32": faster)
    node.LP.CHUNK_ROWS = 0  # rows per top-k block (0 = as many as fit in 256 MB); never an N x N matrix
    node.LP.DEVICE = ""  # where label propagation runs ("" = the trainer's device, e.g. "cpu")
    cfg.TRAINER.RECLIP = node


class ReCLIPNet(TrainedStateMixin, nn.Module):
    """ReCLIP-V's visual tower and classifier, ReCLIP-T's CLIP (frozen visual tower, tuned text LayerNorms)."""

    # evolving method state that checkpoints carry besides the trained LayerNorms
    extra_state_buffers = ("v_classifier", "t_seeds")

    def __init__(self, clip_model: nn.Module, initial_text: torch.Tensor, train_tokens: torch.Tensor,
                 logit_scale: float):
        super().__init__()
        self.v_visual = copy.deepcopy(clip_model.visual)  # ReCLIP-V's tower (its text tower is not needed)
        self.t_clip = clip_model  # ReCLIP-T: frozen visual tower, text tower with trainable LayerNorms
        self.register_buffer("v_seeds", initial_text.detach().clone())  # W_0: V's LP seeds and projection (fixed)
        self.register_buffer("v_classifier", initial_text.detach().clone())  # W_V: V's classifier (centroids)
        self.register_buffer("t_seeds", initial_text.detach().clone())  # S_T: T's LP seeds (full templates)
        self.register_buffer("train_tokens", train_tokens, persistent=False)  # (C, L) tokens of t_0(c)
        self.logit_scale = logit_scale

    def train(self, mode: bool = True):
        """The CLIP towers stay in eval mode, as in the official code (it never calls ``.train()``)."""
        super().train(mode)
        self.v_visual.eval()
        self.t_clip.eval()
        return self

    def v_features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.v_visual(images.to(self.v_seeds.dtype)).float(), dim=-1)

    @torch.no_grad()
    def t_image_features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.t_clip.visual(images.to(self.v_seeds.dtype)).float(), dim=-1)

    def t_text_classifier(self) -> torch.Tensor:
        """(C, D) unit single-template text embeddings of the tuned text tower (with gradient)."""
        return F.normalize(self.t_clip.encode_text(self.train_tokens).float(), dim=-1)

    def v_logits(self, v_features: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * v_features @ F.normalize(self.v_classifier, dim=-1).t()

    def t_logits(self, t_features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * t_features @ text.t()


def select_trainable(net: ReCLIPNet) -> Dict[str, List[nn.Parameter]]:
    """Freeze everything but V's visual LayerNorms and T's text LayerNorms (text blocks + ln_final)."""
    net.requires_grad_(False)
    enable_layernorm_affines(net.v_visual)
    enable_layernorm_affines(net.t_clip.transformer)
    enable_layernorm_affines(net.t_clip.ln_final)
    named = trainable_named_parameters(net)
    return {"v": [p for n, p in named.items() if n.startswith("v_visual.")],
            "t": [p for n, p in named.items() if n.startswith("t_clip.")]}


# ------------------------------------------------------------------------------------------------ step functions
def agreement_mask(v_labels: torch.Tensor, t_labels: torch.Tensor) -> torch.Tensor:
    """Cross-modality agreement: True where ReCLIP-V's and ReCLIP-T's pseudo-labels agree."""
    return v_labels == t_labels


class Losses(NamedTuple):
    t: torch.Tensor
    v: torch.Tensor


def reclip_losses(v_logits: torch.Tensor, t_logits: torch.Tensor, v_labels: torch.Tensor, t_labels: torch.Tensor,
                  mask: torch.Tensor, v_loss_norm: str = "official") -> Losses:
    """``L_T = sum m CE_T / sum m``; ``L_V = mean(m CE_V) / sum m`` ("official") or ``sum m CE_V / sum m``. The
    caller skips batches with ``sum m = 0``."""
    m = mask.float()
    count = m.sum()
    loss_t = (F.cross_entropy(t_logits, t_labels, reduction="none") * m).sum() / count
    ce_v = F.cross_entropy(v_logits, v_labels, reduction="none") * m
    loss_v = ce_v.mean() / count if v_loss_norm == "official" else ce_v.sum() / count
    return Losses(loss_t, loss_v)


def official_epochs(num_images: int, cap: int, divisor: int, offset: int) -> int:
    """``min(cap, num_images // divisor + offset)`` (official), or ``cap`` when ``divisor`` is 0."""
    return cap if divisor <= 0 else min(cap, num_images // divisor + offset)


# ------------------------------------------------------------------------------------------------------- trainer
@TRAINER_REGISTRY.register()
class ReCLIP(CLIPTrainer):
    """ReCLIP's two-model self-training on label-propagated, cross-modality-agreed pseudo-labels."""
    # per-epoch state carried by intra-epoch checkpoints (TRAIN.CHECKPOINT_EVERY_STEPS): the epoch's labels
    # (refreshed in before_epoch from the epoch-start model), their statistics, the skipped batches
    epoch_state_attrs = ("_labels", "_epoch_metrics", "_skipped_batches")

    @classmethod
    def planned_training(cls, cfg, num_train: int, num_classes: int):
        """The official epoch rule min(cap, N // divisor + offset) over the train split."""
        node = cfg.TRAINER.RECLIP
        return official_epochs(num_train, cfg.OPTIM.MAX_EPOCH, node.EPOCH_DIVISOR, node.EPOCH_OFFSET), int(num_train)

    def check_cfg(self, cfg):
        node = cfg.TRAINER.RECLIP
        for key, value, allowed in (("TRAIN_SPLIT", node.TRAIN_SPLIT, TRAIN_SPLITS),
                                    ("V_LOSS_NORM", node.V_LOSS_NORM, V_LOSS_NORMS),
                                    ("LP.CG_DTYPE", node.LP.CG_DTYPE, tuple(CG_DTYPES))):
            if value not in allowed:
                raise ValueError(f"TRAINER.RECLIP.{key} must be one of {allowed}, got {value!r}")
        if not 0.0 < node.LP.ALPHA < 1.0:
            raise ValueError(f"TRAINER.RECLIP.LP.ALPHA must lie in (0, 1), got {node.LP.ALPHA}")
        if node.LP.K < 1:
            raise ValueError(f"TRAINER.RECLIP.LP.K must be >= 1, got {node.LP.K}")
        if node.LP.CUT_DIM < 2:
            raise ValueError(f"TRAINER.RECLIP.LP.CUT_DIM must be >= 2, got {node.LP.CUT_DIM}")
        if node.LP.CG_MAXITER < 1:
            raise ValueError(f"TRAINER.RECLIP.LP.CG_MAXITER must be >= 1, got {node.LP.CG_MAXITER}")
        if cfg.OPTIM.MAX_EPOCH < 1:
            raise ValueError(f"OPTIM.MAX_EPOCH must be >= 1 (ReCLIP's epoch cap, official 100), got "
                             f"{cfg.OPTIM.MAX_EPOCH}")

    @property
    def node(self):
        return self.cfg.TRAINER.RECLIP

    @property
    def transductive(self) -> bool:
        return self.node.TRAIN_SPLIT == "test"

    # ------------------------------------------------------------------------------------------------- data
    def build_data_loader(self):
        """Default loaders, then the adaptation loaders: CLIP preprocess (the test view) for training too, shuffled,
        the last partial batch kept (official DataLoader(shuffle=True, drop_last=False)), and a sequential pass over
        the same images for label propagation. Batches carry ``index`` (position in ``self.adapt_source``)."""
        super().build_data_loader()
        cfg = self.cfg
        dataset = self.dm.dataset
        self.adapt_source = list(dataset.test if self.transductive else dataset.train_x)
        if self.transductive:
            print("ReCLIP: TRANSDUCTIVE run (TRAINER.RECLIP.TRAIN_SPLIT test): adapting on the test images it is "
                  "evaluated on, as the official code; not the inductive protocol of microCLIP's Table 1")
        view = build_transform(cfg, is_train=False)
        self.train_loader_x = build_data_loader(cfg, sampler_type="RandomSampler", data_source=self.adapt_source,
                                                batch_size=cfg.DATALOADER.TRAIN_X.BATCH_SIZE, tfm=view,
                                                is_train=False)
        self.feature_loader = build_data_loader(cfg, sampler_type="SequentialSampler", data_source=self.adapt_source,
                                                batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, tfm=view, is_train=False)

    # ------------------------------------------------------------------------------------------------ model
    def build_model(self):
        from clipkit.clip import tokenize

        cfg, node = self.cfg, self.node
        nodes = self.num_classes + len(self.adapt_source)
        if node.LP.K >= nodes:
            raise ValueError(f"TRAINER.RECLIP.LP.K must be smaller than the number of graph nodes ({nodes}: "
                             f"{self.num_classes} class seeds + {len(self.adapt_source)} images), got {node.LP.K}")
        templates = self.templates()
        if not 0 <= node.TRAIN_TEMPLATE_INDEX < len(templates):
            raise ValueError(f"TRAINER.RECLIP.TRAIN_TEMPLATE_INDEX must index the {len(templates)} templates of "
                             f"{self.dataset_key!r}, got {node.TRAIN_TEMPLATE_INDEX}")
        self.full_templates = templates
        self.train_template = templates[node.TRAIN_TEMPLATE_INDEX]
        clip_model = self.load_clip().float().eval()
        initial_text = classifier_from_templates(clip_model, self.classnames, templates)
        tokens = tokenize([self.train_template.format(prompt_ready(n)) for n in self.classnames], truncate=True)
        self.net = ReCLIPNet(clip_model, initial_text, tokens, node.LOGIT_SCALE).to(self.device)
        groups = select_trainable(self.net)
        text_lr = node.TEXT_LR if node.TEXT_LR > 0 else cfg.OPTIM.LR
        optim = cfg.OPTIM
        if optim.NAME != "sgd":
            print(f"Note: ReCLIP uses SGD officially; OPTIM.NAME={optim.NAME!r} is ignored (SGD is built)")
        self.optim = torch.optim.SGD(
            [{"params": groups["v"], "lr": optim.LR}, {"params": groups["t"], "lr": text_lr}],
            lr=optim.LR, momentum=optim.MOMENTUM, weight_decay=optim.WEIGHT_DECAY, dampening=optim.SGD_DAMPNING,
            nesterov=optim.SGD_NESTEROV,
        )
        self.register_model("reclip", self.net, self.optim, None)  # constant learning rate (official)
        self.max_epoch = official_epochs(len(self.adapt_source), optim.MAX_EPOCH, node.EPOCH_DIVISOR,
                                         node.EPOCH_OFFSET)
        print(f"ReCLIP: {sum(p.numel() for p in groups['v']):,} visual and {sum(p.numel() for p in groups['t']):,} "
              f"text LayerNorm values trainable; {len(self.adapt_source)} adaptation images -> {self.max_epoch} "
              f"epochs; training template {self.train_template!r}, {len(templates)} templates for seeds")
        self._t_adapt_features: Optional[torch.Tensor] = None
        self._labels = None
        self._eval_text = None

    # ------------------------------------------------------------------------------------ label propagation
    @torch.no_grad()
    def adaptation_features(self):
        """(V features, frozen-tower features, ground-truth labels) of every adaptation image, in index order.
        The frozen tower's features never change (no augmentation) and are computed once per process."""
        self.set_model_mode("eval")
        need_t = self._t_adapt_features is None
        v_feats, t_feats, truth = [], [], []
        for batch in self.feature_loader:
            images = batch["img"].to(self.device)
            v_feats.append(self.net.v_features(images))
            if need_t:
                t_feats.append(self.net.t_image_features(images))
            truth.append(batch["label"])
        if need_t:
            self._t_adapt_features = torch.cat(t_feats)
        return torch.cat(v_feats), self._t_adapt_features, torch.cat(truth)

    def propagate(self, seeds: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """LP labels of all nodes (C seeds first) in the projection space of ``seeds``."""
        lp = self.node.LP
        device = torch.device(lp.DEVICE) if lp.DEVICE else self.device
        projection = projection_without_first_direction(seeds, lp.CUT_DIM)
        result = label_propagation(seeds.to(device), features.to(device), projection.to(device), k=lp.K,
                                   alpha=lp.ALPHA, maxiter=lp.CG_MAXITER, tol=lp.CG_TOL,
                                   chunk_rows=lp.CHUNK_ROWS or None, cg_dtype=CG_DTYPES[lp.CG_DTYPE])
        return result.labels.to(self.device)

    @torch.no_grad()
    def refresh_pseudo_labels(self) -> Dict[str, float]:
        """Both label propagations over all adaptation images; V's classifier <- its centroids. Returns the epoch's
        label statistics; the ground truth enters only the ``*accuracy*`` entries (logging)."""
        net, num_classes = self.net, self.num_classes
        v_feats, t_feats, truth = self.adaptation_features()
        t_nodes = self.propagate(net.t_seeds, t_feats)
        v_nodes = self.propagate(net.v_seeds, v_feats)
        net.v_classifier.copy_(class_mean_prototypes(torch.cat([net.v_seeds, v_feats]), v_nodes, num_classes,
                                                     fallback=net.v_seeds))
        labels_v, labels_t = v_nodes[num_classes:], t_nodes[num_classes:]
        self._labels = (labels_v, labels_t)
        agree = agreement_mask(labels_v, labels_t)
        truth = truth.to(self.device)
        percent = lambda x: 100.0 * x.float().mean().item()  # noqa: E731
        trained_on = percent(labels_v[agree] == truth[agree]) if bool(agree.any()) else 0.0
        return {
            "lp_accuracy_v": percent(labels_v == truth),
            "lp_accuracy_t": percent(labels_t == truth),
            "agreement_rate": percent(agree),
            "pl_accuracy": trained_on,  # accuracy of the agreed labels, the ones trained on (output_parser's PL table)
        }

    # -------------------------------------------------------------------------------------------- one step
    def before_epoch(self):
        super().before_epoch()
        self._epoch_metrics = self.refresh_pseudo_labels()
        self._skipped_batches = 0

    def parse_batch_train(self, batch):
        """-> images, adaptation indices (the ground-truth ``label`` is not read)."""
        return batch["img"].to(self.device), batch["index"].to(self.device)

    def forward_backward(self, batch):
        images, indices = self.parse_batch_train(batch)
        net = self.net
        labels_v, labels_t = self._labels[0][indices], self._labels[1][indices]
        mask = agreement_mask(labels_v, labels_t)
        if not bool(mask.any()):  # official: the step is skipped
            self._skipped_batches += 1
            return {"loss": 0.0, "loss_t": 0.0, "loss_v": 0.0, "agreement": 0.0}
        v_logits = net.v_logits(net.v_features(images))
        t_logits = net.t_logits(self._t_adapt_features[indices], net.t_text_classifier())
        losses = reclip_losses(v_logits, t_logits, labels_v, labels_t, mask, self.node.V_LOSS_NORM)
        self.optim.zero_grad(set_to_none=True)
        (losses.t + losses.v).backward()  # disjoint parameters: the same gradients as two separate backward passes
        self.optim.step()
        return {"loss": (losses.t + losses.v).item(), "loss_t": losses.t.item(), "loss_v": losses.v.item(),
                "agreement": 100.0 * mask.float().mean().item()}

    @torch.no_grad()
    def after_epoch(self):
        # ReCLIP-T: new seeds from the tuned text tower with the full template set (its projection follows them)
        self.net.t_seeds.copy_(classifier_from_templates(self.net.t_clip, self.classnames, self.full_templates))
        metrics = dict(self._epoch_metrics, skipped_batches=self._skipped_batches)
        if self.node.EPOCH_TEST_METRICS:
            metrics.update(self.evaluate_heads())
        self.log_epoch_metrics(metrics)
        print("ReCLIP epoch metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        super().after_epoch()

    @torch.no_grad()
    def evaluate_heads(self) -> Dict[str, float]:
        """Test accuracy (%) of ReCLIP-V, ReCLIP-T and the combined head (ground truth: logging)."""
        self.set_model_mode("eval")
        net, text = self.net, self.net.t_text_classifier()
        correct, total = torch.zeros(3, device=self.device), 0
        for batch in self.test_loader:
            images, labels = self.parse_batch_test(batch)
            v_logits = net.v_logits(net.v_features(images))
            t_logits = net.t_logits(net.t_image_features(images), text)
            predictions = torch.stack([v_logits.argmax(-1), t_logits.argmax(-1), (v_logits + t_logits).argmax(-1)])
            correct += (predictions == labels).sum(dim=1).float()
            total += labels.shape[0]
        self.set_model_mode("train")
        acc_v, acc_t, acc_c = (100.0 * correct / max(total, 1)).tolist()
        metrics = {"accuracy_v": acc_v, "accuracy_t": acc_t, "accuracy_combined": acc_c}
        if self.node.REPORT_BEST_EPOCH:
            metrics["accuracy"] = acc_c  # -> accuracy_best (flagged best_is_test_selection)
        return metrics

    # ----------------------------------------------------------------------------------------------- testing
    def test(self, split=None):
        self._eval_text = None  # the text tower may have changed since the last evaluation
        return super().test(split)

    @torch.no_grad()
    def model_inference(self, images):
        """Combined head: ``(t_logits + v_logits) / 2``."""
        net = self.net
        if self._eval_text is None:
            self._eval_text = net.t_text_classifier()
        return 0.5 * (net.t_logits(net.t_image_features(images), self._eval_text)
                      + net.v_logits(net.v_features(images)))

    def run_summary(self) -> Dict:
        return {"transductive": self.transductive, "adaptation_images": len(self.adapt_source),
                "epochs": int(self.max_epoch),
                "trainable_parameters": int(sum(p.numel() for p in self.net.parameters() if p.requires_grad))}
