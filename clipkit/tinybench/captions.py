"""Text for the tiny benchmark: pretraining captions, class prompts (templates) and CuPL-style class descriptions.

All three talk about the same attributes (mark colour and shape, optionally the body) but with different sentence
frames, as web captions, hand-written prompts and LLM descriptions do for a real CLIP.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from .render import MARK_SHAPES, Scene

# Pretraining caption frames: {mark} = "<colour> <shape>[ <shape phrase>]", {object} = the body's shape noun.
# Captions do not name the body colour: a large, easy attribute in the captions lets the contrastive loss fall without
# the model ever looking at the small mark (measured: 23% in-domain zero-shot after 700 steps with it).
CAPTION_FRAMES = (
    "a {object} with a {mark} mark.",
    "a photo of a {object} marked with a {mark}.",
    "a {mark} on a {object}.",
    "a {object} carrying a small {mark}.",
    "a {object}-shaped object, with a {mark} painted on it.",
    "an object with a {mark} mark.",
    "a photo of a {mark} mark.",
    "a {mark} drawn on an object.",
)
SHAPE_PHRASE_PROBABILITY = 0.3  # how often a caption adds what the shape looks like ("star with five points")

# Class prompts of the benchmark (the reader's ``templates``); none of them is a pretraining frame.
TEMPLATES = [
    "a photo of an object with a {} mark.",
    "an object marked with a {}.",
    "a small {} on an object.",
    "a photo of something with a {} on it.",
]

# Description frames; each class gets every frame once with each of its shape phrases (CuPL-format JSON).
DESCRIPTION_FRAMES = (
    "The object carries a small {colour} {shape} {phrase}.",
    "Look for a {colour} mark {phrase} on the object.",
    "A {colour} {shape} is painted on the surface of the object.",
    "Its mark is a {colour} {shape}, {phrase}.",
)


def caption(rng: np.random.Generator, scene: Scene) -> str:
    """One random caption naming the scene's mark (and often the shape of its body)."""
    mark = f"{scene.mark_colour} {scene.mark_shape}"
    if rng.uniform() < SHAPE_PHRASE_PROBABILITY:
        phrases = MARK_SHAPES[scene.mark_shape]
        mark = f"{mark} {phrases[rng.integers(len(phrases))]}"
    frame = CAPTION_FRAMES[rng.integers(len(CAPTION_FRAMES))]
    return frame.format(mark=mark, object=scene.body_shape)


def class_descriptions(colour: str, shape: str) -> List[str]:
    """Several "LLM-style" sentences describing the class whose mark is a ``colour`` ``shape``."""
    sentences = []
    for frame in DESCRIPTION_FRAMES:
        for phrase in MARK_SHAPES[shape]:
            sentence = frame.format(colour=colour, shape=shape, phrase=phrase)
            if sentence not in sentences:
                sentences.append(sentence)
    return sentences


def descriptions_json(classes: List[Dict[str, str]]) -> Dict[str, List[str]]:
    """CuPL format: class name -> list of sentences, for class dicts with ``name``, ``mark_colour``, ``mark_shape``."""
    return {c["name"]: class_descriptions(c["mark_colour"], c["mark_shape"]) for c in classes}
