"""Autoregressive sampling from a decoder LM with a key/value cache.

The model runs with ``decode=True``: its attention layers keep keys and values in the
``'cache'`` collection, so after the prompt is prefilled in one call every new token
costs one position, not a pass over the whole sequence. The loop is a
``lax.fori_loop`` inside one ``jax.jit``.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def init_cache(model, batch_size: int, length: int) -> dict:
  """A zero cache for ``batch_size`` sequences of up to ``length`` tokens (nothing else allocated)."""
  decoder = model.clone(decode=True)
  shapes = jax.eval_shape(lambda: decoder.init(
      jax.random.key(0), jnp.ones((batch_size, length), jnp.int32), train=False))
  return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes['cache'])


def sample_logits(logits, rng, temperature=1.0, top_k: int | None = None,
                  greedy: bool = False) -> jax.Array:
  """Next tokens ``[B]`` from ``logits [B, V]``: argmax, or softmax(logits / T) over the top k."""
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / temperature
  if top_k is not None:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=('model', 'max_new_tokens', 'top_k', 'greedy'))
def generate(model, params, prompt_tokens, max_new_tokens: int, rng, temperature=1.0,
             top_k: int | None = None, greedy: bool = False) -> jax.Array:
  """Continues ``prompt_tokens [B, T0]`` by ``max_new_tokens``: returns ``[B, T0 + max_new_tokens]``.

  ``model`` is a :class:`models.TransformerLM` (any ``decode`` setting) and ``params``
  its ``variables['params']``. Every prompt has the same length ``T0 >= 1``; there is
  no padding. ``greedy`` takes the argmax; otherwise tokens are drawn from
  ``softmax(logits / temperature)``, restricted to the ``top_k`` largest when given.
  """
  b, t0 = prompt_tokens.shape
  total = t0 + max_new_tokens
  if t0 < 1:
    raise ValueError('generate needs a prompt of at least one token')
  if getattr(model, 'position', None) == 'learned' and total > model.max_len:
    raise ValueError(f'prompt ({t0}) + max_new_tokens ({max_new_tokens}) exceeds the model\'s '
                     f'max_len {model.max_len} (learned positions)')
  prompt_tokens = prompt_tokens.astype(jnp.int32)
  if max_new_tokens == 0:
    return prompt_tokens
  # Dropout is off at inference; remat only matters for gradients.
  decoder = model.clone(decode=True, remat='none')

  def step(tokens, cache):
    logits, mutated = decoder.apply({'params': params, 'cache': cache}, tokens,
                                    train=False, mutable=['cache'])
    return logits[:, -1], mutated['cache']

  logits, cache = step(prompt_tokens, init_cache(decoder, b, total))  # prefill the whole prompt
  rng, sub = jax.random.split(rng)
  out = jnp.zeros((b, total), jnp.int32).at[:, :t0].set(prompt_tokens)
  out = out.at[:, t0].set(sample_logits(logits, sub, temperature, top_k, greedy))

  def body(i, carry):
    out, cache, rng = carry
    current = jax.lax.dynamic_slice(out, (0, i), (b, 1))
    logits, cache = step(current, cache)
    rng, sub = jax.random.split(rng)
    nxt = sample_logits(logits, sub, temperature, top_k, greedy)
    return jax.lax.dynamic_update_slice(out, nxt[:, None], (0, i + 1)), cache, rng

  out, _, _ = jax.lax.fori_loop(t0, total - 1, body, (out, cache, rng))
  return out
