"""config.dataset checked by name and path alone, before TensorFlow and JAX
load (command_line.py: a wrong folder is one line within a second), and
again by sources.make_source (the same words)."""

import os
import pathlib

from imgclf_jax.errors import UserError

FOLDER_PREFIX = 'folder:'


def check_folder(root: str):
  """Raises UserError unless `root` (absolute) is a folder."""
  if not os.path.isdir(root):
    raise UserError(f'--config.dataset=folder:{root}: no such folder. Point '
                    'it at a folder laid out root/<class>/<image> or '
                    'root/<split>/<class>/<image>.')


def check(name: str):
  """Raises UserError for a config.dataset that names a folder that is not
  there (folder:PATH), or a path without 'folder:'; TFDS names pass."""
  name = name.strip()
  if name.startswith(FOLDER_PREFIX):
    check_folder(os.path.abspath(os.path.expanduser(
        name[len(FOLDER_PREFIX):])))
  elif os.path.sep in name or pathlib.Path(name).exists():
    raise UserError(f'--config.dataset={name!r} looks like a path: write '
                    f'--config.dataset=folder:{name} for an image folder.')
