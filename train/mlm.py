"""Masked-language-model data: BERT's masking of unlabelled token sequences (``task='mlm'``).

Each real, non-special token is selected with probability ``data.mlm_rate``
(0.15); a selected token becomes ``[MASK]`` 80% of the time, a random token 10%,
and stays itself 10% (Devlin et al. 2019). The record's ``targets`` are the
original ids and ``weights`` are 1 exactly on the selected positions, so the
``mlm`` task (the LM cross-entropy weighted by ``weights``) scores only those.

Training masks are drawn afresh for every example read (dynamic masking, as
RoBERTa), from the generator grain's ``random_map`` (or the length buckets) seed
by the example's place in the stream: one seed gives the same masks, a resumed
run redraws exactly the masks an uninterrupted one would. Eval masks are fixed
per example (seeded by ``seed`` and its index), so eval numbers are comparable.
Labels are dropped: pretraining reads the text only.

Fine-tuning then reuses the encoder: ``BertMLM`` and ``BertClassifier`` keep it
under the same ``encoder/...`` names, so ``init_from`` a pretraining workdir
loads the encoder and the classifier head starts fresh.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from train.data.base import DataError, Source, Splits

MASK_FRACTION = 0.8    # of the selected tokens: become [MASK]
RANDOM_FRACTION = 0.1  # become a random token; the remaining 0.1 stay as they are
WORDPIECE_SPECIALS = ('[PAD]', '[CLS]', '[SEP]', '[MASK]', '[UNK]')


class Masker:
  """``(record, rng) -> record`` with ``inputs`` corrupted and ``targets``/``weights`` added.

  Args:
    mask_id: the ``[MASK]`` id.
    vocab_size: random replacements are drawn uniformly from ``range(vocab_size)``
      without ``special_ids``.
    special_ids: ids never selected and never drawn ([PAD], [CLS], [SEP], [MASK], [UNK]).
    rate: the probability that a real, non-special token is selected.
  """

  def __init__(self, mask_id: int, vocab_size: int, special_ids: Sequence[int], rate: float = 0.15):
    self.mask_id, self.vocab_size, self.rate = int(mask_id), int(vocab_size), float(rate)
    self.special_ids = np.unique(np.asarray(list(special_ids) + [mask_id], np.int64))
    self.random_ids = np.setdiff1d(np.arange(vocab_size), self.special_ids)

  def __call__(self, record, rng: np.random.Generator) -> dict[str, np.ndarray]:
    ids = np.asarray(record['inputs'])
    real = np.asarray(record['mask'], bool) & ~np.isin(ids, self.special_ids)
    # Fixed draws per call (whatever is selected), so a record's masks depend only on rng.
    selected = real & (rng.random(ids.shape) < self.rate)
    action = rng.random(ids.shape)
    replacement = self.random_ids[rng.integers(0, len(self.random_ids), ids.shape)]
    corrupted = np.where(selected & (action < MASK_FRACTION), self.mask_id, ids)
    to_random = selected & (action >= MASK_FRACTION) & (action < MASK_FRACTION + RANDOM_FRACTION)
    corrupted = np.where(to_random, replacement, corrupted).astype(ids.dtype)
    out = {k: v for k, v in record.items() if k != 'label'}
    out.update(inputs=corrupted, targets=ids, weights=selected.astype(np.float32))
    return out


def masker_for(info, rate: float = 0.15) -> Masker:
  """The :class:`Masker` for a dataset's tokenizer (a WordPiece vocabulary with ``[MASK]``)."""
  if info.extra.get('tokenizer') != 'wordpiece':
    raise DataError("task='mlm' needs a vocabulary with a [MASK] token: set "
                     "data.tokenizer='wordpiece' and data.tokenizer_path "
                     f"(got data.tokenizer={info.extra.get('tokenizer')!r})")
  from tokenizers import Tokenizer
  tokenizer = Tokenizer.from_file(info.extra['tokenizer_path'])
  ids = {t: tokenizer.token_to_id(t) for t in WORDPIECE_SPECIALS}
  if ids['[MASK]'] is None:
    raise DataError(f"{info.extra['tokenizer_path']}: the tokenizer has no [MASK] token (task='mlm')")
  return Masker(ids['[MASK]'], info.vocab_size, [i for i in ids.values() if i is not None], rate)


class FixedMasks:
  """``source`` with each example masked once and for all (rng seeded by ``seed`` and its index)."""

  def __init__(self, source: Source, masker: Masker, seed: int):
    self.source, self.masker, self.seed = source, masker, seed

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index):
    return self.masker(self.source[index], np.random.default_rng([self.seed, 1, int(index)]))


def prepare(splits: Splits, config, augment=None) -> tuple[Splits, Masker]:
  """``task='mlm'``: the eval split with fixed masks and the training-time masker (the ``augment``)."""
  if augment is not None:
    raise DataError("task='mlm' masks its inputs itself; set data.augment='none'")
  masker = masker_for(splits.info, config.data.mlm_rate)
  eval_ = FixedMasks(splits.eval, masker, config.seed)
  return Splits(train=splits.train, eval=eval_, info=splits.info), masker
