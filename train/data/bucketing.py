"""Length bucketing for padded token sequences, so padding does not dominate a batch.

SST-2 sentences average 10 words but are padded to 48: four tokens in five are
padding. With bucket lengths such as (8, 16, 32, 48) every example goes to the
shortest bucket that holds its real tokens (``mask.sum()``), batches are drawn
from one bucket and padded only to its length, so jit compiles one train step
per bucket length and each step does a fraction of the work.

Both classifiers read only real tokens (the RNN through ``seq_lengths``, BERT
through its attention mask), so cutting right padding changes no logit.
Packing (several sentences in one row) would need segment-aware attention and
recurrent resets, which the models do not have; bucketing needs nothing of them.

An epoch's plan (which examples form which batch, in which order) is a pure
function of ``(seed, epoch)``, so batch ``k`` is random access: grain's iterator
state stays a single index, checkpoints and resumes exactly, and N hosts each
take a strided 1/N of every global batch. Every example is in exactly one batch
per epoch: the remainders of the buckets share a few mixed batches (padded to
their longest bucket), and the epoch's last batch is filled up with copies
marked ``valid=False``, which the tasks weigh 0, so every batch has one size.
"""
from __future__ import annotations

import threading
from typing import Callable, Sequence

import numpy as np

from train.data.base import DataError, Source

# Per-token keys cut to the bucket length; all others (label, valid, ...) are per example.
SEQUENCE_KEYS = ('inputs', 'mask', 'targets', 'weights')


def bucket_lengths(boundaries: Sequence[int], seq_len: int) -> tuple[int, ...]:
  """The padded lengths in use: the boundaries below ``seq_len``, then ``seq_len`` itself.

  Boundaries at or above ``seq_len`` are dropped, so one config serves a shorter
  ``data.seq_len`` (the ``:tiny`` runs) unchanged.
  """
  return tuple(sorted({int(b) for b in boundaries if 0 < b < seq_len})) + (int(seq_len),)


def example_lengths(source: Source) -> np.ndarray:
  """Real tokens per example (``mask.sum()``); needs right-padded records with a ``mask``."""
  columns = getattr(source, 'columns', None)
  if columns is not None and 'mask' in columns:  # ArraySource: one vectorised sum
    return np.asarray(columns['mask'], bool).sum(-1).astype(np.int64)
  if len(source) and 'mask' not in source[0]:
    raise DataError("data.bucket_boundaries: length bucketing needs padded token sequences "
                    f"with a 'mask'; this dataset's records have {sorted(source[0])}")
  return np.array([int(np.asarray(source[i]['mask']).sum()) for i in range(len(source))], np.int64)


