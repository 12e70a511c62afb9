"""glibc malloc settings for a training process; call before importing JAX.

By default glibc serves big buffers (up to 32 MiB) with mmap and gives them back
to the OS when they are freed, and trims its heaps, so every train step maps and
page-faults its tens of MB of activations again. Where page faults are expensive
(VMs such as the machines this project is measured on) that costs a large part
of the step. One arena, no mmap and no trimming keep that memory mapped between
steps: RSS stays at its peak instead of shrinking between steps.

Off with IMGCLF_JAX_TUNE_MALLOC=0. A no-op where libc has no mallopt (non-glibc).
The measured effect is in BENCHMARKS.md.
"""

import ctypes
import ctypes.util
import os

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def tune_malloc() -> bool:
  """Applies the settings; True if glibc accepted all of them."""
  if os.environ.get('IMGCLF_JAX_TUNE_MALLOC', '1') == '0':
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c'))
    mallopt = libc.mallopt
  except (OSError, AttributeError, TypeError):
    return False
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0),
              (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 64 << 20))
  return all([bool(mallopt(param, value)) for param, value in settings])
