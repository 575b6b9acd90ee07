"""Small helpers shared by the tests: run the trainer in-process or as a command, read
compiled HLO."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(path: str, arg: str | None = None, **overrides):
  """``configs/NAME.py`` -> ConfigDict, with dotted overrides (``**{'data.dir': ...}``)."""
  spec = importlib.util.spec_from_file_location('cfg', os.path.join(REPO, path))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  config = mod.get_config(arg)
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def run_cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
  full_env = dict(os.environ, **(env or {}))
  return subprocess.run([sys.executable, '-m', 'train', *args], cwd=REPO, env=full_env,
                        capture_output=True, text=True, timeout=timeout)


def latest_state(workdir: str, config):
  """Restores the latest checkpoint of ``workdir`` as numpy arrays (params, opt_state...)."""
  from train import checkpoint as ckpt_lib
  ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
  step = ckpt.latest_step()
  ckpt.close()
  return step, ckpt_lib.load_state(workdir)


def assert_trees_equal(a, b):
  la, ta = jax.tree_util.tree_flatten(a)
  lb, tb = jax.tree_util.tree_flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def compiled_dots(hlo_text: str) -> list[tuple[str, str, str, tuple[int, ...]]]:
  """``(lhs type, rhs type, result type, result shape)`` of every dot in a compiled module's
  text, after XLA's own rewrites (it may convert a dot's operands, which the traced jaxpr does
  not show)."""
  found = []
  for computation in hlo_text.split('\n\n'):
    types = dict(re.findall(r'%(\S+) = (\w+)\[', computation))
    for m in re.finditer(r'= (\w+)\[([\d,]*)\]\S* dot\(%([^,\s]+), %([^,\s)]+)', computation):
      shape = tuple(int(d) for d in m.group(2).split(',') if d)
      found.append((types.get(m.group(3)), types.get(m.group(4)), m.group(1), shape))
  return found


def compiled_dot_contractions(hlo_text: str) -> dict[tuple[int, ...], list[tuple[str, str]]]:
  """Result shape -> ``(lhs contracting dims, rhs contracting dims)`` of each dot in a compiled
  module's text, e.g. ``('1', '0')`` for a plain ``[M, K] x [K, N]`` dot."""
  found = {}
  for m in re.finditer(r'= \w+\[([\d,]*)\]\S* dot\([^)]*\), lhs_contracting_dims=\{([\d,]*)\}, '
                       r'rhs_contracting_dims=\{([\d,]*)\}', hlo_text):
    shape = tuple(int(d) for d in m.group(1).split(',') if d)
    found.setdefault(shape, []).append((m.group(2), m.group(3)))
  return found
