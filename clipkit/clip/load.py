"""Load CLIP models in fp32 on CPU, from an OpenAI name, a local checkpoint file, or a registered name.

OpenAI checkpoints are TorchScript archives; we always rebuild the eager ``clip.model.CLIP`` from their state dict
(as CoOp and microCLIP do) so that every model in the toolkit is the same Python class and can be hooked.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable, Dict, Optional, Tuple

import torch

import clip as openai_clip
from clip.model import build_model

tokenize = openai_clip.tokenize

OPENAI_MODEL_NAMES = tuple(openai_clip.available_models())
DEFAULT_DOWNLOAD_ROOT = os.path.join("~", ".cache", "clip")

# name -> (function returning the checkpoint path, hint printed when the file is missing)
_NAMED_CHECKPOINTS: Dict[str, Tuple[Callable[[], str], str]] = {}


def register_checkpoint_name(name: str, path_fn: Callable[[], str], hint: str) -> None:
    """Make ``load_clip(name)`` resolve to the file ``path_fn()``; ``hint`` says how to create it."""
    _NAMED_CHECKPOINTS[name] = (path_fn, hint)


def available_checkpoint_names():
    return list(OPENAI_MODEL_NAMES) + sorted(_NAMED_CHECKPOINTS)


def _openai_file(name: str, download_root: str) -> str:
    url = openai_clip.clip._MODELS[name]
    return os.path.join(download_root, os.path.basename(url))


def resolve_checkpoint(name_or_path: str, download_root: str = "", download: bool = True) -> str:
    """Return the local file holding the weights of ``name_or_path``; download OpenAI weights when possible.

    Raises FileNotFoundError naming the expected file and how to provide it.
    """
    download_root = os.path.expanduser(download_root or DEFAULT_DOWNLOAD_ROOT)
    if name_or_path in OPENAI_MODEL_NAMES:
        expected = _openai_file(name_or_path, download_root)
        if os.path.isfile(expected):
            return expected
        if download:
            try:
                return openai_clip.clip._download(openai_clip.clip._MODELS[name_or_path], download_root)
            except Exception as err:  # offline, proxy, checksum: all end in the same instruction
                reason = f"{type(err).__name__}: {err}"
        else:
            reason = "download disabled"
        raise FileNotFoundError(
            f"CLIP weights for '{name_or_path}' not found at {expected} and could not be downloaded ({reason}). "
            f"Download {openai_clip.clip._MODELS[name_or_path]} on a machine with internet access and copy it to "
            f"{expected}, or set MODEL.BACKBONE.DOWNLOAD_ROOT to the folder that holds it, or set "
            f"MODEL.BACKBONE.NAME to the checkpoint's path."
        )
    if name_or_path in _NAMED_CHECKPOINTS:
        path_fn, hint = _NAMED_CHECKPOINTS[name_or_path]
        path = path_fn()
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint '{name_or_path}' expected at {path} but it does not exist. {hint}")
        return path
    path = os.path.expanduser(os.path.expandvars(name_or_path))
    if os.path.isfile(path):
        return path
    raise FileNotFoundError(
        f"MODEL.BACKBONE.NAME='{name_or_path}' is neither a known CLIP name ({', '.join(available_checkpoint_names())}) "
        f"nor an existing checkpoint file (looked for {os.path.abspath(path)}). Give an OpenAI model name or the path "
        f"of a CLIP checkpoint (TorchScript archive or state dict)."
    )


def _read_state_dict(path: str) -> dict:
    try:
        archive = torch.jit.load(path, map_location="cpu")
        return archive.state_dict()
    except RuntimeError:
        pass  # not a TorchScript archive: a plain state dict
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RuntimeError(f"Could not read CLIP checkpoint {path}: {type(err).__name__}: {err}") from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or "visual.conv1.weight" not in obj:
        raise RuntimeError(f"{path} is not a CLIP ViT checkpoint (no 'visual.conv1.weight' in its state dict)")
    return obj


def load_clip(name_or_path: str, download_root: str = "", download: bool = True):
    """Build ``clip.model.CLIP`` from a checkpoint, always fp32, on CPU, in eval mode."""
    path = resolve_checkpoint(name_or_path, download_root, download=download)
    state_dict = _read_state_dict(path)
    model = build_model({k: v.clone() for k, v in state_dict.items()})
    model = model.float().eval()
    model.checkpoint_path = path
    return model


def checkpoint_digest(path: str, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a checkpoint file (first 16 hex digits), used to key caches."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
