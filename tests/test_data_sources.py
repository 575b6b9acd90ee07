"""Data loaders: real files (skipped where absent), corrupt files, tiny fixtures and TFDS mock data."""
import gzip
import io
import pickle
import struct

import numpy as np
import pytest

from configs.base import get_base_config
from tests.conftest import shared_data
from train.data import augment, cifar, mnist, splits, tokenize
from train.data.base import ArraySource, DataError
from train.data.sources import LOADERS, load_splits

MNIST_TRAIN_HIST = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
# The issue listed 1028, 1010 for digits 6, 7 (sum 10,052); the MD5-verified originals give 958, 1028.
MNIST_TEST_HIST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def data_cfg(**overrides):
  cfg = get_base_config().data
  for key, value in overrides.items():
    setattr(cfg, key, str(value) if key in ('dir', 'tokenizer_path') else value)
  return cfg


def labels_of(source):
  return np.array([source[i]['label'] for i in range(len(source))])


# --- fixtures in the original formats -----------------------------------------------------------


def write_idx(path, magic, array, compress=True):
  header = struct.pack('>I', magic) + b''.join(struct.pack('>I', d) for d in array.shape)
  data = header + np.asarray(array, np.uint8).tobytes()
  path.write_bytes(gzip.compress(data) if compress else data)


def write_mnist(root, n_train=6, n_test=4):
  rng = np.random.default_rng(0)
  for prefix, n in (('train', n_train), ('t10k', n_test)):
    write_idx(root / f'{prefix}-images-idx3-ubyte.gz', 2051, rng.integers(0, 256, (n, 28, 28)))
    write_idx(root / f'{prefix}-labels-idx1-ubyte.gz', 2049, np.arange(n) % 10)


class Py2Pickler(pickle._Pickler):
  """Writes bytes/str as Python 2 byte strings, as the cPickle that made the CIFAR batches did."""
  dispatch = dict(pickle._Pickler.dispatch)

  def save_py2_str(self, obj):
    data = obj.encode('latin1') if isinstance(obj, str) else obj
    if len(data) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
    else:
      self.write(pickle.BINSTRING + struct.pack('<i', len(data)) + data)
    self.memoize(obj)

  dispatch[str] = save_py2_str
  dispatch[bytes] = save_py2_str


def write_batch(path, batch):
  buf = io.BytesIO()
  Py2Pickler(buf, protocol=2).dump(batch)
  # numpy 2 names its old module path; the real files name numpy.core.
  path.write_bytes(buf.getvalue().replace(b'numpy._core.multiarray\n', b'numpy.core.multiarray\n'))


def cifar_images(n, offset):
  """Images whose red, green, blue planes hold distinct constants per image."""
  planes = np.stack([np.full((n, 1024), offset + c * 50, np.uint8) for c in range(3)], 1)
  planes[:, :, :] += np.arange(n, dtype=np.uint8)[:, None, None]
  return planes.reshape(n, 3072)


def write_cifar10(root):
  for i in range(1, 6):
    write_batch(root / f'data_batch_{i}', {
        b'batch_label': b'training batch %d of 5' % i, b'data': cifar_images(3, 10 * i),
        b'labels': [i, (i + 1) % 10, 0], b'filenames': [b'a.png', b'b.png', b'c.png']})
  write_batch(root / 'test_batch', {b'data': cifar_images(2, 7), b'labels': [9, 3],
                                    b'batch_label': b'testing batch 1 of 1'})
  write_batch(root / 'batches.meta', {b'label_names': [b'airplane', b'automobile', b'bird',
                                                       b'cat', b'deer', b'dog', b'frog', b'horse',
                                                       b'ship', b'truck'], b'num_vis': 3072})


def write_sst2(root, train='good movie\t1\nbad film , awful\t0\ngood good fun\t1\n',
               dev='bad movie\t0\nunseen words\t1\n', header='sentence\tlabel\n'):
  (root / 'train.tsv').write_text(header + train)
  (root / 'dev.tsv').write_text(header + dev)


