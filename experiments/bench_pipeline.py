"""Is the input pipeline ever the bottleneck? Pipeline examples/s vs the train step's.

  python experiments/bench_pipeline.py --data ../shared/data

For the MNIST CNN and the Tiny Shakespeare Transformer configs, measures (1) how
fast the grain pipeline alone produces batches (read threads as configured, host
numpy out), and (2) how fast the compiled train step consumes batches already on
the device, then prints the ratio pipeline/step: above 1 means the pipeline keeps up.
Both are measured in the same process, back to back (the machine is shared and noisy).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from tests.helpers import load_config  # noqa: E402
from train import optim, sharding as sharding_lib, steps, tasks, trainer  # noqa: E402
from train.data import pipeline, sources  # noqa: E402
from train.state import make_init_fn  # noqa: E402

ROWS = {'mnist_cnn': 'mnist', 'shakespeare_gpt': 'tinyshakespeare'}


def pipeline_rate(config, splits, batches: int) -> float:
  ds = pipeline.train_dataset(splits.train, global_batch_size=config.batch_size, seed=0)
  it = pipeline.train_iterator(ds, num_threads=config.data.num_threads, prefetch=config.data.prefetch)
  next(it)  # start the threads
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * config.batch_size / (time.perf_counter() - t0)


def step_rate(config, splits, batches: int) -> float:
  mesh = sharding_lib.make_mesh(config.mesh)
  model = trainer.build_model(config, splits.info)
  tx, schedule = optim.create_optimizer(config, 1000)
  example = pipeline.train_dataset(splits.train, global_batch_size=config.batch_size, seed=0)[0]
  state = jax.jit(make_init_fn(model, tx, {k: v[:1] for k, v in example.items()}))(jax.random.key(0))
  step = jax.jit(steps.make_train_step(model, tasks.get(config.task), schedule=schedule),
                 donate_argnums=0)
  batch = sharding_lib.shard_batch(example, sharding_lib.batch_sharding(mesh))
  rng = jax.random.key(1)
  for _ in range(3):
    state, m = step(state, batch, rng)
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for _ in range(batches):
    state, m = step(state, batch, rng)
  jax.block_until_ready(m)
  return batches * config.batch_size / (time.perf_counter() - t0)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--data', default='../shared/data')
  p.add_argument('--batches', type=int, default=50)
  args = p.parse_args()
  print(f'{jax.device_count()} {jax.default_backend()} device(s)')
  for name, folder in ROWS.items():
    config = load_config(f'configs/{name}.py', None, **{'data.dir': os.path.join(args.data, folder)})
    splits = sources.load_splits(config.data)
    pipe = pipeline_rate(config, splits, args.batches)
    step = step_rate(config, splits, args.batches)
    print(f'{name}: pipeline {pipe:,.0f} examples/s, train step {step:,.0f} examples/s, '
          f'ratio {pipe / step:.1f}x (batch {config.batch_size}, {config.data.num_threads} read threads)')


if __name__ == '__main__':
  main()
