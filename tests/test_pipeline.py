"""The grain pipeline: seeded, reshuffled per epoch, resumable to the batch, host-sharded."""
import numpy as np
import pytest

from train.data import pipeline
from train.data.augment import AUGMENTATIONS
from train.data.base import ArraySource

N, B = 100, 8


def _source(n=N):
  return ArraySource({'inputs': np.arange(n, dtype=np.float32)[:, None],
                      'label': np.arange(n, dtype=np.int32)})


def _take(ds, k, state=None, **kw):
  it = pipeline.train_iterator(ds, state=state, **kw)
  return [next(it)['label'] for _ in range(k)], it


def test_same_seed_same_batches_other_seed_differs():
  a, _ = _take(pipeline.train_dataset(_source(), global_batch_size=B, seed=3), 5)
  b, _ = _take(pipeline.train_dataset(_source(), global_batch_size=B, seed=3), 5)
  c, _ = _take(pipeline.train_dataset(_source(), global_batch_size=B, seed=4), 5)
  np.testing.assert_array_equal(np.stack(a), np.stack(b))
  assert not np.array_equal(np.stack(a), np.stack(c))


def test_each_epoch_is_a_new_permutation():
  ds = pipeline.train_dataset(_source(), global_batch_size=10, seed=0)
  batches, _ = _take(ds, 20)
  first, second = np.concatenate(batches[:10]), np.concatenate(batches[10:])
  assert sorted(first) == list(range(N)) and sorted(second) == list(range(N))
  assert not np.array_equal(first, second)


@pytest.mark.parametrize('threads', [0, 2])
def test_resume_from_saved_state_continues_exactly(threads):
  ds = pipeline.train_dataset(_source(), global_batch_size=B, seed=1)
  straight, _ = _take(ds, 30, num_threads=threads)
  head, it = _take(ds, 17, num_threads=threads)
  state = it.get_state()
  tail, _ = _take(ds, 13, state=state, num_threads=threads)
  np.testing.assert_array_equal(np.stack(head + tail), np.stack(straight))


def test_prefetcher_pairs_each_batch_with_the_state_after_it():
  ds = pipeline.train_dataset(_source(), global_batch_size=B, seed=2)
  it = pipeline.train_iterator(ds)
  pre = pipeline.DevicePrefetcher(it, lambda b: b, size=3)
  for _ in range(4):
    _, state = next(pre)
  # A checkpoint taken now stores `state`; restoring it gives the 5th batch next.
  expected, _ = _take(ds, 5)
  resumed, _ = _take(ds, 1, state=state)
  np.testing.assert_array_equal(resumed[0], expected[4])


def test_two_hosts_read_disjoint_halves_that_make_the_global_batch():
  one, _ = _take(pipeline.train_dataset(_source(), global_batch_size=B, seed=5), 25)
  hosts = [_take(pipeline.train_dataset(_source(), global_batch_size=B, seed=5,
                                        process_index=p, process_count=2), 25)[0] for p in (0, 1)]
  for k in range(25):
    h0, h1 = hosts[0][k], hosts[1][k]
    assert len(h0) == len(h1) == B // 2
    assert not set(h0) & set(h1)
    assert sorted(np.concatenate([h0, h1])) == sorted(one[k])


def test_eval_batches_pad_and_cover_every_example_once_across_hosts():
  src = _source(37)
  seen = []
  for p in range(2):
    for batch in pipeline.eval_batches(src, global_batch_size=8, process_index=p, process_count=2):
      assert len(batch['label']) == 4
      seen.extend(batch['label'][batch['valid']].tolist())
  assert sorted(seen) == list(range(37))


def test_augmentation_is_seeded_per_example():
  rng = np.random.default_rng(0)
  src = ArraySource({'inputs': rng.normal(size=(32, 32, 32, 3)).astype(np.float32),
                     'label': np.zeros(32, np.int32)})
  make = lambda: pipeline.train_dataset(src, global_batch_size=8, seed=0,
                                        augment=AUGMENTATIONS['cifar'])
  a, b = next(iter(make()))['inputs'], next(iter(make()))['inputs']
  np.testing.assert_array_equal(a, b)
  plain = next(iter(pipeline.train_dataset(src, global_batch_size=8, seed=0)))['inputs']
  assert not np.array_equal(a, plain)


def test_too_small_or_indivisible_is_a_clear_error():
  with pytest.raises(ValueError, match='fewer than one batch'):
    pipeline.train_dataset(_source(4), global_batch_size=8, seed=0)
  with pytest.raises(ValueError, match='not divisible'):
    pipeline.train_dataset(_source(), global_batch_size=9, seed=0, process_count=2)
