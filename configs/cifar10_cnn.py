"""The seed document's PyTorch CIFAR-style CNN (conv 32, conv 64, max-pool, dense 128,
dense 10) on CIFAR-10, from TFDS by default or the python batches in ``data.dir``.

  python -m train --config configs/cifar10_cnn.py --workdir runs/cifar10_cnn
  python -m train --config configs/cifar10_cnn.py --workdir runs/cifar10_cnn \
      --config.data.dir=/path/to/cifar-10-batches-py
  # :val holds out 10% of train for choices; :tiny is a smoke run.
"""
from configs.base import (get_base_config, hold_out_validation, local_data_dir, make_tiny,
                          parse_arg, set_model)


def get_config(arg: str | None = None):
  args = parse_arg(arg)
  c = get_base_config()
  c.data.name = 'cifar10'
  c.data.dir = local_data_dir('cifar10')
  c.data.augment = 'cifar'
  set_model(c, 'cifar_cnn')
  c.batch_size = 128
  c.num_epochs = 30
  c.learning_rate = 1e-3
  c.optimizer.weight_decay = 5e-4
  c.schedule.warmup_steps = 500
  c.log_every_steps = 200
  c.eval_every_steps = 2000
  c.checkpoint_every_steps = 2000
  c.eval_batch_size = 1000
  if 'val' in args:
    hold_out_validation(c)
  if 'tiny' in args:
    make_tiny(c)
  return c
