"""Samples text from a trained language model's workdir.

  python -m train.sample --workdir runs/shakespeare_gpt --prompt "ROMEO:" \
      --num_tokens 500 --temperature 0.8 --top_k 40

Reads ``config.json``, ``vocab.json`` and the latest checkpoint of the workdir (no
data files), and decodes with the model's key/value cache (``models.generate``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def load_lm(workdir: str):
  """``(model, params, encode, decode)`` for the latest checkpoint in ``workdir``."""
  import jax
  import jax.numpy as jnp
  import ml_collections

  from train import checkpoint as ckpt_lib
  from train.data.base import DatasetInfo
  from train.data.tokenize import ByteEncoder, Vocab
  from train.trainer import build_model

  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    config = ml_collections.ConfigDict(json.load(f))
  vocab_file = os.path.join(workdir, 'vocab.json')
  if not os.path.isfile(vocab_file):
    raise FileNotFoundError(f'{vocab_file} is missing: not a text language-model workdir')
  with open(vocab_file, encoding='utf-8') as f:
    saved = json.load(f)
  if saved['tokenizer'] == 'byte':
    encoder = ByteEncoder()
  elif 'vocab' in saved:
    encoder = Vocab(saved['vocab'], saved['tokenizer'], unk='\ufffd' if '\ufffd' in saved['vocab'] else None)
  else:
    raise ValueError(f'{vocab_file}: cannot sample with tokenizer {saved["tokenizer"]!r}')
  if config.task != 'lm':
    raise ValueError(f'{workdir} trained task {config.task!r}; sampling needs a language model')
  info = DatasetInfo(vocab_size=saved['vocab_size'])
  model = build_model(config, info)
  params = ckpt_lib.load_params(workdir)
  params = jax.tree_util.tree_map(jnp.asarray, params)
  return model, params, encoder.encode, encoder.decode


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--workdir', required=True)
  p.add_argument('--prompt', default='\n')
  p.add_argument('--num_tokens', type=int, default=500)
  p.add_argument('--temperature', type=float, default=0.8)
  p.add_argument('--top_k', type=int, default=40)
  p.add_argument('--greedy', action='store_true')
  p.add_argument('--seed', type=int, default=0)
  args = p.parse_args(argv)
  import jax
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    model, params, encode, decode = load_lm(args.workdir)
    prompt = encode(args.prompt)
  except (FileNotFoundError, ValueError, KeyError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if len(prompt) == 0:
    print('error: the prompt encodes to no tokens', file=sys.stderr)
    return 2
  tokens = sample(model, params, prompt, args.num_tokens, jax.random.key(args.seed),
                  temperature=args.temperature, top_k=args.top_k or None, greedy=args.greedy)
  print(decode(tokens))
  return 0


def sample(model, params, prompt, num_tokens: int, rng, **kw) -> np.ndarray:
  """``prompt`` plus ``num_tokens`` sampled ids; beyond the model's context the prompt
  for each further chunk is the last half-context, as nanoGPT crops its context."""
  import jax
  from models import generate
  out = np.asarray(prompt, np.int32)
  window = max(1, model.max_len // 2)
  while len(out) < len(prompt) + num_tokens:
    context = out[-window:] if len(out) + 1 > model.max_len else out
    n = min(len(prompt) + num_tokens - len(out), model.max_len - len(context))
    rng, key = jax.random.split(rng)
    new = generate(model, params, context[None], n, key, **kw)
    out = np.concatenate([out, np.asarray(new[0, len(context):])])
  return out


if __name__ == '__main__':
  sys.exit(main())
