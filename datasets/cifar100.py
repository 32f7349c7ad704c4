"""CIFAR-100 (100 fine classes) as image files.

Layout (``DATASET.ROOT/cifar100/``): ``cifar-100-python/meta`` (the official python archive, extracted here) and
``{train,test}/<fine label name>/<index>.png`` written from the archive's pickles by
``python scripts/prep_cifar100.py --root <DATASET.ROOT>``. Label order = ``fine_label_names`` in ``meta``;
class names ``aquarium_fish`` -> ``"aquarium fish"``.

Registered as ``CIFAR100Classes`` because Dassl already registers an SSL reader named ``CIFAR100``.

Protocols: ``microclip`` = official train (50,000) / test (10,000); CoOp defines no CIFAR split.
"""

from __future__ import annotations

import os
import pickle

from clipkit.dassl import DATASET_REGISTRY, DatasetBase

from ._common import (
    DatasetLayoutError,
    dataset_root,
    list_images,
    make_splits,
    require_dir,
    require_file,
    split_protocol,
    underscores_to_spaces,
)

CIFAR100_META = os.path.join("cifar-100-python", "meta")


def read_fine_label_names(meta_path: str, reader) -> list:
    """``fine_label_names`` of the official ``meta`` pickle (label order)."""
    with open(require_file(meta_path, reader), "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    if "fine_label_names" not in meta:
        raise DatasetLayoutError(f"{meta_path} has no 'fine_label_names' (is it CIFAR-100's meta file?)")
    return list(meta["fine_label_names"])


@DATASET_REGISTRY.register()
class CIFAR100Classes(DatasetBase):
    dataset_key = "cifar100"
    dataset_folder = "cifar100"
    docs_section = "cifar-100"
    split_protocols = ("microclip",)
    split_files = {}

    def __init__(self, cfg):
        self.dataset_dir = dataset_root(cfg, self)
        split_protocol(cfg, self)
        folders = read_fine_label_names(os.path.join(self.dataset_dir, CIFAR100_META), self)
        classnames = [underscores_to_spaces(folder) for folder in folders]
        splits = {"val": []}
        for part in ("train", "test"):
            part_dir = require_dir(os.path.join(self.dataset_dir, part), self, f"{part} folder (run prep_cifar100.py)")
            splits[part] = [
                (f"{part}/{folder}/{name}", label, classnames[label])
                for label, folder in enumerate(folders)
                for name in list_images(require_dir(os.path.join(part_dir, folder), self, "class folder"))
            ]
        train, val, test = make_splits(cfg, self, splits, self.dataset_dir, classnames, self.dataset_dir)
        super().__init__(train_x=train, val=val, test=test)
