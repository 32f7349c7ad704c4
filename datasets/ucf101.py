"""UCF101 action recognition, one middle frame per video (101 classes).

Layout (``DATASET.ROOT/ucf101/``), as in CoOp: ``UCF-101-midframes/<Renamed_Action>/<video stem>.jpg`` (CoOp's
mid-frame archive, or ``python scripts/prep_ucf101_midframes.py`` over the official videos; ``Renamed_Action`` =
CamelCase split with underscores, ``ApplyEyeMakeup`` -> ``Apply_Eye_Makeup``) and the official
``ucfTrainTestlist/{classInd.txt,trainlist0N.txt,testlist0N.txt}`` (+ ``split_zhou_UCF101.json`` for coop).
Label = ``classInd.txt`` index - 1; class names ``"Apply Eye Makeup"``.

Protocols: ``microclip`` = official split ``DATASET.UCF101.SPLIT_ID`` (1): train 9,537 / test 3,783;
``coop`` = CoOp's split file.
"""

from __future__ import annotations

import os
import re

from clipkit.config import CN, cfg_extension
from clipkit.dassl import DATASET_REGISTRY, DatasetBase

from ._common import (
    DatasetLayoutError,
    dataset_root,
    load_split_file,
    make_splits,
    read_lines,
    require_dir,
    split_protocol,
)

FRAMES_FOLDER = "UCF-101-midframes"
LISTS_FOLDER = "ucfTrainTestlist"


@cfg_extension
def _add_ucf101_cfg(cfg):
    cfg.DATASET.UCF101 = CN()
    # Official train/test list pair (1..3) used by the microclip protocol; microCLIP uses split 1.
    cfg.DATASET.UCF101.SPLIT_ID = 1


def split_camel_case(action: str) -> list:
    """``"ApplyEyeMakeup"`` -> ``["Apply", "Eye", "Makeup"]`` (CoOp's renaming)."""
    return re.findall(r"[A-Z][^A-Z]*", action)


def frame_path(video_path: str) -> str:
    """``"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"`` -> ``"Apply_Eye_Makeup/v_ApplyEyeMakeup_g08_c01.jpg"``."""
    action, filename = video_path.split("/")
    return f"{'_'.join(split_camel_case(action))}/{os.path.splitext(filename)[0]}.jpg"


def read_class_index(path: str, reader) -> list:
    """Action folder names in label order from ``classInd.txt`` (lines ``<1-based index> <Action>``)."""
    actions = {}
    for line in read_lines(path, reader, "class list"):
        index, _, action = line.partition(" ")
        actions[int(index) - 1] = action.strip()
    if sorted(actions) != list(range(len(actions))):
        raise DatasetLayoutError(f"{path}: class indices must run from 1 to {len(actions)} without gaps")
    return [actions[label] for label in range(len(actions))]


def read_video_list(path: str, action_to_label: dict, classnames, reader) -> list:
    """Records ``(frame path, label, name)`` of a train/test list; a train list's label column is cross-checked."""
    records = []
    for line in read_lines(path, reader, "split list"):
        fields = line.split()
        action = fields[0].split("/")[0]
        if action not in action_to_label:
            raise DatasetLayoutError(f"{path}: action {action!r} of {fields[0]} is not in classInd.txt")
        label = action_to_label[action]
        if len(fields) > 1 and int(fields[1]) - 1 != label:
            raise DatasetLayoutError(f"{path}: {fields[0]} has label {fields[1]}, classInd.txt says {label + 1}")
        records.append((frame_path(fields[0]), label, classnames[label]))
    return records


@DATASET_REGISTRY.register()
class UCF101(DatasetBase):
    dataset_key = "ucf101"
    dataset_folder = "ucf101"
    docs_section = "ucf101"
    split_protocols = ("microclip", "coop")
    split_files = {"coop": "split_zhou_UCF101.json"}

    def __init__(self, cfg):
        self.dataset_dir = dataset_root(cfg, self)
        protocol = split_protocol(cfg, self)
        lists_dir = os.path.join(self.dataset_dir, LISTS_FOLDER)
        actions = read_class_index(os.path.join(lists_dir, "classInd.txt"), self)
        classnames = [" ".join(split_camel_case(action)) for action in actions]
        image_dir = require_dir(os.path.join(self.dataset_dir, FRAMES_FOLDER), self, "mid-frame folder")

        if protocol == "microclip":
            split_id = cfg.DATASET.UCF101.SPLIT_ID
            lists = {"train": os.path.join(lists_dir, f"trainlist0{split_id}.txt"),
                     "test": os.path.join(lists_dir, f"testlist0{split_id}.txt")}
            action_to_label = {action: label for label, action in enumerate(actions)}
            splits = {part: read_video_list(path, action_to_label, classnames, self) for part, path in lists.items()}
            source = " / ".join(lists.values())
        else:
            source = os.path.join(self.dataset_dir, self.split_files["coop"])
            splits = load_split_file(source, self, classnames)
        train, val, test = make_splits(cfg, self, splits, image_dir, classnames, source)
        super().__init__(train_x=train, val=val, test=test)
