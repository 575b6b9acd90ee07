"""Times one PyTorch training step (forward, loss, backward, clipping, AdamW) eager or compiled.

``benchmark(name, hparams, batch, optimizer_cfg, lr, ...)`` takes the same numpy batch
the JAX benchmark feeds its step, and the jaxlab optimizer config (AdamW with decay
on matrices only, as train/optim.py masks it, and global-norm clipping when set).
"""
from __future__ import annotations

import dataclasses
import statistics
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F

from experiments.torch_reference import models

REFERENCES = {'cnn': models.CNN, 'mlp': models.MLP, 'transformer_lm': models.TransformerLM,
              'lstm_lm': models.LSTMLM, 'resnet': models.ResNet}
IMAGE_MODELS = ('cnn', 'resnet')  # NCHW on the CPU; channels_last on a GPU


def hparams_of(flax_module) -> dict:
  """A Flax module's hyper-parameters (dataclass fields) as plain Python values."""
  skip = {'parent', 'name', 'dtype', 'param_dtype'}
  out = {}
  for f in dataclasses.fields(flax_module):
    if f.init and f.name not in skip:
      v = getattr(flax_module, f.name)
      out[f.name] = tuple(v) if isinstance(v, (list, tuple)) else v
  return out


def _inputs(name: str, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
  x = np.asarray(batch['inputs'])
  if name in IMAGE_MODELS:  # NHWC -> NCHW, PyTorch's native layout
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
  y = batch['targets'] if 'targets' in batch else batch['label']
  return torch.from_numpy(x), torch.from_numpy(np.asarray(y).astype(np.int64))


def build_model(name: str, hparams: dict, batch: dict) -> torch.nn.Module:
  x = np.asarray(batch['inputs'])
  extra = {}
  if name in IMAGE_MODELS:
    extra = dict(in_channels=x.shape[-1], image_size=x.shape[1])
  elif name == 'mlp':
    extra = dict(in_features=int(np.prod(x.shape[1:])))
  return REFERENCES[name](**hparams, **extra)


def make_optimizer(model, optimizer_cfg, lr: float, fused: bool = False) -> torch.optim.Optimizer:
  """AdamW, or SGD with (Nesterov) momentum for those configs; weight decay on parameters
  with more than one dimension only (train/optim.py). ``fused``: one CUDA kernel (GPU)."""
  decay = [p for p in model.parameters() if p.ndim > 1]
  rest = [p for p in model.parameters() if p.ndim <= 1]
  groups = [{'params': decay, 'weight_decay': optimizer_cfg.weight_decay},
            {'params': rest, 'weight_decay': 0.0}]
  kw = {'fused': True} if fused else {}
  if optimizer_cfg.name in ('momentum', 'nesterov'):
    return torch.optim.SGD(groups, lr=lr, momentum=optimizer_cfg.momentum,
                           nesterov=optimizer_cfg.name == 'nesterov', **kw)
  return torch.optim.AdamW(groups, lr=lr, betas=(optimizer_cfg.b1, optimizer_cfg.b2),
                           eps=optimizer_cfg.eps, **kw)


def benchmark(name: str, hparams: dict, batch: dict, optimizer_cfg, lr: float, steps: int = 20,
              warmup: int = 3, compile: bool = False, seed: int = 0, device: str = 'cpu',
              dtype: str = 'float32') -> dict:
  """``{'step_time_ms', 'compile_time_s', 'error'}``: the median of ``steps`` timed steps.

  ``compile=True`` compiles the forward + loss and the optimizer step with
  ``torch.compile``; ``compile_time_s`` is then the first (compiling) step's time.
  On ``device='cuda'`` the step is what nanoGPT runs: ``dtype`` bfloat16/float16 under
  ``torch.autocast`` (float32 weights), TF32 matmuls, fused AdamW, images
  channels_last, SDPA attention (flash), each step timed to ``torch.cuda.synchronize``.
  A failure is returned as ``error`` (one line), never raised.
  """
  torch.manual_seed(seed)
  cuda = device.startswith('cuda')
  if cuda:
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
  model = build_model(name, hparams, batch).to(device)
  model.train()
  x, y = (t.to(device) for t in _inputs(name, batch))
  if cuda and name in IMAGE_MODELS:
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  opt = make_optimizer(model, optimizer_cfg, lr, fused=cuda)
  amp = {'bfloat16': torch.bfloat16, 'float16': torch.float16}.get(dtype)
  sync = torch.cuda.synchronize if cuda else (lambda: None)
  params = [p for p in model.parameters()]
  clip = optimizer_cfg.grad_clip_norm

  def loss_fn(x, y):
    with torch.autocast(device.split(':')[0], dtype=amp, enabled=amp is not None):
      logits = model(x)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))

  def opt_step():
    opt.step()

  fwd, update = loss_fn, opt_step
  if compile:
    fwd, update = torch.compile(loss_fn), torch.compile(opt_step)

  def step():
    opt.zero_grad(set_to_none=True)
    loss = fwd(x, y)
    loss.backward()
    if clip > 0:
      torch.nn.utils.clip_grad_norm_(params, clip)
    update()
    return loss

  out = {'step_time_ms': None, 'pipelined_step_time_ms': None, 'compile_time_s': None,
         'error': None}
  try:
    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    out['compile_time_s'] = first if compile else None
    for _ in range(max(warmup - 1, 0)):
      step()
    sync()
    times = []
    for _ in range(steps):
      t0 = time.perf_counter()
      step()
      sync()
      times.append(time.perf_counter() - t0)
    out['step_time_ms'] = statistics.median(times) * 1e3
    # Back to back with one wait, as train.benchmark's pipelined figure (on CUDA the host
    # queues the next step's kernels while the GPU runs this one's).
    t0 = time.perf_counter()
    for _ in range(steps):
      step()
    sync()
    out['pipelined_step_time_ms'] = (time.perf_counter() - t0) / max(steps, 1) * 1e3
  except Exception as e:  # torch.compile needs a working C++ toolchain; report, don't crash
    lines = [l for l in traceback.format_exception_only(type(e), e)[-1].splitlines() if l.strip()]
    out['error'] = lines[0][:300] if lines else type(e).__name__
  return out


def matmul_call(n: int = 2048, dtype=torch.float32, device: str = 'cpu'):
  """A function of no arguments that runs one ``n x n`` PyTorch matmul on ``device`` to
  completion (random operands, warm)."""
  a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
  sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)

  def call():
    a @ b
    sync()
  call()
  return call


def matmul_peak(n: int = 2048, reps: int = 10, dtype=torch.float32, device: str = 'cpu') -> float:
  """FLOP/s of an ``n x n`` PyTorch matmul on ``device``: the median of ``reps``."""
  call = matmul_call(n, dtype, device)
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
  return 2 * n ** 3 / statistics.median(times)
