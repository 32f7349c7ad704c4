"""POUF: prompt-oriented unsupervised fine-tuning (Tanwisuth et al., ICML'23; shared/research/baselines.md Sec. 6).

No pseudo-labels: every unlabelled batch of B images is aligned with the C class text features t_c.
With ``sim[b, c] = cos(f(x_b), t_c)`` and ``logits = s * sim`` (s = exp(logit_scale), CLIP's trainable temperature):

    P_row = softmax_c(logits)    (sample -> class)        P_col = softmax_b(logits)    (class -> sample, over the batch)
    L_transport = mean_b sum_c (1 - sim) P_row + mean_c sum_b (1 - sim) P_col
    L_IM        = mean_b H(P_row[b]) - H(mean_b P_row[b])
    L           = TRANSPORT_WEIGHT (1.0) * L_transport + IM_WEIGHT (0.3) * L_IM

(``clipkit.blocks.losses.transport_costs`` / ``information_maximization_terms``). Prediction: argmax_c sim.

Two modes (``TRAINER.POUF.MODE``):
  * "prompt" (default; the mode microCLIP's Table 1 row is taken to use): CoOp context vectors initialised from
    "a photo of a" (``clipkit.blocks.prompt_learner``, prompts "a photo of a <class>.") and the logit scale are
    trained; both CLIP towers stay frozen (official ``--learn-prompt``);
  * "model": both towers and the logit scale are trained, text "a photo of a <class>" (official default).

Optimisation as the official code: SGD (momentum 0.9, Nesterov, weight decay 1e-3) with per-group LRs (context
PROMPT_LR, everything else MODEL_LR) and a per-iteration LambdaLR whose factor is ``OPTIM.LR * (1 + gamma t)^-decay``:
the official lambda multiplies by the base LR (0.01) on top of each group's own LR, so the effective LRs are
0.1 x 0.01 = 1e-3 for the context and 5e-5 x 0.01 = 5e-7 for the logit scale / the CLIP weights
(``TRAINER.POUF.LR_LAMBDA_TIMES_BASE_LR``). The official budget is epochs x iterations: 10 x 500 steps of 96 images
drawn from an endlessly reshuffled loader; here an epoch is ``ITERS_PER_EPOCH`` such steps (0: one pass over the train
split), see DEVIATIONS.md (POUF) for the mapping to passes over each dataset. Train view: square resize to 256, random
resized crop 224 of area (0.08, 1), flip (bilinear, TLlib); test view: CLIP's preprocess (the Dassl test transform).

The official code keeps the epoch with the best accuracy on its validation loader, which is the target test set. Here
the last epoch is reported; the test accuracy after every epoch is logged and the best of them appears only as
results.json's accuracy_best with best_is_test_selection true.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms as T

from clipkit.blocks.losses import information_maximization_terms, transport_costs
from clipkit.blocks.prompt_learner import ContextPromptLearner, encode_prompted_text
from clipkit.blocks.text_classifier import prompt_ready
from clipkit.blocks.trainable import TrainedStateMixin
from clipkit.config import CN, cfg_extension
from clipkit.dassl import INTERPOLATION_MODES, TRAINER_REGISTRY, build_optimizer
from clipkit.engine.resumable_loader import dataloader_from, position_seeds
from clipkit.trainer_base import CLIPTrainer

MODES = ("prompt", "model")
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # torchvision's RandomResizedCrop default aspect-ratio range (official, untouched)


@cfg_extension
def _add_pouf_cfg(cfg):
    node = CN()
    # "prompt": context vectors + logit scale trained, CLIP frozen (official --learn-prompt; the microCLIP row);
    # "model": every CLIP parameter (both towers) + logit scale trained (official default).
    node.MODE = "prompt"
    # Words that initialise the context (prompt mode; official "a photo of a": 4 vectors, one per word).
    # "" = N_CTX random N(0, INIT_STD^2) vectors instead (CoOp's option, not POUF's).
    node.CTX_INIT = "a photo of a"
    node.N_CTX = 4  # context vectors when CTX_INIT is "" (with init words, their count)
    node.INIT_STD = 0.02  # std of a random context init (only with CTX_INIT "")
    # Class text of model mode, one "{}" for the class name (official f"a photo of a {c}", no period).
    node.TEMPLATE = "a photo of a {}"
    # Group LR of the context vectors (official -plr: 0.1 in pouf.sh, the runs; 5e-4 is the argparse default).
    node.PROMPT_LR = 0.1
    # Group LR of the logit scale (prompt mode) and of every CLIP parameter (model mode) (official model_lr 5e-5).
    node.MODEL_LR = 5e-5
    # The official LambdaLR returns OPTIM.LR * (1 + LR_GAMMA t)^-LR_DECAY, i.e. it multiplies each group's LR by
    # OPTIM.LR (0.01) on top: effective LRs 1e-3 (context) and 5e-7 (logit scale / CLIP weights). False: the factor
    # is (1 + LR_GAMMA t)^-LR_DECAY alone, the group LRs as written (0.1 and 5e-5).
    node.LR_LAMBDA_TIMES_BASE_LR = True
    node.LR_GAMMA = 0.0002  # gamma of the inverse-decay schedule, t = optimizer steps so far (official --lr-gamma)
    node.LR_DECAY = 0.75  # exponent of the inverse-decay schedule (official --lr-decay)
    node.TRANSPORT_WEIGHT = 1.0  # weight of L_transport (official --trade-off)
    node.IM_WEIGHT = 0.3  # weight of L_IM (official --lambda-im)
    node.ENTROPY_EPS = 1e-5  # eps in log(p + eps) of the per-sample entropy (official get_entropy)
    node.MARGINAL_EPS = 1e-6  # eps in log(p_bar + eps) of the marginal entropy (official compute_im_loss)
    # Optimizer steps per epoch, batches drawn from a loader reshuffled whenever it runs out (official
    # --iters-per-epoch 500 with TLlib's ForeverDataIterator); 0 = one pass over the train split per epoch.
    node.ITERS_PER_EPOCH = 500
    # Train view: square resize to TRAIN_RESIZE x TRAIN_RESIZE (aspect ratio not kept; TLlib ResizeImage(256)), then
    # RandomResizedCrop(INPUT.SIZE, scale INPUT.RRCROP_SCALE) and a horizontal flip; 0 = no resize before the crop.
    node.TRAIN_RESIZE = 256
    node.TRAIN_INTERPOLATION = "bilinear"  # of the train resize and crop (torchvision's default in TLlib)
    cfg.TRAINER.POUF = node


# ------------------------------------------------------------------------------------------------ pure functions
def inverse_decay_factor(step: int, gamma: float, decay: float, base_lr: float = 1.0) -> float:
    """LR multiplier after ``step`` optimizer steps: ``base_lr * (1 + gamma step)^-decay`` (official LambdaLR; the
    official code passes base_lr = its --lr 0.01, which scales every group's LR)."""
    return base_lr * (1.0 + gamma * float(step)) ** (-decay)


def pouf_loss(similarities: torch.Tensor, logit_scale: torch.Tensor, transport_weight: float, im_weight: float,
              entropy_eps: float, marginal_eps: float) -> Dict[str, torch.Tensor]:
    """POUF's objective from (B, C) cosine similarities and the raw (log) logit scale.

    Returns the total loss and its parts: ``transport`` (= ``transport_s2c + transport_c2s``), ``im``
    (= ``entropy - marginal_entropy``), the mean per-sample prediction entropy and the entropy of the mean prediction.
    """
    logits = logit_scale.exp() * similarities
    sample_to_class, class_to_sample = transport_costs(logits, similarities)
    entropy, marginal_entropy = information_maximization_terms(logits, entropy_eps, marginal_eps)
    transport, im = sample_to_class + class_to_sample, entropy - marginal_entropy
    return {
        "loss": transport_weight * transport + im_weight * im,
        "transport": transport, "transport_s2c": sample_to_class, "transport_c2s": class_to_sample,
        "im": im, "entropy": entropy, "marginal_entropy": marginal_entropy,
    }


def pouf_train_transform(size, rrc_scale, resize: int, interpolation: str, pixel_mean, pixel_std):
    """TLlib's "default" train resizing: square resize, RandomResizedCrop(size, rrc_scale), flip, CLIP normalisation."""
    if interpolation not in INTERPOLATION_MODES:
        raise ValueError(f"TRAINER.POUF.TRAIN_INTERPOLATION must be one of {list(INTERPOLATION_MODES)}, "
                         f"got {interpolation!r}")
    mode = INTERPOLATION_MODES[interpolation]
    steps = [T.Resize((resize, resize), interpolation=mode)] if resize > 0 else []
    steps += [T.RandomResizedCrop(tuple(size), scale=tuple(rrc_scale), ratio=RRC_RATIO, interpolation=mode),
              T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean=pixel_mean, std=pixel_std)]
    return T.Compose(steps)


