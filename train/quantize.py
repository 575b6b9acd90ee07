"""Post-training int8 weight quantization: symmetric, one scale per output channel.

  python -m train.quantize --workdir runs/mnist_cnn [--out runs/mnist_cnn/params_int8.safetensors]

Every Dense and Conv kernel (``[in, out]``, ``[kh, kw, in, out]``) becomes int8
``q = round(w / s)`` with ``s = max|w| / 127`` over all axes but the last, so each
output channel uses the whole [-127, 127] range and ``|w - s q| <= s / 2``. Biases,
norm parameters, embeddings and model state stay float32 (a sliver of the bytes).
The command writes the int8 weights as safetensors, evaluates the float and the
dequantized model on the run's eval split with the trainer's eval step and task,
and prints both accuracies and the float32 and int8 file sizes.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import jax
import numpy as np

from train.posttrain import is_kernel

QMAX = 127  # symmetric: -128 is never used, so negating a weight never overflows


def quantize_kernel(w) -> tuple[np.ndarray, np.ndarray]:
  """``(q int8, scale float32 [out])`` for one kernel; an all-zero channel gets scale 0."""
  w = np.asarray(w, np.float32)
  amax = np.max(np.abs(w), axis=tuple(range(w.ndim - 1)))
  scale = (amax / QMAX).astype(np.float32)
  safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
  q = np.clip(np.rint(w / safe), -QMAX, QMAX).astype(np.int8)
  return q, scale


def quantize_params(params) -> tuple[dict, dict]:
  """``(qparams, scales)``: ``params`` with each kernel as int8, and the float32 per-channel
  scales of those kernels under the same paths (other leaves are not in ``scales``)."""
  from models.safetensors_io import unflatten_params
  flat_q, flat_s = {}, {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    key = '.'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)
    if is_kernel(path, leaf):
      flat_q[key], flat_s[key] = quantize_kernel(leaf)
    else:
      flat_q[key] = np.asarray(leaf)
  return unflatten_params(flat_q), unflatten_params(flat_s)


def dequantize_params(qparams, scales) -> dict:
  """Float32 params back from :func:`quantize_params`: ``q * scale`` for each quantized kernel."""
  def leaf(path, q):
    s = _lookup(scales, path)
    return np.asarray(q) if s is None else np.asarray(q, np.float32) * np.asarray(s, np.float32)
  return jax.tree_util.tree_map_with_path(leaf, qparams)


def _lookup(tree, path):
  for k in path:
    k = getattr(k, 'key', getattr(k, 'name', k))
    if not isinstance(tree, dict) or k not in tree:
      return None
    tree = tree[k]
  return tree


FORMAT = 'jaxlab-int8: params.* (int8 kernels, float rest), scales.* (float32 per output channel), w = q * s'


def save_quantized(path: str, qparams, scales, model_state=None) -> None:
  """One safetensors file: ``params.*`` (int8 kernels, float rest), ``scales.*``, and any
  model state collections (``batch_stats.*``) so the file alone runs the model."""
  from models.safetensors_io import save_params
  tree = {'params': qparams, 'scales': scales, **(model_state or {})}
  save_params(tree, path, metadata={'format': FORMAT})


def load_quantized(path: str) -> tuple[dict, dict, dict]:
  """``(qparams, scales, model_state)`` from a file written by :func:`save_quantized`."""
  from models.safetensors_io import load_params
  tree = load_params(path)
  if 'params' not in tree:
    raise ValueError(f'{path}: not a quantized parameter file (no params.* tensors)')
  return tree.pop('params'), tree.pop('scales', {}), tree


def save_float(path: str, params, model_state=None) -> None:
  """The float32 reference file, laid out like :func:`save_quantized` (no scales)."""
  from models.safetensors_io import save_params
  save_params({'params': params, **(model_state or {})}, path)


def quantize_run(workdir: str, out: str | None = None, data_dir: str | None = None) -> dict:
  """Quantizes a trained classifier run's latest checkpoint to ``out`` (default
  ``WORKDIR/params_int8.safetensors``) and evaluates the float and the saved int8 weights
  on the run's eval split. Returns ``{'float': metrics, 'int8': metrics, 'float_bytes',
  'int8_bytes', 'step', 'kernels', 'out', 'eval_split'}``.

  Raises FileNotFoundError, ValueError (not a classifier) or DataError.
  """
  from train import posttrain
  from train.data import sources
  from train.workdir import check_config_paths
  config = posttrain.read_config(workdir)
  if config.task not in posttrain.CLASSIFIER_TASKS:
    raise ValueError(f'{workdir} trained task {config.task!r}; quantization is '
                     f'evaluated on classifiers ({", ".join(posttrain.CLASSIFIER_TASKS)})')
  if data_dir:
    config.data.dir = data_dir
  check_config_paths(config)  # the run's data paths are only read
  splits = sources.load_splits(config.data)
  run = posttrain.load_run(workdir, splits.info)
  out = out or os.path.join(workdir, 'params_int8.safetensors')

  qparams, scales = quantize_params(run.params)
  save_quantized(out, qparams, scales, run.model_state)
  qparams, scales, model_state = load_quantized(out)  # evaluate what was saved
  deq = dequantize_params(qparams, scales)
  with tempfile.TemporaryDirectory() as tmp:
    float_file = os.path.join(tmp, 'params_float32.safetensors')
    save_float(float_file, run.params, run.model_state)
    float_bytes = os.path.getsize(float_file)

  kw = dict(task=config.task, batch_size=config.get('eval_batch_size') or config.batch_size)
  return {'float': posttrain.evaluate(run.model, run.params, run.model_state, splits.eval, **kw),
          'int8': posttrain.evaluate(run.model, deq, model_state, splits.eval, **kw),
          'float_bytes': float_bytes, 'int8_bytes': os.path.getsize(out), 'step': run.step,
          'kernels': len(jax.tree_util.tree_leaves(scales)), 'out': out,
          'eval_split': config.data.eval_split}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--workdir', required=True, help='a trained classifier run')
  p.add_argument('--out', default=None, help='int8 safetensors file (default WORKDIR/params_int8.safetensors)')
  p.add_argument('--data_dir', default=None, help="override the run's data.dir")
  args = p.parse_args(argv)
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.ERROR)
  from train.data.base import DataError
  try:
    r = quantize_run(args.workdir, args.out, args.data_dir)
  except (FileNotFoundError, ValueError, KeyError, DataError) as e:
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    return 2
  f, q = r['float'], r['int8']
  print(f'run {args.workdir} step {r["step"]}: {r["kernels"]} kernels quantized to int8 '
        f'(per output channel); eval on {r["eval_split"]} ({f["num_examples"]} examples)')
  print(f'accuracy float32 {f["accuracy"]:.4f}  int8 {q["accuracy"]:.4f}  '
        f'drop {100 * (f["accuracy"] - q["accuracy"]):.2f} points')
  print(f'loss     float32 {f["loss"]:.4f}  int8 {q["loss"]:.4f}')
  print(f'size     float32 {r["float_bytes"]:,} B  int8 {r["int8_bytes"]:,} B  '
        f'(float32/int8 = {r["float_bytes"] / r["int8_bytes"]:.2f}x) -> {r["out"]}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
