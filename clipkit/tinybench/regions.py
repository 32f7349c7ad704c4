"""Where things are in a rendered benchmark image: region labels per pixel and per ViT patch.

The diagnostics (``benchmarks/tiny_diagnostics.py``) use them to answer whether the tiny CLIP's patch tokens are local
(a token on the object knows the class better than a token on the background) and whether NCut masks are
object-centric; pretraining uses :func:`object_patches` for its region-text term (this module is in the checkpoint's
digest, not in the dataset's).
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

from .generate import BenchmarkConfig, render_item
from .render import Scene, SceneDomain, distractor_distances, pixel_centres, scene_body_distance, scene_head_distance

BACKGROUND, DISTRACTOR, OBJECT = 0, 1, 2  # region labels; background includes the clutter
REGION_NAMES = ("background", "distractor", "object")


def region_map(scene: Scene, image_size: int) -> np.ndarray:
    """(H, W) uint8 label of what each pixel shows: ``OBJECT`` (the class object, pattern included), ``DISTRACTOR``
    (a visible part of a distractor object) or ``BACKGROUND``, where the renderer's anti-aliased coverage exceeds one
    half (signed distance below 0)."""
    xs, ys = pixel_centres(image_size)
    labels = np.full((image_size, image_size), BACKGROUND, dtype=np.uint8)
    for distance in distractor_distances(scene, xs, ys):
        labels[distance < 0] = DISTRACTOR
    labels[scene_body_distance(scene, xs, ys) < 0] = OBJECT
    return labels


def patch_shares(labels: np.ndarray, patch_size: int, region: int) -> np.ndarray:
    """(H, W) region labels -> (n,) fraction of each ViT patch's pixels labelled ``region``, row-major like the patch
    tokens."""
    grid = labels.shape[0] // patch_size
    patches = labels[: grid * patch_size, : grid * patch_size].reshape(grid, patch_size, grid, patch_size)
    return (patches.transpose(0, 2, 1, 3).reshape(grid * grid, -1) == region).mean(axis=1)


def patch_regions(labels: np.ndarray, patch_size: int, share: float = 0.5) -> np.ndarray:
    """(H, W) region labels -> (n,) label per ViT patch, row-major like the patch tokens: ``OBJECT`` where the object
    covers at least ``share`` of the patch, else ``DISTRACTOR`` where distractors do, else ``BACKGROUND``."""
    out = np.where(patch_shares(labels, patch_size, DISTRACTOR) >= share, DISTRACTOR, BACKGROUND)
    return np.where(patch_shares(labels, patch_size, OBJECT) >= share, OBJECT, out).astype(np.int64)


def object_patches(scene: Scene, image_size: int, patch_size: int) -> np.ndarray:
    """(n,) bool: the patches the class object covers at least half of (``OBJECT`` in ``patch_regions``); when none
    does (a small object across patch borders), the patch it covers most."""
    share = patch_shares(region_map(scene, image_size), patch_size, OBJECT)
    mask = share >= 0.5
    if not mask.any():
        mask[int(share.argmax())] = True
    return mask


def head_patches(scene: Scene, image_size: int, patch_size: int) -> np.ndarray:
    """(n,) bool: the patches whose pixels are at least half the object's head (the part painted in the head colour)."""
    xs, ys = pixel_centres(image_size)
    head = (scene_body_distance(scene, xs, ys) < 0) & (scene_head_distance(scene, xs, ys) < 0)
    return patch_shares(head.astype(np.uint8), patch_size, 1) >= 0.5


def config_from_metadata(metadata: dict) -> BenchmarkConfig:
    """The ``BenchmarkConfig`` recorded in a generated benchmark's ``metadata.json`` (JSON lists back to tuples)."""
    recorded = dict(metadata["config"])
    domain = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.pop("domain").items()}
    for key in ("patterns", "colours", "heads"):
        recorded[key] = tuple(recorded[key])
    return BenchmarkConfig(**recorded, domain=SceneDomain(**domain))


def render_split(config: BenchmarkConfig, split: str) -> Tuple[np.ndarray, List[Scene]]:
    """Re-render a generated split: (N, H, W, 3) uint8 images and their scenes, in the order of
    ``generate.load_split_images`` (class by class, then by file name), with the generator's own
    ``generate.render_item``, so this reproduces the files exactly when ``config`` made them."""
    classes = config.classes()
    indices = sorted(range(config.per_class(split) * len(classes)), key=lambda index: (index % len(classes), index))
    images, scenes = [], []
    for index in indices:
        image, scene = render_item(config, split, index, classes)
        images.append(image)
        scenes.append(scene)
    return np.stack(images), scenes
