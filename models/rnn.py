"""Recurrent networks: stacked (bi)directional LSTM/GRU layers, a sequence classifier and a language model.

Sequences are right-padded ``[B, T]`` token ids with a ``mask`` that is True on real
tokens; a sequence's length is ``mask.sum(-1)``. Layers take those lengths so that
padding never reaches a real position: the forward direction only runs into padding
after the last real token, and the backward direction starts at each sequence's true
end (``nn.RNN(reverse=True, keep_order=True, seq_lengths=...)`` flips only the real
prefix).
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.recurrent import DenseParams, flip_sequences

from models.linear import Embed, cpu_half_precision, flat_dot_general

__all__ = ['CELLS', 'HoistedLSTM', 'RNNLayer', 'RNNEncoder', 'RNNClassifier', 'RNNLM']

# The optimized LSTM cell has the same parameters as nn.LSTMCell (ii/if/ig/io, hi/hf/hg/ho)
# but does one matmul for the four gates instead of eight small ones. RNNLayer runs LSTMs
# through HoistedLSTM (same parameters, faster); the cell stays the reference.
CELLS: dict[str, type[nn.RNNCellBase]] = {'lstm': nn.OptimizedLSTMCell, 'gru': nn.GRUCell}


class _LSTMParams(nn.Module):
  """The parameters of ``nn.OptimizedLSTMCell`` (same names, shapes and initialisers),
  returned stacked: input kernel ``[D, 4H]``, recurrent kernel ``[H, 4H]``, bias ``[4H]``."""
  features: int
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs):
    ref = nn.OptimizedLSTMCell(self.features, parent=None)  # for its default initialisers
    h = jnp.zeros(inputs.shape[:-1] + (self.features,), inputs.dtype)
    wi, wh, b = [], [], []
    for gate in 'ifgo':  # the cell's gate order
      wi.append(DenseParams(self.features, use_bias=False, param_dtype=self.param_dtype,
                            kernel_init=ref.kernel_init, name=f'i{gate}')(inputs)[0])
      k, bias = DenseParams(self.features, param_dtype=self.param_dtype,
                            kernel_init=ref.recurrent_kernel_init, bias_init=ref.bias_init,
                            name=f'h{gate}')(h)
      wh.append(k)
      b.append(bias)
    return (jnp.concatenate(wi, -1), jnp.concatenate(wh, -1), jnp.concatenate(b, -1))


# On CPU the recurrence runs feature-major: the state is h^T [H, B] and each step's matmul
# is W_h^T h^T, [4H, H] x [H, B], so the 4H gate rows are the matmul's long side. On a
# 2-core Zen 3, XLA:CPU (YNNPACK) runs that step 1.4x faster than h W_h, [B, H] x [H, 4H]
# (0.44 against 0.62 ms at B=32, H=512), and the backward's W_h dz 1.3x faster than
# dz W_h^T. The same layout makes the input projection and the weight gradients plain
# [M, K] x [K, N] dots. A layer's forward and backward: 1.18-1.25x (experiments/README.md).
# The optimisation barriers make XLA write each transpose out (operands and results of
# the matmuls) instead of folding it into a matmul, which then runs in a slower form: the
# whole LSTM step is 1.05-1.08x slower with only the three that matter most alone.
# GPUs and TPUs keep cuDNN's batch-major layout, without barriers: there XLA folds
# transposes into the dots' layouts, which a barrier would prevent, and a TPU pads the
# minor dimension to 128 lanes, which in the feature-major state is the batch (often 32).
_barrier = jax.lax.optimization_barrier


def _gates(z, c, axis):
  """One step of the cell on pre-activations ``z`` (gate order i, f, g, o along ``axis``)
  and the cell state ``c``: the new ``c``, the new ``h`` and the activated gates."""
  i, f, g, o = jnp.split(z, 4, axis)
  i, f, o, g = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jax.nn.sigmoid(o), jnp.tanh(g)
  c = f * c + i * g
  return c, o * jnp.tanh(c), jnp.concatenate([i, f, g, o], axis)


def _gate_grads(dh, dc, c, c_prev, acts, axis):
  """Back through one step of the cell, given the gradients of its outputs ``h`` and ``c``:
  the gradient of the pre-activations ``dz`` and of the previous step's cell state."""
  i, f, g, o = jnp.split(acts, 4, axis)
  tanh_c = jnp.tanh(c)
  dc = dc + dh * o * (1 - tanh_c ** 2)
  dz = jnp.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g ** 2),
                        dh * tanh_c * o * (1 - o)], axis)
  return dz, dc * f


