"""The embedded tiny benchmark: deterministic generation, pretraining, reader, checkpoint name, end-to-end run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from clipkit.tinybench import captions, class_text, generate, pretrain, regions, render

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = generate.BenchmarkConfig(train_per_class=3, test_per_class=2)  # 20 classes, 60 train + 40 test images
# A few seconds of pretraining with the default architecture: 16 images seen every step (one batch), so 80 steps
# take the loss well below ln(16), the loss of embeddings that cannot tell the pairs apart.
SHORT_RECIPE = pretrain.DEFAULT_RECIPE.shortened(pool_size=16, steps=80, batch_size=16, warmup_steps=5, lr=1e-3)


@pytest.fixture
def one_thread():
    """The tiny model runs faster on one thread on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _files(folder):
    out = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, folder)] = handle.read()
    return out


@pytest.fixture(scope="module")
def small_benchmark(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_data")
    return str(root), generate.generate_dataset(str(root), SMALL, log=None)


def test_generation_is_byte_deterministic_and_seed_dependent(small_benchmark, tmp_path):
    _, first = small_benchmark
    second = generate.generate_dataset(str(tmp_path / "again"), SMALL, log=None)
    assert _files(first) == _files(second)
    other_seed = generate.generate_dataset(str(tmp_path / "seed1"), generate.BenchmarkConfig(
        seed=1, train_per_class=3, test_per_class=2), log=None)
    png = os.path.join("images", "train", SMALL.classes()[0]["dir"], "000000.png")
    assert _files(first)[png] != _files(other_seed)[png]


def test_generation_skips_complete_folder_and_repairs_damaged_one(small_benchmark, tmp_path):
    root = str(tmp_path)
    folder = generate.generate_dataset(root, SMALL, log=None)
    assert generate.is_complete(folder, SMALL, verify_hash=True)
    assert not generate.is_complete(folder, generate.DEFAULT_CONFIG)  # another config: not this dataset
    victim = os.path.join(folder, "images", "test", SMALL.classes()[3]["dir"], "000003.png")
    stamp = os.stat(os.path.join(folder, generate.MANIFEST_FILE)).st_mtime_ns
    generate.generate_dataset(root, SMALL, log=None)  # complete: skipped
    assert os.stat(os.path.join(folder, generate.MANIFEST_FILE)).st_mtime_ns == stamp
    with open(victim, "ab") as handle:
        handle.write(b"x")
    assert generate.is_complete(folder, SMALL) and not generate.is_complete(folder, SMALL, verify_hash=True)
    os.remove(victim)
    assert not generate.is_complete(folder, SMALL)
    generate.generate_dataset(root, SMALL, log=None)
    assert generate.is_complete(folder, SMALL, verify_hash=True)
    assert not [p for p in os.listdir(root) if ".tmp" in p]  # staging folder renamed away


RED_STRIPED_WHITE_HEAD = render.ObjectClass("stripes", "red", "white")
ONE_ATTRIBUTE_AWAY = (render.ObjectClass("stripes", "blue", "white"), render.ObjectClass("spots", "red", "white"),
                      render.ObjectClass("stripes", "red", "black"))


def _object_masks(scene_a, scene_b, size):
    """Pixels that an anti-aliased object of either scene touches (coverage above 0)."""
    xs, ys = render.pixel_centres(size)
    touched = (render.scene_body_distance(scene_a, xs, ys) < 0.5) | (render.scene_body_distance(scene_b, xs, ys) < 0.5)
    return touched


@pytest.mark.parametrize("other", ONE_ATTRIBUTE_AWAY, ids=lambda c: f"{c.colour}-{c.pattern}-{c.head}")
def test_a_class_change_repaints_object_pixels_only(other):
    """Same generator, a class one attribute away: the nuisances are drawn identically, the changed pixels all lie on
    the objects (background, clutter and distractors untouched), and they are a good share of the object."""
    domain = render.BENCHMARK_DOMAIN
    for seed in range(5):
        a, scene_a = render.render(np.random.default_rng(seed), domain, RED_STRIPED_WHITE_HEAD)
        b, scene_b = render.render(np.random.default_rng(seed), domain, other)
        assert scene_a.body_centre == scene_b.body_centre and scene_a.distractors == scene_b.distractors
        assert scene_a.clutter == scene_b.clutter and scene_a.body_rgb == scene_b.body_rgb
        assert scene_a.body_shape == scene_b.body_shape and scene_a.head_side == scene_b.head_side
        changed = np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 0
        on_objects = _object_masks(scene_a, scene_b, domain.image_size)
        assert changed.any() and not (changed & ~on_objects).any()
        object_a = regions.region_map(scene_a, domain.image_size) == regions.OBJECT
        # the class evidence spans the object: each attribute repaints a sizable part of it (the head is about a
        # quarter of the body, the pattern covers it all)
        assert (changed & object_a).sum() >= 0.12 * object_a.sum(), (seed, other)


def test_region_map_labels_object_distractors_and_background():
    domain = render.BENCHMARK_DOMAIN
    _, scene = render.render(np.random.default_rng(11), domain, RED_STRIPED_WHITE_HEAD)
    labels = regions.region_map(scene, domain.image_size)
    xs, ys = render.pixel_centres(domain.image_size)
    inside = render.scene_body_distance(scene, xs, ys) < 0
    assert (labels[inside] == regions.OBJECT).all() and not (labels[~inside] == regions.OBJECT).any()
    distractor = np.zeros_like(inside)
    for distance in render.distractor_distances(scene, xs, ys):
        distractor |= distance < 0
    assert (labels[distractor & ~inside] == regions.DISTRACTOR).all()
    assert (labels[~distractor & ~inside] == regions.BACKGROUND).all()
    centre_x, centre_y = (int(c) for c in scene.body_centre)
    assert labels[centre_y, centre_x] == regions.OBJECT


def test_patch_regions_of_a_hand_made_label_map():
    labels = np.zeros((16, 16), dtype=np.uint8)  # 2 x 2 patches of 8 px: [[0, 1], [2, 3]] in row-major order
    labels[0:4, 8:16] = regions.OBJECT  # patch 1: 32 of 64 object pixels (50%) -> OBJECT
    labels[8:12, 0:8] = regions.DISTRACTOR  # patch 2: 32 distractor pixels -> DISTRACTOR
    labels[8:11, 8:16] = regions.OBJECT  # patch 3: 24 object + 32 distractor pixels -> DISTRACTOR
    labels[11:15, 8:16] = regions.DISTRACTOR
    assert regions.patch_regions(labels, 8).tolist() == [regions.BACKGROUND, regions.OBJECT, regions.DISTRACTOR,
                                                         regions.DISTRACTOR]
    assert regions.patch_regions(labels, 8, share=0.375).tolist()[3] == regions.OBJECT


def test_every_nuisance_is_drawn_independently_of_the_class():
    """Over many draws, the object's size, position and distractor count do not depend on the class (same draws)."""
    domain = render.BENCHMARK_DOMAIN
    for seed in range(20):
        scenes = [render.sample_scene(np.random.default_rng(seed), domain, c) for c in (RED_STRIPED_WHITE_HEAD,) + ONE_ATTRIBUTE_AWAY]
        assert len({(s.body_radius, s.body_aspect, s.body_angle, s.pattern_period, len(s.distractors)) for s in scenes}) == 1


def test_render_split_reproduces_the_generated_files(small_benchmark):
    _, folder = small_benchmark
    config = regions.config_from_metadata(generate.load_metadata(folder))
    assert config == SMALL
    images, scenes = regions.render_split(config, "test")
    on_disk, labels = generate.load_split_images(folder, "test")
    assert np.array_equal(images, on_disk) and len(scenes) == len(labels) == 40
    names = [c["name"] for c in SMALL.classes()]
    assert [captions.class_name(s.object_class) for s in scenes] == [names[k] for k in labels]


def test_metadata_and_descriptions(small_benchmark):
    _, folder = small_benchmark
    metadata = generate.load_metadata(folder)
    names = [c["name"] for c in metadata["classes"]]
    assert len(names) == 20 and names[0] == "white-headed object with red stripes"
    assert names[-1] == "black-headed object with purple spots"
    assert [c["label"] for c in metadata["classes"]] == list(range(20))
    with open(os.path.join(folder, generate.DESCRIPTIONS_FILE)) as handle:
        descriptions = json.load(handle)
    assert list(descriptions) == names
    assert all(len(set(d)) >= 5 and all(c["colour"] in s and c["head"] in s for s in d)
               for c, d in zip(metadata["classes"], descriptions.values()))
    assert all(t.count("{}") == 1 for t in metadata["templates"])
    assert not set(class_text.TEMPLATES) & {f.replace("{thing}", "{}") for f in captions.CAPTION_FRAMES}
    # every pair of classes that differs in one attribute exists (the fine-grained confusions)
    attributes = {(c["pattern"], c["colour"], c["head"]) for c in metadata["classes"]}
    assert len(attributes) == 20
    one_away = sum(sum(x != y for x, y in zip(a, b)) == 1 for a in attributes for b in attributes) // 2
    assert one_away == 20 * (1 + 1 + 4) // 2


def test_unknown_attribute_is_refused_with_the_known_values():
    with pytest.raises(ValueError, match=r"BenchmarkConfig.colours.*known|need distinct values"):
        generate.BenchmarkConfig(colours=("red", "teal"))
    with pytest.raises(ValueError, match="known values"):
        render.ObjectClass("zigzag", "red", "white")


def test_missing_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python -m clipkit.tinybench.prepare --data-root"):
        generate.load_metadata(generate.dataset_dir(str(tmp_path)))


def test_trimmed_tokens_give_the_same_text_features():
    from clipkit.clip import build_tiny_clip, tokenize

    model = build_tiny_clip(seed=0)
    texts = ["a white-headed hexagon with red stripes.", "there is a green spotted block with a black head."]
    with torch.no_grad():
        full = model.encode_text(tokenize(texts))
        trimmed = model.encode_text(pretrain.tokenize_trimmed(texts))
    assert pretrain.tokenize_trimmed(texts).shape[1] < 77
    torch.testing.assert_close(full, trimmed, rtol=1e-5, atol=1e-5)


def test_short_pretraining_lowers_loss_and_round_trips(tmp_path, one_thread):
    from clipkit.clip import load_clip

    model, history = pretrain.pretrain(SHORT_RECIPE, log=None)
    losses = history["loss"]
    assert len(losses) == SHORT_RECIPE.steps and all(np.isfinite(losses))
    # chance level of the summed InfoNCE terms ([CLS] and, weighted, the dense term): (1 + w) ln(batch)
    chance = (1.0 + SHORT_RECIPE.dense_alignment_weight) * np.log(SHORT_RECIPE.batch_size)
    assert np.mean(losses[-5:]) < min(np.mean(losses[:5]), chance) - 1.0, losses
    path = str(tmp_path / "bench.pt")
    pretrain.save_pretrained(model, history, SHORT_RECIPE, path)
    assert pretrain.is_pretrained(path, SHORT_RECIPE) and not pretrain.is_pretrained(path, pretrain.DEFAULT_RECIPE)
    loaded = load_clip(path)
    image = pretrain.to_model_input(np.zeros((1, 64, 64, 3), dtype=np.uint8))
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(image), model.encode_image(image))


