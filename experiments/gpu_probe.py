"""Where a GPU train step's time goes, in one process (one compile): the probe behind the GPU
rows of experiments/README.md.

It builds the config's step as ``train.benchmark`` does and then answers three questions:

1. The matmul peak: the ``--matmul_size`` bf16 matmul timed alone, back to back, and timed
   right after each train step (as ``train.benchmark``'s rounds time it). In the first GPU
   sessions the benchmark's peak was half of what ``bench_matmul.py`` measured alone.
2. Host-bound or device-bound: the step timed one at a time (``block_until_ready`` after
   each, as the benchmark does) and ``--steps`` dispatched back to back with one wait at the
   end. A large difference means the host's launches, not the GPU, set the pace.
3. A profiler trace of ``--trace_steps`` steps; the ``.xplane.pb`` is gzipped flat into
   ``--out`` (the device tool returns files at most two folders down), to be read here with
   ``python experiments/gpu_probe.py --read step.xplane.pb.gz --hlo step.hlo.txt.gz`` (needs the ``xprof`` package).

  python3 experiments/gpu_probe.py --config configs/gpt2_small.py --out $OUT
"""
from __future__ import annotations

import argparse
import collections
import gzip
import tempfile
import json
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(path: str, overrides: list[str]):
  """``get_config(ARG)`` of ``path[:ARG]``, with ``key=value`` overrides (values as Python literals)."""
  import ast
  import runpy
  path, _, arg = path.partition(':')
  config = runpy.run_path(path)['get_config'](arg or None)
  for o in overrides:
    key, _, value = o.partition('=')
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass
    config.update_from_flattened_dict({key: value})
  return config


def probe(config_path: str, out: str, steps: int, trace_steps: int, matmul_size: int,
          overrides: list[str]) -> dict:
  import jax
  from train import benchmark, op_profile
  config = load_config(config_path, overrides)
  built = benchmark.build(config)
  print(f'compile {built["compile_time_s"]:.1f} s', flush=True)
  step, state, batch, rng = built['compiled'], built['state'], built['batch'], built['rng']
  once = benchmark.matmul_timer(config.dtype, matmul_size, built['mesh'].devices.flat[0])
  flops = 2 * matmul_size ** 3
  for _ in range(3):
    state, m = step(state, batch, rng)
    jax.block_until_ready((state, m))
  alone = [once() for _ in range(20)]
  after, each = [], []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, m = step(state, batch, rng)
    jax.block_until_ready((state, m))
    each.append(time.perf_counter() - t0)
    after.append(once())
  t0 = time.perf_counter()
  for _ in range(steps):
    state, m = step(state, batch, rng)
  jax.block_until_ready((state, m))
  pipelined = (time.perf_counter() - t0) / steps
  r = {'matmul_alone_tflops': flops / statistics.median(alone) / 1e12,
       'matmul_after_step_tflops': flops / statistics.median(after) / 1e12,
       'step_ms_each': 1e3 * statistics.median(each),
       'step_ms_min': 1e3 * min(each),
       'step_ms_pipelined': 1e3 * pipelined}
  for k, v in r.items():
    print(f'{k:26s} {v:10.2f}', flush=True)
  built['state'] = state
  trace_dir = os.path.join('/tmp', 'gpu_probe_trace')
  shutil.rmtree(trace_dir, ignore_errors=True)
  path = op_profile.trace_steps(built, trace_dir, trace_steps)
  os.makedirs(out, exist_ok=True)
  with open(path, 'rb') as src, gzip.open(os.path.join(out, 'step.xplane.pb.gz'), 'wb') as dst:
    shutil.copyfileobj(src, dst)
  with gzip.open(os.path.join(out, 'step.hlo.txt.gz'), 'wt') as f:
    f.write(built['compiled'].as_text())
  print(f'trace of {trace_steps} steps: {os.path.getsize(path) / 2**20:.1f} MiB', flush=True)
  return r


def read(xplane: str, hlo_path: str | None, steps: int, count: int = 30) -> None:
  """Prints GPU busy time per step and the kernels (grouped by HLO op) that take the most."""
  from train import op_profile
  if xplane.endswith('.gz'):  # xprof reads a plain file
    with gzip.open(xplane) as src, tempfile.NamedTemporaryFile(suffix='.xplane.pb', delete=False) as dst:
      shutil.copyfileobj(src, dst)
    xplane = dst.name
  events = op_profile.trace_events(xplane)
  ops = {}
  if hlo_path:
    with (gzip.open(hlo_path, 'rt') if hlo_path.endswith('.gz') else open(hlo_path)) as f:
      ops = op_profile.hlo_instructions(f.read())
  gpu = [e for e in events if 'hlo_op' in e.get('args', {})]
  by_op, by_kernel, calls = collections.Counter(), collections.Counter(), collections.Counter()
  for e in gpu:
    op = e['args']['hlo_op']
    by_op[op] += e['dur']
    calls[op] += 1
    by_kernel[e['name'][:60]] += e['dur']
  busy = sum(by_op.values()) / steps / 1e3
  span = (max(e['ts'] + e['dur'] for e in gpu) - min(e['ts'] for e in gpu)) / steps / 1e3 if gpu else 0
  print(f'{len(gpu) / steps:.0f} kernels per step; GPU busy {busy:.2f} ms per step; '
        f'first to last kernel {span:.2f} ms per step')
  print(f"{'ms/step':>8} {'calls':>5}  {'op':28s} {'shape':34s} source")
  for op, us in by_op.most_common(count):
    shape, source = ops.get(op, ('', ''))
    print(f'{us / steps / 1e3:8.3f} {calls[op] / steps:5.0f}  {op[:28]:28s} {shape[:34]:34s} '
          f'{source.removeprefix("jit(train_step)/")[-80:]}')
  print('\nby kernel name:')
  for k, us in by_kernel.most_common(15):
    print(f'{us / steps / 1e3:8.3f}  {k}')


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--config', default='configs/gpt2_small.py')
  p.add_argument('--override', action='append', default=[], help='config key=value')
  p.add_argument('--out', default='gpu_probe_out')
  p.add_argument('--steps', type=int, default=20)
  p.add_argument('--trace_steps', type=int, default=3)
  p.add_argument('--matmul_size', type=int, default=8192)
  p.add_argument('--read', help='an .xplane.pb written by a probe: list its GPU kernels')
  p.add_argument('--hlo', help='the step.hlo.txt beside it')
  a = p.parse_args(argv)
  if a.read:
    read(a.read, a.hlo, a.trace_steps)
    return 0
  r = probe(a.config, a.out, a.steps, a.trace_steps, a.matmul_size, a.override)
  print(json.dumps(r))
  return 0


if __name__ == '__main__':
  sys.exit(main())
