"""Masked-LM pretraining of a small BERT on SST-2 sentences, then SST-2 fine-tuning (issue 9).

Pretraining reads only the sentences of train[:90%] (labels dropped; BERT masking,
train/mlm.py); fine-tuning trains on the labels of the same train[:90%] and keeps
the checkpoint with the best accuracy on the held-out train[90%:]; SST-2 dev is
scored once, on that checkpoint. The WordPiece vocabulary (uncased BERT's, 30,522
ids) comes from the all-MiniLM-L6-v2 package; none of its weights are used.

  # 1. pretrain: 800 steps of 64 sentences (0.85 epoch), ~15 min on 2 shared CPU cores
  python -m train --config configs/sst2_mlm.py --workdir runs/sst2_mlm \
      --config.data.dir=../shared/data/sst2
  # 2. fine-tune from it, and the same classifier from scratch, for the same steps
  python -m train --config configs/sst2_mlm.py:finetune --workdir runs/sst2_mlm_finetune \
      --config.data.dir=../shared/data/sst2 --config.init_from=runs/sst2_mlm
  python -m train --config configs/sst2_mlm.py:scratch --workdir runs/sst2_mlm_scratch \
      --config.data.dir=../shared/data/sst2
  # 3. SST-2 dev accuracy of each run's best-on-validation checkpoint
  python -m train.evaluate --workdir runs/sst2_mlm_finetune --best --split dev
  # :tiny is a smoke run of any stage (:tiny,finetune ...).
"""
from configs.base import (get_base_config, local_data_dir, make_tiny, parse_arg, set_model)

# The encoder both stages share; its ``encoder/...`` parameters carry over from the
# MLM model to the classifier. 2 layers x 128 (BERT-tiny's shape, 4.3M parameters,
# 3.9M of them the 30,522-id embedding) so both stages fit a CPU budget; MLM steps
# cost most in the 30,522-way output layer, which runs at every position.
ENCODER = dict(num_layers=2, num_heads=2, hidden_size=128, mlp_dim=512, max_len=64)


def get_config(arg: str | None = None):
  from models.pretrained import minilm_path
  args = parse_arg(arg, ('tiny', 'finetune', 'scratch'))
  c = get_base_config()
  c.data.name = 'sst2'
  c.data.dir = local_data_dir('sst2')
  c.data.train_split, c.data.eval_split = 'train[:90%]', 'train[90%:]'  # validation hold-out
  c.data.tokenizer = 'wordpiece'
  c.data.tokenizer_path = minilm_path()
  c.data.seq_len = 64
  c.data.bucket_boundaries = (8, 16, 32)  # padding 79% -> 30% of token slots (experiments/bench_bucketing.py)
  c.optimizer.weight_decay = 0.01
  c.optimizer.grad_clip_norm = 1.0
  c.schedule.name = 'linear'
  c.log_every_steps = 100
  if args & {'finetune', 'scratch'}:
    set_model(c, 'bert_classifier')
    c.model.pooling = 'mean'
    c.task = 'classification'
    c.batch_size = 32
    c.num_train_steps = 2000
    c.learning_rate = 1e-4
    c.schedule.warmup_steps = 200
    c.eval_every_steps = 250
    c.checkpoint_every_steps = 250
    c.keep_best_by = 'eval/accuracy'
    if 'finetune' in args:
      c.init_from = 'runs/sst2_mlm'  # the pretraining workdir (encoder in, classifier head fresh)
  else:
    set_model(c, 'bert_mlm')
    c.task = 'mlm'
    c.batch_size = 64
    c.num_train_steps = 800
    c.learning_rate = 5e-4
    c.schedule.warmup_steps = 80
    c.eval_every_steps = 400
    c.checkpoint_every_steps = 400
    c.data.eval_limit = 2000  # masked-token loss on 2,000 held-out sentences
  for k, v in ENCODER.items():
    c.model[k] = v
  if 'tiny' in args:
    make_tiny(c, steps=4, train_limit=128, eval_limit=32)
    c.data.seq_len = 16  # bucket lengths (8, 16): two step compiles, not four
    c.keep_best_by = None
    for k, v in dict(num_layers=1, num_heads=2, hidden_size=32, mlp_dim=64).items():
      c.model[k] = v
  return c
