"""CoOp context prompts: the prompted text tower equals CLIP.encode_text when the context holds real words."""

import pytest
import torch

from clipkit.blocks.prompt_learner import ContextPromptLearner, encode_prompted_text

CLASSNAMES = ["red_fox", "green tree frog", "blue whale"]


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_path):
    from clipkit.clip import load_clip

    return load_clip(tiny_clip_path).float().eval()


def test_word_initialised_context_reproduces_encode_text(tiny_clip):
    from clipkit.clip import tokenize

    learner = ContextPromptLearner(tiny_clip, CLASSNAMES, n_ctx=16, ctx_init="a photo of a")
    assert learner.n_ctx == 4 and learner.ctx.shape == (4, tiny_clip.token_embedding.weight.shape[1])
    with torch.no_grad():
        prompted = encode_prompted_text(tiny_clip, learner(), learner.tokens)
        reference = tiny_clip.encode_text(tokenize([f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES]))
    torch.testing.assert_close(prompted, reference, rtol=1e-5, atol=1e-5)


def test_class_specific_word_init_gives_one_context_per_class(tiny_clip):
    learner = ContextPromptLearner(tiny_clip, CLASSNAMES, n_ctx=0, ctx_init="a photo of a", class_specific=True)
    assert learner.ctx.shape[:2] == (3, 4)
    shared = ContextPromptLearner(tiny_clip, CLASSNAMES, n_ctx=0, ctx_init="a photo of a")
    torch.testing.assert_close(learner(), shared())


def test_random_context_is_the_only_parameter_and_gets_gradients(tiny_clip):
    generator = torch.Generator().manual_seed(0)
    learner = ContextPromptLearner(tiny_clip, CLASSNAMES, n_ctx=8, init_std=0.02, generator=generator)
    assert [name for name, _ in learner.named_parameters()] == ["ctx"]
    assert learner.ctx.shape == (8, tiny_clip.token_embedding.weight.shape[1])
    assert 0.01 < float(learner.ctx.detach().std()) < 0.03
    embeddings = learner()
    assert embeddings.shape[:2] == learner.tokens.shape == (3, learner.tokens.shape[1])
    # positions 1..8 are the context, shared by every class; the rest are CLIP's frozen token embeddings
    torch.testing.assert_close(embeddings[0, 1:9], learner.ctx)
    torch.testing.assert_close(embeddings[2, 1:9], learner.ctx)
    with torch.no_grad():
        frozen = tiny_clip.token_embedding(learner.tokens)
    torch.testing.assert_close(embeddings[:, 9:], frozen[:, 9:])
    tiny_clip.requires_grad_(False)
    encode_prompted_text(tiny_clip, embeddings, learner.tokens).pow(2).sum().backward()
    assert learner.ctx.grad is not None and float(learner.ctx.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="N_CTX"):
        ContextPromptLearner(tiny_clip, CLASSNAMES, n_ctx=0)
