"""Crash-safe checkpoints and exact resume (used by both engines through ``CLIPTrainer``).

Dassl writes ``<dir>/<model>/model.pth.tar-<epoch>`` and the one-line pointer ``<dir>/<model>/checkpoint`` in place
with ``torch.save``; a kill during the write leaves a truncated file that the next launch tries (and fails) to load
forever. Here every file is written to a temporary file in the same folder, flushed, fsync-ed and renamed over the
target (``os.replace`` is atomic on POSIX), and the folder is fsync-ed; the pointer is written after the checkpoint.
A checkpoint still keeps Dassl's keys (``state_dict``, ``epoch``, ``optimizer``, ``scheduler``, ``val_result``), so
Dassl's own ``resume_from_checkpoint`` / ``load_model`` read it, and adds:

* ``rng_state``: Python ``random``, NumPy's global generator, torch's CPU generator and every CUDA generator, captured
  when the checkpoint is written (after the epoch's evaluations), restored as the last step before the next epoch;
* ``loader_state``: where the data stream stands (``{"epoch": E, "batch": 0}`` for an epoch checkpoint: the shuffling
  order and the workers' seeds of epoch E+1 are drawn from the restored torch generator);
* ``trainer_state``: the toolkit's run state (per-epoch records, best validation result, time, memory) and the
  method's extras (e.g. a GradScaler), so a resumed run reports exactly what the uninterrupted one reports;
* ``format``: ``CHECKPOINT_FORMAT``.

Intra-epoch checkpoints (``TRAIN.CHECKPOINT_EVERY_STEPS``) have the same format in ``model.pth.tar-<E>.step<K>``
(epoch E, 1-based, after its K-th step): ``epoch`` is E - 1 (the epochs done), ``step`` is K, ``rng_state`` is the
state at the start of epoch E (what an epoch checkpoint restores: the resumed epoch re-creates the same loader order),
``loader_state`` is ``{"epoch": E - 1, "batch": K, "rng_state": <the state after step K>}`` (restored once the first K
batches are skipped) and ``trainer_state`` also holds the method's per-epoch accumulators (``epoch_state``) and the
running loss meters (``meters``). Only the newest intra-epoch file is kept; the epoch's own checkpoint removes it.

Loading picks, among the ``model.pth.tar-<E>`` and ``model.pth.tar-<E>.step<K>`` files of every registered model, the
newest that loads for all of them; a truncated or unreadable file is reported, moved aside and the previous one used.
"""

from __future__ import annotations

import os
import os.path as osp
import random
import re
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from clipkit.run_folder import TMP_MARK, atomic_write_text, fsync_dir  # noqa: F401  (atomic_write_text re-exported)

CHECKPOINT_FORMAT = "clipkit-checkpoint-1"
POINTER_FILE = "checkpoint"
EPOCH_FILE = re.compile(r"^model\.pth\.tar-(\d+)$")
STEP_FILE = re.compile(r"^model\.pth\.tar-(\d+)\.step(\d+)$")
CORRUPT_SUFFIX = ".corrupt"


# ---------------------------------------------------------------------------------------------------- atomic writes


def temp_path(path: str) -> str:
    """``<folder>/.<name>.tmp-<pid>``: the temporary file ``atomic_torch_save`` writes before the rename."""
    folder, name = osp.split(osp.abspath(path))
    return osp.join(folder, f".{name}{TMP_MARK}{os.getpid()}")


def write_bytes_to(handle, obj) -> None:
    """Serialise ``obj`` with ``torch.save`` into an open binary file (the step a kill can interrupt)."""
    torch.save(obj, handle)


def atomic_torch_save(obj, path: str) -> str:
    """``torch.save(obj, path)`` through a temporary file + fsync + rename: ``path`` is either the old or the new file."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as handle:
            write_bytes_to(handle, obj)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(folder)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return path


def remove_stale_temp_files(folder: str) -> List[str]:
    """Delete the temporary files a killed writer left in ``folder``; returns their names."""
    if not osp.isdir(folder):
        return []
    stale = [name for name in os.listdir(folder) if name.startswith(".") and TMP_MARK in name]
    for name in stale:
        os.remove(osp.join(folder, name))
    return stale


# ------------------------------------------------------------------------------------------------------- RNG state


def capture_rng_state() -> Dict:
    """Every global generator a training step may draw from: Python, NumPy, torch CPU and all CUDA devices."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        # plain types and a tensor, so that torch.load(weights_only=True) still reads the checkpoint
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Optional[Dict]) -> None:
    """Inverse of ``capture_rng_state`` (CUDA states only when the same number of devices is visible)."""
    if not state:
        return
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


