"""Process-level set-up: multi-host initialisation, the persistent compilation cache, malloc,
and the CPU lowering of the random-bit hash."""
from __future__ import annotations

import logging
import os

import jax

# Environment variables that mean "this process is one of several".
_CLUSTER_ENV = ('JAX_COORDINATOR_ADDRESS', 'COORDINATOR_ADDRESS', 'SLURM_JOB_ID',
                'TPU_WORKER_HOSTNAMES', 'MEGASCALE_COORDINATOR_ADDRESS')


def maybe_initialize_distributed() -> None:
  """``jax.distributed.initialize()`` on a TPU pod slice, SLURM or a coordinator env.

  JAX's own cluster detection fills in the coordinator, process count and id from
  the environment; a single process with none of these set is left alone. Set
  ``JAXLAB_DISTRIBUTED=0`` to opt out (e.g. one process inside a SLURM job).
  """
  if os.environ.get('JAXLAB_DISTRIBUTED') == '0':
    return
  if os.environ.get('JAXLAB_DISTRIBUTED') == '1' or any(k in os.environ for k in _CLUSTER_ENV):
    if os.environ.get('JAX_PLATFORMS', '').startswith('cpu'):
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    kwargs = {}
    if 'JAX_COORDINATOR_ADDRESS' in os.environ:
      kwargs = dict(coordinator_address=os.environ['JAX_COORDINATOR_ADDRESS'],
                    num_processes=int(os.environ['JAX_NUM_PROCESSES']),
                    process_id=int(os.environ['JAX_PROCESS_ID']))
    jax.distributed.initialize(**kwargs)
    logging.info('process %d of %d, %d local / %d global devices', jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


def enable_compilation_cache(path: str | None = None) -> str:
  """A persistent XLA cache so a restart does not pay the compile again."""
  path = path or os.environ.get('JAXLAB_COMPILATION_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'jaxlab', 'xla')
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return path


def tune_malloc() -> bool:
  """glibc only: keep freed memory in one heap instead of returning it to the OS.

  XLA:CPU allocates each step's temporaries (hundreds of MB for the Transformer) on
  its own threads; glibc serves such large blocks from fresh ``mmap``s and unmaps
  them on free, so every step page-faults its whole working set back in (159k minor
  faults and ~0.3 s of kernel time per Transformer step here). One arena and no
  ``mmap`` keep the pages mapped across steps, and trimming is off (-1, not a 2 GiB
  threshold): small allocations now and then split a freed block, the heap grows by a
  step's temporaries, and a trimmed heap would shrink and regrow, faulting them all in
  again (19 times in 400 Transformer steps, 5% of the run, RSS cycling 1.2-3.5 GB;
  untrimmed, 3 times, then none, at 2.4 GB). Call before the backend starts its
  threads; the same as ``GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:
  glibc.malloc.trim_threshold=18446744073709551615`` in the environment. Returns False
  off glibc.
  """
  import ctypes
  import ctypes.util
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
  never = -1  # mallopt's "trimming off"; its int cannot say more than 2 GiB otherwise
  return all(mallopt(opt, value) == 1 for opt, value in
             ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, never)))


def unroll_cpu_threefry() -> bool:
  """Lower jax's Threefry hash on CPU as straight-line code, as on GPU and TPU: same bits, faster.

  On CPU jax lowers ``threefry2x32`` as a ``fori_loop`` over its five groups of rounds (to
  keep compile times down), so XLA:CPU writes both 32-bit words of every element out and
  reads them back five times. Unrolled, the hash is one fused loop over the elements: a
  ``[32, 128, 512]`` dropout mask takes 1.65 ms instead of 5.03, and dropout's share of the
  char-LSTM step falls from 9.6% to 3.3% (experiments/README.md). The bits are identical
  (tests/test_runtime.py), so seeds, checkpoints and resumed runs are unaffected. Applies
  to computations lowered after the call. Returns False, changing nothing, where this jax
  keeps its lowering rules elsewhere (they are internal).
  """
  from jax.extend.random import threefry2x32_p
  from jax.interpreters import mlir
  try:
    from jax._src.random import threefry2x32 as impl
    unrolled = impl._threefry2x32_lowering_rule  # jax's lowering for every other platform
  except (ImportError, AttributeError):
    return False
  mlir.register_lowering(threefry2x32_p, unrolled, platform='cpu', inline=False)
  return True
