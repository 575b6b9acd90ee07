"""Small convolutional classifiers: the flax MNIST CNN, the seed CIFAR CNN and LeNet-5."""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from models.linear import flat_dot_general


class CNN(nn.Module):
  """The flax ``examples/mnist`` CNN: conv32-avgpool-conv64-avgpool-dense256-dense."""
  num_classes: int = 10
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    dense = functools.partial(nn.Dense, dot_general=flat_dot_general, **kw)
    x = x.astype(self.dtype)
    x = nn.relu(nn.Conv(32, (3, 3), **kw)(x))
    x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(nn.Conv(64, (3, 3), **kw)(x))
    x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(dense(256)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return dense(self.num_classes)(x).astype(jnp.float32)


class CifarCNN(nn.Module):
  """The seed document's PyTorch CIFAR CNN: conv32, conv64, max-pool, dense128, dense10."""
  num_classes: int = 10
  dropout_rate: float = 0.25
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    dense = functools.partial(nn.Dense, dot_general=flat_dot_general, **kw)
    x = x.astype(self.dtype)
    x = nn.relu(nn.Conv(32, (3, 3), padding='VALID', **kw)(x))
    x = nn.relu(nn.Conv(64, (3, 3), padding='VALID', **kw)(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(dense(128)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return dense(self.num_classes)(x).astype(jnp.float32)


class LeNet5(nn.Module):
  """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling, as commonly trained today.

  Conv6 5x5 -> pool -> conv16 5x5 -> pool -> 120 -> 84 -> classes. A 28x28 input
  is padded to 32x32 by the first conv's SAME padding, as in the original.
  """
  num_classes: int = 10
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    dense = functools.partial(nn.Dense, dot_general=flat_dot_general, **kw)
    x = x.astype(self.dtype)
    x = nn.relu(nn.Conv(6, (5, 5), padding='SAME', **kw)(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(nn.Conv(16, (5, 5), padding='VALID', **kw)(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(dense(120)(x))
    x = nn.relu(dense(84)(x))
    return dense(self.num_classes)(x).astype(jnp.float32)


PRESETS = {'cnn': CNN, 'cifar_cnn': CifarCNN, 'lenet5': LeNet5}
