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

import jax  # noqa: E402
import pytest  # noqa: E402

# Start JAX's backend now, with the eight devices. A test that edits XLA_FLAGS (to check how
# train/compile_options.py reads it) and then compiles would otherwise start it without the
# flag if it ran first in a pytest-xdist worker, leaving that worker one device, and every
# sharding test it ran later failed with "needs 8 devices, but 1 are available".
jax.devices()

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get('JAXLAB_SHARED_DATA', REPO.parent / 'shared' / 'data'))


def shared_data(name: str) -> pathlib.Path:
  """The folder of a real dataset, or skip the test with the reason."""
  path = SHARED_DATA / name
  if not path.is_dir():
    pytest.skip(f'real dataset folder {path} is absent (set JAXLAB_SHARED_DATA)')
  return path
