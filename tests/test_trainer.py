"""The loop: resume, determinism, eval coverage, outputs, init_from."""
import json
import os

import numpy as np
import pytest

from tests.helpers import assert_trees_equal, latest_state, load_config
from train import trainer
from train.metrics import read_metrics


def _config(**kw):
  base = {'num_train_steps': 10, 'log_every_steps': 1, 'checkpoint_every_steps': 0,
          'eval_every_steps': 0, 'plots': False}
  base.update(kw)
  return load_config('configs/default.py', 'tiny', **base)


def test_resume_equals_uninterrupted(tmp_path):
  config = _config()
  trainer.train_and_evaluate(config, str(tmp_path / 'straight'))
  r = trainer.train_and_evaluate(config, str(tmp_path / 'split'), trainer.RunControl(stop_at_step=5))
  assert r['step'] == 5 and r['stopped_early']
  step, half = latest_state(str(tmp_path / 'split'), config)
  assert step == 5
  trainer.train_and_evaluate(config, str(tmp_path / 'split'))
  s1, a = latest_state(str(tmp_path / 'straight'), config)
  s2, b = latest_state(str(tmp_path / 'split'), config)
  assert s1 == s2 == 10
  assert_trees_equal(a, b)  # params, optimizer state, step: bit-identical
  assert not np.array_equal(np.asarray(half['params']['Dense_0']['kernel']),
                            np.asarray(a['params']['Dense_0']['kernel']))
  # The logged losses of steps 6..10 match too: the data order resumed exactly.
  loss = lambda w: [r['train/loss'] for r in read_metrics(str(tmp_path / w)) if 'train/loss' in r]
  assert loss('straight')[5:] == loss('split')[5:]


def test_same_seed_is_bit_identical_and_other_seed_differs(tmp_path):
  config = _config(num_train_steps=4)
  for name in ('a', 'b'):
    trainer.train_and_evaluate(config, str(tmp_path / name))
  trainer.train_and_evaluate(_config(num_train_steps=4, seed=1), str(tmp_path / 'c'))
  _, a = latest_state(str(tmp_path / 'a'), config)
  _, b = latest_state(str(tmp_path / 'b'), config)
  _, c = latest_state(str(tmp_path / 'c'), config)
  assert_trees_equal(a, b)
  assert not np.array_equal(a['params']['Dense_1']['kernel'], c['params']['Dense_1']['kernel'])


def test_eval_counts_every_example_once(tmp_path):
  # 360 test digits with eval batches of 48: the last batch has 24 real examples.
  config = _config(num_train_steps=2, eval_batch_size=48)
  result = trainer.train_and_evaluate(config, str(tmp_path / 'w'))
  assert result['eval/num_examples'] == 360
  # The accuracy is a multiple of 1/360, as it must be when each example counts once.
  assert abs(result['eval/accuracy'] * 360 - round(result['eval/accuracy'] * 360)) < 1e-6


def test_outputs_in_workdir(tmp_path):
  w = str(tmp_path / 'w')
  config = _config(num_train_steps=6, log_every_steps=2, eval_every_steps=3, plots=True)
  trainer.train_and_evaluate(config, w)
  rows = read_metrics(w)
  assert [r['step'] for r in rows if 'train/loss' in r] == [2, 4, 6]
  assert [r['step'] for r in rows if 'eval/loss' in r] == [3, 6]
  assert {'train/learning_rate', 'steps_per_sec', 'examples_per_sec'} <= set(rows[0])
  assert os.path.getsize(os.path.join(w, 'curves.png')) > 1000
  from tensorboard.backend.event_processing import event_accumulator
  tb = os.path.join(w, 'tensorboard')
  acc = event_accumulator.EventAccumulator(tb)
  acc.Reload()
  tags = set(acc.Tags().get('tensors', [])) | set(acc.Tags().get('scalars', []))
  assert 'train/loss' in tags and 'eval/accuracy' in tags


def test_init_from_copies_params(tmp_path):
  src = str(tmp_path / 'src')
  trainer.train_and_evaluate(_config(num_train_steps=3), src)
  dst = str(tmp_path / 'dst')
  trainer.train_and_evaluate(_config(num_train_steps=1, init_from=src, learning_rate=1e-12), dst)
  _, a = latest_state(src, None)
  _, b = latest_state(dst, None)
  np.testing.assert_allclose(a['params']['Dense_0']['kernel'], b['params']['Dense_0']['kernel'],
                             atol=1e-8)


def test_default_config_reaches_target_quickly(tmp_path):
  """The main job of the README: >= 97% on the held-out digits."""
  config = load_config('configs/default.py', None, plots=False)
  result = trainer.train_and_evaluate(config, str(tmp_path / 'w'))
  assert result['eval/accuracy'] >= 0.97
  assert result['eval/num_examples'] == 360
