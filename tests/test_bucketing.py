"""Length bucketing (train/data/bucketing.py): less padding, deterministic, resumable, exact epochs.

That cutting right padding leaves the classifiers' logits unchanged is tested with the
models (tests/test_rnn.py::test_classifier_ignores_padding,
tests/test_transformer.py::test_encoder_ignores_padding).
"""
import jax
import numpy as np
import pytest

from tests.conftest import shared_data
from configs.base import set_model
from tests.helpers import load_config
from train import trainer
from train.data import bucketing, pipeline
from train.data.base import ArraySource

T, B, BOUNDS = 48, 8, (8, 16, 32)


def _source(n=203, seed=0):
  """Right-padded token rows whose lengths follow SST-2's skew (most short, a few long)."""
  rng = np.random.default_rng(seed)
  lengths = np.clip(rng.geometric(0.1, n), 1, T)
  mask = np.arange(T)[None] < lengths[:, None]
  ids = np.where(mask, rng.integers(2, 100, (n, T)), 0).astype(np.int32)
  return ArraySource({'inputs': ids, 'mask': mask, 'label': np.arange(n, dtype=np.int32)})


def _take(ds, k, state=None):
  it = pipeline.train_iterator(ds, state=state)
  return [next(it) for _ in range(k)], it


def test_bucket_lengths_drop_boundaries_at_or_past_seq_len():
  assert bucketing.bucket_lengths((8, 16, 32), 48) == (8, 16, 32, 48)
  assert bucketing.bucket_lengths((8, 16, 32, 48, 64), 32) == (8, 16, 32)


def test_batches_are_padded_to_their_bucket_and_padding_drops():
  src = _source()
  plain, _ = _take(pipeline.train_dataset(src, global_batch_size=B, seed=0), 50)
  bucketed, _ = _take(pipeline.train_dataset(src, global_batch_size=B, seed=0,
                                             bucket_boundaries=BOUNDS), 50)
  for b in bucketed:
    length = b['inputs'].shape[1]
    assert length in (8, 16, 32, 48) and b['mask'].shape == (B, length)
    assert b['mask'].sum(1).max() <= length  # nothing real was cut
  before, after = bucketing.padding_fraction(plain), bucketing.padding_fraction(bucketed)
  assert before > 0.7 and after < 0.45, (before, after)


