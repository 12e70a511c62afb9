"""glibc malloc settings for a training process (main.py and the imgclf-jax
command apply them at start, before JAX and TF allocate anything)."""

import ctypes
import ctypes.util
import os


# The models whose training these settings were measured to speed up
# (BENCHMARKS.md). For fast_cifar at batch 1024 they let the heap grow to
# 21 GB by the end of the first epoch (7 GB without them): elsewhere they
# are off unless IMGCLF_JAX_TUNE_MALLOC=1.
MEASURED_MODELS = ('cnn', 'cnn_plain')


def tune_malloc(model: str | None = 'cnn') -> bool:
  """Applies the settings for training `model` (None: not known, as for eval
  without --config); True if glibc accepted all of them.

  By default glibc serves big buffers (up to 32 MiB) with mmap and gives them
  back to the OS when they are freed, and trims its heaps, so every train
  step maps and page-faults its tens of MB of activations again. Where page
  faults are expensive (VMs) that costs a large part of the step. One arena,
  no mmap and no trimming keep that memory mapped between steps: RSS stays
  at its peak instead of shrinking between steps. Applied for
  MEASURED_MODELS; IMGCLF_JAX_TUNE_MALLOC=1 applies them for any model, 0
  for none. A no-op where libc has no mallopt (non-glibc).
  """
  switch = os.environ.get('IMGCLF_JAX_TUNE_MALLOC')
  if switch == '0' or (switch != '1' and model not in MEASURED_MODELS):
    return False
  try:
    mallopt = ctypes.CDLL(ctypes.util.find_library('c')).mallopt
  except (OSError, AttributeError, TypeError):
    return False
  # mallopt parameters of glibc's malloc.h: M_ARENA_MAX, M_MMAP_MAX,
  # M_TRIM_THRESHOLD, M_TOP_PAD.
  settings = ((-8, 1), (-4, 0), (-1, 2**31 - 1), (-2, 64 << 20))
  return all([bool(mallopt(param, value)) for param, value in settings])
