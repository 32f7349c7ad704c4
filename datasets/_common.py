"""Code shared by the benchmark readers: locating files (or failing with a message that says where to look, also when
a folder was put one level off), choosing the split protocol, reading split files, taking the classes of a release
without a class list from its folders (``scan_class_folders``), turning records into ``Datum`` lists, final checks.

Readers describe themselves with class attributes:

* ``dataset_key``: config stem (``configs/datasets/<key>.yaml``), also the text-resource key;
* ``dataset_folder``: folder under ``DATASET.ROOT``;
* ``docs_section``: anchor of the reader's section in DATASETS.md;
* ``split_protocols``: the ``DATASET.SPLIT_PROTOCOL`` values it supports;
* ``split_files``: ``{protocol: split-file name}`` for protocols read from a split file.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from clipkit.dassl import Datum
from clipkit.text.descriptions import name_key, word_key

from ._splits import SPLIT_NAMES, Record, SplitFileError, label_order, read_split_file

KNOWN_SPLIT_PROTOCOLS = ("microclip", "coop")
DOCS_FILE = "DATASETS.md"
ERRORS_SHOWN = 5  # how many missing images / bad split entries an error message lists
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder, metadata file or image is missing or malformed."""


class DatasetLayoutWarning(UserWarning):
    """The data differs from the official release (missing, extra or renamed class folders) but can still be read."""


def reader_name(reader) -> str:
    """Class name of a reader given as an instance or as the class itself (prep scripts use the class)."""
    return reader.__name__ if isinstance(reader, type) else type(reader).__name__


def docs_hint(reader) -> str:
    return f"See {DOCS_FILE}#{reader.docs_section} for the expected layout and how to prepare it."


def dataset_root(cfg, reader) -> str:
    """``DATASET.ROOT/<reader.dataset_folder>`` as an absolute path; raises if it does not exist."""
    root = cfg.DATASET.ROOT
    if not root:
        raise DatasetLayoutError(
            f"{reader_name(reader)}: DATASET.ROOT is empty; set it to the folder that holds "
            f"'{reader.dataset_folder}/'. {docs_hint(reader)}"
        )
    path = os.path.join(os.path.abspath(os.path.expanduser(root)), reader.dataset_folder)
    if not os.path.isdir(path):
        raise DatasetLayoutError(f"{reader_name(reader)}: dataset folder not found: {path}."
                                 f"{misplaced_hint(path, reader)} {docs_hint(reader)}")
    return path


def misplaced_hint(dataset_dir: str, reader) -> str:
    """A sentence saying where the reader's ``image_folder`` was found instead of ``<dataset_dir>/<image_folder>``:
    directly under ``DATASET.ROOT``, or as class folders directly inside ``dataset_dir``; "" when neither."""
    folder = getattr(reader, "image_folder", "")
    if not folder:
        return ""
    target = os.path.join(dataset_dir, folder)
    beside = os.path.join(os.path.dirname(dataset_dir), folder)
    if os.path.isdir(beside):
        return (f" Found {beside} directly under DATASET.ROOT; it belongs in {target} "
                f"(mkdir -p {dataset_dir} && mv {beside} {target}).")
    if os.path.isdir(dataset_dir):
        subfolders = [entry.name for entry in os.scandir(dataset_dir) if entry.is_dir()]
        if any(list_images(os.path.join(dataset_dir, sub)) for sub in subfolders):
            return (f" {dataset_dir} holds image folders directly ({shown(sorted(subfolders))}); move them into "
                    f"{target}, or make the split with `scripts/prep_splits.py --image-folder .`.")
    return ""


def image_folder_dir(dataset_dir: str, reader, image_folder: str = "") -> str:
    """``<dataset_dir>/<image_folder or reader.image_folder>``; raises with a hint when it was put elsewhere."""
    path = os.path.join(dataset_dir, image_folder or reader.image_folder)
    if not os.path.isdir(path):
        hint = misplaced_hint(dataset_dir, reader) if image_folder in ("", reader.image_folder) else ""
        raise DatasetLayoutError(f"{reader_name(reader)}: image folder not found: {path}.{hint} {docs_hint(reader)}")
    return path


def require_file(path: str, reader, what: str = "metadata file") -> str:
    """``path`` if it is a file, else a DatasetLayoutError naming it."""
    if not os.path.isfile(path):
        raise DatasetLayoutError(f"{reader_name(reader)}: {what} not found: {path}. {docs_hint(reader)}")
    return path


