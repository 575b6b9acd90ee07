"""``python -m train --config configs/NAME.py[:ARG] --workdir DIR [--config.key=value ...]``

Exit status: 0 done (or stopped at ``--stop_at_step``); 2 bad command line, config
or data, or a workdir that cannot be written at the start (one line on stderr,
nothing started); 3 interrupted by SIGTERM/SIGINT
after saving a checkpoint (run the same command again to continue); 4 stopped
on a non-finite loss or gradient (the last good checkpoint is kept); 5 the workdir
could not be written while training (disk full, no permission, quota, read-only
disk: one line naming the checkpoint step, or the workdir, and the cause; a
half-written step is removed and the previous checkpoint is kept, so once there is
room the same command resumes from it); 1 anything unexpected (with its traceback).
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import sys

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_NONFINITE = 0, 1, 2, 3, 4
EXIT_WRITE_FAILED = 5
# Failures of a write, never of a read. EACCES/EPERM could be a data file that cannot be
# read (a bug or bad input, with its traceback): they count only for paths in the workdir.
WORKDIR_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
PERMISSION_ERRNOS = (errno.EACCES, errno.EPERM)


def _workdir_write_failed(error: OSError, workdir: str) -> bool:
  """Whether ``error`` is the workdir failing to take a write (status 5), not a bug."""
  code = getattr(error, 'errno', None)
  if code in WORKDIR_WRITE_ERRNOS:
    return True
  paths = [p for p in (error.filename, error.filename2) if p]
  return code in PERMISSION_ERRNOS and bool(paths) and all(
      os.path.abspath(os.fspath(p)).startswith(workdir + os.sep) for p in paths)


def _fail(message: str, status: int = EXIT_USAGE):
  message = ' '.join(l.strip() for l in str(message).splitlines() if l.strip())
  print(f'error: {message}', file=sys.stderr)
  sys.exit(status)


class _StorageTracebacksOff(logging.Filter):
  """Drops the tracebacks orbax logs from each of its threads when a save fails for lack
  of space or permission (the messages stay): the CLI reports that as one ``error:`` line."""

  def filter(self, record: logging.LogRecord) -> bool:
    from train.checkpoint import storage_cause
    if record.exc_info and storage_cause(record.exc_info[1]) is not None:
      record.exc_info, record.exc_text = None, None
    return True


def _define_flags(argv):
  """A fresh set of flags per call, so ``main`` can run more than once in a process (tests).

  ``argv`` names the ``--config.KEY`` overrides to define (ml_collections reads
  ``sys.argv`` otherwise, and an in-process call's overrides would be unknown flags).
  """
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/default.py:tiny.',
                                  lock_config=True, flag_values=fv, sys_argv=list(argv))
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and plots.', flag_values=fv)
  flags.DEFINE_integer('stop_at_step', None, 'Save and exit after this step (resume later).',
                       flag_values=fv)
  flags.DEFINE_bool('restore_fallback', False,
                    'If the latest checkpoint is damaged, move it to checkpoints_damaged/ and '
                    'resume from the previous one (default: stop with an error naming it).',
                    flag_values=fv)
  flags.DEFINE_enum('on_config_change', 'refuse', ['refuse', 'resume', 'fresh'],
                    'When WORKDIR holds a run with a different config: refuse; resume its '
                    'checkpoints under the new config; or move the old run aside and start fresh.',
                    flag_values=fv)
  return fv


def parse(argv):
  """Parses flags; any problem is one line and exit status 2."""
  from absl import flags
  FLAGS = _define_flags(argv)
  try:
    FLAGS(argv)
    config = FLAGS.config
    if config is not None:
      config.keys()  # a missing or broken file surfaces lazily, on first attribute access
  except flags.Error as e:
    _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
  except (FileNotFoundError, OSError) as e:  # the last line names the file and the cause
    _fail(f'config file: {[l.strip() for l in str(e).splitlines() if l.strip()][-1]}')
  except (AttributeError, KeyError) as e:  # an override of a key the config does not have
    _fail(f'unknown config key {str(e).strip(chr(34))} in an override; configs/base.py lists the keys')
  except Exception as e:  # errors raised while loading the config file or an override
    _fail(f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}')
  if config is None:
    _fail('--config is required, e.g. --config configs/default.py')
  if not FLAGS.workdir:
    _fail('--workdir is required')
  if not flags.FLAGS.is_parsed():  # libraries (grain) read absl's global flags
    flags.FLAGS.mark_as_parsed()
  return FLAGS


def main(argv=None) -> int:
  argv = list(sys.argv if argv is None else argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  FLAGS = parse(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s', datefmt='%H:%M:%S')
  for noisy in ('absl', 'jax._src', 'orbax', 'grain'):
    logging.getLogger(noisy).setLevel(logging.WARNING)

  from train import runtime
  if os.environ.get('JAXLAB_TUNE_MALLOC', '1') != '0':  # before XLA starts its threads
    runtime.tune_malloc()  # ~20% faster Transformer steps on XLA:CPU (experiments/README.md)
  if os.environ.get('JAXLAB_UNROLL_THREEFRY', '1') != '0':
    runtime.unroll_cpu_threefry()  # same random bits; dropout masks ~3x faster on CPU
  runtime.maybe_initialize_distributed()
  runtime.enable_compilation_cache()

  from train import trainer, validate, workdir as workdir_lib
  from train.checkpoint import CheckpointCorrupted, CheckpointSaveError, storage_cause
  absl_logger = logging.getLogger('absl')  # orbax logs through absl
  if not any(isinstance(f, _StorageTracebacksOff) for f in absl_logger.filters):  # once a process
    absl_logger.addFilter(_StorageTracebacksOff())
  from train.data.base import DataError
  config, workdir = FLAGS.config, os.path.abspath(FLAGS.workdir)
  try:
    validate.check_config(config)
    workdir_lib.prepare(workdir, config, FLAGS.on_config_change)
  except (validate.ConfigError, workdir_lib.WorkdirError) as e:
    _fail(str(e))

  stop = {'signal': None}

  def on_signal(signum, frame):
    if stop['signal'] is not None:  # a second signal: stop now
      raise KeyboardInterrupt
    stop['signal'] = signum
    logging.warning('received %s: finishing this step and saving a checkpoint',
                    signal.Signals(signum).name)
  signal.signal(signal.SIGTERM, on_signal)
  signal.signal(signal.SIGINT, on_signal)

  control = trainer.RunControl(stop_at_step=FLAGS.stop_at_step,
                               restore_fallback=FLAGS.restore_fallback,
                               should_stop=lambda: stop['signal'] is not None)
  try:
    result = trainer.train_and_evaluate(config, workdir, control)
  except (DataError, FileNotFoundError, validate.ConfigError, CheckpointCorrupted) as e:
    _fail(str(e).splitlines()[0])
  except trainer.NonFiniteError as e:
    _fail(str(e), EXIT_NONFINITE)
  except CheckpointSaveError as e:
    _fail(str(e), EXIT_WRITE_FAILED)
  except OSError as e:  # metrics, events or plots on a full or read-only disk; else a bug
    if not _workdir_write_failed(e, workdir):
      raise
    _fail(f'cannot write to workdir {workdir}: {storage_cause(e)}; the last complete checkpoint '
          'is kept: free space or fix permissions, then run the same command to resume from it',
          EXIT_WRITE_FAILED)
  if stop['signal'] is not None and result.get('stopped_early'):
    logging.warning('stopped at step %d by %s; run the same command to continue',
                    result['step'], signal.Signals(stop['signal']).name)
    return EXIT_INTERRUPTED
  summary = ' '.join(f'{k}={v:.4f}' for k, v in result.items() if isinstance(v, float))
  logging.info('done at step %d: %s', result['step'], summary)
  return EXIT_OK


if __name__ == '__main__':
  sys.exit(main())
