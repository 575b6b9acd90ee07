"""RNN layers and heads against hand-run references: numpy cells, hand-flipped sequences, padding."""
import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models import rnn

PRESETS = ['lstm_classifier', 'gru_classifier', 'bilstm_classifier', 'lstm_lm', 'gru_lm']
SMALL = dict(vocab_size=50, embed_dim=8, hidden_size=16)


def _tokens(rng, lengths, t, vocab=50):
  """Right-padded ids (pad 0) and the mask for ``lengths``."""
  mask = np.arange(t)[None, :] < np.asarray(lengths)[:, None]
  tokens = np.where(mask, rng.integers(1, vocab, (len(lengths), t)), 0).astype(np.int32)
  return tokens, mask


def _n_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize('name', PRESETS)
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_preset_shapes_and_dtypes(name, dtype):
  model = models.build(name, dtype=dtype)
  tokens = jax.ShapeDtypeStruct((3, 11), jnp.int32)
  mask = jax.ShapeDtypeStruct((3, 11), jnp.bool_)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), tokens, mask)
  out = jax.eval_shape(functools.partial(model.apply, train=False), variables, tokens, mask)
  expected = (3, model.num_classes) if name.endswith('classifier') else (3, 11, model.vocab_size)
  assert out.shape == expected and out.dtype == jnp.float32
  assert {x.dtype for x in jax.tree_util.tree_leaves(variables)} == {jnp.dtype(jnp.float32)}


def test_bilstm_preset_parameter_count():
  # Embedding + per direction 4 gates x (input kernel + recurrent kernel + one bias) + head.
  v, e, h, c = 20000, 300, 256, 2
  expected = v * e + 2 * 4 * (e * h + h * h + h) + 2 * h * c + c
  model = models.build('bilstm_classifier')
  tokens = jax.ShapeDtypeStruct((1, 4), jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.key(0), tokens)
  assert _n_params(variables['params']) == expected


@pytest.mark.parametrize('name', PRESETS)
def test_small_presets_run_in_bf16(name):
  # One layer keeps it quick; stacking is covered by the padding and causality tests.
  model = models.build(name, dtype=jnp.bfloat16, num_layers=1, **SMALL)
  tokens, mask = _tokens(np.random.default_rng(0), [5, 2, 0], 6)
  variables = model.init(jax.random.key(0), tokens, mask)
  out = model.apply(variables, tokens, mask, train=True, rngs={'dropout': jax.random.key(1)})
  assert out.dtype == jnp.float32 and np.isfinite(np.asarray(out)).all()


def test_binary_classifier_gives_one_logit_per_example():
  model = models.build('lstm_classifier', num_classes=1, **SMALL)
  tokens, mask = _tokens(np.random.default_rng(0), [4, 2], 5)
  variables = model.init(jax.random.key(0), tokens, mask)
  assert model.apply(variables, tokens, mask).shape == (2,)


@pytest.mark.parametrize('cell,bidirectional,pooling', [
    ('lstm', False, 'last'), ('lstm', True, 'last'), ('gru', True, 'last'),
    ('lstm', True, 'attention')])
def test_classifier_ignores_padding(cell, bidirectional, pooling):
  model = rnn.RNNClassifier(num_layers=2, cell=cell, bidirectional=bidirectional, num_classes=3,
                            pooling=pooling, **SMALL)
  rng = np.random.default_rng(0)
  lengths = [7, 3, 1, 5]
  tokens, mask = _tokens(rng, lengths, 7)
  variables = model.init(jax.random.key(0), tokens, mask)
  apply = jax.jit(model.apply)
  ref = np.asarray(apply(variables, tokens, mask))

  # More padding on the right.
  wide_tokens = np.pad(tokens, ((0, 0), (0, 6)))
  wide_mask = np.pad(mask, ((0, 0), (0, 6)))
  np.testing.assert_allclose(apply(variables, wide_tokens, wide_mask), ref, rtol=1e-5, atol=1e-6)
  # Padded positions holding arbitrary (non-pad) ids.
  junk = np.where(wide_mask, wide_tokens, rng.integers(1, 50, wide_tokens.shape)).astype(np.int32)
  np.testing.assert_allclose(apply(variables, junk, wide_mask), ref, rtol=1e-5, atol=1e-6)
  # A sequence alone, unpadded and without a mask (one check: each length recompiles).
  alone = model.apply(variables, tokens[1:2, :3])
  np.testing.assert_allclose(alone[0], ref[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('pooling', ['last', 'attention'])
def test_empty_sequence_is_finite_with_finite_gradients(pooling):
  model = rnn.RNNClassifier(bidirectional=True, pooling=pooling, **SMALL)
  tokens, mask = _tokens(np.random.default_rng(0), [3, 0], 4)
  variables = model.init(jax.random.key(0), tokens, mask)
  grads = jax.grad(lambda p: model.apply({'params': p}, tokens, mask).sum())(variables['params'])
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))


