"""Transformers against independent references: naive numpy attention, position formulas,
recomputation without a cache, and published parameter counts (shapes only)."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models import BertClassifier, BertEncoder, BertMLM, TransformerLM
from models.attention import MultiHeadAttention, dot_product_attention, padding_mask, rotary_embedding
from models.sampling import generate, init_cache, sample_logits
from models.transformer import REMAT, gelu_erf, sinusoidal_embedding

# RBG keys: the default threefry generator costs seconds of XLA compile per CPU test.
key = functools.partial(jax.random.key, impl='rbg')
TINY = dict(num_layers=2, num_heads=2, hidden_size=16, mlp_dim=32)


def naive_attention(q, k, v, key_mask=None, causal=False):
  """softmax(q k^T / sqrt(d)) v in float64 numpy, per batch and head; q, k, v: [B, T, N, H]."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  b, t, n, h = q.shape
  out = np.zeros_like(q)
  for bi in range(b):
    for ni in range(n):
      logits = q[bi, :, ni] @ k[bi, :, ni].T / np.sqrt(h)
      allowed = np.ones((t, t), bool)
      if key_mask is not None:
        allowed &= key_mask[bi][None, :]
      if causal:
        allowed &= np.tril(np.ones((t, t), bool))
      logits = np.where(allowed, logits, -np.inf)
      p = np.exp(logits - logits.max(-1, keepdims=True))
      out[bi, :, ni] = (p / p.sum(-1, keepdims=True)) @ v[bi, :, ni]
  return out


