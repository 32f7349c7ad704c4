"""Training throughput of any registered trainer's step, on a random-weight CLIP (no download, no dataset).

Builds the real trainer from its shipped config (``configs/trainers/<Method>/<backbone>.yaml``) on a generated image
folder, with a random-init CLIP of the backbone's architecture saved to a temporary file, takes one batch of its own
train loader and times ``forward_backward`` on it (so the loader is excluded; see the loader's own cost elsewhere).
Prints images/s (the "training throughput" that ``run_all.sh --plan --throughput`` reads), the share of the step spent
in the backward pass, in the optimiser step and in the rest (the forward passes, pseudo-labelling included; a second,
instrumented pass synchronises around every backward and optimiser call), the time of the method's per-epoch work (``before_epoch``: e.g. ReCLIP's label propagation over this
small folder) and the peak memory. ``--json FILE`` adds ``{"<Method>": {"<backbone>": images_per_second}}`` to FILE.

    python benchmarks/bench_train_step.py --trainer DPA --backbone vit_b32 --batch-size 64 --device cuda --json gpu.json
    python benchmarks/bench_train_step.py --trainer all --backbone tiny --batch-size 32 --steps 2 --device cpu
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from benchmarks.bench_microclip import ARCHITECTURES, step_benchmark_parser, synchronize  # noqa: E402

IMAGE_SIDES = {"vit_b32": 256, "vit_b16": 256, "tiny": 72}  # generated images: a bit larger than the input size
# opts that let each method's shipped config run on a small generated folder (not changing its step's numerics)
SMALL_DATA_OPTS = {
    "ReCLIP": ["TRAINER.RECLIP.LP.K", "5"],
    "UPL": ["TRAINER.UPL.TEMPLATE", "a photo of a {}."],
    "NtUA": ["TRAINER.NTUA.TEACHER", "", "TRAINER.NTUA.AUGMENT_EPOCHS", "1"],
    "LaFTer": ["TRAINER.LAFTER.TEXT_STEPS", "5"],
}


def save_random_clip(backbone: str, path: str) -> str:
    from clipkit.clip import build_tiny_clip, save_tiny_clip

    if backbone == "tiny":
        return save_tiny_clip(build_tiny_clip(seed=0), path)
    from clip.model import CLIP

    torch.manual_seed(0)
    return save_tiny_clip(CLIP(**ARCHITECTURES[backbone]).float(), path)


def write_image_folder(root: str, classes: int, per_class: int, side: int) -> None:
    """TestImageFolder layout (``images/<class>/<i>.jpg``) with random JPEGs, and CuPL-format descriptions."""
    from PIL import Image

    rng = np.random.default_rng(0)
    names = [f"class{c}" for c in range(classes)]
    for name in names:
        os.makedirs(os.path.join(root, "images", name), exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, "images", name, f"{i}.jpg"))
    with open(os.path.join(root, "descriptions.json"), "w") as handle:
        json.dump({name: [f"a photo of a {name}.", f"a {name}, a kind of thing."] for name in names}, handle)


def build_trainer(method: str, backbone: str, clip_path: str, root: str, batch_size: int, device: str, out: str):
    import tests.plugins.image_folder_dataset  # noqa: F401  (registers TestImageFolder)
    import train
    from clipkit.dassl import build_trainer as dassl_build_trainer

    config = os.path.join(REPO_ROOT, "configs", "trainers", method, f"{backbone}.yaml")
    argv = ["--root", root, "--trainer", method, "--seed", "1", "--config-file", config, "--output-dir", out,
            "DATASET.NAME", "TestImageFolder", "MODEL.BACKBONE.NAME", clip_path, "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", str(batch_size), "USE_CUDA", str(device.startswith("cuda")),
            "TEST.FEATURE_CACHE", "False", *SMALL_DATA_OPTS.get(method, [])]
    return dassl_build_trainer(train.setup_cfg(train.build_parser().parse_args(argv)))


def phase_shares(trainer, batch, device: torch.device, steps: int) -> dict:
    """Shares of ``steps`` instrumented steps spent in ``Tensor.backward``, in the optimisers' ``step`` and in the rest
    (forward passes, pseudo-labelling, bookkeeping), with a device synchronisation around every timed call."""
    spent = {"backward": 0.0, "optimiser": 0.0}

    def timed(kind, function):
        def wrapper(*args, **kwargs):
            synchronize(device)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                synchronize(device)
                spent[kind] += time.perf_counter() - start
        return wrapper

    optimizers = [o for o in list(vars(trainer).values()) + list(getattr(trainer, "_optims", {}).values())
                  if isinstance(o, torch.optim.Optimizer)]
    original_backward = torch.Tensor.backward
    originals = [(o, o.step) for o in dict.fromkeys(optimizers)]
    torch.Tensor.backward = timed("backward", original_backward)
    for optimizer, step in originals:
        optimizer.step = timed("optimiser", step)
    try:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            trainer.forward_backward(batch)
        synchronize(device)
        total = time.perf_counter() - start
    finally:
        torch.Tensor.backward = original_backward
        for optimizer, step in originals:
            optimizer.step = step
    backward, optimiser = spent["backward"] / total, spent["optimiser"] / total
    return {"backward": backward, "optimiser": optimiser, "rest": max(0.0, 1.0 - backward - optimiser)}


def bench(method: str, args, clip_path: str, root: str) -> dict:
    from clipkit.trainer_base import peak_memory_mb

    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(method, args.backbone, clip_path, root, args.batch_size, args.device, out)
        if trainer.training_free:
            return {"method": method, "training_free": True}
        loader = trainer.train_loader_x
        trainer.num_batches = len(loader)
        trainer.batch_idx, trainer.epoch = 0, 0
        trainer.set_model_mode("train")
        start = time.perf_counter()
        trainer.before_epoch()  # per-epoch method work (e.g. ReCLIP's label propagation), timed apart from the step
        epoch_setup = time.perf_counter() - start
        batch = next(iter(loader))
        images = len(batch["index"]) if "index" in batch else args.batch_size
        for _ in range(args.warmup):
            trainer.forward_backward(batch)
        synchronize(torch.device(args.device))
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.forward_backward(batch)
        synchronize(torch.device(args.device))
        step = (time.perf_counter() - start) / args.steps
        shares = phase_shares(trainer, batch, torch.device(args.device), args.steps)
        return {"method": method, "training_free": False, "step_s": step, "images_per_s": images / step,
                "epoch_setup_s": epoch_setup,
                "batch": images, "shares": shares, "peak_mb": peak_memory_mb(torch.device(args.device))}


def main(argv=None):
    parser = step_benchmark_parser(__doc__)
    parser.add_argument("--trainer", required=True, help="a registered trainer name, or 'all'")
    parser.add_argument("--json", help="add the measured images/s to this JSON file (run_all.sh --plan --throughput)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from clipkit.dassl import TRAINER_REGISTRY
    from clipkit.plugins import import_all_plugins

    import_all_plugins()
    methods = sorted(TRAINER_REGISTRY.registered_names()) if args.trainer == "all" else [args.trainer]
    with tempfile.TemporaryDirectory() as work:
        clip_path = save_random_clip(args.backbone, os.path.join(work, "clip.pt"))
        root = os.path.join(work, "data")
        per_class = max(6, args.batch_size // 2 + 2)  # TestImageFolder keeps 4 per class for training
        classes = max(3, -(-args.batch_size // 4))
        write_image_folder(root, classes, per_class, IMAGE_SIDES[args.backbone])
        rows = [bench(method, args, clip_path, root) for method in methods]
    print(f"backbone {args.backbone} (random init), device {args.device}, batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup}, torch threads {torch.get_num_threads()}")
    print("| method | step (ms) | images/s | backward | optimiser | forward + rest | epoch setup (s) | peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        if row["training_free"]:
            print(f"| {row['method']} | training-free | - | - | - | - | - | - |")
            continue
        shares = row["shares"]
        print(f"| {row['method']} | {1000 * row['step_s']:.1f} | {row['images_per_s']:.1f} | "
              f"{100 * shares['backward']:.0f}% | {100 * shares['optimiser']:.0f}% | {100 * shares['rest']:.0f}% | "
              f"{row['epoch_setup_s']:.2f} | {row['peak_mb']:.0f} |")
    if args.json:
        data = json.load(open(args.json)) if os.path.isfile(args.json) else {}
        for row in rows:
            if not row["training_free"]:
                data.setdefault(row["method"], {})[args.backbone] = round(row["images_per_s"], 2)
        with open(args.json, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        print(f"throughput written to {args.json}")


if __name__ == "__main__":
    main()
