"""models/linear.py: Dense over token sequences as a 2-D matmul, with the same values and gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from models import linear
from models.linear import cpu_matmul, flat_dot_general, over_rows
from models.transformer import TransformerLM
from tests.helpers import compiled_dot_contractions, compiled_dots
from train.benchmark import sub_jaxprs


def _dense_loss(dot_general):
  dense = nn.Dense(24, dot_general=dot_general)
  x = jax.random.normal(jax.random.key(0), (3, 5, 16))
  params = dense.init(jax.random.key(1), x)
  loss = lambda p, x: jnp.sum(jnp.sin(dense.apply(p, x)))
  return loss, params, x


def test_flat_dense_matches_plain_dense_values_and_gradients():
  flat_loss, params, x = _dense_loss(flat_dot_general)
  plain_loss, _, _ = _dense_loss(None)
  np.testing.assert_allclose(flat_loss(params, x), plain_loss(params, x), rtol=1e-6)
  flat_grads = jax.grad(flat_loss, argnums=(0, 1))(params, x)
  plain_grads = jax.grad(plain_loss, argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(flat_grads), jax.tree.leaves(plain_grads)):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _contracting_dims(fn, *args):
  jaxpr = jax.make_jaxpr(fn)(*args)
  dims = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'dot_general':
        (lc, rc), _ = eqn.params['dimension_numbers']
        dims.append((len(lc), len(rc)))
      for sub in sub_jaxprs(eqn.params):
        walk(sub)
  walk(jaxpr.jaxpr)
  return dims


def test_weight_gradient_contracts_one_flattened_axis():
  # The point of the module: dW = x^T dy over B*T rows (one contracting axis), where the plain
  # Dense contracts B and T separately, which XLA:CPU runs through a transposed copy of dy.
  flat_loss, params, x = _dense_loss(flat_dot_general)
  plain_loss, _, _ = _dense_loss(None)
  assert set(_contracting_dims(jax.grad(flat_loss), params, x)) == {(1, 1)}
  assert (2, 2) in _contracting_dims(jax.grad(plain_loss), params, x)


def test_other_contractions_pass_through():
  a = jax.random.normal(jax.random.key(2), (2, 3, 4, 5))
  b = jax.random.normal(jax.random.key(3), (2, 3, 5, 6))
  batched = (((3,), (2,)), ((0, 1), (0, 1)))
  np.testing.assert_array_equal(flat_dot_general(a, b, batched), lax.dot_general(a, b, batched))
  m = jax.random.normal(jax.random.key(4), (4, 7))
  w = jax.random.normal(jax.random.key(5), (7, 3))
  two_d = (((1,), (0,)), ((), ()))
  np.testing.assert_array_equal(flat_dot_general(m, w, two_d), lax.dot_general(m, w, two_d))


def test_over_rows_restores_the_leading_shape():
  x = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)
  y = over_rows(lambda r: jnp.concatenate([r, r], axis=-1), x)
  assert y.shape == (2, 3, 8)
  np.testing.assert_array_equal(y[..., :4], x)


def test_transformer_lm_gradients_contract_one_axis_per_dot():
  model = TransformerLM(vocab_size=11, num_layers=1, num_heads=2, hidden_size=8, mlp_dim=16,
                        max_len=6)
  tokens = jnp.zeros((2, 6), jnp.int32)
  params = model.init(jax.random.key(0), tokens)
  loss = lambda p: jnp.sum(model.apply(p, tokens) ** 2)
  dims = _contracting_dims(jax.grad(loss), params)
  # Every Dense, the tied output embedding and their gradients: one contracting axis each.
  # (Attention's batched dots also contract one axis.)
  assert dims and all(d == (1, 1) for d in dims), dims


@pytest.mark.parametrize('m,k,n', [(64, 8, 32), (64, 32, 4)])  # x^T, then dy^T written out
def test_cpu_matmul_values_and_gradients_equal_the_plain_dot(m, k, n):
  x = jax.random.normal(jax.random.key(0), (m, k))
  w = jax.random.normal(jax.random.key(1), (k, n))
  dy = jax.random.normal(jax.random.key(2), (m, n))
  y, pull = jax.vjp(cpu_matmul, x, w)
  y_ref, pull_ref = jax.vjp(lambda x, w: x @ w, x, w)
  np.testing.assert_array_equal(y, y_ref)
  for got, want in zip(pull(dy), pull_ref(dy)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # The closed form of the weight gradient, in float64.
  np.testing.assert_allclose(pull(dy)[1], np.asarray(x, np.float64).T @ np.asarray(dy, np.float64),
                             rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('rows,features', [(40, 16), (40, 96)])
def test_float32_dense_weight_gradient_compiles_to_a_plain_dot_on_cpu(monkeypatch, rows, features):
  """As autodiff writes it, ``x^T dy`` contracts the left operand's first dimension, a form
  only Eigen runs on XLA:CPU. ``cpu_matmul`` writes a transpose out first, so the compiled
  weight-gradient dot is a plain ``[M, K] x [K, N]`` one (``[K, N]`` when ``x^T`` is the
  cheaper copy, ``[N, K]`` when ``dy^T`` is); with the plain dot's autodiff it is not."""
  if jax.default_backend() != 'cpu':
    pytest.skip('an XLA:CPU compilation')
  dense = nn.Dense(24, dot_general=flat_dot_general)
  x = jax.random.normal(jax.random.key(0), (3, rows, features))
  params = dense.init(jax.random.key(1), x)
  loss = lambda p, x: jnp.sum(jnp.sin(dense.apply(p, x)))

  def weight_gradient_dots():
    text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile().as_text()
    dots = compiled_dot_contractions(text)
    return dots.get((features, 24), []) + dots.get((24, features), [])

  assert weight_gradient_dots() == [('1', '0')]
  monkeypatch.setattr(linear, 'cpu_float32', lambda *a: False)
  assert weight_gradient_dots() == [('0', '0')]