def write_wordpiece(path):
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

  vocab = {t: i for i, t in enumerate(
      ['[PAD]', '[UNK]', '[CLS]', '[SEP]', 'good', 'bad', 'movie', 'film', 'fun', ',', 'aw', '##ful'])}
  tok = Tokenizer(models.WordPiece(vocab, unk_token='[UNK]'))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.save(str(path))


# --- real datasets (skip where /work/shared/data is absent) -------------------------------------


def test_mnist_real_counts_and_label_histograms():
  s = load_splits(data_cfg(name='mnist', dir=shared_data('mnist')))
  assert (len(s.train), len(s.eval)) == (60000, 10000)
  assert np.bincount(labels_of(s.train), minlength=10).tolist() == MNIST_TRAIN_HIST
  assert np.bincount(labels_of(s.eval), minlength=10).tolist() == MNIST_TEST_HIST
  x = np.stack([s.train[i]['inputs'] for i in range(2000)])
  assert x.shape == (2000, 28, 28, 1) and x.dtype == np.float32
  assert abs(x.mean()) < 0.1 and abs(x.std() - 1) < 0.1  # standardised with MNIST's mean/std
  assert s.train[0]['label'].dtype == np.int32 and s.info.num_classes == 10


def test_mnist_real_holdout_slices():
  cfg = data_cfg(name='mnist', dir=shared_data('mnist'), train_split='train[:90%]',
                 eval_split='train[90%:]')
  s = load_splits(cfg)
  assert (len(s.train), len(s.eval)) == (54000, 6000)
  full = load_splits(data_cfg(name='mnist', dir=shared_data('mnist'), train_split='train[:1000]'))
  assert len(full.train) == 1000
  np.testing.assert_array_equal(s.train[999]['inputs'], full.train[999]['inputs'])


def test_tiny_shakespeare_real():
  root = shared_data('tinyshakespeare')
  s = load_splits(data_cfg(name='tiny_shakespeare', dir=root, eval_split='validation', seq_len=64))
  text = (root / 'input.txt').read_text()
  assert len(set(text)) == 65 and s.info.vocab_size == 65 and len(s.info.extra['vocab']) == 65
  n_train = int(len(text) * 0.9)
  assert len(s.train) == n_train - 64
  assert len(s.eval) == (len(text) - n_train - 1) // 64
  first = s.train[0]
  vocab = s.info.extra['vocab']
  assert ''.join(vocab[i] for i in first['inputs']) == text[:64]
  np.testing.assert_array_equal(first['inputs'][1:], first['targets'][:-1])
  # Eval windows tile the held-out text: each target is scored once.
  assert s.eval[1]['inputs'][0] == s.eval[0]['targets'][-1]
  assert ''.join(vocab[i] for i in s.eval[0]['inputs']) == text[n_train:n_train + 64]
  byte = load_splits(data_cfg(name='tiny_shakespeare', dir=root, tokenizer='byte', seq_len=8))
  assert byte.info.vocab_size == 256 and bytes(byte.train[0]['inputs'].tolist()) == text[:8].encode()


def test_sst2_real_counts_and_word_vocab():
  root = shared_data('sst2')
  s = load_splits(data_cfg(name='sst2', dir=root, eval_split='dev', tokenizer='word',
                           vocab_size=5000, seq_len=32))
  assert (len(s.train), len(s.eval)) == (67349, 872)
  assert s.info.vocab_size == 5002 and s.info.extra['vocab'][:2] == ['<pad>', '<unk>']
  r = s.train[0]
  assert r['inputs'].shape == (32,) and r['inputs'].dtype == np.int32
  assert r['mask'].dtype == bool and r['label'].dtype == np.int32
  np.testing.assert_array_equal(r['mask'], r['inputs'] != 0)
  assert set(np.unique(labels_of(s.eval))) == {0, 1}
  alias = load_splits(data_cfg(name='glue/sst2', dir=root, eval_split='validation', tokenizer='byte'))
  assert len(alias.eval) == 872


