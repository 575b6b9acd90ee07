"""Writes that fail and writes that must not happen.

- A checkpoint save that fails (disk full, no permission, quota, read-only disk) is one
  clear error naming the step and the cause; the half-written step is removed, the
  previous checkpoint and its checksums still load, and the same command resumes and
  ends bit-identical (CPU) to an uninterrupted run. Faults are injected into orbax's
  own file writes (runs anywhere), and made for real where the tests may: a tiny tmpfs
  that fills up and a read-only bind mount (root), or chmod (not root).
- Paths from configs are only read: a run with every path key pointed at another
  folder leaves that folder unchanged and writes only inside its workdir.
"""
import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import zlib

import jax
import numpy as np
import pytest

from tests.helpers import REPO, latest_state, load_config
from train import __main__ as cli
from train import checkpoint as ckpt_lib
from train import trainer
from train import workdir as workdir_lib
from train.metrics import read_metrics

TINY = 'configs/default.py:tiny'
ARGS = ['--config', TINY, '--config.num_train_steps=6', '--config.checkpoint_every_steps=2',
        '--config.eval_every_steps=0', '--config.plots=False']
# Checkpoints at steps 2 and 4 and the final 6; the fault hits step 4's save, which runs in the
# background and is found failed when step 6 is saved.
FAILED, KEPT = 4, 2
# tensorstore's own words when an array write hit a full disk (seen on a 2.6 MB tmpfs).
TENSORSTORE_ENOSPC = (
    'RESOURCE_EXHAUSTED: Error writing "opt_state.0.0.nu.Dense_1.bias/0" in OCDBT database at '
    'local file "/w/checkpoints/6.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/": '
    'Failed writing: "/w/.../d/d542eb8e": Failed to write 145419 bytes to file 11: No space left on '
    "device [os_error_code='28']")


def _cli_in_process(monkeypatch, argv) -> int:
  """``python -m train ARGV`` in this process: the exit status. Leaves the process as it was
  (signal handlers, XLA's compilation-cache settings, malloc)."""
  monkeypatch.setenv('JAXLAB_TUNE_MALLOC', '0')
  keys = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs',
          'jax_persistent_cache_min_entry_size_bytes')
  saved = {k: getattr(jax.config, k) for k in keys}
  handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    return cli.main(['train', *argv])
  except SystemExit as e:
    return e.code
  finally:
    for s, h in handlers.items():
      signal.signal(s, h)
    for k, v in saved.items():
      jax.config.update(k, v)


def _cfg(**kw):
  base = dict(num_train_steps=6, checkpoint_every_steps=2, eval_every_steps=0, plots=False)
  base.update(kw)
  return load_config('configs/default.py', 'tiny', **base)


def _leaves(workdir):
  return jax.tree_util.tree_leaves(latest_state(workdir, None)[1])


