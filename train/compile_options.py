"""XLA options the trainer and the benchmark compile the train and eval steps with.

They apply per compile (``.compile(compiler_options=...)``, ``jax.jit(compiler_options=...)``),
never process-wide, so other jitted code keeps XLA's defaults. Three sources, later ones win:

1. CPU: convolutions go to XLA's Eigen kernels, not YNNPACK's, and conv nets fuse their
   elementwise work into YNNPACK (below).
2. CPU with ``config.remat``: keep jax.checkpoint's optimisation barriers.
3. ``config.xla_options``: the user's, in ``XLA_FLAGS`` syntax (``'--xla_foo=1 --xla_bar=x,y'``).

A flag the user set in the ``XLA_FLAGS`` environment variable is left to it.
"""
from __future__ import annotations

import functools
import os
import re
import shlex

import jax

YNN_FUSION_FLAG = 'xla_cpu_experimental_ynn_fusion_type'
# jaxlib 0.10's default YNNPACK library fusions on CPU, less INDIVIDUAL_CONVOLUTION (found by
# compiling with each subset: the one whose HLO equals the default's). YNNPACK runs a
# convolution on one thread here, and its kernel gradient at ~26 GFLOP/s; XLA's Eigen
# convolutions use every core (2-core CPU: conv2's kernel gradient 36 -> 9.5 ms, the MNIST
# CNN's step 1.9x faster; experiments/README.md). Models without convolutions compile to the
# same HLO either way (tests/test_compile_options.py).
CPU_YNN_FUSIONS = ('DOT', 'REDUCE', 'INDIVIDUAL_DOT')
# With convolutions off YNNPACK, conv nets also gain from its elementwise fusions (ReLU, its
# gradient, batch norm over large NHWC activations): MNIST CNN 1.19x, ResNet-20 1.34x. The
# others do not (MLP, Transformer 1.00x; LSTM 0.97x), so they keep the default.
CPU_YNN_FUSIONS_CONV_NETS = CPU_YNN_FUSIONS + ('ELTWISE',)

_FLAG = re.compile(r'^--(xla_\w+)=(.*)$')


def parse_xla_options(text: str) -> dict[str, str]:
  """``'--xla_a=1 --xla_b=x,y'`` -> ``{'xla_a': '1', 'xla_b': 'x,y'}``; ValueError on other words."""
  options = {}
  for word in shlex.split(text or ''):
    match = _FLAG.match(word)
    if not match:
      raise ValueError(f'xla_options: {word!r} is not --xla_<name>=<value>')
    options[match.group(1)] = match.group(2)
  return options


def remat_options(config, platform: str) -> dict[str, str]:
  """Keeps ``config.remat``'s memory saving on CPU.

  XLA:CPU removes the optimisation barriers that ``jax.checkpoint`` puts around the
  recomputation (its ``cse_barrier_expander`` pass) before it schedules, so the recomputed
  forward is scheduled early and every layer's activations stay live: no saving, only the
  extra FLOPs. With that pass off the barriers stay, and so does the saving
  (experiments/README.md). GPU and TPU keep the barriers anyway."""
  if config.remat == 'none' or platform != 'cpu':
    return {}
  return {'xla_disable_hlo_passes': 'cse_barrier_expander'}


def has_convolutions(params) -> bool:
  """Whether a parameter tree (arrays or shapes) holds a 2-D (or higher) convolution kernel."""
  leaves = jax.tree_util.tree_leaves_with_path(params)
  return any(len(leaf.shape) >= 4 and 'kernel' in jax.tree_util.keystr(path) for path, leaf in leaves)


def ynn_fusions(convolutional: bool) -> str:
  """The value of ``--xla_cpu_experimental_ynn_fusion_type`` for the step on CPU."""
  kinds = CPU_YNN_FUSIONS_CONV_NETS if convolutional else CPU_YNN_FUSIONS
  return ','.join('LIBRARY_FUSION_TYPE_' + kind for kind in kinds)


def _set_in_environment(flag: str) -> bool:
  return f'--{flag}=' in os.environ.get('XLA_FLAGS', '')


def rejection(options: dict[str, str], device=None) -> str | None:
  """XLA's complaint (its first line) about compiling a one-op program with ``options``, or None.

  E.g. "INVALID_ARGUMENT: No such compile option: 'xla_x'", or a value that is not a valid enum.
  """
  one = 1.0 if device is None else jax.device_put(1.0, device)
  try:
    jax.jit(lambda x: x + 1).lower(one).compile(compiler_options=options)
  except Exception as e:  # XLA raises its runtime error type; only the message matters here
    return str(e).strip().splitlines()[0]
  return None


@functools.cache
def _cpu_accepts(flag: str, value: str) -> bool:
  """Whether this jaxlib's XLA:CPU takes the option (older ones lack YNNPACK and its flag)."""
  return rejection({flag: value}, jax.local_devices(backend='cpu')[0]) is None


def step_options(config, platform: str | None = None,
                 convolutional: bool = False) -> dict[str, str] | None:
  """The options for ``config``'s train and eval steps on ``platform`` (default: JAX's backend).

  ``convolutional``: the model has convolutions (``has_convolutions(params)``).
  """
  platform = platform or jax.default_backend()
  options = {}
  fusions = ynn_fusions(convolutional)
  if (platform == 'cpu' and not _set_in_environment(YNN_FUSION_FLAG)
      and _cpu_accepts(YNN_FUSION_FLAG, fusions)):
    options[YNN_FUSION_FLAG] = fusions
  options.update(remat_options(config, platform))
  options.update(parse_xla_options(config.get('xla_options', '')))
  return options or None
