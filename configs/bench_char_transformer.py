"""The benchmark's character Transformer (issue 7): 4 layers x 256 wide, 4 heads, MLP 1024,
batch 32 x 128 tokens, Tiny Shakespeare's 65 characters. The same model family and
optimizer as ``shakespeare_gpt`` (pre-LN, exact GELU, learned positions, tied embeddings).

  python -m train.benchmark --config configs/bench_char_transformer.py --torch --json
  python -m train --config configs/bench_char_transformer.py --workdir runs/bench_char_transformer \
      --config.data.dir=../shared/data/tinyshakespeare

The benchmark needs no files: without ``data.dir`` it builds batches of the right
shapes from the dataset's known vocabulary (65 characters).
"""
from configs.base import get_base_config, local_data_dir, make_tiny, parse_arg


def get_config(arg: str | None = None):
  args = parse_arg(arg, allowed=('tiny',))
  c = get_base_config()
  c.task = 'lm'
  c.data.name = 'tiny_shakespeare'
  c.data.dir = local_data_dir('tinyshakespeare')
  c.data.train_split, c.data.eval_split = 'train', 'validation'
  c.data.tokenizer = 'char'
  c.data.seq_len = 128
  c.model.name = 'transformer_lm'
  c.model.num_layers, c.model.num_heads, c.model.hidden_size, c.model.mlp_dim = 4, 4, 256, 1024
  c.model.max_len = 128
  c.model.dropout_rate = 0.0
  c.batch_size = 32
  c.num_train_steps = 2500
  c.learning_rate = 1e-3
  c.optimizer.b2 = 0.99
  c.optimizer.weight_decay = 0.1
  c.optimizer.grad_clip_norm = 1.0
  c.schedule.warmup_steps = 100
  c.schedule.end_factor = 0.1
  c.log_every_steps = 100
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
  c.eval_batch_size = 128
  if 'tiny' in args:
    make_tiny(c, train_limit=0, eval_limit=16)
    c.model.num_layers, c.model.hidden_size, c.model.mlp_dim = 1, 32, 64
    c.data.seq_len = c.model.max_len = 32
  return c
