"""How fast one LSTM or GRU layer runs, by the layout of its recurrent matmul, and against PyTorch's.

An LSTM's time goes to two sequential loops of ``T`` small matmuls (the recurrence
forward, ``dz W_h^T`` backward) and to a few large ones around them; a GRU's likewise. This
prints:

1. the milliseconds per step of a ``T``-step scan of the recurrent matmul alone (float32,
   the LSTM's shapes), in two layouts: batch-major ``h W_h`` (``[B, H] x [H, 4H]``; backward
   ``dz W_h^T``) and feature-major ``W_h^T h^T`` (``[4H, H] x [H, B]``; backward ``W_h dz``),
   the one ``models/rnn.py`` uses on CPU;
2. for each cell in ``--cells``, one layer's forward and backward
   (``models.rnn.lstm_time_major`` / ``gru_time_major``, compiled as the trainer compiles it)
   in both layouts (feature-major is the CPU default, batch-major the GPU and TPU one), for
   the GRU also Flax's ``nn.RNN(GRUCell)``, against ``torch.nn.LSTM`` / ``GRU`` where torch
   is installed (never a dependency; under autocast for ``--dtype bfloat16``), interleaved,
   for each input width given.

Each figure is the median of ``--reps`` calls. Findings in experiments/README.md.

  python experiments/bench_lstm_layer.py [--cells lstm,gru --dtype bfloat16 --inputs 64,512]
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs.base import get_base_config  # noqa: E402
from models import rnn  # noqa: E402
from train import compile_options  # noqa: E402
from train.benchmark import interleaved_medians  # noqa: E402
from train.runtime import tune_malloc  # noqa: E402


def trainer_options() -> dict | None:
  """What the trainer compiles a model without convolutions with, on this backend. A function,
  not a constant: checking the options starts the backend, which must come after tune_malloc."""
  return compile_options.step_options(get_base_config())


# Each loop's step: (carry, weight) -> next carry; the carry keeps its shape, so the loop
# chains T matmuls as the recurrence does. Slicing out the first H of 4H (or tiling H
# up to 4H) stands in for the cell's elementwise work.
LOOPS = {
    'forward, batch-major h W_h': ('bh', lambda h, w: (h @ w)[:, :w.shape[0]]),
    'forward, feature-major W_h^T h^T': ('hb', lambda h, w_t: (w_t @ h)[:w_t.shape[1]]),
    'backward, batch-major dz W_h^T': ('bg', lambda dz, w: jnp.tile(dz @ w.T, (1, 4))),
    'backward, feature-major W_h dz': ('gb', lambda dz, w: jnp.tile(w @ dz, (4, 1))),
}


def _scan(step, carry, weight, steps: int):
  return jax.lax.scan(lambda c, _: (step(c, weight) * 0.01, None), carry, None, length=steps)[0]


def loop_times(steps: int, batch: int, hidden: int, reps: int = 10, seed: int = 0) -> dict:
  """``{loop: ms per step}`` for each of :data:`LOOPS`, and ``max_abs_diff`` between the two
  layouts' final carries (transposed) for the forward and for the backward loop."""
  rng = np.random.default_rng(seed)
  w = jnp.asarray(rng.standard_normal((hidden, 4 * hidden)) * 0.05, jnp.float32)
  h = jnp.asarray(rng.standard_normal((batch, hidden)), jnp.float32)
  dz = jnp.asarray(rng.standard_normal((batch, 4 * hidden)), jnp.float32)
  carries = {'bh': h, 'hb': h.T, 'bg': dz, 'gb': dz.T}
  # the feature-major forward takes W_h^T written out, as models/rnn.py keeps it
  weights = {'bh': w, 'hb': w.T, 'bg': w, 'gb': w}
  runs, outs = {}, {}
  for name, (layout, step) in LOOPS.items():
    args = (carries[layout], weights[layout])
    compiled = jax.jit(functools.partial(_scan, step, steps=steps)).lower(*args).compile(
        compiler_options=trainer_options())
    runs[name] = functools.partial(compiled, *args)
    outs[layout] = compiled(*args)
  ms = {name: s * 1e3 / steps for name, s in interleaved_medians(runs, reps).items()}
  ms['max_abs_diff'] = max(float(jnp.max(jnp.abs(outs['bh'] - outs['hb'].T))),
                           float(jnp.max(jnp.abs(outs['bg'] - outs['gb'].T))))
  return ms


GATES = {'lstm': 4, 'gru': 3}


def _layer_params(rng, cell: str, input_dim: int, hidden: int, dtype) -> list:
  """``lstm_time_major``'s (``W_i, b, W_h``) or ``gru_time_major``'s (``W_i, b_i, W_h, b_hn``)."""
  g = GATES[cell] * hidden
  shapes = [(input_dim, g), (g,), (hidden, g)] + ([(hidden,)] if cell == 'gru' else [])
  return [jnp.asarray(rng.standard_normal(s) * 0.05, dtype) for s in shapes]


