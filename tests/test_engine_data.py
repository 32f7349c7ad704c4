"""Data contract: Datum, DatasetBase semantics, few-shot sampling, batch keys (list transforms, K_TRANSFORMS, img0),
loader rules, transform pipelines and their printed lines, unreadable-image errors."""

import os
import random

import pytest
import torch
import torchvision.transforms as T

from clipkit.dassl import (
    DataManager,
    DatasetBase,
    DatasetWrapper,
    Datum,
    build_data_loader,
    build_transform,
    read_image,
)
from tests.plugins.trivial_trainer import tiny_run_cfg


@pytest.fixture
def cfg(tiny_image_folder, tmp_path):
    root, _ = tiny_image_folder
    return tiny_run_cfg(root, tmp_path / "out")


def test_datum_requires_existing_file(tmp_path):
    with pytest.warns(UserWarning, match="No file found"), pytest.raises(AssertionError):
        Datum(impath=str(tmp_path / "missing.jpg"))


def test_dataset_base_semantics(tiny_image_folder):
    root, _ = tiny_image_folder
    paths = [os.path.join(root, "images", "red", f"{i}.jpg") for i in range(3)]
    # label 3 present, label 1 absent: num_classes = max + 1, classnames ordered by label over present labels
    train = [Datum(paths[0], 3, 0, "d"), Datum(paths[1], 0, 0, "a"), Datum(paths[2], 2, 0, "c")]
    dataset = DatasetBase(train_x=train, test=train)
    assert dataset.num_classes == 4
    assert dataset.classnames == ["a", "c", "d"]
    assert dataset.lab2cname == {0: "a", 2: "c", 3: "d"}


def test_fewshot_uses_python_random(tiny_image_folder):
    root, names = tiny_image_folder
    items = [Datum(os.path.join(root, "images", n, f"{i}.jpg"), label, 0, n)
             for label, n in enumerate(names) for i in range(6)]
    dataset = DatasetBase(train_x=items, test=items)
    random.seed(5)
    first = dataset.generate_fewshot_dataset(items, num_shots=2)
    random.seed(5)
    again = dataset.generate_fewshot_dataset(items, num_shots=2)
    assert [d.impath for d in first] == [d.impath for d in again] and len(first) == 6
    assert sorted(d.label for d in first) == [0, 0, 1, 1, 2, 2]
    assert dataset.generate_fewshot_dataset(items, num_shots=-1) is items
    repeated = dataset.generate_fewshot_dataset(items, num_shots=8, repeat=True)
    assert len(repeated) == 24
    assert len(dataset.generate_fewshot_dataset(items, num_shots=8)) == 18  # too few images: all of them


def test_default_batch_keys_and_loaders(cfg, capsys):
    dm = DataManager(cfg)
    out = capsys.readouterr().out
    assert "# train_x  12" in out and "# test     6" in out and "# classes  3" in out
    assert dm.val_loader is None and dm.train_loader_u is None
    assert dm.train_loader_x.drop_last and not dm.test_loader.drop_last
    assert dm.train_loader_x.pin_memory is False
    batch = next(iter(dm.train_loader_x))
    assert set(batch) == {"img", "label", "domain", "impath", "index"}
    assert batch["img"].shape == (4, 3, 32, 32) and batch["label"].shape == (4,) and len(batch["impath"]) == 4
    assert isinstance(dm.train_loader_x.sampler, torch.utils.data.RandomSampler)
    assert isinstance(dm.test_loader.sampler, torch.utils.data.SequentialSampler)


def test_k_transforms_and_img0(tiny_image_folder, tmp_path):
    root, _ = tiny_image_folder
    cfg = tiny_run_cfg(root, tmp_path, DATALOADER__K_TRANSFORMS=2, DATALOADER__RETURN_IMG0=True)
    dm = DataManager(cfg)
    batch = next(iter(dm.train_loader_x))
    assert isinstance(batch["img"], list) and len(batch["img"]) == 2
    assert all(view.shape == (4, 3, 32, 32) for view in batch["img"])
    assert batch["img0"].shape == (4, 3, 32, 32)
    test_batch = next(iter(dm.test_loader))  # K views only in training
    assert torch.is_tensor(test_batch["img"])


