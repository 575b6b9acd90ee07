"""Finding and reading local dataset files, failing with one-line :class:`DataError` messages."""
from __future__ import annotations

import pathlib

from train.data.base import DataError


def data_dir(data_cfg) -> pathlib.Path:
  """``data.dir`` as a path; a loader of local files calls this first."""
  if not data_cfg.dir:
    raise ValueError(f'dataset {data_cfg.name!r} reads local files: set data.dir=PATH')
  path = pathlib.Path(data_cfg.dir).expanduser()
  if not path.exists():
    raise DataError(f'{path}: data.dir does not exist')
  return path


def find(root: pathlib.Path, *names: str) -> pathlib.Path:
  """The first of ``names`` under ``root`` (or ``root`` itself when it is a file)."""
  if root.is_file():
    return root
  for name in names:
    if (root / name).is_file():
      return root / name
  raise DataError(f'{root / names[0]}: file not found')


def read_text(path: pathlib.Path) -> str:
  """A UTF-8 text file's contents."""
  try:
    return path.read_text(encoding='utf-8')
  except UnicodeDecodeError as e:
    raise DataError(f'{path}: not UTF-8 text ({e.reason} at byte {e.start})') from None
  except OSError as e:
    raise DataError(f'{path}: cannot read ({e.strerror})') from None


def read_tsv(path: pathlib.Path, header: tuple[str, ...] | None) -> list[list[str]]:
  """Rows of a tab-separated file, checking the header and the column count.

  Quotes are not special (GLUE's TSVs hold raw sentences with ``"`` in them).
  """
  lines = read_text(path).splitlines()
  width = len(header) if header else None
  if header:
    if not lines or tuple(lines[0].split('\t')) != header:
      got = lines[0][:60] if lines else 'an empty file'
      raise DataError(f'{path}: expected header {chr(9).join(header)!r}, got {got!r}')
    lines = lines[1:]
  rows = []
  for number, line in enumerate(lines, 2 if header else 1):
    if not line:
      continue
    row = line.split('\t')
    width = width or len(row)
    if len(row) != width:
      raise DataError(f'{path}: line {number} has {len(row)} columns, expected {width}')
    rows.append(row)
  if not rows:
    raise DataError(f'{path}: no rows')
  return rows


def parse_labels(path: pathlib.Path, values, num_classes: int, first_line: int = 1):
  """Integer labels in ``[0, num_classes)`` as an int32 array."""
  import numpy as np

  labels = np.empty(len(values), np.int32)
  for i, value in enumerate(values):
    try:
      labels[i] = int(value)
    except ValueError:
      raise DataError(f'{path}: line {first_line + i}: label {value!r} is not an integer') from None
    if not 0 <= labels[i] < num_classes:
      raise DataError(f'{path}: line {first_line + i}: label {value} out of range [0, {num_classes})')
  return labels
