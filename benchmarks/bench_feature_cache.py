"""Evaluation throughput of a training-free method with and without the feature cache.

Three passes over the same generated image folder, each ending in logits of a (C, D) classifier:

* ``no cache``: encode every image (cache disabled: nothing read or written),
* ``cold``:     cache enabled but empty: encode, then write the cache file,
* ``warm``:     cache hit: read the file, classifier step only.

With ``--crops N`` the same three passes are timed for N square crops per image (WCA). Random weights are enough:
the cost does not depend on them.

    .venv/bin/python benchmarks/bench_feature_cache.py                         # tiny CLIP, 256 images, CPU
    .venv/bin/python benchmarks/bench_feature_cache.py --backbone vit_b32 --images 512 --crops 8 --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clipkit import feature_cache  # noqa: E402
from clipkit.clip import build_tiny_clip, load_clip, save_tiny_clip  # noqa: E402

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Architectures (clip.model.CLIP arguments) of the random-weight backbones.
BACKBONES = {
    "tiny": {},  # clipkit.clip.TINY_CLIP_ARCH
    "vit_b32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
                    transformer_width=512, transformer_layers=12),
}


class ImageList(torch.utils.data.Dataset):
    """Dassl-like test items {img, impath} under the CLIP test transform."""

    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            return {"img": self.transform(image.convert("RGB")), "impath": self.paths[index]}


def write_folder(root, num_images, num_classes, size, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for index in range(num_images):
        folder = os.path.join(root, f"class{index % num_classes}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{index}.jpg")
        Image.fromarray(rng.integers(0, 256, size=(size[0], size[1], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="tiny")
    parser.add_argument("--images", type=int, default=256, help="images in the generated folder")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--image-size", type=int, nargs=2, default=(96, 128), help="H W of the generated images")
    parser.add_argument("--crops", type=int, default=0, help="also time N square crops per image (WCA)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per encoder call")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    from torchvision import transforms as T

    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as work:
        checkpoint = save_tiny_clip(build_tiny_clip(seed=0, **BACKBONES[args.backbone]), os.path.join(work, "clip.pt"))
        model = load_clip(checkpoint).to(device)
        side = model.visual.input_resolution
        transform = T.Compose([
            T.Resize(side, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(side), T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ])
        paths = write_folder(os.path.join(work, "images"), args.images, args.classes, args.image_size)
        loader = torch.utils.data.DataLoader(ImageList(paths, transform), batch_size=args.batch_size,
                                             num_workers=args.workers)
        classifier = F.normalize(torch.randn(args.classes, model.text_projection.shape[1], device=device), dim=-1)
        cache_root = os.path.join(work, "cache")
        digest = feature_cache.model_digest(model)

        def key(num_crops=0):
            return feature_cache.feature_cache_key(
                backbone=args.backbone, checkpoint_digest=digest, dataset="bench", split="test",
                transform=repr(transform), image_paths=paths, num_crops=num_crops, crop_seed=0 if num_crops else None)

        def evaluate_global(enabled):
            stored = feature_cache.load_or_compute(
                key(), lambda: feature_cache.encode_loader(model, loader, device, expected_paths=paths),
                enabled=enabled, root=cache_root, log=lambda message: None)
            return 100.0 * F.normalize(stored["features"].to(device), dim=-1) @ classifier.T

        crops = feature_cache.SquareCropDataset(paths, max(args.crops, 1), (0.5, 0.9), side, crop_seed=0)

        def evaluate_crops(enabled):
            stored = feature_cache.load_or_compute(
                key(args.crops), lambda: feature_cache.encode_square_crops(
                    model, crops, CLIP_MEAN, CLIP_STD, device, batch_size=args.batch_size, num_workers=args.workers),
                enabled=enabled, root=cache_root, log=lambda message: None)
            return 100.0 * F.normalize(stored["crop_features"].to(device), dim=-1).mean(1) @ classifier.T

        print(f"backbone {args.backbone} (random weights, input {side}px), {args.images} images of "
              f"{args.image_size[0]}x{args.image_size[1]}, batch {args.batch_size}, workers {args.workers}, "
              f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
              f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
        passes = [("global view", evaluate_global, args.images)]
        if args.crops:
            passes.append((f"{args.crops} crops", evaluate_crops, args.images))
        print(f"{'features':<14} {'pass':<10} {'seconds':>9} {'images/s':>10}")
        for name, evaluate, count in passes:
            results = {}
            for label, enabled in (("no cache", False), ("cold", True), ("warm", True)):
                seconds, results[label] = timed(lambda: evaluate(enabled), device)
                print(f"{name:<14} {label:<10} {seconds:>9.3f} {count / seconds:>10.1f}")
            if not torch.equal(results["warm"], results["cold"]):
                raise RuntimeError(f"{name}: logits from the cache differ from those computed when it was written")
            if not torch.allclose(results["no cache"], results["cold"], rtol=1e-4, atol=1e-4):
                raise RuntimeError(f"{name}: cached and uncached logits differ")


if __name__ == "__main__":
    main()
