"""Describable Textures (DTD, 47 classes).

Layout (``DATASET.ROOT/dtd/``), as ``dtd-r1.0.1.tar.gz`` extracts: ``images/<class>/<name>.jpg`` and
``labels/{train,val,test}<N>.txt`` (lines ``<class>/<name>.jpg``, N = 1..10)
(+ ``split_zhou_DescribableTextures.json`` for the coop protocol).

The release has no class-list file: the classes are the folders of ``images/`` in sorted order (CoOp's and
ImageFolder's order, the official alphabetical one on a complete copy). ``DTD_CLASSES``, the 47 categories of
Cimpoi et al. (CVPR 2014), is the list they are compared with (``scan_class_folders``): with the microclip protocol
a missing folder drops its lines from the split lists, a renamed one (``polka_dotted``) is matched to its official
name, and a folder the lists do not name is ignored, each with a warning; the coop split file needs all 47.

Protocols: ``microclip`` = official split ``DATASET.DTD.SPLIT_ID`` (1): train+val (3,760) / test (1,880);
``coop`` = CoOp's random split.
"""

from __future__ import annotations

import os

from clipkit.config import CN, cfg_extension
from clipkit.dassl import DATASET_REGISTRY, DatasetBase

from ._common import (
    DatasetLayoutError,
    dataset_root,
    load_split_file,
    make_splits,
    read_lines,
    remap_folders,
    require_dir,
    scan_class_folders,
    split_protocol,
)

DTD_CLASSES = (
    "banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked", "crosshatched",
    "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy", "grid", "grooved", "honeycombed",
    "interlaced", "knitted", "lacelike", "lined", "marbled", "matted", "meshed", "paisley", "perforated", "pitted",
    "pleated", "polka-dotted", "porous", "potholed", "scaly", "smeared", "spiralled", "sprinkled", "stained",
    "stratified", "striped", "studded", "swirly", "veined", "waffled", "woven", "wrinkled", "zigzagged",
)


@cfg_extension
def _add_dtd_cfg(cfg):
    cfg.DATASET.DTD = CN()
    # Official DTD split (1..10) used by the microclip protocol; microCLIP uses split 1 (train1+val1 / test1).
    cfg.DATASET.DTD.SPLIT_ID = 1


def read_dtd_list(path: str, reader, classnames) -> list:
    """Records ``(<class>/<name>.jpg, label, class)`` of an official ``labels/<part><N>.txt`` file; lines of an
    official class that is not among ``classnames`` (its folder is missing, already reported) are left out."""
    records = []
    for line in read_lines(path, reader, "split list"):
        folder = line.split("/")[0]
        if folder in classnames:
            records.append((line, classnames.index(folder), folder))
        elif folder not in DTD_CLASSES:
            raise DatasetLayoutError(f"{path}: {line!r} is in no DTD class folder")
    return records


@DATASET_REGISTRY.register()
class DescribableTextures(DatasetBase):
    dataset_key = "dtd"
    dataset_folder = "dtd"
    docs_section = "dtd"
    split_protocols = ("microclip", "coop")
    split_files = {"coop": "split_zhou_DescribableTextures.json"}

    def __init__(self, cfg):
        self.dataset_dir = dataset_root(cfg, self)
        protocol = split_protocol(cfg, self)
        image_dir = require_dir(os.path.join(self.dataset_dir, "images"), self)
        classes = scan_class_folders(image_dir, self, DTD_CLASSES, strict=protocol == "coop", extras_usable=False)
        classnames = [item.key for item in classes]

        if protocol == "microclip":
            split_id = cfg.DATASET.DTD.SPLIT_ID
            lists = {part: os.path.join(self.dataset_dir, "labels", f"{part}{split_id}.txt")
                     for part in ("train", "val", "test")}
            records = {part: read_dtd_list(path, self, classnames) for part, path in lists.items()}
            splits = {"train": records["train"] + records["val"], "val": [], "test": records["test"]}
            source = " / ".join(lists.values())
        else:
            source = os.path.join(self.dataset_dir, self.split_files["coop"])
            splits = load_split_file(source, self, classnames)
        splits = remap_folders(splits, classes)
        train, val, test = make_splits(cfg, self, splits, image_dir, classnames, source)
        super().__init__(train_x=train, val=val, test=test)
