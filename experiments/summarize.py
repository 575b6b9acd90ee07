"""Prints the results table rows for experiments/README.md from experiments/runs/NAME.

  python experiments/summarize.py mnist_cnn sst2_bilstm ...

Each row: the final eval metrics, the wall-clock seconds run_all.sh measured, the
step count; the run's curves.png is copied to experiments/plots/NAME.png.
"""
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def row(name: str) -> str:
  workdir = os.path.join(HERE, 'runs', name)
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    lines = [json.loads(l) for l in f if l.strip()]
  evals = [l for l in lines if any(k.startswith('eval/') for k in l)]
  final = evals[-1] if evals else {}
  wall = open(os.path.join(workdir, 'wall_seconds')).read().strip() if os.path.exists(
      os.path.join(workdir, 'wall_seconds')) else '?'
  if os.path.exists(os.path.join(workdir, 'curves.png')):
    os.makedirs(os.path.join(HERE, 'plots'), exist_ok=True)
    shutil.copy(os.path.join(workdir, 'curves.png'), os.path.join(HERE, 'plots', f'{name}.png'))
  shown = {k: round(v, 4) for k, v in final.items() if k.startswith('eval/') and isinstance(v, float)}
  return f'{name}: step {final.get("step")} {shown} wall {wall}s'


if __name__ == '__main__':
  for name in sys.argv[1:]:
    try:
      print(row(name))
    except FileNotFoundError as e:
      print(f'{name}: no results ({e.filename})')
