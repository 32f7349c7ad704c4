"""CLIP loading (OpenAI checkpoints by name or path) and the tiny CLIP used by tests and the tiny benchmark."""

from .load import (
    OPENAI_MODEL_NAMES,
    available_checkpoint_names,
    checkpoint_digest,
    load_clip,
    register_checkpoint_name,
    resolve_checkpoint,
    tokenize,
)
from .tiny import TINY_CLIP_ARCH, build_tiny_clip, save_tiny_clip

__all__ = [
    "OPENAI_MODEL_NAMES",
    "TINY_CLIP_ARCH",
    "available_checkpoint_names",
    "build_tiny_clip",
    "checkpoint_digest",
    "load_clip",
    "register_checkpoint_name",
    "resolve_checkpoint",
    "save_tiny_clip",
    "tokenize",
]
