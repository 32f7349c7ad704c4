"""Training throughput of one DPA step on a random-weight CLIP ViT (no download, no dataset), beside
``bench_microclip.py``.

Builds the vision tower of ``clip.model.CLIP`` (ViT-B/32, B/16 or tiny) at random init, random uint8 weak / strong views
already on the device, and runs the trainer's own step (``baselines.dpa.training_step_loss`` + AdamW on the
LayerNorms and text prototypes, then the memory-bank write). Prints the images/s (one image = 1 no-grad weak + 1 grad
strong encoder input), the time of one end-of-epoch image-prototype rebuild for a train split of ``--train-size``
images, and the peak memory (CUDA max allocated on a GPU, max RSS on the CPU).

    python benchmarks/bench_dpa.py --backbone vit_b32 --batch-size 64 --steps 20 --device cuda
"""

from __future__ import annotations

import os
import sys
import time

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from benchmarks.bench_microclip import build_visual, step_benchmark_parser, synchronize, time_steps  # noqa: E402


def dpa_node(precision: str):
    from baselines.dpa import _add_dpa_cfg
    from clipkit.dassl import get_cfg_default

    cfg = get_cfg_default()
    _add_dpa_cfg(cfg)
    cfg.TRAINER.DPA.PREC = precision
    return cfg


def main(argv=None):
    parser = step_benchmark_parser(__doc__)
    parser.add_argument("--train-size", type=int, default=50000, help="memory-bank rows (train images)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import baselines.dpa as dpa
    from clipkit.blocks.schedule import autocast_context, optimizer_update
    from clipkit.blocks.trainable import enable_layernorm_affines, trainable_named_parameters, weight_decay_groups
    from clipkit.trainer_base import peak_memory_mb

    device = torch.device(args.device)
    cfg = dpa_node(args.amp)
    node = cfg.TRAINER.DPA
    visual = build_visual(args.backbone)
    side = visual.input_resolution
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.nn.functional.normalize(torch.randn(args.classes, visual.output_dim, generator=generator), dim=-1)
    model = dpa.DPANet(visual, prototypes, args.train_size, node, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)
    model.to(device).train()
    model.requires_grad_(False)
    enable_layernorm_affines(model.visual)
    model.text_prototypes.requires_grad_(True)
    params = trainable_named_parameters(model)
    optimizer = torch.optim.AdamW(weight_decay_groups(params, 0.1), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type) if args.amp == "fp16" else None

    def random_uint8(*shape):
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator).to(device)

    weak, strong = random_uint8(args.batch_size, 3, side, side), random_uint8(args.batch_size, 3, side, side)
    indices = torch.arange(args.batch_size)

    def step():
        with autocast_context(device, args.amp):
            out = dpa.training_step_loss(model, node, weak, strong)
        model.memory.write(indices, out.pseudo.features, out.pseudo.labels)
        optimizer_update(out.loss, optimizer, scaler)

    step_time = time_steps(step, args.warmup, args.steps, device)

    model.memory.labels.random_(0, args.classes, generator=None)
    synchronize(device)
    start = time.perf_counter()
    model.rebuild_image_prototypes()
    synchronize(device)
    rebuild_time = time.perf_counter() - start

    trainable = sum(p.numel() for p in params.values())
    print(f"backbone {args.backbone} (random init), device {device}, autocast {args.amp}, batch {args.batch_size}, "
          f"{args.classes} classes, {trainable:,} trainable parameters, torch threads {torch.get_num_threads()}")
    print(f"step time            {step_time * 1000:.1f} ms ({args.steps} steps after {args.warmup} warm-up)")
    print(f"training throughput  {args.batch_size / step_time:.1f} images/s "
          f"({2 * args.batch_size / step_time:.1f} encoder inputs/s: weak without grad + strong with grad)")
    print(f"prototype rebuild    {rebuild_time * 1000:.1f} ms per epoch ({args.train_size} memory-bank rows)")
    print(f"peak memory          {peak_memory_mb(device):.0f} MiB "
          f"({'CUDA max allocated' if device.type == 'cuda' else 'process max RSS'})")


if __name__ == "__main__":
    main()
