"""NWPU-RESISC45 (45 remote-sensing scene classes, 700 images each).

Layout (``DATASET.ROOT/resisc45/``): ``NWPU-RESISC45/<class>/<class>_%03d.jpg`` from the official archive and
``split_microclip_RESISC45.json`` made once by ``python scripts/prep_splits.py --dataset resisc45 --root <ROOT>``.

The release has no class-list file: ``prep_splits.py`` takes the classes from the class folders on disk in sorted
order (ImageFolder's and TFDS's label order) and the reader takes them, in label order, from the split file it
wrote. ``RESISC45_CLASSES``, the 45 classes of Cheng et al. (Proc. IEEE 2017), is the list the folders are compared
with: a missing, extra or renamed folder is reported (``scan_class_folders``) and the split is made from the folders
present. Class names: ``baseball_diamond`` -> ``"baseball diamond"``.

Protocols: ``microclip`` = seeded random 80 / 20 % per class = 25,200 / 6,300 (the paper's sizes; microCLIP's own
split file is not published); CoOp defines no RESISC45 split.
"""

from __future__ import annotations

from clipkit.dassl import DATASET_REGISTRY, DatasetBase

from ._common import (
    class_records,
    dataset_root,
    image_folder_dir,
    load_generated_split,
    make_splits,
    scan_class_folders,
    split_protocol,
    underscores_to_spaces,
)
from ._splits import split_per_class

RESISC45_CLASSES = (
    "airplane", "airport", "baseball_diamond", "basketball_court", "beach", "bridge", "chaparral", "church",
    "circular_farmland", "cloud", "commercial_area", "dense_residential", "desert", "forest", "freeway",
    "golf_course", "ground_track_field", "harbor", "industrial_area", "intersection", "island", "lake", "meadow",
    "medium_residential", "mobile_home_park", "mountain", "overpass", "palace", "parking_lot", "railway",
    "railway_station", "rectangular_farmland", "river", "roundabout", "runway", "sea_ice", "ship", "snowberg",
    "sparse_residential", "stadium", "storage_tank", "tennis_court", "terrace", "thermal_power_station", "wetland",
)
# Per class 80 % train / 20 % test: 560 / 140 of 700 images, i.e. the paper's 25,200 / 6,300.
SPLIT_FRACTIONS = {"train": 0.8, "test": 0.2}


@DATASET_REGISTRY.register()
class RESISC45(DatasetBase):
    dataset_key = "resisc45"
    dataset_folder = "resisc45"
    docs_section = "resisc45"
    split_protocols = ("microclip",)
    split_files = {"microclip": "split_microclip_RESISC45.json"}
    image_folder = "NWPU-RESISC45"

    def __init__(self, cfg):
        self.dataset_dir = dataset_root(cfg, self)
        protocol = split_protocol(cfg, self)
        splits, image_dir, split_file, classnames = load_generated_split(self, protocol)
        train, val, test = make_splits(cfg, self, splits, image_dir, classnames, split_file)
        super().__init__(train_x=train, val=val, test=test)

    @classmethod
    def make_microclip_split(cls, dataset_dir: str, seed: int, image_folder: str = "") -> dict:
        """Seeded 80/20 split of every class folder present: ``{"train"/"test": records}``."""
        image_dir = image_folder_dir(dataset_dir, cls, image_folder)
        classes = scan_class_folders(image_dir, cls, RESISC45_CLASSES)
        classnames = [underscores_to_spaces(item.key) for item in classes]
        return split_per_class(class_records(image_dir, classes, classnames), SPLIT_FRACTIONS, seed)