def require_dir(path: str, reader, what: str = "image folder") -> str:
    """``path`` if it is a folder, else a DatasetLayoutError naming it."""
    if not os.path.isdir(path):
        raise DatasetLayoutError(f"{reader_name(reader)}: {what} not found: {path}. {docs_hint(reader)}")
    return path


def first_existing(paths: Sequence[str], reader, what: str = "metadata file") -> str:
    """The first of ``paths`` that is a file; the error lists all of them."""
    for path in paths:
        if os.path.isfile(path):
            return path
    raise DatasetLayoutError(
        f"{reader_name(reader)}: {what} not found; looked for: {', '.join(paths)}. {docs_hint(reader)}"
    )


def read_lines(path: str, reader, what: str = "metadata file") -> List[str]:
    """Non-empty, stripped lines of a text file (must exist)."""
    require_file(path, reader, what)
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def list_images(folder: str) -> List[str]:
    """Sorted names of the image files directly inside ``folder`` (hidden files skipped)."""
    return sorted(name for name in os.listdir(folder)
                  if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS))


def shown(items: Sequence[str], limit: int = ERRORS_SHOWN) -> str:
    """``"a, b, c"`` or ``"a, b, ... (12 in all)"``: a list cut to ``limit`` entries for a message."""
    items = list(items)
    text = ", ".join(items[:limit])
    return text + (f", ... ({len(items)} in all)" if len(items) > limit else "")


@dataclass(frozen=True)
class ClassFolder:
    """A class folder found on disk: ``folder`` = its name there, ``key`` = its official spelling (the same unless
    the folder was renamed, or the folder name itself for a folder the official list does not have)."""

    folder: str
    key: str


def scan_class_folders(image_dir: str, reader, official: Sequence[str], ignored: Sequence[str] = (),
                       strict: bool = False, extras_usable: bool = True) -> List[ClassFolder]:
    """The class folders of ``image_dir`` in label order: code-point order of their official spelling (ImageFolder
    order on an official copy), compared with the ``official`` folder list of the release.

    A folder equal to an official one up to case, separators and punctuation (``car-side`` for ``car_side``) stands
    for it; ``ignored`` folders and folders without images are skipped. Missing official folders, folders not in the
    official list and renamed folders are reported in one ``DatasetLayoutWarning``; with ``strict`` (a split file
    made for the official class set) missing or extra folders raise instead. ``extras_usable=False``: the protocol's
    metadata cannot place images of an unknown folder, so such folders are reported and left out.
    """
    name = reader_name(reader)
    require_dir(image_dir, reader)
    ignored_keys = {name_key(folder) for folder in ignored}
    on_disk, empty = [], []
    for folder in sorted(os.listdir(image_dir)):
        path = os.path.join(image_dir, folder)
        if folder.startswith(".") or not os.path.isdir(path) or name_key(folder) in ignored_keys:
            continue
        (on_disk if list_images(path) else empty).append(folder)
    official_set = set(official)
    free = [key for key in official if key not in on_disk]  # official folders not present under their own name
    classes, renamed, extra = [], [], []
    for folder in on_disk:
        if folder in official_set:
            classes.append(ClassFolder(folder, folder))
            continue
        match = next((key for key in free if same_class(folder, key)), None)
        if match is not None:
            free.remove(match)
            classes.append(ClassFolder(folder, match))
            renamed.append(f"{folder} -> {match}")
        else:
            extra.append(folder)
            if extras_usable:
                classes.append(ClassFolder(folder, folder))
    missing = free  # official folders absent, or present without images
    classes.sort(key=lambda item: item.key)
    problems = ([f"missing {len(missing)} of the {len(official)} official class folders ({shown(missing)})"]
                if missing else [])
    problems += [f"{len(empty)} folders without images ignored ({shown(empty)})"] if empty else []
    problems += ([f"{len(extra)} folders not in the official list ({shown(extra)}) "
                  + ("used as classes" if extras_usable else "ignored: the split metadata does not list them")]
                 if extra else [])
    if strict and (missing or extra or empty):
        raise DatasetLayoutError(
            f"{name}: the class folders of {image_dir} differ from the official {len(official)}: "
            + "; ".join(problems) + ". The split file of this protocol is made for the official class set; use "
            f"DATASET.SPLIT_PROTOCOL microclip for a partial copy, or restore the folders. {docs_hint(reader)}"
        )
    problems += [f"{len(renamed)} renamed folders matched to their official names ({shown(renamed)})"] if renamed \
        else []
    if problems:
        changed = missing or (extra and extras_usable)
        outcome = (f"Labels = the {len(classes)} classes present, in sorted order; results are not comparable with "
                   f"the paper's." if changed else "Labels and class names are the official ones.")
        warnings.warn(f"{name}: the class folders of {image_dir} differ from the official release: "
                      + "; ".join(problems) + f". {outcome} {docs_hint(reader)}", DatasetLayoutWarning, stacklevel=2)
    if not classes:
        raise DatasetLayoutError(f"{name}: no class folder with images in {image_dir}. {docs_hint(reader)}")
    return classes


