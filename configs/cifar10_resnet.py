"""ResNet-20 (He et al. 2016, 0.27M parameters) on CIFAR-10 with crop + flip augmentation,
SGD with Nesterov momentum and a cosine schedule; ``--config.model.name=resnet18`` for ResNet-18.

  python -m train --config configs/cifar10_resnet.py --workdir runs/cifar10_resnet
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
  set_model(c, 'resnet20')
  c.batch_size = 128
  c.num_epochs = 180
  c.learning_rate = 0.1
  c.optimizer.name = 'nesterov'
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.schedule.warmup_steps = 400
  c.log_every_steps = 200
  c.eval_every_steps = 4000
  c.checkpoint_every_steps = 4000
  c.eval_batch_size = 1000
  c.keep_best_by = 'eval/accuracy'
  if 'val' in args:
    hold_out_validation(c)
  if 'tiny' in args:
    make_tiny(c)
  return c
