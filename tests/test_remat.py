"""Rematerialisation: equal gradients, and a real memory saving as the trainer compiles it.

XLA:CPU drops ``jax.checkpoint``'s optimisation barriers by default, so remat would
save nothing here; ``compile_options.remat_options`` keeps them (see its docstring).
"""
import importlib.util
import os
import types

import jax
import numpy as np
import pytest

from models.transformer import TransformerLM
from tests.helpers import REPO, load_config
from train import compile_options, steps, tasks, validate

# Long enough that each layer's T x T attention activations dominate the temporaries.
LAYERS, SEQ, BATCH = 4, 64, 4


def _grads_and_temps(remat: str):
  tokens = np.random.default_rng(0).integers(0, 65, (BATCH, SEQ)).astype(np.int32)
  model = TransformerLM(vocab_size=65, max_len=SEQ, num_layers=LAYERS, num_heads=2, hidden_size=32,
                        mlp_dim=64, dropout_rate=0.0, remat=remat)
  params = model.init(jax.random.key(0), tokens[:1])['params']
  loss_fn = steps.make_loss_fn(model, tasks.get('lm'))
  batch = {'inputs': tokens, 'targets': tokens}

  def mean_loss(p):
    loss_sum, (_, sums) = loss_fn(p, {}, batch, jax.random.key(1))
    return loss_sum / sums['loss'][1]
  options = compile_options.remat_options(types.SimpleNamespace(remat=remat), 'cpu') or None
  compiled = jax.jit(jax.grad(mean_loss)).lower(params).compile(compiler_options=options)
  return jax.device_get(compiled(params)), compiled.memory_analysis().temp_size_in_bytes


def test_remat_policies_give_equal_gradients_and_full_saves_memory():
  (none, temp_none), (full, temp_full), (dots, temp_dots) = map(
      _grads_and_temps, ('none', 'full', 'dots'))
  for other in (full, dots):
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                           other, none)
  # Without remat every layer keeps its [B, heads, T, T] attention tensors for the backward.
  assert temp_full < 0.6 * temp_none, (temp_full, temp_none)
  assert temp_dots < temp_none, (temp_dots, temp_none)


def test_remat_options_only_where_needed():
  assert compile_options.remat_options(types.SimpleNamespace(remat='none'), 'cpu') == {}
  assert compile_options.remat_options(types.SimpleNamespace(remat='full'), 'gpu') == {}
  assert compile_options.remat_options(types.SimpleNamespace(remat='dots'), 'cpu') == {
      'xla_disable_hlo_passes': 'cse_barrier_expander'}


def test_unknown_remat_policy_is_a_one_line_config_error():
  c = load_config('configs/shakespeare_gpt.py', 'tiny', remat='dots_saveable')
  with pytest.raises(validate.ConfigError,
                     match=r"^remat must be one of \('none', 'full', 'dots'\), got 'dots_saveable'$") as e:
    validate.check_config(c)
  assert '\n' not in str(e.value)
  c = load_config('configs/seed_fnn.py', 'tiny', remat='full')  # an MLP would silently ignore it
  with pytest.raises(validate.ConfigError, match="remat='full': model 'seed_fnn' has no remat") as e:
    validate.check_config(c)
  assert '\n' not in str(e.value)
  for policy in ('none', 'full', 'dots'):
    validate.check_config(load_config('configs/shakespeare_gpt.py', 'tiny', remat=policy))


def test_bench_remat_script_runs_and_checks_gradients():
  """The benchmark's plumbing on one policy (one compile: equal gradients are tested above)."""
  spec = importlib.util.spec_from_file_location(
      'bench_remat', os.path.join(REPO, 'experiments', 'bench_remat.py'))
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  config = load_config('configs/shakespeare_gpt.py', 'tiny')
  config.data.dir = None  # synthetic batches of the dataset's shapes
  rows = bench.run(config, policies=('full',), steps=2, warmup=0, rounds=2)
  (row,) = rows
  assert row['remat'] == 'full' and row['peak_memory_bytes'] > row['temp_bytes'] > 0
  assert row['step_time_ms'] > 0 and row['grad_max_abs'] > 0 and row['grad_max_abs_diff'] == 0
  bench.check_equal_gradients(rows)
  with pytest.raises(AssertionError, match='remat=full: gradients differ'):
    bench.check_equal_gradients([dict(row, grad_max_abs_diff=row['grad_max_abs'] * 1e-3)])
  assert 'grad max|diff|' in bench.report(rows, config, 0)
