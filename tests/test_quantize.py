"""Post-training int8 quantization: the error bound, the scales, the file and the command."""
import json
import os

import jax
import numpy as np
import pytest

from tests.conftest import shared_data
from tests.helpers import load_config
from train import quantize, trainer


def _params(rng):
  dense = rng.normal(size=(20, 6)).astype(np.float32)
  dense[3, 1] = dense[7, 4] = 0.0            # exact zeros inside live channels
  dense[:, 5] = 0.0                          # a whole channel pruned away
  conv = (rng.normal(size=(3, 3, 4, 8)) * rng.uniform(0.01, 3, size=8)).astype(np.float32)
  return {'Conv_0': {'kernel': conv, 'bias': rng.normal(size=8).astype(np.float32)},
          'Dense_0': {'kernel': dense, 'bias': rng.normal(size=6).astype(np.float32)},
          'Embed_0': {'embedding': rng.normal(size=(5, 4)).astype(np.float32)}}


def test_per_channel_round_trip_bound_scales_and_zeros():
  params = _params(np.random.default_rng(0))
  q, scales = quantize.quantize_params(params)
  deq = quantize.dequantize_params(q, scales)
  assert set(scales) == {'Conv_0', 'Dense_0'} and set(scales['Conv_0']) == {'kernel'}
  for layer in ('Conv_0', 'Dense_0'):
    w, s, qk = params[layer]['kernel'], scales[layer]['kernel'], q[layer]['kernel']
    assert qk.dtype == np.int8 and qk.shape == w.shape and np.abs(qk).max() <= 127
    assert s.dtype == np.float32 and s.shape == (w.shape[-1],)
    amax = np.abs(w).reshape(-1, w.shape[-1]).max(0)
    np.testing.assert_allclose(s, amax / 127, rtol=1e-6)
    err = np.abs(w - deq[layer]['kernel'])
    assert np.all(err <= s / 2 * (1 + 1e-5) + 1e-12)  # per output channel (broadcast on the last axis)
    assert np.all(deq[layer]['kernel'][w == 0] == 0)
    assert deq[layer]['kernel'].dtype == np.float32
  assert scales['Dense_0']['kernel'][5] == 0 and np.all(q['Dense_0']['kernel'][:, 5] == 0)
  # Biases and embeddings stay float, bit for bit.
  for path in (('Conv_0', 'bias'), ('Dense_0', 'bias'), ('Embed_0', 'embedding')):
    np.testing.assert_array_equal(q[path[0]][path[1]], params[path[0]][path[1]])
    assert q[path[0]][path[1]].dtype == np.float32


def test_file_round_trip_and_four_times_smaller_on_a_real_model(tmp_path):
  from models import CNN
  params = jax.tree_util.tree_map(
      np.asarray, CNN(num_classes=10).init(jax.random.key(0), np.zeros((1, 28, 28, 1)))['params'])
  q, scales = quantize.quantize_params(params)
  quantize.save_quantized(str(tmp_path / 'q.safetensors'), q, scales, {'batch_stats': {'m': np.ones(3)}})
  quantize.save_float(str(tmp_path / 'f.safetensors'), params)
  ratio = os.path.getsize(tmp_path / 'f.safetensors') / os.path.getsize(tmp_path / 'q.safetensors')
  assert 3.9 < ratio <= 4.0, ratio
  q2, s2, state = quantize.load_quantized(str(tmp_path / 'q.safetensors'))
  jax.tree_util.tree_map(np.testing.assert_array_equal, q2, q)
  jax.tree_util.tree_map(np.testing.assert_array_equal, s2, scales)
  assert q2['Dense_0']['kernel'].dtype == np.int8
  np.testing.assert_array_equal(state['batch_stats']['m'], np.ones(3))


def test_command_on_a_tiny_mnist_run(tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  config = load_config('configs/mnist_cnn.py', 'tiny', **{'data.dir': str(shared_data('mnist'))})
  result = trainer.train_and_evaluate(config, workdir)
  out = str(tmp_path / 'int8.safetensors')
  r = quantize.quantize_run(workdir, out)
  assert r['float']['accuracy'] == result['eval/accuracy']  # the trainer's own eval path
  assert r['float']['num_examples'] == 64
  assert abs(r['float']['accuracy'] - r['int8']['accuracy']) <= 2 / 64  # at most a couple flip
  assert 3.9 < r['float_bytes'] / r['int8_bytes'] <= 4.0 and os.path.isfile(out)
  assert r['kernels'] == 4
  assert quantize.main(['--workdir', workdir]) == 0  # default --out: beside the checkpoints
  text = capsys.readouterr().out
  assert 'accuracy float32' in text and 'drop' in text and 'float32/int8 =' in text
  assert os.path.isfile(os.path.join(workdir, 'params_int8.safetensors'))


def test_command_refuses_bad_workdirs(tmp_path, capsys):
  assert quantize.main(['--workdir', str(tmp_path / 'nothing')]) == 2
  lm = tmp_path / 'lm'
  lm.mkdir()
  (lm / 'config.json').write_text(json.dumps({'task': 'lm', 'data': {}, 'model': {}}))
  assert quantize.main(['--workdir', str(lm)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 2 and all(l.startswith('error: ') for l in err)
  assert 'does not exist' in err[0] and 'classifier' in err[1]
