"""Train-step benchmark: ``python -m train.benchmark --config configs/NAME.py[:ARG]
[--config.key=value ...] [--steps N] [--warmup W] [--torch] [--json]``.

Builds the model, optimizer, state and jitted sharded train step exactly as
``train.trainer`` does, feeds it synthetic batches of the dataset's shapes and
vocabulary, and reports compile time, the median step time (each step timed with
``block_until_ready``), examples/s and tokens/s, model FLOPs per step, MFU against
a matmul peak measured in the same run (and against the datasheet peak on
GPU/TPU) and the compiled step's peak memory. ``--torch`` then runs the matching
PyTorch reference (experiments/torch_reference/) eager and ``torch.compile``d, back
to back in the same process, and prints the ratios. ``--json`` adds one JSON line.

The mesh is the config's over the *local* devices: one device on a plain CPU
(run without ``--xla_force_host_platform_device_count``). Nothing is read from
disk unless ``data.dir`` is set or the dataset is an offline one; the persistent
compilation cache is never enabled, so the compile time is a real compile.
"""
from __future__ import annotations

import functools
import json
import os
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# bf16 dense peaks from the datasheets (FLOP/s), matched against ``device_kind``; first match wins.
DATASHEET_PEAK_FLOPS = (
    ('H200', 989e12), ('H100 PCIe', 756e12), ('H100', 989e12), ('A100', 312e12),
    ('TPU v4', 275e12), ('TPU v5 lite', 197e12), ('TPU v5e', 197e12), ('TPU v5p', 459e12),
    ('TPU v5', 459e12), ('TPU v6', 918e12),
)

# Datasets whose shapes are known without reading them (used when they would come from TFDS).
_IMAGES = {'mnist': ((28, 28, 1), 10), 'fashion_mnist': ((28, 28, 1), 10),
           'cifar10': ((32, 32, 3), 10), 'cifar100': ((32, 32, 3), 100)}
_CHAR_VOCAB = {'tiny_shakespeare': 65}  # distinct characters of Tiny Shakespeare's input.txt
_OFFLINE = ('digits', 'two_moons', 'synthetic_classification', 'synthetic_lm')


def datasheet_peak(device) -> float | None:
  """The bf16 datasheet peak of ``device`` in FLOP/s, or None (CPUs, unknown kinds)."""
  kind = getattr(device, 'device_kind', '')
  for name, peak in DATASHEET_PEAK_FLOPS:
    if name.lower() in kind.lower():
      return peak
  return None


def dataset_spec(config):
  """``(DatasetInfo, {key: (shape, dtype)})`` of one training record.

  Offline datasets and ``data.dir`` are read (the first record gives the shapes);
  a TFDS dataset of known shape is described without touching it.
  """
  from train.data import sources
  from train.data.base import DatasetInfo
  d = config.data
  if d.dir or d.name in _OFFLINE:
    splits = sources.load_splits(d)
    record = splits.train[0]
    return splits.info, {k: (np.shape(v), np.asarray(v).dtype) for k, v in record.items()}
  if d.name in _IMAGES:
    shape, classes = _IMAGES[d.name]
    return (DatasetInfo(num_classes=classes, input_shape=shape),
            {'inputs': (shape, np.float32), 'label': ((), np.int32)})
  if d.name in _CHAR_VOCAB:
    vocab = _CHAR_VOCAB[d.name] if d.tokenizer == 'char' else 256
    t = (d.seq_len,)
    return (DatasetInfo(vocab_size=vocab, input_shape=t, input_dtype='int32'),
            {'inputs': (t, np.int32), 'targets': (t, np.int32)})
  raise ValueError(f'benchmark: no known shapes for dataset {d.name!r}; set --config.data.dir')


