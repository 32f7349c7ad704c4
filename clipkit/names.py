"""Display names and preferred orders of methods, datasets and backbones: the one place both the sweep and the parser use.

Pure standard library (``output_parser.py`` imports this module without torch). Lookups are forgiving: case, spaces,
dashes and underscores are ignored and common aliases are accepted, so ``"ZeroshotCLIP"``, ``"zsclip"`` and the paper's
row label ``"CLIP"`` all name the same method. Unknown names fall back to themselves and sort after the known ones, so a
newly registered method or dataset shows up in every table without editing this file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple


@dataclass(frozen=True)
class Name:
    """A canonical key, its display name and the other spellings that mean the same thing."""

    key: str
    display: str
    aliases: Tuple[str, ...] = ()


# Methods in the row order of microCLIP's Table 1 (zero-shot / training-free first, then unsupervised adaptation).
METHODS: Tuple[Name, ...] = (
    Name("zeroshot_clip", "CLIP", ("ZeroshotCLIP", "ZeroShotCLIP", "ZSCLIP", "CLIP", "zero_shot")),
    Name("cupl", "CuPL", ("CuPL",)),
    Name("wca", "WCA", ("WCA",)),
    Name("upl", "UPL", ("UPL",)),
    Name("pouf", "POUF", ("POUF",)),
    Name("lafter", "LaFTer", ("LaFTer",)),
    Name("reclip", "ReCLIP", ("ReCLIP",)),
    Name("dpa", "DPA", ("DPA",)),
    Name("ntua", "NtUA", ("NtUA",)),
    Name("microclip", "microCLIP", ("MicroCLIP", "microCLIP")),
)

# Datasets in the column order of microCLIP's Table 1; display names are the paper's column headers.
DATASETS: Tuple[Name, ...] = (
    Name("birdsnap", "Birdsnap"),
    Name("caltech101", "Caltech", ("caltech", "Caltech101")),
    Name("stanford_cars", "Cars", ("cars", "StanfordCars")),
    Name("cifar100", "CIFAR100", ("CIFAR100Classes", "cifar-100")),
    Name("dtd", "DTD", ("describable_textures", "DescribableTextures")),
    Name("fgvc_aircraft", "FGVC", ("fgvc", "aircraft", "FGVCAircraft")),
    Name("oxford_flowers", "Flowers", ("flowers", "flowers102", "oxford_flowers102", "OxfordFlowers")),
    Name("food101", "Food101", ("food", "food-101")),
    Name("imagenet", "ImageNet", ("ImageNet",)),
    Name("oxford_pets", "Pets", ("pets", "OxfordPets")),
    Name("resisc45", "RESISC", ("resisc", "nwpu_resisc45", "RESISC45")),
    Name("sun397", "SUN397", ("sun", "SUN397")),
    Name("ucf101", "UCF101", ("ucf", "UCF101")),
    Name("tiny", "Tiny"),
)

BACKBONES: Tuple[Name, ...] = (
    Name("vit_b32", "ViT-B/32", ("ViT-B/32",)),
    Name("vit_b16", "ViT-B/16", ("ViT-B/16",)),
    Name("metaclip_400m", "MetaCLIP-400M ViT-B/32", ("open_clip:ViT-B-32-quickgelu@metaclip_400m",)),
    Name("metaclip_2_5b", "MetaCLIP-2.5B ViT-B/32", ("open_clip:ViT-B-32-quickgelu@metaclip_fullcc",)),
    Name("tiny", "tiny CLIP"),
)


def normalize(name: str) -> str:
    """Lower-case and drop everything but letters and digits: ``"Zero-Shot_CLIP"`` -> ``"zeroshotclip"``."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def _index(entries: Iterable[Name]) -> Dict[str, Tuple[int, Name]]:
    index: Dict[str, Tuple[int, Name]] = {}
    for position, entry in enumerate(entries):
        for spelling in (entry.key, entry.display) + entry.aliases:
            index.setdefault(normalize(spelling), (position, entry))
    return index


_METHOD_INDEX = _index(METHODS)
_DATASET_INDEX = _index(DATASETS)
_BACKBONE_INDEX = _index(BACKBONES)


def _lookup(index, name: str) -> Optional[Tuple[int, Name]]:
    return index.get(normalize(name))


def canonical_method(name: str) -> str:
    """Canonical key of a method (registry name, display name or paper row label); unknown names map to themselves."""
    hit = _lookup(_METHOD_INDEX, name)
    return hit[1].key if hit else name


def canonical_dataset(key: str) -> str:
    """Canonical key of a dataset (config stem, reader name or display name); unknown keys map to themselves."""
    hit = _lookup(_DATASET_INDEX, key)
    return hit[1].key if hit else key


def method_display_name(name: str, overrides: Optional[Dict[str, str]] = None) -> str:
    """Display name of a method; ``overrides`` (registry name -> display name) wins, unknown names are kept."""
    if overrides and name in overrides:
        return overrides[name]
    hit = _lookup(_METHOD_INDEX, name)
    return hit[1].display if hit else name


def dataset_display_name(key: str) -> str:
    """Display name of a dataset key (the paper's column header); unknown keys are kept."""
    hit = _lookup(_DATASET_INDEX, key)
    return hit[1].display if hit else key


def backbone_display_name(key: str) -> str:
    """``"vit_b32"`` -> ``"ViT-B/32"``; unknown keys are kept."""
    hit = _lookup(_BACKBONE_INDEX, key)
    return hit[1].display if hit else key


def _sorted(names: Iterable[str], index) -> List[str]:
    unique = list(dict.fromkeys(names))
    known_count = len({pos for pos, _ in index.values()})

    def rank(name: str):
        hit = _lookup(index, name)
        return (hit[0] if hit else known_count, normalize(name), name)

    return sorted(unique, key=rank)


def sort_methods(names: Iterable[str]) -> List[str]:
    """Known methods in the paper's row order, then unknown ones alphabetically (duplicates dropped)."""
    return _sorted(names, _METHOD_INDEX)


def sort_datasets(keys: Iterable[str]) -> List[str]:
    """Known datasets in the paper's column order, then unknown ones alphabetically (duplicates dropped)."""
    return _sorted(keys, _DATASET_INDEX)


__all__ = [
    "Name",
    "METHODS",
    "DATASETS",
    "BACKBONES",
    "normalize",
    "canonical_method",
    "canonical_dataset",
    "method_display_name",
    "dataset_display_name",
    "backbone_display_name",
    "sort_methods",
    "sort_datasets",
]
