#!/usr/bin/env python
"""Comparison tables from sweep outputs: method x dataset, mean +- std over seeds, LaTeX / Markdown / CSV.

Reads ``<OUTPUT_ROOT>/**/<backbone>/<dataset_key>/<Method>/seed<S>/`` (the layout of ``scripts/run_all.sh``; any of the
levels may be the given root). Per run, in this order:

1. ``results.json`` (full precision, written by the trainer base class);
2. else the newest ``log.txt`` / ``log.txt-<timestamp>`` that holds a result: the last ``* accuracy: X%`` line after
   ``Finish training``, or after ``=> result`` for an eval-only run (CoOp's ``parse_test_res.py`` rules);
3. else ``failed.txt`` (written by the sweep) marks a failed run, and anything else counts as missing (running or
   interrupted).

Needs only the standard library and ``tabulate``; never imports torch or Dassl. Examples::

    python output_parser.py output/                          # Markdown, every backbone found
    python output_parser.py output/vit_b32 --format latex --vs-paper
    python output_parser.py output/ --table pseudo-labels --format csv
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from clipkit import names  # noqa: E402  (clipkit/__init__.py and clipkit/names.py import only the standard library)

PAPER_RESULTS_DIR = os.path.join(REPO_ROOT, "benchmarks", "paper_results")
RESULTS_FILE = "results.json"
FAILED_FILE = "failed.txt"
LOG_FILE = "log.txt"
SEED_DIR = re.compile(r"^seed(\d+)$")
ACCURACY_LINE = re.compile(r"^\* accuracy: ([\.\deE+-]+)%")  # Dassl's evaluator block (CoOp parse_test_res regex)
END_OF_TRAINING = "Finish training"
RESULT_BLOCK = "=> result"
EVAL_ONLY_ARG = re.compile(r"^eval_only: True$")  # train.py prints its arguments one per line
FAILED_REASON = re.compile(r"^error: (.*)$")
STATS = ("last", "best")
MISSING, FAILED = "--", "fail"
PRINTED_AVG_TOLERANCE = 0.01  # a printed average of 2-decimal cells may be off by one unit in the last place


# ----------------------------------------------------------------------------------------------------------------------
# Reading runs
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One ``seed<S>`` folder. ``accuracy`` / ``pl_accuracy`` map a stat ("last" | "best") to a percentage or None."""

    backbone: str
    dataset: str
    method: str
    seed: int
    path: str
    status: str = "missing"  # "ok" | "failed" | "missing" (no result yet: running or interrupted)
    source: str = ""  # file the numbers came from
    accuracy: Dict[str, Optional[float]] = field(default_factory=dict)
    pl_accuracy: Dict[str, Optional[float]] = field(default_factory=dict)
    error: str = ""
    activity: str = ""  # for a run without result: "running (pid N)" or "interrupted" (from <run>/.lock), or ""


def parse_log_accuracy(text: str) -> Optional[float]:
    """Final test accuracy (%) of one log, or None when the log holds no finished result.

    A training log counts only after ``Finish training`` (per-epoch evaluation blocks come before it); an eval-only log
    (its argument dump says ``eval_only: True``) counts after ``=> result``. The last match wins.
    """
    lines = [line.strip() for line in text.splitlines()]
    if END_OF_TRAINING in lines:
        start = len(lines) - 1 - lines[::-1].index(END_OF_TRAINING)
    elif any(EVAL_ONLY_ARG.match(line) for line in lines) and RESULT_BLOCK in lines:
        start = lines.index(RESULT_BLOCK)
    else:
        return None
    value = None
    for line in lines[start:]:
        match = ACCURACY_LINE.match(line)
        if match:
            value = float(match.group(1))
    return value


def log_files(run_dir: str) -> List[str]:
    """``log.txt`` then its timestamped reruns ``log.txt-YYYY-MM-DD-HH-MM-SS``, oldest first."""
    first = os.path.join(run_dir, LOG_FILE)
    reruns = sorted(glob.glob(os.path.join(glob.escape(run_dir), LOG_FILE + "-*")))
    return ([first] if os.path.isfile(first) else []) + reruns


