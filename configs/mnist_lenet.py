"""LeNet-5 on MNIST (target >= 99.0% test accuracy; LeCun et al. 1998: 0.95% error).

  python -m train --config configs/mnist_lenet.py --workdir runs/mnist_lenet \
      --config.data.dir=../shared/data/mnist
  # :val holds out 10% of train for choices; :tiny is a smoke run.
"""
from configs.base import (get_base_config, hold_out_validation, local_data_dir, make_tiny,
                          parse_arg, set_model)


def get_config(arg: str | None = None):
  args = parse_arg(arg)
  c = get_base_config()
  c.data.name = 'mnist'
  c.data.dir = local_data_dir('mnist')
  set_model(c, 'lenet5')
  c.batch_size = 128
  c.num_epochs = 15
  c.learning_rate = 2e-3
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
