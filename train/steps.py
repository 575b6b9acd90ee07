"""Pure step functions: ``train_step(state, batch, rng) -> (state, metrics)`` and ``eval_step``.

No I/O and no host syncs here; the loop jits them with shardings (or pmaps them),
so the same code serves one device, a sharded mesh and many hosts.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from train import loss_scale as loss_scale_lib
from train.validate import ConfigError
from train.state import TrainState

MODEL_KWARGS = ('mask',)  # batch keys passed to the model besides ``inputs``


def model_kwargs(batch) -> dict:
  return {k: batch[k] for k in MODEL_KWARGS if k in batch}


def _squared_norms(grads) -> list[jax.Array]:
  """Each gradient leaf's sum of squares, in tree order."""
  return [jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(grads)]


def _finite_flags(loss, squared_norms) -> jax.Array:
  """[1 + leaves] booleans: is the loss finite, is each gradient leaf's sum of squares finite.

  A NaN or inf anywhere in a leaf makes its sum of squares NaN or inf, so the sums that
  ``grad_norm`` needs anyway give the flags without another reduction over every gradient
  (one per leaf: GPT-2 small has 196). A leaf of finite values whose sum of squares
  passes float32's range (values near 1e19) is flagged too: its norm is inf.
  """
  return jnp.stack([jnp.isfinite(loss)] + [jnp.isfinite(s) for s in squared_norms])


def _adversarial_direction(grads, epsilon: float):
  """Miyato et al. 2017's ``r_adv = epsilon * g / ||g||``, the L2 norm taken per example.

  Each leaf is ``[B, ...]`` (a perturbation point's gradient); the norm runs over all of an
  example's entries in every leaf together, so one example's budget is ``epsilon`` in all.
  """
  leaves = jax.tree_util.tree_leaves(grads)
  sq = sum(jnp.sum(jnp.square(g.astype(jnp.float32)), axis=tuple(range(1, g.ndim))) for g in leaves)
  scale = epsilon / (jnp.sqrt(sq) + 1e-12)
  return jax.tree_util.tree_map(
      lambda g: (g * scale.reshape((-1,) + (1,) * (g.ndim - 1)).astype(g.dtype)), grads)


def make_loss_fn(model, task_fn: Callable, label_smoothing: float = 0.0,
                 adversarial_epsilon: float = 0.0) -> Callable:
  """``(params, model_state, batch, rng) -> (loss_sum, (new_model_state, sums))``.

  The loss is summed (not averaged) over examples so micro-batches and replicas
  combine exactly; ``sums['loss'][1]`` is the example (or token) count.

  ``adversarial_epsilon > 0`` adds Miyato et al. (2017)'s adversarial loss: the model's
  ``self.perturb(...)`` points (e.g. the embeddings of :class:`models.rnn.RNNClassifier`)
  are moved by ``epsilon`` along the clean loss's gradient (per-example L2 norm, held
  constant), and the loss there is added to the clean one: two forward passes and their
  backward passes (the SST-2 BiLSTM's step took about 1.7x as long on a 2-core CPU).
  ``sums`` (the logged metrics) stay the clean pass's.
  """
  def apply(params, model_state, batch, rng, perturbations=None):
    variables = {'params': params, **model_state}
    if perturbations is not None:
      variables['perturbations'] = perturbations
    logits, new_model_state = model.apply(
        variables, batch['inputs'], train=True, rngs={'dropout': rng},
        mutable=list(model_state), **model_kwargs(batch))
    loss, sums = task_fn(logits, batch, label_smoothing)
    weight = sums['loss'][1]
    return loss * weight, (new_model_state, sums)

  if adversarial_epsilon <= 0:
    return apply

  def perturbation_zeros(params, model_state, batch, rng):
    def created():
      variables = {'params': params, **model_state}
      return model.apply(variables, batch['inputs'], train=True, rngs={'dropout': rng},
                         mutable=['perturbations', *model_state], **model_kwargs(batch))[1]
    shapes = jax.eval_shape(created).get('perturbations')
    if not shapes:
      # A ConfigError, raised while the step compiles (before step 1): the CLI prints one line.
      raise ConfigError(f'adversarial_epsilon needs a model with a perturbation point '
                       f'(self.perturb); {type(model).__name__} has none')
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def loss_fn(params, model_state, batch, rng):
    zeros = perturbation_zeros(params, model_state, batch, rng)
    (clean, aux), g = jax.value_and_grad(
        lambda r: apply(params, model_state, batch, rng, r), has_aux=True)(zeros)
    r_adv = _adversarial_direction(jax.lax.stop_gradient(g), adversarial_epsilon)
    adversarial, _ = apply(params, model_state, batch, rng, r_adv)
    return clean + adversarial, aux
  return loss_fn


