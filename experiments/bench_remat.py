"""Rematerialisation on the Transformer: peak memory and step time, with equal gradients.

  python experiments/bench_remat.py [--config configs/shakespeare_gpt.py] [--seq_len 512] \
      [--config.batch_size=8 ...] [--steps 10] [--rounds 5] [--nokeep_barriers] [--json]

For ``remat`` = none, full and dots (``dots_with_no_batch_dims_saveable``) it compiles
the train step as the trainer does (``train.benchmark.build``: same model, optimizer
and state, synthetic batches, one device), then prints for each

- the compiled step's memory from ``memory_analysis()``: arguments + outputs -
  donated aliases + temporaries (``train.benchmark.peak_memory_bytes``), and the
  temporaries alone (where the saved activations live);
- the median step time (the policies' steps interleave round by round, so a
  neighbour's load on a shared machine weighs on all of them alike);
- the largest absolute difference of the mean-loss gradients from ``none``'s, which
  must be allclose: remat changes what is stored, never what is computed.

``--seq_len`` sets ``data.seq_len`` and ``model.max_len`` together (attention's
``T x T`` activations are what remat saves most of). On CPU the trainer compiles
remat steps with XLA's ``cse_barrier_expander`` pass off
(``train.compile_options.remat_options``); ``--nokeep_barriers`` shows XLA:CPU's
default, where remat saves nothing.
"""
from __future__ import annotations

import json
import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

POLICIES = ('none', 'full', 'dots')


def _define_flags():
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', os.path.join(REPO, 'configs', 'shakespeare_gpt.py'),
                                  'A Transformer config.',
                                  lock_config=True, flag_values=fv)
  flags.DEFINE_integer('seq_len', 0, 'Sets data.seq_len and model.max_len (0: the config\'s).',
                       flag_values=fv)
  flags.DEFINE_integer('steps', 10, 'Timed steps per policy (the median is reported).',
                       flag_values=fv)
  flags.DEFINE_integer('warmup', 2, 'Untimed steps per policy after the compile.', flag_values=fv)
  flags.DEFINE_integer('rounds', 5, 'Rounds that interleave the policies\' timed steps.',
                       flag_values=fv)
  flags.DEFINE_bool('keep_barriers', True, 'CPU: compile as the trainer does, keeping the '
                    'remat optimisation barriers (off: XLA:CPU\'s default).', flag_values=fv)
  flags.DEFINE_bool('json', False, 'Also print one JSON line with every figure.', flag_values=fv)
  return fv


def with_remat(config, policy: str, seq_len: int = 0):
  """A copy of ``config`` with ``remat=policy`` (and the sequence length, if given)."""
  c = config.copy_and_resolve_references()
  c.remat = policy
  if seq_len:
    c.data.seq_len = seq_len
    c.model.max_len = seq_len
  return c


def mean_loss_grads(built, config, compiler_options=None):
  """Gradients of the mean training loss at the built state's parameters and batch."""
  import jax
  from train import steps, tasks
  loss_fn = steps.make_loss_fn(built['model'], tasks.get(config.task, config),
                               config.label_smoothing)
  state, batch, rng = built['state'], built['batch'], built['rng']

  def mean_loss(params):
    loss_sum, (_, sums) = loss_fn(params, state.model_state, batch, rng)
    return loss_sum / sums['loss'][1]
  grad = jax.jit(jax.grad(mean_loss)).lower(state.params).compile(compiler_options=compiler_options)
  return jax.device_get(grad(state.params))