def test_token_text_similarity_matches_a_reference_computation():
    from clipkit.clip import build_tiny_clip

    model = build_tiny_clip(seed=0)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    texts = torch.nn.functional.normalize(torch.randn(5, model.visual.proj.shape[1]), dim=-1)
    with torch.no_grad():
        x = model.visual.conv1(images).flatten(2).transpose(1, 2)
        x = torch.cat([model.visual.class_embedding.expand(3, 1, -1), x], dim=1) + model.visual.positional_embedding
        x = model.visual.ln_pre(x)
        for block in model.visual.transformer.resblocks[:-1]:  # batch-first blocks of a reference forward
            x = block(x.permute(1, 0, 2)).permute(1, 0, 2)
        last = model.visual.transformer.resblocks[-1]
        width = x.shape[-1]
        v = x + last.attn.out_proj(last.ln_1(x) @ last.attn.in_proj_weight[2 * width:].t() + last.attn.in_proj_bias[2 * width:])
        tokens = model.visual.ln_post(v + last.mlp(last.ln_2(v)))[:, 1:] @ model.visual.proj  # (3, 64, D)
        per_token = torch.nn.functional.normalize(tokens, dim=-1) @ texts.t()  # (3, 64, 5)
        cls, top1 = pretrain.token_text_similarity(model, images, texts, top_k=1)
        _, top4 = pretrain.token_text_similarity(model, images, texts, top_k=4)
        _, mean_token = pretrain.token_text_similarity(model, images, texts, top_k=0)
        mask = torch.zeros(3, tokens.shape[1], dtype=torch.bool)
        mask[0, [3, 9]] = True
        mask[1, :] = True
        mask[2, 60] = True
        _, on_object = pretrain.token_text_similarity(model, images, texts, top_k=1, patch_mask=mask)
    by_hand = torch.stack([tokens[0, [3, 9]].mean(0), tokens[1].mean(0), tokens[2, 60]])
    torch.testing.assert_close(on_object, torch.nn.functional.normalize(by_hand, dim=-1) @ texts.t())
    torch.testing.assert_close(cls, torch.nn.functional.normalize(model.encode_image(images), dim=-1))
    torch.testing.assert_close(top1, per_token.max(dim=1).values)
    torch.testing.assert_close(top4, per_token.sort(dim=1, descending=True).values[:, :4].mean(dim=1))
    torch.testing.assert_close(mean_token, torch.nn.functional.normalize(tokens.mean(dim=1), dim=-1) @ texts.t())


