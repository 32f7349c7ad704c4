"""Config contract: Dassl's default tree, yacs strictness (types, unknown keys), toolkit keys."""

import pytest

from clipkit.config import extend_cfg
from clipkit.dassl import clean_cfg, get_cfg_default


def test_defaults_match_dassl():
    cfg = get_cfg_default()
    assert cfg.OUTPUT_DIR == "./output" and cfg.SEED == -1 and cfg.USE_CUDA is True
    assert cfg.INPUT.SIZE == (224, 224) and cfg.INPUT.INTERPOLATION == "bilinear"
    assert cfg.DATALOADER.NUM_WORKERS == 4 and cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 32
    assert cfg.OPTIM.NAME == "adam" and cfg.OPTIM.LR == 0.0003 and cfg.OPTIM.WEIGHT_DECAY == 5e-4
    assert cfg.OPTIM.LR_SCHEDULER == "single_step" and cfg.OPTIM.STEPSIZE == (-1,) and cfg.OPTIM.MAX_EPOCH == 10
    assert cfg.OPTIM.WARMUP_EPOCH == -1 and cfg.OPTIM.WARMUP_TYPE == "linear" and cfg.OPTIM.WARMUP_RECOUNT is True
    assert cfg.TEST.EVALUATOR == "Classification" and cfg.TEST.FINAL_MODEL == "last_step"
    assert cfg.TRAIN.PRINT_FREQ == 10 and cfg.TRAIN.CHECKPOINT_FREQ == 0
    assert "FIXMATCH" in cfg.TRAINER and "MCD" in cfg.TRAINER  # Dassl's own trainer nodes, for equal dumps
    assert get_cfg_default() is not get_cfg_default()  # a fresh clone each call


@pytest.mark.parametrize(
    "key, value",
    [("OPTIM.LR", "1"), ("OPTIM.WEIGHT_DECAY", "0"), ("OPTIM.MAX_EPOCH", "5.0"), ("USE_CUDA", "'yes'")],
)
def test_type_mismatch_is_rejected(key, value):
    cfg = get_cfg_default()
    with pytest.raises(ValueError, match="Type mismatch"):
        cfg.merge_from_list([key, value])


def test_unknown_key_is_rejected_from_list_and_file(tmp_path):
    cfg = get_cfg_default()
    with pytest.raises(AssertionError, match="Non-existent key: TRAINER.FOO"):
        cfg.merge_from_list(["TRAINER.FOO", "1"])
    path = tmp_path / "bad.yaml"
    path.write_text("OPTIM:\n  LRR: 0.1\n")
    with pytest.raises(KeyError, match="Non-existent config key: OPTIM.LRR"):
        cfg.merge_from_file(str(path))


def test_list_becomes_tuple_and_frozen_cfg_is_immutable():
    cfg = get_cfg_default()
    cfg.merge_from_list(["INPUT.SIZE", "[32, 32]"])
    assert cfg.INPUT.SIZE == (32, 32)
    cfg.freeze()
    with pytest.raises(AttributeError):
        cfg.SEED = 3


def test_toolkit_keys_and_clean_cfg():
    cfg = get_cfg_default()
    extend_cfg(cfg)
    assert cfg.DATASET.SPLIT_PROTOCOL == "microclip" and cfg.TEST.RESULTS_FILE == "results.json"
    clean_cfg(cfg, "FixMatch")
    assert set(cfg.TRAINER.keys()) == {"NAME", "FIXMATCH"}