def test_embed_gathers_float32_rows_then_casts():
  """Same parameters and forward values as ``nn.Embed`` in bf16; the table's gradient is the
  float32 sum of every position's cotangent (a repeated token's too), not a bf16-rounded one."""
  from models.linear import Embed
  ids = jnp.array([[3, 3, 3, 1, 3, 0] * 50])  # token 3 at 200 positions
  ours, plain = (m(num_embeddings=5, features=4, dtype=jnp.bfloat16) for m in (Embed, nn.Embed))
  params = plain.init(jax.random.key(0), ids)
  assert jax.tree_util.tree_structure(ours.init(jax.random.key(0), ids)) == \
      jax.tree_util.tree_structure(params)
  np.testing.assert_array_equal(ours.apply(params, ids), plain.apply(params, ids))
  assert ours.apply(params, ids).dtype == jnp.bfloat16
  cot = jax.random.normal(jax.random.key(1), ids.shape + (4,)).astype(jnp.bfloat16)
  grad = jax.grad(lambda p: jnp.sum(ours.apply(p, ids).astype(jnp.float32) * cot))(params)
  table = np.asarray(grad['params']['embedding'])
  assert table.dtype == np.float32
  want = np.zeros((5, 4))
  np.add.at(want, np.asarray(ids[0]), np.asarray(cot[0], np.float64))
  np.testing.assert_allclose(table, want, rtol=1e-5, atol=1e-5)
  with np.testing.assert_raises(ValueError):
    ours.apply(params, ids.astype(jnp.float32))


def _dot_types(fn, *args):
  """``(lhs dtype, rhs dtype, result dtype)`` of every dot ``fn`` traces."""
  found = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'dot_general':
        found.append(tuple(str(v.aval.dtype) for v in (*eqn.invars, *eqn.outvars)))
      for sub in sub_jaxprs(eqn.params):
        walk(sub)
  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


def _bf16_dense(dot_general):
  dense = nn.Dense(24, dtype=jnp.bfloat16, dot_general=dot_general)
  x = jax.random.normal(jax.random.key(0), (3, 5, 16))
  params = dense.init(jax.random.key(1), x)
  loss = lambda p, x: jnp.sum(jnp.sin(dense.apply(p, x).astype(jnp.float32)))
  return dense, loss, params, x


def test_bf16_dense_on_cpu_runs_all_three_dots_bf16_to_float32(monkeypatch):
  """XLA:CPU runs a bf16 dot in its bf16 kernels only when the dot returns float32 (a bf16
  result makes it a float32 dot of converted operands, no faster). On CPU the forward and both
  gradient dots take bf16 operands and return float32; on accelerators the dot is flax's."""
  dense, loss, params, x = _bf16_dense(flat_dot_general)
  grad = jax.grad(loss, argnums=(0, 1))
  assert _dot_types(grad, params, x) == [('bfloat16', 'bfloat16', 'float32')] * 3
  assert dense.apply(params, x).dtype == jnp.bfloat16
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  _, loss, params, x = _bf16_dense(flat_dot_general)
  assert _dot_types(jax.grad(loss, argnums=(0, 1)), params, x) == \
      [('bfloat16', 'bfloat16', 'bfloat16')] * 3


def test_bf16_dense_input_gradient_compiles_to_a_bf16_dot_on_cpu():
  """Traced types are not the whole story: XLA:CPU converted the operands of ``dy @ w.T`` to
  float32 before the dot (the transposed kernel), so the input gradient of every bf16 Dense ran
  in float32. Written as one dot contracting both last dimensions it stays bf16: in the
  compiled gradient, the dot that returns the input gradient takes bf16 operands."""
  if jax.default_backend() != 'cpu':
    pytest.skip('an XLA:CPU compilation')
  dense, loss, params, x = _bf16_dense(flat_dot_general)
  text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile().as_text()
  input_gradient = (15, x.shape[-1])  # [B*T, 16]
  found = [dot[:3] for dot in compiled_dots(text) if dot[3] == input_gradient]
  assert found == [('bf16', 'bf16', 'f32')], compiled_dots(text)


def test_bf16_dense_on_cpu_matches_flax_dense_within_bf16_rounding():
  ours, loss, params, x = _bf16_dense(flat_dot_general)
  plain, plain_loss, _, _ = _bf16_dense(None)
  a = np.asarray(ours.apply(params, x), np.float32)
  b = np.asarray(plain.apply(params, x), np.float32)
  np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-2)
  ga = jax.grad(loss, argnums=(0, 1))(params, x)
  gb = jax.grad(plain_loss, argnums=(0, 1))(params, x)
  for u, v in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    assert u.dtype == v.dtype
    np.testing.assert_allclose(np.asarray(u, np.float32), np.asarray(v, np.float32),
                               rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize('dtype,tol', [(jnp.float32, 1e-6), (jnp.bfloat16, 1e-2)])
def test_embed_attend_equals_flax(dtype, tol):
  from models.linear import Embed
  ours, plain = (m(num_embeddings=7, features=4, dtype=dtype) for m in (Embed, nn.Embed))
  params = plain.init(jax.random.key(0), jnp.zeros((1,), jnp.int32))
  q = jax.random.normal(jax.random.key(1), (2, 3, 4)).astype(dtype)
  a = ours.apply(params, q, method='attend')
  b = plain.apply(params, q, method='attend')
  assert a.shape == b.shape == (2, 3, 7) and a.dtype == b.dtype
  np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                             rtol=tol, atol=tol)
