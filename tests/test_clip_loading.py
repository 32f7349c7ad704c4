"""CLIP loading: tiny checkpoint round trip, OpenAI name -> file resolution, offline and bad-file errors."""

import os
import urllib.error

import pytest
import torch

from clipkit.clip import build_tiny_clip, load_clip, resolve_checkpoint, save_tiny_clip, tokenize


def test_tiny_checkpoint_round_trip_gives_equal_outputs(tiny_clip_path):
    reference = build_tiny_clip(seed=0)
    loaded = load_clip(tiny_clip_path)
    assert type(loaded) is type(reference) and not loaded.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in loaded.parameters())
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    tokens = tokenize(["a photo of a red square.", "a photo of a blue square."])
    with torch.no_grad():
        assert torch.equal(reference.encode_image(images), loaded.encode_image(images))
        assert torch.equal(reference.encode_text(tokens), loaded.encode_text(tokens))
    assert loaded.checkpoint_path == tiny_clip_path


def test_openai_name_resolves_to_the_expected_file(tmp_path, tiny_clip_path, monkeypatch):
    import hashlib

    import clipkit.clip.load as load

    expected = tmp_path / "ViT-B-32.pt"  # basename of OpenAI's download URL
    expected.write_bytes(open(tiny_clip_path, "rb").read())
    # the file must carry the SHA-256 in the URL (a partial download is refetched): give the stand-in its own
    sha = hashlib.sha256(expected.read_bytes()).hexdigest()
    monkeypatch.setitem(load.openai_clip.clip._MODELS, "ViT-B/32", f"https://example.invalid/{sha}/ViT-B-32.pt")
    assert resolve_checkpoint("ViT-B/32", str(tmp_path), download=False) == str(expected)
    model = load_clip("ViT-B/32", str(tmp_path), download=False)  # a state dict under the OpenAI name also loads
    assert model.visual.input_resolution == 64


def test_missing_weights_error_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        resolve_checkpoint("ViT-B/16", str(tmp_path), download=False)
    message = str(info.value)
    assert str(tmp_path / "ViT-B-16.pt") in message and "MODEL.BACKBONE.DOWNLOAD_ROOT" in message


def test_offline_download_error_names_the_file_and_reason(tmp_path, monkeypatch):
    import clip.clip

    def offline(url, root):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(clip.clip, "_download", offline)
    with pytest.raises(FileNotFoundError, match=r"ViT-B-16\.pt.*could not be downloaded \(URLError"):
        resolve_checkpoint("ViT-B/16", str(tmp_path))


def test_unknown_name_and_bad_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a known CLIP name"):
        load_clip(str(tmp_path / "nope.pt"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00 definitely not a checkpoint")
    with pytest.raises(RuntimeError, match=f"Could not read CLIP checkpoint {garbage}"):
        load_clip(str(garbage))
    not_clip = tmp_path / "not_clip.pt"
    torch.save({"weight": torch.zeros(2)}, not_clip)
    with pytest.raises(RuntimeError, match="is not a CLIP ViT checkpoint"):
        load_clip(str(not_clip))


def test_saved_checkpoint_is_atomic_and_wrapped_state_dict_loads(tmp_path):
    model = build_tiny_clip(seed=1, vision_layers=1, transformer_layers=1)
    path = save_tiny_clip(model, str(tmp_path / "sub" / "tiny.pt"))
    assert os.listdir(tmp_path / "sub") == ["tiny.pt"]
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": torch.load(path, weights_only=True)}, wrapped)
    loaded = load_clip(str(wrapped))
    assert torch.equal(loaded.visual.conv1.weight, model.visual.conv1.weight)
