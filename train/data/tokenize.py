"""Text -> int32 ids: character, byte, word and WordPiece vocabularies.

Two uses:

- Language modelling on one long text (:func:`corpus_encoder`): characters of
  the training text, sorted, with no special ids (65 for Tiny Shakespeare), or
  raw UTF-8 bytes.
- Padded sequences (:func:`sequence_encoder`: classification, sentence LM): id 0
  is padding. ``word``/``char`` vocabularies come from the training texts only,
  with id 1 for unknown symbols; ``byte`` uses raw UTF-8 bytes (NUL never occurs
  in text, so 0 is free for padding); ``wordpiece`` is a pretrained HF tokenizer.
"""
from __future__ import annotations

import collections
import pathlib
import re
from typing import Iterable, Sequence

import numpy as np

PAD, UNK = '<pad>', '<unk>'
WORD_RE = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
  """Lower-cased words and single punctuation marks."""
  return WORD_RE.findall(text.lower())


class Vocab:
  """A fixed list of symbols; ``level`` says how text splits into them (word, char or space)."""

  SPLIT = {'word': words, 'char': list, 'space': str.split}
  JOIN = {'word': ' ', 'char': '', 'space': ' '}

  def __init__(self, symbols: Sequence[str], level: str, unk: str | None = UNK):
    self.symbols = list(symbols)
    self.level = level
    self.ids = {s: i for i, s in enumerate(self.symbols)}
    self.unk_id = self.ids.get(unk) if unk is not None else None
    self.pad_id = self.ids.get(PAD)  # None: no padding (LM on one long text)

  @classmethod
  def build(cls, texts: Iterable[str], level: str, max_size: int = 0,
            specials: Sequence[str] = (PAD, UNK)) -> 'Vocab':
    """The ``max_size`` most frequent symbols of ``texts`` (all when 0), after ``specials``.

    Ties break alphabetically so the vocabulary does not depend on file order.
    """
    counts = collections.Counter()
    split = cls.SPLIT[level]
    for text in texts:
      counts.update(split(text))
    ranked = sorted(counts, key=lambda s: (-counts[s], s))
    if max_size > 0:
      ranked = ranked[:max_size]
    if level == 'char':  # character vocabularies read best in code-point order
      ranked = sorted(ranked)
    return cls(list(specials) + ranked, level, UNK if UNK in specials else None)

  def __len__(self) -> int:
    return len(self.symbols)

  @property
  def vocab_size(self) -> int:
    return len(self.symbols)

  def encode(self, text: str) -> np.ndarray:
    """The ids of ``text``; unknown symbols map to ``<unk>`` (a KeyError without one)."""
    ids = self.ids
    if self.unk_id is None:
      return np.array([ids[s] for s in self.SPLIT[self.level](text)], np.int32)
    return np.array([ids.get(s, self.unk_id) for s in self.SPLIT[self.level](text)], np.int32)

  def encode_batch(self, texts: Sequence[str], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    return pad([self.encode(t) for t in texts], seq_len, self.pad_id or 0)

  def decode(self, ids) -> str:
    return self.JOIN[self.level].join(
        self.symbols[i] for i in np.asarray(ids).ravel() if i != self.pad_id)

  @property
  def extra(self) -> dict:
    return {'tokenizer': self.level, 'vocab': list(self.symbols)}


class ByteEncoder:
  """UTF-8 bytes as ids 0..255."""
  vocab_size = 256
  pad_id = 0
  extra = {'tokenizer': 'byte'}

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode('utf-8'), np.uint8).astype(np.int32)

  def encode_batch(self, texts: Sequence[str], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    return pad([self.encode(t) for t in texts], seq_len, self.pad_id)

  def decode(self, ids) -> str:
    return bytes(np.asarray(ids, np.uint8).ravel().tolist()).decode('utf-8', errors='replace')


class WordPieceEncoder:
  """A pretrained HF ``tokenizers`` WordPiece: ``[CLS] tokens [SEP]``, truncated to ``seq_len``."""

  def __init__(self, path: str):
    from tokenizers import Tokenizer

    file = pathlib.Path(path).expanduser()
    if file.is_dir():
      file = file / 'tokenizer.json'
    if not file.is_file():
      from train.data.base import DataError
      raise DataError(f'{file}: tokenizer file not found (data.tokenizer_path)')
    self.path = str(file)
    self.tokenizer = Tokenizer.from_file(self.path)
    # Some tokenizer.json files (all-MiniLM-L6-v2's) pad every text to a fixed 128 ids and
    # truncate there; :func:`pad` does both here, so the mask marks only real tokens.
    self.tokenizer.no_padding()
    self.tokenizer.no_truncation()
    self.cls_id, self.sep_id = (self._id('[CLS]'), self._id('[SEP]'))
    pad_id = self.tokenizer.token_to_id('[PAD]')
    self.pad_id = 0 if pad_id is None else pad_id
    self.vocab_size = self.tokenizer.get_vocab_size()
    self.extra = {'tokenizer': 'wordpiece', 'tokenizer_path': self.path}

  def _id(self, token: str) -> int:
    token_id = self.tokenizer.token_to_id(token)
    if token_id is None:
      from train.data.base import DataError
      raise DataError(f'{self.path}: the tokenizer has no {token} token')
    return token_id

  def encode(self, text: str) -> np.ndarray:
    ids = self.tokenizer.encode(text, add_special_tokens=False).ids
    return np.array([self.cls_id, *ids, self.sep_id], np.int32)

  def encode_batch(self, texts: Sequence[str], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    # Truncation keeps [SEP] last, as BERT was trained.
    encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
    rows = [np.array([self.cls_id, *e.ids[:max(seq_len - 2, 0)], self.sep_id], np.int32)[:seq_len]
            for e in encodings]
    return pad(rows, seq_len, self.pad_id)

  def decode(self, ids) -> str:
    return self.tokenizer.decode([int(i) for i in np.asarray(ids).ravel()])

  def __getstate__(self):  # grain workers receive the path and reload the tokenizer
    return {'path': self.path}

  def __setstate__(self, state):
    self.__init__(state['path'])


def pad(rows: Sequence[np.ndarray], seq_len: int, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Rows truncated or padded to ``seq_len``: (ids ``[N, T]`` int32, mask ``[N, T]`` bool)."""
  ids = np.full((len(rows), seq_len), pad_id, np.int32)
  mask = np.zeros((len(rows), seq_len), bool)
  for i, row in enumerate(rows):
    n = min(len(row), seq_len)
    ids[i, :n] = row[:n]
    mask[i, :n] = True
  return ids, mask


def sequence_encoder(data_cfg, train_texts: Iterable[str]):
  """The encoder ``data.tokenizer`` names, for padded sequences (id 0 = padding).

  ``train_texts`` is read only by vocabularies learnt from data (word, char).
  """
  kind = data_cfg.tokenizer
  if kind == 'word':
    return Vocab.build(train_texts, 'word', data_cfg.vocab_size)
  if kind == 'char':
    return Vocab.build(train_texts, 'char')
  if kind == 'byte':
    return ByteEncoder()
  if kind == 'wordpiece':
    if not data_cfg.tokenizer_path:
      raise ValueError("data.tokenizer='wordpiece' needs data.tokenizer_path (tokenizer.json or its folder)")
    return WordPieceEncoder(data_cfg.tokenizer_path)
  raise ValueError(f"unknown data.tokenizer {kind!r}; known: char, byte, word, wordpiece")


def corpus_encoder(kind: str, train_text: str, other_text: str = ''):
  """A character (sorted symbols of ``train_text``, no specials) or byte encoder for LM.

  A character of ``other_text`` (the eval text) missing from the training text
  gets one extra id, U+FFFD, at the end, so eval never fails on a rare symbol.
  """
  if kind == 'byte':
    return ByteEncoder()
  if kind != 'char':
    raise ValueError(f"language modelling on a text supports data.tokenizer 'char' or 'byte', not {kind!r}")
  chars = sorted(set(train_text))
  unseen = set(other_text) - set(chars)
  vocab = Vocab(chars + ['\ufffd'] if unseen else chars, 'char', unk='\ufffd' if unseen else None)
  return vocab
