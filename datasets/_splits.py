"""Split files and seeded per-class sampling. Pure Python + NumPy (no Dassl), shared by readers and prep scripts.

A *record* is ``(relative image path, label, classname)``. A split file is CoOp's JSON format
``{"train": [[impath, label, classname], ...], "val": [...], "test": [...]}`` with paths relative to the dataset's
image folder; files written here add a ``"meta"`` entry (generator, seed, fractions) that CoOp's reader ignores.

Sampling is reproducible across machines: records are sorted by path within each class before a seeded
permutation, so the result never depends on the order in which the file system lists a folder (microCLIP's SUN397
script shuffled ``os.listdir`` output, which does).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

Record = Tuple[str, int, str]
SPLIT_NAMES = ("train", "val", "test")


class SplitFileError(ValueError):
    """A split file is malformed."""


def group_by_label(records: Iterable[Record]) -> Dict[int, List[Record]]:
    """{label: records sorted by path}, labels ascending."""
    groups: Dict[int, List[Record]] = defaultdict(list)
    for record in records:
        groups[record[1]].append(record)
    return {label: sorted(groups[label]) for label in sorted(groups)}


def split_per_class(records: Iterable[Record], fractions: Dict[str, float], seed: int) -> Dict[str, List[Record]]:
    """Split every class at random into the named parts of ``fractions`` (values sum to 1, dict order kept).

    Per class of n records, each part but the last gets ``floor(fraction * n)`` records; the last gets the rest.
    """
    total = sum(fractions.values())
    if not fractions or abs(total - 1.0) > 1e-9 or min(fractions.values()) < 0:
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    names = list(fractions)
    out: Dict[str, List[Record]] = {name: [] for name in names}
    for items in group_by_label(records).values():
        order = rng.permutation(len(items))
        start = 0
        for i, name in enumerate(names):
            stop = len(items) if i == len(names) - 1 else start + int(np.floor(fractions[name] * len(items)))
            out[name].extend(items[j] for j in order[start:stop])
            start = stop
    return out


def sample_per_class(records: Iterable[Record], per_class: int, seed: int) -> Tuple[List[Record], List[Record]]:
    """(``per_class`` random records of every class, the remaining records); a class with fewer gives all it has."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    chosen: List[Record] = []
    rest: List[Record] = []
    for items in group_by_label(records).values():
        picked = set(rng.permutation(len(items))[:per_class].tolist())
        for j, item in enumerate(items):
            (chosen if j in picked else rest).append(item)
    return chosen, rest


def write_split_file(path: str, splits: Dict[str, Sequence[Record]], meta: dict) -> None:
    """Write ``splits`` (keys among train/val/test) in CoOp's format plus a ``meta`` entry; atomic."""
    unknown = set(splits) - set(SPLIT_NAMES)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)}; use {SPLIT_NAMES}")
    payload = {name: [[impath, int(label), cname] for impath, label, cname in splits.get(name, [])]
               for name in SPLIT_NAMES}
    payload["meta"] = meta
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=0)
    os.replace(tmp, path)


def label_order(splits: Dict[str, Sequence[Record]]) -> List[str]:
    """Class names in label order from the records of a split (labels 0..n-1 must all occur)."""
    names: Dict[int, str] = {}
    for part in SPLIT_NAMES:
        for _, label, cname in splits.get(part, []):
            names.setdefault(label, cname)
    if sorted(names) != list(range(len(names))):
        raise SplitFileError(f"labels {sorted(set(range(max(names, default=-1) + 1)) - set(names))} have no record")
    return [names[label] for label in range(len(names))]


def read_split_file(path: str) -> Dict[str, list]:
    """{"train"/"val"/"test": [records], "meta": dict} from a CoOp-format split file (missing parts = empty)."""
    try:
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
    except json.JSONDecodeError as err:
        raise SplitFileError(f"{path} is not valid JSON ({err}): the file is truncated or corrupt") from err
    if not isinstance(payload, dict) or not any(name in payload for name in SPLIT_NAMES):
        raise SplitFileError(f"{path}: expected a JSON object with keys {SPLIT_NAMES}")
    out: Dict[str, List[Record]] = {}
    for name in SPLIT_NAMES:
        records = []
        for entry in payload.get(name, []):
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[1], int)):
                raise SplitFileError(f"{path} [{name}]: expected [impath, label, classname] entries, got {entry!r}")
            records.append((str(entry[0]), entry[1], str(entry[2])))
        out[name] = records
    out["meta"] = payload.get("meta", {})
    return out
