"""The contract between data sources and the rest of train/.

A *source* is anything with ``__len__`` and ``__getitem__(i) -> dict`` of numpy
arrays for one example (grain's ``RandomAccessDataSource`` protocol). Records use
one vocabulary of keys so tasks never care where data came from:

- ``inputs``: image ``[H, W, C]`` float32, features ``[F]`` float32 or tokens ``[T]`` int32
- ``label``: int32 scalar (classification / binary)
- ``targets``: ``[T]`` int32 (language modelling, MLM)
- ``mask``: ``[T]`` bool, True on real tokens (sequence inputs with padding)
- ``weights``: ``[T]`` float32, per-token loss weights (MLM, padded LM)

A loader returns :class:`Splits`: the train and eval sources plus a
:class:`DatasetInfo` that tells the model builder what it needs (classes, vocab).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Protocol

import numpy as np


class Source(Protocol):
  def __len__(self) -> int: ...
  def __getitem__(self, index: int) -> Mapping[str, np.ndarray]: ...


@dataclasses.dataclass
class DatasetInfo:
  """What a model builder and a task may need to know about a dataset."""
  num_classes: int | None = None
  vocab_size: int | None = None
  # Per-example shape of ``inputs`` (e.g. (28, 28, 1) or (128,)).
  input_shape: tuple[int, ...] = ()
  input_dtype: str = 'float32'
  pad_id: int = 0
  # Free-form extras: e.g. ``vocab`` (list of symbols) for decoding samples.
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Splits:
  train: Source
  eval: Source
  info: DatasetInfo


class ArraySource:
  """An in-memory source over columns of equal length: ``{'inputs': x, 'label': y}``."""

  def __init__(self, columns: Mapping[str, np.ndarray]):
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f'columns have different lengths: {lengths}')
    self.columns = dict(columns)
    self._len = next(iter(lengths.values()))

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in self.columns.items()}

  def __repr__(self) -> str:
    shapes = {k: (v.shape, str(v.dtype)) for k, v in self.columns.items()}
    return f'ArraySource({shapes})'


class DataError(ValueError):
  """Bad or missing data files. The message is one line naming the file and the problem."""
