"""Orbax checkpoints: the train state and the data-iterator state, saved together.

``CheckpointManager`` writes each step to a temporary directory and renames it
only when complete, so a crash mid-save never leaves a checkpoint that a restart
would load. Saves are asynchronous: training goes on while the arrays are written.
Restoring takes an abstract state with shardings, so a checkpoint saved on one
mesh restores onto another.
"""
from __future__ import annotations

import json
import logging
import os
import zlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from train import sharding as sharding_lib

CHECKPOINT_DIR = 'checkpoints'
BEST_DIR = 'checkpoints_best'
CHECKSUM_DIR = 'checkpoint_checksums'


class CheckpointCorrupted(RuntimeError):
  """A checkpoint's files do not match the checksums taken when it was written, or do not load."""


def _crc32(path: str) -> int:
  crc = 0
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      crc = zlib.crc32(chunk, crc)
  return crc


def checksums(step_dir: str) -> dict[str, int]:
  """CRC32 of every file under a finished checkpoint (flipped or truncated bytes show)."""
  out = {}
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      out[os.path.relpath(path, step_dir)] = _crc32(path)
  return out


class Checkpointer:
  """Saves every N steps and at the end, keeps the last K and optionally the best one."""

  def __init__(self, workdir: str, *, keep: int = 3, best_metric: str | None = None,
               best_mode: str = 'max', async_save: bool = True):
    def options(**kw):
      return ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=async_save, **kw)
    self.manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)), item_names=('state', 'data'),
        options=options(max_to_keep=keep))
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    self.checksum_dir = os.path.abspath(os.path.join(workdir, CHECKSUM_DIR))
    self._unsummed: list[int] = []
    self.best_metric = best_metric
    self.best = None
    if best_metric:
      self.best = ocp.CheckpointManager(
          os.path.abspath(os.path.join(workdir, BEST_DIR)), item_names=('state', 'data'),
          options=options(max_to_keep=1, best_fn=lambda m: m[best_metric], best_mode=best_mode,
                          keep_checkpoints_without_metrics=False))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def _record_checksums(self) -> None:
    """Checksums of the saves that have finished since the last call (process 0 writes)."""
    self.manager.wait_until_finished()
    if jax.process_index() == 0:
      os.makedirs(self.checksum_dir, exist_ok=True)
      kept = set(self.manager.all_steps())
      for step in self._unsummed:
        step_dir = os.path.join(self.directory, str(step))
        if step in kept and os.path.isdir(step_dir):
          tmp = os.path.join(self.checksum_dir, f'{step}.json.tmp')
          with open(tmp, 'w') as f:
            json.dump(checksums(step_dir), f)
          os.replace(tmp, os.path.join(self.checksum_dir, f'{step}.json'))
      for name in os.listdir(self.checksum_dir):  # drop those of deleted checkpoints
        if name.endswith('.json') and name[:-5].isdigit() and int(name[:-5]) not in kept:
          os.remove(os.path.join(self.checksum_dir, name))
    self._unsummed = []

  def verify(self, step: int) -> None:
    """Raises :class:`CheckpointCorrupted` if ``step``'s files differ from when it was written."""
    file = os.path.join(self.checksum_dir, f'{step}.json')
    if not os.path.exists(file):
      return  # written by a run that was killed before it could checksum: orbax's commit still holds
    with open(file) as f:
      expected = json.load(f)
    step_dir = os.path.join(self.directory, str(step))
    for rel, crc in expected.items():
      path = os.path.join(step_dir, rel)
      if not os.path.exists(path):
        raise CheckpointCorrupted(f'checkpoint {step_dir} is corrupted: {rel} is missing')
      if _crc32(path) != crc:
        raise CheckpointCorrupted(f'checkpoint {step_dir} is corrupted: {rel} changed since it was written')

  def save(self, step: int, state, data_state: dict | None, metrics: dict | None = None) -> None:
    self._record_checksums()
    self._unsummed.append(step)
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=ocp.args.JsonSave(data_state or {}))
    self.manager.save(step, args=args, force=True)
    if self.best is not None and metrics and self.best_metric in metrics:
      self.best.save(step, args=args, metrics={k: float(v) for k, v in metrics.items()}, force=True)

  def restore(self, step: int, abstract_state) -> tuple[Any, dict]:
    """The state and data-iterator state of ``step``; :class:`CheckpointCorrupted` if damaged."""
    self.verify(step)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    except Exception as e:  # tensorstore/JSON errors from damaged files
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise CheckpointCorrupted(
          f'checkpoint {os.path.join(self.directory, str(step))} cannot be read: {first[:300]}') from e
    return restored['state'], dict(restored['data'] or {})

  def restore_latest(self, abstract_state, fallback: bool = False):
    """``(step, state, data_state)`` from the newest readable checkpoint, or ``None`` if none.

    Without ``fallback`` a damaged latest checkpoint is an error naming it; with it,
    older checkpoints are tried in turn (the damaged one is left in place).
    """
    steps = self.all_steps()
    for step in reversed(steps):
      try:
        return (step, *self.restore(step, abstract_state))
      except CheckpointCorrupted as e:
        if not fallback:
          raise CheckpointCorrupted(f'{e} (pass --restore_fallback to use the previous one)') from None
        logging.warning('%s; falling back to an older checkpoint', e)
        self._set_aside(step)
    if steps:
      raise CheckpointCorrupted(f'no readable checkpoint in {self.directory}')
    return None

  def _set_aside(self, step: int) -> None:
    """Moves a damaged checkpoint to ``checkpoints_damaged/`` (kept for inspection, never loaded)."""
    if jax.process_index() == 0:
      aside = os.path.join(os.path.dirname(self.directory), 'checkpoints_damaged')
      os.makedirs(aside, exist_ok=True)
      os.replace(os.path.join(self.directory, str(step)), os.path.join(aside, str(step)))
    self.manager.reload()

  def wait(self) -> None:
    self._record_checksums()
    if self.best is not None:
      self.best.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
    if self.best is not None:
      self.best.close()


