"""NtUA: noise-tolerant unsupervised adapter (Ali, Khan; arXiv 2309.14928), a documented RECONSTRUCTION.

NtUA has no public code. Its abstract (shared/papers/abstracts_microclip_dpa_ntua.txt) states: a key-value cache of
the visual features (keys) and predicted pseudo-labels (values) of few-shot unlabelled target samples; *adaptive cache
formation* weights each key-value pair by its prediction confidence; *pseudo-label rectification* corrects the values
and the cache weights by knowledge distillation from a large-scale vision-language model. Everything else below is
reconstructed on top of Tip-Adapter (shared/research/baselines.md Sec. 10; DEVIATIONS.md, NtUA section).

1. Few-shot unlabelled set (K = SHOTS per class). Default, label-free: zero-shot CLIP (prompt ensemble W, test view)
   labels the train split, p(x) = softmax(s f(x) W^T); keep the K most confident images per predicted class (UPL's
   selector, ``clipkit.blocks.pseudo_labels.top_k_per_class``). ``SUBSET random_per_true_class``: K random images
   of each TRUE class (Tip-Adapter's few-shot split; uses class membership, flagged in the log and results.json).
2. Keys: K_i = normalize(mean_a E_v(aug_a(x_i))) over AUGMENT_EPOCHS random-resized-crop (area (0.5, 1)) + flip views
   (Tip-Adapter ``build_cache_model``), cached on disk per (images, seed).
3. Values and weights (adaptive cache formation): V_i = one-hot(argmax p(x_i)), w_i = max_c p(x_i).
4. Pseudo-label rectification: a teacher CLIP (TEACHER, ViT-L/14 for the ViT-B configs) with its own prompt-ensemble
   classifier W_T re-predicts the cached images (test view): q(x) = softmax(s_T f_T(x) W_T^T / T_kd);
   V_i = one-hot(argmax q) (VALUES hard) or q itself (VALUES soft: the distillation target), w_i = max_c q.
5. Prediction:   logits(f) = s f W^T + alpha (exp(-beta (1 - f K^T)) * w) V     (fixed alpha, beta: no search).
6. MODE training_free: nothing is trained (NtUA on Tip-Adapter). MODE finetune (default; Tip-Adapter-F): K is a
   parameter initialised from the keys; loss = mean_i w_i CE(logits(f(aug(x_i))), V_i) over the cached images (w_i = 1
   with LOSS_WEIGHTS False), AdamW (lr 1e-3, eps 1e-4), per-iteration cosine to 0, 20 epochs, batch 256. The training
   views are the cached augmented views (epoch e uses view e mod AUGMENT_EPOCHS), so no image is re-encoded.

CLIP stays frozen in both modes; test logits use the cached test-view features. The sweep runs the default mode
(``training_free`` is a class attribute, False); ``TRAINER.NTUA.MODE training_free`` runs no epoch, also without
``--eval-only``.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from clipkit import feature_cache
from clipkit.blocks.augmented_views import ResizedCropViewsDataset, describe_resized_crop_views
from clipkit.blocks.cache_adapter import VALUE_FORMS, KeyValueCache, keys_from_views, pseudo_label_entries
from clipkit.blocks.pseudo_labels import top_k_per_class
from clipkit.blocks.schedule import per_iteration_cosine_scheduler
from clipkit.blocks.text_classifier import classifier_from_templates
from clipkit.config import CN, cfg_extension
from clipkit.dassl import TRAINER_REGISTRY, build_data_loader, build_transform

from ._training_free import TrainingFreeTrainer, cached_split_features, split_cache_key

MODES = ("finetune", "training_free")
SUBSETS = ("confident", "random_per_true_class")


@cfg_extension
def _add_ntua_cfg(cfg):
    node = CN()
    # "finetune": learnable keys (Tip-Adapter-F recipe, OPTIM.*); "training_free": the cache as built, no epoch.
    node.MODE = "finetune"
    # s: scale of every cosine logit of the student (zero-shot term, pseudo-label softmax; Tip-Adapter / CLIP 100).
    node.LOGIT_SCALE = 100.0
    # K: cached images per class (NtUA / Tip-Adapter 16 shots).
    node.SHOTS = 16
    # "confident": the K most confident train images per zero-shot predicted class (label-free, UPL's selector).
    # "random_per_true_class": K random images of each true class (Tip-Adapter's split: USES CLASS MEMBERSHIP).
    node.SUBSET = "confident"
    # Augmented views per cached image whose raw features are averaged into its key (Tip-Adapter augment_epoch 10).
    node.AUGMENT_EPOCHS = 10
    # Views: RandomResizedCrop area range and aspect-ratio range, then horizontal flip (Tip-Adapter's train transform).
    node.AUGMENT_SCALE = (0.5, 1.0)
    node.AUGMENT_RATIO = (0.75, 1.3333333333333333)
    node.AUGMENT_HFLIP = 0.5
    # Seed of the views (each image's views come from the generator of (seed, image index)); -1 = the run's SEED.
    node.AUGMENT_SEED = -1
    # Adaptive cache formation: weight each entry by its pseudo-label confidence (False: w = 1, plain Tip-Adapter
    # with pseudo-labels).
    node.ADAPTIVE_WEIGHTS = True
    # Pseudo-label rectification: values and weights re-predicted by the TEACHER (False: the student's own).
    node.RECTIFY = True
    # Teacher CLIP (name or checkpoint path, loaded like MODEL.BACKBONE.NAME); "" = the student backbone itself.
    node.TEACHER = "ViT-L/14"
    # s_T: scale of the teacher's cosine logits (CLIP 100).
    node.TEACHER_LOGIT_SCALE = 100.0
    # T_kd: distillation temperature of the teacher's softmax q = softmax(s_T cos / T_kd) (1 = the teacher's own).
    node.KD_TEMPERATURE = 1.0
    # Rectified values: "hard" one-hot(argmax q), or "soft" q itself (soft distillation targets).
    node.VALUES = "hard"
    # alpha (weight of the cache logits) and beta (sharpness of the affinity), fixed: Tip-Adapter's init values
    # (beta 1; alpha per dataset in dataset_overrides.yaml, 2 as DTD's elsewhere); no search on labelled data.
    node.ALPHA = 2.0
    node.BETA = 1.0
    # finetune: weight each sample's cross-entropy by its cache weight w_i (False: plain CE, as Tip-Adapter-F).
    node.LOSS_WEIGHTS = True
    # finetune: AdamW epsilon (Tip-Adapter-F 1e-4; lr, weight decay, epochs, batch size: OPTIM.* and DATALOADER.*).
    node.ADAM_EPS = 1e-4
    # finetune: floor of the per-iteration cosine (Tip-Adapter-F CosineAnnealingLR: 0).
    node.MIN_LR = 0.0
    cfg.TRAINER.NTUA = node


# ------------------------------------------------------------------------------------------------- pure steps
def select_shots(probabilities: torch.Tensor, shots: int) -> torch.Tensor:
    """Label-free few-shot set: (M,) ascending train indices, the ``shots`` most confident per predicted class."""
    return top_k_per_class(probabilities, shots)


def random_shots_per_true_class(labels: Sequence[int], shots: int, generator: torch.Generator) -> torch.Tensor:
    """Tip-Adapter's few-shot split (USES THE TRUE LABELS): ``shots`` random indices of each class, ascending."""
    labels = torch.as_tensor(list(labels))
    kept = []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        kept.append(members[torch.randperm(len(members), generator=generator)[:shots]])
    return torch.sort(torch.cat(kept)).values


