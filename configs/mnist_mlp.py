"""MLP on MNIST (target >= 98.3% test accuracy).

  python -m train --config configs/mnist_mlp.py --workdir runs/mnist_mlp \
      --config.data.dir=../shared/data/mnist
  # choices on a held-out 10% of train:  --config configs/mnist_mlp.py:val
  # smoke run:                           --config configs/mnist_mlp.py:tiny

Unset ``data.dir`` reads TFDS ``mnist`` instead (``JAXLAB_DATA=../shared/data`` also fills it).
"""
from configs.base import (get_base_config, hold_out_validation, local_data_dir, make_tiny,
                          parse_arg, set_model)


def get_config(arg: str | None = None):
  args = parse_arg(arg)
  c = get_base_config()
  c.data.name = 'mnist'
  c.data.dir = local_data_dir('mnist')
  set_model(c, 'mlp')
  c.model.hidden_sizes = (1024, 1024)
  c.model.dropout_rate = 0.2
  c.batch_size = 128
  c.num_epochs = 20
  c.learning_rate = 1e-3
  c.optimizer.weight_decay = 1e-4
  c.schedule.warmup_steps = 200
  c.log_every_steps = 200
  c.eval_every_steps = 2000
  c.checkpoint_every_steps = 2000
  c.eval_batch_size = 1000
  if 'val' in args:
    hold_out_validation(c)
  if 'tiny' in args:
    make_tiny(c)
  return c