def synthetic_batch(spec, info, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A random global batch with the record ``spec``'s shapes, dtypes and value ranges."""
  rng = np.random.default_rng(seed)
  out = {}
  for key, (shape, dtype) in spec.items():
    shape, dtype = (batch_size,) + tuple(shape), np.dtype(dtype)
    if key in ('inputs', 'targets') and np.issubdtype(dtype, np.integer):
      out[key] = rng.integers(0, info.vocab_size or 2, shape).astype(dtype)
    elif key == 'label':
      out[key] = rng.integers(0, info.num_classes or 2, shape).astype(dtype)
    elif dtype == np.bool_:
      out[key] = np.ones(shape, bool)
    elif key == 'weights':
      out[key] = np.ones(shape, dtype)
    else:
      out[key] = rng.standard_normal(shape).astype(dtype)
  return out


def param_count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def transformer_flops_per_token(model, params, seq_len: int) -> float:
  """nanoGPT's ``estimate_mfu`` count: ``6 N + 12 L H Q T`` per token.

  ``N`` is every parameter except the position table (and the token table when it is
  not tied to the output: then it is only a lookup); ``H`` heads of size ``Q``; ``T`` the
  sequence length. Training = forward + backward = 3x the forward's 2 FLOPs per weight.
  """
  n = param_count(params)
  embed = params.get('embed', {})
  if 'position_embeddings' in embed:
    n -= param_count(embed['position_embeddings'])
  if not getattr(model, 'tie_embeddings', True):
    n -= param_count(embed['word_embeddings'])
  head_dim = model.hidden_size // model.num_heads
  return 6 * n + 12 * model.num_layers * model.num_heads * head_dim * seq_len


def xla_flops(compiled) -> float | None:
  """FLOPs XLA's cost analysis gives the compiled program (per device), or None."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # not every backend implements it
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = (cost or {}).get('flops')
  return float(flops) if flops and flops > 0 else None


def sub_jaxprs(params):
  """The jaxprs inside one equation's params (a scan's body, cond's branches, a pjit's callee)."""
  for v in params.values():
    for x in (v if isinstance(v, (list, tuple)) else (v,)):
      if hasattr(x, 'eqns'):
        yield x
      elif hasattr(x, 'jaxpr') and hasattr(x.jaxpr, 'eqns'):
        yield x.jaxpr


def jaxpr_matmul_flops(jaxpr) -> tuple[float, bool]:
  """``(FLOPs of every dot and convolution, has_loops)``; a scan body counts ``length`` times.

  XLA's cost analysis counts a while loop's body once, so for recurrent models
  (``nn.RNN`` is a scan) this count, 2 per multiply-add, is the model-FLOP figure.
  """
  total, loops = 0.0, False
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'dot_general':
      (lc, _), (lb, _) = eqn.params['dimension_numbers']
      lhs, out = eqn.invars[0].aval.shape, eqn.outvars[0].aval.shape
      total += 2.0 * np.prod(out, dtype=np.float64) * np.prod([lhs[d] for d in lc], dtype=np.float64)
    elif name == 'conv_general_dilated':
      rhs, out = eqn.invars[1].aval.shape, eqn.outvars[0].aval.shape
      spec = eqn.params['dimension_numbers'].rhs_spec  # (out features, in features, spatial...)
      kernel = np.prod([rhs[d] for d in spec[1:]], dtype=np.float64)
      # A strided convolution's input gradient is a convolution over the cotangent dilated
      # with zeros (lhs_dilation): only one tap in prod(dilation) meets a real value.
      kernel /= np.prod(eqn.params.get('lhs_dilation') or (1,), dtype=np.float64)
      total += 2.0 * np.prod(out, dtype=np.float64) * kernel
    times = eqn.params['length'] if name == 'scan' else 1
    loops |= name in ('scan', 'while')
    subs = [jaxpr_matmul_flops(j) for j in sub_jaxprs(eqn.params)]
    if subs:
      # cond runs one branch: count the costliest; anything else runs its sub-programs.
      f = max(f for f, _ in subs) if name == 'cond' else sum(f for f, _ in subs)
      total, loops = total + times * f, loops or any(l for _, l in subs)
  return total, loops


def peak_memory_bytes(compiled) -> int | None:
  """Arguments + outputs (less donated aliases) + temporaries, from XLA's memory analysis."""
  try:
    m = compiled.memory_analysis()
  except Exception:
    return None
  if m is None:
    return None
  get = lambda f: int(getattr(m, f, 0) or 0)
  return (get('argument_size_in_bytes') + get('output_size_in_bytes')
          - get('alias_size_in_bytes') + get('temp_size_in_bytes'))


def matmul_call(dtype='float32', n: int = 2048, device=None, compiler_options=None):
  """A function of no arguments that runs one ``n x n`` matmul in ``dtype`` on ``device``
  (random operands, compiled with ``compiler_options``, warm) and returns its result."""
  device = device or jax.local_devices()[0]
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.device_put(jax.random.normal(key_a, (n, n), jnp.dtype(dtype)), device)
  b = jax.device_put(jax.random.normal(key_b, (n, n), jnp.dtype(dtype)), device)
  matmul = jnp.matmul
  if device.platform == 'cpu' and jnp.dtype(dtype).itemsize == 2:
    # XLA:CPU runs a 16-bit matmul in its 16-bit kernels only when the product is float32,
    # which is how the models run theirs (models/linear.py); bf16 -> bf16 is a float32 dot.
    matmul = functools.partial(jnp.matmul, preferred_element_type=jnp.float32)
  mm = jax.jit(matmul).lower(a, b).compile(compiler_options=compiler_options)
  mm(a, b).block_until_ready()
  return lambda: mm(a, b)


def matmul_timer(dtype='float32', n: int = 2048, device=None):
  """A function that times one jitted ``n x n`` matmul in ``dtype`` (seconds), compiled and warm.

  Each timing is preceded by one untimed call: on an H100 the first matmul after a train step
  ran at about half speed (371 against 679 TFLOP/s, experiments/gpu_probe.py), which made
  the measured peak, and so MFU, wrong by 2x.
  """
  call = matmul_call(dtype, n, device)

  def once() -> float:
    call().block_until_ready()
    t0 = time.perf_counter()
    call().block_until_ready()
    return time.perf_counter() - t0
  return once


