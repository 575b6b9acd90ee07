"""Global magnitude pruning: the schedule, the global threshold, the optax wrapper, a real run."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.conftest import shared_data
from tests.helpers import load_config
from train import optim, posttrain, prune, trainer


def _tree(rng):
  return {'Conv_0': {'kernel': rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
                     'bias': rng.normal(size=4).astype(np.float32)},
          'Dense_0': {'kernel': (3 * rng.normal(size=(10, 7))).astype(np.float32),
                      'bias': rng.normal(size=7).astype(np.float32)},
          'Dense_1': {'kernel': (0.1 * rng.normal(size=(7, 3))).astype(np.float32)}}


def _kernels(tree):
  return [x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0] if posttrain.is_kernel(p, x)]


def test_schedule_is_zhu_gupta_cubic():
  kw = dict(target=0.9, begin=100, end=500)
  closed = lambda t, s_i=0.0: 0.9 + (s_i - 0.9) * (1 - (t - 100) / 400) ** 3
  for t in (100, 150, 300, 420, 500):
    assert float(prune.sparsity_at(t, **kw)) == pytest.approx(closed(t), abs=1e-6)
  assert float(prune.sparsity_at(0, **kw)) == 0.0 and float(prune.sparsity_at(99, **kw)) == 0.0
  assert float(prune.sparsity_at(10_000, **kw)) == pytest.approx(0.9)
  assert float(prune.sparsity_at(300, initial=0.5, **kw)) == pytest.approx(closed(300, 0.5), abs=1e-6)
  # traced steps give the same values
  ts = jnp.arange(0, 600, 50)
  np.testing.assert_allclose(jax.jit(lambda t: prune.sparsity_at(t, **kw))(ts),
                             [float(prune.sparsity_at(int(t), **kw)) for t in ts], atol=1e-6)


@pytest.mark.parametrize('sparsity', [0.0, 0.3, 0.9])
def test_one_global_threshold_gives_the_requested_fraction(sparsity):
  tree = _tree(np.random.default_rng(1))
  masks = prune.global_magnitude_masks(tree, sparsity)
  kept = np.concatenate([np.asarray(m).ravel() for m in _kernels(masks)])
  scores = np.concatenate([np.abs(k).ravel() for k in _kernels(tree)])
  assert (~kept).sum() == round(sparsity * scores.size)
  if 0 < sparsity:
    assert scores[~kept].max() <= scores[kept].min()  # one threshold across all layers
    # The small-magnitude layer loses more than the large one: the threshold is global.
    frac = lambda name: 1 - np.asarray(masks[name]['kernel']).mean()
    assert frac('Dense_1') > frac('Dense_0')
  assert np.asarray(masks['Conv_0']['bias']).all() and np.asarray(masks['Dense_0']['bias']).all()


def test_ties_still_give_the_exact_count_and_match_a_stable_sort():
  tree = {'Dense_0': {'kernel': np.zeros((10, 10), np.float32)}}
  masks = prune.global_magnitude_masks(tree, 0.37)
  assert (~np.asarray(masks['Dense_0']['kernel'])).sum() == 37
  rng = np.random.default_rng(3)
  x = np.abs(rng.normal(size=3000)).astype(np.float32)
  x[rng.integers(0, 3000, 600)] = 0.0       # pruned weights
  x[rng.integers(0, 3000, 300)] = x[7]      # ties away from zero
  for s in (0.1, 0.25, 0.5, 0.9):
    masks = prune.global_magnitude_masks({'Dense_0': {'kernel': x.reshape(60, 50)}}, s)
    ref = np.ones(3000, bool)
    ref[np.argsort(x, kind='stable')[:round(s * 3000)]] = False
    np.testing.assert_array_equal(np.asarray(masks['Dense_0']['kernel']).ravel(), ref)


def test_masked_weights_are_zero_after_every_update_and_adam_cannot_revive_them():
  rng = np.random.default_rng(2)
  params = jax.tree_util.tree_map(jnp.asarray, _tree(rng))
  tx = prune.prune(optax.adamw(0.05, weight_decay=1e-2), target_sparsity=0.8, begin_step=2,
                   end_step=8, update_every=2)
  state = tx.init(params)
  step = jax.jit(lambda p, s, g: (lambda u, s2: (optax.apply_updates(p, u), s2))(*tx.update(g, s, p)))
  zeros_before = None
  for t in range(20):
    # Large gradients pushing every weight, masked or not, away from zero.
    grads = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 10, p.dtype), params)
    params, state = step(params, state, grads)
    for k, m in zip(_kernels(params), _kernels(state.masks)):
      assert np.all(np.asarray(k)[~np.asarray(m)] == 0.0)
    zeros = np.concatenate([np.asarray(k).ravel() == 0 for k in _kernels(params)])
    if zeros_before is not None:
      assert np.all(zeros[zeros_before])  # once pruned, a weight stays exactly 0
    zeros_before = zeros
  assert zeros.mean() == pytest.approx(round(0.8 * zeros.size) / zeros.size)
  assert all(np.all(np.asarray(params[n]['bias']) != 0) for n in ('Conv_0', 'Dense_0'))


def test_create_optimizer_wraps_only_when_pruning_is_on():
  params = {'Dense_0': {'kernel': jnp.ones((4, 3)), 'bias': jnp.zeros(3)}}
  config = load_config('configs/mnist_cnn.py', 'tiny')
  tx, _ = optim.create_optimizer(config, 10)
  assert not isinstance(tx.init(params), prune.PruneState)
  config.prune.target_sparsity = 0.5
  tx, _ = optim.create_optimizer(config, 10)
  assert isinstance(tx.init(params), prune.PruneState)


def test_tiny_pruned_config_saves_weights_with_the_requested_sparsity(tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  config = load_config('configs/mnist_cnn_pruned.py', 'tiny', **{'data.dir': str(shared_data('mnist'))})
  result = trainer.train_and_evaluate(config, workdir)
  assert np.isfinite(result['eval/loss'])
  params, _, step = posttrain.load_variables(workdir)
  report = prune.sparsity_report(params)
  assert step == config.num_train_steps
  assert report['zeros'] == round(config.prune.target_sparsity * report['size'])
  assert set(report['layers']) == {'Conv_0/kernel', 'Conv_1/kernel', 'Dense_0/kernel', 'Dense_1/kernel'}
  assert np.all(params['Dense_1']['bias'] != 0)  # biases are never pruned
  assert prune.main(['--workdir', workdir]) == 0
  assert 'global sparsity 0.9000' in capsys.readouterr().out
  assert prune.main(['--workdir', str(tmp_path / 'missing')]) == 2
  assert capsys.readouterr().err.startswith('error: ')
