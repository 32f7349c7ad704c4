"""Class-mean prototypes with fallback and the memory bank, against hand loops."""

import pytest
import torch

from clipkit.blocks.prototypes import FeatureMemoryBank, class_mean_prototypes


def reference_prototypes(features, labels, num_classes, fallback):
    rows = []
    for c in range(num_classes):
        members = [features[i] for i in range(len(labels)) if int(labels[i]) == c]
        if members:
            mean = sum(members) / len(members)
        else:
            mean = fallback[c]
        rows.append(mean / mean.norm())
    return torch.stack(rows)


def test_class_means_with_empty_classes_and_unlabelled_rows():
    g = torch.Generator().manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(9, 5, generator=g), dim=-1)
    labels = torch.tensor([0, 2, 2, -1, 0, 2, 4, -1, 0])  # classes 1 and 3 empty, two unlabelled rows
    fallback = torch.randn(5, 5, generator=g) * 3.0  # not unit: the fallback row is normalised too
    got = class_mean_prototypes(features, labels, 5, fallback)
    assert torch.allclose(got, reference_prototypes(features, labels, 5, fallback), atol=1e-6)
    assert torch.allclose(got.norm(dim=1), torch.ones(5), atol=1e-6)


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="fallback"):
        class_mean_prototypes(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), 2, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="labels"):
        class_mean_prototypes(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long), 2, torch.zeros(2, 4))


def test_memory_bank_overwrites_rows_and_round_trips_through_state_dict():
    bank = FeatureMemoryBank(6, 3)
    assert (bank.labels == -1).all()
    bank.write(torch.tensor([4, 1]), torch.ones(2, 3), torch.tensor([2, 0]))
    bank.write(torch.tensor([1]), 2 * torch.ones(1, 3), torch.tensor([1]))
    assert bank.labels.tolist() == [-1, 1, -1, -1, 2, -1]
    assert torch.equal(bank.features[1], torch.full((3,), 2.0)) and torch.equal(bank.features[4], torch.ones(3))
    other = FeatureMemoryBank(6, 3)
    other.load_state_dict(bank.state_dict())
    assert torch.equal(other.features, bank.features) and torch.equal(other.labels, bank.labels)
    fallback = torch.eye(3)
    expected = reference_prototypes(bank.features, bank.labels, 3, fallback)
    assert torch.allclose(bank.prototypes(3, fallback), expected, atol=1e-6)
