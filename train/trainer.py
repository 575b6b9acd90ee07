"""``train_and_evaluate(config, workdir)``: the training loop, top to bottom.

config -> data -> model -> mesh -> state (restored or initialised) -> compiled
steps -> loop (log, eval, checkpoint) -> final eval, checkpoint and plots.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import models
from train import checkpoint as ckpt_lib
from train import loss_scale as loss_scale_lib
from train import metrics as metrics_lib
from train import compile_options, optim, pmap_path, steps, tasks
from train import sharding as sharding_lib
from train import workdir as workdir_lib
from train.data import bucketing, pipeline, sources
from train.state import make_init_fn, nonfinite_name


# Train metrics logged as their value at the window's last step, not its mean.
LAST_VALUE_METRICS = ('learning_rate', 'loss_scale', 'skipped_steps')


class NonFiniteError(RuntimeError):
  """Training met a non-finite loss or gradient under ``on_nonfinite='stop'``."""


@dataclasses.dataclass
class RunControl:
  """Per-invocation controls that do not change results (not part of the config)."""
  stop_at_step: int | None = None     # save and exit after this step, as a preemption would
  should_stop: Any = None             # callable -> bool, polled each step (signal handlers)
  devices: Any = None                 # devices for the mesh (default: all); tests compare layouts
  restore_fallback: bool = False      # a damaged latest checkpoint: use the previous one, not fail


def build_model(config, info):
  """The registered model named by ``config.model``, sized from the dataset info."""
  # Unset (None) keys mean the preset's value (configs.base.set_model lists them all).
  hp = {k: v for k, v in config.model.to_dict().items() if v is not None}
  name = hp.pop('name')
  fields = models.field_names(name)
  if 'num_classes' in fields and 'num_classes' not in hp and info.num_classes:
    hp['num_classes'] = 1 if config.task == 'binary' else info.num_classes
  if 'vocab_size' in fields and 'vocab_size' not in hp and info.vocab_size:
    hp['vocab_size'] = info.vocab_size
  if 'dtype' in fields:
    hp['dtype'] = jnp.dtype(config.dtype)
  if 'remat' in fields and config.remat != 'none':
    hp['remat'] = config.remat
  return models.build(name, **hp)


def total_train_steps(config, num_train_examples: int) -> int:
  if config.num_train_steps > 0:
    return config.num_train_steps
  return max(1, int(math.ceil(config.num_epochs * num_train_examples / config.batch_size)))


def train_and_evaluate(config, workdir: str, control: RunControl | None = None) -> dict[str, float]:
  """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints).

  Returns the final eval metrics, ``step``, ``stopped_early`` and the final train
  ``state`` (sharded ``jax.Array``s), so research code can go on from it in-process.
  """
  control = control or RunControl()
  is_main = jax.process_index() == 0
  workdir_lib.check_config_paths(config)  # config paths are only read; TFDS would write to one
  os.makedirs(workdir, exist_ok=True)

  # Data.
  splits = sources.load_splits(config.data)
  if config.task == 'distill':  # train/distill.py: the teacher's logits join every training record
    from train import distill
    splits = distill.attach_teacher(splits, config.distill)
  info = splits.info
  use_pmap = config.parallelism == 'pmap'
  mesh = sharding_lib.make_mesh(config.mesh, control.devices)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  augment = None
  if config.data.augment != 'none':
    from train.data.augment import AUGMENTATIONS
    augment = AUGMENTATIONS[config.data.augment]
  if config.task == 'mlm':  # train/mlm.py: BERT masking, redrawn per read in training, fixed in eval
    from train import mlm
    splits, augment = mlm.prepare(splits, config, augment)
  train_ds = pipeline.train_dataset(
      splits.train, global_batch_size=config.batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(), augment=augment,
      bucket_boundaries=config.data.bucket_boundaries)
  # Length buckets give one batch shape per bucket length; the longest is compiled first.
  bucket_lengths = pipeline.train_lengths(splits.train, config.data.bucket_boundaries)
  longest_batch = (bucketing.shape_variants(train_ds[0], bucket_lengths[-1:])[0] if bucket_lengths
                   else train_ds[0])

  if is_main:
    save_config(config, workdir)
    save_vocab(info, workdir)

  # Model, optimizer, task.
  model = build_model(config, info)
  num_steps = total_train_steps(config, len(splits.train))
  tx, schedule = optim.create_optimizer(config, num_steps)
  task_fn = tasks.get(config.task, config)  # config: tasks with hyper-parameters (distill)

  # State: restored from this workdir, else initialised (sharded from the start).
  rng = jax.random.key(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  example = {k: v[:1] for k, v in train_ds[0].items()}
  init_fn = make_init_fn(model, tx, example, loss_scale_lib.from_config(config),
                         ema_decay=config.get('ema_decay', 0.0))
  abstract_state = jax.eval_shape(init_fn, init_rng)
  if use_pmap:  # built and checkpointed on one device, then replicated for the steps
    single = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    state_shardings = jax.tree_util.tree_map(lambda _: single, abstract_state)
  else:
    state_shardings = sharding_lib.tree_shardings(abstract_state, mesh, config.partition_rules)
  best = config.keep_best_by
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=config.keep_checkpoints, best_metric=best,
                                       best_mode='min' if best and 'loss' in best else 'max',
                                       async_save=config.checkpoint_async)
  restored = checkpointer.restore_latest(
      ckpt_lib.abstract_with_shardings(abstract_state, state_shardings), control.restore_fallback)
  data_state = None
  if restored is not None:
    start_step, state, data_state = restored
    logging.info('resumed from %s at step %d', workdir, start_step)
  else:
    start_step = 0
    state = jax.jit(init_fn, out_shardings=state_shardings)(init_rng)
    if config.init_from:
      params, _ = ckpt_lib.overlay_params(state.params, ckpt_lib.load_params(config.init_from))
      state = state.replace(params=params)
      if getattr(state, 'ema_params', None) is not None:
        # The average starts from them too (it matters only if step 1 is skipped as
        # non-finite); a copy, since the step donates each of the state's buffers.
        state = state.replace(ema_params=jax.tree_util.tree_map(jnp.copy, params))
  logging.info('model %s: %s parameters', config.model.name,
               f'{sum(x.size for x in jax.tree_util.tree_leaves(state.params)):,}')

  # Steps, compiled ahead of step 1 so the memory report comes before training.
  step_kw = dict(label_smoothing=config.label_smoothing, grad_accum_steps=config.grad_accum_steps,
                 schedule=schedule, adversarial_epsilon=config.adversarial_epsilon)
  xla_options = compile_options.step_options(
      config, mesh.devices.flat[0].platform, compile_options.has_convolutions(abstract_state.params))
  if use_pmap:
    pmapped = pmap_path.pmap_train_step(
        steps.make_train_step(model, task_fn, axis_name=pmap_path.AXIS, **step_kw))
    eval_step = pmap_path.pmap_eval_step(steps.make_eval_step(model, task_fn, pmap_path.AXIS))
    put_batch = pmap_path.put_batch
    state = pmap_path.replicate(state)
    # Compiled ahead too, for the memory report; other shapes (buckets) go through pmap.
    t0 = time.perf_counter()
    example = put_batch({k: np.zeros(np.shape(v), np.asarray(v).dtype)
                         for k, v in longest_batch.items()})
    # pmap itself takes no compiler options: only this shape's step has them.
    aot_step = pmapped.lower(state, example, step_rng).compile(compiler_options=xla_options)
    aot_key = _shape_key(example)
    logging.info('train step (pmap) for inputs %s compiled in %.1fs; %s', example['inputs'].shape,
                 time.perf_counter() - t0, memory_report(aot_step))

    def compiled(state, batch, rng):
      return (aot_step if _shape_key(batch) == aot_key else pmapped)(state, batch, rng)
  else:
    train_step = jax.jit(
        steps.make_train_step(model, task_fn, **step_kw),
        in_shardings=(state_shardings, batch_sharding, sharding_lib.replicated(mesh)),
        out_shardings=(state_shardings, sharding_lib.replicated(mesh)), donate_argnums=0)
    eval_step = jax.jit(steps.make_eval_step(model, task_fn),
                        in_shardings=(state_shardings, batch_sharding), compiler_options=xla_options)
    put_batch = lambda b: sharding_lib.shard_batch(b, batch_sharding)
    by_shape = {}  # one compiled step per batch shape (bucket length)

    def compile_for(state, batch):
      t0 = time.perf_counter()
      step_fn = train_step.lower(state, batch, step_rng).compile(compiler_options=xla_options)
      by_shape[_shape_key(batch)] = step_fn
      logging.info('train step for inputs %s compiled in %.1fs; %s', batch['inputs'].shape,
                   time.perf_counter() - t0, memory_report(step_fn))
      return step_fn

    # The longest shape compiles now (its memory is the peak); other buckets when first met.
    compile_for(state, {k: jax.ShapeDtypeStruct((config.batch_size,) + v.shape[1:], v.dtype,
                                                sharding=batch_sharding)
                        for k, v in longest_batch.items()})

    def compiled(state, batch, rng):
      step_fn = by_shape.get(_shape_key(batch)) or compile_for(state, batch)
      return step_fn(state, batch, rng)
  # What checkpoints store: the state itself, or the first replica on the pmap path.
  host_state = pmap_path.unreplicate if use_pmap else (lambda s: s)

  writer = metrics_lib.MetricWriter(workdir, enabled=is_main, resume_step=start_step)
  progress = metrics_lib.Progress(num_steps, start_step, config.batch_size, enabled=is_main)
  iterator = pipeline.train_iterator(train_ds, num_threads=config.data.num_threads,
                                     prefetch=config.data.prefetch, state=data_state)
  batches = pipeline.DevicePrefetcher(iterator, put_batch)

  # XLA:CPU runs each device of a multi-device program on a shared thread pool; two
  # such programs in flight at once can starve each other's collectives (a
  # rendezvous timeout). On CPU meshes the loop therefore keeps one step in flight.
  sync_each_step = (mesh.devices.size > 1 or use_pmap) and jax.default_backend() == 'cpu'

  def evaluate(state) -> dict[str, float]:
    # Rounded up to a multiple of the batch shards; the extra rows are masked padding.
    shards = jax.local_device_count() if use_pmap else mesh.shape['data'] * mesh.shape['fsdp']
    eval_bs = -(-(config.eval_batch_size or config.batch_size) // shards) * shards
    total, count = None, 0
    for local in pipeline.eval_batches(splits.eval, global_batch_size=eval_bs,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count()):
      # Sums come back to the host per batch (float64 there), so no extra device op.
      sums = jax.device_get(eval_step(state, put_batch(local)))
      # (pmap: every replica holds the same psum'd value; take the first)
      sums = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64).reshape(-1)[0], sums)
      total = sums if total is None else jax.tree_util.tree_map(np.add, total, sums)
      count += int(local['valid'].sum())
    out = {f'eval/{k}': v for k, v in tasks.finalize(total).items()}
    out['eval/num_examples'] = count * jax.process_count()
    return tasks.add_perplexity(out, config.task, 'eval/')

  def check_finite(state, step):
    bad, first, what = jax.device_get((state.nonfinite_steps, state.first_nonfinite_step,
                                       state.first_nonfinite_what))
    if config.on_nonfinite == 'stop' and np.max(bad) > 0:
      name = nonfinite_name(host_state(state).params, int(np.max(what)))
      raise NonFiniteError(
          f'{name} is not finite at step {int(np.max(first)) + 1}; '
          f'the last good checkpoint is kept (set on_nonfinite=skip to skip such steps)')

  pending: list[dict] = []
  step = start_step
  data_state = iterator.get_state()
  eval_metrics: dict[str, float] = {}
  stopped_early = False
  try:
    while step < num_steps:
      batch, data_state = next(batches)
      state, m = compiled(state, batch, step_rng)
      if sync_each_step:
        jax.block_until_ready(m)
      pending.append(m)
      step += 1
      last = step == num_steps
      if step % config.log_every_steps == 0 or last:
        host = jax.device_get(pending)
        pending = []
        logged = {f'train/{k}': float(np.mean([h[k] for h in host])) for k in host[0]}
        for k in LAST_VALUE_METRICS:  # a state, not a per-step figure: its value now
          if k in host[-1]:
            logged[f'train/{k}'] = float(np.mean(host[-1][k]))
        logged.update(progress.update(step, logged))
        writer.write(step, logged)
        check_finite(state, step)
      if config.eval_every_steps and step % config.eval_every_steps == 0 and not last:
        eval_metrics = evaluate(state)
        writer.write(step, eval_metrics)
      if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0 and not last:
        check_finite(state, step)
        checkpointer.save(step, host_state(state), data_state, eval_metrics)
      if (control.stop_at_step is not None and step >= control.stop_at_step) or (
          control.should_stop is not None and control.should_stop()):
        stopped_early = not last
        break

    check_finite(state, step)
    if not stopped_early:
      eval_metrics = evaluate(state)
      writer.write(step, eval_metrics)
    if checkpointer.latest_step() != step:
      checkpointer.save(step, host_state(state), data_state, eval_metrics)
    checkpointer.wait()
  finally:
    progress.close()
    writer.close()
    checkpointer.close()
  if is_main and config.plots and not stopped_early:
    metrics_lib.plot_curves(workdir)
  return {'step': step, 'stopped_early': stopped_early, **eval_metrics, 'state': host_state(state)}


def _shape_key(batch) -> tuple:
  """The batch's (key, shape) pairs, sorted: which compiled step (bucket length) it needs."""
  return tuple(sorted((k, tuple(v.shape)) for k, v in batch.items()))


