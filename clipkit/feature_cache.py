"""On-disk cache of CLIP image features for training-free methods (zero-shot CLIP, CuPL, WCA).

A training-free evaluation is "encode every test image once, then apply a classifier". The encoding dominates the
cost, so it is computed once per *key* and stored under ``clipkit.cache_root()/features/``. The key holds everything
the features depend on:

    backbone name, checkpoint digest (sha256 of the weights file), dataset key, split, a description of the image
    transform, number of crops, crop seed, and the ordered list of image files (path, size and modification time of
    each: an image rewritten in place is a miss, not a stale hit)

Any change in the key is a miss (a different file). A file that cannot be read, was written by an interrupted run,
or whose stored key / tensor shapes / checksum do not match is rebuilt with a warning. Writes are atomic
(temporary file + ``os.replace``), so concurrent or interrupted runs never leave a half-written file under the final
name.

The module also holds the two feature extractors the training-free trainers use:

* ``encode_loader``: features of the images of a Dassl test loader (the test transform is CLIP's preprocessing),
* ``encode_square_crops``: features of N random square crops per image (WCA, Li et al. ICML'24 Sec. 3; microCLIP
  Supp. A.2), cropped from the original uint8 image on the CPU, resized to the input size, normalised on the device.
  Each image's crops come from its own generator seeded by (crop seed, image index), so they do not depend on the
  batch size, the number of workers or the order of evaluation.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch

from clipkit import cache_root
from clipkit.config import cfg_extension

# Bump when the file layout or the meaning of a stored tensor changes: older files then miss instead of being misread.
CACHE_FORMAT_VERSION = 2  # 2: the key holds each image's size and mtime
# Bump when the crop sampler's algorithm changes (the crops of a given seed would differ).
CROP_SAMPLER_VERSION = 1

__all__ = [
    "CACHE_FORMAT_VERSION",
    "FeatureCacheWarning",
    "cache_file",
    "crop_generator",
    "encode_loader",
    "encode_square_crops",
    "feature_cache_key",
    "load_or_compute",
    "model_digest",
    "read_image_uint8",
    "SquareCropDataset",
]


@cfg_extension
def _add_feature_cache_cfg(cfg) -> None:
    # Training-free methods read image features from the on-disk cache (clipkit/feature_cache.py); False = always
    # recompute and never write.
    cfg.TEST.FEATURE_CACHE = True


class FeatureCacheWarning(UserWarning):
    """A cache file was unreadable, incomplete or inconsistent with its key and is being rebuilt."""


# ----------------------------------------------------------------------------------------------------------------- keys


def _files_digest(image_paths: Sequence[str]) -> str:
    """sha256 over (absolute path, size, mtime in ns) of every image, in order (a missing file enters as -1 -1)."""
    digest = hashlib.sha256()
    for path in image_paths:
        try:
            stat = os.stat(path)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        digest.update(f"{os.path.abspath(path)}\0{size}\0{mtime}\0".encode("utf-8"))
    return digest.hexdigest()


def feature_cache_key(
    *,
    backbone: str,
    checkpoint_digest: str,
    dataset: str,
    split: str,
    transform: str,
    image_paths: Sequence[str],
    num_crops: int = 0,
    crop_seed: Optional[int] = None,
) -> Dict:
    """The JSON-serialisable key of one cached feature set (image files enter through their digest and count)."""
    if not image_paths:
        raise ValueError(f"feature_cache_key: split '{split}' of dataset '{dataset}' has no images")
    return {
        "format": CACHE_FORMAT_VERSION,
        "backbone": str(backbone),
        "checkpoint_digest": str(checkpoint_digest),
        "dataset": str(dataset),
        "split": str(split),
        "transform": str(transform),
        "num_crops": int(num_crops),
        "crop_seed": None if crop_seed is None else int(crop_seed),
        "crop_sampler": CROP_SAMPLER_VERSION if num_crops else None,
        "num_images": len(image_paths),
        "image_files_sha256": _files_digest(image_paths),
    }


def _key_digest(key: Dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:20]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)


def cache_file(key: Dict, root: Optional[str] = None) -> str:
    """Path of the file holding ``key``'s features: <root>/features/<dataset>/<backbone>/<split>[-crops]-<digest>.pt."""
    root = root or cache_root()
    kind = f"{key['split']}-crops{key['num_crops']}-seed{key['crop_seed']}" if key["num_crops"] else key["split"]
    name = f"{_safe(kind)}-{_key_digest(key)}.pt"
    backbone = key["backbone"]
    if os.path.isfile(backbone) or backbone.endswith((".pt", ".pth")):  # a checkpoint path: its file name is enough
        backbone = os.path.splitext(os.path.basename(backbone))[0]
    return os.path.join(root, "features", _safe(key["dataset"]), _safe(backbone), name)


