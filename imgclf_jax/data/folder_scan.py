"""What an image folder's scan reads: its class folders (links followed,
unless they would read images twice or under two labels) and their image
files, recursively, without hidden files, linked folders and files without
an image extension (counted and logged)."""

import os
import pathlib

from absl import logging

from imgclf_jax.errors import UserError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')


def is_dir(entry) -> bool:
  """A directory entry is a folder or a link to one (False for a link that
  cannot be followed)."""
  try:
    return entry.is_dir()
  except OSError:
    return False


def _follow(entry) -> bool:
  """Whether `entry` (a file or folder, or a link to one) is a folder;
  a symbolic link that is broken or loops is refused by name."""
  try:
    is_dir = entry.is_dir()
    if entry.is_symlink() and not is_dir:
      os.stat(entry.path)  # a broken link raises
    return is_dir
  except OSError as e:
    raise UserError(
        f'{entry.path} is a symbolic link that cannot be followed '
        f'({e.strerror}): remove it or point it at an existing image or '
        'folder.') from None


def _sorted_entries(folder, skipped):
  """The entries of `folder` by name, without hidden ones (names starting
  with '.', e.g. AppleDouble ._0000.jpg files), which are counted in
  `skipped`."""
  with os.scandir(folder) as it:
    entries = sorted(it, key=lambda e: e.name)
  for e in entries:
    if e.name.startswith('.'):
      skipped.setdefault('hidden', []).append(e.path)
  return [e for e in entries if not e.name.startswith('.')]


def class_folders(split_dir, skipped):
  """The class folders of `split_dir` as sorted (name, path): links to
  folders are followed, unless they lead to the split folder itself or one
  of its parents, or to the same images as another class (their images would
  be read again under another label)."""
  folders = []
  for e in _sorted_entries(split_dir, skipped):
    if _follow(e):
      folders.append((e.name, e.path))
    else:
      skipped.setdefault('other', []).append(e.path)
  split_real = os.path.realpath(split_dir)
  seen = {}  # real path -> class folder
  for name, path in folders:
    target = os.path.realpath(path)
    if split_real == target or split_real.startswith(target + os.sep):
      raise UserError(
          f'class folder {path} is a link to {target}, the split folder '
          f'{split_dir} or a folder above it: every image would be read again '
          f'as class {name!r}. Remove the link.')
    if target in seen:
      raise UserError(
          f'class folders {seen[target]} and {path} are the same folder '
          f'({target}): its images would be read under two labels. Remove '
          'one of them (or the link).')
    seen[target] = path
  for target, path in seen.items():
    for parent in map(str, pathlib.Path(target).parents):
      if parent in seen:
        raise UserError(
            f'class folder {path} ({target}) lies inside class folder '
            f'{seen[parent]}: its images would be read under two labels. '
            'Remove one of them (or the link).')
  return folders


def images_under(folder, skipped) -> list:
  """The image files under a class folder, in os.walk's order (a folder's
  files by name, then its subfolders', by name). Class folders are read
  recursively; hidden files and folders, links to folders and files without
  an image extension are left out and counted in `skipped`."""
  found, stack = [], [folder]
  while stack:
    subfolders = []
    for e in _sorted_entries(stack.pop(), skipped):
      if _follow(e):
        if e.is_symlink():
          skipped.setdefault('linked folders', []).append(e.path)
        else:
          subfolders.append(e.path)
      elif e.name.lower().endswith(IMAGE_EXTENSIONS):
        found.append(e.path)
      else:
        skipped.setdefault('other', []).append(e.path)
    stack += reversed(subfolders)
  return found


_SKIPPED = {'hidden': "hidden file(s) or folder(s) (names starting with '.')",
            'linked folders': 'symbolic link(s) to folders inside class '
                              'folders (not followed)',
            'other': 'file(s) without an image extension'}


def log_skipped(split_dir, skipped):
  if skipped:
    logging.warning('Image folder %s: skipped %s.', split_dir, '; '.join(
        f'{len(paths)} {_SKIPPED[kind]}, e.g. {paths[0]}'
        for kind, paths in skipped.items()))

