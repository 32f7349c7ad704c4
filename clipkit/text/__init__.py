"""Text resources: per-dataset prompt templates and the CuPL-format description loader."""

from .descriptions import (
    DESCRIPTION_KEY_ALIASES,
    DescriptionsError,
    default_descriptions_path,
    descriptions_path,
    load_descriptions,
    match_class_keys,
    name_key,
    resolve_descriptions,
)
from .prompts import available_template_keys, get_custom_template, get_templates, resolve_templates

__all__ = [
    "DESCRIPTION_KEY_ALIASES",
    "DescriptionsError",
    "available_template_keys",
    "default_descriptions_path",
    "descriptions_path",
    "get_custom_template",
    "get_templates",
    "load_descriptions",
    "match_class_keys",
    "name_key",
    "resolve_descriptions",
    "resolve_templates",
]
