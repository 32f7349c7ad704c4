"""The 13 benchmark readers on tiny trees in each dataset's official layout (real metadata formats).

One builder per layout writes a few 8x8 images per class plus the metadata files, and returns what the reader must
report: class names in label order, split sizes, the true label of every image, and a metadata file whose absence
must stop the reader with a message naming it.
"""

import json
import os
import pickle
from dataclasses import dataclass, field

import numpy as np
import pytest
import scipy.io

from clipkit.config import extend_cfg
from clipkit.dassl import get_cfg_default
from datasets._common import DatasetLayoutError
from datasets._splits import write_split_file
from datasets.birdsnap import Birdsnap
from datasets.caltech101 import CALTECH101_FOLDERS, Caltech101, caltech101_classnames
from datasets.cifar100 import CIFAR100Classes
from datasets.dtd import DTD_CLASSES, DescribableTextures
from datasets.fgvc_aircraft import FGVCAircraft
from datasets.food101 import Food101
from datasets.imagenet import ImageNet
from datasets.oxford_flowers import OxfordFlowers
from datasets.oxford_pets import OxfordPets
from datasets.resisc45 import RESISC45, RESISC45_CLASSES
from datasets.stanford_cars import StanfordCars
from datasets.sun397 import SUN397
from datasets.ucf101 import UCF101

RNG = np.random.default_rng(0)
TINY_IMAGE = RNG.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)


def image(path):
    """Write an 8x8 RGB image (format from the extension); returns the absolute path."""
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(TINY_IMAGE).save(path)
    return os.path.abspath(path)


def text(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{line}\n" for line in lines))


@dataclass
class Tree:
    reader: type
    classnames: list
    sizes: tuple  # (train, val, test)
    labels: dict  # absolute image path -> true label
    missing: str  # path (relative to the dataset folder) of a metadata file the reader needs
    cfg: dict = field(default_factory=dict)


def make_cfg(root, protocol="microclip", **overrides):
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.SPLIT_PROTOCOL = protocol
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for parent in parents:
            node = getattr(node, parent)
        setattr(node, leaf, value)
    return cfg


# ------------------------------------------------------------------------------------------------ tree builders


def build_oxford_pets(root):
    d = root / "oxford_pets"
    breeds = [("Abyssinian", 1), ("american_bulldog", 2), ("great_pyrenees", 3)]
    labels, lines = {}, {"trainval": [], "test": []}
    for breed, class_id in breeds:
        for i in range(3):
            labels[image(f"{d}/images/{breed}_{i + 1}.jpg")] = class_id - 1
            lines["trainval" if i < 2 else "test"].append(f"{breed}_{i + 1} {class_id} 1 {class_id}")
    for part, part_lines in lines.items():
        text(f"{d}/annotations/{part}.txt", part_lines)
    return Tree(OxfordPets, ["abyssinian", "american bulldog", "great pyrenees"], (6, 0, 3), labels,
                "annotations/test.txt")


def mat_struct(rows, fields):
    array = np.zeros((1, len(rows)), dtype=[(name, "O") for name in fields])
    for i, row in enumerate(rows):
        array[0, i] = row
    return array


def build_stanford_cars(root):
    d = root / "stanford_cars"
    names = ["AM General Hummer SUV 2000", "Ram C/V Cargo Van Minivan 2012", "Acura RL Sedan 2012"]
    os.makedirs(d / "devkit", exist_ok=True)
    scipy.io.savemat(d / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})
    labels = {}
    for part, per_class, mat in (("train", 2, d / "devkit" / "cars_train_annos.mat"),
                                 ("test", 1, d / "cars_test_annos_withlabels.mat")):
        rows = []
        for label in (2, 0, 1):  # annotation order unrelated to label order
            for _ in range(per_class):
                fname = f"{len(rows) + 1:05d}.jpg"
                labels[image(f"{d}/cars_{part}/{fname}")] = label
                rows.append((np.uint8(10), np.uint8(label + 1), fname))
        scipy.io.savemat(mat, {"annotations": mat_struct(rows, ("bbox_x1", "class", "fname"))})
    return Tree(StanfordCars, names, (6, 0, 3), labels, "devkit/cars_meta.mat")


FGVC_VARIANTS = ["707-320", "BAE 146-200", "BAE 146-300", "BAE-125", "F/A-18"]  # official variants.txt order


def build_fgvc_aircraft(root):
    d = root / "fgvc_aircraft"
    text(f"{d}/variants.txt", FGVC_VARIANTS)
    labels, image_id = {}, 1000000
    for part, per_class in (("train", 2), ("val", 1), ("test", 1)):
        lines = []
        for label, variant in enumerate(FGVC_VARIANTS):
            for _ in range(per_class):
                image_id += 1
                labels[image(f"{d}/images/{image_id}.jpg")] = label
                lines.append(f"{image_id} {variant}")
        text(f"{d}/images_variant_{part}.txt", lines)
    return Tree(FGVCAircraft, FGVC_VARIANTS, (10, 0, 5), labels, "variants.txt")


