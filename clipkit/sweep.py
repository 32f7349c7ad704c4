"""Run every registered method on every dataset for one backbone (the engine of ``scripts/run_all.sh``).

One job = one ``train.py`` run into ``<output-root>/<backbone>/<dataset_key>/<Method>/seed<S>/`` (CoOp's layout):

    python train.py --root DATA --seed S --trainer M --dataset-config-file configs/datasets/<key>.yaml \
        --config-file configs/trainers/<M>/<backbone>.yaml --output-dir RUN_DIR [--eval-only] [per-dataset opts]

* Methods are the toolkit's own registered trainers (``trainers/``, ``baselines/`` and any ``--extra-plugins``
  module); ``training_free = True`` on the class adds ``--eval-only``. Datasets are ``configs/datasets/*.yaml``
  (``tiny`` only for the ``tiny`` backbone). A method without ``configs/trainers/<M>/<backbone>.yaml`` is skipped with a
  note; ``configs/trainers/<M>/dataset_overrides.yaml`` (dataset key -> list of yacs opts) adds per-dataset opts.
* A run with ``results.json`` is done and skipped; any other existing run folder is re-run, which resumes exactly
  from its newest checkpoint (train.py refuses, with the differing keys, when the folder holds a different config).
  A failed run leaves ``failed.txt`` (command, exit code, first error line, stderr tail); the sweep goes on and exits
  1 at the end with a summary.
* Each job's run folder is locked (``fcntl``, clipkit/run_folder.py) from before the launch until the child
  exits; the child inherits the locked descriptor. Several sweeps into one output root therefore share the work: a
  job locked by another sweep, or finished meanwhile, is skipped.
* SIGINT, SIGTERM and SIGHUP (``timeout``, Slurm's scancel, docker stop, a closed terminal) are forwarded to the
  running jobs; the sweep exits only when they are gone (a job that ignores SIGTERM for 30 s is killed).
* ``--gpus 0,1`` runs one job per GPU in parallel (``CUDA_VISIBLE_DEVICES``); without it jobs run one after another.
* ``tiny``: first ``python -m clipkit.tinybench.prepare --data-root DATA`` (generates the tiny benchmark and pretrains
  the tiny CLIP, when that module exists), and a Markdown table from ``output_parser.py`` at the end.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from . import REPO_ROOT, cache_root, names

RESULTS_FILE = "results.json"
FAILED_FILE = "failed.txt"
STDERR_FILE = "stderr.txt"
OVERRIDES_FILE = "dataset_overrides.yaml"
TINY = "tiny"
DEFAULT_SEEDS = (1, 2, 3)  # CoOp's scripts run seeds 1, 2, 3
STDERR_TAIL_LINES = 40  # how much of a failed job's stderr goes into failed.txt
PLUGIN_ENV = "CLIPKIT_EXTRA_PLUGINS"  # comma-separated extra plugin modules (test-only trainers and datasets)
OWN_TRAINER_PACKAGES = ("trainers", "baselines")  # the toolkit's trainers; Dassl's own (Vanilla, FixMatch...) are not
WORKER_WRAPPER = re.compile(r"Caught \w+ in DataLoader worker process")  # the wrapper; the real error follows
TERMINATE_GRACE_S = 30.0  # how long a job may take to exit after SIGTERM before it is killed
FORWARDED_SIGNALS = ("SIGTERM", "SIGHUP")  # besides SIGINT (KeyboardInterrupt)
ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Interrupt)|error|Error|FATAL)\b.*")


class SweepError(Exception):
    """Bad input to the sweep; the message names the path / option and how to fix it."""


# ----------------------------------------------------------------------------------------------------------------------
# Planning (pure functions)
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One ``train.py`` run."""

    method: str
    dataset: str
    seed: int
    run_dir: str
    command: Tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.method}/{self.dataset}/seed{self.seed}"