# ------------------------------------------------------------------------------------------------ epoch checkpoints


def epoch_file(epoch: int) -> str:
    return f"model.pth.tar-{epoch}"


def checkpoint_epochs(model_dir: str) -> List[int]:
    """Epochs of the ``model.pth.tar-<E>`` files in ``model_dir``, newest first."""
    if not osp.isdir(model_dir):
        return []
    epochs = [int(m.group(1)) for m in map(EPOCH_FILE.match, os.listdir(model_dir)) if m]
    return sorted(epochs, reverse=True)


def try_load(path: str) -> Optional[Dict]:
    """The checkpoint at ``path``, or None (with a message) when it is truncated, unreadable or lacks Dassl's keys."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated zip, pickle error, ...
        print(f"Checkpoint {path} is unreadable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
              f"); it is moved to {osp.basename(path)}{CORRUPT_SUFFIX} and the previous checkpoint is used")
        os.replace(path, path + CORRUPT_SUFFIX)
        return None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "epoch" not in checkpoint:
        print(f"Checkpoint {path} lacks state_dict/epoch; moved to {osp.basename(path)}{CORRUPT_SUFFIX}")
        os.replace(path, path + CORRUPT_SUFFIX)
        return None
    return checkpoint


def step_file(epoch: int, step: int) -> str:
    """``model.pth.tar-<epoch>.step<step>``: epoch ``epoch`` (1-based) after its ``step``-th optimisation step."""
    return f"model.pth.tar-{epoch}.step{step}"


def checkpoint_files(model_dir: str) -> List[Tuple[Tuple[int, int], str]]:
    """((epochs done, steps into the next epoch), file name) of the epoch and intra-epoch checkpoints in
    ``model_dir``, newest first."""
    if not osp.isdir(model_dir):
        return []
    found = []
    for name in os.listdir(model_dir):
        epoch_match, step_match = EPOCH_FILE.match(name), STEP_FILE.match(name)
        if epoch_match:
            found.append(((int(epoch_match.group(1)), 0), name))
        elif step_match:
            found.append(((int(step_match.group(1)) - 1, int(step_match.group(2))), name))
    return sorted(found, reverse=True)


def newest_common_checkpoints(directory: str, names: List[str]) -> Optional[Dict[str, Dict]]:
    """{model name: checkpoint} of the newest (epoch or intra-epoch) checkpoint whose file loads for every model
    under ``directory`` (stale temporary files removed first); None when there is none."""
    for name in names:
        remove_stale_temp_files(osp.join(directory, name))
    candidates = None
    for name in names:
        files = set(checkpoint_files(osp.join(directory, name)))
        candidates = files if candidates is None else candidates & files
    for _, file_name in sorted(candidates or (), reverse=True):
        loaded = {}
        for name in names:
            checkpoint = try_load(osp.join(directory, name, file_name))
            if checkpoint is None:
                break
            loaded[name] = checkpoint
        if len(loaded) == len(names):
            return loaded
    return None


def write_pointer(model_dir: str, file_name: str) -> None:
    """Dassl's one-line ``checkpoint`` pointer, written atomically."""
    atomic_write_text(f"{file_name}\n", osp.join(model_dir, POINTER_FILE))


def prune_epoch_checkpoints(model_dir: str, keep: int) -> List[str]:
    """Delete all but the newest ``keep`` epoch checkpoints (``keep <= 0`` keeps all, as Dassl)."""
    if keep <= 0:
        return []
    removed = [epoch_file(e) for e in checkpoint_epochs(model_dir)[keep:]]
    for name in removed:
        os.remove(osp.join(model_dir, name))
    return removed


def prune_step_checkpoints(model_dir: str, keep_name: str = "") -> List[str]:
    """Delete every intra-epoch checkpoint in ``model_dir`` but ``keep_name``."""
    removed = [name for _, name in checkpoint_files(model_dir) if STEP_FILE.match(name) and name != keep_name]
    for name in removed:
        os.remove(osp.join(model_dir, name))
    return removed


def strip_module_prefix(state_dict) -> Dict:
    from collections import OrderedDict

    return OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in state_dict.items())


__all__ = [
    "CHECKPOINT_FORMAT", "POINTER_FILE", "atomic_torch_save", "atomic_write_text", "capture_rng_state",
    "checkpoint_epochs", "checkpoint_files", "epoch_file", "newest_common_checkpoints", "prune_epoch_checkpoints",
    "prune_step_checkpoints", "remove_stale_temp_files", "restore_rng_state", "step_file", "strip_module_prefix",
    "temp_path", "try_load", "write_pointer",
]
