"""Prompt templates, custom templates and the CuPL description loader (clipkit/text)."""

import json
import os

import pytest
from yacs.config import CfgNode as CN

from clipkit.text import (
    DescriptionsError,
    get_custom_template,
    get_templates,
    load_descriptions,
    resolve_descriptions,
    resolve_templates,
)

# CLIP's per-dataset prompt ensembles (baselines.md §2).
EXPECTED_TEMPLATE_COUNTS = {
    "imagenet": 80,
    "ucf101": 48,
    "caltech101": 34,
    "cifar100": 18,
    "resisc45": 18,
    "dtd": 8,
    "stanford_cars": 8,
    "sun397": 2,
    "fgvc_aircraft": 2,
    "food101": 1,
    "oxford_pets": 1,
    "oxford_flowers": 1,
    "birdsnap": 1,
}


@pytest.mark.parametrize("key,count", sorted(EXPECTED_TEMPLATE_COUNTS.items()))
def test_template_counts_and_format(key, count):
    templates = get_templates(key)
    assert len(templates) == count
    assert len(set(templates)) == count, "duplicate templates"
    assert all(t.count("{}") == 1 for t in templates)
    assert all(t.format("x") != t for t in templates)


def test_known_template_texts():
    assert get_templates("food101") == ["a photo of {}, a type of food."]
    assert get_templates("fgvc_aircraft")[0] == "a photo of a {}, a type of aircraft."
    assert "itap of my {}." in get_templates("imagenet")
    assert get_templates("ucf101")[0] == "a photo of a person {}."


def test_unknown_template_key_names_expected_file():
    with pytest.raises(FileNotFoundError, match=r"templates[/\\]no_such_set\.json"):
        get_templates("no_such_set")


def test_custom_templates_cover_every_dataset():
    for key in EXPECTED_TEMPLATE_COUNTS:
        assert get_custom_template(key).count("{}") == 1
    assert get_custom_template("oxford_pets") == "a photo of a {}, a type of pet."
    assert get_custom_template("dtd") == "{} texture."
    with pytest.raises(KeyError, match="no_such_set"):
        get_custom_template("no_such_set")


def test_reader_templates_override():
    class Reader:
        dataset_key = "dtd"

    class OwnTemplates(Reader):
        templates = ["a {} blob."]

    assert resolve_templates(Reader()) == get_templates("dtd")
    assert resolve_templates(OwnTemplates()) == ["a {} blob."]


def _write(path, table):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(table, f)
    return str(path)


def test_descriptions_match_renamed_keys(tmp_path):
    # Keys as in CuPL's published files; class names as our readers spell them.
    table = {
        "side of a car": ["a car seen from the side"],
        "off-center face": ["a face"],
        "yin and yang symbol": ["a round symbol"],
        "Allens Hummingbird": ["a small bird"],
        "Hand Stand Pushups": ["a person upside down"],
        "apartment building (outdoor)": ["a tall building"],
        "Ram CV Cargo Van Minivan 2012": ["a van"],
        "background": ["unused extra key"],
    }
    classnames = [
        "car side",
        "face",
        "yin yang",
        "Allen's Hummingbird",
        "Handstand Pushups",
        "apartment building outdoor",
        "2012 Ram C/V Cargo Van Minivan",
    ]
    out = load_descriptions(_write(tmp_path / "d.json", table), classnames)
    assert list(out) == classnames
    assert out["car side"] == ["a car seen from the side"]
    assert out["face"] == ["a face"]
    assert out["2012 Ram C/V Cargo Van Minivan"] == ["a van"]
    assert out["Handstand Pushups"] == ["a person upside down"]


def test_descriptions_missing_class_lists_every_one(tmp_path):
    path = _write(tmp_path / "d.json", {"apple": ["red"], "pear": ["green"]})
    with pytest.raises(DescriptionsError) as info:
        load_descriptions(path, ["apple", "banana", "cherry"])
    message = str(info.value)
    assert path in message and "'banana'" in message and "'cherry'" in message and "2 of 3" in message


def test_descriptions_reject_bad_values_and_collisions(tmp_path):
    with pytest.raises(DescriptionsError, match="non-empty list of strings"):
        load_descriptions(_write(tmp_path / "a.json", {"apple": "red"}), ["apple"])
    with pytest.raises(DescriptionsError, match="same key"):
        load_descriptions(_write(tmp_path / "b.json", {"apple pie": ["x"]}), ["apple pie", "apple_pie"])
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(DescriptionsError, match="not valid JSON"):
        load_descriptions(str(tmp_path / "c.json"), ["apple"])


def _cfg(descriptions=""):
    cfg = CN()
    cfg.DATASET = CN()
    cfg.DATASET.DESCRIPTIONS = descriptions
    return cfg


def test_resolve_descriptions_order_of_sources(tmp_path):
    own = _write(tmp_path / "own.json", {"a": ["from reader"], "b": ["from reader"]})
    configured = _write(tmp_path / "cfg.json", {"a": ["from config"], "b": ["from config"]})

    class Reader:
        dataset_key = "no_such_key_for_tests"
        classnames = ["a", "b"]

    class ReaderWithDefault(Reader):
        def default_descriptions_path(self):
            return own

    assert resolve_descriptions(_cfg(configured), ReaderWithDefault())["a"] == ["from config"]
    assert resolve_descriptions(_cfg(), ReaderWithDefault())["a"] == ["from reader"]
    with pytest.raises(FileNotFoundError) as info:
        resolve_descriptions(_cfg(), Reader())
    message = str(info.value)
    assert os.path.join("descriptions", "no_such_key_for_tests.json") in message
    assert "download_descriptions.py" in message
