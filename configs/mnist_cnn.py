"""The flax-example CNN on MNIST (target >= 99.2% test accuracy).

  python -m train --config configs/mnist_cnn.py --workdir runs/mnist_cnn \
      --config.data.dir=../shared/data/mnist
  # :val holds out 10% of train for choices; :tiny is a smoke run.

``mnist_config`` is the recipe the MNIST configs share (mnist_mlp, mnist_lenet, ...).
"""
from configs.base import (get_base_config, hold_out_validation, local_data_dir, make_tiny,
                          parse_arg, set_model)


def mnist_config(arg: str | None, model: str, *, epochs: float, learning_rate: float,
                 **model_hparams):
  """MNIST from ``data.dir`` (or TFDS), AdamW with warmup + cosine, batch 128."""
  args = parse_arg(arg)
  c = get_base_config()
  c.data.name = 'mnist'
  c.data.dir = local_data_dir('mnist')
  set_model(c, model)
  for key, value in model_hparams.items():
    c.model[key] = value
  c.batch_size = 128
  c.num_epochs = epochs
  c.learning_rate = learning_rate
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


def get_config(arg: str | None = None):
  return mnist_config(arg, 'cnn', epochs=12, learning_rate=2e-3)
