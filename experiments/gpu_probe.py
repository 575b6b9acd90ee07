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

  python3 experiments/gpu_probe.py --config configs/gpt2_small.py [--config.batch_size=8] --out $OUT
"""
from __future__ import annotations

import collections
import gzip
import json
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def probe(config, out: str, steps: int, trace_steps: int, matmul_size: int) -> dict:
  """Builds ``config``'s step (one compile), times it and the matmul, and writes the trace and
  the compiled program, gzipped, into ``out``. Returns the timings."""
  from train import benchmark, op_profile
  built = benchmark.build(config)
  print(f'compile {built["compile_time_s"]:.1f} s', flush=True)
  step, batch, rng = built['compiled'], built['batch'], built['rng']
  once = benchmark.matmul_timer(config.dtype, matmul_size, built['mesh'].devices.flat[0])
  flops = 2 * matmul_size ** 3
  state, _ = benchmark.time_steps(step, built['state'], batch, rng, 0, warmup=3)
  alone = [once() for _ in range(20)]
  after, each = [], []
  for _ in range(steps):
    state, t = benchmark.time_steps(step, state, batch, rng, 1, 0)
    each += t
    after.append(once())
  state, pipelined = benchmark.time_pipelined(step, state, batch, rng, steps)
  r = {'matmul_alone_tflops': flops / statistics.median(alone) / 1e12,
       'matmul_after_step_tflops': flops / statistics.median(after) / 1e12,
       'step_ms_each': 1e3 * statistics.median(each),
       'step_ms_min': 1e3 * min(each),
       'step_ms_pipelined': 1e3 * pipelined}
  for k, v in r.items():
    print(f'{k:26s} {v:10.2f}', flush=True)
  built['state'] = state
  trace_dir = tempfile.mkdtemp(prefix='gpu_probe_trace')
  path = op_profile.trace_steps(built, trace_dir, trace_steps)
  os.makedirs(out, exist_ok=True)
  with open(path, 'rb') as src, gzip.open(os.path.join(out, 'step.xplane.pb.gz'), 'wb') as dst:
    shutil.copyfileobj(src, dst)
  with gzip.open(os.path.join(out, 'step.hlo.txt.gz'), 'wt') as f:
    f.write(built['compiled'].as_text())
  print(f'trace of {trace_steps} steps: {os.path.getsize(path) / 2**20:.1f} MiB', flush=True)
  shutil.rmtree(trace_dir, ignore_errors=True)
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


def define_flags(argv):
  """The probe's flags: ``--config`` (with ``--config.KEY=value`` overrides, as
  ``train.benchmark`` takes them) and the probe's own."""
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/gpt2_small.py.',
                                  lock_config=True, flag_values=fv, sys_argv=list(argv))
  flags.DEFINE_string('out', 'gpu_probe_out', 'Folder for the gzipped trace and program.',
                      flag_values=fv)
  flags.DEFINE_integer('steps', 20, 'Steps timed one at a time, then queued.', flag_values=fv)
  flags.DEFINE_integer('trace_steps', 3, 'Steps traced.', flag_values=fv)
  flags.DEFINE_integer('matmul_size', 8192, 'Side of the square peak matmul.', flag_values=fv)
  flags.DEFINE_string('read', None, 'Here: a step.xplane.pb.gz from a probe; list its GPU '
                      'kernels (needs xprof) instead of probing.', flag_values=fv)
  flags.DEFINE_string('hlo', None, 'The step.hlo.txt.gz beside --read.', flag_values=fv)
  return fv


def main(argv=None) -> int:
  from train import benchmark
  argv = list(sys.argv if argv is None else argv)
  fv = define_flags(argv)
  if any(a.startswith('--read') for a in argv[1:]):  # reading a trace here needs no config
    fv(argv)
    read(fv.read, fv.hlo, fv.trace_steps)
    return 0
  config = benchmark.parse_flags(fv, argv)
  if config is None:
    return 2
  r = probe(config, fv.out, fv.steps, fv.trace_steps, fv.matmul_size)
  print(json.dumps(r))
  return 0


if __name__ == '__main__':
  sys.exit(main())
