"""Test set-up shared by every test (repo root on sys.path, 4 fake devices)."""

import os

# Four fake CPU devices, so every test exercises the multi-device (pmap) path.
# Must be set before JAX initialises its backends.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
