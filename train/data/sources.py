"""Dataset name -> loader. A loader takes ``config.data`` and returns :class:`Splits`.

Names with local files read ``data.dir`` when it is set and TFDS
(``tfds.data_source``, ``data.tfds_data_dir``) when it is not; a name not listed
here goes to TFDS as is (``data.name=lm1b``, ``data.name=cifar10:3.0.2``).
"""
from __future__ import annotations

from typing import Callable

from train.data import (cifar, digits, glue, listops, mnist, synthetic, text, tfds_source, views)
from train.data.base import Splits


def _local_or_tfds(local: Callable[..., Splits]) -> Callable[..., Splits]:
  def load(data_cfg) -> Splits:
    return local(data_cfg) if data_cfg.dir else tfds_source.load(data_cfg)
  load.__doc__ = f'{local.__module__}.load when data.dir is set, else TFDS.'
  return load


LOADERS: dict[str, Callable[..., Splits]] = {
    # Offline: generated or bundled with a dependency.
    'digits': digits.load,
    'two_moons': synthetic.load_two_moons,
    'synthetic_classification': synthetic.load_classification,
    'synthetic_lm': synthetic.load_lm,
    # Local files in their original formats (data.dir), or TFDS.
    'mnist': _local_or_tfds(mnist.load),
    'fashion_mnist': _local_or_tfds(mnist.load),
    'cifar10': _local_or_tfds(cifar.load),
    'cifar100': _local_or_tfds(cifar.load),
    'tiny_shakespeare': _local_or_tfds(text.load),
    'sst2': _local_or_tfds(glue.load),
    'glue/sst2': _local_or_tfds(glue.load),
    # Local files only (no TFDS version).
    'listops': listops.load,
    # TFDS only.
    'imdb_reviews': tfds_source.load,
    'lm1b': tfds_source.load,
}


def load_splits(data_cfg) -> Splits:
  """Loads the train and eval sources named by ``data_cfg.name``.

  ``data.train_limit``/``data.eval_limit`` > 0 keep the first N examples.
  """
  name = data_cfg.name
  loader = LOADERS.get(name)
  if loader is None:
    if data_cfg.dir:
      raise ValueError(f'unknown dataset name {name!r} for local files (data.dir); '
                       f'known: {", ".join(sorted(LOADERS))}')
    loader = _tfds_or_unknown
  splits = loader(data_cfg)
  # Loaders cut to the limits themselves (before building vocabularies); this
  # covers any that do not and is a no-op for the rest.
  splits.train = views.limit(splits.train, data_cfg.train_limit)
  splits.eval = views.limit(splits.eval, data_cfg.eval_limit)
  return splits


def _tfds_or_unknown(data_cfg) -> Splits:
  from tensorflow_datasets.core import registered

  try:
    return tfds_source.load(data_cfg)
  except registered.DatasetNotFoundError:
    raise ValueError(f'unknown dataset name {data_cfg.name!r}: not one of '
                     f'{", ".join(sorted(LOADERS))} nor a TFDS dataset') from None
