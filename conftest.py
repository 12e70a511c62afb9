"""Test set-up shared by every test (repo root on sys.path, 4 fake devices,
one XLA compilation cache per suite run)."""

import os
import shutil
import tempfile

# Four fake CPU devices, so every test exercises the multi-device (pmap) path.
# Must be set before JAX initialises its backends.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

# JAX's persistent compilation cache, one folder per suite run: a program
# compiled again (a resumed or repeated training run, main.py in a
# subprocess, the other pytest-xdist worker) is read back, not compiled
# again. The first process of the run (pytest, or xdist's controller) makes
# it; the workers and subprocesses inherit it through the environment; the
# first process removes it at the end. A cached program is the same
# compiled code: results do not change.
_CACHE_MADE_HERE = 'JAX_COMPILATION_CACHE_DIR' not in os.environ
if _CACHE_MADE_HERE:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(
      prefix='imgclf_jax_test_xla_cache_')


def pytest_unconfigure(config):
  if _CACHE_MADE_HERE and not hasattr(config, 'workerinput'):
    shutil.rmtree(os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)


def pytest_collection_modifyitems(items):
  """The slow tests first (in their order), then the others: the workers of
  -n 2 start the long runs early and end together on the short tests,
  rather than one waiting for the other's last long test."""
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)
