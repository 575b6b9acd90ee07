"""Any TFDS dataset through ``tfds.data_source``: random access, no TensorFlow at read time.

The dataset must already be prepared in ArrayRecord form under
``data.tfds_data_dir`` (preparing one needs TensorFlow and a download). Records
become ours by what the features are, with the local loaders' preprocessing:

- ``image`` + ``label``: normalised images (:mod:`images`); classification.
- one text feature + ``label`` (imdb_reviews, glue/sst2): token ids + mask;
  a word/char vocabulary comes from the selected training split.
- one text feature only: language modelling. A few datasets are one long text
  per split (``tiny_shakespeare``): windows as :mod:`text`. Others (``lm1b``)
  are many sentences, each a padded example.
"""
from __future__ import annotations

import functools

import numpy as np

from train.data import images, sequences, splits, text
from train.data.base import DatasetInfo, Splits
from train.data.views import MapSource

# Our dataset names that TFDS spells differently.
TFDS_NAMES = {'sst2': 'glue/sst2'}
# Our split names that TFDS spells differently.
SPLIT_ALIASES = {'dev': 'validation'}
# Datasets whose splits are each one long text.
CORPORA = {'tiny_shakespeare'}


def _tfds():
  import tensorflow_datasets as tfds
  # Builders outside tfds's lazily-registered datasets/ folder (glue, imdb_reviews, lm1b...)
  # register on import of their package; tfds.builder alone does not find them.
  import tensorflow_datasets.text  # noqa: F401
  return tfds


class AnySplit(list):
  """Split names for :mod:`splits`: any name passes, and TFDS itself rejects unknown ones."""

  def __contains__(self, name) -> bool:
    return True


class _Split:
  """Opens one split of a TFDS dataset."""

  def __init__(self, name: str, data_dir: str | None):
    self.name, self.data_dir = name, data_dir

  def __call__(self, split: str):
    split = SPLIT_ALIASES.get(split, split)
    return _tfds().data_source(self.name, split=split, data_dir=self.data_dir)


class TextRecord:
  """A TFDS record -> raw ``{'text': str[, 'label': int32]}``."""

  def __init__(self, text_key: str, with_label: bool):
    self.text_key, self.with_label = text_key, with_label

  def __call__(self, record):
    out = {'text': sequences.as_str(record[self.text_key])}
    if self.with_label:
      out['label'] = np.asarray(record['label'], np.int32)
    return out


def _mapped(resolve, fn, split: str):
  return MapSource(resolve(split), fn)


def load(data_cfg) -> Splits:
  """``data.name`` from TFDS (``data.tfds_data_dir``), mapped to our record keys."""
  tfds = _tfds()
  name = TFDS_NAMES.get(data_cfg.name, data_cfg.name)
  data_dir = data_cfg.tfds_data_dir
  features = tfds.builder(name, data_dir=data_dir).info.features
  resolve = _Split(name, data_dir)
  source = f'tfds:{name}'
  label = features['label'] if 'label' in features else None
  extra = {'source': source}
  if getattr(label, 'names', None):
    extra['label_names'] = list(label.names)

  if 'image' in features and label is not None:
    shape = tuple(features['image'].shape)
    if None in shape:
      raise ValueError(f'{name}: images of varying size {shape} need resizing, which is not supported')
    mean, std = images.normalization(name)
    raw = functools.partial(_mapped, resolve, images.NormalizeImage(mean, std))
    train, eval_ = splits.select_train_eval(data_cfg, AnySplit(), raw)
    info = DatasetInfo(num_classes=label.num_classes, input_shape=shape,
                       extra={'mean': mean, 'std': std, **extra})
    return Splits(train=train, eval=eval_, info=info)

  text_keys = [k for k, f in features.items() if isinstance(f, tfds.features.Text)]
  if len(text_keys) != 1:
    raise ValueError(f'{name}: no mapping to our records for features {list(features)}')
  raw = functools.partial(_mapped, resolve, TextRecord(text_keys[0], label is not None))
  if label is not None:
    return sequences.classification_splits(data_cfg, AnySplit(), raw, label.num_classes, extra=extra)
  if name.split('/')[0].split(':')[0] in CORPORA:
    return _corpus_lm(data_cfg, raw, source)
  return sequences.sentence_lm_splits(data_cfg, AnySplit(), raw, extra=extra)


def _corpus_lm(data_cfg, raw, source: str) -> Splits:
  """Each selected split's texts joined into one text, then windows as for a local text file.

  Slicing cuts records here (tiny_shakespeare has one per split), so plain split
  names suit best: 'train', 'validation', 'test'.
  """
  def joined(spec: str) -> str:
    return ''.join(sequences.read_texts(splits.select(spec, AnySplit(), raw)))

  texts = {'eval': joined(data_cfg.eval_split)}
  return text.lm_splits(data_cfg, joined(data_cfg.train_split), texts, source,
                        train_split='train', eval_split='eval')
