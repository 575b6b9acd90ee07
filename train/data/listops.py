"""ListOps (Nangia & Bowman 2018): the value (0-9) of a nested MIN/MAX/MED/SM expression.

Reads one TSV, ``data.dir`` or ``data.dir/test_d20s.tsv``: either the original
release (``<label><TAB><expression>``, no header) or the Long Range Arena form
(header ``Source<TAB>Target``). Only the 10,000-row test file is public without
GCS, so its rows are split deterministically in file order: 'train' the first
80%, 'validation' the next 10%, 'test' the last 10% (8,000/1,000/1,000).

Expressions are whitespace-separated tokens from a fixed vocabulary. They are
long (up to 2,815 tokens with brackets; median 46), so set ``data.seq_len``
to 2048 or accept truncation.
"""
from __future__ import annotations

import pathlib

from train.data import files, sequences, tokenize
from train.data.base import DataError, Splits

FILE_NAMES = ('test_d20s.tsv', 'listops.tsv', 'basic_test.tsv')
NUM_CLASSES = 10
OPERATORS = ['[MIN', '[MAX', '[MED', '[SM']
VOCAB = [tokenize.PAD, tokenize.UNK, *OPERATORS, ']', '(', ')', *map(str, range(10))]
SPLIT_FRACTIONS = {'train': (0.0, 0.8), 'validation': (0.8, 0.9), 'test': (0.9, 1.0)}


def read_file(path: pathlib.Path):
  """(expressions, labels) of a whole ListOps TSV in either layout."""
  lines = files.read_text(path).splitlines()
  if lines and lines[0].split('\t') == ['Source', 'Target']:
    rows = files.read_tsv(path, ('Source', 'Target'))
    texts, values, first = [r[0] for r in rows], [r[1] for r in rows], 2
  else:
    rows = files.read_tsv(path, None)
    if len(rows[0]) != 2:
      raise DataError(f'{path}: expected 2 columns (label, expression), got {len(rows[0])}')
    texts, values, first = [r[1] for r in rows], [r[0] for r in rows], 1
  labels = files.parse_labels(path, values, NUM_CLASSES, first_line=first)
  known = set(VOCAB)
  for i, text in enumerate(texts):
    unknown = set(text.split()) - known
    if unknown:
      raise DataError(f'{path}: line {first + i}: unknown tokens {sorted(unknown)[:3]}')
  return texts, labels


def load(data_cfg) -> Splits:
  """ListOps records ``{'inputs', 'mask', 'label'}``; 'train', 'validation' (or 'dev'), 'test'."""
  path = files.find(files.data_dir(data_cfg), *FILE_NAMES)
  texts, labels = read_file(path)

  def resolve(split: str):
    lo, hi = (round(f * len(texts)) for f in SPLIT_FRACTIONS[split])
    return sequences.text_records(texts[lo:hi], labels[lo:hi])

  names = {**SPLIT_FRACTIONS, 'dev': SPLIT_FRACTIONS['validation']}
  return sequences.classification_splits(
      data_cfg, names, lambda split: resolve('validation' if split == 'dev' else split),
      NUM_CLASSES, encoder=tokenize.Vocab(VOCAB, 'space'), extra={'tokenizer': 'listops', 'source': str(path)})
