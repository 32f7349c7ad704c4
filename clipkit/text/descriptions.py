"""CuPL-format class descriptions: a JSON object ``{class name: [sentence, ...]}``.

``load_descriptions(path, classnames)`` returns ``{classname: [sentences]}`` in label order. File keys rarely spell
class names exactly like a reader does, so each class name is matched in this order, first hit wins:

1. the exact key;
2. the same letters and digits ignoring case, spaces, underscores, hyphens and punctuation
   (``"Allen's Hummingbird"`` = ``"Allens Hummingbird"``, ``"HandstandPushups"`` = ``"Hand Stand Pushups"``);
3. a known renamed key (``DESCRIPTION_KEY_ALIASES``: CuPL's Caltech101 file uses CLIP's curated names such as
   ``"side of a car"`` where readers say ``"car side"``);
4. only then, the same words in any order, each compared as in 2
   (``"2012 Ram C/V Cargo Van Minivan"`` = ``"Ram CV Cargo Van Minivan 2012"``), among the keys that no class matched
   by 1-3 and only when no other class has the same words; each such match is printed.

Keys of the file that match no class are ignored (CuPL's Caltech101 file has 102 keys, the benchmark 100 classes).
Classes that match nothing are all listed in one error.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from typing import Dict, List, Sequence

from .. import REPO_ROOT

DESCRIPTIONS_DIR = os.path.join(REPO_ROOT, "descriptions")
DOWNLOAD_HINT = "python scripts/download_descriptions.py --dataset {key}"

# Reader class name (normalised with `name_key`) -> other spellings used by published description files.
DESCRIPTION_KEY_ALIASES: Dict[str, tuple] = {
    # Caltech101: CuPL's cal_prompts_full.json uses CLIP's curated Caltech names.
    "face": ("off-center face",),  # folder Faces (Faces_easy = "centered face" is not a benchmark class)
    "carside": ("side of a car",),
    "cougarbody": ("body of a cougar cat",),
    "cougarface": ("face of a cougar cat",),
    "crocodilehead": ("head of a crocodile",),
    "flamingohead": ("head of a flamingo",),
    "snoopy": ("snoopy (cartoon beagle)",),
    "yinyang": ("yin and yang symbol",),
}


class DescriptionsError(ValueError):
    """A description file is malformed or lacks classes."""


def name_key(name: str) -> str:
    """Lower-case letters and digits only: ``"Hand-Stand_Pushups"`` -> ``"handstandpushups"``."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def word_key(name: str) -> tuple:
    """Sorted words (split at spaces/underscores, each reduced by `name_key`): order-insensitive spelling."""
    return tuple(sorted(filter(None, (name_key(word) for word in re.split(r"[\s_]+", name)))))


def _unique_index(keys: Sequence[str], key_fn) -> Dict[object, str]:
    """{key_fn(k): k} over file keys, leaving out normalised spellings shared by several keys (ambiguous)."""
    index: Dict[object, str] = {}
    ambiguous = set()
    for key in keys:
        norm = key_fn(key)
        if norm in index and index[norm] != key:
            ambiguous.add(norm)
        index[norm] = key
    for norm in ambiguous:
        del index[norm]
    return index


def match_class_keys(classnames: Sequence[str], file_keys: Sequence[str]) -> tuple:
    """Map each class name to one file key. Returns (``{classname: file_key}``, ``[unmatched classnames]``)."""
    exact = set(file_keys)
    by_name = _unique_index(file_keys, name_key)
    matched: Dict[str, str] = {}
    for cname in classnames:
        candidates = [cname if cname in exact else None, by_name.get(name_key(cname))]
        candidates += [by_name.get(name_key(alias)) for alias in DESCRIPTION_KEY_ALIASES.get(name_key(cname), ())]
        hit = next((c for c in candidates if c is not None), None)
        if hit is not None:
            matched[cname] = hit
    # word order last, over unclaimed keys, for classes whose words no other class shares
    claimed = set(matched.values())
    by_words = _unique_index([k for k in file_keys if k not in claimed], word_key)
    class_words: Dict[tuple, int] = {}
    for cname in classnames:
        class_words[word_key(cname)] = class_words.get(word_key(cname), 0) + 1
    unmatched: List[str] = []
    for cname in classnames:
        if cname in matched:
            continue
        hit = by_words.get(word_key(cname)) if class_words[word_key(cname)] == 1 else None
        if hit is None:
            unmatched.append(cname)
        else:
            matched[cname] = hit
            print(f"Descriptions: class {cname!r} matched the key {hit!r} by its words in another order")
    return matched, unmatched


