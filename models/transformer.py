"""Transformers: a block stack, a GPT-style decoder LM and BERT-style encoders.

- :class:`Transformer`: the stack of pre-LN or post-LN blocks over ``[B, T, D]`` features.
- :class:`TransformerLM`: a decoder-only, causal language model (GPT-2 layout), sampled
  with a key/value cache by :func:`models.sampling.generate`.
- :class:`BertEncoder`, :class:`BertClassifier`, :class:`BertMLM`: BERT's embeddings
  (token + position + token type, LayerNorm), post-LN blocks and its heads. Parameter
  names follow one layout so :mod:`models.pretrained` maps Hugging Face checkpoints on.

Positions are ``'learned'``, ``'sinusoidal'`` (Vaswani et al.) or ``'rotary'`` (RoPE,
applied to queries and keys in every layer). ``remat`` recomputes each block in the
backward pass: ``'full'`` saves nothing, ``'dots'`` saves matmuls without batch dims.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import MultiHeadAttention, padding_mask
from models.linear import Embed, flat_dot_general, over_rows
from models.sampling import generate

__all__ = ['Transformer', 'TransformerBlock', 'TransformerLM', 'Embeddings', 'BertEncoder',
           'BertClassifier', 'BertMLM', 'generate', 'mean_pool', 'sinusoidal_embedding']


def gelu_erf(x: jax.Array) -> jax.Array:
  """The exact GELU, ``x * Phi(x)``, written as PyTorch and Hugging Face write it.

  ``jax.nn.gelu(approximate=False)`` computes ``Phi`` through ``erfc`` instead. The whole
  train step runs at the same speed either way (1.01x, within noise; experiments/README.md):
  this form is kept because it is the formula the PyTorch twins and the imported
  checkpoints were trained with. The two agree to float32 round-off; only
  far in the left tail (x < -5, where GELU is below 3e-6) does ``1 + erf`` keep fewer
  significant digits, as it does in PyTorch.
  """
  return x * 0.5 * (1.0 + jax.lax.erf(x * jnp.asarray(0.7071067811865476, x.dtype)))


ACTIVATIONS = {
    'gelu': gelu_erf,  # exact erf GELU (BERT, HF 'gelu', PyTorch nn.GELU())
    'gelu_tanh': functools.partial(nn.gelu, approximate=True),  # GPT-2's 'gelu_new'
    'relu': nn.relu,
    'silu': nn.silu,
}
POSITIONS = ('learned', 'sinusoidal', 'rotary')
REMAT = ('none', 'full', 'dots')
INIT = nn.initializers.normal(0.02)  # BERT and GPT-2 initialise every matrix this way


def _layer_norm(eps: float, dtype, param_dtype, name: str) -> nn.LayerNorm:
  # Two-pass variance: E[x^2]-E[x]^2 loses digits that the PyTorch-parity tests need.
  return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=param_dtype,
                      use_fast_variance=False, name=name)


def sinusoidal_embedding(positions: jax.Array, features: int) -> jax.Array:
  """``PE[p, 2i] = sin(p / 10000^(2i/d))``, ``PE[p, 2i+1] = cos(...)`` for ``positions [...]``."""
  inv_freq = 10000.0 ** (-jnp.arange(0, features, 2, dtype=jnp.float32) / features)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq
  pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  return pe.reshape(positions.shape + (-1,))[..., :features]


def mean_pool(hidden: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """The mean of ``hidden [B, T, D]`` over real tokens (sentence-transformers' pooling)."""
  if mask is None:
    return hidden.mean(axis=1)
  w = mask.astype(hidden.dtype)[..., None]
  return (hidden * w).sum(axis=1) / jnp.maximum(w.sum(axis=1), 1e-9)


def _check_choice(name: str, value: str, choices) -> None:
  if value not in choices:
    raise ValueError(f'{name} must be one of {choices}, got {value!r}')


class TransformerBlock(nn.Module):
  """Attention then MLP, each with dropout on its output and a residual connection.

  Pre-LN normalises each sublayer's input (GPT-2); post-LN normalises after the
  residual sum (the original Transformer, BERT). Parameter names are the same both ways.
  """
  num_heads: int
  hidden_size: int
  mlp_dim: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  causal: bool = False
  pre_ln: bool = True
  activation: str = 'gelu'
  layer_norm_eps: float = 1e-5
  rotary: bool = False
  decode: bool = False
  attention_impl: str = 'auto'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, positions, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    attention = MultiHeadAttention(
        self.num_heads, self.hidden_size, causal=self.causal, rotary=self.rotary,
        dropout_rate=self.attention_dropout_rate, decode=self.decode,
        implementation=self.attention_impl, name='attention', **kw)
    drop = lambda y: nn.Dropout(self.dropout_rate, deterministic=not train)(y)

    def mlp(y):
      dense = functools.partial(nn.Dense, kernel_init=INIT, dot_general=flat_dot_general, **kw)
      y = dense(self.mlp_dim, name='mlp_in')(y)
      y = ACTIVATIONS[self.activation](y)
      return dense(self.hidden_size, name='mlp_out')(y)

    attention_norm = _layer_norm(self.layer_norm_eps, name='attention_norm', **kw)
    mlp_norm = _layer_norm(self.layer_norm_eps, name='mlp_norm', **kw)
    if self.pre_ln:
      x = x + drop(attention(attention_norm(x), mask, positions, train))
      return x + drop(mlp(mlp_norm(x)))
    x = attention_norm(x + drop(attention(x, mask, positions, train)))
    return mlp_norm(x + drop(mlp(x)))


class Transformer(nn.Module):
  """``num_layers`` blocks over features ``x [B, T, hidden_size]``; pre-LN adds a final norm.

  ``mask [B, T]`` (True on real tokens) hides padded keys; ``causal`` hides the future.
  Of ``position`` only ``'rotary'`` acts here (embeddings add the other kinds).
  """
  num_layers: int = 6
  num_heads: int = 8
  hidden_size: int = 512
  mlp_dim: int = 2048
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.0
  causal: bool = False
  pre_ln: bool = True
  activation: str = 'gelu'
  layer_norm_eps: float = 1e-5
  position: str = 'learned'
  remat: str = 'none'
  decode: bool = False
  attention_impl: str = 'auto'  # auto (cuDNN flash on GPU in half precision, else xla) | xla | jax | cudnn
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, positions=None, train: bool = False):
    _check_choice('position', self.position, POSITIONS)
    _check_choice('remat', self.remat, REMAT)
    _check_choice('activation', self.activation, tuple(ACTIVATIONS))
    block = TransformerBlock
    if self.remat != 'none':
      policy = (jax.checkpoint_policies.dots_with_no_batch_dims_saveable
                if self.remat == 'dots' else None)
      # Argument 4 (counting self) is ``train``: a Python bool that must stay static.
      block = nn.remat(TransformerBlock, policy=policy, static_argnums=(4,))
    attn_mask = None if self.decode else padding_mask(mask)
    for i in range(self.num_layers):
      x = block(
          self.num_heads, self.hidden_size, self.mlp_dim, dropout_rate=self.dropout_rate,
          attention_dropout_rate=self.attention_dropout_rate, causal=self.causal,
          pre_ln=self.pre_ln, activation=self.activation, layer_norm_eps=self.layer_norm_eps,
          rotary=self.position == 'rotary', decode=self.decode,
          attention_impl=self.attention_impl, dtype=self.dtype, param_dtype=self.param_dtype,
          name=f'layer_{i}')(x, attn_mask, positions, train)
    if self.pre_ln:
      x = _layer_norm(self.layer_norm_eps, self.dtype, self.param_dtype, 'final_norm')(x)
    return x


