"""GPT-2 small (124M: 12 layers x 768, 12 heads, context 1024) in bfloat16, nanoGPT's
recipe (AdamW 6e-4, betas 0.9/0.95, weight decay 0.1, clip 1.0, vocabulary padded to
50,304), for the GPU benchmark of issue 7 (a batch of 16 x 1024 tokens per step).

  python -m train.benchmark --config configs/gpt2_small.py --torch --json --matmul_size=8192
  python -m train --config configs/gpt2_small.py --workdir runs/gpt2_small   # a GPU smoke run

OpenWebText is not on this machine, so the config reads the offline ``synthetic_lm``
task at GPT-2's shapes: the benchmark only needs shapes, and ``python -m train`` on it
is a smoke run (the Markov chain uses 32 of the 50,304 ids). ``:tiny`` is a 2-layer,
64-wide, 64-token version for tests.
"""
from configs.base import get_base_config, make_tiny, parse_arg, set_model


def get_config(arg: str | None = None):
  args = parse_arg(arg, allowed=('tiny',))
  c = get_base_config()
  c.task = 'lm'
  c.data.name = 'synthetic_lm'
  c.data.seq_len = 1024
  set_model(c, 'gpt2_small')
  c.model.vocab_size = 50304  # 50,257 padded to a multiple of 64, as nanoGPT does
  c.model.dropout_rate = 0.0
  c.dtype = 'bfloat16'
  c.batch_size = 16
  c.num_train_steps = 5000
  c.learning_rate = 6e-4
  c.optimizer.b2 = 0.95
  c.optimizer.weight_decay = 0.1
  c.optimizer.grad_clip_norm = 1.0
  c.schedule.warmup_steps = 200
  c.schedule.end_factor = 0.1
  c.log_every_steps = 100
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
  if 'tiny' in args:
    make_tiny(c, train_limit=0, eval_limit=16)
    c.model.num_layers, c.model.num_heads, c.model.hidden_size, c.model.mlp_dim = 2, 2, 64, 256
    c.model.vocab_size = 64
    c.data.seq_len = c.model.max_len = 64
    c.dtype = 'float32'
  return c
