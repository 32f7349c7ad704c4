"""Oxford-IIIT Pets (37 breeds).

Layout (``DATASET.ROOT/oxford_pets/``): ``images/*.jpg`` and ``annotations/{trainval,test}.txt`` from the official
archives (+ ``split_zhou_OxfordPets.json`` for the coop protocol). Annotation lines read
``<image> <class id 1..37> <species> <breed id>``; label = class id - 1; the class name is the breed part of the
image name (``american_pit_bull_terrier_12`` -> ``"american pit bull terrier"``).

Protocols: ``microclip`` = official trainval (3,680) / test (3,669); ``coop`` = CoOp's split file.
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
)


def read_pets_annotations(path: str, reader) -> list:
    """Records ``(<image>.jpg, class id - 1, breed)`` of an official annotation list (``#`` lines skipped)."""
    records = []
    for line in read_lines(path, reader, "annotation list"):
        if line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2 or not fields[1].isdigit():
            raise DatasetLayoutError(f"{path}: cannot parse line {line!r} (expected '<image> <class id> ...')")
        image, class_id = fields[0], int(fields[1])
        breed = " ".join(image.split("_")[:-1]).lower()
        records.append((f"{image}.jpg", class_id - 1, breed))
    return records


def breeds_by_label(records, path: str) -> list:
    """Class names in label order; every label 0..max must have exactly one breed name."""
    names = {}
    for _, label, breed in records:
        if names.setdefault(label, breed) != breed:
            raise DatasetLayoutError(f"{path}: class id {label + 1} is used for both {names[label]!r} and {breed!r}")
    missing = sorted(set(range(max(names) + 1)) - set(names))
    if missing:
        raise DatasetLayoutError(f"{path}: no images for class ids {[m + 1 for m in missing]}")
    return [names[label] for label in range(len(names))]


@DATASET_REGISTRY.register()
class OxfordPets(DatasetBase):
    dataset_key = "oxford_pets"
    dataset_folder = "oxford_pets"
    docs_section = "oxford-pets"
    split_protocols = ("microclip", "coop")
    split_files = {"coop": "split_zhou_OxfordPets.json"}

    def __init__(self, cfg):
        self.dataset_dir = dataset_root(cfg, self)
        protocol = split_protocol(cfg, self)
        image_dir = require_dir(os.path.join(self.dataset_dir, "images"), self)
        anno_dir = os.path.join(self.dataset_dir, "annotations")
        trainval_file = os.path.join(anno_dir, "trainval.txt")
        test_file = os.path.join(anno_dir, "test.txt")
        trainval = read_pets_annotations(trainval_file, self)
        test = read_pets_annotations(test_file, self)
        classnames = breeds_by_label(trainval + test, anno_dir)

        if protocol == "microclip":
            splits, source = {"train": trainval, "val": [], "test": test}, f"{trainval_file} / {test_file}"
        else:
            source = os.path.join(self.dataset_dir, self.split_files["coop"])
            splits = load_split_file(source, self, classnames)
        train, val, test = make_splits(cfg, self, splits, image_dir, classnames, source)
        super().__init__(train_x=train, val=val, test=test)
