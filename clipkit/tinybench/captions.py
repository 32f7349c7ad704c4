"""Pretraining captions of the tiny CLIP (class prompts and descriptions of the benchmark are in ``class_text.py``).

Kept apart from the benchmark's class text so that editing prompts or descriptions does not invalidate the cached
checkpoint (its digest covers this file, not ``class_text.py``).
"""

from __future__ import annotations

import numpy as np

from .render import ObjectClass, Scene

PATTERN_ADJECTIVES = {"stripes": "striped", "spots": "spotted", "checks": "checkered"}


def class_name(object_class: ObjectClass) -> str:
    """Prompt-ready class name of an object, e.g. "white-headed object with red stripes"."""
    return f"{object_class.head}-headed object with {object_class.colour} {object_class.pattern}"


# Ways a caption names the object: all three class attributes, in orders that make the text tower bind the colour to
# the pattern and the other colour to the head; {noun} is the object's outline or the word "object".
OBJECT_PHRASES = (
    "{head}-headed {noun} with {colour} {pattern}",
    "{colour} {adjective} {noun} with a {head} head",
    "{noun} with a {head} head and {colour} {pattern}",
    "{noun} covered in {colour} {pattern}, its head {head}",
)
# Pretraining caption frames ({thing} = an object phrase). Captions do not name the body's base colour, the
# distractors or the background: large, easy attributes in the captions let the contrastive loss fall without the
# model looking at the object's pattern and head.
CAPTION_FRAMES = (
    "a {thing}.",
    "a picture of a {thing}.",
    "a {thing} next to other things.",
    "there is a {thing} in the picture.",
    "a {thing} on a background.",
    "my {thing}.",
)


def caption(rng: np.random.Generator, scene: Scene) -> str:
    """One random caption naming the scene's object class."""
    cls = scene.object_class
    noun = scene.body_shape if rng.integers(2) else "object"
    thing = OBJECT_PHRASES[rng.integers(len(OBJECT_PHRASES))].format(
        noun=noun, colour=cls.colour, pattern=cls.pattern, adjective=PATTERN_ADJECTIVES[cls.pattern], head=cls.head)
    return CAPTION_FRAMES[rng.integers(len(CAPTION_FRAMES))].format(thing=thing)
