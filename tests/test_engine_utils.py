"""Engine utilities: compute_accuracy, meters, parameter counting, pretrained-weight loading, file helpers."""

import os

import pytest
import torch

from clipkit.dassl import (
    AverageMeter,
    MetricMeter,
    compute_accuracy,
    count_num_param,
    listdir_nohidden,
    load_pretrained_weights,
    read_json,
    save_checkpoint,
    write_json,
)


def test_compute_accuracy_topk_in_percent():
    logits = torch.tensor([[0.1, 0.7, 0.2], [0.8, 0.15, 0.05], [0.3, 0.3, 0.4], [0.35, 0.5, 0.15]])
    target = torch.tensor([1, 2, 2, 0])
    top1, top2 = compute_accuracy(logits, target, topk=(1, 2))
    assert top1.shape == (1,) and top1.item() == pytest.approx(50.0) and top2.item() == pytest.approx(75.0)
    assert compute_accuracy((logits, None), target)[0].item() == pytest.approx(50.0)


def test_meters():
    meter = AverageMeter()
    meter.update(torch.tensor(2.0))
    meter.update(4.0, n=3)
    assert meter.val == 4.0 and meter.avg == pytest.approx(3.5)
    metrics = MetricMeter()
    metrics.update({"loss": torch.tensor(1.0), "acc": 50.0})
    metrics.update({"loss": 3.0, "acc": 100.0})
    assert str(metrics) == "loss 3.0000 (2.0000) acc 100.0000 (75.0000)"
    with pytest.raises(TypeError, match="must be a dictionary"):
        metrics.update([1.0])


def test_count_and_load_pretrained_weights(tmp_path, capsys):
    source = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    assert count_num_param(source) == 3 * 4 + 4 + 4 * 2 + 2
    assert count_num_param(params=list(source.parameters())) == 26
    state = {"module." + k: v for k, v in source.state_dict().items()}  # DataParallel prefixes are stripped
    state["1.weight"] = torch.zeros(5, 5)  # wrong shape: discarded
    path = tmp_path / "w.pth"
    torch.save({"state_dict": state}, path)
    target = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    load_pretrained_weights(target, str(path))
    out = capsys.readouterr().out
    assert f"Successfully loaded pretrained weights from {path}" in out and "Layers discarded" in out
    assert torch.equal(target[0].weight, source[0].weight)


def test_save_checkpoint_pointer_and_best_copy(tmp_path, capsys):
    save_checkpoint({"state_dict": {"module.w": torch.ones(1)}, "epoch": 4}, str(tmp_path), is_best=True)
    assert (tmp_path / "checkpoint").read_text() == "model.pth.tar-4\n"
    assert set(os.listdir(tmp_path)) == {"checkpoint", "model.pth.tar-4", "model-best.pth.tar"}
    assert list(torch.load(tmp_path / "model.pth.tar-4")["state_dict"]) == ["w"]
    assert f"Checkpoint saved to {tmp_path / 'model.pth.tar-4'}" in capsys.readouterr().out


def test_json_and_listdir(tmp_path):
    write_json({"a": [1, 2]}, str(tmp_path / "sub" / "x.json"))
    assert read_json(str(tmp_path / "sub" / "x.json")) == {"a": [1, 2]}
    (tmp_path / ".hidden").write_text("")
    (tmp_path / "b").write_text("")
    assert listdir_nohidden(str(tmp_path), sort=True) == ["b", "sub"]