def test_camera_is_identity_by_default_and_applies_gain_then_haze():
    image = np.random.default_rng(0).uniform(0, 255, (4, 4, 3))
    np.testing.assert_array_equal(render.apply_camera(image, render.SceneDomain()), image)
    domain = render.SceneDomain(channel_gain=(1.0, 0.5, 2.0), haze=0.25, haze_rgb=(100.0, 0.0, 40.0))
    expected = 0.75 * image * np.array([1.0, 0.5, 2.0]) + 0.25 * np.array([100.0, 0.0, 40.0])
    np.testing.assert_allclose(render.apply_camera(image, domain), expected)


def test_checkpoint_name_resolves_after_reader_import(tmp_path, monkeypatch):
    import datasets.tiny  # noqa: F401  (registers the name)
    from clipkit import tinybench
    from clipkit.clip import build_tiny_clip, load_clip, save_tiny_clip

    monkeypatch.setenv("CLIPKIT_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"python -m clipkit.tinybench.prepare"):
        load_clip(tinybench.CHECKPOINT_NAME)
    save_tiny_clip(build_tiny_clip(seed=3), tinybench.checkpoint_path())
    assert load_clip(tinybench.CHECKPOINT_NAME).checkpoint_path == tinybench.checkpoint_path()


def _reader_cfg(root, num_shots=-1):
    import train

    from clipkit.dassl import get_cfg_default

    cfg = get_cfg_default()
    train.extend_cfg(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "datasets", "tiny.yaml"))
    cfg.DATASET.ROOT = root
    cfg.DATASET.NUM_SHOTS = num_shots
    return cfg