def _one_way(cell, hidden, params, x):
  """A fresh forward-only nn.RNN run on ``x`` with the given cell parameters."""
  return nn.RNN(rnn.CELLS[cell](hidden)).apply({'params': {'cell': params}}, x)


def _flip_prefixes(x, lengths):
  """Reverses each sequence's first ``length`` steps, leaving its padding in place."""
  out = np.array(x)
  for b, n in enumerate(lengths):
    out[b, :n] = out[b, :n][::-1]
  return out


@pytest.mark.parametrize('cell', ['lstm', 'gru'])
def test_bidirectional_layer_equals_two_one_way_layers(cell):
  hidden, lengths = 6, [5, 2, 4]
  x = np.random.default_rng(1).normal(size=(3, 5, 4)).astype(np.float32)
  layer = rnn.RNNLayer(hidden, cell=cell, bidirectional=True)
  params = layer.init(jax.random.key(0), x, jnp.array(lengths))['params']
  y = np.asarray(layer.apply({'params': params}, x, jnp.array(lengths)))

  forward = np.asarray(_one_way(cell, hidden, params['forward']['cell'], x))
  backward = _flip_prefixes(
      _one_way(cell, hidden, params['backward']['cell'], _flip_prefixes(x, lengths)), lengths)
  for b, n in enumerate(lengths):
    np.testing.assert_allclose(y[b, :n, :hidden], forward[b, :n], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y[b, :n, hidden:], backward[b, :n], rtol=1e-5, atol=1e-6)


def test_bidirectional_classifier_reads_forward_end_and_backward_start():
  model = rnn.RNNClassifier(bidirectional=True, num_classes=3, **SMALL)
  hidden, lengths = SMALL['hidden_size'], [6, 2, 4]
  tokens, mask = _tokens(np.random.default_rng(2), lengths, 6)
  params = model.init(jax.random.key(0), tokens, mask)['params']
  logits = model.apply({'params': params}, tokens, mask)

  x = np.asarray(params['Embed_0']['embedding'])[tokens]
  layer = params['encoder']['layer_0']
  forward = np.asarray(_one_way('lstm', hidden, layer['forward']['cell'], x))
  backward = _flip_prefixes(
      _one_way('lstm', hidden, layer['backward']['cell'], _flip_prefixes(x, lengths)), lengths)
  h = np.stack([np.concatenate([forward[b, n - 1], backward[b, 0]]) for b, n in enumerate(lengths)])
  expected = h @ np.asarray(params['head']['kernel']) + np.asarray(params['head']['bias'])
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_attention_pooling_equals_a_numpy_reference():
  """Masked softmax of v.tanh(W y_t) over the real positions, then tanh(A c + a), then the head."""
  model = rnn.RNNClassifier(bidirectional=True, num_classes=3, pooling='attention', **SMALL)
  lengths = [6, 2, 4]
  tokens, mask = _tokens(np.random.default_rng(4), lengths, 6)
  variables = model.init(jax.random.key(0), tokens, mask)
  logits, state = model.apply(variables, tokens, mask, mutable=['intermediates'])
  p = jax.tree_util.tree_map(np.asarray, variables['params'])
  encoded = rnn.RNNEncoder(SMALL['hidden_size'], bidirectional=True).apply(
      {'params': p['encoder']}, p['Embed_0']['embedding'][tokens], jnp.array(lengths))
  expected = []
  for b, n in enumerate(lengths):
    ys = np.asarray(encoded[b, :n])
    scores = np.tanh(ys @ p['attn_hidden']['kernel']) @ p['attn_score']['kernel'][:, 0]
    w = np.exp(scores - scores.max())
    w /= w.sum()
    hidden = np.tanh((w @ ys) @ p['pre_head']['kernel'] + p['pre_head']['bias'])
    expected.append(hidden @ p['head']['kernel'] + p['head']['bias'])
  np.testing.assert_allclose(logits, np.stack(expected), rtol=1e-5, atol=1e-5)
  weights = np.asarray(state['intermediates']['attention'][0])
  np.testing.assert_allclose(weights.sum(-1), 1, rtol=1e-6)
  assert np.all(weights[np.asarray(mask) == 0] == 0)


