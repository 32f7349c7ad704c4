"""Views built from the decoded image where they are cheapest (``DATALOADER.VIEWS``).

The present (official) pipeline turns every PIL image into each view separately on the loader workers: the weak view
is a PIL short-side resize + crop, the N multi-view crops are tensor resizes of ``pil_to_tensor(image)``. Here the
image is decoded once into a (3, H, W) uint8 tensor and

* ``"tensor"``: the weak view and the N crops are cut and resized from that tensor with tensor ops on the workers;
* ``"device"``: the workers only decode, draw the random boxes and build what must stay PIL (the RandAugment strong
  view); the decoded uint8 image and the boxes travel to the training device, which resizes the weak view and the
  crops there (``views_on_device``).

The random draws are the present pipeline's, in its order and from the same generators (weak-view crop offset as
``T.RandomCrop`` draws it on the resized size, then the strong view, then the crop boxes of ``sample_crop_boxes``), so
for a given seed every crop box, the strong view and the multi-view crops are identical to the present pipeline's.
Only the weak view's resize changes: torchvision's antialiased bicubic on uint8 tensors instead of Pillow's bicubic;
on the CPU the two differ by at most 1 grey level on a few per mille of the pixels (tests/test_blocks_decoded_views.py
measures it). Hence a named switch, not the default (DEVIATIONS.md, "Views from the decoded image").
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import default_collate
from torchvision import transforms as T
from torchvision.transforms.functional import pil_to_tensor
from torchvision.transforms.v2 import functional as TF

from clipkit.blocks.multicrop import crops_from_boxes, sample_crop_boxes

VIEW_PLACES = ("pil", "tensor", "device")  # DATALOADER.VIEWS: present pipeline, tensor ops on workers, on the device
FULL_IMAGE_KEY = "full"  # batch key of the decoded images (a list: their sizes differ) in the "device" place


def short_side_resized_size(height: int, width: int, size: int) -> Tuple[int, int]:
    """(h, w) of ``T.Resize(size)`` (an int: the short side becomes ``size``, the long side ``int(size * long /
    short)``), as torchvision computes it for PIL images and tensors alike."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def draw_view_offset(height: int, width: int, size: Sequence[int], crop: str) -> Tuple[int, int]:
    """(top, left) of the ``size`` crop of an (height, width) image: ``T.RandomCrop.get_params`` (the same torch
    draws, none when the image already has the crop's size) or ``T.CenterCrop``'s rounding."""
    crop_h, crop_w = int(size[0]), int(size[1])
    if crop == "center":
        return int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
    top, left, _, _ = T.RandomCrop.get_params(torch.empty((1, height, width), dtype=torch.uint8), (crop_h, crop_w))
    return top, left


def view_from_box(image: torch.Tensor, box: Sequence[int], size: Sequence[int], interpolation) -> torch.Tensor:
    """(3, h, w) crop of a (3, H, W) image at ``box`` = (top, left, resized_h, resized_w) after resizing the image to
    (resized_h, resized_w) (antialiased; uint8 in, uint8 out; any device)."""
    top, left, resized_h, resized_w = (int(v) for v in box)
    resized = TF.resize(image, [resized_h, resized_w], interpolation=interpolation, antialias=True)
    return resized[:, top : top + int(size[0]), left : left + int(size[1])]