def _shifted(a):
  """``a [T, ...]`` one step later: the previous step's value, zeros before the first."""
  return jnp.concatenate([jnp.zeros_like(a[:1]), a[:-1]], 0)


def _compute_dtype(dtype):
  """The cell's arithmetic dtype: float32 for 16-bit inputs, as cuDNN and oneDNN keep the
  cell state and gate math of a bfloat16 LSTM in float32; the dots stay in ``dtype``."""
  return jnp.float32 if jnp.dtype(dtype).itemsize < 4 else dtype


# XLA:CPU has no bfloat16 dynamic-update-slice: it converts the whole stacked output of a
# scan to float32 and back to write one step, so a bf16 loop rewrites all T steps every
# step (a [128, 512, 32] store: 0.32 against 0.01 ms a step). The same 16 bits as an
# unsigned integer are written in place. Elsewhere the types are stored as they are.
def _to_bits(a):
  if cpu_half_precision(a):
    return jax.lax.bitcast_convert_type(a, jnp.uint16)
  return a


def _from_bits(a, dtype):
  return jax.lax.bitcast_convert_type(a, dtype) if a.dtype == jnp.uint16 else a


def _lstm_forward(x, wi, b, wh, feature_major):
  """The layer's forward pass, keeping what the backward needs.

  Returns ``h [T, B, H]`` (in ``x``'s dtype), ``c`` (in the compute dtype) and the
  activated gates, per step: ``[H, B]`` and ``[4H, B]`` feature-major, else ``[B, H]``
  and ``[B, 4H]``.
  """
  steps, batch, _ = x.shape
  hidden = wh.shape[0]
  acc = _compute_dtype(x.dtype)
  dot = functools.partial(jnp.matmul, preferred_element_type=acc)
  if feature_major:
    x_t = _barrier(x.reshape(steps * batch, -1).T)                      # [D, T*B]
    gates_in = _barrier(dot(_barrier(wi.T), x_t) + b[:, None].astype(acc))  # [4H, T*B]
    gates_in = jnp.swapaxes(gates_in.reshape(4 * hidden, steps, batch), 0, 1)  # [T, 4H, B]
    wh_t = _barrier(wh.T)                                               # [4H, H]
    recurrent, axis, state = (lambda h: dot(wh_t, h)), 0, (hidden, batch)
  else:
    gates_in = dot(x, wi) + b.astype(acc)                               # [T, B, 4H]
    recurrent, axis, state = (lambda h: dot(h, wh)), -1, (batch, hidden)

  def step(carry, z):
    c, h = carry
    c, h, acts = _gates(z + recurrent(h), c, axis)
    h = h.astype(x.dtype)
    return (c, h), (_to_bits(h), c, _to_bits(acts.astype(x.dtype)))

  _, (hs, cs, acts) = jax.lax.scan(
      step, (jnp.zeros(state, acc), jnp.zeros(state, x.dtype)), gates_in)
  hs, acts = _from_bits(hs, x.dtype), _from_bits(acts, x.dtype)
  return (jnp.swapaxes(hs, 1, 2) if feature_major else hs), cs, acts


def lstm_time_major(x, wi, b, wh, feature_major: bool | None = None):
  """An LSTM layer: ``x [T, B, D]``, ``W_i [D, 4H]``, ``b [4H]``, ``W_h [H, 4H]`` -> ``h [T, B, H]``.

  The input projection of every step is one ``T*B``-wide matmul before the loop, so the
  sequential scan keeps only the recurrent matmul. The backward pass is cuDNN's: the
  loop carries only the recurrent matmul of ``dz``, and the weight and input gradients
  are three ``T*B``-wide matmuls after it (autodiff of the scan would do T small ones
  inside it). ``feature_major`` picks the recurrence's layout (above); None: on CPU only.
  With 16-bit inputs the dots take them as they are and return float32, the cell state and
  gate math stay in float32 (as in cuDNN and oneDNN), and ``h`` comes back in ``x``'s dtype.
  """
  if feature_major is None:
    feature_major = jax.default_backend() == 'cpu'
  return _lstm(x, wi, b, wh, bool(feature_major))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _lstm(x, wi, b, wh, feature_major):
  return _lstm_forward(x, wi, b, wh, feature_major)[0]


