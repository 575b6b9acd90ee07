"""Dense layers over token sequences as one 2-D matmul.

``nn.Dense`` on ``x [B, T, K]`` is a dot with two free dimensions on the left, so its weight
gradient ``dW = x^T dy`` contracts two dimensions (B and T). XLA:CPU lowers that by first
copying ``dy`` into a transposed layout, then runs an Eigen contraction of two transposed
operands. With the tokens flattened to ``[B*T, K]`` the same gradient is one ``[B*T, K]^T
[B*T, N]`` dot and no copy: the char Transformer's whole train step ran 1.07-1.18x faster
on a 2-core CPU (experiments/README.md). The reshape merges leading axes of a row-major array,
a bitcast on CPU and GPU (on TPU too when T is a multiple of 8, its sublane tiling; not
measured there), and a batch-sharded ``B`` stays sharded on the merged axis.

Pass :func:`flat_dot_general` as ``nn.Dense(..., dot_general=flat_dot_general)``: parameter
names, shapes and the layer's output shape are unchanged, so checkpoints, pretrained-weight
maps and method interceptors see the same module. :class:`Embed` is the token lookup of the
same kind: ``nn.Embed``'s parameters and outputs, a cheaper and more exact gradient.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def flat_dot_general(lhs, rhs, dimension_numbers, precision=None,
                     preferred_element_type=None, **kwargs) -> jax.Array:
  """``lax.dot_general`` that runs ``x [..., K] . kernel [K, N]`` as ``[prod(...), K] . [K, N]``.

  Any other contraction (batch dimensions, a kernel of more than two dimensions) is passed
  to ``lax.dot_general`` unchanged.
  """
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  dense_form = (lhs.ndim > 2 and rhs.ndim == 2 and tuple(lhs_contract) == (lhs.ndim - 1,)
                and tuple(rhs_contract) == (0,) and not lhs_batch and not rhs_batch)
  if not dense_form:
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type, **kwargs)
  matmul = lambda x: lax.dot_general(x, rhs, (((1,), (0,)), ((), ())), precision=precision,
                                     preferred_element_type=preferred_element_type, **kwargs)
  return over_rows(matmul, lhs)


def over_rows(fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
  """``fn`` applied to ``x [..., K]`` flattened to rows ``[prod(...), K]``; the leading shape is restored."""
  y = fn(x.reshape(-1, x.shape[-1]))
  return y.reshape(x.shape[:-1] + y.shape[1:])


class Embed(nn.Embed):
  """``nn.Embed`` whose lookup gathers rows of the stored table and then casts them to ``dtype``.

  The forward values are the same as ``nn.Embed``'s, which casts the whole table first. The
  gradient differs: it is a scatter-add into the table's own dtype (float32) rather than into
  a bfloat16 copy. On an H100 the bf16 scatter of GPT-2's 50,304 x 768 table was 2.6 ms of a
  39 ms step (experiments/README.md), and bf16 rounds the sum over a frequent token's many
  positions; float32 atomics are native. :meth:`attend` (tied output weights) is unchanged.
  """

  def __call__(self, inputs: jax.Array) -> jax.Array:
    if not jnp.issubdtype(inputs.dtype, jnp.integer):
      raise ValueError(f'Embed takes integer ids, got {inputs.dtype}')
    rows = jnp.take(self.embedding, inputs, axis=0)
    return rows if self.dtype is None else rows.astype(self.dtype)
