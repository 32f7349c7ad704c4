"""Class text of the tiny benchmark: the class prompts (templates) and CuPL-style "LLM" descriptions.

Both name the mark (a ring of one colour around a dot of another) in sentence frames that differ from the pretraining
captions (``captions.py``), as hand-written prompts and LLM descriptions differ from a real CLIP's web captions.
Descriptions, like an LLM's, reuse the everyday wordings of the mark that the captions use, in several ways per class.
"""

from __future__ import annotations

from typing import Dict, List

# Class prompts of the benchmark (the reader's ``templates``); none of them is a pretraining frame.
TEMPLATES = [
    "a photo of an object marked with a {}.",
    "an object with a {} on it.",
    "a small {} on an object.",
    "a photo of something with a {} mark.",
]

# Description sentences (CuPL format), one per frame and class.
DESCRIPTION_FRAMES = (
    "The object carries a small {ring} ring with a {dot} dot.",
    "A {dot} dot inside a {ring} ring is painted on the object.",
    "Look for a {ring} ring around a {dot} centre on the object.",
    "Its mark is a {dot} spot circled in {ring}.",
    "A target-like mark: a {ring} ring on the outside and a {dot} dot in the middle.",
    "The mark has a {dot} centre and a {ring} ring around it.",
)


def class_descriptions(ring: str, dot: str) -> List[str]:
    """Several "LLM-style" sentences describing the class whose mark is a ``ring`` ring around a ``dot`` dot."""
    return [frame.format(ring=ring, dot=dot) for frame in DESCRIPTION_FRAMES]


def descriptions_json(classes: List[Dict[str, str]]) -> Dict[str, List[str]]:
    """CuPL format: class name -> list of sentences, for class dicts with ``name``, ``ring_colour``, ``dot_colour``."""
    return {c["name"]: class_descriptions(c["ring_colour"], c["dot_colour"]) for c in classes}
