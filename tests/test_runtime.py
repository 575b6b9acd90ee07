"""train.runtime: the malloc tuning keeps freed memory in the heap; the unrolled CPU Threefry
gives the same bits without the loop."""
import json
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


# Draws through jax.random before and after runtime.unroll_cpu_threefry in one process (the
# lowering is process-wide, hence the subprocess) and prints them with each compiled hash.
_THREEFRY = """
import json, sys
sys.path.insert(0, {root!r})
import jax, jax.numpy as jnp, numpy as np
from jax.extend.random import threefry_2x32
from train import runtime

KAT = [([0, 0], [0, 0]), ([0xffffffff] * 2, [0xffffffff] * 2),
       ([0x13198a2e, 0x03707344], [0x243f6a88, 0x85a308d3])]

def draws():
  key = jax.random.key(7)
  fns = [lambda k: jax.random.bits(k, (5, 33), jnp.uint32),
         lambda k: jax.random.bernoulli(jax.random.fold_in(k, 3), 0.9, (4, 7, 9)),
         lambda k: jax.random.normal(jax.random.split(k)[1], (17,)),
         lambda k: jax.random.bits(k, (6,), jnp.uint16)]
  values = [np.asarray(jax.jit(f)(key)).astype(np.float64).ravel().tolist() for f in fns]
  kat = [[int(x) for x in threefry_2x32(np.uint32(k), np.uint32(c))] for k, c in KAT]
  return dict(values=values, kat=kat, hlo=jax.jit(fns[0]).lower(key).compile().as_text())

before = draws()
unrolled = runtime.unroll_cpu_threefry()
jax.clear_caches()  # jax.random's inner jits keep their lowering otherwise
print(json.dumps(dict(before=before, after=draws(), unrolled=unrolled)))
"""


def test_unrolled_cpu_threefry_gives_the_same_bits_without_the_loop():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = json.loads(subprocess.run(
      [sys.executable, '-c', _THREEFRY.format(root=root)], capture_output=True, text=True,
      check=True, env={**os.environ, 'JAX_PLATFORMS': 'cpu'}).stdout.splitlines()[-1])
  assert out['unrolled'], 'this jax keeps its Threefry lowering elsewhere: update the runtime'
  before, after = out['before'], out['after']
  assert after['values'] == before['values']
  # The known-answer vectors of Random123, Threefry-2x32 with 20 rounds (Salmon et al. 2011).
  expected = [[0x6b200159, 0x99ba4efe], [0x1cb996fc, 0xbb002be7], [0xc4923a9c, 0x483df7a0]]
  assert before['kat'] == after['kat'] == expected
  assert ' while(' in before['hlo'] and ' while(' not in after['hlo']
