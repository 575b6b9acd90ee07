"""Global magnitude pruning with Zhu & Gupta's (2017) gradual sparsity schedule, as an optax wrapper.

  python -m train.prune --workdir runs/mnist_cnn_pruned   # sparsity of the saved weights

Training side (``config.prune.target_sparsity > 0``, wired in ``train/optim.py``):
every ``update_every`` steps between ``begin_step`` and ``end_step`` the mask is
recomputed from the current weights with ONE magnitude threshold over all Dense
and Conv kernels, at the sparsity

  s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3,   t0 = begin_step, n dt = end_step - begin_step,

and held after ``end_step``. Masked gradients are zeroed before the inner
optimizer (so its moments stop growing there) and the update of a masked weight
is ``-w``, so it lands on exactly 0 and stays there whatever Adam's momentum says.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from train.posttrain import is_kernel


def sparsity_at(step, *, target: float, begin: int, end: int, initial: float = 0.0):
  """The scheduled sparsity at ``step`` (python number or traced): 0 before ``begin``, the cubic
  ramp from ``initial`` to ``target`` over [begin, end], ``target`` after."""
  progress = jnp.clip((jnp.asarray(step, jnp.float32) - begin) / max(end - begin, 1), 0.0, 1.0)
  s = target + (initial - target) * (1.0 - progress) ** 3
  return jnp.where(jnp.asarray(step) < begin, 0.0, s)


def _smallest_k(scores, k):
  """Bool mask of the ``k`` smallest entries of a non-negative float vector, ties broken by
  index (as a stable sort would), in O(n) passes instead of a sort of all n.

  Non-negative float32 values order like their int32 bit patterns, so a 32-step
  bisection over the bits finds the k-th smallest value exactly.
  """
  bits = jax.lax.bitcast_convert_type(scores.astype(jnp.float32), jnp.int32)

  def bisect(_, lo_hi):  # invariant: count(bits <= hi) >= k > count(bits <= lo - 1)
    lo, hi = lo_hi
    mid = lo + (hi - lo) // 2
    enough = jnp.sum(bits <= mid) >= k
    return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)
  _, kth = jax.lax.fori_loop(0, 32, bisect, (jnp.int32(0), jnp.max(bits)))
  below, ties = bits < kth, bits == kth
  take = k - jnp.sum(below)  # how many of the entries equal to the k-th value go too
  return (k > 0) & (below | (ties & (jnp.cumsum(ties) <= take)))


def global_magnitude_masks(params, sparsity, is_prunable=is_kernel):
  """Bool masks (True = kept) pruning the ``round(sparsity * n)`` smallest-magnitude weights
  among all prunable leaves together (n = their total size); other leaves are all True.

  The count is exact even with ties (e.g. many weights already exactly 0): equal
  magnitudes are taken in order rather than all or none by a ``|w| > t`` test.
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  prunable = [is_prunable(p, x) for p, x in leaves]
  scores = [jnp.abs(x).ravel() for (p, x), keep in zip(leaves, prunable) if keep]
  if not scores:
    raise ValueError('pruning: the parameters hold no prunable kernel')
  scores = jnp.concatenate(scores)
  k = jnp.round(jnp.asarray(sparsity, jnp.float32) * scores.size).astype(jnp.int32)
  kept = ~_smallest_k(scores, k)
  masks, start = [], 0
  for (_, x), keep in zip(leaves, prunable):
    if keep:
      masks.append(kept[start:start + x.size].reshape(x.shape))
      start += x.size
    else:
      masks.append(jnp.ones(jnp.shape(x), bool))
  return jax.tree_util.tree_unflatten(treedef, masks)


class PruneState(NamedTuple):
  count: jax.Array      # updates seen (the step, for a fresh optimizer)
  masks: Any            # bool tree like params; True = kept
  inner_state: Any


