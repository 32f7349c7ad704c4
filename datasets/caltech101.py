"""Caltech-101 (100 classes: ``BACKGROUND_Google`` and ``Faces_easy`` dropped, as in CoOp, VTAB and microCLIP).

Layout (``DATASET.ROOT/caltech-101/``): ``101_ObjectCategories/<folder>/image_%04d.jpg`` from the official archive
(+ ``split_zhou_Caltech101.json`` for the coop protocol).

The release has no class-list file; ``CALTECH101_FOLDERS`` lists the category folders in CoOp's label order
(code-point sorted folder names), which its split file uses. Class names are the folder names with underscores
replaced and CoOp's four renames (``airplanes`` -> ``airplane``, ``Faces`` -> ``face``, ``Leopards`` -> ``leopard``,
``Motorbikes`` -> ``motorbike``).

Protocols: ``microclip`` = VTAB-style ``DATASET.CALTECH101.TRAIN_PER_CLASS`` (30) random images per class for
training (seed ``DATASET.CALTECH101.SPLIT_SEED``), all others for test: 3,000 / 5,242 (the paper's Table 10
says 4,403 / 6,645, more images than the 100 classes hold); ``coop`` = CoOp's random split.
"""

from __future__ import annotations

import os

from clipkit.config import CN, cfg_extension
from clipkit.dassl import DATASET_REGISTRY, DatasetBase

from ._common import (
    dataset_root,
    list_images,
    load_split_file,
    make_splits,
    require_dir,
    split_protocol,
    underscores_to_spaces,
)
from ._splits import sample_per_class

CALTECH101_FOLDERS = (
    "Faces", "Leopards", "Motorbikes", "accordion", "airplanes", "anchor", "ant", "barrel", "bass", "beaver",
    "binocular", "bonsai", "brain", "brontosaurus", "buddha", "butterfly", "camera", "cannon", "car_side",
    "ceiling_fan", "cellphone", "chair", "chandelier", "cougar_body", "cougar_face", "crab", "crayfish", "crocodile",
    "crocodile_head", "cup", "dalmatian", "dollar_bill", "dolphin", "dragonfly", "electric_guitar", "elephant", "emu",
    "euphonium", "ewer", "ferry", "flamingo", "flamingo_head", "garfield", "gerenuk", "gramophone", "grand_piano",
    "hawksbill", "headphone", "hedgehog", "helicopter", "ibis", "inline_skate", "joshua_tree", "kangaroo", "ketch",
    "lamp", "laptop", "llama", "lobster", "lotus", "mandolin", "mayfly", "menorah", "metronome", "minaret",
    "nautilus", "octopus", "okapi", "pagoda", "panda", "pigeon", "pizza", "platypus", "pyramid", "revolver", "rhino",
    "rooster", "saxophone", "schooner", "scissors", "scorpion", "sea_horse", "snoopy", "soccer_ball", "stapler",
    "starfish", "stegosaurus", "stop_sign", "strawberry", "sunflower", "tick", "trilobite", "umbrella", "watch",
    "water_lilly", "wheelchair", "wild_cat", "windsor_chair", "wrench", "yin_yang",
)
CALTECH101_RENAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


@cfg_extension
def _add_caltech101_cfg(cfg):
    cfg.DATASET.CALTECH101 = CN()
    # microclip protocol: training images per class (VTAB / microCLIP's create_caltech101: 30), the rest is test.
    cfg.DATASET.CALTECH101.TRAIN_PER_CLASS = 30
    # Seed of that per-class draw (file names are sorted first, so the split is the same on every machine).
    cfg.DATASET.CALTECH101.SPLIT_SEED = 0


def caltech101_classnames() -> list:
    return [CALTECH101_RENAMES.get(folder, underscores_to_spaces(folder)) for folder in CALTECH101_FOLDERS]


@DATASET_REGISTRY.register()
class Caltech101(DatasetBase):
    dataset_key = "caltech101"
    dataset_folder = "caltech-101"
    docs_section = "caltech-101"
    split_protocols = ("microclip", "coop")
    split_files = {"coop": "split_zhou_Caltech101.json"}

    def __init__(self, cfg):
        self.dataset_dir = dataset_root(cfg, self)
        protocol = split_protocol(cfg, self)
        image_dir = require_dir(os.path.join(self.dataset_dir, "101_ObjectCategories"), self)
        classnames = caltech101_classnames()

        if protocol == "microclip":
            records = []
            for label, folder in enumerate(CALTECH101_FOLDERS):
                class_dir = require_dir(os.path.join(image_dir, folder), self, "class folder")
                records += [(f"{folder}/{name}", label, classnames[label]) for name in list_images(class_dir)]
            node = cfg.DATASET.CALTECH101
            train, test = sample_per_class(records, node.TRAIN_PER_CLASS, node.SPLIT_SEED)
            splits, source = {"train": train, "val": [], "test": test}, image_dir
        else:
            source = os.path.join(self.dataset_dir, self.split_files["coop"])
            splits = load_split_file(source, self, classnames)
        train, val, test = make_splits(cfg, self, splits, image_dir, classnames, source)
        super().__init__(train_x=train, val=val, test=test)