_DIGESTS: Dict[Tuple[str, int, int], str] = {}


def model_digest(clip_model) -> str:
    """Checkpoint digest of a model built by ``clipkit.clip.load_clip`` (memoised per file path, size and mtime)."""
    from clipkit.clip import checkpoint_digest

    path = getattr(clip_model, "checkpoint_path", None)
    if not path or not os.path.isfile(path):
        raise ValueError(
            "the CLIP model has no readable 'checkpoint_path' attribute, so its features cannot be keyed in the "
            "feature cache; load it with clipkit.clip.load_clip or disable the cache (TEST.FEATURE_CACHE False)"
        )
    stat = os.stat(path)
    memo = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        _DIGESTS[memo] = checkpoint_digest(path)
    return _DIGESTS[memo]


# ------------------------------------------------------------------------------------------------------- load / store


def _checksum(tensors: Dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode("utf-8"))
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _validate(payload, key: Dict) -> Dict[str, torch.Tensor]:
    """Return the stored tensors, or raise ValueError saying what is wrong with the file."""
    if not isinstance(payload, dict) or not {"key", "tensors", "checksum"} <= set(payload):
        raise ValueError("not a feature-cache file (missing 'key', 'tensors' or 'checksum')")
    if payload["key"] != key:
        raise ValueError("stored key differs from the requested key")
    tensors = payload["tensors"]
    if not isinstance(tensors, dict) or not tensors or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise ValueError("'tensors' is not a non-empty dict of tensors")
    for name, tensor in tensors.items():
        if tensor.dim() == 0 or tensor.shape[0] != key["num_images"]:
            raise ValueError(f"tensor '{name}' has shape {tuple(tensor.shape)}, expected {key['num_images']} rows")
    if _checksum(tensors) != payload["checksum"]:
        raise ValueError("checksum mismatch (file altered or partially written)")
    return tensors


