"""Trainers with Dassl's API: TrainerBase -> SimpleTrainer -> TrainerX / TrainerXU, TRAINER_REGISTRY, build_trainer.

Order of ``SimpleTrainer.__init__``: check_cfg(cfg) -> device -> epochs/output_dir/cfg -> build_data_loader ->
build_model -> build_evaluator. ``train()``: before_train (resume from RESUME or OUTPUT_DIR, tensorboard) ->
[before_epoch, run_epoch, after_epoch] per epoch -> after_train (final test). The engine never steps LR schedulers:
trainers call ``update_lr()`` themselves (CoOp: on the last batch of an epoch).
"""

from __future__ import annotations

import datetime
import os.path as osp
import time
from collections import OrderedDict

import numpy as np
import torch

from .data import DataManager
from .evaluation import build_evaluator
from .registry import Registry, check_availability
from .utils import (
    AverageMeter,
    MetricMeter,
    load_checkpoint,
    mkdir_if_missing,
    resume_from_checkpoint,
    save_checkpoint,
    tolist_if_not,
)

TRAINER_REGISTRY = Registry("TRAINER")


def build_trainer(cfg):
    """Instantiate ``TRAINER_REGISTRY[cfg.TRAINER.NAME](cfg)``."""
    check_availability(cfg.TRAINER.NAME, TRAINER_REGISTRY.registered_names())
    if cfg.VERBOSE:
        print(f"Loading trainer: {cfg.TRAINER.NAME}")
    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)


class TrainerBase:
    """Model/optimizer/scheduler bookkeeping, checkpoints, tensorboard and the generic epoch loop."""

    def __init__(self):
        self._models = OrderedDict()
        self._optims = OrderedDict()
        self._scheds = OrderedDict()
        self._writer = None

    def register_model(self, name="model", model=None, optim=None, sched=None):
        for attr in ("_models", "_optims", "_scheds"):
            if self.__dict__.get(attr) is None:
                raise AttributeError(f"Cannot assign {attr[1:-1]} before super().__init__() call")
        assert name not in self._models, "Found duplicate model names"
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched

    def get_model_names(self, names=None):
        real_names = list(self._models.keys())
        if names is None:
            return real_names
        names = tolist_if_not(names)
        for name in names:
            assert name in real_names, f"Unknown model name {name}; registered: {real_names}"
        return names

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        """Write ``<directory>/<name>/<model_name or model.pth.tar-<epoch+1>>`` for every registered model."""
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            save_checkpoint(
                {
                    "state_dict": self._models[name].state_dict(),
                    "epoch": epoch + 1,
                    "optimizer": None if optim is None else optim.state_dict(),
                    "scheduler": None if sched is None else sched.state_dict(),
                    "val_result": val_result,
                },
                osp.join(directory, name),
                is_best=is_best,
                model_name=model_name,
            )

    def resume_model_if_exist(self, directory):
        """Load the latest checkpoint of every model under ``directory``; returns the epoch to start from."""
        names = self.get_model_names()
        if any(not osp.exists(osp.join(directory, name)) for name in names):
            print("No checkpoint found, train from scratch")
            return 0
        print(f"Found checkpoint at {directory} (will resume training)")
        start_epoch = 0
        for name in names:
            start_epoch = resume_from_checkpoint(
                osp.join(directory, name), self._models[name], self._optims[name], self._scheds[name]
            )
        return start_epoch

    def load_model(self, directory, epoch=None):
        """Load ``model-best.pth.tar`` (or ``model.pth.tar-<epoch>``) of every registered model, strictly."""
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given (ignore this if it's done on "
                  "purpose)")
            return
        model_file = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
        for name in self.get_model_names():
            model_path = osp.join(directory, name, model_file)
            if not osp.exists(model_path):
                raise FileNotFoundError(f"No model at {model_path}")
            checkpoint = load_checkpoint(model_path)
            self._print_load_line(model_path, name, checkpoint)
            self._models[name].load_state_dict(checkpoint["state_dict"])

    @staticmethod
    def _print_load_line(model_path, name, checkpoint):
        """``Load <path> to <name> (epoch=E, val_result=V)``; V is None for non-best checkpoints."""
        val_result = checkpoint.get("val_result")
        shown = "None" if val_result is None else f"{val_result:.1f}"
        print(f"Load {model_path} to {name} (epoch={checkpoint['epoch']}, val_result={shown})")

    def set_model_mode(self, mode="train", names=None):
        for name in self.get_model_names(names):
            if mode == "train":
                self._models[name].train()
            elif mode in ("test", "eval"):
                self._models[name].eval()
            else:
                raise KeyError(f"set_model_mode: mode must be train, eval or test, got {mode}")

    def update_lr(self, names=None):
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def detect_anomaly(self, loss):
        if not torch.isfinite(loss).all():
            raise FloatingPointError("Loss is infinite or NaN!")

    def init_writer(self, log_dir):
        if self.__dict__.get("_writer") is None:
            from torch.utils.tensorboard import SummaryWriter

            print(f"Initialize tensorboard (log_dir={log_dir})")
            self._writer = SummaryWriter(log_dir=log_dir)

    def close_writer(self):
        if self._writer is not None:
            self._writer.close()

    def write_scalar(self, tag, scalar_value, global_step=None):
        if self._writer is not None:  # no writer in eval-only runs
            self._writer.add_scalar(tag, scalar_value, global_step)

    def train(self, start_epoch, max_epoch):
        self.start_epoch = start_epoch
        self.max_epoch = max_epoch
        self.before_train()
        for self.epoch in range(self.start_epoch, self.max_epoch):
            self.before_epoch()
            self.run_epoch()
            self.after_epoch()
        self.after_train()

    def before_train(self):
        pass

    def after_train(self):
        pass

    def before_epoch(self):
        pass

    def after_epoch(self):
        pass

    def run_epoch(self):
        raise NotImplementedError

    def test(self):
        raise NotImplementedError

    def parse_batch_train(self, batch):
        raise NotImplementedError

    def parse_batch_test(self, batch):
        raise NotImplementedError

    def forward_backward(self, batch):
        raise NotImplementedError

    def model_inference(self, input):
        raise NotImplementedError

    def model_zero_grad(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss):
        self.detect_anomaly(loss)
        loss.backward()

    def model_update(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].step()

    def model_backward_and_update(self, loss, names=None):
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)