def _assert_same_params(workdir, straight):
  for x, y in zip(_leaves(workdir), straight, strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """The uninterrupted run's final state, as numpy leaves."""
  workdir = str(tmp_path_factory.mktemp('straight'))
  trainer.train_and_evaluate(_cfg(), workdir)
  return _leaves(workdir)


def _fail_orbax_writes(monkeypatch, step: int, code: int, where: str = 'metadata') -> list[str]:
  """Makes orbax raise ``OSError(code)`` while saving ``step``: at ``'metadata'``, its write of
  the state's metadata, partway through the save after tensorstore has written the arrays; at
  ``'mkdir'``, the creation of the step's temporary folder, the first write of a save.
  Returns the paths hit."""
  from etils import epath
  cls = type(epath.Path('/'))
  method = 'write_text' if where == 'metadata' else 'mkdir'
  real, hit = getattr(cls, method), []

  def fail(self, *args, **kwargs):
    path = str(self)
    if (f'/{step}.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/_METADATA' in path
        if where == 'metadata' else os.path.basename(path).startswith(f'{step}.orbax-checkpoint-tmp')):
      hit.append(path)
      raise OSError(code, os.strerror(code), path)
    return real(self, *args, **kwargs)
  monkeypatch.setattr(cls, method, fail)
  return hit


def _orbax_threads_waiting() -> list[str]:
  """Threads still waiting for a save's signal, e.g. for a step folder that was never made
  (they would hold the process at exit until orbax's 5-minute timeout)."""
  return [t.name for t in threading.enumerate() if t.ident in sys._current_frames() and any(
      f.f_code.co_name == 'wait_for_signals'
      for f, _ in traceback.walk_stack(sys._current_frames()[t.ident]))]


def _assert_only_complete(workdir, steps):
  """Only finished checkpoints on disk (no temporary folders) and exactly their checksums,
  each of which still verifies."""
  ckpt_dir = os.path.join(workdir, ckpt_lib.CHECKPOINT_DIR)
  sums_dir = os.path.join(workdir, ckpt_lib.CHECKSUM_DIR)
  assert sorted(os.listdir(ckpt_dir)) == sorted(map(str, steps))
  assert sorted(os.listdir(sums_dir)) == sorted(f'{s}.json' for s in steps)
  ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
  try:
    for s in steps:
      ckpt.verify(s)
  finally:
    ckpt.close()


# --- the cause, from Python or from tensorstore --------------------------------------------------


def test_storage_cause_reads_python_and_tensorstore_errors():
  cause = ckpt_lib.storage_cause
  assert cause(OSError(errno.ENOSPC, 'x')) == 'No space left on device [ENOSPC]'
  assert cause(PermissionError(errno.EACCES, 'x')) == 'Permission denied [EACCES]'
  assert cause(ValueError(TENSORSTORE_ENOSPC)) == 'No space left on device [ENOSPC]'
  try:  # an exception raised while handling a storage failure still names it
    try:
      raise OSError(errno.EDQUOT, 'x')
    except OSError as e:
      raise RuntimeError('wrapped') from e
  except RuntimeError as e:
    assert cause(e) == 'Disk quota exceeded [EDQUOT]'
  assert cause(ValueError('shapes do not match')) is None  # a bug keeps its traceback
  assert cause(TypeError('x')) is None


# --- failed saves, in-process ---------------------------------------------------------------------


def test_failed_save_keeps_previous_checkpoint_and_restart_matches(tmp_path, monkeypatch, straight):
  """Disk full partway through step 4's background save: the error names step 4 and keeps
  step 2; the same config, with room again, resumes from step 2 and ends bit-identical."""
  workdir = str(tmp_path / 'run')
  with monkeypatch.context() as m:
    hit = _fail_orbax_writes(m, FAILED, errno.ENOSPC)
    with pytest.raises(ckpt_lib.CheckpointSaveError) as info:
      trainer.train_and_evaluate(_cfg(), workdir)
  assert hit, 'the fault was never injected: orbax no longer writes through epath.write_text'
  e = info.value
  assert (e.step, e.kept) == (FAILED, KEPT)
  assert str(e) == (
      f'cannot save checkpoint step {FAILED} in {workdir}/checkpoints: No space left on device '
      f'[ENOSPC]; checkpoint step {KEPT} is kept: free space or fix permissions, then run the '
      'same command to resume from it')
  _assert_only_complete(workdir, [KEPT])  # the half-written step 4 is gone, step 2 verifies
  assert latest_state(workdir, None)[0] == KEPT  # and loads
  out = trainer.train_and_evaluate(_cfg(), workdir)  # the same config, with room again
  assert out['step'] == 6 and not out['stopped_early']
  _assert_same_params(workdir, straight)
  assert [r['step'] for r in read_metrics(workdir) if 'train/loss' in r] == [2, 4, 6]
  _assert_only_complete(workdir, [2, 4, 6])


# The restart is the same whatever the cause (the test above pays for one), so the other causes
# run on the checkpointer alone: an async save that fails and is found failed at the next save.
@pytest.mark.parametrize('code,where', [(errno.EACCES, 'metadata'), (errno.EDQUOT, 'metadata'),
                                        (errno.EROFS, 'mkdir'), (errno.EACCES, 'mkdir')])
def test_failed_async_save_is_reported_at_the_next_save(tmp_path, monkeypatch, code, where):
  workdir = str(tmp_path / 'run')
  ckpt = ckpt_lib.Checkpointer(workdir)
  ckpt.save(1, {'w': np.ones(3, np.float32)}, {'epoch': 1})
  with monkeypatch.context() as m:
    hit = _fail_orbax_writes(m, 2, code, where)
    with pytest.raises(ckpt_lib.CheckpointSaveError) as info:
      ckpt.save(2, {'w': np.full(3, 2, np.float32)}, {'epoch': 2})
      ckpt.save(3, {'w': np.full(3, 3, np.float32)}, {'epoch': 3})
  ckpt.close()  # the failure was reported: closing does not raise it again
  assert hit and (info.value.step, info.value.kept) == (2, 1)
  assert f'{os.strerror(code)} [{errno.errorcode[code]}]; checkpoint step 1 is kept' in str(
      info.value)
  assert _orbax_threads_waiting() == []  # the CLI exits now, not minutes later
  _assert_only_complete(workdir, [1])
  step, state = latest_state(workdir, None)
  assert step == 1 and state['w'].tolist() == [1, 1, 1]
  again = ckpt_lib.Checkpointer(workdir)  # the fault gone: step 2 saves where it failed
  again.save(2, {'w': np.full(3, 2, np.float32)}, {'epoch': 2})
  again.wait()
  again.close()
  _assert_only_complete(workdir, [1, 2])


def test_failed_first_save_says_nothing_is_kept(tmp_path, monkeypatch):
  """A synchronous save that fails before any checkpoint exists: nothing half-written stays."""
  workdir = str(tmp_path / 'run')
  hit = _fail_orbax_writes(monkeypatch, 1, errno.ENOSPC)
  ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
  with pytest.raises(ckpt_lib.CheckpointSaveError, match=r'cannot save checkpoint step 1 in .*'
                     r'No space left on device \[ENOSPC\]; no earlier checkpoint exists') as info:
    ckpt.save(1, {'w': np.ones(3, np.float32)}, {'epoch': 0})
  ckpt.close()
  assert hit and (info.value.step, info.value.kept) == (1, None)
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == []


def test_failed_checksum_write_leaves_no_partial_file(tmp_path, monkeypatch):
  """The checkpoint finished but its checksum file could not be written: no ``.tmp`` stays,
  and the checkpoint still loads (as after a kill between the two)."""
  workdir = str(tmp_path / 'run')
  ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
  ckpt.save(1, {'w': np.ones(3, np.float32)}, {})

  def full(obj, f):
    f.write('{"half": ')
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(ckpt_lib.json, 'dump', full)
  # A synchronous save writes its checksums before it returns, so the failure surfaces here.
  with pytest.raises(ckpt_lib.CheckpointSaveError,
                     match=r'cannot save the checksums of checkpoint step 2 in .*ENOSPC.*'
                           r'checkpoint step 2 is kept'):
    ckpt.save(2, {'w': np.full(3, 2, np.float32)}, {})
  ckpt.close()
  monkeypatch.undo()
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoint_checksums'))) == ['1.json']
  step, state = latest_state(workdir, None)
  assert step == 2 and state['w'].tolist() == [2, 2, 2]


# --- failed saves for real: a full disk, a read-only disk, no permission ------------------------


def _sh(*args) -> subprocess.CompletedProcess:
  return subprocess.run(args, capture_output=True, text=True)


def _mount_or_skip(*args):
  if os.geteuid() != 0:
    pytest.skip('mounting needs root (the injected faults above run everywhere)')
  proc = _sh('mount', *args)
  if proc.returncode != 0:
    pytest.skip(f'cannot mount here: {proc.stderr.strip()}')


def _after_first_checkpoint(workdir, action):
  """A ``should_stop`` hook: once checkpoint ``KEPT`` is complete on disk (the poll after its
  save; the save runs in the background, so wait for its folder), runs ``action`` once."""
  polls = []

  def hook():
    polls.append(1)
    if len(polls) == KEPT + 1:
      done = os.path.join(workdir, ckpt_lib.CHECKPOINT_DIR, str(KEPT))
      for _ in range(600):
        if os.path.isdir(done):
          break
        time.sleep(0.1)
      assert os.path.isdir(done), f'checkpoint {KEPT} never completed'
      action()
    return False
  return trainer.RunControl(should_stop=hook)


def _fails_keeps_and_resumes(workdir, control, cause, straight, restore_room):
  """The run fails at step 4's save with ``cause``; step 2 is complete and loads; once
  ``restore_room()`` runs, the same config resumes and ends equal to the straight run."""
  with pytest.raises(ckpt_lib.CheckpointSaveError) as info:
    trainer.train_and_evaluate(_cfg(), workdir, control)
  assert (info.value.step, info.value.kept) == (FAILED, KEPT), str(info.value)
  assert f'{cause}; checkpoint step {KEPT} is kept' in str(info.value)
  _assert_only_complete(workdir, [KEPT])
  assert latest_state(workdir, None)[0] == KEPT
  restore_room()
  out = trainer.train_and_evaluate(_cfg(), workdir)
  assert out['step'] == 6 and not out['stopped_early']
  _assert_same_params(workdir, straight)
  _assert_only_complete(workdir, [2, 4, 6])


def test_disk_full_for_real(tmp_path, straight):
  """``checkpoints/`` on its own tmpfs, shrunk to what it holds once step 2 is written:
  tensorstore's own ENOSPC, no injection. Then the space returns and the run resumes."""
  workdir = str(tmp_path / 'run')
  disk = os.path.join(workdir, ckpt_lib.CHECKPOINT_DIR)
  os.makedirs(disk)
  _mount_or_skip('-t', 'tmpfs', '-o', 'size=64m', 'jaxlab_test_disk', disk)

  def resize(kib):
    proc = _sh('mount', '-o', f'remount,size={kib}k', disk)
    assert proc.returncode == 0, proc.stderr

  def fill():  # room for a few more small files, not for another ~1 MB checkpoint
    st = os.statvfs(disk)
    resize((st.f_blocks - st.f_bfree) * st.f_frsize // 1024 + 64)
  try:
    _fails_keeps_and_resumes(workdir, _after_first_checkpoint(workdir, fill),
                             'No space left on device [ENOSPC]', straight,
                             lambda: resize(64 * 1024))
  finally:
    _sh('umount', '-l', disk)


def test_unwritable_checkpoints_for_real(tmp_path, straight):
  """``checkpoints/`` made unwritable after step 2 is written, no injection: a read-only bind
  mount as root (EROFS; chmod does not stop root), else chmod 0o500 (EACCES)."""
  workdir = str(tmp_path / 'run')
  disk = os.path.join(workdir, ckpt_lib.CHECKPOINT_DIR)
  os.makedirs(disk)
  if os.geteuid() == 0:
    _mount_or_skip('--bind', disk, disk)
    cause = 'Read-only file system [EROFS]'

    def lock():
      proc = _sh('mount', '-o', 'remount,bind,ro', disk)
      assert proc.returncode == 0, proc.stderr

    def unlock():
      _sh('umount', '-l', disk)
  else:
    cause = 'Permission denied [EACCES]'
    lock, unlock = (lambda: os.chmod(disk, 0o500)), (lambda: os.chmod(disk, 0o700))
  try:
    _fails_keeps_and_resumes(workdir, _after_first_checkpoint(workdir, lock), cause, straight,
                             unlock)
  finally:
    unlock()


# --- the command line: exit status 5 and one line ------------------------------------------------

# Runs the CLI with one of the faults above injected (a subprocess, as a user runs it).
_INJECTED_CLI = '''
import errno, os, sys
sys.path.insert(0, {repo!r})
from etils import epath
cls = type(epath.Path('/'))
real = cls.write_text
def write_text(self, *args, **kwargs):
  if '/{step}.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/_METADATA' in str(self):
    raise OSError({code}, os.strerror({code}), str(self))
  return real(self, *args, **kwargs)
cls.write_text = write_text
from train.__main__ import main
sys.exit(main(['train'] + sys.argv[1:]))
'''


def test_cli_disk_full_is_one_line_exit_5(tmp_path):
  """What a user sees: exit status 5 and, last, one line naming the step, the folder and the
  cause (the restart is test_failed_save_keeps_previous_checkpoint_and_restart_matches)."""
  workdir = str(tmp_path / 'run')
  code = _INJECTED_CLI.format(repo=REPO, step=FAILED, code=errno.ENOSPC)
  proc = subprocess.run([sys.executable, '-c', code, *ARGS, '--workdir', workdir], cwd=REPO,
                        env=dict(os.environ, JAXLAB_COMPILATION_CACHE=str(tmp_path / 'xla')),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == cli.EXIT_WRITE_FAILED == 5, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last == (f'error: cannot save checkpoint step {FAILED} in {workdir}/checkpoints: '
                  f'No space left on device [ENOSPC]; checkpoint step {KEPT} is kept: free space '
                  'or fix permissions, then run the same command to resume from it')
  assert 'Traceback' not in proc.stderr  # orbax's logged tracebacks are dropped (messages stay)
  _assert_only_complete(workdir, [KEPT])


@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EACCES])
def test_cli_metrics_on_full_disk_is_exit_5(tmp_path, monkeypatch, capsys, code):
  """A full disk (or lost permission) can hit metrics.jsonl before a checkpoint: the same
  status, naming the workdir."""
  from train import metrics
  workdir = str(tmp_path / 'run')
  real = metrics.MetricWriter.write

  def write(self, step, values):
    if step > 4:
      raise OSError(code, os.strerror(code), os.path.join(workdir, metrics.METRICS_FILE))
    return real(self, step, values)
  monkeypatch.setattr(metrics.MetricWriter, 'write', write)
  assert _cli_in_process(monkeypatch, [*ARGS, '--workdir', workdir]) == cli.EXIT_WRITE_FAILED
  last = capsys.readouterr().err.strip().splitlines()[-1]
  assert last == (f'error: cannot write to workdir {workdir}: {os.strerror(code)} '
                  f'[{errno.errorcode[code]}]; the last complete checkpoint is kept: free space '
                  'or fix permissions, then run the same command to resume from it')
  _assert_only_complete(workdir, [2, 4])


def test_which_os_errors_are_workdir_write_failures(tmp_path):
  """Out of space is always the disk; no permission only for a path in the workdir (a data
  file that cannot be read is not status 5, and keeps its traceback)."""
  w = str(tmp_path / 'run')
  failed = cli._workdir_write_failed
  assert failed(OSError(errno.ENOSPC, 'x'), w) and failed(OSError(errno.EROFS, 'x'), w)
  assert failed(OSError(errno.EDQUOT, 'x'), w)
  assert failed(PermissionError(errno.EACCES, 'x', f'{w}/metrics.png'), w)
  assert not failed(PermissionError(errno.EACCES, 'x', str(tmp_path / 'data.tsv')), w)
  assert not failed(PermissionError(errno.EACCES, 'x', f'{w}2/metrics.png'), w)  # a sibling
  assert not failed(PermissionError(errno.EACCES, 'x'), w)  # no path: cannot tell
  assert not failed(OSError(errno.EIO, 'x', f'{w}/metrics.jsonl'), w)


# --- paths from configs are only read -------------------------------------------------------------


def _snapshot(root):
  """Every file and folder under ``root``: relative path -> (size, mtime, CRC32) or 'dir'."""
  out = {}
  for dirpath, dirs, files in os.walk(root):
    for d in dirs:
      out[os.path.relpath(os.path.join(dirpath, d), root)] = 'dir'
    for f in files:
      path = os.path.join(dirpath, f)
      st = os.stat(path)
      with open(path, 'rb') as fh:
        out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns, zlib.crc32(fh.read()))
  return out


