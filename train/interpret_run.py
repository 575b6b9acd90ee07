"""``python -m train.interpret``: figures that explain a trained run's predictions.

  python -m train.interpret --workdir runs/mnist_cnn --out figures/mnist_cnn --num_examples 4
  python -m train.interpret --workdir runs/shakespeare_gpt --out figures/gpt --method attention

Reads ``config.json`` and the latest checkpoint of ``--workdir`` (params and BatchNorm
statistics), takes the first K examples of the run's eval split and writes, under ``--out``:

- ``saliency.png``, ``integrated_gradients.png``: heat maps beside the input images (image
  models) or per-token heat strips (token models, attributed w.r.t. the token embeddings);
  ``integrated_gradients.json`` and stdout: each example's completeness gap;
- ``attention_<i>.png``: layers x heads attention maps of example i (Transformers);
- ``activations.png``, ``activations.csv``, ``activations.json``: per-layer statistics.

Classifiers explain their predicted class (``--target label``: the true one); language
models the prediction after the first ``--max_tokens`` tokens of each eval window.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
from typing import Any

import numpy as np

METHODS = ('saliency', 'ig', 'attention', 'activations')


@dataclasses.dataclass
class Explained:
  """A run read back with the examples to explain (numpy arrays)."""
  config: Any
  model: Any
  variables: dict
  step: int
  info: Any
  batch: dict           # the first K eval examples, stacked (LM inputs cut to max_tokens)
  stats_batch: dict     # the first N eval examples for the activation statistics


def _stack(source, n: int) -> dict:
  records = [source[i] for i in range(min(n, len(source)))]
  if not records:
    raise ValueError('the eval split is empty')
  return {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}


def load(workdir: str, num_examples: int, stats_examples: int, data_dir: str | None = None,
         max_tokens: int = 64) -> Explained:
  """The run's model, variables and first eval examples. Raises FileNotFoundError,
  ValueError or DataError with a one-line message."""
  from train import posttrain
  from train.data import sources
  from train.trainer import build_model
  from train.workdir import check_config_paths
  config = posttrain.read_config(workdir)
  params, model_state, step = posttrain.load_variables(workdir)
  if data_dir:
    config.data.dir = data_dir
  check_config_paths(config)  # the run's data paths are only read
  want = max(num_examples, stats_examples)
  limit = config.data.get('eval_limit', 0)
  config.data.eval_limit = min(limit, want) if limit else want  # read only what is shown
  splits = sources.load_splits(config.data)
  config.remat = 'none'  # interpretation records values inside blocks (train/interpret.py)
  model = build_model(config, splits.info)
  batch = _stack(splits.eval, num_examples)
  stats_batch = _stack(splits.eval, stats_examples)
  if config.task == 'lm':
    batch = {k: v[:, :max_tokens] for k, v in batch.items()}
  return Explained(config, model, {'params': params, **model_state}, step, splits.info, batch,
                   stats_batch)


def token_strings(info, ids) -> list[str]:
  """Readable tokens for ids: the vocabulary's symbols, bytes, or the WordPiece tokenizer's."""
  extra = info.extra or {}
  ids = [int(i) for i in np.asarray(ids).ravel()]
  if 'vocab' in extra:
    vocab = extra['vocab']
    return [vocab[i] if 0 <= i < len(vocab) else f'<{i}>' for i in ids]
  if extra.get('tokenizer') == 'byte':
    return [bytes([i]).decode('latin-1') for i in ids]
  if extra.get('tokenizer_path'):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(extra['tokenizer_path'])
    return [tok.id_to_token(i) or f'<{i}>' for i in ids]
  return [str(i) for i in ids]


def _predict(run: Explained):
  import jax
  kw = {'mask': run.batch['mask']} if 'mask' in run.batch else {}
  return np.asarray(jax.jit(lambda v, x, kw: run.model.apply(v, x, train=False, **kw))(
      run.variables, run.batch['inputs'], kw))


def setup_attribution(run: Explained, target_kind: str):
  """``(f, x, args, baseline_kind, targets, captions)`` for :mod:`train.interpret` attributions."""
  from train import interpret
  import jax.numpy as jnp
  b = run.batch
  logits = _predict(run)
  inputs = b['inputs']
  tokens = np.issubdtype(inputs.dtype, np.integer)
  if run.config.task == 'lm':
    pos = np.full(len(inputs), inputs.shape[1] - 1)
    target = logits[np.arange(len(inputs)), pos].argmax(-1)
    captions = [f'example {i}: next token predicted {token_strings(run.info, [t])[0]!r}'
                f' (true {token_strings(run.info, [b["targets"][i, -1]])[0]!r})'
                for i, t in enumerate(target)]
    extra = {'tokens': jnp.asarray(inputs), 'position': jnp.asarray(pos)}
  else:
    pred = (logits > 0).astype(np.int64) if logits.ndim == 1 else logits.argmax(-1)
    labels = b.get('label', pred)
    target = labels if target_kind == 'label' else pred
    names = (run.info.extra or {}).get('label_names')
    name = (lambda c: names[int(c)]) if names else (lambda c: str(int(c)))
    captions = [f'{i}: label {name(labels[i])}, pred {name(pred[i])}' for i in range(len(inputs))]
    extra = {'tokens': jnp.asarray(inputs)} if tokens else {}
  if 'mask' in b:
    extra['mask'] = jnp.asarray(b['mask'])
  f = interpret.logit_score(run.model)
  x = interpret.embed(run.model, run.variables, extra['tokens'], extra.get('mask')) if tokens \
      else jnp.asarray(inputs)
  return f, x, (run.variables, jnp.asarray(target), extra), tokens, target, captions


def _token_examples(run: Explained, scores, captions):
  out = []
  for i, s in enumerate(np.asarray(scores)):
    n = int(run.batch['mask'][i].sum()) if 'mask' in run.batch else len(s)
    out.append((token_strings(run.info, run.batch['inputs'][i, :n]), s[:n], captions[i]))
  return out


def _feature_examples(scores, captions):
  return [([f'x{j}' for j in range(len(s))], s, c) for s, c in zip(np.asarray(scores), captions)]


def run_attributions(run: Explained, out: str, methods, *, steps: int, rule: str,
                     baseline: str, target: str, log=print) -> dict:
  """Saliency and/or IG figures; returns the IG completeness gaps per example."""
  import jax.numpy as jnp
  from train import interpret
  from train import interpret_figures as figs
  f, x, args, tokens, targets, captions = setup_attribution(run, target)
  images = not tokens and x.ndim == 4
  written, result = [], {}
  label = f'{run.config.model.name} step {run.step}'
  if 'saliency' in methods:
    sal = np.asarray(interpret.saliency(f, x, *args, reduce='l2' if tokens else
                                        ('max' if images else None)))
    path = os.path.join(out, 'saliency.png')
    if images:
      figs.image_attributions(path, run.batch['inputs'],
                              [('|gradient| (max over channels)', sal, 'abs')], captions,
                              f'vanilla-gradient saliency, {label}')
    else:
      ex = _token_examples(run, sal, captions) if tokens else _feature_examples(sal, captions)
      figs.token_strips(path, ex, f'saliency: |d logit / d embedding| per token, {label}',
                        signed=False)
    written.append(path)
  if 'ig' in methods:
    if baseline == 'black' and not tokens:
      # Per example: the smallest input value, i.e. a black image for standardised images.
      base = jnp.asarray(x.reshape(len(x), -1).min(-1).reshape((-1,) + (1,) * (x.ndim - 1)))
    else:
      base = jnp.zeros((), x.dtype)
    attr = interpret.integrated_gradients(f, x, *args, baseline=base, steps=steps, rule=rule,
                                          batch_size=16)
    gap = interpret.completeness_gap(f, x, attr, *args, baseline=base)
    attr = np.asarray(attr)
    path = os.path.join(out, 'integrated_gradients.png')
    what = 'token embedding' if tokens else 'input'
    head = (f'integrated gradients ({steps} steps, {rule}, {baseline} baseline, w.r.t. {what}), '
            f'{label}')
    if images:
      figs.image_attributions(path, run.batch['inputs'],
                              [('IG (sum over channels)', attr.sum(-1), 'signed'),
                               ('|IG|', np.abs(attr).sum(-1), 'abs')], captions, head)
    else:
      scores = attr.sum(-1) if tokens else attr
      ex = _token_examples(run, scores, captions) if tokens else _feature_examples(scores, captions)
      figs.token_strips(path, ex, head)
    written.append(path)
    rows = []
    for i in range(len(x)):
      rows.append({'example': i, 'target': int(targets[i]),
                   'f_x_minus_f_baseline': float(gap['delta'][i]),
                   'sum_attributions': float(gap['sum'][i]), 'abs_gap': float(gap['abs'][i]),
                   'relative_gap': float(gap['relative'][i])})
      log(f'IG example {i} (target {int(targets[i])}): f(x) - f(baseline) = {gap["delta"][i]:.5f}, '
          f'sum of attributions = {gap["sum"][i]:.5f}, '
          f'completeness gap {100 * gap["relative"][i]:.3f}%')
    worst = float(np.max(gap['relative']))
    if worst > 0.01:
      log(f'note: a completeness gap above 1% ({100 * worst:.2f}%); raise --steps')
    result = {'steps': steps, 'rule': rule, 'baseline': baseline, 'examples': rows}
    with open(os.path.join(out, 'integrated_gradients.json'), 'w') as fh:
      json.dump(result, fh, indent=1)
    written.append(os.path.join(out, 'integrated_gradients.json'))
  return {'written': written, 'ig': result}


def run_attention(run: Explained, out: str, log=print) -> list[str]:
  from train import interpret
  from train import interpret_figures as figs
  if not np.issubdtype(run.batch['inputs'].dtype, np.integer):
    log('attention: not a token model; skipped')
    return []
  mask = run.batch.get('mask')
  maps = interpret.attention_maps(run.model, run.variables, run.batch['inputs'], mask)
  if not maps:
    log(f'attention: {run.config.model.name} has no attention layers; skipped')
    return []
  written = []
  for i in range(len(run.batch['inputs'])):
    n = int(mask[i].sum()) if mask is not None else run.batch['inputs'].shape[1]
    panels = [(k, np.asarray(v[i, :, :n, :n])) for k, v in maps.items()]
    text = ''.join(token_strings(run.info, run.batch['inputs'][i, :n]))
    path = os.path.join(out, f'attention_{i}.png')
    figs.attention_grid(path, panels, token_strings(run.info, run.batch['inputs'][i, :n]),
                        f'attention, example {i} ({n} tokens): {text[:60]!r}')
    written.append(path)
  return written


def run_activations(run: Explained, out: str) -> list[str]:
  from train import interpret
  from train import interpret_figures as figs
  b = run.stats_batch
  rows = interpret.activation_stats(run.model, run.variables, b['inputs'], b.get('mask'))
  csv_path = os.path.join(out, 'activations.csv')
  with open(csv_path, 'w', newline='') as fh:
    w = csv.DictWriter(fh, fieldnames=interpret.STAT_COLUMNS)
    w.writeheader()
    w.writerows(rows)
  json_path = os.path.join(out, 'activations.json')
  with open(json_path, 'w') as fh:
    json.dump({'examples': len(b['inputs']), 'rows': rows}, fh, indent=1)
  png = figs.activation_figure(
      os.path.join(out, 'activations.png'), rows,
      f'activation statistics, {run.config.model.name} step {run.step}, '
      f'{len(b["inputs"])} eval examples')
  return [png, csv_path, json_path]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog='python -m train.interpret', description=__doc__.splitlines()[0])
  p.add_argument('--workdir', required=True, help='a trained run (config.json + checkpoints/)')
  p.add_argument('--out', required=True, help='folder for the figures and tables')
  p.add_argument('--num_examples', type=int, default=4, help='first K eval examples to explain')
  p.add_argument('--method', default='all',
                 help=f'all, or one or more (comma-separated) of {", ".join(METHODS)}')
  p.add_argument('--steps', type=int, default=64, help='integrated-gradients path intervals')
  p.add_argument('--rule', choices=('trapezoid', 'riemann', 'left', 'midpoint'),
                 default='trapezoid')
  p.add_argument('--baseline', choices=('auto', 'zero', 'black'), default='auto',
                 help='IG baseline; auto: black images (the smallest input value), zero embeddings')
  p.add_argument('--target', choices=('pred', 'label'), default='pred', help='class to explain')
  p.add_argument('--max_tokens', type=int, default=64, help='LM context explained (first tokens)')
  p.add_argument('--stats_examples', type=int, default=64,
                 help='examples for activation statistics')
  p.add_argument('--data_dir', default=None, help="override the run's data.dir")
  args = p.parse_args(argv)
  methods = METHODS if args.method == 'all' else tuple(args.method.split(','))
  unknown = sorted(set(methods) - set(METHODS))
  if unknown:
    print(f'error: unknown --method {", ".join(unknown)}; choose all or from {", ".join(METHODS)}',
          file=sys.stderr)
    return 2
  if args.num_examples < 1 or args.steps < 1 or args.max_tokens < 1 or args.stats_examples < 1:
    print('error: --num_examples, --steps, --max_tokens and --stats_examples must be >= 1',
          file=sys.stderr)
    return 2
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.ERROR)
  from train.data.base import DataError
  try:
    run = load(args.workdir, args.num_examples, args.stats_examples, args.data_dir, args.max_tokens)
  except (FileNotFoundError, ValueError, KeyError, DataError) as e:
    print(f'error: {str(e).splitlines()[0] if str(e) else type(e).__name__}', file=sys.stderr)
    return 2
  os.makedirs(args.out, exist_ok=True)
  baseline = args.baseline
  if baseline == 'auto':
    baseline = 'black' if run.batch['inputs'].ndim == 4 else 'zero'
  print(f'run {args.workdir}: {run.config.model.name} at step {run.step}, '
        f'{len(run.batch["inputs"])} {run.config.data.eval_split} examples')
  written = []
  if 'saliency' in methods or 'ig' in methods:
    written += run_attributions(run, args.out, methods, steps=args.steps, rule=args.rule,
                                baseline=baseline, target=args.target)['written']
  if 'attention' in methods:
    written += run_attention(run, args.out)
  if 'activations' in methods:
    written += run_activations(run, args.out)
  for path in written:
    print(f'wrote {path}')
  return 0
