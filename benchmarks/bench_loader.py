"""Samples/s that each method's TRAIN loader delivers, and where a sample's CPU time goes.

Writes ``--images`` JPEG files of 500x375 (the size of typical dataset images; smooth random content, quality 90) to a
temporary folder, builds each trainer's own train loader from its shipped ``configs/trainers/<Method>/vit_b32.yaml``
(INPUT.SIZE 224; no model is built: only the trainer's ``build_data_loader``) over ``batch-size x batches`` samples of
those files, and reads ``--batches`` batches with ``--workers`` workers. Then one in-process pass (one torch thread, as
a worker has) over the same samples times every stage of the method's transforms, wrapped: decode (file -> RGB image),
resize (single-view resizes: short-side resize, random resized crop), RandAugment, multi-crops (microCLIP's N crops,
NtUA's augmented views), other augmentations (crop, flip, colour jitter, grayscale, blur), to tensor (PIL -> tensor,
normalisation) and the rest (dataset wrapper, batching).

microCLIP is measured in every DATALOADER.VIEWS place (clipkit/blocks/decoded_views.py): "pil" (the present, official
pipeline), "tensor" (decode once, weak view and crops by tensor ops on the workers), "device" (workers decode and build
the strong view; the weak view and crops are resized on ``--device``, timed apart: "device ms/sample"). UPL's loader is
its pseudo-labelled subset's (the default train transform: the same per-sample work); NtUA's train loader yields
cached features, its image work is the one-off pass over AUGMENT_EPOCHS augmented views per image (shown as such).

    python benchmarks/bench_loader.py --trainer all --workers 2 --batch-size 64 --batches 8
    python benchmarks/bench_loader.py --trainer MicroCLIP --workers 8 --batch-size 64 --batches 20 --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

IMAGE_SIZE = (500, 375)  # (width, height) of the generated JPEGs
STAGES = ("decode", "resize", "randaugment", "multi-crops", "other aug", "to tensor", "rest")
# transform class name -> stage (anything else is "other aug")
STAGE_OF_CLASS = {
    "Resize": "resize", "RandomResizedCrop": "resize", "RandomResizedCropAndInterpolation": "resize",
    "RandAugment": "randaugment", "MultiCropTransform": "multi-crops",
    "PILToTensor": "to tensor", "ToTensor": "to tensor", "Normalize": "to tensor", "ToNumpy": "to tensor",
    "MaybeToTensor": "to tensor", "MaybePILToTensor": "to tensor",
}


# --------------------------------------------------------------------------------------------------- images
def write_jpegs(folder: str, count: int, seed: int = 0) -> list:
    """``count`` 500x375 JPEGs of smooth random content (low-frequency noise upsampled bicubically, plus grain)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = IMAGE_SIZE
    paths = []
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        low = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((width, height),
                                                                                         Image.BICUBIC)
        pixels = np.clip(np.asarray(low).astype(np.int16) + rng.integers(-16, 17, (height, width, 3)), 0, 255)
        path = os.path.join(folder, f"{i:05d}.jpg")
        Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def register_dataset():
    """``BenchJPEGFolder``: every listed file is a train item (BENCH_FILES env: folder, samples, classes)."""
    from clipkit.dassl import DATASET_REGISTRY, DatasetBase, Datum

    if "BenchJPEGFolder" in DATASET_REGISTRY.registered_names():
        return

    @DATASET_REGISTRY.register()
    class BenchJPEGFolder(DatasetBase):
        dataset_key = "bench_jpeg_folder"
        templates = ["a photo of a {}."]

        def __init__(self, cfg):
            folder = os.path.join(cfg.DATASET.ROOT, "images")
            files = sorted(os.listdir(folder))
            samples, classes = (int(v) for v in os.environ["BENCH_LOADER_SIZES"].split(","))
            items = [Datum(impath=os.path.join(folder, files[i % len(files)]), label=i % classes,
                           classname=f"class{i % classes}") for i in range(samples)]
            super().__init__(train_x=items, val=[], test=items[: max(1, classes)])


# -------------------------------------------------------------------------------------------------- loaders
def method_cfg(method: str, root: str, workers: int, batch_size: int, views: str):
    import train

    config = os.path.join(REPO_ROOT, "configs", "trainers", method, "vit_b32.yaml")
    argv = ["--root", root, "--trainer", method, "--seed", "1", "--config-file", config,
            "DATASET.NAME", "BenchJPEGFolder", "DATALOADER.NUM_WORKERS", str(workers),
            "DATALOADER.TRAIN_X.BATCH_SIZE", str(batch_size), "DATALOADER.VIEWS", views, "USE_CUDA", "False"]
    return train.setup_cfg(train.build_parser().parse_args(argv))


