"""Multi-head self-attention: masks, rotary positions and a key/value cache for decoding.

The core is :func:`dot_product_attention`: cuDNN flash attention (through
``jax.nn.dot_product_attention``) on GPUs with half-precision inputs, and elsewhere
an explicit softmax between two heads-major batched dots, which XLA:CPU runs faster
than ``jax.nn.dot_product_attention``'s own XLA path and which also carries
attention-probability dropout (the fused kernels offer none).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.linear import flat_dot_general

IMPLEMENTATIONS = ('auto', 'xla', 'jax', 'cudnn')


def padding_mask(mask: jax.Array | None) -> jax.Array | None:
  """``[B, S]`` True-on-real-tokens -> ``[B, 1, 1, S]``: every query may see the real keys."""
  return None if mask is None else mask.astype(bool)[:, None, None, :]


def _use_cudnn(q, k, implementation: str) -> bool:
  if implementation != 'auto':
    return implementation == 'cudnn'
  # cuDNN's flash kernel takes only half precision and head sizes it has kernels for; a
  # decoding step (queries shorter than keys) stays on XLA.
  return (jax.default_backend() == 'gpu' and q.dtype in (jnp.bfloat16, jnp.float16)
          and q.shape[-1] % 8 == 0 and q.shape[-1] <= 128 and q.shape[1] == k.shape[1])


def _attention_xla(q, k, v, mask, causal: bool, dropout_rate: float, dropout_rng) -> jax.Array:
  """The explicit softmax, with the two batched dots in heads-major ``[B, N, T, H]`` layout.

  With batch and heads leading, each dot is a plain batched matmul; XLA:CPU runs the
  forward and backward of the ``[B, T, N, H]`` einsums (``jax.nn.dot_product_attention``'s
  XLA path) about 1.9x slower on the char Transformer's shapes (experiments/README).

  Causal self-attention runs as two query halves, the first over the first half of the
  keys only: the quarter of the scores that is all masked is never computed, as flash
  kernels skip masked blocks (the char Transformer's step 1.02-1.04x on CPU). The result
  is the same softmax, since masked keys add exactly zero to it.
  """
  heads_major = lambda x: x.transpose(0, 2, 1, 3)
  q, k, v = heads_major(q), heads_major(k), heads_major(v)
  t, s = q.shape[2], k.shape[2]
  keep = None
  if dropout_rate > 0.0 and dropout_rng is not None:
    # Drawn whole, so the two halves use the same bits as one unsplit softmax would.
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, q.shape[:3] + (s,))
  core = lambda rows, cols: _softmax_attention(q[:, :, rows], k[:, :, cols], v[:, :, cols],
                                               _block(mask, rows, cols), causal, rows.start,
                                               _block(keep, rows, cols), dropout_rate)
  if causal and t == s and t % 2 == 0:
    first, second = slice(0, t // 2), slice(t // 2, t)
    out = jnp.concatenate([core(first, first), core(second, slice(0, t))], axis=2)
  else:
    out = core(slice(0, t), slice(0, s))
  return heads_major(out)


def _block(x, rows: slice, cols: slice):
  """Rows and columns of a mask broadcastable to ``[B, N, T, S]`` (size-1 axes kept)."""
  if x is None:
    return None
  x = x if x.shape[-2] == 1 else x[..., rows, :]
  return x if x.shape[-1] == 1 else x[..., cols]


def _softmax_attention(q, k, v, mask, causal: bool, first_query: int, keep, dropout_rate):
  """``softmax(q k^T / sqrt(d)) v`` in heads-major layout; query ``i`` sits at ``first_query + i``."""
  logits = jnp.einsum('bnth,bnsh->bnts', q, k, preferred_element_type=jnp.float32)
  logits = logits * (1.0 / np.sqrt(q.shape[-1]))
  allowed = None
  if causal:
    t, s = logits.shape[-2:]
    allowed = jnp.arange(s)[None, :] <= first_query + jnp.arange(t)[:, None]
  if mask is not None:
    allowed = mask if allowed is None else jnp.logical_and(allowed, mask)
  if allowed is not None:
    logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  if keep is not None:
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
  return jnp.einsum('bnts,bnsh->bnth', probs.astype(v.dtype), v)


def dot_product_attention(q, k, v, mask=None, *, causal: bool = False,
                          implementation: str = 'auto', dropout_rate: float = 0.0,
                          dropout_rng: jax.Array | None = None) -> jax.Array:
  """``softmax(q k^T / sqrt(d) + masks) v`` over ``[B, T, N, H]`` arrays.

  ``mask`` is boolean, broadcastable to ``[B, N, T, S]``, True where a query may
  attend; ``causal`` adds the lower-triangular mask. ``implementation``: ``'cudnn'``
  is cuDNN's flash kernel (half precision on GPUs), ``'xla'`` an explicit softmax
  between two heads-major batched dots (fastest on CPU), ``'jax'`` the XLA path of
  ``jax.nn.dot_product_attention``, and ``'auto'`` cuDNN where it applies, else
  ``'xla'``. Dropout on the attention probabilities (``dropout_rng`` given and
  ``dropout_rate > 0``) always takes the ``'xla'`` path: the fused kernels have none.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'attention implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}')
  if dropout_rate > 0.0 and dropout_rng is not None:
    return _attention_xla(q, k, v, mask, causal, dropout_rate, dropout_rng)
  if implementation == 'jax':
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal, implementation='xla')
  if _use_cudnn(q, k, implementation):
    try:
      if mask is not None and mask.shape[:3] == (q.shape[0], 1, 1):
        # The flash kernel takes padding as key lengths, which assumes right padding
        # (what train/data produces); a general mask goes in as a bias.
        lengths = mask[:, 0, 0, :].sum(-1).astype(jnp.int32)
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation='cudnn',
                                            key_value_seq_lengths=lengths)
      return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                          implementation='cudnn')
    except (ValueError, NotImplementedError, RuntimeError):
      if implementation == 'cudnn':
        raise
      # 'auto': a shape or version cuDNN refuses at trace time falls back to XLA.
  return _attention_xla(q, k, v, mask, causal, 0.0, None)


