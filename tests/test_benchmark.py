"""train/benchmark.py: FLOP counts by hand, the JSON line's fields, the matmul peak.

Speed is never asserted here (the machines are shared); only that the numbers exist.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import TransformerLM
from train import benchmark

REQUIRED = ('examples_per_sec', 'tokens_per_sec', 'step_time_ms', 'compile_time_s', 'mfu',
            'peak_memory_bytes', 'flops_per_step', 'matmul_peak_flops', 'pipelined_step_time_ms',
            'pipelined_mfu')


def test_transformer_flops_match_a_hand_count():
  v, p, d, m, layers, heads, t = 11, 8, 8, 16, 2, 2, 8
  model = TransformerLM(vocab_size=v, max_len=p, num_layers=layers, num_heads=heads,
                        hidden_size=d, mlp_dim=m)
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, t), jnp.int32))['params']
  per_layer = (2 * 2 * d               # two LayerNorms (scale, bias)
               + 4 * (d * d + d)       # q, k, v, out with biases
               + d * m + m + m * d + d)  # MLP in and out with biases
  n = v * d + layers * per_layer + 2 * d  # tied token table, blocks, final norm; no positions
  assert benchmark.param_count(params) == n + p * d
  expected = 6 * n + 12 * layers * heads * (d // heads) * t
  assert benchmark.transformer_flops_per_token(model, params, t) == expected


def test_untied_head_counts_the_head_not_the_lookup():
  model = TransformerLM(vocab_size=11, max_len=8, num_layers=1, num_heads=2, hidden_size=8,
                        mlp_dim=16, tie_embeddings=False)
  shapes = lambda m: jax.eval_shape(m.init, jax.random.key(0), jnp.ones((1, 8), jnp.int32))['params']
  params = shapes(model)
  tied = TransformerLM(vocab_size=11, max_len=8, num_layers=1, num_heads=2, hidden_size=8,
                       mlp_dim=16)
  tied_params = shapes(tied)
  # The head (8 x 11) replaces the tied table in N: same count either way.
  assert (benchmark.transformer_flops_per_token(model, params, 8)
          == benchmark.transformer_flops_per_token(tied, tied_params, 8))


def test_scan_flops_count_every_iteration():
  w = jnp.ones((4, 5))

  def f(x):
    return jax.lax.scan(lambda c, _: (c, c @ w), x, None, length=7)[1]

  flops, loops = benchmark.jaxpr_matmul_flops(jax.make_jaxpr(f)(jnp.ones((3, 4))).jaxpr)
  assert loops and flops == 7 * 2 * 3 * 4 * 5


def test_strided_convolution_gradients_count_three_forwards():
  """A stride-2 convolution's input gradient runs over a zero-dilated cotangent; counting
  those zeros overstated ResNet-18's step (474 against 426 GFLOP). Forward, input gradient
  and weight gradient are each the forward's multiply-adds."""
  x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 5))
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (2, 2), 'SAME',
                                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  forward = 2 * (2 * 4 * 4 * 5) * (3 * 3 * 3)
  assert benchmark.jaxpr_matmul_flops(jax.make_jaxpr(conv)(x, w).jaxpr)[0] == forward
  grads = jax.make_jaxpr(jax.grad(lambda x, w: conv(x, w).sum(), argnums=(0, 1)))(x, w)
  assert benchmark.jaxpr_matmul_flops(grads.jaxpr)[0] == 3 * forward


def test_matmul_peak_is_positive():
  assert benchmark.measure_matmul_peak('float32', n=128, reps=3) > 0


def test_json_line_has_every_figure():
  from tests.helpers import load_config
  config = load_config('configs/bench_char_transformer.py', 'tiny')
  config.data.dir = None  # synthetic batches of the known shapes: no files needed
  # One device keeps the compile short (the suite runs on 8 fake ones).
  result = benchmark.run(config, steps=2, warmup=1, matmul_size=256,
                         devices=jax.local_devices()[:1])
  record = json.loads(benchmark.json_line(result))
  for key in REQUIRED:
    assert isinstance(record[key], (int, float)) and record[key] > 0, key
  assert record['num_devices'] == 1
  assert record['tokens_per_sec'] == record['examples_per_sec'] * record['seq_len']
  assert record['flops_source'] == 'nanogpt_6N_plus_attention'


