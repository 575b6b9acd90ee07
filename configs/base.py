"""The one config vocabulary every experiment shares.

An experiment file calls :func:`get_base_config` and changes what it needs, so
users, scripts and configs all use the same names. Every field a user may want
to vary lives here with its default; ``lock_config`` in the command line then
turns a misspelt override into an error.
"""
from __future__ import annotations

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 128                 # global, across all devices and hosts
  c.num_train_steps = -1             # > 0 wins over num_epochs
  c.num_epochs = 1.0
  c.learning_rate = 1e-3

  c.task = 'classification'          # classification | binary | lm | mlm
  c.label_smoothing = 0.0
  # lm | mlm: the loss and the accuracy's argmax from one read of the logits, not three
  # (train/one_pass_loss.py: for GPUs and a large vocabulary, slower on CPU; not with
  # label_smoothing).
  c.one_pass_loss = False
  # > 0: adversarial training on the model's perturb() points (Miyato et al. 2017; the
  # RNN classifier's embeddings): add the loss at an L2 step of this size per example.
  c.adversarial_epsilon = 0.0

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'adamw'         # sgd | momentum | nesterov | adam | adamw | lamb | lion
  c.optimizer.momentum = 0.9         # sgd-family momentum
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.0     # decoupled; never applied to biases and norm scales
  c.optimizer.grad_clip_norm = 0.0   # 0 disables global-norm clipping
  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = 'cosine'         # cosine | linear | constant (the decay after warmup)
  c.schedule.warmup_steps = 0
  c.schedule.end_factor = 0.0        # final lr = end_factor * learning_rate

  c.model = ml_collections.ConfigDict()
  c.model.name = 'cnn'               # a name in models.REGISTRY; other fields are its hyper-parameters

  c.data = ml_collections.ConfigDict()
  c.data.name = 'digits'
  c.data.dir = ml_collections.config_dict.placeholder(str)       # local files; unset means TFDS/offline
  c.data.tfds_data_dir = ml_collections.config_dict.placeholder(str)
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  c.data.seq_len = 128               # text: tokens per example
  c.data.tokenizer = 'char'          # text: char | byte | word | wordpiece
  c.data.tokenizer_path = ml_collections.config_dict.placeholder(str)  # wordpiece: tokenizer.json or a model dir
  c.data.vocab_size = 20000          # word vocabularies: most frequent N (plus pad/unk)
  c.data.augment = 'none'            # none | cifar (random crop with padding + horizontal flip)
  c.data.train_limit = 0             # >0: first N training examples (smoke runs)
  c.data.eval_limit = 0              # >0: first N eval examples
  c.data.num_threads = 2             # grain read threads
  c.data.prefetch = 4                # batches prefetched in the background
  # Padded text: training batches from length buckets, each padded to its bucket only
  # (train/data/bucketing.py); e.g. (8, 16, 32) with seq_len 48 gives 4 step shapes. () = off.
  c.data.bucket_boundaries = ()
  c.data.mlm_rate = 0.15             # task='mlm': fraction of real tokens selected (80% [MASK], 10% random, 10% kept)

  c.init_from = ml_collections.config_dict.placeholder(str)  # a workdir or checkpoint to take params from
  c.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1, 'tensor': 1})  # -1 fills the rest
  c.partition_rules = ()             # ((regex on param path, (axis names...)), ...) before the default FSDP rule
  c.parallelism = 'jit'              # jit (sharded, one step for every layout) | pmap
  c.dtype = 'float32'                # compute dtype: float32 | bfloat16 | float16; params stay float32
  # float16 only: dynamic loss scaling (train/loss_scale.py); unset keys take the default shown.
  c.loss_scale = ml_collections.ConfigDict()
  c.loss_scale.initial = ml_collections.config_dict.placeholder(float)  # 2**15
  c.loss_scale.period = ml_collections.config_dict.placeholder(int)     # 2000 finite steps, then grow
  c.loss_scale.factor = ml_collections.config_dict.placeholder(float)   # 2.0: grow x2, halve on overflow
  c.loss_scale.min = ml_collections.config_dict.placeholder(float)      # 1.0
  c.grad_accum_steps = 1
  # > 0: also keep an exponential moving average of the parameters (Polyak averaging, bias-
  # corrected; train/state.py) and evaluate, sample and export with it. 0.999 averages over
  # roughly the last 1,000 steps.
  c.ema_decay = 0.0
  c.remat = 'none'                   # none | full | dots (dots_with_no_batch_dims_saveable); Transformers
  # XLA options for the train and eval steps only, in XLA_FLAGS syntax ('--xla_a=1 --xla_b=x,y');
  # they go on top of train/compile_options.py's defaults.
  c.xla_options = ''

  c.log_every_steps = 50
  c.eval_every_steps = 0             # 0: only at the end
  c.checkpoint_every_steps = 0       # 0: only at the end
  c.keep_checkpoints = 3
  # True: training goes on while a checkpoint is written, so a kill can lose one interval plus
  # the steps taken during that save; False: each save finishes first (at most one interval).
  c.checkpoint_async = True
  c.keep_best_by = ml_collections.config_dict.placeholder(str)  # e.g. 'eval/accuracy': also keep the best
  c.eval_batch_size = 0              # 0: same as batch_size
  c.on_nonfinite = 'stop'            # stop | skip
  c.plots = True

  # Global magnitude pruning of Dense/Conv kernels (train/prune.py), Zhu & Gupta's cubic schedule.
  c.prune = ml_collections.ConfigDict()
  c.prune.target_sparsity = 0.0      # 0: off; 0.9 prunes 90% of all kernel weights together
  c.prune.begin_step = 0
  c.prune.end_step = -1              # -1: three quarters of the way through training
  c.prune.update_every = 100         # steps between mask updates
  # Knowledge distillation (train/distill.py; task='distill').
  c.distill = ml_collections.ConfigDict()
  c.distill.teacher = ml_collections.config_dict.placeholder(str)  # a trained classifier's workdir
  c.distill.temperature = 4.0
  c.distill.alpha = 0.9              # weight of the soft (teacher) loss; 1 - alpha on the labels
  return c


