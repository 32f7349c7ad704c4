"""Figures from results.json files: per-epoch curves (Fig. 3), ablation sweeps (Figs. 5, 6), gains over zero-shot."""

from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from clipkit import names
from clipkit.figures import FigureInputError, pyplot, save_figure

RESULTS_FILE = "results.json"
SEED_DIR = re.compile(r"^seed(\d+)$")
# per-epoch keys drawn by `curves`, with their legend labels (only the keys a run logged are drawn)
CURVE_KEYS = (("pl_accuracy", "pseudo-labels (train)"), ("accuracy", "test (reported logits)"),
              ("accuracy_cls", "test [CLS]"), ("accuracy_fg", "test [FG]"))
# one colour per method, one line style per curve kind
CURVE_STYLES = {"pl_accuracy": "--", "accuracy": "-", "accuracy_cls": ":", "accuracy_fg": "-."}
# ablation run folders: <root>/<dataset>/<prefix><value>/seed<S> (configs/trainers/MicroCLIP/ablations/*.yaml stems)
ABLATION_PREFIXES = {"gamma": "fig5_gamma_", "crops": "fig6_crops_"}
ABLATION_LABELS = {"gamma": "gamma (Eq. 13)", "crops": "number of crops N (Eq. 9)"}
PAPER_RESULTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                 "benchmarks", "paper_results")


def seed_runs(root: str) -> List[Tuple[Tuple[str, ...], int, Dict]]:
    """Every ``.../seed<S>/results.json`` under ``root`` (symlinks followed): (the absolute path's folder names above
    the seed folder, seed, parsed results)."""
    if not os.path.isdir(root):
        raise FigureInputError(f"{root} is not a folder: pass the --output-root of a sweep (e.g. output/tiny)")
    found = []
    for current, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        match = SEED_DIR.match(os.path.basename(current))
        if match and RESULTS_FILE in files:
            with open(os.path.join(current, RESULTS_FILE)) as handle:
                data = json.load(handle)
            parts = tuple(os.path.abspath(os.path.dirname(current)).split(os.sep))
            found.append((parts, int(match.group(1)), data))
    return found


def mean_and_std(values: Sequence[float]) -> Tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def epoch_series(runs: Sequence[Dict], key: str) -> Optional[Tuple[List[int], List[float], List[float]]]:
    """Epochs where every run logged ``key``: (epochs, mean over runs, population std over runs)."""
    per_run = [{r["epoch"]: r[key] for r in data.get("epochs", []) if key in r} for data in runs]
    epochs = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
    if not epochs:
        return None
    stats = [mean_and_std([p[e] for p in per_run]) for e in epochs]
    return epochs, [m for m, _ in stats], [s for _, s in stats]


