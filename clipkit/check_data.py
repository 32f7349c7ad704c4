"""Preflight check of the benchmark data, before GPU hours are spent on it.

    python -m clipkit.check_data --root /data                        # every dataset of configs/datasets/ but tiny
    python -m clipkit.check_data --root /data --datasets dtd,ucf101 --workers 16
    bash scripts/run_all.sh vit_b32 --data-root /data --check-data   # the same check, then the sweep

For each dataset it builds the configured reader (``configs/datasets/<key>.yaml`` with ``DATASET.ROOT`` = ``--root``),
decodes every image of its splits in parallel the way the data loader does (``read_image``), looks up the description
file the text-based methods read, and prints one table row: train / test sizes next to microCLIP's Table 10, classes,
unreadable images, classes without descriptions. Layout warnings of the readers (missing, extra or renamed class
folders) and size differences from the paper are printed under the table; they are notes, not failures.

Exit status 1 when a reader cannot be built, an image cannot be decoded or descriptions are missing (unless
``--ignore-descriptions``); every such file is listed, with the reason, in ``--bad-files``
(default ``check_data_bad_files.txt``), which is written on every run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from multiprocessing import Pool
from typing import List, Optional, Sequence, Tuple

from . import REPO_ROOT

# microCLIP (arXiv 2510.02270) Table 10: train / test images per dataset.
PAPER_SIZES = {
    "birdsnap": (31_900, 7_977),
    "caltech101": (4_403, 6_645),
    "stanford_cars": (8_144, 8_041),
    "cifar100": (50_000, 10_000),
    "dtd": (3_760, 1_880),
    "fgvc_aircraft": (3_334, 3_333),
    "oxford_flowers": (4_093, 2_463),
    "food101": (75_750, 25_250),
    "imagenet": (50_000, 50_000),
    "oxford_pets": (3_680, 3_669),
    "resisc45": (25_200, 6_300),
    "sun397": (76_129, 21_758),
    "ucf101": (9_537, 3_783),
}
TINY = "tiny"  # the embedded tiny benchmark: only when asked for with --datasets
BAD_FILES = "check_data_bad_files.txt"
CHUNKSIZE = 64  # at most this many images per task sent to a decoding process


@dataclass
class Report:
    """What the check found for one dataset."""

    key: str
    train: Optional[int] = None
    test: Optional[int] = None
    classes: Optional[int] = None
    unreadable: List[Tuple[str, str]] = field(default_factory=list)  # (path, reason)
    missing_descriptions: Optional[int] = None  # classes without descriptions; None = not checked
    descriptions_note: str = ""
    error: str = ""  # the reader could not be built
    notes: List[str] = field(default_factory=list)

    def failed(self, ignore_descriptions: bool) -> bool:
        return bool(self.error or self.unreadable or (self.missing_descriptions and not ignore_descriptions))


def decode(path: str) -> Tuple[str, str]:
    """``(path, "")`` if the data loader can decode the image, else ``(path, reason)``."""
    from clipkit.dassl import read_image

    try:
        read_image(path)
    except OSError as err:
        cause = err.__cause__ or err
        return path, f"{type(cause).__name__}: {cause}"
    return path, ""


def decode_all(paths: Sequence[str], workers: int, desc: str) -> List[Tuple[str, str]]:
    """``(path, reason)`` of every image of ``paths`` that cannot be decoded, sorted; a progress bar on stderr."""
    from tqdm import tqdm

    progress = dict(total=len(paths), desc=desc, unit="img", disable=None, leave=False)
    if workers > 1 and len(paths) > 1:
        chunksize = max(1, min(CHUNKSIZE, len(paths) // (4 * workers)))  # small datasets still use every process
        with Pool(min(workers, len(paths))) as pool:
            results = list(tqdm(pool.imap_unordered(decode, paths, chunksize=chunksize), **progress))
    else:
        results = [decode(path) for path in tqdm(paths, **progress)]
    return sorted((path, reason) for path, reason in results if reason)


def check_descriptions(cfg, dataset, report: Report) -> None:
    """Count the classes the description file of ``dataset`` does not describe (all of them if it is missing)."""
    from clipkit.text.descriptions import DOWNLOAD_HINT, DescriptionsError, descriptions_path, match_class_keys

    path = descriptions_path(cfg, dataset)
    classnames = list(dataset.classnames)
    if not os.path.isfile(path):
        report.missing_descriptions = len(classnames)
        report.descriptions_note = (f"no description file {path}: `{DOWNLOAD_HINT.format(key=report.key)}` "
                                    f"(or set DATASET.DESCRIPTIONS)")
        return
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
        if not isinstance(table, dict):
            raise DescriptionsError(f"expected a JSON object, got {type(table).__name__}")
    except (ValueError, DescriptionsError) as err:
        report.missing_descriptions = len(classnames)
        report.descriptions_note = f"unreadable description file {path} ({err})"
        return
    _, unmatched = match_class_keys(classnames, list(table))
    report.missing_descriptions = len(unmatched)
    if unmatched:
        report.descriptions_note = (f"{path} has no descriptions for {len(unmatched)} classes "
                                    f"({', '.join(map(repr, unmatched[:5]))}{', ...' if len(unmatched) > 5 else ''})")


def build_cfg(key: str, root: str, configs_root: str, protocol: str, opts: Sequence[str]):
    from clipkit.config import extend_cfg
    from clipkit.dassl import get_cfg_default

    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.merge_from_file(os.path.join(configs_root, "datasets", f"{key}.yaml"))
    cfg.DATASET.ROOT = root
    if protocol:
        cfg.DATASET.SPLIT_PROTOCOL = protocol
    cfg.merge_from_list(list(opts))
    cfg.freeze()
    return cfg


def check_dataset(key: str, root: str, configs_root: str, protocol: str = "", opts: Sequence[str] = (),
                  workers: int = 1) -> Report:
    """Build the reader of ``key``, decode every image of its splits, look up its descriptions."""
    from clipkit.dassl import DATASET_REGISTRY

    report = Report(key)
    try:
        cfg = build_cfg(key, root, configs_root, protocol, opts)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)
    except Exception as err:  # any reader failure is reported in the table, the other datasets are still checked
        report.error = f"{type(err).__name__}: {err}"
        return report
    report.notes += [str(w.message) for w in caught]
    report.train, report.test, report.classes = len(dataset.train_x), len(dataset.test), dataset.num_classes
    paper = PAPER_SIZES.get(key)
    if paper and paper != (report.train, report.test):
        report.notes.append(f"sizes {report.train:,} / {report.test:,} differ from the paper's Table 10 "
                            f"({paper[0]:,} / {paper[1]:,}); DATASETS.md explains the known differences")
    paths = sorted({item.impath for item in dataset.train_x + (dataset.val or []) + dataset.test})
    report.unreadable = decode_all(paths, workers, key)
    check_descriptions(cfg, dataset, report)
    return report


def count(value: Optional[int]) -> str:
    return "-" if value is None else f"{value:,}"


def table(reports: Sequence[Report], ignore_descriptions: bool) -> str:
    from tabulate import tabulate

    rows = []
    for r in reports:
        paper = PAPER_SIZES.get(r.key, (None, None))
        status = "ERROR" if r.error else ("FAIL" if r.failed(ignore_descriptions) else "ok")
        rows.append([r.key, count(r.train), count(paper[0]), count(r.test), count(paper[1]), count(r.classes),
                     count(None if r.error else len(r.unreadable)), count(r.missing_descriptions), status])
    headers = ["dataset", "train", "paper train", "test", "paper test", "classes", "unreadable",
               "no descriptions", "status"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def write_bad_files(path: str, reports: Sequence[Report], ignore_descriptions: bool) -> int:
    """One line ``<dataset>\\t<path or ->\\t<reason>`` per problem; returns the number of lines."""
    lines = []
    for r in reports:
        if r.error:
            lines.append(f"{r.key}\t-\treader: {r.error.splitlines()[0]}")
        lines += [f"{r.key}\t{image}\t{reason}" for image, reason in r.unreadable]
        if r.missing_descriptions and not ignore_descriptions:
            lines.append(f"{r.key}\t-\tdescriptions: {r.descriptions_note}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(line.replace("\n", " ") + "\n" for line in lines))
    return len(lines)


def available_datasets(configs_root: str) -> List[str]:
    from clipkit.sweep import dataset_keys

    return dataset_keys(configs_root)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clipkit.check_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="DATASET.ROOT: the folder that holds the dataset folders (DATASETS.md)")
    parser.add_argument("--datasets", help="comma-separated dataset keys (default: every configs/datasets/*.yaml "
                                           "but tiny)")
    parser.add_argument("--protocol", default="", help="DATASET.SPLIT_PROTOCOL (default: the dataset config's)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes (default: "
                                                                                 "all CPUs)")
    parser.add_argument("--bad-files", default=BAD_FILES, help=f"list of problems, rewritten each run (default "
                                                               f"./{BAD_FILES})")
    parser.add_argument("--ignore-descriptions", action="store_true",
                        help="missing descriptions are not a failure (no text-based method will run)")
    parser.add_argument("--configs-root", default=os.path.join(REPO_ROOT, "configs"),
                        help="folder with datasets/ (default: the repo's configs/)")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE",
                        help="yacs overrides for every reader, e.g. DATASET.NUM_SHOTS 16")
    parser.add_argument("--sweep-args", nargs=argparse.REMAINDER,
                        help="(scripts/run_all.sh --check-data) take --data-root and --datasets from the sweep's "
                             "command line, with the sweep's defaults; must come last")
    return parser


def from_sweep_args(sweep_args: Sequence[str]) -> Tuple[str, List[str], str]:
    """(data root, datasets, configs root) the sweep would use for ``sweep_args``."""
    from . import cache_root
    from .sweep import TINY as SWEEP_TINY, SweepError, build_parser as sweep_parser, select_datasets, split_list

    args = sweep_parser().parse_args(list(sweep_args))
    configs_root = os.path.abspath(args.configs_root)
    datasets = select_datasets(split_list(args.datasets), available_datasets(configs_root), args.backbone)
    if args.data_root:
        return os.path.abspath(args.data_root), datasets, configs_root
    if args.backbone == SWEEP_TINY:
        return os.path.join(cache_root(), "data"), datasets, configs_root
    raise SweepError(f"--data-root DIR is required for backbone {args.backbone}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .plugins import import_all_plugins
    from .sweep import SweepError, split_list

    import_all_plugins(("datasets",))
    if args.sweep_args is not None:
        try:
            root, datasets, configs_root = from_sweep_args(args.sweep_args)
        except SweepError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    else:
        if not args.root:
            print("error: --root DIR is required (the folder that holds the dataset folders)", file=sys.stderr)
            return 2
        root, configs_root = os.path.abspath(os.path.expanduser(args.root)), os.path.abspath(args.configs_root)
        available = available_datasets(configs_root)
        datasets = split_list(args.datasets) or \
            [d for d in available if d != TINY]
        unknown = [d for d in datasets if d not in available]
        if unknown:
            print(f"error: --datasets: no configs/datasets/<key>.yaml for {unknown}; available: {available}",
                  file=sys.stderr)
            return 2
    print(f"checking {len(datasets)} datasets under {root} with {args.workers} decoding processes", flush=True)
    reports = []
    for key in datasets:
        reports.append(check_dataset(key, root, configs_root, args.protocol, args.opts, args.workers))
    print(table(reports, args.ignore_descriptions))
    for r in reports:
        for message in ([f"reader failed: {r.error}"] if r.error else []) + r.notes + \
                ([r.descriptions_note] if r.descriptions_note else []) + \
                [f"cannot decode {path} ({reason})" for path, reason in r.unreadable[:3]] + \
                ([f"... {len(r.unreadable) - 3} more unreadable images"] if len(r.unreadable) > 3 else []):
            print(f"- {r.key}: {message}")
    problems = write_bad_files(args.bad_files, reports, args.ignore_descriptions)
    failed = [r.key for r in reports if r.failed(args.ignore_descriptions)]
    if failed:
        print(f"FAILED: {', '.join(failed)}; {problems} problems listed in {os.path.abspath(args.bad_files)}")
        return 1
    print(f"all {len(reports)} datasets passed (problem list {os.path.abspath(args.bad_files)} is empty)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
