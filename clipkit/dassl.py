"""The only module that imports Dassl. Every other file takes Dassl names from here.

Backend selection (environment variable ``CLIPKIT_ENGINE``):
  * ``auto`` (default): real Dassl.pytorch when ``import dassl`` works, otherwise clipkit's internal engine;
  * ``dassl``: real Dassl (ImportError with install instructions if it is missing);
  * ``internal``: ``clipkit.engine`` even when Dassl is installed.
``BACKEND`` says which one is live ("dassl" or "internal"). One process uses one backend: registries are global.

With real Dassl, six shims for modern torch / NumPy are applied at import, each reported on stderr:
  1. warmup schedulers: drop the ``verbose`` argument removed from torch's LRScheduler, and save the successor's
     state instead of the pickled successor (which also fixes the LR freezing after resume);
  2. ``load_checkpoint``: ``torch.load(weights_only=False)`` for the engine's own (trusted, local) checkpoints;
  3. ``TrainerBase.load_model``: accept checkpoints whose ``val_result`` is None (every non-best checkpoint);
  4. ``build_transform``: reject the augmentations that use ``np.int`` with an error naming INPUT.TRANSFORMS;
  5. ``DatasetWrapper``: an unreadable image raises an error naming the file;
  6. ``compute_accuracy``: top-k for k > 1 (Dassl's ``.view(-1)`` fails on current torch).
"""

from __future__ import annotations

import os
import sys

ENGINE_ENV = "CLIPKIT_ENGINE"
ENGINE_CHOICES = ("auto", "dassl", "internal")

SHIMS_APPLIED = []  # one line per shim patched into real Dassl


def _requested_engine() -> str:
    engine = os.environ.get(ENGINE_ENV, "auto").strip().lower() or "auto"
    if engine not in ENGINE_CHOICES:
        raise ValueError(f"{ENGINE_ENV}={engine!r} is not one of {ENGINE_CHOICES}; unset it or pick one of them.")
    return engine


def _dassl_importable(engine: str) -> bool:
    if engine == "internal":
        return False
    try:
        import dassl  # noqa: F401
    except ImportError as err:
        if engine == "dassl":
            raise ImportError(
                f"{ENGINE_ENV}=dassl but Dassl.pytorch cannot be imported ({err}). Install it with "
                f"`pip install --no-build-isolation -e <Dassl.pytorch checkout>` or set {ENGINE_ENV}=internal."
            ) from err
        return False
    return True


def _report_shim(line: str) -> None:
    SHIMS_APPLIED.append(line)
    print(f"[clipkit.dassl] shim: {line}", file=sys.stderr)


def _apply_dassl_shims() -> None:
    """Patch real Dassl 0.6.x for torch >= 2.6 and NumPy >= 1.24 (see the module docstring)."""
    import dassl.data.data_manager as dassl_data_manager
    import dassl.data.transforms as dassl_transforms_pkg
    import dassl.data.transforms.transforms as dassl_transforms
    import dassl.engine.trainer as dassl_trainer
    import dassl.optim.lr_scheduler as dassl_lr
    import dassl.utils as dassl_utils
    import dassl.utils.torchtools as dassl_torchtools
    from torch.optim.lr_scheduler import LRScheduler

    from .engine import optim as own_optim
    from .engine import trainer as own_trainer
    from .engine import transforms as own_transforms
    from .engine import utils as own_utils

    # 1. warmup schedulers
    def warmup_init(self, optimizer, successor, warmup_epoch, last_epoch=-1, verbose=False):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        LRScheduler.__init__(self, optimizer, last_epoch)

    base = dassl_lr._BaseWarmupScheduler
    base.__init__ = warmup_init
    base.state_dict = own_optim._BaseWarmupScheduler.state_dict
    base.load_state_dict = own_optim._BaseWarmupScheduler.load_state_dict
    _report_shim("warmup schedulers: dropped the removed `verbose` argument; scheduler state stores the successor's "
                 "state_dict (fixes resume and the LR freeze after resume)")

    # 2. checkpoint loading
    for module in (dassl_torchtools, dassl_utils, dassl_trainer):
        module.load_checkpoint = own_utils.load_checkpoint
    _report_shim("load_checkpoint: torch.load(weights_only=False) for the engine's own checkpoints")

    # 3. load_model with val_result=None
    def load_model(self, directory, epoch=None):
        return own_trainer.TrainerBase.load_model(self, directory, epoch)

    dassl_trainer.TrainerBase.load_model = load_model
    dassl_trainer.TrainerBase._print_load_line = staticmethod(own_trainer.TrainerBase._print_load_line)
    _report_shim("TrainerBase.load_model: accepts checkpoints with val_result=None")

    # 4. transforms using np.int
    original_build_transform = dassl_transforms.build_transform

    def build_transform(cfg, is_train=True, choices=None):
        own_transforms.reject_broken_choices(cfg.INPUT.TRANSFORMS if choices is None else choices)
        return original_build_transform(cfg, is_train=is_train, choices=choices)

    for module in (dassl_transforms, dassl_transforms_pkg, dassl_data_manager):
        module.build_transform = build_transform
    _report_shim(f"build_transform: rejects {list(own_transforms.BROKEN_IN_DASSL)} (np.int removed in NumPy 1.24)")

    # 5. unreadable images name the file
    dassl_data_manager.read_image = own_utils.read_image
    _report_shim("DatasetWrapper: read_image errors name the file")

    # 6. top-k accuracy: Dassl's .view(-1) on a transposed slice raises for k > 1 on current torch
    import dassl.metrics as dassl_metrics
    import dassl.metrics.accuracy as dassl_accuracy

    from .engine import evaluation as own_evaluation

    for module in (dassl_metrics, dassl_accuracy):
        module.compute_accuracy = own_evaluation.compute_accuracy
    _report_shim("compute_accuracy: top-k with k > 1 (view -> reshape)")


