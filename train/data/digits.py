"""scikit-learn's bundled handwritten digits (UCI optdigits test set, 1,797 8x8 images).

The offline default: it ships inside the scikit-learn wheel, so the main job runs
on a fresh machine with no download. The split is a fixed, stratified 80/20
(seed 0) so every run and every machine evaluates on the same held-out images.
"""
from __future__ import annotations

import numpy as np

from train.data.base import ArraySource, DatasetInfo, Splits

TEST_FRACTION = 0.2


def load(cfg) -> Splits:
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  digits = load_digits()
  # Pixel values are 0..16; scale to [0, 1] then standardise with train statistics.
  images = (digits.images.astype(np.float32) / 16.0)[..., None]
  labels = digits.target.astype(np.int32)
  x_train, x_test, y_train, y_test = train_test_split(
      images, labels, test_size=TEST_FRACTION, random_state=0, stratify=labels)
  mean, std = x_train.mean(), x_train.std()
  splits = {'train': (x_train, y_train), 'test': (x_test, y_test)}

  def source(split: str) -> ArraySource:
    if split not in splits:
      raise ValueError(f'digits has splits {sorted(splits)}, not {split!r}')
    x, y = splits[split]
    return ArraySource({'inputs': (x - mean) / std, 'label': y})

  return Splits(train=source(cfg.train_split), eval=source(cfg.eval_split),
                info=DatasetInfo(num_classes=10, input_shape=(8, 8, 1)))
