"""Parameter averaging (``ema_decay``): the average itself, evaluation with it, resume, tools."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import assert_trees_equal, latest_state, load_config
from train import checkpoint as ckpt_lib
from train import optim, posttrain, steps, tasks, trainer
from train.data import pipeline, sources
from train.state import EMATrainState, ema_weight, make_init_fn
from train.validate import ConfigError, check_config


def _config(**kw):
  base = {'num_train_steps': 8, 'log_every_steps': 1, 'checkpoint_every_steps': 0,
          'eval_every_steps': 0, 'plots': False, 'ema_decay': 0.9}
  base.update(kw)
  return load_config('configs/default.py', 'tiny', **base)


def test_average_equals_the_weighted_sum_of_the_iterates():
  """After K steps: sum_t d**(K-t) p_t / sum_t d**(K-t), from the parameters of every step."""
  config, decay, k = _config(), 0.8, 6
  splits = sources.load_splits(config.data)
  model = trainer.build_model(config, splits.info)
  tx, _ = optim.create_optimizer(config, 100)
  batch = next(iter(pipeline.eval_batches(splits.train, global_batch_size=16)))
  state = make_init_fn(model, tx, batch, ema_decay=decay)(jax.random.key(0))
  assert isinstance(state, EMATrainState)
  step = jax.jit(steps.make_train_step(model, tasks.get('classification', config)))
  iterates = []
  for _ in range(k):
    state, _ = step(state, batch, jax.random.key(1))
    iterates.append(state.params)
  weights = np.array([decay ** (k - t) for t in range(1, k + 1)])
  naive = jax.tree_util.tree_map(
      lambda *ps: sum(w * np.asarray(p, np.float64) for w, p in zip(weights, ps)) / weights.sum(),
      *iterates)
  leaves = zip(jax.tree_util.tree_leaves(state.ema_params), jax.tree_util.tree_leaves(naive))
  for got, want in leaves:
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
  # ...and it is not simply the last parameters.
  assert not np.allclose(jax.tree_util.tree_leaves(state.ema_params)[0],
                         jax.tree_util.tree_leaves(state.params)[0])


def test_run_is_evaluated_with_the_average_and_the_tools_read_it(tmp_path):
  w = str(tmp_path / 'w')
  result = trainer.train_and_evaluate(_config(), w)
  _, saved = latest_state(w, None)
  assert set(saved) >= {'params', 'ema_params'}
  # The eval metrics are those of the averaged parameters, not of the last ones.
  splits = sources.load_splits(_config().data)
  run = posttrain.load_run(w, splits.info)
  ema_eval = posttrain.evaluate(run.model, saved['ema_params'], {}, splits.eval)
  raw_eval = posttrain.evaluate(run.model, saved['params'], {}, splits.eval)
  assert ema_eval['loss'] == pytest.approx(result['eval/loss'], rel=1e-5)
  assert raw_eval['loss'] != pytest.approx(result['eval/loss'], rel=1e-5)
  # load_params (init_from, sampling) and the post-training tools take the average.
  assert_trees_equal(ckpt_lib.load_params(w), saved['ema_params'])
  assert_trees_equal(run.params, saved['ema_params'])
  # A run that starts from it (init_from) takes the average too, averaged from there on.
  dst = str(tmp_path / 'dst')
  trainer.train_and_evaluate(_config(num_train_steps=1, init_from=w, learning_rate=1e-12), dst)
  _, fine = latest_state(dst, None)
  for a, b in zip(jax.tree_util.tree_leaves(saved['ema_params']),
                  jax.tree_util.tree_leaves(fine['ema_params'])):
    np.testing.assert_allclose(a, b, atol=1e-8)


def test_resume_equals_uninterrupted(tmp_path):
  config = _config()
  trainer.train_and_evaluate(config, str(tmp_path / 'straight'))
  trainer.train_and_evaluate(config, str(tmp_path / 'split'), trainer.RunControl(stop_at_step=3))
  trainer.train_and_evaluate(config, str(tmp_path / 'split'))
  _, a = latest_state(str(tmp_path / 'straight'), config)
  _, b = latest_state(str(tmp_path / 'split'), config)
  assert_trees_equal(a, b)  # ema_params included


@pytest.mark.parametrize('decay', [0.9, 0.999, 0.9999])
def test_first_update_takes_the_parameters_whole(decay):
  """Weight 1 at step 1 (the average starts as the first parameters, not pulled towards the
  initialisation), tending to 1 - decay."""
  assert float(ema_weight(jnp.int32(1), decay)) == 1.0
  assert float(ema_weight(jnp.int32(10**7), decay)) == pytest.approx(1 - decay, rel=1e-3)


@pytest.mark.parametrize('overrides, words', [
    ({'ema_decay': 1.0}, 'ema_decay must be in [0, 1)'),
    ({'ema_decay': 0.9, 'prune.target_sparsity': 0.5}, 'ema_decay with prune'),
])
def test_bad_settings_are_refused(overrides, words):
  with pytest.raises(ConfigError, match=words.replace('[', r'\[').replace(')', r'\)')):
    check_config(_config(**overrides))
