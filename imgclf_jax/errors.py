"""The one exception type for mistakes a user can fix.

`main.py` prints a `UserError` as a single line (what, where, how to fix) and
exits non-zero; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
  """Bad input: a config value, a dataset, an image file, a workdir.

  A training run that ends in one before its first checkpoint leaves its
  workdir as it found it (workdir_lock.py), unless `leaves_files`: then what
  it wrote stays (it shows what happened) and the message names it.
  """
  leaves_files = False
