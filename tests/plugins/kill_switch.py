"""Test-only plugin (``CLIPKIT_EXTRA_PLUGINS=tests.plugins.kill_switch``): kill training at a checkpoint.

``CLIPKIT_TEST_KILL=after:E`` kills the process right after epoch E's checkpoint is complete; ``during:E`` kills it in
the middle of writing epoch E's checkpoint (half of the bytes are on disk). ``CLIPKIT_TEST_KILL_HOW=sigkill`` (default)
sends SIGKILL to itself; ``raise`` raises ``SimulatedKill`` for in-process tests and also leaves the half-written
bytes at the checkpoint's final path (what an in-place writer such as Dassl's ``torch.save`` leaves behind).
"""

import io
import os
import os.path as osp
import signal

from clipkit.engine import checkpoint as ckpt
from clipkit.trainer_base import CLIPTrainer

KILL_ENV = "CLIPKIT_TEST_KILL"
HOW_ENV = "CLIPKIT_TEST_KILL_HOW"


class SimulatedKill(BaseException):
    """Not an Exception: nothing in the toolkit catches it, as nothing survives a SIGKILL."""


def _spec():
    text = os.environ.get(KILL_ENV, "")
    if not text:
        return None, None
    when, epoch = text.split(":")
    return when, int(epoch)


def _die():
    if os.environ.get(HOW_ENV, "sigkill") == "raise":
        raise SimulatedKill()
    os.kill(os.getpid(), signal.SIGKILL)


_original_write = ckpt.write_bytes_to
_original_save = CLIPTrainer.save_model


def write_bytes_to(handle, obj):
    when, epoch = _spec()
    if when == "during" and isinstance(obj, dict) and obj.get("epoch") == epoch and "rng_state" in obj:
        buffer = io.BytesIO()
        _original_write(buffer, obj)
        half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        handle.write(half)
        handle.flush()
        os.fsync(handle.fileno())
        if os.environ.get(HOW_ENV) == "raise":
            folder, temp_name = osp.split(handle.name)
            with open(osp.join(folder, temp_name[1:].split(ckpt.TMP_MARK)[0]), "wb") as torn:
                torn.write(half)
        _die()
    _original_write(handle, obj)


def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
    _original_save(self, epoch, directory, is_best=is_best, val_result=val_result, model_name=model_name)
    when, kill_epoch = _spec()
    if when == "after" and not model_name and epoch + 1 == kill_epoch:
        _die()


ckpt.write_bytes_to = write_bytes_to
CLIPTrainer.save_model = save_model