def measure_matmul_peak(dtype='float32', n: int = 2048, reps: int = 10, device=None) -> float:
  """FLOP/s of a jitted ``n x n`` matmul in ``dtype`` on ``device``: the median of ``reps``."""
  once = matmul_timer(dtype, n, device)
  return 2 * n ** 3 / statistics.median([once() for _ in range(reps)])


def interleaved_medians(runs: dict, reps: int = 20) -> dict[str, float]:
  """``{name: median seconds}`` of ``reps`` calls of each of ``runs`` (name -> function of no
  arguments), after one warm-up call each. The calls are interleaved round by round, so a
  neighbour's load on a shared machine hits every candidate alike."""
  for fn in runs.values():
    jax.block_until_ready(fn())
  times = {name: [] for name in runs}
  for _ in range(reps):
    for name, fn in runs.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - t0)
  return {name: statistics.median(ts) for name, ts in times.items()}


def _usage():
  """(minor page faults, system CPU seconds) of this process so far, or None off Unix."""
  try:
    import resource
  except ImportError:
    return None
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_minflt, r.ru_stime


def time_steps(step, state, batch, rng, steps: int, warmup: int):
  """Runs ``warmup`` then ``steps`` steps; returns (state, per-step seconds)."""
  for _ in range(warmup):
    state, metrics = step(state, batch, rng)
    jax.block_until_ready((state, metrics))
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = step(state, batch, rng)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
  return state, times


def time_pipelined(step, state, batch, rng, steps: int):
  """Runs ``steps`` steps back to back with one wait at the end, as the trainer runs them;
  returns (state, seconds per step). On an accelerator the host then queues the next step
  while the device runs this one, so launch overhead hides behind device work; the
  one-at-a-time times of :func:`time_steps` include it."""
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch, rng)
  jax.block_until_ready((state, metrics))
  return state, (time.perf_counter() - t0) / max(steps, 1)


def build(config, devices=None, compiler_options=None):
  """Model, optimizer, sharded state, compiled train step and a device batch, as the trainer builds them.

  ``compiler_options`` (XLA debug options, e.g. ``{'xla_cpu_enable_fast_math': True}``)
  apply to this compile only, so variants can be compared in one process.

  Returns a dict with ``model``, ``state``, ``compiled``, ``batch`` (on devices),
  ``host_batch`` (numpy), ``rng``, ``info``, ``compile_time_s`` and ``mesh``.
  """
  from train import compile_options, loss_scale, optim, steps, tasks, trainer
  from train import sharding as sharding_lib
  from train.state import make_init_fn
  devices = list(devices or jax.local_devices())
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  shards = sharding_lib.data_parallel_size(mesh)
  if config.batch_size % shards:
    raise ValueError(f'batch_size {config.batch_size} is not divisible by the {shards} batch shards')
  info, spec = dataset_spec(config)
  host_batch = synthetic_batch(spec, info, config.batch_size, config.seed)
  model = trainer.build_model(config, info)
  num_steps = config.num_train_steps if config.num_train_steps > 0 else 10_000
  tx, schedule = optim.create_optimizer(config, num_steps)
  task_fn = tasks.get(config.task, config)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  init_fn = make_init_fn(model, tx, {k: v[:1] for k, v in host_batch.items()},
                         loss_scale.from_config(config),  # float16: dynamic loss scaling
                         ema_decay=config.get('ema_decay', 0.0))
  abstract_state = jax.eval_shape(init_fn, init_rng)
  state_shardings = sharding_lib.tree_shardings(abstract_state, mesh, config.partition_rules)
  state = jax.jit(init_fn, out_shardings=state_shardings)(init_rng)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  step_fn = steps.make_train_step(model, task_fn, label_smoothing=config.label_smoothing,
                                  grad_accum_steps=config.grad_accum_steps, schedule=schedule,
                                  adversarial_epsilon=config.get('adversarial_epsilon', 0.0))
  train_step = jax.jit(
      step_fn, in_shardings=(state_shardings, batch_sharding, sharding_lib.replicated(mesh)),
      out_shardings=(state_shardings, sharding_lib.replicated(mesh)), donate_argnums=0)
  batch = sharding_lib.shard_batch(host_batch, batch_sharding)
  t0 = time.perf_counter()
  # As the trainer compiles it (train/compile_options.py), plus the caller's options.
  conv = compile_options.has_convolutions(abstract_state.params)
  options = {**(compile_options.step_options(config, devices[0].platform, conv) or {}),
             **(compiler_options or {})} or None
  compiled = train_step.lower(state, batch, step_rng).compile(compiler_options=options)
  compile_time = time.perf_counter() - t0
  return dict(model=model, state=state, compiled=compiled, batch=batch, host_batch=host_batch,
              rng=step_rng, info=info, compile_time_s=compile_time, mesh=mesh, step_fn=step_fn)