def build_oxford_flowers(root):
    d = root / "oxford_flowers"
    names = ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"]
    with open(os.makedirs(d, exist_ok=True) or d / "cat_to_name.json", "w") as f:
        json.dump({str(i + 1): name for i, name in enumerate(names)}, f)
    official, splits, labels = [], {"train": [], "val": [], "test": []}, {}
    for index in range(1, 16):
        label = (index * 7) % 3  # labels scattered over the image index
        official.append(label + 1)
        fname = f"image_{index:05d}.jpg"
        labels[image(f"{d}/jpg/{fname}")] = label
        part = ("train", "train", "val", "test", "test")[index % 5]
        splits[part].append((fname, label, names[label]))
    scipy.io.savemat(d / "imagelabels.mat", {"labels": np.array([official], dtype=np.uint8)})
    write_split_file(str(d / "split_zhou_OxfordFlowers.json"), splits, {})
    sizes = tuple(len(splits[p]) for p in ("train", "val", "test"))
    return Tree(OxfordFlowers, names, (sizes[0], 0, sizes[2]), labels, "cat_to_name.json")


def build_food101(root):
    d = root / "food-101"
    folders = ["pho", "apple_pie", "beef_tartare"]  # deliberately not sorted: label order must follow classes.txt
    text(f"{d}/meta/classes.txt", folders)
    labels, lines = {}, {"train": [], "test": []}
    for label, folder in enumerate(folders):
        for i in range(3):
            labels[image(f"{d}/images/{folder}/{100 + i}.jpg")] = label
            lines["train" if i < 2 else "test"].append(f"{folder}/{100 + i}")
    for part, part_lines in lines.items():
        text(f"{d}/meta/{part}.txt", part_lines)
    return Tree(Food101, ["pho", "apple pie", "beef tartare"], (6, 0, 3), labels, "meta/classes.txt")


def build_dtd(root):
    d = root / "dtd"
    labels, lines = {}, {"train": [], "val": [], "test": []}
    for label, folder in enumerate(DTD_CLASSES):
        for part in lines:
            name = f"{folder}/{folder}_{part}.jpg"
            labels[image(f"{d}/images/{name}")] = label
            lines[part].append(name)
    for part, part_lines in lines.items():
        text(f"{d}/labels/{part}1.txt", part_lines)
    return Tree(DescribableTextures, list(DTD_CLASSES), (94, 0, 47), labels, "labels/test1.txt")


def build_caltech101(root):
    d = root / "caltech-101" / "101_ObjectCategories"
    labels = {}
    for label, folder in enumerate(CALTECH101_FOLDERS):
        for i in range(3):
            labels[image(f"{d}/{folder}/image_{i + 1:04d}.jpg")] = label
    for ignored in ("BACKGROUND_Google", "Faces_easy"):
        image(f"{d}/{ignored}/image_0001.jpg")
    return Tree(Caltech101, caltech101_classnames(), (200, 0, 100), labels, "101_ObjectCategories",
                cfg={"DATASET.CALTECH101.TRAIN_PER_CLASS": 2})


def build_cifar100(root):
    d = root / "cifar100"
    folders = ["apple", "aquarium_fish", "willow_tree"]
    os.makedirs(d / "cifar-100-python", exist_ok=True)
    with open(d / "cifar-100-python" / "meta", "wb") as f:
        pickle.dump({"fine_label_names": folders, "coarse_label_names": ["x"]}, f)
    labels = {}
    for part, count in (("train", 2), ("test", 1)):
        for label, folder in enumerate(folders):
            for i in range(count):
                labels[image(f"{d}/{part}/{folder}/{label * 10 + i:05d}.png")] = label
    return Tree(CIFAR100Classes, ["apple", "aquarium fish", "willow tree"], (6, 0, 3), labels,
                "cifar-100-python/meta")


def build_imagenet(root):
    d = root / "imagenet"
    wnids = ["n01440764", "n01443537", "n01484850"]
    names = ["tench", "goldfish", "great white shark"]
    text(f"{d}/classnames.txt", [f"{w} {n}" for w, n in zip(wnids, names)])
    labels = {}
    for label, wnid in enumerate(wnids):
        for i in range(4):
            labels[image(f"{d}/images/train/{wnid}/{wnid}_{i}.JPEG")] = label
        for i in range(2):
            labels[image(f"{d}/images/val/{wnid}/ILSVRC2012_val_{label * 10 + i:08d}.JPEG")] = label
    return Tree(ImageNet, names, (6, 0, 6), labels, "classnames.txt", cfg={"DATASET.IMAGENET.TRAIN_PER_CLASS": 2})


