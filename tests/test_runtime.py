"""train.runtime: the malloc tuning keeps freed memory in the heap."""
import os
import subprocess
import sys

import pytest

# Frees a block bigger than mallopt's largest trim threshold (2 GiB) at the top of the heap
# and prints how far the heap's end moved back. Never touched, so it costs no memory.
_PROBE = '''
import ctypes, ctypes.util, sys
sys.path.insert(0, {root!r})
from train import runtime
assert runtime.tune_malloc()
libc = ctypes.CDLL(ctypes.util.find_library('c'))
libc.sbrk.restype = libc.malloc.restype = ctypes.c_void_p
libc.sbrk.argtypes, libc.malloc.argtypes = [ctypes.c_long], [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
block = libc.malloc(5 << 29)
if not block:
  print('no-brk'); sys.exit()
top = libc.sbrk(0)
libc.free(block)
print(top - libc.sbrk(0))
'''


def test_tune_malloc_never_gives_the_heap_back():
  if not sys.platform.startswith('linux'):
    pytest.skip('mallopt is glibc')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-c', _PROBE.format(root=root)], capture_output=True,
                       text=True, check=True).stdout.split()
  if out[-1] == 'no-brk':
    pytest.skip('the heap could not grow by 2.5 GiB with brk here')
  assert int(out[-1]) == 0  # a 2 GiB threshold (the old setting) gives all 2.5 GiB back
