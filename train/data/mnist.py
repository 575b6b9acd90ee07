"""MNIST and Fashion-MNIST from the original IDX files (``data.dir`` holding the four ``*-ubyte.gz``).

IDX is a big-endian header (magic, then one uint32 size per dimension) followed
by the raw uint8 array. Images have magic 2051 (3 dims), labels 2049 (1 dim).
Fashion-MNIST uses the same file names and format.
"""
from __future__ import annotations

import gzip
import pathlib
import zlib

import numpy as np

from train.data import files, images, splits
from train.data.base import DataError, DatasetInfo, Splits

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}


def read_idx(path: pathlib.Path, magic: int) -> np.ndarray:
  """A uint8 IDX array from a ``.gz`` or an uncompressed file, checking magic and size."""
  try:
    with (gzip.open(path) if path.suffix == '.gz' else open(path, 'rb')) as f:
      data = f.read()
  except (EOFError, gzip.BadGzipFile, zlib.error) as e:
    raise DataError(f'{path}: truncated or not gzip ({e})') from None
  except OSError as e:
    raise DataError(f'{path}: cannot read ({e.strerror or e})') from None
  ndim = {IMAGES_MAGIC: 3, LABELS_MAGIC: 1}[magic]
  header = 4 * (1 + ndim)
  if len(data) < header:
    raise DataError(f'{path}: {len(data)} bytes, shorter than the IDX header')
  found = int.from_bytes(data[:4], 'big')
  if found != magic:
    raise DataError(f'{path}: magic number {found}, expected {magic}')
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
  if len(data) != header + int(np.prod(shape)):
    raise DataError(f'{path}: {len(data) - header} data bytes, header says {shape} '
                    f'({int(np.prod(shape))} bytes)')
  return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_split(root: pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images ``[N, 28, 28, 1]`` uint8, labels ``[N]`` int32) of 'train' or 'test'."""
  image_name, label_name = FILES[split]
  image_path = files.find(root, image_name + '.gz', image_name)
  label_path = files.find(root, label_name + '.gz', label_name)
  x = read_idx(image_path, IMAGES_MAGIC)
  y = read_idx(label_path, LABELS_MAGIC)
  if len(x) != len(y):
    raise DataError(f'{label_path}: {len(y)} labels for {len(x)} images in {image_path.name}')
  if y.size and y.max() > 9:
    raise DataError(f'{label_path}: label {int(y.max())} out of range [0, 10)')
  return x[..., None], y.astype(np.int32)


def load(data_cfg) -> Splits:
  """MNIST-format IDX files in ``data.dir``; splits 'train' (60,000) and 'test' (10,000)."""
  root = files.data_dir(data_cfg)
  mean, std = images.normalization(data_cfg.name)

  def resolve(split: str):
    return images.image_source(*read_split(root, split), mean, std)

  train, eval_ = splits.select_train_eval(data_cfg, FILES, resolve)
  info = DatasetInfo(num_classes=10, input_shape=(28, 28, 1),
                     extra={'mean': mean, 'std': std, 'source': str(root)})
  return Splits(train=train, eval=eval_, info=info)
