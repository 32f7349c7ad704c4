"""One run folder = one experiment (standard library only: the sweep uses it without importing torch): its identity (the config that changes numerics), an OS-level lock, and the
refusals that keep a result from being overwritten by a different experiment.

* ``numerics_config(cfg)``: the resolved config as ``{dotted key: value}`` without the keys that only say where
  things live or how often to log/checkpoint (``LOCATION_KEYS``) or how a run is scheduled (``SCHEDULING_NODES``),
  and without other methods' ``TRAINER.<NODE>`` nodes; ``config_digest`` in results.json hashes exactly this.
  Recorded in ``<run>/run_config.json``.
* ``RunFolder.lock()``: ``fcntl.flock`` on ``<run>/.lock`` (released by the kernel when the process dies, also on
  SIGKILL). A sweep takes the lock before it launches a job and hands the locked descriptor to the child
  (``LOCK_FD_ENV``), so the lock is held without a gap from "decided to run" to "child exited".
* ``check_config``: a re-launch with a different numerics config stops with the differing keys; ``--force``
  archives the old contents to ``<run>/archive/<timestamp>/`` and starts afresh.
* ``check_eval_only``: ``--eval-only`` never writes into a folder that holds a trained result.
"""

from __future__ import annotations

import datetime
import json
import os
import os.path as osp
import shutil
from typing import Dict, List, Optional, Tuple

POINTER_FILE = "checkpoint"  # Dassl's pointer file in <run>/<model>/ (clipkit/engine/checkpoint.py)

TMP_MARK = ".tmp-"  # temporary files: .<name>.tmp-<pid>
RUN_CONFIG_FILE = "run_config.json"
LOCK_FILE = ".lock"
ARCHIVE_DIR = "archive"
LOCK_FD_ENV = "CLIPKIT_RUN_LOCK_FD"  # a descriptor of <run>/.lock already locked by the parent (the sweep)
# Keys that do not change what is computed: where data/weights/outputs live, logging and checkpoint cadence.
LOCATION_KEYS = (
    "OUTPUT_DIR", "RESUME", "VERBOSE", "DATASET.ROOT", "MODEL.BACKBONE.DOWNLOAD_ROOT", "TRAIN.PRINT_FREQ",
    "TRAIN.CHECKPOINT_FREQ", "TRAIN.CHECKPOINT_KEEP", "TEST.RESULTS_FILE",
)
# Config nodes that say how a run is scheduled, not what it computes (a Slurm task's resources).
SCHEDULING_NODES = ("SLURM",)
# Keys recorded only when they differ from this default, which reproduces the numbers of the code before the key
# existed (so that run_config.json and config_digest of older runs stay valid); a missing one compares as the default.
# TRAIN.CHECKPOINT_EVERY_STEPS > 0 reseeds DataLoader workers per batch (clipkit/engine/resumable_loader.py).
DEFAULT_OMITTED_KEYS = {"TRAIN.CHECKPOINT_EVERY_STEPS": 0}


class RunFolderError(RuntimeError):
    """A launch refused to protect a run folder; the message says why and how to proceed."""


class ConfigMismatchError(RunFolderError):
    pass


class TrainedResultError(RunFolderError):
    pass


class RunLockedError(RunFolderError):
    pass


# ------------------------------------------------------------------------------------------------ atomic text