def test_every_path_key_is_listed():
  """A config key that names a file or folder is in PATH_KEYS, so the tests below point it
  elsewhere and check nothing is written there (a new one fails here until it is)."""
  from configs.base import get_base_config
  keys = workdir_lib._flatten(json.loads(get_base_config().to_json_best_effort()))
  named_like_paths = {k for k in keys if re.search(
      r'(dir|path|file|from|teacher|out|output|export|save|load)$', k.rsplit('.', 1)[-1])}
  assert named_like_paths == set(workdir_lib.PATH_KEYS)
  for key in workdir_lib.PATH_KEYS:  # all unset by default: nothing is read unless asked
    assert keys[key] is None, key


def test_tfds_dataset_follows_the_loaders():
  from configs.base import get_base_config
  data = get_base_config().data
  cases = {('digits', None): None, ('two_moons', None): None, ('listops', '/x'): None,
           ('mnist', '/x'): None, ('mnist', None): 'mnist', ('sst2', None): 'glue/sst2',
           ('imdb_reviews', '/x'): 'imdb_reviews', ('lm1b', None): 'lm1b',
           ('cifar10:3.0.2', None): 'cifar10:3.0.2'}
  for (name, folder), want in cases.items():
    data.name, data.dir = name, folder
    assert workdir_lib.tfds_dataset(data) == want, (name, folder)