def make_train_step(model, task_fn: Callable, *, label_smoothing: float = 0.0,
                    grad_accum_steps: int = 1, axis_name: str | None = None,
                    schedule: Callable | None = None, adversarial_epsilon: float = 0.0):
  """Builds the train step.

  ``grad_accum_steps=k`` splits the batch into k micro-batches and sums their
  gradients in a scan, which equals one step on the whole batch (losses are
  weighted by each micro-batch's example count). ``axis_name`` is set on the pmap
  path, where gradients and metrics are averaged over replicas with ``pmean``.
  ``schedule`` (step -> learning rate) only adds the rate to the metrics, so the
  loop never runs a separate device computation to log it.

  A state with a ``loss_scale`` (float16 runs) differentiates the scaled loss,
  unscales the summed gradients once, skips the step and shrinks the scale if
  they overflowed, and adds ``loss_scale`` and ``skipped_steps`` to the metrics.
  ``adversarial_epsilon``: see :func:`make_loss_fn`.
  """
  loss_fn = make_loss_fn(model, task_fn, label_smoothing, adversarial_epsilon)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def scaled_loss_fn(params, model_state, batch, rng, ls):
    loss_sum, aux = loss_fn(params, model_state, batch, rng)
    return loss_scale_lib.scale(ls, loss_sum), (loss_sum, aux)

  scaled_grad_fn = jax.value_and_grad(scaled_loss_fn, has_aux=True)

  def grads_of(ls, params, model_state, batch, rng):
    """``(loss_sum, model_state, sums, grads)``; under a loss scale ``ls`` the grads are scaled."""
    if ls is None:
      (loss_sum, (model_state, sums)), grads = grad_fn(params, model_state, batch, rng)
    else:
      (_, (loss_sum, (model_state, sums))), grads = scaled_grad_fn(
          params, model_state, batch, rng, ls)
    return loss_sum, model_state, sums, grads

  def train_step(state: TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    if axis_name is not None:  # each replica draws its own dropout masks
      rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    ls = state.loss_scale
    if grad_accum_steps == 1:
      loss_sum, model_state, sums, grads = grads_of(ls, state.params, state.model_state, batch, rng)
    else:
      micro = jax.tree_util.tree_map(
          lambda x: x.reshape((grad_accum_steps, -1) + x.shape[1:]), batch)

      def body(carry, xs):
        grads_acc, loss_acc, sums_acc, model_state = carry
        mb, i = xs
        loss_sum, model_state, sums, grads = grads_of(
            ls, state.params, model_state, mb, jax.random.fold_in(rng, i))
        grads_acc = jax.tree_util.tree_map(jnp.add, grads_acc, grads)
        sums_acc = jax.tree_util.tree_map(jnp.add, sums_acc, sums)
        return (grads_acc, loss_acc + loss_sum, sums_acc, model_state), None

      zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
      sums0 = jax.eval_shape(lambda: grads_of(ls, state.params, state.model_state,
                                              jax.tree_util.tree_map(lambda x: x[0], micro), rng)[2])
      sums0 = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), sums0)
      (grads, loss_sum, sums, model_state), _ = jax.lax.scan(
          body, (zeros, jnp.zeros(()), sums0, state.model_state),
          (micro, jnp.arange(grad_accum_steps)))
    if axis_name is not None:
      grads, sums, loss_sum = jax.lax.psum((grads, sums, loss_sum), axis_name)
      model_state = jax.lax.pmean(model_state, axis_name)
    if ls is not None:  # once, on the summed gradients: one overflow anywhere skips the step
      grads = loss_scale_lib.unscale(ls, grads)
    n = jnp.maximum(sums['loss'][1], 1.0)
    grads = jax.tree_util.tree_map(lambda g: g / n, grads)
    loss = loss_sum / n

    squared_norms = _squared_norms(grads)
    flags = _finite_flags(loss, squared_norms)
    finite = jnp.all(flags)
    new_state = state.apply_gradients(grads, model_state)
    # A non-finite step is never applied: the state stays the last good one, the
    # step counter still advances (so data and rng stay aligned), and it is counted.
    new_state = jax.tree_util.tree_map(
        lambda new, old: jnp.where(finite, new, old), new_state, state.replace(step=new_state.step))
    nonfinite = ~finite
    if ls is not None:
      # Overflowing scaled gradients are what loss scaling expects: skip and shrink.
      # Only a non-finite loss, or an overflow at the smallest scale, is an error.
      nonfinite = ~finite & (~flags[0] | ~loss_scale_lib.can_shrink(ls))
      new_state = new_state.replace(loss_scale=loss_scale_lib.adjust(ls, finite))
    new_state = new_state.replace(
        nonfinite_steps=state.nonfinite_steps + nonfinite.astype(jnp.int32),
        first_nonfinite_step=jnp.where((state.first_nonfinite_step < 0) & nonfinite,
                                       state.step, state.first_nonfinite_step),
        first_nonfinite_what=jnp.where((state.first_nonfinite_step < 0) & nonfinite,
                                       jnp.argmin(flags).astype(jnp.int32),
                                       state.first_nonfinite_what))
    metrics = {k: s / jnp.maximum(w, 1e-12) for k, (s, w) in sums.items()}
    metrics['grad_norm'] = jnp.sqrt(sum(squared_norms))
    metrics['nonfinite'] = nonfinite.astype(jnp.float32)
    if ls is not None:  # the trainer logs these two as their last value in each window
      metrics['loss_scale'] = new_state.loss_scale.scale
      metrics['skipped_steps'] = new_state.loss_scale.skipped_steps.astype(jnp.float32)
    if schedule is not None:
      metrics['learning_rate'] = jnp.asarray(schedule(state.step), jnp.float32)
    return new_state, metrics

  return train_step


def eval_params(state: TrainState):
  """The parameters a run is evaluated with: the moving average where the state keeps one."""
  ema = getattr(state, 'ema_params', None)
  return state.params if ema is None else ema


def make_eval_step(model, task_fn: Callable, axis_name: str | None = None):
  """``eval_step(state, batch) -> {name: (sum, weight)}``; padded examples have weight 0.

  A state with ``ema_params`` (``config.ema_decay > 0``) is evaluated with them.
  """
  def eval_step(state: TrainState, batch):
    variables = {'params': eval_params(state), **state.model_state}
    logits = model.apply(variables, batch['inputs'], train=False, **model_kwargs(batch))
    _, sums = task_fn(logits, batch)
    if axis_name is not None:
      sums = jax.lax.psum(sums, axis_name)
    return sums
  return eval_step
