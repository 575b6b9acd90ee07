"""float16 compute with dynamic loss scaling (train/loss_scale.py).

The rule itself (skip and shrink on overflow, grow after ``period`` finite steps),
one train step at a huge scale, a float16 run against float32, bit-identical
resume, gradient accumulation and the pmap path, and the config checks.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import assert_trees_equal, load_config
from train import loss_scale as ls_lib
from train import optim, pmap_path, steps, tasks, trainer, validate
from train import sharding as sharding_lib
from train.data import sources
from train.metrics import read_metrics
from train.state import ScaledTrainState, TrainState, make_init_fn


def _adjust_many(ls, finite_flags):
  for finite in finite_flags:
    ls = ls_lib.adjust(ls, jnp.asarray(finite))
  return ls


def test_scale_shrinks_on_overflow_grows_after_period_and_stops_at_min():
  ls = ls_lib.create(initial=8.0, period=3, factor=2.0, min_scale=2.0)
  ls = _adjust_many(ls, [True, True])
  assert (float(ls.scale), int(ls.good_steps)) == (8.0, 2)
  ls = _adjust_many(ls, [True])  # the third finite step in a row
  assert (float(ls.scale), int(ls.good_steps)) == (16.0, 0)
  ls = _adjust_many(ls, [True, True, False])  # an overflow resets the count
  assert (float(ls.scale), int(ls.good_steps), int(ls.skipped_steps)) == (8.0, 0, 1)
  ls = _adjust_many(ls, [False, False, False])
  assert float(ls.scale) == 2.0 and int(ls.skipped_steps) == 4  # never below min_scale
  grads = {'w': jnp.full((3,), 6.0)}
  np.testing.assert_array_equal(ls_lib.unscale(ls, grads)['w'], 3.0)


def _seed_fnn(**overrides):
  """The two-moons MLP (offline, seconds): a config, its model, optimizer, task and one batch."""
  c = load_config('configs/seed_fnn.py', 'tiny', dtype='float16', **overrides)
  splits = sources.load_splits(c.data)
  model = trainer.build_model(c, splits.info)
  tx, schedule = optim.create_optimizer(c, 100)
  batch = {k: np.stack([splits.train[i][k] for i in range(c.batch_size)]) for k in splits.train[0]}
  return c, model, tx, tasks.get(c.task), batch


def _one_device_state(loss_scale, **overrides):
  c, model, tx, task_fn, batch = _seed_fnn(**overrides)
  init = make_init_fn(model, tx, {k: v[:1] for k, v in batch.items()}, loss_scale)
  step = jax.jit(steps.make_train_step(model, task_fn))
  return init(jax.random.key(0)), step, batch


def test_overflow_at_a_huge_scale_skips_the_update_and_halves_the_scale():
  state, step, batch = _one_device_state(ls_lib.create(initial=2.0 ** 60))
  assert isinstance(state, ScaledTrainState)
  new, metrics = step(state, batch, jax.random.key(1))
  assert_trees_equal(new.params, state.params)        # float16 cotangents overflowed: no update
  assert_trees_equal(new.opt_state, state.opt_state)
  assert float(new.loss_scale.scale) == 2.0 ** 59
  assert int(new.loss_scale.skipped_steps) == 1 and int(new.step) == 1
  assert int(new.nonfinite_steps) == 0                # expected under loss scaling: no error
  assert np.isfinite(float(metrics['loss'])) and float(metrics['skipped_steps']) == 1


def test_finite_steps_grow_the_scale_after_period_and_update_params():
  state, step, batch = _one_device_state(ls_lib.create(initial=2.0 ** 4, period=3))
  rng = jax.random.key(1)
  for i in range(3):
    new, _ = step(state, batch, rng)
    assert not np.allclose(new.params['Dense_0']['kernel'], state.params['Dense_0']['kernel'])
    state = new
    assert float(state.loss_scale.scale) == (2.0 ** 5 if i == 2 else 2.0 ** 4)
  assert int(state.loss_scale.skipped_steps) == 0 and int(state.loss_scale.good_steps) == 0
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(state.params))


@jax.custom_vjp
def _poison(logits, flag):
  """The identity, whose backward adds inf to the cotangent of examples with ``flag`` > 0."""
  return logits


def _poison_fwd(logits, flag):
  return logits, flag


def _poison_bwd(flag, g):
  bad = flag.reshape(flag.shape + (1,) * (g.ndim - 1)) > 0
  return jnp.where(bad, jnp.asarray(jnp.inf, g.dtype), g), jnp.zeros_like(flag)


_poison.defvjp(_poison_fwd, _poison_bwd)


def _poisoned(task_fn):
  """``task_fn`` with an inf injected into the gradient (not the loss) of flagged examples."""
  return lambda logits, batch, *a: task_fn(_poison(logits, batch['poison']), batch, *a)


@pytest.mark.parametrize('path', ['sharded', 'pmap'])
def test_injected_inf_skips_the_step_halves_the_scale_and_is_counted(path):
  """One flagged example (on the last data shard) makes the summed gradients inf.

  Both paths run the same update code; with the inf on one shard only, every
  shard must still skip (the check comes after the cross-shard sum).
  """
  c, model, tx, task_fn, batch = _seed_fnn()
  clean = {**batch, 'poison': np.zeros(c.batch_size, np.float32)}
  poisoned = {**clean, 'poison': np.eye(c.batch_size, dtype=np.float32)[-1]}
  init = make_init_fn(model, tx, {k: v[:1] for k, v in batch.items()},
                      ls_lib.create(initial=2.0 ** 10, period=2))
  devices = jax.devices()[:2]
  if path == 'pmap':
    step = pmap_path.pmap_train_step(steps.make_train_step(
        model, _poisoned(task_fn), axis_name=pmap_path.AXIS))
    state = pmap_path.replicate(init(jax.random.key(0)), devices)
    put = lambda b: pmap_path.put_batch(b, devices)
    host = lambda tree: jax.device_get(pmap_path.unreplicate(tree))
  else:
    mesh = sharding_lib.make_mesh({'data': -1, 'fsdp': 1, 'tensor': 1}, devices)
    shardings = sharding_lib.tree_shardings(jax.eval_shape(init, jax.random.key(0)), mesh)
    step = jax.jit(steps.make_train_step(model, _poisoned(task_fn)),
                   in_shardings=(shardings, sharding_lib.batch_sharding(mesh),
                                 sharding_lib.replicated(mesh)))
    state = jax.jit(init, out_shardings=shardings)(jax.random.key(0))
    put = lambda b: sharding_lib.shard_batch(b, sharding_lib.batch_sharding(mesh))
    host = jax.device_get
  rng = jax.random.key(1)
  before = host(state)

  state, metrics = step(state, put(poisoned), rng)
  after, metrics = host(state), host(metrics)
  assert_trees_equal(after.params, before.params)       # the update was skipped...
  assert_trees_equal(after.opt_state, before.opt_state)
  assert float(after.loss_scale.scale) == 2.0 ** 9      # ...and the scale halved
  assert int(after.loss_scale.skipped_steps) == 1 and int(after.step) == 1
  assert float(metrics['skipped_steps']) == 1 and float(metrics['loss_scale']) == 2.0 ** 9
  assert np.isfinite(float(metrics['loss'])) and not np.isfinite(float(metrics['grad_norm']))
  assert int(after.nonfinite_steps) == 0 and float(metrics['nonfinite']) == 0  # not an error

  for i in range(2):  # clean steps update again; the second completes the period and grows it
    state, metrics = step(state, put(clean), rng)
    now = host(state)
    assert not np.allclose(now.params['Dense_0']['kernel'], after.params['Dense_0']['kernel'])
    assert float(now.loss_scale.scale) == (2.0 ** 10 if i == 1 else 2.0 ** 9)
    after = now
  assert int(after.loss_scale.skipped_steps) == 1 and float(host(metrics)['skipped_steps']) == 1


def test_float32_and_bfloat16_states_carry_no_loss_scale():
  for dtype in ('float32', 'bfloat16'):
    c = load_config('configs/seed_fnn.py', 'tiny', dtype=dtype)
    assert ls_lib.from_config(c) is None
  state, _, _ = _one_device_state(None)
  assert type(state) is TrainState and state.loss_scale is None


def _losses(workdir):
  return np.array([r['train/loss'] for r in read_metrics(workdir) if 'train/loss' in r])


def test_float16_trains_like_float32(tmp_path):
  """The digits CNN: float16 (no overflow at this scale) follows float32 closely."""
  runs = {}
  for dtype in ('float32', 'float16'):
    c = load_config('configs/default.py', 'tiny', dtype=dtype, num_train_steps=16,
                    log_every_steps=2, eval_every_steps=0, checkpoint_every_steps=0)
    if dtype == 'float16':
      c.loss_scale.initial = 2.0 ** 10
    validate.check_config(c)
    out = trainer.train_and_evaluate(c, str(tmp_path / dtype),
                                     trainer.RunControl(devices=jax.devices()[:1]))
    runs[dtype] = (out, _losses(str(tmp_path / dtype)))
  (f32, l32), (f16, l16) = runs['float32'], runs['float16']
  assert np.all(np.isfinite(l16)) and l16[-1] < l16[0] - 0.2
  np.testing.assert_allclose(l16, l32, rtol=0.05)
  np.testing.assert_allclose(f16['eval/loss'], f32['eval/loss'], rtol=0.05)
  assert f16['eval/loss'] != f32['eval/loss']  # the compute really ran in float16
  rows = [r for r in read_metrics(str(tmp_path / 'float16')) if 'train/loss_scale' in r]
  assert rows and rows[-1]['train/skipped_steps'] == 0 and rows[-1]['train/loss_scale'] == 2.0 ** 10
  assert all(x.dtype == np.float32 for x in jax.tree_util.tree_leaves(f16['state'].params))
  assert all(x.dtype == np.float32 for x in jax.tree_util.tree_leaves(f16['state'].opt_state)
             if hasattr(x, 'dtype') and x.ndim > 0)


# Overflow, shrink, grow and overflow again within a dozen steps: factor 2**8 jumps from
# 2**40 (float16 overflows) to 2**16 in three skips, and period 2 grows it back often.
DYNAMIC = {'loss_scale.initial': 2.0 ** 40, 'loss_scale.factor': 2.0 ** 8, 'loss_scale.period': 2,
           'num_train_steps': 12, 'log_every_steps': 1}


def _dynamic(**overrides):
  c = load_config('configs/seed_fnn.py', 'tiny', dtype='float16', **{**DYNAMIC, **overrides})
  validate.check_config(c)
  return c


def test_resume_is_bit_identical(tmp_path):
  straight = trainer.train_and_evaluate(_dynamic(), str(tmp_path / 'straight'))
  resumed_dir = str(tmp_path / 'resumed')
  first = trainer.train_and_evaluate(_dynamic(), resumed_dir, trainer.RunControl(stop_at_step=5))
  assert first['stopped_early'] and int(first['state'].loss_scale.skipped_steps) >= 3
  resumed = trainer.train_and_evaluate(_dynamic(), resumed_dir)
  ls = straight['state'].loss_scale
  assert int(ls.skipped_steps) > 3  # the scale grew back into an overflow after the resume point
  fields = lambda s: jax.device_get({k: getattr(s, k) for k in (
      'step', 'params', 'opt_state', 'model_state', 'loss_scale', 'nonfinite_steps')})
  assert_trees_equal(fields(resumed['state']), fields(straight['state']))
  np.testing.assert_array_equal(_losses(resumed_dir)[-7:], _losses(str(tmp_path / 'straight'))[-7:])


def test_pmap_and_grad_accumulation_agree_with_the_jit_step(tmp_path):
  ref = trainer.train_and_evaluate(_dynamic(), str(tmp_path / 'jit'))
  for name, overrides in {'pmap': dict(parallelism='pmap'),
                          'accum': dict(grad_accum_steps=2),
                          'pmap_accum': dict(parallelism='pmap', grad_accum_steps=2)}.items():
    out = trainer.train_and_evaluate(_dynamic(**overrides), str(tmp_path / name))
    a, b = jax.device_get(out['state']), jax.device_get(ref['state'])
    for field in ('scale', 'skipped_steps', 'good_steps'):  # the same overflows, the same scale
      assert getattr(a.loss_scale, field) == getattr(b.loss_scale, field), (name, field)
    np.testing.assert_allclose(_losses(str(tmp_path / name)), _losses(str(tmp_path / 'jit')),
                               rtol=2e-4, err_msg=name)  # float16 round-off
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=5e-5, err_msg=name),
        a.params, b.params)


@pytest.mark.parametrize('overrides, message', [
    ({'loss_scale.initial': 1024.0}, "loss_scale.initial: only used with dtype=float16"),
    ({'dtype': 'bfloat16', 'loss_scale.period': 10}, "but dtype is 'bfloat16'"),
    ({'dtype': 'float16', 'loss_scale.initial': 0.0}, 'loss_scale.initial must be in'),
    ({'dtype': 'float16', 'loss_scale.initial': float('inf')}, 'loss_scale.initial must be in'),
    ({'dtype': 'float16', 'loss_scale.period': 0}, 'loss_scale.period must be >= 1'),
    ({'dtype': 'float16', 'loss_scale.factor': 0.5}, 'loss_scale.factor must be >= 1'),
    ({'dtype': 'float16', 'loss_scale.min': 2.0 ** 20}, 'loss_scale.min must be in'),
    ({'dtype': 'float8'}, 'dtype must be one of'),
    ({'dtype': 'float16', 'model.name': 'transformer_lm', 'model.attention_impl': 'jax'},
     "attention_impl='jax': XLA:CPU has no float16 dot"),
])
def test_impossible_loss_scale_settings_are_one_line_errors(overrides, message):
  c = load_config('configs/seed_fnn.py', 'tiny', **overrides)
  with pytest.raises(validate.ConfigError, match=message) as e:
    validate.check_config(c)
  assert '\n' not in str(e.value)


def test_float16_with_defaults_passes_validation():
  c = load_config('configs/seed_fnn.py', 'tiny', dtype='float16')
  validate.check_config(c)
  assert ls_lib.settings(c) == ls_lib.DEFAULTS