def test_reader_reports_classes_sizes_and_text_resources(small_benchmark, tmp_path):
    from datasets.tiny import TinyFineGrained

    from clipkit.text import resolve_descriptions

    root, folder = small_benchmark
    dataset = TinyFineGrained(_reader_cfg(root))
    metadata = generate.load_metadata(folder)
    assert dataset.classnames == [c["name"] for c in metadata["classes"]] and dataset.num_classes == 20
    assert len(dataset.train_x) == 60 and len(dataset.test) == 40
    assert all(item.classname == dataset.classnames[item.label] for item in dataset.train_x + dataset.test)
    assert all(f"{os.sep}test{os.sep}" in item.impath for item in dataset.test)
    assert dataset.templates == class_text.TEMPLATES
    descriptions = resolve_descriptions(_reader_cfg(root), dataset)
    assert set(descriptions) == set(dataset.classnames)
    assert len(TinyFineGrained(_reader_cfg(root, num_shots=1)).train_x) == 20
    with pytest.raises(FileNotFoundError, match="prepare --data-root"):
        TinyFineGrained(_reader_cfg(str(tmp_path)))


def _short_run(script, root, checkpoint, out, trainer="MicroCLIP"):
    """One epoch of a trainer's tiny config on the small benchmark through ``script`` (train.py's CLI); results.json."""
    cmd = [sys.executable, script, "--root", root, "--trainer", trainer, "--seed", "1",
           "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "tiny.yaml"),
           "--config-file", os.path.join(REPO, "configs", "trainers", trainer, "tiny.yaml"),
           "--output-dir", str(out), "MODEL.BACKBONE.NAME", checkpoint, "OPTIM.MAX_EPOCH", "1",
           "DATALOADER.TRAIN_X.BATCH_SIZE", "16", "DATALOADER.NUM_WORKERS", "0", "USE_CUDA", "False"]
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def test_short_run_through_train_py(small_benchmark, tmp_path, one_thread):
    """The real pipeline on the benchmark: generated data, a shortly pretrained CLIP, MicroCLIP via train.py."""
    if not os.path.isfile(os.path.join(REPO, "trainers", "microclip.py")):
        pytest.skip("trainers/microclip.py not present")
    root, _ = small_benchmark
    model, history = pretrain.pretrain(SHORT_RECIPE.shortened(steps=10), log=None)
    checkpoint = pretrain.save_pretrained(model, history, SHORT_RECIPE, str(tmp_path / "bench.pt"))
    out = tmp_path / "run"
    results = _short_run(os.path.join(REPO, "train.py"), root, checkpoint, out)
    assert results["method"] == "MicroCLIP" and results["dataset"] == "tiny" and results["num_test"] == 40
    assert 0.0 <= results["accuracy_last"] <= 100.0 and len(results["epochs"]) == 1


