"""SST-2 (GLUE) sentence classification from the GLUE TSVs: ``train.tsv``, ``dev.tsv``.

Each file has the header ``sentence<TAB>label`` and labels 0 (negative) or 1
(positive). GLUE's ``test.tsv`` has no labels, so it is not a split here.

For choices made before dev is read, ``train_heldout`` is 20% of the train
*sentences* (seeded) and ``train_fit`` is train without them and without every
phrase inside them (:mod:`train.data.sentence_holdout` says why a slice of train
rows would mislead).
"""
from __future__ import annotations

import functools
import pathlib

import numpy as np

from train.data import files, sentence_holdout, sequences
from train.data.base import Splits

HEADER = ('sentence', 'label')
LABEL_NAMES = ['negative', 'positive']
SPLIT_FILES = {'train': 'train.tsv', 'dev': 'dev.tsv', 'validation': 'dev.tsv'}
HOLDOUT_SPLITS = ('train_fit', 'train_heldout')
HOLDOUT_FRACTION, HOLDOUT_SEED = 0.2, 0


def read_split(root: pathlib.Path, split: str):
  """Raw records ``{'text', 'label'}`` of one split's TSV (or of a sentence hold-out part)."""
  if split in HOLDOUT_SPLITS:
    train = read_split(root, 'train')
    parts = _holdout_parts(tuple(str(t) for t in train.columns['text']))
    rows = parts[HOLDOUT_SPLITS.index(split)]
    return sequences.text_records(list(train.columns['text'][rows]), train.columns['label'][rows])
  path = files.find(root, SPLIT_FILES[split])
  rows = files.read_tsv(path, HEADER)
  labels = files.parse_labels(path, [r[1] for r in rows], len(LABEL_NAMES), first_line=2)
  return sequences.text_records([r[0] for r in rows], labels)


@functools.lru_cache(maxsize=1)
def _holdout_parts(texts: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
  """Computed once for both parts (a few seconds on SST-2's 67,349 rows)."""
  return sentence_holdout.split(texts, HOLDOUT_FRACTION, HOLDOUT_SEED)


def load(data_cfg) -> Splits:
  """SST-2 in ``data.dir``; splits 'train' (67,349), 'dev' or 'validation' (872), and the
  sentence hold-out 'train_fit' (52,382) / 'train_heldout' (1,377 sentences)."""
  root = files.data_dir(data_cfg)
  if root.is_file():
    raise ValueError(f'sst2: data.dir must be the folder holding train.tsv and dev.tsv, not {root}')
  return sequences.classification_splits(
      data_cfg, (*SPLIT_FILES, *HOLDOUT_SPLITS), functools.partial(read_split, root),
      len(LABEL_NAMES),
      extra={'label_names': LABEL_NAMES, 'source': str(root)})
