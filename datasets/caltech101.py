"""Caltech-101 (100 classes: ``BACKGROUND_Google`` and ``Faces_easy`` dropped, as in CoOp, VTAB and microCLIP).

Layout (``DATASET.ROOT/caltech-101/``): ``101_ObjectCategories/<folder>/image_%04d.jpg`` from the official archive
(+ ``split_zhou_Caltech101.json`` for the coop protocol).

The release has no class-list file: the classes are the category folders on disk, in CoOp's label order (code-point
sorted folder names, ImageFolder order), without ``BACKGROUND_Google`` and ``Faces_easy``. ``CALTECH101_FOLDERS``
is the official list they are compared with: a missing, extra or renamed folder (``car-side``) is reported
(``scan_class_folders``); the microclip protocol reads the folders present, the coop split file needs all 100.
Class names are the folder names with underscores replaced and CoOp's four renames (``airplanes`` -> ``airplane``,
``Faces`` -> ``face``, ``Leopards`` -> ``leopard``, ``Motorbikes`` -> ``motorbike``).

Protocols: ``microclip`` = VTAB-style ``DATASET.CALTECH101.TRAIN_PER_CLASS`` (30) random images per class for
training (seed ``DATASET.CALTECH101.SPLIT_SEED``), all others for test: 3,000 / 5,242 (the paper's Table 10
says 4,403 / 6,645, more images than the 100 classes hold); ``coop`` = CoOp's random split.
"""

from __future__ import annotations

import os

from clipkit.config import CN, cfg_extension
from clipkit.dassl import DATASET_REGISTRY, DatasetBase

from ._common import (
    class_records,
    dataset_root,
    load_split_file,
    make_splits,
    remap_folders,
    require_dir,
    scan_class_folders,
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
CALTECH101_IGNORED = ("BACKGROUND_Google", "Faces_easy")  # not benchmark classes (CoOp, VTAB, microCLIP)


@cfg_extension
def _add_caltech101_cfg(cfg):
    cfg.DATASET.CALTECH101 = CN()
    # microclip protocol: training images per class (VTAB / microCLIP's create_caltech101: 30), the rest is test.
    cfg.DATASET.CALTECH101.TRAIN_PER_CLASS = 30
    # Seed of that per-class draw (file names are sorted first, so the split is the same on every machine).
    cfg.DATASET.CALTECH101.SPLIT_SEED = 0


def caltech101_classnames(folders=CALTECH101_FOLDERS) -> list:
    """Prompt-ready class names of official folder names (CoOp's renames, underscores replaced)."""
    return [CALTECH101_RENAMES.get(folder, underscores_to_spaces(folder)) for folder in folders]


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
        classes = scan_class_folders(image_dir, self, CALTECH101_FOLDERS, CALTECH101_IGNORED,
                                     strict=protocol == "coop")
        classnames = caltech101_classnames([item.key for item in classes])

        if protocol == "microclip":
            node = cfg.DATASET.CALTECH101
            train, test = sample_per_class(class_records(image_dir, classes, classnames), node.TRAIN_PER_CLASS,
                                           node.SPLIT_SEED)
            splits, source = {"train": train, "val": [], "test": test}, image_dir
        else:
            source = os.path.join(self.dataset_dir, self.split_files["coop"])
            splits = load_split_file(source, self, classnames)
            splits = remap_folders(splits, classes)
        train, val, test = make_splits(cfg, self, splits, image_dir, classnames, source)
        super().__init__(train_x=train, val=val, test=test)