def build_resisc45(root):
    d = root / "resisc45"
    labels = {}
    for label, folder in enumerate(RESISC45_CLASSES):
        for i in range(5):
            labels[image(f"{d}/NWPU-RESISC45/{folder}/{folder}_{i + 1:03d}.jpg")] = label
    write_split_file(str(d / "split_microclip_RESISC45.json"), RESISC45.make_microclip_split(str(d), seed=0), {})
    names = [folder.replace("_", " ") for folder in RESISC45_CLASSES]
    return Tree(RESISC45, names, (180, 0, 45), labels, "split_microclip_RESISC45.json")


SUN_ENTRIES = ["/a/abbey", "/a/apartment_building/outdoor", "/b/bakery/shop"]


def build_sun397(root):
    d = root / "sun397"
    text(f"{d}/ClassName.txt", SUN_ENTRIES)
    labels = {}
    for label, entry in enumerate(SUN_ENTRIES):
        for i in range(10):
            labels[image(f"{d}/SUN397{entry}/sun_{label}{i:03d}.jpg")] = label
    write_split_file(str(d / "split_microclip_SUN397.json"), SUN397.make_microclip_split(str(d), seed=0), {})
    return Tree(SUN397, ["abbey", "apartment building (outdoor)", "bakery (shop)"], (21, 0, 6), labels,
                "ClassName.txt")


def build_birdsnap(root):
    d = root / "birdsnap"
    species = [(1, "Acadian Flycatcher", "Empidonax virescens", "Acadian_Flycatcher"),
               (2, "Allen's Hummingbird", "Selasphorus sasin", "Allens_Hummingbird"),
               (3, "Blue Jay", "Cyanocitta cristata", "Blue_Jay")]
    text(f"{d}/species.txt", ["id\tcommon\tscientific\tdir"] + ["\t".join(map(str, row)) for row in species])
    rows, labels = ["url\tmd5\tpath\tspecies_id\tbb_x1"], {}
    for species_id, _, _, folder in reversed(species):
        for i in range(10):
            path = f"{folder}/{species_id * 100 + i}.jpg"
            rows.append(f"http://example.invalid/{i}.jpg\t0\t{path}\t{species_id}\t1")
            if i < 8:  # two images per species failed to download
                labels[image(f"{d}/download/images/{path}")] = species_id - 1
    text(f"{d}/images.txt", rows)
    write_split_file(str(d / "split_microclip_Birdsnap.json"), Birdsnap.make_microclip_split(str(d), seed=0), {})
    return Tree(Birdsnap, [s[1] for s in species], (18, 0, 6), labels, "species.txt")


UCF_ACTIONS = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]


def build_ucf101(root):
    d = root / "ucf101"
    lists = f"{d}/ucfTrainTestlist"
    text(f"{lists}/classInd.txt", [f"{i + 1} {a}" for i, a in enumerate(UCF_ACTIONS)])
    labels, train, test = {}, [], []
    for label, action in enumerate(UCF_ACTIONS):
        renamed = {"ApplyEyeMakeup": "Apply_Eye_Makeup", "HandstandPushups": "Handstand_Pushups",
                   "YoYo": "Yo_Yo"}[action]
        for group in range(1, 4):
            stem = f"v_{action}_g{group:02d}_c01"
            labels[image(f"{d}/UCF-101-midframes/{renamed}/{stem}.jpg")] = label
            (test if group == 1 else train).append(f"{action}/{stem}.avi" + ("" if group == 1 else f" {label + 1}"))
    text(f"{lists}/trainlist01.txt", train)
    text(f"{lists}/testlist01.txt", test)
    return Tree(UCF101, ["Apply Eye Makeup", "Handstand Pushups", "Yo Yo"], (6, 0, 3), labels,
                "ucfTrainTestlist/classInd.txt")


BUILDERS = {
    "birdsnap": build_birdsnap,
    "caltech101": build_caltech101,
    "stanford_cars": build_stanford_cars,
    "cifar100": build_cifar100,
    "dtd": build_dtd,
    "fgvc_aircraft": build_fgvc_aircraft,
    "oxford_flowers": build_oxford_flowers,
    "food101": build_food101,
    "imagenet": build_imagenet,
    "oxford_pets": build_oxford_pets,
    "resisc45": build_resisc45,
    "sun397": build_sun397,
    "ucf101": build_ucf101,
}


# ------------------------------------------------------------------------------------------------------- tests


