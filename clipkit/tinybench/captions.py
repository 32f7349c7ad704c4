"""Text for the tiny benchmark: pretraining captions, class prompts (templates) and CuPL-style class descriptions.

All three talk about the same attribute (the mark: a ring of one colour around a dot of another, optionally the
object) but with different sentence frames, as web captions, hand-written prompts and LLM descriptions do for a real
CLIP.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from .render import Scene


def class_name(ring: str, dot: str) -> str:
    """Prompt-ready class name of a mark, e.g. "red ring with a blue dot"."""
    return f"{ring} ring with a {dot} dot"


# Ways a caption names the mark; the order of the two colours varies, so the text tower must bind colour to part.
MARK_PHRASES = (
    "{ring} ring with a {dot} dot",
    "{dot} dot inside a {ring} ring",
    "{ring} ring around a {dot} centre",
    "{dot} spot circled in {ring}",
)
# Pretraining caption frames: {mark} = a mark phrase, {object} = the body's shape noun. Captions do not name the body
# colour: a large, easy attribute in the captions lets the contrastive loss fall without the model looking at the mark.
CAPTION_FRAMES = (
    "a {object} with a {mark} mark.",
    "a photo of a {object} marked with a {mark}.",
    "a {mark} on a {object}.",
    "a {object} carrying a small {mark}.",
    "an object with a {mark} mark.",
    "a photo of a {mark} mark.",
    "a {mark} drawn on an object.",
)

# Class prompts of the benchmark (the reader's ``templates``); none of them is a pretraining frame.
TEMPLATES = [
    "a photo of an object marked with a {}.",
    "an object with a {} on it.",
    "a small {} on an object.",
    "a photo of something with a {} mark.",
]

# Description sentences ("LLM-style", CuPL format), several per class.
DESCRIPTION_FRAMES = (
    "A {ring} ring surrounds a small {dot} dot on the object.",
    "The mark has a {dot} centre and an outer ring that is {ring}.",
    "Look for a {dot} spot circled in {ring} on the object's surface.",
    "A target-like mark: {ring} on the outside, {dot} in the middle.",
    "The object carries a {ring} ring whose centre is filled with {dot}.",
    "A small round badge, {ring} around the edge and {dot} at its heart.",
)


def caption(rng: np.random.Generator, scene: Scene) -> str:
    """One random caption naming the scene's mark (and often the shape of its body)."""
    mark = MARK_PHRASES[rng.integers(len(MARK_PHRASES))].format(ring=scene.ring_colour, dot=scene.dot_colour)
    frame = CAPTION_FRAMES[rng.integers(len(CAPTION_FRAMES))]
    return frame.format(mark=mark, object=scene.body_shape)


def class_descriptions(ring: str, dot: str) -> List[str]:
    """Several "LLM-style" sentences describing the class whose mark is a ``ring`` ring around a ``dot`` dot."""
    return [frame.format(ring=ring, dot=dot) for frame in DESCRIPTION_FRAMES]


def descriptions_json(classes: List[Dict[str, str]]) -> Dict[str, List[str]]:
    """CuPL format: class name -> list of sentences, for class dicts with ``name``, ``ring_colour``, ``dot_colour``."""
    return {c["name"]: class_descriptions(c["ring_colour"], c["dot_colour"]) for c in classes}
