"""The train state: one pytree with everything a step changes and a checkpoint keeps."""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
  """Parameters, mutable model collections (BatchNorm statistics), optimizer state, step.

  ``nonfinite_steps`` counts steps whose loss or gradients were not finite (their
  update is never applied); ``first_nonfinite_step`` is the first such step, or -1,
  and ``first_nonfinite_what`` what was not finite there: 0 the loss, i + 1 the
  gradient of the i-th parameter in tree order (see :func:`nonfinite_name`).
  ``loss_scale`` is ``None`` here; float16 runs use :class:`ScaledTrainState`.
  """
  step: jax.Array
  params: Any
  model_state: Any          # e.g. {'batch_stats': ...}; {} for models without mutable collections
  opt_state: Any
  nonfinite_steps: jax.Array
  first_nonfinite_step: jax.Array
  first_nonfinite_what: jax.Array
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  loss_scale = None  # a class attribute, not a field: the pytree (and checkpoints) stay as they were

  def apply_gradients(self, grads, model_state) -> 'TrainState':
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state, model_state=model_state)


class ScaledTrainState(TrainState):
  """A :class:`TrainState` with a dynamic loss scale (``train.loss_scale.LossScale``): float16 runs.

  A subclass rather than an optional field, so the states and checkpoints of other
  runs keep exactly their old tree (an extra ``None`` leaf would make Orbax refuse
  checkpoints written before it).
  """
  loss_scale: Any = None


def ema_weight(step: jax.Array, decay: float) -> jax.Array:
  """The weight of the newest parameters in the average after ``step`` (1, 2, ...) updates.

  ``(1 - decay) / (1 - decay**step)``: 1 at the first update, tending to ``1 - decay``.
  It keeps the average bias-corrected at every step (as Adam corrects its moments):
  the average equals ``sum_t decay**(step - t) * params_t / sum_t decay**(step - t)``,
  so early steps are not pulled towards the initialisation or towards zero.
  """
  d = jnp.float32(decay)  # one precision on both sides: exactly 1 at the first update
  return (1 - d) / (1 - d ** step.astype(jnp.float32))


class _EMAMixin:
  """``ema_params``: an exponential moving average of the parameters (Polyak averaging).

  Updated after every applied step with :func:`ema_weight`; evaluation, sampling and the
  post-training tools use it in place of ``params`` (``train.steps.eval_params``).
  """

  def apply_gradients(self, grads, model_state):
    new = super().apply_gradients(grads, model_state)
    w = ema_weight(new.step, self.ema_decay)
    return new.replace(ema_params=optax.incremental_update(new.params, self.ema_params, w))


# Subclasses rather than an optional field, as ScaledTrainState: runs without EMA keep their
# checkpoint tree.
class EMATrainState(_EMAMixin, TrainState):
  ema_params: Any = None
  ema_decay: float = flax.struct.field(pytree_node=False, default=0.0)


class ScaledEMATrainState(_EMAMixin, ScaledTrainState):
  ema_params: Any = None
  ema_decay: float = flax.struct.field(pytree_node=False, default=0.0)


def init_variables(model, example_batch: dict, rng: jax.Array) -> dict:
  """Model variables from one example batch (shapes only matter)."""
  kwargs = {'mask': example_batch['mask']} if 'mask' in example_batch else {}
  return model.init({'params': rng, 'dropout': rng}, example_batch['inputs'], train=False, **kwargs)


def make_init_fn(model, tx, example_batch: dict, loss_scale=None,
                 ema_decay: float = 0.0) -> Callable[[jax.Array], TrainState]:
  """``rng -> TrainState``: pure, so it can be ``eval_shape``d and jitted with out_shardings.

  ``loss_scale`` (``train.loss_scale.from_config``) turns on dynamic loss scaling;
  ``ema_decay > 0`` keeps a moving average of the parameters (:class:`EMATrainState`).
  """
  def init(rng):
    variables = dict(init_variables(model, example_batch, rng))
    params = variables.pop('params')
    fields = dict(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                  opt_state=tx.init(params), nonfinite_steps=jnp.zeros((), jnp.int32),
                  first_nonfinite_step=jnp.full((), -1, jnp.int32),
                  first_nonfinite_what=jnp.full((), -1, jnp.int32), tx=tx)
    if loss_scale is not None:
      fields['loss_scale'] = loss_scale
    if ema_decay > 0:
      cls = EMATrainState if loss_scale is None else ScaledEMATrainState
      return cls(**fields, ema_params=params, ema_decay=ema_decay)
    return (TrainState if loss_scale is None else ScaledTrainState)(**fields)
  return init


def nonfinite_name(params, what: int) -> str:
  """``first_nonfinite_what`` in words: ``'the loss'`` or ``'the gradient of params/...'``."""
  if what <= 0:
    return 'the loss'
  from train.sharding import path_str
  paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  return f'the gradient of params/{paths[what - 1]}' if what - 1 < len(paths) else 'a gradient'
