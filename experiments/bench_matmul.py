"""How fast one square matmul runs under XLA compiler options, beside PyTorch's.

The benchmark's MFU is against the matmul peak it measures in the same run, and the
step's dots run no faster than XLA's GEMM for them. On an H100 (2026-11-24) the 8192^3 bf16
``jnp.matmul`` ran at 649 TFLOP/s (675 with Triton GEMMs off), PyTorch's at 725. The 384 that
an earlier session's benchmark read was its timing, not the GEMM (``train.benchmark.matmul_timer``).
This times ``jnp.matmul`` compiled with each ``--option_set`` (XLA debug options for
that compile only, e.g. ``no_triton_gemm:xla_gpu_enable_triton_gemm=false``) and
``torch.matmul`` where torch is installed (never a dependency), on CUDA when JAX runs on
a GPU, interleaved call by call, and prints each one's TFLOP/s (median of ``--reps``).

  python experiments/bench_matmul.py [--n 8192 --dtype bfloat16 --option_set NAME:key=value,...]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from train.benchmark import interleaved_medians, matmul_call, parse_variant  # noqa: E402


def candidates(n: int, dtype: str, option_sets: list[str]) -> dict:
  """``{name: function of no arguments}``: XLA's matmul as compiled by default and under each
  ``NAME:key=value,...`` option set, and PyTorch's where it is installed."""
  runs = {'xla default': matmul_call(dtype, n)}
  for spec in option_sets:
    name, overrides, options = parse_variant(spec)
    if overrides:
      raise ValueError(f'option set {name!r}: {sorted(overrides)} are not XLA options (xla_...)')
    try:
      runs[f'xla {name}'] = matmul_call(dtype, n, compiler_options=options)
    except Exception as e:  # an option this jaxlib or backend does not know: say so, go on
      print(f'xla {name}: not compiled: {str(e).splitlines()[0][:160]}')
  try:
    import torch
  except ImportError:
    return runs
  from experiments.torch_reference.bench import matmul_call as torch_matmul_call
  device = 'cuda' if jax.default_backend() == 'gpu' and torch.cuda.is_available() else 'cpu'
  runs[f'torch {torch.__version__} ({device})'] = torch_matmul_call(
      n, getattr(torch, dtype), device)
  return runs


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--n', type=int, default=2048)
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16', 'float16'))
  parser.add_argument('--option_set', action='append', default=[],
                      help='NAME:xla_option=value,... (repeatable)')
  parser.add_argument('--reps', type=int, default=20)
  args = parser.parse_args(argv)
  runs = candidates(args.n, args.dtype, args.option_set)
  seconds = interleaved_medians(runs, args.reps)
  flop = 2 * args.n ** 3
  print(f'{jax.devices()[0].device_kind}: {args.n}^3 {args.dtype} matmul, median of {args.reps}')
  for name, s in seconds.items():
    print(f'  {name:<40} {s * 1e3:9.3f} ms  {flop / s / 1e12:8.2f} TFLOP/s')
  return 0


if __name__ == '__main__':
  sys.exit(main())
