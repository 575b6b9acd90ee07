"""The SST-2 sentence hold-out: whole sentences out, and nothing inside them left in training."""
import numpy as np
import pytest

from tests.conftest import shared_data
from tests.test_data_sources import data_cfg
from train.data import glue, sentence_holdout
from train.data.sources import load_splits

# Three "sentences" with phrases cut from them, the way SST-2's train split is built.
TEXTS = [
    'a good film',            # 0 phrase of 3
    'the plot is thin but a good film overall',  # 1 sentence
    'the plot is thin',       # 2 phrase of 1
    'goodness me',            # 3 sentence ('good' is not a token of it)
    'good',                   # 4 phrase of 1, 5 and 7
    'a bad , bad film',       # 5 sentence
    'bad film',               # 6 phrase of 5
    'good',                   # 7 duplicate of 4
    'the plot is thin ',      # 8 duplicate of 2 up to spaces
]


def _inside(row: str, sentence: str) -> bool:
  return f' {" ".join(row.split())} ' in f' {" ".join(sentence.split())} '


def test_sentences_are_the_rows_no_other_row_contains():
  assert list(sentence_holdout.sentence_rows(TEXTS)) == [1, 3, 5]


@pytest.mark.parametrize('seed', range(6))
def test_nothing_inside_a_held_out_sentence_is_trained_on(seed):
  fit, heldout = sentence_holdout.split(TEXTS, fraction=1 / 3, seed=seed)
  assert len(heldout) == 1 and heldout[0] in (1, 3, 5)
  sentence = TEXTS[heldout[0]]
  expected_fit = [k for k, t in enumerate(TEXTS) if not _inside(t, sentence)]
  assert list(fit) == expected_fit
  # Holding out 'goodness me' keeps 'good': containment is by whole tokens.
  if heldout[0] == 3:
    assert 4 in fit and 7 in fit


def test_seed_picks_different_sentences_and_is_repeatable():
  picks = {tuple(sentence_holdout.split(TEXTS, 1 / 3, seed)[1]) for seed in range(12)}
  assert len(picks) == 3
  np.testing.assert_array_equal(sentence_holdout.split(TEXTS, 1 / 3, 5)[0],
                                sentence_holdout.split(TEXTS, 1 / 3, 5)[0])


@pytest.mark.parametrize('fraction', [0.0, 1.0, 0.01])
def test_bad_fraction_is_a_clear_error(fraction):
  with pytest.raises(ValueError, match='hold'):
    sentence_holdout.split(TEXTS, fraction)


def test_real_sst2_sentence_holdout():
  root = shared_data('sst2')
  s = load_splits(data_cfg(name='sst2', dir=root, train_split='train_fit',
                           eval_split='train_heldout', tokenizer='word', seq_len=64))
  assert (len(s.train), len(s.eval)) == (52_382, 1_377)  # 20% of 6,885 sentences
  # Containment by SST-2's own (whitespace) tokens, on the raw texts: the word
  # tokenizer also splits 'free-wheeling', so its ids would see 'free' inside.
  def words(split):
    records = glue.read_split(root, split)
    return [str(records[i]['text']).split() for i in range(len(records))]

  held, fit = words('train_heldout'), words('train_fit')
  # Like dev (19.5 words): whole sentences, far longer than train's phrases (9.4).
  assert 18 < np.mean([len(h) for h in held]) < 21
  spans = {' '.join(h[i:j]) for h in held for i in range(len(h)) for j in range(i + 1, len(h) + 1)}
  assert not any(' '.join(f) in spans for f in fit)
