"""Cross-entropy and argmax over the vocabulary in one read of the logits.

``jax.nn.logsumexp`` reads a row twice (its max, then the sum of exponentials) and the
accuracy's ``jnp.argmax`` reads it a third time. On GPT-2's ``[16, 1024, 50304]`` logits those
three passes took 1.30 + 0.62 + 0.66 ms of a 36 ms step on an H100 (experiments/README.md):
memory-bound reads of 1.6 GB each. Here one variadic reduction carries the running max, its
index and the sum of exponentials scaled to that max (the online softmax of Milakov and
Gimelshein, 2018), so the row is read once. The backward is the closed form
``softmax - onehot`` in one elementwise pass, which fuses with the logits' producer.

Opt-in (``config.one_pass_loss``) and meant for GPUs, where it has not been timed yet
(experiments/device_session.py's ``gpt2_loss`` stage does that). On CPU it gains nothing:
XLA:CPU runs the merge below as a scalar loop with an ``exp`` per logit. Loss and accuracy
of ``[4, 256, 50304]`` float32 logits on a 2-core Zen 5: forward 251 ms against 263 for the
default loss, forward and gradient 288 against 213.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def _combine(a, b):
  """Merges two partial reductions ``(max, index of the max, sum of exp(x - max))``.

  Associative and commutative, so XLA may tree the reduction as it likes. Ties in the max
  keep the lower index, as ``jnp.argmax`` does. A ``-inf`` max (an empty part, or a
  masked-out logit) adds nothing, without computing ``exp(-inf - -inf)``.
  """
  (m1, i1, s1), (m2, i2, s2) = a, b
  first = (m1 > m2) | ((m1 == m2) & (i1 < i2))
  hi, lo = jnp.where(first, m1, m2), jnp.where(first, m2, m1)
  s_hi, s_lo = jnp.where(first, s1, s2), jnp.where(first, s2, s1)
  scaled = jnp.where(lo == -jnp.inf, 0.0, s_lo * jnp.exp(lo - hi))
  return hi, jnp.where(first, i1, i2), s_hi + scaled


def logsumexp_argmax(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(logsumexp(logits, -1), argmax(logits, -1))`` in float32 and int32, from one reduction."""
  x = logits.astype(jnp.float32)
  index = lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  init = (jnp.array(-jnp.inf, jnp.float32), jnp.array(jnp.iinfo(jnp.int32).max, jnp.int32),
          jnp.array(0.0, jnp.float32))
  m, arg, s = lax.reduce((x, index, jnp.ones_like(x)), init, _combine, (x.ndim - 1,))
  return m + jnp.log(s), arg


@jax.custom_vjp
def cross_entropy_argmax(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-position ``logsumexp(logits) - logits[label]`` (float32) and ``argmax(logits)`` (int32).

  The loss equals ``optax.softmax_cross_entropy_with_integer_labels`` on float32 logits (to
  rounding: the sum is taken in another order) and the argmax ``jnp.argmax``'s; ``logits``
  may be bfloat16 and are read as float32. The gradient with respect to ``logits`` is
  ``softmax(logits) - onehot(labels)`` times the loss's cotangent, in ``logits.dtype``.
  """
  return _forward(logits, labels)[0]


def _forward(logits, labels):
  lse, arg = logsumexp_argmax(logits)
  # A gather of one logit per position (labels are in range: no bounds mask to compute).
  picked = jnp.take_along_axis(logits, labels[..., None], axis=-1, mode='clip')[..., 0]
  picked = picked.astype(jnp.float32)
  return (lse - picked, arg), (logits, labels, lse)


def _backward(residuals, cotangents):
  logits, labels, lse = residuals
  g, _ = cotangents  # the argmax is an integer output: its cotangent is float0
  hit = lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1) == labels[..., None]
  softmax = jnp.exp(logits.astype(jnp.float32) - lse[..., None])
  grad = (softmax - hit.astype(jnp.float32)) * g[..., None]
  return grad.astype(logits.dtype), None


cross_entropy_argmax.defvjp(_forward, _backward)
