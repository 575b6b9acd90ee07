"""Character- or byte-level language modelling on one plain-text file (Tiny Shakespeare).

As nanoGPT: 'train' is the first 90% of the characters, 'validation' (also
'test') the last 10%. A training example is the window of ``seq_len + 1`` ids at
*every* offset, so an epoch sees each position in every context; eval windows do
not overlap, so each eval token is scored once.
"""
from __future__ import annotations

import numpy as np

from train.data import files, splits, tokenize
from train.data.base import DataError, DatasetInfo, Splits

TRAIN_FRACTION = 0.9
SPLITS = ('train', 'validation', 'test')


class WindowSource:
  """``{'inputs': ids[s:s+T], 'targets': ids[s+1:s+T+1]}`` for ``s = 0, stride, 2*stride, ...``."""

  def __init__(self, ids: np.ndarray, seq_len: int, stride: int = 1):
    if len(ids) < seq_len + 1:
      raise ValueError(f'{len(ids)} tokens are too few for one window of seq_len + 1 = {seq_len + 1}')
    self.ids, self.seq_len, self.stride = np.asarray(ids, np.int32), seq_len, stride

  def __len__(self) -> int:
    return (len(self.ids) - self.seq_len - 1) // self.stride + 1

  def __getitem__(self, index) -> dict[str, np.ndarray]:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f'window {index} out of range for {len(self)} windows')
    start = index * self.stride
    window = self.ids[start:start + self.seq_len + 1]
    return {'inputs': window[:-1], 'targets': window[1:]}

  def __repr__(self) -> str:
    return f'WindowSource({len(self.ids)} tokens, seq_len={self.seq_len}, stride={self.stride})'


def lm_splits(data_cfg, train_text: str, eval_texts: dict[str, str], source: str,
              **split_overrides) -> Splits:
  """Windows over ``train_text`` ('train') and over each text in ``eval_texts``.

  The vocabulary is the training text's; ``split_overrides`` replace the config's split strings.
  """
  texts = {'train': train_text, **eval_texts}
  encoder = tokenize.corpus_encoder(data_cfg.tokenizer, train_text, ''.join(eval_texts.values()))
  seq_len = data_cfg.seq_len

  def resolve(split: str):
    ids = encoder.encode(texts[split])
    return WindowSource(ids, seq_len, stride=1 if split == 'train' else seq_len)

  train, eval_ = splits.select_train_eval(data_cfg, texts, resolve, **split_overrides)
  info = DatasetInfo(vocab_size=encoder.vocab_size, input_shape=(seq_len,), input_dtype='int32',
                     extra={**encoder.extra, 'source': source})
  return Splits(train=train, eval=eval_, info=info)


def load(data_cfg) -> Splits:
  """``input.txt`` in ``data.dir`` (or ``data.dir`` naming the file itself)."""
  path = files.find(files.data_dir(data_cfg), 'input.txt')
  text = files.read_text(path)
  if not text.strip():
    raise DataError(f'{path}: empty text')
  cut = int(len(text) * TRAIN_FRACTION)
  if min(cut, len(text) - cut) < data_cfg.seq_len + 1:
    raise DataError(f'{path}: {len(text)} characters are too few for seq_len={data_cfg.seq_len}')
  held_out = text[cut:]
  return lm_splits(data_cfg, text[:cut], {'validation': held_out, 'test': held_out}, str(path))
