"""Stanford Cars (196 make/model/year classes).

Layout (``DATASET.ROOT/stanford_cars/``), as the official archives extract (same as CoOp):
``cars_train/``, ``cars_test/``, ``devkit/cars_meta.mat`` (``class_names``), ``devkit/cars_train_annos.mat``,
``cars_test_annos_withlabels.mat`` (``annotations`` structs with ``fname`` and 1-based ``class``)
(+ ``split_zhou_StanfordCars.json`` for the coop protocol). Label = ``class`` - 1 in ``cars_meta.mat`` order;
class names are the official strings (``"AM General Hummer SUV 2000"``, the spelling of CuPL's and microCLIP's files).

Protocols: ``microclip`` = official train (8,144) / test (8,041); ``coop`` = CoOp's split file.
"""

from __future__ import annotations

import os

from clipkit.dassl import DATASET_REGISTRY, DatasetBase

from ._common import (
    DatasetLayoutError,
    dataset_root,
    load_mat,
    load_split_file,
    make_splits,
    mat_field,
    split_protocol,
)


def read_cars_annotations(path: str, image_folder: str, classnames, reader) -> list:
    """Records ``(<image_folder>/<fname>, class - 1, name)`` of an official annotation .mat file."""
    annos = mat_field(load_mat(path, reader, "annotation file"), "annotations", path, reader)
    if annos.dtype.names is None or not {"fname", "class"} <= set(annos.dtype.names):
        raise DatasetLayoutError(f"{path}: 'annotations' lacks the fields 'fname' and 'class' "
                                 "(for the test split use cars_test_annos_withlabels.mat)")
    records = []
    for fname, cls in zip(annos["fname"], annos["class"]):
        label = int(cls) - 1
        if not 0 <= label < len(classnames):
            raise DatasetLayoutError(f"{path}: {fname} has class {int(cls)} outside 1..{len(classnames)}")
        records.append((f"{image_folder}/{fname}", label, classnames[label]))
    return records


@DATASET_REGISTRY.register()
class StanfordCars(DatasetBase):
    dataset_key = "stanford_cars"
    dataset_folder = "stanford_cars"
    docs_section = "stanford-cars"
    split_protocols = ("microclip", "coop")
    split_files = {"coop": "split_zhou_StanfordCars.json"}

    def __init__(self, cfg):
        self.dataset_dir = dataset_root(cfg, self)
        protocol = split_protocol(cfg, self)
        meta_file = os.path.join(self.dataset_dir, "devkit", "cars_meta.mat")
        classnames = [str(name).strip() for name in
                      mat_field(load_mat(meta_file, self), "class_names", meta_file, self)]

        if protocol == "microclip":
            train_file = os.path.join(self.dataset_dir, "devkit", "cars_train_annos.mat")
            test_file = os.path.join(self.dataset_dir, "cars_test_annos_withlabels.mat")
            splits = {
                "train": read_cars_annotations(train_file, "cars_train", classnames, self),
                "val": [],
                "test": read_cars_annotations(test_file, "cars_test", classnames, self),
            }
            source = f"{train_file} / {test_file}"
        else:
            source = os.path.join(self.dataset_dir, self.split_files["coop"])
            splits = load_split_file(source, self, classnames)
        train, val, test = make_splits(cfg, self, splits, self.dataset_dir, classnames, source)
        super().__init__(train_x=train, val=val, test=test)