def test_variants_run_side_by_side():
  from tests.helpers import load_config
  config = load_config('configs/seed_fnn.py', 'tiny')
  rows = benchmark.compare(config, ['b32:batch_size=32,xla_cpu_enable_fast_math=true'],
                           steps=2, warmup=1, rounds=2, devices=jax.local_devices()[:1])
  assert [r['name'] for r in rows] == ['base', 'b32']
  assert rows[0]['speed'] == 1.0 and all(np.isfinite(r['speed']) and r['speed'] > 0 for r in rows)
  assert 'pipelined_speed' not in rows[0]  # on CPU only when asked for


def test_variants_pipelined_figures():
  """On accelerators (or when asked) each round also queues its steps; the rows then carry the
  queued step time and its speed against the base."""
  from tests.helpers import load_config
  config = load_config('configs/seed_fnn.py', 'tiny')
  rows = benchmark.compare(config, ['b32:batch_size=32'], steps=4, warmup=1, rounds=2,
                           devices=jax.local_devices()[:1], pipelined=True)
  assert rows[0]['pipelined_speed'] == 1.0
  for r in rows:
    assert r['pipelined_step_time_ms'] > 0 and np.isfinite(r['pipelined_speed'])


def test_parse_variant():
  name, overrides, options = benchmark.parse_variant(
      'x:dtype=bfloat16,batch_size=64,xla_cpu_enable_fast_math=true')
  assert name == 'x' and overrides == {'dtype': 'bfloat16', 'batch_size': 64}
  assert options == {'xla_cpu_enable_fast_math': True}
  # A list-valued XLA option keeps its commas; the next key=value still splits off.
  _, overrides, options = benchmark.parse_variant(
      'y:xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE,'
      'model.dropout_rate=0.0')
  assert options == {'xla_cpu_experimental_ynn_fusion_type':
                     'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE'}
  assert overrides == {'model.dropout_rate': 0.0}


def test_in_process_call_takes_config_overrides(capsys):
  """``main(argv)`` defines the ``--config.KEY`` overrides of ``argv``, not of ``sys.argv``."""
  assert benchmark.main(['benchmark', '--config', 'configs/default.py', '--config.batch_size=16',
                         '--steps', '2', '--warmup', '1', '--rounds', '1', '--matmul_size', '256',
                         '--json']) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert result['batch_size'] == 16


def _traced_seed_fnn(tmp_path):
  from tests.helpers import load_config
  from train import op_profile
  config = load_config('configs/seed_fnn.py', 'tiny')
  built = benchmark.build(config, devices=jax.local_devices()[:1],
                          compiler_options=op_profile.compiler_options() or None)
  return built, op_profile.trace_steps(built, str(tmp_path / 'trace'), steps=2)


def test_trace_steps_writes_a_trace_of_the_compiled_step(tmp_path):
  from train import op_profile
  built, path = _traced_seed_fnn(tmp_path)
  assert path.endswith('.xplane.pb') and path.startswith(str(tmp_path)) and os.path.getsize(path) > 0
  ops = op_profile.hlo_instructions(built['compiled'].as_text())
  # The 2 -> 16 -> 1 MLP's first layer: its forward output has the batch's rows and 16 features.
  shapes = [shape for shape, _ in ops.values()]
  assert any(s.startswith(f"f32[{built['host_batch']['inputs'].shape[0]},16]") for s in shapes)
  assert any('Dense_0' in source for _, source in ops.values())


def test_top_ops_rank_ops_of_the_compiled_step(tmp_path):
  pytest.importorskip('xprof', reason='listing ops needs the optional xprof package')
  from train import op_profile
  built, path = _traced_seed_fnn(tmp_path)
  ops = op_profile.hlo_instructions(built['compiled'].as_text())
  rows = op_profile.top_ops(path, built['compiled'].as_text(), steps=2, count=5)
  assert rows and all(r['name'] in ops and r['ms_per_step'] > 0 for r in rows)
  assert [r['ms_per_step'] for r in rows] == sorted((r['ms_per_step'] for r in rows), reverse=True)
  events = op_profile.trace_events(path)
  idle = op_profile.untraced_ms(events, built['compiled'].as_text(), steps=2)
  steps = [e['dur'] / 1e3 for e in events if e['name'] == op_profile.STEP_EVENT]
  assert len(steps) == 2 and 0 <= idle <= max(steps)


