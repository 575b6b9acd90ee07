"""How fast XLA runs the backward pass's dots, whose operands are transposes.

A layer's weight gradient is ``x^T dy`` and its input gradient ``dy W^T``. XLA folds
the transpose into the dot; this prints, for the shapes of this repo's benchmarks,
the GFLOP/s of that folded dot, of the same dot after the transpose is written out
first (an optimisation barrier keeps XLA from folding it back; the copy is timed
too), and of a plain ``[M, K] x [K, N]`` dot with the same sizes, each the median of
20 calls, the three interleaved. Findings in experiments/README.md (Performance).

  python experiments/bench_transposed_dots.py
"""
from __future__ import annotations

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from train.benchmark import interleaved_medians  # noqa: E402
from train.runtime import tune_malloc  # noqa: E402

# (name, kind, K rows contracted or the shared dim, M, N): 'weight' is x[K, M]^T dy[K, N],
# 'input' is dy[M, K] W[N, K]^T.
SHAPES = (
    ('CNN conv2 as im2col: kernel gradient', 'weight', 25088, 288, 64),
    ('Transformer mlp_out: weight gradient', 'weight', 4096, 1024, 256),
    ('Transformer mlp_in: weight gradient', 'weight', 4096, 256, 1024),
    ('Transformer mlp_in: input gradient', 'input', 1024, 4096, 256),
    ('LSTM 512: weight gradient', 'weight', 4096, 512, 2048),
    ('LSTM 512: input gradient', 'input', 2048, 4096, 512),
)


def transposed(a):
  """``a.T`` written out in memory: the barrier stops XLA folding it into the dot."""
  return jax.lax.optimization_barrier(a.T)


def _timed(fns: dict, args: dict, reps: int = 20) -> dict:
  compiled = {k: jax.jit(f).lower(*args[k]).compile() for k, f in fns.items()}
  return interleaved_medians({k: functools.partial(c, *args[k]) for k, c in compiled.items()}, reps)


def measure(shapes=SHAPES, reps: int = 20, seed: int = 0) -> list[dict]:
  """One row per shape: ``name`` and the GFLOP/s of the ``folded``, written-``out`` and
  ``plain`` dots; ``max_abs_diff`` between the folded and written-out results."""
  rng = np.random.default_rng(seed)
  arr = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
  rows = []
  for name, kind, k, m, n in shapes:
    if kind == 'weight':
      a, b = arr(k, m), arr(k, n)
      fns = {'folded': lambda a, b: a.T @ b, 'out': lambda a, b: transposed(a) @ b}
    else:
      a, b = arr(m, k), arr(n, k)
      fns = {'folded': lambda a, b: a @ b.T, 'out': lambda a, b: a @ transposed(b)}
    args = {'folded': (a, b), 'out': (a, b)}
    fns['plain'] = lambda a, b: a @ b
    args['plain'] = (arr(m, k), arr(k, n))
    t = _timed(fns, args, reps)
    flops = 2 * k * m * n
    diff = float(jnp.max(jnp.abs(jax.jit(fns['folded'])(a, b) - jax.jit(fns['out'])(a, b))))
    rows.append({'name': name, 'max_abs_diff': diff,
                 **{kind_: flops / t[kind_] / 1e9 for kind_ in ('folded', 'out', 'plain')}})
  return rows


def main() -> None:
  tune_malloc()
  print(f'{jax.devices()[0].device_kind}, float32; GFLOP/s (median of 20)')
  print(f"{'dot':40s} {'folded':>8s} {'written out':>12s} {'plain':>8s}")
  for r in measure():
    print(f"{r['name']:40s} {r['folded']:8.1f} {r['out']:12.1f} {r['plain']:8.1f}")


if __name__ == '__main__':
  main()
