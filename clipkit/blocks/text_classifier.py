"""Text classifiers: class prototypes (C, D) built from CLIP text embeddings.

Conventions: every returned classifier has L2-normalised rows; embeddings are computed without gradients on the
device of the CLIP model. Pure functions on embeddings (``mean_classifier``, ``weighted_classifier``,
``ensemble_classifier``) are separated from the encoding step so they can be tested on plain tensors.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F


def prompt_ready(classname: str) -> str:
    """Class name as it goes into a prompt (underscores to spaces)."""
    return classname.replace("_", " ")


@torch.no_grad()
def encode_texts(clip_model, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """(T, D) raw (un-normalised) CLIP text features of ``texts``, in fp32, on the model's device."""
    from clipkit.clip import tokenize

    if len(texts) == 0:
        raise ValueError("encode_texts got an empty list of texts")
    device = clip_model.token_embedding.weight.device
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenize(list(texts[start : start + batch_size]), truncate=True).to(device)
        chunks.append(clip_model.encode_text(tokens).float())
    return torch.cat(chunks)


def ensemble_classifier(prompt_features: torch.Tensor, per_prompt_norm: bool = True) -> torch.Tensor:
    """Prompt-ensemble prototypes from (C, T, D) raw prompt features -> (C, D) unit rows.

    per_prompt_norm=True: CLIP's standard ensemble, mean of unit prompt embeddings, renormalised.
    per_prompt_norm=False: microCLIP's variant: each class's (T, D) matrix is divided by its Frobenius norm before the
    mean, i.e. the mean of *raw* embeddings, renormalised (official ``load_zs_classname_embeddings``).
    """
    if per_prompt_norm:
        prompt_features = F.normalize(prompt_features, dim=-1)
    else:
        prompt_features = prompt_features / prompt_features.flatten(1).norm(dim=1)[:, None, None]
    return F.normalize(prompt_features.mean(dim=1), dim=-1)


def classifier_from_templates(
    clip_model, classnames: Sequence[str], templates: Sequence[str], per_prompt_norm: bool = True
) -> torch.Tensor:
    """(C, D) template-ensemble classifier (zero-shot CLIP). Each template contains one ``{}``."""
    if not templates:
        raise ValueError("classifier_from_templates needs at least one template")
    texts = [template.format(prompt_ready(name)) for name in classnames for template in templates]
    features = encode_texts(clip_model, texts)
    return ensemble_classifier(features.view(len(classnames), len(templates), -1), per_prompt_norm)


def description_embeddings(
    clip_model, classnames: Sequence[str], descriptions: Dict[str, List[str]]
) -> List[torch.Tensor]:
    """Per class, the (n_c, D) unit embeddings of its descriptions (CuPL format: class name -> sentences)."""
    missing = [name for name in classnames if not descriptions.get(name)]
    if missing:
        raise KeyError(f"no descriptions for classes: {missing}")
    counts = [len(descriptions[name]) for name in classnames]
    texts = [sentence for name in classnames for sentence in descriptions[name]]
    features = F.normalize(encode_texts(clip_model, texts), dim=-1)
    return list(torch.split(features, counts))


def mean_classifier(embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
    """(C, D): per class, the mean of its unit embeddings, renormalised (CuPL; microCLIP's W*_LLM init, Supp. A.1)."""
    return F.normalize(torch.stack([emb.mean(dim=0) for emb in embeddings]), dim=-1)


def weighted_classifier(
    embeddings: Sequence[torch.Tensor], anchors: torch.Tensor, weighting: str = "similarity", scale: float = 1.0
) -> torch.Tensor:
    """(C, D): per class c, normalize(sum_j w_cj e_cj) with weights from the similarity of e_cj to the anchor a_c.

    weighting="similarity": w_cj = e_cj . a_c (raw cosine; microCLIP's frozen W_LLM, anchors = template ensemble).
    weighting="softmax":    w_cj = softmax_j(scale * e_cj . a_c) (WCA's description weights, scale = e^2).
    ``anchors``: (C, D), unit rows.
    """
    if weighting not in ("similarity", "softmax"):
        raise ValueError(f"weighting must be 'similarity' or 'softmax', got {weighting!r}")
    rows = []
    for emb, anchor in zip(embeddings, anchors):
        similarity = emb @ anchor
        weights = similarity if weighting == "similarity" else torch.softmax(scale * similarity, dim=0)
        rows.append((weights[:, None] * emb).sum(dim=0))
    return F.normalize(torch.stack(rows), dim=-1)
