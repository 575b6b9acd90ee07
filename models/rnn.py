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

__all__ = ['CELLS', 'HoistedLSTM', 'HoistedGRU', 'RNNLayer', 'RNNEncoder', 'RNNClassifier', 'RNNLM']

# The Flax cells each layer is equal to. RNNLayer runs them as HoistedLSTM and HoistedGRU
# (same parameters and values, faster); the cells stay the reference.
CELLS: dict[str, type[nn.RNNCellBase]] = {'lstm': nn.OptimizedLSTMCell, 'gru': nn.GRUCell}


# Each cell's gates, in its order, and which of them have an input-side or a recurrent-side
# bias: nn.OptimizedLSTMCell's are on the recurrent side (hi, hf, hg, ho); nn.GRUCell's on
# the input side and on hn, inside r * (W_hn h + b_hn).
_GATE_PARAMS = {'lstm': ('ifgo', '', 'ifgo'), 'gru': ('rzn', 'rzn', 'n')}


class _StackedParams(nn.Module):
  """The parameters of the Flax cell ``CELLS[cell]`` (same names, shapes and initialisers),
  returned stacked over its gates: the input kernel ``[D, G]``, the input-side biases, the
  recurrent kernel ``[H, G]`` and the recurrent-side biases (None where the cell has none)."""
  features: int
  cell: str
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs):
    ref = CELLS[self.cell](self.features, parent=None)  # for its default initialisers
    gates, input_biases, recurrent_biases = _GATE_PARAMS[self.cell]
    h = jnp.zeros(inputs.shape[:-1] + (self.features,), inputs.dtype)
    w_i, b_i, w_h, b_h = [], [], [], []
    for gate in gates:
      for x, name, init, biases, kernels, bias_list in (
          (inputs, f'i{gate}', ref.kernel_init, input_biases, w_i, b_i),
          (h, f'h{gate}', ref.recurrent_kernel_init, recurrent_biases, w_h, b_h)):
        k, b = DenseParams(self.features, use_bias=gate in biases, param_dtype=self.param_dtype,
                           kernel_init=init, bias_init=ref.bias_init, name=name)(x)
        kernels.append(k)
        bias_list.extend([] if b is None else [b])
    stack = lambda arrays: jnp.concatenate(arrays, -1) if arrays else None
    return stack(w_i), stack(b_i), stack(w_h), stack(b_h)


# On CPU the recurrence runs feature-major: the state is h^T [H, B] and each step's matmul
# is W_h^T h^T, [4H, H] x [H, B], so the 4H gate rows are the matmul's long side. On a
# 2-core Zen 3, XLA:CPU (YNNPACK) runs that step 1.4x faster than h W_h, [B, H] x [H, 4H]
# (0.44 against 0.62 ms at B=32, H=512), and the backward's W_h dz 1.3x faster than
# dz W_h^T. The same layout makes the input projection and the weight gradients plain
# [M, K] x [K, N] dots. A layer's forward and backward: 1.18-1.25x (experiments/README.md).
# The optimisation barriers make XLA write each transpose out (operands and results of
# the matmuls) instead of folding it into a matmul, which then runs in a slower form: the
# whole LSTM step is 1.05-1.08x slower with only the three that matter most alone.
# The GRU runs the same way, with its 3H gate rows (experiments/README.md has both layers).
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


def _input_projection(x, wi, b, wh, feature_major):
  """What every gated layer does before its loop: the input projection of all steps as one
  ``T*B``-wide matmul, ``[T, G, B]`` feature-major, else ``[T, B, G]`` (``G`` gate units),
  in the compute dtype. Also returns one step's recurrent matmul of the state (``[H, B]`` or
  ``[B, H]``), the gate axis of a step's ``[G, B]`` or ``[B, G]``, and the state's shape."""
  steps, batch, _ = x.shape
  hidden = wh.shape[0]
  acc = _compute_dtype(x.dtype)
  dot = functools.partial(jnp.matmul, preferred_element_type=acc)
  if feature_major:
    if cpu_half_precision(x, wi):
      # XLA:CPU computes a 16-bit dot of written-out transposes in float32 (the transposing
      # copies convert their operands too): 17 against 9 ms for [2048, 512] x [512, 4096].
      # x W_i runs in bf16, and its float32 result is transposed instead.
      gates_in = jnp.swapaxes(dot(x, wi) + b.astype(acc), 1, 2)         # [T, G, B]
    else:
      x_t = _barrier(x.reshape(steps * batch, -1).T)                    # [D, T*B]
      gates_in = _barrier(dot(_barrier(wi.T), x_t) + b[:, None].astype(acc))  # [G, T*B]
      gates_in = jnp.swapaxes(gates_in.reshape(-1, steps, batch), 0, 1)  # [T, G, B]
    wh_t = _barrier(wh.T)                                               # [G, H]
    return gates_in, (lambda h: dot(wh_t, h)), 0, (hidden, batch)
  gates_in = dot(x, wi) + b.astype(acc)                                 # [T, B, G]
  return gates_in, (lambda h: dot(h, wh)), -1, (batch, hidden)


