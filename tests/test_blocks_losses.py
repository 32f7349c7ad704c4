"""Self-training CE and the fairness regulariser (official running mean x2 vs the paper's batch mean)."""

import math

import pytest
import torch

from clipkit.blocks.losses import fairness_loss, microclip_loss, running_class_marginal, self_training_loss


def test_cross_entropy_matches_manual():
    logits, labels = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    manual = -(logits.log_softmax(-1)[torch.arange(5), labels]).mean()
    torch.testing.assert_close(self_training_loss(logits, labels), manual)


def test_running_marginal_first_step_blend_and_detach():
    p1 = torch.softmax(torch.randn(3, 4), -1)
    first = running_class_marginal(p1, None, 0.5)
    torch.testing.assert_close(first, p1.mean(0))
    p2 = torch.softmax(torch.randn(3, 4), -1).requires_grad_(True)
    previous = first.clone().requires_grad_(True)
    second = running_class_marginal(p2, previous, 0.5)
    torch.testing.assert_close(second, 0.5 * first + 0.5 * p2.mean(0))
    second.sum().backward()
    assert previous.grad is None  # stop-gradient on the previous marginal
    torch.testing.assert_close(running_class_marginal(p2, previous, 0.0), p2.mean(0))


def test_official_x2_cancels_the_mixing_factor_in_the_gradient():
    """d L_reg / d batch_mean = -(1/C) / p_bar in both forms."""
    previous = torch.softmax(torch.randn(4), -1)
    probs = torch.softmax(torch.randn(6, 4), -1).requires_grad_(True)
    marginal = running_class_marginal(probs, previous, 0.5)
    fairness_loss(marginal, 2.0).backward()
    expected = (-(1 / 4) / marginal.detach()).expand(6, 4) / 6
    torch.testing.assert_close(probs.grad, expected)


def test_uniform_marginal_gives_log_c_and_total_loss_composition():
    uniform = torch.full((5,), 0.2)
    assert fairness_loss(uniform).item() == pytest.approx(math.log(5))
    logits, labels = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    total, ce, reg, marginal = microclip_loss(logits, labels, None, 0.5, 2.0)
    torch.testing.assert_close(total, ce + reg)
    torch.testing.assert_close(reg, -2 * logits.softmax(-1).mean(0).log().mean())
    assert not marginal.requires_grad


# ------------------------------------------------------------------------------------------------------ DPA's losses
def test_weighted_cross_entropy_and_prototype_alignment_by_hand():
    import math

    from clipkit.blocks.losses import prototype_alignment_loss, weighted_cross_entropy

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    labels = torch.tensor([0, 2])
    weights = torch.tensor([0.5, 2.0])
    ce = []
    for b in range(2):
        log_norm = math.log(sum(math.exp(float(v)) for v in logits[b]))
        ce.append(log_norm - float(logits[b, labels[b]]))
    expected = (0.5 * ce[0] + 2.0 * ce[1]) / 2
    assert abs(float(weighted_cross_entropy(logits, labels, weights)) - expected) < 1e-6

    z = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [0.1, 1.0], [-1.0, 0.3]]), dim=-1)
    w = torch.nn.functional.normalize(torch.tensor([[0.9, 0.0], [0.0, 1.0], [-0.5, 0.5]]), dim=-1)
    total = 0.0
    for c in range(3):
        row = [7.0 * float(z[c] @ w[j]) for j in range(3)]
        total += math.log(sum(math.exp(v) for v in row)) - row[c]
    assert abs(float(prototype_alignment_loss(z, w, 7.0)) - total / 3) < 1e-5