def epoch_plan(bucket_of: np.ndarray, batch_size: int, seed: int,
               epoch: int) -> tuple[np.ndarray, np.ndarray]:
  """One epoch's batches: (indices ``[n_batches, batch_size]``, -1 = filler; bucket ``[n_batches]``).

  ``n_batches = ceil(N / batch_size)`` whatever the seed, so batch ``k`` lies in
  epoch ``k // n_batches``. Examples are shuffled, grouped by bucket, cut into
  full batches; the buckets' remainders (fewer than ``batch_size`` each) follow in
  bucket order and are cut likewise, the last batch short; then batch order is shuffled.
  """
  rng = np.random.default_rng([seed, epoch])
  n = len(bucket_of)
  perm = rng.permutation(n)
  order = perm[np.argsort(bucket_of[perm], kind='stable')]
  counts = np.bincount(bucket_of, minlength=int(bucket_of.max()) + 1)
  full, rest, full_bucket = [], [], []
  start = 0
  for bucket, count in enumerate(counts):
    ids = order[start:start + count]
    start += count
    k = count // batch_size
    full.append(ids[:k * batch_size])
    full_bucket.append(np.full(k, bucket))
    rest.append(ids[k * batch_size:])
  full_ids = np.concatenate(full).reshape(-1, batch_size)
  rest_ids = np.concatenate(rest)
  n_rest = -(-len(rest_ids) // batch_size)
  rest_padded = np.full(n_rest * batch_size, -1, np.int64)
  rest_padded[:len(rest_ids)] = rest_ids
  rest_padded = rest_padded.reshape(n_rest, batch_size)
  # A mixed batch is padded to the longest bucket among its examples.
  rest_bucket = np.array([bucket_of[row[row >= 0]].max() for row in rest_padded], np.int64)
  ids = np.concatenate([full_ids, rest_padded])
  buckets = np.concatenate(full_bucket + [rest_bucket]).astype(np.int64)
  shuffle = rng.permutation(len(ids))
  assert len(ids) == -(-n // batch_size)
  return ids[shuffle], buckets[shuffle]


class BucketBatches:
  """``k -> this host's slice of global batch k``: random access over an endless sequence of epochs.

  Args:
    source: records with per-token ``inputs``/``mask`` (and optionally ``targets``/``weights``).
    global_batch_size: examples per global batch (all hosts).
    lengths: the bucket lengths (:func:`bucket_lengths`); the last is the records' length.
    seed: the shuffle seed.
    process_index, process_count: this host takes rows ``process_index::process_count``.
    augment: optional ``(record, np.random.Generator) -> record``, seeded by the
      example's place in the global stream (so hosts and resumes agree).
  """

  def __init__(self, source: Source, *, global_batch_size: int, lengths: Sequence[int], seed: int,
               process_index: int = 0, process_count: int = 1, augment: Callable | None = None):
    self.source, self.batch_size, self.seed = source, global_batch_size, seed
    self.lengths = tuple(int(x) for x in lengths)
    self.process_index, self.process_count, self.augment = process_index, process_count, augment
    self.example_lengths = example_lengths(source)
    self.bucket_of = np.searchsorted(np.asarray(self.lengths), self.example_lengths)
    self.bucket_of = np.minimum(self.bucket_of, len(self.lengths) - 1)  # over-long: the last bucket
    self.batches_per_epoch = -(-len(source) // global_batch_size)
    self._plans: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    self._lock = threading.Lock()

  def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`epoch_plan` for ``epoch``, cached for the last few epochs (read threads share it)."""
    with self._lock:
      if epoch not in self._plans:
        if len(self._plans) >= 3:
          self._plans.pop(min(self._plans))
        self._plans[epoch] = epoch_plan(self.bucket_of, self.batch_size, self.seed, epoch)
      return self._plans[epoch]

  def global_batch(self, k: int) -> tuple[np.ndarray, int]:
    """(example indices with -1 for filler, padded length) of global batch ``k``."""
    epoch, j = divmod(int(k), self.batches_per_epoch)
    ids, buckets = self.plan(epoch)
    return ids[j], self.lengths[buckets[j]]

  def __call__(self, k: int) -> dict[str, np.ndarray]:
    ids, length = self.global_batch(k)
    rows = []
    for pos in range(self.process_index, self.batch_size, self.process_count):
      i = int(ids[pos])
      rec = dict(self.source[max(i, 0)])
      if self.augment is not None:
        rec = self.augment(rec, np.random.default_rng([self.seed, int(k), pos]))
      rec = crop(rec, length)
      rec['valid'] = np.asarray(i >= 0)
      rows.append(rec)
    return {key: np.stack([r[key] for r in rows]) for key in rows[0]}

  def __getstate__(self):  # the lock and the plan cache stay behind
    return {k: v for k, v in self.__dict__.items() if k not in ('_lock', '_plans')}

  def __setstate__(self, state):
    self.__dict__.update(state, _plans={}, _lock=threading.Lock())


def crop(record, length: int) -> dict:
  """The per-token arrays of ``record`` cut to ``length`` (right padding only is dropped)."""
  return {k: (v[:length] if k in SEQUENCE_KEYS and np.ndim(v) >= 1 else v) for k, v in record.items()}


def shape_variants(batch: dict[str, np.ndarray], lengths: Sequence[int]) -> list[dict[str, np.ndarray]]:
  """``batch`` (any bucket's) with its per-token arrays at each bucket length: one per train-step shape."""
  out = []
  for length in lengths:
    def fit(k, v):
      if k not in SEQUENCE_KEYS or v.ndim < 2:
        return v
      shape = v.shape[:1] + (length,) + v.shape[2:]
      return np.zeros(shape, v.dtype)
    out.append({k: fit(k, v) for k, v in batch.items()})
  return out


def padding_fraction(batches) -> float:
  """Padding tokens / all token slots over ``batches`` (filler rows count as padding)."""
  real = total = 0
  for b in batches:
    mask = np.asarray(b['mask'], bool)
    if 'valid' in b:
      mask = mask & np.asarray(b['valid'], bool)[:, None]
    real += int(mask.sum())
    total += mask.size
  return 1.0 - real / max(total, 1)
