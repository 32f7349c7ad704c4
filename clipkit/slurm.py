"""Submit a sweep to Slurm as job arrays (``scripts/run_all.sh BACKBONE --slurm ...``).

The job list is the local sweep's (``clipkit.sweep.plan_sweep``): same jobs, same skip rule (a run with
``results.json`` is not submitted), same run folders, same ``failed.txt``. Task ``i`` of the array runs job ``i``
through ``clipkit.sweep.run_job`` (under the run-folder lock, stderr to ``stderr.txt``, ``failed.txt`` on failure),
so ``output_parser.py`` cannot tell a Slurm sweep from a local one.

Why plain ``sbatch`` and not submitit: no new dependency, and nothing to pickle — a task is a ``train.py`` command
line, and what submitit adds (checkpoint/requeue of a Python callable) the toolkit already has: every epoch is
checkpointed and a re-launch into the run folder resumes exactly (clipkit/engine/checkpoint.py).

Resources per task: each job's resolved config (train.py's merge of its YAMLs and opts) may ask for ``SLURM.GRES``,
``SLURM.TIME``, ``SLURM.MEM`` and ``SLURM.CPUS_PER_TASK`` (clipkit/config.py); the command line's ``--gres``,
``--time``, ``--mem`` and ``--cpus-per-task`` override them for every task. The tasks of an array share one set of
resources, so a sweep is submitted as one array per distinct set (usually one per method).

Files of one array, under ``<output-root>/.slurm/<backbone>-<stamp>-<pid>[-<part>]/`` (a hidden folder: the parser
skips it): ``jobs.json`` (task index -> job), ``array.sh`` (the sbatch script), ``task-<jobid>_<index>.out`` (task
logs).

Pre-emption and time limits: the array is submitted with ``--signal=B:USR1@<seconds>`` and ``--requeue``. On
``SIGUSR1`` (Slurm's warning before the time limit, or ``scancel --signal=USR1 --batch``) a task stops its
``train.py`` (SIGTERM; the newest epoch checkpoint is on disk), requeues itself with ``scontrol requeue`` and exits;
the requeued task resumes from that checkpoint. ``SIGTERM`` (``scancel``) stops the task without a requeue and without
a ``failed.txt``: re-submitting the same command submits it again and it resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from . import REPO_ROOT
from . import sweep as sweep_mod

SLURM_DIR = ".slurm"  # under the output root; hidden so that output_parser.find_runs skips it
JOBS_FILE = "jobs.json"
SCRIPT_FILE = "array.sh"
PREEMPT_SIGNAL = "USR1"  # sent to the batch step (B:) before the time limit; the task requeues itself
DEFAULT_SIGNAL_S = 120  # seconds before the time limit at which Slurm sends PREEMPT_SIGNAL
POLL_MAX_S = 30.0  # --wait: longest pause between two squeue polls
POLL_NOTE_S = 300.0  # --wait: how often a progress line is printed
EMPTY_POLLS = 2  # --wait: the array is done when this many polls in a row list none of its tasks
# sbatch resource flags (argparse names) and the SLURM config keys that set them per task (clipkit/config.py)
RESOURCE_FLAGS = ("gres", "time", "mem", "cpus_per_task")
RESOURCE_KEYS = ("GRES", "TIME", "MEM", "CPUS_PER_TASK")
REQUEUE_EXIT = 0  # exit status of a task that requeued itself (the array is not marked failed for it)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Slurm (--slurm: submit the jobs as sbatch job arrays, one per distinct set of "
                                      "task resources, instead of running them here; "
                                      "docs/running_sweeps.md#on-a-slurm-cluster)")
    group.add_argument("--slurm", action="store_true",
                       help="submit the unfinished jobs as Slurm job arrays (one per distinct set of resources)")
    group.add_argument("--partition", help="sbatch --partition")
    group.add_argument("--account", help="sbatch --account")
    group.add_argument("--gres", help="sbatch --gres for every task, e.g. gpu:1 (default: each config's SLURM.GRES)")
    group.add_argument("--time",
                       help="sbatch --time for every task, e.g. 4:00:00 (default: each config's SLURM.TIME)")
    group.add_argument("--mem", help="sbatch --mem for every task, e.g. 32G (default: each config's SLURM.MEM)")
    group.add_argument("--cpus-per-task", type=int,
                       help="sbatch --cpus-per-task for every task (default: each config's SLURM.CPUS_PER_TASK)")
    group.add_argument("--max-parallel", type=int, help="at most N tasks of the array at once (--array=0-K%%N)")
    group.add_argument("--signal-before", type=int, default=DEFAULT_SIGNAL_S,
                       help=f"seconds before the time limit at which a task is signalled to stop and requeue itself "
                            f"(default {DEFAULT_SIGNAL_S})")
    group.add_argument("--extra-sbatch", help="further sbatch options, e.g. \"--qos=high --constraint=a100\"")
    group.add_argument("--wait", action="store_true",
                       help="block until the arrays are done, then print the summary")


def sbatch_options(args: argparse.Namespace, count: int, folder: str, name: str,
                   resources: Optional[Dict[str, str]] = None) -> List[str]:
    """The ``#SBATCH`` options of the array script; ``resources`` ({flag: value} of ``RESOURCE_FLAGS``, from
    ``task_resources``) replaces the command line's resource flags (None: those flags as given)."""
    array = f"0-{count - 1}" + (f"%{args.max_parallel}" if args.max_parallel else "")
    options = [f"--job-name={name}", f"--array={array}", f"--output={folder}/task-%A_%a.out",
               f"--signal=B:{PREEMPT_SIGNAL}@{args.signal_before}", "--requeue", "--open-mode=append"]
    if resources is None:
        resources = {flag: getattr(args, flag) for flag in RESOURCE_FLAGS}
    values = dict({flag: getattr(args, flag) for flag in ("partition", "account")}, **resources)
    for flag in ("partition", "account") + RESOURCE_FLAGS:
        value = values.get(flag)
        if value not in (None, ""):
            options.append(sbatch_flag(flag, value))
    return options + shlex.split(args.extra_sbatch or "")


