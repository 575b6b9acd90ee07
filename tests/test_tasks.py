"""train/tasks.py: the language-model loss's gradient against its closed form, and its shape
in the compiled program (no scatter)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train import tasks


@pytest.mark.parametrize('smoothing', [0.0, 0.1])
def test_lm_loss_gradient_is_softmax_minus_the_smoothed_target(smoothing):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 11)).astype(np.float32) * 3
  targets = rng.integers(0, 11, (2, 5)).astype(np.int32)
  batch = {'targets': targets}
  grad = jax.grad(lambda x: tasks.get('lm')(x, batch, smoothing)[0])(jnp.asarray(logits))
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  target = np.eye(11)[targets] * (1 - smoothing) + smoothing / 11
  np.testing.assert_allclose(grad, (p - target) / targets.size, atol=1e-6)


def test_lm_loss_gradient_compiles_without_a_scatter():
  """A gathered label logit's gradient is a scatter into a [B, T, vocab] zero tensor, which
  XLA cannot fuse with the softmax's; on an H100 it cost GPT-2 two more passes over the
  logits. The select that picks the label logit here has an elementwise gradient."""
  logits = jnp.zeros((2, 8, 64), jnp.bfloat16)
  batch = {'targets': jnp.ones((2, 8), jnp.int32)}
  hlo = jax.jit(jax.grad(lambda x: tasks.get('lm')(x, batch)[0])).lower(logits).as_text()
  assert 'scatter' not in hlo and 'gather' not in hlo
