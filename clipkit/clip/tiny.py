"""A tiny CLIP: OpenAI's ``clip.model.CLIP`` class at small size, for tests and the embedded benchmark.

``clip.model.build_model`` infers the head count as width // 64, so widths are multiples of 64.
"""

from __future__ import annotations

import os

import torch
from clip.model import CLIP

# The architecture of the tiny CLIP (keys are clip.model.CLIP constructor arguments).
TINY_CLIP_ARCH = dict(
    embed_dim=64,  # joint embedding width
    image_resolution=64,  # input side in pixels
    vision_layers=3,  # ViT blocks
    vision_width=64,  # ViT width (1 head)
    vision_patch_size=8,  # 8x8 grid of patches at 64 px
    context_length=77,  # same as OpenAI CLIP, so the standard tokenizer is used unchanged
    vocab_size=49408,  # OpenAI BPE vocabulary
    transformer_width=64,  # text width (1 head)
    transformer_heads=1,
    transformer_layers=2,
)


def build_tiny_clip(seed: int = 0, **arch) -> CLIP:
    """Random-init tiny CLIP in fp32 (CLIP's own initialisation), deterministic given ``seed``."""
    config = dict(TINY_CLIP_ARCH)
    config.update(arch)
    config["transformer_heads"] = config["transformer_width"] // 64
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = CLIP(**config).float()
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()


def save_tiny_clip(model: CLIP, path: str) -> str:
    """Write ``model``'s state dict so that ``load_clip(path)`` rebuilds it (atomic write)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # build_model reads these three from the state dict of OpenAI archives; keep them for fidelity.
    state["input_resolution"] = torch.tensor(model.visual.input_resolution)
    state["context_length"] = torch.tensor(model.context_length)
    state["vocab_size"] = torch.tensor(model.vocab_size)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path
