"""Multi-layer perceptrons."""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from models.linear import flat_dot_general

ACTIVATIONS: dict[str, Callable] = {
    'relu': nn.relu, 'gelu': nn.gelu, 'tanh': jnp.tanh, 'silu': nn.silu, 'sigmoid': nn.sigmoid,
}


class MLP(nn.Module):
  """Dense layers of ``hidden_sizes`` with an activation and dropout, then a linear head.

  Inputs of any trailing shape are flattened, so images work too. ``num_classes=1``
  gives one logit per example (binary classification: the task applies the sigmoid).
  """
  num_classes: int = 10
  hidden_sizes: Sequence[int] = (512, 512)
  activation: str = 'relu'
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    act = ACTIVATIONS[self.activation]
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    for width in self.hidden_sizes:
      x = nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype,
                   dot_general=flat_dot_general)(x)
      x = act(x)
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                 dot_general=flat_dot_general)(x)
    x = x.astype(jnp.float32)
    return x[:, 0] if self.num_classes == 1 else x


PRESETS = {
    'mlp': MLP,
    # The seed document's Keras example: 2 features -> Dense(16, relu) -> Dense(1, sigmoid).
    'seed_fnn': functools.partial(MLP, num_classes=1, hidden_sizes=(16,)),
}
