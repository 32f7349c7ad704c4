"""Datasets and loaders with Dassl's API: Datum, DatasetBase, DATASET_REGISTRY, DatasetWrapper, DataManager."""

from __future__ import annotations

import random
from collections import defaultdict

import torch
import torchvision.transforms as T
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import RandomSampler, SequentialSampler

from .registry import Registry, check_availability
from .transforms import INTERPOLATION_MODES, build_transform
from .utils import check_isfile, read_image

DATASET_REGISTRY = Registry("DATASET")


def build_dataset(cfg):
    """Instantiate ``DATASET_REGISTRY[cfg.DATASET.NAME](cfg)``."""
    check_availability(cfg.DATASET.NAME, DATASET_REGISTRY.registered_names())
    if cfg.VERBOSE:
        print(f"Loading dataset: {cfg.DATASET.NAME}")
    return DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)


class Datum:
    """One sample: image path (must exist), label, domain, class name. Read-only."""

    def __init__(self, impath="", label=0, domain=0, classname=""):
        assert isinstance(impath, str), f"Datum.impath must be a str, got {type(impath).__name__}"
        assert check_isfile(impath), f"Datum: no file at {impath}"
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname

    @property
    def impath(self):
        return self._impath

    @property
    def label(self):
        return self._label

    @property
    def domain(self):
        return self._domain

    @property
    def classname(self):
        return self._classname

    def __repr__(self):
        return f"Datum({self._impath!r}, label={self._label}, domain={self._domain}, classname={self._classname!r})"


class DatasetBase:
    """Splits of Datum lists. ``num_classes`` = max train label + 1; ``classnames`` ordered by label."""

    dataset_dir = ""
    domains = []

    def __init__(self, train_x=None, train_u=None, val=None, test=None):
        self._train_x = train_x
        self._train_u = train_u
        self._val = val
        self._test = test
        self._num_classes = self.get_num_classes(train_x)
        self._lab2cname, self._classnames = self.get_lab2cname(train_x)

    @property
    def train_x(self):
        return self._train_x

    @property
    def train_u(self):
        return self._train_u

    @property
    def val(self):
        return self._val

    @property
    def test(self):
        return self._test

    @property
    def lab2cname(self):
        return self._lab2cname

    @property
    def classnames(self):
        return self._classnames

    @property
    def num_classes(self):
        return self._num_classes

    @staticmethod
    def get_num_classes(data_source):
        return max({item.label for item in data_source}) + 1

    @staticmethod
    def get_lab2cname(data_source):
        """({label: classname}, [classname ordered by label]) over the labels present in ``data_source``."""
        mapping = {item.label: item.classname for item in data_source}
        return mapping, [mapping[label] for label in sorted(mapping)]

    def check_input_domains(self, source_domains, target_domains):
        assert len(source_domains) > 0, "source_domains (list) is empty"
        assert len(target_domains) > 0, "target_domains (list) is empty"
        self.is_input_domain_valid(source_domains)
        self.is_input_domain_valid(target_domains)

    def is_input_domain_valid(self, input_domains):
        for domain in input_domains:
            if domain not in self.domains:
                raise ValueError(f"Input domain must belong to {self.domains}, but got [{domain}]")

    def generate_fewshot_dataset(self, *data_sources, num_shots=-1, repeat=False):
        """``num_shots`` items per label from each source, drawn with python ``random`` (sample / choices)."""
        if num_shots < 1:
            return data_sources[0] if len(data_sources) == 1 else data_sources
        print(f"Creating a {num_shots}-shot dataset")
        output = []
        for data_source in data_sources:
            dataset = []
            for _label, items in self.split_dataset_by_label(data_source).items():
                if len(items) >= num_shots:
                    dataset.extend(random.sample(items, num_shots))
                elif repeat:
                    dataset.extend(random.choices(items, k=num_shots))
                else:
                    dataset.extend(items)
            output.append(dataset)
        return output[0] if len(output) == 1 else output

    def split_dataset_by_label(self, data_source):
        """{label: [Datum, ...]} in order of first appearance."""
        output = defaultdict(list)
        for item in data_source:
            output[item.label].append(item)
        return output

    def split_dataset_by_domain(self, data_source):
        output = defaultdict(list)
        for item in data_source:
            output[item.domain].append(item)
        return output


# ------------------------------------------------------------------------------------------------------- loaders

SUPPORTED_SAMPLERS = ("RandomSampler", "SequentialSampler")


def build_sampler(sampler_type, cfg=None, data_source=None, batch_size=32, n_domain=0, n_ins=16):
    if sampler_type == "RandomSampler":
        return RandomSampler(data_source)
    if sampler_type == "SequentialSampler":
        return SequentialSampler(data_source)
    raise ValueError(
        f"Unknown sampler type: {sampler_type} (DATALOADER.*.SAMPLER). The internal engine provides "
        f"{list(SUPPORTED_SAMPLERS)}; Dassl's domain/class samplers need CLIPKIT_ENGINE=dassl."
    )


