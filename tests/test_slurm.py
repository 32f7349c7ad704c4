"""``run_all.sh --slurm`` against a real one-node Slurm (scripts/slurm_local.sh): a tiny-benchmark array equals the
local sweep, a cancelled task and a re-submission, a failing task, and pre-emption (USR1 -> checkpoint -> requeue).

The module fixture installs ``slurm-wlm munge`` with apt-get when missing and starts munged, slurmctld and slurmd on
localhost; it stops the daemons (by PID) afterwards if it started them. Without root, or when the packages cannot be
installed, every test here is skipped with the reason."""

import json
import os
import shutil
import subprocess
import textwrap
import time

import pytest

from clipkit import slurm, sweep
from clipkit.testing import STAND_IN_TRAIN_ARGS
from clipkit.tinybench import generate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL = os.path.join(REPO, "scripts", "slurm_local.sh")
SMALL = generate.BenchmarkConfig(train_per_class=3, test_per_class=2)  # as tests/test_upl_trainer.py
DATASET = "tinysmall"  # the tiny benchmark under another key: no tinybench.prepare (no CLIP pretraining) in tests


def _local(command, timeout=300):
    return subprocess.run(["bash", LOCAL, command], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running one-node Slurm (started here, and stopped afterwards, unless it was already up)."""
    if os.geteuid() != 0:
        pytest.skip("the Slurm tests need root (apt-get install slurm-wlm munge, and the daemons run as root)")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        pytest.skip("Slurm is not installed and there is no apt-get to install slurm-wlm munge")
    already = "slurmctld: running" in _local("status").stdout
    if not already:
        started = _local("start")
        if started.returncode != 0:
            pytest.skip(f"could not install or start Slurm: {(started.stderr or started.stdout).strip()[-400:]}")
    yield
    if not already:
        stopped = _local("stop")
        assert stopped.returncode == 0, stopped.stderr


# ------------------------------------------------------------------------------------------------ stand-in train.py

# "epochs" of EPOCH_S seconds with a checkpoint file after each; a restart resumes from it (like the engine's exact
# resume). CuPL crashes like Python does. Each epoch line records SLURM_RESTART_COUNT.
FAKE_TRAIN = STAND_IN_TRAIN_ARGS + textwrap.dedent(
    """
    if args.trainer == "CuPL":
        sys.stderr.write("Traceback (most recent call last):\\nValueError: DATASET.ROOT /nope has no images\\n")
        sys.exit(1)
    ckpt = os.path.join(args.output_dir, "ckpt.json")  # the epochs done: [[epoch, SLURM_RESTART_COUNT], ...]
    records = json.load(open(ckpt)) if os.path.exists(ckpt) else []
    for epoch in range(len(records) + 1, int(os.environ.get("FAKE_EPOCHS", "1")) + 1):
        time.sleep(float(os.environ.get("FAKE_EPOCH_S", "0")))
        records.append([epoch, os.environ.get("SLURM_RESTART_COUNT", "0")])
        with open(ckpt + ".tmp", "w") as handle:  # atomic, like the engine's checkpoints
            json.dump(records, handle)
        os.replace(ckpt + ".tmp", ckpt)
    with open(os.path.join(args.output_dir, "results.json"), "w") as handle:
        json.dump({"accuracy_last": 50.0 + int(args.seed), "accuracy_best": 60.0, "epochs": []}, handle)
    """
)


@pytest.fixture
def fake_setup(tmp_path):
    configs = tmp_path / "configs"
    (configs / "datasets").mkdir(parents=True)
    (configs / "datasets" / "dtd.yaml").write_text("")
    for method in ("ZeroshotCLIP", "CuPL"):
        (configs / "trainers" / method).mkdir(parents=True)
        (configs / "trainers" / method / "vit_b32.yaml").write_text("")
    train = tmp_path / "fake_train.py"
    train.write_text(FAKE_TRAIN)
    return str(configs), str(train), tmp_path / "out"


def _sweep(configs, train, out, methods, seeds, *extra):
    """The sweep in-process (torch is imported once per test session); returns (exit code, logged lines)."""
    lines = []
    code = sweep.main(["vit_b32", "--methods", methods, "--datasets", "dtd", "--seeds", seeds, "--data-root", "/data",
                       "--configs-root", configs, "--train-script", train, "--output-root", str(out), "--slurm",
                       *extra], log=lines.append)
    return code, lines


def _job_id(lines):
    line = next(line for line in lines if line.startswith("slurm: submitted job array "))
    return line.split()[4]


def _squeue(job_id):
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i %T %r"], capture_output=True, text=True).stdout
    return [line.split() for line in out.splitlines()]


def _wait_until(predicate, timeout=60.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _run(out, method, seed):
    return out / "vit_b32" / "dtd" / method / f"seed{seed}"


# ------------------------------------------------------------------------------------------------------------ tests


def test_array_script_options():
    import argparse

    args = argparse.Namespace(max_parallel=4, signal_before=300, partition="gpu", account=None, gres="gpu:1",
                              time="4:00:00", mem="32G", cpus_per_task=8, extra_sbatch="--qos=high --constraint=a100")
    options = slurm.sbatch_options(args, 10, "/o/.slurm/x", "clipkit-vit_b32")
    assert options == ["--job-name=clipkit-vit_b32", "--array=0-9%4", "--output=/o/.slurm/x/task-%A_%a.out",
                       "--signal=B:USR1@300", "--requeue", "--open-mode=append", "--partition=gpu", "--gres=gpu:1",
                       "--time=4:00:00", "--mem=32G", "--cpus-per-task=8", "--qos=high", "--constraint=a100"]
    script = slurm.array_script(options, "/venv/bin/python", "/o/jobs.json", {"CLIPKIT_CACHE": "/c d"})
    assert "#SBATCH --array=0-9%4\n" in script and "export CLIPKIT_CACHE='/c d'\n" in script
    assert script.rstrip().endswith('exec /venv/bin/python -m clipkit.slurm task /o/jobs.json "$SLURM_ARRAY_TASK_ID"')


def test_without_sbatch_the_error_says_so(fake_setup, monkeypatch, tmp_path, capsys):
    """Needs no Slurm: the submission files are written, and a missing sbatch is a clear error (exit 2)."""
    configs, train, out = fake_setup
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, lines = _sweep(configs, train, out, "ZeroshotCLIP", "1")
    assert code == 2 and "--slurm: cannot run sbatch" in capsys.readouterr().err
    (submission,) = (out / ".slurm").iterdir()
    assert [job["method"] for job in json.loads((submission / "jobs.json").read_text())] == ["ZeroshotCLIP"]
    assert "#SBATCH --array=0-0\n" in (submission / "array.sh").read_text()


def _tiny_configs(root, clip):
    """configs/ with the tiny benchmark as dataset DATASET and ZeroshotCLIP / CuPL's tiny configs on ``clip``."""
    (root / "datasets").mkdir(parents=True)
    shutil.copy(os.path.join(REPO, "configs", "datasets", "tiny.yaml"), root / "datasets" / f"{DATASET}.yaml")
    for method in ("ZeroshotCLIP", "CuPL"):
        (root / "trainers" / method).mkdir(parents=True)
        with open(os.path.join(REPO, "configs", "trainers", method, "tiny.yaml")) as handle:
            text = handle.read().replace('"tiny-clip-bench"', json.dumps(clip)).replace("NUM_WORKERS: 2",
                                                                                        "NUM_WORKERS: 0")
        (root / "trainers" / method / "tiny.yaml").write_text(text)
    return str(root)


def test_tiny_sweep_on_slurm_equals_the_local_sweep(slurm_cluster, tiny_clip_path, tmp_path, capsys):
    data = tmp_path / "data"
    generate.generate_dataset(str(data), SMALL, log=None)
    configs = _tiny_configs(tmp_path / "configs", tiny_clip_path)
    common = ["tiny", "--methods", "ZeroshotCLIP,CuPL", "--datasets", DATASET, "--seeds", "1", "--data-root",
              str(data), "--configs-root", configs, "--no-figures"]
    assert sweep.main(common + ["--output-root", str(tmp_path / "local")], log=lambda *_: None) == 0
    local_table = capsys.readouterr().out
    lines = []
    assert sweep.main(common + ["--output-root", str(tmp_path / "slurm"), "--slurm", "--wait"], log=lines.append) == 0
    slurm_table = capsys.readouterr().out
    assert "slurm sweep tiny finished: 2 ok, 0 failed or unfinished" in lines[-1]
    assert any(line.strip().startswith("watch:  squeue -j ") for line in lines)
    assert slurm_table == local_table and "| CuPL" in slurm_table  # the same table ...
    for method in ("ZeroshotCLIP", "CuPL"):  # ... from the same numbers in the same layout
        local, remote = (json.loads((tmp_path / root / "tiny" / DATASET / method / "seed1" / "results.json")
                                    .read_text()) for root in ("local", "slurm"))
        assert remote["accuracy_last"] == local["accuracy_last"] and remote["num_test"] == local["num_test"] == 40
    # a re-submission submits nothing
    again = []
    assert sweep.main(common + ["--output-root", str(tmp_path / "slurm"), "--slurm", "--wait"], log=again.append) == 0
    assert "1 finished" not in again[0] and "2 finished (skipped), 0 to run" in again[0]
    assert any("nothing to submit" in line for line in again)


def test_cancelled_task_resubmitted_and_failing_task_reported(slurm_cluster, fake_setup, monkeypatch, capsys):
    configs, train, out = fake_setup
    monkeypatch.setenv("FAKE_EPOCHS", "6")
    monkeypatch.setenv("FAKE_EPOCH_S", "0.5")
    code, lines = _sweep(configs, train, out, "ZeroshotCLIP,CuPL", "1,2")
    assert code == 0
    job_id = _job_id(lines)  # tasks: 0 Zero seed1, 1 Zero seed2, 2 CuPL seed1, 3 CuPL seed2
    epochs = _run(out, "ZeroshotCLIP", 1) / "ckpt.json"
    _wait_until(lambda: epochs.exists(), what="task 0 to train an epoch")
    subprocess.run(["scancel", f"{job_id}_0"], check=True)
    slurm.wait_for(job_id, log=lambda *_: None)
    cancelled = _run(out, "ZeroshotCLIP", 1)
    assert not (cancelled / "results.json").exists() and not (cancelled / "failed.txt").exists()
    assert (_run(out, "ZeroshotCLIP", 2) / "results.json").exists()
    report = (_run(out, "CuPL", 1) / "failed.txt").read_text()
    assert "exit code: 1" in report and "error: ValueError: DATASET.ROOT /nope has no images" in report
    assert 1 <= len(json.loads(epochs.read_text())) < 6

    # re-submission: only the cancelled and the failed runs; the cancelled one resumes after its last epoch
    capsys.readouterr()
    code, lines = _sweep(configs, train, out, "ZeroshotCLIP,CuPL", "1,2", "--wait")
    assert code == 1
    assert "1 finished (skipped), 3 to run" in lines[0]
    assert [epoch for epoch, _ in json.loads(epochs.read_text())] == list(range(1, 7))
    assert (cancelled / "results.json").exists()
    assert "slurm sweep vit_b32 finished: 1 ok, 2 failed or unfinished" in lines
    assert any(line.strip().startswith("CuPL/dtd/seed2: FAILED: ValueError: DATASET.ROOT /nope") for line in lines)
    table = capsys.readouterr().out
    assert "fail" in table and "51.50" in table  # output_parser: CLIP mean of seeds 1, 2; CuPL failed


def test_preempted_task_requeues_and_resumes(slurm_cluster, fake_setup, monkeypatch):
    configs, train, out = fake_setup
    monkeypatch.setenv("FAKE_EPOCHS", "6")
    monkeypatch.setenv("FAKE_EPOCH_S", "0.5")
    code, lines = _sweep(configs, train, out, "ZeroshotCLIP", "1")
    assert code == 0
    job_id = _job_id(lines)
    epochs = _run(out, "ZeroshotCLIP", 1) / "ckpt.json"
    _wait_until(lambda: epochs.exists(), what="the task to train an epoch")
    # what Slurm sends --signal-before seconds before the time limit (--signal=B:USR1@N)
    subprocess.run(["scancel", "--signal=USR1", "--batch", f"{job_id}_0"], check=True)
    _wait_until(lambda: any(row[1] == "PENDING" for row in _squeue(job_id)), what="the task to requeue itself")
    # Slurm holds a requeued job for 120 s (BeginTime); the test shortens that to 2 s (within the second of the
    # requeue the old job credential is still revoked: "Killing non-startable batch job: Job credential revoked")
    subprocess.run(["scontrol", "update", f"JobId={job_id}_0", "StartTime=now+2"], check=True)
    run = _run(out, "ZeroshotCLIP", 1)
    _wait_until(lambda: (run / "results.json").exists() or not _squeue(job_id), timeout=60, what="the requeued task")
    slurm.wait_for(job_id, log=lambda *_: None)
    task_log = "".join(path.read_text() for path in (out / ".slurm").glob("*/task-*_0.out"))
    records = json.loads(epochs.read_text())
    ctld = subprocess.run(["grep", f"JobId={job_id}", "/tmp/clipkit-slurm/log/slurmctld.log"], capture_output=True,
                          text=True).stdout
    assert [epoch for epoch, _ in records] == list(range(1, 7)), task_log + ctld  # every epoch once: resumed
    assert records[0][1] == "0" and records[-1][1] == "1"  # the last epochs ran in the requeued task
    assert (run / "results.json").exists() and not (run / "failed.txt").exists()
    assert "stopped before the time limit" in task_log and "(restart 1)" in task_log


FAKE_SBATCH = """#!/bin/sh
echo "$@" >> "$FAKE_SBATCH_LOG"
echo 4242
"""


def _with_fake_sbatch(monkeypatch, tmp_path):
    """An ``sbatch`` on PATH that records its arguments and answers job id 4242 (no Slurm needed)."""
    folder = tmp_path / "fake_bin"
    folder.mkdir()
    (folder / "sbatch").write_text(FAKE_SBATCH)
    (folder / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SBATCH_LOG", str(tmp_path / "sbatch.log"))
    return tmp_path / "sbatch.log"


def _array_options(out):
    """{method: #SBATCH resource options of its array} over the submission folders of ``out``."""
    found = {}
    for submission in sorted((out / ".slurm").iterdir()):
        methods = {job["method"] for job in json.loads((submission / "jobs.json").read_text())}
        assert len(methods) == 1, methods  # one method per array here: each has its own resources
        options = [line[len("#SBATCH "):] for line in (submission / "array.sh").read_text().splitlines()
                   if line.startswith("#SBATCH --") and line.split("=")[0][len("#SBATCH "):] in
                   ("--gres", "--time", "--mem", "--cpus-per-task")]
        found[methods.pop()] = options
    return found


def test_each_config_asks_for_its_own_resources_and_the_command_line_overrides(fake_setup, monkeypatch, tmp_path):
    """Needs no Slurm: one array per distinct set of task resources, read from each job's resolved config (trainer
    YAML, then the method's dataset_overrides.yaml opts); --mem on the command line replaces every config's."""
    configs, train, out = fake_setup
    trainers = os.path.join(configs, "trainers")
    with open(os.path.join(trainers, "ZeroshotCLIP", "vit_b32.yaml"), "w") as handle:
        handle.write("SLURM:\n  MEM: \"1G\"\n  CPUS_PER_TASK: 2\n")
    with open(os.path.join(trainers, "CuPL", "dataset_overrides.yaml"), "w") as handle:
        handle.write("dtd: [SLURM.TIME, \"0:10:00\"]\n")
    calls = _with_fake_sbatch(monkeypatch, tmp_path)
    code, lines = _sweep(configs, train, out, "ZeroshotCLIP,CuPL", "1,2")
    assert code == 0
    assert _array_options(out) == {"ZeroshotCLIP": ["--mem=1G", "--cpus-per-task=2"], "CuPL": ["--time=0:10:00"]}
    assert len(calls.read_text().splitlines()) == 2
    assert [line.split(";")[1].strip() for line in lines if line.startswith("slurm: submitted job array 4242")] == [
        "--cpus-per-task=2, --mem=1G", "--time=0:10:00"]

    dry = []
    assert sweep.main(["vit_b32", "--methods", "ZeroshotCLIP,CuPL", "--datasets", "dtd", "--seeds", "1,2",
                       "--data-root", "/data", "--configs-root", configs, "--train-script", train,
                       "--output-root", str(tmp_path / "dry"), "--slurm", "--dry-run"], log=dry.append) == 0
    assert dry[-3:] == ["slurm (dry run): 2 job array(s)", "  2 tasks; --cpus-per-task=2, --mem=1G; ZeroshotCLIP",
                        "  2 tasks; --time=0:10:00; CuPL"]
    assert not (tmp_path / "dry").exists()  # a dry run submits and writes nothing

    shutil.rmtree(out / ".slurm")
    code, _ = _sweep(configs, train, out, "ZeroshotCLIP,CuPL", "1", "--mem", "5G")
    assert code == 0
    assert _array_options(out) == {"ZeroshotCLIP": ["--mem=5G", "--cpus-per-task=2"],
                                   "CuPL": ["--time=0:10:00", "--mem=5G"]}


def test_scheduling_keys_are_not_part_of_a_runs_recorded_config():
    """A task's resources do not change its numbers: a run folder started before the SLURM node existed, or resumed
    with other resources, keeps its config identity."""
    import train as train_cli
    from clipkit.run_folder import numerics_config

    parser = train_cli.build_parser()
    base = ["--trainer", "ZeroshotCLIP", "--output-dir", "/tmp/unused"]
    plain = numerics_config(train_cli.setup_cfg(parser.parse_args(base)))
    asked = numerics_config(train_cli.setup_cfg(parser.parse_args(base + ["SLURM.MEM", "64G", "SLURM.GRES", "gpu:2"])))
    assert plain == asked and not any(key.startswith("SLURM.") for key in plain)


def test_arrays_of_different_resources_run_to_the_end_on_slurm(slurm_cluster, fake_setup):
    configs, train, out = fake_setup
    with open(os.path.join(configs, "trainers", "ZeroshotCLIP", "vit_b32.yaml"), "w") as handle:
        handle.write("SLURM:\n  TIME: \"0:30:00\"\n")
    code, lines = _sweep(configs, train, out, "ZeroshotCLIP,CuPL", "1", "--wait")
    submitted = [line for line in lines if line.startswith("slurm: submitted job array ")]
    assert len(submitted) == 2 and "--time=0:30:00" in submitted[0] and "cluster defaults" in submitted[1]
    # --wait waited for both arrays: the stand-in CuPL always fails, the other run finished
    assert code == 1 and "slurm sweep vit_b32 finished: 1 ok, 1 failed or unfinished" in lines
    assert (_run(out, "ZeroshotCLIP", 1) / "results.json").exists() and (_run(out, "CuPL", 1) / "failed.txt").exists()


def test_a_bad_resource_value_names_the_job_and_the_key(fake_setup, monkeypatch, tmp_path, capsys):
    """Needs no Slurm: a config whose SLURM node does not merge stops the submission before anything is written."""
    configs, train, out = fake_setup
    with open(os.path.join(configs, "trainers", "ZeroshotCLIP", "vit_b32.yaml"), "w") as handle:
        handle.write("SLURM:\n  CPUS_PER_TASK: \"many\"\n")
    calls = _with_fake_sbatch(monkeypatch, tmp_path)
    code, _ = _sweep(configs, train, out, "ZeroshotCLIP", "1")
    err = capsys.readouterr().err
    assert code == 2 and "--slurm: cannot read the config of ZeroshotCLIP/dtd/seed1" in err and "CPUS_PER_TASK" in err
    assert not calls.exists() and not (out / ".slurm").exists()
