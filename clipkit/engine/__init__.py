"""clipkit's internal engine: a clean-room implementation of the Dassl.pytorch API that CLIP trainers use.

Same names, signatures, hook order, batch dicts, checkpoint layout and printed lines as Dassl 0.6.3 (see
DEVIATIONS.md (engine section) for the documented differences). Do not import this package from trainers: import from
``clipkit.dassl``, which picks real Dassl or this engine.
"""

from .config import clean_cfg, get_cfg_default
from .data import (
    DATASET_REGISTRY,
    DataManager,
    DatasetBase,
    DatasetWrapper,
    Datum,
    build_data_loader,
    build_dataset,
    build_sampler,
)
from .evaluation import EVALUATOR_REGISTRY, Classification, EvaluatorBase, build_evaluator, compute_accuracy
from .optim import (
    ConstantWarmupScheduler,
    LinearWarmupScheduler,
    build_lr_scheduler,
    build_optimizer,
)
from .registry import Registry, check_availability
from .trainer import TRAINER_REGISTRY, SimpleTrainer, TrainerBase, TrainerX, TrainerXU, build_trainer
from .transforms import INTERPOLATION_MODES, build_transform
from .utils import (
    AverageMeter,
    MetricMeter,
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

__all__ = [
    "AverageMeter", "Classification", "ConstantWarmupScheduler", "DATASET_REGISTRY", "DataManager", "DatasetBase",
    "DatasetWrapper", "Datum", "EVALUATOR_REGISTRY", "EvaluatorBase", "INTERPOLATION_MODES", "LinearWarmupScheduler",
    "MetricMeter", "Registry", "SimpleTrainer", "TRAINER_REGISTRY", "TrainerBase", "TrainerX", "TrainerXU",
    "build_data_loader", "build_dataset", "build_evaluator", "build_lr_scheduler", "build_optimizer", "build_sampler",
    "build_trainer", "build_transform", "check_availability", "check_isfile", "clean_cfg", "collect_env_info",
    "compute_accuracy", "count_num_param", "get_cfg_default", "listdir_nohidden", "load_checkpoint",
    "load_pretrained_weights", "mkdir_if_missing", "read_image", "read_json", "resume_from_checkpoint",
    "save_checkpoint", "set_random_seed", "setup_logger", "tolist_if_not", "write_json",
]
