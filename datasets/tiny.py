"""Reader of the embedded tiny fine-grained benchmark (``python -m clipkit.tinybench.prepare`` writes it).

Layout: ``<DATASET.ROOT>/tiny_finegrained/images/{train,test}/<class_dir>/*.png`` with ``metadata.json`` giving the
ordered classes (label, name, folder). Importing this module also registers the checkpoint name ``tiny-clip-bench``.
"""

from __future__ import annotations

import os

from clipkit import tinybench
from clipkit.dassl import DATASET_REGISTRY, DatasetBase, Datum
from clipkit.tinybench.class_text import TEMPLATES
from clipkit.tinybench.generate import DATASET_DIRNAME, DESCRIPTIONS_FILE, load_metadata, split_items

tinybench.register_checkpoint()


@DATASET_REGISTRY.register()
class TinyFineGrained(DatasetBase):
    """20 classes (mark colour x shape) on cluttered 64 px scenes; train = unlabelled adaptation set, test = eval.

    The benchmark has a single split, so ``DATASET.SPLIT_PROTOCOL`` has no effect; ``DATASET.NUM_SHOTS`` >= 1 keeps
    that many train images per class (seeded by ``SEED`` through Dassl's few-shot sampler). ``DATASET.ROOT`` = ""
    reads from the prepare command's default data root.
    """

    dataset_key = "tiny"
    dataset_dir = DATASET_DIRNAME
    templates = list(TEMPLATES)

    def __init__(self, cfg):
        root = cfg.DATASET.ROOT or tinybench.default_data_root()
        self.dataset_dir = os.path.join(os.path.abspath(os.path.expanduser(root)), DATASET_DIRNAME)
        metadata = load_metadata(self.dataset_dir)
        train, test = (
            [Datum(impath=path, label=label, classname=name) for path, label, name in split_items(self.dataset_dir, metadata, split)]
            for split in ("train", "test")
        )
        self._check_every_class_has_images(metadata, train, test)
        if cfg.DATASET.NUM_SHOTS >= 1:
            train = self.generate_fewshot_dataset(train, num_shots=cfg.DATASET.NUM_SHOTS)
        super().__init__(train_x=train, val=None, test=test)

    def _check_every_class_has_images(self, metadata, train, test) -> None:
        """An empty class folder would silently shrink the label space (19 classes instead of 20): refuse it."""
        empty = []
        for split, items in (("train", train), ("test", test)):
            present = {item.label for item in items}
            empty += [os.path.join(self.dataset_dir, "images", split, cls["dir"]) for cls in metadata["classes"]
                      if cls["label"] not in present]
        if empty:
            raise FileNotFoundError(
                f"TinyFineGrained: {len(empty)} class folder(s) hold no .png image: {empty}. The tiny benchmark is "
                f"incomplete: delete {self.dataset_dir} and run `python -m clipkit.tinybench.prepare --data-root "
                f"{os.path.dirname(self.dataset_dir)}` (regenerates the images; the pretrained tiny CLIP is kept)."
            )

    def default_descriptions_path(self) -> str:
        """The generated CuPL-format descriptions beside the images."""
        return os.path.join(self.dataset_dir, DESCRIPTIONS_FILE)
