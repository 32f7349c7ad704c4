"""Food-101.

Layout (``DATASET.ROOT/food-101/``), as the official archive extracts: ``images/<class>/<id>.jpg``,
``meta/classes.txt`` (label order), ``meta/{train,test}.txt`` (lines ``<class>/<id>``, no extension)
(+ ``split_zhou_Food101.json`` for the coop protocol). Class names: ``apple_pie`` -> ``"apple pie"``.

Protocols: ``microclip`` = official train (75,750) / test (25,250); ``coop`` = CoOp's random split (test 30,300).
"""

from __future__ import annotations

import os

from clipkit.dassl import DATASET_REGISTRY, DatasetBase

from ._common import (
    DatasetLayoutError,
    dataset_root,
    load_split_file,
    make_splits,
    read_lines,
    require_dir,
    split_protocol,
    underscores_to_spaces,
)


def read_food_list(path: str, folder_to_label: dict, classnames, reader) -> list:
    """Records ``(<class>/<id>.jpg, label, name)`` of ``meta/train.txt`` / ``meta/test.txt``."""
    records = []
    for line in read_lines(path, reader, "split list"):
        folder = line.split("/")[0]
        if folder not in folder_to_label:
            raise DatasetLayoutError(f"{path}: class {folder!r} of {line!r} is not in meta/classes.txt")
        label = folder_to_label[folder]
        records.append((f"{line}.jpg", label, classnames[label]))
    return records


@DATASET_REGISTRY.register()
class Food101(DatasetBase):
    dataset_key = "food101"
    dataset_folder = "food-101"
    docs_section = "food-101"
    split_protocols = ("microclip", "coop")
    split_files = {"coop": "split_zhou_Food101.json"}

    def __init__(self, cfg):
        self.dataset_dir = dataset_root(cfg, self)
        protocol = split_protocol(cfg, self)
        folders = read_lines(os.path.join(self.dataset_dir, "meta", "classes.txt"), self, "class list")
        folder_to_label = {folder: label for label, folder in enumerate(folders)}
        classnames = [underscores_to_spaces(folder) for folder in folders]
        image_dir = require_dir(os.path.join(self.dataset_dir, "images"), self)

        if protocol == "microclip":
            lists = {part: os.path.join(self.dataset_dir, "meta", f"{part}.txt") for part in ("train", "test")}
            splits = {part: read_food_list(path, folder_to_label, classnames, self) for part, path in lists.items()}
            source = " / ".join(lists.values())
        else:
            source = os.path.join(self.dataset_dir, self.split_files["coop"])
            splits = load_split_file(source, self, classnames)
        train, val, test = make_splits(cfg, self, splits, image_dir, classnames, source)
        super().__init__(train_x=train, val=val, test=test)
