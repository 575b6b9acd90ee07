"""Test setup: eight fake CPU devices so sharding is exercised on every run.

XLA_FLAGS must be set before JAX is imported anywhere, hence at conftest import.
``SHARED_DATA`` points at the real datasets (default ``../shared/data`` beside the
repository); tests that need them skip with a reason where absent.
"""
import os
import pathlib

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get('JAXLAB_SHARED_DATA', REPO.parent / 'shared' / 'data'))


def shared_data(name: str) -> pathlib.Path:
  """The folder of a real dataset, or skip the test with the reason."""
  path = SHARED_DATA / name
  if not path.is_dir():
    pytest.skip(f'real dataset folder {path} is absent (set JAXLAB_SHARED_DATA)')
  return path
