"""Masked-LM pretraining (train/mlm.py) and fine-tuning from it via init_from."""
import jax
import numpy as np
import pytest

from tests.helpers import load_config
from train import mlm, tasks, trainer
from train.data import pipeline
from train.data.base import ArraySource

PAD, CLS, SEP, MASK, UNK, V = 0, 1, 2, 3, 4, 50
SPECIALS = (PAD, CLS, SEP, UNK)


def _masker(rate=0.15):
  return mlm.Masker(MASK, V, SPECIALS, rate)


def _records(n=4000, t=40, seed=0):
  """[CLS] tokens [SEP] then padding, lengths 3..t, ids 5..V-1 with a few [UNK]."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, t + 1, n)
  ids = rng.integers(5, V, (n, t)).astype(np.int32)
  ids[rng.random((n, t)) < 0.02] = UNK
  mask = np.arange(t)[None] < lengths[:, None]
  ids[:, 0] = CLS
  ids[np.arange(n), lengths - 1] = SEP
  ids[~mask] = PAD
  return ids, mask


def test_masking_statistics_on_a_large_sample():
  ids, mask = _records()
  m = _masker()
  rng = np.random.default_rng(1)
  outs = [m({'inputs': i, 'mask': k, 'label': np.int32(1)}, rng) for i, k in zip(ids, mask)]
  inputs = np.stack([o['inputs'] for o in outs])
  weights = np.stack([o['weights'] for o in outs])
  np.testing.assert_array_equal(np.stack([o['targets'] for o in outs]), ids)
  assert 'label' not in outs[0]  # pretraining reads text only
  eligible = mask & ~np.isin(ids, SPECIALS)
  selected = weights > 0
  assert not (selected & ~eligible).any()  # specials and padding are never selected
  np.testing.assert_array_equal(inputs[~selected], ids[~selected])  # nor changed
  assert abs(selected.sum() / eligible.sum() - 0.15) < 0.005  # ~96k eligible tokens
  n = selected.sum()
  to_mask = (inputs == MASK) & selected
  kept = (inputs == ids) & selected
  to_random = selected & ~to_mask & ~kept
  assert abs(to_mask.sum() / n - 0.8) < 0.01
  assert abs(to_random.sum() / n - 0.1) < 0.01
  assert abs(kept.sum() / n - 0.1) < 0.01  # includes the 1/45 random draws equal to the original
  assert not np.isin(inputs[to_random], SPECIALS + (MASK,)).any()  # random ids are ordinary tokens


def test_masking_is_a_function_of_the_rng():
  ids, mask = _records(8)
  rec = {'inputs': ids[0], 'mask': mask[0]}
  a = _masker()(rec, np.random.default_rng([7, 3]))
  b = _masker()(rec, np.random.default_rng([7, 3]))
  c = _masker()(rec, np.random.default_rng([7, 4]))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a['weights'], c['weights']) or not np.array_equal(a['inputs'], c['inputs'])


@pytest.mark.parametrize('buckets', [(), (16,)])
def test_training_masks_are_deterministic_fresh_per_epoch_and_resume_exactly(buckets):
  ids, mask = _records(24, t=32)
  src = ArraySource({'inputs': ids, 'mask': mask})
  make = lambda seed: pipeline.train_dataset(src, global_batch_size=8, seed=seed, augment=_masker(),
                                             bucket_boundaries=buckets)
  def take(ds, k, state=None):
    it = pipeline.train_iterator(ds, state=state)
    return [next(it) for _ in range(k)], it
  straight, _ = take(make(0), 9)
  head, it = take(make(0), 4)
  tail, _ = take(make(0), 5, state=it.get_state())
  for x, y in zip(straight, head + tail):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  other, _ = take(make(1), 9)
  assert any(not np.array_equal(x['weights'], y['weights']) for x, y in zip(straight, other))
  # An example read in two epochs gets two different masks (dynamic masking).
  def masks_by_example(batches):
    out = {}
    for b in batches:
      for row in range(len(b['targets'])):
        out.setdefault(b['targets'][row].tobytes(), []).append(b['weights'][row])
    return out
  twice = [v for v in masks_by_example(straight).values() if len(v) >= 2]
  assert twice and any(not np.array_equal(v[0], v[1]) for v in twice)


def test_eval_masks_are_fixed_per_example():
  ids, mask = _records(10)
  make = lambda seed: mlm.FixedMasks(ArraySource({'inputs': ids, 'mask': mask}), _masker(0.5), seed)
  a, b, c = make(0), make(0), make(1)
  for i in range(10):  # the same every read and every run; another seed, other masks
    np.testing.assert_array_equal(a[i]['inputs'], a[i]['inputs'])
    np.testing.assert_array_equal(a[i]['weights'], b[i]['weights'])
  assert any(not np.array_equal(a[i]['weights'], c[i]['weights']) for i in range(10))


def test_loss_is_the_mean_cross_entropy_over_masked_positions_only():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
  targets = rng.integers(0, 7, (2, 5)).astype(np.int32)
  weights = np.array([[0, 1, 0, 0, 1], [0, 0, 1, 0, 0]], np.float32)
  batch = {'targets': targets, 'weights': weights}
  loss, sums = tasks.get('mlm')(logits, batch)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  picked = [-logp[b, t, targets[b, t]] for b, t in zip(*np.nonzero(weights))]
  np.testing.assert_allclose(float(loss), np.mean(picked), rtol=1e-6)
  assert float(sums['loss'][1]) == 3
  # Logits at unselected positions do not matter.
  changed = logits.copy()
  changed[weights == 0] = rng.normal(size=changed[weights == 0].shape) * 10
  np.testing.assert_allclose(float(tasks.get('mlm')(changed, batch)[0]), float(loss), rtol=1e-6)


def test_mlm_needs_a_mask_token():
  from train.data.base import DatasetInfo
  with pytest.raises(ValueError, match='wordpiece'):
    mlm.masker_for(DatasetInfo(vocab_size=10, extra={'tokenizer': 'word'}))


def _write_data(root):
  """A tiny SST-2 and a WordPiece tokenizer with [MASK] over its words."""
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
  words = ['good', 'bad', 'movie', 'film', 'fun', 'dull', 'plot', 'the', 'a', ',', '.']
  vocab = {t: i for i, t in enumerate(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + words)}
  tok = Tokenizer(models.WordPiece(vocab, unk_token='[UNK]'))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  root.mkdir()
  tok.save(str(root / 'tokenizer.json'))
  rng = np.random.default_rng(0)
  rows = [' '.join(rng.choice(words, rng.integers(2, 12))) + f'\t{i % 2}\n' for i in range(100)]
  (root / 'train.tsv').write_text('sentence\tlabel\n' + ''.join(rows))
  (root / 'dev.tsv').write_text('sentence\tlabel\n' + ''.join(rows[:16]))


@pytest.fixture(scope='module')
def tiny_runs(tmp_path_factory):
  """A 2-step :tiny pretraining run and a 1-step fine-tuning run from it (shared: compiles dominate).

  The fine-tune warms up from learning rate 0 over 2 steps and stops after 1, so its
  params are exactly the initial ones: the loaded encoder plus a fresh head. It
  evaluates at that step and keeps it as the best checkpoint.
  """
  tmp = tmp_path_factory.mktemp('mlm')
  data = tmp / 'data'
  _write_data(data)
  common = {'data.dir': str(data), 'data.tokenizer_path': str(data / 'tokenizer.json'),
            'data.seq_len': 16, 'data.bucket_boundaries': ()}
  pre = load_config('configs/sst2_mlm.py', 'tiny', **common, num_train_steps=2)
  pre_out = trainer.train_and_evaluate(pre, str(tmp / 'pre'), trainer.RunControl(
      devices=jax.devices()[:1]))  # one device compiles faster than 8 fake ones
  ft = load_config('configs/sst2_mlm.py', 'tiny,finetune', **common, num_train_steps=2,
                   init_from=str(tmp / 'pre'), keep_best_by='eval/accuracy', eval_every_steps=1,
                   **{'schedule.warmup_steps': 2})
  ft_out = trainer.train_and_evaluate(ft, str(tmp / 'ft'), trainer.RunControl(
      devices=jax.devices()[:1], stop_at_step=1))
  return {'pre': str(tmp / 'pre'), 'pre_out': pre_out, 'ft': str(tmp / 'ft'), 'ft_out': ft_out,
          'data': data}


def test_finetune_starts_from_the_pretrained_encoder(tiny_runs):
  from train import checkpoint as ckpt_lib
  assert np.isfinite(tiny_runs['pre_out']['eval/loss']) and 'eval/perplexity' in tiny_runs['pre_out']
  pretrained = ckpt_lib.load_params(tiny_runs['pre'])
  tuned = tiny_runs['ft_out']['state'].params
  flat = lambda t: {jax.tree_util.keystr(p): np.asarray(x)
                    for p, x in jax.tree_util.tree_flatten_with_path(t)[0]}
  tuned, pretrained = flat(tuned), flat(pretrained)
  encoder = [k for k in tuned if k.startswith("['encoder']")]
  assert len(encoder) > 10 and set(encoder) <= set(pretrained)
  for k in encoder:
    np.testing.assert_array_equal(tuned[k], pretrained[k], err_msg=k)
  head = [k for k in tuned if not k.startswith("['encoder']")]
  assert head and not set(head) & set(pretrained)  # the classifier head starts fresh
  assert any(k.startswith("['mlm_") for k in pretrained)  # and the MLM head is left behind


def test_evaluate_reproduces_the_trainers_eval(tiny_runs):
  from train.evaluate import evaluate_run
  pre = evaluate_run(tiny_runs['pre'])  # mlm: the same fixed eval masks as in training
  out = tiny_runs['pre_out']
  assert pre['num_examples'] == out['eval/num_examples'] == 10 and pre['step'] == 2
  np.testing.assert_allclose(pre['loss'], out['eval/loss'], rtol=1e-5)
  np.testing.assert_allclose(pre['perplexity'], out['eval/perplexity'], rtol=1e-5)
  best = evaluate_run(tiny_runs['ft'], best=True)  # the step-1 eval the trainer kept as best
  from train.metrics import read_metrics
  logged = [r for r in read_metrics(tiny_runs['ft']) if 'eval/accuracy' in r][-1]
  assert best['checkpoint'] == 'best' and best['step'] == logged['step'] == 1
  np.testing.assert_allclose([best['accuracy'], best['loss']],
                             [logged['eval/accuracy'], logged['eval/loss']], rtol=1e-5)


def test_evaluate_cli_scores_another_split_and_fails_in_one_line(tiny_runs, capsys):
  import json
  from train import evaluate
  assert evaluate.main(['--workdir', tiny_runs['ft'], '--split', 'dev']) == 0
  result = json.loads(capsys.readouterr().out)
  assert (result['split'], result['num_examples'], result['checkpoint']) == ('dev', 16, 'latest')
  assert 0 <= result['accuracy'] <= 1
  for argv, where in [(['--workdir', tiny_runs['pre'], '--best'], 'checkpoints_best'),
                      (['--workdir', tiny_runs['ft'], '--split', 'nosuch'], 'nosuch'),
                      (['--workdir', str(tiny_runs['data'])], 'config.json')]:
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and where in err, err

