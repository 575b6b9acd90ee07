"""A character-level GPT on Tiny Shakespeare within a 15-minute CPU budget
(target val loss <= 1.75; nanoGPT's CPU config: 1.88).

``:baby`` is nanoGPT's baby GPT (6 layers, 384 wide, 6 heads, context 256, dropout 0.2,
5000 steps of 64 sequences) for a GPU (target <= 1.47). Sample after training with
``python -m train.sample --workdir DIR``.

  python -m train --config configs/shakespeare_gpt.py --workdir runs/shakespeare_gpt \
      --config.data.dir=../shared/data/tinyshakespeare
  python -m train --config configs/shakespeare_gpt.py:baby --workdir runs/baby_gpt \
      --config.data.dir=../shared/data/tinyshakespeare --config.dtype=bfloat16
"""
from configs.base import get_base_config, local_data_dir, make_tiny, parse_arg, set_model


def get_config(arg: str | None = None):
  args = parse_arg(arg, allowed=('tiny', 'baby'))
  c = get_base_config()
  c.task = 'lm'
  c.data.name = 'tiny_shakespeare'
  c.data.dir = local_data_dir('tinyshakespeare')
  c.data.train_split, c.data.eval_split = 'train', 'validation'
  c.data.tokenizer = 'char'
  c.data.seq_len = 128
  set_model(c, 'transformer_lm')
  c.model.num_layers, c.model.num_heads, c.model.hidden_size, c.model.mlp_dim = 4, 4, 128, 512
  c.model.max_len = 128
  c.model.dropout_rate = 0.0
  c.batch_size = 32
  c.num_train_steps = 2500
  c.learning_rate = 2e-3
  c.optimizer.b2 = 0.99
  c.optimizer.weight_decay = 0.1
  c.optimizer.grad_clip_norm = 1.0
  c.schedule.warmup_steps = 100
  c.schedule.end_factor = 0.1
  c.log_every_steps = 100
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
  c.eval_batch_size = 128
  if 'baby' in args:
    c.model.num_layers, c.model.num_heads, c.model.hidden_size, c.model.mlp_dim = 6, 6, 384, 1536
    c.model.max_len = c.data.seq_len = 256
    c.model.dropout_rate = c.model.attention_dropout_rate = 0.2  # nanoGPT drops both
    c.batch_size = 64
    c.num_train_steps = 5000
    c.learning_rate = 1e-3
    # nanoGPT evaluates every 250 steps and keeps the best checkpoint by val loss.
    c.eval_every_steps = c.checkpoint_every_steps = 250
    c.keep_best_by = 'eval/loss'
  if 'tiny' in args:
    make_tiny(c, train_limit=0, eval_limit=16)
    c.model.num_layers, c.model.hidden_size, c.model.mlp_dim = 1, 32, 64
    c.data.seq_len = c.model.max_len = 32
  return c
