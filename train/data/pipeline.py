"""Input pipelines over random-access sources, built with grain.

Training: a seeded global shuffle that changes every epoch, each process taking
a strided 1/N of it (``ds[p::N]``) so the N hosts together read every global
batch exactly once; optional random augmentation seeded per example; batches with
``drop_remainder``; background read threads and prefetch. Because the dataset is
random access, the iterator's state is a single index: saved in the checkpoint, it
resumes at exactly the batch an uninterrupted run would have read next.

Training with ``bucket_boundaries`` (padded text): batches drawn from length
buckets and padded only to their bucket's length (:mod:`train.data.bucketing`);
still random access, so resume and host sharding work the same way.

Evaluation: the split in order, padded with ``valid=False`` copies up to a whole
number of global batches, so every example is evaluated exactly once.
"""
from __future__ import annotations

import collections
import sys
from typing import Any, Callable, Iterator, Sequence

import grain
import jax
import numpy as np

from train.data import bucketing
from train.data.base import Source


def train_dataset(source: Source, *, global_batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1,
                  augment: Callable | None = None,
                  bucket_boundaries: Sequence[int] = ()) -> grain.MapDataset:
  """The infinite, shuffled, host-sharded, batched training dataset (random access).

  ``bucket_boundaries`` (e.g. ``(8, 16, 32)``; empty = off) batches token
  sequences by length, each batch padded to its bucket's length only, with a
  ``valid`` flag per example; see :func:`train_lengths` for the lengths in use.
  """
  if global_batch_size % process_count:
    raise ValueError(f'batch_size {global_batch_size} is not divisible by the '
                     f'{process_count} processes')
  if len(source) < global_batch_size:
    raise ValueError(f'the training split has {len(source)} examples, fewer than one '
                     f'batch of {global_batch_size}')
  lengths = train_lengths(source, bucket_boundaries)
  if lengths:
    return grain.MapDataset.range(sys.maxsize).map(bucketing.BucketBatches(
        source, global_batch_size=global_batch_size, lengths=lengths, seed=seed,
        process_index=process_index, process_count=process_count, augment=augment))
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(None)
  ds = ds[process_index::process_count]
  if augment is not None:
    ds = ds.random_map(augment)
  return ds.batch(global_batch_size // process_count, drop_remainder=True, batch_fn=_stack)


def train_lengths(source: Source, bucket_boundaries: Sequence[int]) -> tuple[int, ...]:
  """The sequence lengths of bucketed training batches; ``()`` when bucketing is off."""
  if not bucket_boundaries:
    return ()
  seq_len = np.shape(source[0]['inputs'])[0]
  return bucketing.bucket_lengths(bucket_boundaries, seq_len)


def train_iterator(ds: grain.MapDataset, *, num_threads: int = 2, prefetch: int = 4,
                   state: dict | None = None) -> grain.DatasetIterator:
  """A background-prefetching iterator over ``ds``, optionally restored to ``state``."""
  it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                  prefetch_buffer_size=prefetch)))
  if state is not None:
    it.set_state(state)
  return it


class _Padded:
  """A source extended to ``length`` by copies of example 0 marked ``valid=False``."""

  def __init__(self, source: Source, length: int):
    self.source, self.length, self.n = source, length, len(source)

  def __len__(self):
    return self.length

  def __getitem__(self, i):
    rec = dict(self.source[i if i < self.n else 0])
    rec['valid'] = np.asarray(i < self.n)
    return rec


def eval_batches(source: Source, *, global_batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """This process's slices of every eval batch, the last one padded and masked."""
  if len(source) == 0:
    raise ValueError('the eval split is empty')
  n_batches = -(-len(source) // global_batch_size)
  ds = grain.MapDataset.source(_Padded(source, n_batches * global_batch_size))
  ds = ds[process_index::process_count].batch(global_batch_size // process_count, batch_fn=_stack)
  for i in range(len(ds)):
    yield ds[i]


def _stack(records) -> dict[str, np.ndarray]:
  return {k: np.stack([r[k] for r in records]) for k in records[0]}


class DevicePrefetcher:
  """Puts the next ``size`` batches on devices ahead of use, with their iterator states.

  ``jax.make_array_from_process_local_data`` is asynchronous, so the host-to-device
  copy of batch k+1 overlaps step k. Each item comes with the data-iterator state
  *after* it, which is what a checkpoint taken after consuming it must store.
  """

  def __init__(self, iterator: grain.DatasetIterator, put: Callable[[dict], Any], size: int = 2):
    self.iterator, self.put, self.size = iterator, put, size
    self.queue: collections.deque = collections.deque()

  def __iter__(self):
    return self

  def __next__(self) -> tuple[Any, dict]:
    while len(self.queue) < self.size:
      batch = next(self.iterator)
      self.queue.append((self.put(batch), self.iterator.get_state()))
    return self.queue.popleft()