def _lstm_fwd(x, wi, b, wh, feature_major):
  hs, cs, acts = _lstm_forward(x, wi, b, wh, feature_major)
  return hs, (x, hs, cs, acts, wi, b, wh)


def _lstm_bwd(feature_major, res, dys):
  x, hs, cs, acts, wi, b, wh = res
  steps, batch, hidden = hs.shape
  acc = cs.dtype
  dot = functools.partial(jnp.matmul, preferred_element_type=acc)
  if feature_major:
    dys = jnp.swapaxes(dys, 1, 2)
    recurrent, axis = (lambda dz: dot(wh, dz)), 0
  else:
    recurrent, axis = (lambda dz: dot(dz, wh.T)), -1

  def step(carry, xs):
    dh_next, dc_next = carry
    dy, c, c_prev, a = xs
    dz, dc = _gate_grads(dy + dh_next, dc_next, c, c_prev, a.astype(acc), axis)
    dz = dz.astype(x.dtype)
    return (recurrent(dz), dc), _to_bits(dz)

  zeros = jnp.zeros(cs.shape[1:], acc)
  _, dzs = jax.lax.scan(step, (zeros, zeros), (dys, cs, _shifted(cs), acts), reverse=True)
  dzs = _from_bits(dzs, x.dtype)
  h_prev = _shifted(hs).reshape(steps * batch, hidden)
  x2 = x.reshape(steps * batch, -1)
  if feature_major:
    dz = _barrier(jnp.swapaxes(dzs, 0, 1).reshape(4 * hidden, steps * batch))  # [4H, T*B]
    # With dz [4H, T*B] on the left each weight gradient is a plain [M, K] x [K, N] dot
    # (169 against 128 GFLOP/s for the 512-unit one as [T*B, H]^T [T*B, 4H]).
    dwh = _barrier(dot(dz, h_prev)).T
    dwi = _barrier(dot(dz, x2)).T
    dx = jnp.transpose(_barrier(dot(wi, dz)).reshape(-1, steps, batch), (1, 2, 0))
    db = dz.sum(1, dtype=acc)
  else:
    dz = dzs.reshape(steps * batch, 4 * hidden)                                 # [T*B, 4H]
    dx, dwi, dwh = dot(dz, wi.T).reshape(x.shape), dot(x2.T, dz), dot(h_prev.T, dz)
    db = dz.sum(0, dtype=acc)
  return tuple(g.astype(p.dtype) for g, p in zip((dx, dwi, db, dwh), (x, wi, b, wh)))


_lstm.defvjp(_lstm_fwd, _lstm_bwd)


class HoistedLSTM(nn.Module):
  """An LSTM over ``[B, T, D]`` equal to ``nn.RNN(nn.OptimizedLSTMCell(H))``, and faster.

  The input projection of every time step is one matmul before the loop (cuDNN and
  PyTorch's CPU LSTM do the same); the sequential scan keeps only the recurrent matmul,
  run feature-major on CPU (:func:`lstm_time_major`; ``feature_major`` overrides the
  choice). Parameters live under ``cell/`` with the cell's names, so checkpoints are
  interchangeable. ``reverse`` with ``seq_lengths`` reads each sequence from its true end,
  as ``nn.RNN(reverse=True, keep_order=True)`` does.
  """
  features: int
  reverse: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  feature_major: bool | None = None

  @nn.compact
  def __call__(self, x, seq_lengths=None):
    wi, wh, b = _LSTMParams(self.features, self.param_dtype, name='cell')(x[:, 0])
    x, wi, wh, b = nn.dtypes.promote_dtype(x, wi, wh, b, dtype=self.dtype)
    if self.reverse:
      x = flip_sequences(x, seq_lengths, num_batch_dims=1, time_major=False)
    # lstm_time_major takes [T, B, D]; XLA merges this swap with its own transposes.
    ys = jnp.swapaxes(lstm_time_major(jnp.swapaxes(x, 0, 1), wi, b, wh, self.feature_major), 0, 1)
    if self.reverse:
      ys = flip_sequences(ys, seq_lengths, num_batch_dims=1, time_major=False)
    return ys


