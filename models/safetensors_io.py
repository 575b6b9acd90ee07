"""Our parameter trees as safetensors files: ``{'a': {'b': x}}`` <-> key ``'a.b'``.

safetensors holds flat, named tensors and no code, so a file is safe to load from
anyone and readable by PyTorch, Rust and other tools. Dtypes round-trip, bfloat16
included.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np
from safetensors.numpy import load_file, save_file

SEP = '.'


def flatten_params(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """``{'a': {'b': x}}`` -> ``{'a.b': np.asarray(x)}``; names may not contain the separator."""
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = [str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path]
    bad = [n for n in names if SEP in n or not n]
    if bad:
      raise ValueError(f'parameter name {bad[0]!r} in {"/".join(names)} is empty or contains {SEP!r}')
    flat[SEP.join(names)] = np.asarray(leaf)  # gathers device arrays to the host
  return flat


def unflatten_params(flat: Mapping[str, np.ndarray]) -> dict:
  tree: dict = {}
  for key in sorted(flat):
    *parents, leaf = key.split(SEP)
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
      if not isinstance(node, dict):
        raise ValueError(f'key {key!r} nests under a tensor of the same name')
    node[leaf] = flat[key]
  return tree


def save_params(params: Mapping[str, Any], path: str,
                metadata: Mapping[str, str] | None = None) -> None:
  """Writes a (nested) parameter tree to ``path`` as one safetensors file."""
  flat = flatten_params(params)
  if not flat:
    raise ValueError('save_params: the parameter tree is empty')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  # safetensors wants C-contiguous buffers (np.ascontiguousarray would make scalars 1-d).
  save_file({k: np.require(v, requirements='C') for k, v in flat.items()}, path,
            metadata=dict(metadata) if metadata else None)


def load_params(path: str) -> dict:
  """Reads a file written by :func:`save_params` back into a nested dict of numpy arrays."""
  if not os.path.isfile(path):
    raise ValueError(f'load_params: {path} is not a file')
  return unflatten_params(load_file(path))
