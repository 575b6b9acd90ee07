"""The optax optimizer and learning-rate schedule named by a config."""
from __future__ import annotations

import jax
import optax

SCHEDULES = ('cosine', 'linear', 'constant')
OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adam', 'adamw', 'lamb', 'lion')


def learning_rate_schedule(config, total_steps: int) -> optax.Schedule:
  """Linear warmup to ``learning_rate`` then cosine, linear or constant decay."""
  lr, s = config.learning_rate, config.schedule
  warmup = min(s.warmup_steps, max(total_steps - 1, 0))
  decay_steps = max(total_steps - warmup, 1)
  end = lr * s.end_factor
  if s.name == 'cosine':
    decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=s.end_factor)
  elif s.name == 'linear':
    decay = optax.linear_schedule(lr, end, decay_steps)
  elif s.name == 'constant':
    decay = optax.constant_schedule(lr)
  else:
    raise ValueError(f'unknown schedule {s.name!r}; known: {", ".join(SCHEDULES)}')
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def decay_mask(params):
  """True for weights that get weight decay: matrices and kernels, not biases or norm scales."""
  return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def create_optimizer(config, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  o = config.optimizer
  schedule = learning_rate_schedule(config, total_steps)
  wd = o.weight_decay
  if o.name == 'sgd':
    tx = optax.sgd(schedule)
  elif o.name in ('momentum', 'nesterov'):
    tx = optax.sgd(schedule, momentum=o.momentum, nesterov=o.name == 'nesterov')
  elif o.name == 'adam':
    tx = optax.adam(schedule, b1=o.b1, b2=o.b2, eps=o.eps)
  elif o.name == 'adamw':
    tx = optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=wd, mask=decay_mask)
    wd = 0.0  # already applied, decoupled
  elif o.name == 'lamb':
    tx = optax.lamb(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=wd, mask=decay_mask)
    wd = 0.0
  elif o.name == 'lion':
    tx = optax.lion(schedule, b1=o.b1, b2=o.b2, weight_decay=wd, mask=decay_mask)
    wd = 0.0
  else:
    raise ValueError(f'unknown optimizer {o.name!r}; known: {", ".join(OPTIMIZERS)}')
  parts = []
  if o.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
  if wd > 0:  # L2-style decay for the sgd family, still masked
    parts.append(optax.add_decayed_weights(wd, mask=decay_mask))
  tx = optax.chain(*parts, tx)
  prune_cfg = config.get('prune')
  if prune_cfg is not None and prune_cfg.target_sparsity > 0:  # train/prune.py: masks every update
    from train import prune
    tx = prune.from_config(prune_cfg, total_steps, tx)
  return tx, schedule