# Seeds of the per-epoch DataLoaders: base seed + stride x (stream position + 1), a prime stride so that they never
# coincide with the pass-order seeds (base seed + pass index) of the first passes.
POSITION_SEED_STRIDE = 7919


class FixedLengthLoader:
    """``length`` batches per epoch from an endless stream of shuffled passes over ``loader``'s dataset (TLlib's
    ForeverDataIterator, epoch-sized): the stream position carries over from one epoch to the next.

    Resumable exactly: pass p's order is the permutation of a generator seeded by (base seed, p), the base seed drawn
    once from torch's global generator when the loader is built; epoch e covers stream positions
    [e * length, (e + 1) * length) (``set_epoch``), served by a fresh DataLoader over the rest of the current pass
    whose own generator is seeded by the position, so an interrupted run re-creates exactly the batches (and worker
    augmentation seeds) of the uninterrupted one. Each pass keeps ``loader``'s ``drop_last``.
    """

    def __init__(self, loader, length: int):
        self.loader, self.length = loader, length
        self.dataset, self.batch_size = loader.dataset, loader.batch_size
        self.base_seed = int(torch.randint(0, 2**62, (1,)).item())
        self.epoch = 0
        count, size = len(self.dataset), self.batch_size
        self.batches_per_pass = count // size if loader.drop_last else -(-count // size)
        if self.batches_per_pass < 1:
            raise ValueError(f"the train split has {count} images, fewer than one batch of {size}")

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def pass_order(self, pass_index: int) -> List[int]:
        generator = torch.Generator().manual_seed(self.base_seed + pass_index)
        return torch.randperm(len(self.dataset), generator=generator).tolist()

    def _loader_from(self, position: int, seed_batches: bool = False):
        """DataLoader over the rest of the pass that holds stream ``position`` (``seed_batches``: each batch reseeds
        its worker from the stream position, see clipkit/engine/resumable_loader.py)."""
        pass_index, offset = divmod(position, self.batches_per_pass)
        order = self.pass_order(pass_index)[offset * self.batch_size: self.batches_per_pass * self.batch_size]
        generator = torch.Generator().manual_seed(self.base_seed + POSITION_SEED_STRIDE * (position + 1))
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=order, num_workers=self.loader.num_workers,
            drop_last=False, pin_memory=self.loader.pin_memory, generator=generator,
        )
        if not seed_batches:
            return loader
        seeds = position_seeds(self.base_seed.to_bytes(8, "little"), offset=position)
        return dataloader_from(loader, 0, seeds, None)

    def epoch_batches(self, skip: int = 0, seed_batches: bool = False, after_skip=None) -> Iterator:
        """The epoch's batches from its ``skip``-th on (intra-epoch resume); nothing here draws from the global
        generators, so ``after_skip`` runs first."""
        if after_skip is not None:
            after_skip()
        position, end = self.epoch * self.length + skip, (self.epoch + 1) * self.length
        while position < end:
            for batch in self._loader_from(position, seed_batches):
                yield batch
                position += 1
                if position == end:
                    return

    def __iter__(self) -> Iterator:
        return self.epoch_batches()


