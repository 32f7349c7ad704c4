"""Birdsnap (500 North-American bird species).

Layout (``DATASET.ROOT/birdsnap/``): the official ``birdsnap.tgz`` files ``species.txt`` and ``images.txt``
(tab-separated, with a header row), the images its ``get_birdsnap.py`` fetched from Flickr under ``download/images/``
(``<species dir>/<n>.jpg``, the ``path`` column of ``images.txt``) and ``split_microclip_Birdsnap.json`` made once by
``python scripts/prep_splits.py --dataset birdsnap --root <ROOT>`` (it records the image folder, if another).
Label = species ``id`` - 1; class names = the ``common`` column (``"Allen's Hummingbird"``).

Many Flickr URLs are dead, so every copy of Birdsnap differs. Protocol ``microclip`` = seeded random 80 / 20 % per
class of the images present (microCLIP: 31,900 / 7,977 of 39,877 images, split of unknown origin); CoOp has no
Birdsnap reader.
"""

from __future__ import annotations

import csv
import os

from clipkit.dassl import DATASET_REGISTRY, DatasetBase

from ._common import (
    DatasetLayoutError,
    dataset_root,
    docs_hint,
    image_folder_dir,
    load_generated_split,
    make_splits,
    require_file,
    split_protocol,
)
from ._splits import split_per_class

# Per class 80 % train / 20 % test of the downloaded images (microCLIP's sizes are 80.0 / 20.0 %).
SPLIT_FRACTIONS = {"train": 0.8, "test": 0.2}


def read_tsv(path: str, reader, columns: tuple) -> list:
    """Rows (dicts) of a tab-separated file with a header that has at least ``columns``."""
    with open(require_file(path, reader), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if rows and not set(columns) <= set(rows[0]):
        raise DatasetLayoutError(f"{path}: header lacks the columns {sorted(set(columns) - set(rows[0]))}. "
                                 f"{docs_hint(reader)}")
    return rows


@DATASET_REGISTRY.register()
class Birdsnap(DatasetBase):
    dataset_key = "birdsnap"
    dataset_folder = "birdsnap"
    docs_section = "birdsnap"
    split_protocols = ("microclip",)
    split_files = {"microclip": "split_microclip_Birdsnap.json"}
    image_folder = os.path.join("download", "images")

    def __init__(self, cfg):
        self.dataset_dir = dataset_root(cfg, self)
        protocol = split_protocol(cfg, self)
        _, classnames = self.read_species(self.dataset_dir)
        splits, image_dir, split_file, _ = load_generated_split(self, protocol, classnames)
        train, val, test = make_splits(cfg, self, splits, image_dir, classnames, split_file)
        super().__init__(train_x=train, val=val, test=test)

    @classmethod
    def read_species(cls, dataset_dir: str) -> tuple:
        """(species folder names, common names) in label order (``id`` 1..500 of ``species.txt``)."""
        path = os.path.join(dataset_dir, "species.txt")
        rows = read_tsv(path, cls, ("id", "common", "dir"))
        by_label = {int(row["id"]) - 1: row for row in rows}
        if sorted(by_label) != list(range(len(rows))):
            raise DatasetLayoutError(f"{path}: species ids must run from 1 to {len(rows)} without gaps")
        ordered = [by_label[label] for label in range(len(rows))]
        return [row["dir"] for row in ordered], [row["common"].strip() for row in ordered]

    @classmethod
    def make_microclip_split(cls, dataset_dir: str, seed: int, image_folder: str = "") -> dict:
        """Seeded 80/20 per-class split of the ``images.txt`` images present on disk: ``{"train"/"test": records}``.

        Prints how many listed images were found, since Flickr downloads are always incomplete.
        """
        folders, classnames = cls.read_species(dataset_dir)
        image_dir = image_folder_dir(dataset_dir, cls, image_folder)
        images_file = os.path.join(dataset_dir, "images.txt")
        rows = read_tsv(images_file, cls, ("path", "species_id"))
        records = []
        for row in rows:
            label = int(row["species_id"]) - 1
            if not 0 <= label < len(classnames) or row["path"].split("/")[0] != folders[label]:
                raise DatasetLayoutError(f"{images_file}: {row['path']} does not belong to species {row['species_id']}")
            if os.path.isfile(os.path.join(image_dir, row["path"])):
                records.append((row["path"], label, classnames[label]))
        print(f"Birdsnap: {len(records)} of {len(rows)} images listed in {images_file} are present in {image_dir}")
        return split_per_class(records, SPLIT_FRACTIONS, seed)