def test_every_example_once_per_epoch_and_epochs_differ():
  src = _source()
  ds = pipeline.train_dataset(src, global_batch_size=B, seed=1, bucket_boundaries=BOUNDS)
  per_epoch = -(-len(src) // B)
  batches, _ = _take(ds, 2 * per_epoch)
  epochs = []
  for e in range(2):
    labels = np.concatenate([b['label'][b['valid']] for b in batches[e * per_epoch:(e + 1) * per_epoch]])
    assert sorted(labels) == list(range(len(src)))
    epochs.append(labels)
  assert not np.array_equal(*epochs)
  assert sum((~b['valid']).sum() for b in batches[:per_epoch]) == per_epoch * B - len(src)


def test_same_seed_same_batches_and_resume_continues_exactly():
  make = lambda seed: pipeline.train_dataset(_source(), global_batch_size=B, seed=seed,
                                             bucket_boundaries=BOUNDS)
  straight, _ = _take(make(3), 40)  # crosses an epoch boundary (26 batches per epoch)
  again, _ = _take(make(3), 40)
  other, _ = _take(make(4), 40)
  head, it = _take(make(3), 23)
  tail, _ = _take(make(3), 17, state=it.get_state())
  for a, b, c in zip(straight, again, head + tail):
    np.testing.assert_array_equal(a['label'], b['label'])
    np.testing.assert_array_equal(a['inputs'], c['inputs'])
    np.testing.assert_array_equal(a['valid'], c['valid'])
  assert any(a['label'].tolist() != o['label'].tolist() for a, o in zip(straight, other))


def test_two_hosts_read_disjoint_halves_of_each_global_batch():
  src = _source()
  kw = dict(global_batch_size=B, seed=5, bucket_boundaries=BOUNDS)
  one, _ = _take(pipeline.train_dataset(src, **kw), 30)
  hosts = [_take(pipeline.train_dataset(src, process_index=p, process_count=2, **kw), 30)[0]
           for p in (0, 1)]
  for k in range(30):
    h0, h1 = hosts[0][k], hosts[1][k]
    assert h0['inputs'].shape == h1['inputs'].shape == (B // 2, one[k]['inputs'].shape[1])
    l0, l1 = h0['label'][h0['valid']], h1['label'][h1['valid']]
    assert not set(l0) & set(l1)
    assert sorted(np.concatenate([l0, l1])) == sorted(one[k]['label'][one[k]['valid']])


def test_augment_is_seeded_by_place_in_the_stream():
  def noise(rec, rng):
    return dict(rec, inputs=rec['inputs'] + rng.integers(0, 1000))
  kw = dict(global_batch_size=B, seed=0, bucket_boundaries=BOUNDS, augment=noise)
  a = pipeline.train_dataset(_source(), **kw)[7]['inputs']
  b = pipeline.train_dataset(_source(), **kw)[7]['inputs']
  np.testing.assert_array_equal(a, b)


def test_trainer_compiles_one_step_per_bucket_shape(tmp_path, caplog):
  import logging
  (tmp_path / 'data').mkdir()
  rng = np.random.default_rng(0)
  words = ['good', 'bad', 'film', 'fun', 'dull', 'plot', 'actors', 'a', 'the', ',']
  rows = [' '.join(rng.choice(words, int(np.clip(rng.geometric(0.15), 1, 40)))) + f'\t{i % 2}\n'
          for i in range(120)]
  (tmp_path / 'data' / 'train.tsv').write_text('sentence\tlabel\n' + ''.join(rows))
  (tmp_path / 'data' / 'dev.tsv').write_text('sentence\tlabel\n' + ''.join(rows[:20]))
  # A one-layer, 16-wide encoder compiles several times faster than the BiLSTM's scan;
  # two bucket lengths (16, 32) keep the compile count, and so the test, small.
  config = load_config('configs/sst2_bilstm.py', 'tiny', **{
      'data.dir': str(tmp_path / 'data'), 'data.bucket_boundaries': (16,), 'data.seq_len': 32,
      # adversarial training is the BiLSTM config's; the encoder has no perturbation point
      'num_train_steps': 8, 'adversarial_epsilon': 0.0})
  set_model(config, 'bert_classifier')
  config.model.update(num_layers=1, num_heads=1, hidden_size=16, mlp_dim=16, max_len=32)
  caplog.set_level(logging.INFO)
  result = trainer.train_and_evaluate(config, str(tmp_path / 'run'),
                                      trainer.RunControl(devices=jax.devices()[:2]))
  assert result['step'] == 8 and np.isfinite(result['eval/loss'])
  assert result['eval/num_examples'] == 20  # evaluation is unchanged: every example once
  compiled = [r.getMessage().split('inputs ')[1].split(' compiled')[0] for r in caplog.records
              if r.getMessage().startswith('train step for inputs')]
  # The longest shape first, then each other bucket once, when its first batch comes.
  ds = pipeline.train_dataset(trainer_source(config), global_batch_size=16, seed=config.seed,
                              bucket_boundaries=(16,))
  seen = {ds[k]['inputs'].shape for k in range(8)}
  assert compiled[0] == '(16, 32)' and len(compiled) == len(set(compiled)), compiled
  assert {str(s) for s in seen} | {'(16, 32)'} == set(compiled) and len(compiled) == 2, compiled


def trainer_source(config):
  from train.data import sources
  return sources.load_splits(config.data).train


def test_real_sst2_padding_fraction_drops():
  from train.data import sources
  config = load_config('configs/sst2_bilstm.py', None, **{'data.dir': str(shared_data('sst2'))})
  splits = sources.load_splits(config.data)
  kw = dict(global_batch_size=64, seed=0)
  plain = pipeline.train_dataset(splits.train, **kw)
  bucketed = pipeline.train_dataset(splits.train, bucket_boundaries=(8, 16, 32), **kw)
  before = bucketing.padding_fraction(plain[k] for k in range(200))
  after = bucketing.padding_fraction(bucketed[k] for k in range(200))
  assert before > 0.75 and after < 0.4, (before, after)


@pytest.mark.parametrize('bounds', [(16, 8), (0, 8), (8, 8)])
def test_bad_boundaries_are_refused(bounds):
  from train import validate
  config = load_config('configs/sst2_bilstm.py', 'tiny')
  config.data.bucket_boundaries = bounds
  with pytest.raises(validate.ConfigError, match='bucket_boundaries'):
    validate.check_config(config)
