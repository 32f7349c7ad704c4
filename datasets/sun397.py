"""SUN397 (397 scene classes).

Layout (``DATASET.ROOT/sun397/``): ``SUN397/<letter>/<name>[/<sub>]/sun_*.jpg`` from the official archive,
``ClassName.txt`` (lines ``/a/apartment_building/outdoor``; here or in ``SUN397/``) and a split file:
``split_microclip_SUN397.json`` made once by ``python scripts/prep_splits.py --dataset sun397 --root <ROOT>``, or
CoOp's ``split_zhou_SUN397.json``. Label order = ``ClassName.txt``; class names follow CLIP's spelling
(``/a/apartment_building/outdoor`` -> ``"apartment building (outdoor)"``).

Protocols: ``microclip`` = VISSL-style random 70 / 10 / 20 % per class (``SPLIT_FRACTIONS``; train ≈ 76.1k,
test ≈ 21.8k, the 10 % val part unused), seeded and independent of file-system order; ``coop`` = CoOp's split.
"""

from __future__ import annotations

import os

from clipkit.dassl import DATASET_REGISTRY, DatasetBase

from ._common import (
    dataset_root,
    first_existing,
    image_folder_dir,
    list_images,
    load_generated_split,
    make_splits,
    read_lines,
    require_dir,
    split_protocol,
    underscores_to_spaces,
)
from ._splits import split_per_class

# VISSL's create_sun397 data files (used by microCLIP): per class 70 % train, 10 % val, 20 % test.
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


def sun397_classname(entry: str) -> str:
    """``"/a/apartment_building/outdoor"`` -> ``"apartment building (outdoor)"``; ``"/a/abbey"`` -> ``"abbey"``."""
    parts = [underscores_to_spaces(part) for part in entry.strip("/").split("/")[1:]]
    return parts[0] + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")


@DATASET_REGISTRY.register()
class SUN397(DatasetBase):
    dataset_key = "sun397"
    dataset_folder = "sun397"
    docs_section = "sun397"
    split_protocols = ("microclip", "coop")
    split_files = {"microclip": "split_microclip_SUN397.json", "coop": "split_zhou_SUN397.json"}
    image_folder = "SUN397"

    def __init__(self, cfg):
        self.dataset_dir = dataset_root(cfg, self)
        protocol = split_protocol(cfg, self)
        _, classnames = self.read_classes(self.dataset_dir)
        splits, image_dir, split_file, _ = load_generated_split(self, protocol, classnames)
        if protocol == "microclip":
            splits["val"] = []
        train, val, test = make_splits(cfg, self, splits, image_dir, classnames, split_file)
        super().__init__(train_x=train, val=val, test=test)

    @classmethod
    def read_classes(cls, dataset_dir: str) -> tuple:
        """(``ClassName.txt`` entries, class names), label order."""
        path = first_existing([os.path.join(dataset_dir, "ClassName.txt"),
                               os.path.join(dataset_dir, cls.image_folder, "ClassName.txt")], cls, "class list")
        entries = read_lines(path, cls, "class list")
        return entries, [sun397_classname(entry) for entry in entries]

    @classmethod
    def make_microclip_split(cls, dataset_dir: str, seed: int, image_folder: str = "") -> dict:
        """Seeded 70/10/20 split of every image of every class: ``{"train"/"val"/"test": records}``."""
        entries, classnames = cls.read_classes(dataset_dir)
        image_dir = image_folder_dir(dataset_dir, cls, image_folder)
        records = []
        for label, entry in enumerate(entries):
            folder = entry.strip("/")
            class_dir = require_dir(os.path.join(image_dir, folder), cls, "class folder")
            records += [(f"{folder}/{name}", label, classnames[label]) for name in list_images(class_dir)]
        return split_per_class(records, SPLIT_FRACTIONS, seed)
