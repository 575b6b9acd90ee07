"""``python -m train.sample``: text from a trained LM workdir, past the model's context."""
import subprocess
import sys

import jax
import numpy as np

from tests.conftest import shared_data
from tests.helpers import REPO, load_config
from train import sample, trainer


def test_sample_from_workdir_beyond_context(tmp_path):
  config = load_config('configs/shakespeare_gpt.py', 'tiny',
                       **{'data.dir': str(shared_data('tinyshakespeare'))})
  trainer.train_and_evaluate(config, str(tmp_path))
  model, params, encode, decode = sample.load_lm(str(tmp_path))
  prompt = encode('ROMEO:')
  n = 2 * model.max_len + 5  # forces context cropping
  out = sample.sample(model, params, prompt, n, jax.random.key(0), greedy=True)
  assert len(out) == len(prompt) + n
  np.testing.assert_array_equal(out[:len(prompt)], prompt)
  assert decode(out).startswith('ROMEO:')
  again = sample.sample(model, params, prompt, n, jax.random.key(1), greedy=True)
  np.testing.assert_array_equal(out, again)  # greedy ignores the key
  proc = subprocess.run([sys.executable, '-m', 'train.sample', '--workdir', str(tmp_path),
                         '--num_tokens', '20', '--prompt', 'KING'], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith('KING') and len(proc.stdout.rstrip('\n')) >= 20


def test_sample_refuses_a_classifier_workdir(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'train.sample', '--workdir', str(tmp_path)],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and proc.stderr.startswith('error: ')