def is_sequence_model(host_batch) -> bool:
  x = host_batch['inputs']
  return x.ndim == 2 and np.issubdtype(x.dtype, np.integer)


def run(config, steps: int = 20, warmup: int = 3, matmul_size: int = 2048,
        devices=None, rounds: int = 8, matmul_reps: int = 2) -> dict[str, Any]:
  """Benchmarks the config's train step; returns the figures (the JSON line's fields).

  The ``steps`` timed steps come in ``rounds``, each followed by ``matmul_reps``
  timings of the peak matmul; step time and peak are medians over the whole run.
  """
  from models.transformer import TransformerLM
  b = build(config, devices)
  model, compiled, host_batch = b['model'], b['compiled'], b['host_batch']
  params = b['state'].params
  batch_size = config.batch_size
  seq_len = host_batch['inputs'].shape[1] if is_sequence_model(host_batch) else None
  num_devices = b['mesh'].devices.size
  # FLOPs first: the timed steps donate (delete) this state.
  if isinstance(model, TransformerLM):
    flops = transformer_flops_per_token(model, params, seq_len) * batch_size * seq_len
    flops_source = 'nanogpt_6N_plus_attention'
  else:  # XLA counts one device's program; the step runs on every device
    per_device = xla_flops(compiled)
    flops = per_device * num_devices if per_device else None
    flops_source = 'xla_cost_analysis'
    jaxpr = jax.make_jaxpr(b['step_fn'])(b['state'], b['batch'], b['rng'])
    counted, loops = jaxpr_matmul_flops(jaxpr.jaxpr)
    # XLA counts each loop body once; on GPUs its count leaves out the library calls
    # (cuDNN convolutions, cuBLAS GEMMs): an H100 gave ResNet-18's step 2.9 GFLOP.
    if loops or not flops or jax.default_backend() == 'gpu':
      flops, flops_source = counted, 'jaxpr_dot_conv_count'
  num_params = param_count(params)
  # Steps and the matmul peak alternate round by round, so a neighbour's load on a
  # shared machine weighs on both alike and MFU stays a same-conditions ratio.
  once = matmul_timer(config.dtype, matmul_size, b['mesh'].devices.flat[0])
  state, _ = time_steps(compiled, b['state'], b['batch'], b['rng'], 0, warmup)
  times, matmuls = [], []
  usage0 = _usage()
  for r in range(rounds):
    n = steps // rounds + (r < steps % rounds)
    state, t = time_steps(compiled, state, b['batch'], b['rng'], n, 0)
    times += t
    matmuls += [once() for _ in range(matmul_reps)]
  usage1 = _usage()
  # All the steps in one queue: a round's two or three would mostly measure filling the queue.
  state, pipelined_s = time_pipelined(compiled, state, b['batch'], b['rng'], steps)
  step_s = statistics.median(times)
  # The peak of the whole mesh: one device's measured matmul times the devices, except
  # on CPU, where every device of a process shares one thread pool (the whole machine).
  per_device_peak = 2 * matmul_size ** 3 / statistics.median(matmuls)
  matmul_peak = per_device_peak * (1 if jax.default_backend() == 'cpu' else num_devices)
  achieved = flops / step_s if flops else None
  device = jax.local_devices()[0]
  sheet = datasheet_peak(device)
  return {
      'config': config.get('_name', None),
      'model': config.model.name,
      'backend': jax.default_backend(),
      'device_kind': device.device_kind,
      'num_devices': num_devices,
      'dtype': config.dtype,
      'batch_size': batch_size,
      'seq_len': seq_len,
      'num_params': num_params,
      'steps': steps,
      'warmup': warmup,
      'rounds': rounds,
      'compile_time_s': b['compile_time_s'],
      'step_time_ms': step_s * 1e3,
      'step_time_ms_min': min(times) * 1e3,
      'step_time_ms_max': max(times) * 1e3,
      'examples_per_sec': batch_size / step_s,
      'tokens_per_sec': batch_size * seq_len / step_s if seq_len else None,
      # ``steps`` steps queued back to back (the trainer's way), their mean.
      'pipelined_step_time_ms': pipelined_s * 1e3,
      'pipelined_tokens_per_sec': batch_size * seq_len / pipelined_s if seq_len else None,
      'pipelined_mfu': flops / pipelined_s / matmul_peak if flops else None,
      'flops_per_step': flops,
      'flops_source': flops_source,
      'achieved_flops_per_sec': achieved,
      'matmul_peak_flops': matmul_peak,
      'matmul_size': matmul_size,
      'mfu': achieved / matmul_peak if achieved else None,
      'datasheet_peak_flops': sheet * num_devices if sheet else None,
      'mfu_datasheet': achieved / (sheet * num_devices) if achieved and sheet else None,
      'pipelined_mfu_datasheet': flops / pipelined_s / (sheet * num_devices) if flops and sheet else None,
      'peak_memory_bytes': peak_memory_bytes(compiled),
      # Kernel work per step (page faults: see tune_malloc); includes the peak matmuls.
      'minor_faults_per_step': (usage1[0] - usage0[0]) / max(steps, 1) if usage0 else None,
      'system_s_per_step': (usage1[1] - usage0[1]) / max(steps, 1) if usage0 else None,
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      '_model': model, '_host_batch': host_batch,
  }


