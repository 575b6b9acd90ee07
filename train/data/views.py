"""Lazy views over sources: slices, concatenations and per-record maps.

They copy nothing, so selecting ``train[:90%]`` of a big source is free. Each is
a plain top-level class holding picklable parts, so grain can ship a source to
worker processes.
"""
from __future__ import annotations

import bisect
from typing import Callable, Mapping, Sequence

import numpy as np

from train.data.base import Source


def _check_index(index, length: int) -> int:
  index = int(index)
  if index < 0:
    index += length
  if not 0 <= index < length:
    raise IndexError(f'index {index} out of range for a source of {length} examples')
  return index


class SliceSource:
  """Examples ``start, ..., stop - 1`` of ``source``."""

  def __init__(self, source: Source, start: int, stop: int):
    if not 0 <= start <= stop <= len(source):
      raise ValueError(f'slice [{start}:{stop}] out of range for {len(source)} examples')
    self.source, self.start, self.stop = source, start, stop

  def __len__(self) -> int:
    return self.stop - self.start

  def __getitem__(self, index):
    return self.source[self.start + _check_index(index, len(self))]

  def __repr__(self) -> str:
    return f'{self.source!r}[{self.start}:{self.stop}]'


class ConcatSource:
  """The examples of several sources, one after another (``train+validation``)."""

  def __init__(self, sources: Sequence[Source]):
    self.sources = list(sources)
    self.ends = list(np.cumsum([len(s) for s in self.sources], dtype=np.int64))

  def __len__(self) -> int:
    return int(self.ends[-1]) if self.ends else 0

  def __getitem__(self, index):
    index = _check_index(index, len(self))
    part = bisect.bisect_right(self.ends, index)
    offset = int(self.ends[part - 1]) if part else 0
    return self.sources[part][index - offset]

  def __repr__(self) -> str:
    return ' + '.join(repr(s) for s in self.sources)


class MapSource:
  """``fn(source[i])``: per-record preprocessing done at read time."""

  def __init__(self, source: Source, fn: Callable[[Mapping[str, np.ndarray]], dict]):
    self.source, self.fn = source, fn

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index):
    return self.fn(self.source[index])

  def __repr__(self) -> str:
    name = getattr(self.fn, '__name__', type(self.fn).__name__)
    return f'MapSource({self.source!r}, {name})'


def limit(source: Source, n: int) -> Source:
  """The first ``n`` examples when ``n > 0`` (smoke runs); otherwise ``source`` itself."""
  if n and 0 < n < len(source):
    return SliceSource(source, 0, n)
  return source