def cache_entries(probabilities: torch.Tensor, form: str, adaptive: bool):
    """(values (M, C), weights (M,)) of the cache from (M, C) probabilities; weights 1 without adaptive formation."""
    values, weights = pseudo_label_entries(probabilities, form)
    return values, (weights if adaptive else torch.ones_like(weights))


def finetune_loss(cache: KeyValueCache, features: torch.Tensor, targets: torch.Tensor,
                  sample_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``mean_b w_b CE(logits(f_b), v_b)`` with (B, C) target distributions v (one-hot = the hard CE)."""
    losses = F.cross_entropy(cache(features), targets, reduction="none")
    return (losses * sample_weights).mean() if sample_weights is not None else losses.mean()


class EpochPermutation(torch.utils.data.Sampler):
    """Shuffled order of epoch ``epoch`` drawn from the generator of (seed, epoch): independent of the global RNG
    (feature-cache hits and misses consume it differently) and the same after a resume."""

    def __init__(self, count: int, seed: int):
        self.count, self.seed, self.epoch = int(count), int(seed), 0

    def __len__(self):
        return self.count

    def __iter__(self):
        return iter(torch.randperm(self.count, generator=feature_cache.crop_generator(self.seed, self.epoch)).tolist())


class _Indices(torch.utils.data.Dataset):
    """The training set of the finetune mode: cache entry indices (features come from the cached views)."""

    def __init__(self, count: int):
        self.count = count

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        return {"index": index}


# ------------------------------------------------------------------------------------------------------- trainer
@TRAINER_REGISTRY.register()
class NtUA(TrainingFreeTrainer):
    """Tip-Adapter-style key-value cache of pseudo-labelled, confidence-weighted shots (frozen CLIP)."""

    cfg_node = "NTUA"
    training_free = False  # the default MODE trains the keys; MODE training_free runs zero epochs

    @classmethod
    def planned_training(cls, cfg, num_train: int, num_classes: int):
        """Fine-tuned mode: OPTIM.MAX_EPOCH epochs of key tuning over the K x C shots' cached views (the encoder pass
        that caches AUGMENT_EPOCHS views per shot is a cache build, not a training step); none when training-free."""
        node = cfg.TRAINER.NTUA
        if node.MODE == "training_free":
            return 0, 0
        return int(cfg.OPTIM.MAX_EPOCH), min(num_train, node.SHOTS * num_classes)

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        node = cfg.TRAINER.NTUA
        for key, value, allowed in (("MODE", node.MODE, MODES), ("SUBSET", node.SUBSET, SUBSETS),
                                    ("VALUES", node.VALUES, VALUE_FORMS)):
            if value not in allowed:
                raise ValueError(f"TRAINER.NTUA.{key} must be one of {allowed}, got {value!r}")
        for key in ("SHOTS", "AUGMENT_EPOCHS"):
            if int(node[key]) < 1:
                raise ValueError(f"TRAINER.NTUA.{key} must be >= 1, got {node[key]}")
        low, high = node.AUGMENT_SCALE
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"TRAINER.NTUA.AUGMENT_SCALE must satisfy 0 < a <= b <= 1, got "
                             f"{tuple(node.AUGMENT_SCALE)}")
        for key in ("BETA", "TEACHER_LOGIT_SCALE", "KD_TEMPERATURE"):
            if float(node[key]) <= 0:
                raise ValueError(f"TRAINER.NTUA.{key} must be positive, got {node[key]}")
        if float(node.ALPHA) < 0:
            raise ValueError(f"TRAINER.NTUA.ALPHA must be >= 0 (0 = zero-shot CLIP), got {node.ALPHA}")
        if node.VALUES == "soft" and not node.RECTIFY:
            raise ValueError("TRAINER.NTUA.VALUES 'soft' describes the teacher's values: set TRAINER.NTUA.RECTIFY True "
                             "or VALUES 'hard'")
        if node.MODE == "finetune" and cfg.OPTIM.NAME != "adamw":
            print(f"Note: Tip-Adapter-F uses AdamW; OPTIM.NAME={cfg.OPTIM.NAME!r} is ignored by NtUA")

    @property
    def node(self):
        return self.cfg.TRAINER.NTUA

    # ------------------------------------------------------------------------------------------------ model
    def build_text_classifier(self):
        return classifier_from_templates(self.clip_model, self.classnames, self.templates())

    def build_model(self):
        super().build_model()  # frozen CLIP, prompt-ensemble classifier W
        cfg, node = self.cfg, self.node
        self.training_free = node.MODE == "training_free"
        if self.training_free:
            self.max_epoch = 0  # train.py without --eval-only: no epoch, the final test only
        self._split_features: Dict[str, torch.Tensor] = {}
        train = list(self.dm.dataset.train_x)
        train_features = self.test_view_features(self.clip_model, train, cfg.MODEL.BACKBONE.NAME)
        probabilities = torch.softmax(self.logit_scale * train_features @ self.text_classifier.t(), dim=-1)
        shots = self.select(probabilities, train)
        self.shot_items = [train[i] for i in shots.tolist()]
        student_probs = probabilities[shots]
        if node.RECTIFY:
            values_probs = self.teacher_probabilities(self.shot_items, train_features[shots])
            form = node.VALUES
        else:
            values_probs, form = student_probs, "hard"
        values, weights = cache_entries(values_probs, form, node.ADAPTIVE_WEIGHTS)
        views = self.augmented_view_features(self.shot_items)  # (M, A, D) raw
        keys = keys_from_views(views)
        # (A, M, D) unit features: the finetune mode's inputs (epoch e reads view e mod A)
        self.train_views = None if self.training_free else F.normalize(views, dim=-1).transpose(0, 1).contiguous()
        self.cache = KeyValueCache(keys, values, weights, self.text_classifier, node.ALPHA, node.BETA,
                                   self.logit_scale, learnable_keys=not self.training_free).to(self.device)
        self._log_cache_statistics(student_probs, values)
        if self.training_free:
            self.register_model("ntua", self.cache)
            return
        self.train_loader_x = torch.utils.data.DataLoader(  # Tip-Adapter-F: shuffled, last batch kept
            _Indices(len(self.shot_items)), batch_size=cfg.DATALOADER.TRAIN_X.BATCH_SIZE,
            sampler=EpochPermutation(len(self.shot_items), max(int(cfg.SEED), 0)), drop_last=False)
        self.optim = torch.optim.AdamW([self.cache.keys], lr=cfg.OPTIM.LR, weight_decay=cfg.OPTIM.WEIGHT_DECAY,
                                       betas=(cfg.OPTIM.ADAM_BETA1, cfg.OPTIM.ADAM_BETA2), eps=node.ADAM_EPS)
        total_steps = max(1, cfg.OPTIM.MAX_EPOCH * len(self.train_loader_x))
        self.sched = per_iteration_cosine_scheduler(self.optim, total_steps, cfg.OPTIM.LR, node.MIN_LR)
        self.register_model("ntua", self.cache, self.optim, self.sched)
        print(f"NtUA finetune: {self.cache.keys.numel():,} trainable key values, {len(self.train_loader_x)} steps per "
              f"epoch over the {self.train_views.shape[0]} cached views")

    # --------------------------------------------------------------------------------------- cache formation
    def _test_view_loader(self, items: Sequence):
        cfg = self.cfg
        return build_data_loader(cfg, sampler_type="SequentialSampler", data_source=list(items),
                                 batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, tfm=build_transform(cfg, is_train=False),
                                 is_train=False)

    @torch.no_grad()
    def test_view_features(self, clip_model, items: Sequence, backbone: str) -> torch.Tensor:
        """(N, D) unit test-view features of ``items`` under ``clip_model`` (from the shared feature cache)."""
        return cached_split_features(self.cfg, clip_model, self.dataset_key, "train", list(items),
                                     self._test_view_loader(items), self.device, backbone=backbone)

    def select(self, probabilities: torch.Tensor, train: Sequence) -> torch.Tensor:
        node = self.node
        if node.SUBSET == "confident":
            shots = select_shots(probabilities, node.SHOTS)
            how = f"the {node.SHOTS} most confident per zero-shot predicted class (label-free)"
        else:
            generator = torch.Generator().manual_seed(max(self.cfg.SEED, 0))
            shots = random_shots_per_true_class([item.label for item in train], node.SHOTS, generator)
            how = (f"{node.SHOTS} random images of each TRUE class: SUBSET random_per_true_class USES CLASS "
                   f"MEMBERSHIP (Tip-Adapter's split), not a label-free run")
            print(f"WARNING: NtUA {how}")
        print(f"NtUA cache: {len(shots)} of {len(train)} train images, {how}")
        return shots.to(probabilities.device)

    def teacher_probabilities(self, items: Sequence, student_features: torch.Tensor) -> torch.Tensor:
        """(M, C) teacher distribution q = softmax(s_T f_T W_T^T / T_kd) of the cached images (test view);
        ``student_features`` (M, D) are reused when the teacher is the student backbone."""
        node, cfg = self.node, self.cfg
        name = node.TEACHER or cfg.MODEL.BACKBONE.NAME
        scale = float(node.TEACHER_LOGIT_SCALE) / float(node.KD_TEMPERATURE)
        if name == cfg.MODEL.BACKBONE.NAME:
            print(f"NtUA rectification: the teacher is the student backbone {name} (values and weights unchanged "
                  f"up to TEACHER_LOGIT_SCALE / KD_TEMPERATURE)")
            return torch.softmax(scale * student_features @ self.text_classifier.t(), dim=-1)
        from clipkit.clip import load_clip

        print(f"NtUA rectification: loading the teacher CLIP {name}")
        teacher = load_clip(name, cfg.MODEL.BACKBONE.DOWNLOAD_ROOT).to(self.device).eval().requires_grad_(False)
        resolution = getattr(teacher.visual, "input_resolution", None)
        if resolution is not None and tuple(cfg.INPUT.SIZE) != (resolution, resolution):
            raise ValueError(f"TRAINER.NTUA.TEACHER {name!r} takes {resolution} px images but INPUT.SIZE is "
                             f"{tuple(cfg.INPUT.SIZE)}: choose a teacher of the student's resolution (e.g. ViT-L/14)")
        with torch.no_grad():
            classifier = classifier_from_templates(teacher, self.classnames, self.templates())
            features = self.test_view_features(teacher, items, name)
        del teacher
        return torch.softmax(scale * features @ classifier.t(), dim=-1)

    def augmented_view_features(self, items: Sequence) -> torch.Tensor:
        """(M, A, D) raw CLIP features of AUGMENT_EPOCHS random-resized-crop + flip views per cached image (cached
        on disk per images and seed)."""
        cfg, node = self.cfg, self.node
        height, width = cfg.INPUT.SIZE
        if height != width:
            raise ValueError(f"NtUA's augmented views are square: INPUT.SIZE must be square, got "
                             f"{tuple(cfg.INPUT.SIZE)}")
        seed = int(node.AUGMENT_SEED) if node.AUGMENT_SEED >= 0 else max(int(cfg.SEED), 0)
        mean, std = list(cfg.INPUT.PIXEL_MEAN), list(cfg.INPUT.PIXEL_STD)
        transform = describe_resized_crop_views(height, node.AUGMENT_SCALE, node.AUGMENT_RATIO, node.AUGMENT_HFLIP,
                                                mean, std)
        key = split_cache_key(cfg, self.clip_model, self.dataset_key, "train", items, transform,
                              num_crops=node.AUGMENT_EPOCHS, crop_seed=seed)
        views = ResizedCropViewsDataset([item.impath for item in items], node.AUGMENT_EPOCHS, height,
                                        node.AUGMENT_SCALE, node.AUGMENT_RATIO, node.AUGMENT_HFLIP, seed)
        stored = feature_cache.load_or_compute(
            key,
            lambda: feature_cache.encode_square_crops(self.clip_model, views, mean, std, self.device,
                                                      batch_size=cfg.DATALOADER.TEST.BATCH_SIZE,
                                                      num_workers=cfg.DATALOADER.NUM_WORKERS),
            enabled=self._cache_enabled(),
        )
        return stored["crop_features"].to(self.device)

    def _log_cache_statistics(self, student_probs: torch.Tensor, values: torch.Tensor) -> None:
        """Subset statistics; the true labels enter nothing but these logged accuracies."""
        truth = torch.tensor([item.label for item in self.shot_items], device=values.device)
        student_labels = student_probs.argmax(dim=-1)
        cache_labels = values.argmax(dim=-1)
        self.cache_statistics = {
            "cache_size": len(self.shot_items),
            "cache_classes_covered": int(torch.unique(cache_labels).numel()),
            "cache_student_pl_accuracy": 100.0 * (student_labels == truth).float().mean().item(),
            "cache_value_accuracy": 100.0 * (cache_labels == truth).float().mean().item(),
            "cache_rectified_changed": 100.0 * (cache_labels != student_labels).float().mean().item(),
            "cache_mean_weight": self.cache.weights.mean().item(),
        }
        print("NtUA cache (accuracies use the true labels, logging only): "
              + ", ".join(f"{k} {v:.4g}" for k, v in self.cache_statistics.items()))

    # -------------------------------------------------------------------------------------------- one step
    def forward_backward(self, batch):
        index = batch["index"].to(self.device)
        features = self.train_views[self.epoch % self.train_views.shape[0]][index]
        weights = self.cache.weights[index] if self.node.LOSS_WEIGHTS else None
        targets = self.cache.values[index]
        loss = finetune_loss(self.cache, features, targets, weights)
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self.optim.step()
        self.update_lr()  # per-iteration cosine
        with torch.no_grad():
            agreement = (self.cache(features).argmax(dim=1) == targets.argmax(dim=1)).float().mean().item()
        return {"loss": loss.detach(), "pl_agreement": 100.0 * agreement}

    def before_epoch(self):
        super().before_epoch()
        self.train_loader_x.sampler.epoch = self.epoch

    def after_epoch(self):
        self.log_epoch_metrics(dict(self.cache_statistics))
        super().after_epoch()  # test accuracy per epoch (TEST.EVAL_EVERY_EPOCH), checkpoint

    # ----------------------------------------------------------------------------------------------- testing
    def image_features(self, split, data_source, loader):
        if split not in self._split_features:  # read once per run (the finetune mode tests after every epoch)
            self._split_features[split] = super().image_features(split, data_source, loader)
        return self._split_features[split]

    @torch.no_grad()
    def split_logits(self, split, data_source, loader) -> List[torch.Tensor]:
        features = self.image_features(split, data_source, loader)
        chunk = self.cfg.DATALOADER.TEST.BATCH_SIZE
        return [torch.cat([self.cache(features[start : start + chunk]) for start in range(0, len(features), chunk)])]

    @torch.no_grad()
    def model_inference(self, images):
        return self.cache(F.normalize(self.clip_model.encode_image(images).float(), dim=-1))

    def run_summary(self) -> Dict:
        node = self.node
        return dict(self.cache_statistics, mode=node.MODE, reconstruction=True,
                    subset_uses_class_membership=node.SUBSET == "random_per_true_class",
                    teacher=(node.TEACHER or self.cfg.MODEL.BACKBONE.NAME) if node.RECTIFY else "",
                    trainable_parameters=0 if self.training_free else int(self.cache.keys.numel()))


__all__ = ["EpochPermutation", "NtUA", "cache_entries", "finetune_loss", "random_shots_per_true_class", "select_shots"]
