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

# ------------------------------------------------------------------------------------------------------------ POUF
def _softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def _reference_transport(sim, scale):
    """Hand loops: rows normalised over the classes, columns over the batch, cost 1 - sim."""
    batch, classes = len(sim), len(sim[0])
    rows = [_softmax([scale * sim[b][c] for c in range(classes)]) for b in range(batch)]
    columns = [_softmax([scale * sim[b][c] for b in range(batch)]) for c in range(classes)]  # columns[c][b]
    sample_to_class = sum(sum((1 - sim[b][c]) * rows[b][c] for c in range(classes)) for b in range(batch)) / batch
    class_to_sample = sum(sum((1 - sim[b][c]) * columns[c][b] for b in range(batch)) for c in range(classes)) / classes
    return sample_to_class, class_to_sample


def _reference_im(logits, entropy_eps, marginal_eps):
    rows = [_softmax(row) for row in logits]
    conditional = sum(-sum(p * math.log(p + entropy_eps) for p in row) for row in rows) / len(rows)
    marginal = [sum(row[c] for row in rows) / len(rows) for c in range(len(rows[0]))]
    return conditional, -sum(m * math.log(m + marginal_eps) for m in marginal)


def test_transport_2x2_by_hand():
    """sim = [[0.9, 0.1], [0.2, 0.6]], s = 10, computed with the exponentials written out."""
    from clipkit.blocks.losses import transport_costs, transport_loss

    sim = torch.tensor([[0.9, 0.1], [0.2, 0.6]], dtype=torch.float64)
    e = math.exp
    row0 = [e(9) / (e(9) + e(1)), e(1) / (e(9) + e(1))]
    row1 = [e(2) / (e(2) + e(6)), e(6) / (e(2) + e(6))]
    col0 = [e(9) / (e(9) + e(2)), e(2) / (e(9) + e(2))]  # class 0 over the two samples
    col1 = [e(1) / (e(1) + e(6)), e(6) / (e(1) + e(6))]  # class 1 over the two samples
    s2c = ((0.1 * row0[0] + 0.9 * row0[1]) + (0.8 * row1[0] + 0.4 * row1[1])) / 2
    c2s = ((0.1 * col0[0] + 0.8 * col0[1]) + (0.9 * col1[0] + 0.4 * col1[1])) / 2
    got_s2c, got_c2s = transport_costs(10 * sim, sim)
    assert got_s2c.item() == pytest.approx(s2c, rel=1e-12)
    assert got_c2s.item() == pytest.approx(c2s, rel=1e-12)
    assert transport_loss(10 * sim, sim).item() == pytest.approx(s2c + c2s, rel=1e-12)


def test_transport_matches_loops_and_normalises_columns_over_the_batch():
    from clipkit.blocks.losses import transport_costs

    generator = torch.Generator().manual_seed(0)
    sim = (torch.rand(5, 3, generator=generator, dtype=torch.float64) * 2 - 1)
    s2c, c2s = transport_costs(7.0 * sim, sim)
    ref_s2c, ref_c2s = _reference_transport(sim.tolist(), 7.0)
    assert s2c.item() == pytest.approx(ref_s2c, rel=1e-12)
    assert c2s.item() == pytest.approx(ref_c2s, rel=1e-12)
    # the class -> sample direction depends on the other samples of the batch: adding one changes sample 0's weight
    extended = torch.cat([sim, torch.ones(1, 3, dtype=torch.float64)])
    assert transport_costs(7.0 * extended, extended)[1].item() != pytest.approx(ref_c2s, rel=1e-6)
    # costs lie in [0, 2] and both directions are weighted means of them
    assert 0.0 <= s2c.item() <= 2.0 and 0.0 <= c2s.item() <= 2.0
    with pytest.raises(ValueError, match="one shape"):
        transport_costs(sim, sim[:, :2])


def test_im_terms_match_loops_and_bounds():
    from clipkit.blocks.losses import information_maximization_loss, information_maximization_terms

    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 4, generator=generator, dtype=torch.float64) * 3
    conditional, marginal = information_maximization_terms(logits, 1e-5, 1e-6)
    ref_conditional, ref_marginal = _reference_im(logits.tolist(), 1e-5, 1e-6)
    assert conditional.item() == pytest.approx(ref_conditional, rel=1e-12)
    assert marginal.item() == pytest.approx(ref_marginal, rel=1e-12)
    assert information_maximization_loss(logits).item() == pytest.approx(ref_conditional - ref_marginal, rel=1e-12)
    # uniform predictions: both entropies log C, loss 0; confident and balanced one-hots: loss -log C (the minimum)
    uniform = torch.zeros(4, 4, dtype=torch.float64)
    assert information_maximization_loss(uniform, 0.0, 0.0).item() == pytest.approx(0.0, abs=1e-12)
    one_hot = 100.0 * torch.eye(4, dtype=torch.float64)
    assert information_maximization_loss(one_hot, 0.0, 0.0).item() == pytest.approx(-math.log(4), abs=1e-9)
    # confident but all on one class: no diversity, loss ~ 0
    collapsed = torch.zeros(4, 4, dtype=torch.float64)
    collapsed[:, 0] = 100.0
    assert information_maximization_loss(collapsed, 0.0, 0.0).item() == pytest.approx(0.0, abs=1e-9)
