"""Length bucketing on real SST-2: padding fraction and BiLSTM train-step examples/s, with and without.

  python experiments/bench_bucketing.py --data ../shared/data [--boundaries 8,16,32]

Padding fraction: padding token slots / all token slots over one epoch of training
batches (word vocabulary at seq_len 48 as configs/sst2_bilstm.py, and WordPiece at
seq_len 64 as configs/sst2_minilm.py when its tokenizer is installed).

Train-step rate: the sst2_bilstm model and optimizer, each batch shape compiled
first, then rounds that alternate ``--steps`` plain steps and ``--steps``
bucketed steps (batches taken in order from each pipeline and put on the device
beforehand, so only the step is timed). Alternating in one process keeps the
comparison fair on a shared, noisy machine. examples/s counts real examples.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from tests.helpers import load_config  # noqa: E402
from train import optim, steps, tasks, trainer  # noqa: E402
from train.data import bucketing, pipeline, sources  # noqa: E402
from train.state import make_init_fn  # noqa: E402


def epoch_padding(splits, batch_size: int, boundaries) -> float:
  ds = pipeline.train_dataset(splits.train, global_batch_size=batch_size, seed=0,
                              bucket_boundaries=boundaries)
  n = -(-len(splits.train) // batch_size)
  return bucketing.padding_fraction(ds[k] for k in range(n))


def step_rates(config, splits, boundaries, steps_per_round: int, rounds: int) -> dict:
  model = trainer.build_model(config, splits.info)
  tx, schedule = optim.create_optimizer(config, 10_000)
  kw = dict(global_batch_size=config.batch_size, seed=0)
  datasets = {'plain': pipeline.train_dataset(splits.train, **kw),
              'bucketed': pipeline.train_dataset(splits.train, bucket_boundaries=boundaries, **kw)}
  example = {k: v[:1] for k, v in datasets['plain'][0].items()}
  state = jax.jit(make_init_fn(model, tx, example))(jax.random.key(0))
  step = jax.jit(steps.make_train_step(model, tasks.get(config.task), schedule=schedule),
                 donate_argnums=0)
  rng = jax.random.key(1)
  n = steps_per_round * rounds
  batches = {name: [jax.device_put(ds[k]) for k in range(n)] for name, ds in datasets.items()}
  seen = set()
  for b in batches['plain'][:1] + batches['bucketed']:  # compile every shape before timing
    shape = tuple(sorted((k, v.shape) for k, v in b.items()))
    if shape not in seen:
      seen.add(shape)
      state, m = step(state, b, rng)
  jax.block_until_ready(m)
  out = {name: [0.0, 0] for name in datasets}
  for r in range(rounds):
    for name in datasets:
      chunk = batches[name][r * steps_per_round:(r + 1) * steps_per_round]
      t0 = time.perf_counter()
      for b in chunk:
        state, m = step(state, b, rng)
      jax.block_until_ready(m)
      out[name][0] += time.perf_counter() - t0
      out[name][1] += sum(int(np.asarray(b['valid']).sum()) if 'valid' in b else len(b['label'])
                          for b in chunk)
  return {name: count / secs for name, (secs, count) in out.items()} | {'shapes': len(seen)}


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--data', default='../shared/data')
  p.add_argument('--boundaries', default='8,16,32')
  p.add_argument('--steps', type=int, default=20, help='steps per round and pipeline')
  p.add_argument('--rounds', type=int, default=5)
  args = p.parse_args()
  bounds = tuple(int(b) for b in args.boundaries.split(','))
  print(f'{jax.device_count()} {jax.default_backend()} device(s); boundaries {bounds}')
  config = load_config('configs/sst2_bilstm.py', None,
                       **{'data.dir': os.path.join(args.data, 'sst2'), 'data.bucket_boundaries': ()})
  splits = sources.load_splits(config.data)
  lengths = pipeline.train_lengths(splits.train, bounds)
  print(f'word, seq_len {config.data.seq_len}: padding {epoch_padding(splits, config.batch_size, ()):.1%} '
        f'plain, {epoch_padding(splits, config.batch_size, bounds):.1%} bucketed {lengths}')
  try:
    wp = load_config('configs/sst2_minilm.py', None, **{'data.dir': os.path.join(args.data, 'sst2')})
    wp_splits = sources.load_splits(wp.data)
    print(f'wordpiece, seq_len {wp.data.seq_len}: padding '
          f'{epoch_padding(wp_splits, wp.batch_size, ()):.1%} plain, '
          f'{epoch_padding(wp_splits, wp.batch_size, bounds):.1%} bucketed '
          f'{pipeline.train_lengths(wp_splits.train, bounds)}')
  except ImportError as e:
    print(f'wordpiece: skipped ({e})')
  rates = step_rates(config, splits, bounds, args.steps, args.rounds)
  print(f'BiLSTM train step, batch {config.batch_size}: plain {rates["plain"]:,.0f} examples/s, '
        f'bucketed {rates["bucketed"]:,.0f} examples/s ({rates["bucketed"] / rates["plain"]:.2f}x; '
        f'{args.rounds} alternating rounds of {args.steps} steps each, {rates["shapes"]} shapes compiled)')


if __name__ == '__main__':
  main()
