"""The model zoo: pure Flax Linen modules and a small explicit registry.

Research code imports the classes directly::

    from models import Transformer, CNN
    model = CNN(num_classes=10)
    variables = model.init(jax.random.key(0), x)

Configs name a model instead (``config.model.name = 'resnet18'``); :func:`build`
turns the name plus hyper-parameters into a module. Each family module exports a
``PRESETS`` dict mapping names to a Module class or a ``functools.partial`` of one.

Every model is called as ``model.apply(variables, inputs, train=..., [mask=...])``
and returns logits; it never reads a config, a file or a flag.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn

from models import cnn, mlp, resnet, rnn, transformer
from models.cnn import CNN, CifarCNN, LeNet5
from models.mlp import MLP
from models.resnet import *  # noqa: F401,F403  (ResNet and its blocks)
from models.rnn import *  # noqa: F401,F403  (LSTM/GRU layers and heads)
from models.transformer import *  # noqa: F401,F403  (Transformer and heads)

REGISTRY: dict[str, Callable[..., nn.Module]] = {}
for _family in (mlp, cnn, resnet, rnn, transformer):
  for _name, _ctor in _family.PRESETS.items():
    if _name in REGISTRY:
      raise ValueError(f'model name {_name!r} registered twice')
    REGISTRY[_name] = _ctor


def module_class(name: str) -> type[nn.Module]:
  ctor = REGISTRY[name]
  return ctor.func if isinstance(ctor, functools.partial) else ctor


def field_names(name: str) -> set[str]:
  """Hyper-parameters a registered model accepts (its dataclass fields)."""
  return {f.name for f in dataclasses.fields(module_class(name))
          if f.init and f.name not in ('parent', 'name')}


def build(name: str, **hparams: Any) -> nn.Module:
  """Builds the registered model ``name`` with ``hparams`` overriding its preset."""
  if name not in REGISTRY:
    raise ValueError(f'unknown model name {name!r}; known: {", ".join(sorted(REGISTRY))}')
  unknown = set(hparams) - field_names(name)
  if unknown:
    raise ValueError(f'model {name!r} has no hyper-parameter(s) {sorted(unknown)}; '
                     f'it takes {sorted(field_names(name))}')
  return REGISTRY[name](**hparams)