def sbatch_flag(flag: str, value) -> str:
    """``("cpus_per_task", 9)`` -> ``"--cpus-per-task=9"``."""
    return f"--{flag.replace('_', '-')}={value}"


def config_resources(job: sweep_mod.Job) -> Dict[str, str]:
    """{flag: value} of the SLURM node of ``job``'s resolved config (train.py's own merge of its dataset and trainer
    YAMLs and trailing opts); keys left at "" / 0 are absent."""
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    import train

    try:
        cfg = train.setup_cfg(train.build_parser().parse_args(list(job.command[2:])))
    except (KeyError, ValueError, AssertionError, FileNotFoundError) as error:
        raise sweep_mod.SweepError(f"--slurm: cannot read the config of {job.name} ({error})") from error
    return {flag: str(cfg.SLURM[key]) for flag, key in zip(RESOURCE_FLAGS, RESOURCE_KEYS)
            if cfg.SLURM[key] not in ("", 0)}


def task_resources(job: sweep_mod.Job, args: argparse.Namespace) -> Tuple[Tuple[str, str], ...]:
    """Sorted (flag, value) resources of one task: its config's SLURM node, each key overridden by the command line's
    flag when given (--gres, --time, --mem, --cpus-per-task)."""
    resources = config_resources(job)
    for flag in RESOURCE_FLAGS:
        value = getattr(args, flag, None)
        if value not in (None, ""):
            resources[flag] = str(value)
    return tuple(sorted(resources.items()))


def array_script(options: Sequence[str], python: str, jobs_file: str, env: Dict[str, str]) -> str:
    lines = ["#!/bin/bash"] + [f"#SBATCH {option}" for option in options]
    lines += ["# generated by clipkit/slurm.py: task i runs job i of jobs.json under its run-folder lock",
              f"cd {shlex.quote(REPO_ROOT)}"]
    for key in ("PYTHONPATH", sweep_mod.PLUGIN_ENV, "CLIPKIT_CACHE"):
        if env.get(key):
            lines.append(f"export {key}={shlex.quote(env[key])}")
    lines.append(f"exec {shlex.quote(python)} -m clipkit.slurm task {shlex.quote(jobs_file)} "
                 f"\"$SLURM_ARRAY_TASK_ID\"")
    return "\n".join(lines) + "\n"


