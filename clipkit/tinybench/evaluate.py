"""Zero-shot accuracy of a CLIP on tiny-benchmark images (a quick check that needs no trainer)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .pretrain import to_model_input, tokenize_trimmed


@torch.no_grad()
def text_classifier(model, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """CLIP's prompt ensemble: per class, the normalised mean of the normalised template embeddings; (C, D)."""
    weights = []
    for name in classnames:
        features = F.normalize(model.encode_text(tokenize_trimmed(t.format(name) for t in templates)), dim=-1)
        weights.append(F.normalize(features.mean(dim=0), dim=-1))
    return torch.stack(weights)


@torch.no_grad()
def zero_shot_predictions(model, images: np.ndarray, classifier: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Arg-max class of each (N, H, W, 3) uint8 image under a (C, D) text classifier."""
    predictions = []
    for start in range(0, len(images), batch_size):
        features = F.normalize(model.encode_image(to_model_input(images[start : start + batch_size])), dim=-1)
        predictions.append((features @ classifier.t()).argmax(dim=1).numpy())
    return np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)


def zero_shot_accuracy(model, images: np.ndarray, labels: np.ndarray, classnames, templates) -> float:
    """Top-1 accuracy in percent."""
    predictions = zero_shot_predictions(model, images, text_classifier(model, classnames, templates))
    return float(100.0 * np.mean(predictions == np.asarray(labels)))