def build_train_loader(method: str, cfg):
    """(loader, note) of the method's train images: its own ``build_data_loader`` on a trainer without a model."""
    from clipkit.dassl import TRAINER_REGISTRY

    cls = TRAINER_REGISTRY.get(method)
    trainer = cls.__new__(cls)  # no __init__: no CLIP, no model; build_data_loader only reads cfg
    trainer.cfg = cfg
    trainer.build_data_loader()
    if method == "NtUA":  # its train loader yields cached features; the image work is the augmented-view pass
        from clipkit.blocks.augmented_views import ResizedCropViewsDataset

        node = cfg.TRAINER.NTUA
        items = trainer.dm.dataset.train_x
        views = ResizedCropViewsDataset([item.impath for item in items], node.AUGMENT_EPOCHS, cfg.INPUT.SIZE[0],
                                        node.AUGMENT_SCALE, node.AUGMENT_RATIO, node.AUGMENT_HFLIP, seed=1)
        loader = torch.utils.data.DataLoader(views, batch_size=cfg.DATALOADER.TRAIN_X.BATCH_SIZE,
                                             num_workers=cfg.DATALOADER.NUM_WORKERS)
        return loader, f"one-off pass: {node.AUGMENT_EPOCHS} augmented views per image (cached features after)"
    note = {"UPL": "pseudo-labelled subset's loader (default train transform)",
            "ReCLIP": "CLIP test view"}.get(method, "")
    return trainer.train_loader_x, note


def batch_size_of(batch) -> int:
    if isinstance(batch, dict):
        return len(batch["index"]) if "index" in batch else len(next(iter(batch.values())))
    return len(batch)


def loader_throughput(loader, batches: int, workers: int):
    """(samples/s, steady): over batches after the first ``workers`` (steady state) when there are more than
    2 x workers of them, else over all batches including the workers' start-up."""
    stamps, sizes = [time.perf_counter()], []
    for i, batch in enumerate(loader):
        sizes.append(batch_size_of(batch))
        stamps.append(time.perf_counter())
        if i + 1 == batches:
            break
    skip = workers if len(sizes) > 2 * workers and workers > 0 else 0
    return sum(sizes[skip:]) / (stamps[-1] - stamps[skip]), skip > 0


# ------------------------------------------------------------------------------------------------ profiling
class Timed:
    """Calls ``function`` and adds its wall time to ``spent[stage]``."""

    def __init__(self, function, stage: str, spent):
        self.function, self.stage, self.spent = function, stage, spent

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.spent[self.stage] += time.perf_counter() - start


def instrument(transform, spent):
    """A copy of ``transform`` whose stages add their time to ``spent`` (Compose-like objects stage by stage)."""
    from clipkit.blocks.decoded_views import DecodedViews

    if transform is None:
        return None
    if isinstance(transform, (list, tuple)):
        return [instrument(t, spent) for t in transform]
    if isinstance(transform, DecodedViews):
        clone = copy.copy(transform)
        clone.strong = instrument(transform.strong, spent)
        return clone
    if isinstance(getattr(transform, "transforms", None), (list, tuple)):
        clone = copy.copy(transform)
        clone.transforms = [instrument(t, spent) for t in transform.transforms]
        return clone
    return Timed(transform, STAGE_OF_CLASS.get(type(transform).__name__, "other aug"), spent)


def profile_stages(loader, samples: int):
    """(ms per sample in-process, {stage: share}) of one in-process pass over the loader's first ``samples`` items
    (their batching included), with every stage of the transforms timed."""
    import clipkit.blocks.augmented_views as augmented_views
    import clipkit.blocks.decoded_views as decoded_views
    import clipkit.engine.data as engine_data
    import clipkit.feature_cache as feature_cache

    spent = defaultdict(float)
    dataset = copy.copy(loader.dataset)
    if hasattr(dataset, "transform"):
        dataset.transform = instrument(dataset.transform, spent)
    patches = [(engine_data, "read_image", "decode"), (feature_cache, "read_image_uint8", "decode"),
               (decoded_views, "view_from_box", "resize"), (decoded_views, "crops_from_boxes", "multi-crops"),
               (decoded_views, "pil_to_tensor", "to tensor"), (augmented_views, "resized_crop_views", "multi-crops")]
    originals = [(module, name, getattr(module, name)) for module, name, _ in patches]
    for module, name, stage in patches:
        setattr(module, name, Timed(getattr(module, name), stage, spent))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a loader worker
    collate = getattr(loader, "collate_fn", None) or torch.utils.data.default_collate
    try:
        for i in range(min(2, samples)):  # untimed warm-up (lazy imports, first-call kernels)
            dataset[i % len(dataset)]
        spent.clear()
        start = time.perf_counter()
        items = [dataset[i % len(dataset)] for i in range(samples)]
        collate(items)
        total = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
        for module, name, original in originals:
            setattr(module, name, original)
    shares = {stage: spent[stage] / total for stage in STAGES[:-1]}
    shares["rest"] = max(0.0, 1.0 - sum(shares.values()))
    return 1000 * total / samples, shares


