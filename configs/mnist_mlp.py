"""MLP on MNIST (target >= 98.3% test accuracy).

  python -m train --config configs/mnist_mlp.py --workdir runs/mnist_mlp \
      --config.data.dir=../shared/data/mnist
  # choices on a held-out 10% of train:  --config configs/mnist_mlp.py:val
  # smoke run:                           --config configs/mnist_mlp.py:tiny

Unset ``data.dir`` reads TFDS ``mnist`` instead (``JAXLAB_DATA=../shared/data`` also fills it).
"""
from configs.mnist_cnn import mnist_config


def get_config(arg: str | None = None):
  return mnist_config(arg, 'mlp', epochs=20, learning_rate=1e-3,
                      hidden_sizes=(1024, 1024), dropout_rate=0.2)
