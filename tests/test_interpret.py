"""train/interpret.py: attributions, attention maps, activation statistics, and the command."""
import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from tests.conftest import shared_data
from tests.helpers import load_config
from train import interpret, interpret_run, trainer


def _normal(shape, seed):
  # numpy draws: no per-shape XLA compilations, which dominate a small test's time on CPU
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def _init(model, *args, scale=0.1, seed=0, **kw):
  """Random variables drawn with numpy for ``model.init``'s shapes (compiling the random
  initialisers costs seconds per model on CPU). Biases are random and non-zero: a ReLU net
  with zero biases is positively homogeneous, which would test IG on a straight line with a
  kink at the zero baseline."""
  shapes = jax.eval_shape(functools.partial(model.init, **kw), jax.random.key(0), *args)
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    z = rng.normal(size=s.shape).astype(np.float32)
    name = str(getattr(path[-1], 'key', path[-1]))
    if name == 'kernel':
      return jnp.asarray(z / np.sqrt(np.prod(s.shape[:-1])))
    if name == 'scale':
      return jnp.asarray(1 + scale * z)
    return jnp.asarray(z if name == 'embedding' else scale * z)
  return jax.tree_util.tree_map_with_path(leaf, shapes)


def test_ig_completeness_cnn():
  model = models.CNN(num_classes=10)
  x = _normal((3, 12, 12, 1), 1)
  variables = _init(model, x)
  f = interpret.logit_score(model)
  # The class whose logit moves most from baseline to input: a non-trivial total.
  apply = jax.jit(model.apply)
  delta = np.asarray(apply(variables, x) - apply(variables, jnp.zeros_like(x)))
  target = jnp.asarray(np.abs(delta).argmax(-1))
  # ReLU kinks make the quadrature error fall as ~1/steps: 128 steps keep it well under 1%.
  attr = interpret.integrated_gradients(f, x, variables, target, {}, steps=128, batch_size=43)
  assert attr.shape == x.shape
  gap = interpret.completeness_gap(f, x, attr, variables, target, {})
  np.testing.assert_allclose(gap['delta'], delta[np.arange(3), target], rtol=1e-5)
  assert np.all(np.abs(gap['delta']) > 0.1), gap
  assert np.all(gap['relative'] < 0.01), gap


@pytest.mark.parametrize('rule', interpret.RULES)
def test_path_weights(rule):
  alphas, weights = interpret.path_weights(8, rule)
  assert len(alphas) == (9 if rule == 'trapezoid' else 8)
  np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)
  # int_0^1 alpha = 1/2: exact for the second-order rules, off by -+1/(2 steps) for the ends.
  expected = {'trapezoid': 0.5, 'midpoint': 0.5, 'riemann': 0.5 + 1 / 16, 'left': 0.5 - 1 / 16}
  np.testing.assert_allclose((weights * alphas).sum(), expected[rule], rtol=1e-6)
  assert np.all((alphas >= 0) & (alphas <= 1))


def test_ig_completeness_transformer_classifier_embeddings():
  model = models.build('bert_classifier', num_layers=1, num_heads=2, hidden_size=16, mlp_dim=32,
                       vocab_size=30, max_len=16, num_classes=3)
  tokens = jnp.asarray(np.random.default_rng(3).integers(1, 30, (2, 9)), jnp.int32)
  mask = jnp.array([[True] * 9, [True] * 5 + [False] * 4])
  variables = _init(model, tokens, scale=0.05, mask=mask)
  emb = interpret.embed(model, variables, tokens, mask)
  assert emb.shape == (2, 9, 16)
  # The override reproduces the model exactly at the embeddings' own value.
  f = interpret.logit_score(model)
  extra = {'tokens': tokens, 'mask': mask}
  logits = jax.jit(model.apply)(variables, tokens, mask=mask)
  np.testing.assert_allclose(interpret.scores(f, emb, variables, jnp.array([1, 2]), extra),
                             logits[jnp.arange(2), jnp.array([1, 2])], rtol=1e-5, atol=1e-6)
  attr = interpret.integrated_gradients(f, emb, variables, jnp.array([1, 2]), extra, steps=32)
  gap = interpret.completeness_gap(f, emb, attr, variables, jnp.array([1, 2]), extra)
  assert np.all(gap['relative'] < 0.01), gap
  per_token = np.asarray(attr.sum(-1))
  # Padding cannot matter: masked as keys, and CLS pooling never reads its positions.
  np.testing.assert_allclose(per_token[1, 5:], 0.0, atol=1e-7)


