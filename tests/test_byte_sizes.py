"""byte_sizes.py: byte counts as text in decimal units (the cache decision's
and a full disk's messages)."""

from imgclf_jax import byte_sizes


def test_sizes_in_decimal_units_with_three_digits():
  assert [byte_sizes.bytes_text(n) for n in (
      0, 999, 15_360, 999_999, 1536 * 1024, 5 * 2**30, 8e9,
      3000 * 2**40)] == [
          '0 bytes', '999 bytes', '15.4 kB', '1 MB', '1.57 MB', '5.37 GB',
          '8 GB', '3.3 PB']