def _atomic_save(payload, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_or_compute(
    key: Dict,
    compute: Callable[[], Dict[str, torch.Tensor]],
    enabled: bool = True,
    root: Optional[str] = None,
    log: Callable[[str], None] = print,
) -> Dict[str, torch.Tensor]:
    """Features for ``key``: read from the cache, or ``compute()`` them (dict of CPU tensors, first dim = images).

    With ``enabled=False`` the cache is neither read nor written. Unreadable or inconsistent files are rebuilt with a
    ``FeatureCacheWarning`` naming the file and the reason. ``compute()`` runs with the global random generators saved
    and restored (a DataLoader draws its base seed from torch's), so what a run draws afterwards is the same whether
    the features came from the file or were computed (a hit and a miss give the same training run).
    """
    if not enabled:
        return _checked(_without_drawing(compute), key)
    path = cache_file(key, root)
    if os.path.isfile(path):
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            tensors = _validate(payload, key)
            log(f"Feature cache hit: {path}")
            return tensors
        except Exception as err:  # unpicklable, truncated, foreign or stale: all rebuilt the same way
            warnings.warn(
                f"feature cache file {path} is unusable ({type(err).__name__}: {err}); recomputing and overwriting it",
                FeatureCacheWarning,
                stacklevel=2,
            )
    what = f"{key['num_crops']} crops per image, crop seed {key['crop_seed']}" if key["num_crops"] else "images"
    log(f"Feature cache miss: computing {key['dataset']}/{key['split']} features ({what}) -> {path}")
    tensors = _checked(_without_drawing(compute), key)
    _atomic_save({"key": key, "tensors": tensors, "checksum": _checksum(tensors)}, path)
    return tensors


def _without_drawing(compute: Callable[[], Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """``compute()`` with the Python, NumPy and torch (CPU, CUDA) generators restored afterwards."""
    from clipkit.engine.checkpoint import capture_rng_state, restore_rng_state

    state = capture_rng_state()
    try:
        return compute()
    finally:
        restore_rng_state(state)


def _checked(tensors: Dict[str, torch.Tensor], key: Dict) -> Dict[str, torch.Tensor]:
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    for name, tensor in tensors.items():
        if tensor.dim() == 0 or tensor.shape[0] != key["num_images"]:
            raise ValueError(
                f"feature extractor returned '{name}' of shape {tuple(tensor.shape)} for {key['num_images']} images"
            )
    return tensors


# ------------------------------------------------------------------------------------------------------- extractors


@torch.no_grad()
def encode_loader(
    clip_model, loader: Iterable, device, expected_paths: Optional[Sequence[str]] = None
) -> Dict[str, torch.Tensor]:
    """Raw CLIP image features of every image of a Dassl loader (batches with 'img' and 'impath').

    Returns {"features": (N, D) fp32 on CPU}. With ``expected_paths`` the loader's order is checked against them (the
    cache is keyed by that list, so a shuffled loader would silently attach features to the wrong images).
    """
    features, paths = [], []
    for batch in loader:
        images = batch["img"].to(device, non_blocking=True)
        features.append(clip_model.encode_image(images).float().cpu())
        paths.extend(batch["impath"])
    if expected_paths is not None and list(paths) != list(expected_paths):
        raise RuntimeError(
            "the test loader did not return the images in the order of the dataset split; its sampler must be "
            "SequentialSampler (DATALOADER.TEST.SAMPLER)"
        )
    return {"features": torch.cat(features)}


def read_image_uint8(path: str) -> torch.Tensor:
    """(3, H, W) uint8 RGB tensor of an image file, at its original resolution."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as err:
        raise OSError(f"cannot read image {path}: {err}") from err
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def crop_generator(crop_seed: int, image_index: int) -> torch.Generator:
    """The generator of one image's crops: independent streams per (crop seed, image index)."""
    state = np.random.SeedSequence([int(crop_seed), int(image_index)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class SquareCropDataset(torch.utils.data.Dataset):
    """Item i = (num_crops, 3, S, S) uint8 square crops of image i (side U(a, b) x short side, resized to S)."""

    def __init__(
        self,
        image_paths: Sequence[str],
        num_crops: int,
        side_range: Tuple[float, float],
        out_size: int,
        crop_seed: int,
    ):
        if num_crops < 1:
            raise ValueError(f"num_crops must be >= 1, got {num_crops}")
        self.image_paths = list(image_paths)
        self.num_crops = int(num_crops)
        self.side_range = (float(side_range[0]), float(side_range[1]))
        self.out_size = int(out_size)
        self.crop_seed = int(crop_seed)

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        from clipkit.blocks.multicrop import sample_square_crops

        image = read_image_uint8(self.image_paths[index])
        return sample_square_crops(
            image, self.num_crops, self.side_range, self.out_size, crop_generator(self.crop_seed, index)
        )


@torch.no_grad()
def encode_square_crops(
    clip_model,
    crops: SquareCropDataset,
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    device,
    batch_size: int = 32,
    num_workers: int = 0,
) -> Dict[str, torch.Tensor]:
    """Raw CLIP features of every image's crops: {"crop_features": (N_images, num_crops, D) fp32 on CPU}.

    ``batch_size`` counts images (each contributes ``num_crops`` crops to one encoder call).
    """
    loader = torch.utils.data.DataLoader(
        crops,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda",
    )
    mean = torch.tensor(pixel_mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(pixel_std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    chunks = []
    for batch in loader:  # (B, N, 3, S, S) uint8
        images, views = batch.shape[:2]
        pixels = batch.to(device, non_blocking=True).flatten(0, 1).float().div_(255.0)
        features = clip_model.encode_image((pixels - mean) / std).float()
        chunks.append(features.view(images, views, -1).cpu())
    return {"crop_features": torch.cat(chunks)}
