"""Selecting what a method trains: LayerNorm affines of a tower, named trainable sets, weight-decay groups, and
checkpoints that hold only the trained tensors.

The official MUST-family codes (microCLIP, DPA) select parameters whose name contains ``ln``/``bn``; on OpenAI and
open_clip ViTs those are exactly the ``nn.LayerNorm`` modules (``ln_pre``, ``ln_1``, ``ln_2``, ``ln_post``), which is
what ``enable_layernorm_affines`` selects by type.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Set

from torch import nn


def enable_layernorm_affines(module: nn.Module) -> None:
    """Make the weight and bias of every ``nn.LayerNorm`` inside ``module`` trainable (others untouched)."""
    for child in module.modules():
        if isinstance(child, nn.LayerNorm):
            child.requires_grad_(True)


def trainable_named_parameters(model: nn.Module) -> Dict[str, nn.Parameter]:
    """{name: parameter} of the parameters that require grad, in registration order."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def weight_decay_groups(named: Dict[str, nn.Parameter], weight_decay: float,
                        no_decay_substrings: Sequence[str] = ("bias",)) -> List[Dict]:
    """Two optimizer groups: names containing any of ``no_decay_substrings`` get weight decay 0 (DPA/MUST: biases)."""
    decay = [p for n, p in named.items() if not any(s in n for s in no_decay_substrings)]
    no_decay = [p for n, p in named.items() if any(s in n for s in no_decay_substrings)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class TrainedStateMixin:
    """For an ``nn.Module``: ``state_dict`` keeps only the trained parameters and the buffers named in
    ``extra_state_buffers`` (method state such as prototype banks), so a checkpoint of a ViT-B method is a few MB; the
    frozen weights are rebuilt from the CLIP checkpoint. ``load_state_dict`` (strict) checks that exactly those
    tensors are given."""

    extra_state_buffers: Iterable[str] = ()

    def trained_state_keys(self) -> Set[str]:
        keys = {name for name, param in self.named_parameters() if param.requires_grad}
        return keys | set(self.extra_state_buffers)

    def state_dict(self, *args, **kwargs):
        full = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        keep = {prefix + name for name in self.trained_state_keys()}
        for name in [key for key in full if key not in keep]:
            del full[name]
        return full

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a slim checkpoint: it must hold exactly the trained tensors; frozen ones keep their CLIP values."""
        expected, given = self.trained_state_keys(), set(state_dict)
        known = set(super().state_dict())
        if strict and (expected - given or given - known):
            raise RuntimeError(
                f"{type(self).__name__} checkpoint mismatch: missing {sorted(expected - given)}, "
                f"unexpected {sorted(given - known)}"
            )
        return super().load_state_dict(state_dict, strict=False, assign=assign)


__all__ = ["TrainedStateMixin", "enable_layernorm_affines", "trainable_named_parameters", "weight_decay_groups"]
