"""Our microCLIP step against a step with the official code's costs, on a random-weight CLIP ViT (issue 23, point 5).

The official code (../shared/research/microclip_official.md, sections 1 and 13) computes in EVERY transformer block,
in every image forward (weak view, the N crops, strong view), an attention-bypassed "value path" next to the normal
path: ``in_proj`` once more (the normal attention computes its own), ``out_proj`` applied to q, k and v separately,
and a second MLP on ``v = x + out_proj(v)``; only the last block's value path is used (the patch tokens). It also
runs every step under ``torch.autograd.set_detect_anomaly(True)`` and calls ``backward(create_graph=True)``.

The "official-cost" step here is our step (``trainers.microclip.training_step_loss`` + AdamW on the same trainable
set, the same inputs) with the encoder replaced by one that does that per-block work (written from the description
above; its [CLS] features and patch tokens are checked to equal ours), under anomaly detection, with
``create_graph=True``. Not reproduced: the official NCut's per-image Python sign loop and its host-syncing ``.item()``
calls, ``cuda.synchronize`` / ``empty_cache`` per step (no-ops on the CPU). Both steps see the same random uint8 views.

    python benchmarks/bench_official_step.py --backbone vit_b32 --batch-size 4 --steps 2 --warmup 1 --device cpu --threads 1

(On a CPU shared with other processes use ``--threads 1``: oversubscribed OpenMP threads make both steps slow and
the ratio meaningless.)
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import warnings

import torch
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from benchmarks.bench_microclip import build_visual, microclip_node, step_benchmark_parser, time_steps  # noqa: E402


def official_block(block, x: torch.Tensor):
    """One ResidualAttentionBlock as the official code runs it: (normal output, value-path output), (L, B, W) each."""
    attn = block.attn
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = attn.out_proj(q), attn.out_proj(k), attn.out_proj(v)  # out_proj on all three (q, k: unused)
    v = x + v
    v = v + block.mlp(block.ln_2(v))
    x = x + block.attention(block.ln_1(x))
    return x + block.mlp(block.ln_2(x)), v


def official_encode_tapped(visual, images, return_patch_tokens: bool = False, return_cls_token: bool = False):
    """``encode_image_tapped`` with the official per-block value path (every block, every forward)."""
    from clipkit.blocks.patch_tap import VisualTap, embed_patches

    x = embed_patches(visual, images)
    for block in visual.transformer.resblocks:
        x, v = official_block(block, x)
    patch_tokens = visual.ln_post(v[1:].permute(1, 0, 2)) if return_patch_tokens else None
    cls_token = visual.ln_post(x[0])
    return VisualTap(F.normalize(cls_token @ visual.proj, dim=-1), patch_tokens,
                     cls_token if return_cls_token else None)


def official_encode_normalized(visual, images):
    return official_encode_tapped(visual, images).cls_feature


@contextlib.contextmanager
def official_costs(module):
    """Inside: ``module`` (trainers.microclip) encodes with the official per-block value path, under anomaly
    detection."""
    originals = module.encode_image_tapped, module.encode_image_normalized
    module.encode_image_tapped, module.encode_image_normalized = official_encode_tapped, official_encode_normalized
    try:
        with torch.autograd.set_detect_anomaly(True):
            yield
    finally:
        module.encode_image_tapped, module.encode_image_normalized = originals


def main(argv=None):
    parser = step_benchmark_parser(__doc__)
    parser.set_defaults(batch_size=4, steps=2, warmup=1, device="cpu")
    parser.add_argument("--crops", type=int, default=8, help="N crops per image (Eq. 9)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
    warnings.filterwarnings("ignore", message="Anomaly Detection has been enabled")

    import trainers.microclip as mc
    from clipkit.blocks.patch_tap import encode_image_tapped

    device = torch.device(args.device)
    cfg = microclip_node(args.crops, "fp32")
    node = cfg.TRAINER.MICROCLIP
    visual = build_visual(args.backbone)
    side = visual.input_resolution
    generator = torch.Generator().manual_seed(0)
    classifier = F.normalize(torch.randn(args.classes, visual.output_dim, generator=generator), dim=-1)
    plan = mc.ComputePlan.from_cfg(node)

    def random_uint8(*shape):
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator).to(device)

    weak, strong = random_uint8(args.batch_size, 3, side, side), random_uint8(args.batch_size, 3, side, side)
    crops = random_uint8(args.batch_size, args.crops, 3, side, side)

    # the official-cost encoder computes the same [CLS] features and patch tokens
    with torch.no_grad():
        pixels = mc.PixelNormalizer(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD).to(device)(weak)
        ours, theirs = encode_image_tapped(visual.to(device), pixels, True), official_encode_tapped(visual, pixels, True)
        difference = max((ours.cls_feature - theirs.cls_feature).abs().max().item(),
                         (ours.patch_tokens - theirs.patch_tokens).abs().max().item())

    def make_step(official: bool):
        model = mc.MicroCLIPNet(copy.deepcopy(visual), classifier, classifier, node, cfg.INPUT.PIXEL_MEAN,
                                cfg.INPUT.PIXEL_STD).to(device).train()
        params = list(mc.trainable_parameters(model, train_soap=True).values())
        optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1)
        state = {"marginal": None}

        def step():
            context = official_costs(mc) if official else contextlib.nullcontext()
            with context:
                out = mc.training_step_loss(model, node, plan, weak, strong, crops, state["marginal"])
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward(create_graph=official)
                optimizer.step()
            if official:  # create_graph: drop the gradients' graphs before the next step
                for p in params:
                    p.grad = None
            state["marginal"] = out.marginal
        return step

    ours_s = time_steps(make_step(False), args.warmup, args.steps, device)
    official_s = time_steps(make_step(True), args.warmup, args.steps, device)
    print(f"backbone {args.backbone} (random init), device {device}, fp32, batch {args.batch_size}, N crops "
          f"{args.crops}, {args.steps} timed steps after {args.warmup}, torch threads {torch.get_num_threads()}")
    print(f"official-cost encoder = ours: max |difference| of [CLS] features and patch tokens {difference:.2e}")
    print("| step | ms/step | images/s |")
    print("|---|---|---|")
    print(f"| clipkit | {1000 * ours_s:.0f} | {args.batch_size / ours_s:.2f} |")
    print(f"| official cost (value path in every block, anomaly detection, create_graph) | {1000 * official_s:.0f} | "
          f"{args.batch_size / official_s:.2f} |")
    print(f"speed-up over the official step: {official_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
