"""Tasks: the loss and metrics for a kind of problem, independent of the model.

A task turns model outputs and a batch into a scalar training loss and metric
*sums with weights*, so evaluation can add batches up exactly and report means
over precisely the examples it saw (padded eval examples carry weight 0).
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from train import one_pass_loss

# name -> (sum, weight); the metric value is sum / weight.
Sums = dict[str, tuple[jax.Array, jax.Array]]


def _example_weights(batch, shape) -> jax.Array:
  """1 for real examples, 0 for eval padding (``valid``), broadcast to ``shape``."""
  valid = batch.get('valid')
  w = jnp.ones(shape[:1], jnp.float32) if valid is None else valid.astype(jnp.float32)
  return w.reshape(w.shape + (1,) * (len(shape) - 1)) * jnp.ones(shape, jnp.float32)


def classification(logits, batch, label_smoothing: float = 0.0) -> tuple[jax.Array, Sums]:
  labels = batch['label']
  num_classes = logits.shape[-1]
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  loss = optax.softmax_cross_entropy(logits, targets)
  w = _example_weights(batch, loss.shape)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  n = w.sum()
  return (loss * w).sum() / jnp.maximum(n, 1), {
      'loss': ((loss * w).sum(), n), 'accuracy': ((correct * w).sum(), n)}


def binary(logits, batch, label_smoothing: float = 0.0) -> tuple[jax.Array, Sums]:
  """One logit per example; the label is 0 or 1 (sigmoid cross-entropy)."""
  labels = batch['label'].astype(jnp.float32)
  targets = labels * (1 - label_smoothing) + 0.5 * label_smoothing
  loss = optax.sigmoid_binary_cross_entropy(logits, targets)
  w = _example_weights(batch, loss.shape)
  correct = ((logits > 0).astype(jnp.float32) == labels).astype(jnp.float32)
  n = w.sum()
  return (loss * w).sum() / jnp.maximum(n, 1), {
      'loss': ((loss * w).sum(), n), 'accuracy': ((correct * w).sum(), n)}


def _integer_label_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``logsumexp(logits) - logits[label]`` over the last axis, the label's logit picked by a
  compare-and-select rather than a gather.

  The values equal ``optax.softmax_cross_entropy_with_integer_labels``'s. The gradient is
  what differs: a gather's is a scatter into a ``[B, T, vocab]`` zero tensor, which XLA
  cannot fuse, so GPT-2's float32 logit gradient was written out and converted to bf16 in
  two more passes (3.3 ms of a 38 ms step on an H100); a select's is elementwise and fuses
  with the softmax's. A float32 one-hot (``optax.softmax_cross_entropy``) fuses too but adds
  a reduction over the vocabulary (1.4 ms there).
  """
  hit = jnp.arange(logits.shape[-1]) == labels[..., None]
  return jax.nn.logsumexp(logits, axis=-1) - jnp.sum(jnp.where(hit, logits, 0.0), axis=-1)


def language_model(logits, batch, label_smoothing: float = 0.0,
                   one_pass: bool = False) -> tuple[jax.Array, Sums]:
  """Per-token cross-entropy on ``targets``; ``weights`` masks padding (and picks MLM positions).

  ``one_pass`` (``config.one_pass_loss``; no label smoothing) takes the loss and the accuracy's
  argmax from one read of the logits (:mod:`train.one_pass_loss`) instead of three.
  """
  targets = batch['targets']
  if one_pass:
    if label_smoothing:
      raise ValueError('one_pass_loss does not support label_smoothing')
    loss, predicted = one_pass_loss.cross_entropy_argmax(logits, targets)
  else:
    if label_smoothing:
      onehot = optax.smooth_labels(jax.nn.one_hot(targets, logits.shape[-1]), label_smoothing)
      loss = optax.softmax_cross_entropy(logits.astype(jnp.float32), onehot)
    else:
      loss = _integer_label_cross_entropy(logits.astype(jnp.float32), targets)
    predicted = jnp.argmax(logits, -1)
  w = _example_weights(batch, loss.shape)
  if 'weights' in batch:
    w = w * batch['weights'].astype(jnp.float32)
  correct = (predicted == targets).astype(jnp.float32)
  n = w.sum()
  return (loss * w).sum() / jnp.maximum(n, 1), {
      'loss': ((loss * w).sum(), n), 'accuracy': ((correct * w).sum(), n)}


TASKS: dict[str, Callable] = {
    'classification': classification,
    'binary': binary,
    'lm': language_model,
    'mlm': language_model,  # same loss; the data's ``weights`` select the masked positions
}


def distill(logits, batch, label_smoothing: float = 0.0) -> tuple[jax.Array, Sums]:
  """Knowledge distillation on batches with ``teacher_logits`` (train/distill.py, default
  temperature and alpha; ``get('distill', config)`` uses ``config.distill``); classification otherwise."""
  from train import distill as distill_lib  # it imports this module
  return distill_lib.make_task()(logits, batch, label_smoothing)


TASKS['distill'] = distill


def get(name: str, config=None) -> Callable:
  """The task ``name``; one with hyper-parameters of its own (``distill``) reads them from ``config``,
  as the language-model tasks read ``one_pass_loss``."""
  if name not in TASKS:
    raise ValueError(f'unknown task {name!r}; known: {", ".join(TASKS)}')
  if name in ('lm', 'mlm') and config is not None and config.get('one_pass_loss'):
    return functools.partial(language_model, one_pass=True)
  if name == 'distill' and config is not None and 'distill' in config:
    from train import distill as distill_lib
    return distill_lib.make_task(config.distill.temperature, config.distill.alpha)
  return TASKS[name]


def finalize(sums: dict) -> dict[str, float]:
  """Turns accumulated ``(sum, weight)`` pairs into means (and perplexity for LM losses)."""
  out = {k: float(s) / max(float(w), 1e-12) for k, (s, w) in sums.items()}
  return out


def add_perplexity(metrics: dict[str, float], task: str, prefix: str) -> dict[str, float]:
  if task in ('lm', 'mlm') and f'{prefix}loss' in metrics:
    metrics[f'{prefix}perplexity'] = math.exp(min(metrics[f"{prefix}loss"], 50.0))
  return metrics
