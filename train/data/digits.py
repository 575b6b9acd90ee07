"""scikit-learn's bundled handwritten digits (UCI optdigits test set, 1,797 8x8 images).

The offline default: it ships inside the scikit-learn wheel, so the main job runs
on a fresh machine with no download. The split is a fixed, stratified 80/20: the
orders ``sklearn.model_selection.train_test_split(range(1797), test_size=0.2,
random_state=0, stratify=labels)`` returns, stored in ``digits_split.npz`` (tests
check they still equal it), so every run and every machine evaluates on the same
held-out images. The CSV is read straight from the wheel's data folder: importing
``sklearn.datasets`` costs ~5 s of start-up (it pulls in scipy), reading it ~10 ms.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

from train.data.base import ArraySource, DatasetInfo, DataError, Splits

SPLIT_FILE = os.path.join(os.path.dirname(__file__), 'digits_split.npz')


def csv_path() -> str:
  """``sklearn/datasets/data/digits.csv.gz`` of the installed scikit-learn (not imported)."""
  spec = importlib.util.find_spec('sklearn')
  if spec is None or not spec.submodule_search_locations:
    raise DataError('the digits set ships with scikit-learn: pip install scikit-learn')
  return os.path.join(spec.submodule_search_locations[0], 'datasets', 'data', 'digits.csv.gz')


def load_arrays() -> tuple[np.ndarray, np.ndarray]:
  """``(images [1797, 8, 8] float32 in 0..16, labels [1797] int32)``, as ``load_digits``."""
  raw = np.loadtxt(csv_path(), delimiter=',', dtype=np.float32)
  return raw[:, :-1].reshape(-1, 8, 8), raw[:, -1].astype(np.int32)


def load(cfg) -> Splits:
  images, labels = load_arrays()
  images = (images / 16.0)[..., None]  # pixel values are 0..16; scale to [0, 1]
  order = np.load(SPLIT_FILE)
  x_train, y_train = images[order['train']], labels[order['train']]
  x_test, y_test = images[order['test']], labels[order['test']]
  # Standardise with train statistics.
  mean, std = x_train.mean(), x_train.std()
  splits = {'train': (x_train, y_train), 'test': (x_test, y_test)}

  def source(split: str) -> ArraySource:
    if split not in splits:
      raise ValueError(f'digits has splits {sorted(splits)}, not {split!r}')
    x, y = splits[split]
    return ArraySource({'inputs': (x - mean) / std, 'label': y})

  return Splits(train=source(cfg.train_split), eval=source(cfg.eval_split),
                info=DatasetInfo(num_classes=10, input_shape=(8, 8, 1)))