def _stack_kwargs(module: nn.Module, **overrides) -> dict:
  """The :class:`Transformer` fields of a subclass instance, to build its stack."""
  kw = {f.name: getattr(module, f.name) for f in dataclasses.fields(Transformer)
        if f.init and f.name not in ('parent', 'name')}
  return {**kw, **overrides}


class Embeddings(nn.Module):
  """Token embeddings plus learned or sinusoidal positions (none for rotary), token types
  when ``type_vocab_size > 0``, an optional LayerNorm (BERT), then dropout.

  :meth:`attend` multiplies by the transposed token table: tied output weights.
  """
  vocab_size: int
  hidden_size: int
  max_len: int
  position: str = 'learned'
  type_vocab_size: int = 0
  layer_norm: bool = False
  layer_norm_eps: float = 1e-12
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, embedding_init=INIT)
    self.word_embeddings = Embed(self.vocab_size, self.hidden_size, **kw)
    if self.position == 'learned':
      self.position_embeddings = Embed(self.max_len, self.hidden_size, **kw)
    if self.type_vocab_size:
      self.token_type_embeddings = Embed(self.type_vocab_size, self.hidden_size, **kw)
    if self.layer_norm:
      self.embed_norm = _layer_norm(self.layer_norm_eps, self.dtype, self.param_dtype, None)
    self.dropout = nn.Dropout(self.dropout_rate)

  def __call__(self, tokens, positions, token_types=None, train: bool = False):
    if self.position == 'learned' and tokens.shape[-1] > self.max_len:
      # An out-of-range lookup would silently give NaN embeddings.
      raise ValueError(f'{tokens.shape[-1]} tokens exceed max_len {self.max_len} (learned positions)')
    x = self.word_embeddings(tokens)
    if self.position == 'learned':
      x = x + self.position_embeddings(positions)
    elif self.position == 'sinusoidal':
      x = x + sinusoidal_embedding(positions, self.hidden_size).astype(x.dtype)
    if self.type_vocab_size:
      types = jnp.zeros_like(tokens) if token_types is None else token_types
      x = x + self.token_type_embeddings(types)
    if self.layer_norm:
      x = self.embed_norm(x)
    return self.dropout(x, deterministic=not train)

  def attend(self, x):
    # Over rows [B*T, D], as the Dense layers (models/linear.py): a 2-D weight gradient.
    return over_rows(self.word_embeddings.attend, x)


