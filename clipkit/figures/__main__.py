"""``python -m clipkit.figures {attention,curves,ablation,deltas} ...`` (see clipkit/figures/__init__.py)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from clipkit.figures import FigureInputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clipkit.figures", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    attention = commands.add_parser("attention", help="[CLS] / [FG] attention and NCut mask of a microCLIP run")
    attention.add_argument("--run", required=True, help="run folder (<root>/<backbone>/<dataset>/MicroCLIP/seed<S>)")
    attention.add_argument("--images", type=int, default=4, help="number of test images (rows)")
    attention.add_argument("--data-root", default="", help="DATASET.ROOT of the run (default for tiny: the cache)")
    attention.add_argument("--config-file", help="trainer YAML (default: from the run folder's layout)")
    attention.add_argument("--dataset-config-file", help="dataset YAML (default: from the run folder's layout)")
    attention.add_argument("--seed", type=int, help="seed (default: from the run folder's name)")
    attention.add_argument("--out", help="output folder (default: <run>/figures)")
    attention.add_argument("opts", nargs=argparse.REMAINDER, help="yacs opts the run was made with")

    curves = commands.add_parser("curves", help="per-epoch pseudo-label and test accuracy (Fig. 3)")
    curves.add_argument("--root", required=True, help="output root of a sweep (or any folder of runs)")
    curves.add_argument("--out", help="output folder (default: <root>/figures)")

    ablation = commands.add_parser("ablation", help="accuracy against gamma or the number of crops (Figs. 5, 6)")
    ablation.add_argument("--root", required=True, help="folder holding <dataset>/fig5_gamma_<v>/seed<S> runs")
    ablation.add_argument("--sweep", required=True, choices=("gamma", "crops"))
    ablation.add_argument("--out", help="output folder (default: <root>/figures)")

    deltas = commands.add_parser("deltas", help="per-dataset gain over zero-shot CLIP (Table 1 as bars)")
    deltas.add_argument("--root", required=True, help="output root of a sweep")
    deltas.add_argument("--backbone", help="backbone folder (needed when the root holds several)")
    deltas.add_argument("--paper", action="store_true", help="mark the paper's gains (benchmarks/paper_results)")
    deltas.add_argument("--out", help="output folder (default: <root>/figures)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "attention":
            from clipkit.figures.attention import attention_figure

            data_root = args.data_root
            if not data_root:
                from clipkit.tinybench import default_data_root

                data_root = default_data_root()
            opts = [o for o in (args.opts or []) if o != "--"]
            attention_figure(args.run, data_root, args.out or os.path.join(args.run, "figures"), args.images,
                             args.config_file, args.dataset_config_file, args.seed, opts)
        else:
            from clipkit.figures import curves as figures

            out = args.out or os.path.join(args.root, "figures")
            if args.command == "curves":
                figures.curves(args.root, out)
            elif args.command == "ablation":
                figures.ablation(args.root, args.sweep, out)
            else:
                figures.deltas(args.root, out, args.backbone, args.paper)
    except FigureInputError as error:
        print(f"clipkit.figures {args.command}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
