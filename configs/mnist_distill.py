"""A small MLP student (784-256-10) distilled from a trained MNIST CNN, and the same student alone.

The teacher is a finished configs/mnist_cnn.py run (824k weights; the student has
204k); its logits for the 60,000 training images are computed once before step 1
(train/distill.py, T=4, alpha=0.9):

  python -m train --config configs/mnist_distill.py --workdir runs/mnist_distill \
      --config.data.dir=../shared/data/mnist --config.distill.teacher=runs/mnist_cnn
  # The baseline: the same student, data and schedule on the labels alone.
  python -m train --config configs/mnist_distill.py:alone --workdir runs/mnist_student \
      --config.data.dir=../shared/data/mnist
  # :val holds out 10% of train for choices (the teacher must not have trained on it:
  # use a :val teacher there); :tiny is a smoke run and still needs a teacher.
"""
from configs.base import (get_base_config, hold_out_validation, local_data_dir, make_tiny,
                          parse_arg, set_model)


def get_config(arg: str | None = None):
  args = parse_arg(arg, ('tiny', 'val', 'alone'))
  c = get_base_config()
  c.data.name = 'mnist'
  c.data.dir = local_data_dir('mnist')
  set_model(c, 'mlp')             # every hyper-parameter a key, as in the other configs
  c.model.hidden_sizes = (256,)
  c.task = 'classification' if 'alone' in args else 'distill'
  c.distill.temperature = 4.0
  c.distill.alpha = 0.9
  c.batch_size = 128
  c.num_epochs = 20
  c.learning_rate = 1e-3
  c.schedule.warmup_steps = 200
  c.log_every_steps = 500
  c.eval_every_steps = 2345          # every 5 epochs
  c.checkpoint_every_steps = 2345
  c.eval_batch_size = 1000
  if 'val' in args:
    hold_out_validation(c)
  if 'tiny' in args:
    make_tiny(c)
  return c
