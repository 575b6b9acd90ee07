"""train/steps.py: the non-finite guard's flags come from the gradients' sums of squares."""
import jax
import jax.numpy as jnp
import numpy as np

from train import steps


def test_finite_flags_name_the_leaf_with_a_nan_an_inf_or_an_overflowing_norm():
  grads = {'a': jnp.ones((3,)), 'b': jnp.array([1.0, jnp.nan]), 'c': jnp.array([jnp.inf]),
           'd': jnp.array([1e20, 1.0]), 'e': jnp.zeros((2, 2))}
  flags = steps._finite_flags(jnp.float32(1.0), steps._squared_norms(grads))
  # tree order a, b, c, d, e after the loss; 1e20 squared passes float32's range
  np.testing.assert_array_equal(flags, [True, True, False, False, False, True])
  assert not steps._finite_flags(jnp.float32(jnp.nan), steps._squared_norms({'a': jnp.ones(2)}))[0]


def test_the_guard_reads_each_gradient_once_with_grad_norm():
  """No elementwise is_finite over a gradient: the flags test the per-leaf sums of squares
  that grad_norm needs anyway, so the guard adds no reduction over the gradients."""
  params = {'w': jnp.ones((16, 8)), 'b': jnp.zeros((8,))}

  def flags_and_norm(grads):
    norms = steps._squared_norms(grads)
    return steps._finite_flags(jnp.float32(0.0), norms), jnp.sqrt(sum(norms))

  text = jax.jit(flags_and_norm).lower(params).as_text()
  checks = [line.split(':')[-1].strip() for line in text.splitlines()
            if 'stablehlo.is_finite' in line]
  # the loss and two leaves, each a scalar (an elementwise check would read tensor<16x8xf32>)
  assert checks == ['(tensor<f32>) -> tensor<i1>'] * 3, checks
