"""Write the tiny fine-grained benchmark to disk, once, deterministically from a seed.

Layout under ``<data_root>/tiny_finegrained/``::

    images/<split>/<class_dir>/<index>.png   64 px RGB images (split = train | test)
    images/<split>/attributes.csv            per-image class and nuisance attributes (size, pose, distractors), for
                                             analysis only
    metadata.json                            ordered classes (label, name, dir, pattern, colour, head), split sizes
    descriptions.json                        CuPL-format "LLM-style" class descriptions
    manifest.json                            generator config digest + SHA-256 of every file; written last

The folder is built under a temporary name and renamed into place, so it is either complete or absent.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from .captions import class_name
from .class_text import TEMPLATES, descriptions_json
from .render import (BENCHMARK_DOMAIN, HEAD_COLOURS, PATTERN_COLOURS, PATTERNS, ObjectClass, Scene, SceneDomain, render,
                     source_digest)

DATASET_DIRNAME = "tiny_finegrained"
METADATA_FILE = "metadata.json"
DESCRIPTIONS_FILE = "descriptions.json"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 2  # bump when the on-disk layout changes
SPLITS = ("train", "test")


@dataclass(frozen=True)
class BenchmarkConfig:
    """What the generated dataset depends on (its digest is stored in the manifest)."""

    seed: int = 0  # every image is drawn from its own generator seeded by (seed, split, index)
    # class = (pattern, pattern colour, head colour), every combination: 2 x 5 x 2 = 20 classes. Classes that differ in
    # one attribute only are the fine-grained confusions (red stripes + white head / red spots + white head / red
    # stripes + black head / blue stripes + white head).
    patterns: Tuple[str, ...] = ("stripes", "spots")
    colours: Tuple[str, ...] = ("red", "green", "blue", "yellow", "purple")
    heads: Tuple[str, ...] = ("white", "black")
    train_per_class: int = 150  # unlabelled adaptation images per class
    test_per_class: int = 50  # evaluation images per class
    domain: SceneDomain = BENCHMARK_DOMAIN  # nuisance distribution (object size and pose, distractors, clutter)

    def __post_init__(self):
        for values, known, key in ((self.patterns, PATTERNS, "patterns"), (self.colours, tuple(PATTERN_COLOURS), "colours"),
                                   (self.heads, tuple(HEAD_COLOURS), "heads")):
            unknown = [v for v in values if v not in known]
            if unknown or len(set(values)) != len(values) or not values:
                raise ValueError(f"BenchmarkConfig.{key}={values}: need distinct values of {list(known)}")
        if len(self.classes()) < 2:
            raise ValueError("BenchmarkConfig: the attributes give fewer than 2 classes")

    def digest(self) -> str:
        """Hash of the config and of the generator's source code (a change of either regenerates the dataset)."""
        from . import captions, class_text, render as renderer

        code = source_digest(renderer, captions, class_text, sys.modules[__name__])
        text = json.dumps({"format_version": FORMAT_VERSION, "code": code, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def classes(self) -> List[Dict[str, object]]:
        """Ordered classes: label, prompt-ready name, folder name and attributes (pattern, colour, head)."""
        out = []
        for head in self.heads:
            for pattern in self.patterns:
                for colour in self.colours:
                    label = len(out)
                    out.append({"label": label, "name": class_name(ObjectClass(pattern, colour, head)),
                                "dir": f"{label:02d}_{colour}_{pattern}_{head}_head", "pattern": pattern,
                                "colour": colour, "head": head})
        return out

    def per_class(self, split: str) -> int:
        return {"train": self.train_per_class, "test": self.test_per_class}[split]


DEFAULT_CONFIG = BenchmarkConfig()


def dataset_dir(data_root: str) -> str:
    return os.path.join(os.path.abspath(os.path.expanduser(data_root)), DATASET_DIRNAME)


def image_generator(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one image: independent of how many images are drawn before it."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


def _tree_digest(root: str, relpaths: List[str]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(relpaths):
        digest.update(rel.encode())
        with open(os.path.join(root, rel), "rb") as handle:
            digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def _write_json(path: str, obj) -> None:
    with open(path, "w") as handle:
        json.dump(obj, handle, indent=1)
        handle.write("\n")


def render_item(config: BenchmarkConfig, split: str, index: int, classes) -> Tuple[np.ndarray, Scene]:
    """Image ``index`` of ``split`` (class ``classes[index % C]``, its own generator): (uint8 image, scene)."""
    return render(image_generator(config.seed, split, index), config.domain, object_class(classes[index % len(classes)]))


def object_class(cls: Dict[str, object]) -> ObjectClass:
    """The ``ObjectClass`` of a class dict of ``BenchmarkConfig.classes()`` / ``metadata.json``."""
    return ObjectClass(cls["pattern"], cls["colour"], cls["head"])


def _write_split(root: str, config: BenchmarkConfig, split: str, classes) -> List[str]:
    """Render and write one split; returns the relative paths written."""
    written = []
    rows = []
    for cls in classes:
        os.makedirs(os.path.join(root, "images", split, cls["dir"]), exist_ok=True)
    for index in range(config.per_class(split) * len(classes)):
        cls = classes[index % len(classes)]
        image, scene = render_item(config, split, index, classes)
        rel = os.path.join("images", split, cls["dir"], f"{index:06d}.png")
        Image.fromarray(image).save(os.path.join(root, rel), optimize=False)
        written.append(rel)
        rows.append([rel, cls["label"], cls["pattern"], cls["colour"], cls["head"], scene.body_shape, scene.body_colour,
                     f"{scene.body_radius:.2f}", f"{scene.body_aspect:.2f}", len(scene.distractors), len(scene.clutter)])
    rel = os.path.join("images", split, "attributes.csv")
    with open(os.path.join(root, rel), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "pattern", "colour", "head", "body_shape", "body_colour", "body_radius",
                         "body_aspect", "distractor_count", "clutter_count"])
        writer.writerows(rows)
    return written + [rel]


def build_metadata(config: BenchmarkConfig) -> dict:
    classes = config.classes()
    return {
        "name": DATASET_DIRNAME,
        "format_version": FORMAT_VERSION,
        "image_size": config.domain.image_size,
        "classes": classes,
        "splits": {s: {"per_class": config.per_class(s), "num_images": config.per_class(s) * len(classes)} for s in SPLITS},
        "templates": TEMPLATES,
        "descriptions_file": DESCRIPTIONS_FILE,
        "config": dataclasses.asdict(config),
    }


def read_manifest(directory: str) -> Optional[dict]:
    try:
        with open(os.path.join(directory, MANIFEST_FILE)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def is_complete(directory: str, config: BenchmarkConfig = DEFAULT_CONFIG, verify_hash: bool = False) -> bool:
    """True when ``directory`` holds this config's dataset: manifest present, same config digest, every file there
    (and, with ``verify_hash``, every byte as recorded)."""
    manifest = read_manifest(directory)
    if manifest is None or manifest.get("config_digest") != config.digest():
        return False
    files = manifest.get("files", [])
    if not all(os.path.isfile(os.path.join(directory, rel)) for rel in files):
        return False
    return not verify_hash or _tree_digest(directory, files) == manifest.get("content_sha256")


def generate_dataset(data_root: str, config: BenchmarkConfig = DEFAULT_CONFIG, force: bool = False,
                     log: Optional[Callable[[str], None]] = print) -> str:
    """Write the benchmark under ``<data_root>/tiny_finegrained`` unless it is already complete; returns that folder."""
    final = dataset_dir(data_root)
    if not force and is_complete(final, config, verify_hash=True):
        if log:
            log(f"[tinybench] dataset already complete at {final} (manifest hash verified); skipping generation")
        return final
    started = time.time()
    os.makedirs(os.path.dirname(final), exist_ok=True)
    staging = f"{final}.tmp{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    metadata = build_metadata(config)
    files = []
    for split in SPLITS:
        files += _write_split(staging, config, split, metadata["classes"])
    _write_json(os.path.join(staging, METADATA_FILE), metadata)
    _write_json(os.path.join(staging, DESCRIPTIONS_FILE), descriptions_json(metadata["classes"]))
    files += [METADATA_FILE, DESCRIPTIONS_FILE]
    manifest = {"config_digest": config.digest(), "files": sorted(files), "content_sha256": _tree_digest(staging, files)}
    _write_json(os.path.join(staging, MANIFEST_FILE), manifest)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(staging, final)
    if log:
        sizes = ", ".join(f"{s} {v['num_images']}" for s, v in metadata["splits"].items())
        log(f"[tinybench] wrote {len(metadata['classes'])} classes ({sizes} images) to {final} in {time.time() - started:.1f}s")
    return final


def load_metadata(directory: str) -> dict:
    """Read ``metadata.json`` of a generated benchmark; a missing or incomplete folder says how to create it."""
    from . import PREPARE_COMMAND

    data_root = os.path.dirname(os.path.abspath(directory))
    how = f"Create it with: {PREPARE_COMMAND} --data-root {data_root}"
    if read_manifest(directory) is None:
        state = "is incomplete (no manifest.json)" if os.path.isdir(directory) else "does not exist"
        raise FileNotFoundError(f"Tiny benchmark dataset folder {directory} {state}. {how}")
    try:
        with open(os.path.join(directory, METADATA_FILE)) as handle:
            metadata = json.load(handle)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"Cannot read {os.path.join(directory, METADATA_FILE)} ({err}). {how} --force") from err
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory} was written in format {metadata.get('format_version')}, this code reads "
                         f"{FORMAT_VERSION}. Regenerate it with: {PREPARE_COMMAND} --data-root {data_root} --force")
    return metadata


def split_items(directory: str, metadata: dict, split: str) -> List[Tuple[str, int, str]]:
    """(image path, label, class name) of every image of ``split``, sorted by path, labels from the metadata."""
    items = []
    for cls in metadata["classes"]:
        folder = os.path.join(directory, "images", split, cls["dir"])
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"Missing class folder {folder} of the tiny benchmark; regenerate with --force")
        items += [(os.path.join(folder, f), cls["label"], cls["name"]) for f in sorted(os.listdir(folder)) if f.endswith(".png")]
    return items


def load_split_images(directory: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """All images of ``split`` as a (N, H, W, 3) uint8 array and their (N,) labels."""
    items = split_items(directory, load_metadata(directory), split)
    images = np.stack([np.asarray(Image.open(path).convert("RGB")) for path, _, _ in items])
    return images, np.array([label for _, label, _ in items])