def newest_log_result(run_dir: str) -> Tuple[Optional[float], str]:
    """(accuracy, file name) from the newest log that holds a finished result, else (None, "")."""
    for path in reversed(log_files(run_dir)):
        with open(path, encoding="utf-8", errors="replace") as handle:
            value = parse_log_accuracy(handle.read())
        if value is not None:
            return value, os.path.basename(path)
    return None, ""


def read_failure(path: str) -> str:
    """The reason in a sweep's ``failed.txt``: its ``error:`` line, else its last non-empty line."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = [line.rstrip() for line in handle]
    for line in lines:
        match = FAILED_REASON.match(line)
        if match:
            return match.group(1)
    nonempty = [line for line in lines if line.strip()]
    return nonempty[-1] if nonempty else "unknown error (empty failed.txt)"


def _as_float(value) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _epoch_value(epochs: Sequence[dict], epoch: Optional[int], key: str) -> Optional[float]:
    """``key`` of the entry for ``epoch`` (None: the last entry that has ``key``)."""
    entries = [entry for entry in epochs if isinstance(entry, dict) and _as_float(entry.get(key)) is not None]
    if epoch is not None:
        entries = [entry for entry in entries if entry.get("epoch") == epoch]
    return float(entries[-1][key]) if entries else None


def read_results_json(path: str) -> Tuple[Dict[str, Optional[float]], Dict[str, Optional[float]]]:
    """(accuracy, pl_accuracy) per stat from a ``results.json``; raises ValueError naming the file when unusable."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); delete it to fall back to log.txt") from error
    if not isinstance(data, dict) or _as_float(data.get("accuracy_last")) is None:
        raise ValueError(f"{path}: no numeric 'accuracy_last'; delete it to fall back to log.txt")
    epochs = data.get("epochs") or []
    best_epoch = data.get("best_epoch")
    accuracy = {"last": _as_float(data.get("accuracy_last")), "best": _as_float(data.get("accuracy_best"))}
    pl_accuracy = {
        "last": _epoch_value(epochs, None, "pl_accuracy"),
        "best": _epoch_value(epochs, best_epoch, "pl_accuracy") if best_epoch is not None else None,
    }
    return accuracy, pl_accuracy


def read_run(run_dir: str) -> Run:
    """Parse one ``<backbone>/<dataset>/<Method>/seed<S>`` folder (names come from the path)."""
    run_dir = os.path.abspath(run_dir)
    parts = run_dir.split(os.sep)
    if len(parts) < 4 or not SEED_DIR.match(parts[-1]):
        raise ValueError(f"{run_dir}: expected a <backbone>/<dataset>/<Method>/seed<S> folder")
    run = Run(backbone=parts[-4], dataset=parts[-3], method=parts[-2], seed=int(SEED_DIR.match(parts[-1]).group(1)),
              path=run_dir)
    results_path = os.path.join(run_dir, RESULTS_FILE)
    if os.path.isfile(results_path):
        try:
            run.accuracy, run.pl_accuracy = read_results_json(results_path)
            run.status, run.source = "ok", RESULTS_FILE
            return run
        except ValueError as error:
            print(f"warning: {error}", file=sys.stderr)
    value, source = newest_log_result(run_dir)
    if value is not None:
        run.status, run.source = "ok", source
        run.accuracy = {"last": value, "best": None}  # a log holds the final test only: no per-epoch selection
        return run
    failed_path = os.path.join(run_dir, FAILED_FILE)
    if os.path.isfile(failed_path):
        run.status, run.source, run.error = "failed", FAILED_FILE, read_failure(failed_path)
    else:
        run.activity = lock_activity(run_dir)
    return run


