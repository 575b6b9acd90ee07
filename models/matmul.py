"""A transpose that XLA:CPU's matmuls read at full speed.

XLA folds a transpose into the dot that reads it, and XLA:CPU runs a dot whose
operand is transposed in memory up to 1.4x slower than the plain ``[M, K] x [K, N]``
dot of the same size. Alone: ``[25088, 288]^T [25088, 64]`` at 97 against 172
GFLOP/s, ``[4096, 1024]^T [4096, 256]`` at 112 against 196, the LSTM's
``[4096, 512]^T [4096, 2048]`` weight gradient at 134 against 184 with the transpose
written out first (experiments/README.md). The copy costs far less than that; an
optimisation barrier keeps XLA from folding it back into the dot. GPU and TPU matmul
libraries read transposed operands at full speed, so there it stays a plain ``.T``.
"""
from __future__ import annotations

import jax
from jax import lax

__all__ = ['transposed']


def transposed(a: jax.Array) -> jax.Array:
  """``a.T`` of a 2-D array, written out in memory when running on CPU."""
  if jax.default_backend() != 'cpu':
    return a.T
  return lax.optimization_barrier(a.T)
