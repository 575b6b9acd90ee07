"""experiments/colab_tpu.ipynb runs end to end on CPU in its tiny form, so it never rots."""
import os

import pytest

from tests.conftest import shared_data
from tests.helpers import REPO


def test_colab_notebook_runs_tiny(tmp_path, monkeypatch):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  data = shared_data('tinyshakespeare')
  monkeypatch.setenv('JAXLAB_NOTEBOOK_TINY', '1')
  monkeypatch.setenv('JAXLAB_SHAKESPEARE', str(data))
  monkeypatch.setenv('JAXLAB_WORKDIR', str(tmp_path / 'run'))
  monkeypatch.setenv('PYTHONPATH', REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  nb = nbformat.read(os.path.join(REPO, 'experiments', 'colab_tpu.ipynb'), as_version=4)
  nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': REPO}}).execute()
  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
  text = ''.join(o.get('text', '') for o in outputs)
  assert 'devices of kind' in text and 'eval/loss' in text and 'ROMEO:' in text
  assert any('image/png' in o.get('data', {}) for o in outputs)  # the curves were plotted
  assert os.path.exists(tmp_path / 'run' / 'curves.png')