def lock_activity(run_dir: str) -> str:
    """From ``<run>/.lock`` (clipkit/run_folder.py writes "pid N on HOST"): "running (pid N)" when that process is
    alive on this host, "interrupted" when it is gone, "" when unknown (no lock file, another host). The lock itself
    is never taken: a parser must not make a sweep skip a job."""
    path = os.path.join(run_dir, ".lock")
    try:
        with open(path) as handle:
            match = re.match(r"pid (\d+) on (\S+)", handle.read())
    except OSError:
        return ""
    if not match or match.group(2) != os.uname().nodename:
        return ""
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return "interrupted"
    except PermissionError:
        pass  # alive, another user's
    return f"running (pid {match.group(1)})"


def find_runs(root: str) -> List[Run]:
    """Every ``seed<S>`` folder under ``root`` (hidden folders skipped; nothing below a seed folder is searched)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"output root {root!r} is not a folder; pass the --output-root of run_all.sh")
    runs = []
    for current, dirs, _ in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if SEED_DIR.match(os.path.basename(current)):
            dirs[:] = []
            runs.append(read_run(current))
    return runs


# ----------------------------------------------------------------------------------------------------------------------
# Aggregating
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """Seeds of one (method, dataset): ``values`` maps seed -> percentage for the seeds with a number."""

    values: Dict[int, float]
    expected: int  # number of seeds a complete cell has
    failed: bool = False

    @property
    def complete(self) -> bool:
        return len(self.values) >= self.expected > 0

    @property
    def mean(self) -> Optional[float]:
        return sum(self.values.values()) / len(self.values) if self.values else None

    def spread(self, ci95: bool = False) -> Optional[float]:
        """Population std over seeds (as CoOp's parse_test_res), or the 95% interval half-width 1.96 std / sqrt(n)."""
        n = len(self.values)
        if n < 2:
            return None
        mean = self.mean
        std = math.sqrt(sum((v - mean) ** 2 for v in self.values.values()) / n)
        return 1.96 * std / math.sqrt(n) if ci95 else std


@dataclass
class Table:
    """One backbone's method x dataset table; ``avg`` holds per-seed means over datasets (complete rows only)."""

    backbone: str
    methods: List[str]
    datasets: List[str]
    seeds: List[int]
    cells: Dict[Tuple[str, str], Cell]
    avg: Dict[str, Optional[Cell]]
    notes: List[str]


def row_average(cells: Sequence[Cell], seeds: Sequence[int]) -> Optional[Cell]:
    """Per-seed mean over datasets, only when every cell is complete (never silently averaging holes)."""
    if not cells or not all(cell.complete for cell in cells):
        return None
    per_seed = {seed: sum(cell.values[seed] for cell in cells) / len(cells) for seed in seeds
                if all(seed in cell.values for cell in cells)}
    return Cell(values=per_seed, expected=len(seeds)) if len(per_seed) == len(seeds) else None


def resolve_names(requested: Sequence[str], present, canonical) -> List[str]:
    """Map each requested name to the folder name present (exact, else same canonical name: "microCLIP" ->
    "MicroCLIP", "Flowers" -> "oxford_flowers"); names with no run are kept (their cells show as missing)."""
    by_canonical = {canonical(name): name for name in present}
    return [name if name in present else by_canonical.get(canonical(name), name) for name in requested]


def build_table(runs: Sequence[Run], backbone: str, metric: str, stat: str, methods: Optional[Sequence[str]] = None,
                datasets: Optional[Sequence[str]] = None, seeds: Optional[Sequence[int]] = None) -> Table:
    """Aggregate the runs of ``backbone`` for ``metric`` ("accuracy" | "pl_accuracy") at ``stat`` ("last" | "best")."""
    runs = [run for run in runs if run.backbone == backbone]
    seeds = sorted(set(seeds) if seeds else {run.seed for run in runs})
    runs = [run for run in runs if run.seed in seeds]
    present_methods, present_datasets = {run.method for run in runs}, {run.dataset for run in runs}
    method_order = (resolve_names(methods, present_methods, names.canonical_method) if methods
                    else names.sort_methods(present_methods))
    dataset_order = (resolve_names(datasets, present_datasets, names.canonical_dataset) if datasets
                     else names.sort_datasets(present_datasets))
    notes: List[str] = []
    cells: Dict[Tuple[str, str], Cell] = {}
    for method in method_order:
        for dataset in dataset_order:
            cell = Cell(values={}, expected=len(seeds))
            for run in runs:
                if (run.method, run.dataset) != (method, dataset):
                    continue
                value = getattr(run, metric).get(stat) if run.status == "ok" else None
                if value is not None:
                    cell.values[run.seed] = value
                elif run.status == "failed":
                    cell.failed = True
                    notes.append(f"failed: {run.path}: {run.error}")
                elif run.status == "missing":
                    notes.append(f"no result yet ({run.activity or 'running or interrupted'}): {run.path}")
                elif metric == "accuracy":
                    notes.append(f"no '{stat}' value in {os.path.join(run.path, run.source)} "
                                 f"(logs hold the final test only; use --stat last)")
            cells[(method, dataset)] = cell
    if metric == "pl_accuracy":  # only methods that logged pseudo-label accuracy somewhere
        method_order = [m for m in method_order if any(cells[(m, d)].values for d in dataset_order)]
    avg = {m: row_average([cells[(m, d)] for d in dataset_order], seeds) for m in method_order}
    return Table(backbone, method_order, dataset_order, seeds, cells, avg, notes)


# ----------------------------------------------------------------------------------------------------------------------
# Paper numbers
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class PaperTable:
    """Reported numbers: ``rows`` maps canonical method -> {canonical dataset -> %}; ``file`` is the CSV read."""

    file: str
    rows: Dict[str, Dict[str, float]]
    labels: Dict[str, str]  # canonical method -> the paper's row label
    printed_avg: Dict[str, float]


def paper_table_path(backbone: str, folder: str = PAPER_RESULTS_DIR) -> str:
    """The data file ``*_<backbone>.csv`` of the paper's numbers for a backbone; raises naming what exists."""
    matches = sorted(glob.glob(os.path.join(glob.escape(folder), f"*_{backbone}.csv")))
    if not matches:
        have = sorted(os.path.basename(p) for p in glob.glob(os.path.join(glob.escape(folder), "*.csv")))
        raise FileNotFoundError(f"no paper table for backbone {backbone!r} in {folder} (have: {', '.join(have) or 'none'});"
                                f" add one named <table>_{backbone}.csv to compare")
    return matches[0]


def load_paper_table(path: str) -> PaperTable:
    """Read a paper CSV (columns: method, venue, <dataset keys...>, avg, note)."""
    rows, labels, printed = {}, {}, {}
    with open(path, encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            label = record.get("method", "").strip()
            if not label:
                raise ValueError(f"{path}: a row has an empty 'method' column")
            key = names.canonical_method(label)
            values = {}
            for column, text in record.items():
                if column in ("method", "venue", "avg", "note") or column is None or not (text or "").strip():
                    continue
                try:
                    values[names.canonical_dataset(column)] = float(text)
                except ValueError as error:
                    raise ValueError(f"{path}: row {label!r}, column {column!r}: {text!r} is not a number") from error
            rows[key], labels[key] = values, label
            if (record.get("avg") or "").strip():
                printed[key] = float(record["avg"])
    return PaperTable(path, rows, labels, printed)


def printed_average_notes(paper: PaperTable, methods: Optional[Sequence[str]] = None) -> List[str]:
    """One note per paper row (of ``methods``, default all) whose printed average disagrees with its cells' mean."""
    notes = []
    shown = None if methods is None else {names.canonical_method(m) for m in methods}
    for key, printed in paper.printed_avg.items():
        if shown is not None and key not in shown:
            continue
        cells = list(paper.rows[key].values())
        if cells and abs(sum(cells) / len(cells) - printed) > PRINTED_AVG_TOLERANCE:
            notes.append(f"paper: {paper.labels[key]}'s printed Avg {printed:.2f} disagrees with its cells "
                         f"(mean {sum(cells) / len(cells):.2f}); the paper Avg shown is recomputed from the cells")
    return notes


# ----------------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """A rendered row: label, numbers per column (None = no number), text shown when there is no number."""

    label: str
    means: List[Optional[float]]
    spreads: List[Optional[float]]
    empty_text: List[str]
    suffixes: List[str]
    ranked: bool  # takes part in the best / second-best marking
    signed: bool = False  # differences: print with a sign


def _cell_row(label: str, cells: Sequence[Optional[Cell]], ci95: bool) -> Row:
    means, spreads, empty, suffixes = [], [], [], []
    for cell in cells:
        mean = cell.mean if cell is not None else None
        means.append(mean)
        spreads.append(cell.spread(ci95) if cell is not None else None)
        empty.append(FAILED if cell is not None and cell.failed and mean is None else MISSING)
        partial = cell is not None and mean is not None and not cell.complete
        suffixes.append(f" ({len(cell.values)}/{cell.expected})" if partial else "")
    return Row(label, means, spreads, empty, suffixes, ranked=True)


def table_rows(table: Table, ci95: bool, display: Dict[str, str], paper: Optional[PaperTable]) -> List[Row]:
    """Rows of one table: each method (+ the paper's numbers and our difference with ``paper``)."""
    rows = []
    for method in table.methods:
        cells = [table.cells[(method, d)] for d in table.datasets] + [table.avg[method]]
        row = _cell_row(names.method_display_name(method, display), cells, ci95)
        rows.append(row)
        key = names.canonical_method(method)
        if paper is None or key not in paper.rows:
            continue
        reported = [paper.rows[key].get(names.canonical_dataset(d)) for d in table.datasets]
        reported.append(sum(reported) / len(reported) if reported and None not in reported else None)
        n = len(reported)
        rows.append(Row(f"{row.label} (paper)", reported, [None] * n, [MISSING] * n, [""] * n, ranked=False))
        diff = [ours - theirs if ours is not None and theirs is not None and not suffix else None
                for ours, theirs, suffix in zip(row.means, reported, row.suffixes)]
        rows.append(Row(f"{row.label} (ours - paper)", diff, [None] * n, [MISSING] * n, [""] * n, ranked=False,
                        signed=True))
    return rows


def rank_marks(rows: Sequence[Row], decimals: int) -> List[List[str]]:
    """Per row and column: "best", "second" or "" among complete ranked cells (ties share a mark)."""
    marks = [[""] * len(row.means) for row in rows]
    for column in range(len(rows[0].means) if rows else 0):
        candidates = [(round(row.means[column], decimals), i) for i, row in enumerate(rows)
                      if row.ranked and row.means[column] is not None and not row.suffixes[column]]
        distinct = sorted({value for value, _ in candidates}, reverse=True)
        for value, i in candidates:
            if value == distinct[0]:
                marks[i][column] = "best"
            elif len(distinct) > 1 and value == distinct[1]:
                marks[i][column] = "second"
    return marks


def _number(value: float, decimals: int, signed: bool) -> str:
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def format_text_cell(row: Row, column: int, mark: str, decimals: int, pm: str, bold: bool) -> str:
    """Plain / Markdown cell text: "61.23 +- 0.45", "--", "fail", partial cells with "(2/3)"."""
    mean = row.means[column]
    if mean is None:
        return row.empty_text[column]
    text = _number(mean, decimals, row.signed)
    if bold and mark == "best":
        text = f"**{text}**"
    if row.spreads[column] is not None:
        text += f" {pm} {row.spreads[column]:.{decimals}f}"
    return text + row.suffixes[column]


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                  "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in a name."""
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in text)


def format_latex_cell(row: Row, column: int, mark: str, decimals: int) -> str:
    """``\\textbf{61.23}{\\scriptsize$\\pm$0.45}``; best bold, second underlined, holes as ``--`` / ``fail``."""
    mean = row.means[column]
    if mean is None:
        return {MISSING: "--", FAILED: r"\textit{fail}"}[row.empty_text[column]]
    text = _number(mean, decimals, row.signed)
    text = {"best": rf"\textbf{{{text}}}", "second": rf"\underline{{{text}}}"}.get(mark, text)
    if row.spreads[column] is not None:
        text += rf"{{\scriptsize$\pm${row.spreads[column]:.{decimals}f}}}"
    if row.suffixes[column]:
        text += rf"\textsuperscript{{{row.suffixes[column].strip()}}}"
    return text


def describe(table: Table, metric: str, stat: str, ci95: bool) -> str:
    """One sentence saying what the numbers are (the LaTeX caption; a header line elsewhere)."""
    what = "Top-1 accuracy (%)" if metric == "accuracy" else "Pseudo-label accuracy (%) on the training set"
    when = ("last epoch" if stat == "last" else
            "best epoch, selected on the test set (optimistic, as the official DPA/LaFTer/ReCLIP code; "
            "methods without per-epoch evaluation report their last epoch)")
    spread = "95% confidence interval" if ci95 else "std"
    seeds = f"mean ± {spread} over {len(table.seeds)} seeds" if len(table.seeds) > 1 else f"seed {table.seeds[0]}"
    return (f"{what}, {names.backbone_display_name(table.backbone)}, {when}, {seeds}. "
            f"Avg over datasets only for complete rows; -- = missing, fail = failed run, (k/n) = k of n seeds.")


def render_markdown(table: Table, rows: Sequence[Row], caption: str, decimals: int) -> str:
    from tabulate import tabulate

    marks = rank_marks(rows, decimals)
    header = ["Method"] + [names.dataset_display_name(d) for d in table.datasets] + ["Avg"]
    body = [[row.label] + [format_text_cell(row, c, marks[r][c], decimals, "±", bold=True)
                           for c in range(len(row.means))] for r, row in enumerate(rows)]
    return f"{caption}\n\n" + tabulate(body, headers=header, tablefmt="github", disable_numparse=True)


def render_latex(table: Table, rows: Sequence[Row], caption: str, decimals: int) -> str:
    marks = rank_marks(rows, decimals)
    columns = [names.dataset_display_name(d) for d in table.datasets] + ["Avg"]
    lines = [
        r"% requires \usepackage{booktabs,graphicx}",
        r"\begin{table*}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)} Best in \textbf{{bold}}, second \underline{{underlined}}.}}",
        rf"\label{{tab:{re.sub(r'[^0-9A-Za-z]+', '-', table.backbone)}}}",
        r"\resizebox{\linewidth}{!}{%",
        r"\begin{tabular}{l" + "c" * len(columns) + "}",
        r"\toprule",
        " & ".join(["Method"] + [latex_escape(c) for c in columns]) + r" \\",
        r"\midrule",
    ]
    for r, row in enumerate(rows):
        cells = [format_latex_cell(row, c, marks[r][c], decimals) for c in range(len(row.means))]
        lines.append(" & ".join([latex_escape(row.label)] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table*}"]
    return "\n".join(lines)


def render_csv(table: Table, rows: Sequence[Row], decimals: int) -> str:
    """Wide CSV: one row per table row; per dataset and for Avg a mean column, a ``<key>_std`` column and a
    ``<key>_seeds`` column holding ``k/n`` when only k of n seeds are in (the "(k/n)" flag of the other formats)."""
    handle = io.StringIO()
    writer = csv.writer(handle, lineterminator="\n")
    keys = list(table.datasets) + ["avg"]
    writer.writerow(["backbone", "method"] + [f"{k}{suffix}" for k in keys for suffix in ("", "_std", "_seeds")])
    for row in rows:
        values = []
        for c in range(len(keys)):
            mean, spread = row.means[c], row.spreads[c]
            values.append(row.empty_text[c] if mean is None else _number(mean, decimals, row.signed))
            values.append("" if spread is None else f"{spread:.{decimals}f}")
            values.append(row.suffixes[c].strip().strip("()"))
        writer.writerow([table.backbone, row.label] + values)
    return handle.getvalue().rstrip("\n")


def render(table: Table, fmt: str, metric: str, stat: str, ci95: bool = False, decimals: int = 2,
           display: Optional[Dict[str, str]] = None, paper: Optional[PaperTable] = None) -> str:
    """Render a table as "markdown", "latex" or "csv"."""
    rows = table_rows(table, ci95, display or {}, paper)
    caption = describe(table, metric, stat, ci95)
    if fmt == "markdown":
        return render_markdown(table, rows, caption, decimals)
    if fmt == "latex":
        return render_latex(table, rows, caption, decimals)
    if fmt == "csv":
        return render_csv(table, rows, decimals)
    raise ValueError(f"unknown format {fmt!r}; use latex, markdown or csv")


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


def _split(text: Optional[str]) -> Optional[List[str]]:
    return [item.strip() for item in text.split(",") if item.strip()] if text else None


def parse_display_names(items: Optional[Sequence[str]]) -> Dict[str, str]:
    """``["MicroCLIP=microCLIP (ours)", ...]`` -> dict; raises naming the malformed item."""
    mapping = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"--display-name {item!r}: expected METHOD=DISPLAY NAME, e.g. MicroCLIP='microCLIP (ours)'")
        mapping[key.strip()] = value.strip()
    return mapping


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_root", help="sweep output folder (e.g. output/ or output/vit_b32)")
    parser.add_argument("--format", choices=("markdown", "latex", "csv"), default="markdown")
    parser.add_argument("--stat", choices=STATS, default="last",
                        help="last epoch (default) or best epoch (selected on the test set: optimistic)")
    parser.add_argument("--table", choices=("accuracy", "pseudo-labels"), default="accuracy",
                        help="test accuracy, or the training-set pseudo-label accuracy logged by the trainers")
    parser.add_argument("--backbone", help="only this backbone (default: every backbone found, one table each)")
    parser.add_argument("--methods", help="comma-separated method registry names: filter and row order")
    parser.add_argument("--datasets", help="comma-separated dataset keys: filter and column order")
    parser.add_argument("--seeds", help="comma-separated seeds a complete cell needs (default: every seed found)")
    parser.add_argument("--display-name", action="append", metavar="METHOD=NAME",
                        help="override a method's display name (repeatable)")
    parser.add_argument("--vs-paper", action="store_true",
                        help="add the paper's reported numbers (benchmarks/paper_results) and our difference")
    parser.add_argument("--ci95", action="store_true", help="report the 95%% confidence interval instead of the std")
    parser.add_argument("--decimals", type=int, default=2)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        display = parse_display_names(args.display_name)
        seeds = [int(s) for s in _split(args.seeds)] if args.seeds else None
        runs = find_runs(args.output_root)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.backbone:
        runs = [run for run in runs if run.backbone == args.backbone]
    if not runs:
        print(f"error: no <backbone>/<dataset>/<Method>/seed<S> folders under {args.output_root!r}"
              + (f" for backbone {args.backbone!r}" if args.backbone else ""), file=sys.stderr)
        return 1
    metric = "accuracy" if args.table == "accuracy" else "pl_accuracy"
    outputs, notes = [], []
    for backbone in sorted({run.backbone for run in runs}):
        table = build_table(runs, backbone, metric, args.stat, _split(args.methods), _split(args.datasets), seeds)
        notes += table.notes
        if not table.methods:
            notes.append(f"{backbone}: no run logged pl_accuracy (results.json 'epochs' entries)")
            continue
        paper = None
        if args.vs_paper:
            try:
                paper = load_paper_table(paper_table_path(backbone))
            except FileNotFoundError as error:  # e.g. tiny: the table is still useful without the paper rows
                notes.append(str(error))
            except ValueError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            if paper is not None:
                notes += printed_average_notes(paper, table.methods)
        outputs.append(render(table, args.format, metric, args.stat, args.ci95, args.decimals, display, paper))
    if outputs:
        print("\n\n".join(outputs))
    comment = {"latex": "% ", "markdown": "", "csv": ""}[args.format]
    stream = sys.stderr if args.format == "csv" or not outputs else sys.stdout
    for note in dict.fromkeys(notes):
        print(f"{comment}note: {note}", file=stream)
    return 0 if outputs else 1


if __name__ == "__main__":
    sys.exit(main())
