"""glibc malloc settings for a training process (main.py and the imgclf-jax
command apply them at start, before JAX and TF allocate anything)."""

import ctypes
import ctypes.util
import os


def tune_malloc() -> bool:
  """Applies the settings; True if glibc accepted all of them.

  By default glibc serves big buffers (up to 32 MiB) with mmap and gives them
  back to the OS when they are freed, and trims its heaps, so every train
  step maps and page-faults its tens of MB of activations again. Where page
  faults are expensive (VMs) that costs a large part of the step. One arena,
  no mmap and no trimming keep that memory mapped between steps: RSS stays
  at its peak instead of shrinking between steps. Off with
  IMGCLF_JAX_TUNE_MALLOC=0; a no-op where libc has no mallopt (non-glibc).
  """
  if os.environ.get('IMGCLF_JAX_TUNE_MALLOC', '1') == '0':
    return False
  try:
    mallopt = ctypes.CDLL(ctypes.util.find_library('c')).mallopt
  except (OSError, AttributeError, TypeError):
    return False
  # mallopt parameters of glibc's malloc.h: M_ARENA_MAX, M_MMAP_MAX,
  # M_TRIM_THRESHOLD, M_TOP_PAD.
  settings = ((-8, 1), (-4, 0), (-1, 2**31 - 1), (-2, 64 << 20))
  return all([bool(mallopt(param, value)) for param, value in settings])
