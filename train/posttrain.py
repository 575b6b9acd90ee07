"""What the post-training tools share (quantize, prune, distill): a trained run read back.

A run is its workdir: ``config.json`` plus Orbax checkpoints. :func:`load_run`
rebuilds the model from the config and restores the latest checkpoint's
``params`` *and* ``model_state`` (BatchNorm statistics), nothing else;
:func:`evaluate` scores variables on a source with the trainer's own eval step
and task, so its numbers are the trainer's numbers.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import flax.struct
import jax
import numpy as np

CLASSIFIER_TASKS = ('classification', 'binary', 'distill')


def is_kernel(path, leaf) -> bool:
  """Dense and Conv weights: leaves named ``kernel`` with >= 2 dims (not biases, norms, embeddings)."""
  name = path[-1]
  name = str(getattr(name, 'key', getattr(name, 'name', name)))
  return name == 'kernel' and np.ndim(leaf) >= 2


def kernel_names(params) -> list[str]:
  """``'Conv_0/kernel'``-style names of the kernels in ``params``, in tree order."""
  from train.sharding import path_str
  return [path_str(p) for p, x in jax.tree_util.tree_flatten_with_path(params)[0] if is_kernel(p, x)]


def read_config(workdir: str):
  """The ``config.json`` a run was trained with, as a ConfigDict."""
  import ml_collections
  path = os.path.join(workdir, 'config.json')
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'workdir {workdir} does not exist')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} is missing: not a training workdir')
  with open(path, encoding='utf-8') as f:
    return ml_collections.ConfigDict(json.load(f))


def load_variables(workdir: str) -> tuple[dict, dict, int]:
  """``(params, model_state, step)`` of the latest checkpoint in ``workdir``, as numpy arrays.

  Only those two parts of the train state are read (a partial restore), so the
  optimizer state's layout does not matter. A run that kept a moving average of its
  parameters (``ema_decay``) gives that average, which is what it was evaluated with.
  """
  from train.checkpoint import _find_step_dir, load_state, params_key, state_metadata
  path = os.path.abspath(workdir)
  if not os.path.isdir(path):
    raise FileNotFoundError(f'workdir {workdir} does not exist')
  try:
    step_dir = _find_step_dir(path)
  except FileNotFoundError:
    raise FileNotFoundError(f'{workdir} holds no checkpoint') from None
  tree = state_metadata(step_dir)
  key = params_key(tree)
  restored = load_state(step_dir, keys=(key, 'model_state') if tree.get('model_state') else (key,))
  return restored[key], dict(restored.get('model_state') or {}), int(os.path.basename(step_dir))


@dataclasses.dataclass
class TrainedRun:
  config: Any          # the run's ConfigDict
  model: Any           # the Linen module, rebuilt from the config
  params: dict         # numpy arrays
  model_state: dict    # e.g. {'batch_stats': ...}; {} when the model has none
  step: int            # the checkpoint's step


def load_run(workdir: str, info) -> TrainedRun:
  """The latest checkpoint of a classifier's workdir, with its model sized by ``info``.

  Raises FileNotFoundError (no workdir, config or checkpoint) or ValueError
  (not a classifier).
  """
  from train.trainer import build_model
  config = read_config(workdir)
  if config.task not in CLASSIFIER_TASKS:
    raise ValueError(f'{workdir} trained task {config.task!r}; this needs a classifier '
                     f'({", ".join(CLASSIFIER_TASKS)})')
  params, model_state, step = load_variables(workdir)
  return TrainedRun(config, build_model(config, info), params, model_state, step)


class EvalState(flax.struct.PyTreeNode):
  """The two fields of a TrainState that ``steps.make_eval_step`` reads."""
  params: Any
  model_state: Any


def eval_task(task: str) -> str:
  """The task a classifier is scored with: distillation is scored as plain classification."""
  return 'classification' if task == 'distill' else task


def evaluate(model, params, model_state, source, *, task: str = 'classification',
             batch_size: int = 1000) -> dict[str, float]:
  """``{'accuracy', 'loss', 'num_examples'}`` of the variables on ``source``, as the trainer
  evaluates: padded, masked batches (``pipeline.eval_batches``), summed, then ``tasks.finalize``."""
  from train import steps, tasks
  from train.data import pipeline
  eval_step = jax.jit(steps.make_eval_step(model, tasks.get(eval_task(task))))
  state = EvalState(params=params, model_state=model_state)
  total, count = None, 0
  for batch in pipeline.eval_batches(source, global_batch_size=batch_size):
    sums = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), jax.device_get(eval_step(state, batch)))
    total = sums if total is None else jax.tree_util.tree_map(np.add, total, sums)
    count += int(batch['valid'].sum())
  return {**tasks.finalize(total), 'num_examples': count}


def predict_logits(model, params, model_state, source, *, batch_size: int = 1000) -> np.ndarray:
  """``[len(source), classes]`` float32 logits of every example, in order (eval mode)."""
  from train.data import pipeline
  from train.steps import model_kwargs

  @jax.jit
  def apply(variables, batch):
    return model.apply(variables, batch['inputs'], train=False, **model_kwargs(batch))
  variables = {'params': params, **model_state}
  out = [np.asarray(apply(variables, b))[b['valid']]
         for b in pipeline.eval_batches(source, global_batch_size=batch_size)]
  return np.concatenate(out).astype(np.float32)
