"""Issue 7's GPU rows in a few commands, for a session that is lent a GPU machine.

A lent machine (see the workplace's device tool) has JAX, Flax, Optax, Orbax, chex and
PyTorch for Python 3.12, but not the rest of what the trainer imports, and it cannot
reach PyPI. Its device time is short (30 minutes a session, 10 a command), so what to
run is fixed here, in the order that answers the open questions first:

  here, once:     python experiments/device_session.py wheels       # -> .whl/ (git-ignored)
  on the device:  python3 experiments/device_session.py run STAGE [STAGE ...] --out $OUT
                  (with .whl carried; ``plan`` prints every stage's commands)

Three calls of the device tool cover the stages that answer open questions, each under its
10-minute limit: ``run env gpt2_loss gpt2``, ``run gpt2_variants`` and ``run probe``; then
``run gpt2_batch32`` if device time is left (``matmul``, ``resnet18`` and ``lstm`` were
measured on 2026-11-24).

``run`` installs the wheels into a private folder, runs each stage's commands with that
folder on ``PYTHONPATH``, keeps each stage's whole output in ``$OUT/STAGE.log`` (one
file per stage: the tool brings back at most 8) and goes on after a failed stage. It
exits non-zero if any stage failed. The figures go to experiments/README.md, with the
device's name.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What the trainer imports that the device's image lacks, for CPython 3.12 on x86-64 Linux,
# pinned so one download serves every later session. Found by blocking imports one at a
# time on the benchmark's path: grain, tensorflow_datasets and ml_collections are needed,
# with what they require; everything else the package imports is in the image.
WHEELS = (
    'ml-collections==1.1.0',
    'grain==0.2.18', 'array-record==0.8.6', 'portpicker==1.6.0',
    'tensorflow-datasets==4.9.10', 'dm-tree==0.1.10', 'immutabledict==4.3.1',
    'importlib-resources==6.5.2', 'simple-parsing==0.1.9', 'docstring-parser==0.18.0',
    'tensorflow-metadata==1.21.0', 'googleapis-common-protos==1.76.0', 'termcolor==3.3.0',
    'toml==0.10.2',
)
# No wheel on PyPI: built here from its source distribution (pure Python).
SOURCE_ONLY = ('promise==2.3',)
# pip matches a manylinux tag exactly, so every tag the wheels above use is named.
PLATFORMS = ('manylinux_2_28_x86_64', 'manylinux_2_27_x86_64', 'manylinux_2_24_x86_64',
             'manylinux_2_17_x86_64', 'manylinux2014_x86_64', 'manylinux1_x86_64')

BENCH = ('python3', '-m', 'train.benchmark')
GPT2 = BENCH + ('--config', 'configs/gpt2_small.py', '--matmul_size=8192', '--json')
# Each stage stays well inside the tool's 10-minute limit per command (GPT-2 compiles in
# about 90 s on an H100; each --variant compiles once more).
STAGES = {
    # What the figures were measured with, for experiments/README.md.
    'env': [
        ('python3', '-c', 'import sys, jax, jaxlib, flax, optax, orbax.checkpoint; '
         'print(sys.version.split()[0], "jax", jax.__version__, "jaxlib", jaxlib.__version__, '
         '"flax", flax.__version__, "optax", optax.__version__); print(jax.devices())'),
        ('nvidia-smi',),
    ],
    # bf16 matmul peak under XLA's GEMM back ends, beside PyTorch's (2026-11-24, H100: 649
    # default, 675 without Triton GEMMs, 655 with cuBLASLt, 725 PyTorch; TFLOP/s).
    'matmul': [
        ('python3', 'experiments/bench_matmul.py', '--n=8192', '--dtype=bfloat16',
         '--option_set=no_triton_gemm:xla_gpu_enable_triton_gemm=false',
         '--option_set=cublaslt:xla_gpu_enable_cublaslt=true'),
    ],
    # GPT-2 small against nanoGPT-style PyTorch (eager and torch.compile), then the GEMM
    # levers on the whole step, interleaved in one process.
    'gpt2': [GPT2 + ('--torch',)],
    'gpt2_variants': [
        GPT2 + ('--variant=no_triton_gemm:xla_gpu_enable_triton_gemm=false',
                '--variant=cublaslt:xla_gpu_enable_cublaslt=true', '--rounds=4'),
    ],
    # The loss and the accuracy's argmax from one read of the logits (train/one_pass_loss.py),
    # where the trace had three passes (1.30 + 0.62 + 0.66 ms); pipelined figures on a GPU.
    'gpt2_loss': [GPT2 + ('--variant=one_pass_loss:one_pass_loss=true', '--rounds=4')],
    # A doubled batch: its examples/s says how much of the step is fixed cost (kernel
    # launches, the optimizer's update), which a larger batch would amortise.
    'gpt2_batch32': [GPT2 + ('--variant=batch32:batch_size=32', '--rounds=4')],
    # ResNet-18 on CIFAR-10 shapes, bf16, against PyTorch channels_last AMP.
    'resnet18': [
        BENCH + ('--config', 'configs/cifar10_resnet.py', '--config.model.name=resnet18',
                 '--config.dtype=bfloat16', '--matmul_size=8192', '--torch', '--json'),
    ],
    # The LSTM's and GRU's recurrence layout: batch-major is the accelerators' default, chosen
    # by layout rules, never timed on a GPU; and their bf16 float32-cell path, untimed there too.
    'lstm': [('python3', 'experiments/bench_lstm_layer.py', '--cells', 'lstm,gru'),
             ('python3', 'experiments/bench_lstm_layer.py', '--cells', 'lstm,gru',
              '--dtype', 'bfloat16')],
    # GPT-2's step synced and queued, the matmul peak alone and after a step, and a profiler
    # trace (gzipped into the output folder; read it here with gpu_probe.py --read).
    'probe': [('python3', 'experiments/gpu_probe.py', '--config', 'configs/gpt2_small.py',
               '--out', '{out}', '--trace_steps', '2', '--steps', '10')],
}


def wheels(dest: str) -> int:
  """Downloads (or builds) the wheels the device lacks into ``dest``."""
  os.makedirs(dest, exist_ok=True)
  platforms = [a for p in PLATFORMS for a in ('--platform', p)]
  download = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:',
              '--python-version', '3.12', '--implementation', 'cp', *platforms, '-d', dest]
  build = [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-w', dest]
  for cmd in (download + list(WHEELS), build + list(SOURCE_ONLY)):
    if subprocess.call(cmd) != 0:
      print(f'device_session: {shlex.join(cmd[:5])} ... failed', file=sys.stderr)
      return 1
  print(f'{len(os.listdir(dest))} wheels in {dest}; name {os.path.relpath(dest, REPO)!r} '
        'in the device call\'s carry')
  return 0


def install(wheel_dir: str, site: str) -> None:
  """Installs every wheel in ``wheel_dir`` into ``site`` (no index, no dependencies)."""
  found = sorted(f for f in os.listdir(wheel_dir) if f.endswith('.whl'))
  if not found:
    raise SystemExit(f'device_session: no wheels in {wheel_dir}; run "device_session.py wheels" '
                     'here and carry the folder')
  subprocess.check_call([sys.executable, '-m', 'pip', 'install', '-q', '--no-index', '--no-deps',
                         '--no-compile', '--no-cache-dir', '--upgrade', '--target', site,
                         *(os.path.join(wheel_dir, f) for f in found)])


def run_stages(names: list[str], out: str, env: dict, stages: dict = STAGES,
               budget: float = 540.0) -> dict[str, int | None]:
  """Runs each named stage's commands from the repo root; returns {stage: exit status}.

  A stage's output (stdout and stderr, as it comes) goes to ``out/NAME.log`` and to this
  process's stdout. A stage stops at its first failing command; the next stage still runs.
  All stages share ``budget`` seconds, so that this process ends, and its logs come back,
  before the tool's own limit kills everything: a command still running then is killed
  (status 124) and the stages after it are not started (status None).
  """
  os.makedirs(out, exist_ok=True)
  deadline = time.monotonic() + budget
  status: dict[str, int | None] = {}
  for name in names:
    if time.monotonic() >= deadline:
      status[name] = None
      print(f'device_session: stage {name} not started: the {budget:.0f} s budget is spent')
      continue
    rc = 0
    with open(os.path.join(out, f'{name}.log'), 'w') as log:
      for cmd in stages[name]:
        cmd = [sys.executable if cmd[0] == 'python3' else cmd[0],
               *(a.replace('{out}', out) for a in cmd[1:])]
        log.write(f'$ {shlex.join(cmd)}\n')
        log.flush()
        try:
          proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=1)
        except OSError as e:  # e.g. no nvidia-smi on this machine: the stage fails, the run goes on
          log.write(f'device_session: {e}\n')
          print(f'device_session: {e}')
          rc = 127  # as a shell reports a command it cannot find
          break
        # A timer, not a check per output line: a hung command prints nothing.
        killed = threading.Event()
        killer = threading.Timer(max(0.0, deadline - time.monotonic()),
                                 lambda p=proc: (killed.set(), p.kill()))
        killer.start()
        with proc.stdout:
          for line in proc.stdout:
            log.write(line)
            sys.stdout.write(line)
        rc = proc.wait()
        killer.cancel()
        if killed.is_set():
          rc = 124  # as timeout(1) reports it
          log.write(f'device_session: stage {name} killed: the {budget:.0f} s budget is spent\n')
        if rc != 0:
          break
    status[name] = rc
    print(f'device_session: stage {name} exited {rc}', flush=True)
  return status


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  sub = p.add_subparsers(dest='verb', required=True)
  w = sub.add_parser('wheels', help='here: download the wheels the device lacks')
  w.add_argument('--dest', default=os.path.join(REPO, '.whl'))
  sub.add_parser('plan', help="print every stage's commands")
  r = sub.add_parser('run', help='on the device: install the wheels, run stages')
  r.add_argument('stages', nargs='+', choices=sorted(STAGES))
  r.add_argument('--out', default=os.environ.get('OUT') or os.path.join(REPO, 'runs', 'device'))
  r.add_argument('--wheels', default=os.path.join(REPO, '.whl'),
                 help='folder of wheels to install first ("" to install none)')
  r.add_argument('--site', default='/tmp/jaxlab_site')
  r.add_argument('--budget', type=float, default=540.0,
                 help='seconds for all stages together (the device tool kills a command at 600)')
  args = p.parse_args(argv)
  if args.verb == 'wheels':
    return wheels(args.dest)
  if args.verb == 'plan':
    for name, cmds in STAGES.items():
      print(f'{name}:')
      for cmd in cmds:
        print(f'  {shlex.join(cmd)}')
    return 0
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  path = [REPO]
  if args.wheels:
    install(args.wheels, args.site)
    path.insert(0, args.site)
  env['PYTHONPATH'] = os.pathsep.join(path + [env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
  status = run_stages(args.stages, args.out, env, budget=args.budget)
  failed = [n for n, rc in status.items() if rc != 0]
  if failed:
    print(f'device_session: failed stages: {", ".join(failed)} (see their logs in {args.out})',
          file=sys.stderr)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
