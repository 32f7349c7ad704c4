"""open_clip backbones (MetaCLIP, LAION, DataComp, ...): ``MODEL.BACKBONE.NAME = "open_clip:<ARCH>@<WEIGHTS>"``.

* ``<ARCH>``: an open_clip architecture name (``ViT-B-32-quickgelu``, ``ViT-B-16``, ...). The model is built from
  open_clip's own config for that name (activation, widths, pooling), never guessed from a state dict.
* ``<WEIGHTS>``: an open_clip pretrained tag (``metaclip_400m``, ``metaclip_fullcc``, ``laion2b_s34b_b79k``, ...), a
  weights file (``.pt`` / ``.pth`` / ``.bin`` / ``.safetensors``) or a folder holding one (e.g. a hub snapshot).
  A tag is resolved offline first: ``<DOWNLOAD_ROOT>/<file name of the tag's URL>`` or
  ``<DOWNLOAD_ROOT>/open_clip/<ARCH>/<tag>/<file>``; else open_clip downloads it into ``<DOWNLOAD_ROOT>/open_clip``;
  when that fails the error names the file to put where.

The state dict is loaded strictly: a file that does not match the architecture stops with the missing, unexpected and
mis-shaped keys. The model is fp32, on the CPU, in eval mode, with ``checkpoint_path`` set (feature-cache keys). Only
towers whose output is the [CLS] token and whose tokenizer is CLIP's BPE (context 77) are accepted, since every method
here reads [CLS] / patch tokens and tokenises with ``clipkit.clip.tokenize``.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import torch

PREFIX = "open_clip:"
WEIGHT_FILE_NAMES = ("open_clip_pytorch_model.bin", "open_clip_model.safetensors", "pytorch_model.bin")
WEIGHT_EXTENSIONS = (".pt", ".pth", ".bin", ".safetensors")


def parse_spec(name: str) -> Tuple[str, str]:
    """``"open_clip:ARCH@WEIGHTS"`` -> (ARCH, WEIGHTS)."""
    body = name[len(PREFIX):] if name.startswith(PREFIX) else name
    arch, _, weights = body.partition("@")
    if not arch or not weights:
        raise ValueError(f"MODEL.BACKBONE.NAME={name!r}: expected 'open_clip:<architecture>@<pretrained tag, weights "
                         f"file or folder>', e.g. 'open_clip:ViT-B-32-quickgelu@metaclip_400m'")
    return arch, weights


def _open_clip():
    try:
        import open_clip
    except ImportError as err:  # pragma: no cover - a dependency in requirements.txt
        raise ImportError("open_clip backbones need the open_clip_torch package (pip install open_clip_torch)") from err
    return open_clip


def check_architecture(arch: str) -> None:
    open_clip = _open_clip()
    if open_clip.get_model_config(arch) is None:
        known = [m for m in open_clip.list_models() if m.startswith("ViT")]
        raise ValueError(f"unknown open_clip architecture {arch!r} (MODEL.BACKBONE.NAME); ViT architectures open_clip "
                         f"knows: {', '.join(known[:40])}{' ...' if len(known) > 40 else ''}")


def weights_in_folder(folder: str) -> Optional[str]:
    """The weights file of a folder (a hub snapshot or a download folder), if it holds exactly one known file."""
    for name in WEIGHT_FILE_NAMES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    candidates = sorted(f for f in os.listdir(folder) if f.endswith(WEIGHT_EXTENSIONS))
    return os.path.join(folder, candidates[0]) if len(candidates) == 1 else None


def tag_file_candidates(arch: str, tag: str, download_root: str) -> Tuple[List[str], str]:
    """(local paths where the weights of ``arch@tag`` may already be, the source URL or hub id for the message)."""
    open_clip = _open_clip()
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ValueError(f"open_clip has no pretrained tag {tag!r} for {arch!r} (MODEL.BACKBONE.NAME); known tags: "
                         f"{', '.join(tags) or 'none'}; or give a weights file: open_clip:{arch}@/path/to/file.pt")
    url = cfg.get("url") or ""
    hub = (cfg.get("hf_hub") or "").strip("/")
    names = [os.path.basename(url)] if url else []
    names += list(WEIGHT_FILE_NAMES)
    folders = [download_root, os.path.join(download_root, "open_clip", arch, tag)]
    candidates = [os.path.join(folder, name) for folder in folders for name in names]
    return candidates, url or (f"https://huggingface.co/{hub}" if hub else "the open_clip release")


def resolve_weights(arch: str, weights: str, download_root: str, download: bool = True) -> str:
    """Local file holding the weights named by ``weights`` (tag, file or folder); downloads a tag if allowed."""
    path = os.path.expanduser(os.path.expandvars(weights))
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        found = weights_in_folder(path)
        if found is None:
            raise FileNotFoundError(f"{path}: no open_clip weights file in this folder (looked for "
                                    f"{', '.join(WEIGHT_FILE_NAMES)} or a single *.pt/*.pth/*.bin/*.safetensors)")
        return found
    if os.sep in weights or weights.endswith(WEIGHT_EXTENSIONS):
        raise FileNotFoundError(f"open_clip weights file {os.path.abspath(path)} not found (MODEL.BACKBONE.NAME)")
    candidates, source = tag_file_candidates(arch, weights, download_root)
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    reason = "download disabled"
    if download:
        try:
            open_clip = _open_clip()
            cfg = open_clip.get_pretrained_cfg(arch, weights)
            return open_clip.download_pretrained(cfg, cache_dir=os.path.join(download_root, "open_clip"))
        except Exception as err:  # offline, proxy, missing hub: one instruction for all
            reason = f"{type(err).__name__}: {err}"
    raise FileNotFoundError(
        f"open_clip weights {arch}@{weights} not found and could not be downloaded ({reason}). Download {source} on a "
        f"machine with internet access and put the file at {candidates[0]} (or set MODEL.BACKBONE.DOWNLOAD_ROOT to "
        f"its folder), or name the file directly: open_clip:{arch}@/path/to/{os.path.basename(candidates[0])}"
    )


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The tensor dict of a weights file (``state_dict`` / ``model`` wrappers and ``module.`` prefixes removed)."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RuntimeError(f"could not read open_clip weights {path}: {type(err).__name__}: {err}. If it is a partial "
                           f"download, delete it and download it again") from err
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise RuntimeError(f"{path} holds no state dict")
    if all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def load_matching_state_dict(model: torch.nn.Module, state: Dict[str, torch.Tensor], source: str) -> None:
    """Strict load; a mismatch stops with the missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        def show(keys):
            return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "") if keys else "none"

        raise ValueError(
            f"{source} does not match the open_clip architecture: missing keys {show(missing)}; unexpected keys "
            f"{show(unexpected)}; shape mismatches {show([f'{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}' for k in shapes])}. "
            f"Pick the architecture the weights were trained with (e.g. ViT-B-32-quickgelu for MetaCLIP)")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def check_supported(model, arch: str) -> None:
    """Class-token ViT image tower and CLIP's BPE tokenizer (context 77), else NotImplementedError."""
    from clipkit.clip.vit import check_class_token_vit

    check_class_token_vit(model.visual)
    open_clip = _open_clip()
    tokenizer = open_clip.get_tokenizer(arch)
    if type(tokenizer).__name__ != "SimpleTokenizer" or getattr(tokenizer, "context_length", 77) != 77:
        raise NotImplementedError(f"{arch}: tokenizer {type(tokenizer).__name__} is not CLIP's BPE with context 77; "
                                  f"the toolkit tokenises every prompt with clipkit.clip.tokenize")


def load_open_clip(name: str, download_root: str, download: bool = True):
    """Build the open_clip model named by ``name`` (``open_clip:ARCH@WEIGHTS``) with its weights, fp32, CPU, eval."""
    open_clip = _open_clip()
    arch, weights = parse_spec(name)
    check_architecture(arch)
    path = resolve_weights(arch, weights, download_root, download)
    model = open_clip.create_model(arch, pretrained=None)
    check_supported(model, arch)
    load_matching_state_dict(model, read_state_dict(path), path)
    model = model.float().eval()
    model.checkpoint_path = path
    return model


__all__ = ["PREFIX", "load_open_clip", "parse_spec", "read_state_dict", "resolve_weights"]
