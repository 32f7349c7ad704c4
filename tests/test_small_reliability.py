"""Small silent or unclear cases (issue 13, point 8), one test each: empty tiny class folder, description hints and
key matching, corrupt / partial CLIP files, stale feature cache after images change in place, the CSV seed flag."""

import json
import os
import time

import numpy as np
import pytest
import torch

from clipkit import feature_cache as fc
from clipkit.text import descriptions as desc
from tests.conftest import write_image


# ------------------------------------------------------------------------------------------------- tiny benchmark
def test_an_empty_tiny_class_folder_is_an_error(tmp_path):
    import shutil

    from clipkit.tinybench import generate

    import datasets.tiny  # noqa: F401  (registers TinyFineGrained)
    from clipkit.dassl import DATASET_REGISTRY, get_cfg_default

    generate.generate_dataset(str(tmp_path), generate.BenchmarkConfig(train_per_class=1, test_per_class=1), log=None)
    folder = tmp_path / generate.DATASET_DIRNAME
    metadata = generate.load_metadata(str(folder))
    empty = folder / "images" / "test" / metadata["classes"][-1]["dir"]
    shutil.rmtree(empty)
    empty.mkdir()
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = str(tmp_path)
    cfg.DATASET.NUM_SHOTS = -1
    with pytest.raises(FileNotFoundError, match="class folder\\(s\\) hold no .png image") as info:
        DATASET_REGISTRY.get("TinyFineGrained")(cfg)
    assert str(empty) in str(info.value) and "clipkit.tinybench.prepare" in str(info.value)


# --------------------------------------------------------------------------------------------------- descriptions
def test_missing_descriptions_hint_only_offers_a_download_that_accepts_the_dataset(tmp_path):
    from yacs.config import CfgNode as CN

    cfg = CN({"DATASET": CN({"DESCRIPTIONS": ""})})

    class Reader:
        classnames = ["a"]

        def __init__(self, key, path):
            self.dataset_key, self._path = key, path

        def default_descriptions_path(self):
            return self._path

    missing = str(tmp_path / "none.json")
    with pytest.raises(FileNotFoundError) as info:
        desc.resolve_descriptions(cfg, Reader("tiny", missing))
    assert "--dataset tiny" not in str(info.value) and "DATASET.DESCRIPTIONS" in str(info.value)
    with pytest.raises(FileNotFoundError) as info:
        desc.resolve_descriptions(cfg, Reader("dtd", missing))
    assert "download_descriptions.py --dataset dtd" in str(info.value)


def test_word_order_matching_never_takes_a_key_an_alias_or_another_class_claims():
    # "car side" is CuPL's "side of a car" (alias); the file's unrelated "side car" key must not win by word order
    matched, unmatched = desc.match_class_keys(["car side"], ["side car", "side of a car"])
    assert matched == {"car side": "side of a car"} and not unmatched
    # a key claimed exactly by one class is not handed to another class by word order
    matched, unmatched = desc.match_class_keys(["sea lion", "lion sea"], ["sea lion"])
    assert matched == {"sea lion": "sea lion"} and unmatched == ["lion sea"]
    # the documented use still works
    matched, _ = desc.match_class_keys(["2012 Ram C/V Cargo Van Minivan"], ["Ram CV Cargo Van Minivan 2012"])
    assert matched == {"2012 Ram C/V Cargo Van Minivan": "Ram CV Cargo Van Minivan 2012"}


# ------------------------------------------------------------------------------------------------------ CLIP files
class PickledThing:
    """A Python object in a checkpoint: torch.load(weights_only=True) refuses it with its weights_only advice."""


def test_a_corrupt_clip_checkpoint_gets_a_clear_message(tiny_clip_path, tmp_path):
    from clipkit.clip import load_clip

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(open(tiny_clip_path, "rb").read()[:5000])
    pickled = tmp_path / "pickled.pt"
    torch.save({"visual.conv1.weight": torch.zeros(1), "note": PickledThing()}, pickled)
    for path in (truncated, pickled):
        with pytest.raises(RuntimeError) as info:
            load_clip(str(path))
        message = str(info.value)
        assert str(path) in message and "Download it again" in message
        assert "weights_only" not in message and info.value.__cause__ is None