def parse_variant(spec: str) -> tuple[str, dict, dict]:
  """``'NAME:key=value,key=value'`` -> (name, config overrides, XLA compiler options).

  Keys starting with ``xla_`` are XLA options for this compile (``xla_cpu_enable_fast_math=true``);
  the rest are dotted config keys (``dtype=bfloat16``, ``model.hidden_size=512``). Values
  are Python literals where they parse as one (``64``, ``true``, ``(1, 2)``), else strings.
  A value may hold commas where the text after each is no ``key=`` (``xla_a=X,Y,b=1`` is
  ``xla_a='X,Y'`` and ``b=1``), as XLA's list-valued options need.
  """
  import ast
  import re
  name, _, body = spec.partition(':')
  overrides, options = {}, {}
  for item in filter(None, re.split(r',(?=[\w.]+=)', body)):
    key, eq, text = item.partition('=')
    if not eq:
      raise ValueError(f'variant {name!r}: {item!r} is not key=value')
    lowered = {'true': 'True', 'false': 'False'}.get(text.lower(), text)
    try:
      value = ast.literal_eval(lowered)
    except (ValueError, SyntaxError):
      value = text
    (options if key.startswith('xla_') else overrides)[key.strip()] = value
  return name, overrides, options


def with_overrides(config, overrides: dict):
  """A copy of ``config`` with dotted ``overrides`` applied (type-checked by ConfigDict)."""
  c = config.copy_and_resolve_references()
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    if isinstance(node.get(leaf), float) and isinstance(value, int):
      value = float(value)
    node[leaf] = value
  return c


