"""One step function, every layout: data, FSDP, tensor parallel and pmap equal one device.

Eight fake CPU devices (tests/conftest.py). Each config trains a few steps on one
device, then under other layouts; losses and parameters must agree to float32
round-off, and the parameters must really be laid out as the rules say.
"""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from tests.conftest import shared_data
from tests.helpers import load_config
from train import trainer
from train.metrics import read_metrics

TENSOR_RULES = {
    'mnist_mlp': ((r'Dense_0/kernel', (None, 'tensor')), (r'Dense_1/kernel', ('tensor', None))),
    'mnist_cnn': ((r'Conv_\d+/kernel', (None, None, None, 'tensor')),
                  (r'Dense_0/kernel', (None, 'tensor'))),
    'shakespeare_lstm': ((r'cell/h\w/kernel', (None, 'tensor')),),
    'shakespeare_gpt': ('megatron',),
}
LAYOUTS = {
    'data8': dict(mesh={'data': 8, 'fsdp': 1, 'tensor': 1}),
    'data2_fsdp4': dict(mesh={'data': 2, 'fsdp': 4, 'tensor': 1}),
    'data4_tensor2': dict(mesh={'data': 4, 'fsdp': 1, 'tensor': 2}),
    'pmap': dict(parallelism='pmap'),
}
DATA = {'mnist': 'mnist', 'tiny_shakespeare': 'tinyshakespeare'}


def _config(name, **overrides):
  overrides = {'num_train_steps': 3, 'batch_size': 16, 'log_every_steps': 1, **overrides}
  c = load_config(f'configs/{name}.py', 'tiny', **overrides)
  c.data.dir = str(shared_data(DATA[c.data.name]))
  if 'dropout_rate' in c.model:
    c.model.dropout_rate = 0.0  # dropout masks legitimately differ between layouts
  if name == 'mnist_mlp':
    c.model.hidden_sizes = (256, 64)
  return c


def _losses(workdir):
  return [r['train/loss'] for r in read_metrics(workdir) if 'train/loss' in r]


def _params(result):
  return jax.tree_util.tree_map(np.asarray, jax.device_get(result['state'].params))


@pytest.mark.parametrize('name', list(TENSOR_RULES))
def test_layouts_equal_one_device(name, tmp_path):
  ref_dir = str(tmp_path / 'one')
  ref = trainer.train_and_evaluate(_config(name), ref_dir,
                                   trainer.RunControl(devices=jax.devices()[:1]))
  ref_params = _params(ref)
  # data=8 alone is what every other trainer test runs; compare it once, on the MLP.
  layouts = LAYOUTS if name == 'mnist_mlp' else {k: v for k, v in LAYOUTS.items() if k != 'data8'}
  for layout, overrides in layouts.items():
    overrides = dict(overrides)
    if layout == 'data4_tensor2':
      overrides['partition_rules'] = TENSOR_RULES[name]
    workdir = str(tmp_path / layout)
    out = trainer.train_and_evaluate(_config(name, **overrides), workdir)
    np.testing.assert_allclose(_losses(workdir), _losses(ref_dir), rtol=2e-5, err_msg=layout)
    np.testing.assert_allclose(out['eval/loss'], ref['eval/loss'], rtol=2e-5, err_msg=layout)
    # Adam divides by sqrt(v): round-off in a near-zero gradient can move that weight
    # by up to ~lr, hence an absolute tolerance of a few lr-percent.
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5, err_msg=layout),
        _params(out), ref_params)
    if layout == 'data4_tensor2':
      _assert_some_tensor_sharded(out['state'].params)


def _assert_some_tensor_sharded(params):
  specs = [x.sharding.spec for x in jax.tree_util.tree_leaves(params)]
  assert any('tensor' in tuple(s) for s in specs), specs