def _backward_recurrence(wh, feature_major):
  """One backward step's recurrent matmul, from the recurrent-side pre-activation gradients
  ``[G, B]`` (or ``[B, G]``) to the previous state's, and the gate axis."""
  dot = functools.partial(jnp.matmul, preferred_element_type=_compute_dtype(wh.dtype))
  if feature_major:
    return (lambda dz: dot(wh, dz)), 0
  return (lambda dz: dot(dz, wh.T)), -1


def _input_and_weight_grads(d_in, d_rec, x, hs, wi, feature_major):
  """What every gated layer's backward does after its loop, as ``T*B``-wide matmuls.

  ``d_in`` and ``d_rec`` are the per-step gradients of the input-side and recurrent-side
  pre-activations (``[T, G, B]`` feature-major, else ``[T, B, G]``; one array for the LSTM,
  whose two sides add before the gates). Returns the gradients of ``x``, ``W_i``, ``b`` and
  ``W_h``, the last from ``d_rec`` and the previous steps' outputs ``hs``.
  """
  steps, batch, hidden = hs.shape
  acc = _compute_dtype(x.dtype)
  dot = functools.partial(jnp.matmul, preferred_element_type=acc)
  h_prev = _shifted(hs).reshape(steps * batch, hidden)
  x2 = x.reshape(steps * batch, -1)
  if feature_major:
    flat = lambda d: _barrier(jnp.swapaxes(d, 0, 1).reshape(d.shape[1], steps * batch))
    dz = flat(d_in)                                                     # [G, T*B]
    dz_rec = dz if d_rec is d_in else flat(d_rec)
    # With dz [G, T*B] on the left each weight gradient is a plain [M, K] x [K, N] dot
    # (169 against 128 GFLOP/s for the 512-unit one as [T*B, H]^T [T*B, 4H]).
    dwh = _barrier(dot(dz_rec, h_prev)).T
    dwi = _barrier(dot(dz, x2)).T
    dx = jnp.transpose(_barrier(dot(wi, dz)).reshape(-1, steps, batch), (1, 2, 0))
    db = dz.sum(1, dtype=acc)
  else:
    dz = d_in.reshape(steps * batch, -1)                                # [T*B, G]
    dz_rec = dz if d_rec is d_in else d_rec.reshape(steps * batch, -1)
    dx, dwi, dwh = dot(dz, wi.T).reshape(x.shape), dot(x2.T, dz), dot(h_prev.T, dz_rec)
    db = dz.sum(0, dtype=acc)
  return dx, dwi, db, dwh


def _lstm_forward(x, wi, b, wh, feature_major):
  """The layer's forward pass, keeping what the backward needs.

  Returns ``h [T, B, H]`` (in ``x``'s dtype), ``c`` (in the compute dtype) and the
  activated gates, per step: ``[H, B]`` and ``[4H, B]`` feature-major, else ``[B, H]``
  and ``[B, 4H]``.
  """
  acc = _compute_dtype(x.dtype)
  gates_in, recurrent, axis, state = _input_projection(x, wi, b, wh, feature_major)

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
  acc = cs.dtype
  recurrent, axis = _backward_recurrence(wh, feature_major)
  if feature_major:
    dys = jnp.swapaxes(dys, 1, 2)

  def step(carry, xs):
    dh_next, dc_next = carry
    dy, c, c_prev, a = xs
    dz, dc = _gate_grads(dy + dh_next, dc_next, c, c_prev, a.astype(acc), axis)
    dz = dz.astype(x.dtype)
    return (recurrent(dz), dc), _to_bits(dz)

  zeros = jnp.zeros(cs.shape[1:], acc)
  _, dzs = jax.lax.scan(step, (zeros, zeros), (dys, cs, _shifted(cs), acts), reverse=True)
  dzs = _from_bits(dzs, x.dtype)
  dx, dwi, db, dwh = _input_and_weight_grads(dzs, dzs, x, hs, wi, feature_major)
  return tuple(g.astype(p.dtype) for g, p in zip((dx, dwi, db, dwh), (x, wi, b, wh)))