def _flax_gru(x, wi, bi, wh, bhn):
  """``nn.RNN(nn.GRUCell)`` (Flax's scan and autodiff, what RNNLayer ran before
  ``HoistedGRU``) over time-major ``x``, with ``gru_time_major``'s weights."""
  import flax.linen as nn
  split = lambda a: jnp.split(a, 3, -1)
  cell = {f'i{n}': {'kernel': k, 'bias': b} for n, k, b in zip('rzn', split(wi), split(bi))}
  cell.update({f'h{n}': {'kernel': k} for n, k in zip('rzn', split(wh))})
  cell['hn']['bias'] = bhn
  module = nn.RNN(nn.GRUCell(wh.shape[0], dtype=x.dtype, param_dtype=x.dtype), time_major=True)
  return module.apply({'params': {'cell': cell}}, x)


def layer_times(steps: int, batch: int, input_dim: int, hidden: int, reps: int = 5,
                seed: int = 0, cell: str = 'lstm', dtype: str = 'float32') -> dict:
  """Milliseconds of one LSTM or GRU layer's forward and backward (gradients of the input and
  every weight): ``feature-major`` and ``batch-major`` (the two layouts of
  ``lstm_time_major`` / ``gru_time_major``), for the GRU also ``flax scan`` (``nn.RNN(GRUCell)``)
  and, where torch is installed, ``torch (cpu)`` or, when JAX runs on a GPU, ``torch (cuda)``
  (in bfloat16 under autocast); calls interleaved."""
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((steps, batch, input_dim)), dtype)
  g = jnp.asarray(rng.standard_normal((steps, batch, hidden)), dtype)
  params = _layer_params(rng, cell, input_dim, hidden, dtype)
  layer = rnn.lstm_time_major if cell == 'lstm' else rnn.gru_time_major
  argnums = tuple(range(len(params) + 1))
  runs = {}
  layers = {'feature-major': functools.partial(layer, feature_major=True),
            'batch-major': functools.partial(layer, feature_major=False)}
  if cell == 'gru':
    layers['flax scan'] = _flax_gru
  for name, run in layers.items():
    loss = lambda *a, run=run: jnp.vdot(run(*a).astype(jnp.float32), g.astype(jnp.float32))
    grads = jax.jit(jax.grad(loss, argnums=argnums)).lower(x, *params).compile(
        compiler_options=trainer_options())
    runs[name] = functools.partial(grads, x, *params)
  try:
    import torch
  except ImportError:
    torch = None
  if torch is not None:
    # Beside JAX on a GPU, PyTorch runs on CUDA (cuDNN's fused layers), timed to completion.
    cuda = jax.default_backend() == 'gpu' and torch.cuda.is_available()
    device = 'cuda' if cuda else 'cpu'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    module = (torch.nn.LSTM if cell == 'lstm' else torch.nn.GRU)(input_dim, hidden).to(device)
    tx = torch.from_numpy(np.array(x, np.float32)).to(device).requires_grad_()
    tg = torch.from_numpy(np.array(g, np.float32)).to(device)
    half = dtype == 'bfloat16'

    def torch_step():
      module.zero_grad()
      tx.grad = None
      with torch.autocast(device, torch.bfloat16, enabled=half):
        y = module(tx)[0]
      y.backward(tg.to(y.dtype))
      sync()
    runs[f'torch ({device})'] = torch_step
  return {name: s * 1e3 for name, s in interleaved_medians(runs, reps).items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=128)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--hidden', type=int, default=512)
  parser.add_argument('--inputs', default='64,512', help='input widths of the layers timed')
  parser.add_argument('--cells', default='lstm', help='layers timed: lstm, gru or lstm,gru')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'),
                      help="the layers' dtype (the recurrent-matmul loops stay float32)")
  parser.add_argument('--reps', type=int, default=10)
  args = parser.parse_args()
  tune_malloc()
  t, b, h = args.steps, args.batch, args.hidden
  print(f'{jax.devices()[0].device_kind}, {args.dtype}, {t} steps, batch {b}, {h} units '
        f'(median of {args.reps})')
  ms = loop_times(t, b, h, reps=args.reps)
  for name in LOOPS:
    print(f'recurrent matmul (float32), {name:34s} {ms[name]:.3f} ms/step')
  for cell in args.cells.split(','):
    for d in (int(v) for v in args.inputs.split(',')):
      ms = layer_times(t, b, d, h, reps=args.reps, cell=cell, dtype=args.dtype)
      print(f'{cell.upper()} layer {d} -> {h}, forward + backward: ' +
            ', '.join(f'{name} {v:.1f} ms' for name, v in ms.items()))


if __name__ == '__main__':
  main()