def atomic_write_text(text: str, path: str) -> str:
    """Write ``text`` to ``path`` through a temporary file in the same folder + fsync + rename (the file is either
    the old or the new one after any crash)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def fsync_dir(folder: str) -> None:
    """fsync a folder so that a rename in it survives a power loss (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -------------------------------------------------------------------------------------------------- identity


def _flatten(node, prefix: str = "") -> Dict:
    flat = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def method_node(trainer_name: str, trainer_cls=None) -> str:
    """The ``TRAINER.<NODE>`` of a method: the class attribute ``config_node`` if set, else the upper-cased name."""
    return getattr(trainer_cls, "config_node", None) or trainer_name.upper()


def numerics_config(cfg, node: Optional[str] = None) -> Dict:
    """{dotted key: value} of ``cfg`` restricted to what changes the numbers (see the module docstring)."""
    node = node or method_node(cfg.TRAINER.NAME)
    flat = _flatten(cfg)
    kept = {}
    for key, value in flat.items():
        parts = key.split(".")
        if key in LOCATION_KEYS or parts[0] in SCHEDULING_NODES or (
                key in DEFAULT_OMITTED_KEYS and value == DEFAULT_OMITTED_KEYS[key]):
            continue
        if parts[0] == "TRAINER" and len(parts) > 2 and parts[1] != node:
            continue  # another method's node
        kept[key] = value
    return dict(sorted(kept.items()))


def config_differences(old: Dict, new: Dict) -> List[Tuple[str, object, object]]:
    """(key, old, new) for the keys present in both with different values (keys on one side only come from a code
    update that declared or removed a key, not from the user; a ``DEFAULT_OMITTED_KEYS`` key missing on one side
    compares as its default)."""
    old = dict(DEFAULT_OMITTED_KEYS, **old)
    new = dict(DEFAULT_OMITTED_KEYS, **new)
    return [(k, old[k], new[k]) for k in sorted(set(old) & set(new)) if _normal(old[k]) != _normal(new[k])]


def _normal(value):
    return json.loads(json.dumps(value, default=str))


# ---------------------------------------------------------------------------------------------------- folder


class RunFolder:
    """Guards of one ``OUTPUT_DIR``."""

    def __init__(self, path: str):
        self.path = path
        self._lock_fd: Optional[int] = None

    # ------------------------------------------------------------------------------------------------ lock
    @property
    def lock_path(self) -> str:
        return osp.join(self.path, LOCK_FILE)

    def _inherited_lock_fd(self) -> Optional[int]:
        text = os.environ.get(LOCK_FD_ENV, "")
        if not text.isdigit():
            return None
        fd = int(text)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
        except OSError:
            return None
        return fd if same else None

    def acquire(self) -> None:
        """Take the exclusive lock (or adopt the parent's); RunLockedError when another process holds it."""
        import fcntl

        os.makedirs(self.path, exist_ok=True)
        inherited = self._inherited_lock_fd()
        if inherited is not None:
            self._lock_fd = inherited
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{self.path} is locked by another process ({holder}): that process is running this job. Wait for "
                f"it, or stop it; the lock goes away by itself when it exits (also when it is killed)."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode())
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the last descriptor of the open file releases the flock
            self._lock_fd = None

    # ----------------------------------------------------------------------------------------- run contents
    @property
    def config_path(self) -> str:
        return osp.join(self.path, RUN_CONFIG_FILE)

    def recorded_config(self) -> Optional[Dict]:
        if not osp.isfile(self.config_path):
            return None
        with open(self.config_path) as handle:
            return json.load(handle)["config"]

    def record_config(self, config: Dict, digest: str) -> None:
        text = json.dumps({"config_digest": digest, "config": config}, indent=1, sort_keys=True, default=str)
        atomic_write_text(text + "\n", self.config_path)

    def has_state(self) -> bool:
        """Anything a run leaves behind: results, run record, checkpoints."""
        return bool(self.trained_evidence()) or osp.isfile(osp.join(self.path, "results.json"))

    def trained_evidence(self) -> List[str]:
        """Why this folder holds a trained result: checkpoint folders, trained epochs in results/run record."""
        evidence = []
        if not osp.isdir(self.path):
            return evidence
        for name in sorted(os.listdir(self.path)):
            if name != ARCHIVE_DIR and osp.isfile(osp.join(self.path, name, POINTER_FILE)):
                evidence.append(f"checkpoints in {name}/")
        for name in ("results.json", "run_record.json"):
            path = osp.join(self.path, name)
            if osp.isfile(path):
                try:
                    with open(path) as handle:
                        data = json.load(handle)
                except ValueError:
                    continue
                if data.get("epochs") or data.get("best_epoch"):
                    evidence.append(f"{len(data.get('epochs') or [])} trained epochs in {name}")
        return evidence

    def archive(self) -> str:
        """Move everything but the lock and older archives to ``archive/<timestamp>/``; returns that folder."""
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        target = osp.join(self.path, ARCHIVE_DIR, stamp)
        os.makedirs(target)
        for name in os.listdir(self.path):
            if name not in (LOCK_FILE, ARCHIVE_DIR):
                shutil.move(osp.join(self.path, name), osp.join(target, name))
        return target

    # -------------------------------------------------------------------------------------------- refusals
    def check_config(self, config: Dict, force: bool) -> Optional[str]:
        """Refuse a numerics config different from the recorded one (``force``: archive and go on). Returns the
        archive folder when one was made."""
        old = self.recorded_config()
        if old is None or not self.has_state():
            return None  # nothing computed under the recorded config yet (e.g. a launch that crashed while building)
        differences = config_differences(old, config)
        if not differences:
            return None
        if force:
            return self.archive()
        shown = "\n".join(f"  {key}: {before!r} (recorded) -> {after!r} (now)" for key, before, after in differences)
        raise ConfigMismatchError(
            f"{self.path} holds a run of a different experiment; these config keys differ from its "
            f"{RUN_CONFIG_FILE}:\n{shown}\nNothing was changed. To run the new config, pass a new --output-dir, or "
            f"pass --force to move the old result to {osp.join(self.path, ARCHIVE_DIR)}/<timestamp>/ and start "
            f"afresh here. To resume or re-test the recorded run, launch it with its recorded config."
        )

    def check_eval_only(self, model_dir: str, force: bool) -> Optional[str]:
        """``--eval-only`` into a folder with a trained result: refuse (``force``: archive it first)."""
        evidence = self.trained_evidence()
        if not evidence:
            return None
        if force:
            return self.archive()
        hint = (f"--output-dir NEW_FOLDER --model-dir {model_dir or self.path} --load-epoch N")
        raise TrainedResultError(
            f"--eval-only would overwrite the trained result in {self.path} ({'; '.join(evidence)}) with the "
            f"evaluation of {'the weights of ' + model_dir if model_dir else 'the untrained model'}. Nothing was "
            f"changed. To evaluate the trained weights, write elsewhere: {hint} (N = the epoch of a "
            f"model.pth.tar-N checkpoint). To replace the result, pass --force (moves it to "
            f"{osp.join(self.path, ARCHIVE_DIR)}/<timestamp>/)."
        )


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 200).decode(errors="replace").strip() or "unknown pid"
    except OSError:
        return "unknown pid"


__all__ = [
    "ARCHIVE_DIR", "ConfigMismatchError", "atomic_write_text", "fsync_dir", "LOCATION_KEYS", "LOCK_FD_ENV", "LOCK_FILE", "RUN_CONFIG_FILE", "RunFolder",
    "RunFolderError", "RunLockedError", "TrainedResultError", "config_differences", "method_node", "numerics_config",
]
