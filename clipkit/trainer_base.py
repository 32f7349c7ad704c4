"""``CLIPTrainer``: the base class of every method (a Dassl ``TrainerX``).

It adds to Dassl's trainer:
  * ``load_clip()``: the backbone named by MODEL.BACKBONE.NAME (cache MODEL.BACKBONE.DOWNLOAD_ROOT), on ``self.device``;
  * text resources: ``dataset_key``, ``classnames``, ``templates()``, ``descriptions()``;
  * ``log_epoch_metrics(dict)``: tensorboard ``epoch/<key>`` scalars, kept for ``results.json``;
  * optional test evaluation after every epoch (TEST.EVAL_EVERY_EPOCH or the class attribute ``eval_every_epoch``):
    ``accuracy`` per epoch, ``accuracy_best`` = the best epoch with ``best_is_test_selection`` true;
  * ``results.json`` (clipkit/results.py) after the final ``test()``, also for eval-only (training-free) runs.

Checkpoints (clipkit/engine/checkpoint.py, both engines): ``save_model`` / ``resume_model_if_exist`` are overridden
so that every checkpoint is written atomically and carries the RNG states, the loader position and the run state
(per-epoch records, best validation result, training time, peak memory, ``checkpoint_extra_state()``); resuming
restores all of it, so an interrupted and resumed run writes the ``results.json`` of the uninterrupted run (timing
fields aside). Only the newest ``TRAIN.CHECKPOINT_KEEP`` epoch checkpoints are kept. With
``TRAIN.CHECKPOINT_EVERY_STEPS`` > 0, ``run_epoch`` also writes intra-epoch checkpoints (the newest one kept) and a
resumed run continues after their step, exactly (``epoch_state_attrs``: a method's per-epoch accumulators). A
method's evolving state must live in a module registered with ``register_model`` (or in ``checkpoint_extra_state``)
to be resumed.

Per-epoch records, training time and peak memory are also kept in ``OUTPUT_DIR/run_record.json`` (rewritten after
each epoch); a finished run re-launched into the same folder (no epoch is trained, the final test runs again)
rewrites an identical ``results.json``.
"""

from __future__ import annotations

import os
import os.path as osp
import resource
import signal
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

import torch

from clipkit import results as results_io
from clipkit.config import cfg_extension
from clipkit.dassl import AverageMeter, DataManager, MetricMeter, TrainerX, load_checkpoint
from clipkit.engine import checkpoint as ckpt
from clipkit.engine.resumable_loader import epoch_batches, supports_epoch_batches
from clipkit.engine.trainer import log_batch_progress

RUN_RECORD_FILE = "run_record.json"


@cfg_extension
def _add_trainer_base_cfg(cfg):
    # Evaluate on the test split after every epoch and report the best epoch (accuracy_best, selected on test:
    # best_is_test_selection=true). Methods whose paper reports it set the class attribute eval_every_epoch.
    cfg.TEST.EVAL_EVERY_EPOCH = False
    # Epoch checkpoints (model.pth.tar-<E>) kept per model: the newest N; 0 keeps all (Dassl). model-best is separate.
    cfg.TRAIN.CHECKPOINT_KEEP = 1
    # Where the train views are built (clipkit/blocks/decoded_views.py; trainers whose class lists the place in
    # ``supported_views``): "pil" (the present, official pipeline: each view from the PIL image on the loader workers),
    # "tensor" (decode once; weak view and multi-view crops by tensor ops on the workers), "device" (the workers decode
    # and build the PIL-only strong view; weak view and crops are resized on the training device; train.py
    # --views-on-device). Same random draws; the weak view's resize is torchvision's instead of Pillow's (DEVIATIONS.md).
    cfg.DATALOADER.VIEWS = "pil"
    # Intra-epoch checkpoints: every N optimisation steps of an epoch (counted from the epoch's first batch), write
    # model.pth.tar-<E>.step<K> (only the newest is kept; the epoch's own checkpoint removes it), so that a run killed
    # in a long epoch resumes at that step, exactly. 0 = off. Any value > 0 also makes each batch's augmentation a
    # function of (epoch seed, batch position) in DataLoader workers (clipkit/engine/resumable_loader.py), and a
    # SIGTERM during training then writes one at the end of the current step before the process stops.
    cfg.TRAIN.CHECKPOINT_EVERY_STEPS = 0


