"""Run outputs: ``metrics.jsonl``, TensorBoard events, a progress display and plots.

Only process 0 writes; the others get a writer that does nothing, so the loop
never asks which process it is on.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from typing import Any

METRICS_FILE = 'metrics.jsonl'


class MetricWriter:
  """Appends ``{"step": s, name: value, ...}`` lines and TensorBoard scalars."""

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int | None = None):
    """``resume_step``: drop lines logged after it (a run killed after its last checkpoint
    logged steps that the resumed run will log again)."""
    self.enabled = enabled
    if not enabled:
      return
    self.path = os.path.join(workdir, METRICS_FILE)
    if resume_step is not None and os.path.exists(self.path):
      kept = [l for l in read_metrics(workdir) if l.get('step', 0) <= resume_step]
      tmp = self.path + '.tmp'
      with open(tmp, 'w', encoding='utf-8') as f:
        f.writelines(json.dumps(l) + '\n' for l in kept)
      os.replace(tmp, self.path)
    self._file = open(self.path, 'a', encoding='utf-8')
    from tensorboard.summary import Writer  # writes event files without TensorFlow
    self._tb = Writer(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    clean = {k: _scalar(v) for k, v in metrics.items()}
    self._file.write(json.dumps({'step': int(step), **clean}) + '\n')
    self._file.flush()
    for k, v in clean.items():
      if isinstance(v, (int, float)) and math.isfinite(v):
        self._tb.add_scalar(k, v, int(step))
    self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      self._tb.close()


def _scalar(v):
  try:
    v = float(v)
  except (TypeError, ValueError):
    return v
  return v if math.isfinite(v) else str(v)


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    lines = f.read().split('\n')
  # A run killed mid-write leaves a torn last line (no newline): it is dropped, never parsed.
  return [json.loads(line) for line in lines[:-1] if line.strip()]


class Progress:
  """A tqdm bar on an interactive terminal; plain lines at log intervals otherwise."""

  def __init__(self, total_steps: int, initial_step: int, batch_size: int, enabled: bool = True):
    self.total, self.batch_size, self.enabled = total_steps, batch_size, enabled
    self.tty = enabled and sys.stderr.isatty()
    self._bar = None
    if self.tty:
      from tqdm import tqdm
      self._bar = tqdm(total=total_steps, initial=initial_step, unit='step', dynamic_ncols=True)
    self._last_step, self._last_time = initial_step, time.perf_counter()

  def update(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
    """Called at log intervals; returns the throughput figures it computed."""
    now = time.perf_counter()
    steps_per_sec = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    rates = {'steps_per_sec': steps_per_sec, 'examples_per_sec': steps_per_sec * self.batch_size}
    if not self.enabled:
      return rates
    eta = (self.total - step) / max(steps_per_sec, 1e-9)
    if self._bar is not None:
      self._bar.set_postfix(loss=f"{metrics.get('train/loss', float('nan')):.4f}",
                            ex_s=f"{rates['examples_per_sec']:.0f}")
      self._bar.update(step - self._bar.n)
    else:
      shown = ' '.join(f'{k}={v:.4g}' for k, v in metrics.items() if isinstance(v, float))
      logging.info('step %d/%d %s %.2f steps/s %.0f examples/s ETA %s', step, self.total, shown,
                   steps_per_sec, rates['examples_per_sec'], _fmt_time(eta))
    return rates

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def _fmt_time(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def plot_curves(workdir: str, filename: str = 'curves.png') -> str | None:
  """PNG of the train/eval curves in ``metrics.jsonl``: loss, accuracy, learning rate."""
  rows = read_metrics(workdir)
  if not rows:
    return None
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  groups = [('loss', ['train/loss', 'eval/loss']), ('accuracy', ['train/accuracy', 'eval/accuracy']),
            ('learning rate', ['train/learning_rate'])]
  groups = [(t, ks) for t, ks in groups if any(k in r for r in rows for k in ks)]
  fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.4), squeeze=False)
  for ax, (title, keys) in zip(axes[0], groups):
    for k in keys:
      pts = [(r['step'], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
      if pts:
        ax.plot(*zip(*pts), marker='o' if k.startswith('eval') else None, markersize=3, label=k)
    ax.set_title(title)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  path = os.path.join(workdir, filename)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