_lstm.defvjp(_lstm_fwd, _lstm_bwd)


def _gru_forward(x, wi, bi, wh, bhn, feature_major):
  """The GRU layer's forward pass, keeping what the backward needs: ``h [T, B, H]`` (in
  ``x``'s dtype) and, per step, ``r``, ``z``, ``n`` and the recurrent candidate
  ``W_hn h + b_hn``, stacked along the gate axis (``[4H, B]`` feature-major, else ``[B, 4H]``)."""
  acc = _compute_dtype(x.dtype)
  gates_in, recurrent, axis, state = _input_projection(x, wi, bi, wh, feature_major)
  bhn = (bhn[:, None] if feature_major else bhn).astype(acc)

  def step(h, g):
    gi_r, gi_z, gi_n = jnp.split(g, 3, axis)
    hp_r, hp_z, hp_n = jnp.split(recurrent(h.astype(x.dtype)), 3, axis)
    r, z = jax.nn.sigmoid(gi_r + hp_r), jax.nn.sigmoid(gi_z + hp_z)
    hn = hp_n + bhn
    n = jnp.tanh(gi_n + r * hn)
    h = (1.0 - z) * n + z * h  # nn.GRUCell's form
    acts = jnp.concatenate([r, z, n, hn], axis)
    return h, (_to_bits(h.astype(x.dtype)), _to_bits(acts.astype(x.dtype)))

  _, (hs, acts) = jax.lax.scan(step, jnp.zeros(state, acc), gates_in)
  hs, acts = _from_bits(hs, x.dtype), _from_bits(acts, x.dtype)
  return (jnp.swapaxes(hs, 1, 2) if feature_major else hs), acts


def gru_time_major(x, wi, bi, wh, bhn, feature_major: bool | None = None):
  """A GRU layer (``nn.GRUCell``'s equations): ``x [T, B, D]``, ``W_i [D, 3H]``, ``b_i [3H]``,
  ``W_h [H, 3H]`` (gates r, z, n) and ``b_hn [H]`` -> ``h [T, B, H]``.

  Built as :func:`lstm_time_major` is: the input projection of all steps before the loop,
  a hand-written backward whose loop keeps only the recurrent matmul, with the weight and
  input gradients as ``T*B``-wide matmuls after it (Flax's scan autodiff does three small
  ones a step and stores its residuals step by step), feature-major on CPU, and a float32
  cell for 16-bit inputs.
  """
  if feature_major is None:
    feature_major = jax.default_backend() == 'cpu'
  return _gru(x, wi, bi, wh, bhn, bool(feature_major))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _gru(x, wi, bi, wh, bhn, feature_major):
  return _gru_forward(x, wi, bi, wh, bhn, feature_major)[0]


def _gru_fwd(x, wi, bi, wh, bhn, feature_major):
  hs, acts = _gru_forward(x, wi, bi, wh, bhn, feature_major)
  return hs, (x, hs, acts, wi, bi, wh, bhn)