def build_data_loader(cfg, sampler_type="SequentialSampler", data_source=None, batch_size=64, n_domain=0, n_ins=2,
                      tfm=None, is_train=True, dataset_wrapper=None):
    """torch DataLoader; drop_last only for training sources at least one batch long, pin_memory only with CUDA."""
    sampler = build_sampler(sampler_type, cfg=cfg, data_source=data_source, batch_size=batch_size,
                            n_domain=n_domain, n_ins=n_ins)
    wrapper = dataset_wrapper or DatasetWrapper
    loader = torch.utils.data.DataLoader(
        wrapper(cfg, data_source, transform=tfm, is_train=is_train),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        drop_last=is_train and len(data_source) >= batch_size,
        pin_memory=(torch.cuda.is_available() and cfg.USE_CUDA),
    )
    assert len(loader) > 0, f"Empty data loader over {len(data_source)} items (batch size {batch_size})"
    return loader


class DataManager:
    """Builds the dataset, transforms and the train_x / train_u / val / test loaders from ``cfg``."""

    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None):
        dataset = build_dataset(cfg)

        if custom_tfm_train is None:
            tfm_train = build_transform(cfg, is_train=True)
        else:
            print("* Using custom transform for training")
            tfm_train = custom_tfm_train
        if custom_tfm_test is None:
            tfm_test = build_transform(cfg, is_train=False)
        else:
            print("* Using custom transform for testing")
            tfm_test = custom_tfm_test

        loader_x = cfg.DATALOADER.TRAIN_X
        self.train_loader_x = build_data_loader(
            cfg, sampler_type=loader_x.SAMPLER, data_source=dataset.train_x, batch_size=loader_x.BATCH_SIZE,
            n_domain=loader_x.N_DOMAIN, n_ins=loader_x.N_INS, tfm=tfm_train, is_train=True,
            dataset_wrapper=dataset_wrapper,
        )
        self.train_loader_u = None
        if dataset.train_u:
            loader_u = cfg.DATALOADER.TRAIN_X if cfg.DATALOADER.TRAIN_U.SAME_AS_X else cfg.DATALOADER.TRAIN_U
            self.train_loader_u = build_data_loader(
                cfg, sampler_type=loader_u.SAMPLER, data_source=dataset.train_u, batch_size=loader_u.BATCH_SIZE,
                n_domain=loader_u.N_DOMAIN, n_ins=loader_u.N_INS, tfm=tfm_train, is_train=True,
                dataset_wrapper=dataset_wrapper,
            )
        self.val_loader = None
        if dataset.val:
            self.val_loader = build_data_loader(
                cfg, sampler_type=cfg.DATALOADER.TEST.SAMPLER, data_source=dataset.val,
                batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, tfm=tfm_test, is_train=False,
                dataset_wrapper=dataset_wrapper,
            )
        self.test_loader = build_data_loader(
            cfg, sampler_type=cfg.DATALOADER.TEST.SAMPLER, data_source=dataset.test,
            batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, tfm=tfm_test, is_train=False, dataset_wrapper=dataset_wrapper,
        )

        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname
        self.dataset = dataset
        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    @property
    def num_classes(self):
        return self._num_classes

    @property
    def num_source_domains(self):
        return self._num_source_domains

    @property
    def lab2cname(self):
        return self._lab2cname

    def show_dataset_summary(self, cfg):
        from tabulate import tabulate

        table = [["Dataset", cfg.DATASET.NAME]]
        if cfg.DATASET.SOURCE_DOMAINS:
            table.append(["Source", cfg.DATASET.SOURCE_DOMAINS])
        if cfg.DATASET.TARGET_DOMAINS:
            table.append(["Target", cfg.DATASET.TARGET_DOMAINS])
        table.append(["# classes", f"{self.num_classes:,}"])
        table.append(["# train_x", f"{len(self.dataset.train_x):,}"])
        if self.dataset.train_u:
            table.append(["# train_u", f"{len(self.dataset.train_u):,}"])
        if self.dataset.val:
            table.append(["# val", f"{len(self.dataset.val):,}"])
        table.append(["# test", f"{len(self.dataset.test):,}"])
        print(tabulate(table))


class DatasetWrapper(TorchDataset):
    """Item dict: label, domain, impath, index, img (img2, img3, ... for a list of transforms; a list of
    K_TRANSFORMS views in training) and img0 (resized, un-augmented) when DATALOADER.RETURN_IMG0."""

    def __init__(self, cfg, data_source, transform=None, is_train=False):
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if is_train else 1
        self.return_img0 = cfg.DATALOADER.RETURN_IMG0
        if self.k_tfm > 1 and transform is None:
            raise ValueError(f"Cannot augment the image {self.k_tfm} times because transform is None")
        to_tensor = [T.Resize(cfg.INPUT.SIZE, interpolation=INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]), T.ToTensor()]
        if "normalize" in cfg.INPUT.TRANSFORMS:
            to_tensor.append(T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
        self.to_tensor = T.Compose(to_tensor)

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, idx):
        item = self.data_source[idx]
        output = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}
        img0 = read_image(item.impath)
        if self.transform is None:
            output["img"] = img0
        elif isinstance(self.transform, (list, tuple)):
            for i, tfm in enumerate(self.transform):
                output["img" if i == 0 else f"img{i + 1}"] = self._transform_image(tfm, img0)
        else:
            output["img"] = self._transform_image(self.transform, img0)
        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output

    def _transform_image(self, tfm, img0):
        views = [tfm(img0) for _ in range(self.k_tfm)]
        return views[0] if len(views) == 1 else views


__all__ = [
    "DATASET_REGISTRY", "build_dataset", "Datum", "DatasetBase", "DataManager", "DatasetWrapper", "build_data_loader",
    "build_sampler",
]
