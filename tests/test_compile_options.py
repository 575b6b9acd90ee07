"""The XLA options the steps compile with: convolutions off YNNPACK on CPU, and config.xla_options."""
import collections
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from tests.helpers import load_config
from train import benchmark, compile_options, validate

NO_YNN_CONV = {compile_options.YNN_FUSION_FLAG: compile_options.ynn_fusions(convolutional=False)}
CONV_NET = {compile_options.YNN_FUSION_FLAG: compile_options.ynn_fusions(convolutional=True)}


def _conv_grads(options):
  """Kernel and input gradients of a conv of the MNIST CNN's second layer's shape (batch 8)."""
  dims = ('NHWC', 'HWIO', 'NHWC')
  loss = lambda w, x: jnp.sum(jnp.sin(lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                                                dimension_numbers=dims)))
  w = jax.random.normal(jax.random.key(0), (3, 3, 32, 64)) * 0.1
  x = jax.random.normal(jax.random.key(1), (8, 14, 14, 32))
  compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(w, x).compile(compiler_options=options)
  return compiled.as_text(), jax.device_get(compiled(w, x))


@pytest.mark.parametrize('options', [NO_YNN_CONV, CONV_NET])
def test_cpu_convolutions_leave_ynnpack_with_equal_gradients(options):
  default_hlo, default_grads = _conv_grads(None)
  hlo, grads = _conv_grads(options)
  # If jaxlib stops sending convolutions to YNNPACK, the option has nothing left to do.
  assert re.search(r'ynn_fusion[.\d]* = [^\n]*conv_general_dilated', default_hlo), \
      'XLA:CPU no longer fuses convolutions into YNNPACK'
  assert not re.search(r'ynn_fusion[.\d]* = [^\n]*conv_general_dilated', hlo), hlo
  assert hlo.count('convolution(') == 3, hlo  # forward, input and kernel gradients, on Eigen
  for a, b in zip(grads, default_grads):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4)


def test_has_convolutions():
  def params(path, *arg):  # shapes only: nothing is compiled or run
    from train import trainer
    config = load_config(path, *arg)
    info, spec = benchmark.dataset_spec(config)
    batch = benchmark.synthetic_batch(spec, info, 1, 0)
    model = trainer.build_model(config, info)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), batch['inputs']))['params']
  assert compile_options.has_convolutions(params('configs/mnist_cnn.py', 'tiny'))
  assert compile_options.has_convolutions(params('configs/mnist_lenet.py', 'tiny'))
  # Attention's DenseGeneral kernels are 3-D, the MLP's 2-D: neither is a convolution.
  assert not compile_options.has_convolutions(params('configs/shakespeare_gpt.py', 'tiny'))
  assert not compile_options.has_convolutions(params('configs/mnist_mlp.py', 'tiny'))


def test_models_without_convolutions_compile_as_by_default():
  """The option keeps YNNPACK's other default fusions: an MLP step's HLO is unchanged."""
  b = benchmark.build(load_config('configs/mnist_mlp.py', 'tiny'), devices=jax.devices()[:1])
  lowered = jax.jit(b['step_fn']).lower(b['state'], b['batch'], b['rng'])
  kinds = lambda options: collections.Counter(
      re.findall(r'= \S+ ([\w-]+)\(', lowered.compile(compiler_options=options).as_text()))
  default = kinds(None)
  assert default['fusion'] > 0 and default == kinds(NO_YNN_CONV)


def test_step_options_by_platform_and_their_precedence(monkeypatch):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  config = load_config('configs/mnist_cnn.py', 'tiny')
  assert compile_options.step_options(config, 'cpu') == NO_YNN_CONV
  assert compile_options.step_options(config, 'cpu', convolutional=True) == CONV_NET
  assert compile_options.step_options(config, 'gpu', convolutional=True) is None
  config.remat = 'full'
  assert compile_options.step_options(config, 'cpu') == {
      **NO_YNN_CONV, 'xla_disable_hlo_passes': 'cse_barrier_expander'}
  # The config's own options win; a flag in the XLA_FLAGS environment is left to it.
  config.xla_options = ('--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT '
                        '--xla_cpu_enable_fast_math=true')
  assert compile_options.step_options(config, 'gpu') == {
      'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_DOT',
      'xla_cpu_enable_fast_math': 'true'}
  config.xla_options, config.remat = '', 'none'
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=8 '
                     '--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT')
  assert compile_options.step_options(config, 'cpu') is None


def test_a_jaxlib_without_the_option_compiles_as_before(monkeypatch):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  assert not compile_options._cpu_accepts('xla_cpu_no_such_option', '1')
  monkeypatch.setattr(compile_options, '_cpu_accepts', lambda flag, value: False)
  assert compile_options.step_options(load_config('configs/mnist_cnn.py', 'tiny'), 'cpu') is None


def test_parse_xla_options():
  assert compile_options.parse_xla_options('') == {}
  assert compile_options.parse_xla_options(" --xla_a=1  --xla_b='x,y z' ") == {
      'xla_a': '1', 'xla_b': 'x,y z'}
  with pytest.raises(ValueError, match="'xla_a=1' is not --xla_<name>=<value>"):
    compile_options.parse_xla_options('xla_a=1')


@pytest.mark.parametrize('text, message', [
    ('--xla_cpu_enable_fast_math',
     r"^xla_options: '--xla_cpu_enable_fast_math' is not --xla_<name>=<value>$"),
    ('--xla_no_such_option=1',
     r"^xla_options: INVALID_ARGUMENT: No such compile option: 'xla_no_such_option'$"),
    ('--xla_cpu_experimental_ynn_fusion_type=BOGUS', r"^xla_options: .*'BOGUS' is not a valid enum value"),
])
def test_bad_xla_options_are_one_line_config_errors(text, message):
  config = load_config('configs/mnist_mlp.py', 'tiny', xla_options=text)
  with pytest.raises(validate.ConfigError, match=message) as e:
    validate.check_config(config)
  assert '\n' not in str(e.value)