def test_unknown_pooling_is_an_error():
  tokens = jnp.ones((1, 3), jnp.int32)
  with pytest.raises(ValueError, match='pooling'):
    rnn.RNNClassifier(pooling='mean', **SMALL).init(jax.random.key(0), tokens)


def _sigmoid(z):
  return 1 / (1 + np.exp(-z))


def _lstm_numpy(p, xs):
  """The textbook LSTM (Hochreiter & Schmidhuber; gates i, f, g, o), one step at a time."""
  k = lambda name: np.asarray(p[name]['kernel'], np.float64)
  bias = lambda name: np.asarray(p[name]['bias'], np.float64)
  h = c = np.zeros((xs.shape[0], k('hi').shape[0]))
  out = []
  for x in np.moveaxis(xs.astype(np.float64), 1, 0):
    i = _sigmoid(x @ k('ii') + h @ k('hi') + bias('hi'))
    f = _sigmoid(x @ k('if') + h @ k('hf') + bias('hf'))
    g = np.tanh(x @ k('ig') + h @ k('hg') + bias('hg'))
    o = _sigmoid(x @ k('io') + h @ k('ho') + bias('ho'))
    c = f * c + i * g
    h = o * np.tanh(c)
    out.append(h)
  return np.stack(out, 1)


def _gru_numpy(p, xs):
  """The GRU of Cho et al. as PyTorch writes it: n = tanh(W_in x + b_in + r * (W_hn h + b_hn))."""
  k = lambda name: np.asarray(p[name]['kernel'], np.float64)
  bias = lambda name: np.asarray(p[name]['bias'], np.float64)
  h = np.zeros((xs.shape[0], k('hr').shape[0]))
  out = []
  for x in np.moveaxis(xs.astype(np.float64), 1, 0):
    r = _sigmoid(x @ k('ir') + bias('ir') + h @ k('hr'))
    z = _sigmoid(x @ k('iz') + bias('iz') + h @ k('hz'))
    n = np.tanh(x @ k('in') + bias('in') + r * (h @ k('hn') + bias('hn')))
    h = (1 - z) * n + z * h
    out.append(h)
  return np.stack(out, 1)