def randomize(params, key, scale=0.3):
  """Every parameter redrawn at ``scale``: larger than the 0.02 init, and biases and norms
  non-trivial, so that mistakes in them show."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree_util.tree_unflatten(
      treedef, [scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


KEY_MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('path', ['xla', 'jax', 'dropout'])
def test_attention_matches_naive_reference(causal, path):
  q, k, v = (np.random.default_rng(i).normal(size=(2, 6, 3, 4)).astype(np.float32) for i in range(3))
  # A vanishing dropout rate takes the explicit-softmax path and keeps (almost surely) all.
  kw = (dict(dropout_rate=1e-12, dropout_rng=key(0)) if path == 'dropout'
        else dict(implementation=path))
  out = dot_product_attention(q, k, v, padding_mask(KEY_MASK), causal=causal, **kw)
  np.testing.assert_allclose(out, naive_attention(q, k, v, KEY_MASK, causal), atol=1e-5)


def test_attention_gradients_agree_across_implementations():
  """Our heads-major 'xla' path and jax.nn.dot_product_attention differentiate alike."""
  q, k, v = (np.random.default_rng(i).normal(size=(2, 6, 3, 4)).astype(np.float32) for i in range(3))
  w = np.random.default_rng(3).normal(size=q.shape).astype(np.float32)
  loss = lambda impl: lambda q, k, v: jnp.sum(w * dot_product_attention(
      q, k, v, padding_mask(KEY_MASK), causal=True, implementation=impl))
  ours, theirs = (jax.grad(loss(impl), argnums=(0, 1, 2))(q, k, v) for impl in ('xla', 'jax'))
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize('t', [6, 7])
def test_causal_attention_halves_keep_dropout_bits_of_the_whole(t):
  """Causal self-attention runs as two query halves (even T) or whole (odd T); either way the
  dropout mask is the one an unsplit softmax draws, so results equal the one-block formula."""
  q, k, v = (np.random.default_rng(i).normal(size=(2, t, 3, 4)).astype(np.float32) for i in range(3))
  rate, rng = 0.3, key(5)
  out = dot_product_attention(q, k, v, causal=True, dropout_rate=rate, dropout_rng=rng)
  keep = np.asarray(jax.random.bernoulli(rng, 1.0 - rate, (2, 3, t, t)))
  hm = lambda x: np.asarray(x, np.float64).transpose(0, 2, 1, 3)
  logits = hm(q) @ hm(k).transpose(0, 1, 3, 2) / 2.0
  logits = np.where(np.tril(np.ones((t, t), bool)), logits, -np.inf)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p = np.where(keep, p / p.sum(-1, keepdims=True) / (1.0 - rate), 0.0)
  np.testing.assert_allclose(out, (p @ hm(v)).transpose(0, 2, 1, 3), atol=1e-5)


def test_unknown_attention_implementation_is_an_error():
  q = np.zeros((1, 2, 1, 4), np.float32)
  with pytest.raises(ValueError, match='must be one of'):
    dot_product_attention(q, q, q, implementation='flash')


def test_attention_module_matches_naive_reference():
  x = np.random.default_rng(0).normal(size=(2, 6, 8)).astype(np.float32)
  mha = MultiHeadAttention(num_heads=2, hidden_size=8, causal=True)
  params = randomize(mha.init(key(0), x)['params'], key(1))
  out = mha.apply({'params': params}, x, padding_mask(KEY_MASK))
  proj = lambda n, y: np.asarray(y) @ np.asarray(params[n]['kernel']) + np.asarray(params[n]['bias'])
  heads = lambda y: y.reshape(2, 6, 2, 4)
  ref = naive_attention(*(heads(proj(n, x)) for n in ('query', 'key', 'value')), KEY_MASK, True)
  np.testing.assert_allclose(out, proj('out', ref.reshape(2, 6, 8)), atol=1e-4)


def test_gelu_erf_matches_the_float64_formula_and_jax_gradients():
  x = np.linspace(-6, 6, 1001).astype(np.float32)
  ref = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
  np.testing.assert_allclose(gelu_erf(x), ref, rtol=1e-6, atol=1e-6)
  grad = jax.vmap(jax.grad(gelu_erf))(x)
  dref = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi)
                   for v in x.astype(np.float64)])
  np.testing.assert_allclose(grad, dref, rtol=1e-5, atol=1e-6)


def test_sinusoidal_matches_formula():
  pos, d = np.arange(50), 16
  ref = np.zeros((50, d))
  for i in range(0, d, 2):
    ref[:, i] = np.sin(pos / 10000 ** (i / d))
    ref[:, i + 1] = np.cos(pos / 10000 ** (i / d))
  np.testing.assert_allclose(sinusoidal_embedding(jnp.asarray(pos), d), ref, atol=1e-5)


def test_rotary_matches_complex_rotation_and_is_relative():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 7, 2, 8)).astype(np.float32)
  pos = np.arange(7) + 3
  # Independent form: pairs (i, i + H/2) as complex numbers times exp(i * pos * theta_i).
  theta = 10000.0 ** (-np.arange(0, 8, 2) / 8)
  z = (x[..., :4] + 1j * x[..., 4:]) * np.exp(1j * pos[None, :, None, None] * theta)
  ref = np.concatenate([z.real, z.imag], -1)
  np.testing.assert_allclose(rotary_embedding(jnp.asarray(x), jnp.asarray(pos)), ref, atol=1e-5)
  # <rot(q, m), rot(k, n)> depends only on m - n.
  q, k = rng.normal(size=(2, 1, 1, 1, 8)).astype(np.float32)
  dot = lambda m, n: float(jnp.sum(rotary_embedding(q, jnp.array([m])) * rotary_embedding(k, jnp.array([n]))))
  assert dot(5, 2) == pytest.approx(dot(13, 10), abs=1e-4)
  assert dot(0, 0) == pytest.approx(float(np.sum(q * k)), abs=1e-5)


@pytest.mark.parametrize('position', ['learned', 'rotary'])
def test_decoder_is_causal(position):
  lm = TransformerLM(vocab_size=30, max_len=16, position=position, **TINY)
  a = np.random.default_rng(0).integers(0, 30, (2, 10)).astype(np.int32)
  b = a.copy()
  b[:, 6:] = (b[:, 6:] + 1) % 30
  params = lm.init(key(0), a)['params']
  la, lb = (np.asarray(lm.apply({'params': params}, t)) for t in (a, b))
  np.testing.assert_allclose(la[:, :6], lb[:, :6], atol=1e-6)
  assert np.abs(la[:, 6:] - lb[:, 6:]).max() > 1e-4


@pytest.mark.parametrize('position', ['learned', 'sinusoidal', 'rotary'])
def test_cached_decoding_equals_recomputation(position):
  lm = TransformerLM(vocab_size=23, max_len=16, position=position, dropout_rate=0.1, **TINY)
  tokens = np.random.default_rng(1).integers(0, 23, (2, 12)).astype(np.int32)
  params = randomize(jax.jit(lm.init)(key(0), tokens)['params'], key(2))
  apply = jax.jit(lambda t: lm.apply({'params': params}, t))
  full = np.asarray(apply(tokens))
  # Logits with the cache: a 4-token prefill, then one token per call.
  decoder = lm.clone(decode=True)
  step = jax.jit(lambda cache, t: decoder.apply({'params': params, 'cache': cache}, t,
                                                mutable=['cache']))
  cache, steps = init_cache(decoder, 2, 12), []
  for lo, hi in [(0, 4)] + [(t, t + 1) for t in range(4, 12)]:
    logits, mutated = step(cache, tokens[:, lo:hi])
    cache = mutated['cache']
    steps.append(np.asarray(logits))
  np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)
  if position != 'rotary':
    return  # generate() is the same for every kind of position; one suffices (compile time)
  # Greedy generation against a full forward pass over a fixed-size buffer at every step.
  out = np.asarray(generate(lm, params, tokens[:, :4], 8, key(3), greedy=True))
  ref = np.zeros((2, 12), np.int32)
  ref[:, :4] = tokens[:, :4]
  for t in range(4, 12):
    ref[:, t] = np.asarray(apply(ref))[:, t - 1].argmax(-1)
  np.testing.assert_array_equal(out, ref)


def test_sampling_modes():
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(64, 10)), jnp.float32)
  greedy = sample_logits(logits, key(0), greedy=True)
  np.testing.assert_array_equal(sample_logits(logits, key(1), top_k=1), greedy)
  top2 = np.argsort(np.asarray(logits), -1)[:, -2:]
  drawn = np.asarray(sample_logits(logits, key(2), temperature=5.0, top_k=2))
  assert all(d in row for d, row in zip(drawn, top2))
  assert (drawn != np.asarray(greedy)).any()  # a high temperature does not always pick the argmax


def test_generate_temperature_shapes_and_prompt():
  lm = TransformerLM(vocab_size=11, max_len=8, **{**TINY, 'num_layers': 1})
  prompt = jnp.array([[1, 2, 3]], jnp.int32)
  params = lm.init(key(0), prompt)['params']
  out = generate(lm, params, prompt, 5, key(1), temperature=0.7, top_k=4)
  assert out.shape == (1, 8) and out.dtype == jnp.int32
  np.testing.assert_array_equal(out[:, :3], prompt)
  with pytest.raises(ValueError, match='max_len'):
    generate(lm, params, prompt, 6, key(1))


def test_encoder_ignores_padding():
  enc = BertEncoder(vocab_size=40, max_len=16, dropout_rate=0.0, **TINY)
  tokens = np.random.default_rng(0).integers(1, 40, (2, 7)).astype(np.int32)
  padded = np.concatenate([tokens, np.zeros((2, 4), np.int32)], 1)
  mask = np.concatenate([np.ones((2, 7), bool), np.zeros((2, 4), bool)], 1)
  params = randomize(enc.init(key(0), tokens)['params'], key(1), 0.1)
  h = jax.jit(enc.apply)({'params': params}, tokens)
  h_padded = jax.jit(enc.apply)({'params': params}, padded, mask)
  np.testing.assert_allclose(h_padded[:, :7], h, atol=1e-5)


def _count(model, length=8):
  shapes = jax.eval_shape(lambda: model.init(key(0), jnp.ones((1, length), jnp.int32)))
  return sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes['params']))


def test_parameter_counts_match_published():
  # Hugging Face GPT2LMHeadModel: 124,439,808 (tied head); BertModel (with pooler): 109,482,240.
  gpt2 = _count(models.build('gpt2_small'))
  assert gpt2 == 124_439_808 and abs(gpt2 / 124e6 - 1) < 0.01
  bert = _count(models.build('bert_base', num_classes=2))
  assert bert - (768 * 2 + 2) == 109_482_240 and abs(bert / 110e6 - 1) < 0.01
  # all-MiniLM-L6-v2: 22,713,216 with the pooler, which mean pooling does not use.
  minilm = _count(models.build('minilm_classifier', num_classes=2))
  assert minilm - (384 * 2 + 2) == 22_713_216 - (384 * 384 + 384)


def test_remat_gives_the_same_gradients():
  tokens = np.random.default_rng(0).integers(0, 20, (2, 8)).astype(np.int32)
  base = TransformerLM(vocab_size=20, max_len=8, dropout_rate=0.2, attention_dropout_rate=0.1, **TINY)
  params = jax.jit(base.init)(key(0), tokens)['params']

  def grads(model, p):
    def loss(p):
      logits = model.apply({'params': p}, tokens, train=True, rngs={'dropout': key(1)})
      picked = jnp.take_along_axis(logits, tokens[..., None], -1)[..., 0]
      return jnp.mean(jax.nn.logsumexp(logits, -1) - picked)
    return jax.grad(loss)(p)

  # One compilation for all three: XLA compiles are the slow part of this test on CPU.
  none, full, dots = jax.jit(lambda p: [grads(base.clone(remat=r), p) for r in REMAT])(params)
  for other in (full, dots):
    jax.tree_util.tree_map(functools.partial(np.testing.assert_allclose, atol=1e-6, rtol=1e-5),
                           other, none)


def test_registry_call_conventions():
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 50, (2, 8)), jnp.int32)
  mask = jnp.arange(8)[None, :] < jnp.array([[8], [5]])
  # No dropout here (the remat test trains with it): only the calling convention is checked.
  small = dict(num_layers=1, num_heads=2, hidden_size=16, mlp_dim=32, vocab_size=50, max_len=16,
               dropout_rate=0.0, attention_dropout_rate=0.0)
  cases = {'bert_classifier': ((2, 3), jnp.float32), 'bert_mlm': ((2, 8, 50), jnp.float32),
           'transformer_lm': ((2, 8, 50), jnp.bfloat16)}
  for name, (shape, dtype) in cases.items():
    extra = {'num_classes': 3} if 'num_classes' in models.field_names(name) else {}
    model = models.build(name, **small, **extra, dtype=dtype)
    # Shapes only (eval_shape): the other tests run these modules for real.
    variables = jax.eval_shape(functools.partial(model.init, train=False),
                               {'params': key(0), 'dropout': key(0)}, tokens, mask=mask)
    out = jax.eval_shape(functools.partial(model.apply, train=True),
                         variables, tokens, mask=mask, rngs={'dropout': key(1)})
    assert out.shape == shape and out.dtype == jnp.float32, name
    assert jax.tree_util.tree_leaves(variables['params'])[0].dtype == jnp.float32
  # Binary classification: one logit per example, as models.MLP.
  binary = BertClassifier(num_classes=1, **small)
  assert jax.eval_shape(binary.init_with_output, key(0), tokens)[0].shape == (2,)


def test_mlm_head_is_tied_to_word_embeddings():
  mlm = BertMLM(vocab_size=50, max_len=16, **TINY)
  params = jax.eval_shape(mlm.init, key(0), jnp.ones((1, 4), jnp.int32))['params']
  matrices = [s for s in jax.tree_util.tree_leaves(params) if 50 in s.shape]
  assert sorted(m.shape for m in matrices) == [(50,), (50, 16)]  # the bias and the one shared table
