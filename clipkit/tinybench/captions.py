"""Pretraining captions of the tiny CLIP (class prompts and descriptions of the benchmark are in ``class_text.py``).

Kept apart from the benchmark's class text so that editing prompts or descriptions does not invalidate the cached
checkpoint (its digest covers this file, not ``class_text.py``).
"""

from __future__ import annotations

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


def caption(rng: np.random.Generator, scene: Scene) -> str:
    """One random caption naming the scene's mark (and often the shape of its body)."""
    mark = MARK_PHRASES[rng.integers(len(MARK_PHRASES))].format(ring=scene.ring_colour, dot=scene.dot_colour)
    frame = CAPTION_FRAMES[rng.integers(len(CAPTION_FRAMES))]
    return frame.format(mark=mark, object=scene.body_shape)