def _gru_bwd(feature_major, res, dys):
  x, hs, acts, wi, bi, wh, bhn = res
  acc = _compute_dtype(x.dtype)
  recurrent, axis = _backward_recurrence(wh, feature_major)
  h_prev = _shifted(hs)
  if feature_major:
    dys, h_prev = jnp.swapaxes(dys, 1, 2), jnp.swapaxes(h_prev, 1, 2)

  def step(dh_next, xs):
    dy, h_before, a = xs
    r, z, n, hn = jnp.split(a.astype(acc), 4, axis)
    dh = dy + dh_next
    d_n = dh * (1.0 - z) * (1.0 - n * n)                  # at n's pre-activation
    d_z = dh * (h_before.astype(acc) - n) * z * (1.0 - z)
    d_r = d_n * hn * r * (1.0 - r)
    d_rec = jnp.concatenate([d_r, d_z, d_n * r], axis).astype(x.dtype)  # at W_h h (+ b_hn)
    d_in = jnp.concatenate([d_r, d_z, d_n], axis).astype(x.dtype)       # at W_i x + b_i
    return dh * z + recurrent(d_rec), _to_bits(d_in)

  steps, batch, hidden = hs.shape
  state = (hidden, batch) if feature_major else (batch, hidden)
  _, d_in = jax.lax.scan(step, jnp.zeros(state, acc), (dys, h_prev, acts), reverse=True)
  d_in = _from_bits(d_in, x.dtype)
  # The recurrent side differs from the input side only in n's block, scaled by r there.
  gate_axis = 1 if feature_major else 2  # of the stacked [T, ...] arrays
  r = jax.lax.slice_in_dim(acts, 0, hidden, axis=gate_axis)
  d_rz, d_n = jnp.split(d_in, [2 * hidden], gate_axis)
  d_n_rec = (d_n.astype(acc) * r.astype(acc)).astype(x.dtype)
  d_rec = jnp.concatenate([d_rz, d_n_rec], gate_axis)
  dx, dwi, dbi, dwh = _input_and_weight_grads(d_in, d_rec, x, hs, wi, feature_major)
  dbhn = d_n_rec.sum((0, 3 - gate_axis), dtype=acc)
  return tuple(g.astype(p.dtype) for g, p in
               zip((dx, dwi, dbi, dwh, dbhn), (x, wi, bi, wh, bhn)))


_gru.defvjp(_gru_fwd, _gru_bwd)


def _batch_major(layer, x, seq_lengths, reverse):
  """Runs a time-major ``layer(x [T, B, D])`` over batch-major ``x [B, T, D]``; ``reverse``
  reads each sequence from its true end (``seq_lengths``), as ``nn.RNN(reverse=True,
  keep_order=True)`` does, and returns the outputs in the input's order."""
  if reverse:
    x = flip_sequences(x, seq_lengths, num_batch_dims=1, time_major=False)
  # The layers take [T, B, D]; XLA merges this swap with their own transposes.
  ys = jnp.swapaxes(layer(jnp.swapaxes(x, 0, 1)), 0, 1)
  if reverse:
    ys = flip_sequences(ys, seq_lengths, num_batch_dims=1, time_major=False)
  return ys


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
    wi, _, wh, b = _StackedParams(self.features, 'lstm', self.param_dtype, name='cell')(x[:, 0])
    x, wi, wh, b = nn.dtypes.promote_dtype(x, wi, wh, b, dtype=self.dtype)
    layer = lambda x: lstm_time_major(x, wi, b, wh, self.feature_major)
    return _batch_major(layer, x, seq_lengths, self.reverse)


class HoistedGRU(nn.Module):
  """A GRU over ``[B, T, D]`` equal to ``nn.RNN(nn.GRUCell(H))``, and faster: built as
  :class:`HoistedLSTM` is (:func:`gru_time_major`), with the cell's parameters under
  ``cell/``, so checkpoints are interchangeable."""
  features: int
  reverse: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  feature_major: bool | None = None

  @nn.compact
  def __call__(self, x, seq_lengths=None):
    wi, bi, wh, bhn = _StackedParams(self.features, 'gru', self.param_dtype, name='cell')(x[:, 0])
    x, wi, bi, wh, bhn = nn.dtypes.promote_dtype(x, wi, bi, wh, bhn, dtype=self.dtype)
    layer = lambda x: gru_time_major(x, wi, bi, wh, bhn, self.feature_major)
    return _batch_major(layer, x, seq_lengths, self.reverse)


# The layers RNNLayer runs for each cell: same parameters as nn.RNN(cell), faster.
_HOISTED = {'lstm': HoistedLSTM, 'gru': HoistedGRU}


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
    if self.cell not in _HOISTED:
      raise ValueError(f'unknown cell {self.cell!r}; known: {", ".join(_HOISTED)}')
    run = functools.partial(_HOISTED[self.cell], self.hidden_size, dtype=self.dtype,
                            param_dtype=self.param_dtype)
    y = run(name='forward')(x)
    if not self.bidirectional:
      return y
    y_back = run(reverse=True, name='backward')(x, seq_lengths)
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