def prune(inner: optax.GradientTransformation, *, target_sparsity: float, begin_step: int,
          end_step: int, update_every: int, initial_sparsity: float = 0.0,
          is_prunable=is_kernel) -> optax.GradientTransformation:
  """``inner`` with gradual global magnitude pruning of the prunable leaves (see the module doc)."""
  if not 0.0 <= target_sparsity < 1.0:
    raise ValueError(f'prune.target_sparsity must be in [0, 1), got {target_sparsity}')
  if update_every < 1 or begin_step < 0 or end_step < begin_step:
    raise ValueError(f'prune: need update_every >= 1 and 0 <= begin_step <= end_step, got '
                     f'{update_every}, {begin_step}, {end_step}')

  def init(params):
    masks = jax.tree_util.tree_map(lambda p: jnp.ones(jnp.shape(p), bool), params)
    return PruneState(jnp.zeros((), jnp.int32), masks, inner.init(params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError('prune needs the params passed to update()')
    t = state.count
    due = (t >= begin_step) & (t <= end_step) & (((t - begin_step) % update_every == 0) | (t == end_step))
    s = sparsity_at(t, target=target_sparsity, begin=begin_step, end=end_step, initial=initial_sparsity)
    masks = jax.lax.cond(due, lambda: global_magnitude_masks(params, s, is_prunable),
                         lambda: state.masks)
    where = lambda m, a, b: jnp.where(m, a, b)
    updates = jax.tree_util.tree_map(lambda g, m: where(m, g, jnp.zeros_like(g)), updates, masks)
    updates, inner_state = inner.update(updates, state.inner_state, params)
    # p + (-p) is exactly 0 in floating point: a masked weight is 0 after every step.
    updates = jax.tree_util.tree_map(lambda u, p, m: where(m, u, -p.astype(u.dtype)), updates, params, masks)
    return updates, PruneState(t + 1, masks, inner_state)

  return optax.GradientTransformation(init, update)


def from_config(prune_cfg, total_steps: int, inner: optax.GradientTransformation):
  """:func:`prune` with ``config.prune``; ``end_step = -1`` means three quarters of the run."""
  from train.validate import ConfigError
  end = prune_cfg.end_step if prune_cfg.end_step >= 0 else int(0.75 * total_steps)
  try:
    return prune(inner, target_sparsity=prune_cfg.target_sparsity, begin_step=prune_cfg.begin_step,
                 end_step=end, update_every=prune_cfg.update_every)
  except ValueError as e:  # a bad config value: one line and exit status 2 from the CLI
    raise ConfigError(str(e)) from None


def sparsity_report(params) -> dict[str, Any]:
  """Fraction of exact zeros over all prunable kernels (``'global'``) and per kernel
  (``'layers'``: name -> (zeros, size))."""
  from train.sharding import path_str
  layers = {path_str(p): (int(np.sum(np.asarray(x) == 0)), int(np.size(x)))
            for p, x in jax.tree_util.tree_flatten_with_path(params)[0] if is_kernel(p, x)}
  zeros = sum(z for z, _ in layers.values())
  size = sum(n for _, n in layers.values())
  return {'global': zeros / max(size, 1), 'zeros': zeros, 'size': size, 'layers': layers}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description='Sparsity of the Dense/Conv kernels in a run\'s latest checkpoint.')
  p.add_argument('--workdir', required=True, help='a training workdir (or a checkpoint step folder)')
  args = p.parse_args(argv)
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.ERROR)
  from train import posttrain
  try:
    params, _, step = posttrain.load_variables(args.workdir)
    report = sparsity_report(params)
    if not report['layers']:
      raise ValueError(f'{args.workdir}: the checkpoint holds no Dense/Conv kernel')
  except (FileNotFoundError, ValueError, KeyError) as e:
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    return 2
  print(f'{args.workdir} step {step}: global sparsity {report["global"]:.4f} '
        f'({report["zeros"]:,} of {report["size"]:,} kernel weights are exactly 0)')
  width = max(len(k) for k in report['layers'])
  for name, (z, n) in report['layers'].items():
    print(f'  {name:<{width}}  {z / n:.4f}  ({z:,} / {n:,})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
