"""The workdir: checked to be writable, and never mixed between two different configs.

A run writes only inside its workdir. Config keys that name paths
(:data:`PATH_KEYS`) are only ever read; :func:`check_config_paths` refuses the one
case where a library would write to one (TFDS preparing a missing dataset).
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil

import jax

# Fields that change how a run is watched or stored, never what it computes.
RUN_CONTROL_KEYS = {'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps',
                    'keep_checkpoints', 'keep_best_by', 'plots', 'data.num_threads', 'data.prefetch',
                    'eval_batch_size'}


# Config keys that name files or folders. The trainer and the tools only read them;
# outputs go to the workdir, or to a command's own --out flag (never a config value).
PATH_KEYS = ('data.dir', 'data.tfds_data_dir', 'data.tokenizer_path', 'init_from',
             'distill.teacher')


class WorkdirError(ValueError):
  pass


def tfds_dataset(data_cfg) -> str | None:
  """The TFDS name ``data_cfg`` is read through, else ``None`` (local files, offline sets).

  Mirrors train/data/sources.py: a name with local files uses TFDS when ``data.dir``
  is unset, a TFDS-only name always does, an unlisted name goes to TFDS as is.
  """
  from train.data import sources, tfds_source
  loader = sources.LOADERS.get(data_cfg.name)
  local_or_tfds = loader is not None and loader.__qualname__.startswith('_local_or_tfds.')
  if loader is tfds_source.load or (not data_cfg.dir and (loader is None or local_or_tfds)):
    return tfds_source.TFDS_NAMES.get(data_cfg.name, data_cfg.name)
  return None


def check_config_paths(config) -> None:
  """Refuses a config that would make a library write to one of its paths.

  ``data.tfds_data_dir`` is the only such path: TFDS, asked for a dataset that is not
  prepared there, downloads and prepares it in that folder. So the dataset must be
  prepared already. (Unset, TFDS uses its own cache, ``~/tensorflow_datasets`` or
  ``$TFDS_DATA_DIR``, as any TFDS program does.)
  """
  data_dir = config.data.get('tfds_data_dir')
  name = tfds_dataset(config.data) if data_dir else None
  if name is None:
    return
  try:
    from train.data import tfds_source
    builder = tfds_source._tfds().builder(name, data_dir=os.path.expanduser(data_dir))
  except Exception:  # no TFDS, an unknown name: the loader says so, before any write
    return
  if not builder.is_prepared():
    raise WorkdirError(
        f'data.tfds_data_dir: {name} is not prepared in {data_dir}, and TFDS would download '
        'and write it there (paths from configs are only read); prepare it first '
        f'(tfds build {name} --data_dir={data_dir} --file_format=array_record), point '
        'data.dir at local files, or unset data.tfds_data_dir to use the TFDS cache')


def _flatten(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def config_diff(old: dict, new: dict) -> list[str]:
  """Changed keys. A key the old run did not have yet (added to configs/base.py since)
  is no change when it holds its default, so older runs still resume."""
  import json
  from configs.base import get_base_config
  a, b = _flatten(old), _flatten(new)
  defaults = _flatten(json.loads(get_base_config().to_json_best_effort()))
  keys = sorted((set(a) | set(b)) - RUN_CONTROL_KEYS)
  return [f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in keys if a.get(k) != b.get(k)
          and not (k not in a and (b.get(k) is None or b.get(k) == defaults.get(k, object())))]


def prepare(workdir: str, config, on_change: str = 'refuse') -> None:
  """Checks the config's paths are only read (:func:`check_config_paths`), creates
  ``workdir``, checks it is writable and that it holds no other config's run."""
  check_config_paths(config)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test_{jax.process_index()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(f'workdir {workdir} cannot be written: {e.strerror or e}') from None
  new = json.loads(config.to_json_best_effort())
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      old = json.load(f)
    diff = config_diff(old, new)
    if diff and on_change == 'refuse':
      raise WorkdirError(
          f'workdir {workdir} holds a run with a different config ({"; ".join(diff[:3])}'
          f'{" ..." if len(diff) > 3 else ""}); pass --on_config_change=resume to continue it '
          'under the new config or --on_config_change=fresh to move it aside and start over')
    if diff and on_change == 'fresh' and jax.process_index() == 0:
      stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
      aside = os.path.join(workdir, f'previous-{stamp}')
      os.makedirs(aside)
      for name in os.listdir(workdir):
        if not name.startswith('previous-'):
          shutil.move(os.path.join(workdir, name), aside)
  if jax.process_index() == 0:
    tmp = path + '.tmp'
    try:  # the probe's file fits where a config may not (a full disk): still one line
      with open(tmp, 'w', encoding='utf-8') as f:
        f.write(json.dumps(new, indent=2, sort_keys=True) + '\n')
      os.replace(tmp, path)
    except OSError as e:
      with contextlib.suppress(OSError):
        os.remove(tmp)
      raise WorkdirError(f'workdir {workdir} cannot be written: {e.strerror or e}') from None
