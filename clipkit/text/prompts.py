"""Per-dataset prompt templates.

* ``get_templates(key)``: CLIP's standard per-dataset prompt ensemble (the lists published with CLIP's
  prompt-engineering notebook; counts in docs: imagenet 80, ucf101 48, caltech101 34, ...), one JSON list per dataset
  in ``clipkit/text/templates/<key>.json``.
* ``get_custom_template(key)``: the single hand-written template CoOp's zero-shot CLIP / UPL use for a dataset.
* ``resolve_templates(dataset)``: a reader's own ``templates`` attribute if it has one, else ``get_templates``.

Every template holds exactly one ``{}`` that receives the class name.
"""

from __future__ import annotations

import functools
import json
import os
from typing import List

TEXT_DIR = os.path.dirname(os.path.abspath(__file__))
TEMPLATES_DIR = os.path.join(TEXT_DIR, "templates")
CUSTOM_TEMPLATES_FILE = os.path.join(TEXT_DIR, "custom_templates.json")


def _check_template_list(templates, source: str) -> List[str]:
    if not isinstance(templates, list) or not templates:
        raise ValueError(f"{source}: expected a non-empty JSON list of template strings")
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(f"{source}: every template must be a string with exactly one '{{}}', got {template!r}")
    return list(templates)


def available_template_keys() -> List[str]:
    """Dataset keys that have a template file, sorted."""
    return sorted(name[: -len(".json")] for name in os.listdir(TEMPLATES_DIR) if name.endswith(".json"))


@functools.lru_cache(maxsize=None)
def _load_templates(dataset_key: str) -> tuple:
    path = os.path.join(TEMPLATES_DIR, f"{dataset_key}.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No prompt templates for dataset key {dataset_key!r}: expected the file {path} "
            f"(a JSON list of strings with one '{{}}' each). Known keys: {', '.join(available_template_keys())}. "
            "Add the file, or give the reader a class attribute `templates`."
        )
    with open(path, encoding="utf-8") as f:
        return tuple(_check_template_list(json.load(f), path))


def get_templates(dataset_key: str) -> List[str]:
    """CLIP's prompt ensemble for ``dataset_key`` (a config stem, e.g. ``"fgvc_aircraft"``); a fresh list."""
    return list(_load_templates(dataset_key))


@functools.lru_cache(maxsize=None)
def _load_custom_templates() -> dict:
    with open(CUSTOM_TEMPLATES_FILE, encoding="utf-8") as f:
        table = json.load(f)
    table.pop("_source", None)
    for key, template in table.items():
        _check_template_list([template], f"{CUSTOM_TEMPLATES_FILE} [{key}]")
    return table


def get_custom_template(dataset_key: str) -> str:
    """The single CoOp/UPL-style template of ``dataset_key``, e.g. ``"a photo of a {}, a type of pet."``."""
    table = _load_custom_templates()
    if dataset_key not in table:
        raise KeyError(
            f"No custom template for dataset key {dataset_key!r} in {CUSTOM_TEMPLATES_FILE}; "
            f"known keys: {', '.join(sorted(table))}. Add an entry there."
        )
    return table[dataset_key]


def resolve_templates(dataset) -> List[str]:
    """A dataset object's ``templates`` attribute if set, else ``get_templates(dataset.dataset_key)``."""
    own = getattr(dataset, "templates", None)
    if own:
        return _check_template_list(list(own), f"{type(dataset).__name__}.templates")
    key = getattr(dataset, "dataset_key", None)
    if not key:
        raise AttributeError(
            f"{type(dataset).__name__} has neither `templates` nor `dataset_key`; set the class attribute "
            "`dataset_key` (the config stem) so that clipkit/text/templates/<key>.json can be found."
        )
    return get_templates(key)