class TransformerLM(Transformer):
  """A GPT-style decoder: embeddings, causal pre-LN blocks, logits ``[B, T, vocab_size]``.

  ``mask`` (True on real tokens) is combined with the causal mask; it is ignored with
  ``decode=True``, where positions continue from the cache (see :mod:`models.sampling`).
  """
  vocab_size: int = 256
  max_len: int = 1024
  causal: bool = True
  tie_embeddings: bool = True

  @nn.compact
  def __call__(self, tokens, mask=None, train: bool = False):
    _check_choice('position', self.position, POSITIONS)
    t = tokens.shape[1]
    start = 0
    if self.decode:
      is_initialized = self.has_variable('cache', 'position')
      offset = self.variable('cache', 'position', lambda: jnp.array(0, jnp.int32))
      if is_initialized:
        start = offset.value
        offset.value = start + t
    positions = start + jnp.arange(t)
    embed = Embeddings(self.vocab_size, self.hidden_size, self.max_len, position=self.position,
                       dropout_rate=self.dropout_rate, dtype=self.dtype,
                       param_dtype=self.param_dtype, name='embed')
    x = embed(tokens, positions, train=train)
    x = Transformer(**_stack_kwargs(self), name='decoder')(x, mask, positions, train)
    if self.tie_embeddings:
      logits = embed.attend(x)
    else:
      logits = nn.Dense(self.vocab_size, use_bias=False, dtype=self.dtype,
                        param_dtype=self.param_dtype, kernel_init=INIT,
                        dot_general=flat_dot_general, name='lm_head')(x)
    return logits.astype(jnp.float32)


class _BertFields(Transformer):
  """The hyper-parameters shared by the BERT modules (defaults: BERT-base)."""
  num_layers: int = 12
  num_heads: int = 12
  hidden_size: int = 768
  mlp_dim: int = 3072
  attention_dropout_rate: float = 0.1
  pre_ln: bool = False
  layer_norm_eps: float = 1e-12
  vocab_size: int = 30522
  max_len: int = 512
  type_vocab_size: int = 2


class BertEncoder(_BertFields):
  """BERT: token + position + token-type embeddings with LayerNorm, post-LN blocks.

  Returns the last hidden states ``[B, T, hidden_size]`` (the Hugging Face
  ``last_hidden_state``). Defaults are BERT-base's.
  """

  def setup(self):
    _check_choice('position', self.position, POSITIONS)
    self.embeddings = Embeddings(
        self.vocab_size, self.hidden_size, self.max_len, position=self.position,
        type_vocab_size=self.type_vocab_size, layer_norm=True, layer_norm_eps=self.layer_norm_eps,
        dropout_rate=self.dropout_rate, dtype=self.dtype, param_dtype=self.param_dtype)
    self.transformer = Transformer(**_stack_kwargs(self))

  def __call__(self, tokens, mask=None, train: bool = False, token_types=None):
    positions = jnp.arange(tokens.shape[1])
    x = self.embeddings(tokens, positions, token_types, train=train)
    return self.transformer(x, mask, positions, train)

  def attend(self, x):
    return self.embeddings.attend(x)