def test_every_benchmark_config_names_its_registered_reader():
    from clipkit.dassl import DATASET_REGISTRY

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert len(BUILDERS) == 13
    for key in BUILDERS:
        cfg = make_cfg("")
        cfg.merge_from_file(os.path.join(repo, "configs", "datasets", f"{key}.yaml"))
        reader = DATASET_REGISTRY.get(cfg.DATASET.NAME)
        assert reader.dataset_key == key
        assert reader.__module__ == f"datasets.{key}"


def test_data_manager_builds_loaders_from_a_reader(tmp_path):
    """Engine integration: microclip protocol -> no val loader; batches carry the reader's labels."""
    from clipkit.dassl import DataManager

    tree = build_food101(tmp_path)
    cfg = make_cfg(tmp_path, **{"DATASET.NAME": "Food101", "DATALOADER.NUM_WORKERS": 0,
                                "DATALOADER.TEST.BATCH_SIZE": 3, "INPUT.SIZE": (8, 8)})
    dm = DataManager(cfg)
    assert dm.val_loader is None
    assert dm.dataset.classnames == tree.classnames
    batch = next(iter(dm.test_loader))
    assert batch["img"].shape == (3, 3, 8, 8)
    assert [tree.labels[p] for p in batch["impath"]] == batch["label"].tolist()


@pytest.mark.parametrize("key", sorted(BUILDERS))
def test_reader_reports_metadata_order_sizes_and_labels(key, tmp_path):
    tree = BUILDERS[key](tmp_path)
    dataset = tree.reader(make_cfg(tmp_path, **tree.cfg))
    assert tree.reader.dataset_key == key
    assert dataset.classnames == tree.classnames
    assert dataset.num_classes == len(tree.classnames)
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == tree.sizes
    seen = set()
    for item in dataset.train_x + dataset.val + dataset.test:
        assert item.label == tree.labels[item.impath], item.impath
        assert item.classname == tree.classnames[item.label]
        seen.add(item.impath)
    assert len(seen) == sum(tree.sizes), "an image appears in two splits"


@pytest.mark.parametrize("key", sorted(BUILDERS))
def test_reader_names_the_missing_metadata_file(key, tmp_path):
    tree = BUILDERS[key](tmp_path)
    target = os.path.join(tmp_path, tree.reader.dataset_folder, tree.missing)
    if os.path.isdir(target):
        import shutil

        shutil.rmtree(target)
    else:
        os.remove(target)
    with pytest.raises(DatasetLayoutError) as info:
        tree.reader(make_cfg(tmp_path, **tree.cfg))
    message = str(info.value)
    assert os.path.normpath(target) in message or tree.missing.split("/")[-1] in message
    assert f"DATASETS.md#{tree.reader.docs_section}" in message


def test_missing_root_and_unset_root(tmp_path):
    with pytest.raises(DatasetLayoutError, match=r"oxford_pets.*DATASETS\.md#oxford-pets"):
        OxfordPets(make_cfg(tmp_path))
    with pytest.raises(DatasetLayoutError, match="DATASET.ROOT is empty"):
        OxfordPets(make_cfg(""))


def test_missing_image_is_named(tmp_path):
    build_food101(tmp_path)
    victim = tmp_path / "food-101" / "images" / "apple_pie" / "101.jpg"
    os.remove(victim)
    with pytest.raises(DatasetLayoutError, match=r"(?s)1 of 6 images listed in .*train\.txt.*apple_pie/101\.jpg"):
        Food101(make_cfg(tmp_path))


def test_fgvc_bae_classes_keep_variants_txt_order(tmp_path):
    """microCLIP's ImageFolder sorted 'BAE-125' before 'BAE-146-200', permuting three labels; we must not."""
    tree = build_fgvc_aircraft(tmp_path)
    dataset = FGVCAircraft(make_cfg(tmp_path))
    assert dataset.classnames[1:4] == ["BAE 146-200", "BAE 146-300", "BAE-125"]
    assert sorted(n.replace(" ", "-") for n in dataset.classnames[1:4]) != dataset.classnames[1:4]
    lines = open(tmp_path / "fgvc_aircraft" / "images_variant_test.txt").read().splitlines()
    truth = {os.path.abspath(tmp_path / "fgvc_aircraft" / "images" / f"{line.split(' ', 1)[0]}.jpg"):
             line.split(" ", 1)[1] for line in lines}
    for item in dataset.test:
        assert item.classname == truth[item.impath]
        assert item.label == FGVC_VARIANTS.index(truth[item.impath])
    assert tree.sizes[2] == len(dataset.test)


def test_fgvc_coop_protocol_adds_official_val(tmp_path):
    build_fgvc_aircraft(tmp_path)
    dataset = FGVCAircraft(make_cfg(tmp_path, "coop"))
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (10, 5, 5)


