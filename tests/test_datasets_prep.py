"""Offline prep scripts (scripts/prep_*.py, scripts/download_descriptions.py) on tiny generated inputs."""

import csv
import importlib.util
import json
import os
import pickle

import numpy as np
import pytest
import scipy.io
from PIL import Image

from clipkit.config import extend_cfg
from clipkit.dassl import get_cfg_default
from datasets.birdsnap import Birdsnap
from datasets.cifar100 import CIFAR100Classes
from datasets.sun397 import SUN397

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("prep_splits", "prep_cifar100", "prep_ucf101_midframes", "prep_imagenet_val", "download_descriptions")


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"script_{name}", os.path.join(REPO, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def image(path, color=(0, 0, 0), size=(8, 8)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def text(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(f"{line}\n" for line in lines))


def make_cfg(root):
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.DATASET.ROOT = str(root)
    return cfg


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        load_script(name).main(["--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def build_sun(root, per_class=10):
    entries = ["/a/abbey", "/b/bakery/shop"]
    text(f"{root}/sun397/ClassName.txt", entries)
    for label, entry in enumerate(entries):
        for i in range(per_class):
            image(f"{root}/sun397/SUN397{entry}/sun_{label}_{i:03d}.jpg")


def test_prep_splits_is_seeded_reproducible_and_guarded(tmp_path):
    build_sun(tmp_path)
    prep = load_script("prep_splits")
    path = prep.generate("sun397", str(tmp_path), seed=0)
    first = json.load(open(path))
    assert first["meta"]["seed"] == 0 and first["meta"]["image_folder"] == "SUN397"
    assert [len(first[p]) for p in ("train", "val", "test")] == [14, 2, 4]  # 7/1/2 per class
    with pytest.raises(SystemExit, match="--force"):
        prep.generate("sun397", str(tmp_path), seed=0)
    prep.main(["--dataset", "sun397", "--root", str(tmp_path), "--force"])
    assert json.load(open(path)) == first
    prep.generate("sun397", str(tmp_path), seed=1, force=True)
    assert json.load(open(path))["train"] != first["train"]
    dataset = SUN397(make_cfg(tmp_path))
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (14, 0, 4)


def test_prep_splits_birdsnap_uses_present_images_and_records_folder(tmp_path, capsys):
    d = tmp_path / "birdsnap"
    text(f"{d}/species.txt", ["id\tcommon\tscientific\tdir", "1\tBlue Jay\tCyanocitta cristata\tBlue_Jay",
                              "2\tBald Eagle\tHaliaeetus leucocephalus\tBald_Eagle"])
    rows = ["url\tmd5\tpath\tspecies_id"]
    for species_id, folder in ((1, "Blue_Jay"), (2, "Bald_Eagle")):
        for i in range(6):
            rows.append(f"http://example.invalid/x.jpg\t0\t{folder}/{species_id}{i}.jpg\t{species_id}")
            if i < 5:
                image(f"{d}/my_images/{folder}/{species_id}{i}.jpg")
    text(f"{d}/images.txt", rows)
    load_script("prep_splits").main(["--dataset", "birdsnap", "--root", str(tmp_path), "--image-folder", "my_images"])
    assert "10 of 12 images" in capsys.readouterr().out
    dataset = Birdsnap(make_cfg(tmp_path))
    assert (len(dataset.train_x), len(dataset.test)) == (8, 2)
    assert all("my_images" in item.impath for item in dataset.train_x)
    assert dataset.classnames == ["Blue Jay", "Bald Eagle"]


def test_prep_cifar100_writes_class_folders_the_reader_reads(tmp_path):
    archive = tmp_path / "cifar100" / "cifar-100-python"
    os.makedirs(archive)
    names = ["apple", "aquarium_fish", "bear"]
    rng = np.random.default_rng(0)
    pickle.dump({"fine_label_names": names, "coarse_label_names": ["c"]}, open(archive / "meta", "wb"))
    parts = {}
    for part, count in (("train", 6), ("test", 3)):
        data = rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8)
        labels = [i % 3 for i in range(count)]
        pickle.dump({"data": data, "fine_labels": labels, "coarse_labels": [0] * count}, open(archive / part, "wb"))
        parts[part] = (data, labels)
    load_script("prep_cifar100").main(["--root", str(tmp_path)])
    data, labels = parts["train"]
    written = np.asarray(Image.open(tmp_path / "cifar100" / "train" / names[labels[4]] / "00004.png"))
    assert np.array_equal(written, data[4].reshape(3, 32, 32).transpose(1, 2, 0))
    dataset = CIFAR100Classes(make_cfg(tmp_path))
    assert (len(dataset.train_x), len(dataset.test)) == (6, 3)
    assert dataset.classnames == ["apple", "aquarium fish", "bear"]


def write_gif_video(path, colors):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    frames = [Image.new("RGB", (16, 16), color) for color in colors]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40)


def test_prep_ucf101_extracts_the_middle_frame(tmp_path):
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 255, 255)]
    write_gif_video(f"{tmp_path}/ucf101/UCF-101/YoYo/v_YoYo_g01_c01.gif", colors)
    prep = load_script("prep_ucf101_midframes")
    prep.main(["--root", str(tmp_path)])
    frame = np.asarray(Image.open(tmp_path / "ucf101" / "UCF-101-midframes" / "Yo_Yo" / "v_YoYo_g01_c01.jpg"))
    assert np.abs(frame.reshape(-1, 3).mean(0) - np.array(colors[len(colors) // 2])).max() < 10


def write_avi_video(path, colors, size=32):
    """An MPEG-4 .avi (UCF101's container) with one solid-colour frame per colour, written with PyAV."""
    import av

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for color in colors:
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), color, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_prep_ucf101_decodes_avi_and_lists_unreadable_videos(tmp_path, capsys):
    """The installed decoder (PyAV, requirements.txt) reads .avi; broken videos are skipped, counted and listed."""
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 255, 255)]
    videos = tmp_path / "ucf101" / "UCF-101" / "ApplyEyeMakeup"
    write_avi_video(videos / "v_ApplyEyeMakeup_g01_c01.avi", colors)
    (videos / "v_ApplyEyeMakeup_g02_c01.avi").write_bytes(b"not a video")
    (videos / "v_ApplyEyeMakeup_g03_c01.avi").write_bytes((videos / "v_ApplyEyeMakeup_g01_c01.avi").read_bytes()[:200])
    prep = load_script("prep_ucf101_midframes")
    assert prep.main(["--root", str(tmp_path)]) == 1
    frames = tmp_path / "ucf101" / "UCF-101-midframes" / "Apply_Eye_Makeup"
    frame = np.asarray(Image.open(frames / "v_ApplyEyeMakeup_g01_c01.jpg"))
    assert np.abs(frame.reshape(-1, 3).mean(0) - np.array(colors[len(colors) // 2])).max() < 10
    assert sorted(os.listdir(frames)) == ["v_ApplyEyeMakeup_g01_c01.jpg"]
    failed_list = tmp_path / "ucf101" / "unreadable_videos.txt"
    listed = [line.split("\t")[0] for line in failed_list.read_text().splitlines()]
    assert listed == [str(videos / "v_ApplyEyeMakeup_g02_c01.avi"), str(videos / "v_ApplyEyeMakeup_g03_c01.avi")]
    err = capsys.readouterr().err
    assert f"2 of 3 videos could not be decoded and were skipped; their paths are in {failed_list}" in err
    assert "install" not in err.lower()
    with pytest.raises(RuntimeError, match=r"cannot decode .*v_ApplyEyeMakeup_g02_c01\.avi"):
        prep.middle_frame(str(videos / "v_ApplyEyeMakeup_g02_c01.avi"))
    for broken in ("g02", "g03"):  # fixed copies: the rerun decodes them and removes the stale list
        write_avi_video(videos / f"v_ApplyEyeMakeup_{broken}_c01.avi", colors)
    assert prep.main(["--root", str(tmp_path)]) == 0
    assert len(os.listdir(frames)) == 3 and not failed_list.exists()


def test_prep_cifar100_names_a_truncated_pickle(tmp_path):
    archive = tmp_path / "cifar100" / "cifar-100-python"
    os.makedirs(archive)
    pickle.dump({"fine_label_names": ["apple"]}, open(archive / "meta", "wb"))
    data = pickle.dumps({"data": np.zeros((4, 3072), dtype=np.uint8), "fine_labels": [0] * 4})
    (archive / "train").write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit, match=r"cannot read .*train .*truncated or not a CIFAR-100 python pickle: "
                                         r"download cifar-100-python\.tar\.gz again"):
        load_script("prep_cifar100").main(["--root", str(tmp_path)])
    pickle.dump({"labels": [0]}, open(archive / "meta", "wb"))  # a CIFAR-10 batch, not CIFAR-100's meta
    with pytest.raises(SystemExit, match=r"has no \['fine_label_names'\] entry"):
        load_script("prep_cifar100").main(["--root", str(tmp_path)])


def test_prep_splits_resisc45_misplaced_folders(tmp_path, capsys):
    prep = load_script("prep_splits")
    for folder in ("airplane", "sea_ice"):
        for i in range(5):
            image(f"{tmp_path}/NWPU-RESISC45/{folder}/{folder}_{i:03d}.jpg")
    with pytest.raises(SystemExit, match=rf"resisc45 does not exist\. Found {tmp_path}/NWPU-RESISC45 directly under"):
        prep.generate("resisc45", str(tmp_path))
    os.rename(tmp_path / "NWPU-RESISC45", tmp_path / "resisc45")  # class folders straight in resisc45/
    with pytest.raises(SystemExit, match=r"holds image folders directly \(airplane, sea_ice\).*--image-folder \."):
        prep.generate("resisc45", str(tmp_path))
    prep.main(["--dataset", "resisc45", "--root", str(tmp_path), "--image-folder", "."])
    err = capsys.readouterr().err  # made anyway, from the 2 classes present
    assert "warning: RESISC45: the class folders of" in err and "missing 43 of the 45 official class folders" in err
    from datasets.resisc45 import RESISC45

    dataset = RESISC45(make_cfg(tmp_path))
    assert dataset.classnames == ["airplane", "sea ice"]
    assert (len(dataset.train_x), len(dataset.test)) == (8, 2)


def build_flat_val(tmp_path, count=4):
    val = tmp_path / "flat_val"
    stems = [f"ILSVRC2012_val_{i + 1:08d}" for i in range(count)]
    for stem in stems:
        image(f"{val}/{stem}.JPEG")
    return val, stems


def test_prep_imagenet_val_from_kaggle_solution(tmp_path):
    val, stems = build_flat_val(tmp_path)
    wnids = ["n01440764", "n01443537", "n01440764", "n01484850"]
    with open(tmp_path / "LOC_val_solution.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", "PredictionString"])
        for stem, wnid in zip(stems, wnids):
            writer.writerow([stem, f"{wnid} 1 2 3 4"])
    load_script("prep_imagenet_val").main(["--root", str(tmp_path), "--val-dir", str(val),
                                           "--solution", str(tmp_path / "LOC_val_solution.csv")])
    out = tmp_path / "imagenet" / "images" / "val"
    for stem, wnid in zip(stems, wnids):
        assert os.path.isfile(out / wnid / f"{stem}.JPEG")
    assert sorted(os.listdir(out / "n01440764")) == [f"{stems[0]}.JPEG", f"{stems[2]}.JPEG"]


def test_prep_imagenet_val_from_devkit(tmp_path):
    val, stems = build_flat_val(tmp_path)
    devkit = tmp_path / "devkit" / "data"
    os.makedirs(devkit)
    synsets = np.zeros((3, 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O")])
    for row, (ilsvrc_id, wnid) in enumerate([(1, "n02119789"), (2, "n02100735"), (3, "n01440764")]):
        synsets[row, 0] = (ilsvrc_id, wnid, "x")
    scipy.io.savemat(devkit / "meta.mat", {"synsets": synsets})
    text(f"{devkit}/ILSVRC2012_validation_ground_truth.txt", ["3", "1", "1", "2"])
    load_script("prep_imagenet_val").main(["--root", str(tmp_path), "--val-dir", str(val), "--devkit",
                                           str(tmp_path / "devkit"), "--mode", "copy"])
    out = tmp_path / "imagenet" / "images" / "val"
    assert os.listdir(out / "n01440764") == [f"{stems[0]}.JPEG"]
    assert sorted(os.listdir(out / "n02119789")) == [f"{stems[1]}.JPEG", f"{stems[2]}.JPEG"]


def test_download_descriptions_from_a_mirror(tmp_path, capsys):
    mirror = tmp_path / "mirror"
    table = {"banded": ["stripes"], "bumpy": ["bumps"]}
    os.makedirs(mirror / "all_prompts" / "full_prompts")
    json.dump(table, open(mirror / "all_prompts" / "full_prompts" / "texture_prompts_full.json", "w"))
    script = load_script("download_descriptions")
    dest = tmp_path / "descriptions"
    args = ["--dataset", "dtd", "--base-url", mirror.as_uri(), "--dest", str(dest)]
    assert script.main(args) == 0
    assert json.load(open(dest / "dtd.json")) == table
    assert script.main(["--dataset", "ucf101", "--base-url", mirror.as_uri(), "--dest", str(dest)]) == 1
    assert not os.path.exists(dest / "ucf101.json")
    script.main(["--list", "--variant", "full"])
    listing = capsys.readouterr().out
    cupl = "https://raw.githubusercontent.com/sarahpratt/CuPL/main/"
    assert f"imagenet\t{cupl}imagenet_prompts/CuPL_image_prompts.json" in listing
    assert len([line for line in listing.splitlines() if "\thttp" in line]) == 13
