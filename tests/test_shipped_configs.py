"""Every shipped trainer config merges with every shipped dataset config the way train.py merges them."""

import glob
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINER_CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "trainers", "*", "*.yaml")))
DATASET_CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "datasets", "*.yaml")))
NOT_BACKBONE_FILES = ("dataset_overrides.yaml", "official_overrides.yaml")


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
        if cfg.SLURM.CPUS_PER_TASK:  # a Slurm task asks for the main process + its loader workers
            assert cfg.SLURM.CPUS_PER_TASK == cfg.DATALOADER.NUM_WORKERS + 1, trainer_config



OVERRIDE_FILES = sorted(glob.glob(os.path.join(REPO, "configs", "trainers", "*", "*overrides.yaml")))


@pytest.mark.parametrize("overrides_file", OVERRIDE_FILES,
                         ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs", "trainers")))
def test_dataset_override_opts_merge_into_the_method_config(overrides_file):
    """Every per-dataset opts list of an overrides file names existing keys with valid values for its dataset."""
    import yaml

    method_dir = os.path.dirname(overrides_file)
    trainer = os.path.basename(method_dir)
    with open(overrides_file) as handle:
        overrides = yaml.safe_load(handle) or {}
    for dataset, opts in overrides.items():
        dataset_config = os.path.join(REPO, "configs", "datasets", f"{dataset}.yaml")
        assert os.path.isfile(dataset_config), f"{overrides_file}: unknown dataset key {dataset!r}"
        cfg = _setup_cfg(trainer, dataset_config, os.path.join(method_dir, "vit_b32.yaml"))
        cfg.defrost()
        cfg.merge_from_list([str(o) for o in opts])
