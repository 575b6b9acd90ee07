"""The workdir: checked to be writable, and never mixed between two different configs."""
from __future__ import annotations

import datetime
import json
import os
import shutil

import jax

# Fields that change how a run is watched or stored, never what it computes.
RUN_CONTROL_KEYS = {'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps',
                    'keep_checkpoints', 'keep_best_by', 'plots', 'data.num_threads', 'data.prefetch',
                    'eval_batch_size'}


class WorkdirError(ValueError):
  pass


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
  """Creates ``workdir``, checks it is writable and that it holds no other config's run."""
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
    with open(tmp, 'w', encoding='utf-8') as f:
      f.write(json.dumps(new, indent=2, sort_keys=True) + '\n')
    os.replace(tmp, path)