def test_coop_split_file_is_read_and_checked(tmp_path):
    build_oxford_pets(tmp_path)
    d = tmp_path / "oxford_pets"
    splits = {"train": [("Abyssinian_1.jpg", 0, "abyssinian"), ("american_bulldog_1.jpg", 1, "american_bulldog"),
                        ("great_pyrenees_1.jpg", 2, "great_pyrenees")],
              "val": [("Abyssinian_2.jpg", 0, "abyssinian")],
              "test": [("great_pyrenees_3.jpg", 2, "great_pyrenees")]}
    write_split_file(str(d / "split_zhou_OxfordPets.json"), splits, {})
    dataset = OxfordPets(make_cfg(tmp_path, "coop"))
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (3, 1, 1)
    assert dataset.classnames == ["abyssinian", "american bulldog", "great pyrenees"]

    splits["test"] = [("great_pyrenees_3.jpg", 1, "great_pyrenees")]  # label from another label order
    write_split_file(str(d / "split_zhou_OxfordPets.json"), splits, {})
    with pytest.raises(DatasetLayoutError, match="label 1 is 'great_pyrenees' in the file"):
        OxfordPets(make_cfg(tmp_path, "coop"))


def test_flowers_split_checked_against_imagelabels(tmp_path):
    build_oxford_flowers(tmp_path)
    d = tmp_path / "oxford_flowers"
    coop = OxfordFlowers(make_cfg(tmp_path, "coop"))
    assert len(coop.val) > 0
    payload = json.load(open(d / "split_zhou_OxfordFlowers.json"))
    fname, label, _ = payload["train"][0]
    wrong = (label + 1) % 3
    payload["train"][0] = [fname, wrong, ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"][wrong]]
    json.dump(payload, open(d / "split_zhou_OxfordFlowers.json", "w"))
    with pytest.raises(DatasetLayoutError, match="imagelabels.mat"):
        OxfordFlowers(make_cfg(tmp_path))


@pytest.mark.parametrize("reader,key", [(Birdsnap, "birdsnap"), (RESISC45, "resisc45"), (CIFAR100Classes, "cifar100")])
def test_unsupported_protocol_is_a_clear_error(reader, key, tmp_path):
    BUILDERS[key](tmp_path)
    with pytest.raises(ValueError, match=r"does not support DATASET.SPLIT_PROTOCOL='coop'.*microclip"):
        reader(make_cfg(tmp_path, "coop"))
    with pytest.raises(ValueError, match="unknown"):
        reader(make_cfg(tmp_path, "vissl"))


def test_missing_generated_split_file_says_how_to_make_it(tmp_path):
    build_sun397(tmp_path)
    os.remove(tmp_path / "sun397" / "split_microclip_SUN397.json")
    with pytest.raises(DatasetLayoutError, match=r"prep_splits\.py --dataset sun397"):
        SUN397(make_cfg(tmp_path))


def test_caltech_class_names_are_prompt_ready():
    names = caltech101_classnames()
    assert len(names) == len(set(names)) == 100
    assert names[:5] == ["face", "leopard", "motorbike", "accordion", "airplane"]  # CoOp's label order
    assert {"car side", "yin yang", "water lilly"} <= set(names)
    assert not any("_" in n or n in ("background google", "faces easy") for n in names)


def test_caltech_and_imagenet_subsets_are_seeded(tmp_path):
    build_caltech101(tmp_path)
    build_imagenet(tmp_path)
    overrides = {"DATASET.CALTECH101.TRAIN_PER_CLASS": 2, "DATASET.IMAGENET.TRAIN_PER_CLASS": 2}
    first = [d.impath for d in Caltech101(make_cfg(tmp_path, **overrides)).train_x]
    again = [d.impath for d in Caltech101(make_cfg(tmp_path, **overrides)).train_x]
    reseeded = make_cfg(tmp_path, **overrides, **{"DATASET.CALTECH101.SPLIT_SEED": 1})
    other = [d.impath for d in Caltech101(reseeded).train_x]
    assert first == again and first != other
    names = {os.path.basename(d.impath) for d in Caltech101(make_cfg(tmp_path, **overrides)).test}
    assert not any("BACKGROUND" in n for n in names)
    coop_train = ImageNet(make_cfg(tmp_path, "coop")).train_x
    assert len(coop_train) == 12  # every train image


def test_imagenet_falls_back_to_kaggle_synset_mapping(tmp_path):
    build_imagenet(tmp_path)
    d = tmp_path / "imagenet"
    os.remove(d / "classnames.txt")
    text(f"{d}/LOC_synset_mapping.txt", ["n01440764 tench, Tinca tinca", "n01443537 goldfish, Carassius auratus",
                                         "n01484850 great white shark, white shark, man-eater"])
    dataset = ImageNet(make_cfg(tmp_path, **{"DATASET.IMAGENET.TRAIN_PER_CLASS": 2}))
    assert dataset.classnames == ["tench", "goldfish", "great white shark"]
    text(f"{d}/LOC_synset_mapping.txt", ["n01440764 crane", "n01443537 crane", "n01484850 shark"])
    with pytest.warns(UserWarning, match=r"share the names \['crane'\]"):
        ImageNet(make_cfg(tmp_path, **{"DATASET.IMAGENET.TRAIN_PER_CLASS": 2}))


def test_num_shots_limits_train_per_class(tmp_path):
    build_dtd(tmp_path)
    dataset = DescribableTextures(make_cfg(tmp_path, **{"DATASET.NUM_SHOTS": 1}))
    assert len(dataset.train_x) == len(DTD_CLASSES)
    assert len(dataset.test) == len(DTD_CLASSES)


def test_datasets_md_has_a_section_per_reader():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(repo, "DATASETS.md"), encoding="utf-8") as f:
        anchors = {line[3:].strip().lower().replace(" ", "-") for line in f if line.startswith("## ")}
    for reader in (Birdsnap, Caltech101, StanfordCars, CIFAR100Classes, DescribableTextures, FGVCAircraft,
                   OxfordFlowers, Food101, ImageNet, OxfordPets, RESISC45, SUN397, UCF101):
        assert reader.docs_section in anchors, reader.__name__