def test_saliency_matches_finite_differences():
  model = models.MLP(num_classes=3, hidden_sizes=(16,), activation='tanh')
  x = _normal((2, 4, 4, 3), 1)
  variables = _init(model, x, scale=0.0)
  f = interpret.logit_score(model)
  target = jnp.array([2, 0])
  grad = np.asarray(interpret.input_gradients(f, x, variables, target, {}))
  eps = 1e-2
  n = int(np.prod(x.shape[1:]))
  # One batch holds every +-eps perturbation of every example (the MLP sees each row alone).
  d = eps * np.eye(n, dtype=np.float32).reshape((n,) + x.shape[1:])
  xn = np.asarray(x)[:, None]
  xs = np.concatenate([xn + d, xn - d], axis=1).reshape((-1,) + x.shape[1:])  # [B * 2n, ...]
  scores = interpret.scores(f, jnp.asarray(xs), variables, jnp.repeat(target, 2 * n), {})
  scores = np.asarray(scores, np.float64)
  scores = scores.reshape(len(x), 2, n)
  fd = ((scores[:, 0] - scores[:, 1]) / (2 * eps)).reshape(x.shape)
  np.testing.assert_allclose(grad, fd, atol=1e-4 * np.abs(fd).max() + 1e-5)
  sal = interpret.saliency(f, x, variables, target, {})
  assert sal.shape == (2, 4, 4)
  np.testing.assert_allclose(sal, np.abs(fd).max(-1), atol=1e-4 * np.abs(fd).max() + 1e-5)


def _reproduce(params, path, rec):
  """The attention module's output from the recomputed weights: (weights @ V) through ``out``."""
  for part in path.split('/'):
    params = params[part]
  b, t = rec['output'].shape[:2]
  y = jnp.einsum('bnts,bsnh->btnh', rec['weights'], rec['values']).reshape(b, t, -1)
  return y @ params['out']['kernel'] + params['out']['bias']


def test_attention_maps_causal_lm():
  # Rotary positions and remat: the paths that capture_attention must undo or redo.
  lm = models.TransformerLM(vocab_size=13, max_len=16, num_layers=2, num_heads=2, hidden_size=16,
                            mlp_dim=32, position='rotary', remat='full')
  tokens = jnp.asarray(np.random.default_rng(3).integers(0, 13, (2, 10)), jnp.int32)
  variables = _init(lm, tokens, scale=0.3)
  caps = interpret.capture_attention(lm, variables, tokens)
  assert list(caps) == ['decoder/layer_0/attention', 'decoder/layer_1/attention']
  for path, rec in caps.items():
    w = np.asarray(rec['weights'])
    assert w.shape == (2, 2, 10, 10)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(w, k=1) == 0)  # causal: no query sees a later key
    assert w[:, :, 5, :6].std() > 1e-3    # and not merely uniform
    np.testing.assert_allclose(_reproduce(variables['params'], path, rec), rec['output'],
                               atol=1e-5, rtol=1e-4)


def test_attention_maps_ignore_padded_keys():
  model = models.build('bert_classifier', num_layers=1, num_heads=4, hidden_size=16, mlp_dim=32,
                       vocab_size=30, max_len=16, num_classes=2)
  tokens = jnp.asarray(np.random.default_rng(4).integers(1, 30, (2, 8)), jnp.int32)
  mask = jnp.array([[True] * 8, [True] * 3 + [False] * 5])
  variables = _init(model, tokens, scale=0.3, mask=mask)
  caps = interpret.capture_attention(model, variables, tokens, mask)
  (path, rec), = caps.items()
  w = np.asarray(rec['weights'])
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  assert np.all(w[1, :, :, 3:] == 0) and np.all(w[0] > 0)
  np.testing.assert_allclose(_reproduce(variables['params'], path, rec), rec['output'],
                             atol=1e-5, rtol=1e-4)


