"""A char-rnn LSTM language model on Tiny Shakespeare (target val loss <= 1.60).

  python -m train --config configs/shakespeare_lstm.py --workdir runs/shakespeare_lstm \
      --config.data.dir=../shared/data/tinyshakespeare
"""
from configs.base import get_base_config, local_data_dir, make_tiny, parse_arg, set_model


def get_config(arg: str | None = None):
  args = parse_arg(arg, allowed=('tiny',))
  c = get_base_config()
  c.task = 'lm'
  c.data.name = 'tiny_shakespeare'
  c.data.dir = local_data_dir('tinyshakespeare')
  c.data.train_split, c.data.eval_split = 'train', 'validation'
  c.data.tokenizer = 'char'
  c.data.seq_len = 128
  set_model(c, 'lstm_lm')
  c.model.num_layers, c.model.hidden_size, c.model.embed_dim = 2, 512, 64
  c.model.dropout_rate = 0.1
  c.batch_size = 32
  c.num_train_steps = 2000
  c.learning_rate = 3e-3
  c.optimizer.grad_clip_norm = 1.0
  c.schedule.warmup_steps = 100
  c.schedule.end_factor = 0.1
  c.log_every_steps = 100
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
  c.eval_batch_size = 128
  if 'tiny' in args:
    make_tiny(c, train_limit=0, eval_limit=16)
    c.model.num_layers, c.model.hidden_size, c.model.embed_dim = 1, 32, 16
    c.data.seq_len = 32
  return c
