"""open_clip backbones on randomly initialised tiny open_clip models (custom configs, no downloads): the shared
encoders equal open_clip's own forward, activations come from the config, bad weights are refused, and zero-shot CLIP
and microCLIP run end to end."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import tests.plugins.open_clip_tiny  # noqa: F401  (registers the tiny architectures)
from tests.conftest import REPO

open_clip = pytest.importorskip("open_clip")
ARCHS = ("clipkit-tiny-vit", "clipkit-tiny-vit-quickgelu")


def build(arch, seed=0):
    torch.manual_seed(seed)
    return open_clip.create_model(arch, pretrained=None).eval()


def save_weights(model, path, metaclip_format=False):
    state = model.state_dict()
    if metaclip_format:  # {"state_dict": {"module.<key>": tensor}} as the MetaCLIP release files
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(state, path)
    return str(path)


def images(batch=3, side=32, seed=0):
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHS)
def test_tap_cls_equals_open_clip_encode_image(arch):
    from clipkit.blocks.patch_tap import encode_image_tapped

    model = build(arch)
    x = images()
    with torch.no_grad():
        expected = F.normalize(model.encode_image(x), dim=-1)
        got = encode_image_tapped(model.visual, x, return_patch_tokens=True)
    assert torch.allclose(got.cls_feature, expected, atol=1e-5)
    assert got.patch_tokens.shape == (3, 16, 64)


def test_value_path_equals_a_hand_written_block_pass_with_layer_scale():
    from clipkit.blocks.patch_tap import value_path

    model = build("clipkit-tiny-vit")
    block = model.visual.transformer.resblocks[-1]
    assert float(block.ls_1.gamma.detach().mean()) == pytest.approx(0.5)  # layer scale is active in this config
    x = torch.randn(5, 2, 64, generator=torch.Generator().manual_seed(1))  # (L, B, W)
    with torch.no_grad():
        got = value_path(block, x)
        w_v, b_v = block.attn.in_proj_weight[128:], block.attn.in_proj_bias[128:]
        h = F.layer_norm(x, (64,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
        v = x + block.ls_1.gamma * (block.attn.out_proj(h @ w_v.t() + b_v))
        h2 = F.layer_norm(v, (64,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps)
        mlp = block.mlp.c_proj(F.gelu(block.mlp.c_fc(h2)))
        expected = v + block.ls_2.gamma * mlp
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_text_features_equal_open_clip_encode_text(arch):
    from clipkit.blocks.prompt_learner import ContextPromptLearner, encode_prompted_text
    from clipkit.blocks.text_classifier import encode_texts

    model = build(arch)
    tokenizer = open_clip.get_tokenizer(arch)
    texts = ["a photo of a red.", "a photo of a green."]
    with torch.no_grad():
        expected = model.encode_text(tokenizer(texts))
        assert torch.allclose(encode_texts(model, texts), expected, atol=1e-5)
        learner = ContextPromptLearner(model, ["red", "green"], 4, "a photo of a", False, 0.02, None)
        got = encode_prompted_text(model, learner(), learner.tokens)
    assert torch.allclose(got, expected, atol=1e-5)


def test_activation_comes_from_the_architecture_config():
    assert isinstance(build("clipkit-tiny-vit-quickgelu").visual.transformer.resblocks[0].mlp.gelu,
                      open_clip.transformer.QuickGELU)
    assert isinstance(build("clipkit-tiny-vit").visual.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)


def test_load_clip_by_file_and_mismatch_refused(tmp_path):
    from clipkit.clip import load_clip

    source = build("clipkit-tiny-vit-quickgelu", seed=3)
    path = save_weights(source, tmp_path / "w.pt", metaclip_format=True)
    model = load_clip(f"open_clip:clipkit-tiny-vit-quickgelu@{path}")
    assert model.checkpoint_path == path
    x = images()
    with torch.no_grad():
        assert torch.allclose(model.encode_image(x), source.encode_image(x), atol=1e-6)
    # the GELU architecture has layer-scale parameters the quickgelu weights lack: refused with the keys
    with pytest.raises(ValueError, match="missing keys .*ls_1"):
        load_clip(f"open_clip:clipkit-tiny-vit@{path}")
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        load_clip(f"open_clip:no-such-arch@{path}")
    with pytest.raises(NotImplementedError, match="pools its tokens"):
        avg = save_weights(build("clipkit-tiny-vit-avgpool"), tmp_path / "avg.pt")
        load_clip(f"open_clip:clipkit-tiny-vit-avgpool@{avg}")


def test_missing_pretrained_tag_says_where_to_put_the_file(tmp_path):
    from clipkit.clip import load_clip

    with pytest.raises(FileNotFoundError) as info:
        load_clip("open_clip:ViT-B-32-quickgelu@metaclip_400m", str(tmp_path), download=False)
    message = str(info.value)
    assert "b32_400m.pt" in message and str(tmp_path) in message and "dl.fbaipublicfiles.com" in message
    with pytest.raises(ValueError, match="known tags"):
        load_clip("open_clip:ViT-B-32-quickgelu@no_such_tag", str(tmp_path), download=False)
    # the file found in the download root is used without any download
    weights = save_weights(build("clipkit-tiny-vit-quickgelu"), tmp_path / "b32_400m.pt")
    with pytest.raises(ValueError, match="does not match"):  # a tiny file under ViT-B-32's name: shapes differ
        load_clip("open_clip:ViT-B-32-quickgelu@metaclip_400m", str(tmp_path), download=False)
    assert os.path.isfile(weights)


def test_random_vit_b32_quickgelu_file_matches_open_clip_loader(tmp_path):
    from clipkit.clip import load_clip

    torch.manual_seed(0)
    reference = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    path = save_weights(reference, tmp_path / "b32_400m.pt", metaclip_format=True)
    theirs = open_clip.create_model("ViT-B-32-quickgelu", pretrained=path).eval()
    ours = load_clip(f"open_clip:ViT-B-32-quickgelu@{path}")
    x = images(batch=2, side=224)
    with torch.no_grad():
        assert torch.allclose(ours.encode_image(x), theirs.encode_image(x), atol=1e-5)


@pytest.mark.parametrize("trainer, extra", [("ZeroshotCLIP", ["--eval-only"]), ("MicroCLIP", [])])
def test_end_to_end_on_a_tiny_open_clip_model(trainer, extra, image_root, tmp_path):
    weights = save_weights(build("clipkit-tiny-vit-quickgelu"), tmp_path / "tiny_open_clip.pt")
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1",
               CLIPKIT_EXTRA_PLUGINS="tests.plugins.image_folder_dataset,tests.plugins.open_clip_tiny")
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--root", image_root, "--trainer", trainer, "--seed", "1",
           "--config-file", os.path.join(REPO, "configs", "trainers", trainer, "tiny.yaml"), "--output-dir", str(out),
           *extra, "DATASET.NAME", "TestImageFolder", "MODEL.BACKBONE.NAME",
           f"open_clip:clipkit-tiny-vit-quickgelu@{weights}", "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
           "USE_CUDA", "False"]
    if trainer == "MicroCLIP":
        cmd += ["DATALOADER.TRAIN_X.BATCH_SIZE", "4", "OPTIM.MAX_EPOCH", "1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["backbone"].startswith("open_clip:clipkit-tiny-vit-quickgelu@") and results["num_test"] == 6


def test_microclip_metaclip_config_runs_given_the_weights_file(image_root, tmp_path):
    """The shipped metaclip_400m config, with a random ViT-B-32-quickgelu saved as MetaCLIP's b32_400m.pt in the
    download root (offline: no download is attempted because the file is found)."""
    torch.manual_seed(0)
    root = tmp_path / "weights"
    root.mkdir()
    save_weights(open_clip.create_model("ViT-B-32-quickgelu", pretrained=None), root / "b32_400m.pt",
                 metaclip_format=True)
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="2", HF_HUB_OFFLINE="1",
               CLIPKIT_EXTRA_PLUGINS="tests.plugins.image_folder_dataset")
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--root", image_root, "--trainer", "MicroCLIP", "--seed", "1",
           "--config-file", os.path.join(REPO, "configs", "trainers", "MicroCLIP", "metaclip_400m.yaml"),
           "--output-dir", str(out), "DATASET.NAME", "TestImageFolder", "MODEL.BACKBONE.DOWNLOAD_ROOT", str(root),
           "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "6", "OPTIM.MAX_EPOCH", "1",
           "TRAINER.MICROCLIP.N_CROPS", "2", "TRAINER.MICROCLIP.EPOCH_TEST_METRICS", "False", "USE_CUDA", "False"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["backbone"] == "open_clip:ViT-B-32-quickgelu@metaclip_400m" and results["num_test"] == 6
