"""Figures for :mod:`train.interpret`: attribution heat maps, token strips, attention grids,
activation statistics. Each function takes numpy arrays and writes one PNG (Agg backend)."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

DPI = 80  # keeps each figure well under 200 KB


def _plt():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=DPI, bbox_inches='tight')
  _plt().close(fig)
  return path


def _show_image(ax, image: np.ndarray) -> None:
  image = np.asarray(image, np.float32)
  lo, hi = float(image.min()), float(image.max())
  image = (image - lo) / (hi - lo + 1e-12)  # standardised inputs back to [0, 1] for display
  if image.shape[-1] == 1:
    ax.imshow(image[..., 0], cmap='gray', vmin=0, vmax=1)
  else:
    ax.imshow(image)


def image_attributions(path: str, images: np.ndarray,
                       columns: Sequence[tuple[str, np.ndarray, str]], row_titles: Sequence[str],
                       title: str = '') -> str:
  """One row per example: the input image, then each ``(name, maps [K, H, W], kind)`` column.

  ``kind='abs'`` shows magnitudes (0 to the example's max, 'inferno'); ``'signed'`` shows
  signed attributions on a symmetric red (positive) / blue (negative) scale.
  """
  plt = _plt()
  k, ncols = len(images), 1 + len(columns)
  fig, axes = plt.subplots(k, ncols, figsize=(1.7 * ncols, 1.8 * k), squeeze=False)
  for i in range(k):
    _show_image(axes[i, 0], images[i])
    axes[i, 0].set_ylabel(row_titles[i], fontsize=8)
    for j, (name, maps, kind) in enumerate(columns, start=1):
      m = np.asarray(maps[i], np.float32)
      if kind == 'signed':
        v = float(np.abs(m).max()) or 1.0
        axes[i, j].imshow(m, cmap='RdBu_r', vmin=-v, vmax=v)
      else:
        axes[i, j].imshow(m, cmap='inferno', vmin=0, vmax=float(m.max()) or 1.0)
      if i == 0:
        axes[i, j].set_title(name, fontsize=9)
    if i == 0:
      axes[i, 0].set_title('input', fontsize=9)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return _save(fig, path)


def display_token(s: str) -> str:
  """A token as drawn: visible space and newline, long tokens shortened."""
  s = s.replace(' ', '\u2423').replace('\n', '\u21b5').replace('\t', '\u2192')
  return s if len(s) <= 14 else s[:13] + '\u2026'


def token_strips(path: str, examples: Sequence[tuple[Sequence[str], np.ndarray, str]],
                 title: str = '', line_chars: int = 64, signed: bool = True) -> str:
  """Per-token heat strips: each ``(tokens, scores [T], caption)`` example is its tokens
  laid out in lines of about ``line_chars`` characters, each cell coloured by its score
  (red positive, blue negative, scaled to the example's largest magnitude; ``signed=False``:
  white to red magnitudes)."""
  plt = _plt()
  from matplotlib.patches import Rectangle
  cmap = plt.get_cmap('RdBu_r' if signed else 'Reds')
  layouts = []
  for tokens, scores, _ in examples:  # flow layout: (line, x, width, token, score)
    cells, line, x = [], 0, 0.0
    for tok, sc in zip(tokens, np.asarray(scores, np.float64)):
      text = display_token(tok)
      w = max(1.0, len(text) + (0.6 if len(text) > 1 else 0.0))
      if x + w > line_chars and x > 0:
        line, x = line + 1, 0.0
      cells.append((line, x, w, text, sc))
      x += w
    layouts.append(cells)
  heights = [max((c[0] for c in cells), default=0) + 1 for cells in layouts]
  height = 0.5 + sum(0.3 * h + 0.55 for h in heights)
  fig, axes = plt.subplots(len(examples), 1, figsize=(0.15 * line_chars, height),
                           gridspec_kw={'height_ratios': [h + 1.2 for h in heights]}, squeeze=False)
  for ax, cells, h, (_, scores, caption) in zip(axes[:, 0], layouts, heights, examples):
    v = float(np.max(np.abs(scores))) if len(scores) else 1.0
    v = v or 1.0
    for line, x, w, text, sc in cells:
      c = (sc / v + 1) / 2 if signed else abs(sc) / v
      ax.add_patch(Rectangle((x, line), w, 0.9, facecolor=cmap(c), edgecolor='white', lw=0.5))
      dark = abs(c - 0.5) > 0.35 if signed else c > 0.7  # white text on saturated cells
      ax.text(x + w / 2, line + 0.47, text, ha='center', va='center', fontsize=8,
              family='monospace', color='white' if dark else 'black')
    ax.set_xlim(0, line_chars)
    ax.set_ylim(h, 0)
    ax.axis('off')
    ax.set_title(caption, fontsize=8, loc='left')
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return _save(fig, path)


def attention_grid(path: str, maps: Sequence[tuple[str, np.ndarray]], tokens: Sequence[str],
                   title: str = '') -> str:
  """Layers (rows) x heads (columns) of one example's attention ``[heads, queries, keys]``,
  each panel from 0 to its largest probability; tokens label the axes when there are few."""
  plt = _plt()
  layers = len(maps)
  heads = maps[0][1].shape[0]
  t = maps[0][1].shape[-1]
  labels = [display_token(s) for s in tokens] if t <= 32 else None
  size = 2.2 if labels is None else 3.0  # room for the token labels
  fig, axes = plt.subplots(layers, heads, figsize=(size * heads, size * layers), squeeze=False)
  for i, (name, probs) in enumerate(maps):
    for h in range(heads):
      ax = axes[i, h]
      ax.imshow(probs[h], cmap='viridis', vmin=0, vmax=float(probs[h].max()) or 1.0)
      ax.set_xticks([])
      ax.set_yticks([])
      if labels is not None and h == 0:
        ax.set_yticks(range(t), labels, fontsize=6, family='monospace')
      if labels is not None and i == layers - 1:
        ax.set_xticks(range(t), labels, fontsize=6, family='monospace')
      if i == 0:
        ax.set_title(f'head {h}', fontsize=9)
      if h == 0:
        ax.set_ylabel(name.replace('/attention', '').split('/')[-1] + '\nquery', fontsize=8)
      if i == layers - 1:
        ax.set_xlabel('key', fontsize=8)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return _save(fig, path)


def activation_figure(path: str, rows: Sequence[dict], title: str = '') -> str:
  """Three panels over the layers: mean +- std (and max |a|), the fractions of values that
  are zero and non-positive, and the fraction of units never positive (dead after a ReLU)."""
  plt = _plt()
  n = len(rows)
  y = np.arange(n)
  names = [r['layer'] for r in rows]
  fig, axes = plt.subplots(1, 3, figsize=(13, 1.2 + 0.24 * n), sharey=True,
                           gridspec_kw={'width_ratios': [1.4, 1, 1]})
  ax = axes[0]
  ax.errorbar([r['mean'] for r in rows], y, xerr=[r['std'] for r in rows], fmt='o', ms=3, capsize=2)
  ax.plot([r['max_abs'] for r in rows], y, 'x', ms=4, color='tab:red')
  ax.set_xscale('symlog', linthresh=1.0)
  ax.axvline(0, color='gray', lw=0.5)
  ax.set_title('value: mean \u00b1 std (o), max |a| (x)', fontsize=9)
  axes[1].barh(y - 0.2, [r['frac_nonpos'] for r in rows], 0.4)
  axes[1].barh(y + 0.2, [r['frac_zero'] for r in rows], 0.4)
  axes[1].set_xlim(0, 1)
  axes[1].set_title('fraction of values \u2264 0 (blue), = 0 (orange)', fontsize=9)
  axes[2].barh(y, [r['frac_dead_units'] for r in rows], 0.6, color='tab:gray')
  axes[2].set_xlim(0, 1)
  axes[2].set_title('fraction of units never > 0', fontsize=9)
  axes[0].set_yticks(y, names, fontsize=7)
  axes[0].invert_yaxis()
  for a in axes:
    a.grid(axis='x', alpha=0.3)
    a.tick_params(axis='x', labelsize=7)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return _save(fig, path)
