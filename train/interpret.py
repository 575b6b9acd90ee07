"""Interpretability for any model and params: attributions, attention maps, activation statistics.

Pure functions; the figures are in :mod:`train.interpret_figures`, and the command
``python -m train.interpret --workdir RUN --out DIR`` (:mod:`train.interpret_run`) writes
them for a trained run.

- :func:`saliency`: vanilla gradients ``|d score / d input|`` (Simonyan et al. 2014).
- :func:`integrated_gradients`: ``(x - x') * mean_alpha grad f(x' + alpha (x - x'))``
  (Sundararajan et al. 2017), the path steps batched under one jit; :func:`completeness_gap`
  checks ``sum(attributions) == f(x) - f(x')``.
- Token models (Transformer, LSTM) are attributed w.r.t. their (token) embedding output:
  :func:`embed` reads it and :class:`LogitScore` re-applies the model with it replaced
  (a flax method interceptor: the models' call signatures are untouched).
- :func:`attention_maps`: per layer and head attention probabilities, recomputed from the
  captured queries and keys, so the models keep their fused attention kernels.
- :func:`activation_stats`: per-module output statistics via ``capture_intermediates``.

A *score function* ``f(x, *args) -> [B]`` gives one scalar per example; examples must not
interact (true of every model here in eval mode). :func:`logit_score` builds one from a model::

    f = logit_score(model)                                   # images, features
    sal = saliency(f, images, variables, labels, {})
    attr = integrated_gradients(f, images, variables, labels, {}, steps=64)
    gap = completeness_gap(f, images, attr, variables, labels, {})  # relative error, per example

    emb = embed(model, variables, tokens, mask)               # tokens: attribute the embeddings
    extra = {'tokens': tokens, 'mask': mask}                  # LMs add 'position' [B]
    attr = integrated_gradients(logit_score(model), emb, variables, target, extra)
    per_token = attr.sum(-1)
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

RULES = ('trapezoid', 'riemann', 'left', 'midpoint')


# -------------------------------------------------------------------------------- scores

def select_logit(logits, target, position=None):
  """``[B]`` scores: ``logits[b, target[b]]`` of ``[B, C]`` logits, ``logits[b, position[b],
  target[b]]`` of ``[B, T, V]`` LM logits, or for one binary logit ``[B]`` the log-odds of
  ``target`` (``+z`` for class 1, ``-z`` for class 0)."""
  b = jnp.arange(logits.shape[0])
  target = jnp.asarray(target)
  if logits.ndim == 1:
    return jnp.where(target == 1, logits, -logits)
  if logits.ndim == 3:
    pos = jnp.full(logits.shape[:1], logits.shape[1] - 1) if position is None else position
    return logits[b, pos, target]
  return logits[b, target]


def module_name(module: nn.Module) -> str:
  """A bound module's path, ``'decoder/layer_0/attention'`` (``''`` for the root)."""
  return '/'.join(module.path)


@contextlib.contextmanager
def _on_embedding(layer: str | None, replace=None, record: list | None = None):
  """Within: the first ``__call__`` of the embedding module returns ``replace`` (when given)
  and its output is appended to ``record``. ``layer`` names the module by path; ``None``
  takes the first ``nn.Embed`` called: the token embeddings (positions, token types and
  BERT's LayerNorm stay inside the attributed function, so a zero baseline there is
  "no token" at each position, away from LayerNorm's singularity at zero)."""
  done = []

  def interceptor(next_fun, args, kwargs, context):
    if done or context.method_name != '__call__':
      return next_fun(*args, **kwargs)
    mod = context.module
    hit = module_name(mod) == layer if layer is not None else isinstance(mod, nn.Embed)
    if not hit:
      return next_fun(*args, **kwargs)
    done.append(True)
    out = next_fun(*args, **kwargs) if replace is None else replace
    if record is not None:
      record.append(out)
    return out

  with nn.intercept_methods(interceptor):
    yield
  if not done:
    raise ValueError(f'no embedding module {layer or "(nn.Embed)"} was called')


