"""Optimizer and LR-scheduler contract: Dassl's per-epoch LR sequences, warmup, resume without LR freeze."""

import io

import pytest
import torch

from clipkit.dassl import build_lr_scheduler, build_optimizer, get_cfg_default


def optim_cfg(**values):
    cfg = get_cfg_default().OPTIM
    cfg.NAME, cfg.LR, cfg.MAX_EPOCH = "sgd", 1.0, 6
    for key, value in values.items():
        cfg[key] = value
    return cfg


def lr_sequence(cfg, epochs=None, optimizer=None, scheduler=None):
    """LR in use during each epoch when the scheduler is stepped once per epoch (as CoOp-style trainers do)."""
    if optimizer is None:
        optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
        scheduler = build_lr_scheduler(optimizer, cfg)
    lrs = []
    for _ in range(cfg.MAX_EPOCH if epochs is None else epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize(
    "values, expected",
    [
        (dict(LR_SCHEDULER="cosine", WARMUP_EPOCH=1, WARMUP_TYPE="constant"), [1e-5, 1.0, 0.933013, 0.75, 0.5, 0.25]),
        (dict(LR_SCHEDULER="cosine"), [1.0, 0.933013, 0.75, 0.5, 0.25, 0.066987]),
        (dict(LR_SCHEDULER="cosine", WARMUP_EPOCH=2, WARMUP_TYPE="linear"), [1e-5, 0.5, 1.0, 0.933013, 0.75, 0.5]),
        (dict(LR_SCHEDULER="single_step", STEPSIZE=(2,), GAMMA=0.1), [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]),
        (dict(LR_SCHEDULER="single_step", STEPSIZE=(-1,)), [1.0] * 6),
        (dict(LR_SCHEDULER="multi_step", STEPSIZE=(1, 4), GAMMA=0.5), [1.0, 0.5, 0.5, 0.5, 0.25, 0.25]),
    ],
)
def test_lr_sequences(values, expected):
    assert lr_sequence(optim_cfg(**values)) == pytest.approx(expected, abs=1e-6)


def test_resume_keeps_annealing_and_checkpoint_loads_weights_only():
    """Dassl pickled the successor scheduler with an optimizer copy, freezing the LR after resume (0.75, 0.75, ...)."""
    cfg = optim_cfg(LR_SCHEDULER="cosine", WARMUP_EPOCH=1, WARMUP_TYPE="constant")
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([param], cfg)
    scheduler = build_lr_scheduler(optimizer, cfg)
    first = lr_sequence(cfg, epochs=3, optimizer=optimizer, scheduler=scheduler)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # no pickled scheduler objects inside

    param2 = torch.nn.Parameter(torch.zeros(1))
    optimizer2 = build_optimizer([param2], cfg)
    scheduler2 = build_lr_scheduler(optimizer2, cfg)
    optimizer2.load_state_dict(state["optimizer"])
    scheduler2.load_state_dict(state["scheduler"])
    rest = lr_sequence(cfg, epochs=3, optimizer=optimizer2, scheduler=scheduler2)
    assert first + rest == pytest.approx([1e-5, 1.0, 0.933013, 0.75, 0.5, 0.25], abs=1e-6)


def test_staged_lr_and_param_groups():
    model = torch.nn.Sequential()
    model.add_module("backbone", torch.nn.Linear(2, 2))
    model.add_module("head", torch.nn.Linear(2, 1))
    cfg = optim_cfg(STAGED_LR=True, NEW_LAYERS=("head",), BASE_LR_MULT=0.1)
    optimizer = build_optimizer(model, cfg)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1, 1.0])
    assert optimizer.param_groups[1]["params"][0] is model.head.weight
    groups = [{"params": [model.head.weight], "lr": 0.3}]
    optimizer = build_optimizer(None, optim_cfg(), param_groups=groups)
    assert optimizer.param_groups[0]["lr"] == 0.3


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("sgd", torch.optim.SGD), ("rmsprop", torch.optim.RMSprop)])
def test_optimizer_names(name, cls):
    assert isinstance(build_optimizer([torch.nn.Parameter(torch.zeros(1))], optim_cfg(NAME=name)), cls)


def test_bad_names_are_rejected():
    with pytest.raises(ValueError, match="optim must be one of"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], optim_cfg(NAME="lion"))
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], optim_cfg())
    with pytest.raises(ValueError, match="scheduler must be one of"):
        build_lr_scheduler(optimizer, optim_cfg(LR_SCHEDULER="poly"))
