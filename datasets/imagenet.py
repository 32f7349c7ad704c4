"""ImageNet-1k (ILSVRC 2012).

Layout (``DATASET.ROOT/imagenet/``): ``images/train/<wnid>/*.JPEG`` and ``images/val/<wnid>/*.JPEG`` as in CoOp, or
the plain ``train/<wnid>/`` and ``val/<wnid>/`` many copies have (each part looked for in ``images/`` first). A val
folder already sorted into wnid folders is read as is; a flat one (50,000 files) is sorted once with
``scripts/prep_imagenet_val.py``, which the reader says when it finds one. Plus a class-name file, either
CoOp's ``classnames.txt`` (``<wnid> <CLIP class name>`` per line: the prompt-ready names) or, as a fallback,
the Kaggle release's ``LOC_synset_mapping.txt`` (``<wnid> <synonym>, <synonym>, ...``: the first synonym is used).
Label order = line order of that file (sorted wnids in both).

Protocols: ``microclip`` = ``DATASET.IMAGENET.TRAIN_PER_CLASS`` (50) random train images per class
(seed ``DATASET.IMAGENET.SUBSET_SEED``) = 50,000 / val 50,000; ``coop`` = all train images / val as test
(CoOp also uses val as its val split; we leave val empty, see DEVIATIONS.md (datasets section)).
"""

from __future__ import annotations

import os
import warnings

from clipkit.config import CN, cfg_extension
from clipkit.dassl import DATASET_REGISTRY, DatasetBase

from ._common import (
    DOCS_FILE,
    DatasetLayoutError,
    dataset_root,
    docs_hint,
    first_existing,
    list_images,
    make_splits,
    read_lines,
    shown,
    split_protocol,
)
from ._splits import sample_per_class

CLASSNAME_FILES = ("classnames.txt", "LOC_synset_mapping.txt")
IMAGES_FOLDER = "images"  # CoOp's layout: images/train, images/val; plain train/, val/ also accepted


@cfg_extension
def _add_imagenet_cfg(cfg):
    cfg.DATASET.IMAGENET = CN()
    # microclip protocol: unlabeled training pool = this many random train images per class (microCLIP, DPA: 50).
    cfg.DATASET.IMAGENET.TRAIN_PER_CLASS = 50
    # Seed of that draw (file names are sorted first, so the subset is the same on every machine).
    cfg.DATASET.IMAGENET.SUBSET_SEED = 0


def read_imagenet_classnames(path: str, reader) -> tuple:
    """(wnids, class names) from ``classnames.txt`` or ``LOC_synset_mapping.txt`` (first synonym)."""
    wnids, names = [], []
    for line in read_lines(path, reader, "class-name file"):
        wnid, _, name = line.partition(" ")
        if not (wnid.startswith("n") and name):
            raise DatasetLayoutError(f"{path}: cannot parse line {line!r} (expected '<wnid> <name>')")
        wnids.append(wnid)
        names.append(name.split(",")[0].strip() if os.path.basename(path) == CLASSNAME_FILES[1] else name.strip())
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        warnings.warn(f"{path}: several classes share the names {duplicates}; their prompts will be identical. "
                      f"CoOp's classnames.txt (CLIP's curated names) avoids this ({DOCS_FILE}#imagenet).")
    return wnids, names


@DATASET_REGISTRY.register()
class ImageNet(DatasetBase):
    dataset_key = "imagenet"
    dataset_folder = "imagenet"
    docs_section = "imagenet"
    split_protocols = ("microclip", "coop")
    split_files = {}

    def __init__(self, cfg):
        self.dataset_dir = dataset_root(cfg, self)
        protocol = split_protocol(cfg, self)
        names_file = first_existing([os.path.join(self.dataset_dir, f) for f in CLASSNAME_FILES], self,
                                    "class-name file")
        wnids, classnames = read_imagenet_classnames(names_file, self)
        splits = {part: self.read_folder(folder, wnids, classnames) for part, folder in (("train", "train"),
                                                                                         ("test", "val"))}
        if protocol == "microclip":
            node = cfg.DATASET.IMAGENET
            splits["train"], _ = sample_per_class(splits["train"], node.TRAIN_PER_CLASS, node.SUBSET_SEED)
        splits["val"] = []
        train, val, test = make_splits(cfg, self, splits, self.dataset_dir, classnames, self.dataset_dir)
        super().__init__(train_x=train, val=val, test=test)

    def part_folder(self, part: str) -> str:
        """``images/<part>`` or ``<part>`` (relative to the dataset folder), whichever exists."""
        for candidate in (os.path.join(IMAGES_FOLDER, part), part):
            if os.path.isdir(os.path.join(self.dataset_dir, candidate)):
                return candidate
        raise DatasetLayoutError(
            f"ImageNet: no {part} folder: looked for {os.path.join(self.dataset_dir, IMAGES_FOLDER, part)} and "
            f"{os.path.join(self.dataset_dir, part)}. {docs_hint(self)}")

    def read_folder(self, part: str, wnids, classnames) -> list:
        """Records ``(<part folder>/<wnid>/<file>, label, name)`` of every ``<part folder>/<wnid>/``, label order."""
        folder = self.part_folder(part)
        path = os.path.join(self.dataset_dir, folder)
        missing = [wnid for wnid in wnids if not os.path.isdir(os.path.join(path, wnid))]
        if missing:
            flat = list_images(path)
            fix = (f"it holds {len(flat)} images directly: sort them into wnid folders with `python "
                   f"scripts/prep_imagenet_val.py --root <DATASET.ROOT> --val-dir {path} ...`" if flat else
                   "each class needs a folder named by its wnid")
            raise DatasetLayoutError(
                f"ImageNet: {path} lacks {len(missing)} of the {len(wnids)} wnid folders ({shown(missing)}); "
                f"{fix}. {docs_hint(self)}")
        return [(f"{folder}/{wnid}/{name}", label, classnames[label])
                for label, wnid in enumerate(wnids) for name in list_images(os.path.join(path, wnid))]
