"""Dynamic loss scaling for float16 compute (``config.dtype='float16'``).

float16 has five exponent bits: backward-pass values below ~6e-8 flush to zero
and values above 65504 overflow. Multiplying the loss by a scale ``S`` lifts the
whole backward pass into float16's range; the float32 gradients are divided by
``S`` again before the update. ``S`` adapts the way jmp's ``DynamicLossScale`` and
PyTorch's ``GradScaler`` do it:

- a step whose scaled gradients are not all finite is skipped (parameters,
  optimizer and model state unchanged) and ``S`` is divided by ``factor``, never
  below ``min``;
- after ``period`` finite steps in a row ``S`` is multiplied by ``factor``.

The state is a small pytree in ``TrainState.loss_scale``, so it is checkpointed
and a resumed run is bit-identical. With the default powers of two, scaling and
unscaling are exact in float32.

Why not a library: optax 0.2.8 has no loss scaling and jmp is archived.
``flax.training.dynamic_scale.DynamicScale`` folds the scale update into its
``value_and_grad`` wrapper, so with gradient accumulation it would adjust once per
micro-batch, and on the pmap path it ``pmean``s per call where the step here sums
gradients before dividing by the global example count. Here scale, unscale and
adjust are separate pure functions that the train step calls once per step.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

# Defaults of the ``loss_scale.*`` config keys (unset there means these).
DEFAULTS = {'initial': 2.0 ** 15, 'period': 2000, 'factor': 2.0, 'min': 1.0}


class LossScale(flax.struct.PyTreeNode):
  """The dynamic loss scale: three scalars that a checkpoint keeps, three static settings."""
  scale: jax.Array          # float32: the loss is multiplied by it
  good_steps: jax.Array     # int32: finite steps in a row since the scale last changed
  skipped_steps: jax.Array  # int32: steps skipped so far because the gradients were not finite
  period: int = flax.struct.field(pytree_node=False, default=2000)
  factor: float = flax.struct.field(pytree_node=False, default=2.0)
  min_scale: float = flax.struct.field(pytree_node=False, default=1.0)


def create(initial: float = DEFAULTS['initial'], period: int = DEFAULTS['period'],
           factor: float = DEFAULTS['factor'], min_scale: float = DEFAULTS['min']) -> LossScale:
  """A fresh loss scale at ``initial`` (float32 and int32 scalars)."""
  return LossScale(scale=jnp.asarray(initial, jnp.float32), good_steps=jnp.zeros((), jnp.int32),
                   skipped_steps=jnp.zeros((), jnp.int32), period=int(period),
                   factor=float(factor), min_scale=float(min_scale))


def settings(config) -> dict:
  """``config.loss_scale`` with unset keys filled from :data:`DEFAULTS`."""
  given = config.get('loss_scale') or {}
  return {k: (given.get(k) if given.get(k) is not None else v) for k, v in DEFAULTS.items()}


def from_config(config) -> LossScale | None:
  """The initial loss scale for ``config``: ``None`` (no scaling) unless ``dtype='float16'``."""
  if config.dtype != 'float16':
    return None
  s = settings(config)
  return create(s['initial'], s['period'], s['factor'], s['min'])


def scale(ls: LossScale, loss: jax.Array) -> jax.Array:
  """The loss times the scale, in float32 (what is differentiated)."""
  return loss.astype(jnp.float32) * ls.scale


def unscale(ls: LossScale, grads):
  """Gradients of the scaled loss divided by the scale: the true gradients (float32)."""
  inv = 1.0 / ls.scale  # exact for powers of two
  return jax.tree_util.tree_map(lambda g: g.astype(jnp.float32) * inv, grads)


def can_shrink(ls: LossScale) -> jax.Array:
  """Whether an overflow can still be answered by a smaller scale (above ``min_scale``)."""
  return ls.scale > ls.min_scale


def adjust(ls: LossScale, finite: jax.Array) -> LossScale:
  """The scale after a step: grown after ``period`` finite steps, shrunk after an overflow."""
  grow = ls.good_steps + 1 >= ls.period
  # Growth stops short of float32's top, so the scaled loss itself never overflows from it.
  grown = jnp.where(grow, jnp.minimum(ls.scale * ls.factor, 2.0 ** 100), ls.scale)
  shrunk = jnp.maximum(ls.scale / ls.factor, ls.min_scale)
  return ls.replace(
      scale=jnp.where(finite, grown, shrunk).astype(jnp.float32),
      good_steps=jnp.where(finite & ~grow, ls.good_steps + 1, 0).astype(jnp.int32),
      skipped_steps=ls.skipped_steps + (~finite).astype(jnp.int32))
