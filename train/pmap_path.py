"""The ``pmap`` path (``config.parallelism='pmap'``): data-parallel replicas with ``pmean``.

For users and notebooks that expect ``jax.pmap``. It runs the very same step
functions as the sharded ``jit`` path (``train/steps.py`` with ``axis_name``), so
the two give the same results; state is replicated on the local devices and each
device takes an equal slice of this process's batch.
"""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = 'batch'


def _stacked(devices) -> NamedSharding:
  """A leading axis of one entry per device (what ``jax.pmap`` takes and returns)."""
  return NamedSharding(Mesh(np.asarray(devices), (AXIS,)), P(AXIS))


def replicate(tree, devices=None):
  """One copy of ``tree`` per local device (a leading device axis)."""
  devices = list(devices or jax.local_devices())
  host = jax.device_get(tree)
  return jax.device_put(
      jax.tree_util.tree_map(lambda x: np.stack([np.asarray(x)] * len(devices)), host),
      _stacked(devices))


def unreplicate(tree):
  """The first replica: what checkpoints store (every replica is the same)."""
  return jax.tree_util.tree_map(lambda x: x[0], tree)


def put_batch(local_batch: dict, devices=None) -> dict:
  """``[B, ...]`` -> ``[devices, B / devices, ...]``, one slice on each local device."""
  devices = list(devices or jax.local_devices())
  n = len(devices)

  stacked = _stacked(devices)
  return {k: jax.device_put(np.asarray(v).reshape((n, -1) + np.shape(v)[1:]), stacked)
          for k, v in local_batch.items()}


def pmap_train_step(step_fn: Callable) -> Callable:
  """``step_fn`` built with ``axis_name=AXIS``; the rng is shared, the state donated."""
  return jax.pmap(step_fn, axis_name=AXIS, in_axes=(0, 0, None), donate_argnums=0)


def pmap_eval_step(eval_fn: Callable) -> Callable:
  return jax.pmap(eval_fn, axis_name=AXIS)