def abstract_with_shardings(abstract_tree, shardings):
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_tree, shardings)


def load_params(path: str) -> dict:
  """Parameters from another run: a workdir, its ``checkpoints/`` folder, one step folder,
  a safetensors file of ours, or a Hugging Face BERT-family folder. Returns numpy arrays."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(path):
    raise FileNotFoundError(f'init_from: {path} does not exist')
  if path.endswith('.safetensors'):
    from models import safetensors_io
    return safetensors_io.load_params(path)
  from models import pretrained
  if pretrained.is_hf_checkpoint(path):
    return pretrained.load_pretrained_params(path)
  return load_state(path, keys=('params',))['params']


def load_state(path: str, keys=None) -> dict:
  """The train state of the latest checkpoint under ``path`` as host numpy arrays.

  Works whatever mesh or process count saved it (the arrays are restored onto one
  local device), so it serves ``init_from``, tools and tests. ``keys`` restores
  only those top-level fields (e.g. ``('params',)``).
  """
  step_dir = _find_step_dir(os.path.abspath(os.path.expanduser(path)))
  state_dir = os.path.join(step_dir, 'state')
  meta = ocp.StandardCheckpointer().metadata(state_dir)
  tree = meta.item_metadata.tree if hasattr(meta, 'item_metadata') else meta.tree
  if keys is not None:
    tree = {k: tree[k] for k in keys}
  cpu = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree_util.tree_map(
      lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=cpu), tree)
  with ocp.PyTreeCheckpointer() as ckptr:
    restored = ckptr.restore(state_dir, args=ocp.args.PyTreeRestore(
        item=abstract, partial_restore=keys is not None,
        restore_args=jax.tree_util.tree_map(lambda a: ocp.ArrayRestoreArgs(sharding=cpu), abstract)))
  return jax.tree_util.tree_map(np.asarray, restored)


def _find_step_dir(path: str) -> str:
  if os.path.isdir(os.path.join(path, 'state')):
    return path
  for root in (os.path.join(path, CHECKPOINT_DIR), path):
    if os.path.isdir(root):
      steps = [int(d) for d in os.listdir(root) if d.isdigit()]
      if steps:
        return os.path.join(root, str(max(steps)))
  raise FileNotFoundError(f'init_from: no checkpoint found under {path}')


def overlay_params(target, source, log=logging.info):
  """Copies ``source`` arrays into ``target`` where paths and shapes match.

  The fine-tuning case: a pretrained encoder fills a freshly initialised
  classifier, whose new head keeps its initialisation. Returns the new tree and
  the number of arrays loaded; logs what was skipped.
  """
  flat_src = {sharding_lib.path_str(p): v for p, v in
              jax.tree_util.tree_flatten_with_path(source)[0]}
  loaded, skipped = [], []

  def leaf(path, t):
    key = sharding_lib.path_str(path)
    s = flat_src.get(key)
    if s is not None and tuple(s.shape) == tuple(t.shape):
      loaded.append(key)
      return jax.device_put(np.asarray(s, dtype=t.dtype), t.sharding)
    skipped.append(key)
    return t
  out = jax.tree_util.tree_map_with_path(leaf, target)
  if not loaded:
    raise ValueError('init_from: no parameter of the checkpoint matches this model '
                     '(names or shapes differ)')
  unused = sorted(set(flat_src) - set(loaded))
  log(f'init_from: loaded {len(loaded)} arrays; kept fresh {len(skipped)} {skipped[:8]}; '
      f'unused {len(unused)} {unused[:8]}')
  return out, len(loaded)
