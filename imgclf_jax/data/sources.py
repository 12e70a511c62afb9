"""Where images come from: the source that SourceSpec.dataset names, a TFDS
dataset (tfds_source.py) or an image folder (folder_source.py), both giving
what source_base.Source promises. Everything after that (resize, cache,
shuffle, augment, batch) is shared code (input_pipeline.py)."""

import os

from imgclf_jax.data import dataset_name
from imgclf_jax.data import folder_source
from imgclf_jax.data import source_base
from imgclf_jax.data import spec as spec_lib
from imgclf_jax.data import tfds_source


def canonical_dataset(name: str) -> str:
  """A dataset name (config.dataset) with a folder root made absolute
  (cwd-independent)."""
  name = name.strip()
  prefix = folder_source.FOLDER_PREFIX
  if name.startswith(prefix) and len(name) > len(prefix):
    root = os.path.expanduser(name[len(prefix):])
    return prefix + os.path.abspath(root)
  return name


def make_source(spec: spec_lib.SourceSpec,
                class_names=None) -> source_base.Source:
  """The dataset named by spec.dataset, with its splits resolved.

  `class_names` (eval, predict): the checkpoint's classes, which an image
  folder takes instead of reading them from its train split.
  """
  name, prefix = spec.dataset.strip(), folder_source.FOLDER_PREFIX
  if name.startswith(prefix):
    return folder_source.FolderSource(name[len(prefix):], spec, class_names)
  dataset_name.check(name)
  return tfds_source.TfdsSource(name, spec)