def test_tfds_data_dir_that_tfds_would_write_is_refused(tmp_path, monkeypatch, capsys):
  """The one path key a library would write to: TFDS prepares a missing dataset where it is
  told to read it. Refused before anything starts, and nothing is created there."""
  pytest.importorskip('tensorflow_datasets')
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  workdir = str(tmp_path / 'run')
  status = _cli_in_process(monkeypatch, ['--config', TINY, '--workdir', workdir,
                                         '--config.data.name=mnist',
                                         f'--config.data.tfds_data_dir={elsewhere}'])
  err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert status == 2
  assert len(err) == 1 and err[0].startswith(
      f'error: data.tfds_data_dir: mnist is not prepared in {elsewhere}, and TFDS would download '
      'and write it there'), err
  assert list(elsewhere.iterdir()) == [] and not os.path.exists(workdir)


def _sst2_files(root, n_train=48, n_dev=16):
  """A small SST-2 in its TSV layout, from the words of tests' WordPiece vocabulary."""
  rng = np.random.default_rng(0)
  words = ['good', 'bad', 'movie', 'film', 'fun', ',', 'awful']
  for name, n in (('train.tsv', n_train), ('dev.tsv', n_dev)):
    rows = [f'{" ".join(rng.choice(words, 4))}\t{i % 2}' for i in range(n)]
    (root / name).write_text('sentence\tlabel\n' + '\n'.join(rows) + '\n')