def class_records(image_dir: str, classes: Sequence[ClassFolder], classnames: Sequence[str]) -> List[Record]:
    """Records ``(<folder>/<image>, label, classname)`` of every image of every class folder (label order)."""
    return [(f"{item.folder}/{image}", label, classnames[label])
            for label, item in enumerate(classes) for image in list_images(os.path.join(image_dir, item.folder))]


def remap_folders(splits: Dict[str, Sequence[Record]], classes: Sequence[ClassFolder]) -> Dict[str, List[Record]]:
    """The train/val/test records of ``splits`` with each path's first component (an official folder name) replaced
    by the renamed folder found on disk."""
    on_disk = {item.key: item.folder for item in classes if item.key != item.folder}

    def remap(impath: str) -> str:
        head, sep, tail = impath.partition("/")
        return on_disk.get(head, head) + sep + tail

    return {part: [(remap(impath), label, cname) for impath, label, cname in splits.get(part, [])]
            for part in SPLIT_NAMES}


def load_mat(path: str, reader, what: str = "metadata file") -> dict:
    """``scipy.io.loadmat(path, squeeze_me=True)`` of an existing MATLAB file, with a clear error if unreadable."""
    import scipy.io

    require_file(path, reader, what)
    try:
        return scipy.io.loadmat(path, squeeze_me=True)
    except Exception as err:  # scipy raises several types for corrupt / HDF5 files
        raise DatasetLayoutError(f"{reader_name(reader)}: cannot read {what} {path} ({err}). {docs_hint(reader)}")


def mat_field(mat: dict, key: str, path: str, reader):
    """``mat[key]`` as an at-least-1-D array; raises naming the file when the variable is missing."""
    if key not in mat:
        raise DatasetLayoutError(f"{reader_name(reader)}: {path} has no variable {key!r}. {docs_hint(reader)}")
    return np.atleast_1d(mat[key])


def split_protocol(cfg, reader) -> str:
    """``DATASET.SPLIT_PROTOCOL``, checked against the protocols the reader supports."""
    protocol = cfg.DATASET.SPLIT_PROTOCOL
    if protocol not in KNOWN_SPLIT_PROTOCOLS:
        raise ValueError(
            f"DATASET.SPLIT_PROTOCOL={protocol!r} is unknown; use one of {', '.join(KNOWN_SPLIT_PROTOCOLS)}."
        )
    if protocol not in reader.split_protocols:
        raise ValueError(
            f"{reader_name(reader)} does not support DATASET.SPLIT_PROTOCOL={protocol!r} "
            f"(no such split is defined for this dataset); use one of {', '.join(reader.split_protocols)}. "
            f"{docs_hint(reader)}"
        )
    return protocol


def same_class(name_a: str, name_b: str) -> bool:
    """True when two spellings of a class name agree up to case, separators, punctuation and word order."""
    return name_key(name_a) == name_key(name_b) or word_key(name_a) == word_key(name_b)


def split_file_fix(path: str, reader) -> str:
    """How to get a good copy of a split file: regenerate ours, download CoOp's again."""
    if os.path.basename(path).startswith("split_microclip_"):
        return (f"Make it again with `python scripts/prep_splits.py --dataset {reader.dataset_key} "
                f"--root <DATASET.ROOT> --force`.")
    return (f"Download {os.path.basename(path)} again (the link is in CoOp's DATASETS.md) and replace {path}; "
            f"it cannot be regenerated here.")


