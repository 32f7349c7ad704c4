"""FGVC-Aircraft 2013b, variant level (100 classes; the paper's Table 10 says 102, a typo).

Layout (``DATASET.ROOT/fgvc_aircraft/``) = the archive's ``fgvc-aircraft-2013b/data/`` folder renamed (as in CoOp):
``images/<id>.jpg``, ``variants.txt`` (one variant per line: the label order), ``images_variant_{train,val,test}.txt``
(lines ``<id> <variant name>``; names may contain spaces and slashes, e.g. ``"BAE 146-200"``, ``"F/A-18"``).

Labels are positions in ``variants.txt``. microCLIP's ImageFolder pipeline instead sorted folder names derived from the
variants, which permutes ``BAE 146-200`` / ``BAE 146-300`` / ``BAE-125`` (microclip_official.md §7); reading the
official order avoids that bug.

Protocols: ``microclip`` = official train (3,334) / test (3,333) (train, not trainval); ``coop`` = CoOp's split,
which is the official train / val / test lists.
"""

from __future__ import annotations

import os

from clipkit.dassl import DATASET_REGISTRY, DatasetBase

from ._common import (
    DatasetLayoutError,
    dataset_root,
    make_splits,
    read_lines,
    require_dir,
    split_protocol,
)


def read_variant_list(path: str, variant_to_label: dict, reader) -> list:
    """Records ``(<id>.jpg, label, variant)`` of an ``images_variant_<split>.txt`` file."""
    records = []
    for line in read_lines(path, reader, "split list"):
        image_id, _, variant = line.partition(" ")
        if variant not in variant_to_label:
            raise DatasetLayoutError(f"{path}: variant {variant!r} of image {image_id} is not in variants.txt")
        records.append((f"{image_id}.jpg", variant_to_label[variant], variant))
    return records


@DATASET_REGISTRY.register()
class FGVCAircraft(DatasetBase):
    dataset_key = "fgvc_aircraft"
    dataset_folder = "fgvc_aircraft"
    docs_section = "fgvc-aircraft"
    split_protocols = ("microclip", "coop")
    split_files = {}

    def __init__(self, cfg):
        self.dataset_dir = dataset_root(cfg, self)
        protocol = split_protocol(cfg, self)
        classnames = read_lines(os.path.join(self.dataset_dir, "variants.txt"), self, "class list")
        variant_to_label = {name: label for label, name in enumerate(classnames)}
        if len(variant_to_label) != len(classnames):
            raise DatasetLayoutError(f"{self.dataset_dir}/variants.txt lists a variant twice")
        image_dir = require_dir(os.path.join(self.dataset_dir, "images"), self)

        parts = {"microclip": {"train": "train", "test": "test"},
                 "coop": {"train": "train", "val": "val", "test": "test"}}[protocol]
        lists = {part: os.path.join(self.dataset_dir, f"images_variant_{name}.txt") for part, name in parts.items()}
        splits = {part: read_variant_list(path, variant_to_label, self) for part, path in lists.items()}
        train, val, test = make_splits(cfg, self, splits, image_dir, classnames, " / ".join(lists.values()))
        super().__init__(train_x=train, val=val, test=test)
