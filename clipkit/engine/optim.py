"""``build_optimizer`` and ``build_lr_scheduler`` with Dassl's options and per-epoch LR sequence.

Warmup schedulers store their successor's *state* (not the successor object) in ``state_dict()``: checkpoints load
with ``torch.load(weights_only=True)`` and a resumed run keeps annealing the live optimizer (Dassl pickles the
successor together with a copy of the optimizer, which freezes the LR after resume).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LRScheduler

AVAI_OPTIMS = ["adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw"]
AVAI_SCHEDS = ["single_step", "multi_step", "cosine"]


def build_optimizer(model, optim_cfg, param_groups=None):
    """Optimizer over ``param_groups``, else ``model``'s parameters (STAGED_LR: NEW_LAYERS children at LR, the other
    children at LR * BASE_LR_MULT), else the iterable ``model``."""
    name = optim_cfg.NAME
    lr = optim_cfg.LR
    if name not in AVAI_OPTIMS:
        raise ValueError(f"optim must be one of {AVAI_OPTIMS}, but got {name} (OPTIM.NAME)")
    if param_groups is not None and optim_cfg.STAGED_LR:
        warnings.warn("staged_lr will be ignored, if you need to use staged_lr, please bind it with param_groups "
                      "yourself.")
    if param_groups is None:
        if optim_cfg.STAGED_LR:
            if not isinstance(model, nn.Module):
                raise TypeError("When staged_lr is True, model given to build_optimizer() must be an instance of "
                                "nn.Module")
            if isinstance(model, nn.DataParallel):
                model = model.module
            new_layers = optim_cfg.NEW_LAYERS
            new_layers = [new_layers] if isinstance(new_layers, str) else list(new_layers)
            base_params, new_params = [], []
            for child_name, module in model.named_children():
                (new_params if child_name in new_layers else base_params).extend(module.parameters())
            param_groups = [{"params": base_params, "lr": lr * optim_cfg.BASE_LR_MULT}, {"params": new_params}]
        else:
            param_groups = model.parameters() if isinstance(model, nn.Module) else model

    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    wd = optim_cfg.WEIGHT_DECAY
    if name in ("adam", "amsgrad"):
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=wd, betas=betas, amsgrad=(name == "amsgrad"))
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                               dampening=optim_cfg.SGD_DAMPNING, nesterov=optim_cfg.SGD_NESTEROV)
    if name == "rmsprop":
        return torch.optim.RMSprop(param_groups, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                                   alpha=optim_cfg.RMSPROP_ALPHA)
    if name == "radam":
        return torch.optim.RAdam(param_groups, lr=lr, weight_decay=wd, betas=betas)
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=wd, betas=betas)


class _BaseWarmupScheduler(LRScheduler):
    """Warmup for ``warmup_epoch`` steps, then delegate every step to ``successor``."""

    def __init__(self, optimizer, successor, warmup_epoch, last_epoch=-1):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        raise NotImplementedError

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)

    def state_dict(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "successor")}
        state["successor"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        successor_state = state.pop("successor")
        if not isinstance(successor_state, dict):  # a checkpoint pickled by Dassl holds the successor object
            successor_state = successor_state.state_dict()
        self.__dict__.update(state)
        self.successor.load_state_dict(successor_state)


class ConstantWarmupScheduler(_BaseWarmupScheduler):
    """LR = ``cons_lr`` during warmup."""

    def __init__(self, optimizer, successor, warmup_epoch, cons_lr, last_epoch=-1):
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return [self.cons_lr for _ in self.base_lrs]


class LinearWarmupScheduler(_BaseWarmupScheduler):
    """LR = ``min_lr`` at step 0, then base_lr * step / warmup_epoch."""

    def __init__(self, optimizer, successor, warmup_epoch, min_lr, last_epoch=-1):
        self.min_lr = min_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        if self.last_epoch == 0:
            return [self.min_lr for _ in self.base_lrs]
        return [lr * self.last_epoch / self.warmup_epoch for lr in self.base_lrs]


def build_lr_scheduler(optimizer, optim_cfg):
    """StepLR / MultiStepLR / CosineAnnealingLR(T_max=MAX_EPOCH), optionally wrapped in a warmup scheduler.
    Stepped once per epoch by the trainer (the engine never steps it)."""
    kind = optim_cfg.LR_SCHEDULER
    stepsize = optim_cfg.STEPSIZE
    if kind not in AVAI_SCHEDS:
        raise ValueError(f"scheduler must be one of {AVAI_SCHEDS}, but got {kind} (OPTIM.LR_SCHEDULER)")
    if kind == "single_step":
        if isinstance(stepsize, (list, tuple)):
            stepsize = stepsize[-1]
        if not isinstance(stepsize, int):
            raise TypeError(f"For single_step lr_scheduler, stepsize must be an integer, but got {type(stepsize)}")
        if stepsize <= 0:
            stepsize = optim_cfg.MAX_EPOCH
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=stepsize, gamma=optim_cfg.GAMMA)
    elif kind == "multi_step":
        if not isinstance(stepsize, (list, tuple)):
            raise TypeError(f"For multi_step lr_scheduler, stepsize must be a list, but got {type(stepsize)}")
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(stepsize), gamma=optim_cfg.GAMMA)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(optim_cfg.MAX_EPOCH))

    if optim_cfg.WARMUP_EPOCH > 0:
        if not optim_cfg.WARMUP_RECOUNT:
            scheduler.last_epoch = optim_cfg.WARMUP_EPOCH
        if optim_cfg.WARMUP_TYPE == "constant":
            scheduler = ConstantWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_CONS_LR)
        elif optim_cfg.WARMUP_TYPE == "linear":
            scheduler = LinearWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_MIN_LR)
        else:
            raise ValueError(f"OPTIM.WARMUP_TYPE must be 'constant' or 'linear', got '{optim_cfg.WARMUP_TYPE}'")
    return scheduler
