"""Split strings such as ``train[:90%]``, ``train[90%:]``, ``train[:1000]`` or ``train+dev``.

The grammar is TFDS's own: :class:`tfds.core.ReadInstruction` parses it and turns
it into absolute ranges without TensorFlow, so a local source slices exactly as
``tfds.data_source`` would. Percent bounds round to the closest example.
"""
from __future__ import annotations

import collections.abc
import types
from typing import Callable

from train.data import views
from train.data.base import Source


class _SplitSizes(collections.abc.Mapping):
  """``{split name: SplitInfo-like}``, loading a split only when TFDS asks for it."""

  def __init__(self, names, resolve: Callable[[str], Source]):
    self.names, self.resolve, self.sources = names, resolve, {}

  def source(self, name: str) -> Source:
    if name not in self.sources:
      self.sources[name] = self.resolve(name)
    return self.sources[name]

  def __getitem__(self, name):
    if name not in self.names:
      raise KeyError(name)
    n = len(self.source(name))
    return types.SimpleNamespace(num_examples=n, shard_lengths=[n])

  def __iter__(self):
    return iter(self.names)

  def __len__(self) -> int:
    return len(self.names)


def select(spec: str, names, resolve: Callable[[str], Source]) -> Source:
  """The source that ``spec`` names.

  Args:
    spec: a TFDS split string, e.g. ``'train[:90%]'`` or ``'dev'``.
    names: the split names (and aliases) this dataset knows.
    resolve: split name -> the whole split's source.
  """
  from tensorflow_datasets.core import splits as tfds_splits  # no TensorFlow needed

  sizes = _SplitSizes(names, resolve)
  instruction = tfds_splits.ReadInstruction.from_spec(str(spec))
  parts = []
  for part in instruction.to_absolute(sizes):
    source = sizes.source(part.splitname)
    start = part.from_ or 0
    stop = len(source) if part.to is None else part.to
    parts.append(source if (start, stop) == (0, len(source)) else
                 views.SliceSource(source, start, stop))
  return parts[0] if len(parts) == 1 else views.ConcatSource(parts)


def select_train_eval(data_cfg, names, resolve: Callable[[str], Source],
                      train_split: str | None = None,
                      eval_split: str | None = None) -> tuple[Source, Source]:
  """``data.train_split`` and ``data.eval_split`` (or the given overrides), cut to the limits.

  ``data.train_limit``/``data.eval_limit`` > 0 keep the first N examples.
  ``resolve`` is called at most once per split name, so a split both strings use
  (``train[:90%]`` and ``train[90%:]``) is read once.
  """
  cache: dict[str, Source] = {}

  def cached(name: str) -> Source:
    if name not in cache:
      cache[name] = resolve(name)
    return cache[name]

  train = select(train_split or data_cfg.train_split, names, cached)
  eval_ = select(eval_split or data_cfg.eval_split, names, cached)
  return (views.limit(train, data_cfg.train_limit), views.limit(eval_, data_cfg.eval_limit))