@pytest.mark.parametrize('cell,reference', [('lstm', _lstm_numpy), ('gru', _gru_numpy)])
def test_cell_matches_numpy(cell, reference):
  xs = np.random.default_rng(3).normal(size=(2, 6, 5)).astype(np.float32)
  layer = rnn.RNNLayer(7, cell=cell)
  params = layer.init(jax.random.key(0), xs)['params']
  # Non-zero biases so every bias term is exercised.
  params = jax.tree_util.tree_map_with_path(
      lambda path, v: v + 0.3 if path[-1].key == 'bias' else v, params)
  y = layer.apply({'params': params}, xs)
  np.testing.assert_allclose(y, reference(params['forward']['cell'], xs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('cell', ['lstm', 'gru'])
def test_language_model_is_causal(cell):
  model = rnn.RNNLM(cell=cell, num_layers=2, **SMALL)
  tokens, _ = _tokens(np.random.default_rng(4), [8, 8], 8)
  variables = model.init(jax.random.key(0), tokens)
  apply = jax.jit(model.apply)
  ref = np.asarray(apply(variables, tokens))
  assert ref.shape == (2, 8, SMALL['vocab_size'])
  changed = tokens.copy()
  changed[:, 5] = (changed[:, 5] % 49) + 1  # a different non-pad id
  out = np.asarray(apply(variables, changed))
  np.testing.assert_array_equal(out[:, :5], ref[:, :5])
  assert np.abs(out[:, 5:] - ref[:, 5:]).max(axis=-1).min() > 0


def test_dropout_only_in_train_mode():
  model = models.build('lstm_lm', num_layers=2, **SMALL)
  tokens, _ = _tokens(np.random.default_rng(5), [6, 6], 6)
  variables = model.init(jax.random.key(0), tokens)
  apply = jax.jit(model.apply, static_argnames='train')
  eval_out = apply(variables, tokens)
  np.testing.assert_array_equal(eval_out, apply(variables, tokens, train=False))
  train_a = apply(variables, tokens, train=True, rngs={'dropout': jax.random.key(1)})
  train_b = apply(variables, tokens, train=True, rngs={'dropout': jax.random.key(2)})
  assert not np.allclose(train_a, eval_out) and not np.allclose(train_a, train_b)


def test_word_dropout_replaces_real_tokens_with_unk_only_in_training():
  model = rnn.RNNClassifier(bidirectional=True, word_dropout_rate=1.0, unk_id=1, **SMALL)
  tokens, mask = _tokens(np.random.default_rng(6), [5, 2, 4], 6)
  variables = model.init(jax.random.key(0), tokens, mask)
  plain = rnn.RNNClassifier(bidirectional=True, **SMALL)
  # Rate 1: every real token is <unk>, the padding is untouched.
  all_unk = np.where(mask, 1, tokens).astype(np.int32)
  np.testing.assert_allclose(
      model.apply(variables, tokens, mask, train=True, rngs={'dropout': jax.random.key(1)}),
      plain.apply(variables, all_unk, mask), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(model.apply(variables, tokens, mask),
                                plain.apply(variables, tokens, mask))  # eval: no word dropout
  # Rate 0.5: about half the real tokens change, under the dropout rng.
  half = rnn.RNNClassifier(word_dropout_rate=0.5, **SMALL)
  big = np.random.default_rng(7).integers(2, 50, (64, 32)).astype(np.int32)
  seen = {}
  def spy(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Embed) and context.method_name == '__call__':
      seen['tokens'] = np.asarray(args[0])
    return next_fun(*args, **kwargs)
  with nn.intercept_methods(spy):
    half.init_with_output({'params': jax.random.key(0), 'dropout': jax.random.key(3)}, big,
                          train=True)
  frac = (seen['tokens'] == 1).mean()
  assert 0.45 < frac < 0.55 and np.all((seen['tokens'] == big) | (seen['tokens'] == 1))


def test_unknown_cell_is_an_error():
  with pytest.raises(ValueError, match='unknown cell'):
    rnn.RNNLM(cell='rnn', **SMALL).init(jax.random.key(0), jnp.zeros((1, 3), jnp.int32))


@pytest.mark.parametrize('feature_major', [True, False])
@pytest.mark.parametrize('reverse', [False, True])
@pytest.mark.parametrize('cell', ['lstm', 'gru'])
def test_hoisted_layer_equals_the_flax_cell_values_and_gradients(cell, reverse, feature_major):
  """HoistedLSTM / HoistedGRU (hoisted input matmul, hand-written backward) against
  nn.RNN(OptimizedLSTMCell) / nn.RNN(GRUCell) with the same parameters, in both layouts of
  the recurrence: the same parameter names, shapes and initial values, then outputs on
  real positions, every parameter gradient and the input gradient."""
  import flax.linen as nn
  from models.rnn import HoistedGRU, HoistedLSTM
  x = jax.random.normal(jax.random.key(0), (3, 7, 5))
  lengths = jnp.array([7, 4, 1])
  real = (jnp.arange(7)[None] < lengths[:, None])[..., None]
  layer, reference = {'lstm': (HoistedLSTM, nn.OptimizedLSTMCell), 'gru': (HoistedGRU, nn.GRUCell)}[cell]
  ours = layer(6, reverse=reverse, feature_major=feature_major)
  ref = nn.RNN(reference(6), reverse=reverse, keep_order=True)
  params = ours.init(jax.random.key(1), x, lengths)
  ref_params = ref.init(jax.random.key(1), x, seq_lengths=lengths)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(ref_params)
  for u, v in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref_params)):
    np.testing.assert_array_equal(u, v)  # same initialisers, same draws
  # Non-zero biases, so every bias term (the GRU's b_hn inside r * (.)) is exercised.
  params = jax.tree_util.tree_map(
      lambda p: p + 0.2 * jax.random.normal(jax.random.key(5), p.shape), params)
  a = ours.apply(params, x, lengths) * real
  b = ref.apply(params, x, seq_lengths=lengths) * real
  np.testing.assert_allclose(a, b, atol=1e-6)
  weights = jax.random.normal(jax.random.key(2), a.shape)  # a loss that weighs every output
  ga = jax.grad(lambda p, x: (ours.apply(p, x, lengths) * real * weights).sum(), (0, 1))(params, x)
  gb = jax.grad(lambda p, x: (ref.apply(p, x, seq_lengths=lengths) * real * weights).sum(),
                (0, 1))(params, x)
  assert np.abs(ga[1]).max() > 0.01  # the input gradient (hand-written too) is not trivially 0
  for u, v in zip(jax.tree_util.tree_leaves(ga), jax.tree_util.tree_leaves(gb)):
    assert np.abs(v).max() > 0  # every parameter gets a gradient
    np.testing.assert_allclose(u, v, atol=1e-5)


_DIMS = (7, 3, 5, 6)  # steps, batch, input width, hidden units
_GATES = {'lstm': 4, 'gru': 3}


def _layer(cell):
  from models.rnn import gru_time_major, lstm_time_major
  return {'lstm': lstm_time_major, 'gru': gru_time_major}[cell]


def _layer_args(cell):
  """Random ``(x, W_i, b, W_h)`` for the LSTM, ``(x, W_i, b_i, W_h, b_hn)`` for the GRU."""
  steps, batch, d, h = _DIMS
  g = _GATES[cell] * h
  shapes = [(steps, batch, d), (d, g), (g,), (h, g)] + ([(h,)] if cell == 'gru' else [])
  scales = [1.0, 0.5, 0.1, 0.5, 0.1]
  keys = jax.random.split(jax.random.key(3), len(shapes))
  return tuple(jax.random.normal(k, s) * c for k, s, c in zip(keys, shapes, scales))


def _dot_shapes(cell, backend, monkeypatch, **kwargs):
  """The operand shapes of the dots in one layer's gradient, traced as on ``backend``:
  ``(inside the scans, after them)``."""
  from train.benchmark import sub_jaxprs
  monkeypatch.setattr(jax, 'default_backend', lambda: backend)
  args = tuple(jnp.ones(a.shape) for a in _layer_args(cell))
  argnums = tuple(range(len(args)))
  jaxpr = jax.make_jaxpr(jax.grad(lambda *a: _layer(cell)(*a, **kwargs).sum(), argnums))(*args)
  in_loop, outside = [], []

  def walk(jaxpr, found):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'dot_general':
        found.append(tuple(tuple(v.aval.shape) for v in eqn.invars))
      for sub in sub_jaxprs(eqn.params):
        walk(sub, in_loop if eqn.primitive.name == 'scan' else found)
  walk(jaxpr.jaxpr, outside)
  return sorted(set(in_loop)), outside


@pytest.mark.parametrize('cell', ['lstm', 'gru'])
def test_recurrence_runs_feature_major_on_cpu(cell, monkeypatch):
  """Each step's matmul puts the G gate rows on the long side ([G, H] x [H, B] forward,
  [H, G] x [G, B] backward), the layout XLA:CPU runs 1.3-1.4x faster than [B, H] x [H, G]
  for the LSTM; the loops hold no other dot, and after them each weight gradient is one dot
  over the T*B columns."""
  steps, batch, d, h = _DIMS
  g = _GATES[cell] * h
  in_loop, outside = _dot_shapes(cell, 'cpu', monkeypatch)
  assert in_loop == [((h, g), (g, batch)), ((g, h), (h, batch))]
  # the weight gradients: dz [G, T*B] times h_prev [T*B, H] and x [T*B, D]
  assert ((g, steps * batch), (steps * batch, h)) in outside
  assert ((g, steps * batch), (steps * batch, d)) in outside


@pytest.mark.parametrize('cell', ['lstm', 'gru'])
@pytest.mark.parametrize('backend,kwargs', [('gpu', {}), ('tpu', {}), ('cpu', {'feature_major': False})])
def test_recurrence_runs_batch_major_on_accelerators(cell, backend, kwargs, monkeypatch):
  """GPUs and TPUs (or feature_major=False) keep cuDNN's layout: h W_h ([B, H] x [H, G]) and
  dz W_h^T in the loops; a TPU would pad a feature-major state's batch of 32 to 128 lanes."""
  steps, batch, d, h = _DIMS
  g = _GATES[cell] * h
  in_loop, outside = _dot_shapes(cell, backend, monkeypatch, **kwargs)
  assert in_loop == [((batch, h), (h, g)), ((batch, g), (g, h))]
  assert ((h, steps * batch), (steps * batch, g)) in outside  # h_prev^T dz


@pytest.mark.parametrize('feature_major', [True, False])
@pytest.mark.parametrize('cell', ['lstm', 'gru'])
def test_bf16_layer_matches_float32_within_bf16_rounding(cell, feature_major):
  """A bf16 layer keeps its cell state and gate math in float32 (as cuDNN and oneDNN do), so
  its outputs and gradients stay within bf16 rounding of the float32 layer's."""
  args = _layer_args(cell)
  half = tuple(a.astype(jnp.bfloat16) for a in args)
  exact = tuple(a.astype(jnp.float32) for a in half)  # the same rounded inputs, in float32
  run = lambda *a: _layer(cell)(*a, feature_major=feature_major)
  y, y32 = run(*half), run(*exact)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y, np.float32), y32, atol=2e-2)
  w = jax.random.normal(jax.random.key(4), y.shape)
  loss = lambda *a: (run(*a).astype(jnp.float32) * w).sum()
  argnums = tuple(range(len(args)))
  grads = jax.grad(loss, argnums)(*half)
  grads32 = jax.grad(loss, argnums)(*exact)
  for g, g32 in zip(grads, grads32):
    assert g.dtype == jnp.bfloat16
    scale = np.abs(g32).max()
    np.testing.assert_allclose(np.asarray(g, np.float32) / scale, g32 / scale, atol=3e-2)


