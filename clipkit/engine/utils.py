"""Engine utilities with Dassl's names: logging tee, seeding, files, images, checkpoints, meters."""

from __future__ import annotations

import json
import os
import os.path as osp
import platform
import random
import sys
import time
import warnings
from collections import OrderedDict, defaultdict

import numpy as np
import torch

# ----------------------------------------------------------------------------------------------------------- files


def mkdir_if_missing(dirname: str) -> None:
    """Create ``dirname`` (and parents) if it does not exist."""
    if dirname:
        os.makedirs(dirname, exist_ok=True)


def check_isfile(fpath: str) -> bool:
    """True if ``fpath`` is a file; warns (does not raise) otherwise."""
    isfile = osp.isfile(fpath)
    if not isfile:
        warnings.warn(f'No file found at "{fpath}"')
    return isfile


def read_json(fpath: str):
    with open(fpath, "r") as handle:
        return json.load(handle)


def write_json(obj, fpath: str) -> None:
    mkdir_if_missing(osp.dirname(fpath))
    with open(fpath, "w") as handle:
        json.dump(obj, handle, indent=4, separators=(",", ": "))


def listdir_nohidden(path: str, sort: bool = False) -> list:
    """Entries of ``path`` not starting with a dot."""
    items = [name for name in os.listdir(path) if not name.startswith(".")]
    if sort:
        items.sort()
    return items


def read_image(path: str):
    """Open an image as PIL RGB; raise OSError naming ``path`` when it is missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise OSError(
            f"Cannot read image {path} ({type(err).__name__}: {err}). The file is missing, truncated or not an image: "
            f"re-download/re-extract the dataset, or remove the file from the split."
        ) from err


def tolist_if_not(x):
    return x if isinstance(x, list) else [x]


# ---------------------------------------------------------------------------------------------------------- logging


class _Tee:
    """``sys.stdout`` replacement writing to the console and a log file."""

    def __init__(self, fpath: str, console):
        self.console = console
        self.fpath = fpath
        mkdir_if_missing(osp.dirname(fpath))
        self.file = open(fpath, "w")

    def write(self, msg):
        self.console.write(msg)
        if self.file is not None:
            self.file.write(msg)

    def flush(self):
        self.console.flush()
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())

    def isatty(self):
        return False

    def close(self):
        """Close the log file and give ``sys.stdout`` back to the console."""
        if self.file is not None:
            self.file.close()
            self.file = None
        if sys.stdout is self:
            sys.stdout = self.console

    def __getattr__(self, name):  # encoding, fileno, ... of the console
        return getattr(self.console, name)


def setup_logger(output=None):
    """Tee stdout into ``<output>/log.txt`` (or the given .txt/.log file); never overwrite: an existing file makes
    the log go to ``log.txt-YYYY-mm-dd-HH-MM-SS``. Returns the tee (``.close()`` restores stdout)."""
    if output is None:
        return None
    fpath = output if output.endswith((".txt", ".log")) else osp.join(output, "log.txt")
    if osp.exists(fpath):
        fpath += time.strftime("-%Y-%m-%d-%H-%M-%S")
    console = sys.stdout.console if isinstance(sys.stdout, _Tee) else sys.stdout
    tee = _Tee(fpath, console)
    sys.stdout = tee
    return tee


def set_random_seed(seed: int) -> None:
    """Seed python ``random``, numpy and torch (all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def collect_env_info() -> str:
    """Short environment report (Dassl prints torch's full ``collect_env``; this keeps the versions that matter)."""
    import PIL
    import torchvision

    lines = [
        f"Python: {sys.version.split()[0]} ({platform.platform()})",
        f"PyTorch: {torch.__version__} (CUDA build {torch.version.cuda})",
        f"torchvision: {torchvision.__version__}",
        f"NumPy: {np.__version__}",
        f"CUDA available: {torch.cuda.is_available()}",
    ]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        lines.append(f"GPUs: {', '.join(names)}")
    lines.append(f"        Pillow ({PIL.__version__})")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ checkpoints


def save_checkpoint(state: dict, save_dir: str, is_best: bool = False, remove_module_from_keys: bool = True,
                    model_name: str = "") -> str:
    """Write ``state`` to ``save_dir/<model_name or model.pth.tar-<epoch>>`` and record its name in ``checkpoint``.

    Unlike Dassl, both files are written atomically (temporary file + fsync + rename, the pointer after the
    checkpoint), so a kill during the write leaves the previous checkpoint in place (clipkit/engine/checkpoint.py)."""
    from .checkpoint import atomic_torch_save, strip_module_prefix, write_pointer

    mkdir_if_missing(save_dir)
    if remove_module_from_keys:
        state["state_dict"] = strip_module_prefix(state["state_dict"])
    fpath = osp.join(save_dir, model_name or f"model.pth.tar-{state['epoch']}")
    atomic_torch_save(state, fpath)
    print(f"Checkpoint saved to {fpath}")
    write_pointer(save_dir, osp.basename(fpath))
    if is_best:
        best_fpath = osp.join(osp.dirname(fpath), "model-best.pth.tar")
        atomic_torch_save(state, best_fpath)
        print(f'Best checkpoint saved to "{best_fpath}"')
    return fpath


def load_checkpoint(fpath: str) -> dict:
    """Load a checkpoint written by ``save_checkpoint`` onto the CPU (trusted local files: full unpickling)."""
    if fpath is None:
        raise ValueError("File path is None")
    if not osp.exists(fpath):
        raise FileNotFoundError(f'File is not found at "{fpath}"')
    try:
        return torch.load(fpath, map_location="cpu", weights_only=False)
    except Exception:
        print(f'Unable to load checkpoint from "{fpath}"')
        raise


def resume_from_checkpoint(fdir: str, model, optimizer=None, scheduler=None) -> int:
    """Load the checkpoint named in ``fdir/checkpoint`` into model/optimizer/scheduler; returns epochs done."""
    with open(osp.join(fdir, "checkpoint"), "r") as pointer:
        fpath = osp.join(fdir, pointer.readline().strip("\n"))
    print(f'Loading checkpoint from "{fpath}"')
    checkpoint = load_checkpoint(fpath)
    model.load_state_dict(checkpoint["state_dict"])
    print("Loaded model weights")
    if optimizer is not None and "optimizer" in checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])
        print("Loaded optimizer")
    if scheduler is not None and "scheduler" in checkpoint:
        scheduler.load_state_dict(checkpoint["scheduler"])
        print("Loaded scheduler")
    start_epoch = checkpoint["epoch"]
    print(f"Previous epoch: {start_epoch}")
    return start_epoch


