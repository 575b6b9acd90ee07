"""Adversarial training on embeddings (``adversarial_epsilon``, Miyato et al. 2017)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models import mlp, rnn
from train import steps, tasks
from train.state import init_variables, make_init_fn
from train.validate import ConfigError, check_config
from tests.helpers import load_config

VOCAB = 40


def _model():
  # No dropout of any kind: the clean and perturbed passes then see the same network.
  return rnn.RNNClassifier(vocab_size=VOCAB, embed_dim=8, hidden_size=8, bidirectional=True,
                           pooling='attention')


def _batch(lengths, t=7):
  rng = np.random.default_rng(0)
  # Distinct tokens within each row, so a row's embedding-table gradient is its
  # per-position gradient, row by row (the reference below relies on it).
  tokens = np.stack([rng.permutation(np.arange(2, VOCAB))[:t] for _ in lengths])
  mask = np.arange(t)[None, :] < np.asarray(lengths)[:, None]
  return {'inputs': jnp.asarray(np.where(mask, tokens, 0), jnp.int32), 'mask': jnp.asarray(mask),
          'label': jnp.asarray(rng.integers(0, 2, len(lengths)), jnp.int32)}


def _params(model, batch):
  variables = init_variables(model, batch, jax.random.key(1))
  assert 'perturbations' not in variables  # an input of the adversarial step, never state
  return variables['params']


def test_direction_has_norm_epsilon_per_example_over_all_leaves():
  g = {'a': jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, 5)), jnp.float32),
       'b': jnp.asarray(np.random.default_rng(1).normal(size=(3, 2)), jnp.float32)}
  r = steps._adversarial_direction(g, 0.5)
  norms = np.sqrt((np.asarray(r['a']) ** 2).sum((1, 2)) + (np.asarray(r['b']) ** 2).sum(1))
  np.testing.assert_allclose(norms, 0.5, rtol=1e-6)
  # Same direction as g, example by example.
  scale = np.asarray(r['b'])[:, 0] / np.asarray(g['b'])[:, 0]
  np.testing.assert_allclose(np.asarray(r['a']), np.asarray(g['a']) * scale[:, None, None], rtol=1e-5)


def test_adversarial_term_rises_by_epsilon_times_the_embedding_gradient_norm():
  """First order, for each example alone: L(e + eps g/|g|) - L(e) = eps |g|.

  |g| comes independently from the ordinary parameter gradient: with distinct tokens
  the embedding table's gradient rows are the per-position gradients.
  """
  model, eps = _model(), 1e-3
  batch = _batch([7, 4, 2])
  params = _params(model, batch)
  clean_fn = jax.jit(steps.make_loss_fn(model, tasks.classification))
  adv_fn = jax.jit(steps.make_loss_fn(model, tasks.classification, adversarial_epsilon=eps))
  rng = jax.random.key(0)
  for i in range(3):
    one = jax.tree_util.tree_map(lambda x: x[i:i + 1], batch)
    clean, _ = clean_fn(params, {}, one, rng)
    total, (_, sums) = adv_fn(params, {}, one, rng)
    table_grad = jax.jit(jax.grad(lambda p: clean_fn(p, {}, one, rng)[0]))(params)
    table_grad = table_grad['Embed_0']['embedding']
    rise = float(total - 2 * clean)
    np.testing.assert_allclose(rise, eps * float(jnp.linalg.norm(table_grad)), rtol=2e-2)
    np.testing.assert_allclose(float(sums['loss'][0]), float(clean), rtol=1e-6)  # metrics: clean


def test_adversarial_direction_beats_random_directions_of_the_same_size():
  model, eps = _model(), 0.5
  batch = _batch([7, 5, 6, 3])
  params = _params(model, batch)
  clean_fn = jax.jit(steps.make_loss_fn(model, tasks.classification))
  adv_fn = jax.jit(steps.make_loss_fn(model, tasks.classification, adversarial_epsilon=eps))
  rng = jax.random.key(0)
  clean, _ = clean_fn(params, {}, batch, rng)
  adversarial = float(adv_fn(params, {}, batch, rng)[0] - clean)
  perturbed = jax.jit(lambda p, r: model.apply({'params': p, 'perturbations': r}, batch['inputs'],
                                               mask=batch['mask'], train=True))
  for seed in range(5):
    noise = jax.random.normal(jax.random.key(seed), batch['inputs'].shape + (8,))
    noise = noise * batch['mask'][..., None]
    r = steps._adversarial_direction({'embedded': noise}, eps)
    logits = perturbed(params, r)
    random_loss = float(tasks.classification(logits, batch)[0] * batch['inputs'].shape[0])
    assert adversarial > random_loss > 0


def test_train_step_with_adversarial_loss_lowers_the_loss():
  model = _model()
  batch = _batch([7, 5, 6, 3])
  state = make_init_fn(model, optax.adam(1e-2), batch)(jax.random.key(1))
  step = jax.jit(steps.make_train_step(model, tasks.classification, adversarial_epsilon=0.5))
  first = None
  for _ in range(30):
    state, metrics = step(state, batch, jax.random.key(0))
    first = float(metrics['loss']) if first is None else first
  assert float(metrics['nonfinite']) == 0
  assert float(metrics['loss']) < 0.5 * first


def test_model_without_a_perturbation_point_is_a_clear_error():
  model = mlp.MLP(num_classes=2, hidden_sizes=(8,))
  batch = {'inputs': jnp.ones((2, 3)), 'label': jnp.zeros((2,), jnp.int32)}
  params = init_variables(model, batch, jax.random.key(0))['params']
  loss_fn = steps.make_loss_fn(model, tasks.classification, adversarial_epsilon=0.1)
  with pytest.raises(ValueError, match='perturbation point'):
    loss_fn(params, {}, batch, jax.random.key(0))


def test_negative_epsilon_is_refused():
  config = load_config('configs/sst2_bilstm.py', 'tiny', adversarial_epsilon=-1.0)
  with pytest.raises(ConfigError, match='adversarial_epsilon'):
    check_config(config)