def compare(config, variants: list[str], steps: int = 20, warmup: int = 3,
            rounds: int = 4, devices=None, pipelined: bool | None = None) -> list[dict]:
  """Times the config and each variant in the same process, interleaved round by round.

  On a shared machine a neighbour's load then hits every variant alike; each
  variant's figure is the median over all its timed steps. Returns one row per
  variant (the config itself first, named ``base``) with ``speed`` = its examples/s
  over the base's.

  ``pipelined`` (default: on accelerators, where a synced step carries the host's launch
  time) also queues ``steps`` steps in each round (:func:`time_pipelined`; all of them, since
  a short queue mostly measures filling it) and adds ``pipelined_step_time_ms`` (median over
  rounds) and ``pipelined_speed``.
  """
  specs = [('base', {}, {})] + [parse_variant(v) for v in variants]
  built, failed = [], []
  for name, overrides, options in specs:
    c = with_overrides(config, overrides)
    try:
      b = build(c, devices, compiler_options=options or None)
    except Exception as e:  # e.g. an XLA option this jaxlib does not know: report, go on
      if name == 'base':
        raise
      failed.append(dict(name=name, error=str(e).splitlines()[0][:200]))
      continue
    state, _ = time_steps(b['compiled'], b['state'], b['batch'], b['rng'], 0, warmup)
    built.append(dict(name=name, b=b, state=state, batch_size=c.batch_size, times=[],
                      queued=[], compile_time_s=b['compile_time_s']))
  if pipelined is None:
    pipelined = built[0]['b']['mesh'].devices.flat[0].platform != 'cpu'
  per_round = max(1, steps // rounds)
  for r in range(rounds):
    order = built[r % len(built):] + built[:r % len(built)]  # rotate who goes first
    for v in order:
      b = v['b']
      v['state'], times = time_steps(b['compiled'], v['state'], b['batch'], b['rng'], per_round, 0)
      v['times'] += times
      if pipelined:
        v['state'], t = time_pipelined(b['compiled'], v['state'], b['batch'], b['rng'], steps)
        v['queued'].append(t)
  rows = []
  for v in built:
    ms = statistics.median(v['times']) * 1e3
    fastest = min(v['times']) * 1e3
    rows.append(dict(name=v['name'], step_time_ms=ms, step_time_ms_min=fastest,
                     examples_per_sec=v['batch_size'] / ms * 1e3,
                     examples_per_sec_best=v['batch_size'] / fastest * 1e3,
                     compile_time_s=v['compile_time_s'], steps=len(v['times'])))
    if v['queued']:
      rows[-1]['pipelined_step_time_ms'] = statistics.median(v['queued']) * 1e3
  for row in rows:  # the best step is the least disturbed by neighbours: a second opinion
    row['speed'] = row['examples_per_sec'] / rows[0]['examples_per_sec']
    row['speed_best'] = row['examples_per_sec_best'] / rows[0]['examples_per_sec_best']
    if 'pipelined_step_time_ms' in row:
      row['pipelined_speed'] = rows[0]['pipelined_step_time_ms'] / row['pipelined_step_time_ms']
  return rows + failed


def torch_reference_name(model) -> str | None:
  """The experiments/torch_reference model matching a built Flax module, or None."""
  from models import CNN, MLP, RNNLM, ResNet, TransformerLM
  if isinstance(model, ResNet):
    return 'resnet'
  if isinstance(model, TransformerLM):
    return 'transformer_lm'
  if isinstance(model, RNNLM) and model.cell == 'lstm':
    return 'lstm_lm'
  if isinstance(model, CNN):
    return 'cnn'
  if isinstance(model, MLP):
    return 'mlp'
  return None


def run_torch(config, result: dict, steps: int, warmup: int,
              threads: tuple[int, ...] = (0, 1)) -> dict[str, Any]:
  """The matching PyTorch reference, eager and compiled, on the same batch; ratios jaxlab/PyTorch.

  Each mode runs under every ``threads`` setting (``torch.set_num_threads``; 0 is
  PyTorch's default, one thread per core) and the ratio is against the fastest: on a
  shared, oversubscribed machine PyTorch's OpenMP barriers can make 2 threads far
  slower than 1, and the comparison should not profit from that.
  """
  try:
    import torch  # noqa: F401  (lazy: never a dependency of the package)
  except ImportError:
    return {'torch_error': 'PyTorch is not installed; pip install torch to compare (--torch)'}
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if repo not in sys.path:
    sys.path.insert(0, repo)
  from experiments import torch_reference
  model = result['_model']
  name = torch_reference_name(model)
  if name is None:
    return {'torch_error': f'no PyTorch reference for {type(model).__name__}'}
  # On a GPU backend the reference runs on CUDA in the config's dtype (autocast), as
  # nanoGPT does; thread counts only matter on the CPU.
  device = 'cuda' if jax.default_backend() == 'gpu' and torch.cuda.is_available() else 'cpu'
  if device == 'cuda':
    threads = (0,)
  default_threads = torch.get_num_threads()
  out: dict[str, Any] = {'torch_model': name, 'torch_version': torch.__version__,
                         'torch_device': device}
  for mode in ('eager', 'compile'):
    runs = {}
    for n in threads:
      n = n or default_threads
      if n in runs:
        continue
      torch.set_num_threads(n)
      if mode == 'compile':
        torch._dynamo.reset()  # compile afresh for this thread count
      runs[n] = torch_reference.benchmark(
          name, torch_reference.hparams_of(model), result['_host_batch'], config.optimizer,
          config.learning_rate, steps=steps, warmup=warmup, compile=mode == 'compile',
          device=device, dtype=config.dtype)
    out[f'torch_{mode}_by_threads'] = {str(n): r['step_time_ms'] for n, r in runs.items()}
    ok = {n: r for n, r in runs.items() if r['step_time_ms']}
    errors = [r['error'] for r in runs.values() if r['error']]
    if errors:
      out[f'torch_{mode}_error'] = errors[0]
    best = min(ok, key=lambda n: ok[n]['step_time_ms']) if ok else None
    t = ok[best]['step_time_ms'] if ok else None
    out[f'torch_{mode}_step_time_ms'] = t
    out[f'torch_{mode}_threads'] = best
    out[f'torch_{mode}_compile_time_s'] = ok[best]['compile_time_s'] if ok else None
    # Speed ratio: > 1 means jaxlab is faster.
    out[f'speedup_vs_torch_{mode}'] = t / result['step_time_ms'] if t else None
    tp = ok[best]['pipelined_step_time_ms'] if ok else None
    out[f'torch_{mode}_pipelined_step_time_ms'] = tp
    out[f'speedup_vs_torch_{mode}_pipelined'] = (
        tp / result['pipelined_step_time_ms'] if tp and result.get('pipelined_step_time_ms') else None)
  torch.set_num_threads(default_threads)
  out['torch_matmul_peak_flops'] = torch_reference.matmul_peak(
      result['matmul_size'], dtype=getattr(torch, config.dtype), device=device)
  return out


def _fmt(v, unit='', scale=1.0, digits=1):
  return 'n/a' if v is None else f'{v / scale:,.{digits}f}{unit}'


def report(r: dict) -> str:
  """Human-readable lines of a :func:`run` result."""
  lines = [
      f"{r['model']} on {r['num_devices']} x {r['device_kind']} ({r['backend']}), dtype {r['dtype']}, "
      f"batch {r['batch_size']}" + (f" x {r['seq_len']} tokens" if r['seq_len'] else '')
      + f", {r['num_params']:,} parameters",
      f"compile        {r['compile_time_s']:.2f} s",
      f"step           {r['step_time_ms']:.2f} ms median of {r['steps']} "
      f"(min {r['step_time_ms_min']:.2f}, max {r['step_time_ms_max']:.2f}) after {r['warmup']} warm-up",
      f"throughput     {_fmt(r['examples_per_sec'], ' examples/s')}"
      + (f", {_fmt(r['tokens_per_sec'], ' tokens/s')}" if r['tokens_per_sec'] else ''),
      f"pipelined      {r['pipelined_step_time_ms']:.2f} ms/step with steps queued back to back"
      + (f", {_fmt(r['pipelined_tokens_per_sec'], ' tokens/s')}" if r['pipelined_tokens_per_sec'] else '')
      + (f"; MFU {_fmt(100 * r['pipelined_mfu'], '%')}" if r['pipelined_mfu'] else '')
      + (f" ({_fmt(100 * r['pipelined_mfu_datasheet'], '%')} of the datasheet)"
         if r['pipelined_mfu_datasheet'] else ''),
      f"model FLOPs    {_fmt(r['flops_per_step'], ' GFLOP/step', 1e9, 3)} ({r['flops_source']}); "
      f"achieved {_fmt(r['achieved_flops_per_sec'], ' GFLOP/s', 1e9)}",
      f"matmul peak    {_fmt(r['matmul_peak_flops'], ' GFLOP/s', 1e9)} "
      f"({r['matmul_size']}^2 {r['dtype']}, measured now); MFU {_fmt(r['mfu'] and 100 * r['mfu'], '%')}",
  ]
  if r['datasheet_peak_flops']:
    lines.append(f"datasheet      {_fmt(r['datasheet_peak_flops'], ' TFLOP/s', 1e12)} bf16; "
                 f"MFU {_fmt(r['mfu_datasheet'] and 100 * r['mfu_datasheet'], '%')}")
  lines.append(f"peak memory    {_fmt(r['peak_memory_bytes'], ' MiB', 2 ** 20)} per device; "
               f"{_fmt(r['minor_faults_per_step'], '', 1, 0)} page faults and "
               f"{_fmt(r['system_s_per_step'] and 1e3 * r['system_s_per_step'], ' ms')} kernel time per step"
               + (' (malloc tuned)' if r.get('malloc_tuned') else ''))
  if 'torch_model' in r or 'torch_error' in r:
    if r.get('torch_error'):
      lines.append(f"torch          {r['torch_error']}")
    else:
      for mode in ('eager', 'compile'):
        err = r.get(f'torch_{mode}_error')
        t = r.get(f'torch_{mode}_step_time_ms')
        by = ', '.join(f'{n} thread(s) {_fmt(v, " ms")}' for n, v in r[f'torch_{mode}_by_threads'].items())
        lines.append(f"torch {mode:8s} " + (f'failed: {err}' if t is None else
                     f"{t:.2f} ms/step ({by}); jaxlab/PyTorch speed {r[f'speedup_vs_torch_{mode}']:.2f}x"
                     + (f"; pipelined {r[f'torch_{mode}_pipelined_step_time_ms']:.2f} ms/step, "
                        f"speed {r[f'speedup_vs_torch_{mode}_pipelined']:.2f}x"
                        if r.get(f'speedup_vs_torch_{mode}_pipelined') else '')))
      lines.append(f"torch matmul   {_fmt(r['torch_matmul_peak_flops'], ' GFLOP/s', 1e9)} ({r['dtype']})")
  return '\n'.join(lines)


def _define_flags(argv):
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FlagValues()
  # ``sys_argv``: the overrides to define are the ones in ``argv`` (an in-process call's too).
  config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/mnist_cnn.py.',
                                  lock_config=True, flag_values=fv, sys_argv=list(argv))
  flags.DEFINE_integer('steps', 20, 'Timed steps (the median is reported).', flag_values=fv)
  flags.DEFINE_integer('warmup', 3, 'Untimed steps after the compile.', flag_values=fv)
  flags.DEFINE_integer('matmul_size', 2048, 'Side of the square matmul that measures the peak.',
                       flag_values=fv)
  flags.DEFINE_bool('torch', False, 'Also run the PyTorch reference (eager and torch.compile).',
                    flag_values=fv)
  flags.DEFINE_multi_string('variant', [], "Compare with 'NAME:key=value,...' (config keys or "
                            "xla_* compiler options), interleaved in this process.", flag_values=fv)
  flags.DEFINE_integer('rounds', 8, 'Rounds that interleave the timed steps with the matmul peak '
                       '(or with the --variant programs).', flag_values=fv)
  flags.DEFINE_list('torch_threads', ['0', '1'], 'torch.set_num_threads settings to try with '
                    '--torch (0: its default); ratios are against the fastest.', flag_values=fv)
  flags.DEFINE_bool('tune_malloc', True, 'glibc: one malloc arena and no mmap, so XLA:CPU '
                    'temporaries are not page-faulted in again every step (see tune_malloc); '
                    'the trainer does this too unless JAXLAB_TUNE_MALLOC=0.',
                    flag_values=fv)
  flags.DEFINE_bool('unroll_threefry', True, 'CPU: lower the random-bit hash unrolled, as on '
                    'GPU and TPU (same bits, faster dropout; see runtime.unroll_cpu_threefry); '
                    'the trainer does this too unless JAXLAB_UNROLL_THREEFRY=0.',
                    flag_values=fv)
  flags.DEFINE_bool('json', False, 'Print one JSON line with every figure at the end.',
                    flag_values=fv)
  flags.DEFINE_string('trace_dir', None, 'Also write a profiler trace of a few train steps here '
                      'and, with xprof installed, list the ops that take the most time '
                      '(train/op_profile.py).', flag_values=fv)
  flags.DEFINE_integer('trace_steps', 3, 'Steps traced with --trace_dir.', flag_values=fv)
  return fv


