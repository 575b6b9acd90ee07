"""Where a train step's time goes: a profiler trace of a few steps, and its ops ranked.

``python -m train.benchmark --config configs/NAME.py --trace_dir DIR`` writes a
``jax.profiler`` trace of the compiled train step (open it in TensorBoard's profile
plugin or xprof) and, where the ``xprof`` package is installed, prints the ops that
take the most time per step with their output shapes. On CPU the step is compiled
with ``xla_cpu_enable_xprof_traceme`` so that every XLA:CPU thunk (each dot, each
fusion) is its own event; without it a CPU trace shows only the whole program.

Thunks of one step can run concurrently on the CPU's threads, so the per-op sums
can exceed the step time: read them as where the work is, not as a critical path.
Eigen's contractions (dots no library fusion takes, convolutions) run after their
event ends, so the listing adds the step's time covered by no op event.
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


def trace_events(xplane_path: str) -> list[dict]:
  """The complete (``ph == 'X'``) events of an ``.xplane.pb`` trace; needs ``xprof``."""
  try:
    from xprof.convert import raw_to_tool_data
  except ImportError as e:
    raise ImportError('listing the ops needs the xprof package: pip install xprof') from e
  data, _ = raw_to_tool_data.xspace_to_tool_data([xplane_path], 'trace_viewer',
                                                 {'trace_viewer_options': {'resolution': 0}})
  return [e for e in json.loads(data)['traceEvents'] if e.get('ph') == 'X']


def top_ops(xplane_path: str, hlo_text: str, steps: int, count: int = 15,
            events: list[dict] | None = None) -> list[dict]:
  """The ``count`` ops of the compiled module with the most time, per step.

  Needs the ``xprof`` package (``pip install xprof``) to read the trace; raises
  ImportError with that advice otherwise. Each row: ``name``, ``shape``, ``source`` (the
  op_name of :func:`hlo_instructions`), ``ms_per_step`` and ``calls_per_step``.
  ``events`` (from a previous read of the same trace) skips reading it again.
  """
  events = trace_events(xplane_path) if events is None else events
  ops = hlo_instructions(hlo_text)
  total, calls = collections.Counter(), collections.Counter()
  for e in events:
    if e.get('name') in ops:
      total[e['name']] += e['dur']  # microseconds
      calls[e['name']] += 1
  return [{'name': name, 'shape': ops[name][0], 'source': ops[name][1],
           'ms_per_step': us / steps / 1e3, 'calls_per_step': calls[name] / steps}
          for name, us in total.most_common(count)]


# XLA:CPU's event for the whole of one execution, from dispatch to completion.
STEP_EVENT = 'ThunkExecutor::Execute (wait for completion)'


def uncovered(intervals: list[tuple[float, float]], windows: list[tuple[float, float]]) -> float:
  """How much of ``windows`` no interval covers (same units as the ``(start, end)`` pairs)."""
  merged = []
  for start, end in sorted(intervals):
    if merged and start <= merged[-1][1]:
      merged[-1][1] = max(merged[-1][1], end)
    else:
      merged.append([start, end])
  gap = 0.0
  for w0, w1 in windows:
    covered = sum(max(0.0, min(end, w1) - max(start, w0)) for start, end in merged)
    gap += (w1 - w0) - covered
  return gap


def untraced_ms(events: list[dict], hlo_text: str, steps: int) -> float | None:
  """Milliseconds per step during which the step runs but none of its ops has an event.

  XLA:CPU starts Eigen contractions (dots no library fusion takes, and convolutions)
  asynchronously: the op's event ends when the work is handed to the thread pool, and
  the work itself shows up only as this uncovered time. None when the trace has no
  per-execution events to measure against (not XLA:CPU).
  """
  ops = hlo_instructions(hlo_text)
  windows = [(e['ts'], e['ts'] + e['dur']) for e in events if e.get('name') == STEP_EVENT]
  if not windows:
    return None
  spans = [(e['ts'], e['ts'] + e['dur']) for e in events if e.get('name') in ops]
  return uncovered(spans, windows) / steps / 1e3


def format_ops(rows: list[dict]) -> str:
  """The rows of :func:`top_ops` as an aligned table."""
  lines = [f"{'ms/step':>9}  {'op':26s} {'shape':30s} source"]
  lines += [f"{r['ms_per_step']:9.2f}  {r['name'][:26]:26s} {r['shape'][:30]:30s} "
            f"{r['source'].removeprefix('jit(train_step)/')[-70:]}" for r in rows]
  return '\n'.join(lines)
