"""Token-sequence datasets built from ``{'text', 'label'}`` records: classification and sentence LM.

Loaders (local TSVs, TFDS) hand over *raw* records; the split strings are cut
first, so a learnt vocabulary sees only the examples ``data.train_split``
selects (``train[:90%]`` leaves the held-out 10% unseen).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from train.data import splits, tokenize
from train.data.base import ArraySource, DatasetInfo, Source, Splits
from train.data.views import MapSource


def text_records(texts: Sequence[str], labels: np.ndarray | None = None) -> ArraySource:
  """Raw records ``{'text': str[, 'label': int32]}``."""
  columns = {'text': np.array(texts, dtype=object)}
  if labels is not None:
    columns['label'] = np.asarray(labels, np.int32)
  return ArraySource(columns)


def read_texts(source: Source) -> list[str]:
  """Every ``text`` of a raw source, decoded to str."""
  return [as_str(source[i]['text']) for i in range(len(source))]


def as_str(text) -> str:
  if isinstance(text, np.ndarray):
    text = text.item()
  return text.decode('utf-8') if isinstance(text, bytes) else str(text)


def _encode_all(source: Source, texts: list[str], encoder, seq_len: int) -> ArraySource:
  ids, mask = encoder.encode_batch(texts, seq_len)
  labels = np.array([source[i]['label'] for i in range(len(source))], np.int32)
  return ArraySource({'inputs': ids, 'mask': mask, 'label': labels})


def classification_splits(data_cfg, names, resolve: Callable[[str], Source], num_classes: int,
                          encoder=None, extra: dict | None = None) -> Splits:
  """``{'inputs': int32[T], 'mask': bool[T], 'label': int32}`` with ``T = data.seq_len``.

  ``encoder`` defaults to the one ``data.tokenizer`` names, learnt on the
  selected training texts. Texts are encoded once, up front.
  """
  train_raw, eval_raw = splits.select_train_eval(data_cfg, names, resolve)
  train_texts = read_texts(train_raw)
  encoder = encoder or tokenize.sequence_encoder(data_cfg, train_texts)
  seq_len = data_cfg.seq_len
  train = _encode_all(train_raw, train_texts, encoder, seq_len)
  eval_ = _encode_all(eval_raw, read_texts(eval_raw), encoder, seq_len)
  info = DatasetInfo(num_classes=num_classes, vocab_size=encoder.vocab_size,
                     input_shape=(seq_len,), input_dtype='int32', pad_id=encoder.pad_id or 0,
                     extra={**encoder.extra, **(extra or {})})
  return Splits(train=train, eval=eval_, info=info)


class EncodeSentence:
  """A raw record -> ``{'inputs', 'targets', 'weights'}``: next-token prediction within one text.

  The text is cut or padded to ``seq_len + 1`` ids; weights are 0 on padding.
  """

  def __init__(self, encoder, seq_len: int):
    self.encoder, self.seq_len = encoder, seq_len

  def __call__(self, record) -> dict[str, np.ndarray]:
    ids, mask = self.encoder.encode_batch([as_str(record['text'])], self.seq_len + 1)
    ids, mask = ids[0], mask[0]
    return {'inputs': ids[:-1], 'targets': ids[1:], 'weights': mask[1:].astype(np.float32)}


def sentence_lm_splits(data_cfg, names, resolve: Callable[[str], Source],
                       extra: dict | None = None) -> Splits:
  """Language modelling on many short texts (lm1b), each its own padded example.

  Records are encoded as they are read; a char or word vocabulary still reads
  every selected training text once (use ``byte`` or ``wordpiece`` for big sets).
  """
  train_raw, eval_raw = splits.select_train_eval(data_cfg, names, resolve)
  kind = data_cfg.tokenizer
  encoder = tokenize.sequence_encoder(
      data_cfg, read_texts(train_raw) if kind in ('char', 'word') else ())
  fn = EncodeSentence(encoder, data_cfg.seq_len)
  info = DatasetInfo(vocab_size=encoder.vocab_size, input_shape=(data_cfg.seq_len,),
                     input_dtype='int32', pad_id=encoder.pad_id or 0,
                     extra={**encoder.extra, **(extra or {})})
  return Splits(train=MapSource(train_raw, fn), eval=MapSource(eval_raw, fn), info=info)
