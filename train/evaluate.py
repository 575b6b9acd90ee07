"""Scores a trained run's checkpoint on a split of its dataset, once.

  python -m train.evaluate --workdir runs/sst2_mlm_finetune --best --split dev

``--best`` takes the checkpoint that ``keep_best_by`` kept (chosen on the run's
own eval split, e.g. a validation hold-out), so the number on ``--split`` (the
test or dev set) is reported without having been used for any choice. Prints
one JSON line: the metrics, the split, the step and which checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def evaluate_run(workdir: str, split: str | None = None, best: bool = False,
                 data_dir: str | None = None) -> dict:
  """``{'accuracy', 'loss', ..., 'num_examples', 'split', 'step', 'checkpoint'}`` of a run.

  The model, tokenizer and task are the run's own (``config.json``); ``split``
  (default: the run's ``data.eval_split``) is read whole (``data.eval_limit`` ignored).
  """
  from train import checkpoint as ckpt_lib
  from train import posttrain, tasks, trainer
  from train.data import sources
  from train.workdir import check_config_paths
  config = posttrain.read_config(workdir)
  folder = os.path.join(workdir, ckpt_lib.BEST_DIR) if best else workdir
  if best and not os.path.isdir(folder):  # before reading data: fail in a second
    raise FileNotFoundError(f'{folder} does not exist: the run kept no best checkpoint '
                            '(set keep_best_by when training)')
  if data_dir:
    config.data.dir = data_dir
  if split:
    config.data.eval_split = split
  config.data.eval_limit = 0
  check_config_paths(config)
  splits = sources.load_splits(config.data)
  if config.task == 'mlm':
    from train import mlm
    splits, _ = mlm.prepare(splits, config)
  params, model_state, step = posttrain.load_variables(folder)
  model = trainer.build_model(config, splits.info)
  metrics = posttrain.evaluate(model, params, model_state, splits.eval, task=config.task,
                               batch_size=config.get('eval_batch_size') or config.batch_size)
  metrics = tasks.add_perplexity(metrics, config.task, '')  # lm and mlm runs, as the trainer logs
  return {**metrics, 'split': config.data.eval_split, 'step': step,
          'checkpoint': 'best' if best else 'latest'}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--workdir', required=True, help='a training workdir')
  p.add_argument('--split', default=None, help="split to score (default: the run's eval split)")
  p.add_argument('--best', action='store_true', help='the keep_best_by checkpoint, not the latest')
  p.add_argument('--data_dir', default=None, help="override the run's data.dir")
  args = p.parse_args(argv)
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.ERROR)
  from train.data.base import DataError
  try:
    result = evaluate_run(args.workdir, args.split, args.best, args.data_dir)
  except (FileNotFoundError, ValueError, KeyError, DataError) as e:
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    return 2
  print(json.dumps(result, sort_keys=True))
  return 0


if __name__ == '__main__':
  sys.exit(main())