def _train_elsewhere_checked(tmp_path, elsewhere, config):
  """Trains ``config`` in ``tmp_path/run`` as the CLI does; asserts ``elsewhere`` is exactly as
  before (not a byte, not a timestamp) and nothing was written beside the workdir."""
  before = _snapshot(elsewhere)
  workdir = str(tmp_path / 'run')
  workdir_lib.prepare(workdir, config)
  out = trainer.train_and_evaluate(config, workdir)
  assert out['step'] == config.num_train_steps
  assert _snapshot(elsewhere) == before
  assert sorted(os.listdir(tmp_path)) == ['elsewhere', 'run']
  return set(os.listdir(workdir))


def test_paths_from_config_are_only_read(tmp_path):
  """Every path key pointed at ``elsewhere``: MNIST files (data.dir), a TFDS folder, a
  tokenizer file, and a trained teacher that is both distill.teacher and init_from. The run
  checkpoints, keeps its best, logs and plots; ``elsewhere`` is unchanged and every output is in
  the workdir. (data.tokenizer_path is read by text data: the next test.)"""
  from tests.test_data_sources import write_mnist
  elsewhere = tmp_path / 'elsewhere'
  (elsewhere / 'mnist').mkdir(parents=True)
  (elsewhere / 'tfds').mkdir()
  (elsewhere / 'tokenizer.json').write_text('{}')
  write_mnist(elsewhere / 'mnist', n_train=64, n_test=16)
  common = {'data.dir': str(elsewhere / 'mnist'), 'data.tfds_data_dir': str(elsewhere / 'tfds'),
            'data.tokenizer_path': str(elsewhere / 'tokenizer.json'), 'data.train_limit': 0,
            'data.eval_limit': 0, 'batch_size': 16, 'num_train_steps': 4}
  teacher = str(elsewhere / 'teacher')
  trainer.train_and_evaluate(
      load_config('configs/mnist_distill.py', 'tiny', task='classification', **common), teacher)
  paths = {**common, 'init_from': teacher, 'distill.teacher': teacher}
  assert set(workdir_lib.PATH_KEYS) <= set(paths)  # a new path key must join this test
  config = load_config('configs/mnist_distill.py', 'tiny', checkpoint_every_steps=2,
                       eval_every_steps=2, keep_best_by='eval/accuracy', plots=True, **paths)
  assert config.task == 'distill'
  written = _train_elsewhere_checked(tmp_path, elsewhere, config)
  assert {'checkpoints', 'checkpoints_best', 'checkpoint_checksums', 'config.json',
          'metrics.jsonl', 'tensorboard'} <= written, written
  assert any(name.endswith('.png') for name in written), written


