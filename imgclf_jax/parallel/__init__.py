"""Devices and processes: the pmap device axis (device_axis.py, the only place that knows it) and jax.distributed."""