@dataclass
class Plan:
    """Jobs to run, runs already finished, and notes (skipped methods, ignored override keys)."""

    jobs: List[Job] = field(default_factory=list)
    finished: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def split_list(text: Optional[str]) -> List[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def parse_seeds(text: str) -> List[int]:
    try:
        seeds = [int(s) for s in split_list(text)]
    except ValueError as error:
        raise SweepError(f"--seeds {text!r}: expected comma-separated integers, e.g. --seeds 1,2,3") from error
    if not seeds:
        raise SweepError("--seeds is empty; give e.g. --seeds 1,2,3")
    return seeds


def dataset_keys(configs_root: str) -> List[str]:
    """Stems of ``<configs_root>/datasets/*.yaml`` in the paper's column order."""
    folder = os.path.join(configs_root, "datasets")
    if not os.path.isdir(folder):
        raise SweepError(f"no dataset configs: {folder} is not a folder (pass --configs-root)")
    return names.sort_datasets(f[: -len(".yaml")] for f in os.listdir(folder) if f.endswith(".yaml"))


def select_datasets(requested: Sequence[str], available: Sequence[str], backbone: str) -> List[str]:
    """The requested datasets (checked), else the default list: ``tiny`` for the tiny backbone, the rest otherwise."""
    if requested:
        unknown = [d for d in requested if d not in available]
        if unknown:
            raise SweepError(f"--datasets: no configs/datasets/<key>.yaml for {unknown}; available: {list(available)}")
        return list(requested)
    if backbone == TINY:
        if TINY not in available:
            raise SweepError("backbone tiny needs configs/datasets/tiny.yaml (the tiny benchmark), or pass --datasets")
        return [TINY]
    real = [d for d in available if d != TINY]
    if not real:
        raise SweepError(f"no dataset configs for backbone {backbone}: configs/datasets/ holds only {list(available)}")
    return real


def select_methods(requested: Sequence[str], registered: Dict[str, bool]) -> List[str]:
    """The requested methods (checked against the registry), else every registered toolkit trainer in display order."""
    if requested:
        unknown = [m for m in requested if m not in registered]
        if unknown:
            raise SweepError(f"--methods: {unknown} not registered; registered toolkit trainers: {sorted(registered)}")
        return list(requested)
    return names.sort_methods(registered)


def load_dataset_overrides(path: str, known_datasets: Sequence[str]) -> Tuple[Dict[str, List[str]], List[str]]:
    """Read ``dataset_overrides.yaml`` (dataset key -> flat list of yacs opts); returns (overrides, notes)."""
    if not os.path.isfile(path):
        return {}, []
    import yaml

    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise SweepError(f"{path}: expected a mapping dataset_key -> [KEY, VALUE, ...], got {type(data).__name__}")
    overrides, notes = {}, []
    for key, opts in data.items():
        if not isinstance(opts, list) or len(opts) % 2:
            raise SweepError(f"{path}: entry {key!r} must be a list of yacs KEY, VALUE pairs, e.g. "
                             f"{key}: [OPTIM.LR, 1.0e-6]; got {opts!r}")
        if key not in known_datasets:
            notes.append(f"{path}: {key!r} is not a dataset config (have {list(known_datasets)}); entry ignored")
        overrides[str(key)] = [str(item) for item in opts]
    return overrides, notes


def train_command(python: str, train_script: str, data_root: str, seed: int, method: str, dataset_config: str,
                  trainer_config: str, run_dir: str, eval_only: bool, opts: Sequence[str]) -> Tuple[str, ...]:
    """CoOp-style ``train.py`` command line."""
    command = [python, train_script, "--root", data_root, "--seed", str(seed), "--trainer", method,
               "--dataset-config-file", dataset_config, "--config-file", trainer_config, "--output-dir", run_dir]
    if eval_only:
        command.append("--eval-only")
    return tuple(command + list(opts))


def plan_sweep(backbone: str, methods: Sequence[str], training_free: Dict[str, bool], datasets: Sequence[str],
               seeds: Sequence[int], configs_root: str, data_root: str, output_root: str, python: str,
               train_script: str, overrides_file: Optional[str] = None) -> Plan:
    """Every (method, dataset, seed) job not finished yet, in method -> dataset -> seed order. ``overrides_file``
    replaces the methods' own ``dataset_overrides.yaml`` (e.g. DPA's ``official_overrides.yaml``)."""
    plan = Plan()
    all_datasets = dataset_keys(configs_root)
    for method in methods:
        method_dir = os.path.join(configs_root, "trainers", method)
        trainer_config = os.path.join(method_dir, f"{backbone}.yaml")
        if not os.path.isfile(trainer_config):
            plan.notes.append(f"skipped {method}: no {os.path.relpath(trainer_config, configs_root)} under "
                              f"{configs_root}")
            continue
        overrides, notes = load_dataset_overrides(overrides_file or os.path.join(method_dir, OVERRIDES_FILE),
                                                  all_datasets)
        plan.notes += notes
        for dataset in datasets:
            for seed in seeds:
                run_dir = os.path.join(output_root, backbone, dataset, method, f"seed{seed}")
                if os.path.isfile(os.path.join(run_dir, RESULTS_FILE)):
                    plan.finished.append(run_dir)
                    continue
                command = train_command(python, train_script, data_root, seed, method,
                                        os.path.join(configs_root, "datasets", f"{dataset}.yaml"), trainer_config,
                                        run_dir, training_free.get(method, False), overrides.get(dataset, []))
                plan.jobs.append(Job(method, dataset, seed, run_dir, command))
    return plan


def first_error_line(stderr: str, returncode: int) -> str:
    """The first line of ``stderr`` that reads like an error (the root exception of a traceback), else a fallback."""
    lines = [line.rstrip() for line in stderr.splitlines()]
    matches = [line for line in lines if ERROR_LINE.match(line)]
    for index, line in enumerate(matches):
        # a DataLoader worker's error is re-raised as "X: Caught X in DataLoader worker process N." followed by the
        # worker's traceback: report the worker's own error line
        if WORKER_WRAPPER.search(line) and index + 1 < len(matches):
            continue
        return line
    if returncode < 0:
        try:
            signal_name = signal.Signals(-returncode).name
        except ValueError:
            signal_name = f"signal {-returncode}"
        return f"killed by {signal_name}" + (" (out of memory?)" if signal_name == "SIGKILL" else "")
    nonempty = [line for line in lines if line.strip()]
    return nonempty[-1] if nonempty else f"exit code {returncode} with empty stderr (see log.txt)"


def failure_report(job: Job, returncode: int, stderr: str) -> str:
    """Text of ``failed.txt``; ``output_parser.py`` reads its ``error:`` line."""
    tail = "\n".join(stderr.splitlines()[-STDERR_TAIL_LINES:])
    return (f"method: {job.method}\ndataset: {job.dataset}\nseed: {job.seed}\n"
            f"command: {shlex.join(job.command)}\nexit code: {returncode}\n"
            f"error: {first_error_line(stderr, returncode)}\n"
            f"--- stderr tail (last {STDERR_TAIL_LINES} lines) ---\n{tail}\n")


# ----------------------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    job: Job
    ok: bool
    error: str = ""
    seconds: float = 0.0
    skipped: str = ""  # why the job did not run here (locked by another process, finished meanwhile)


def run_job(job: Job, env: Dict[str, str], gpu: Optional[str], processes: Dict[Job, subprocess.Popen],
            stopping: Optional[threading.Event] = None) -> Outcome:
    """Run one job under its run-folder lock (stderr to ``<run dir>/stderr.txt``; stdout is in the engine's log.txt);
    write or clear failed.txt. Skipped without a launch when another process holds the lock or the run finished."""
    from .run_folder import LOCK_FD_ENV, RunFolder, RunLockedError

    folder = RunFolder(job.run_dir)
    try:
        folder.acquire()
    except RunLockedError:
        return Outcome(job, True, skipped="running in another process (run folder locked)")
    try:
        if os.path.isfile(os.path.join(job.run_dir, RESULTS_FILE)):
            return Outcome(job, True, skipped="finished by another process")
        child_env = dict(env, **{LOCK_FD_ENV: str(folder._lock_fd), SWEEP_PID_ENV: str(os.getpid())})
        return _launch(job, child_env, gpu, processes, folder._lock_fd, stopping)
    finally:
        folder.release()


SWEEP_PID_ENV = "CLIPKIT_SWEEP_PID"  # train.py asks the kernel for SIGTERM when this parent dies (Linux)


def _launch(job: Job, child_env: Dict[str, str], gpu: Optional[str], processes: Dict[Job, subprocess.Popen],
            lock_fd: int, stopping: Optional[threading.Event] = None) -> Outcome:
    if gpu is not None:
        child_env["CUDA_VISIBLE_DEVICES"] = gpu
    failed_path = os.path.join(job.run_dir, FAILED_FILE)
    stderr_path = os.path.join(job.run_dir, STDERR_FILE)
    start = time.time()
    with open(stderr_path, "w", encoding="utf-8") as stderr_file:
        try:
            process = subprocess.Popen(job.command, stdout=subprocess.DEVNULL, stderr=stderr_file, cwd=REPO_ROOT,
                                       env=child_env, pass_fds=(lock_fd,))
        except OSError as error:
            stderr_file.write(f"error: cannot start {job.command[0]}: {error}\n")
            returncode = 1
        else:
            processes[job] = process
            returncode = process.wait()
            processes.pop(job, None)
    with open(stderr_path, encoding="utf-8", errors="replace") as handle:
        stderr = handle.read()
    if returncode == 0 and not os.path.isfile(os.path.join(job.run_dir, RESULTS_FILE)):
        returncode, stderr = 1, stderr + f"\nerror: train.py exited 0 but wrote no {RESULTS_FILE} in {job.run_dir}\n"
    seconds = time.time() - start
    if returncode != 0 and stopping is not None and stopping.is_set():
        # stopped by the sweep itself (Ctrl-C / SIGTERM / SIGHUP): interrupted, not failed; a rerun resumes it
        return Outcome(job, True, seconds=seconds, skipped="stopped with the sweep (resumes on the next run)")
    if returncode == 0:
        if os.path.exists(failed_path):
            os.remove(failed_path)
        return Outcome(job, True, seconds=seconds)
    with open(failed_path, "w", encoding="utf-8") as handle:
        handle.write(failure_report(job, returncode, stderr))
    return Outcome(job, False, first_error_line(stderr, returncode), seconds)


class Terminated(KeyboardInterrupt):
    """SIGTERM / SIGHUP received by the sweep (handled like Ctrl-C: the jobs are stopped first)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_processes(processes: Dict[Job, subprocess.Popen], grace_s: float = TERMINATE_GRACE_S) -> None:
    """SIGTERM every running job, wait for all of them, SIGKILL those still alive after ``grace_s``."""
    running = list(processes.values())
    for process in running:
        if process.poll() is None:
            process.terminate()
    deadline = time.time() + grace_s
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_jobs(jobs: Sequence[Job], gpus: Sequence[str], env: Dict[str, str], log=print) -> List[Outcome]:
    """Run jobs, one per GPU in parallel (one at a time without GPUs), printing done / running / left."""
    pending = collections.deque(jobs)
    outcomes: List[Outcome] = []
    processes: Dict[Job, subprocess.Popen] = {}
    lock = threading.Lock()
    stopping = threading.Event()
    total = len(jobs)

    def progress() -> str:
        return f"[{len(outcomes)} done / {len(processes)} running / {len(pending)} left of {total}]"

    def worker(gpu: Optional[str]) -> None:
        while True:
            with lock:
                if not pending:
                    return
                job = pending.popleft()
                resumed = os.path.isdir(job.run_dir)
                where = f" on GPU {gpu}" if gpu is not None else ""
                log(f"{progress()} {'resume' if resumed else 'start'} {job.name}{where}")
            outcome = run_job(job, env, gpu, processes, stopping)
            with lock:
                outcomes.append(outcome)
                status = f"skipped: {outcome.skipped}" if outcome.skipped else (
                    "ok" if outcome.ok else f"FAILED: {outcome.error}")
                log(f"{progress()} {job.name} {status} ({outcome.seconds:.0f} s)")

    threads = [threading.Thread(target=worker, args=(gpu,), daemon=True) for gpu in (list(gpus) or [None])]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM / SIGHUP (Terminated)
        stopping.set()
        with lock:
            pending.clear()
        stop_processes(processes)
        for thread in threads:
            thread.join(timeout=TERMINATE_GRACE_S)
        raise
    return outcomes


# ----------------------------------------------------------------------------------------------------------------------
# Registry and entry point
# ----------------------------------------------------------------------------------------------------------------------


def registered_trainers(extra_plugins: Sequence[str]) -> Dict[str, bool]:
    """Toolkit trainers in the registry -> whether they are training-free (imports torch and every plugin)."""
    from .dassl import TRAINER_REGISTRY
    from .plugins import import_all_plugins

    import_all_plugins()
    for module in extra_plugins:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise SweepError(f"--extra-plugins / {PLUGIN_ENV}: cannot import {module!r} ({error})") from error
    trainers = {}
    for name in TRAINER_REGISTRY.registered_names():
        cls = TRAINER_REGISTRY.get(name)
        package = cls.__module__.split(".")[0]
        if package in OWN_TRAINER_PACKAGES or cls.__module__ in extra_plugins:
            trainers[name] = bool(getattr(cls, "training_free", False))
    return trainers


def warn_if_no_cuda(gpus: Sequence[str], log=print) -> bool:
    """Log a warning when ``--gpus`` is given but torch sees no CUDA device (the jobs would run on the CPU)."""
    import torch

    if torch.cuda.is_available():
        return False
    log(f"WARNING: --gpus {','.join(gpus)} but CUDA is not available to torch {torch.__version__}: every job runs on "
        f"the CPU, {len(gpus)} at a time. Check the driver / the CUDA build of torch, or drop --gpus.")
    return True


def prepare_tiny_benchmark(python: str, data_root: str, env: Dict[str, str], log=print) -> None:
    """Generate the tiny dataset and pretrain the tiny CLIP (``clipkit.tinybench.prepare``) when that module exists."""
    if not os.path.isfile(os.path.join(REPO_ROOT, "clipkit", "tinybench", "prepare.py")):
        log("note: clipkit/tinybench/prepare.py not found; skipping the tiny benchmark preparation")
        return
    command = [python, "-m", "clipkit.tinybench.prepare", "--data-root", data_root]
    log(f"preparing the tiny benchmark: {shlex.join(command)}")
    if subprocess.run(command, cwd=REPO_ROOT, env=env).returncode != 0:
        raise SweepError(f"tiny benchmark preparation failed: {shlex.join(command)} (see its output above)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/run_all.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("backbone", help="vit_b32, vit_b16 or tiny (the stem of configs/trainers/<M>/<backbone>.yaml)")
    parser.add_argument("--methods", help="comma-separated trainer names (default: every registered toolkit trainer)")
    parser.add_argument("--datasets", help="comma-separated dataset keys (default: tiny for tiny, else all 13)")
    parser.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)), help="comma-separated (default 1,2,3)")
    parser.add_argument("--data-root", help="DATASET.ROOT (default for tiny: <clipkit cache>/data; required otherwise)")
    parser.add_argument("--output-root", default="output", help="default: output/")
    parser.add_argument("--gpus", help="comma-separated GPU ids, one job per GPU in parallel (default: sequential)")
    parser.add_argument("--configs-root", default=os.path.join(REPO_ROOT, "configs"),
                        help="folder with datasets/ and trainers/ (default: the repo's configs/)")
    parser.add_argument("--extra-plugins", help=f"comma-separated modules to import besides trainers/, baselines/ and "
                                                f"datasets/ (added to ${PLUGIN_ENV} for the jobs)")
    parser.add_argument("--train-script", default=os.path.join(REPO_ROOT, "train.py"), help="default: the repo's")
    parser.add_argument("--dataset-overrides", help="per-dataset opts file replacing the method's own "
                        "dataset_overrides.yaml (one method only; e.g. configs/trainers/DPA/official_overrides.yaml "
                        "with --methods DPA and its own --output-root)")
    parser.add_argument("--no-figures", action="store_true", help="tiny: skip the figures drawn at the end")
    parser.add_argument("--plan", action="store_true", help="print the runs still to do and their cost (training "
                        "images, GPU hours with --throughput), then exit without starting anything")
    parser.add_argument("--throughput", help="--plan: JSON {\"<Method>\": {\"<backbone>\": images_per_second}} "
                        "measured on the target GPU with benchmarks/bench_*.py")
    parser.add_argument("--dry-run", action="store_true", help="print the jobs and exit")
    from . import slurm

    slurm.add_arguments(parser)
    return parser


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def draw_tiny_figures(python: str, output_root: str, env: Dict[str, str], log=print) -> None:
    """The tiny sweep's figures (``python -m clipkit.figures``) into ``<output root>/tiny/figures``; a figure that
    cannot be drawn is reported and does not fail the sweep."""
    out = os.path.join(output_root, TINY, "figures")
    commands = [["curves", "--root", output_root], ["deltas", "--root", output_root, "--backbone", TINY]]
    attention_run = os.path.join(output_root, TINY, TINY, "MicroCLIP", "seed1")
    if os.path.isfile(os.path.join(attention_run, RESULTS_FILE)):
        commands.append(["attention", "--run", attention_run, "--images", "4"])
    for command in commands:
        proc = subprocess.run([python, "-m", "clipkit.figures", *command, "--out", out], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True)
        if proc.returncode == 0:
            log(f"figure {command[0]}: {out}/{command[0]}.png (.pdf)")
        else:
            log(f"figure {command[0]} not drawn: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")


def main(argv: Optional[Sequence[str]] = None, log=print) -> int:
    args = build_parser().parse_args(argv)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in FORWARDED_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None:
                previous[signum] = signal.signal(signum, _raise_terminated)
    try:
        return sweep(args, log)
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Terminated as stop:
        print(f"{stop}: running jobs were stopped; run the same command again to resume", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("interrupted: running jobs were terminated; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def sweep(args: argparse.Namespace, log=print) -> int:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.backbone):
        raise SweepError(f"backbone {args.backbone!r}: expected a config stem such as vit_b32, vit_b16 or tiny")
    configs_root = os.path.abspath(args.configs_root)
    output_root = os.path.abspath(args.output_root)
    train_script = os.path.abspath(args.train_script)
    if not os.path.isfile(train_script) and not args.dry_run:
        raise SweepError(f"train script {train_script} not found (pass --train-script)")
    extra_plugins = list(dict.fromkeys(split_list(os.environ.get(PLUGIN_ENV)) + split_list(args.extra_plugins)))
    env = dict(os.environ)
    if extra_plugins:
        env[PLUGIN_ENV] = ",".join(extra_plugins)
    python = sys.executable

    available = dataset_keys(configs_root)
    datasets = select_datasets(split_list(args.datasets), available, args.backbone)
    if args.data_root:
        data_root = os.path.abspath(args.data_root)
    elif args.backbone == TINY:
        data_root = os.path.join(cache_root(), "data")
    else:
        raise SweepError(f"--data-root DIR is required for backbone {args.backbone} (the folder holding the "
                         f"datasets, see DATASETS.md)")
    seeds = parse_seeds(args.seeds)
    requested = split_list(args.methods)
    overrides_file = None
    if args.dataset_overrides:
        overrides_file = os.path.abspath(args.dataset_overrides)
        if not os.path.isfile(overrides_file):
            raise SweepError(f"--dataset-overrides {args.dataset_overrides}: no such file")
        if len(requested) != 1:
            raise SweepError("--dataset-overrides replaces one method's dataset_overrides.yaml: give exactly one "
                             "--methods NAME")
    plan_args = (datasets, seeds, configs_root, data_root, output_root, python, train_script, overrides_file)
    # With explicit --methods, a sweep whose runs are all finished needs no registry (no torch import): fast reruns.
    plan = plan_sweep(args.backbone, requested, {}, *plan_args) if requested else None
    if plan is None or plan.jobs or args.plan:
        registered = registered_trainers(extra_plugins)
        methods = select_methods(requested, registered)
        plan = plan_sweep(args.backbone, methods, registered, *plan_args)
    else:
        methods = requested
    for note in plan.notes:
        log(f"note: {note}")
    log(f"sweep {args.backbone}: {len(methods)} methods x {len(datasets)} datasets x {len(seeds)} seeds; "
        f"{len(plan.finished)} finished (skipped), {len(plan.jobs)} to run")
    if args.plan:
        from .plan import estimate_run, format_plan, load_throughput

        if REPO_ROOT not in sys.path:
            sys.path.insert(0, REPO_ROOT)
        throughput = load_throughput(args.throughput)
        log(format_plan([estimate_run(job, args.backbone, throughput) for job in plan.jobs], args.backbone,
                        args.throughput))
        return 0
    if args.dry_run:
        for job in plan.jobs:
            log(shlex.join(job.command))
        if args.slurm and plan.jobs:  # and the arrays --slurm would submit
            from . import slurm

            slurm.describe_arrays(plan.jobs, args, log)
        return 0
    if args.backbone == TINY and TINY in datasets and plan.jobs:
        prepare_tiny_benchmark(python, data_root, env, log)
    if args.slurm:  # the same jobs as Slurm job arrays, one per distinct set of task resources (clipkit/slurm.py)
        from . import slurm

        return slurm.submit(plan, args, output_root, python, env, log)
    gpus = split_list(args.gpus)
    if gpus and plan.jobs:
        warn_if_no_cuda(gpus, log)
    outcomes = run_jobs(plan.jobs, gpus, env, log)
    failures = [o for o in outcomes if not o.ok]
    elsewhere = [o for o in outcomes if o.skipped]
    if args.backbone == TINY:
        if REPO_ROOT not in sys.path:
            sys.path.insert(0, REPO_ROOT)
        import output_parser

        output_parser.main([output_root, "--backbone", TINY, "--format", "markdown"])
        if not args.no_figures:
            draw_tiny_figures(python, output_root, env, log)
    shared = f"{len(elsewhere)} left to another process, " if elsewhere else ""
    log(f"sweep {args.backbone} finished: {len(outcomes) - len(failures) - len(elsewhere)} ran, "
        f"{len(plan.finished)} already done, {shared}{len(failures)} failed")
    for outcome in failures:
        log(f"  FAILED {outcome.job.name}: {outcome.error}  (details: {os.path.join(outcome.job.run_dir, FAILED_FILE)})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
