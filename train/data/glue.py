"""SST-2 (GLUE) sentence classification from the GLUE TSVs: ``train.tsv``, ``dev.tsv``.

Each file has the header ``sentence<TAB>label`` and labels 0 (negative) or 1
(positive). GLUE's ``test.tsv`` has no labels, so it is not a split here.
"""
from __future__ import annotations

import functools
import pathlib

from train.data import files, sequences
from train.data.base import Splits

HEADER = ('sentence', 'label')
LABEL_NAMES = ['negative', 'positive']
SPLIT_FILES = {'train': 'train.tsv', 'dev': 'dev.tsv', 'validation': 'dev.tsv'}


def read_split(root: pathlib.Path, split: str):
  """Raw records ``{'text', 'label'}`` of one split's TSV."""
  path = files.find(root, SPLIT_FILES[split])
  rows = files.read_tsv(path, HEADER)
  labels = files.parse_labels(path, [r[1] for r in rows], len(LABEL_NAMES), first_line=2)
  return sequences.text_records([r[0] for r in rows], labels)


def load(data_cfg) -> Splits:
  """SST-2 in ``data.dir``; splits 'train' (67,349) and 'dev' or 'validation' (872)."""
  root = files.data_dir(data_cfg)
  if root.is_file():
    raise ValueError(f'sst2: data.dir must be the folder holding train.tsv and dev.tsv, not {root}')
  return sequences.classification_splits(
      data_cfg, SPLIT_FILES, functools.partial(read_split, root), len(LABEL_NAMES),
      extra={'label_names': LABEL_NAMES, 'source': str(root)})