# ------------------------------------------------------------------------------------------------------- model
class POUFModel(TrainedStateMixin, nn.Module):
    """CLIP with POUF's class text (learned context or the fixed template); ``forward(images) -> (B, C)`` cosines.

    Checkpoints hold only the trained tensors (prompt mode: the context and the logit scale)."""

    def __init__(self, clip_model, classnames: List[str], node, generator=None):
        super().__init__()
        from clipkit.clip import tokenize

        self.mode = node.MODE
        self.clip = clip_model.float()
        self.clip.requires_grad_(self.mode == "model")
        self.clip.logit_scale.requires_grad_(True)
        if self.mode == "prompt":
            self.prompt_learner = ContextPromptLearner(clip_model, classnames, node.N_CTX, node.CTX_INIT,
                                                       init_std=node.INIT_STD, generator=generator)
        else:
            texts = [node.TEMPLATE.format(prompt_ready(name)) for name in classnames]
            device = clip_model.token_embedding.weight.device
            self.register_buffer("text_tokens", tokenize(texts).to(device), persistent=False)

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    def text_features(self) -> torch.Tensor:
        """(C, D) unit class text features (with gradients to whatever is trained)."""
        if self.mode == "prompt":
            features = encode_prompted_text(self.clip, self.prompt_learner(), self.prompt_learner.tokens)
        else:
            features = self.clip.encode_text(self.text_tokens)
        return F.normalize(features.float(), dim=-1)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) unit image features; without autograd in prompt mode (the image tower is frozen there)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.mode == "model"):
            return F.normalize(self.clip.encode_image(images).float(), dim=-1)

    def forward(self, images: torch.Tensor, text_features: Optional[torch.Tensor] = None) -> torch.Tensor:
        text_features = self.text_features() if text_features is None else text_features
        return self.image_features(images) @ text_features.t()

    def parameter_groups(self, prompt_lr: float, model_lr: float) -> List[Dict]:
        """Official ``get_parameters``: the context at ``prompt_lr``, the logit scale / all CLIP weights at
        ``model_lr`` (weight decay from OPTIM.WEIGHT_DECAY on every group, as the official SGD)."""
        if self.mode == "prompt":
            return [{"params": [self.prompt_learner.ctx], "lr": prompt_lr},
                    {"params": [self.clip.logit_scale], "lr": model_lr}]
        return [{"params": list(self.clip.parameters()), "lr": model_lr}]


