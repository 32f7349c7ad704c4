#!/usr/bin/env python
"""Sort the 50,000 flat ImageNet validation images into ``<wnid>/`` folders for the ``ImageNet`` reader. Offline.

Labels come from either release:

    # Kaggle (ILSVRC/Data/CLS-LOC/val/*.JPEG + LOC_val_solution.csv)
    python scripts/prep_imagenet_val.py --root /data --val-dir /kaggle/ILSVRC/Data/CLS-LOC/val \\
        --solution /kaggle/LOC_val_solution.csv
    # image-net.org (ILSVRC2012_img_val.tar extracted + ILSVRC2012_devkit_t12.tar.gz extracted)
    python scripts/prep_imagenet_val.py --root /data --val-dir /in/val --devkit /in/ILSVRC2012_devkit_t12

and fills ``<root>/imagenet/images/val/<wnid>/<file>`` with symbolic links (``--mode copy`` or ``move`` instead).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil


def labels_from_solution(path: str) -> dict:
    """{image id: wnid} from Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``; first token = wnid)."""
    with open(path, newline="") as f:
        return {row["ImageId"]: row["PredictionString"].split()[0] for row in csv.DictReader(f)}


def labels_from_devkit(devkit: str, val_files: list) -> dict:
    """{image id: wnid} from the devkit's ground truth (ILSVRC2012_ID per line, in file-name order) and meta.mat."""
    import numpy as np
    import scipy.io

    synsets = np.atleast_1d(scipy.io.loadmat(os.path.join(devkit, "data", "meta.mat"), squeeze_me=True)["synsets"])
    id_to_wnid = {int(row["ILSVRC2012_ID"]): str(row["WNID"]) for row in synsets}
    with open(os.path.join(devkit, "data", "ILSVRC2012_validation_ground_truth.txt")) as f:
        ids = [int(line) for line in f if line.strip()]
    stems = sorted(os.path.splitext(name)[0] for name in val_files)
    if len(stems) != len(ids):
        raise SystemExit(f"error: {len(stems)} validation images but {len(ids)} ground-truth labels")
    return {stem: id_to_wnid[label] for stem, label in zip(stems, ids)}


PLACE = {"symlink": os.symlink, "copy": shutil.copy2, "move": shutil.move}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="DATASET.ROOT: the folder that holds imagenet/")
    parser.add_argument("--val-dir", required=True, help="folder with the 50,000 flat validation JPEGs")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--solution", help="Kaggle LOC_val_solution.csv")
    labels.add_argument("--devkit", help="extracted ILSVRC2012_devkit_t12 folder")
    parser.add_argument("--mode", choices=sorted(PLACE), default="symlink",
                        help="how files are placed (default symlink)")
    args = parser.parse_args(argv)

    files = sorted(name for name in os.listdir(args.val_dir) if name.lower().endswith((".jpeg", ".jpg")))
    wnid_of = labels_from_solution(args.solution) if args.solution else labels_from_devkit(args.devkit, files)
    out_dir = os.path.join(os.path.abspath(os.path.expanduser(args.root)), "imagenet", "images", "val")
    unlabeled = [name for name in files if os.path.splitext(name)[0] not in wnid_of]
    if unlabeled:
        raise SystemExit(f"error: no label for {len(unlabeled)} images, e.g. {unlabeled[:3]}")
    for name in files:
        target = os.path.join(out_dir, wnid_of[os.path.splitext(name)[0]], name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.lexists(target):
            PLACE[args.mode](os.path.abspath(os.path.join(args.val_dir, name)), target)
    print(f"placed {len(files)} validation images in {len(set(wnid_of.values()))} wnid folders under {out_dir}")


if __name__ == "__main__":
    main()
