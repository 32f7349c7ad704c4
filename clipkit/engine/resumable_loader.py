"""One epoch of a training loader that can start after its first ``skip`` batches, exactly.

Intra-epoch checkpoints (``TRAIN.CHECKPOINT_EVERY_STEPS``) record how many batches of the epoch were consumed; a
resumed run must then see exactly the remaining batches of the uninterrupted run: the same permutation and the same
augmentation random numbers. ``epoch_batches(loader, skip, seed_batches, after_skip)`` gives them:

* the permutation: the epoch's iterator is created from the same RNG state as in the uninterrupted run (the trainer
  restores the epoch-start state), so the sampler draws the same order; the first ``skip`` index batches are dropped at
  the batch-sampler level (no image is read for them); ``after_skip()`` is called after the drop and before the first
  remaining batch is fetched (the trainer restores the mid-epoch RNG state there);
* the augmentation: with ``num_workers == 0`` the transforms draw from the main process's generators, which
  ``after_skip`` restores. With workers, PyTorch seeds each worker once per epoch and a worker's stream runs through
  every batch it serves, so the remaining batches would depend on the skipped ones; with ``seed_batches`` every batch
  reseeds the worker's torch, ``random`` and NumPy generators from (epoch seed, batch position) before loading, which
  makes a batch's augmentation a function of its position only (and independent of the worker count). The epoch seed
  is a hash of torch's generator state when the epoch's iterator is made (nothing is drawn for it).

A loader that is not a ``torch.utils.data.DataLoader`` supports this by a method
``epoch_batches(skip, seed_batches, after_skip)`` (e.g. POUF's endless stream).
"""

from __future__ import annotations

import hashlib
import random
from typing import Callable, Iterator, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info


def mix_seed(base: bytes, position: int) -> int:
    """A 63-bit seed from ``base`` bytes and a batch position (blake2b; stable across processes and platforms)."""
    digest = hashlib.blake2b(base + int(position).to_bytes(8, "little"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_generators(seed: int) -> None:
    """Reseed torch, Python ``random`` and NumPy's global generators of the current (worker) process."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


class SeededBatch(list):
    """A batch of dataset indices that carries the seed of its augmentation (None: do not reseed)."""

    seed: Optional[int] = None


class BatchSeededDataset(Dataset):
    """``dataset`` whose batched fetch (``__getitems__``) first reseeds the worker's generators from the batch's seed
    (only inside a DataLoader worker: the main process's generators belong to training)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]

    def __getitems__(self, indices) -> List:
        seed = getattr(indices, "seed", None)
        if seed is not None and get_worker_info() is not None:
            seed_generators(seed)
        return [self.dataset[i] for i in indices]


class SkippingBatchSampler:
    """The index batches of ``batch_sampler`` from the ``skip``-th on; calls ``after_skip`` once the first ``skip``
    were drawn (and dropped); tags each batch with ``seed_of(position)`` when given."""

    def __init__(self, batch_sampler, skip: int, after_skip: Optional[Callable[[], None]] = None,
                 seed_of: Optional[Callable[[int], int]] = None):
        self.batch_sampler, self.skip, self.after_skip, self.seed_of = batch_sampler, skip, after_skip, seed_of

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[List[int]]:
        for position, indices in enumerate(self.batch_sampler):
            if position < self.skip:
                continue
            if position == self.skip and self.after_skip is not None:
                self.after_skip()
            batch = SeededBatch(indices)
            if self.seed_of is not None:
                batch.seed = self.seed_of(position)
            yield batch


def torch_state_seed_base() -> bytes:
    """Bytes identifying torch's CPU generator state now (the epoch seed of ``seed_batches``; draws nothing)."""
    return hashlib.blake2b(torch.get_rng_state().numpy().tobytes(), digest_size=16).digest()


def position_seeds(base: bytes, offset: int = 0) -> Callable[[int], int]:
    """``position -> mix_seed(base, offset + position)``: the batch seeds of ``seed_batches``."""
    return lambda position: mix_seed(base, offset + position)


def dataloader_from(loader: DataLoader, skip: int, seed_of: Optional[Callable[[int], int]],
                    after_skip: Optional[Callable[[], None]]) -> DataLoader:
    """A DataLoader over the same dataset, sampler order, workers and collate as ``loader``, starting at batch
    ``skip``; with ``seed_of`` (and workers) batch ``j`` reseeds its worker with ``seed_of(j)`` (module docstring)."""
    if loader.batch_sampler is None:
        raise TypeError("epoch_batches needs a DataLoader with a batch sampler (batch_size set); got batch_size=None")
    dataset = loader.dataset
    if seed_of is not None and loader.num_workers > 0:
        dataset = BatchSeededDataset(dataset)
    else:
        seed_of = None
    options = {}
    if loader.num_workers > 0:
        options.update(prefetch_factor=loader.prefetch_factor, persistent_workers=False,
                       multiprocessing_context=loader.multiprocessing_context)
    return DataLoader(
        dataset, batch_sampler=SkippingBatchSampler(loader.batch_sampler, skip, after_skip, seed_of),
        num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
        timeout=loader.timeout, worker_init_fn=loader.worker_init_fn, generator=loader.generator,
        pin_memory_device=getattr(loader, "pin_memory_device", ""), **options,
    )


def supports_epoch_batches(loader) -> bool:
    return isinstance(loader, DataLoader) or callable(getattr(loader, "epoch_batches", None))


def epoch_batches(loader, skip: int = 0, seed_batches: bool = False,
                  after_skip: Optional[Callable[[], None]] = None) -> Iterator:
    """Iterator over one epoch of ``loader`` from batch ``skip`` on (see the module docstring)."""
    own = getattr(loader, "epoch_batches", None)
    if callable(own):
        return iter(own(skip=skip, seed_batches=seed_batches, after_skip=after_skip))
    if not isinstance(loader, DataLoader):
        raise TypeError(f"{type(loader).__name__} cannot resume inside an epoch: it is no torch DataLoader and has "
                        f"no epoch_batches(skip, seed_batches, after_skip) method. Set TRAIN.CHECKPOINT_EVERY_STEPS 0.")
    if skip == 0 and not seed_batches:
        if after_skip is not None:
            after_skip()
        return iter(loader)
    seed_of = position_seeds(torch_state_seed_base()) if seed_batches else None
    return iter(dataloader_from(loader, skip, seed_of, after_skip))


__all__ = ["BatchSeededDataset", "SeededBatch", "SkippingBatchSampler", "dataloader_from", "epoch_batches", "mix_seed",
           "position_seeds", "seed_generators", "supports_epoch_batches", "torch_state_seed_base"]
