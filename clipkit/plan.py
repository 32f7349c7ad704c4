"""What a sweep still costs: ``bash scripts/run_all.sh <backbone> --plan [--throughput FILE]`` (never starts a job).

For every run still to do (the sweep's own job list and skip rule), the images that pass through the training step:
``epochs x images per epoch``, both from the method's resolved config and its ``planned_training`` hook (default:
OPTIM.MAX_EPOCH passes over the train split; POUF's fixed-length epochs, UPL's top-K subset, ReCLIP's epoch rule and
NtUA's key-tuning epochs over its K x C shots are the methods' own), with the train-split sizes of microCLIP's Table 10. With a throughput file
(JSON ``{"<Method>": {"<backbone>": images_per_second}}``, the "training throughput" that ``benchmarks/bench_*.py``
print on the target GPU) each run gets GPU hours = images / throughput; without one the hours are left open, since
CPU figures say nothing about a GPU. Not counted: test passes, feature-cache builds, loader stalls, start-up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from .check_data import PAPER_SIZES

# Classes per dataset (Table 10; for the methods whose epoch is K images per class).
DATASET_CLASSES = {
    "birdsnap": 500, "caltech101": 100, "stanford_cars": 196, "cifar100": 100, "dtd": 47, "fgvc_aircraft": 100,
    "oxford_flowers": 102, "food101": 101, "imagenet": 1000, "oxford_pets": 37, "resisc45": 45, "sun397": 397,
    "ucf101": 101, "tiny": 20,
}
TINY_SIZES = (3_000, 1_000)  # the embedded tiny benchmark: 20 classes x 150 train / 50 test
SECONDS_PER_HOUR = 3600.0


@dataclass
class RunEstimate:
    """One run still to do."""

    method: str
    dataset: str
    seed: int
    train_images: int
    epochs: int
    images_per_epoch: int
    throughput: Optional[float]  # images/s of the training step on the target GPU, if measured

    @property
    def images(self) -> int:
        return self.epochs * self.images_per_epoch

    @property
    def gpu_hours(self) -> Optional[float]:
        """images / throughput in hours; 0 for a run without training; None without a measured throughput."""
        if self.images == 0:
            return 0.0
        if self.throughput is None:
            return None
        return self.images / self.throughput / SECONDS_PER_HOUR


def load_throughput(path: Optional[str]) -> Dict[str, Dict[str, float]]:
    """``{"<Method>": {"<backbone>": images_per_second}}`` from a JSON file (empty without a file)."""
    if not path:
        return {}
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected {{\"<Method>\": {{\"<backbone>\": images_per_second}}}}")
    return {method: {backbone: float(rate) for backbone, rate in rates.items()} for method, rates in data.items()}


def dataset_sizes(dataset: str):
    """(train, test) images and classes of a dataset key (Table 10; the tiny benchmark's own sizes)."""
    if dataset == "tiny":
        train, test = TINY_SIZES
    elif dataset in PAPER_SIZES:
        train, test = PAPER_SIZES[dataset]
    else:
        raise ValueError(f"no Table 10 size for dataset {dataset!r}: the planner knows {sorted(PAPER_SIZES)} + tiny")
    return train, test, DATASET_CLASSES[dataset]


def estimate_run(job, backbone: str, throughput: Dict[str, Dict[str, float]]) -> RunEstimate:
    """Resolve ``job``'s config exactly as train.py would, then ask its trainer class for the planned training."""
    import train
    from clipkit.dassl import TRAINER_REGISTRY

    cfg = train.setup_cfg(train.build_parser().parse_args(list(job.command[2:])))
    trainer = TRAINER_REGISTRY.get(job.method)
    num_train, _, num_classes = dataset_sizes(job.dataset)
    epochs, per_epoch = trainer.planned_training(cfg, num_train, num_classes)
    rate = throughput.get(job.method, {}).get(backbone)
    return RunEstimate(job.method, job.dataset, job.seed, num_train, int(epochs), int(per_epoch), rate)


def format_plan(estimates: Sequence[RunEstimate], backbone: str, throughput_file: Optional[str]) -> str:
    """Per (method, dataset) the runs left and their training images and GPU hours, with totals and assumptions."""
    rows: Dict[tuple, List[RunEstimate]] = {}
    for estimate in estimates:
        rows.setdefault((estimate.method, estimate.dataset), []).append(estimate)
    lines = ["| method | dataset | runs left | train images | epochs | images / epoch | images | images/s | GPU h |",
             "|---|---|---|---|---|---|---|---|---|"]
    total_images, total_hours, unknown = 0, 0.0, 0
    for (method, dataset), runs in rows.items():
        first = runs[0]
        images = sum(r.images for r in runs)
        hours = [r.gpu_hours for r in runs]
        known = all(h is not None for h in hours)
        total_images += images
        if known:
            total_hours += sum(hours)
        else:
            unknown += len(runs)
        rate = f"{first.throughput:g}" if first.throughput is not None else "n/a"
        shown = f"{sum(hours):.2f}" if known else "n/a"
        lines.append(f"| {method} | {dataset} | {len(runs)} | {first.train_images:,} | {first.epochs} | "
                     f"{first.images_per_epoch:,} | {images:,} | {rate} | {shown} |")
    lines.append("")
    hours_text = f"{total_hours:.2f} GPU hours" + (f" + {unknown} runs without a measured throughput" if unknown else "")
    lines.append(f"{len(estimates)} runs to do on {backbone}: {total_images:,} images through the training step; "
                 f"{hours_text}.")
    lines.append("Assumptions: train-split sizes of microCLIP's Table 10; epochs and images per epoch from each run's "
                 "resolved config (the method's planned_training); GPU hours = images / the training throughput in "
                 f"{throughput_file or '(no --throughput file: measure it with benchmarks/bench_<method>.py on the GPU)'}"
                 "; test passes, cache builds, loader stalls and start-up are not counted; one GPU per run.")
    return "\n".join(lines)


__all__ = ["RunEstimate", "dataset_sizes", "estimate_run", "format_plan", "load_throughput"]