def test_listops_real_split():
  root = shared_data('listops')
  cfg = dict(name='listops', dir=root, seq_len=256)
  s = load_splits(data_cfg(**cfg, eval_split='validation'))
  test = load_splits(data_cfg(**cfg, eval_split='test')).eval
  assert (len(s.train), len(s.eval), len(test)) == (8000, 1000, 1000)
  assert s.info.num_classes == 10 and s.info.vocab_size == 19
  lines = (root / 'test_d20s.tsv').read_text().splitlines()
  assert int(lines[8000].split('\t')[0]) == s.eval[0]['label']
  assert int(lines[-1].split('\t')[0]) == test[999]['label']
  expected = tokenize.Vocab(s.info.extra['vocab'], 'space').encode(lines[0].split('\t')[1])
  np.testing.assert_array_equal(s.train[0]['inputs'][:len(expected)], expected)


# --- corrupt files: one-line DataError naming the file ------------------------------------------


def _corrupt_mnist(root, how):
  write_mnist(root)
  path = root / 'train-images-idx3-ubyte.gz'
  if how == 'magic':
    write_idx(path, 2049, np.zeros((6, 28, 28)))
  elif how == 'truncated':
    path.write_bytes(path.read_bytes()[:100])
  elif how == 'size':
    write_idx(path, 2051, np.zeros((5, 28, 28)))  # header says 5 images; labels say 6
  elif how == 'short':
    path.write_bytes(gzip.compress(struct.pack('>IIII', 2051, 6, 28, 28) + b'\0' * 100))
  elif how == 'missing':
    path.unlink()
  return path, data_cfg(name='mnist', dir=root)


@pytest.mark.parametrize('how', ['magic', 'truncated', 'size', 'short', 'missing'])
def test_mnist_bad_files(tmp_path, how):
  path, cfg = _corrupt_mnist(tmp_path, how)
  with pytest.raises(DataError) as e:
    load_splits(cfg)
  message = str(e.value)
  assert '\n' not in message and (path.name in message or 'labels' in message)


@pytest.mark.parametrize('how', ['column', 'label', 'text_label', 'ragged'])
def test_sst2_bad_files(tmp_path, how):
  if how == 'column':
    write_sst2(tmp_path, header='text\tlabel\n')
  elif how == 'label':
    write_sst2(tmp_path, train='good\t1\nbad\t2\n')
  elif how == 'text_label':
    write_sst2(tmp_path, train='good\tpositive\n')
  else:
    write_sst2(tmp_path, train='good\t1\tx\n')
  with pytest.raises(DataError, match='train.tsv'):
    load_splits(data_cfg(name='sst2', dir=tmp_path, eval_split='dev', tokenizer='word'))


@pytest.mark.parametrize('content', ['', '   \n'])
def test_empty_text(tmp_path, content):
  (tmp_path / 'input.txt').write_text(content)
  with pytest.raises(DataError, match=r'input\.txt.*empty'):
    load_splits(data_cfg(name='tiny_shakespeare', dir=tmp_path))


@pytest.mark.parametrize('line', ['12\t( [MAX 1 2 ] )', '3\t( [MAX 1 2 ] ) [FOO', '3'])
def test_listops_bad_rows(tmp_path, line):
  (tmp_path / 'test_d20s.tsv').write_text('1\t( [MIN 1 2 ] )\n' * 9 + line + '\n')
  with pytest.raises(DataError, match='test_d20s.tsv'):
    load_splits(data_cfg(name='listops', dir=tmp_path, eval_split='test'))