def peak_memory_mb(device: torch.device) -> float:
    """CUDA max allocated memory on a GPU device, else the process's max resident set size (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return max_rss / 2**20 if sys.platform == "darwin" else max_rss / 2**10


class CLIPTrainer(TrainerX):
    """Base of every CLIP method; subclasses implement ``build_model`` (and ``forward_backward`` when training)."""

    # True: evaluate on the test split after every epoch (OR-ed with TEST.EVAL_EVERY_EPOCH).
    eval_every_epoch = False
    # True for methods that never train (run with train.py --eval-only).
    training_free = False
    # DATALOADER.VIEWS places the method's train loader implements ("pil": the transforms as they are).
    supported_views = ("pil",)
    # Attributes a method accumulates during an epoch (reset in before_epoch, read in after_epoch, e.g. pseudo-label
    # statistics): intra-epoch checkpoints carry them (values torch.save can write: tensors, numbers, dicts, None).
    epoch_state_attrs: Tuple[str, ...] = ()

    @classmethod
    def planned_training(cls, cfg, num_train: int, num_classes: int) -> Tuple[int, int]:
        """(epochs, images through the training step per epoch) that the sweep planner (``run_all.sh --plan``)
        assumes for a run of ``cfg`` on a train split of ``num_train`` images: OPTIM.MAX_EPOCH passes over the split,
        none for training-free methods. Methods whose epoch is defined otherwise override it."""
        if cls.training_free:
            return 0, 0
        return int(cfg.OPTIM.MAX_EPOCH), int(num_train)

    def __init__(self, cfg):
        self._epoch_records: List[Dict] = []
        self._train_time_s = 0.0
        self._peak_memory_mb = 0.0
        self._epochs_trained_now = 0
        self._last_eval: Optional[Dict] = None
        self._last_eval_time_s = 0.0
        self._run_record_final: Optional[Dict] = None
        self._resume_checkpoint: Optional[Dict] = None
        self._check_views_place(cfg)
        self._mid_epoch_resume: Optional[Dict] = None
        self._epoch_rng_state: Optional[Dict] = None
        self._in_steps = False
        self._stop_requested = False
        super().__init__(cfg)
        self._warn_if_cuda_requested_but_missing()
        self._wrap_evaluator()

    def _check_views_place(self, cfg) -> None:
        from clipkit.blocks.decoded_views import VIEW_PLACES

        place = cfg.DATALOADER.get("VIEWS", "pil")
        if place not in VIEW_PLACES:
            raise ValueError(f"DATALOADER.VIEWS must be one of {VIEW_PLACES}, got {place!r}")
        if place not in self.supported_views:
            raise ValueError(f"DATALOADER.VIEWS {place!r} is not implemented by {type(self).__name__} (it supports "
                             f"{self.supported_views}); set DATALOADER.VIEWS pil or drop --views-on-device")

    def _warn_if_cuda_requested_but_missing(self) -> None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
        if self.cfg.USE_CUDA and self.device.type == "cpu" and visible not in ("", "-1"):
            print(f"WARNING: CUDA_VISIBLE_DEVICES={visible} (e.g. from the sweep's --gpus) but CUDA is not available "
                  f"to torch {torch.__version__}: this run uses the CPU. Check the driver / the CUDA build of torch, "
                  f"or drop --gpus.", file=sys.stderr)

    # ------------------------------------------------------------------------------------------------- backbone
    def build_data_loader_with(self, custom_tfm_train=None, custom_tfm_test=None):
        """Dassl's ``build_data_loader`` with custom transforms (a list of train transforms gives the batch keys
        ``img``, ``img2``, ...): sets the same attributes as the default (loaders, num_classes, lab2cname, dm)."""
        dm = DataManager(self.cfg, custom_tfm_train=custom_tfm_train, custom_tfm_test=custom_tfm_test)
        self.train_loader_x, self.train_loader_u = dm.train_loader_x, dm.train_loader_u
        self.val_loader, self.test_loader = dm.val_loader, dm.test_loader
        self.num_classes, self.num_source_domains, self.lab2cname = dm.num_classes, dm.num_source_domains, dm.lab2cname
        self.dm = dm

    def load_clip(self):
        """``clipkit.clip.load_clip(MODEL.BACKBONE.NAME, MODEL.BACKBONE.DOWNLOAD_ROOT)`` in fp32 on ``self.device``."""
        from clipkit.clip import load_clip

        name = self.cfg.MODEL.BACKBONE.NAME
        if not name:
            raise ValueError("MODEL.BACKBONE.NAME is empty: set it to a CLIP name (e.g. ViT-B/32) or checkpoint path")
        return load_clip(name, self.cfg.MODEL.BACKBONE.DOWNLOAD_ROOT).to(self.device)

    # -------------------------------------------------------------------------------------------- text resources
    @property
    def dataset_key(self) -> str:
        dataset = self.dm.dataset
        key = getattr(dataset, "dataset_key", "")
        if not key:
            raise AttributeError(
                f"Dataset reader {type(dataset).__name__} has no `dataset_key` class attribute; set it to the stem of "
                f"its configs/datasets/<key>.yaml (docs/architecture.md, Datasets)."
            )
        return key

    @property
    def classnames(self) -> List[str]:
        """Class names in label order (prompt-ready spellings)."""
        return list(self.dm.dataset.classnames)

    def templates(self) -> List[str]:
        """The reader's own ``templates`` attribute if it has one, else ``clipkit.text.get_templates(dataset_key)``."""
        own = getattr(self.dm.dataset, "templates", None)
        if own:
            return list(own)
        from clipkit.text import get_templates

        return list(get_templates(self.dataset_key))

    def descriptions(self) -> Dict[str, List[str]]:
        """{classname: [sentence, ...]} from ``clipkit.text.resolve_descriptions(cfg, dataset)`` (honours
        DATASET.DESCRIPTIONS, else the reader's ``default_descriptions_path()``, else the repo's file)."""
        from clipkit.text import resolve_descriptions

        return resolve_descriptions(self.cfg, self.dm.dataset)

    # ------------------------------------------------------------------------------------------- epoch metrics
    @property
    def evaluates_every_epoch(self) -> bool:
        return bool(self.eval_every_epoch or self.cfg.TEST.get("EVAL_EVERY_EPOCH", False))

    def log_epoch_metrics(self, metrics: Dict[str, float]) -> None:
        """Write ``epoch/<key>`` scalars at step ``self.epoch`` and keep them in the record of epoch ``self.epoch + 1``
        (several calls in one epoch merge). The key ``accuracy`` is reserved for the test accuracy (%) of the
        reported logits after the epoch: when present, results.json's accuracy_best is the best such epoch, flagged
        ``best_is_test_selection``."""
        epoch_number = self.epoch + 1
        record = next((r for r in self._epoch_records if r["epoch"] == epoch_number), None)
        if record is None:
            record = {"epoch": epoch_number}
            self._epoch_records.append(record)
        for key, value in metrics.items():
            value = float(value.item() if isinstance(value, torch.Tensor) else value)
            record[key] = value
            self.write_scalar(f"epoch/{key}", value, self.epoch)

    @property
    def epoch_records(self) -> List[Dict]:
        return [dict(r) for r in self._epoch_records]

    # --------------------------------------------------------------------------------------- evaluation capture
    def _wrap_evaluator(self) -> None:
        """Keep the full result dict, the predictions and the duration (reset -> evaluate, i.e. one ``test()``, also
        when a method overrides ``test``) of every evaluation."""
        evaluator = self.evaluator
        reset, evaluate = evaluator.reset, evaluator.evaluate

        def reset_and_time():
            self._eval_start = time.time()
            return reset()

        def evaluate_and_keep():
            results = evaluate()
            self._last_eval_time_s = time.time() - getattr(self, "_eval_start", time.time())
            self._last_eval = {
                "results": dict(results),
                "y_true": list(getattr(evaluator, "_y_true", [])),
                "y_pred": list(getattr(evaluator, "_y_pred", [])),
            }
            return results

        evaluator.reset = reset_and_time
        evaluator.evaluate = evaluate_and_keep

    # ----------------------------------------------------------------------------------------------- checkpoints
    def checkpoint_extra_state(self) -> Dict:
        """Method state outside the registered modules carried by checkpoints (default: the GradScaler at
        ``self.scaler``, if any). Override together with ``load_checkpoint_extra_state``."""
        scaler = getattr(self, "scaler", None)
        return {"grad_scaler": scaler.state_dict()} if hasattr(scaler, "state_dict") else {}

    def load_checkpoint_extra_state(self, state: Dict) -> None:
        scaler = getattr(self, "scaler", None)
        if "grad_scaler" in state and hasattr(scaler, "load_state_dict"):
            scaler.load_state_dict(state["grad_scaler"])

    def _trainer_state(self) -> Dict:
        return {
            "epoch_records": self.epoch_records,
            "train_time_s": self._train_time_s,
            "peak_memory_mb": self._peak_memory_mb,
            "best_result": float(self.best_result),
            "extra": self.checkpoint_extra_state(),
        }

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        """Dassl's files, written atomically; epoch checkpoints carry RNG, loader and run state; the ``checkpoint``
        pointers are written after every model's file, then older epoch (and all intra-epoch) checkpoints are
        pruned."""
        file_name = model_name or ckpt.epoch_file(epoch + 1)
        common = {"epoch": epoch + 1, "val_result": val_result}
        if not model_name:
            common.update(rng_state=ckpt.capture_rng_state(), loader_state={"epoch": epoch + 1, "batch": 0},
                          trainer_state=self._trainer_state())
        self._write_checkpoint_files(directory, file_name, common, pointer=not model_name)
        if model_name:
            return
        keep = int(self.cfg.TRAIN.get("CHECKPOINT_KEEP", 0))
        for name in self.get_model_names():
            ckpt.prune_epoch_checkpoints(osp.join(directory, name), keep)
            ckpt.prune_step_checkpoints(osp.join(directory, name))

    def save_step_checkpoint(self, losses=None) -> str:
        """``model.pth.tar-<epoch>.step<K>`` after the K-th step of the current epoch (clipkit/engine/checkpoint.py):
        the epoch-start RNG state, the state now, the method's ``epoch_state_attrs`` and the loss meters; then the
        pointers, then the older intra-epoch checkpoints are deleted (epoch checkpoints stay)."""
        steps = self.batch_idx + 1
        file_name = ckpt.step_file(self.epoch + 1, steps)
        trainer_state = self._trainer_state()
        trainer_state["train_time_s"] += time.time() - self._epoch_start
        trainer_state["epoch_state"] = {name: getattr(self, name, None) for name in self.epoch_state_attrs}
        trainer_state["meters"] = {} if losses is None else {k: dict(vars(m)) for k, m in losses.meters.items()}
        common = {"epoch": self.epoch, "step": steps, "val_result": None, "rng_state": self._epoch_rng_state,
                  "loader_state": {"epoch": self.epoch, "batch": steps, "rng_state": ckpt.capture_rng_state()},
                  "trainer_state": trainer_state}
        self._write_checkpoint_files(self.output_dir, file_name, common, pointer=True)
        for name in self.get_model_names():
            ckpt.prune_step_checkpoints(osp.join(self.output_dir, name), keep_name=file_name)
        return file_name

    def _write_checkpoint_files(self, directory, file_name, common, pointer: bool) -> None:
        names = self.get_model_names()
        for name in names:
            optim, sched = self._optims[name], self._scheds[name]
            state = dict(common, format=ckpt.CHECKPOINT_FORMAT,
                         state_dict=ckpt.strip_module_prefix(self._models[name].state_dict()),
                         optimizer=None if optim is None else optim.state_dict(),
                         scheduler=None if sched is None else sched.state_dict())
            path = ckpt.atomic_torch_save(state, osp.join(directory, name, file_name))
            print(f"Checkpoint saved to {path}")
        if pointer:
            for name in names:
                ckpt.write_pointer(osp.join(directory, name), file_name)

    def resume_model_if_exist(self, directory):
        """Load the newest epoch whose checkpoint reads for every model (a truncated file is moved aside and the
        previous epoch used); returns the epochs done. The RNG/run state is applied at the end of before_train."""
        names = self.get_model_names()
        loaded = ckpt.newest_common_checkpoints(directory, names) if names else None
        if loaded is None:
            print("No checkpoint found, train from scratch")
            return 0
        print(f"Found checkpoint at {directory} (will resume training)")
        for name, checkpoint in loaded.items():  # Dassl's resume_from_checkpoint lines
            step = checkpoint.get("step")
            file_name = ckpt.epoch_file(checkpoint["epoch"]) if not step else ckpt.step_file(checkpoint["epoch"] + 1,
                                                                                             step)
            print(f'Loading checkpoint from "{osp.join(directory, name, file_name)}"')
            self._load_model_states(name, checkpoint, verbose=True)
            print(f"Previous epoch: {checkpoint['epoch']}")
        first = loaded[names[0]]
        self._resume_checkpoint = first
        self._mid_epoch_resume = None
        if first.get("step"):
            print(f"Resuming inside epoch {first['epoch'] + 1} after its step {first['step']}")
            self._mid_epoch_resume = dict(first["loader_state"], loaded=loaded)
        if "rng_state" not in first:
            print("Note: a checkpoint without RNG state (older clipkit or Dassl): the resumed run is not bit-identical "
                  "to an uninterrupted one")
        return int(first["epoch"])

    def _load_model_states(self, name, checkpoint, verbose=False) -> None:
        self._models[name].load_state_dict(checkpoint["state_dict"])
        if verbose:
            print("Loaded model weights")
        for holder, key in ((self._optims[name], "optimizer"), (self._scheds[name], "scheduler")):
            if holder is not None and checkpoint.get(key) is not None:
                holder.load_state_dict(checkpoint[key])
                if verbose:
                    print(f"Loaded {key}")

    def load_model(self, directory, epoch=None):
        """Dassl's ``load_model`` with a message that names ``--load-epoch`` and the epochs available."""
        if directory:
            names = self.get_model_names()
            wanted = "model-best.pth.tar" if epoch is None else ckpt.epoch_file(epoch)
            missing = [n for n in names if not osp.isfile(osp.join(directory, n, wanted))]
            if missing:
                available = ckpt.checkpoint_epochs(osp.join(directory, missing[0]))
                raise FileNotFoundError(
                    f"No model at {osp.join(directory, missing[0], wanted)} (--model-dir {directory}; "
                    f"model-best.pth.tar exists only with "
                    f"TEST.FINAL_MODEL best_val). Pass --load-epoch N to load {missing[0]}/model.pth.tar-N; epochs "
                    f"available there: {sorted(available) or 'none'}."
                )
        return super().load_model(directory, epoch)

    # ----------------------------------------------------------------------------------------------- train hooks
    def before_train(self):
        self._resume_checkpoint = None
        super().before_train()  # resumes from RESUME / OUTPUT_DIR
        resumed = self._resume_checkpoint or {}
        state = resumed.get("trainer_state")
        record = self._read_run_record() if self.start_epoch > 0 else None
        if state is not None:
            self._epoch_records = [dict(r) for r in state["epoch_records"]]
            self._train_time_s = float(state["train_time_s"])
            self._peak_memory_mb = float(state["peak_memory_mb"])
            self.best_result = float(state["best_result"])
            self.load_checkpoint_extra_state(state.get("extra", {}))
        elif record is not None:  # a checkpoint written before the run state moved into checkpoints
            self._epoch_records = [r for r in record.get("epochs", []) if r["epoch"] <= self.start_epoch]
            self._train_time_s = float(record.get("train_time_s", 0.0))
            self._peak_memory_mb = float(record.get("peak_memory_mb", 0.0))
        if record is not None:
            self._run_record_final = record.get("final")
        ckpt.restore_rng_state(resumed.get("rng_state"))  # last: nothing may draw between here and the next epoch
        self._epoch_rng_state = ckpt.capture_rng_state()
        self._install_stop_handler()

    def before_epoch(self):
        super().before_epoch()
        self._epoch_start = time.time()

    def after_epoch(self):
        if self.evaluates_every_epoch:
            # Before Dassl's after_epoch so that checkpoints are written after the epoch's metrics exist.
            self.log_epoch_metrics({"accuracy": self.test(split="test")})
        self._train_time_s += time.time() - self._epoch_start
        self._peak_memory_mb = max(self._peak_memory_mb, peak_memory_mb(self.device))
        self._epochs_trained_now += 1
        super().after_epoch()  # best-val test and checkpoints (which carry the state above)
        self._write_run_record(final=None)
        self._epoch_rng_state = ckpt.capture_rng_state()  # the next epoch starts here (intra-epoch checkpoints)
        if self._stop_requested:
            self._stop_now()

    def after_train(self):
        self._restore_stop_handler()
        super().after_train()  # Finish training, deploy, final test(), Elapsed
        if not self.cfg.TEST.NO_TEST:
            self.write_results()

    def run_epoch(self):
        """Dassl's ``TrainerX.run_epoch`` (same steps, progress lines and scalars) over ``epoch_batches``: it starts
        after the steps an intra-epoch checkpoint recorded and writes one every TRAIN.CHECKPOINT_EVERY_STEPS steps
        (and after the step during which a SIGTERM arrived, then stops the process)."""
        self.set_model_mode("train")
        losses, batch_time, data_time = MetricMeter(), AverageMeter(), AverageMeter()
        self.num_batches = len(self.train_loader_x)
        every = int(self.cfg.TRAIN.get("CHECKPOINT_EVERY_STEPS", 0))
        skip, after_skip = self._apply_mid_epoch_resume(losses)
        if every > 0 and not supports_epoch_batches(self.train_loader_x):
            raise TypeError(f"TRAIN.CHECKPOINT_EVERY_STEPS {every}: {type(self).__name__}'s train loader "
                            f"{type(self.train_loader_x).__name__} cannot resume inside an epoch; set it to 0.")
        batches = epoch_batches(self.train_loader_x, skip, every > 0, after_skip)
        self._in_steps = True
        end = time.time()
        try:
            for self.batch_idx, batch in enumerate(batches, start=skip):
                data_time.update(time.time() - end)
                loss_summary = self.forward_backward(batch)
                batch_time.update(time.time() - end)
                losses.update(loss_summary)
                log_batch_progress(self, losses, batch_time, data_time)
                last = self.batch_idx + 1 == self.num_batches
                if every > 0 and not last and ((self.batch_idx + 1) % every == 0 or self._stop_requested):
                    self.save_step_checkpoint(losses)
                if self._stop_requested and not last:  # after the last step: once the epoch checkpoint exists
                    self._stop_now()
                end = time.time()
        finally:
            self._in_steps = False

    def _apply_mid_epoch_resume(self, losses):
        """(batches to skip, callback after the skip) for the epoch an intra-epoch checkpoint was written in; the
        registered modules are reloaded (``before_epoch`` may have changed them) and the method's epoch state and the
        loss meters restored. (0, None) otherwise."""
        pending = self._mid_epoch_resume
        if not pending or int(pending["epoch"]) != self.epoch:
            return 0, None
        self._mid_epoch_resume = None
        for name, checkpoint in pending["loaded"].items():
            self._load_model_states(name, checkpoint)
        state = pending["loaded"][self.get_model_names()[0]]["trainer_state"]
        for name, value in state.get("epoch_state", {}).items():  # checkpoints load on the CPU
            setattr(self, name, self._on_devices_like(value, getattr(self, name, None)))
        for key, values in state.get("meters", {}).items():
            vars(losses.meters[key]).update(values)
        rng_state = pending["rng_state"]
        return int(pending["batch"]), lambda: ckpt.restore_rng_state(rng_state)

    def _on_devices_like(self, value, current):
        """``value`` with each tensor on the device of the matching tensor of ``current`` (the attribute as
        ``before_epoch`` left it), else on ``self.device``."""
        if torch.is_tensor(value):
            return value.to(current.device if torch.is_tensor(current) else self.device)
        if isinstance(value, (list, tuple)):
            same_shape = isinstance(current, (list, tuple)) and len(current) == len(value)
            currents = current if same_shape else [None] * len(value)
            return type(value)(self._on_devices_like(v, c) for v, c in zip(value, currents))
        if isinstance(value, dict):
            currents = current if isinstance(current, dict) else {}
            return {k: self._on_devices_like(v, currents.get(k)) for k, v in value.items()}
        return value

    # --------------------------------------------------------------------------------------- stop on SIGTERM
    def _install_stop_handler(self) -> None:
        """With TRAIN.CHECKPOINT_EVERY_STEPS > 0, a SIGTERM (the sweep's stop, Slurm's pre-emption via the task)
        during the training steps lets the current step finish, writes an intra-epoch checkpoint and then stops the
        process with SIGTERM's default action; outside the steps (evaluation, checkpoint writes) it acts at once."""
        self._previous_sigterm = None
        if int(self.cfg.TRAIN.get("CHECKPOINT_EVERY_STEPS", 0)) <= 0:
            return
        if threading.current_thread() is not threading.main_thread():
            return

        def on_sigterm(signum, frame):
            if self._in_steps:
                print("SIGTERM: an intra-epoch checkpoint is written after the current step, then the run stops",
                      flush=True)
                self._stop_requested = True
            else:
                self._stop_now()

        self._previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_stop_handler(self) -> None:
        previous = getattr(self, "_previous_sigterm", None)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
            self._previous_sigterm = None

    def _stop_now(self) -> None:
        """Die of SIGTERM (exit status -15 / 143, as without the handler)."""
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)  # the default action ends the process; never reached

    # ---------------------------------------------------------------------------------------------- run record
    def _run_record_path(self) -> str:
        return osp.join(self.output_dir, RUN_RECORD_FILE)

    def _read_run_record(self) -> Optional[Dict]:
        path = self._run_record_path()
        if not osp.isfile(path):
            return None
        try:
            return results_io.read_json_file(path)
        except ValueError as err:
            print(f"Ignoring unreadable {path} ({err})")
            return None

    def _write_run_record(self, final: Optional[Dict]) -> None:
        record = {
            "epochs": self._epoch_records,
            "train_time_s": self._train_time_s,
            "peak_memory_mb": self._peak_memory_mb,
            "final": final,
        }
        results_io.atomic_write_json(record, self._run_record_path())

    # ---------------------------------------------------------------------------------------------- results.json
    def extra_results(self) -> Dict:
        """Method-specific additions to results.json (must not reuse schema keys)."""
        summary_fn = getattr(self, "run_summary", None)  # optional method hook (training-free runs, microCLIP)
        summary = summary_fn() if callable(summary_fn) else None
        return {"run_summary": summary} if summary else {}

    def write_results(self) -> str:
        """Write ``OUTPUT_DIR/<TEST.RESULTS_FILE>`` from the last ``test()`` (call it after the final test)."""
        if self._last_eval is None:
            raise RuntimeError("write_results() needs a finished test(): call trainer.test() first")
        cfg = self.cfg
        results = self._last_eval["results"]
        y_true, y_pred = self._last_eval["y_true"], self._last_eval["y_pred"]
        accuracy_last = float(results["accuracy"])

        # an epoch record's "accuracy" is, by contract, the test accuracy of the reported logits after that epoch
        tested = [r for r in self._epoch_records if "accuracy" in r]
        if tested:
            best = max(tested, key=lambda r: r["accuracy"])  # first epoch wins a tie
            accuracy_best, best_epoch, test_selection = best["accuracy"], best["epoch"], True
        else:
            accuracy_best, best_epoch, test_selection = accuracy_last, self._deployed_epoch(), False

        final = self._run_record_final if self._epochs_trained_now == 0 else None
        if final is None:
            final = {
                "wall_time_s": self._train_time_s + self._last_eval_time_s,
                "peak_memory_mb": max(self._peak_memory_mb, peak_memory_mb(self.device)),
            }
            self._run_record_final = final
            self._write_run_record(final=final)

        data = {
            "method": cfg.TRAINER.NAME,
            "dataset": self._dataset_key_or_name(),
            "backbone": cfg.MODEL.BACKBONE.NAME,
            "seed": cfg.SEED,
            "accuracy_last": accuracy_last,
            "accuracy_best": float(accuracy_best),
            "best_epoch": best_epoch,
            "best_is_test_selection": test_selection,
            "macro_f1": float(results["macro_f1"]),
            "per_class_accuracy": self._per_class_accuracy(y_true, y_pred),
            "num_test": len(y_true),
            "config_digest": results_io.config_digest(cfg, getattr(self, "config_node", None)),
            "wall_time_s": float(final["wall_time_s"]),
            "peak_memory_mb": float(final["peak_memory_mb"]),
            "epochs": self.epoch_records,
        }
        for key, value in self.extra_results().items():
            if key in data:
                raise KeyError(f"{type(self).__name__}.extra_results() reuses the schema key {key!r}")
            data[key] = value
        path = osp.join(self.output_dir, cfg.TEST.RESULTS_FILE)
        results_io.write_results(data, path)
        print(f"Results written to {path}")
        return path

    def _deployed_epoch(self) -> int:
        """Epochs behind the deployed model: the best-val checkpoint's epoch (TEST.FINAL_MODEL best_val), else
        MAX_EPOCH after training; 0 for an eval-only run in a fresh folder."""
        trained = bool(self._epoch_records) or self._epochs_trained_now > 0 or self.start_epoch > 0
        if not trained or self.training_free:
            return 0
        names = self.get_model_names()
        if self.cfg.TEST.FINAL_MODEL == "best_val" and names:
            best_path = osp.join(self.output_dir, names[0], "model-best.pth.tar")
            if osp.isfile(best_path):
                return int(load_checkpoint(best_path)["epoch"])
        return int(self.max_epoch)

    def _dataset_key_or_name(self) -> str:
        return getattr(self.dm.dataset, "dataset_key", "") or self.cfg.DATASET.NAME

    def _per_class_accuracy(self, y_true, y_pred) -> Dict[str, float]:
        """{classname: accuracy %} over the test labels present, in label order."""
        totals, correct = {}, {}
        for truth, pred in zip(y_true, y_pred):
            totals[truth] = totals.get(truth, 0) + 1
            correct[truth] = correct.get(truth, 0) + int(truth == pred)
        names = self.lab2cname
        return {str(names.get(label, label)): 100.0 * correct[label] / totals[label] for label in sorted(totals)}


__all__ = ["CLIPTrainer", "RUN_RECORD_FILE", "peak_memory_mb"]