def test_parameters_are_sharded_as_the_rules_say(tmp_path):
  c = _config('shakespeare_gpt', mesh={'data': 2, 'fsdp': 2, 'tensor': 2},
              partition_rules=('megatron',))
  c.model.hidden_size, c.model.mlp_dim = 64, 256
  state = trainer.train_and_evaluate(c, str(tmp_path))['state']
  layer = state.params['decoder']['layer_0']
  assert layer['attention']['query']['kernel'].sharding.spec == P(None, 'tensor')
  assert layer['attention']['out']['kernel'].sharding.spec == P('tensor', None)
  assert layer['mlp_out']['kernel'].sharding.spec == P('tensor', None)
  # Arrays no rule names fall to the FSDP default: the largest divisible dimension.
  assert state.params['decoder']['final_norm']['scale'].sharding.spec == P()  # < 1024 elements
  # Adam's moments follow their parameters.
  mu = state.opt_state[0].mu if hasattr(state.opt_state[0], 'mu') else None
  moments = [x for x in jax.tree_util.tree_leaves(state.opt_state) if x.shape == (64, 64)]
  assert moments and all(m.sharding.spec == P(None, 'tensor') or m.sharding.spec == P('tensor', None)
                         for m in moments), mu
  shard = layer['attention']['query']['kernel'].addressable_shards[0]
  assert shard.data.shape == (64, 32)  # really split in two over 'tensor'


def test_grad_accumulation_equals_one_big_batch(tmp_path):
  one = trainer.train_and_evaluate(_config('mnist_cnn'), str(tmp_path / 'one'))
  four = trainer.train_and_evaluate(_config('mnist_cnn', grad_accum_steps=2), str(tmp_path / 'acc'))
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                         _params(four), _params(one))
  np.testing.assert_allclose(_losses(str(tmp_path / 'acc')), _losses(str(tmp_path / 'one')),
                             rtol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_tracks_float32(tmp_path):
  f32 = trainer.train_and_evaluate(_config('shakespeare_gpt'), str(tmp_path / 'f32'))
  bf16 = trainer.train_and_evaluate(_config('shakespeare_gpt', dtype='bfloat16'),
                                    str(tmp_path / 'bf16'))
  leaves = jax.tree_util.tree_leaves(bf16['state'].params)
  assert all(x.dtype == np.float32 for x in leaves)
  assert all(x.dtype == np.float32 for x in jax.tree_util.tree_leaves(bf16['state'].opt_state)
             if hasattr(x, 'dtype') and x.ndim > 0)
  np.testing.assert_allclose(bf16['eval/loss'], f32['eval/loss'], rtol=0.02)
  assert bf16['eval/loss'] != f32['eval/loss']  # the compute really ran in bfloat16


def test_checkpoint_moves_between_meshes(tmp_path):
  """Saved on 8 devices, resumed on 1, then on 8 again: the same as 8 devices throughout."""
  c = lambda: _config('mnist_cnn', num_train_steps=6, checkpoint_every_steps=0)
  straight = trainer.train_and_evaluate(c(), str(tmp_path / 'straight'))
  moved = str(tmp_path / 'moved')
  trainer.train_and_evaluate(c(), moved, trainer.RunControl(stop_at_step=2))
  trainer.train_and_evaluate(c(), moved, trainer.RunControl(stop_at_step=4, devices=jax.devices()[:1]))
  out = trainer.train_and_evaluate(c(), moved)
  assert out['step'] == 6
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5),
                         _params(out), _params(straight))


def test_memory_report_is_logged_before_step_1_on_both_paths(tmp_path, caplog):
  """The jit and the pmap path compile the step ahead and log its memory_analysis."""
  import logging
  caplog.set_level(logging.INFO)
  for parallelism in ('jit', 'pmap'):
    caplog.clear()
    config = load_config('configs/default.py', 'tiny', num_train_steps=2, parallelism=parallelism)
    trainer.train_and_evaluate(config, str(tmp_path / parallelism))
    lines = [r.getMessage() for r in caplog.records]
    report = [i for i, m in enumerate(lines) if 'compiled in' in m and 'peak ~' in m]
    first_step = [i for i, m in enumerate(lines) if m.split(' ')[0] == 'step']
    assert report, (parallelism, lines)
    assert not first_step or report[0] < first_step[0], parallelism
