"""The seed document's Keras example: 2 features -> Dense(16, relu) -> Dense(1, sigmoid),
trained with Adam on binary cross-entropy, here on the offline two-moons set.

  python -m train --config configs/seed_fnn.py --workdir runs/seed_fnn
  python -m train --config configs/seed_fnn.py:tiny --workdir /tmp/seed_fnn
"""
from configs.base import get_base_config, make_tiny, parse_arg, set_model


def get_config(arg: str | None = None):
  args = parse_arg(arg, allowed=('tiny',))
  c = get_base_config()
  c.data.name = 'two_moons'
  c.data.train_split, c.data.eval_split = 'train', 'test'
  c.task = 'binary'
  set_model(c, 'seed_fnn')
  c.optimizer.name = 'adam'
  c.schedule.name = 'constant'
  c.learning_rate = 1e-2
  c.batch_size = 32
  c.num_epochs = 20
  c.log_every_steps = 100
  if 'tiny' in args:
    make_tiny(c)
  return c
