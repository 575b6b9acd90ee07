"""Model summary: ``python -m train.summary --config configs/NAME.py[:ARG] [--config.key=value ...]
[--depth D] [--json]``.

Prints, for the model a config trains, one row per module call down to ``--depth``
levels: its parameters (its submodules included), their share of the total, and the
FLOPs of one example through it, forward and for a training step (forward plus
backward). The model is built exactly as ``python -m train`` builds it, on an example
of the dataset's shapes; nothing is allocated at full size (parameters come from
``jax.eval_shape``), so GPT-2 or ResNet-50 summarise on a laptop.

Counts come from two places on purpose: the total is the size of the parameter tree,
the rows are Flax's per-call module table (``flax.linen.summary``), and the command
checks that the rows add up to the tree before it prints. FLOPs are model FLOPs, the
convention of MFU and of ``train.benchmark``: 2 per multiply-add of every matmul and
convolution, counted in the traced program (a scan's body as many times as it runs);
elementwise work is left out. For sequence models an example is one sequence of
``data.seq_len`` tokens; FLOPs per token are printed too.
"""
from __future__ import annotations

import json
import os
import sys
from unittest import mock

import jax
import numpy as np


def _matmul_flops(fn, *args) -> int:
  """FLOPs of every dot and convolution ``fn`` runs (a scan's body ``length`` times)."""
  from train.benchmark import jaxpr_matmul_flops
  return int(jaxpr_matmul_flops(jax.make_jaxpr(fn)(*args).jaxpr)[0])


def summarize(config, depth: int = 2) -> dict:
  """Per-module parameter counts and per-example FLOPs of the model ``config`` trains.

  Returns ``{'model', 'input_shape', 'tokens_per_example', 'params', 'model_state',
  'fwd_flops', 'train_flops', 'rows': [{'path', 'call', 'params', 'fwd_flops',
  'train_flops'}]}``, FLOPs per example. ``rows`` are in call order, the root (path
  ``''``) first; a module's second call has its method in ``call`` and no parameters
  (they are counted at its first).
  """
  from flax.linen import summary as flax_summary
  from train import benchmark, trainer
  from train.state import init_variables
  info, spec = benchmark.dataset_spec(config)
  example = benchmark.synthetic_batch(spec, info, 1, config.seed)
  model = trainer.build_model(config, info)
  rng = jax.random.key(config.seed)
  variables = jax.eval_shape(lambda r: init_variables(model, example, r), rng)
  total = benchmark.param_count(variables['params'])
  kwargs = {'mask': example['mask']} if 'mask' in example else {}
  # Flax's module table traces the model abstractly, once per module call, and costs each
  # call; we cost it by counting the jaxpr's matmuls rather than by XLA's cost analysis,
  # which counts a loop body once (an LSTM's 128-step scan would be 1/128 of its FLOPs).
  with mock.patch.object(flax_summary, '_get_flops', _matmul_flops):
    table = flax_summary._get_module_table(  # pylint: disable=protected-access
        model, depth=depth, show_repeated=True, compute_flops=True, compute_vjp_flops=True)(
            {'params': rng, 'dropout': rng}, example['inputs'], train=False, **kwargs)
  rows, seen = [], set()
  for row in table:
    path = '/'.join(row.path)
    # A module called again (a tied embedding's output projection) costs FLOPs each call
    # but owns its parameters once.
    again = path in seen
    seen.add(path)
    params = {} if again else row.counted_variables.get('params', {})
    rows.append({'path': path, 'call': row.method if again else None,
                 'params': benchmark.param_count(params), 'fwd_flops': float(row.flops),
                 'train_flops': float(row.vjp_flops)})
  # A row counts its own variables and, at the depth limit, its submodules': rows at every
  # depth therefore partition the tree, and must add up to it exactly.
  if sum(r['params'] for r in rows) != total:
    raise AssertionError(f'module rows hold {sum(r["params"] for r in rows):,} parameters, '
                         f'the parameter tree {total:,}')
  root = rows[0]
  x = example['inputs']
  tokens = int(np.prod(x.shape[1:])) if benchmark.is_sequence_model(example) else None
  return {'model': config.model.name, 'input_shape': list(x.shape[1:]), 'input_dtype': str(x.dtype),
          'tokens_per_example': tokens, 'params': total,
          'model_state': benchmark.param_count(
              {k: v for k, v in variables.items() if k != 'params'}),
          'fwd_flops': root['fwd_flops'], 'train_flops': root['train_flops'], 'rows': rows}


def subtree_params(rows: list[dict], path: str) -> int:
  """Parameters under ``path``: its row plus the rows of its submodules (each owned once)."""
  prefix = path + '/' if path else ''
  return sum(r['params'] for r in rows if r['path'] == path or r['path'].startswith(prefix))


def format_table(s: dict) -> str:
  """The summary as a fixed-width table, submodules indented under their parent."""
  total = s['params']
  lines = [f"model {s['model']}: input {tuple(s['input_shape'])} {s['input_dtype']}, "
           f"FLOPs per example (multiply-add = 2)",
           f"{'module':40s} {'params':>14s} {'share':>7s} {'fwd MFLOPs':>13s} "
           f"{'train MFLOPs':>13s}"]
  for r in s['rows']:
    n = subtree_params(s['rows'], r['path']) if not r['call'] else 0
    if r['path'] and not n and not r['fwd_flops']:
      continue  # dropout, activations: nothing to count
    name = r['path'].split('/')[-1] if r['path'] else s['model']
    name += f" ({r['call']} again)" if r['call'] else ''
    indent = '  ' * (r['path'].count('/') + 1 if r['path'] else 0)
    share = 100.0 * n / total if total else 0.0
    lines.append(f"{(indent + name)[:40]:40s} {n:14,d} {share:6.1f}% "
                 f"{r['fwd_flops'] / 1e6:13,.1f} {r['train_flops'] / 1e6:13,.1f}")
  lines.append(f"total: {total:,} parameters ({total * 4 / 2**20:,.1f} MiB as float32)"
               + (f", {s['model_state']:,} non-trainable state values" if s['model_state'] else ''))
  lines.append(f"per example: {s['fwd_flops'] / 1e9:,.3f} GFLOPs forward, "
               f"{s['train_flops'] / 1e9:,.3f} GFLOPs train step")
  if s['tokens_per_example']:
    t = s['tokens_per_example']
    lines.append(f"per token ({t} per example): {s['fwd_flops'] / t / 1e6:,.1f} MFLOPs forward, "
                 f"{s['train_flops'] / t / 1e6:,.1f} MFLOPs train step")
  return '\n'.join(lines)


def _define_flags(argv):
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/cifar10_resnet.py.',
                                  lock_config=True, flag_values=fv, sys_argv=list(argv))
  flags.DEFINE_integer('depth', 2, 'Module levels to list (submodules deeper are counted in '
                       'their parent).', lower_bound=0, flag_values=fv)
  flags.DEFINE_bool('json', False, 'Print the summary as one JSON line instead.', flag_values=fv)
  return fv


def main(argv=None) -> int:
  argv = list(sys.argv if argv is None else argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  from train import benchmark, validate
  fv = _define_flags(argv)
  config = benchmark.parse_flags(fv, argv)
  if config is None:
    return 2
  try:
    validate.check_config(config)
    s = summarize(config, fv.depth)
  except (validate.ConfigError, ValueError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  print(json.dumps(s) if fv.json else format_table(s), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