def curves(root: str, out_dir: str) -> List[str]:
    """Fig. 3: per dataset one panel; per self-training method the per-epoch curves, mean +- std over seeds."""
    groups: Dict[str, Dict[str, List[Dict]]] = defaultdict(lambda: defaultdict(list))
    for _, _, data in seed_runs(root):
        if len(data.get("epochs", [])) >= 1 and any("pl_accuracy" in r or "accuracy" in r for r in data["epochs"]):
            groups[data["dataset"]][data["method"]].append(data)
    if not groups:
        raise FigureInputError(f"no self-training run with per-epoch records under {root}: run a sweep first "
                               f"(bash scripts/run_all.sh tiny --output-root {root})")
    plt = pyplot()
    datasets = names.sort_datasets(groups)
    figure, axes = plt.subplots(1, len(datasets), figsize=(8.0 * len(datasets), 4.0), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for axis, dataset in zip(axes[0], datasets):
        for index, method in enumerate(names.sort_methods(groups[dataset])):
            runs = groups[dataset][method]
            color = colors[index % len(colors)]
            for key, label in CURVE_KEYS:
                series = epoch_series(runs, key)
                if series is None:
                    continue
                epochs, mean, std = series
                axis.plot(epochs, mean, marker="o", markersize=3, color=color, linestyle=CURVE_STYLES[key],
                          label=f"{names.method_display_name(method)} ({len(runs)} seeds): {label}")
                axis.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                  color=color, alpha=0.15)
        axis.set_title(names.dataset_display_name(dataset))
        axis.set_xlabel("epoch")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_ylabel("top-1 accuracy (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(figure, out_dir, "curves")


def ablation(root: str, sweep: str, out_dir: str) -> List[str]:
    """Figs. 5 / 6: final test accuracy (mean +- std over seeds) against gamma or N, one line per dataset."""
    prefix = ABLATION_PREFIXES[sweep]
    points: Dict[str, Dict[float, List[float]]] = defaultdict(lambda: defaultdict(list))
    for parts, _, data in seed_runs(root):
        folder = parts[-1]
        if folder.startswith(prefix):
            try:
                value = float(folder[len(prefix):])
            except ValueError:
                continue
            points[data["dataset"]][value].append(float(data["accuracy_last"]))
    if not points:
        example = f"{prefix}{'0.5' if sweep == 'gamma' else '8'}"
        raise FigureInputError(
            f"no {sweep} ablation runs under {root}: expected <root>/<dataset>/{prefix}<value>/seed<S>/results.json, "
            f"made with --extra-config-file configs/trainers/MicroCLIP/ablations/{example}.yaml --output-dir "
            f"{root}/<dataset>/{example}/seed1 (configs/trainers/MicroCLIP/README.md)")
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 4.0))
    for dataset in names.sort_datasets(points):
        values = sorted(points[dataset])
        stats = [mean_and_std(points[dataset][v]) for v in values]
        axis.errorbar(values, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3,
                      label=names.dataset_display_name(dataset))
    paper = os.path.join(PAPER_RESULTS_DIR, f"ablation_{sweep}.csv")
    if os.path.isfile(paper):  # optional paper curve: columns dataset,value,accuracy
        import csv

        with open(paper) as handle:
            rows = list(csv.DictReader(handle))
        for dataset in sorted({r["dataset"] for r in rows}):
            mine = sorted((float(r["value"]), float(r["accuracy"])) for r in rows if r["dataset"] == dataset)
            axis.plot([v for v, _ in mine], [a for _, a in mine], linestyle=":", marker="x",
                      label=f"{names.dataset_display_name(dataset)} (paper)")
    if sweep == "crops":
        axis.set_xscale("log", base=2)
    axis.set_xlabel(ABLATION_LABELS[sweep])
    axis.set_ylabel("top-1 test accuracy (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return save_figure(figure, out_dir, f"ablation_{sweep}")


def deltas(root: str, out_dir: str, backbone: Optional[str] = None, paper: bool = False) -> List[str]:
    """Per-dataset gain (points) of each method's mean accuracy over zero-shot CLIP, grouped bars (Table 1)."""
    accuracy: Dict[Tuple[str, str, str], List[float]] = defaultdict(list)
    for parts, _, data in seed_runs(root):
        run_backbone = parts[-3]  # <backbone>/<dataset>/<Method>/seed<S>
        accuracy[(run_backbone, data["dataset"], data["method"])].append(float(data["accuracy_last"]))
    backbones = sorted({b for b, _, _ in accuracy})
    if backbone is None:
        if len(backbones) != 1:
            raise FigureInputError(f"runs of several backbones under {root} ({backbones}): pass --backbone")
        backbone = backbones[0]
    zero_shot = {d: v for (b, d, m), v in accuracy.items() if b == backbone and names.canonical_method(m) ==
                 "zeroshot_clip"}
    if not zero_shot:
        raise FigureInputError(f"no ZeroshotCLIP runs for backbone {backbone!r} under {root}: the gains are measured "
                               f"against it (bash scripts/run_all.sh {backbone} --methods ZeroshotCLIP)")
    datasets = names.sort_datasets(zero_shot)
    methods = names.sort_methods({m for (b, d, m) in accuracy if b == backbone and d in zero_shot and
                                  names.canonical_method(m) != "zeroshot_clip"})
    if not methods:
        raise FigureInputError(f"only ZeroshotCLIP runs under {root}: run the other methods first")
    paper_gain = {}
    if paper:
        from output_parser import load_paper_table, paper_table_path

        try:
            table = load_paper_table(paper_table_path(backbone))
        except FileNotFoundError as error:
            raise FigureInputError(str(error)) from None
        reference = table.rows.get("zeroshot_clip", {})
        paper_gain = {(method, names.canonical_dataset(d)): row[d] - reference[d]
                      for method, row in table.rows.items() for d in row if d in reference}
    plt = pyplot()
    width = 0.8 / len(methods)
    figure, axis = plt.subplots(figsize=(max(5.0, 1.2 * len(datasets) * max(1, len(methods)) * 0.6), 4.0))
    zs_mean = {d: sum(v) / len(v) for d, v in zero_shot.items()}
    for i, method in enumerate(methods):
        xs, gains = [], []
        for j, dataset in enumerate(datasets):
            values = accuracy.get((backbone, dataset, method))
            if values:
                xs.append(j + (i - (len(methods) - 1) / 2) * width)
                gains.append(sum(values) / len(values) - zs_mean[dataset])
        bars = axis.bar(xs, gains, width=width, label=names.method_display_name(method))
        axis.bar_label(bars, fmt="%+.1f", fontsize=7)
        for x, dataset in zip(xs, [d for d in datasets if accuracy.get((backbone, d, method))]):
            gain = paper_gain.get((names.canonical_method(method), dataset))
            if gain is not None:
                axis.plot([x - width / 2, x + width / 2], [gain, gain], color="black", linewidth=1.5)
    axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.set_xticks(range(len(datasets)), [names.dataset_display_name(d) for d in datasets])
    axis.set_ylabel("gain over zero-shot CLIP (points)")
    axis.set_title(f"{names.backbone_display_name(backbone)}" + ("; black ticks: paper" if paper_gain else ""))
    axis.grid(alpha=0.3, axis="y")
    axis.legend(fontsize=7, ncol=2)
    return save_figure(figure, out_dir, "deltas")


__all__ = ["ablation", "curves", "deltas", "epoch_series", "seed_runs"]
