"""experiments/device_session.py: every stage a GPU session would run still parses here, and
the runner keeps each stage's log, goes on after a failure and stops at its budget."""
import os

import pytest

from experiments import bench_matmul
from experiments import device_session as session
from train import benchmark

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


BENCHMARK_COMMANDS = {name: cmd for name, cmds in session.STAGES.items() for cmd in cmds
                      if cmd[1:3] == ('-m', 'train.benchmark')}


@pytest.mark.parametrize('cmd', BENCHMARK_COMMANDS.values(), ids=BENCHMARK_COMMANDS.keys())
def test_benchmark_stages_parse_their_configs_and_variants(cmd):
  argv = ['benchmark', *cmd[3:]]
  config = benchmark.parse_flags(benchmark._define_flags(argv), argv)
  assert config is not None, f'{cmd} no longer parses'
  fv = benchmark._define_flags(argv)
  fv(argv)
  for spec in fv.variant:
    name, overrides, options = benchmark.parse_variant(spec)
    benchmark.with_overrides(config, overrides)  # a key the config lacks raises here
    assert all(k.startswith('xla_') for k in options)


def test_script_stages_name_scripts_that_exist():
  scripts = [cmd[1] for cmds in session.STAGES.values() for cmd in cmds
             if cmd[0] == 'python3' and cmd[1].endswith('.py')]
  assert scripts
  for path in scripts:
    assert os.path.isfile(os.path.join(REPO, path)), path


def test_matmul_stage_runs_here_at_a_small_size(capsys):
  """The stage's own options compile on CPU too (XLA ignores another backend's options)."""
  (cmd,) = session.STAGES['matmul']
  assert bench_matmul.main([*cmd[2:], '--n=64', '--reps=2']) == 0
  out = capsys.readouterr().out
  for name in ('xla default', 'xla no_triton_gemm', 'xla cublaslt'):
    assert name in out, out


def test_runner_logs_each_stage_goes_on_after_a_failure_and_stops_at_its_budget(tmp_path):
  stages = {
      'fails': [('python3', '-c', 'print("half"); raise SystemExit(3)'),
                ('python3', '-c', 'print("never")')],
      'missing': [('no-such-program-jaxlab',)],
      'works': [('python3', '-c', 'print("first")'), ('python3', '-c', 'print("second")')],
      'hangs': [('python3', '-c', 'import time; print("sleeping", flush=True); time.sleep(60)')],
      'late': [('python3', '-c', 'print("too late")')],
  }
  status = session.run_stages(list(stages), str(tmp_path), dict(os.environ), stages=stages,
                              budget=4.0)
  assert status == {'fails': 3, 'missing': 127, 'works': 0, 'hangs': 124, 'late': None}
  log = lambda name: (tmp_path / f'{name}.log').read_text()
  assert 'half' in log('fails') and 'never' not in log('fails')
  assert 'no-such-program-jaxlab' in log('missing')
  assert 'first' in log('works') and 'second' in log('works')
  assert 'sleeping' in log('hangs') and 'budget is spent' in log('hangs')
  assert not (tmp_path / 'late.log').exists()


def test_run_without_wheels_says_how_to_get_them(tmp_path):
  with pytest.raises(SystemExit, match='device_session.py wheels'):
    session.main(['run', 'lstm', '--wheels', str(tmp_path), '--out', str(tmp_path / 'out')])


def test_gpu_probe_times_and_traces_a_step_here(tmp_path, capsys):
  """The probe stage's script at a tiny size on this CPU: both step timings, both matmul
  timings, and the gzipped trace and program it hands back; the stage's own flags parse and
  pass it its output folder."""
  import gzip
  from experiments import gpu_probe
  from tests.helpers import load_config
  (cmd,) = session.STAGES['probe']
  argv = ['gpu_probe', *(a.replace('{out}', str(tmp_path)) for a in cmd[2:])]
  fv = gpu_probe.define_flags(argv)
  assert benchmark.parse_flags(fv, argv).model.name == 'gpt2_small'
  assert fv.out == str(tmp_path) and fv.steps == 10 and fv.trace_steps == 2
  r = gpu_probe.probe(load_config('configs/gpt2_small.py', 'tiny', batch_size=8), str(tmp_path),
                      steps=2, trace_steps=1, matmul_size=64)
  assert set(r) == {'matmul_alone_tflops', 'matmul_after_step_tflops', 'step_ms_each',
                    'step_ms_min', 'step_ms_pipelined'}
  assert all(v > 0 for v in r.values())
  with gzip.open(tmp_path / 'step.hlo.txt.gz', 'rt') as f:
    assert 'HloModule' in f.read()
  assert (tmp_path / 'step.xplane.pb.gz').stat().st_size > 0
  pytest.importorskip('xprof')
  gpu_probe.read(str(tmp_path / 'step.xplane.pb.gz'), str(tmp_path / 'step.hlo.txt.gz'), 1)
  assert 'kernels per step' in capsys.readouterr().out
