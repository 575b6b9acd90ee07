"""Faults: bad overrides (fuzzed), damaged checkpoints, kill -9 at random moments."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import REPO, latest_state, load_config, run_cli
from train import __main__ as cli
from train import checkpoint as ckpt_lib
from train import trainer

TINY = 'configs/default.py:tiny'
INTS = ['batch_size', 'num_train_steps', 'seed', 'log_every_steps', 'eval_every_steps',
        'checkpoint_every_steps', 'keep_checkpoints', 'grad_accum_steps', 'eval_batch_size',
        'data.seq_len', 'data.vocab_size', 'schedule.warmup_steps', 'data.num_threads']
FLOATS = ['learning_rate', 'optimizer.weight_decay', 'optimizer.grad_clip_norm', 'label_smoothing',
          'optimizer.b1', 'optimizer.b2', 'num_epochs', 'optimizer.eps']
NAMES = ['task', 'optimizer.name', 'schedule.name', 'model.name', 'data.name', 'dtype', 'remat',
         'parallelism', 'on_nonfinite', 'data.augment', 'data.tokenizer']
IMPOSSIBLE = [('learning_rate', '-0.1'), ('learning_rate', '0'), ('batch_size', '0'),
              ('batch_size', '-8'), ('batch_size', '12'), ('keep_checkpoints', '0'),
              ('grad_accum_steps', '0'), ('grad_accum_steps', '5'), ('log_every_steps', '0'),
              ('label_smoothing', '1.5'), ('schedule.warmup_steps', '-3'),
              ('optimizer.weight_decay', '-1'), ('mesh.data', '3'), ('mesh.tensor', '0'),
              ('mesh.fsdp', '16'), ('eval_every_steps', '-1'), ('data.seq_len', '0'),
              ('optimizer.b1', '1.5'), ('optimizer.b2', '-0.1'), ('data.num_threads', '-2'),
              ('checkpoint_every_steps', '-5'), ('eval_batch_size', '-1'), ('optimizer.eps', '0'),
              ('num_train_steps', '-1')]  # (num_epochs=-1 is no error: tiny sets num_train_steps)


def bad_overrides(n: int, seed: int = 0) -> list[list[str]]:
  """``n`` seeded random overrides, each of which must be refused."""
  rng = random.Random(seed)
  word = lambda: ''.join(rng.choice('abcdefghijklmnopqrstuvwxyz_') for _ in range(rng.randint(3, 9)))
  cases = []
  while len(cases) < n:
    kind = rng.choice(['unknown', 'int', 'float', 'name', 'impossible', 'nested'])
    if kind == 'unknown':
      cases.append([f'--config.zz{word()}={rng.randint(0, 9)}'])
    elif kind == 'nested':
      cases.append([f'--config.{rng.choice(["optimizer", "data", "schedule", "mesh"])}.zz{word()}=1'])
    elif kind == 'int':
      cases.append([f'--config.{rng.choice(INTS)}={rng.choice(["abc", "1.5", "[1]", "0x", word()])}'])
    elif kind == 'float':
      cases.append([f'--config.{rng.choice(FLOATS)}={rng.choice(["abc", "1e", "--", word()])}'])
    elif kind == 'name':
      cases.append([f'--config.{rng.choice(NAMES)}=zz{word()}'])
    else:
      key, value = rng.choice(IMPOSSIBLE)
      cases.append([f'--config.{key}={value}'])
  return cases


def test_fuzzed_bad_overrides_give_one_line_errors(tmp_path, capsys):
  cases = bad_overrides(240)
  for i, extra in enumerate(cases):
    workdir = str(tmp_path / f'w{i}')
    with pytest.raises(SystemExit) as exit_info:
      cli.main(['train', '--config', TINY, '--workdir', workdir, *extra])
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert exit_info.value.code == 2, (extra, err)
    assert len(lines) == 1 and lines[0].startswith('error: '), (extra, err)
    if '.zz' not in extra[0].split('=')[0]:  # a known key reaches its own check, not the parser's
      assert 'Unknown command line flag' not in err, (extra, err)
    assert not os.path.exists(os.path.join(workdir, 'checkpoints')), extra  # nothing started


def _cfg(**kw):
  base = dict(num_train_steps=6, checkpoint_every_steps=2, eval_every_steps=0, plots=False,
              keep_checkpoints=3)
  base.update(kw)
  return load_config('configs/default.py', 'tiny', **base)


def _damage(workdir, step, how):
  state_dir = os.path.join(workdir, 'checkpoints', str(step), 'state')
  files = [os.path.join(r, f) for r, _, fs in os.walk(state_dir) for f in fs]
  target = max(files, key=os.path.getsize)  # the array data
  data = bytearray(open(target, 'rb').read())
  if how == 'flip':
    data[len(data) // 2] ^= 0xFF
  else:
    data = data[:len(data) // 3]
  open(target, 'wb').write(bytes(data))


@pytest.mark.parametrize('how', ['flip', 'truncate'])
def test_damaged_checkpoint_is_named_and_fallback_resumes(tmp_path, how):
  workdir = str(tmp_path / 'run')
  trainer.train_and_evaluate(_cfg(num_train_steps=8), workdir, trainer.RunControl(stop_at_step=6))
  _damage(workdir, 6, how)
  with pytest.raises(ckpt_lib.CheckpointCorrupted, match=r'checkpoints/6'):
    trainer.train_and_evaluate(_cfg(num_train_steps=8), workdir)
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '6'))  # nothing deleted
  out = trainer.train_and_evaluate(_cfg(num_train_steps=8), workdir,
                                   trainer.RunControl(restore_fallback=True))
  assert out['step'] == 8
  assert os.path.isdir(os.path.join(workdir, 'checkpoints_damaged', '6'))
  trainer.train_and_evaluate(_cfg(num_train_steps=8), str(tmp_path / 'straight'))
  _, a = latest_state(workdir, None)
  _, b = latest_state(str(tmp_path / 'straight'), None)
  for x, y in zip(*(map(np.asarray, __import__('jax').tree_util.tree_leaves(t['params']))
                    for t in (a, b))):
    np.testing.assert_array_equal(x, y)  # resumed from step 4: still the uninterrupted result


def test_damaged_checkpoint_cli_error(tmp_path):
  workdir = str(tmp_path / 'run')
  args = ['--config', TINY, '--workdir', workdir, '--config.checkpoint_every_steps=2']
  assert run_cli(*args).returncode == 0
  _damage(workdir, 6, 'flip')
  proc = run_cli(*args)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith('error: checkpoint')
  assert '--restore_fallback' in proc.stderr
  assert run_cli(*args, '--restore_fallback').returncode == 0


KILL_EVERY = 3  # checkpoint interval of the kill -9 run
# Kills per mode: each is a process start (~5 s on a 2-core CPU); 10 spread over 60 steps still
# land in steps, checkpoint writes and metric writes (16 took 80 s a mode for no more coverage).
KILLS = 10
KILL_ARGS = ['--config', TINY, '--config.num_train_steps=60',
             f'--config.checkpoint_every_steps={KILL_EVERY}',
             '--config.eval_every_steps=0', '--config.log_every_steps=1', '--config.plots=False']


def _last_logged_step(workdir):
  from train.metrics import read_metrics
  steps = [r['step'] for r in read_metrics(workdir) if 'train/loss' in r]
  return steps[-1] if steps else 0


@pytest.mark.parametrize('save', ['async', 'sync'])
def test_kill_9_at_random_moments_never_loses_or_corrupts(tmp_path, save):
  """kill -9 at seeded random moments (in steps, in checkpoint writes, in metric writes);
  every restart resumes from the latest complete checkpoint and the end equals an uninterrupted
  run. Kills are timed by training progress, not wall time, so a fast machine still gets them.

  ``async`` (the default) may lose up to two intervals: a kill can land while the newest save
  is still being written. ``sync`` (``checkpoint_async=False``) finishes each save before the
  next step, so a kill loses at most one interval."""
  rng = random.Random(1234)
  workdir = str(tmp_path / 'killed')
  env = dict(os.environ, JAXLAB_COMPILATION_CACHE=str(tmp_path / 'xla'))
  args = KILL_ARGS + ([] if save == 'async' else ['--config.checkpoint_async=False'])
  cmd = [sys.executable, '-m', 'train', *args, '--workdir', workdir]
  kills, lost = 0, []
  while kills < KILLS:
    target = _last_logged_step(workdir) + rng.randint(1, 3)
    if target >= 60:
      break
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
      if _last_logged_step(workdir) >= target:
        time.sleep(rng.uniform(0.0, 0.05))  # somewhere inside a step or a checkpoint write
        break
      time.sleep(0.01)
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
      kills += 1
    _, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, -signal.SIGKILL), err[-2000:]
    if proc.returncode == 0:  # outran the kill to the last step
      break
    # Steps lost: logged before the kill, redone after it (the restart loads the newest
    # complete checkpoint). Async: the newest save may still be in flight when the kill comes,
    # but the one before it had finished when it started. Sync: the newest save is complete.
    complete = ckpt_lib.complete_steps(os.path.join(workdir, ckpt_lib.CHECKPOINT_DIR))
    lost.append(_last_logged_step(workdir) - (complete[-1] if complete else 0))
  assert kills >= KILLS - 1
  assert 0 <= min(lost) and max(lost) <= (2 if save == 'async' else 1) * KILL_EVERY, lost
  print(f'{save}: {kills} kills over 60 steps; steps lost per kill: max {max(lost)}, '
        f'mean {np.mean(lost):.1f} (checkpoint every {KILL_EVERY})')
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]  # (a finished run just reloads step 60)
  straight = str(tmp_path / 'straight')
  assert run_cli(*args, '--workdir', straight).returncode == 0
  s1, a = latest_state(workdir, None)
  s2, b = latest_state(straight, None)
  assert s1 == s2 == 60
  import jax
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)
  # The metrics log has each step once, as if never interrupted.
  from train.metrics import read_metrics
  logged = [r['step'] for r in read_metrics(workdir) if 'train/loss' in r]
  assert logged == list(range(1, 61))


class _Poisoned:
  """A source whose example 7 has NaN pixels."""

  def __init__(self, source):
    self.source = source

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    rec = dict(self.source[i])
    if i == 7:
      rec['inputs'] = np.full_like(rec['inputs'], np.nan)
    return rec


def _poison(monkeypatch):
  from train.data import sources
  real = sources.load_splits

  def load(data_cfg):
    splits = real(data_cfg)
    splits.train = _Poisoned(splits.train)
    return splits
  monkeypatch.setattr(sources, 'load_splits', load)


def test_nan_stops_naming_step_and_quantity_and_keeps_checkpoint(tmp_path, monkeypatch):
  _poison(monkeypatch)
  workdir = str(tmp_path / 'nan')
  config = _cfg(num_train_steps=60, checkpoint_every_steps=1, log_every_steps=1,
                **{'data.train_limit': 64})
  # NaN pixels vanish in relu (max(NaN, 0) = 0 in XLA), so the loss stays finite and the first
  # non-finite quantity is the first conv kernel's gradient: the message must say so.
  with pytest.raises(trainer.NonFiniteError,
                     match=r'the gradient of params/Conv_0/kernel is not finite at step \d+') as e:
    trainer.train_and_evaluate(config, workdir)
  bad_step = int(str(e.value).split('at step ')[1].split(';')[0])
  step, state = latest_state(workdir, None)
  assert step == bad_step - 1  # the last good checkpoint, untouched
  assert all(np.isfinite(x).all() for x in __import__('jax').tree_util.tree_leaves(state['params']))


def test_nan_skip_policy_counts_and_goes_on(tmp_path, monkeypatch):
  _poison(monkeypatch)
  config = _cfg(num_train_steps=12, checkpoint_every_steps=0, log_every_steps=1,
                on_nonfinite='skip', **{'data.train_limit': 64})
  out = trainer.train_and_evaluate(config, str(tmp_path / 'skip'))
  assert out['step'] == 12 and np.isfinite(out['eval/loss'])
  from train.metrics import read_metrics
  skipped = sum(r.get('train/nonfinite', 0) for r in read_metrics(str(tmp_path / 'skip')))
  assert skipped >= 1 and int(out['state'].nonfinite_steps) == skipped
