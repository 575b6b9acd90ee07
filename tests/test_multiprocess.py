"""Two processes on 127.0.0.1 (CPU collectives over gloo) train data-parallel, save,
restore, and reach the parameters one process reaches with the same global batch."""
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from tests.helpers import REPO, latest_state, load_config

ARGS = ['--config', 'configs/default.py:tiny', '--config.num_train_steps=20',
        '--config.checkpoint_every_steps=5', '--config.eval_every_steps=0']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_', 'XLA_'))}
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=1',
             JAXLAB_COMPILATION_CACHE='', **extra)
  return env


def _run_two(workdir, *extra):
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'train', *ARGS, '--workdir', workdir, *extra], cwd=REPO,
      env=_env(JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}', JAX_NUM_PROCESSES='2',
               JAX_PROCESS_ID=str(i)),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs


def test_two_processes_save_restore_and_match_one(tmp_path):
  two = str(tmp_path / 'two')
  outs = _run_two(two, '--stop_at_step=10')
  assert 'process 0 of 2' in outs[0] and 'process 1 of 2' in outs[1]
  _run_two(two)  # restores step 10 in both processes and goes on to 20
  one = str(tmp_path / 'one')
  proc = subprocess.run([sys.executable, '-m', 'train', *ARGS, '--workdir', one], cwd=REPO,
                        env=_env(), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  config = load_config('configs/default.py', 'tiny')
  s2, a = latest_state(two, config)
  s1, b = latest_state(one, config)
  assert s1 == s2 == 20
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5),
                         a['params'], b['params'])
  # Only process 0 wrote the metrics: one line per logged step, no duplicates.
  steps = [l for l in open(os.path.join(two, 'metrics.jsonl')) if '"train/loss"' in l]
  assert len(steps) == len({l.split(',')[0] for l in steps})
