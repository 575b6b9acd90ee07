"""A BiLSTM from scratch on SST-2 (target >= 84% dev accuracy; flax examples/sst2: 85.2%).

Word vocabulary from the training split, 300-d embeddings, 256 units per direction,
attention pooling, adversarial training on the embeddings. Dev: 84.06% (seed 0); seeds
0 / 1 / 2 average 84.40% (experiments/README.md).

  python -m train --config configs/sst2_bilstm.py --workdir runs/sst2_bilstm \
      --config.data.dir=../shared/data/sst2
  # :val trains on train_fit and evaluates on train_heldout (20% of the train sentences);
  # :tiny is a smoke run.
"""
from configs.base import (get_base_config, hold_out_sentences, local_data_dir, make_tiny,
                          parse_arg, set_model)


def get_config(arg: str | None = None):
  args = parse_arg(arg)
  c = get_base_config()
  c.data.name = 'sst2'
  c.data.dir = local_data_dir('sst2')
  c.data.train_split, c.data.eval_split = 'train', 'dev'
  c.data.tokenizer = 'word'
  c.data.vocab_size = 20000
  c.data.seq_len = 48
  c.data.bucket_boundaries = (8, 16, 32)  # 2.45x the examples/s of padding all to 48
  set_model(c, 'bilstm_classifier')
  # Chosen on :val (whole train sentences held out; experiments/README.md), never on dev:
  # attention pooling with label smoothing 0.1, 84.02%; attention alone 83.44% (2 epochs
  # 83.81%, 2 layers 82.93%, label smoothing and 2 epochs 83.30%); last states 82.64%;
  # flax examples/sst2's recipe (attention, SGD momentum at lr 0.1, 10 epochs) 81.84%.
  c.model.pooling = 'attention'
  c.model.word_dropout_rate = 0.1
  c.label_smoothing = 0.1
  # Adversarial training on the embeddings (Miyato et al. 2017), adopted by a rule fixed before
  # the runs: three :val seeds at 83.73 / 83.59 / 84.53% (mean 83.95%) against 83.73% without.
  # 0.5 stopped the model learning. About 1.7x the cost of a plain step.
  c.adversarial_epsilon = 0.1
  c.batch_size = 64
  c.num_epochs = 3
  c.learning_rate = 1e-3
  c.optimizer.weight_decay = 1e-4
  c.optimizer.grad_clip_norm = 1.0
  c.schedule.warmup_steps = 200
  c.log_every_steps = 100
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
  c.eval_batch_size = 436
  if 'val' in args:
    hold_out_sentences(c)
  if 'tiny' in args:
    make_tiny(c)
    c.model.embed_dim, c.model.hidden_size = 16, 16
    c.data.bucket_boundaries = ()  # one step compile
  return c
