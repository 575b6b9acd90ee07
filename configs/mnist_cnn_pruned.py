"""The MNIST CNN pruned to 90% global sparsity (target >= 99.0% test accuracy at 90%).

Fine-tunes a trained configs/mnist_cnn.py run for 3 epochs while global magnitude
pruning (train/prune.py) ramps the sparsity of all Dense/Conv kernels 0 -> 90% over
the first 900 steps (Zhu & Gupta's cubic schedule, masks every 50 steps):

  python -m train --config configs/mnist_cnn_pruned.py --workdir runs/mnist_cnn_pruned \
      --config.data.dir=../shared/data/mnist --config.init_from=runs/mnist_cnn
  python -m train.prune --workdir runs/mnist_cnn_pruned     # sparsity of the saved weights
  # Without init_from it prunes while training from scratch (add --config.num_epochs=12).
  # :tiny is a smoke run (4 steps, 90% sparsity from step 2).
"""
from configs.base import (get_base_config, hold_out_validation, local_data_dir, make_tiny,
                          parse_arg, set_model)


def get_config(arg: str | None = None):
  args = parse_arg(arg)
  c = get_base_config()
  c.data.name = 'mnist'
  c.data.dir = local_data_dir('mnist')
  set_model(c, 'cnn')             # every hyper-parameter a key, as in the other configs
  c.batch_size = 128
  c.num_epochs = 3
  c.learning_rate = 5e-4             # fine-tuning: a quarter of mnist_cnn's peak rate
  c.optimizer.weight_decay = 1e-4
  c.schedule.warmup_steps = 0
  c.prune.target_sparsity = 0.9
  c.prune.begin_step = 0
  c.prune.end_step = 900             # ~2 of the 3 epochs; the last ~500 steps recover at 90%
  c.prune.update_every = 50
  c.log_every_steps = 100
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  c.eval_batch_size = 1000
  if 'val' in args:
    hold_out_validation(c)
  if 'tiny' in args:
    make_tiny(c)
    c.prune.end_step, c.prune.update_every = 2, 1
  return c
