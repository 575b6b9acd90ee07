"""Where a train step's time goes: a profiler trace of a few steps, and its ops ranked.

``python -m train.benchmark --config configs/NAME.py --trace_dir DIR`` writes a
``jax.profiler`` trace of the compiled train step (open it in TensorBoard's profile
plugin or xprof) and, where the ``xprof`` package is installed, prints the ops that
take the most time per step with their output shapes. On CPU the step is compiled
with ``xla_cpu_enable_xprof_traceme`` so that every XLA:CPU thunk (each dot, each
fusion) is its own event; without it a CPU trace shows only the whole program.

Thunks of one step can run concurrently on the CPU's threads, so the per-op sums
can exceed the step time: read them as where the work is, not as a critical path.
"""
from __future__ import annotations

import collections
import glob
import json
import os
import re

import jax


def compiler_options(backend: str | None = None) -> dict:
  """The XLA options that make each op of a CPU program an event of its own."""
  return {'xla_cpu_enable_xprof_traceme': True} if (backend or jax.default_backend()) == 'cpu' else {}


def trace_steps(built: dict, trace_dir: str, steps: int = 3) -> str:
  """Runs ``steps`` train steps of ``benchmark.build``'s result under the profiler.

  Returns the ``.xplane.pb`` file written below ``trace_dir``.
  """
  state, batch, rng, step = built['state'], built['batch'], built['rng'], built['compiled']
  state, metrics = step(state, batch, rng)  # one untraced step: warm caches and allocator
  jax.block_until_ready(metrics)
  with jax.profiler.trace(trace_dir):
    for _ in range(steps):
      state, metrics = step(state, batch, rng)
      jax.block_until_ready(metrics)
  built['state'] = state  # the donated input is gone; keep the live state for the caller
  found = sorted(glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True),
                 key=os.path.getmtime)
  if not found:
    raise RuntimeError(f'jax.profiler wrote no .xplane.pb under {trace_dir}')
  return found[-1]


def hlo_instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
  """``{instruction name: (result shape, source op_name or '')}`` from a compiled module's text.

  The op_name (e.g. ``jit(train_step)/transpose(jvp(CNN))/Conv_1/conv_general_dilated``)
  says which layer, and whether forward (``jvp``) or backward (``transpose``), an op is.
  """
  found = {}
  for line in hlo_text.splitlines():
    m = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ', line)
    if m:
      source = re.search(r'op_name="([^"]*)"', line)
      found[m.group(1)] = (m.group(2), source.group(1) if source else '')
  return found


def top_ops(xplane_path: str, hlo_text: str, steps: int, count: int = 15) -> list[dict]:
  """The ``count`` ops of the compiled module with the most time, per step.

  Needs the ``xprof`` package (``pip install xprof``) to read the trace; raises
  ImportError with that advice otherwise. Each row: ``name``, ``shape``, ``source`` (the
  op_name of :func:`hlo_instructions`), ``ms_per_step`` and ``calls_per_step``.
  """
  try:
    from xprof.convert import raw_to_tool_data
  except ImportError as e:
    raise ImportError('listing the ops needs the xprof package: pip install xprof') from e
  data, _ = raw_to_tool_data.xspace_to_tool_data([xplane_path], 'trace_viewer',
                                                 {'trace_viewer_options': {'resolution': 0}})
  events = json.loads(data)['traceEvents']
  ops = hlo_instructions(hlo_text)
  total, calls = collections.Counter(), collections.Counter()
  for e in events:
    if e.get('ph') == 'X' and e.get('name') in ops:
      total[e['name']] += e['dur']  # microseconds
      calls[e['name']] += 1
  return [{'name': name, 'shape': ops[name][0], 'source': ops[name][1],
           'ms_per_step': us / steps / 1e3, 'calls_per_step': calls[name] / steps}
          for name, us in total.most_common(count)]


def format_ops(rows: list[dict]) -> str:
  """The rows of :func:`top_ops` as an aligned table."""
  lines = [f"{'ms/step':>9}  {'op':26s} {'shape':30s} source"]
  lines += [f"{r['ms_per_step']:9.2f}  {r['name'][:26]:26s} {r['shape'][:30]:30s} "
            f"{r['source'].removeprefix('jit(train_step)/')[-70:]}" for r in rows]
  return '\n'.join(lines)
