"""Random training-time augmentations, one record at a time.

Each takes ``(record, rng: np.random.Generator)`` and returns a new record, the
signature of grain's ``RandomMapTransform.random_map``, so the pipeline draws
``rng`` from its seed and an epoch is reproducible.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def random_crop_flip(record, rng: np.random.Generator, padding: int = 4) -> dict:
  """Pads ``inputs [H, W, C]`` by ``padding`` pixels, crops back to ``H x W`` at random, flips half.

  The images are already standardised, so the zero padding is the mean colour.
  """
  image = record['inputs']
  h, w = image.shape[:2]
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  top, left = rng.integers(0, 2 * padding + 1, size=2)
  image = padded[top:top + h, left:left + w]
  if rng.random() < 0.5:
    image = image[:, ::-1]
  return {**record, 'inputs': np.ascontiguousarray(image)}


AUGMENTATIONS: dict[str, Callable[[dict, np.random.Generator], dict]] = {
    'cifar': random_crop_flip,
}


def get(name: str):
  """The augmentation ``data.augment`` names, or None for 'none'."""
  if name in (None, '', 'none'):
    return None
  if name not in AUGMENTATIONS:
    raise ValueError(f'unknown augmentation {name!r}; known: none, {", ".join(AUGMENTATIONS)}')
  return AUGMENTATIONS[name]