def load_descriptions(path: str, classnames: Sequence[str]) -> Dict[str, List[str]]:
    """``{classname: [sentences]}`` for every class of ``classnames`` (label order) from a CuPL JSON at ``path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Description file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            table = json.load(f)
        except json.JSONDecodeError as err:
            raise DescriptionsError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(table, dict):
        raise DescriptionsError(
            f"{path}: expected a JSON object {{class name: [sentences]}}, got {type(table).__name__}"
        )
    matched, unmatched = match_class_keys(classnames, list(table))
    if unmatched:
        lines = []
        for cname in unmatched:
            close = difflib.get_close_matches(cname, list(table), n=3, cutoff=0.6)
            lines.append(f"  - {cname!r}" + (f" (closest keys: {close})" if close else ""))
        raise DescriptionsError(
            f"{path}: no descriptions for {len(unmatched)} of {len(classnames)} classes:\n" + "\n".join(lines) + "\n"
            "Check that the file belongs to this dataset, or add the spelling to "
            "clipkit.text.descriptions.DESCRIPTION_KEY_ALIASES."
        )
    shared = {}
    for cname, key in matched.items():
        shared.setdefault(key, []).append(cname)
    shared = {key: names for key, names in shared.items() if len(names) > 1}
    if shared:
        raise DescriptionsError(
            f"{path}: several classes matched the same key: {shared}. Rename the keys so that each class has its own."
        )
    out: Dict[str, List[str]] = {}
    for cname in classnames:
        sentences = table[matched[cname]]
        if not isinstance(sentences, list) or not sentences or not all(isinstance(s, str) for s in sentences):
            raise DescriptionsError(
                f"{path}: key {matched[cname]!r} (class {cname!r}) must hold a non-empty list of strings"
            )
        out[cname] = list(sentences)
    return out


def downloadable_keys() -> set:
    """Dataset keys ``scripts/download_descriptions.py --dataset`` accepts (empty if the script is missing)."""
    import importlib.util

    script = os.path.join(REPO_ROOT, "scripts", "download_descriptions.py")
    spec = importlib.util.spec_from_file_location("_clipkit_download_descriptions", script)
    if spec is None or not os.path.isfile(script):
        return set()
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return set(module.CUPL_FILES["full"])


def default_descriptions_path(dataset_key: str) -> str:
    """``<repo>/descriptions/<dataset_key>.json``."""
    return os.path.join(DESCRIPTIONS_DIR, f"{dataset_key}.json")


def descriptions_path(cfg, dataset) -> str:
    """Which description file a run uses: ``DATASET.DESCRIPTIONS``, else the reader's
    ``default_descriptions_path()``, else ``descriptions/<dataset_key>.json``."""
    configured = cfg.DATASET.DESCRIPTIONS
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    reader_default = getattr(dataset, "default_descriptions_path", None)
    if callable(reader_default):
        return reader_default()
    key = getattr(dataset, "dataset_key", None)
    if not key:
        raise AttributeError(
            f"{type(dataset).__name__} has no `dataset_key`; set it, or set DATASET.DESCRIPTIONS to a CuPL JSON file."
        )
    return default_descriptions_path(key)


def resolve_descriptions(cfg, dataset) -> Dict[str, List[str]]:
    """Descriptions for ``dataset.classnames`` from the file chosen by ``descriptions_path``."""
    path = descriptions_path(cfg, dataset)
    if not os.path.isfile(path):
        key = getattr(dataset, "dataset_key", "<dataset_key>")
        if key in downloadable_keys():
            how = (f"Download CuPL's descriptions with `{DOWNLOAD_HINT.format(key=key)}` (see descriptions/README.md), "
                   f"or point DATASET.DESCRIPTIONS at a CuPL-format JSON.")
        else:
            how = (f"CuPL publishes no descriptions for dataset {key!r} (scripts/download_descriptions.py knows "
                   f"{sorted(downloadable_keys())}): point DATASET.DESCRIPTIONS at a CuPL-format JSON "
                   f"{{class name: [sentences]}}, or regenerate the dataset if its reader writes its own file.")
        raise FileNotFoundError(f"Description file not found: {path}\n{how}")
    return load_descriptions(path, list(dataset.classnames))
