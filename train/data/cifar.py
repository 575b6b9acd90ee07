"""CIFAR-10/100 from the "python version" batches (``data.dir`` holding them, or their archive folder).

CIFAR-10: ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``; CIFAR-100: ``train``
and ``test`` (fine labels). Each file is a pickled dict with ``data``, a
``[N, 3072]`` uint8 array (1024 red, then green, then blue values, row-major),
and the labels as a list of ints.
"""
from __future__ import annotations

import functools
import pathlib
import pickle

import numpy as np

from train.data import files, images, splits
from train.data.base import DataError, DatasetInfo, Splits

LAYOUT = {
    # name: (archive folder, {split: files}, label key, classes, meta file, names key)
    'cifar10': ('cifar-10-batches-py',
                {'train': [f'data_batch_{i}' for i in range(1, 6)], 'test': ['test_batch']},
                'labels', 10, 'batches.meta', 'label_names'),
    'cifar100': ('cifar-100-python', {'train': ['train'], 'test': ['test']},
                 'fine_labels', 100, 'meta', 'fine_label_names'),
}


def _allowed_globals() -> dict:
  import codecs
  try:
    from numpy._core import multiarray  # numpy >= 2; the old path works but warns
  except ImportError:
    from numpy.core import multiarray
  return {
      ('numpy.core.multiarray', '_reconstruct'): multiarray._reconstruct,
      ('numpy._core.multiarray', '_reconstruct'): multiarray._reconstruct,
      ('numpy', 'ndarray'): np.ndarray,
      ('numpy', 'dtype'): np.dtype,
      # Python 3 writes bytes at pickle protocol <= 2 as _codecs.encode(str, 'latin1').
      ('_codecs', 'encode'): codecs.encode,
  }


class _SafeUnpickler(pickle.Unpickler):
  """Unpickles only plain containers and numpy arrays: no other code can run.

  Pickle calls whatever callable a file names, so ``find_class`` refuses every
  global except the few that rebuild a CIFAR batch's ``data`` array (an
  ndarray, not just bytes and lists); the array's dtype is checked after loading.
  """

  def find_class(self, module, name):
    allowed = _allowed_globals()
    if (module, name) not in allowed:
      raise pickle.UnpicklingError(f'refusing to load global {module}.{name}')
    return allowed[(module, name)]


def read_batch(path: pathlib.Path) -> dict:
  """One batch file as a dict with ``str`` keys."""
  try:
    with open(path, 'rb') as f:
      # 'bytes': these pickles were written by Python 2, whose str holds the raw pixels.
      batch = _SafeUnpickler(f, encoding='bytes').load()
  except OSError as e:
    raise DataError(f'{path}: cannot read ({e.strerror or e})') from None
  except Exception as e:  # any unpickling failure means a bad or foreign file
    raise DataError(f'{path}: not a CIFAR python batch ({type(e).__name__}: {e})') from None
  if not isinstance(batch, dict):
    raise DataError(f'{path}: holds a {type(batch).__name__}, expected a dict')
  return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def read_split(root: pathlib.Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images ``[N, 32, 32, 3]`` uint8, labels ``[N]`` int32) from a split's batch files."""
  _, split_files, label_key, num_classes, _, _ = LAYOUT[name]
  xs, ys = [], []
  for file_name in split_files[split]:
    path = files.find(root, file_name)
    batch = read_batch(path)
    data, labels = batch.get('data'), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
        or data.shape[1] != 3072:
      got = f'{data.dtype} {data.shape}' if isinstance(data, np.ndarray) else type(data).__name__
      raise DataError(f'{path}: "data" must be a uint8 [N, 3072] array, got {got}')
    if labels is None or len(labels) != len(data):
      raise DataError(f'{path}: "{label_key}" missing or not one per image')
    labels = np.asarray(labels)
    if labels.dtype.kind not in 'iu' or labels.min() < 0 or labels.max() >= num_classes:
      raise DataError(f'{path}: "{label_key}" must be integers in [0, {num_classes})')
    xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    ys.append(labels.astype(np.int32))
  return np.concatenate(xs), np.concatenate(ys)


def label_names(root: pathlib.Path, name: str) -> list[str] | None:
  """Class names from the meta file, when it is there."""
  _, _, _, _, meta_file, key = LAYOUT[name]
  if not (root / meta_file).is_file():
    return None
  names = read_batch(root / meta_file).get(key)
  return [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names else None


def load(data_cfg) -> Splits:
  """``cifar10`` or ``cifar100`` batches in ``data.dir``; splits 'train' (50,000) and 'test' (10,000)."""
  name = data_cfg.name
  folder, split_files, _, num_classes, _, _ = LAYOUT[name]
  root = files.data_dir(data_cfg)
  if (root / folder).is_dir():
    root = root / folder
  mean, std = images.normalization(name)
  resolve = functools.partial(_source, root, name, mean, std)
  train, eval_ = splits.select_train_eval(data_cfg, split_files, resolve)
  extra = {'mean': mean, 'std': std, 'source': str(root)}
  names = label_names(root, name)
  if names:
    extra['label_names'] = names
  info = DatasetInfo(num_classes=num_classes, input_shape=(32, 32, 3), extra=extra)
  return Splits(train=train, eval=eval_, info=info)


def _source(root, name, mean, std, split):
  return images.image_source(*read_split(root, name, split), mean, std)
