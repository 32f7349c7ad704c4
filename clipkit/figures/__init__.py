"""Figures of the paper from the toolkit's runs: ``python -m clipkit.figures <command>`` (alias: scripts/figures.sh).

Commands (each figure is written as PNG and PDF):

* ``attention --run DIR``: test images of a finished microCLIP run with the last block's [CLS] attention, the SOAP
  [FG] attention and the NCut mask, before (zero-shot backbone) and after adaptation (Figs. 1 / 9);
* ``curves --root DIR``: per-epoch pseudo-label and test accuracy of every self-training run, mean and band over
  seeds, one panel per dataset (Fig. 3);
* ``ablation --root DIR --sweep gamma|crops``: accuracy against gamma or the number of crops (Figs. 5 / 6);
* ``deltas --root DIR``: per-dataset gain of each method over zero-shot CLIP (Table 1 as a grouped bar chart).
"""

from __future__ import annotations

import os
from typing import List


class FigureInputError(Exception):
    """Missing or unusable input; the message names what is missing and what to run first."""


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, out_dir: str, name: str, dpi: int = 150) -> List[str]:
    """Write ``<out_dir>/<name>.png`` and ``.pdf``; returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for extension in ("png", "pdf"):
        path = os.path.join(out_dir, f"{name}.{extension}")
        figure.savefig(path, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    pyplot().close(figure)
    for path in paths:
        print(f"wrote {path}")
    return paths


__all__ = ["FigureInputError", "pyplot", "save_figure"]
