"""train/one_pass_loss.py against the three-pass reference: optax's loss, jnp.argmax, and the
gradient's closed form."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from train import one_pass_loss, tasks, validate
from configs import base


def _logits(shape, seed=0, scale=4.0):
  return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def test_loss_and_argmax_equal_the_reference():
  logits = _logits((3, 7, 1000))
  labels = np.random.default_rng(1).integers(0, 1000, (3, 7)).astype(np.int32)
  loss, arg = jax.jit(one_pass_loss.cross_entropy_argmax)(logits, labels)
  want = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  np.testing.assert_allclose(loss, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(arg, np.argmax(logits, -1))
  assert loss.dtype == jnp.float32 and arg.dtype == jnp.int32


def test_ties_keep_the_first_index_and_minus_inf_adds_nothing():
  """Masked logits (-inf) and repeated maxima, where a careless merge gives NaN or the wrong
  index: jnp.argmax keeps the first of equal maxima."""
  row = np.full(64, -np.inf, np.float32)
  row[[5, 17, 40]] = 2.0      # three equal maxima
  row[[8, 9]] = [1.0, -3.0]
  logits = np.stack([row, row[::-1].copy(), np.full(64, -np.inf, np.float32)])
  logits[2, 63] = 0.5         # one finite logit, the rest masked
  labels = np.array([17, 8, 63], np.int32)
  loss, arg = jax.jit(one_pass_loss.cross_entropy_argmax)(logits, labels)
  np.testing.assert_array_equal(arg, np.argmax(logits, -1))
  np.testing.assert_allclose(loss, optax.softmax_cross_entropy_with_integer_labels(logits, labels),
                             rtol=1e-6)
  assert loss[2] == 0.0


def test_a_nan_logit_makes_the_loss_nan():
  """The merge compares maxima, and NaN compares false; the loss must still come out NaN
  (wherever the NaN sits in the row), or the train step's non-finite guard would miss it."""
  logits = np.zeros((3, 40), np.float32)
  logits[0, 0], logits[1, 20], logits[2, 39] = np.nan, np.nan, np.nan
  loss, _ = jax.jit(one_pass_loss.cross_entropy_argmax)(logits, np.array([1, 2, 3], np.int32))
  assert np.isnan(loss).all()


def test_gradient_is_softmax_minus_onehot():
  logits = _logits((2, 5, 33), seed=2)
  labels = np.random.default_rng(3).integers(0, 33, (2, 5)).astype(np.int32)
  w = _logits((2, 5), seed=4, scale=1.0)   # an arbitrary cotangent per position
  grad = jax.grad(lambda x: jnp.sum(w * one_pass_loss.cross_entropy_argmax(x, labels)[0]))(logits)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  np.testing.assert_allclose(grad, (p - np.eye(33)[labels]) * w[..., None], atol=1e-6)


def test_bfloat16_logits_are_read_as_float32():
  logits = jnp.asarray(_logits((4, 257), seed=5), jnp.bfloat16)
  labels = jnp.arange(4, dtype=jnp.int32) * 50
  loss, arg = one_pass_loss.cross_entropy_argmax(logits, labels)
  want = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_array_equal(arg, jnp.argmax(logits, -1))
  grad = jax.grad(lambda x: one_pass_loss.cross_entropy_argmax(x, labels)[0].sum())(logits)
  assert grad.dtype == jnp.bfloat16


def test_the_forward_reads_the_logits_in_one_reduction():
  """The point of the module: one reduce over the vocabulary where the reference has three
  (logsumexp's max and sum, then the argmax)."""
  logits = jnp.zeros((2, 8, 128), jnp.float32)
  labels = jnp.zeros((2, 8), jnp.int32)

  def reductions(fn):  # reduce ops that read a [2, 8, 128] operand: passes over the logits
    text = jax.jit(fn).lower(logits, labels).as_text()
    return sum('stablehlo.reduce' in line and '(tensor<2x8x128x' in line
               for line in text.splitlines())

  def reference(x, y):
    return tasks.language_model(x, {'targets': y})

  def fused(x, y):
    return tasks.language_model(x, {'targets': y}, one_pass=True)

  # The reference: logsumexp's max and sum, the label's select-and-sum, the argmax.
  assert (reductions(reference), reductions(fused)) == (4, 1)


def test_lm_task_with_one_pass_loss_equals_the_default():
  logits = _logits((2, 6, 50), seed=6)
  batch = {'targets': np.random.default_rng(7).integers(0, 50, (2, 6)).astype(np.int32),
           'weights': (np.arange(12).reshape(2, 6) % 3 != 0).astype(np.float32)}
  c = base.get_base_config()
  c.task, c.one_pass_loss = 'lm', True
  fused, default = tasks.get('lm', c), tasks.get('lm')
  (loss, sums), (want, want_sums) = fused(logits, batch), default(logits, batch)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  for k in want_sums:
    np.testing.assert_allclose(sums[k], want_sums[k], rtol=1e-6)
  g = jax.grad(lambda x: fused(x, batch)[0])(logits)
  np.testing.assert_allclose(g, jax.grad(lambda x: default(x, batch)[0])(logits), atol=1e-7)


@pytest.mark.parametrize('task,smoothing,message', [
    ('classification', 0.0, 'only for task lm or mlm'),
    ('lm', 0.1, 'not with label_smoothing'),
])
def test_one_pass_loss_config_errors(task, smoothing, message):
  c = base.get_base_config()
  c.task, c.label_smoothing, c.one_pass_loss = task, smoothing, True
  with pytest.raises(validate.ConfigError, match=message):
    validate.check_config(c)
