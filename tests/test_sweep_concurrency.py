"""Sweeps that share an output root and sweeps that are stopped: every job runs once, no job outlives the sweep."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from clipkit import sweep
from tests.test_sweep import write_configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Stands in for train.py: records the call, sleeps, writes results.json (stdlib only: a fast interpreter start).
SLOW_TRAIN = textwrap.dedent(
    """
    import argparse, json, os, sys, time
    sys.path.insert(0, os.environ["REPO"])
    import train  # light at import time (no torch)
    train.die_with_sweep()
    parser = argparse.ArgumentParser()
    for flag in ("--root", "--seed", "--trainer", "--dataset-config-file", "--config-file", "--output-dir"):
        parser.add_argument(flag)
    parser.add_argument("opts", nargs="*")
    args = parser.parse_args()
    with open(os.environ["FAKE_TRAIN_CALLS"], "a") as calls:
        calls.write(json.dumps({"run_dir": args.output_dir, "pid": os.getpid()}) + "\\n")
    time.sleep(float(os.environ["FAKE_TRAIN_SECONDS"]))
    with open(os.path.join(args.output_dir, "results.json"), "w") as handle:
        json.dump({"accuracy_last": 50.0, "epochs": []}, handle)
    """
)

RUN_PLAN = textwrap.dedent(
    """
    import json, sys
    from clipkit import sweep
    configs, out, train = sys.argv[1:4]
    plan = sweep.plan_sweep("vit_b32", ["A", "B"], {}, ["dtd"], [1, 2], configs, "/data", out, sys.executable, train)
    outcomes = sweep.run_jobs(plan.jobs, [], dict(__import__("os").environ), log=lambda line: None)
    print(json.dumps([[o.job.name, o.ok, o.skipped] for o in outcomes]))
    """
)


@pytest.fixture
def fake_setup(tmp_path):
    configs = write_configs(tmp_path / "configs", trainers={"A": {"vit_b32": ""}, "B": {"vit_b32": ""}},
                            datasets={"dtd": ""})
    train = tmp_path / "slow_train.py"
    train.write_text(SLOW_TRAIN)
    calls = tmp_path / "calls.jsonl"
    env = dict(os.environ, FAKE_TRAIN_CALLS=str(calls), REPO=REPO, PYTHONPATH=REPO)
    return configs, str(train), calls, env, tmp_path / "out"


def _calls(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_two_concurrent_sweeps_into_one_root_run_each_job_once(fake_setup):
    configs, train, calls, env, out = fake_setup
    env["FAKE_TRAIN_SECONDS"] = "0.6"
    cmd = [sys.executable, "-c", RUN_PLAN, configs, str(out), train]
    sweeps = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    reports = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in sweeps]
    run_dirs = [c["run_dir"] for c in _calls(calls)]
    assert len(run_dirs) == 4 and len(set(run_dirs)) == 4  # 4 jobs, each run once
    ran = sorted(name for report in reports for name, ok, skipped in report if ok and not skipped)
    assert ran == ["A/dtd/seed1", "A/dtd/seed2", "B/dtd/seed1", "B/dtd/seed2"]
    assert all(ok for report in reports for _, ok, _ in report)
    skipped = [skipped for report in reports for _, _, skipped in report if skipped]
    assert len(skipped) == 4 and all("another process" in s for s in skipped)


def _wait_for(predicate, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1].startswith("Z")  # a zombie has exited
    except FileNotFoundError:
        return True


SWEEP_ONE = textwrap.dedent(
    """
    import sys
    from clipkit import sweep
    sys.exit(sweep.main(["vit_b32", "--methods", "A", "--datasets", "dtd", "--seeds", "1", "--configs-root",
                         sys.argv[1], "--output-root", sys.argv[2], "--train-script", sys.argv[3], "--data-root", "/d"]))
    """
)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to see whether a process is gone")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_a_stopped_sweep_leaves_no_job_behind(fake_setup, monkeypatch, signum):
    configs, train, calls, env, out = fake_setup
    env["FAKE_TRAIN_SECONDS"] = "60"
    # the sweep's registry look-up would import torch and every plugin: stand the registry in for speed
    script = ("import clipkit.sweep as s; s.registered_trainers = lambda extra: {'A': False}\n" + SWEEP_ONE)
    proc = subprocess.Popen([sys.executable, "-c", script, configs, str(out), train], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: _calls(calls), 30), proc.communicate(timeout=5)
        child = _calls(calls)[0]["pid"]
        proc.send_signal(signum)
        proc.wait(timeout=30)
        if signum != signal.SIGKILL:
            assert proc.returncode == 128 + signum  # exits after its job, with the signal's code
            assert _gone(child)  # already gone when the sweep exits
            assert not (out / "vit_b32" / "dtd" / "A" / "seed1" / "failed.txt").exists()  # interrupted, not failed
        assert _wait_for(lambda: _gone(child), 10)  # SIGKILL: the kernel's parent-death signal stops the job
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for call in _calls(calls):
            if not _gone(call["pid"]):
                os.kill(call["pid"], signal.SIGKILL)


def test_first_error_line_reports_the_dataloader_workers_own_error():
    stderr = ("Traceback (most recent call last):\n  File \"train.py\", line 9\n"
              "OSError: Caught OSError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
              "  File \"worker.py\", line 3\nOSError: Cannot read image /d/x.jpg (truncated)\n")
    assert sweep.first_error_line(stderr, 1) == "OSError: Cannot read image /d/x.jpg (truncated)"


def test_gpus_without_cuda_warns(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    lines = []
    assert sweep.warn_if_no_cuda(["0", "1"], log=lines.append)
    assert "--gpus 0,1 but CUDA is not available" in lines[0] and "CPU" in lines[0]
