#!/usr/bin/env python
"""Make the seeded train/test split file of SUN397, RESISC45 or Birdsnap (the ``microclip`` protocol), once.

These datasets have no official split that microCLIP used (SUN397: VISSL's random 70/10/20; RESISC45 and Birdsnap:
80/20 of unknown origin), so we generate one with a fixed seed. File names are sorted within each class before the
seeded draw, so the same files always give the same split. Offline: works on already-downloaded images.
RESISC45's classes are its class folders (sorted); missing, extra or renamed folders are reported and the split is
made from the folders present.

    python scripts/prep_splits.py --dataset sun397 --root /data
    python scripts/prep_splits.py --dataset birdsnap --root /data --image-folder download/images

writes ``<root>/<dataset folder>/split_microclip_<Name>.json`` (see DATASETS.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from datasets._common import DatasetLayoutError, DatasetLayoutWarning, misplaced_hint  # noqa: E402
from datasets._splits import write_split_file  # noqa: E402
from datasets.birdsnap import Birdsnap  # noqa: E402
from datasets.resisc45 import RESISC45  # noqa: E402
from datasets.sun397 import SUN397  # noqa: E402

READERS = {reader.dataset_key: reader for reader in (SUN397, RESISC45, Birdsnap)}
DEFAULT_SEED = 0  # the seed of the split files DATASETS.md reports sizes for


def generate(dataset_key: str, root: str, seed: int = DEFAULT_SEED, image_folder: str = "", force: bool = False) -> str:
    """Write the split file of ``dataset_key`` under ``root``; returns its path. Never overwrites unless ``force``."""
    reader = READERS[dataset_key]
    dataset_dir = os.path.join(os.path.abspath(os.path.expanduser(root)), reader.dataset_folder)
    if not os.path.isdir(dataset_dir):
        raise SystemExit(f"error: {dataset_dir} does not exist.{misplaced_hint(dataset_dir, reader)} "
                         f"See DATASETS.md#{reader.docs_section}")
    path = os.path.join(dataset_dir, reader.split_files["microclip"])
    if os.path.exists(path) and not force:
        raise SystemExit(f"error: {path} exists; pass --force to regenerate it (results would no longer be comparable)")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DatasetLayoutWarning)
            splits = reader.make_microclip_split(dataset_dir, seed, image_folder)
    except DatasetLayoutError as err:
        raise SystemExit(f"error: {err}") from err
    for warning in caught:  # missing / extra / renamed class folders: the split is made from what is there
        print(f"warning: {warning.message}", file=sys.stderr)
    meta = {"generator": "scripts/prep_splits.py", "dataset": dataset_key, "seed": seed,
            "image_folder": image_folder or reader.image_folder}
    write_split_file(path, splits, meta)
    sizes = ", ".join(f"{part} {len(records)}" for part, records in splits.items())
    print(f"wrote {path}: {sizes}")
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=sorted(READERS))
    parser.add_argument("--root", required=True, help="DATASET.ROOT: the folder that holds the dataset folder")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the per-class draw (default 0)")
    parser.add_argument("--image-folder", default="",
                        help="image folder relative to the dataset folder, if not the default "
                             "(SUN397/, NWPU-RESISC45/, download/images/); recorded in the split file")
    parser.add_argument("--force", action="store_true", help="overwrite an existing split file")
    args = parser.parse_args(argv)
    generate(args.dataset, args.root, args.seed, args.image_folder, args.force)


if __name__ == "__main__":
    main()