def memory_report(compiled) -> str:
  """Bytes the compiled step needs per device, from XLA's memory analysis."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # not every backend implements it
    return 'memory analysis unavailable'
  if m is None:
    return 'memory analysis unavailable'
  fields = ('argument_size_in_bytes', 'output_size_in_bytes', 'temp_size_in_bytes',
            'generated_code_size_in_bytes')
  parts = {f.replace('_size_in_bytes', ''): getattr(m, f, 0) for f in fields}
  peak = parts['argument'] + parts['output'] + parts['temp']
  return 'memory per device: ' + ', '.join(f'{k} {v / 2**20:.1f} MiB' for k, v in parts.items()) + \
      f', peak ~{peak / 2**20:.1f} MiB'


def save_config(config, workdir: str) -> None:
  with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
    f.write(json.dumps(json.loads(config.to_json_best_effort()), indent=2, sort_keys=True) + '\n')


def save_vocab(info, workdir: str) -> None:
  """The token vocabulary beside the checkpoints, so sampling needs no data files."""
  extra = {k: info.extra[k] for k in ('tokenizer', 'vocab', 'tokenizer_path') if k in info.extra}
  if not extra:
    return
  extra.update(vocab_size=info.vocab_size, num_classes=info.num_classes)
  with open(os.path.join(workdir, 'vocab.json'), 'w', encoding='utf-8') as f:
    json.dump(extra, f, ensure_ascii=False)
