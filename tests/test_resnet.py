"""ResNets: parameter counts against the published models, shapes, BatchNorm statistics, shortcuts."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models import resnet

# name -> (input shape, classes, parameters of the reference PyTorch model)
PUBLISHED = {
    'resnet20': ((32, 32, 3), 10, 269_722),     # He et al. 2016 CIFAR ResNet-20, option A shortcuts
    'resnet18': ((32, 32, 3), 10, 11_173_962),  # CIFAR ResNet-18 (kuangliu/pytorch-cifar)
    'resnet50': ((224, 224, 3), 1000, 25_557_032),  # torchvision resnet50
}


def _abstract_init(model, shape):
  """Variables as shapes only (jax.eval_shape): nothing large is allocated."""
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x), x


def _random_variables(model, x, seed=0):
  """Variables of the right shapes filled with numpy draws (He-scaled kernels, BN at its init).

  Compiling the real initializers costs seconds per distinct kernel shape on CPU; the
  tests below need weights of the right scale, not those initializers.
  """
  rng = np.random.default_rng(seed)
  fill = {'scale': np.ones, 'bias': np.zeros, 'mean': np.zeros, 'var': np.ones}

  def leaf(path, v):
    name = path[-1].key
    if name == 'kernel':
      return rng.normal(0, np.sqrt(2 / np.prod(v.shape[:-1])), v.shape).astype(np.float32)
    return fill[name](v.shape, np.float32)
  return jax.tree_util.tree_map_with_path(leaf, _abstract_init(model, x.shape)[0])


def _n_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_parameter_count_matches_published(name):
  shape, _, expected = PUBLISHED[name]
  variables, _ = _abstract_init(models.build(name), (1,) + shape)
  assert _n_params(variables['params']) == expected


@pytest.mark.parametrize('name', sorted(PUBLISHED))
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_preset_shapes_and_dtypes(name, dtype):
  shape, classes, _ = PUBLISHED[name]
  model = models.build(name, dtype=dtype)
  variables, x = _abstract_init(model, (2,) + shape)
  assert set(variables) == {'params', 'batch_stats'}
  assert {v.dtype for v in jax.tree_util.tree_leaves(variables)} == {jnp.dtype(jnp.float32)}
  logits = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
  assert logits.shape == (2, classes) and logits.dtype == jnp.float32
  logits, new_vars = jax.eval_shape(
      functools.partial(model.apply, train=True, mutable=['batch_stats']), variables, x)
  assert logits.shape == (2, classes) and logits.dtype == jnp.float32
  assert jax.tree_util.tree_structure(new_vars['batch_stats']) == jax.tree_util.tree_structure(
      variables['batch_stats'])


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_resnet20_runs(dtype):
  model = models.build('resnet20', dtype=dtype)
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  variables = _random_variables(model, x)
  logits, _ = model.apply(variables, x, train=True, mutable=['batch_stats'])
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()


def test_small_bottleneck_imagenet_stem_runs():
  # resnet50's layout (one block per stage, 1/16 width) on 32x32: 32 -> 16 -> 8 (pool) -> 8, 4, 2, 1.
  model = models.build('resnet50', stage_sizes=(1, 1, 1, 1), num_filters=4, num_classes=5)
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  logits = model.apply(_random_variables(model, x), x)
  assert logits.shape == (2, 5) and np.isfinite(np.asarray(logits)).all()


def _stem(params, x):
  """The CIFAR stem convolution written directly with lax (3x3, stride 1, pad 1, no bias)."""
  return jax.lax.conv_general_dilated(
      x, params['conv_init']['kernel'], (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision='highest')


def test_batchnorm_running_statistics():
  model = models.build('resnet20', stage_sizes=(1, 1, 1), num_filters=4)
  x = np.random.default_rng(0).normal(1.0, 2.0, size=(4, 8, 8, 3)).astype(np.float32)
  variables = _random_variables(model, x)
  apply = jax.jit(model.apply, static_argnames=('train', 'mutable'))

  _, updated = apply(variables, x, train=True, mutable=('batch_stats',))
  stats = updated['batch_stats']
  # Momentum 0.9 from the initial mean 0 / var 1 towards the batch's (biased) moments.
  h = np.asarray(_stem(variables['params'], x), np.float64)
  np.testing.assert_allclose(stats['bn_init']['mean'], 0.1 * h.mean((0, 1, 2)), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stats['bn_init']['var'], 0.9 + 0.1 * h.var((0, 1, 2)), rtol=1e-4, atol=1e-5)
  changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), variables['batch_stats'], stats)
  assert all(jax.tree_util.tree_leaves(changed))

  # Eval mode reads the running statistics: it does not update them, an example's logits do
  # not depend on the rest of its batch, and they move when the statistics do.
  trained = {'params': variables['params'], 'batch_stats': stats}
  logits, same = apply(trained, x, train=False, mutable=('batch_stats',))
  jax.tree_util.tree_map(np.testing.assert_array_equal, same['batch_stats'], stats)
  np.testing.assert_allclose(apply(trained, x[:1], train=False, mutable=False), logits[:1],
                             rtol=1e-5, atol=1e-6)
  assert not np.allclose(apply(variables, x, train=False, mutable=False), logits)
  # Train mode normalises with the batch's own statistics, so the batch matters there.
  alone, _ = apply(trained, x[:1], train=True, mutable=('batch_stats',))
  together, _ = apply(trained, x, train=True, mutable=('batch_stats',))
  assert not np.allclose(alone, together[:1])


def test_zero_init_residual_with_pad_shortcuts_reduces_to_stem_and_head():
  """With every residual branch silenced, ResNet-20 is stem -> option-A shortcuts -> pool -> dense."""
  model = models.build('resnet20', zero_init_residual=True)
  x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
  variables = model.init(jax.random.key(0), x)
  p = variables['params']
  # Fresh running statistics (mean 0, var 1) and BN scale 1 / bias 0 in the stem.
  h = np.maximum(np.asarray(_stem(p, x)) / np.sqrt(1 + 1e-5), 0)
  for width in (32, 64):  # each new stage: take every other pixel, zero-pad the channels evenly
    extra = width - h.shape[-1]
    h = np.pad(h[:, ::2, ::2], ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
  expected = h.mean((1, 2)) @ np.asarray(p['head']['kernel']) + np.asarray(p['head']['bias'])
  np.testing.assert_allclose(model.apply(variables, x), expected, rtol=1e-4, atol=1e-5)
  last_scales = [p[f'ResNetBlock_{i}']['BatchNorm_1']['scale'] for i in range(9)]
  assert all(not np.any(s) for s in last_scales)
  assert np.all(np.asarray(p['ResNetBlock_0']['BatchNorm_0']['scale']) == 1)


def test_unknown_block_is_an_error():
  with pytest.raises(ValueError, match='unknown block'):
    resnet.ResNet(block='wide').init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
