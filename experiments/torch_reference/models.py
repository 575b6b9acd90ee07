"""PyTorch twins of four jaxlab models, layer for layer, for speed comparisons only.

- :class:`CNN`: models/cnn.py ``CNN`` (conv32 SAME, avg-pool, conv64, avg-pool, 256, classes);
  NCHW, PyTorch's native CPU layout (ours is NHWC, XLA's).
- :class:`MLP`: models/mlp.py ``MLP`` (Dense + activation + dropout per hidden size, head).
- :class:`TransformerLM`: models/transformer.py ``TransformerLM``: pre-LN blocks with
  separate q/k/v/out projections (biases), causal attention, exact-erf GELU MLP,
  learned positions, final LayerNorm, output tied to the token table (or a head).
- :class:`LSTMLM`: models/rnn.py ``RNNLM`` with cell 'lstm': embedding, dropout,
  stacked LSTM with dropout between layers, dropout, dense head.
- :class:`ResNet`: models/resnet.py ``ResNet`` with basic blocks (ResNet-18 for CIFAR:
  3x3 stem, no pooling, projection shortcuts, bias-free convolutions + BatchNorm).

Constructors take the Flax module's field names, so a built Flax model's fields are
the arguments (see ``bench.hparams_of``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    'relu': F.relu, 'silu': F.silu, 'tanh': torch.tanh, 'sigmoid': torch.sigmoid,
    'gelu': F.gelu, 'gelu_tanh': lambda x: F.gelu(x, approximate='tanh'),
}


class CNN(nn.Module):
  def __init__(self, num_classes=10, dropout_rate=0.0, in_channels=1, image_size=28, **_):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
    self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
    side = image_size // 4
    self.dense = nn.Linear(64 * side * side, 256)
    self.drop = nn.Dropout(dropout_rate)
    self.head = nn.Linear(256, num_classes)

  def forward(self, x):  # x: [B, C, H, W]
    x = F.avg_pool2d(F.relu(self.conv1(x)), 2)
    x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
    x = self.drop(F.relu(self.dense(x.flatten(1))))
    return self.head(x)


class MLP(nn.Module):
  def __init__(self, in_features, num_classes=10, hidden_sizes=(512, 512), activation='relu',
               dropout_rate=0.0, **_):
    super().__init__()
    sizes = [in_features, *hidden_sizes]
    self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
    self.act = ACTIVATIONS[activation]
    self.drop = nn.Dropout(dropout_rate)
    self.head = nn.Linear(sizes[-1], num_classes)

  def forward(self, x):
    x = x.flatten(1)
    for layer in self.layers:
      x = self.drop(self.act(layer(x)))
    return self.head(x)


class Block(nn.Module):
  def __init__(self, hidden_size, num_heads, mlp_dim, dropout_rate, activation, eps):
    super().__init__()
    d = hidden_size
    self.num_heads = num_heads
    self.attention_norm = nn.LayerNorm(d, eps=eps)
    self.query, self.key, self.value, self.out = (nn.Linear(d, d) for _ in range(4))
    self.mlp_norm = nn.LayerNorm(d, eps=eps)
    self.mlp_in = nn.Linear(d, mlp_dim)
    self.mlp_out = nn.Linear(mlp_dim, d)
    self.act = ACTIVATIONS[activation]
    self.drop = nn.Dropout(dropout_rate)

  def forward(self, x):
    b, t, d = x.shape
    h = self.attention_norm(x)
    split = lambda y: y.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)
    q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    x = x + self.drop(self.out(y.transpose(1, 2).reshape(b, t, d)))
    return x + self.drop(self.mlp_out(self.act(self.mlp_in(self.mlp_norm(x)))))


class TransformerLM(nn.Module):
  def __init__(self, vocab_size=256, max_len=1024, num_layers=6, num_heads=8, hidden_size=512,
               mlp_dim=2048, dropout_rate=0.1, activation='gelu', layer_norm_eps=1e-5,
               position='learned', tie_embeddings=True, pre_ln=True, **_):
    super().__init__()
    if position != 'learned' or not pre_ln:
      raise ValueError('the reference covers pre-LN with learned positions only')
    self.word_embeddings = nn.Embedding(vocab_size, hidden_size)
    self.position_embeddings = nn.Embedding(max_len, hidden_size)
    for table in (self.word_embeddings, self.position_embeddings):
      nn.init.normal_(table.weight, std=0.02)
    self.drop = nn.Dropout(dropout_rate)
    self.blocks = nn.ModuleList(
        Block(hidden_size, num_heads, mlp_dim, dropout_rate, activation, layer_norm_eps)
        for _ in range(num_layers))
    self.final_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
    self.lm_head = None if tie_embeddings else nn.Linear(hidden_size, vocab_size, bias=False)

  def forward(self, tokens):
    t = tokens.shape[1]
    x = self.word_embeddings(tokens) + self.position_embeddings(
        torch.arange(t, device=tokens.device))
    x = self.drop(x)
    for block in self.blocks:
      x = block(x)
    x = self.final_norm(x)
    return x @ self.word_embeddings.weight.T if self.lm_head is None else self.lm_head(x)


class LSTMLM(nn.Module):
  def __init__(self, vocab_size=256, embed_dim=128, hidden_size=512, num_layers=2,
               dropout_rate=0.0, **_):
    super().__init__()
    self.embed = nn.Embedding(vocab_size, embed_dim)
    self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True,
                        dropout=dropout_rate if num_layers > 1 else 0.0)
    self.drop = nn.Dropout(dropout_rate)
    self.head = nn.Linear(hidden_size, vocab_size)

  def forward(self, tokens):
    y, _ = self.lstm(self.drop(self.embed(tokens)))
    return self.head(self.drop(y))


class BasicBlock(nn.Module):
  def __init__(self, cin, cout, stride, eps, momentum):
    super().__init__()
    bn = lambda c: nn.BatchNorm2d(c, eps=eps, momentum=momentum)
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = bn(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = bn(cout)
    self.proj = None
    if stride != 1 or cin != cout:
      self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (x if self.proj is None else self.proj(x)))


class ResNet(nn.Module):
  def __init__(self, stage_sizes=(2, 2, 2, 2), block='basic', num_classes=10, num_filters=64,
               stem='cifar', shortcut='projection', bn_momentum=0.9, bn_epsilon=1e-5,
               in_channels=3, **_):
    super().__init__()
    if block != 'basic' or stem != 'cifar' or shortcut != 'projection':
      raise ValueError('the reference covers basic blocks, the CIFAR stem and projections only')
    momentum = 1.0 - bn_momentum  # Flax keeps `momentum` of the old mean; PyTorch mixes in the new
    self.stem = nn.Sequential(nn.Conv2d(in_channels, num_filters, 3, 1, 1, bias=False),
                              nn.BatchNorm2d(num_filters, eps=bn_epsilon, momentum=momentum),
                              nn.ReLU())
    blocks, cin = [], num_filters
    for i, n in enumerate(stage_sizes):
      for j in range(n):
        cout = num_filters * 2 ** i
        blocks.append(BasicBlock(cin, cout, 2 if i > 0 and j == 0 else 1, bn_epsilon, momentum))
        cin = cout
    self.blocks = nn.Sequential(*blocks)
    self.head = nn.Linear(cin, num_classes)

  def forward(self, x):
    return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def count_params(module: nn.Module) -> int:
  return sum(math.prod(p.shape) for p in module.parameters())