def set_model(c, name: str) -> None:
  """``c.model`` = the registered model ``name`` with every hyper-parameter as a key.

  Keys start unset (``None``: the preset's value), so with ``lock_config`` any of them
  can still be set from the command line (``--config.model.dropout_rate=0.1``), and
  ``--config.model.name=resnet18`` switches preset without stale values. ``dtype``
  and ``param_dtype`` come from ``config.dtype`` instead.
  """
  import dataclasses
  import functools

  import models
  ctor = models.REGISTRY[name]
  cls = ctor.func if isinstance(ctor, functools.partial) else ctor
  model = ml_collections.ConfigDict({'name': name})
  for f in dataclasses.fields(cls):
    if not f.init or f.name in ('parent', 'name', 'dtype', 'param_dtype'):
      continue
    default = (ctor.keywords.get(f.name, f.default) if isinstance(ctor, functools.partial)
               else f.default)
    if isinstance(default, (bool, int, float, str, tuple)):
      model[f.name] = ml_collections.config_dict.placeholder(
          float if isinstance(default, float) else type(default))
  c.model = model


def parse_arg(arg: str | None, allowed: tuple[str, ...] = ('tiny', 'val')) -> set[str]:
  """``get_config`` arguments as a set: ``'tiny'``, ``'val'`` or ``'tiny,val'``."""
  words = {w for w in (arg or '').split(',') if w}
  unknown = words - set(allowed)
  if unknown:
    raise ValueError(f'unknown config argument {",".join(sorted(unknown))!r}; '
                     f'use any of {", ".join(allowed)} (comma-separated) or nothing')
  return words


def local_data_dir(name: str):
  """``$JAXLAB_DATA/name`` when that folder exists (e.g. JAXLAB_DATA=../shared/data), else unset.

  Configs never need the folder: unset ``data.dir`` means TFDS, and
  ``--config.data.dir=PATH`` always wins.
  """
  import os
  root = os.environ.get('JAXLAB_DATA')
  if root and os.path.isdir(os.path.join(root, name)):
    return os.path.abspath(os.path.join(root, name))
  return ml_collections.config_dict.placeholder(str)


def hold_out_validation(c, fraction: int = 10) -> None:
  """``:val``: train on the first (100-fraction)% of train and evaluate on the rest.

  Choices are made on this split; the test/dev number is then reported once.
  """
  c.data.train_split = f'train[:{100 - fraction}%]'
  c.data.eval_split = f'train[{100 - fraction}%:]'


def hold_out_sentences(c) -> None:
  """``:val`` for SST-2: train on ``train_fit``, evaluate on ``train_heldout``.

  SST-2 train is mostly phrases cut from its sentences, dev only whole sentences; a slice
  of train scores phrases (about 92%) where dev scores sentences (about 83%), and ranked
  choices differently. ``train_heldout`` is 20% of the whole train sentences with every
  phrase inside them removed from ``train_fit`` (train/data/sentence_holdout.py).
  """
  c.data.train_split, c.data.eval_split = 'train_fit', 'train_heldout'
  c.eval_batch_size = 459  # 1,377 held-out sentences = 3 x 459: no padded eval rows


def make_tiny(c, steps: int = 4, train_limit: int = 256, eval_limit: int = 64) -> None:
  """``:tiny``: a seconds-long smoke run of the same config (what the test suite runs)."""
  c.num_epochs = -1
  c.num_train_steps = steps
  c.batch_size = min(c.batch_size, 16)
  c.data.train_limit, c.data.eval_limit = train_limit, eval_limit
  c.log_every_steps = 2
  c.eval_every_steps = 0
  c.checkpoint_every_steps = 0
  c.schedule.warmup_steps = min(c.schedule.warmup_steps, 1)
  c.plots = False