def test_uncovered_time_merges_overlapping_ops_and_clips_to_the_step():
  from train import op_profile
  ops = [(10, 30), (20, 40), (60, 70), (95, 120)]  # two overlap; the last runs past the step
  # The step [0, 100] is covered on 10-40, 60-70 and 95-100: 45 of its 100.
  assert op_profile.uncovered(ops, [(0, 100)]) == 55
  assert op_profile.uncovered(ops, [(0, 100), (200, 210)]) == 65  # a second step with no op
  assert op_profile.uncovered([], [(5, 8)]) == 3


def test_interleaved_medians_warms_each_run_up_then_times_them_in_turn():
  calls = []
  runs = {'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}
  medians = benchmark.interleaved_medians(runs, reps=3)
  assert calls == ['a', 'b'] * 4  # one warm-up round, then three timed rounds
  assert set(medians) == {'a', 'b'} and min(medians.values()) >= 0


def _experiment(name: str):
  """The module of ``experiments/NAME.py`` (a script folder, not a package)."""
  import importlib.util
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'experiments', f'{name}.py')
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_bench_transposed_dots_measures_folded_and_written_out_forms():
  bench = _experiment('bench_transposed_dots')
  x = jax.random.normal(jax.random.key(0), (64, 32))
  np.testing.assert_array_equal(bench.transposed(x), x.T)
  rows = bench.measure([('w', 'weight', 64, 32, 16), ('i', 'input', 32, 64, 16)], reps=2)
  assert [r['name'] for r in rows] == ['w', 'i']
  for r in rows:
    assert r['max_abs_diff'] < 1e-4  # both forms compute the same product
    assert min(r['folded'], r['out'], r['plain']) > 0


def test_bench_attention_core_rates_each_dot_library_on_the_same_products():
  bench = _experiment('bench_attention_core')
  rows = bench.dot_rates(batch=4, seq_len=16, head_dim=8, libraries=('ynn', 'eigen'), reps=2)
  assert [r['name'] for r in rows] == list(bench.FORMS)
  for r in rows:
    assert r['gflops']['ynn'] > 0 and r['gflops']['eigen'] > 0
    assert r['cores']['ynn'] > 0 and r['cores']['eigen'] > 0
    assert r['max_abs_diff']['eigen'] < 1e-4  # both libraries compute the same product
  with pytest.raises(ValueError, match='unknown dot library'):
    bench.library_options('mkl')
  ms = bench.core_times(batch=2, seq_len=8, heads=2, head_dim=4, reps=2)
  assert ms['jaxlab'] > 0


def test_bench_lstm_layer_times_both_layouts_of_the_same_recurrence():
  bench = _experiment('bench_lstm_layer')
  ms = bench.loop_times(steps=5, batch=3, hidden=8, reps=2)
  assert all(ms[name] > 0 for name in bench.LOOPS)
  assert ms['max_abs_diff'] < 1e-5  # both layouts chain the same products
  ms = bench.layer_times(steps=4, batch=2, input_dim=3, hidden=5, reps=2)
  assert ms['feature-major'] > 0 and ms['batch-major'] > 0
  ms = bench.layer_times(steps=4, batch=2, input_dim=3, hidden=5, reps=2, cell='gru',
                         dtype='bfloat16')
  assert ms['feature-major'] > 0 and ms['flax scan'] > 0


def test_bench_gru_layer_times_flax_on_the_same_weights():
  """The 'flax scan' row runs nn.RNN(GRUCell) with gru_time_major's weights, unstacked into
  the cell's parameters: the same layer, so the comparison is fair."""
  from models import rnn
  bench = _experiment('bench_lstm_layer')
  params = bench._layer_params(np.random.default_rng(0), 'gru', 3, 5, jnp.float32)
  params = [p * 8 for p in params]  # large enough that every gate matters
  x = jax.random.normal(jax.random.key(0), (6, 2, 3))
  np.testing.assert_allclose(bench._flax_gru(x, *params), rnn.gru_time_major(x, *params),
                             atol=1e-5)


def test_bf16_matmul_peak_on_cpu_times_the_dot_the_models_run():
  """On CPU a 16-bit peak times bf16 x bf16 -> float32, the form the models' dots take there
  (models/linear.py); a bf16 result would be XLA:CPU's float32 dot of converted operands."""
  assert benchmark.matmul_call('bfloat16', n=64)().dtype == jnp.float32
  assert benchmark.matmul_call('float32', n=64)().dtype == jnp.float32
