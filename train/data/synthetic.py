"""Tiny generated tasks for smoke tests: no files, no download, fixed seeds.

- ``two_moons``: scikit-learn's two interleaved half circles, 2 float features,
  binary label (the seed FNN example); 2,000 train / 500 test.
- ``synthetic_classification``: 4 Gaussian clusters in 16 dimensions; 2,000 / 500.
- ``synthetic_lm``: sequences from a fixed random Markov chain over 32 tokens
  where each token has two likely successors, so a model can get well below the
  uniform loss (log 32) but not to zero; 4,096 / 512 sequences of ``seq_len``.

Each accepts the split strings 'train' and 'test' (also 'validation'), with slicing.
"""
from __future__ import annotations

import numpy as np

from train.data import splits
from train.data.base import ArraySource, DatasetInfo, Splits

SEED = 0
SIZES = {'train': 2000, 'test': 500}
NAMES = ('train', 'test', 'validation')


def _splits(data_cfg, make, info: DatasetInfo, sizes=SIZES) -> Splits:
  """``make(split, n, seed)`` -> columns; 'validation' is another name for 'test'."""
  seeds = {'train': SEED, 'test': SEED + 1}

  def resolve(split: str) -> ArraySource:
    split = 'test' if split == 'validation' else split
    return ArraySource(make(sizes[split], seeds[split]))

  train, eval_ = splits.select_train_eval(data_cfg, NAMES, resolve)
  return Splits(train=train, eval=eval_, info=info)


def _moons(n: int, seed: int) -> dict[str, np.ndarray]:
  from sklearn.datasets import make_moons

  x, y = make_moons(n_samples=n, noise=0.2, random_state=seed)
  return {'inputs': x.astype(np.float32), 'label': y.astype(np.int32)}


def load_two_moons(data_cfg) -> Splits:
  """Two moons: ``{'inputs': float32[2], 'label': int32 in {0, 1}}``."""
  return _splits(data_cfg, _moons, DatasetInfo(num_classes=2, input_shape=(2,)))


CLUSTERS, FEATURES = 4, 16


def _clusters(n: int, seed: int) -> dict[str, np.ndarray]:
  centres = np.random.default_rng(SEED).normal(0.0, 1.0, (CLUSTERS, FEATURES))  # shared by splits
  rng = np.random.default_rng(seed + 100)
  labels = rng.integers(0, CLUSTERS, n)
  x = centres[labels] + rng.normal(0.0, 1.0, (n, FEATURES))
  return {'inputs': x.astype(np.float32), 'label': labels.astype(np.int32)}


def load_classification(data_cfg) -> Splits:
  """Gaussian clusters: ``{'inputs': float32[16], 'label': int32 in [0, 4)}``."""
  return _splits(data_cfg, _clusters, DatasetInfo(num_classes=CLUSTERS, input_shape=(FEATURES,)))


LM_VOCAB, LM_SIZES = 32, {'train': 4096, 'test': 512}


def markov_sequences(n: int, length: int, seed: int) -> np.ndarray:
  """``[n, length]`` int32 ids; each next id is one of two fixed successors (80/20), rarely random."""
  table = np.random.default_rng(SEED).integers(0, LM_VOCAB, (LM_VOCAB, 2))  # shared by splits
  rng = np.random.default_rng(seed + 200)
  ids = np.empty((n, length), np.int32)
  ids[:, 0] = rng.integers(0, LM_VOCAB, n)
  for t in range(1, length):
    pick = (rng.random(n) < 0.2).astype(np.int64)
    nxt = table[ids[:, t - 1], pick]
    noise = rng.random(n) < 0.05
    ids[:, t] = np.where(noise, rng.integers(0, LM_VOCAB, n), nxt)
  return ids


def load_lm(data_cfg) -> Splits:
  """A Markov chain: ``{'inputs': int32[T], 'targets': int32[T]}`` with ``T = data.seq_len``."""
  seq_len = data_cfg.seq_len

  def make(n, seed):
    ids = markov_sequences(n, seq_len + 1, seed)
    return {'inputs': ids[:, :-1], 'targets': ids[:, 1:]}

  info = DatasetInfo(vocab_size=LM_VOCAB, input_shape=(seq_len,), input_dtype='int32',
                     extra={'tokenizer': 'synthetic'})
  return _splits(data_cfg, make, info, LM_SIZES)