def test_list_of_transforms_gives_img_img2_img3(cfg, capsys):
    tfms = [T.Compose([T.Resize((s, s)), T.ToTensor()]) for s in (8, 16, 24)]
    dm = DataManager(cfg, custom_tfm_train=tfms)
    assert "* Using custom transform for training" in capsys.readouterr().out
    batch = next(iter(dm.train_loader_x))
    assert [batch[k].shape[-1] for k in ("img", "img2", "img3")] == [8, 16, 24]


def test_drop_last_only_when_source_fills_a_batch(cfg):
    dataset = DataManager(cfg).dataset
    loader = build_data_loader(cfg, "RandomSampler", dataset.train_x[:3], batch_size=4,
                               tfm=build_transform(cfg, is_train=True), is_train=True)
    assert not loader.drop_last and len(loader) == 1
    with pytest.raises(ValueError, match="Unknown sampler type"):
        build_data_loader(cfg, "RandomDomainSamplerX", dataset.train_x, batch_size=4, is_train=True)


def test_k_transforms_without_transform_is_an_error(cfg):
    items = DataManager(cfg).dataset.train_x
    cfg.defrost()
    cfg.DATALOADER.K_TRANSFORMS = 2
    with pytest.raises(ValueError, match="Cannot augment the image 2 times"):
        DatasetWrapper(cfg, items, transform=None, is_train=True)


def test_transform_lines_and_fixed_order(cfg, capsys):
    cfg.defrost()
    cfg.INPUT.TRANSFORMS = ("normalize", "random_flip", "colorjitter", "random_resized_crop", "cutout",
                            "randomgrayscale", "gaussian_blur", "center_crop")
    tfm = build_transform(cfg, is_train=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "Building transform_train",
        "+ random resized crop (size=(32, 32), scale=(0.08, 1.0))",
        "+ random flip",
        "+ color jitter (brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)",
        "+ random gray scale",
        "+ gaussian blur (kernel=21)",
        "+ to torch tensor of range [0, 1]",
        "+ cutout (n_holes=1, length=16)",
        "+ normalization (mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])",
    ]
    assert [type(t).__name__ for t in tfm.transforms][:2] == ["RandomResizedCrop", "RandomHorizontalFlip"]
    build_transform(cfg, is_train=False)
    assert capsys.readouterr().out.splitlines() == [
        "Building transform_test",
        "+ resize the smaller edge to 32",
        "+ 32x32 center crop",
        "+ to torch tensor of range [0, 1]",
        "+ normalization (mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])",
    ]


def test_resize_only_without_random_crop_and_randaugment_fixmatch(cfg, capsys, tiny_image_folder):
    cfg.defrost()
    cfg.INPUT.TRANSFORMS = ("randaugment_fixmatch",)
    tfm = build_transform(cfg, is_train=True)
    out = capsys.readouterr().out
    assert "+ resize to 32x32" in out and "+ randaugment_fixmatch (n=2)" in out
    image = read_image(os.path.join(tiny_image_folder[0], "images", "red", "0.jpg"))
    random.seed(0)
    assert tfm(image).shape == (3, 32, 32)
    cfg.INPUT.NO_TRANSFORM = True
    assert build_transform(cfg) is None
    assert "Note: no transform is applied!" in capsys.readouterr().out


@pytest.mark.parametrize("name, message", [("imagenet_policy", "np.int"), ("randaugment", "np.int"),
                                           ("random_erase", "unknown transform")])
def test_unsupported_transforms_name_the_key(cfg, name, message):
    from clipkit.dassl import BACKEND

    if BACKEND == "dassl" and message == "unknown transform":
        pytest.skip("Dassl asserts on unknown names")
    cfg.defrost()
    cfg.INPUT.TRANSFORMS = (name,)
    with pytest.raises(ValueError, match=f"INPUT.TRANSFORMS.*{message}"):
        build_transform(cfg, is_train=True)


def test_unreadable_image_error_names_the_file(cfg, tiny_image_folder):
    root, _ = tiny_image_folder
    broken = os.path.join(root, "images", "red", "0.jpg")
    with open(broken, "wb") as handle:
        handle.write(b"not an image")
    with pytest.raises(OSError, match="0.jpg"):
        read_image(broken)
    dm = DataManager(cfg)
    with pytest.raises(OSError, match=r"images/red/0\.jpg"):
        for _ in dm.test_loader:
            pass
        for _ in dm.train_loader_x:
            pass