def load_pretrained_weights(model, weight_path: str) -> None:
    """Load the keys of ``weight_path`` whose name and shape match ``model``; report the discarded ones."""
    checkpoint = load_checkpoint(weight_path)
    state_dict = checkpoint.get("state_dict", checkpoint)
    model_dict = model.state_dict()
    matched, discarded = OrderedDict(), []
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key in model_dict and model_dict[key].size() == value.size():
            matched[key] = value
        else:
            discarded.append(key)
    model_dict.update(matched)
    model.load_state_dict(model_dict)
    if not matched:
        warnings.warn(f"Cannot load {weight_path} (check the key names manually)")
        return
    print(f"Successfully loaded pretrained weights from {weight_path}")
    if discarded:
        print(f"Layers discarded due to unmatched keys or size: {discarded}")


def count_num_param(model=None, params=None) -> int:
    """Number of scalars in ``model.parameters()`` or in ``params``."""
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    if params is not None:
        return sum(p["params"].numel() if isinstance(p, dict) else p.numel() for p in params)
    raise ValueError("model and params must provide at least one.")


# ----------------------------------------------------------------------------------------------------------- meters


class AverageMeter:
    """Current value and running mean (or EMA with factor 0.9 when ``ema``)."""

    def __init__(self, ema: bool = False):
        self.ema = ema
        self.reset()

    def reset(self):
        self.val = 0
        self.avg = 0
        self.sum = 0
        self.count = 0

    def update(self, val, n: int = 1):
        if isinstance(val, torch.Tensor):
            val = val.item()
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.avg * 0.9 + val * 0.1 if self.ema else self.sum / self.count


class MetricMeter:
    """One AverageMeter per key of the dicts passed to ``update``; ``str()`` gives ``name val (avg)`` pairs."""

    def __init__(self, delimiter: str = " "):
        self.meters = defaultdict(AverageMeter)
        self.delimiter = delimiter

    def update(self, input_dict):
        if input_dict is None:
            return
        if not isinstance(input_dict, dict):
            raise TypeError("Input to MetricMeter.update() must be a dictionary")
        for key, value in input_dict.items():
            self.meters[key].update(value.item() if isinstance(value, torch.Tensor) else value)

    def __str__(self):
        return self.delimiter.join(f"{name} {m.val:.4f} ({m.avg:.4f})" for name, m in self.meters.items())
