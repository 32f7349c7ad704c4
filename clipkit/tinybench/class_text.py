"""Class text of the tiny benchmark: the class prompts (templates) and CuPL-style "LLM" descriptions.

Both name the object's class attributes (pattern, pattern colour, head colour) in sentence frames that differ from the
pretraining captions (``captions.py``), as hand-written prompts and LLM descriptions differ from a real CLIP's web
captions. Descriptions, like an LLM's, reuse the everyday wordings of the captions in several ways per class.
"""

from __future__ import annotations

from typing import Dict, List

from .captions import PATTERN_ADJECTIVES

# Class prompts of the benchmark (the reader's ``templates``); none of them is a pretraining frame.
TEMPLATES = [
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of the {} among other things.",
    "an image showing a {}.",
]

# Description sentences (CuPL format), one per frame and class.
DESCRIPTION_FRAMES = (
    "The body is covered in {colour} {pattern} and the head is {head}.",
    "A {colour} {adjective} object with a {head} head.",
    "Its whole body carries {colour} {pattern}; one end, the head, is {head}.",
    "An object with {colour} {pattern} all over its body and a {head} head.",
    "The pattern is made of {colour} {pattern}, and the head at one end is {head}.",
    "A {head}-headed object whose {pattern} are {colour}.",
)


def class_descriptions(pattern: str, colour: str, head: str) -> List[str]:
    """Several "LLM-style" sentences describing the class of objects with ``colour`` ``pattern`` and a ``head`` head."""
    return [frame.format(pattern=pattern, colour=colour, head=head, adjective=PATTERN_ADJECTIVES[pattern])
            for frame in DESCRIPTION_FRAMES]


def descriptions_json(classes: List[Dict[str, str]]) -> Dict[str, List[str]]:
    """CuPL format: class name -> list of sentences, for class dicts with ``name``, ``pattern``, ``colour``, ``head``."""
    return {c["name"]: class_descriptions(c["pattern"], c["colour"], c["head"]) for c in classes}