def _apply(model, variables, x, extra):
  kw = {'mask': extra['mask']} if extra.get('mask') is not None else {}
  return model.apply(variables, x, train=False, **kw)


@dataclasses.dataclass(frozen=True)
class LogitScore:
  """``f(x, variables, target, extra) -> [B]``: the logit of ``target`` (see :func:`select_logit`).

  ``extra`` is a dict: ``mask`` goes to the model; with ``tokens``, ``x`` is the embedding
  output that replaces the model's own (module ``embedding_layer``, e.g. ``'embed'`` for a
  TransformerLM's token + position sum; default the token embeddings, the first
  ``nn.Embed``); ``position`` ``[B]`` picks the LM position. Hashable, so jitted callers cache it.
  """
  model: Any
  embedding_layer: str | None = None

  def __call__(self, x, variables, target, extra):
    if extra.get('tokens') is None:
      logits = _apply(self.model, variables, x, extra)
    else:
      with _on_embedding(self.embedding_layer, replace=x):
        logits = _apply(self.model, variables, extra['tokens'], extra)
    return select_logit(logits, target, extra.get('position'))


def logit_score(model, embedding_layer: str | None = None) -> LogitScore:
  """The score function of a model's logits (inputs or, with ``extra['tokens']``, embeddings)."""
  return LogitScore(model, embedding_layer)


class _Stop(Exception):
  """Ends a forward pass once the embedding output has been recorded."""


def embed(model, variables, tokens, mask=None, layer: str | None = None) -> jax.Array:
  """The output of the model's embedding module for ``tokens`` (``[B, T, D]``); the rest of
  the model does not run."""
  record = []

  def stop(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if record and context.method_name == '__call__':
      raise _Stop
    return out

  try:
    # ``stop`` wraps the embedding interceptor, so it sees the recorded output on return.
    with nn.intercept_methods(stop), _on_embedding(layer, record=record):
      _apply(model, variables, tokens, {'mask': mask})
  except _Stop:
    pass
  if not record:
    raise ValueError(f'no embedding module {layer or "(nn.Embed)"} was called')
  return record[0]


# -------------------------------------------------------------------------- attributions

def _grad(f, x, args):
  # Examples are independent, so the gradient of the summed scores is each example's own.
  return jax.grad(lambda z: jnp.sum(f(z, *args)))(x)


@functools.partial(jax.jit, static_argnums=0)
def _gradients(f, x, args):
  return _grad(f, x, args)


@functools.partial(jax.jit, static_argnums=0)
def _scores(f, x, args):
  return f(x, *args)


def scores(f: Callable, x, *args) -> jax.Array:
  """``f(x, *args)`` under jit (``f`` must be hashable): the ``[B]`` scores."""
  return _scores(f, x, args)


def input_gradients(f: Callable, x, *args) -> jax.Array:
  """``d f(x)[b] / d x[b]`` for every example, shaped like ``x`` (``f`` must be hashable)."""
  return _gradients(f, x, args)


def saliency(f: Callable, x, *args, reduce: str | None = 'max') -> jax.Array:
  """Vanilla-gradient saliency ``|d f / d x|``, reduced over the last axis: ``'max'`` over
  image channels (``[B, H, W, C] -> [B, H, W]``), ``'l2'`` over embedding features (a
  per-token norm, ``[B, T, D] -> [B, T]``), or ``None`` (no reduction)."""
  g = input_gradients(f, x, *args)
  if reduce == 'max':
    return jnp.abs(g).max(-1)
  if reduce == 'l2':
    return jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32)), -1))
  if reduce is None:
    return jnp.abs(g)
  raise ValueError(f"reduce must be 'max', 'l2' or None, got {reduce!r}")


