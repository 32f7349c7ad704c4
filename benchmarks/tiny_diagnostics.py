"""What the tiny benchmark leaves adaptation to learn, measured on the cached ``tiny-clip-bench`` (no trainer needed).

Prints, on the test split (top-1 %, chance 5%):

* zero-shot of the [CLS] feature (template ensemble), and how unevenly it predicts the classes;
* the same classifier on the value-path patch tokens: per token, mean-pooled, and pooled as microCLIP's [FG] branch
  pools them at initialisation (NCut mask + SOAP, official settings);
* whether the tokens are local and the NCut masks object-centric: the per-token accuracy on background, distractor
  and object patches, which regions the NCut masks select, and the [FG] token with the true object patches in place
  of the NCut mask (region labels from re-rendering the test scenes): how SOAP's attention splits between the object's
  head and its body, the same with sharper logits, and the plain average of the object's / head's / body's tokens;
* a linear probe of the frozen [CLS] features trained with the TRUE train labels (what the features separate);
* an oracle LayerNorm + classifier tuning with the TRUE train labels, the parameters microCLIP tunes (what LN tuning
  can reach at all on this backbone);
* with ``--views``: whether the methods' training views keep the class (zero-shot accuracy, overall and per class
  attribute, on the test images seen through each view: single ops and the methods' strong views), and the same oracle
  tuning trained on one such view per train image instead of the clean image (what training on that view with
  perfect labels does to the clean test accuracy), and for the strong views on a fresh draw of the view every step.

The oracles use labels that no unsupervised method sees: they bound what adaptation can gain, they are not results.

Then it checks the benchmark's **properties** (issue 17; they describe the data and the backbone, not a method, and
were fixed before any method ran on version 2): zero-shot between 30% and 70%; the object covers 15-40% of the patches
on average; the [FG] token with the true object as its mask is at least as accurate as [CLS] (the class is on the
object); the linear probe is at least 10 points above zero-shot (room to adapt). ``--check`` exits with status 1 when
one fails.

    .venv/bin/python benchmarks/tiny_diagnostics.py [--checkpoint tiny-clip-bench] [--data-root DIR] [--check] [--views]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clipkit.blocks.ncut import ncut_mask  # noqa: E402
from clipkit.blocks.patch_tap import encode_image_tapped  # noqa: E402
from clipkit.blocks.soap import SaliencyAttentionPool, masked_token_mean, project_fg_token  # noqa: E402
from clipkit.clip import load_clip  # noqa: E402
from clipkit.tinybench import default_data_root, register_checkpoint  # noqa: E402
from clipkit.tinybench.evaluate import text_classifier  # noqa: E402
from clipkit.tinybench.generate import dataset_dir, load_metadata, load_split_images  # noqa: E402
from clipkit.tinybench.regions import (  # noqa: E402
    OBJECT, REGION_NAMES, config_from_metadata, head_patches, patch_regions, region_map, render_split,
)
from clipkit.tinybench.pretrain import to_model_input  # noqa: E402

LOGIT_SCALE = 100.0  # microCLIP's fixed logit scale, used by the oracle tuning's cross-entropy
SHARPER_SOAP_LOGITS = 4.0  # factor on SOAP's attention logits of the "sharper" [FG] row (a what-if, not a method)
PROBE_STEPS = 1500  # full-batch Adam steps of the linear probe
PROBE_LR = 1e-2
PROBE_L2 = 1e-4  # weight decay of the linear probe (standardised features)
# The benchmark's properties (issue 17, point 2): (name, measurement key, lower bound, upper bound); bounds on keys
# "probe_gain" and "fg_object_gain" are differences to zero-shot in points.
PROPERTIES = (
    ("zero-shot [CLS] accuracy (%)", "zero_shot", 30.0, 70.0),
    ("object share of the patches (%)", "object_patch_share", 15.0, 40.0),
    ("[FG] with the true object mask minus [CLS] (points)", "fg_object_gain", 0.0, None),
    ("linear probe (TRUE labels) minus zero-shot (points)", "probe_gain", 10.0, None),
)


ATTRIBUTES = ("pattern", "colour", "head")  # the class attributes recorded per class in metadata.json
GREY_FILL = (124, 116, 104)  # CLIP's pixel mean in 0-255: the fill of the grey-fill variants below
ROTATION_DEG = 30.0  # RandAugment's rotation at magnitude 10 (timm: 30 degrees)
# Names of the views of ``view_probes`` that the oracle tuning of ``--views`` is also trained on.
CROP_VIEW = "random resized crop (0.3, 1)"
ROTATE_BLACK_VIEW = f"rotate up to {ROTATION_DEG:g} deg, black fill"
ROTATE_GREY_VIEW = f"rotate up to {ROTATION_DEG:g} deg, grey fill"
MICROCLIP_STRONG_VIEW = "microCLIP / DPA strong view"
LAFTER_STRONG_VIEW = "LaFTer strong view"
TRAINING_VIEWS = (CROP_VIEW, ROTATE_BLACK_VIEW, ROTATE_GREY_VIEW, MICROCLIP_STRONG_VIEW, LAFTER_STRONG_VIEW)
FRESH_VIEW_TRAINING = (MICROCLIP_STRONG_VIEW, LAFTER_STRONG_VIEW)  # also trained with a new draw of the view per step


def view_probes(size: int) -> dict:
    """Named PIL -> PIL / uint8 tensor views for ``--views``: single ops of the methods' augmentations and their whole
    strong views (microCLIP / DPA: RandomResizedCrop + flip + timm RandAugment, fill 0; LaFTer: SimSiam's)."""
    from PIL import ImageOps
    from torchvision import transforms as T

    from clipkit.blocks.views import simsiam_transform, strong_transform

    bilinear = T.InterpolationMode.BILINEAR
    return {
        "identity": lambda image: image,
        "horizontal flip": ImageOps.mirror,
        "invert": ImageOps.invert,
        "solarize (threshold 128)": lambda image: ImageOps.solarize(image, 128),
        "grayscale": lambda image: image.convert("L").convert("RGB"),
        "hue jitter 0.1": T.ColorJitter(hue=0.1),
        ROTATE_BLACK_VIEW: T.RandomRotation(ROTATION_DEG, interpolation=bilinear),
        ROTATE_GREY_VIEW: T.RandomRotation(ROTATION_DEG, interpolation=bilinear, fill=GREY_FILL),
        CROP_VIEW: T.RandomResizedCrop(size, scale=(0.3, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        MICROCLIP_STRONG_VIEW: strong_transform((size, size), (0.3, 1.0), 0.5, "rand-m9-mstd0.5-inc1"),
        LAFTER_STRONG_VIEW: simsiam_transform((size, size), (0.2, 1.0)),
    }


def apply_view(view, images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 through a PIL view, one draw per image -> (N, H, W, 3) uint8."""
    from PIL import Image

    out = []
    for image in images:
        viewed = view(Image.fromarray(image))
        out.append(viewed.permute(1, 2, 0).numpy() if isinstance(viewed, torch.Tensor) else np.asarray(viewed))
    return np.stack(out)


def attribute_accuracy(predicted: np.ndarray, labels: np.ndarray, classes) -> dict:
    """% of images whose predicted class has the true class's value of each attribute in ``ATTRIBUTES``."""
    return {name: float(100.0 * np.mean([classes[p][name] == classes[t][name] for p, t in zip(predicted, labels)]))
            for name in ATTRIBUTES}


def check_properties(measured: dict):
    """[(name, value, lower, upper, holds)] of ``PROPERTIES`` on a dict of measurements."""
    rows = []
    for name, key, lower, upper in PROPERTIES:
        value = measured[key]
        rows.append((name, value, lower, upper, (lower is None or value >= lower) and (upper is None or value <= upper)))
    return rows


@torch.no_grad()
def encode(model, images: np.ndarray, with_tokens: bool = False, batch_size: int = 500):
    """(N, H, W, 3) uint8 -> unit [CLS] features (N, D) and, if asked, the ln_post'd value-path patch tokens
    (N, n, W) (else None)."""
    cls, tokens = [], []
    for start in range(0, len(images), batch_size):
        tap = encode_image_tapped(model.visual, to_model_input(images[start : start + batch_size]), with_tokens)
        cls.append(tap.cls_feature)
        tokens.append(tap.patch_tokens)
    return torch.cat(cls), torch.cat(tokens) if with_tokens else None


def accuracy(logits: torch.Tensor, labels: np.ndarray) -> float:
    return float(100.0 * (logits.argmax(dim=-1).numpy() == labels).mean())


def token_regions(metadata: dict, images: np.ndarray, patch_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, n) region label (``regions.REGION_NAMES``) of every patch of the test images and (N, n) bool "the patch is
    the object's head", by re-rendering their scenes with the config recorded in ``metadata``; exits with a fix when
    that does not reproduce the images on disk."""
    rendered, scenes = render_split(config_from_metadata(metadata), "test")
    if rendered.shape != images.shape or not np.array_equal(rendered, images):
        raise SystemExit("The tiny benchmark's test images on disk differ from what this code renders from their "
                         "metadata.json; regenerate them with: python -m clipkit.tinybench.prepare --force")
    size = images.shape[1]
    regions = np.stack([patch_regions(region_map(s, size), patch_size) for s in scenes])
    heads = np.stack([head_patches(s, size, patch_size) for s in scenes])
    return torch.from_numpy(regions), torch.from_numpy(heads)


def by_region(values: torch.Tensor, regions: torch.Tensor) -> str:
    """Mean of (N, n) ``values`` over the tokens of each region, as "background / distractor / object" percentages."""
    return " / ".join(f"{100.0 * values[regions == k].float().mean():.1f}" for k in range(len(REGION_NAMES)))


def linear_probe(train: torch.Tensor, train_labels: np.ndarray, test: torch.Tensor, test_labels: np.ndarray,
                 steps: int = PROBE_STEPS) -> float:
    """Multinomial logistic regression on standardised features, trained with the true labels; test accuracy."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    weight = torch.zeros(train.shape[1], int(train_labels.max()) + 1, requires_grad=True)
    bias = torch.zeros(weight.shape[1], requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=PROBE_LR)
    targets = torch.from_numpy(train_labels)
    for _ in range(steps):
        loss = F.cross_entropy((train - mean) / std @ weight + bias, targets) + PROBE_L2 * weight.pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return accuracy((test - mean) / std @ weight + bias, test_labels)


def oracle_layernorm_tuning(model, classifier, train_x, train_y, test_x, test_y, steps: int, lr: float, seed: int = 0,
                            view=None):
    """Tune the vision LayerNorms + a classifier initialised from ``classifier`` with the TRUE labels (CE at scale
    100, AdamW, batch 64; the batch as given, or each batch through a fresh draw of the PIL ``view``); returns
    [(step, test accuracy of the [CLS] logits)]."""
    model.requires_grad_(False)
    layer_norms = [p for m in model.visual.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()]
    for parameter in layer_norms:
        parameter.requires_grad_(True)
    weights = torch.nn.Parameter(classifier.clone())
    optimizer = torch.optim.AdamW(layer_norms + [weights], lr=lr, weight_decay=0.1)
    generator = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(1, steps + 1):
        index = torch.randint(len(train_x), (64,), generator=generator).numpy()
        batch = train_x[index] if view is None else apply_view(view, train_x[index])
        features = F.normalize(model.encode_image(to_model_input(batch)), dim=-1)
        loss = F.cross_entropy(LOGIT_SCALE * features @ F.normalize(weights, dim=-1).t(), torch.from_numpy(train_y[index]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, steps // 4) == 0:
            cls, _ = encode(model, test_x)
            curve.append((step, accuracy(cls @ F.normalize(weights.detach(), dim=-1).t(), test_y)))
    return curve


def format_curve(curve) -> str:
    """[(step, accuracy)] of ``oracle_layernorm_tuning`` -> "step 50: 65.2, ..."."""
    return ", ".join(f"step {s}: {a:.1f}" for s, a in curve)


def measure_views(args, classifier, classes, train_x, train_y, test_x, test_y, clean_curve) -> None:
    """``--views``: zero-shot through each of ``view_probes`` (overall and per attribute), then the oracle tuning on
    one draw of each of ``TRAINING_VIEWS`` per train image, from a fresh copy of the checkpoint each time, beside
    ``clean_curve`` (the same tuning on the clean images, run by ``main``)."""
    model = load_clip(args.checkpoint).float().eval()  # the oracle tuning above changed the other copy's LayerNorms
    # every generator the views draw from (timm's RandAugment: NumPy's and Python's; the crops, rotations and colour
    # jitter: torch's), seeded here so that the draws do not depend on what ran before (e.g. --oracle-steps)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    probes = view_probes(test_x.shape[1])
    print(f"\nzero-shot on the test images seen through a view (one draw each): top-1 / "
          f"{' / '.join(ATTRIBUTES)} right")
    for name, view in probes.items():
        predicted = (encode(model, apply_view(view, test_x))[0] @ classifier.t()).argmax(dim=-1).numpy()
        per_attribute = attribute_accuracy(predicted, test_y, classes)
        print(f"  {name:56s} {100.0 * np.mean(predicted == test_y):5.1f}  "
              + " / ".join(f"{per_attribute[a]:5.1f}" for a in ATTRIBUTES))
    if not args.oracle_steps:
        return
    print(f"oracle LN + classifier tuning (TRUE labels, {args.oracle_steps} steps) on one view per train image; "
          "clean test accuracy")

    def tune_fresh_copy(name: str, redraw_per_batch: bool) -> None:
        """The oracle tuning from a fresh copy of the checkpoint on view ``name``: one draw per train image (made after
        seeding), or a new draw for every batch."""
        torch.manual_seed(0)
        fresh = load_clip(args.checkpoint).float().eval()
        view = probes[name]
        images = train_x if redraw_per_batch else apply_view(view, train_x)
        curve = oracle_layernorm_tuning(fresh, classifier, images, train_y, test_x, test_y, args.oracle_steps,
                                        args.oracle_lr, view=view if redraw_per_batch else None)
        print(f"  {name:56s} {format_curve(curve)}")

    print(f"  {'identity':56s} {format_curve(clean_curve)}")
    for name in TRAINING_VIEWS:
        tune_fresh_copy(name, redraw_per_batch=False)
    print("the same on a fresh view of every batch (a new draw per step, as the methods' loaders redraw)")
    for name in FRESH_VIEW_TRAINING:
        tune_fresh_copy(name, redraw_per_batch=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="tiny-clip-bench", help="CLIP name or path (default: %(default)s)")
    parser.add_argument("--data-root", default=default_data_root(), help="folder holding tiny_finegrained/")
    parser.add_argument("--oracle-steps", type=int, default=200, help="steps of the oracle LN tuning (0 = skip)")
    parser.add_argument("--oracle-lr", type=float, default=1e-3)
    parser.add_argument("--probe-steps", type=int, default=PROBE_STEPS, help="full-batch steps of the linear probe")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a benchmark property fails")
    parser.add_argument("--views", action="store_true",
                        help="also measure the methods' training views (zero-shot through each, oracle tuning on each)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    register_checkpoint()
    folder = dataset_dir(args.data_root)
    metadata = load_metadata(folder)
    names = [c["name"] for c in metadata["classes"]]
    train_x, train_y = load_split_images(folder, "train")
    test_x, test_y = load_split_images(folder, "test")
    model = load_clip(args.checkpoint).float().eval()
    classifier = text_classifier(model, names, metadata["templates"])
    test_cls, test_tokens = encode(model, test_x, with_tokens=True)
    train_cls, _ = encode(model, train_x)
    projected = test_tokens @ model.visual.proj
    counts = np.bincount((test_cls @ classifier.t()).argmax(1).numpy(), minlength=len(names))
    regions, head_tokens = token_regions(metadata, test_x, model.visual.conv1.kernel_size[0])
    token_correct = (F.normalize(projected, dim=-1) @ classifier.t()).argmax(-1) == torch.from_numpy(test_y)[:, None]
    pool = SaliencyAttentionPool(test_tokens.shape[-1])

    def fg_logits(pooled: torch.Tensor) -> torch.Tensor:
        """(N, W) pooled tokens -> (N, C) class logits of the [FG] feature (CLIP's projection, Eq. 6)."""
        return project_fg_token(pooled, model.visual.proj) @ classifier.t()

    @torch.no_grad()
    def soap_fg_with(patch_mask: torch.Tensor) -> torch.Tensor:
        """[FG] logits at initialisation (official SOAP) with ``patch_mask`` (N, n) as the NCut mask."""
        return fg_logits(pool(test_tokens, patch_mask)[0])

    object_mask = regions == OBJECT
    head_mask = object_mask & head_tokens  # the object's head; the rest of the object is its patterned body
    body_mask = object_mask & ~head_tokens
    with torch.no_grad():
        mask = ncut_mask(test_tokens)
        object_pooled, object_attention = pool(test_tokens, object_mask)  # SOAP with the true object as its mask
        # The same with its attention logits x SHARPER_SOAP_LOGITS (tokens scaled by its square root: the value path
        # scales too, which the normalised [FG] feature does not see): does a sharper softmax on the object help?
        sharper_pooled, _ = pool(test_tokens * SHARPER_SOAP_LOGITS ** 0.5, object_mask)
    object_attention = object_attention[:, : object_mask.shape[1]]  # without the sink
    measured = {
        "zero_shot": accuracy(test_cls @ classifier.t(), test_y),
        "object_patch_share": float(100.0 * object_mask.float().mean()),
        "fg_object": accuracy(fg_logits(object_pooled), test_y),
        "linear_probe": linear_probe(train_cls, train_y, test_cls, test_y, args.probe_steps),
    }

    def attention_share(part: torch.Tensor) -> float:
        """% of SOAP's attention mass (true object mask) on the tokens of ``part`` (N, n), mean over images."""
        return float(100.0 * (object_attention * part).sum(1).mean())

    def token_average_accuracy(part: torch.Tensor) -> float:
        """[FG] as the plain mean of ``part``'s tokens (Table 3's NCut-average token), on the images that have any."""
        has_part = part.any(dim=1)
        logits = fg_logits(masked_token_mean(test_tokens, part))
        return accuracy(logits[has_part], test_y[has_part.numpy()])

    measured["fg_object_gain"] = measured["fg_object"] - measured["zero_shot"]
    measured["probe_gain"] = measured["linear_probe"] - measured["zero_shot"]
    rows = [
        ("zero-shot [CLS], template ensemble", measured["zero_shot"]),
        ("  predictions per class (50 true each): min / max", f"{counts.min()} / {counts.max()}"),
        ("value-path tokens, each token alone (mean over tokens)", float(100.0 * token_correct.float().mean())),
        ("value-path tokens, mean-pooled", accuracy(F.normalize(projected.mean(1), dim=-1) @ classifier.t(), test_y)),
        ("microCLIP [FG] at init (official NCut + SOAP)", accuracy(soap_fg_with(mask), test_y)),
        ("  NCut mask: mean fraction of tokens / share of full masks",
         f"{mask.float().mean():.2f} / {(mask.all(dim=1)).float().mean():.2f}"),
        ("patch regions background / distractor / object: % of all tokens",
         " / ".join(f"{100.0 * (regions == k).float().mean():.1f}" for k in range(len(REGION_NAMES)))),
        ("  each token alone: accuracy by region", by_region(token_correct, regions)),
        ("  NCut mask: % of each region's tokens selected", by_region(mask, regions)),
        ("[FG] with the true object patches as NCut mask", measured["fg_object"]),
        ("  SOAP attention on the true object's tokens (% of the mass)", attention_share(object_mask)),
        ("  ... on its head's / its body's tokens (% of the mass)",
         f"{attention_share(head_mask):.1f} / {attention_share(body_mask):.1f}"),
        ("  the head's share of the object's tokens (%)",
         float(100.0 * head_mask.sum() / object_mask.sum())),
        (f"  the same SOAP with its logits x {SHARPER_SOAP_LOGITS:g} (sharper)",
         accuracy(fg_logits(sharper_pooled), test_y)),
        ("  the true object's tokens averaged (Table 3 NCut-average [FG])", token_average_accuracy(object_mask)),
        ("  its head's tokens averaged / its body's tokens averaged",
         f"{token_average_accuracy(head_mask):.1f} / {token_average_accuracy(body_mask):.1f}"),
        ("linear probe on frozen [CLS] (TRUE labels)", measured["linear_probe"]),
    ]
    for name, value in rows:
        print(f"{name:58s} {value:.1f}" if isinstance(value, float) else f"{name:58s} {value}")
    curve = []
    if args.oracle_steps:
        curve = oracle_layernorm_tuning(model, classifier, train_x, train_y, test_x, test_y, args.oracle_steps,
                                        args.oracle_lr)
        print(f"{'oracle LN + classifier tuning (TRUE labels), lr ' + str(args.oracle_lr):58s} {format_curve(curve)}")
    if args.views:
        measure_views(args, classifier, metadata["classes"], train_x, train_y, test_x, test_y, curve)
    print("\nbenchmark properties (issue 17, fixed before any method ran):")
    failed = 0
    for name, value, lower, upper, holds in check_properties(measured):
        bounds = f">= {lower:g}" if upper is None else f"in [{lower:g}, {upper:g}]"
        print(f"  {name:54s} {value:6.1f}  {bounds:14s} {'holds' if holds else 'FAILS'}")
        failed += not holds
    return 1 if (args.check and failed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