def test_text_paths_from_config_are_only_read(tmp_path):
  """SST-2 files and a WordPiece tokenizer.json elsewhere: read, never written."""
  pytest.importorskip('tokenizers')
  from tests.test_data_sources import write_wordpiece
  elsewhere = tmp_path / 'elsewhere'
  (elsewhere / 'sst2').mkdir(parents=True)
  (elsewhere / 'tfds').mkdir()
  _sst2_files(elsewhere / 'sst2')
  write_wordpiece(elsewhere / 'tokenizer.json')
  config = load_config('configs/sst2_bilstm.py', 'tiny', **{
      'data.dir': str(elsewhere / 'sst2'), 'data.tokenizer': 'wordpiece',
      'data.tokenizer_path': str(elsewhere / 'tokenizer.json'),
      'data.tfds_data_dir': str(elsewhere / 'tfds'), 'data.train_limit': 0, 'data.eval_limit': 0,
      'data.seq_len': 8, 'num_train_steps': 2, 'checkpoint_every_steps': 1})
  written = _train_elsewhere_checked(tmp_path, elsewhere, config)
  assert {'checkpoints', 'vocab.json', 'metrics.jsonl'} <= written, written


def test_synchronous_save_is_complete_and_checksummed_when_it_returns(tmp_path):
  """checkpoint_async=False: once save() returns, another process sees the step whole, so a
  kill at any moment loses at most one checkpoint interval (async adds one save's steps)."""
  state = {'w': np.arange(6, dtype=np.float32), 'b': np.ones((2, 3), np.float32)}
  ck = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  ck.save(3, state, {'epoch': 1})
  assert os.path.exists(os.path.join(ck.checksum_dir, '3.json'))  # verified on restart
  other = ckpt_lib.Checkpointer(str(tmp_path))  # what a restarted process sees, nothing awaited
  assert other.latest_step() == 3
  restored, data = other.restore(3, jax.tree_util.tree_map(np.zeros_like, state))
  np.testing.assert_array_equal(restored['w'], state['w'])
  assert data == {'epoch': 1}
