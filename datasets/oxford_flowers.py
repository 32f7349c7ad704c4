"""Oxford Flowers-102.

Layout (``DATASET.ROOT/oxford_flowers/``), as in CoOp: ``jpg/image_%05d.jpg`` and ``imagelabels.mat`` (official
archive), ``cat_to_name.json`` (``{"1": "pink primrose", ...}``, from CoOp's DATASETS.md) and
``split_zhou_OxfordFlowers.json`` (CoOp's split). Label = official label (``imagelabels.mat``, 1..102) - 1; class
names from ``cat_to_name.json``. The split file is checked against both.

Protocols: both read CoOp's split file (microCLIP does too): ``microclip`` = its train (4,093) / test (2,463) with
no val; ``coop`` = train / val (1,633) / test.
"""

from __future__ import annotations

import json
import os

from clipkit.dassl import DATASET_REGISTRY, DatasetBase

from ._common import (
    DatasetLayoutError,
    dataset_root,
    load_mat,
    load_split_file,
    make_splits,
    mat_field,
    require_dir,
    require_file,
    split_protocol,
)


def read_cat_to_name(path: str, reader) -> list:
    """Class names in label order from ``{"<1-based label>": name}``; labels must be 1..N without gaps."""
    with open(require_file(path, reader, "class-name file"), encoding="utf-8") as f:
        table = json.load(f)
    try:
        by_label = {int(key) - 1: name for key, name in table.items()}
    except ValueError as err:
        raise DatasetLayoutError(f"{path}: keys must be 1-based integer labels ({err})") from err
    if sorted(by_label) != list(range(len(by_label))):
        raise DatasetLayoutError(f"{path}: labels must run from 1 to {len(by_label)} without gaps")
    return [by_label[label] for label in range(len(by_label))]


@DATASET_REGISTRY.register()
class OxfordFlowers(DatasetBase):
    dataset_key = "oxford_flowers"
    dataset_folder = "oxford_flowers"
    docs_section = "oxford-flowers"
    split_protocols = ("microclip", "coop")
    split_files = {"microclip": "split_zhou_OxfordFlowers.json", "coop": "split_zhou_OxfordFlowers.json"}

    def __init__(self, cfg):
        self.dataset_dir = dataset_root(cfg, self)
        protocol = split_protocol(cfg, self)
        classnames = read_cat_to_name(os.path.join(self.dataset_dir, "cat_to_name.json"), self)
        image_dir = require_dir(os.path.join(self.dataset_dir, "jpg"), self)
        split_file = os.path.join(self.dataset_dir, self.split_files[protocol])
        splits = load_split_file(split_file, self, classnames)
        self.check_official_labels(splits, os.path.join(self.dataset_dir, "imagelabels.mat"))
        if protocol == "microclip":
            splits["val"] = []
        train, val, test = make_splits(cfg, self, splits, image_dir, classnames, split_file)
        super().__init__(train_x=train, val=val, test=test)

    def check_official_labels(self, splits: dict, labels_file: str) -> None:
        """Every split label must equal ``imagelabels.mat`` - 1 for its image (``image_%05d.jpg``, 1-based index)."""
        official = mat_field(load_mat(labels_file, self), "labels", labels_file, self)
        for part in ("train", "val", "test"):
            for impath, label, _ in splits[part]:
                index = int(os.path.splitext(os.path.basename(impath))[0].split("_")[-1]) - 1
                if not 0 <= index < len(official) or int(official[index]) - 1 != label:
                    raise DatasetLayoutError(
                        f"OxfordFlowers: [{part}] {impath} has label {label} in the split file but "
                        f"{labels_file} says {int(official[index]) - 1 if 0 <= index < len(official) else 'nothing'}"
                    )
