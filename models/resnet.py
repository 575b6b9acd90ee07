"""ResNets (He et al. 2015/2016): CIFAR ResNet-20 and ResNet-18, ImageNet ResNet-50.

Layouts follow the reference PyTorch models so parameter counts (and ported weights)
match: bias-free convolutions each followed by BatchNorm, symmetric padding, the stride
in the 3x3 convolution of bottleneck blocks (torchvision's "v1.5"). BatchNorm keeps
running statistics in the ``batch_stats`` collection: apply with
``mutable=['batch_stats']`` when ``train=True``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from models.linear import flat_dot_general

__all__ = ['ResNetBlock', 'BottleneckResNetBlock', 'ResNet', 'ResNet20', 'ResNet18', 'ResNet50']

ModuleDef = Callable[..., nn.Module]


def _pad_shortcut(x, filters: int, strides: tuple[int, int]):
  """He et al.'s option A: subsample and zero-pad channels (both sides, as the common CIFAR code)."""
  x = x[:, ::strides[0], ::strides[1], :]
  extra = filters - x.shape[-1]
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))


class ResNetBlock(nn.Module):
  """Basic block: 3x3 conv-BN-ReLU, 3x3 conv-BN, plus the shortcut, then ReLU."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: tuple[int, int] = (1, 1)
  shortcut: str = 'projection'
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), self.strides)(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters, (3, 3))(y)
    # A zero last scale makes the block start as the identity (Goyal et al. 2017).
    y = self.norm(scale_init=nn.initializers.zeros_init() if self.zero_init_residual
                  else nn.initializers.ones_init())(y)
    if residual.shape != y.shape:
      if self.shortcut == 'pad':
        residual = _pad_shortcut(residual, self.filters, self.strides)
      else:
        residual = self.conv(self.filters, (1, 1), self.strides, name='conv_proj')(residual)
        residual = self.norm(name='norm_proj')(residual)
    return nn.relu(residual + y)


class BottleneckResNetBlock(nn.Module):
  """Bottleneck block: 1x1 reduce, 3x3 (strided), 1x1 expand to ``4 * filters``."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: tuple[int, int] = (1, 1)
  shortcut: str = 'projection'
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x):
    residual = x
    y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = nn.relu(self.norm()(self.conv(self.filters, (3, 3), self.strides)(y)))
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.zeros_init() if self.zero_init_residual
                  else nn.initializers.ones_init())(y)
    if residual.shape != y.shape:
      if self.shortcut == 'pad':
        residual = _pad_shortcut(residual, self.filters * 4, self.strides)
      else:
        residual = self.conv(self.filters * 4, (1, 1), self.strides, name='conv_proj')(residual)
        residual = self.norm(name='norm_proj')(residual)
    return nn.relu(residual + y)


def _conv(features: int, kernel_size: tuple[int, int], strides: tuple[int, int] = (1, 1),
          **kwargs) -> nn.Conv:
  """A bias-free convolution (BatchNorm follows) padded by ``kernel // 2`` on every side."""
  padding = tuple((k // 2, k // 2) for k in kernel_size)
  return nn.Conv(features, kernel_size, strides, padding=padding, use_bias=False, **kwargs)


BLOCKS = {'basic': ResNetBlock, 'bottleneck': BottleneckResNetBlock}


class ResNet(nn.Module):
  """A ResNet: stem, stages of residual blocks (widths ``num_filters * 2**i``), pool, dense.

  ``stem='cifar'``: one 3x3 conv, no pooling (32x32 inputs). ``stem='imagenet'``: 7x7
  stride-2 conv and a 3x3 stride-2 max-pool. ``shortcut`` is how a block changes shape:
  ``'projection'`` (1x1 conv + BN) or ``'pad'`` (parameter-free, the CIFAR ResNet-20 of
  the paper). Returns ``[B, num_classes]`` float32 logits (``[B]`` when ``num_classes == 1``).
  """
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = 'basic'
  num_classes: int = 10
  num_filters: int = 64
  stem: str = 'cifar'
  shortcut: str = 'projection'
  zero_init_residual: bool = False
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.block not in BLOCKS:
      raise ValueError(f'unknown block {self.block!r}; known: {", ".join(BLOCKS)}')
    if self.stem not in ('cifar', 'imagenet'):
      raise ValueError(f'unknown stem {self.stem!r}; known: cifar, imagenet')
    if self.shortcut not in ('projection', 'pad'):
      raise ValueError(f'unknown shortcut {self.shortcut!r}; known: projection, pad')
    # Explicit symmetric padding (PyTorch's) rather than 'SAME', which pads strided
    # convolutions on even inputs only at the bottom/right; shapes are the same.
    conv = functools.partial(_conv, dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    x = x.astype(self.dtype)
    if self.stem == 'imagenet':
      x = conv(self.num_filters, (7, 7), (2, 2), name='conv_init')(x)
      x = nn.relu(norm(name='bn_init')(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = conv(self.num_filters, (3, 3), name='conv_init')(x)
      x = nn.relu(norm(name='bn_init')(x))
    block_cls = BLOCKS[self.block]
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = (2, 2) if i > 0 and j == 0 else (1, 1)
        x = block_cls(self.num_filters * 2 ** i, conv=conv, norm=norm, strides=strides,
                      shortcut=self.shortcut, zero_init_residual=self.zero_init_residual)(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                 dot_general=flat_dot_general, name='head')(x).astype(jnp.float32)
    return x[:, 0] if self.num_classes == 1 else x


ResNet20 = functools.partial(ResNet, stage_sizes=(3, 3, 3), block='basic', num_filters=16,
                             stem='cifar', shortcut='pad', num_classes=10)
ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block='basic', num_filters=64,
                             stem='cifar', num_classes=10)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block='bottleneck',
                             num_filters=64, stem='imagenet', num_classes=1000)

PRESETS = {'resnet20': ResNet20, 'resnet18': ResNet18, 'resnet50': ResNet50}
