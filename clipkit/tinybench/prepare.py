"""Prepare the tiny benchmark: generate the dataset and pretrain the tiny CLIP (both cached; --force redoes them).

    python -m clipkit.tinybench.prepare [--data-root DIR] [--force]
"""

from __future__ import annotations

import argparse
import time

import torch

from . import CHECKPOINT_NAME, default_data_root, ensure_pretrained, register_checkpoint
from .generate import DEFAULT_CONFIG, generate_dataset, load_metadata, load_split_images


def make_zero_shot_probe(dataset_folder: str):
    """A pretraining callback printing the zero-shot test accuracy of the model being trained."""
    from .evaluate import zero_shot_accuracy

    metadata = load_metadata(dataset_folder)
    images, labels = load_split_images(dataset_folder, "test")
    classnames = [c["name"] for c in metadata["classes"]]

    def probe(step, model):
        model.eval()
        accuracy = zero_shot_accuracy(model, images, labels, classnames, metadata["templates"])
        model.train()
        print(f"[tinybench]   step {step}: zero-shot test accuracy {accuracy:.2f}%", flush=True)

    return probe


def zero_shot_report(dataset_folder: str) -> float:
    """Zero-shot accuracy (%) of the cached benchmark CLIP on the test split, with the benchmark's templates."""
    from clipkit.clip import load_clip

    from .evaluate import zero_shot_accuracy

    register_checkpoint()
    metadata = load_metadata(dataset_folder)
    images, labels = load_split_images(dataset_folder, "test")
    classnames = [c["name"] for c in metadata["classes"]]
    return zero_shot_accuracy(load_clip(CHECKPOINT_NAME), images, labels, classnames, metadata["templates"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=default_data_root(),
                        help="folder that will hold tiny_finegrained/ (default: %(default)s); pass it as --root / DATASET.ROOT")
    parser.add_argument("--force", action="store_true", help="regenerate the dataset and retrain the CLIP even if cached")
    parser.add_argument("--skip-zero-shot", action="store_true", help="do not print the zero-shot test accuracy")
    parser.add_argument("--probe-every", type=int, default=0,
                        help="also print the zero-shot test accuracy every N pretraining steps (recipe tuning)")
    args = parser.parse_args(argv)
    started = time.time()
    folder = generate_dataset(args.data_root, DEFAULT_CONFIG, force=args.force)
    probe = make_zero_shot_probe(folder) if args.probe_every > 0 else None
    path = ensure_pretrained(force=args.force, callback=probe, log_every=args.probe_every or 100)
    print(f"[tinybench] checkpoint '{CHECKPOINT_NAME}': {path}")
    if not args.skip_zero_shot:
        with torch.no_grad():
            accuracy = zero_shot_report(folder)
        print(f"[tinybench] zero-shot accuracy of {CHECKPOINT_NAME} on the test split: {accuracy:.2f}% "
              f"(chance {100.0 / len(load_metadata(folder)['classes']):.1f}%)")
    print(f"[tinybench] ready in {time.time() - started:.0f}s; dataset root for configs: {args.data_root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
