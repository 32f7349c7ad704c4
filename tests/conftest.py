"""Shared fixtures: a tiny random CLIP checkpoint and tiny image trees, generated per test session."""

import os
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Generated artefacts of tests (caches, tiny benchmark) go to a temporary folder, never into the repo."""
    if "CLIPKIT_CACHE" not in os.environ:
        os.environ["CLIPKIT_CACHE"] = str(tmp_path_factory.mktemp("clipkit_cache"))
    yield


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one intra-op thread is much faster than several on a shared CPU (restored afterwards). Use it
    with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory):
    """Path of a random-init tiny CLIP checkpoint (state dict) loadable by clipkit.clip.load_clip."""
    from clipkit.clip import build_tiny_clip, save_tiny_clip

    path = tmp_path_factory.mktemp("tiny_clip") / "tiny_clip.pt"
    save_tiny_clip(build_tiny_clip(seed=0), str(path))
    return str(path)


def write_image(path, rng, size=(40, 48), color=None):
    """Write a small random RGB JPEG/PNG (format from the extension) and return its path."""
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = rng.integers(0, 256, size=(size[0], size[1], 3), dtype=np.uint8)
    if color is not None:
        arr[: size[0] // 2] = np.asarray(color, dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def tiny_image_folder(tmp_path):
    """<tmp>/images/<class>/<i>.jpg for 3 classes x 6 images; returns (root, classnames)."""
    rng = np.random.default_rng(0)
    classnames = ["red", "green", "blue"]
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for name, color in zip(classnames, colors):
        for i in range(6):
            write_image(str(tmp_path / "images" / name / f"{i}.jpg"), rng, color=color)
    return str(tmp_path), classnames


def write_descriptions(root, classnames, per_class=3):
    """Write ``<root>/descriptions.json`` (CuPL format: class name -> sentences), ``per_class`` sentences per class."""
    import json

    sentences = {
        name: [f"A photo of {name}, sentence {i + 1} of {per_class} about its look." for i in range(per_class)]
        for name in classnames
    }
    path = os.path.join(str(root), "descriptions.json")
    with open(path, "w") as handle:
        json.dump(sentences, handle, indent=2)
    return path


COLOR_CLASSES = (("red", (255, 0, 0)), ("green", (0, 255, 0)), ("blue", (0, 0, 255)))


@pytest.fixture(scope="session")
def image_root(tmp_path_factory):
    """<root>/images/<class>/<i>.jpg (3 colour classes x 6 images: 4 train + 2 test each, the TestImageFolder layout)
    and <root>/descriptions.json; read-only, shared by the trainer tests."""
    root = tmp_path_factory.mktemp("color_images")
    rng = np.random.default_rng(0)
    for name, color in COLOR_CLASSES:
        for i in range(6):
            write_image(str(root / "images" / name / f"{i}.jpg"), rng, color=color)
    write_descriptions(root, [name for name, _ in COLOR_CLASSES])
    return str(root)