def test_cifar_pickle_cannot_run_code(tmp_path):
  marker = tmp_path / 'ran'

  class Evil:
    def __reduce__(self):
      import os
      return (os.system, (f'touch {marker}',))

  write_cifar10(tmp_path)
  (tmp_path / 'test_batch').write_bytes(pickle.dumps({b'data': Evil()}, protocol=2))
  with pytest.raises(DataError, match='test_batch.*refusing'):
    load_splits(data_cfg(name='cifar10', dir=tmp_path))
  assert not marker.exists()


def test_cifar_bad_data(tmp_path):
  write_cifar10(tmp_path)
  write_batch(tmp_path / 'test_batch', {b'data': np.zeros((2, 100), np.uint8), b'labels': [0, 1]})
  with pytest.raises(DataError, match='test_batch'):
    load_splits(data_cfg(name='cifar10', dir=tmp_path))


# --- tiny fixtures in the real formats -----------------------------------------------------------


def test_mnist_fixture_plain_and_gz(tmp_path):
  write_mnist(tmp_path)
  write_idx(tmp_path / 't10k-labels-idx1-ubyte', 2049, np.arange(4), compress=False)
  (tmp_path / 't10k-labels-idx1-ubyte.gz').unlink()
  s = load_splits(data_cfg(name='fashion_mnist', dir=tmp_path))
  assert (len(s.train), len(s.eval)) == (6, 4)
  assert s.info.extra['mean'] == (0.2860,)
  assert labels_of(s.eval).tolist() == [0, 1, 2, 3]


def test_cifar10_fixture(tmp_path):
  write_cifar10(tmp_path)
  s = load_splits(data_cfg(name='cifar10', dir=tmp_path))
  assert (len(s.train), len(s.eval)) == (15, 2)
  assert labels_of(s.train)[:3].tolist() == [1, 2, 0] and labels_of(s.eval).tolist() == [9, 3]
  assert s.info.extra['label_names'][0] == 'airplane' and s.info.input_shape == (32, 32, 3)
  x = s.train[1]['inputs']  # batch 1, image 1: planes 11, 61, 111 (R, G, B)
  mean, std = np.array(s.info.extra['mean']), np.array(s.info.extra['std'])
  np.testing.assert_allclose(x * std + mean, np.broadcast_to(np.array([11, 61, 111]) / 255, x.shape),
                             atol=1e-5)


def test_cifar100_fixture_in_archive_folder(tmp_path):
  folder = tmp_path / 'cifar-100-python'
  folder.mkdir()
  for split, n in (('train', 4), ('test', 2)):
    write_batch(folder / split, {b'data': cifar_images(n, 0), b'fine_labels': [99] * n,
                                 b'coarse_labels': [19] * n})
  s = load_splits(data_cfg(name='cifar100', dir=tmp_path))
  assert (len(s.train), len(s.eval), s.info.num_classes) == (4, 2, 100)
  assert s.train[0]['label'] == 99


def test_sst2_word_vocab_from_train_only(tmp_path):
  write_sst2(tmp_path)
  s = load_splits(data_cfg(name='sst2', dir=tmp_path, eval_split='dev', tokenizer='word', seq_len=4))
  vocab = s.info.extra['vocab']
  assert vocab[:3] == ['<pad>', '<unk>', 'good'] and 'unseen' not in vocab
  assert s.eval[1]['inputs'].tolist() == [1, 1, 0, 0] and s.eval[1]['mask'].tolist() == [1, 1, 0, 0]
  # The held-out part of train is not in the vocabulary either.
  held = load_splits(data_cfg(name='sst2', dir=tmp_path, train_split='train[:1]',
                              eval_split='train[1:]', tokenizer='word'))
  assert held.info.extra['vocab'] == ['<pad>', '<unk>', 'good', 'movie']