def path_weights(steps: int, rule: str = 'trapezoid') -> tuple[np.ndarray, np.ndarray]:
  """``(alphas, weights)`` of a quadrature of ``int_0^1 g(alpha) d alpha`` with ``steps`` intervals.

  ``'trapezoid'`` evaluates ``steps + 1`` points (halved end weights); ``'riemann'`` the right
  end of each interval (the paper's Eq. 3), ``'left'`` the left end, ``'midpoint'`` the middle.
  """
  if steps < 1:
    raise ValueError(f'steps must be >= 1, got {steps}')
  k = np.arange(steps, dtype=np.float64)
  if rule == 'trapezoid':
    alphas = np.linspace(0.0, 1.0, steps + 1)
    weights = np.full(steps + 1, 1.0 / steps)
    weights[[0, -1]] /= 2
  elif rule in ('riemann', 'left', 'midpoint'):
    alphas = (k + {'riemann': 1.0, 'left': 0.0, 'midpoint': 0.5}[rule]) / steps
    weights = np.full(steps, 1.0 / steps)
  else:
    raise ValueError(f'rule must be one of {RULES}, got {rule!r}')
  return alphas.astype(np.float32), weights.astype(np.float32)


@functools.partial(jax.jit, static_argnums=0, static_argnames=('steps', 'rule', 'batch_size'))
def _integrated_gradients(f, x, baseline, args, *, steps, rule, batch_size):
  alphas, weights = path_weights(steps, rule)
  # Path points in batches of ``batch_size`` (lax.map vmaps inside a scan): bounded memory.
  # Zero-weight points pad the last batch, so one loop body is compiled, not two.
  size = min(batch_size or len(alphas), len(alphas))
  pad = -len(alphas) % size
  alphas, weights = np.pad(alphas, (0, pad)), np.pad(weights, (0, pad))
  baseline = jnp.broadcast_to(baseline, x.shape).astype(x.dtype)
  grads = jax.lax.map(lambda a: _grad(f, baseline + a * (x - baseline), args), jnp.asarray(alphas),
                      batch_size=size)
  avg = jnp.tensordot(jnp.asarray(weights), grads.astype(jnp.float32), axes=1)
  return (x - baseline).astype(jnp.float32) * avg


def integrated_gradients(f: Callable, x, *args, baseline=None, steps: int = 64,
                         rule: str = 'trapezoid', batch_size: int | None = None) -> jax.Array:
  """Integrated gradients of ``f(x, *args) -> [B]``, shaped like ``x`` (float32).

  ``baseline`` (default zeros) broadcasts to ``x``; ``steps`` intervals of the straight path
  are integrated with ``rule`` (:func:`path_weights`); ``batch_size`` path points at a time
  go through one vmapped gradient (default all). ``f`` must be hashable (a function or a
  :class:`LogitScore`); a new ``f`` object compiles anew.
  """
  baseline = jnp.zeros((), x.dtype) if baseline is None else jnp.asarray(baseline)
  return _integrated_gradients(f, x, baseline, args, steps=steps, rule=rule, batch_size=batch_size)


def completeness_gap(f: Callable, x, attributions, *args, baseline=None) -> dict[str, np.ndarray]:
  """How far ``sum(attributions)`` is from ``f(x) - f(baseline)`` (IG's completeness axiom).

  Returns per-example numpy arrays: ``sum``, ``delta`` (``f(x) - f(baseline)``), ``abs``
  (``|sum - delta|``) and ``relative`` (``abs / |delta|``; within 0.01 with enough steps).
  """
  baseline = jnp.zeros((), x.dtype) if baseline is None else jnp.asarray(baseline)
  fx = np.asarray(scores(f, x, *args), np.float64)
  fb = np.asarray(scores(f, jnp.broadcast_to(baseline, x.shape).astype(x.dtype), *args), np.float64)
  total = np.asarray(attributions, np.float64).reshape(len(fx), -1).sum(-1)
  delta = fx - fb
  err = np.abs(total - delta)
  return {'sum': total, 'delta': delta, 'abs': err,
          'relative': err / np.maximum(np.abs(delta), 1e-12)}


