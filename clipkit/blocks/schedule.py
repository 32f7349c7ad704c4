"""Per-iteration learning-rate schedules and mixed precision shared by the MUST-family trainers (microCLIP, DPA)."""

from __future__ import annotations

import contextlib
import math

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def per_iteration_cosine(step: int, total_steps: int, base_lr: float, min_lr: float) -> float:
    """LR at ``step`` of a per-iteration cosine from ``base_lr`` to ``min_lr`` without warmup (MUST's
    ``cosine_scheduler``: ``min + 0.5 (base - min)(1 + cos(pi step / total))``). With base < min it rises."""
    progress = min(step, total_steps) / max(total_steps, 1)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def per_iteration_cosine_scheduler(optim: torch.optim.Optimizer, total_steps: int, base_lr: float, min_lr: float):
    """LambdaLR stepping ``per_iteration_cosine`` once per training step (every group scaled alike)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optim, lambda step: per_iteration_cosine(step, total_steps, base_lr, min_lr) / base_lr
    )


def optimizer_update(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler=None) -> None:
    """One update: zero the gradients, backward, step; through the ``torch.amp.GradScaler`` when given (fp16)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


def autocast_context(device: torch.device, precision: str):
    """``torch.autocast`` for "bf16" / "fp16" on ``device``; a no-op for "fp32"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


__all__ = ["PRECISIONS", "autocast_context", "optimizer_update", "per_iteration_cosine",
           "per_iteration_cosine_scheduler"]