# ----------------------------------------------------------------------------------------------------- trainer
@TRAINER_REGISTRY.register()
class POUF(CLIPTrainer):
    """Transport + information maximisation between unlabelled batches and the class text features."""
    # per-epoch accumulators carried by intra-epoch checkpoints (TRAIN.CHECKPOINT_EVERY_STEPS)
    epoch_state_attrs = ("_epoch_sums", "_epoch_steps")

    eval_every_epoch = True  # the official code evaluates after every epoch; logged, never used for selection

    LOGGED_TERMS = ("loss", "transport", "transport_s2c", "transport_c2s", "im", "entropy", "marginal_entropy")

    def check_cfg(self, cfg):
        node = cfg.TRAINER.POUF
        if node.MODE not in MODES:
            raise ValueError(f"TRAINER.POUF.MODE must be one of {MODES}, got {node.MODE!r}")
        if node.ITERS_PER_EPOCH < 0:
            raise ValueError(f"TRAINER.POUF.ITERS_PER_EPOCH must be >= 0 (0 = one pass over the train split), "
                             f"got {node.ITERS_PER_EPOCH}")
        if node.MODE == "model" and node.TEMPLATE.count("{}") != 1:
            raise ValueError(f"TRAINER.POUF.TEMPLATE must contain exactly one '{{}}', got {node.TEMPLATE!r}")
        if node.MODE == "prompt" and not node.CTX_INIT.strip() and node.N_CTX < 1:
            raise ValueError(f"TRAINER.POUF.N_CTX must be >= 1 when TRAINER.POUF.CTX_INIT is empty, got {node.N_CTX}")
        if cfg.OPTIM.WARMUP_EPOCH > 0:
            raise ValueError("OPTIM.WARMUP_EPOCH must be 0 for POUF: it steps its own per-iteration inverse-decay "
                             "schedule (TRAINER.POUF.LR_GAMMA / LR_DECAY), which has no warm-up")

    @property
    def node(self):
        return self.cfg.TRAINER.POUF

    @classmethod
    def planned_training(cls, cfg, num_train: int, num_classes: int):
        """An epoch is ITERS_PER_EPOCH steps of the train batch size (0: one pass over the split)."""
        iterations = cfg.TRAINER.POUF.ITERS_PER_EPOCH
        per_epoch = iterations * cfg.DATALOADER.TRAIN_X.BATCH_SIZE if iterations > 0 else num_train
        return int(cfg.OPTIM.MAX_EPOCH), int(per_epoch)

    def build_data_loader(self):
        cfg, node = self.cfg, self.cfg.TRAINER.POUF
        self.build_data_loader_with(custom_tfm_train=pouf_train_transform(
            cfg.INPUT.SIZE, cfg.INPUT.RRCROP_SCALE, node.TRAIN_RESIZE, node.TRAIN_INTERPOLATION, cfg.INPUT.PIXEL_MEAN,
            cfg.INPUT.PIXEL_STD))
        if node.ITERS_PER_EPOCH > 0:
            self.train_loader_x = FixedLengthLoader(self.train_loader_x, node.ITERS_PER_EPOCH)

    def build_model(self):
        cfg, node = self.cfg, self.node
        generator = torch.Generator().manual_seed(cfg.SEED) if cfg.SEED >= 0 else None
        self.model = POUFModel(self.load_clip(), self.classnames, node, generator).to(self.device)
        self.optim = build_optimizer(None, cfg.OPTIM, param_groups=self.model.parameter_groups(node.PROMPT_LR,
                                                                                               node.MODEL_LR))
        base_lr = float(cfg.OPTIM.LR) if node.LR_LAMBDA_TIMES_BASE_LR else 1.0
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.optim, lambda step: inverse_decay_factor(step, node.LR_GAMMA, node.LR_DECAY, base_lr))
        self.register_model("pouf", self.model, self.optim, self.sched)
        self.trainable_parameters = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        rates = ", ".join(f"{g['lr']:.3g}" for g in self.optim.param_groups)
        print(f"POUF {node.MODE} tuning: {self.trainable_parameters:,} trainable values; effective group LRs at "
              f"step 0: {rates}")
        self._eval_text_features = None

    # -------------------------------------------------------------------------------------------- one step
    def before_epoch(self):
        super().before_epoch()
        if isinstance(self.train_loader_x, FixedLengthLoader):
            self.train_loader_x.set_epoch(self.epoch)  # the stream position follows the epoch (exact resume)
        self._epoch_sums = {key: 0.0 for key in self.LOGGED_TERMS + ("train_acc",)}
        self._epoch_steps = 0

    def forward_backward(self, batch) -> Dict[str, float]:
        node = self.node
        images = batch["img"].to(self.device)
        similarities = self.model(images)
        terms = pouf_loss(similarities, self.model.logit_scale, node.TRANSPORT_WEIGHT, node.IM_WEIGHT,
                          node.ENTROPY_EPS, node.MARGINAL_EPS)
        self.model_backward_and_update(terms["loss"])
        self.update_lr()  # per iteration, as the official LambdaLR
        values = {key: float(terms[key].item()) for key in self.LOGGED_TERMS}
        # ground truth: logging only (the official cls_acc)
        values["train_acc"] = 100.0 * float((similarities.argmax(dim=1).cpu() == batch["label"]).float().mean())
        for key, value in values.items():
            self._epoch_sums[key] += value
        self._epoch_steps += 1
        return {"loss": values["loss"], "loss_transport": values["transport"], "loss_im": values["im"],
                "entropy": values["entropy"], "train_acc": values["train_acc"]}

    def after_epoch(self):
        steps = max(1, self._epoch_steps)
        metrics = {f"train_{key}" if key == "loss" else key: value / steps for key, value in self._epoch_sums.items()}
        metrics["logit_scale"] = float(self.model.logit_scale.detach().exp())
        metrics["lr"] = self.get_current_lr()
        self.log_epoch_metrics(metrics)
        super().after_epoch()  # test accuracy of the epoch ("accuracy"), checkpoint

    # ----------------------------------------------------------------------------------------------- testing
    def test(self, split=None):
        self._eval_text_features = None  # the prompts / towers may have changed since the last evaluation
        return super().test(split)

    @torch.no_grad()
    def model_inference(self, images):
        if self._eval_text_features is None:
            self._eval_text_features = self.model.text_features()
        return self.model.logit_scale.exp() * self.model(images, self._eval_text_features)

    def run_summary(self) -> Dict:
        return {"mode": self.node.MODE, "trainable_parameters": int(self.trainable_parameters),
                "logit_scale": float(self.model.logit_scale.detach().exp())}