def rotary_embedding(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotates ``x [B, T, N, H]`` by angle ``position * base^(-2i/H)`` in pairs ``(i, i + H/2)``.

  RoFormer's rotary embedding in the "rotate half" layout (GPT-NeoX, Llama):
  ``<rot(q, m), rot(k, n)>`` then depends on ``m - n`` only. ``positions`` is ``[T]``
  or ``[B, T]``.
  """
  h = x.shape[-1]
  if h % 2:
    raise ValueError(f'rotary embedding needs an even head size, got {h}')
  inv_freq = base ** (-jnp.arange(0, h, 2, dtype=jnp.float32) / h)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq   # [(B,) T, H/2]
  angles = angles[..., None, :]                                   # [(B,) T, 1, H/2]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class MultiHeadAttention(nn.Module):
  """Self-attention with ``num_heads`` heads over ``hidden_size`` features.

  With ``decode=True`` keys and values go to the ``'cache'`` collection (created at
  ``init`` with the init input's length, as flax ``examples/lm1b``); each later call
  writes its ``T >= 1`` new positions at the cache index and attends causally over
  everything written so far, so a whole prompt can be prefilled in one call.
  """
  num_heads: int
  hidden_size: int
  causal: bool = False
  rotary: bool = False
  dropout_rate: float = 0.0  # on attention probabilities
  decode: bool = False
  implementation: str = 'auto'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.normal(0.02)

  @nn.compact
  def __call__(self, x, mask=None, positions=None, train: bool = False):
    if self.hidden_size % self.num_heads:
      raise ValueError(f'hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}')
    b, t, _ = x.shape
    head_dim = self.hidden_size // self.num_heads
    dense = lambda name: nn.Dense(self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
                                  kernel_init=self.kernel_init, dot_general=flat_dot_general,
                                  name=name)
    split = lambda y: y.reshape(b, t, self.num_heads, head_dim)
    q, k, v = (split(dense(n)(x)) for n in ('query', 'key', 'value'))
    if self.rotary:
      positions = jnp.arange(t) if positions is None else positions
      q, k = rotary_embedding(q, positions), rotary_embedding(k, positions)

    causal = self.causal
    if self.decode and self.has_variable('cache', 'cached_key'):
      cached_key = self.variable('cache', 'cached_key', jnp.zeros, k.shape, k.dtype)
      cached_value = self.variable('cache', 'cached_value', jnp.zeros, v.shape, v.dtype)
      index = self.variable('cache', 'cache_index', lambda: jnp.array(0, jnp.int32))
      start = index.value
      k = jax.lax.dynamic_update_slice(cached_key.value, k, (0, start, 0, 0))
      v = jax.lax.dynamic_update_slice(cached_value.value, v, (0, start, 0, 0))
      cached_key.value, cached_value.value, index.value = k, v, start + t
      # Query i sits at position start + i and sees cache slots up to it; unwritten slots
      # lie beyond every query, so this one mask is both causal and "written so far".
      visible = jnp.arange(k.shape[1])[None, :] <= (start + jnp.arange(t))[:, None]
      mask, causal = visible[None, None], False
    elif self.decode:  # init: create the cache with this input's shape, attend as usual
      self.variable('cache', 'cached_key', jnp.zeros, k.shape, k.dtype)
      self.variable('cache', 'cached_value', jnp.zeros, v.shape, v.dtype)
      self.variable('cache', 'cache_index', lambda: jnp.array(0, jnp.int32))

    dropout_rng = None
    if train and self.dropout_rate > 0.0:
      dropout_rng = self.make_rng('dropout')
    y = dot_product_attention(q, k, v, mask, causal=causal, implementation=self.implementation,
                              dropout_rate=self.dropout_rate, dropout_rng=dropout_rng)
    return dense('out')(y.reshape(b, t, self.hidden_size))
