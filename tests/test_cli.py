"""Bad command lines give one line on stderr and exit status 2, with no traceback."""
import os

import pytest

from tests.helpers import run_cli

TINY = 'configs/default.py:tiny'


def _assert_clean_error(proc, *words):
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith('error: ')
  for w in words:
    assert w in lines[0], lines[0]


@pytest.mark.parametrize('args, words', [
    (['--config', TINY, '--workdir', '{tmp}', '--config.no_such_key=1'], ['no_such_key']),
    (['--config', TINY, '--workdir', '{tmp}', '--config.batch_size=abc'], ['batch_size']),
    (['--config', TINY, '--workdir', '{tmp}', '--config.model.nosuch=3'], ['nosuch']),
    (['--config', 'configs/does_not_exist.py', '--workdir', '{tmp}'], ['does_not_exist']),
    (['--config', 'configs/default.py:nosucharg', '--workdir', '{tmp}'], ['nosucharg']),
    (['--config', TINY], ['workdir']),
    (['--config', TINY, '--workdir', '/proc/jaxlab_cannot_write'], ['cannot be written']),
    (['--config', TINY, '--workdir', '{tmp}', '--config.learning_rate=-0.1'], ['learning_rate']),
    (['--config', TINY, '--workdir', '{tmp}', '--config.model.name=nosuchmodel'], ['nosuchmodel']),
    (['--config', TINY, '--workdir', '{tmp}', '--config.data.name=nosuchdata'], ['nosuchdata']),
    (['--config', TINY, '--workdir', '{tmp}', '--config.batch_size=30'], ['not divisible']),
    (['--config', TINY, '--workdir', '{tmp}', '--config.mesh.data=3'], ['mesh']),
    (['--config', TINY, '--workdir', '{tmp}', '--config.xla_options=--xla_nosuch=1'],
     ['xla_options', 'xla_nosuch']),
])
def test_bad_command_line_is_one_line_and_status_2(tmp_path, args, words):
  args = [a.replace('{tmp}', str(tmp_path / 'w')) for a in args]
  _assert_clean_error(run_cli(*args), *words)


def test_changed_config_in_existing_workdir_is_refused(tmp_path):
  w = str(tmp_path / 'w')
  ok = run_cli('--config', TINY, '--workdir', w)
  assert ok.returncode == 0, ok.stderr[-3000:]
  proc = run_cli('--config', TINY, '--workdir', w, '--config.learning_rate=0.5')
  _assert_clean_error(proc, 'different config', 'learning_rate')
  assert os.path.isdir(os.path.join(w, 'checkpoints'))
