"""LeNet-5 on MNIST (target >= 99.0% test accuracy; LeCun et al. 1998: 0.95% error).

  python -m train --config configs/mnist_lenet.py --workdir runs/mnist_lenet \
      --config.data.dir=../shared/data/mnist
  # :val holds out 10% of train for choices; :tiny is a smoke run.
"""
from configs.mnist_cnn import mnist_config


def get_config(arg: str | None = None):
  return mnist_config(arg, 'lenet5', epochs=15, learning_rate=2e-3)
