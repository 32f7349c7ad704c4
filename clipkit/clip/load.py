"""Load CLIP models in fp32 on CPU, from an OpenAI name, a local checkpoint file, or a registered name.

OpenAI checkpoints are TorchScript archives; we always rebuild the eager ``clip.model.CLIP`` from their state dict
(as CoOp and microCLIP do) so that every model in the toolkit is the same Python class and can be hooked.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable, Dict, Tuple

import warnings

import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # clip imports the deprecated pkg_resources
    import clip as openai_clip
from clip.model import CLIP  # noqa: E402  (after the warning filter)

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


def expected_sha256(url: str) -> str:
    """OpenAI's URLs carry the file's SHA-256 as the second-to-last path component."""
    return url.split("/")[-2]


def _verified_marker(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.sha256-ok")


def openai_file_is_intact(path: str, url: str) -> bool:
    """True when ``path`` has the SHA-256 in ``url``. A verified file is remembered by size and mtime (a sidecar
    ``.<name>.sha256-ok``), so the 350 MB hash runs once per download, not at every load."""
    stat = os.stat(path)
    stamp = f"{stat.st_size} {stat.st_mtime_ns}"
    marker = _verified_marker(path)
    if os.path.isfile(marker):
        with open(marker) as handle:
            if handle.read().strip() == stamp:
                return True
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected_sha256(url):
        return False
    try:
        with open(marker, "w") as handle:
            handle.write(stamp + "\n")
    except OSError:
        pass  # read-only cache: verify again next time
    return True


def resolve_checkpoint(name_or_path: str, download_root: str = "", download: bool = True) -> str:
    """Return the local file holding the weights of ``name_or_path``; download OpenAI weights when possible.

    Raises FileNotFoundError naming the expected file and how to provide it.
    """
    download_root = os.path.expanduser(download_root or DEFAULT_DOWNLOAD_ROOT)
    if name_or_path in OPENAI_MODEL_NAMES:
        url = openai_clip.clip._MODELS[name_or_path]
        expected = _openai_file(name_or_path, download_root)
        if os.path.isfile(expected):
            if openai_file_is_intact(expected, url):
                return expected
            if not download:
                raise FileNotFoundError(
                    f"CLIP weights {expected} do not have the SHA-256 {expected_sha256(url)} of {url}: a partial or "
                    f"corrupt download. Delete the file and download it again (or allow downloads)."
                )
            print(f"{expected} does not match the SHA-256 in {url} (partial download?): downloading it again")
            os.remove(expected)
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load deprecation notice
            archive = torch.jit.load(path, map_location="cpu")
        return archive.state_dict()
    except RuntimeError:
        pass  # not a TorchScript archive: a plain state dict
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # never pass on torch's advice to disable weights_only: the file is broken or not a tensor state dict
        first_line = str(err).splitlines()[0] if str(err) else ""
        if "Weights only load failed" in first_line:
            first_line = "it holds Python objects besides tensors"
        raise RuntimeError(
            f"Could not read CLIP checkpoint {path} ({type(err).__name__}: {first_line}). clipkit reads OpenAI "
            f"TorchScript archives and plain tensor state dicts; this file is truncated, corrupt or of another kind. "
            f"Download it again (OpenAI names re-download a file whose SHA-256 does not match), or save the weights "
            f"with torch.save(model.state_dict(), path)."
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or "visual.conv1.weight" not in obj:
        raise RuntimeError(f"{path} is not a CLIP ViT checkpoint (no 'visual.conv1.weight' in its state dict)")
    return obj


def clip_arch_from_state_dict(state_dict: dict) -> dict:
    """Infer the ``clip.model.CLIP`` constructor arguments of a ViT checkpoint (heads = width // 64, as OpenAI)."""
    vision_width = state_dict["visual.conv1.weight"].shape[0]
    vision_layers = len({k.split(".")[3] for k in state_dict if k.startswith("visual.transformer.resblocks.")})
    patch_size = state_dict["visual.conv1.weight"].shape[-1]
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    transformer_width = state_dict["ln_final.weight"].shape[0]
    return dict(
        embed_dim=state_dict["text_projection"].shape[1],
        image_resolution=patch_size * grid,
        vision_layers=vision_layers,
        vision_width=vision_width,
        vision_patch_size=patch_size,
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        transformer_width=transformer_width,
        transformer_heads=transformer_width // 64,
        transformer_layers=len({k.split(".")[2] for k in state_dict if k.startswith("transformer.resblocks.")}),
    )


def load_clip(name_or_path: str, download_root: str = "", download: bool = True):
    """Build ``clip.model.CLIP`` from a checkpoint (or an open_clip model for ``open_clip:ARCH@WEIGHTS``), always
    fp32, on CPU, in eval mode. A plain state-dict file is read as OpenAI's architecture (QuickGELU); open_clip
    checkpoints (GELU or QuickGELU by their config) must be named ``open_clip:<arch>@<file>``.

    Weights are cast to fp32 directly (OpenAI's fp16 weights convert exactly; fp32 checkpoints keep full precision).
    """
    if name_or_path.startswith("open_clip:"):  # open_clip backbones: clipkit/clip/open_clip_backend.py
        from .open_clip_backend import load_open_clip

        return load_open_clip(name_or_path, os.path.expanduser(download_root or DEFAULT_DOWNLOAD_ROOT), download)
    path = resolve_checkpoint(name_or_path, download_root, download=download)
    state_dict = _read_state_dict(path)
    if "input_resolution" not in state_dict:  # OpenAI archives and the toolkit's own tiny checkpoints carry it
        warnings.warn(f"{path} is a state dict without OpenAI's 'input_resolution' entry; it is built as OpenAI's CLIP "
                      f"(QuickGELU). If it is an open_clip checkpoint, name it open_clip:<architecture>@{path} so that "
                      f"the architecture (GELU or QuickGELU) comes from open_clip's config", stacklevel=2)
    model = CLIP(**clip_arch_from_state_dict(state_dict))
    weights = {k: v.float() for k, v in state_dict.items() if k not in ("input_resolution", "context_length", "vocab_size")}
    model.load_state_dict(weights, strict=True)
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
