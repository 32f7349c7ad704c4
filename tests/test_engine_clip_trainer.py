"""CLIPTrainer base and results.json: text resources, CLIP loading, per-epoch test selection, schema, atomic I/O."""

import json
import os

import pytest
import torch

from clipkit import results as results_io
from clipkit.dassl import build_trainer
from clipkit.trainer_base import RUN_RECORD_FILE, CLIPTrainer
from tests.conftest import write_descriptions
from tests.plugins.trivial_trainer import tiny_run_cfg


@pytest.fixture
def root(tiny_image_folder):
    root, classnames = tiny_image_folder
    write_descriptions(root, classnames)
    return root


def test_results_json_schema_and_per_epoch_test_selection(root, tmp_path):
    trainer = build_trainer(tiny_run_cfg(root, tmp_path, TEST__EVAL_EVERY_EPOCH=True, SEED=4))
    assert isinstance(trainer, CLIPTrainer)
    trainer.train()
    data = results_io.read_results(str(tmp_path / "results.json"))
    assert set(results_io.REQUIRED_KEYS) <= set(data)
    assert data["method"] == "TrivialProbe" and data["dataset"] == "test_folder" and data["seed"] == 4
    assert [r["epoch"] for r in data["epochs"]] == [1, 2, 3]
    accuracies = [r["accuracy"] for r in data["epochs"]]
    assert data["accuracy_best"] == max(accuracies) and data["best_is_test_selection"] is True
    assert data["epochs"][data["best_epoch"] - 1]["accuracy"] == max(accuracies)
    assert data["accuracy_last"] == pytest.approx(accuracies[-1])  # final test = last epoch's model
    assert all("train_acc" in r for r in data["epochs"])
    assert data["num_test"] == 6 and set(data["per_class_accuracy"]) == {"blue", "green", "red"}
    assert data["config_digest"] == results_io.config_digest(trainer.cfg) and len(data["config_digest"]) == 64
    assert data["wall_time_s"] > 0 and data["peak_memory_mb"] > 0


def test_without_per_epoch_test_best_is_last(root, tmp_path):
    build_trainer(tiny_run_cfg(root, tmp_path, OPTIM__MAX_EPOCH=2)).train()
    data = results_io.read_results(str(tmp_path / "results.json"))
    assert data["best_is_test_selection"] is False and data["accuracy_best"] == data["accuracy_last"]
    assert data["best_epoch"] == 2 and [set(r) for r in data["epochs"]] == [{"epoch", "train_acc"}] * 2


def test_best_val_reports_the_checkpoint_epoch(root, tmp_path):
    build_trainer(tiny_run_cfg(root, tmp_path, OPTIM__MAX_EPOCH=3, TEST__FINAL_MODEL="best_val")).train()
    data = results_io.read_results(str(tmp_path / "results.json"))
    best = torch.load(tmp_path / "probe" / "model-best.pth.tar", weights_only=True)
    assert data["best_epoch"] == best["epoch"] and data["best_is_test_selection"] is False


def test_relaunch_of_finished_run_rewrites_identical_results(root, tmp_path):
    build_trainer(tiny_run_cfg(root, tmp_path, OPTIM__MAX_EPOCH=2, TEST__EVAL_EVERY_EPOCH=True)).train()
    first = (tmp_path / "results.json").read_text()
    build_trainer(tiny_run_cfg(root, tmp_path, OPTIM__MAX_EPOCH=2, TEST__EVAL_EVERY_EPOCH=True)).train()
    assert (tmp_path / "results.json").read_text() == first
    assert os.path.isfile(tmp_path / RUN_RECORD_FILE)


def test_text_resources_and_clip_loading(root, tmp_path, tiny_clip_path):
    trainer = build_trainer(tiny_run_cfg(root, tmp_path, trainer="TrivialZeroShot",
                                         MODEL__BACKBONE__NAME=tiny_clip_path, INPUT__SIZE=(64, 64)))
    assert trainer.dataset_key == "test_folder"
    assert trainer.classnames == ["blue", "green", "red"]
    assert trainer.templates() == ["a photo of a {}.", "a picture of the color {}."]
    assert next(trainer.clip_model.parameters()).device == trainer.device
    assert trainer.text_classifier.shape == (3, 64)
    accuracy = trainer.test()
    path = trainer.write_results()
    data = results_io.read_results(path)
    assert data["accuracy_last"] == pytest.approx(accuracy) and data["best_epoch"] == 0
    assert data["backbone"] == tiny_clip_path and data["epochs"] == []


def test_descriptions_come_from_the_reader(root, tmp_path, tiny_clip_path):
    trainer = build_trainer(tiny_run_cfg(root, tmp_path, trainer="TrivialZeroShot",
                                         MODEL__BACKBONE__NAME=tiny_clip_path, INPUT__SIZE=(64, 64)))
    descriptions = trainer.descriptions()
    assert set(descriptions) == {"blue", "green", "red"} and all(len(v) == 3 for v in descriptions.values())


def test_missing_dataset_key_error_names_the_reader(root, tmp_path, tiny_clip_path):
    trainer = build_trainer(tiny_run_cfg(root, tmp_path, OPTIM__MAX_EPOCH=1))
    type(trainer.dm.dataset).dataset_key = ""
    try:
        with pytest.raises(AttributeError, match="TestImageFolder has no `dataset_key`"):
            trainer.dataset_key
    finally:
        type(trainer.dm.dataset).dataset_key = "test_folder"


def test_load_clip_needs_a_backbone_name(root, tmp_path):
    trainer = build_trainer(tiny_run_cfg(root, tmp_path))
    with pytest.raises(ValueError, match="MODEL.BACKBONE.NAME is empty"):
        trainer.load_clip()


def test_results_io_errors_and_atomic_write(tmp_path):
    path = str(tmp_path / "results.json")
    with pytest.raises(FileNotFoundError, match="did not finish"):
        results_io.read_results(path)
    with pytest.raises(ValueError, match=r"lacks the keys \['dataset'"):
        results_io.write_results({"method": "X"}, path)
    assert not os.path.exists(path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="results.json is not valid JSON"):
        results_io.read_results(path)
    record = {key: 0 for key in results_io.REQUIRED_KEYS}
    results_io.write_results(record, path)
    assert json.loads((tmp_path / "results.json").read_text())["schema_version"] == results_io.SCHEMA_VERSION
    assert os.listdir(tmp_path) == ["results.json"]  # no temporary file left behind


def test_peak_memory_is_positive():
    from clipkit.trainer_base import peak_memory_mb

    assert peak_memory_mb(torch.device("cpu")) > 10