@pytest.mark.parametrize('cell', ['lstm', 'gru'])
def test_bf16_layer_compiles_every_dot_to_bf16_on_cpu(cell):
  """XLA:CPU converts a 16-bit dot's operands to float32 when they are written-out transposes:
  the feature-major input projection ``W_i^T x^T`` was one (17 against 9 ms for the 512-unit
  layer's). In the compiled gradient of a bf16 layer, in the CPU's layout, every dot takes
  bf16 operands and returns float32."""
  from tests.helpers import compiled_dots
  half = tuple(a.astype(jnp.bfloat16) for a in _layer_args(cell))
  argnums = tuple(range(len(half)))
  grad = jax.jit(jax.grad(lambda *a: _layer(cell)(*a).astype(jnp.float32).sum(), argnums))
  types = [dot[:3] for dot in compiled_dots(grad.lower(*half).compile().as_text())]
  assert len(types) >= 6 and set(types) == {('bf16', 'bf16', 'f32')}, types


@pytest.mark.parametrize('cell', ['lstm', 'gru'])
def test_bf16_layer_writes_no_converted_stacked_output_on_cpu(cell):
  """XLA:CPU has no bf16 dynamic-update-slice: writing one step of a bf16 stacked output
  converts the whole ``[T, ...]`` buffer to float32 and back, every step (a 128-step layer ran
  5x slower in bf16 than in float32). The loops store 16-bit steps as uint16 bits instead, so
  no compiled update of a stacked output converts it."""
  half = tuple(a.astype(jnp.bfloat16) for a in _layer_args(cell))
  argnums = tuple(range(len(half)))
  grad = jax.jit(jax.grad(lambda *a: _layer(cell)(*a).astype(jnp.float32).sum(), argnums))
  text = grad.lower(*half).compile().as_text()
  steps = _DIMS[0]
  updates = [c for c in text.split('\n\n') if 'dynamic-update-slice(' in c]
  assert len(updates) >= 3, 'the loops store their steps with dynamic-update-slice'
  whole = re.compile(rf'= (f32|bf16)\[{steps},[^\]]*\]\S* convert\(')
  for computation in updates:
    assert not whole.search(computation), computation
    assert not re.search(rf'= bf16\[{steps},', computation), computation