def _encoder_kwargs(module: nn.Module) -> dict:
  return {f.name: getattr(module, f.name) for f in dataclasses.fields(BertEncoder)
          if f.init and f.name not in ('parent', 'name')}


class BertClassifier(_BertFields):
  """A BERT encoder and a classification head: logits ``[B, num_classes]`` float32.

  ``pooling='cls'`` takes the first token through BERT's dense+tanh pooler;
  ``'mean'`` averages real tokens (sentence-transformers, e.g. all-MiniLM). As in
  :class:`models.MLP`, ``num_classes=1`` gives one logit per example.
  """
  num_classes: int = 2
  pooling: str = 'cls'

  @nn.compact
  def __call__(self, tokens, mask=None, train: bool = False, token_types=None):
    _check_choice('pooling', self.pooling, ('cls', 'mean'))
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=INIT,
              dot_general=flat_dot_general)
    h = BertEncoder(**_encoder_kwargs(self), name='encoder')(tokens, mask, train, token_types)
    if self.pooling == 'cls':
      pooled = jnp.tanh(nn.Dense(self.hidden_size, name='pooler', **kw)(h[:, 0]))
    else:
      pooled = mean_pool(h, mask)
    pooled = nn.Dropout(self.dropout_rate, deterministic=not train)(pooled)
    logits = nn.Dense(self.num_classes, name='classifier', **kw)(pooled).astype(jnp.float32)
    return logits[:, 0] if self.num_classes == 1 else logits


class BertMLM(_BertFields):
  """A BERT encoder and BERT's masked-LM head: logits ``[B, T, vocab_size]`` float32.

  The head is dense + activation + LayerNorm, then the transposed word embeddings
  (tied, as BERT) plus a per-token bias.
  """

  @nn.compact
  def __call__(self, tokens, mask=None, train: bool = False, token_types=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    encoder = BertEncoder(**_encoder_kwargs(self), name='encoder')
    h = encoder(tokens, mask, train, token_types)
    y = nn.Dense(self.hidden_size, kernel_init=INIT, dot_general=flat_dot_general,
                 name='mlm_transform', **kw)(h)
    y = ACTIVATIONS[self.activation](y)
    y = _layer_norm(self.layer_norm_eps, name='mlm_norm', **kw)(y)
    bias = self.param('mlm_bias', nn.initializers.zeros, (self.vocab_size,), self.param_dtype)
    return (encoder.attend(y) + bias.astype(self.dtype)).astype(jnp.float32)


_SMALL_BERT = dict(num_layers=4, num_heads=4, hidden_size=256, mlp_dim=1024)

PRESETS = {
    # A small decoder (the vocabulary comes from the dataset).
    'transformer_lm': TransformerLM,
    # GPT-2 small (124M): 12 x 768, 12 heads, context 1024, tied embeddings, tanh GELU.
    'gpt2_small': functools.partial(
        TransformerLM, num_layers=12, num_heads=12, hidden_size=768, mlp_dim=3072,
        vocab_size=50257, max_len=1024, activation='gelu_tanh', layer_norm_eps=1e-5),
    'bert_classifier': functools.partial(BertClassifier, **_SMALL_BERT),
    'bert_mlm': functools.partial(BertMLM, **_SMALL_BERT),
    # BERT-base (110M): the BertClassifier defaults.
    'bert_base': BertClassifier,
    # sentence-transformers/all-MiniLM-L6-v2: load its weights with models.pretrained.
    'minilm_classifier': functools.partial(
        BertClassifier, num_layers=6, num_heads=12, hidden_size=384, mlp_dim=1536,
        vocab_size=30522, max_len=512, type_vocab_size=2, layer_norm_eps=1e-12,
        activation='gelu', pooling='mean'),
}
