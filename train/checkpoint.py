"""Orbax checkpoints: the train state and the data-iterator state, saved together.

``CheckpointManager`` writes each step to a temporary directory and renames it
only when complete, so a crash mid-save never leaves a checkpoint that a restart
would load. Saves are asynchronous: training goes on while the arrays are written,
and a failed write (disk full, no permission) surfaces at the next save or at the
end as :class:`CheckpointSaveError`, with the half-written step removed.
Restoring takes an abstract state with shardings, so a checkpoint saved on one
mesh restores onto another.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
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


class CheckpointSaveError(RuntimeError):
  """A checkpoint could not be written: disk full, no permission, quota exceeded, read-only disk.

  ``step`` is the save that failed (its half-written files are removed, so it never
  loads); ``kept`` is the newest complete checkpoint, which a restart resumes from
  (``None``: none was saved yet).
  """

  def __init__(self, message: str, step: int | None, kept: int | None):
    super().__init__(message)
    self.step, self.kept = step, kept


# tensorstore reports a failed file operation as a ValueError ending in [os_error_code='28'].
_TENSORSTORE_ERRNO = re.compile(r"os_error_code='?(\d+)")


def storage_cause(error: BaseException) -> str | None:
  """``'No space left on device [ENOSPC]'`` when ``error`` (or an exception it chains
  from) is a failed file operation, from Python (``OSError``) or from tensorstore's
  array writes; ``None`` for anything else, which is a bug and keeps its traceback."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    code = getattr(error, 'errno', None) if isinstance(error, OSError) else None
    if code is None:
      match = _TENSORSTORE_ERRNO.search(str(error))
      code = int(match.group(1)) if match else None
    if code is not None:
      return f'{os.strerror(code)} [{errno.errorcode.get(code, code)}]'
    if isinstance(error, OSError):
      return str(error) or type(error).__name__
    error = error.__cause__ or error.__context__
  return None


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
    # Step folders are made before save() returns (a few mkdirs): made in the background
    # instead, an unwritable disk leaves orbax's writer threads waiting 5 minutes for a
    # folder that never comes, and the process cannot exit until they give up.
    sync_mkdir = ocp.AsyncOptions(create_directories_asynchronously=False)

    def options(**kw):
      return ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=async_save,
                                          async_options=sync_mkdir, **kw)
    self.manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)), item_names=('state', 'data'),
        options=options(max_to_keep=keep))
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    self.checksum_dir = os.path.abspath(os.path.join(workdir, CHECKSUM_DIR))
    self._unsummed: list[int] = []   # saves whose checksums are not recorded yet
    self._best_pending: int | None = None
    self._failed = False
    self.async_save = async_save
    self.best_metric = best_metric
    self.best = None
    self.best_directory = os.path.abspath(os.path.join(workdir, BEST_DIR))
    if best_metric:
      self.best = ocp.CheckpointManager(
          self.best_directory, item_names=('state', 'data'),
          options=options(max_to_keep=1, best_fn=lambda m: m[best_metric], best_mode=best_mode,
                          keep_checkpoints_without_metrics=False))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  @contextlib.contextmanager
  def _writing(self, step: int | None, directory: str | None = None, what: str = ''):
    """Turns a storage failure inside the block into :class:`CheckpointSaveError` for
    ``step``, saved under ``directory`` (default ``checkpoints/``)."""
    try:
      yield
    except Exception as e:
      cause = storage_cause(e)
      if cause is None:
        raise
      raise self._save_failed(step, cause, directory or self.directory, what) from e

  def _save_failed(self, step: int | None, cause: str, directory: str,
                   what: str = '') -> CheckpointSaveError:
    """Removes what the failed save left and says which checkpoint a restart will load."""
    self._failed = True
    self._unsummed = []
    if jax.process_index() == 0:
      remove_partial(directory, self.checksum_dir, step)
    kept = complete_steps(self.directory)
    kept = kept[-1] if kept else None
    what = what or (f'checkpoint step {step}' if step is not None else 'a checkpoint')
    then = (f'checkpoint step {kept} is kept: free space or fix permissions, then run the same '
            'command to resume from it') if kept is not None else (
        'no earlier checkpoint exists: free space or fix permissions, then run the same command '
        'to start again')
    return CheckpointSaveError(f'cannot save {what} in {directory}: {cause}; {then}',
                               step, kept)

  def _record_checksums(self) -> None:
    """Checksums of the saves that have finished since the last call (process 0 writes).

    Waits for the pending save first: if it failed, :class:`CheckpointSaveError`.
    """
    with self._writing(self._unsummed[-1] if self._unsummed else None):
      self.manager.wait_until_finished()
    if jax.process_index() == 0:
      kept = set(self.manager.all_steps())
      for step in self._unsummed:
        step_dir = os.path.join(self.directory, str(step))
        if step in kept and os.path.isdir(step_dir):
          with self._writing(step, what=f'the checksums of checkpoint step {step}'):
            os.makedirs(self.checksum_dir, exist_ok=True)
            tmp = os.path.join(self.checksum_dir, f'{step}.json.tmp')
            with open(tmp, 'w') as f:
              json.dump(checksums(step_dir), f)
            os.replace(tmp, os.path.join(self.checksum_dir, f'{step}.json'))
      with self._writing(self._unsummed[-1] if self._unsummed else None):
        for name in os.listdir(self.checksum_dir) if os.path.isdir(self.checksum_dir) else []:
          if name.endswith('.json') and name[:-5].isdigit() and int(name[:-5]) not in kept:
            os.remove(os.path.join(self.checksum_dir, name))  # of a deleted checkpoint
    self._unsummed = []

  def _wait_best(self) -> None:
    if self.best is not None:
      with self._writing(self._best_pending, self.best_directory):
        self.best.wait_until_finished()
      self._best_pending = None

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
    """Starts saving ``step`` (in the background when async).

    Raises :class:`CheckpointSaveError` if this save, or the previous one still being
    written, fails for lack of space or permission.
    """
    self._record_checksums()
    self._unsummed.append(step)
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=ocp.args.JsonSave(data_state or {}))
    with self._writing(step):
      self.manager.save(step, args=args, force=True)
    if not self.async_save:  # complete, checksums included, before training goes on
      self._record_checksums()
    if self.best is not None and metrics and self.best_metric in metrics:
      self._wait_best()
      self._best_pending = step
      with self._writing(step, self.best_directory):
        self.best.save(step, args=args, metrics={k: float(v) for k, v in metrics.items()},
                       force=True)

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
    """Blocks until every save has finished; :class:`CheckpointSaveError` if one failed."""
    self._record_checksums()
    self._wait_best()

  def close(self) -> None:
    """Finishes pending saves, records their checksums and closes the managers.

    Also runs when a run stops on an error, which is already on its way up: a save
    failing here is logged, not raised over it.
    """
    if not self._failed:
      try:
        self._record_checksums()
      except CheckpointSaveError as e:
        logging.warning('%s', e)
    for manager in (self.manager, self.best):
      if manager is None:
        continue
      try:
        manager.close()
      except Exception:
        if not self._failed:
          raise
        # orbax raises the failed save again on close; it was reported already