class DecodedViews:
    """PIL image -> dict of views for ``DatasetWrapper`` (its key ``img`` holds the dict; ``collate_decoded_views``
    flattens it into the batch): ``img`` (weak), ``img2`` (strong, PIL transform), ``img3`` ((N, 3, S, S) crops, if
    ``num_crops``) in the "tensor" place; in the "device" place ``full`` (the decoded (3, H, W) uint8 image),
    ``view_box`` (4,) and ``crop_boxes`` (N, 3) instead of ``img`` and ``img3``."""

    def __init__(self, size: Sequence[int], interpolation, weak_crop: str, strong, num_crops: int,
                 crop_side_range: Sequence[float], crop_size: int, place: str):
        if place not in VIEW_PLACES[1:]:
            raise ValueError(f"DecodedViews place must be one of {VIEW_PLACES[1:]}, got {place!r}")
        self.size, self.interpolation, self.weak_crop = tuple(size), interpolation, weak_crop
        self.strong, self.num_crops = strong, int(num_crops)
        self.crop_side_range, self.crop_size, self.place = tuple(crop_side_range), int(crop_size), place

    def draw(self, image) -> Dict[str, torch.Tensor]:
        """Decode + the random draws and the strong view, in the present pipeline's order."""
        full = pil_to_tensor(image)  # (3, H, W) uint8, the image decoded once
        height, width = full.shape[1:]
        resized = short_side_resized_size(height, width, max(self.size))
        view_box = torch.tensor([*draw_view_offset(*resized, self.size, self.weak_crop), *resized])
        views = {FULL_IMAGE_KEY: full, "view_box": view_box, "img2": self.strong(image)}
        if self.num_crops:
            views["crop_boxes"] = sample_crop_boxes(height, width, self.num_crops, self.crop_side_range)
        return views

    def __call__(self, image) -> Dict[str, torch.Tensor]:
        views = self.draw(image)
        if self.place == "device":
            return views
        out = {"img": view_from_box(views[FULL_IMAGE_KEY], views["view_box"], self.size, self.interpolation),
               "img2": views["img2"]}
        if self.num_crops:
            out["img3"] = crops_from_boxes(views[FULL_IMAGE_KEY], views["crop_boxes"], self.crop_size)
        return out

    def __repr__(self):
        return (f"DecodedViews(place={self.place}, size={self.size}, interpolation={self.interpolation}, "
                f"weak_crop={self.weak_crop}, num_crops={self.num_crops}, crop_side_range={self.crop_side_range}, "
                f"crop_size={self.crop_size}, strong={self.strong})")


def collate_decoded_views(samples: List[Dict]) -> Dict:
    """``default_collate`` of ``DatasetWrapper`` items whose ``img`` is a ``DecodedViews`` dict: its entries become
    batch keys; the decoded images (``full``, of different sizes) stay a list."""
    views = [sample["img"] for sample in samples]
    batch = default_collate([{k: v for k, v in sample.items() if k != "img"} for sample in samples])
    for key in views[0]:
        values = [view[key] for view in views]
        batch[key] = values if key == FULL_IMAGE_KEY else default_collate(values)
    return batch


def with_collate(loader: torch.utils.data.DataLoader, collate_fn=collate_decoded_views) -> torch.utils.data.DataLoader:
    """The same DataLoader (dataset, sampler, batch size, workers, drop_last, pinning) with ``collate_fn``."""
    return torch.utils.data.DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=loader.sampler, num_workers=loader.num_workers,
        drop_last=loader.drop_last, pin_memory=loader.pin_memory, collate_fn=collate_fn,
    )


def views_on_device(batch: Dict, size: Sequence[int], interpolation, crop_size: int, device: torch.device,
                    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The "device" place: weak views (B, 3, h, w) and crops (B, N, 3, S, S) (None without ``crop_boxes``), uint8,
    resized on ``device`` from the decoded images and boxes of a ``collate_decoded_views`` batch."""
    weak, crops = [], []
    boxes = batch.get("crop_boxes")
    for i, full in enumerate(batch[FULL_IMAGE_KEY]):
        image = full.to(device, non_blocking=True)
        weak.append(view_from_box(image, batch["view_box"][i].tolist(), size, interpolation))
        if boxes is not None:
            crops.append(crops_from_boxes(image, boxes[i], crop_size))
    return torch.stack(weak), (torch.stack(crops) if boxes is not None else None)


__all__ = ["DecodedViews", "FULL_IMAGE_KEY", "VIEW_PLACES", "collate_decoded_views", "draw_view_offset",
           "short_side_resized_size", "view_from_box", "views_on_device", "with_collate"]
