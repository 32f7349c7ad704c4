#!/usr/bin/env python
"""Write CIFAR-100's python pickles as PNG class folders for the ``CIFAR100Classes`` reader. Offline.

Extract the official ``cifar-100-python.tar.gz`` into ``<root>/cifar100/`` first, then

    python scripts/prep_cifar100.py --root /data

reads ``<root>/cifar100/cifar-100-python/{train,test}`` and writes
``<root>/cifar100/{train,test}/<fine label name>/<index in the pickle, 5 digits>.png`` (50,000 + 10,000 files).
The ``meta`` pickle stays where it is: the reader takes the label order from it.
"""

from __future__ import annotations

import argparse
import os
import pickle

import numpy as np
from PIL import Image

ARCHIVE_FOLDER = "cifar-100-python"
IMAGE_SHAPE = (3, 32, 32)  # CIFAR rows are channel-major 32x32 RGB


REEXTRACT = "download cifar-100-python.tar.gz again and re-extract it (DATASETS.md#cifar-100)"


def load_pickle(path: str, keys: tuple) -> dict:
    """The CIFAR pickle at ``path``; a missing, truncated or foreign file ends the script with a message."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: {path} not found; extract cifar-100-python.tar.gz there (DATASETS.md#cifar-100)")
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
    except Exception as err:  # truncated: EOFError / UnpicklingError; garbage: several other types
        raise SystemExit(f"error: cannot read {path} ({type(err).__name__}: {err}); the file is truncated or not "
                         f"a CIFAR-100 python pickle: {REEXTRACT}") from err
    missing = [key for key in keys if not isinstance(batch, dict) or key not in batch]
    if missing:
        raise SystemExit(f"error: {path} has no {missing} entry; it is not a CIFAR-100 python pickle (CIFAR-10's "
                         f"pickles have other keys): {REEXTRACT}")
    return batch


def write_part(archive_dir: str, out_dir: str, part: str, names: list) -> int:
    """Write one pickle (``train`` or ``test``) as PNGs; returns the number of images written."""
    batch = load_pickle(os.path.join(archive_dir, part), ("data", "fine_labels"))
    data = np.asarray(batch["data"], dtype=np.uint8).reshape((-1,) + IMAGE_SHAPE).transpose(0, 2, 3, 1)
    labels = batch["fine_labels"]
    for name in names:
        os.makedirs(os.path.join(out_dir, part, name), exist_ok=True)
    for index, (pixels, label) in enumerate(zip(data, labels)):
        Image.fromarray(pixels).save(os.path.join(out_dir, part, names[label], f"{index:05d}.png"))
    return len(labels)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="DATASET.ROOT: the folder that holds cifar100/")
    args = parser.parse_args(argv)
    out_dir = os.path.join(os.path.abspath(os.path.expanduser(args.root)), "cifar100")
    archive_dir = os.path.join(out_dir, ARCHIVE_FOLDER)
    names = load_pickle(os.path.join(archive_dir, "meta"), ("fine_label_names",))["fine_label_names"]
    for part in ("train", "test"):
        count = write_part(archive_dir, out_dir, part, names)
        print(f"wrote {count} {part} images under {os.path.join(out_dir, part)}")


if __name__ == "__main__":
    main()