# ----------------------------------------------------------------------- attention maps

def _attention_class():
  from models.attention import MultiHeadAttention
  return MultiHeadAttention


def _no_remat(model):
  # Values recorded inside a rematerialised block would leak its tracers; the parameters
  # are named the same without remat.
  return model.clone(remat='none') if getattr(model, 'remat', 'none') != 'none' else model


def attention_weights(q, k, mask=None, *, causal: bool = False) -> jax.Array:
  """``softmax(q k^T / sqrt(H) + masks)`` ``[B, N, T, S]`` from ``q [B, T, N, H]`` and
  ``k [B, S, N, H]``: what :func:`models.attention.dot_product_attention` computes
  (``mask`` True where allowed)."""
  logits = jnp.einsum('btnh,bsnh->bnts', q.astype(jnp.float32), k.astype(jnp.float32))
  logits = logits / np.sqrt(q.shape[-1])
  allowed = jnp.ones(logits.shape[-2:], bool)
  if causal:
    allowed = jnp.tril(allowed)
  if mask is not None:
    allowed = jnp.logical_and(allowed, mask)
  return jax.nn.softmax(jnp.where(allowed, logits, jnp.finfo(jnp.float32).min), axis=-1)


def capture_attention(model, variables, tokens, mask=None) -> dict[str, dict[str, jax.Array]]:
  """Every :class:`models.attention.MultiHeadAttention` call of ``model`` on ``tokens``.

  Returns ``{path: {'weights' [B, N, T, S], 'values' [B, S, N, H], 'output' [B, T, D]}}`` in
  call order: the weights recomputed from the layer's captured queries and keys with the
  mask it was given (rotary positions applied), its values and its output (after the
  ``out`` projection). Not for ``decode=True`` models.
  """
  from models.attention import rotary_embedding
  model = _no_remat(model)
  mha = _attention_class()
  calls: dict[str, dict] = {}

  def interceptor(next_fun, args, kwargs, context):
    mod, out = context.module, None
    if context.method_name == '__call__' and isinstance(mod, mha):
      rec = calls.setdefault(module_name(mod), {'module': mod})
      rec['mask'] = args[1] if len(args) > 1 else kwargs.get('mask')
      rec['positions'] = args[2] if len(args) > 2 else kwargs.get('positions')
      out = rec['output'] = next_fun(*args, **kwargs)
      return out
    out = next_fun(*args, **kwargs)
    parent = getattr(mod, 'parent', None)
    if (context.method_name == '__call__' and isinstance(parent, mha)
        and mod.name in ('query', 'key', 'value')):
      calls.setdefault(module_name(parent), {'module': parent})[mod.name] = out
    return out

  @jax.jit
  def run(variables, tokens, mask):
    calls.clear()
    with nn.intercept_methods(interceptor):
      _apply(model, variables, tokens, {'mask': mask})
    out = {}
    for path, rec in calls.items():
      m = rec['module']
      if m.decode:
        raise ValueError('capture_attention needs a model built with decode=False')
      split = lambda y: y.reshape(y.shape[:2] + (m.num_heads, -1))
      q, k, v = split(rec['query']), split(rec['key']), split(rec['value'])
      if m.rotary:
        pos = jnp.arange(q.shape[1]) if rec['positions'] is None else rec['positions']
        q, k = rotary_embedding(q, pos), rotary_embedding(k, pos)
      out[path] = {'weights': attention_weights(q, k, rec['mask'], causal=m.causal),
                   'values': v, 'output': rec['output']}
    return out

  return run(variables, tokens, mask)


def attention_maps(model, variables, tokens, mask=None) -> dict[str, jax.Array]:
  """``{attention module path: probabilities [B, heads, queries, keys]}`` for ``tokens``."""
  return {k: v['weights'] for k, v in capture_attention(model, variables, tokens, mask).items()}