def coop_car_name(name):
    *words, year = name.split(" ")
    return " ".join([year] + words)


# key -> (image folder under the dataset folder, file name of CoOp's split, CoOp's spelling of our class name)
COOP_SPELLINGS = {
    "stanford_cars": ("", "split_zhou_StanfordCars.json", coop_car_name),
    "sun397": ("SUN397", "split_zhou_SUN397.json",
               lambda n: {"apartment building (outdoor)": "outdoor apartment_building",
                          "bakery (shop)": "shop bakery"}.get(n, n)),
    "caltech101": ("101_ObjectCategories", "split_zhou_Caltech101.json", lambda n: n.replace(" ", "_")),
    "ucf101": ("UCF-101-midframes", "split_zhou_UCF101.json", lambda n: n.replace(" ", "_")),
    "food101": ("images", "split_zhou_Food101.json", lambda n: n.replace(" ", "_")),
    "dtd": ("images", "split_zhou_DescribableTextures.json", lambda n: n),
}


@pytest.mark.parametrize("key", sorted(COOP_SPELLINGS))
def test_coop_split_files_with_coop_spellings(key, tmp_path):
    tree = BUILDERS[key](tmp_path)
    folder, split_name, spell = COOP_SPELLINGS[key]
    dataset_dir = tmp_path / tree.reader.dataset_folder
    image_dir = os.path.join(dataset_dir, folder)
    reference = tree.reader(make_cfg(tmp_path, **tree.cfg))
    items = reference.train_x + reference.test
    records = [(os.path.relpath(d.impath, image_dir), d.label, spell(d.classname)) for d in items]
    first_of_class = {}
    for record in records:
        first_of_class.setdefault(record[1], record)
    rest = [r for r in records if r not in first_of_class.values()]
    # every class in train (Dassl derives num_classes from it), the rest spread over the three parts
    splits = {"train": list(first_of_class.values()) + rest[0::3], "val": rest[1::3], "test": rest[2::3]}
    write_split_file(str(dataset_dir / split_name), splits, {})
    dataset = tree.reader(make_cfg(tmp_path, "coop", **tree.cfg))
    assert dataset.classnames == tree.classnames
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == tuple(len(splits[p]) for p in
                                                                                ("train", "val", "test"))
    for item in dataset.train_x + dataset.val + dataset.test:
        assert item.label == tree.labels[item.impath]


def test_unreadable_image_is_named_by_the_loader(tmp_path):
    from clipkit.dassl import read_image

    build_oxford_pets(tmp_path)
    victim = tmp_path / "oxford_pets" / "images" / "Abyssinian_1.jpg"
    victim.write_bytes(b"this is not a jpeg")
    dataset = OxfordPets(make_cfg(tmp_path))
    item = next(d for d in dataset.train_x if d.impath == str(victim))
    with pytest.raises(OSError, match="Abyssinian_1.jpg"):
        read_image(item.impath)


# ------------------------------------------------------- class folders from disk: Caltech101, DTD, RESISC45