class SimpleTrainer(TrainerBase):
    """Data, model, evaluator, resume, per-epoch checkpointing and the final test."""

    def __init__(self, cfg):
        super().__init__()
        self.check_cfg(cfg)
        self.device = torch.device("cuda" if torch.cuda.is_available() and cfg.USE_CUDA else "cpu")
        self.start_epoch = self.epoch = 0
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR
        self.cfg = cfg
        self.build_data_loader()
        self.build_model()
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname)
        self.best_result = -np.inf

    def check_cfg(self, cfg):
        """Validate ``cfg`` before anything is built (``self.cfg`` is not set yet)."""

    def build_data_loader(self):
        """Sets train_loader_x, train_loader_u, val_loader, test_loader, num_classes, num_source_domains,
        lab2cname and dm (an override must set the same attributes)."""
        dm = DataManager(self.cfg)
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = dm.train_loader_u
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm

    def build_model(self):
        raise NotImplementedError(
            f"{type(self).__name__}.build_model(): build the modules, call build_optimizer/build_lr_scheduler and "
            f"register_model (the internal engine has no SimpleNet/CNN backbones)."
        )

    def train(self):
        super().train(self.start_epoch, self.max_epoch)

    def before_train(self):
        directory = self.cfg.RESUME or self.cfg.OUTPUT_DIR
        self.start_epoch = self.resume_model_if_exist(directory)
        writer_dir = osp.join(self.output_dir, "tensorboard")
        mkdir_if_missing(writer_dir)
        self.init_writer(writer_dir)
        self.time_start = time.time()

    def after_train(self):
        print("Finish training")
        if not self.cfg.TEST.NO_TEST:
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                print("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
            else:
                print("Deploy the last-epoch model")
            self.test()
        elapsed = str(datetime.timedelta(seconds=round(time.time() - self.time_start)))
        print(f"Elapsed: {elapsed}")
        self.close_writer()

    def after_epoch(self):
        last_epoch = (self.epoch + 1) == self.max_epoch
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        meet_checkpoint_freq = freq > 0 and (self.epoch + 1) % freq == 0
        if not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val":
            curr_result = self.test(split="val")
            if curr_result > self.best_result:
                self.best_result = curr_result
                self.save_model(self.epoch, self.output_dir, val_result=curr_result, model_name="model-best.pth.tar")
        if meet_checkpoint_freq or last_epoch:
            self.save_model(self.epoch, self.output_dir)

    @torch.no_grad()
    def test(self, split=None):
        """Evaluate on ``split`` (default TEST.SPLIT; "val" without a val loader silently uses the test loader);
        returns the evaluator's first metric (accuracy)."""
        from tqdm import tqdm

        self.set_model_mode("eval")
        self.evaluator.reset()
        split = self.cfg.TEST.SPLIT if split is None else split
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split = "test"
            data_loader = self.test_loader
        print(f"Evaluate on the *{split}* set")
        for batch in tqdm(data_loader):
            input, label = self.parse_batch_test(batch)
            self.evaluator.process(self.model_inference(input), label)
        results = self.evaluator.evaluate()
        for key, value in results.items():
            self.write_scalar(f"{split}/{key}", value, self.epoch)
        return list(results.values())[0]

    def model_inference(self, input):
        return self.model(input)

    def parse_batch_test(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def get_current_lr(self, names=None):
        name = self.get_model_names(names)[0]
        return self._optims[name].param_groups[0]["lr"]

    # ----------------------------------------------------------------------------------------- shared progress
    def _after_batch(self, losses, batch_time, data_time):
        log_batch_progress(self, losses, batch_time, data_time)


def log_batch_progress(trainer, losses, batch_time, data_time):
    """Dassl's per-batch bookkeeping of ``TrainerX.run_epoch``: the progress line every TRAIN.PRINT_FREQ batches
    (every batch when an epoch is shorter) and ``train/<key>`` running averages and ``train/lr`` at step
    ``epoch * num_batches + batch_idx`` (shared by both engines through ``CLIPTrainer.run_epoch``)."""
    print_freq = trainer.cfg.TRAIN.PRINT_FREQ
    if (trainer.batch_idx + 1) % print_freq == 0 or trainer.num_batches < print_freq:
        remaining = (trainer.num_batches - trainer.batch_idx - 1
                     + (trainer.max_epoch - trainer.epoch - 1) * trainer.num_batches)
        eta = str(datetime.timedelta(seconds=int(batch_time.avg * remaining)))
        print(" ".join([
            f"epoch [{trainer.epoch + 1}/{trainer.max_epoch}]",
            f"batch [{trainer.batch_idx + 1}/{trainer.num_batches}]",
            f"time {batch_time.val:.3f} ({batch_time.avg:.3f})",
            f"data {data_time.val:.3f} ({data_time.avg:.3f})",
            f"{losses}",
            f"lr {trainer.get_current_lr():.4e}",
            f"eta {eta}",
        ]))
    n_iter = trainer.epoch * trainer.num_batches + trainer.batch_idx
    for name, meter in losses.meters.items():
        trainer.write_scalar("train/" + name, meter.avg, n_iter)
    trainer.write_scalar("train/lr", trainer.get_current_lr(), n_iter)


class TrainerX(SimpleTrainer):
    """Epoch loop over ``train_loader_x``; ``forward_backward(batch)`` returns a dict of scalars."""

    def run_epoch(self):
        self.set_model_mode("train")
        losses, batch_time, data_time = MetricMeter(), AverageMeter(), AverageMeter()
        self.num_batches = len(self.train_loader_x)
        end = time.time()
        for self.batch_idx, batch in enumerate(self.train_loader_x):
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)
            self._after_batch(losses, batch_time, data_time)
            end = time.time()

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device), batch["domain"].to(self.device)