_ENGINE = _requested_engine()

if _dassl_importable(_ENGINE):
    BACKEND = "dassl"
    _apply_dassl_shims()
    from dassl.config import clean_cfg, get_cfg_default
    from dassl.data import DataManager, DatasetWrapper
    from dassl.data.data_manager import build_data_loader
    from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum, build_dataset
    from dassl.data.transforms import INTERPOLATION_MODES, build_transform
    from dassl.engine import TRAINER_REGISTRY, SimpleTrainer, TrainerBase, TrainerX, TrainerXU, build_trainer
    from dassl.evaluation import EVALUATOR_REGISTRY, Classification, EvaluatorBase, build_evaluator
    from dassl.metrics import compute_accuracy  # the shimmed one
    from dassl.optim import build_lr_scheduler, build_optimizer
    from dassl.utils import (
        AverageMeter,
        MetricMeter,
        Registry,
        check_availability,
        check_isfile,
        collect_env_info,
        count_num_param,
        listdir_nohidden,
        load_checkpoint,
        load_pretrained_weights,
        mkdir_if_missing,
        read_image,
        read_json,
        resume_from_checkpoint,
        save_checkpoint,
        set_random_seed,
        setup_logger,
        tolist_if_not,
        write_json,
    )
else:
    BACKEND = "internal"
    from .engine import (  # noqa: F401
        DATASET_REGISTRY,
        EVALUATOR_REGISTRY,
        INTERPOLATION_MODES,
        TRAINER_REGISTRY,
        AverageMeter,
        Classification,
        DataManager,
        DatasetBase,
        DatasetWrapper,
        Datum,
        EvaluatorBase,
        MetricMeter,
        Registry,
        SimpleTrainer,
        TrainerBase,
        TrainerX,
        TrainerXU,
        build_data_loader,
        build_dataset,
        build_evaluator,
        build_lr_scheduler,
        build_optimizer,
        build_trainer,
        build_transform,
        check_availability,
        check_isfile,
        clean_cfg,
        collect_env_info,
        compute_accuracy,
        count_num_param,
        get_cfg_default,
        listdir_nohidden,
        load_checkpoint,
        load_pretrained_weights,
        mkdir_if_missing,
        read_image,
        read_json,
        resume_from_checkpoint,
        save_checkpoint,
        set_random_seed,
        setup_logger,
        tolist_if_not,
        write_json,
    )

from yacs.config import CfgNode as CN  # noqa: E402

__all__ = [
    "BACKEND", "CN", "SHIMS_APPLIED", "AverageMeter", "Classification", "DATASET_REGISTRY", "DataManager",
    "DatasetBase", "DatasetWrapper", "Datum", "EVALUATOR_REGISTRY", "EvaluatorBase", "INTERPOLATION_MODES",
    "MetricMeter", "Registry", "SimpleTrainer", "TRAINER_REGISTRY", "TrainerBase", "TrainerX", "TrainerXU",
    "build_data_loader", "build_dataset", "build_evaluator", "build_lr_scheduler", "build_optimizer", "build_trainer",
    "build_transform", "check_availability", "check_isfile", "clean_cfg", "collect_env_info", "compute_accuracy",
    "count_num_param", "get_cfg_default", "listdir_nohidden", "load_checkpoint", "load_pretrained_weights",
    "mkdir_if_missing", "read_image", "read_json", "resume_from_checkpoint", "save_checkpoint", "set_random_seed",
    "setup_logger", "tolist_if_not", "write_json",
]
