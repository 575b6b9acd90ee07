"""Image normalisation shared by the local and the TFDS image loaders.

Images stay ``uint8`` in memory (60,000 MNIST images are 47 MB, not 188 MB of
float32) and are scaled to ``[0, 1]`` then standardised when a record is read.
"""
from __future__ import annotations

import numpy as np

from train.data.base import ArraySource
from train.data.views import MapSource

# Per-channel mean and std of the training images after /255.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    'mnist': ((0.1307,), (0.3081,)),
    'fashion_mnist': ((0.2860,), (0.3530,)),
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    'cifar100': ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


class NormalizeImage:
  """``record['image' or 'inputs']`` uint8 -> standardised float32 ``inputs``; ``label`` -> int32."""

  def __init__(self, mean=(0.0,), std=(1.0,)):
    self.mean = np.asarray(mean, np.float32)
    self.std = np.asarray(std, np.float32)

  def __call__(self, record) -> dict[str, np.ndarray]:
    image = record['image'] if 'image' in record else record['inputs']
    image = np.asarray(image, np.float32) / 255.0
    if image.ndim == 2:
      image = image[..., None]
    return {'inputs': (image - self.mean) / self.std,
            'label': np.asarray(record['label'], np.int32)}


def image_source(images: np.ndarray, labels: np.ndarray, mean, std) -> MapSource:
  """uint8 images ``[N, H, W, C]`` and labels, normalised as each record is read."""
  return MapSource(ArraySource({'image': images, 'label': labels}), NormalizeImage(mean, std))


def normalization(name: str):
  """(mean, std) for a dataset name; unknown images are only scaled to [0, 1]."""
  return NORMALIZATION.get(name.split('/')[0].split(':')[0], ((0.0,), (1.0,)))
