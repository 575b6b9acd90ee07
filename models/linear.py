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

On CPU, a Dense layer in bfloat16 or float16 runs its dots through :func:`half_matmul`, which
accumulates in float32 and returns float32 before rounding: that is the only 16-bit dot XLA:CPU
runs in 16-bit kernels (2x its float32 matmul on a CPU with ``avx512_bf16``). In float32 it runs
through :func:`cpu_matmul`, whose weight gradient writes a transpose out so that a library
kernel takes the dot.
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

  On CPU, 16-bit operands of one dtype go through :func:`half_matmul` and float32 ones through
  :func:`cpu_matmul` (``precision`` does not apply there: XLA:CPU has one). Any other
  contraction (batch dimensions, a kernel of more than two dimensions) is passed to
  ``lax.dot_general`` unchanged.
  """
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  dense_form = (lhs.ndim >= 2 and rhs.ndim == 2 and tuple(lhs_contract) == (lhs.ndim - 1,)
                and tuple(rhs_contract) == (0,) and not lhs_batch and not rhs_batch)
  if not dense_form:
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type, **kwargs)
  if preferred_element_type is None and cpu_half_precision(lhs, rhs):
    return over_rows(lambda x: half_matmul(x, rhs), lhs)
  if preferred_element_type in (None, jnp.float32) and cpu_float32(lhs, rhs):
    return over_rows(lambda x: cpu_matmul(x, rhs), lhs)
  matmul = lambda x: lax.dot_general(x, rhs, (((1,), (0,)), ((), ())), precision=precision,
                                     preferred_element_type=preferred_element_type, **kwargs)
  return over_rows(matmul, lhs)


def cpu_half_precision(*arrays) -> bool:
  """Whether ``arrays`` are all bfloat16, or all float16, and run on XLA:CPU, which handles such
  dots and stacked loop outputs its own way (:func:`half_matmul`, ``models.rnn``)."""
  return (jax.default_backend() == 'cpu'
          and all(a.dtype in (jnp.bfloat16, jnp.float16) for a in arrays)
          and len({a.dtype for a in arrays}) == 1)


def cpu_float32(*arrays) -> bool:
  """Whether ``arrays`` are all float32 and run on XLA:CPU (:func:`cpu_matmul`)."""
  return jax.default_backend() == 'cpu' and all(a.dtype == jnp.float32 for a in arrays)


# A weight gradient x^T dy, as autodiff writes it, is a dot contracting its left operand's
# first dimension. No library fusion of jaxlib 0.10's XLA:CPU takes that form, so Eigen runs
# it: on a 2-core Zen 5, [4096, 1024]^T [4096, 256] at 229 GFLOP/s, where the same dot after
# the transpose is written out runs in YNNPACK at 345 (x^T written out) or 405 (dy^T written
# out, the [N, K] result transposed back). This VJP writes out the transpose that copies the
# fewest elements: x^T (M*K) or dy^T plus the product's (M*N + N*K). The optimisation barriers
# keep XLA from folding the transposes back into the dot. Train steps, in-process A/Bs on that
# host: the char Transformer 1.03-1.11x, the MLP 1.05-1.08x; the CNN, the char LSTM and the
# small GPT 0.97-1.01x (experiments/README.md). The forward is the plain dot.
@jax.custom_vjp
def cpu_matmul(x, w):
  """``x [M, K] @ w [K, N]`` in float32 on CPU; its weight gradient written for a library kernel."""
  return x @ w


def _cpu_matmul_fwd(x, w):
  return x @ w, (x, w)


def _cpu_matmul_bwd(res, dy):
  x, w = res
  (m, k), n = x.shape, dy.shape[1]
  if m * k <= m * n + n * k:
    dw = lax.optimization_barrier(x.T) @ dy
  else:
    dw = lax.optimization_barrier(lax.optimization_barrier(dy.T) @ x).T
  return _matmul_f32(dy, w, dy.dtype, rhs_contract=1), dw


cpu_matmul.defvjp(_cpu_matmul_fwd, _cpu_matmul_bwd)


def _matmul_f32(a, b, dtype, rhs_contract: int = 0):
  """``a [M, K]`` times ``b`` (``[K, N]``, or ``[N, K]`` with ``rhs_contract=1``), accumulated and
  returned in float32, then cast to ``dtype``."""
  return lax.dot_general(a, b, (((1,), (rhs_contract,)), ((), ())),
                         preferred_element_type=jnp.float32).astype(dtype)


# XLA:CPU runs a 16-bit dot in its own kernels only when the dot returns float32: bf16 x
# bf16 -> f32 ran at about 930 GFLOP/s on a 2-core Zen 5, where bf16 -> bf16 is rewritten as
# a float32 dot of converted operands (no faster than float32, 400-450). Autodiff of the
# f32-returning dot would give the backward float32 cotangents, and so float32 dots again;
# this VJP keeps all three in 16 bits (the cotangent rounded to the layer's dtype, as
# mixed precision does anyway).
@jax.custom_vjp
def half_matmul(x, w):
  """``x [M, K] @ w [K, N]`` for 16-bit ``x`` and ``w``: accumulated and returned in float32,
  then rounded to their dtype; the gradients' two dots likewise."""
  return _matmul_f32(x, w, x.dtype)


def _half_matmul_fwd(x, w):
  return _matmul_f32(x, w, x.dtype), (x, w)


def _half_matmul_bwd(res, dy):
  x, w = res
  dy = dy.astype(x.dtype)
  # dy W^T as one dot contracting both operands' last dimensions: XLA:CPU runs that in 16 bits,
  # but converts the operands of dy @ w.T to float32 first (the MLP's bf16 step 1.10x faster,
  # the char Transformer's 1.06x; experiments/README.md).
  return _matmul_f32(dy, w, x.dtype, rhs_contract=1), _matmul_f32(x.T, dy, w.dtype)


half_matmul.defvjp(_half_matmul_fwd, _half_matmul_bwd)


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
  positions; float32 atomics are native. :meth:`attend` (tied output weights) is
  ``nn.Embed``'s product, run as :func:`flat_dot_general` runs a Dense layer's.
  """

  def __call__(self, inputs: jax.Array) -> jax.Array:
    if not jnp.issubdtype(inputs.dtype, jnp.integer):
      raise ValueError(f'Embed takes integer ids, got {inputs.dtype}')
    rows = jnp.take(self.embedding, inputs, axis=0)
    return rows if self.dtype is None else rows.astype(self.dtype)

  def attend(self, query: jax.Array) -> jax.Array:
    query, embedding = nn.dtypes.promote_dtype(query, self.embedding, dtype=self.dtype)
    return flat_dot_general(query, embedding.T, (((query.ndim - 1,), (0,)), ((), ())))
