"""The benchmark's character Transformer (issue 7): 4 layers x 256 wide, 4 heads, MLP 1024,
batch 32 x 128 tokens, Tiny Shakespeare's 65 characters. The same model family and
optimizer as ``shakespeare_gpt`` (pre-LN, exact GELU, learned positions, tied embeddings).

  python -m train.benchmark --config configs/bench_char_transformer.py --torch --json
  python -m train --config configs/bench_char_transformer.py --workdir runs/bench_char_transformer \
      --config.data.dir=../shared/data/tinyshakespeare

The benchmark needs no files: without ``data.dir`` it builds batches of the right
shapes from the dataset's known vocabulary (65 characters).
"""
from configs import shakespeare_gpt
from configs.base import parse_arg


def get_config(arg: str | None = None):
  """``shakespeare_gpt`` at twice the width (256, MLP 1024) and half its learning rate."""
  args = parse_arg(arg, allowed=('tiny',))
  c = shakespeare_gpt.get_config('tiny' if 'tiny' in args else None)
  if 'tiny' not in args:
    c.model.hidden_size, c.model.mlp_dim = 256, 1024
    c.learning_rate = 1e-3
  return c
