"""train/summary.py: per-module parameter counts against the parameter tree and the published
sizes, FLOPs against closed forms, and the command line's errors."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import models
from tests.helpers import REPO, load_config
from train import benchmark, summary


def _run(capsys, *args) -> dict:
  assert summary.main(['summary', *args, '--json']) == 0
  return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _top_level(s: dict) -> int:
  """Parameters of the root's own variables plus each depth-1 module's subtree."""
  rows = s['rows']
  tops = {r['path'] for r in rows if r['path'] and '/' not in r['path']}
  own = next(r['params'] for r in rows if r['path'] == '')
  return own + sum(summary.subtree_params(rows, p) for p in tops)


def test_gpt2_counts_and_flops_match_the_closed_form(capsys):
  s = _run(capsys, '--config', 'configs/gpt2_small.py', '--depth', '3')
  config = load_config('configs/gpt2_small.py')
  v, d, layers, t = config.model.vocab_size, 768, 12, 1024
  model = models.build('gpt2_small', vocab_size=v)
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, t), jnp.int32))['params']
  assert s['params'] == benchmark.param_count(params) == _top_level(s)
  # Published GPT-2 small: 124.44M with its 50,257 tokens; the config pads the table to v.
  assert s['params'] - (v - 50257) * d == 124_439_808
  # Per sequence: 12 d^2 weights per block and the tied d x V output, 2 FLOPs per multiply-add
  # for each of T tokens, plus QK^T and AV per block; lookups cost nothing. Causal attention
  # runs as two query halves (models/attention.py), the first over half the keys: 3/4 of the
  # T^2 scores, so 2 * (3/4) T^2 d FLOPs each for QK^T and AV.
  attention = 3 * t * t * d
  fwd = 2 * t * (12 * d * d * layers + v * d) + attention * layers
  assert s['fwd_flops'] == fwd
  assert s['train_flops'] == pytest.approx(3 * fwd, rel=1e-6)  # backward = 2 x forward
  assert s['tokens_per_example'] == t
  # The tied output projection is the embedding called again: its FLOPs, none of its parameters.
  again = [r for r in s['rows'] if r['call']]
  assert [(r['path'], r['call'], r['params']) for r in again] == [
      ('embed', 'attend', 0), ('embed/word_embeddings', 'attend', 0)]
  assert again[0]['fwd_flops'] == 2 * t * v * d
  block = next(r for r in s['rows'] if r['path'] == 'decoder/layer_0')
  assert summary.subtree_params(s['rows'], 'decoder/layer_0') == 12 * d * d + 13 * d
  assert block['fwd_flops'] == 2 * t * 12 * d * d + attention


def test_lstm_flops_count_every_step_of_the_scan(capsys):
  """XLA's cost analysis counts a loop body once; the summary counts all 128 steps."""
  s = _run(capsys, '--config', 'configs/shakespeare_lstm.py', '--depth', '1')
  t, e, h, vocab = 128, 64, 512, 65
  per_token = 2 * (4 * h * (e + h) + 4 * h * (h + h) + h * vocab)
  assert s['fwd_flops'] == t * per_token
  assert s['train_flops'] == pytest.approx(3 * t * per_token, rel=1e-6)
  lstm = lambda i: 4 * (i * h + h * h + h)  # input and recurrent kernels, one bias per gate
  assert s['params'] == _top_level(s) == vocab * e + lstm(e) + lstm(h) + h * vocab + vocab


def test_resnet18_matches_the_published_count_and_the_table_prints(capsys):
  assert summary.main(['summary', '--config', 'configs/cifar10_resnet.py',
                       '--config.model.name=resnet18', '--depth', '1']) == 0
  out = capsys.readouterr().out
  s = _run(capsys, '--config', 'configs/cifar10_resnet.py', '--config.model.name=resnet18',
           '--depth', '1')
  assert s['params'] == _top_level(s) == 11_173_962  # ResNet-18 for CIFAR-10, as published
  assert s['model_state'] > 0  # BatchNorm running statistics, not parameters
  assert 'total: 11,173,962 parameters' in out
  top = [l for l in out.splitlines() if l.startswith('  ')]
  assert len(top) == 1 + 1 + 8 + 1  # stem conv, its norm, eight blocks, head


def test_bad_command_lines_are_one_line_errors():
  for args, named in ((['--config.model.no_such_key=1'], 'no_such_key'),
                      (['--depth', '-1'], 'depth'),
                      (['--config.batch_size=oops'], 'batch_size')):
    r = subprocess.run([sys.executable, '-m', 'train.summary', '--config', 'configs/gpt2_small.py',
                        *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith('error:'), (args, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and named in r.stderr, (args, r.stderr)
  r = subprocess.run([sys.executable, '-m', 'train.summary', '--config', 'configs/nope.py'],
                     cwd=REPO, capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