# key -> (image folder under the dataset folder, official folder list, folder -> class name, a folder to rename and
# the mirror's spelling of it)
FOLDER_LAYOUTS = {
    "caltech101": ("101_ObjectCategories", CALTECH101_FOLDERS, lambda f: caltech101_classnames([f])[0],
                   ("car_side", "Car-Side")),
    "dtd": ("images", DTD_CLASSES, lambda f: f, ("polka-dotted", "polka_dotted")),
    "resisc45": ("NWPU-RESISC45", RESISC45_CLASSES, lambda f: f.replace("_", " "), ("sea_ice", "Sea Ice")),
}


def changed_tree(tmp_path, key, drop=(), extra="", rename=None):
    """The key's tree with class folders removed, one added and/or one renamed (RESISC45's split made afterwards)."""
    import shutil

    tree = BUILDERS[key](tmp_path)
    dataset_dir = tmp_path / tree.reader.dataset_folder
    image_dir = dataset_dir / FOLDER_LAYOUTS[key][0]
    for folder in drop:
        shutil.rmtree(image_dir / folder)
    for i in range(3 if extra else 0):
        image(f"{image_dir}/{extra}/{extra}_{i}.jpg")
    if rename:
        os.rename(image_dir / rename[0], image_dir / rename[1])
    if key == "resisc45":
        write_split_file(str(dataset_dir / "split_microclip_RESISC45.json"),
                         RESISC45.make_microclip_split(str(dataset_dir), seed=0), {})
    return tree


def read_warned(tree, tmp_path, match, protocol="microclip"):
    from datasets._common import DatasetLayoutWarning

    with pytest.warns(DatasetLayoutWarning, match=match):
        return tree.reader(make_cfg(tmp_path, protocol, **tree.cfg))


def assert_labels_follow_folders(dataset, folder_to_name):
    for item in dataset.train_x + dataset.test:
        assert item.classname == dataset.classnames[item.label]
        assert folder_to_name(os.path.basename(os.path.dirname(item.impath))) == item.classname, item.impath


@pytest.mark.parametrize("key", sorted(FOLDER_LAYOUTS))
def test_fewer_class_folders_are_read_with_a_warning(key, tmp_path):
    _, official, name, _ = FOLDER_LAYOUTS[key]
    drop = (official[1], official[-1])
    if key == "resisc45":
        with pytest.warns(UserWarning, match=rf"missing 2 of the {len(official)} official class folders"):
            tree = changed_tree(tmp_path, key, drop=drop)
        dataset = tree.reader(make_cfg(tmp_path, **tree.cfg))  # the split file carries the label order
    else:
        tree = changed_tree(tmp_path, key, drop=drop)
        dataset = read_warned(tree, tmp_path, rf"(?s)missing 2 of the {len(official)} official class folders "
                                              rf"\({drop[0]}, {drop[1]}\).*{len(official) - 2} classes present")
    assert dataset.classnames == [name(f) for f in official if f not in drop]
    assert_labels_follow_folders(dataset, name)
    assert len({item.label for item in dataset.test}) == len(official) - 2


@pytest.mark.parametrize("key", sorted(FOLDER_LAYOUTS))
def test_extra_class_folder(key, tmp_path):
    """Caltech101 / RESISC45 draw their split from the folders, so an extra one is a class (sorted in); DTD's
    official lists cannot place its images, so it is left out."""
    _, official, name, _ = FOLDER_LAYOUTS[key]
    extra = "my_extra_class"
    if key == "resisc45":
        with pytest.warns(UserWarning, match=r"1 folders not in the official list \(my_extra_class\) used as classes"):
            tree = changed_tree(tmp_path, key, extra=extra)
        dataset = tree.reader(make_cfg(tmp_path, **tree.cfg))
    else:
        tree = changed_tree(tmp_path, key, extra=extra)
        usage = "ignored" if key == "dtd" else "used as classes"
        dataset = read_warned(tree, tmp_path, rf"1 folders not in the official list \(my_extra_class\) {usage}")
    expected = list(official) if key == "dtd" else sorted(list(official) + [extra])
    assert dataset.classnames == [name(f) for f in expected]
    assert_labels_follow_folders(dataset, name)


@pytest.mark.parametrize("key", sorted(FOLDER_LAYOUTS))
def test_renamed_class_folder_keeps_its_official_name_and_label(key, tmp_path):
    _, official, name, (folder, renamed) = FOLDER_LAYOUTS[key]
    if key == "resisc45":
        with pytest.warns(UserWarning, match=rf"renamed folders matched to their official names \({renamed} -> "):
            tree = changed_tree(tmp_path, key, rename=(folder, renamed))
        dataset = tree.reader(make_cfg(tmp_path, **tree.cfg))
    else:
        tree = changed_tree(tmp_path, key, rename=(folder, renamed))
        dataset = read_warned(tree, tmp_path, rf"renamed folders matched to their official names \({renamed} -> "
                                              r".*Labels and class names are the official ones")
    assert dataset.classnames == tree.classnames
    moved = [item for item in dataset.train_x + dataset.test if f"/{renamed}/" in item.impath]
    assert moved and all(item.label == list(official).index(folder) for item in moved)
    assert_labels_follow_folders(dataset, lambda f: name(folder if f == renamed else f))


