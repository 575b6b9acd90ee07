"""How fast XLA:CPU runs attention's batched dots, per dot library, and the core against PyTorch's.

Causal self-attention over ``[B, T, N, H]`` runs 128 separate ``T x H x T`` products
per dot at the char Transformer's shapes (B=32, T=128, N=4, H=64). This prints:

1. the GFLOP/s of the three batched-dot forms the core and its gradient use
   (``q k^T``, ``p v`` and the transposed-left ``p^T dO``), compiled for each dot
   library XLA:CPU offers: YNNPACK (the trainer's default), Eigen (no library
   fusion) and oneDNN (``xla_cpu_use_onednn`` with ``INDIVIDUAL_DOT`` fusions; n/a
   where this jaxlib refuses the options), each with the CPU seconds it keeps busy per
   wall second (about 1.0: the dot ran on one thread);
2. one layer's attention core, forward and backward: jaxlab's
   ``dot_product_attention(causal=True)`` compiled as the trainer compiles it, and
   PyTorch's ``F.scaled_dot_product_attention(is_causal=True)`` where torch is
   installed (never a dependency), interleaved.

Each figure is the median of ``--reps`` calls. Findings in experiments/README.md.

  python experiments/bench_attention_core.py [--batch 32 --seq_len 128 --heads 4 --head_dim 64]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from models import attention  # noqa: E402
from train import compile_options  # noqa: E402
from train.benchmark import interleaved_medians  # noqa: E402
from train.runtime import tune_malloc  # noqa: E402

# The batched dots of softmax attention in heads-major layout, as einsum equations
# over a batch axis ``b`` (B*N), queries ``t``, keys ``s`` and head features ``h``.
FORMS = {
    'q k^T (scores)': 'bth,bsh->bts',
    'p v (output)': 'bts,bsh->bth',
    'p^T dO (value gradient)': 'bts,bth->bsh',
}


def library_options(library: str) -> dict:
  """XLA:CPU compile options that send lone dots to ``library`` (ynn, eigen or onednn)."""
  flag = compile_options.YNN_FUSION_FLAG
  if library == 'ynn':
    return {flag: compile_options.ynn_fusions(False)}
  if library == 'eigen':
    return {flag: ''}
  if library == 'onednn':
    # Lone dots only: oneDNN's LIBRARY_FUSION_TYPE_DOT, which also takes an elementwise
    # producer, aborted the process ("partition compile failed") in jaxlib 0.10.2.
    return {flag: '', 'xla_cpu_use_onednn': True,
            'xla_cpu_experimental_onednn_fusion_type': 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'}
  raise ValueError(f'unknown dot library {library!r}: ynn, eigen or onednn')


def seconds_and_cores(fn, reps: int = 20) -> tuple[float, float]:
  """The median seconds of ``reps`` calls of ``fn`` (after one warm-up call), and the process's
  CPU seconds per wall second over all the calls: about 1.0 for a kernel that runs on one
  thread, up to the core count for one that uses them all."""
  cpu, wall = time.process_time(), time.perf_counter()  # CPU time of all the process's threads
  seconds = interleaved_medians({'fn': fn}, reps)['fn']
  return seconds, (time.process_time() - cpu) / (time.perf_counter() - wall)


def dot_rates(batch: int, seq_len: int, head_dim: int, libraries=('ynn', 'eigen', 'onednn'),
              reps: int = 20, seed: int = 0) -> list[dict]:
  """One row per form: ``name``, ``gflops`` {library: GFLOP/s or None where refused},
  ``cores`` {library: CPU seconds per wall second, or None} and ``max_abs_diff`` of each library's
  product from the first library's."""
  rng = np.random.default_rng(seed)
  dims = {'t': seq_len, 's': seq_len, 'h': head_dim}
  rows = []
  for name, equation in FORMS.items():
    lhs, rhs = equation.split('->')[0].split(',')
    a = jnp.asarray(rng.standard_normal((batch, *(dims[d] for d in lhs[1:]))), jnp.float32)
    b = jnp.asarray(rng.standard_normal((batch, *(dims[d] for d in rhs[1:]))), jnp.float32)
    flops = 2 * batch * seq_len * seq_len * head_dim
    gflops, cores, diffs, first = {}, {}, {}, None
    for library in libraries:
      options = library_options(library)
      if compile_options.rejection(options) is not None:
        gflops[library] = cores[library] = diffs[library] = None
        continue
      step = jax.jit(lambda a, b: jnp.einsum(equation, a, b)).lower(a, b).compile(
          compiler_options=options)
      out = step(a, b)
      first = out if first is None else first
      diffs[library] = float(jnp.max(jnp.abs(out - first)))
      seconds, cores[library] = seconds_and_cores(lambda: step(a, b), reps)
      gflops[library] = flops / seconds / 1e9
    rows.append({'name': name, 'gflops': gflops, 'cores': cores, 'max_abs_diff': diffs})
  return rows


def core_times(batch: int, seq_len: int, heads: int, head_dim: int, reps: int = 20,
               seed: int = 0) -> dict:
  """Milliseconds of one causal attention core, forward + backward (gradients of q, k, v):
  ``jaxlab`` and, where torch is installed, ``torch_sdpa``; calls interleaved."""
  rng = np.random.default_rng(seed)
  q, k, v, g = (rng.standard_normal((batch, seq_len, heads, head_dim)).astype(np.float32)
                for _ in range(4))
  loss = lambda q, k, v: jnp.vdot(attention.dot_product_attention(q, k, v, causal=True), g)
  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, v).compile(
      compiler_options=library_options('ynn'))
  runs = {'jaxlab': lambda: grads(q, k, v)}
  try:
    import torch
    import torch.nn.functional as F
    heads_major = lambda x: torch.from_numpy(x).transpose(1, 2).contiguous().requires_grad_()
    tq, tk, tv = heads_major(q), heads_major(k), heads_major(v)
    tg = torch.from_numpy(g).transpose(1, 2).contiguous()

    def sdpa():
      for t in (tq, tk, tv):
        t.grad = None
      F.scaled_dot_product_attention(tq, tk, tv, is_causal=True).backward(tg)
    runs['torch_sdpa'] = sdpa
  except ImportError:
    pass
  return {name: seconds * 1e3 for name, seconds in interleaved_medians(runs, reps).items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--seq_len', type=int, default=128)
  parser.add_argument('--heads', type=int, default=4)
  parser.add_argument('--head_dim', type=int, default=64)
  parser.add_argument('--reps', type=int, default=20)
  args = parser.parse_args()
  tune_malloc()
  b, t, n, h = args.batch, args.seq_len, args.heads, args.head_dim
  print(f'{jax.devices()[0].device_kind}, float32, {b * n} products of {t} x {h} x {t}; '
        f'GFLOP/s (median of {args.reps}) and, in brackets, CPU seconds per wall second')
  rows = dot_rates(b * n, t, h, reps=args.reps)
  libraries = list(rows[0]['gflops'])
  print(f"{'batched dot':26s}" + ''.join(f'{lib:>15s}' for lib in libraries))
  cell = lambda r, lib: ('n/a' if r['gflops'][lib] is None
                         else f"{r['gflops'][lib]:.1f} ({r['cores'][lib]:.2f})")
  for r in rows:
    print(f"{r['name']:26s}" + ''.join(f'{cell(r, lib):>15s}' for lib in libraries))
  ms = core_times(b, t, n, h, reps=args.reps)
  print(f'causal attention core [{b}, {t}, {n}, {h}], forward + backward: ' +
        ', '.join(f'{name} {v:.2f} ms' for name, v in ms.items()))


if __name__ == '__main__':
  main()
