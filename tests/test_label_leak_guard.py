"""The label-leak guard passes for a label-free trainer (which logs train accuracy) and fails for a supervised one."""

import pytest

from clipkit.dassl import build_trainer
from clipkit.testing import assert_no_label_leak, permuted_label_datums
from tests.plugins.trivial_trainer import tiny_run_cfg


def make_factory(root, loss):
    def make_trainer(output_dir):
        return build_trainer(tiny_run_cfg(root, output_dir, TRAINER__TRIVIAL__LOSS=loss, OPTIM__MAX_EPOCH=2))

    return make_trainer


def test_guard_passes_for_label_free_training(tiny_image_folder, tmp_path):
    root, _ = tiny_image_folder
    assert_no_label_leak(make_factory(root, "entropy"), str(tmp_path))


def test_guard_fails_for_supervised_training(tiny_image_folder, tmp_path):
    root, _ = tiny_image_folder
    with pytest.raises(AssertionError, match="label leak: step 0 'loss'"):
        assert_no_label_leak(make_factory(root, "cross_entropy"), str(tmp_path))


def test_permutation_keeps_classes_and_moves_labels(tiny_image_folder):
    import random

    from clipkit.dassl import Datum

    root, names = tiny_image_folder
    items = [Datum(f"{root}/images/{n}/{i}.jpg", label, 0, n) for label, n in enumerate(names) for i in range(2)]
    permuted = permuted_label_datums(items, random.Random(0))
    assert [d.impath for d in permuted] == [d.impath for d in items]
    assert sorted(d.label for d in permuted) == sorted(d.label for d in items)
    assert [d.label for d in permuted] != [d.label for d in items]
    assert all(d.classname == names[d.label] for d in permuted)
    with pytest.raises(ValueError, match="at least two classes"):
        permuted_label_datums(items[:2], random.Random(0))