def _make_cell(cell: str, features: int, dtype: Any, param_dtype: Any) -> nn.RNNCellBase:
  if cell not in CELLS:
    raise ValueError(f'unknown cell {cell!r}; known: {", ".join(CELLS)}')
  # parent=None: the cell is adopted by the nn.RNN it is given to (params under
  # '<direction>/cell'), not by the module whose compact method created it.
  return CELLS[cell](features, dtype=dtype, param_dtype=param_dtype, parent=None)


class RNNLayer(nn.Module):
  """One recurrent layer over ``[B, T, D]``, forward or bidirectional.

  Returns ``[B, T, hidden_size]`` (``[B, T, 2 * hidden_size]`` when bidirectional:
  forward features first, then backward). Parameters live under ``forward/cell`` and
  ``backward/cell``. ``seq_lengths`` (``[B]`` int) is needed only for the backward
  direction; outputs at padded positions are not meaningful.
  """
  hidden_size: int
  cell: str = 'lstm'
  bidirectional: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, seq_lengths=None):
    if self.cell == 'lstm':
      run = functools.partial(HoistedLSTM, self.hidden_size, dtype=self.dtype,
                              param_dtype=self.param_dtype)
      y = run(name='forward')(x)
      if not self.bidirectional:
        return y
      y_back = run(reverse=True, name='backward')(x, seq_lengths)
      return jnp.concatenate([y, y_back], axis=-1)
    make = functools.partial(_make_cell, self.cell, self.hidden_size, self.dtype, self.param_dtype)
    y = nn.RNN(make(), name='forward')(x)
    if not self.bidirectional:
      return y
    y_back = nn.RNN(make(), reverse=True, keep_order=True, name='backward')(
        x, seq_lengths=seq_lengths)
    return jnp.concatenate([y, y_back], axis=-1)


class RNNEncoder(nn.Module):
  """``num_layers`` stacked :class:`RNNLayer` (``layer_0``, ...) with dropout between layers."""
  hidden_size: int
  num_layers: int = 1
  cell: str = 'lstm'
  bidirectional: bool = False
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, seq_lengths=None, train: bool = False):
    for i in range(self.num_layers):
      if i > 0:
        # Dropout on the non-recurrent connections only (Zaremba et al. 2014); the
        # mask is drawn once for the whole sequence outside the scan.
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = RNNLayer(self.hidden_size, self.cell, self.bidirectional, self.dtype,
                   self.param_dtype, name=f'layer_{i}')(x, seq_lengths)
    return x


def _lengths(tokens, mask):
  if mask is None:
    return jnp.full(tokens.shape[:1], tokens.shape[1], jnp.int32)
  return mask.astype(jnp.int32).sum(-1)