def load_split_file(path: str, reader, classnames: Optional[Sequence[str]] = None) -> Dict[str, list]:
    """Records (and ``"meta"``) of a CoOp-format split file, checked against the reader's label order.

    Every label must be in range and its class name in the file must agree (``same_class``) with
    ``classnames[label]``; a disagreement means the file was made with another label order, so it raises.
    ``classnames=None``: the label order is the one the file records (``label_order``), returned under
    ``"classnames"``.
    """
    if os.path.basename(path).startswith("split_microclip_") and not os.path.isfile(path):
        raise DatasetLayoutError(
            f"{reader_name(reader)}: split file not found: {path}. Make it once with `python scripts/prep_splits.py "
            f"--dataset {reader.dataset_key} --root <DATASET.ROOT>`. {docs_hint(reader)}"
        )
    require_file(path, reader, "split file")
    try:
        splits = read_split_file(path)
        if classnames is None:
            classnames = splits["classnames"] = label_order(splits)
    except SplitFileError as err:
        raise DatasetLayoutError(f"{reader_name(reader)}: {err}. {split_file_fix(path, reader)} "
                                 f"{docs_hint(reader)}") from err
    problems = []
    for part in SPLIT_NAMES:
        for impath, label, cname in splits[part]:
            if not 0 <= label < len(classnames):
                problems.append(f"[{part}] {impath}: label {label} outside 0..{len(classnames) - 1}")
            elif not same_class(cname, classnames[label]):
                problems.append(f"[{part}] {impath}: label {label} is {cname!r} in the file, "
                                f"{classnames[label]!r} in the dataset's metadata")
    problems = problems[:ERRORS_SHOWN] + ([f"... {len(problems) - ERRORS_SHOWN} more"]
                                                  if len(problems) > ERRORS_SHOWN else [])
    if problems:
        raise DatasetLayoutError(
            f"{reader_name(reader)}: split file {path} disagrees with the label order of the metadata:\n  "
            + "\n  ".join(problems) + f"\n{split_file_fix(path, reader)} {docs_hint(reader)}"
        )
    return splits


def load_generated_split(reader, protocol: str, classnames: Optional[Sequence[str]] = None) -> tuple:
    """``(splits, image_dir, split_file, classnames)`` for a reader whose split file (``reader.split_files[protocol]``)
    records the image folder it was made from in ``meta.image_folder`` (default: ``reader.image_folder``).
    ``classnames=None``: the label order recorded in the split file (a release without a class list)."""
    split_file = os.path.join(reader.dataset_dir, reader.split_files[protocol])
    splits = load_split_file(split_file, reader, classnames)
    image_dir = image_folder_dir(reader.dataset_dir, reader, splits["meta"].get("image_folder", ""))
    return splits, image_dir, split_file, splits.get("classnames", classnames)


def to_datums(records: Sequence[Record], image_dir: str, classnames: Sequence[str], reader, source: str) -> list:
    """``Datum(image_dir/impath, label, classnames[label])`` for each record; every image file must exist.

    ``source`` names the metadata the records came from, for the error message.
    """
    paths = [os.path.join(image_dir, impath) for impath, _, _ in records]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = "\n  ".join(missing[:ERRORS_SHOWN])
        raise DatasetLayoutError(
            f"{reader_name(reader)}: {len(missing)} of {len(paths)} images listed in {source} are missing, e.g.\n  "
            f"{shown}\n{docs_hint(reader)}"
        )
    return [Datum(impath=path, label=label, classname=classnames[label])
            for path, (_, label, _) in zip(paths, records)]


def finalize_splits(cfg, reader, classnames: Sequence[str], train: list, val: list, test: list) -> tuple:
    """Check the splits and apply ``DATASET.NUM_SHOTS`` (CoOp: K per class for train, min(K, 4) for val).

    The train split must contain every class: Dassl derives ``num_classes`` and ``classnames`` from it.
    """
    name = reader_name(reader)
    present = {item.label for item in train}
    absent = [classnames[label] for label in range(len(classnames)) if label not in present]
    if absent:
        raise DatasetLayoutError(
            f"{name}: the train split has no images of {len(absent)} classes (e.g. {absent[:5]}); "
            f"the data or split file is incomplete. {docs_hint(reader)}"
        )
    if not test:
        raise DatasetLayoutError(f"{name}: the test split is empty. {docs_hint(reader)}")
    num_shots = cfg.DATASET.NUM_SHOTS
    if num_shots >= 1:
        train = reader.generate_fewshot_dataset(train, num_shots=num_shots)
        if val:
            val = reader.generate_fewshot_dataset(val, num_shots=min(num_shots, 4))
    return train, val, test


def make_splits(cfg, reader, splits: Dict[str, list], image_dir: str, classnames: Sequence[str], source: str) -> tuple:
    """(train, val, test) Datum lists from ``{"train"/"val"/"test": records}``: ``to_datums`` + ``finalize_splits``."""
    train, val, test = (to_datums(splits.get(part, []), image_dir, classnames, reader, source)
                        for part in ("train", "val", "test"))
    return finalize_splits(cfg, reader, classnames, train, val, test)


def underscores_to_spaces(name: str) -> str:
    """Prompt-ready spelling of a folder-style class name: ``"apple_pie"`` -> ``"apple pie"``."""
    return " ".join(name.replace("_", " ").split())