def test_a_partial_openai_download_is_fetched_again(tmp_path, monkeypatch, capsys):
    import hashlib

    import clipkit.clip.load as load

    payload = b"the real weights"
    sha = hashlib.sha256(payload).hexdigest()
    url = f"https://example.invalid/models/{sha}/Fake-B-32.pt"
    monkeypatch.setitem(load.openai_clip.clip._MODELS, "Fake-B/32", url)
    monkeypatch.setattr(load, "OPENAI_MODEL_NAMES", load.OPENAI_MODEL_NAMES + ("Fake-B/32",))
    downloads = []

    def fake_download(download_url, root):
        downloads.append(download_url)
        path = os.path.join(root, os.path.basename(download_url))
        open(path, "wb").write(payload)
        return path

    monkeypatch.setattr(load.openai_clip.clip, "_download", fake_download)
    target = tmp_path / "Fake-B-32.pt"
    target.write_bytes(payload[:5])  # an interrupted download
    with pytest.raises(FileNotFoundError, match="partial or corrupt download"):
        load.resolve_checkpoint("Fake-B/32", str(tmp_path), download=False)
    assert load.resolve_checkpoint("Fake-B/32", str(tmp_path)) == str(target)
    assert downloads == [url] and target.read_bytes() == payload and "downloading it again" in capsys.readouterr().out
    assert load.resolve_checkpoint("Fake-B/32", str(tmp_path)) == str(target) and len(downloads) == 1  # intact


# --------------------------------------------------------------------------------------------------- feature cache
def test_images_changed_in_place_miss_the_feature_cache(tmp_path):
    rng = np.random.default_rng(0)
    paths = [write_image(str(tmp_path / "img" / f"{i}.png"), rng) for i in range(3)]

    def key():
        return fc.feature_cache_key(backbone="tiny", checkpoint_digest="0" * 16, dataset="d", split="test",
                                    transform="t", image_paths=paths)

    calls = []

    def compute():
        calls.append(1)
        return {"features": torch.full((3, 4), float(len(calls)))}

    quiet = dict(root=str(tmp_path / "cache"), log=lambda message: None)
    fc.load_or_compute(key(), compute, **quiet)
    fc.load_or_compute(key(), compute, **quiet)
    assert len(calls) == 1  # a hit
    time.sleep(0.01)
    write_image(paths[1], np.random.default_rng(1))  # same path, new pixels
    features = fc.load_or_compute(key(), compute, **quiet)["features"]
    assert len(calls) == 2 and float(features[0, 0]) == 2.0  # recomputed, not the stale features


# ----------------------------------------------------------------------------------------------------- CSV output
def test_csv_keeps_the_incomplete_seed_flag(tmp_path):
    import output_parser as op

    for seed in (1, 2, 3):
        run = tmp_path / "out" / "vit_b32" / "dtd" / "UPL" / f"seed{seed}"
        run.mkdir(parents=True)
        if seed < 3:
            (run / "results.json").write_text(json.dumps({
                "schema_version": 1, "method": "UPL", "dataset": "dtd", "backbone": "ViT-B/32", "seed": seed,
                "accuracy_last": 40.0 + seed, "accuracy_best": 40.0 + seed, "best_epoch": 1,
                "best_is_test_selection": False, "macro_f1": 1.0, "per_class_accuracy": {}, "num_test": 1,
                "config_digest": "x", "wall_time_s": 1.0, "peak_memory_mb": 1.0, "epochs": []}))
    table = op.build_table(op.find_runs(str(tmp_path / "out")), "vit_b32", "accuracy", "last", seeds=[1, 2, 3])
    lines = op.render(table, "csv", "accuracy", "last").splitlines()
    header, row = lines[0].split(","), lines[1].split(",")
    assert row[header.index("dtd")] == "41.50" and row[header.index("dtd_seeds")] == "2/3"


def test_parser_tells_running_from_interrupted_by_the_lock_file(tmp_path):
    import subprocess
    import sys

    import output_parser as op

    run = tmp_path / "out" / "vit_b32" / "dtd" / "UPL" / "seed1"
    run.mkdir(parents=True)
    (run / ".lock").write_text(f"pid {os.getpid()} on {os.uname().nodename}\n")
    assert op.read_run(str(run)).activity == f"running (pid {os.getpid()})"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (run / ".lock").write_text(f"pid {gone.pid} on {os.uname().nodename}\n")
    assert op.read_run(str(run)).activity == "interrupted"
    table = op.build_table(op.find_runs(str(tmp_path / "out")), "vit_b32", "accuracy", "last")
    assert any("no result yet (interrupted)" in note for note in table.notes)