def device_views_ms(loader, cfg, device: torch.device, repeats: int = 2) -> float:
    """ms per sample of ``views_on_device`` (weak view + crops of the "device" place) on ``device``."""
    from clipkit.blocks.decoded_views import views_on_device
    from clipkit.dassl import INTERPOLATION_MODES

    batch = next(iter(loader))
    size, mode = tuple(cfg.INPUT.SIZE), INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)  # comparable with the workers' single thread (and immune to oversubscription)
    try:
        views_on_device(batch, size, mode, max(size), device)  # warm-up (kernels, allocator)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            views_on_device(batch, size, mode, max(size), device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    finally:
        torch.set_num_threads(threads)
    return 1000 * (time.perf_counter() - start) / repeats / len(batch["full"])


# ------------------------------------------------------------------------------------------------------ main
def bench(method: str, views: str, args, root: str) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):  # the transform and dataset summaries
        cfg = method_cfg(method, root, args.workers, args.batch_size, views)
        loader, note = build_train_loader(method, cfg)
    rate, steady = loader_throughput(loader, args.batches, args.workers)
    ms, shares = profile_stages(loader, min(args.batch_size * args.batches, args.profile_samples))
    row = {"method": method, "views": views, "samples_per_s": rate, "steady": steady, "in_process_ms": ms,
           "shares": shares, "note": note}
    if views == "device":
        row["device_ms"] = device_views_ms(loader, cfg, torch.device(args.device))
    return row


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trainer", default="all", help="a registered trainer name, or 'all'")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (DATALOADER.NUM_WORKERS)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=8, help="batches read per loader")
    parser.add_argument("--images", type=int, default=64, help="distinct JPEG files (samples cycle over them)")
    parser.add_argument("--profile-samples", type=int, default=64, help="samples of the in-process stage profile")
    parser.add_argument("--views", default="", help="comma-separated DATALOADER.VIEWS places for the methods that "
                        "support them (default: all they support)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the 'device' views place resizes (timed apart)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process (workers have 1; "
                        "with --workers 0 the views are built here)")
    parser.add_argument("--json", help="write the rows to this JSON file")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from clipkit.dassl import TRAINER_REGISTRY
    from clipkit.plugins import import_all_plugins

    import_all_plugins()
    register_dataset()
    methods = sorted(TRAINER_REGISTRY.registered_names()) if args.trainer == "all" else [args.trainer]
    rows = []
    with tempfile.TemporaryDirectory() as root:
        write_jpegs(os.path.join(root, "images"), args.images)
        samples = args.batch_size * args.batches
        os.environ["BENCH_LOADER_SIZES"] = f"{samples},{max(2, min(10, samples))}"
        for method in methods:
            cls = TRAINER_REGISTRY.get(method)
            if getattr(cls, "training_free", False):
                rows.append({"method": method, "training_free": True})
                continue
            places = cls.supported_views
            if args.views:
                places = tuple(p for p in args.views.split(",") if p in cls.supported_views) or ("pil",)
            rows += [bench(method, place, args, root) for place in places]
    print(f"train loaders over {args.images} JPEGs of {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, batch {args.batch_size}, "
          f"{args.batches} batches, {args.workers} workers, {os.cpu_count()} CPUs, {args.threads} main-process torch "
          f"thread(s); stage shares of one in-process "
          f"pass (1 torch thread); device views on {args.device}")
    print("| method | views | samples/s | vs pil | decode | resize | RandAugment | multi-crops | other aug | "
          "to tensor | rest | CPU ms/sample | device ms/sample | note |")
    print("|" + "---|" * 14)
    pil_rate = {row["method"]: row["samples_per_s"] for row in rows if row.get("views") == "pil"}
    for row in rows:
        if row.get("training_free"):
            print(f"| {row['method']} | - | no train loader (training-free) |" + " - |" * 11)
            continue
        shares = " | ".join(f"{100 * row['shares'][stage]:.0f}%" for stage in STAGES)
        gain = row["samples_per_s"] / pil_rate[row["method"]] if row["method"] in pil_rate else float("nan")
        device = f"{row['device_ms']:.2f}" if "device_ms" in row else "-"
        steady = "" if row["steady"] else " (incl. start-up)"
        print(f"| {row['method']} | {row['views']} | {row['samples_per_s']:.1f}{steady} | {gain:.2f}x | {shares} | "
              f"{row['in_process_ms']:.1f} | {device} | {row['note']} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"workers": args.workers, "batch_size": args.batch_size, "batches": args.batches,
                       "rows": rows}, handle, indent=1)
        print(f"rows written to {args.json}")


if __name__ == "__main__":
    main()