# ------------------------------------------------------------------ activation statistics

STAT_COLUMNS = ('layer', 'shape', 'mean', 'std', 'min', 'max', 'max_abs', 'frac_zero',
                'frac_nonpos', 'frac_dead_units')


def _default_filter(module, method_name: str) -> bool:
  # RNN cells run inside nn.scan, which has no axis for the 'intermediates' collection;
  # dropout is the identity in eval mode.
  return method_name == '__call__' and not isinstance(module, (nn.RNNCellBase, nn.Dropout))


def _walk(tree, prefix=()):
  """``(path, array)`` of every captured output (a module called twice gives ``path[i]``)."""
  for key, value in tree.items():
    if key == '__call__':
      for i, out in enumerate(value):
        for j, leaf in enumerate(jax.tree_util.tree_leaves(out)):
          suffix = (f'[{i}]' if len(value) > 1 else '') + (f'.{j}' if j else '')
          yield '/'.join(prefix), suffix, leaf
    else:
      yield from _walk(value, prefix + (key,))


def stats_of(a: np.ndarray) -> dict[str, float]:
  """The statistics of one activation array (its last axis holds the units)."""
  a = np.asarray(a, np.float64)
  flat_units = a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a.reshape(-1, 1)
  return {'mean': float(a.mean()), 'std': float(a.std()), 'min': float(a.min()),
          'max': float(a.max()), 'max_abs': float(np.abs(a).max()),
          'frac_zero': float(np.mean(a == 0)),
          # What a ReLU after this output would zero, and units it would zero on every input.
          'frac_nonpos': float(np.mean(a <= 0)),
          'frac_dead_units': float(np.mean(np.all(flat_units <= 0, axis=0)))}


def activation_stats(model, variables, x, mask=None, *,
                     capture: Callable | bool = _default_filter) -> list[dict[str, Any]]:
  """A row of statistics per captured module output of ``model`` on ``x`` (eval mode).

  ``capture`` is flax's ``capture_intermediates`` filter (default: every ``__call__`` but
  dropout's). Rows (columns :data:`STAT_COLUMNS`) follow the order in which the modules
  returned (children before parents), the model's output, ``'(output)'``, last. With a
  token ``mask [B, T]``, outputs shaped ``[B, T, ...]`` count real tokens only. Module
  outputs are what is captured: a Dense followed by ``nn.relu`` is seen before the ReLU,
  so ``frac_nonpos`` / ``frac_dead_units`` are what that ReLU zeroes.
  """
  model = _no_remat(model)
  kw = {'mask': mask} if mask is not None else {}
  order: dict[str, int] = {}

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__':
      order.setdefault(module_name(context.module), len(order))
    return out

  def run(variables, x, kw):
    with nn.intercept_methods(interceptor):
      return model.apply(variables, x, train=False, capture_intermediates=capture,
                         mutable=['intermediates'], **kw)[1]['intermediates']
  # jit returns dicts with sorted keys; ``order`` (filled while tracing) restores call order.
  captured = jax.jit(run)(variables, x, kw)
  m = None if mask is None else np.asarray(mask, bool)
  rows = []
  for path, suffix, arr in _walk(captured):
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.floating) or arr.size == 0:
      continue
    shape = arr.shape
    if m is not None and arr.shape[:2] == m.shape:
      arr = arr[m]
    rows.append({'layer': (path or '(output)') + suffix, 'shape': 'x'.join(map(str, shape)),
                 '_order': (order.get(path, len(order)), suffix), **stats_of(arr)})
  rows.sort(key=lambda r: r['_order'])
  for r in rows:
    del r['_order']
  return rows


def main(argv=None) -> int:
  """``python -m train.interpret``: see :mod:`train.interpret_run`."""
  from train import interpret_run
  return interpret_run.main(argv)


if __name__ == '__main__':
  sys.exit(main())
