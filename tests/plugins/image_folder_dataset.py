"""``TestImageFolder``: reads the ``tiny_image_folder`` fixture layout ``DATASET.ROOT/images/<class>/*.jpg``.

Class order = sorted folder names; train = the first ``TRAIN_PER_CLASS`` images (sorted file names) of each class,
test = the rest; no val split. Text resources are its own: ``templates`` and ``DATASET.ROOT/descriptions.json``
(written by ``write_descriptions`` in tests/conftest.py). Test data only.
"""

import os

from clipkit.dassl import DATASET_REGISTRY, DatasetBase, Datum, listdir_nohidden

TRAIN_PER_CLASS = 4  # images per class in the train split (the fixture writes 6 per class)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


@DATASET_REGISTRY.register()
class TestImageFolder(DatasetBase):
    __test__ = False  # not a pytest test class

    dataset_key = "test_folder"
    templates = ["a photo of a {}.", "a picture of the color {}."]

    def __init__(self, cfg):
        self.root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        image_dir = os.path.join(self.root, "images")
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(
                f"TestImageFolder: no folder {image_dir}; set DATASET.ROOT to a folder holding images/<class>/*.jpg"
            )
        train, test = [], []
        for label, classname in enumerate(listdir_nohidden(image_dir, sort=True)):
            files = sorted(f for f in listdir_nohidden(os.path.join(image_dir, classname))
                           if f.lower().endswith(IMAGE_EXTENSIONS))
            for index, name in enumerate(files):
                item = Datum(impath=os.path.join(image_dir, classname, name), label=label, classname=classname)
                (train if index < TRAIN_PER_CLASS else test).append(item)
        super().__init__(train_x=train, val=[], test=test)

    def default_descriptions_path(self):
        return os.path.join(self.root, "descriptions.json")