def test_diagnostics_script_runs_on_a_small_benchmark(small_benchmark, tiny_clip_path, capsys, one_thread):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import tiny_diagnostics
    finally:
        sys.path.remove(os.path.join(REPO, "benchmarks"))
    root, _ = small_benchmark
    assert tiny_diagnostics.main(["--checkpoint", tiny_clip_path, "--data-root", root, "--oracle-steps", "4",
                                  "--views"]) == 0
    out = capsys.readouterr().out
    for row in ("zero-shot [CLS]", "microCLIP [FG] at init", "accuracy by region", "NCut mask: % of each region",
                "linear probe", "oracle LN + classifier tuning", "benchmark properties",
                "object share of the patches", "SOAP attention on the true object", "NCut-average [FG]",
                "on its head's / its body's tokens", "the head's share of the object's tokens", "(sharper)",
                "its head's tokens averaged",
                "seen through a view", "invert", "LaFTer strong view", "on one view per train image",
                "a fresh view of every batch"):
        assert row in out, out


def test_attribute_accuracy_counts_each_attribute_of_the_predicted_class():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import tiny_diagnostics
    finally:
        sys.path.remove(os.path.join(REPO, "benchmarks"))
    classes = [dict(pattern="stripes", colour="red", head="white"), dict(pattern="spots", colour="red", head="white"),
               dict(pattern="stripes", colour="blue", head="black")]
    # true 0 predicted 0 (all right), true 0 predicted 1 (pattern wrong), true 2 predicted 0 (colour, head wrong),
    # true 1 predicted 2 (all wrong)
    got = tiny_diagnostics.attribute_accuracy(np.array([0, 1, 0, 2]), np.array([0, 0, 2, 1]), classes)
    assert got == {"pattern": 50.0, "colour": 50.0, "head": 50.0}
    got = tiny_diagnostics.attribute_accuracy(np.array([1]), np.array([0]), classes)
    assert got == {"pattern": 0.0, "colour": 100.0, "head": 100.0}


