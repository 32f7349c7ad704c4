"""clipkit/sweep.py (scripts/run_all.sh): planning, failure reports, parallel GPU slots, and a real two-method sweep."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import output_parser
from clipkit import sweep
from clipkit.testing import STAND_IN_TRAIN_ARGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Stands in for train.py in the fast tests: trainer "Good" writes results.json, "Bad" crashes like Python does.
FAKE_TRAIN = STAND_IN_TRAIN_ARGS + textwrap.dedent(
    """
    with open(os.environ["FAKE_TRAIN_CALLS"], "a") as calls:
        calls.write(json.dumps({"trainer": args.trainer, "seed": args.seed, "eval_only": args.eval_only,
                                "opts": args.opts, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\\n")
    if args.trainer == "Bad":
        sys.stderr.write("Traceback (most recent call last):\\n  File 'x.py', line 1\\n"
                         "ValueError: DATASET.ROOT /nope has no images\\n")
        sys.exit(1)
    with open(os.path.join(args.output_dir, "results.json"), "w") as handle:
        json.dump({"accuracy_last": 50.0 + int(args.seed), "accuracy_best": 60.0, "epochs": []}, handle)
    """
)


def write_configs(root, trainers, datasets, overrides=None):
    """configs/datasets/<key>.yaml and configs/trainers/<M>/<backbone>.yaml files under ``root``."""
    for key in datasets:
        os.makedirs(os.path.join(root, "datasets"), exist_ok=True)
        with open(os.path.join(root, "datasets", f"{key}.yaml"), "w") as handle:
            handle.write(datasets[key])
    for method, backbones in trainers.items():
        os.makedirs(os.path.join(root, "trainers", method), exist_ok=True)
        for backbone, text in backbones.items():
            with open(os.path.join(root, "trainers", method, f"{backbone}.yaml"), "w") as handle:
                handle.write(text)
    for method, text in (overrides or {}).items():
        with open(os.path.join(root, "trainers", method, sweep.OVERRIDES_FILE), "w") as handle:
            handle.write(text)
    return str(root)


def test_plan_defaults_overrides_eval_only_and_skips(tmp_path):
    configs = write_configs(
        tmp_path / "configs",
        trainers={"Micro": {"vit_b32": "", "tiny": ""}, "Zero": {"vit_b32": ""}, "NoB32": {"tiny": ""}},
        datasets={"dtd": "", "food101": "", "tiny": ""},
        overrides={"Micro": "food101: [OPTIM.LR, 1.0e-6]\nfood-101: [OPTIM.LR, 1.0]\n"},
    )
    available = sweep.dataset_keys(configs)
    assert sweep.select_datasets([], available, "vit_b32") == ["dtd", "food101"]  # tiny only for the tiny backbone
    assert sweep.select_datasets([], available, "tiny") == ["tiny"]
    with pytest.raises(sweep.SweepError, match="no configs/datasets/<key>.yaml for \\['cars'\\]"):
        sweep.select_datasets(["cars"], available, "vit_b32")
    with pytest.raises(sweep.SweepError, match="no dataset configs for backbone vit_b32"):
        sweep.select_datasets([], ["tiny"], "vit_b32")
    registered = {"Micro": False, "Zero": True, "NoB32": False}
    assert sweep.select_methods([], registered) == ["Micro", "NoB32", "Zero"]
    with pytest.raises(sweep.SweepError, match="not registered"):
        sweep.select_methods(["Typo"], registered)

    out = tmp_path / "out"
    finished = out / "vit_b32" / "dtd" / "Zero" / "seed2"
    finished.mkdir(parents=True)
    (finished / "results.json").write_text("{}")
    plan = sweep.plan_sweep("vit_b32", ["Micro", "NoB32", "Zero"], registered, ["dtd", "food101"], [1, 2], configs,
                            "/data", str(out), "py", "train.py")
    assert [job.name for job in plan.jobs] == [
        "Micro/dtd/seed1", "Micro/dtd/seed2", "Micro/food101/seed1", "Micro/food101/seed2",
        "Zero/dtd/seed1", "Zero/food101/seed1", "Zero/food101/seed2"]
    assert plan.finished == [str(finished)]
    assert any("skipped NoB32" in note and "vit_b32.yaml" in note for note in plan.notes)
    assert any("'food-101' is not a dataset config" in note for note in plan.notes)
    jobs = {job.name: job for job in plan.jobs}
    food = jobs["Micro/food101/seed2"].command
    assert food[:2] == ("py", "train.py") and food[-2:] == ("OPTIM.LR", "1e-06")
    assert food[food.index("--output-dir") + 1] == str(out / "vit_b32" / "food101" / "Micro" / "seed2")
    assert food[food.index("--config-file") + 1] == os.path.join(configs, "trainers", "Micro", "vit_b32.yaml")
    assert "--eval-only" not in food and "OPTIM.LR" not in jobs["Micro/dtd/seed1"].command
    assert "--eval-only" in jobs["Zero/dtd/seed1"].command


def test_bad_overrides_file_names_path_and_fix(tmp_path):
    path = tmp_path / "dataset_overrides.yaml"
    path.write_text("food101: [OPTIM.LR]\n")
    with pytest.raises(sweep.SweepError, match=r"dataset_overrides.yaml: entry 'food101' must be a list of yacs"):
        sweep.load_dataset_overrides(str(path), ["food101"])
    path.write_text("- food101\n")
    with pytest.raises(sweep.SweepError, match="expected a mapping"):
        sweep.load_dataset_overrides(str(path), ["food101"])


def test_first_error_line():
    traceback = ("Traceback (most recent call last):\n  File \"t.py\", line 3, in <module>\n    f()\n"
                 "KeyError: 'OPTIM.LRR'\n\nDuring handling of the above exception, another exception occurred:\n"
                 "Traceback (most recent call last):\ntorch.OutOfMemoryError: CUDA out of memory\n")
    assert sweep.first_error_line(traceback, 1) == "KeyError: 'OPTIM.LRR'"
    assert sweep.first_error_line("some warning\nlast words\n", 3) == "last words"
    assert sweep.first_error_line("", -9) == "killed by SIGKILL (out of memory?)"
    assert "empty stderr" in sweep.first_error_line("", 2)


def test_run_jobs_parallel_failure_report_and_rerun(tmp_path):
    configs = write_configs(tmp_path / "configs", trainers={"Good": {"vit_b32": ""}, "Bad": {"vit_b32": ""}},
                            datasets={"dtd": ""})
    train = tmp_path / "fake_train.py"
    train.write_text(FAKE_TRAIN)
    calls = tmp_path / "calls.jsonl"
    env = dict(os.environ, FAKE_TRAIN_CALLS=str(calls))
    out = tmp_path / "out"

    def plan():
        return sweep.plan_sweep("vit_b32", ["Good", "Bad"], {"Good": False, "Bad": True}, ["dtd"], [1, 2], configs,
                                "/data", str(out), sys.executable, str(train))

    lines = []
    outcomes = sweep.run_jobs(plan().jobs, ["0", "1"], env, log=lines.append)
    assert sorted((o.job.name, o.ok) for o in outcomes) == [
        ("Bad/dtd/seed1", False), ("Bad/dtd/seed2", False), ("Good/dtd/seed1", True), ("Good/dtd/seed2", True)]
    assert {o.error for o in outcomes if not o.ok} == {"ValueError: DATASET.ROOT /nope has no images"}
    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    assert {r["gpu"] for r in recorded} <= {"0", "1"} and len(recorded) == 4
    assert all(r["eval_only"] == (r["trainer"] == "Bad") for r in recorded)
    assert "4 done / 0 running / 0 left of 4" in lines[-1]
    failed = out / "vit_b32" / "dtd" / "Bad" / "seed1" / "failed.txt"
    report = failed.read_text()
    assert "exit code: 1" in report and "--eval-only" in report and "Traceback" in report
    run = output_parser.read_run(str(failed.parent))
    assert (run.status, run.error) == ("failed", "ValueError: DATASET.ROOT /nope has no images")

    # second pass: finished runs are skipped, failed ones retried; a fix clears failed.txt
    second = plan()
    assert sorted(job.name for job in second.jobs) == ["Bad/dtd/seed1", "Bad/dtd/seed2"]
    fixed = [job for job in second.jobs if job.seed == 1]
    fixed = [sweep.Job(j.method, j.dataset, j.seed, j.run_dir, tuple("Good" if c == "Bad" else c for c in j.command))
             for j in fixed]
    assert all(o.ok for o in sweep.run_jobs(fixed, [], env, log=lines.append))
    assert not failed.exists()
    assert len(calls.read_text().splitlines()) == 5


def test_cli_errors_name_the_fix(tmp_path):
    configs = write_configs(tmp_path / "configs", trainers={}, datasets={"dtd": ""})
    run = subprocess.run(["bash", os.path.join(REPO, "scripts", "run_all.sh"), "vit_b32", "--configs-root", configs,
                          "--dry-run"], capture_output=True, text=True, cwd=str(tmp_path))
    assert run.returncode == 2 and "--data-root DIR is required" in run.stderr


TRAINER_YAML = """\
DATALOADER:
  TRAIN_X:
    BATCH_SIZE: 4
  TEST:
    BATCH_SIZE: 8
  NUM_WORKERS: 0
INPUT:
  SIZE: (64, 64)
  TRANSFORMS: ["normalize"]
MODEL:
  BACKBONE:
    NAME: "{clip}"
OPTIM:
  NAME: "sgd"
  LR: 0.01
  MAX_EPOCH: 2
  LR_SCHEDULER: "cosine"
TRAIN:
  PRINT_FREQ: 1
"""


def test_real_sweep_twice_second_run_skips_everything(tmp_path, tiny_clip_path, tiny_image_folder, capsys,
                                                        monkeypatch):
    """The sweep on the tiny CLIP: a training-free and a trained test method, then a rerun that skips both (the
    failure path is covered with a stand-in train.py above: each real job costs a torch import)."""
    data_root, _ = tiny_image_folder
    trainer_yaml = TRAINER_YAML.format(clip=tiny_clip_path)
    configs = write_configs(
        tmp_path / "configs",
        trainers={name: {"tiny": trainer_yaml} for name in ("SweepZeroShot", "SweepProbe")},
        datasets={"test_folder": 'DATASET:\n  NAME: "TestImageFolder"\n'},
        overrides={"SweepProbe": "test_folder: [OPTIM.MAX_EPOCH, 1]\n"},
    )
    out = tmp_path / "output"
    monkeypatch.delenv(sweep.PLUGIN_ENV, raising=False)

    def run_all(methods):
        """The sweep in-process (this process already paid torch's import); returns (exit code, printed text)."""
        lines = []
        code = sweep.main(["tiny", "--methods", methods, "--datasets", "test_folder", "--seeds", "1", "--data-root",
                           data_root, "--output-root", str(out), "--configs-root", configs, "--extra-plugins",
                           "tests.plugins.sweep_trainers,tests.plugins.image_folder_dataset"], log=lines.append)
        return code, "\n".join(lines) + "\n" + capsys.readouterr().out

    code, first = run_all("SweepZeroShot,SweepProbe")
    assert code == 0, first
    assert "2 to run" in first and "2 ran, 0 already done, 0 failed" in first
    runs = {m: out / "tiny" / "test_folder" / m / "seed1" for m in ("SweepZeroShot", "SweepProbe")}
    zero = json.loads((runs["SweepZeroShot"] / "results.json").read_text())
    probe = json.loads((runs["SweepProbe"] / "results.json").read_text())
    assert zero["num_test"] == probe["num_test"] == 6  # 3 classes x (6 - 4 train) images
    assert "eval_only: True" in (runs["SweepZeroShot"] / "log.txt").read_text()  # training_free -> --eval-only
    assert [e["epoch"] for e in probe["epochs"]] == [1]  # the dataset override MAX_EPOCH 1 reached train.py
    assert 0.0 <= probe["epochs"][0]["pl_accuracy"] <= 100.0
    assert "Finish training" in (runs["SweepProbe"] / "log.txt").read_text()
    for method, data in (("SweepZeroShot", zero), ("SweepProbe", probe)):  # the parser's log fallback agrees
        logged = output_parser.parse_log_accuracy((runs[method] / "log.txt").read_text())
        assert logged == pytest.approx(data["accuracy_last"], abs=0.051)  # logs print one decimal
    # the tiny sweep ends with the Markdown table of output_parser
    table = {line.split("|")[1].strip(): line for line in first.splitlines() if line.startswith("| Sweep")}
    assert f"{zero['accuracy_last']:.2f}" in table["SweepZeroShot"] and f"{probe['accuracy_last']:.2f}" in table[
        "SweepProbe"]

    stamps = {m: (runs[m] / "results.json").stat().st_mtime_ns for m in ("SweepZeroShot", "SweepProbe")}
    code, second = run_all("SweepZeroShot,SweepProbe")
    assert code == 0, second
    assert "2 finished (skipped), 0 to run" in second
    assert stamps == {m: (runs[m] / "results.json").stat().st_mtime_ns for m in stamps}

    assert output_parser.main([str(out), "--table", "pseudo-labels", "--format", "csv"]) == 0
    pseudo = capsys.readouterr().out.strip().splitlines()
    assert [line.split(",")[1] for line in pseudo[1:]] == ["SweepProbe"]
    assert pseudo[1].split(",")[2] == f"{probe['epochs'][0]['pl_accuracy']:.2f}"


def test_dataset_overrides_option_needs_one_method_and_replaces_the_file(tmp_path):
    from clipkit import sweep

    official = os.path.join(REPO, "configs", "trainers", "DPA", "official_overrides.yaml")
    out = []
    code = sweep.main(["vit_b32", "--methods", "DPA", "--datasets", "dtd", "--seeds", "1", "--data-root", str(tmp_path),
                       "--output-root", str(tmp_path / "out"), "--dataset-overrides", official, "--dry-run"],
                      log=out.append)
    assert code == 0
    command = [line for line in out if "train.py" in line][0]
    assert "OPTIM.LR 0.00005" in command and "TRAINER.DPA.ALPHA 0.2" in command  # DPA's own DTD settings
    assert sweep.main(["vit_b32", "--methods", "DPA,MicroCLIP", "--data-root", str(tmp_path), "--dataset-overrides",
                       official, "--dry-run"], log=out.append) == 2


def test_plan_arithmetic_on_a_hand_made_job_list(tmp_path):
    from clipkit.plan import RunEstimate, format_plan, load_throughput

    path = tmp_path / "throughput.json"
    path.write_text('{"DPA": {"vit_b32": 100.0}}')
    assert load_throughput(str(path)) == {"DPA": {"vit_b32": 100.0}}
    runs = [RunEstimate("DPA", "dtd", seed, 3760, 15, 3760, 100.0) for seed in (1, 2)]
    runs.append(RunEstimate("UPL", "dtd", 1, 3760, 50, 752, None))
    runs.append(RunEstimate("ZeroshotCLIP", "dtd", 1, 3760, 0, 0, None))
    assert runs[0].images == 15 * 3760 and abs(runs[0].gpu_hours - 15 * 3760 / 100.0 / 3600) < 1e-12
    assert runs[2].gpu_hours is None and runs[3].gpu_hours == 0.0
    text = format_plan(runs, "vit_b32", str(path))
    assert "| DPA | dtd | 2 | 3,760 | 15 | 3,760 | 112,800 | 100 | 0.31 |" in text
    assert "| UPL | dtd | 1 | 3,760 | 50 | 752 | 37,600 | n/a | n/a |" in text
    assert "4 runs to do on vit_b32: 150,400 images through the training step; 0.31 GPU hours + 1 runs without" in text


def test_plan_never_starts_a_job_and_uses_each_methods_epoch_rule(tmp_path):
    from clipkit import sweep

    out = []
    code = sweep.main(["vit_b32", "--plan", "--methods", "ReCLIP,POUF,UPL", "--datasets", "sun397,dtd", "--seeds", "1",
                       "--data-root", str(tmp_path), "--output-root", str(tmp_path / "out")], log=out.append)
    assert code == 0 and not (tmp_path / "out").exists()
    text = "\n".join(out)
    assert "| ReCLIP | sun397 | 1 | 76,129 | 17 |" in text  # min(100, 76129 // 5000 + 2)
    assert "| POUF | dtd | 1 | 3,760 | 10 | 48,000 |" in text  # 500 iterations x batch 96 per epoch
    assert "| UPL | dtd | 1 | 3,760 | 50 | 752 |" in text  # 16 per class x 47 classes
