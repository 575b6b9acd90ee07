"""Knowledge distillation: the loss against a hand computation, its limits, a tiny real run."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.conftest import shared_data
from tests.helpers import load_config
from train import distill, posttrain, tasks, trainer
from train.validate import ConfigError

STUDENT = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]], np.float32)
TEACHER = np.array([[4.0, 0.0, -2.0], [-1.0, 1.0, 2.5]], np.float32)
LABELS = np.array([0, 2], np.int32)


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_loss_equals_the_closed_form_by_hand():
  T, alpha = 3.0, 0.7
  loss, kl, ce = distill.distillation_loss(STUDENT, TEACHER, LABELS, temperature=T, alpha=alpha)
  s, t = STUDENT.astype(np.float64), TEACHER.astype(np.float64)
  pt, ps = _softmax(t / T), _softmax(s / T)
  kl_hand = np.sum(pt * np.log(pt / ps), -1)
  ce_hand = -np.log(_softmax(s)[np.arange(2), LABELS])
  np.testing.assert_allclose(kl, kl_hand, rtol=1e-5)
  np.testing.assert_allclose(ce, ce_hand, rtol=1e-5)
  np.testing.assert_allclose(loss, alpha * T ** 2 * kl_hand + (1 - alpha) * ce_hand, rtol=1e-5)


def test_alpha_zero_is_plain_cross_entropy():
  loss, _, _ = distill.distillation_loss(STUDENT, TEACHER, LABELS, temperature=5.0, alpha=0.0)
  np.testing.assert_allclose(loss, optax.softmax_cross_entropy_with_integer_labels(STUDENT, LABELS),
                             rtol=1e-6)


def test_no_gradient_when_student_equals_teacher_and_alpha_is_one():
  f = lambda s: distill.distillation_loss(s, jnp.asarray(TEACHER), LABELS, temperature=2.0,
                                          alpha=1.0)[0].sum()
  np.testing.assert_allclose(jax.grad(f)(jnp.asarray(TEACHER)), 0.0, atol=1e-6)
  assert np.all(np.asarray(jax.grad(f)(jnp.asarray(STUDENT))) != 0)


def test_task_weights_padding_and_scores_eval_as_classification():
  task = tasks.get('distill', load_config('configs/mnist_distill.py', 'tiny'))
  batch = {'label': LABELS, 'valid': np.array([True, False])}
  loss, sums = task(jnp.asarray(STUDENT), {**batch, 'teacher_logits': TEACHER})
  per_example, _, _ = distill.distillation_loss(STUDENT, TEACHER, LABELS, temperature=4.0, alpha=0.9)
  assert float(loss) == pytest.approx(float(per_example[0]), rel=1e-6)  # the padded row has weight 0
  assert set(sums) == {'loss', 'accuracy', 'kl', 'ce'}
  eval_loss, eval_sums = task(jnp.asarray(STUDENT), batch)  # no teacher logits: classification
  ref_loss, ref_sums = tasks.classification(jnp.asarray(STUDENT), batch)
  assert float(eval_loss) == float(ref_loss) and set(eval_sums) == {'loss', 'accuracy'}


def test_tiny_student_distils_from_a_tiny_teacher(tmp_path):
  data = str(shared_data('mnist'))
  teacher_dir = str(tmp_path / 'teacher')
  trainer.train_and_evaluate(load_config('configs/mnist_cnn.py', 'tiny', **{'data.dir': data}), teacher_dir)
  config = load_config('configs/mnist_distill.py', 'tiny',
                       **{'data.dir': data, 'distill.teacher': teacher_dir})
  assert config.task == 'distill' and config.model.name == 'mlp'
  result = trainer.train_and_evaluate(config, str(tmp_path / 'student'))
  assert result['step'] == config.num_train_steps and np.isfinite(result['eval/loss'])
  assert result['eval/num_examples'] == config.data.eval_limit

  # The logits attached to each training record are the teacher's own on that record.
  from train.data import sources
  splits = distill.attach_teacher(sources.load_splits(config.data), config.distill)
  teacher = posttrain.load_run(teacher_dir, splits.info)
  rec = splits.train[5]
  direct = teacher.model.apply({'params': teacher.params}, rec['inputs'][None], train=False)[0]
  np.testing.assert_allclose(rec['teacher_logits'], direct, rtol=1e-4, atol=1e-5)

  config.distill.teacher = None
  with pytest.raises(ConfigError, match='distill.teacher'):
    trainer.train_and_evaluate(config, str(tmp_path / 'no_teacher'))