def max_abs_diff(a, b) -> float:
  import jax
  import numpy as np
  return max(float(np.max(np.abs(x - y))) for x, y in
             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def temp_bytes(compiled) -> int | None:
  try:
    return int(compiled.memory_analysis().temp_size_in_bytes)
  except Exception:  # not every backend implements it
    return None


def run(config, policies=POLICIES, seq_len: int = 0, steps: int = 10, warmup: int = 2,
        rounds: int = 5, keep_barriers: bool = True) -> list[dict]:
  """One row per policy: memory, median step time and the gradient difference from the first."""
  import jax
  import numpy as np
  from train import benchmark, compile_options
  device = jax.local_devices()[:1]
  built, rows = {}, []
  for policy in policies:
    c = with_remat(config, policy, seq_len)
    # An empty pass list overrides the trainer's option: XLA:CPU's default compile.
    options = None if keep_barriers else {'xla_disable_hlo_passes': ''}
    b = benchmark.build(c, devices=device, compiler_options=options)
    grad_options = compile_options.remat_options(c, jax.default_backend()) if keep_barriers else None
    b['grads'] = mean_loss_grads(b, c, grad_options)  # before the timed steps donate the state
    b['state'], _ = benchmark.time_steps(b['compiled'], b['state'], b['batch'], b['rng'], 0, warmup)
    b['times'] = []
    built[policy] = b
  for r in range(rounds):
    for policy, b in built.items():
      n = steps // rounds + (r < steps % rounds)
      b['state'], t = benchmark.time_steps(b['compiled'], b['state'], b['batch'], b['rng'], n, 0)
      b['times'] += t
  ref = built[policies[0]]
  for policy, b in built.items():
    diff = max_abs_diff(b['grads'], ref['grads'])
    scale = max(float(np.max(np.abs(g))) for g in jax.tree_util.tree_leaves(ref['grads']))
    rows.append({'remat': policy, 'peak_memory_bytes': benchmark.peak_memory_bytes(b['compiled']),
                 'temp_bytes': temp_bytes(b['compiled']),
                 'step_time_ms': statistics.median(b['times']) * 1e3,
                 'compile_time_s': b['compile_time_s'],
                 'grad_max_abs_diff': diff, 'grad_max_abs': scale})
  return rows


def check_equal_gradients(rows, rtol: float = 1e-4) -> None:
  """Every policy's gradients match the first's to ``rtol`` of the largest gradient."""
  for r in rows:  # a raise, not an assert: python -O must not drop the check
    if not r['grad_max_abs_diff'] <= rtol * r['grad_max_abs']:
      raise AssertionError(f"remat={r['remat']}: gradients differ by {r['grad_max_abs_diff']:.3g} "
                           f"(largest gradient {r['grad_max_abs']:.3g})")


def report(rows, config, seq_len: int) -> str:
  import jax
  m = config.model
  t = seq_len or config.data.seq_len
  lines = [f'{m.name}: {m.num_layers} layers x {m.hidden_size}, {m.num_heads} heads, MLP {m.mlp_dim}; '
           f'batch {config.batch_size} x {t} tokens; {config.dtype}; '
           f'{jax.default_backend()} ({jax.local_devices()[0].device_kind})',
           f"{'remat':6s} {'peak MiB':>9s} {'temps MiB':>10s} {'vs none':>8s} {'ms/step':>9s} "
           f"{'vs none':>8s} {'grad max|diff|':>15s}"]
  ref = rows[0]
  for r in rows:
    mib = lambda v: f'{v / 2**20:9.1f}' if v is not None else f"{'n/a':>9s}"
    ratio = (f"{r['peak_memory_bytes'] / ref['peak_memory_bytes']:8.2f}"
             if r['peak_memory_bytes'] and ref['peak_memory_bytes'] else f"{'n/a':>8s}")
    lines.append(f"{r['remat']:6s} {mib(r['peak_memory_bytes'])} {mib(r['temp_bytes']):>10s} {ratio} "
                 f"{r['step_time_ms']:9.1f} {r['step_time_ms'] / ref['step_time_ms']:8.2f} "
                 f"{r['grad_max_abs_diff']:15.2e}")
  lines.append(f"(largest gradient {ref['grad_max_abs']:.3g}; gradients are of the mean loss)")
  return '\n'.join(lines)


def main(argv=None) -> int:
  argv = list(sys.argv if argv is None else argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  from train.benchmark import parse_flags
  try:
    fv = _define_flags()  # a default config file is read (with overrides) right here
  except Exception as e:
    print(f'error: {str(e).splitlines()[0] if str(e) else type(e).__name__}', file=sys.stderr)
    return 2
  config = parse_flags(fv, argv)
  if config is None:
    return 2
  from train.runtime import tune_malloc
  tune_malloc()  # as the trainer does: XLA:CPU temporaries stay mapped between steps
  rows = run(config, seq_len=fv.seq_len, steps=fv.steps, warmup=fv.warmup, rounds=fv.rounds,
             keep_barriers=fv.keep_barriers)
  print(report(rows, config, fv.seq_len), flush=True)
  if fv.json:
    print(json.dumps({'seq_len': fv.seq_len or config.data.seq_len, 'batch_size': config.batch_size,
                      'keep_barriers': fv.keep_barriers, 'rows': rows}), flush=True)
  check_equal_gradients(rows)
  return 0


if __name__ == '__main__':
  sys.exit(main())
