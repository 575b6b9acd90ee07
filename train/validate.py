"""Checks a config before anything is compiled; each problem is one line."""
from __future__ import annotations

import math

import jax

import models
from models.transformer import REMAT
from train import loss_scale, optim, sharding, tasks
from train.data import sources

DTYPES = ('float32', 'bfloat16', 'float16')  # float16 with dynamic loss scaling
TOKENIZERS = ('char', 'byte', 'word', 'wordpiece')


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field."""


def _need(cond: bool, message: str) -> None:
  if not cond:
    raise ConfigError(message)


def _check_loss_scale(c) -> None:
  """``loss_scale.*``: only with float16, and values a dynamic scale can run with."""
  ls = c.get('loss_scale')
  if ls is None:
    return
  given = sorted(k for k, v in ls.items() if v is not None)
  _need(not given or c.dtype == 'float16',
        f'{", ".join("loss_scale." + k for k in given)}: only used with dtype=float16 '
        f'(dynamic loss scaling), but dtype is {c.dtype!r}')
  s = loss_scale.settings(c)
  _need(math.isfinite(s['initial']) and 0 < s['initial'] <= 2.0 ** 100,
        f'loss_scale.initial must be in (0, 2**100], got {s["initial"]}')
  _need(s['period'] >= 1, f'loss_scale.period must be >= 1, got {s["period"]}')
  _need(s['factor'] >= 1, f'loss_scale.factor must be >= 1 (1: a static scale), got {s["factor"]}')
  _need(0 < s['min'] <= s['initial'],
        f'loss_scale.min must be in (0, loss_scale.initial={s["initial"]}], got {s["min"]}')


def _check_xla_options(text: str) -> None:
  """Syntax here; names and values are what XLA accepts (its own words name the option)."""
  from train import compile_options
  try:
    options = compile_options.parse_xla_options(text)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  problem = options and compile_options.rejection(options)
  _need(not problem, f'xla_options: {problem}')


def check_config(config) -> None:
  c = config
  _need(c.batch_size > 0, f'batch_size must be positive, got {c.batch_size}')
  _need(c.learning_rate > 0, f'learning_rate must be positive, got {c.learning_rate}')
  _need(c.num_train_steps > 0 or c.num_epochs > 0,
        'set num_train_steps > 0 or num_epochs > 0 (both are not positive)')
  _need(c.log_every_steps > 0, f'log_every_steps must be positive, got {c.log_every_steps}')
  _need(c.eval_every_steps >= 0, f'eval_every_steps must be >= 0, got {c.eval_every_steps}')
  _need(c.checkpoint_every_steps >= 0,
        f'checkpoint_every_steps must be >= 0, got {c.checkpoint_every_steps}')
  _need(c.keep_checkpoints >= 1, f'keep_checkpoints must be >= 1, got {c.keep_checkpoints}')
  _need(c.eval_batch_size >= 0, f'eval_batch_size must be >= 0, got {c.eval_batch_size}')
  _need(0 <= c.label_smoothing < 1, f'label_smoothing must be in [0, 1), got {c.label_smoothing}')
  if c.get('one_pass_loss'):
    _need(c.task in ('lm', 'mlm'), f'one_pass_loss: only for task lm or mlm, got {c.task!r}')
    _need(not c.label_smoothing, 'one_pass_loss: not with label_smoothing > 0 (it computes '
          'the plain cross-entropy)')
  _need(c.get('adversarial_epsilon', 0.0) >= 0,
        f"adversarial_epsilon must be >= 0 (0: off), got {c.get('adversarial_epsilon')}")
  ema = c.get('ema_decay', 0.0)
  _need(0 <= ema < 1, f'ema_decay must be in [0, 1) (0: off), got {ema}')
  _need(ema == 0 or c.get('prune') is None or c.prune.target_sparsity == 0,
        'ema_decay with prune.target_sparsity: the average of pruned weights is not sparse; '
        'use one or the other')
  _need(c.task in tasks.TASKS, f'unknown task {c.task!r}; known: {", ".join(tasks.TASKS)}')
  _need(c.optimizer.name in optim.OPTIMIZERS,
        f'unknown optimizer.name {c.optimizer.name!r}; known: {", ".join(optim.OPTIMIZERS)}')
  _need(c.schedule.name in optim.SCHEDULES,
        f'unknown schedule.name {c.schedule.name!r}; known: {", ".join(optim.SCHEDULES)}')
  _need(c.schedule.warmup_steps >= 0, 'schedule.warmup_steps must be >= 0')
  _need(c.optimizer.weight_decay >= 0, 'optimizer.weight_decay must be >= 0')
  _need(c.optimizer.grad_clip_norm >= 0, 'optimizer.grad_clip_norm must be >= 0')
  _need(c.dtype in DTYPES, f'dtype must be one of {DTYPES}, got {c.dtype!r}')
  _need(c.remat in REMAT, f'remat must be one of {REMAT}, got {c.remat!r}')
  _need(c.parallelism in ('jit', 'pmap'), f"parallelism must be 'jit' or 'pmap', got {c.parallelism!r}")
  _need(c.on_nonfinite in ('stop', 'skip'), f"on_nonfinite must be 'stop' or 'skip', got {c.on_nonfinite!r}")
  _need(c.grad_accum_steps >= 1, f'grad_accum_steps must be >= 1, got {c.grad_accum_steps}')
  _check_loss_scale(c)
  _check_xla_options(c.get('xla_options', ''))
  for key in ('b1', 'b2', 'momentum'):
    v = c.optimizer[key]
    _need(0 <= v < 1, f'optimizer.{key} must be in [0, 1), got {v}')
  _need(c.optimizer.eps > 0, f'optimizer.eps must be positive, got {c.optimizer.eps}')
  _need(c.schedule.end_factor >= 0, f'schedule.end_factor must be >= 0, got {c.schedule.end_factor}')
  d = c.data
  _need(d.tokenizer in TOKENIZERS, f'data.tokenizer must be one of {TOKENIZERS}, got {d.tokenizer!r}')
  _need(d.seq_len > 0, f'data.seq_len must be positive, got {d.seq_len}')
  _need(d.vocab_size > 0, f'data.vocab_size must be positive, got {d.vocab_size}')
  for key in ('num_threads', 'prefetch', 'train_limit', 'eval_limit'):
    _need(d[key] >= 0, f'data.{key} must be >= 0, got {d[key]}')
  bounds = tuple(d.get('bucket_boundaries', ()))
  _need(all(isinstance(b, int) and b > 0 for b in bounds) and list(bounds) == sorted(set(bounds)),
        f'data.bucket_boundaries must be increasing positive integers, got {bounds}')
  _need(0 < d.get('mlm_rate', 0.15) < 1, f'data.mlm_rate must be in (0, 1), got {d.get("mlm_rate")}')

  name = c.model.name
  _need(name in models.REGISTRY,
        f'unknown model.name {name!r}; known: {", ".join(sorted(models.REGISTRY))}')
  extra = {k for k, v in c.model.items() if v is not None} - {'name'} - models.field_names(name)
  _need(not extra, f'model {name!r} has no hyper-parameter(s) {sorted(extra)}')
  # The trainer passes remat only to models that take it; elsewhere it would be silently ignored.
  _need(c.remat == 'none' or 'remat' in models.field_names(name),
        f"remat={c.remat!r}: model {name!r} has no remat (the Transformer models do); use remat='none'")
  # jax.nn.dot_product_attention (attention_impl='jax') asks for a float16 x float16 -> float32
  # dot, which XLA:CPU refuses at compile time (jax 0.10); our 'xla' path and GPUs run it.
  _need(not (c.dtype == 'float16' and c.model.get('attention_impl') == 'jax'
             and jax.default_backend() == 'cpu'),
        f"dtype='float16' with attention_impl='jax': XLA:CPU has no float16 dot with float32 "
        f"accumulation there; use attention_impl='xla' (or auto) on CPU")
  _need(c.data.name in sources.LOADERS,
        f'unknown data.name {c.data.name!r}; known: {", ".join(sorted(sources.LOADERS))}')
  if c.data.augment != 'none':
    from train.data.augment import AUGMENTATIONS
    _need(c.data.augment in AUGMENTATIONS,
          f'unknown data.augment {c.data.augment!r}; known: none, {", ".join(AUGMENTATIONS)}')

  try:
    mesh = sharding.mesh_shape(c.mesh, jax.device_count())
  except ValueError as e:
    raise ConfigError(f'mesh: {e}') from None
  shards = mesh['data'] * mesh['fsdp']
  try:
    rules = sharding.expand_rules(c.partition_rules)
  except (ValueError, TypeError) as e:
    raise ConfigError(f'partition_rules: {e}') from None
  for pattern, axes in rules:
    flat = [a for ax in axes if ax is not None for a in ((ax,) if isinstance(ax, str) else ax)]
    _need(all(a in sharding.MESH_AXES for a in flat),
          f'partition_rules: {pattern!r} names axes {axes}; mesh axes are {sharding.MESH_AXES}')
  micro = c.batch_size // c.grad_accum_steps
  _need(c.batch_size % c.grad_accum_steps == 0,
        f'batch_size {c.batch_size} is not divisible by grad_accum_steps {c.grad_accum_steps}')
  _need(micro % shards == 0, f'batch_size {c.batch_size} (micro-batch {micro}) is not divisible '
        f'by the {shards} data shards of mesh {mesh}')
  _need(c.batch_size % jax.process_count() == 0,
        f'batch_size {c.batch_size} is not divisible by the {jax.process_count()} processes')
  if c.parallelism == 'pmap':
    _need(c.batch_size % jax.local_device_count() == 0,
          f'pmap: batch_size {c.batch_size} is not divisible by {jax.local_device_count()} devices')