def write_submission(jobs: Sequence[sweep_mod.Job], args: argparse.Namespace, output_root: str, python: str,
                     env: Dict[str, str], resources: Optional[Dict[str, str]] = None, part: Optional[int] = None
                     ) -> str:
    """Write jobs.json and array.sh into a new submission folder (``-<part>`` appended when a sweep needs several
    arrays); returns the script's path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = os.path.join(output_root, SLURM_DIR, f"{args.backbone}-{stamp}-{os.getpid()}"
                          + ("" if part is None else f"-{part}"))
    os.makedirs(folder)
    jobs_file = os.path.join(folder, JOBS_FILE)
    with open(jobs_file, "w", encoding="utf-8") as handle:
        json.dump([{"method": j.method, "dataset": j.dataset, "seed": j.seed, "run_dir": j.run_dir,
                    "command": list(j.command)} for j in jobs], handle, indent=1)
    script = os.path.join(folder, SCRIPT_FILE)
    options = sbatch_options(args, len(jobs), folder, f"clipkit-{args.backbone}", resources)
    with open(script, "w", encoding="utf-8") as handle:
        handle.write(array_script(options, python, jobs_file, env))
    return script


def group_by_resources(jobs: Sequence[sweep_mod.Job], args: argparse.Namespace
                       ) -> Dict[Tuple[Tuple[str, str], ...], List[sweep_mod.Job]]:
    """Jobs grouped by their ``task_resources`` (an array's tasks share one set), groups in first-job order."""
    groups: Dict[Tuple[Tuple[str, str], ...], List[sweep_mod.Job]] = {}
    for job in jobs:
        groups.setdefault(task_resources(job, args), []).append(job)
    return groups


def describe_resources(resources: Sequence[Tuple[str, str]]) -> str:
    """``(("mem", "1G"), ...)`` -> ``"--mem=1G, ..."`` (or "cluster defaults")."""
    return ", ".join(sbatch_flag(flag, value) for flag, value in resources) or "cluster defaults"


def describe_arrays(jobs: Sequence[sweep_mod.Job], args: argparse.Namespace, log=print) -> None:
    """``--dry-run --slurm``: the arrays that would be submitted, their resources and methods."""
    groups = group_by_resources(jobs, args)
    log(f"slurm (dry run): {len(groups)} job array(s)")
    for resources, members in groups.items():
        methods = ", ".join(dict.fromkeys(job.method for job in members))
        log(f"  {len(members)} tasks; {describe_resources(resources)}; {methods}")


def sbatch(script: str, env: Dict[str, str]) -> str:
    """Submit ``script``; returns the job id."""
    try:
        process = subprocess.run(["sbatch", "--parsable", script], capture_output=True, text=True, env=env)
    except OSError as error:
        raise sweep_mod.SweepError(f"--slurm: cannot run sbatch ({error}); is Slurm installed here?") from error
    if process.returncode != 0 or not process.stdout.strip():
        raise sweep_mod.SweepError(f"sbatch failed (exit {process.returncode}): {process.stderr.strip()} "
                                   f"(script: {script})")
    return process.stdout.strip().split(";")[0]


def submit(plan: sweep_mod.Plan, args: argparse.Namespace, output_root: str, python: str, env: Dict[str, str],
           log=print) -> int:
    """Submit ``plan.jobs`` as one array per distinct set of task resources; with ``--wait`` block until all are
    done and print the summary."""
    if not plan.jobs:
        log("slurm: nothing to submit (every run is finished)")
        return summarize([], output_root, args.backbone, log)
    groups = group_by_resources(plan.jobs, args)
    job_ids = []
    for part, (resources, jobs) in enumerate(groups.items()):
        script = write_submission(jobs, args, output_root, python, env, dict(resources),
                                  part if len(groups) > 1 else None)
        job_id = sbatch(script, env)
        job_ids.append(job_id)
        log(f"slurm: submitted job array {job_id} ({len(jobs)} tasks; {describe_resources(resources)}; "
            f"script {script})")
        log(f"  watch:  squeue -j {job_id}")
        log(f"  cancel: scancel {job_id}     (one task: scancel {job_id}_<index>; indices in "
            f"{os.path.join(os.path.dirname(script), JOBS_FILE)})")
    log("  re-submit the same command to submit what is missing or failed; finished runs are skipped")
    if not args.wait:
        return 0
    for job_id in job_ids:
        wait_for(job_id, log)
    return summarize(plan.jobs, output_root, args.backbone, log)


def wait_for(job_id: str, log=print, poll_max_s: float = POLL_MAX_S) -> None:
    """Block until ``squeue`` no longer lists the array (requeued tasks included). Polls every second at first,
    backing off to ``poll_max_s``; ``sbatch --wait`` would back off to 32 s and exit at a requeue."""
    started, last_note, empty = time.time(), 0.0, 0
    while True:
        listing = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i %T"], capture_output=True, text=True)
        if listing.returncode != 0 and "Invalid job id" not in listing.stderr:
            log(f"slurm: squeue failed ({listing.stderr.strip()}); retrying")
        elif listing.stdout.strip():
            empty = 0
        else:
            empty += 1
            if empty >= EMPTY_POLLS:  # twice in a row: a task being requeued can drop out of one listing
                return
            time.sleep(1.0)
            continue
        elapsed = time.time() - started
        if elapsed - last_note >= POLL_NOTE_S:
            last_note = elapsed
            log(f"slurm: {len(listing.stdout.splitlines())} task(s) of {job_id} queued or running ({elapsed:.0f} s)")
        time.sleep(min(1.0 + elapsed / 30.0, poll_max_s))


def job_state(job: sweep_mod.Job) -> str:
    if os.path.isfile(os.path.join(job.run_dir, sweep_mod.RESULTS_FILE)):
        return "ok"
    failed = os.path.join(job.run_dir, sweep_mod.FAILED_FILE)
    if os.path.isfile(failed):
        with open(failed, encoding="utf-8", errors="replace") as handle:
            errors = [line[len("error: "):].strip() for line in handle if line.startswith("error: ")]
        return "FAILED: " + (errors[0] if errors else "see failed.txt")
    return "not finished (cancelled or out of time; re-submit to resume)"


def summarize(jobs: Sequence[sweep_mod.Job], output_root: str, backbone: str, log=print) -> int:
    """The table of the output root (output_parser) and one line per job that did not finish; 1 if any."""
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    import output_parser

    if os.path.isdir(os.path.join(output_root, backbone)):
        output_parser.main([output_root, "--backbone", backbone, "--format", "markdown"])
    states = {job.name: (job, job_state(job)) for job in jobs}
    bad = {name: item for name, item in states.items() if item[1] != "ok"}
    log(f"slurm sweep {backbone} finished: {len(states) - len(bad)} ok, {len(bad)} failed or unfinished")
    for name, (job, state) in bad.items():
        log(f"  {name}: {state}  ({job.run_dir})")
    return 1 if bad else 0


# ---------------------------------------------------------------------------------------------------- one task


def load_job(jobs_file: str, index: int) -> sweep_mod.Job:
    with open(jobs_file, encoding="utf-8") as handle:
        entry = json.load(handle)[index]
    return sweep_mod.Job(entry["method"], entry["dataset"], int(entry["seed"]), entry["run_dir"],
                         tuple(entry["command"]))


def requeue_self() -> None:
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    target = f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID", "")
    print(f"clipkit.slurm: requeueing {target}", flush=True)
    subprocess.run(["scontrol", "requeue", target], check=False)


def run_task(jobs_file: str, index: int) -> int:
    """Run job ``index`` like the local sweep does; on SIGUSR1 stop it and requeue, on SIGTERM stop it."""
    import threading

    job = load_job(jobs_file, index)
    processes: Dict[sweep_mod.Job, subprocess.Popen] = {}
    stopping = threading.Event()
    received: List[int] = []

    def on_signal(signum, frame):
        received.append(signum)
        stopping.set()
        for process in list(processes.values()):
            if process.poll() is None:
                process.terminate()

    for signum in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    print(f"clipkit.slurm: task {index}: {job.name} (restart {os.environ.get('SLURM_RESTART_COUNT', '0')})",
          flush=True)
    outcome = sweep_mod.run_job(job, dict(os.environ), None, processes, stopping)
    if not stopping.is_set() and not outcome.ok:
        time.sleep(1.0)  # scancel signals the task and train.py at once: let our handler see it before judging
    if stopping.is_set():
        failed = os.path.join(job.run_dir, sweep_mod.FAILED_FILE)
        if not outcome.skipped and os.path.isfile(failed):
            os.remove(failed)  # stopped, not failed
        if signal.SIGUSR1 in received:
            print(f"clipkit.slurm: {job.name} stopped before the time limit; resumes from its newest checkpoint",
                  flush=True)
            requeue_self()
            return REQUEUE_EXIT
        print(f"clipkit.slurm: {job.name} cancelled; re-submit to resume", flush=True)
        return 128 + received[0]
    if outcome.skipped:
        print(f"clipkit.slurm: {job.name} skipped: {outcome.skipped}", flush=True)
        return 0
    print(f"clipkit.slurm: {job.name} {'ok' if outcome.ok else 'FAILED: ' + outcome.error} "
          f"({outcome.seconds:.0f} s)", flush=True)
    return 0 if outcome.ok else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipkit.slurm", description="run one task of a submitted array")
    sub = parser.add_subparsers(dest="command", required=True)
    task = sub.add_parser("task", help="run job INDEX of JOBS_FILE (what array.sh calls)")
    task.add_argument("jobs_file")
    task.add_argument("index", type=int)
    args = parser.parse_args(argv)
    return run_task(args.jobs_file, args.index)


if __name__ == "__main__":
    sys.exit(main())
