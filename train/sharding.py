"""Device mesh, parameter partitioning and batch sharding from the config.

One step function serves every layout: the layout lives only in the
``NamedSharding``s given to ``jax.jit``. Parameters are partitioned by regex rules
on their path (``'Dense_0/kernel'``, ``'opt_state/0/mu/Dense_0/kernel'`` ...),
first match wins, then a default FSDP rule shards the largest dimension that the
``fsdp`` axis divides. Optimizer moments follow their parameters because the
rules see the parameter path inside the optimizer-state path.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')   # the batch is split over both; FSDP is data parallel too
FSDP_MIN_SIZE = 2 ** 10         # smaller arrays stay replicated: not worth the all-gather


def mesh_shape(mesh_cfg: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Resolves ``-1`` and checks the product equals the device count."""
  sizes = {a: int(mesh_cfg.get(a, 1)) for a in MESH_AXES}
  unknown = set(mesh_cfg) - set(MESH_AXES)
  if unknown:
    raise ValueError(f'mesh has unknown axes {sorted(unknown)}; axes are {MESH_AXES}')
  fills = [a for a, s in sizes.items() if s == -1]
  if len(fills) > 1:
    raise ValueError(f'mesh: only one axis may be -1, got {fills}')
  if any(s == 0 or s < -1 for s in sizes.values()):
    raise ValueError(f'mesh sizes must be positive or -1, got {sizes}')
  known = math.prod(s for s in sizes.values() if s != -1)
  if fills:
    if num_devices % known:
      raise ValueError(f'mesh {sizes} does not divide the {num_devices} devices')
    sizes[fills[0]] = num_devices // known
  if math.prod(sizes.values()) != num_devices:
    raise ValueError(f'mesh {sizes} needs {math.prod(sizes.values())} devices, '
                     f'but {num_devices} are available')
  return sizes


def make_mesh(mesh_cfg: Mapping[str, int], devices: Sequence[Any] | None = None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  sizes = mesh_shape(mesh_cfg, len(devices))
  arr = np.asarray(devices).reshape([sizes[a] for a in MESH_AXES])
  return Mesh(arr, MESH_AXES)


def data_parallel_size(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def path_str(path) -> str:
  parts = []
  for k in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return '/'.join(parts)


def _fsdp_spec(shape, fsdp: int) -> P:
  if fsdp == 1 or math.prod(shape) < FSDP_MIN_SIZE:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      spec = [None] * len(shape)
      spec[dim] = 'fsdp'
      return P(*spec)
  return P()


# Named rule sets; ``config.partition_rules`` may list these names among its rules.
RULE_SETS = {
    # Megatron-style tensor parallelism for models/transformer.py: column-parallel
    # q/k/v and MLP input, row-parallel attention output and MLP output, so each
    # block needs one all-reduce forward and one backward.
    'megatron': (
        (r'attention/(query|key|value)/kernel', (None, 'tensor')),
        (r'attention/(query|key|value)/bias', ('tensor',)),
        (r'attention/out/kernel', ('tensor', None)),
        (r'mlp_in/kernel', (None, 'tensor')),
        (r'mlp_in/bias', ('tensor',)),
        (r'mlp_out/kernel', ('tensor', None)),
        (r'word_embeddings/embedding', ('tensor', None)),
    ),
}


def expand_rules(rules) -> tuple:
  """``(pattern, axes)`` pairs, with named sets (``'megatron'``) expanded in place."""
  out = []
  for rule in rules or ():
    if isinstance(rule, str):
      if rule not in RULE_SETS:
        raise ValueError(f'unknown partition rule set {rule!r}; known: {", ".join(RULE_SETS)}')
      out.extend(RULE_SETS[rule])
    else:
      pattern, axes = rule
      out.append((pattern, tuple(axes)))
  return tuple(out)


def spec_for(path: str, shape: tuple[int, ...], rules, mesh: Mesh) -> P:
  """The PartitionSpec of one array: the first matching rule, else the FSDP default."""
  for pattern, axes in expand_rules(rules):
    if re.search(pattern, path):
      axes = tuple(axes)
      if len(axes) != len(shape):
        continue  # a rule for kernels must not capture a bias of the same name
      ok = all(a is None or shape[i] % _axis_size(mesh, a) == 0 for i, a in enumerate(axes))
      return P(*axes) if ok else P()
  return _fsdp_spec(shape, mesh.shape['fsdp'])


def _axis_size(mesh: Mesh, axis) -> int:
  axis = (axis,) if isinstance(axis, str) else axis
  return math.prod(mesh.shape[a] for a in axis)


def tree_shardings(abstract_tree, mesh: Mesh, rules=()) -> Any:
  """NamedShardings for every leaf of an abstract pytree (from ``jax.eval_shape``)."""
  def leaf(path, x):
    if not hasattr(x, 'shape') or x.ndim == 0:
      return replicated(mesh)
    return NamedSharding(mesh, spec_for(path_str(path), tuple(x.shape), rules, mesh))
  return jax.tree_util.tree_map_with_path(leaf, abstract_tree)


def shard_batch(local_batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict:
  """This process's slice of the global batch -> global ``jax.Array``s (works on 1 or N hosts)."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}