@pytest.mark.parametrize("key", ["caltech101", "dtd"])
def test_coop_split_needs_the_official_folders_but_accepts_renamed_ones(key, tmp_path):
    image_folder, official, _, (folder, renamed) = FOLDER_LAYOUTS[key]
    tree = BUILDERS[key](tmp_path)
    dataset_dir = tmp_path / tree.reader.dataset_folder
    reference = tree.reader(make_cfg(tmp_path, **tree.cfg))
    records = [(os.path.relpath(d.impath, dataset_dir / image_folder), d.label, d.classname)
               for d in reference.train_x + reference.test]
    write_split_file(str(dataset_dir / tree.reader.split_files["coop"]),
                     {"train": records[0::2], "test": records[1::2]}, {})
    os.rename(dataset_dir / image_folder / folder, dataset_dir / image_folder / renamed)
    dataset = read_warned(tree, tmp_path, "renamed", protocol="coop")
    assert len(dataset.train_x) + len(dataset.test) == len(records)
    assert any(f"/{renamed}/" in item.impath for item in dataset.train_x + dataset.test)
    import shutil

    shutil.rmtree(dataset_dir / image_folder / official[0])
    with pytest.raises(DatasetLayoutError, match=rf"(?s)missing 1 of the {len(official)} .*made for the official "
                                                 r"class set.*SPLIT_PROTOCOL microclip"):
        tree.reader(make_cfg(tmp_path, "coop", **tree.cfg))


# ------------------------------------------------------------------------------ messages for misplaced data


def test_nwpu_folder_at_the_root_says_where_it_belongs(tmp_path):
    build_resisc45(tmp_path)
    os.rename(tmp_path / "resisc45" / "NWPU-RESISC45", tmp_path / "NWPU-RESISC45")
    found = rf"Found {tmp_path}/NWPU-RESISC45 directly under DATASET.ROOT; it belongs in {tmp_path}/resisc45/NWPU"
    with pytest.raises(DatasetLayoutError, match=found):
        RESISC45(make_cfg(tmp_path))
    import shutil

    shutil.rmtree(tmp_path / "resisc45")
    with pytest.raises(DatasetLayoutError, match=rf"dataset folder not found: {tmp_path}/resisc45\. {found}"):
        RESISC45(make_cfg(tmp_path))


@pytest.mark.parametrize("name,fix", [("split_zhou_OxfordPets.json", r"Download split_zhou_OxfordPets\.json again"),
                                      ("split_microclip_SUN397.json", r"prep_splits\.py --dataset sun397 .*--force")])
def test_truncated_split_file_says_how_to_get_a_good_copy(name, fix, tmp_path):
    key = "oxford_pets" if "Pets" in name else "sun397"
    tree = BUILDERS[key](tmp_path)
    path = tmp_path / tree.reader.dataset_folder / name
    if not path.exists():
        write_split_file(str(path), {"train": [("Abyssinian_1.jpg", 0, "abyssinian")]}, {})
    path.write_text(path.read_text()[:40])
    protocol = "coop" if key == "oxford_pets" else "microclip"
    with pytest.raises(DatasetLayoutError, match=rf"(?s)not valid JSON.*truncated or corrupt.*{fix}") as info:
        tree.reader(make_cfg(tmp_path, protocol))
    assert ("prep_splits" in str(info.value)) == (key == "sun397")


def test_imagenet_plain_train_val_layout_and_flat_val(tmp_path):
    tree = build_imagenet(tmp_path)
    d = tmp_path / "imagenet"
    for part in ("train", "val"):
        os.rename(d / "images" / part, d / part)
    dataset = ImageNet(make_cfg(tmp_path, **tree.cfg))
    assert (len(dataset.train_x), len(dataset.test)) == (6, 6)
    assert all(item.impath.startswith(str(d / "val")) for item in dataset.test)
    for wnid in os.listdir(d / "val"):  # flatten val as the raw ILSVRC2012_img_val.tar extracts
        for name in os.listdir(d / "val" / wnid):
            os.rename(d / "val" / wnid / name, d / "val" / name)
        os.rmdir(d / "val" / wnid)
    with pytest.raises(DatasetLayoutError, match=r"lacks 3 of the 3 wnid folders.*holds 6 images directly.*"
                                                 r"prep_imagenet_val\.py"):
        ImageNet(make_cfg(tmp_path, **tree.cfg))