def complete_steps(directory: str) -> list[int]:
  """Steps with a finished checkpoint under ``directory`` (orbax renames a step's
  temporary folder to the bare step number only once every file is written)."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory)
                if d.isdigit() and os.path.isdir(os.path.join(directory, d)))


def remove_partial(directory: str, checksum_dir: str, step: int | None) -> None:
  """Deletes what a failed save of ``step`` left: its temporary folder (space on a full
  disk; never loaded anyway) and half-written checksum files. Best effort: on a
  read-only disk nothing can be removed, and nothing needs to be."""
  prefix = f'{step}.orbax-checkpoint-tmp' if step is not None else None
  if os.path.isdir(directory):
    for name in os.listdir(directory):
      if prefix is not None and name.startswith(prefix):
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
  if os.path.isdir(checksum_dir):
    for name in os.listdir(checksum_dir):
      if name.endswith('.json.tmp'):
        with contextlib.suppress(OSError):
          os.remove(os.path.join(checksum_dir, name))


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
  step_dir = _find_step_dir(path)
  key = params_key(state_metadata(step_dir))
  return load_state(step_dir, keys=(key,))[key]


def params_key(tree: dict) -> str:
  """Which field of a saved train state (its metadata ``tree``) holds the run's parameters:
  ``'ema_params'`` where it kept a moving average (``ema_decay > 0``; it was evaluated
  with it), else ``'params'``."""
  return 'ema_params' if tree.get('ema_params') else 'params'


def state_metadata(step_dir: str) -> dict:
  """The saved train state's tree of array metadata (shapes, dtypes), read without the arrays."""
  meta = ocp.StandardCheckpointer().metadata(os.path.join(step_dir, 'state'))
  return meta.item_metadata.tree if hasattr(meta, 'item_metadata') else meta.tree


def load_state(path: str, keys=None) -> dict:
  """The train state of the latest checkpoint under ``path`` as host numpy arrays.

  Works whatever mesh or process count saved it (the arrays are restored onto one
  local device), so it serves ``init_from``, tools and tests. ``keys`` restores
  only those top-level fields (e.g. ``('params',)``).
  """
  step_dir = _find_step_dir(os.path.abspath(os.path.expanduser(path)))
  state_dir = os.path.join(step_dir, 'state')
  tree = state_metadata(step_dir)
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
