"""Byte counts as text, in decimal units (1 kB = 1000 bytes, 1 GB = 1e9, as
config.cache_budget_gb counts): one format for every message that states a
size (the cache decision, a full disk). Imports nothing of the package."""

_UNITS = ('kB', 'MB', 'GB', 'TB', 'PB')


def bytes_text(num_bytes: float) -> str:
  """Three significant digits: 999 -> '999 bytes', 15_360 -> '15.4 kB',
  1_572_864 -> '1.57 MB', 8e9 -> '8 GB'."""
  if num_bytes < 1000:
    return f'{num_bytes:g} bytes'
  value = float(num_bytes)
  for unit in _UNITS:
    value /= 1000
    if float(f'{value:.3g}') < 1000 or unit == _UNITS[-1]:
      return f'{value:.3g} {unit}'
