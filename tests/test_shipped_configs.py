"""Every shipped trainer config merges with every shipped dataset config the way train.py merges them."""

import glob
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINER_CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "trainers", "*", "*.yaml")))
DATASET_CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "datasets", "*.yaml")))
NOT_BACKBONE_FILES = ("dataset_overrides.yaml",)


def _setup_cfg(trainer, dataset_config, trainer_config):
    import train
    from clipkit.plugins import import_all_plugins

    import_all_plugins()
    argv = ["--root", "/data", "--trainer", trainer, "--dataset-config-file", dataset_config,
            "--config-file", trainer_config, "--output-dir", "/tmp/unused"]
    return train.setup_cfg(train.build_parser().parse_args(argv))


@pytest.mark.parametrize("trainer_config", [p for p in TRAINER_CONFIGS if os.path.basename(p) not in NOT_BACKBONE_FILES],
                         ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs", "trainers")))
def test_trainer_config_merges_with_every_dataset(trainer_config):
    from clipkit.dassl import TRAINER_REGISTRY
    from clipkit.plugins import import_all_plugins

    import_all_plugins()
    trainer = os.path.basename(os.path.dirname(trainer_config))
    assert trainer in TRAINER_REGISTRY.registered_names(), f"{trainer_config}: no registered trainer {trainer!r}"
    backbone = os.path.splitext(os.path.basename(trainer_config))[0]
    datasets = [p for p in DATASET_CONFIGS if (os.path.basename(p) == "tiny.yaml") == (backbone == "tiny")]
    assert datasets
    for dataset_config in datasets:
        cfg = _setup_cfg(trainer, dataset_config, trainer_config)
        assert cfg.TRAINER.NAME == trainer and cfg.MODEL.BACKBONE.NAME

