"""Where things are in a rendered benchmark image: region labels per pixel and per ViT patch.

Diagnostics only (``benchmarks/tiny_diagnostics.py``): they answer whether the tiny CLIP's patch tokens are local (a
token on the mark knows the class better than a token on the background) and whether NCut masks are object-centric.
Nothing here changes the dataset or the checkpoint (this module is outside their digests).
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

from .generate import BenchmarkConfig, render_item
from .render import Scene, SceneDomain, pixel_centres, scene_body_distance, scene_mark_distance

BACKGROUND, BODY, MARK = 0, 1, 2  # region labels; background includes the clutter
REGION_NAMES = ("background", "body", "mark")


def region_map(scene: Scene, image_size: int) -> np.ndarray:
    """(H, W) uint8 label of what each pixel shows: ``BACKGROUND``, ``BODY`` or ``MARK`` (ring and dot), where the
    renderer's anti-aliased coverage exceeds one half (signed distance below 0)."""
    xs, ys = pixel_centres(image_size)
    labels = np.full((image_size, image_size), BACKGROUND, dtype=np.uint8)
    labels[scene_body_distance(scene, xs, ys) < 0] = BODY
    labels[scene_mark_distance(scene, xs, ys, scene.mark_radius) < 0] = MARK
    return labels


def patch_regions(labels: np.ndarray, patch_size: int, mark_share: float = 0.25) -> np.ndarray:
    """(H, W) region labels -> (n,) label per ViT patch, row-major like the patch tokens: ``MARK`` where the mark covers
    at least ``mark_share`` of the patch, else ``BODY`` where body and mark cover at least half, else ``BACKGROUND``."""
    grid = labels.shape[0] // patch_size
    patches = labels[: grid * patch_size, : grid * patch_size].reshape(grid, patch_size, grid, patch_size)
    patches = patches.transpose(0, 2, 1, 3).reshape(grid * grid, -1)
    on_object = np.where((patches != BACKGROUND).mean(axis=1) >= 0.5, BODY, BACKGROUND)
    return np.where((patches == MARK).mean(axis=1) >= mark_share, MARK, on_object).astype(np.int64)


def config_from_metadata(metadata: dict) -> BenchmarkConfig:
    """The ``BenchmarkConfig`` recorded in a generated benchmark's ``metadata.json`` (JSON lists back to tuples)."""
    recorded = dict(metadata["config"])
    domain = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.pop("domain").items()}
    recorded["mark_colours"] = tuple(recorded["mark_colours"])
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
