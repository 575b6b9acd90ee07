"""How fast one LSTM layer runs, by the layout of its recurrent matmul, and against PyTorch's.

An LSTM's time goes to two sequential loops of ``T`` small matmuls (the recurrence
forward, ``dz W_h^T`` backward) and to a few large ones around them. This prints:

1. the milliseconds per step of a ``T``-step scan of the recurrent matmul alone, in two
   layouts: batch-major ``h W_h`` (``[B, H] x [H, 4H]``; backward ``dz W_h^T``) and
   feature-major ``W_h^T h^T`` (``[4H, H] x [H, B]``; backward ``W_h dz``), the one
   ``models/rnn.py`` uses on CPU;
2. one layer's forward and backward (``models.rnn.lstm_time_major``, compiled as the
   trainer compiles it) in both layouts (feature-major is the CPU default, batch-major
   the GPU and TPU one), against ``torch.nn.LSTM`` where torch is installed (never a
   dependency), interleaved, for each input width given.

Each figure is the median of ``--reps`` calls. Findings in experiments/README.md.

  python experiments/bench_lstm_layer.py [--steps 128 --batch 32 --hidden 512 --inputs 64,512]
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


def layer_times(steps: int, batch: int, input_dim: int, hidden: int, reps: int = 5,
                seed: int = 0) -> dict:
  """Milliseconds of one LSTM layer's forward and backward (gradients of the input and
  every weight): ``feature-major`` and ``batch-major`` (the two layouts of
  ``lstm_time_major``) and, where torch is installed, ``torch (cpu)`` or, when JAX runs on
  a GPU, ``torch (cuda)``; calls interleaved."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((steps, batch, input_dim)).astype(np.float32)
  g = rng.standard_normal((steps, batch, hidden)).astype(np.float32)
  params = [jnp.asarray(rng.standard_normal(s) * 0.05, jnp.float32)
            for s in ((input_dim, 4 * hidden), (4 * hidden,), (hidden, 4 * hidden))]
  runs = {}
  for layout, feature_major in (('feature-major', True), ('batch-major', False)):
    loss = lambda x, wi, b, wh, fm=feature_major: jnp.vdot(rnn.lstm_time_major(x, wi, b, wh, fm), g)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))).lower(x, *params).compile(
        compiler_options=trainer_options())
    runs[layout] = functools.partial(grads, jnp.asarray(x), *params)  # x on the device once
  try:
    import torch
  except ImportError:
    torch = None
  if torch is not None:
    # Beside JAX on a GPU, PyTorch runs on CUDA (cuDNN's fused LSTM), timed to completion.
    cuda = jax.default_backend() == 'gpu' and torch.cuda.is_available()
    device = 'cuda' if cuda else 'cpu'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    layer = torch.nn.LSTM(input_dim, hidden).to(device)  # time-major, as lstm_time_major
    tx = torch.from_numpy(x).to(device).requires_grad_()
    tg = torch.from_numpy(g).to(device)

    def torch_step():
      layer.zero_grad()
      tx.grad = None
      layer(tx)[0].backward(tg)
      sync()
    runs[f'torch ({device})'] = torch_step
  return {name: s * 1e3 for name, s in interleaved_medians(runs, reps).items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=128)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--hidden', type=int, default=512)
  parser.add_argument('--inputs', default='64,512', help='input widths of the layers timed')
  parser.add_argument('--reps', type=int, default=10)
  args = parser.parse_args()
  tune_malloc()
  t, b, h = args.steps, args.batch, args.hidden
  print(f'{jax.devices()[0].device_kind}, float32, {t} steps, batch {b}, {h} units '
        f'(median of {args.reps})')
  ms = loop_times(t, b, h, reps=args.reps)
  for name in LOOPS:
    print(f'recurrent matmul, {name:34s} {ms[name]:.3f} ms/step')
  for d in (int(v) for v in args.inputs.split(',')):
    ms = layer_times(t, b, d, h, reps=args.reps)
    print(f'LSTM layer {d} -> {h}, forward + backward: ' +
          ', '.join(f'{name} {v:.1f} ms' for name, v in ms.items()))


if __name__ == '__main__':
  main()
