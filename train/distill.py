"""Knowledge distillation (Hinton et al. 2015): a student learns from a trained teacher's logits.

  loss = alpha T^2 KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) CE(student, label)

The T^2 keeps the soft term's gradients on the scale of the hard term's as T
grows. How it plugs into the trainer (``config.task = 'distill'``):

- :func:`attach_teacher` runs the teacher (``config.distill.teacher``, a trained
  workdir) once over every training example and adds its logits to each record as
  ``teacher_logits``. Exact wherever training inputs are not randomly augmented
  (MNIST); the teacher is never run again.
- :func:`make_task` is the task: the loss above on batches carrying
  ``teacher_logits``, plain classification on the others, so evaluation reports the
  usual test accuracy and cross-entropy.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from train import tasks


def distillation_loss(student_logits, teacher_logits, labels, *, temperature: float, alpha: float,
                      label_smoothing: float = 0.0):
  """Per-example ``(loss, kl, ce)`` as in the module doc (the teacher gets no gradient)."""
  t = jnp.asarray(temperature, jnp.float32)
  log_p_student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t, axis=-1)
  log_p_teacher = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / t, axis=-1)
  kl = jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
  targets = optax.smooth_labels(jax.nn.one_hot(labels, student_logits.shape[-1]), label_smoothing)
  ce = optax.softmax_cross_entropy(student_logits.astype(jnp.float32), targets)
  return alpha * t * t * kl + (1.0 - alpha) * ce, kl, ce


def make_task(temperature: float = 4.0, alpha: float = 0.9) -> Callable:
  """The ``distill`` task: ``(logits, batch, label_smoothing) -> (loss, sums)`` like train/tasks.py."""
  if temperature <= 0 or not 0.0 <= alpha <= 1.0:
    raise ValueError(f'distill: need temperature > 0 and 0 <= alpha <= 1, got {temperature}, {alpha}')

  def distill(logits, batch, label_smoothing: float = 0.0):
    if 'teacher_logits' not in batch:  # evaluation: scored as plain classification
      return tasks.classification(logits, batch, label_smoothing)
    loss, kl, ce = distillation_loss(logits, batch['teacher_logits'], batch['label'],
                                     temperature=temperature, alpha=alpha,
                                     label_smoothing=label_smoothing)
    w = tasks._example_weights(batch, loss.shape)
    n = w.sum()
    correct = (jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32)
    return (loss * w).sum() / jnp.maximum(n, 1), {
        'loss': ((loss * w).sum(), n), 'accuracy': ((correct * w).sum(), n),
        'kl': ((kl * w).sum(), n), 'ce': ((ce * w).sum(), n)}
  return distill


class WithTeacherLogits:
  """A source whose records also carry ``teacher_logits`` (row ``i`` of a precomputed array)."""

  def __init__(self, source, logits: np.ndarray):
    if len(source) != len(logits):
      raise ValueError(f'{len(logits)} teacher logits for {len(source)} examples')
    self.source, self.logits = source, logits

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index):
    rec = dict(self.source[index])
    rec['teacher_logits'] = self.logits[index]
    return rec

  def __repr__(self) -> str:
    return f'WithTeacherLogits({self.source!r}, {self.logits.shape})'


def attach_teacher(splits, distill_cfg, batch_size: int = 1000):
  """``splits`` with the teacher's logits added to every training record (eval untouched).

  ``distill_cfg.teacher`` is a trained classifier's workdir; its model must take
  this dataset's inputs and give one logit per class.
  """
  from train import posttrain
  from train.data.base import Splits
  from train.validate import ConfigError
  if not distill_cfg.teacher:
    raise ConfigError("task 'distill' needs distill.teacher: a trained classifier's workdir")
  try:  # the values are checked before the teacher runs
    make_task(distill_cfg.temperature, distill_cfg.alpha)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  teacher = posttrain.load_run(os.path.expanduser(distill_cfg.teacher), splits.info)
  if teacher.config.task == 'binary':
    raise ConfigError(f'distill.teacher {distill_cfg.teacher} is a binary classifier; '
                      'distillation here needs one logit per class')
  try:
    logits = posttrain.predict_logits(teacher.model, teacher.params, teacher.model_state,
                                      splits.train, batch_size=batch_size)
  except (TypeError, ValueError) as e:  # shapes: another dataset's or another class count's model
    raise ConfigError(f'distill.teacher {distill_cfg.teacher} does not fit this data: '
                      f'{str(e).splitlines()[0]}') from None
  if logits.ndim != 2 or logits.shape[1] != splits.info.num_classes:
    raise ConfigError(f'distill.teacher gives logits of shape {logits.shape[1:]}, '
                      f'this dataset has {splits.info.num_classes} classes')
  labels = np.asarray([splits.train[i]['label'] for i in range(len(splits.train))])
  logging.info('distill: teacher %s (step %d) is %.4f accurate on the %d training examples; '
               'T=%g alpha=%g', distill_cfg.teacher, teacher.step,
               float(np.mean(np.argmax(logits, -1) == labels)), len(labels),
               distill_cfg.temperature, distill_cfg.alpha)
  return Splits(train=WithTeacherLogits(splits.train, logits), eval=splits.eval, info=splits.info)