class TrainerXU(SimpleTrainer):
    """Epoch loop over paired ``train_loader_x`` / ``train_loader_u`` batches (TRAIN.COUNT_ITER sets the length;
    the shorter loader is restarted); ``forward_backward(batch_x, batch_u)``."""

    def run_epoch(self):
        self.set_model_mode("train")
        losses, batch_time, data_time = MetricMeter(), AverageMeter(), AverageMeter()
        len_x, len_u = len(self.train_loader_x), len(self.train_loader_u)
        count_iter = self.cfg.TRAIN.COUNT_ITER
        lengths = {"train_x": len_x, "train_u": len_u, "smaller_one": min(len_x, len_u)}
        if count_iter not in lengths:
            raise ValueError(f"TRAIN.COUNT_ITER must be one of {list(lengths)}, got {count_iter}")
        self.num_batches = lengths[count_iter]
        iter_x, iter_u = iter(self.train_loader_x), iter(self.train_loader_u)
        end = time.time()
        for self.batch_idx in range(self.num_batches):
            try:
                batch_x = next(iter_x)
            except StopIteration:
                iter_x = iter(self.train_loader_x)
                batch_x = next(iter_x)
            try:
                batch_u = next(iter_u)
            except StopIteration:
                iter_u = iter(self.train_loader_u)
                batch_u = next(iter_u)
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch_x, batch_u)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)
            self._after_batch(losses, batch_time, data_time)
            end = time.time()

    def parse_batch_train(self, batch_x, batch_u):
        return (batch_x["img"].to(self.device), batch_x["label"].to(self.device), batch_u["img"].to(self.device))


__all__ = ["TRAINER_REGISTRY", "build_trainer", "log_batch_progress", "TrainerBase", "SimpleTrainer", "TrainerX",
           "TrainerXU"]