def test_sst2_wordpiece(tmp_path):
  write_sst2(tmp_path)
  write_wordpiece(tmp_path / 'tokenizer.json')
  s = load_splits(data_cfg(name='sst2', dir=tmp_path, eval_split='dev', tokenizer='wordpiece',
                           tokenizer_path=tmp_path, seq_len=5))
  assert s.info.vocab_size == 12 and s.info.pad_id == 0
  # [CLS] bad film , aw ##ful [SEP] truncated to 5 keeps [SEP] last.
  assert s.train[1]['inputs'].tolist() == [2, 5, 7, 9, 3]
  assert s.eval[0]['inputs'].tolist() == [2, 5, 6, 3, 0]
  assert s.eval[0]['mask'].tolist() == [1, 1, 1, 1, 0]
  pickle.loads(pickle.dumps(tokenize.WordPieceEncoder(str(tmp_path / 'tokenizer.json'))))


def test_listops_lra_layout(tmp_path):
  rows = ''.join(f'[MAX {i % 10} 3 ]\t{max(i % 10, 3)}\n' for i in range(20))
  (tmp_path / 'listops.tsv').write_text('Source\tTarget\n' + rows)
  s = load_splits(data_cfg(name='listops', dir=tmp_path / 'listops.tsv', eval_split='dev', seq_len=6))
  assert (len(s.train), len(s.eval)) == (16, 2)
  assert s.eval[0]['label'] == 6 and s.eval[0]['inputs'].tolist() == [3, 15, 12, 6, 0, 0]


# --- splits, views, augmentation, offline sets ---------------------------------------------------


def test_split_strings():
  source = ArraySource({'x': np.arange(10)})
  names = {'train': 0, 'dev': 0}
  resolve = {'train': source, 'dev': ArraySource({'x': np.arange(100, 103)})}.get

  def pick(spec):
    source = splits.select(spec, names, resolve)
    return [int(source[i]['x']) for i in range(len(source))]

  assert pick('train[:90%]') == list(range(9)) and pick('train[90%:]') == [9]
  assert pick('train[-2:]') == [8, 9] and pick('train[:3]+dev') == [0, 1, 2, 100, 101, 102]
  with pytest.raises(ValueError, match='Unknown split'):
    splits.select('test', names, resolve)


def test_limits():
  s = load_splits(data_cfg(name='two_moons', train_limit=10, eval_limit=3))
  assert (len(s.train), len(s.eval)) == (10, 3)


def test_cifar_augmentation():
  image = np.arange(32 * 32 * 3, dtype=np.float32).reshape(32, 32, 3)
  record = {'inputs': image, 'label': np.int32(3)}
  fn = augment.AUGMENTATIONS['cifar']
  outs = [fn(record, np.random.default_rng(seed)) for seed in range(20)]
  assert all(o['inputs'].shape == image.shape and o['label'] == 3 for o in outs)
  assert sum(not np.array_equal(o['inputs'], image) for o in outs) > 10
  np.testing.assert_array_equal(fn(record, np.random.default_rng(5))['inputs'], outs[5]['inputs'])
  assert augment.get('none') is None
  # Every augmented row is a (possibly flipped, zero-padded) shift of the original.
  out = outs[0]['inputs']
  nonzero = out[out != 0]
  assert np.isin(nonzero, image).all()


def test_synthetic_sets():
  moons = load_splits(data_cfg(name='two_moons'))
  assert (len(moons.train), len(moons.eval)) == (2000, 500)
  assert moons.train[0]['inputs'].shape == (2,) and set(labels_of(moons.eval)) == {0, 1}
  again = load_splits(data_cfg(name='two_moons'))
  np.testing.assert_array_equal(moons.train[7]['inputs'], again.train[7]['inputs'])
  lm = load_splits(data_cfg(name='synthetic_lm', seq_len=12))
  r = lm.train[0]
  assert r['inputs'].shape == (12,) and lm.info.vocab_size == 32
  np.testing.assert_array_equal(r['inputs'][1:], r['targets'][:-1])
  cls = load_splits(data_cfg(name='synthetic_classification', eval_split='validation'))
  assert cls.info.num_classes == 4 and len(cls.eval) == 500


