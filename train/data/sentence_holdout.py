"""Hold out whole sentences of a phrase-augmented training set (SST-2's).

SST-2's train split holds 6,885 sentences plus about 60,000 phrases cut from
their parse trees, while dev holds whole sentences only. A random slice of the
train rows is then a poor proxy for dev: its phrases are short and easy (91-92%
where sentences score 83%), and each one's sentence, or a longer phrase around
it, is still in training. Here a *sentence* is a row that no other row contains
(as a run of whole tokens); a seeded fraction of the sentences is held out, and
every row inside a held-out sentence leaves the training part, so no held-out
word sequence is ever trained on.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _spans(tokens: list[str], proper: bool):
  """Every run of whole tokens, as a space-joined string (the whole row unless ``proper``)."""
  n = len(tokens)
  for i in range(n):
    for j in range(i + 1, n + 1):
      if not (proper and j - i == n):
        yield ' '.join(tokens[i:j])


def sentence_rows(texts: Sequence[str]) -> np.ndarray:
  """Indices of the rows that no other row contains, in order (first copy of duplicates)."""
  rows = [' '.join(t.split()) for t in texts]
  known = set(rows)
  inside = set()
  for row in rows:
    inside.update(s for s in _spans(row.split(), proper=True) if s in known)
  seen, keep = set(), []
  for k, row in enumerate(rows):
    if row not in inside and row not in seen:
      seen.add(row)
      keep.append(k)
  return np.asarray(keep, np.int64)


def split(texts: Sequence[str], fraction: float = 0.2, seed: int = 0
          ) -> tuple[np.ndarray, np.ndarray]:
  """``(fit, heldout)`` row indices, both ascending.

  ``heldout`` is ``round(fraction * #sentences)`` sentences drawn with ``seed``;
  ``fit`` is every row that is not a held-out sentence or contained in one.
  """
  if not 0 < fraction < 1:
    raise ValueError(f'sentence hold-out fraction must be in (0, 1), got {fraction}')
  sentences = sentence_rows(texts)
  n = int(round(fraction * len(sentences)))
  if not 0 < n < len(sentences):
    raise ValueError(f'cannot hold out {fraction:.0%} of {len(sentences)} sentences')
  heldout = np.sort(np.random.default_rng(seed).choice(sentences, n, replace=False))
  banned = set()
  for k in heldout:
    banned.update(_spans(texts[k].split(), proper=False))
  fit = np.asarray([k for k, t in enumerate(texts) if ' '.join(t.split()) not in banned],
                   np.int64)
  return fit, heldout