class RNNClassifier(nn.Module):
  """Embedding -> stacked (bi)LSTM/GRU -> state at the true last token -> dense head.

  ``tokens`` is ``[B, T]`` int, ``mask`` ``[B, T]`` bool (True on real tokens, padding
  on the right; None means no padding). The sequence summary is the forward state at
  position ``length - 1``, concatenated, when bidirectional, with the backward state at
  position 0 (the backward RNN's state after reading the whole real sequence), so
  appending padding or changing padded tokens leaves the logits unchanged.
  ``pooling='attention'`` instead summarises with additive attention over the real
  positions' outputs (scores from ``tanh(W y)``, no query; Bahdanau et al. 2015, as
  flax examples/sst2 does) and classifies with a ``tanh`` hidden layer of
  ``hidden_size`` units: every position can speak, not only the two ends.
  Returns ``[B, num_classes]`` float32 logits, or ``[B]`` when ``num_classes == 1``.
  """
  vocab_size: int = 20000
  num_classes: int = 2
  embed_dim: int = 128
  hidden_size: int = 256
  num_layers: int = 1
  cell: str = 'lstm'
  bidirectional: bool = False
  dropout_rate: float = 0.0
  # Word dropout (Iyyer et al. 2015; flax examples/sst2 uses 0.1): in training each real
  # token becomes ``unk_id`` with this probability, so no single word decides a sentence.
  word_dropout_rate: float = 0.0
  unk_id: int = 1
  pooling: str = 'last'  # or 'attention'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, mask=None, train: bool = False):
    if self.pooling not in ('last', 'attention'):
      raise ValueError(f"pooling must be 'last' or 'attention', got {self.pooling!r}")
    lengths = _lengths(tokens, mask)
    drop = nn.Dropout(self.dropout_rate, deterministic=not train)
    if train and self.word_dropout_rate > 0:
      hit = jax.random.bernoulli(self.make_rng('dropout'), self.word_dropout_rate, tokens.shape)
      real = jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]
      tokens = jnp.where(hit & real, self.unk_id, tokens)
    x = Embed(self.vocab_size, self.embed_dim, dtype=self.dtype,
                 param_dtype=self.param_dtype)(tokens)
    # Adversarial training (``adversarial_epsilon``, train/steps.py) moves the embeddings
    # here; a no-op unless a 'perturbations' collection is passed. Not at init, so the
    # variables hold no batch-shaped zeros.
    if not self.is_initializing():
      x = self.perturb('embedded', x)
    x = drop(x)
    y = RNNEncoder(self.hidden_size, self.num_layers, self.cell, self.bidirectional,
                   self.dropout_rate, self.dtype, self.param_dtype, name='encoder')(x, lengths, train)
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype,
                              dot_general=flat_dot_general)
    if self.pooling == 'attention':
      y = drop(y)
      real = jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]
      scores = dense(1, use_bias=False, name='attn_score')(
          jnp.tanh(dense(self.hidden_size, use_bias=False, name='attn_hidden')(y)))[..., 0]
      # Empty sequences (eval padding) keep position 0 so the softmax stays finite.
      real = real.at[:, 0].set(True)
      weights = jax.nn.softmax(jnp.where(real, scores.astype(jnp.float32), -jnp.inf), axis=-1)
      self.sow('intermediates', 'attention', weights)
      h = jnp.einsum('bt,btd->bd', weights.astype(y.dtype), y)
      h = drop(jnp.tanh(dense(self.hidden_size, name='pre_head')(drop(h))))
    else:
      # Empty sequences (eval padding) read position 0 rather than wrapping to -1.
      last = jnp.maximum(lengths - 1, 0)
      h = jnp.take_along_axis(y, last[:, None, None], axis=1)[:, 0]
      if self.bidirectional:
        h = jnp.concatenate([h[:, :self.hidden_size], y[:, 0, self.hidden_size:]], axis=-1)
      h = drop(h)
    logits = dense(self.num_classes, name='head')(h).astype(jnp.float32)
    return logits[:, 0] if self.num_classes == 1 else logits


class RNNLM(nn.Module):
  """A char-rnn style language model: embedding -> stacked LSTM/GRU -> per-position logits.

  Strictly left-to-right (so there is no ``bidirectional`` field): position t sees
  tokens ``0..t`` only. ``mask`` is accepted for the common call signature but not
  needed: right padding can only affect positions after it, which the loss's
  ``weights`` drop. Returns ``[B, T, vocab_size]`` float32 logits.
  """
  vocab_size: int = 256
  embed_dim: int = 128
  hidden_size: int = 512
  num_layers: int = 2
  cell: str = 'lstm'
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, mask=None, train: bool = False):
    del mask  # see the docstring
    drop = nn.Dropout(self.dropout_rate, deterministic=not train)
    x = Embed(self.vocab_size, self.embed_dim, dtype=self.dtype,
                 param_dtype=self.param_dtype)(tokens)
    x = drop(x)
    y = RNNEncoder(self.hidden_size, self.num_layers, self.cell, False, self.dropout_rate,
                   self.dtype, self.param_dtype, name='encoder')(x, None, train)
    y = drop(y)
    return nn.Dense(self.vocab_size, dtype=self.dtype, param_dtype=self.param_dtype,
                    dot_general=flat_dot_general, name='head')(y).astype(jnp.float32)


PRESETS = {
    'lstm_classifier': functools.partial(RNNClassifier, cell='lstm'),
    'gru_classifier': functools.partial(RNNClassifier, cell='gru'),
    # Sizes of the flax examples/sst2 model: 300-d embeddings, 256 units per direction.
    'bilstm_classifier': functools.partial(
        RNNClassifier, cell='lstm', bidirectional=True, embed_dim=300, hidden_size=256,
        dropout_rate=0.5),
    # Karpathy's char-rnn on tiny-shakespeare: 3 layers of 512 units, dropout 0.5.
    'lstm_lm': functools.partial(RNNLM, cell='lstm', num_layers=3, hidden_size=512,
                                 dropout_rate=0.5),
    'gru_lm': functools.partial(RNNLM, cell='gru', num_layers=3, hidden_size=512,
                                dropout_rate=0.5),
}