def test_oracle_labels_script_trains_microclip_on_the_true_labels(small_benchmark, tiny_clip_path, tmp_path):
    """benchmarks/tiny_oracle_labels.py: the trainer's own run, pseudo-labels swapped for the truth (pl_accuracy 100;
    a random-init CLIP's own pseudo-labels on 20 classes are far from that)."""
    root, _ = small_benchmark
    results = _short_run(os.path.join(REPO, "benchmarks", "tiny_oracle_labels.py"), root, tiny_clip_path,
                                   tmp_path / "run")
    assert results["method"] == "MicroCLIP" and len(results["epochs"]) == 1
    assert results["epochs"][0]["pl_accuracy"] == pytest.approx(100.0)


def test_property_checks_of_the_diagnostics_hold_and_fail_at_their_bounds():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import tiny_diagnostics
    finally:
        sys.path.remove(os.path.join(REPO, "benchmarks"))
    good = {"zero_shot": 30.0, "object_patch_share": 40.0, "fg_object_gain": 0.0, "probe_gain": 10.0}
    assert all(row[-1] for row in tiny_diagnostics.check_properties(good))
    for key, value in (("zero_shot", 70.5), ("zero_shot", 29.9), ("object_patch_share", 14.0),
                       ("fg_object_gain", -0.1), ("probe_gain", 9.9)):
        rows = tiny_diagnostics.check_properties(dict(good, **{key: value}))
        assert [row[0] for row in rows if not row[-1]] == [n for n, k, _, _ in tiny_diagnostics.PROPERTIES if k == key]


def test_object_patches_are_the_half_covered_patches_or_the_most_covered_one():
    domain = render.BENCHMARK_DOMAIN
    _, scene = render.render(np.random.default_rng(3), domain, RED_STRIPED_WHITE_HEAD)
    labels = regions.region_map(scene, domain.image_size)
    share = (labels == regions.OBJECT).reshape(8, 8, 8, 8).mean(axis=(1, 3)).reshape(-1)  # 8 x 8 patches of 8 px
    np.testing.assert_array_equal(regions.object_patches(scene, domain.image_size, 8), share >= 0.5)
    tiny = render.sample_scene(np.random.default_rng(3), render.SceneDomain(body_radius=(2.0, 2.0)), RED_STRIPED_WHITE_HEAD)
    tiny_share = (regions.region_map(tiny, 64) == regions.OBJECT).reshape(8, 8, 8, 8).mean(axis=(1, 3)).reshape(-1)
    assert tiny_share.max() < 0.5
    assert regions.object_patches(tiny, 64, 8).tolist() == [i == tiny_share.argmax() for i in range(64)]


@pytest.mark.parametrize("trainer,key", [("UPL", "pl_subset_accuracy"), ("DPA", "pl_accuracy")])
def test_oracle_labels_script_patches_other_methods(small_benchmark, tiny_clip_path, tmp_path, trainer, key):
    """The oracle's substitution for an offline pseudo-labeller (UPL's kept subset) and a per-batch one (DPA): the
    logged pseudo-label accuracy reads 100 (a random-init CLIP's own labels are near chance)."""
    root, _ = small_benchmark
    results = _short_run(os.path.join(REPO, "benchmarks", "tiny_oracle_labels.py"), root, tiny_clip_path,
                                   tmp_path / "run", trainer=trainer)
    found = [r[key] for r in [results] + results["epochs"] if key in r]
    found += [v[key] for v in results.values() if isinstance(v, dict) and key in v]
    assert found and all(value == pytest.approx(100.0) for value in found), results