class _ReLULayer(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.relu(nn.Dense(6, name='dense')(x))


class _Net(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Dense(2, name='head')(_ReLULayer(name='hidden')(x))


def test_activation_stats_of_relu_layer_match_numpy():
  x = np.linspace(-2, 2, 5 * 4, dtype=np.float32).reshape(5, 4)
  model = _Net()
  variables = _init(model, x)
  kernel = np.arange(24, dtype=np.float32).reshape(4, 6) / 10 - 1.2
  kernel[:, 5] = 0  # with bias -0.5: unit 5 never fires
  bias = np.array([0.1, -0.2, 0.0, 0.3, -5.0, -0.5], np.float32)
  variables['params']['hidden']['dense'] = {'kernel': jnp.asarray(kernel),
                                            'bias': jnp.asarray(bias)}
  rows = {r['layer']: r for r in interpret.activation_stats(model, variables, jnp.asarray(x))}
  assert list(rows) == ['hidden/dense', 'hidden', 'head', '(output)']
  a = np.maximum(x.astype(np.float64) @ kernel + bias, 0)
  r = rows['hidden']
  assert r['shape'] == '5x6'
  np.testing.assert_allclose([r['mean'], r['std'], r['max_abs'], r['frac_zero']],
                             [a.mean(), a.std(), np.abs(a).max(), np.mean(a == 0)], rtol=1e-5)
  assert r['frac_dead_units'] == pytest.approx(np.mean(np.all(a <= 0, axis=0)))
  assert r['frac_dead_units'] >= 1 / 6
  pre = x.astype(np.float64) @ kernel + bias
  assert rows['hidden/dense']['frac_nonpos'] == pytest.approx(np.mean(pre <= 0))


def _train(tmp_path, config_file, data):
  config = load_config(config_file, 'tiny', **{'data.dir': str(shared_data(data))})
  workdir = str(tmp_path / 'run')
  # One device: a smaller program to compile than the 8-device mesh, the same run otherwise.
  trainer.train_and_evaluate(config, workdir, trainer.RunControl(devices=jax.devices()[:1]))
  return workdir


def test_command_on_a_tiny_mnist_cnn(tmp_path, capsys):
  workdir = _train(tmp_path, 'configs/mnist_cnn.py', 'mnist')
  out = tmp_path / 'figs'
  rc = interpret_run.main(['--workdir', workdir, '--out', str(out), '--num_examples', '2',
                           '--stats_examples', '8', '--steps', '32'])
  assert rc == 0
  for name in ('saliency.png', 'integrated_gradients.png', 'activations.png'):
    assert (out / name).stat().st_size > 1000
  assert 'Conv_0' in (out / 'activations.csv').read_text()
  ig = json.loads((out / 'integrated_gradients.json').read_text())
  assert len(ig['examples']) == 2 and ig['baseline'] == 'black'
  stdout = capsys.readouterr().out
  assert stdout.count('completeness gap') == 2


def test_command_on_a_tiny_char_transformer(tmp_path):
  workdir = _train(tmp_path, 'configs/shakespeare_gpt.py', 'tinyshakespeare')
  out = tmp_path / 'figs'
  rc = interpret_run.main(['--workdir', workdir, '--out', str(out), '--num_examples', '1',
                           '--steps', '16', '--max_tokens', '24', '--method', 'attention,ig'])
  assert rc == 0
  for name in ('attention_0.png', 'integrated_gradients.png'):
    assert (out / name).stat().st_size > 1000
  ig = json.loads((out / 'integrated_gradients.json').read_text())
  assert ig['examples'][0]['relative_gap'] < 0.05


def test_command_bad_workdir(tmp_path, capsys):
  out = str(tmp_path / 'o')
  assert interpret_run.main(['--workdir', str(tmp_path / 'missing'), '--out', out]) == 2
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'config.json').write_text('{"task": "classification"}')
  assert interpret_run.main(['--workdir', str(tmp_path / 'empty'), '--out', out]) == 2
  assert interpret_run.main(['--workdir', str(tmp_path), '--out', out, '--method', 'ig,shap']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 3 and all(line.startswith('error: ') for line in err)
  assert 'no checkpoint' in err[1]
