"""Start-up time: how long ``python -m train`` takes to finish its first step, cold and warm.

  python experiments/bench_startup.py [--config configs/default.py] [--repeats 3]

Launches the trainer as a user would (a fresh process, a fresh workdir each time) and
polls ``metrics.jsonl`` for the line of step 1 (logged every step here), so the time
covers interpreter start, imports, data loading, model init, compile and the step
itself. "cold" runs with an empty persistent compilation cache, "warm" with the cache
the cold run filled (a restart). Prints the median of ``--repeats`` of each, and the
import time of the trainer's modules alone for reference.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def time_to_first_step(config: str, cache: str, timeout: float = 300.0) -> float:
  """Seconds from launching the trainer to step 1 in its metrics.jsonl."""
  workdir = tempfile.mkdtemp(prefix='startup-')
  metrics = os.path.join(workdir, 'metrics.jsonl')
  cmd = [sys.executable, '-m', 'train', '--config', config, '--workdir', workdir,
         '--config.log_every_steps=1', '--config.plots=False']
  env = dict(os.environ, JAXLAB_COMPILATION_CACHE=cache)
  t0 = time.perf_counter()
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  try:
    while time.perf_counter() - t0 < timeout:
      if os.path.exists(metrics):
        with open(metrics, encoding='utf-8') as f:
          if any(json.loads(l).get('step') == 1 for l in f.read().split('\n')[:-1] if l):
            return time.perf_counter() - t0
      if proc.poll() is not None:
        raise RuntimeError(f'the trainer exited with status {proc.returncode} before step 1')
      time.sleep(0.02)
    raise TimeoutError(f'no step 1 within {timeout} s')
  finally:
    proc.kill()
    proc.wait()
    shutil.rmtree(workdir, ignore_errors=True)


def import_time() -> float:
  code = 'import time; t = time.perf_counter(); import train.trainer; print(time.perf_counter() - t)'
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True)
  return float(out.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='configs/default.py')
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  cold, warm, imports = [], [], []
  for _ in range(args.repeats):
    cache = tempfile.mkdtemp(prefix='startup-xla-')
    cold.append(time_to_first_step(args.config, cache))
    warm.append(time_to_first_step(args.config, cache))
    imports.append(import_time())
    shutil.rmtree(cache, ignore_errors=True)
  fmt = lambda xs: f'{statistics.median(xs):5.2f} s (runs: {", ".join(f"{x:.2f}" for x in xs)})'
  print(f'{args.config}: first step, cold cache  {fmt(cold)}')
  print(f'{args.config}: first step, warm cache  {fmt(warm)}')
  print(f'import train.trainer alone          {fmt(imports)}')


if __name__ == '__main__':
  main()