def test_oracle_labels_all_mode_prints_the_margin_table_and_reuses_finished_runs(small_benchmark, tiny_clip_path,
                                                                                 tmp_path):
    """``--all``: zero-shot and the chosen method's oracle, each a subprocess with the trailing overrides; the exit
    status says whether every margin holds; a second call reuses the finished run folders."""
    root, _ = small_benchmark
    out = tmp_path / "oracles"

    def run_all(margin):
        cmd = [sys.executable, os.path.join(REPO, "benchmarks", "tiny_oracle_labels.py"), "--all", "--root", root,
               "--output-root", str(out), "--methods", "ReCLIP", "--margin", str(margin),
               "MODEL.BACKBONE.NAME", tiny_clip_path, "OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "0",
               "USE_CUDA", "False"]
        env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    first = run_all(-1000)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    reclip = json.loads((out / "ReCLIP" / "seed1" / "results.json").read_text())
    zero_shot = json.loads((out / "ZeroshotCLIP" / "seed1" / "results.json").read_text())
    assert len(reclip["epochs"]) == 1  # the trailing override reached the run
    row = f"| ReCLIP | {reclip['accuracy_last']:.2f} | {reclip['accuracy_last'] - zero_shot['accuracy_last']:+.2f} |"
    assert row in first.stdout and "| yes |" in first.stdout, first.stdout
    stamp = os.path.getmtime(out / "ReCLIP" / "seed1" / "results.json")
    second = run_all(1000)
    assert second.returncode == 1 and "| NO |" in second.stdout, second.stdout
    assert os.path.getmtime(out / "ReCLIP" / "seed1" / "results.json") == stamp  # reused, not re-run


def test_head_patches_are_the_patches_mostly_repainted_when_only_the_head_colour_changes():
    """Reference: render the same scene with a white and a black head; the head's pixels are those that change by
    more than half the (camera-scaled) colour difference, i.e. the head covers more than half of them."""
    domain = render.BENCHMARK_DOMAIN
    black_head = render.ObjectClass(RED_STRIPED_WHITE_HEAD.pattern, RED_STRIPED_WHITE_HEAD.colour, "black")
    for seed in range(4):
        white, scene = render.render(np.random.default_rng(seed), domain, RED_STRIPED_WHITE_HEAD)
        black, _ = render.render(np.random.default_rng(seed), domain, black_head)
        change = np.abs(white.astype(np.float64) - black.astype(np.float64)).sum(axis=-1)
        full_change = np.abs(np.subtract(scene.head_rgb, render.HEAD_COLOURS["black"]) * domain.channel_gain).sum()
        head_pixels = change > full_change / 2
        share = head_pixels.reshape(8, 8, 8, 8).mean(axis=(1, 3)).reshape(-1)
        found = regions.head_patches(scene, domain.image_size, 8)
        assert found.any()
        np.testing.assert_array_equal(found, share >= 0.5)


def test_oracle_tuning_with_a_view_trains_on_a_fresh_draw_of_every_batch(tiny_clip_path, one_thread):
    """``oracle_layernorm_tuning(view=...)``: every step's 64 images go through the view (64 calls per step) and the
    tuned model sees the viewed images, not the given ones (a view that blanks the images changes the curve)."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import tiny_diagnostics
    finally:
        sys.path.remove(os.path.join(REPO, "benchmarks"))
    from PIL import Image

    from clipkit.clip import load_clip

    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (32, 64, 64, 3), dtype=np.uint8)
    train_y = rng.integers(0, 4, 32)
    test_x, test_y = train_x[:8], train_y[:8]
    classifier = torch.nn.functional.normalize(torch.randn(4, load_clip(tiny_clip_path).visual.proj.shape[1]), dim=-1)
    calls = []

    def blank(image):
        calls.append(image.size)
        return Image.new("RGB", image.size)

    def tuned_layer_norm(view):
        torch.manual_seed(0)
        model = load_clip(tiny_clip_path).float().eval()
        curve = tiny_diagnostics.oracle_layernorm_tuning(model, classifier, train_x, train_y, test_x, test_y, steps=4,
                                                         lr=1e-2, view=view)
        assert [step for step, _ in curve] == [1, 2, 3, 4]
        return model.visual.ln_post.weight.detach().clone()

    plain = tuned_layer_norm(None)
    assert not calls
    blanked = tuned_layer_norm(blank)
    assert len(calls) == 4 * 64 and set(calls) == {(64, 64)}
    assert not torch.allclose(plain, blanked)  # trained on the blank views, not on the given images
    assert torch.equal(tuned_layer_norm(None), plain)  # same batches without a view: the same tuning