def test_sources_pickle(tmp_path):
  """grain ships sources to worker processes."""
  write_mnist(tmp_path)
  s = load_splits(data_cfg(name='mnist', dir=tmp_path, train_split='train[:50%]+test'))
  copy = pickle.loads(pickle.dumps(s.train))
  np.testing.assert_array_equal(copy[4]['inputs'], s.train[4]['inputs'])


def test_unknown_names():
  with pytest.raises(ValueError, match='not one of'):
    load_splits(data_cfg(name='no_such_dataset_anywhere'))
  with pytest.raises(ValueError, match='data.dir'):
    load_splits(data_cfg(name='listops'))


# --- TFDS through tfds.testing.mock_data (no TensorFlow needed for data_source) -----------------


@pytest.fixture
def tfds_mock():
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=12):
    yield


@pytest.mark.parametrize('name,shape,classes', [('mnist', (28, 28, 1), 10),
                                                ('fashion_mnist', (28, 28, 1), 10),
                                                ('cifar10', (32, 32, 3), 10),
                                                ('cifar100', (32, 32, 3), 100)])
def test_tfds_images(tfds_mock, name, shape, classes):
  s = load_splits(data_cfg(name=name, train_split='train[:75%]', eval_split='test'))
  assert (len(s.train), len(s.eval)) == (9, 12)
  r = s.train[0]
  assert r['inputs'].shape == shape and r['inputs'].dtype == np.float32
  assert r['label'].dtype == np.int32 and 0 <= r['label'] < classes
  assert s.info.num_classes == classes and s.info.input_shape == shape


@pytest.mark.parametrize('name,tokenizer', [('imdb_reviews', 'word'), ('sst2', 'char'),
                                            ('glue/sst2', 'byte')])
def test_tfds_text_classification(tfds_mock, name, tokenizer):
  s = load_splits(data_cfg(name=name, eval_split='dev' if 'sst2' in name else 'test',
                           tokenizer=tokenizer, seq_len=16))
  r = s.eval[3]
  assert r['inputs'].shape == (16,) and r['mask'].dtype == bool and s.info.num_classes == 2
  assert s.info.extra['tokenizer'] == tokenizer


def test_tfds_language_modelling(tfds_mock):
  corpus = load_splits(data_cfg(name='tiny_shakespeare', eval_split='validation', seq_len=8))
  r = corpus.train[5]
  np.testing.assert_array_equal(r['inputs'][1:], r['targets'][:-1])
  assert corpus.info.vocab_size == len(corpus.info.extra['vocab'])
  sentences = load_splits(data_cfg(name='lm1b', tokenizer='byte', seq_len=16))
  r = sentences.train[0]
  assert r['weights'].dtype == np.float32 and r['targets'].shape == (16,)
  assert sentences.info.vocab_size == 256


def test_loaders_registered():
  for name in ['digits', 'two_moons', 'synthetic_lm', 'synthetic_classification', 'mnist',
               'fashion_mnist', 'cifar10', 'cifar100', 'tiny_shakespeare', 'sst2', 'glue/sst2',
               'listops', 'imdb_reviews', 'lm1b']:
    assert name in LOADERS
  assert mnist.IMAGES_MAGIC == 2051 and cifar.LAYOUT['cifar10'][3] == 10


def test_digits_split_file_is_sklearns_stratified_split():
  """digits.py reads the CSV and a stored split instead of importing sklearn (5 s of start-up);
  both must still be exactly what load_digits and train_test_split give."""
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split
  from train.data import digits
  ref = load_digits()
  images, labels = digits.load_arrays()
  np.testing.assert_array_equal(images, ref.images)
  np.testing.assert_array_equal(labels, ref.target)
  train, test = train_test_split(np.arange(len(labels)), test_size=0.2,
                                 random_state=0, stratify=labels)
  order = np.load(digits.SPLIT_FILE)
  np.testing.assert_array_equal(order['train'], train)
  np.testing.assert_array_equal(order['test'], test)
