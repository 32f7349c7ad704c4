"""Test-only plugin (``CLIPKIT_EXTRA_PLUGINS=tests.plugins.kill_switch``): kill training at a checkpoint.

``CLIPKIT_TEST_KILL=after:E`` kills the process right after epoch E's checkpoint is complete; ``during:E`` kills it in
the middle of writing epoch E's checkpoint (half of the bytes are on disk). ``after:E.K`` / ``during:E.K`` do the same
with the intra-epoch checkpoint of epoch E after its step K (TRAIN.CHECKPOINT_EVERY_STEPS); ``term:E.K`` sends SIGTERM
to the process right after step K of epoch E (what the sweep or a Slurm pre-emption sends).
``CLIPKIT_TEST_KILL_HOW=sigkill`` (default) sends SIGKILL to itself; ``raise`` raises ``SimulatedKill`` for in-process tests and also leaves the half-written
bytes at the checkpoint's final path (what an in-place writer such as Dassl's ``torch.save`` leaves behind).
"""

import io
import os
import os.path as osp
import signal

from clipkit import trainer_base
from clipkit.engine import checkpoint as ckpt
from clipkit.trainer_base import CLIPTrainer

KILL_ENV = "CLIPKIT_TEST_KILL"
HOW_ENV = "CLIPKIT_TEST_KILL_HOW"


class SimulatedKill(BaseException):
    """Not an Exception: nothing in the toolkit catches it, as nothing survives a SIGKILL."""


def _spec():
    """(when, epoch E, step K or None)."""
    text = os.environ.get(KILL_ENV, "")
    if not text:
        return None, None, None
    when, where = text.split(":")
    epoch, _, step = where.partition(".")
    return when, int(epoch), int(step) if step else None


def _is_target(obj, epoch, step):
    """Is ``obj`` the (epoch or intra-epoch) checkpoint of the spec? (intra-epoch ones hold epoch E - 1 and step K)"""
    if not isinstance(obj, dict) or "rng_state" not in obj:
        return False
    if step is None:
        return obj.get("epoch") == epoch and "step" not in obj
    return obj.get("epoch") == epoch - 1 and obj.get("step") == step


def _die():
    if os.environ.get(HOW_ENV, "sigkill") == "raise":
        raise SimulatedKill()
    os.kill(os.getpid(), signal.SIGKILL)


_original_write = ckpt.write_bytes_to
_original_save = CLIPTrainer.save_model
_original_save_step = CLIPTrainer.save_step_checkpoint
_original_progress = trainer_base.log_batch_progress


def write_bytes_to(handle, obj):
    when, epoch, step = _spec()
    if when == "during" and _is_target(obj, epoch, step):
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
    when, kill_epoch, step = _spec()
    if when == "after" and step is None and not model_name and epoch + 1 == kill_epoch:
        _die()


def save_step_checkpoint(self, losses=None):
    file_name = _original_save_step(self, losses)
    when, epoch, step = _spec()
    if when == "after" and (epoch, step) == (self.epoch + 1, self.batch_idx + 1):
        _die()
    return file_name


def log_batch_progress(trainer, losses, batch_time, data_time):
    _original_progress(trainer, losses, batch_time, data_time)
    when, epoch, step = _spec()
    if when == "term" and (epoch, step) == (trainer.epoch + 1, trainer.batch_idx + 1):
        os.kill(os.getpid(), signal.SIGTERM)


ckpt.write_bytes_to = write_bytes_to
CLIPTrainer.save_model = save_model
CLIPTrainer.save_step_checkpoint = save_step_checkpoint
trainer_base.log_batch_progress = log_batch_progress
