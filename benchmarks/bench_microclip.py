"""Training throughput of one microCLIP step on a random-weight CLIP ViT (no download, no dataset).

Builds ``clip.model.CLIP`` with the ViT-B/32 (or B/16, or tiny) architecture at random init, random uint8 weak /
strong views and N crops per image already on the device, and runs the trainer's own step
(``trainers.microclip.training_step_loss`` + AdamW on the trainable set). Prints:

* training throughput (images/s; one image = 1 weak + 1 strong + N crops, i.e. 2 + N encoder inputs);
* the share of step time spent in NCut (a second, instrumented pass synchronises around every NCut call);
* peak memory (CUDA max allocated on a GPU, max RSS on the CPU).

    python benchmarks/bench_microclip.py --backbone vit_b32 --batch-size 64 --steps 20 --device cuda --amp bf16
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

# clip.model.CLIP constructor arguments of the benchmarked architectures (OpenAI's published ViT configurations).
ARCHITECTURES = {
    "vit_b32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
                    context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                    transformer_layers=12),
    "vit_b16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
                    context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                    transformer_layers=12),
}


def build_visual(backbone: str):
    """Random-init vision tower of the requested architecture (text tower built and dropped: CLIP's own init)."""
    if backbone == "tiny":
        from clipkit.clip import build_tiny_clip

        model = build_tiny_clip(seed=0)
    else:
        from clip.model import CLIP

        torch.manual_seed(0)
        model = CLIP(**ARCHITECTURES[backbone]).float()
    return model.visual


def microclip_node(num_crops: int, precision: str):
    from clipkit.dassl import get_cfg_default
    from trainers.microclip import _add_microclip_cfg

    cfg = get_cfg_default()
    _add_microclip_cfg(cfg)
    cfg.TRAINER.MICROCLIP.N_CROPS = num_crops
    cfg.TRAINER.MICROCLIP.PREC = precision
    return cfg


def step_benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """The options every training-step benchmark shares (backbone, batch, steps, device, precision, threads)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--backbone", choices=("vit_b32", "vit_b16", "tiny"), default="vit_b32")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after the warm-up steps)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocator, kernels)")
    parser.add_argument("--classes", type=int, default=100, help="number of classes of the random classifiers")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast precision")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    return parser


def time_steps(step, warmup: int, steps: int, device: torch.device) -> float:
    """Seconds per call of ``step()`` over ``steps`` calls after ``warmup`` untimed ones (peak memory reset between)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None):
    parser = step_benchmark_parser(__doc__)
    parser.add_argument("--crops", type=int, default=8, help="N crops per image (Eq. 9)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import trainers.microclip as mc
    from clipkit.blocks.schedule import optimizer_update

    device = torch.device(args.device)
    cfg = microclip_node(args.crops, args.amp)
    node = cfg.TRAINER.MICROCLIP
    visual = build_visual(args.backbone)
    side = visual.input_resolution
    generator = torch.Generator().manual_seed(0)
    classifier = torch.randn(args.classes, visual.output_dim, generator=generator)
    classifier = torch.nn.functional.normalize(classifier, dim=-1)
    model = mc.MicroCLIPNet(visual, classifier, classifier, node, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)
    model.to(device).train()
    params = mc.trainable_parameters(model, train_soap=True)
    optimizer = torch.optim.AdamW(list(params.values()), lr=1e-4, weight_decay=0.1)
    scaler = torch.amp.GradScaler(device.type) if args.amp == "fp16" else None
    plan = mc.ComputePlan.from_cfg(node)

    def random_uint8(*shape):
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator).to(device)

    weak, strong = random_uint8(args.batch_size, 3, side, side), random_uint8(args.batch_size, 3, side, side)
    crops = random_uint8(args.batch_size, args.crops, 3, side, side)
    marginal = None

    def step():
        nonlocal marginal
        with mc.autocast_context(device, args.amp):
            out = mc.training_step_loss(model, node, plan, weak, strong, crops, marginal)
        marginal = out.marginal
        optimizer_update(out.loss, optimizer, scaler)

    step_time = time_steps(step, args.warmup, args.steps, device)

    # instrumented pass: time every NCut call between device synchronisations
    ncut_seconds = [0.0]
    original_ncut = mc.ncut_mask

    def timed_ncut(*a, **kw):
        synchronize(device)
        t0 = time.perf_counter()
        result = original_ncut(*a, **kw)
        synchronize(device)
        ncut_seconds[0] += time.perf_counter() - t0
        return result

    mc.ncut_mask = timed_ncut
    start = time.perf_counter()
    try:
        for _ in range(args.steps):
            step()
        synchronize(device)
    finally:
        mc.ncut_mask = original_ncut
    instrumented_step = (time.perf_counter() - start) / args.steps
    ncut_share = ncut_seconds[0] / args.steps / instrumented_step

    from clipkit.trainer_base import peak_memory_mb

    trainable = sum(p.numel() for p in params.values())
    tokens = (side // visual.conv1.kernel_size[0]) ** 2
    print(f"backbone {args.backbone} (random init), device {device}, autocast {args.amp}, batch {args.batch_size}, "
          f"N crops {args.crops}, {tokens} patch tokens, {trainable:,} trainable parameters, "
          f"torch threads {torch.get_num_threads()}")
    print(f"step time            {step_time * 1000:.1f} ms ({args.steps} steps after {args.warmup} warm-up)")
    print(f"training throughput  {args.batch_size / step_time:.1f} images/s "
          f"({args.batch_size * (2 + args.crops) / step_time:.1f} encoder inputs/s)")
    print(f"NCut share           {100 * ncut_share:.1f}% of step time "
          f"({1000 * ncut_seconds[0] / args.steps:.1f} ms/step, 2 calls of batch {args.batch_size})")
    print(f"peak memory          {peak_memory_mb(device):.0f} MiB "
          f"({'CUDA max allocated' if device.type == 'cuda' else 'process max RSS'})")


if __name__ == "__main__":
    main()
