"""Text-classifier blocks against reference computations (zero-shot ensemble, CuPL mean, WCA/microCLIP weighting)."""

import pytest
import torch
import torch.nn.functional as F

from clipkit.blocks.text_classifier import (
    classifier_from_templates,
    description_embeddings,
    encode_texts,
    ensemble_classifier,
    mean_classifier,
    weighted_classifier,
)

CLASSNAMES = ["red_fox", "green tree", "blue whale"]


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_path):
    from clipkit.clip import load_clip

    return load_clip(tiny_clip_path)


def _reference_text_features(model, texts):
    from clipkit.clip import tokenize

    with torch.no_grad():
        return model.encode_text(tokenize(texts)).float()


def test_encode_texts_matches_direct_encoding_and_is_batch_invariant(tiny_clip):
    texts = [f"a photo of a {name}." for name in ["cat", "dog", "ship", "car", "plane"]]
    reference = _reference_text_features(tiny_clip, texts)
    torch.testing.assert_close(encode_texts(tiny_clip, texts), reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(encode_texts(tiny_clip, texts, batch_size=2), reference, rtol=1e-5, atol=1e-5)


def test_encode_texts_rejects_empty_list(tiny_clip):
    with pytest.raises(ValueError, match="empty"):
        encode_texts(tiny_clip, [])


def test_template_classifier_matches_reference_ensemble(tiny_clip):
    templates = ["a photo of a {}.", "a drawing of the {}.", "itap of a {}."]
    classifier = classifier_from_templates(tiny_clip, CLASSNAMES, templates)
    rows = []
    for name in CLASSNAMES:
        features = _reference_text_features(tiny_clip, [t.format(name.replace("_", " ")) for t in templates])
        rows.append(F.normalize(F.normalize(features, dim=-1).mean(0), dim=0))
    torch.testing.assert_close(classifier, torch.stack(rows), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(classifier.norm(dim=1), torch.ones(len(CLASSNAMES)))


def test_one_template_equals_cupl_with_one_sentence(tiny_clip):
    template = "a photo of a {}."
    from_templates = classifier_from_templates(tiny_clip, CLASSNAMES, [template])
    descriptions = {name: [template.format(name.replace("_", " "))] for name in CLASSNAMES}
    cupl = mean_classifier(description_embeddings(tiny_clip, CLASSNAMES, descriptions))
    torch.testing.assert_close(from_templates, cupl, rtol=1e-5, atol=1e-5)


def test_description_embeddings_are_unit_rows_grouped_per_class(tiny_clip):
    descriptions = {"red_fox": ["a fox.", "a red animal.", "a canid."], "green tree": ["a tree."], "blue whale": ["x", "y"]}
    embeddings = description_embeddings(tiny_clip, CLASSNAMES, descriptions)
    assert [e.shape[0] for e in embeddings] == [3, 1, 2]
    torch.testing.assert_close(embeddings[0][1], F.normalize(_reference_text_features(tiny_clip, ["a red animal."])[0], dim=0),
                               rtol=1e-5, atol=1e-5)
    for emb in embeddings:
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(emb.shape[0]))


def test_missing_descriptions_name_the_class(tiny_clip):
    with pytest.raises(KeyError, match="blue whale"):
        description_embeddings(tiny_clip, CLASSNAMES, {"red_fox": ["a"], "green tree": ["b"]})


def test_frobenius_variant_equals_mean_of_raw_embeddings():
    generator = torch.Generator().manual_seed(0)
    raw = torch.randn(4, 5, 8, generator=generator) * torch.rand(4, 5, 1, generator=generator) * 10
    frobenius = ensemble_classifier(raw, per_prompt_norm=False)
    torch.testing.assert_close(frobenius, F.normalize(raw.mean(dim=1), dim=-1))
    standard = ensemble_classifier(raw, per_prompt_norm=True)
    torch.testing.assert_close(standard, F.normalize(F.normalize(raw, dim=-1).mean(dim=1), dim=-1))
    # unequal prompt norms: the two conventions really differ
    assert (frobenius - standard).abs().max() > 1e-3


def test_frobenius_switch_through_classifier_from_templates(tiny_clip):
    templates = ["a photo of a {}.", "a {} in the wild, seen from very far away on a foggy morning."]
    raw = torch.stack([_reference_text_features(tiny_clip, [t.format(n.replace("_", " ")) for t in templates])
                       for n in CLASSNAMES])
    expected = F.normalize(raw.mean(dim=1), dim=-1)
    got = classifier_from_templates(tiny_clip, CLASSNAMES, templates, per_prompt_norm=False)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def _random_embeddings(counts, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(n, dim, generator=generator), dim=-1) for n in counts]


def test_mean_classifier_is_renormalised_mean():
    embeddings = _random_embeddings([3, 1, 5])
    expected = torch.stack([F.normalize(e.mean(0), dim=0) for e in embeddings])
    torch.testing.assert_close(mean_classifier(embeddings), expected)


def test_softmax_weighting_matches_wca_formula():
    embeddings = _random_embeddings([4, 2, 6], seed=1)
    anchors = F.normalize(torch.randn(3, 16, generator=torch.Generator().manual_seed(2)), dim=-1)
    scale = torch.e ** 2
    rows = []
    for emb, anchor in zip(embeddings, anchors):
        logits = [scale * float(e @ anchor) for e in emb]
        total = sum(torch.exp(torch.tensor(v)) for v in logits)
        weights = [torch.exp(torch.tensor(v)) / total for v in logits]
        assert abs(float(sum(weights)) - 1.0) < 1e-6
        rows.append(F.normalize(sum(w * e for w, e in zip(weights, emb)), dim=0))
    got = weighted_classifier(embeddings, anchors, weighting="softmax", scale=scale)
    torch.testing.assert_close(got, torch.stack(rows), rtol=1e-5, atol=1e-5)


def test_uniform_softmax_weights_equal_cupl_mean():
    embeddings = _random_embeddings([4, 2, 6], seed=3)
    anchors = F.normalize(torch.randn(3, 16), dim=-1)
    torch.testing.assert_close(weighted_classifier(embeddings, anchors, "softmax", scale=0.0), mean_classifier(embeddings))


def test_sharp_softmax_selects_most_similar_description():
    embeddings = _random_embeddings([5, 5], seed=4)
    anchors = torch.stack([embeddings[0][2], embeddings[1][4]])
    got = weighted_classifier(embeddings, anchors, "softmax", scale=1e4)
    torch.testing.assert_close(got, anchors, rtol=1e-4, atol=1e-4)


def test_similarity_weighting_matches_microclip_formula():
    embeddings = _random_embeddings([4, 3], seed=5)
    anchors = F.normalize(torch.randn(2, 16, generator=torch.Generator().manual_seed(6)), dim=-1)
    expected = []
    for emb, anchor in zip(embeddings, anchors):
        weights = emb @ anchor  # raw cosine to the anchor, no softmax, no scale
        expected.append(F.normalize((weights[:, None] * emb).sum(0), dim=0))
    torch.testing.assert_close(weighted_classifier(embeddings, anchors, "similarity"), torch.stack(expected))


def test_unknown_weighting_is_rejected():
    with pytest.raises(ValueError, match="weighting"):
        weighted_classifier(_random_embeddings([2]), torch.zeros(1, 16), weighting="uniform")
