"""The offline main job: a CNN on scikit-learn's bundled handwritten digits.

Runs on a fresh machine with no download (the digits ship inside scikit-learn)
and evaluates on a fixed, stratified 20% held-out test split (360 images).

  python -m train --config configs/default.py --workdir runs/default
  python -m train --config configs/default.py:tiny --workdir /tmp/smoke   # seconds
"""
from configs.base import get_base_config, parse_arg, set_model


def get_config(arg: str | None = None):
  args = parse_arg(arg, allowed=('tiny',))
  c = get_base_config()
  c.data.name = 'digits'
  c.data.train_split, c.data.eval_split = 'train', 'test'
  set_model(c, 'cnn')
  c.batch_size = 32
  c.num_epochs = 30
  c.learning_rate = 3e-3
  c.optimizer.name = 'adamw'
  c.optimizer.weight_decay = 1e-4
  c.schedule.warmup_steps = 50
  c.log_every_steps = 100
  c.eval_every_steps = 300
  c.checkpoint_every_steps = 500
  if 'tiny' in args:
    c.num_epochs = -1
    c.num_train_steps = 6
    c.log_every_steps = 2
    c.eval_every_steps = 4
    c.checkpoint_every_steps = 4
    c.plots = False
  return c