def parse_flags(fv, argv):
  """Parses ``argv`` into the flag set ``fv``; its ``config``, or None after one ``error:`` line.

  Shared by the benchmark commands (experiments/bench_*.py) so bad flags read alike.
  """
  from absl import flags
  try:
    fv(argv)
    config = fv.config
    if config is None:
      raise flags.Error('--config is required, e.g. --config configs/mnist_cnn.py')
    config.keys()
  except Exception as e:
    print(f'error: {str(e).splitlines()[0] if str(e) else type(e).__name__}', file=sys.stderr)
    return None
  if not flags.FLAGS.is_parsed():  # libraries (grain) read absl's global flags
    flags.FLAGS.mark_as_parsed()
  return config


def main(argv=None) -> int:
  argv = list(sys.argv if argv is None else argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  fv = _define_flags(argv)
  config = parse_flags(fv, argv)
  if config is None:
    return 2
  from train.runtime import tune_malloc, unroll_cpu_threefry
  malloc_tuned = tune_malloc() if fv.tune_malloc else False  # before the backend's threads start
  threefry_unrolled = unroll_cpu_threefry() if fv.unroll_threefry else False
  from train import validate
  try:
    validate.check_config(config)
    if fv.variant:
      rows = compare(config, fv.variant, fv.steps, fv.warmup, fv.rounds)
    else:
      result = run(config, steps=fv.steps, warmup=fv.warmup, matmul_size=fv.matmul_size,
                   rounds=fv.rounds)
  except (validate.ConfigError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if fv.variant:
    for row in rows:
      if 'error' in row:
        print(f"{row['name']:24s} failed: {row['error']}", flush=True)
        continue
      print(f"{row['name']:24s} {row['step_time_ms']:10.2f} ms/step {row['examples_per_sec']:10.1f} "
            f"examples/s  speed {row['speed']:.3f}x (best-step {row['speed_best']:.3f}x)  "
            + (f"pipelined {row['pipelined_step_time_ms']:.2f} ms/step, speed "
               f"{row['pipelined_speed']:.3f}x  " if 'pipelined_speed' in row else '')
            + f"(compile {row['compile_time_s']:.1f} s, {row['steps']} steps)", flush=True)
    if fv.json:
      print(json.dumps({'config': argv_config(argv), 'variants': rows}), flush=True)
    return 0
  result['config'] = argv_config(argv)
  result['malloc_tuned'] = malloc_tuned
  result['threefry_unrolled'] = threefry_unrolled
  if fv.torch:
    result.update(run_torch(config, result, fv.steps, fv.warmup,
                            tuple(int(n) for n in fv.torch_threads)))
  print(report(result), flush=True)
  if fv.trace_dir:
    print(trace_report(config, fv.trace_dir, fv.trace_steps), flush=True)
  if fv.json:
    print(json_line(result), flush=True)
  return 0


def trace_report(config, trace_dir: str, steps: int) -> str:
  """Traces ``steps`` train steps into ``trace_dir`` (a compile of their own, with per-op
  events on CPU) and lists the costliest ops when xprof is installed."""
  from train import op_profile
  built = build(config, compiler_options=op_profile.compiler_options() or None)
  path = op_profile.trace_steps(built, trace_dir, steps)
  head = f'trace          {path} ({steps} steps; open it in TensorBoard\'s profile plugin or xprof)'
  hlo = built['compiled'].as_text()
  try:
    events = op_profile.trace_events(path)
  except ImportError as e:
    return f'{head}\n               {e}'
  text = f'{head}\n{op_profile.format_ops(op_profile.top_ops(path, hlo, steps, events=events))}'
  idle = op_profile.untraced_ms(events, hlo, steps)
  if idle is not None:
    text += (f'\n{idle:9.2f}  (no op event)             in the step, between op events: Eigen dots '
             'and convolutions, whose events end at launch')
  return text


def json_line(result: dict) -> str:
  """The result as one JSON line (internal ``_`` fields left out)."""
  return json.dumps({k: v for k, v in result.items() if not k.startswith('_')})


def argv_config(argv) -> str | None:
  """The ``--config`` argument as given (file and ``:ARG``), for the JSON line."""
  for i, a in enumerate(argv):
    if a.startswith('--config='):
      return a.split('=', 1)[1]
    if a == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


if __name__ == '__main__':
  sys.exit(main())
