"""What --config.init_from names, read as far as a config check needs (the
tensors' names and shapes, a checkpoint's metadata), and then its tensors.

A source is either
  * a .safetensors file, read with the safetensors package's numpy API
    (never by unpickling, no torch): its names tell its family
    (name_maps.detect_source), which tells the models that can take it and
    their layout (name_maps.MAPS, registry.TORCH_LAYOUT); or
  * a checkpoint of this program: a workdir (its latest step) or
    <workdir>/checkpoints/<step>, of the same model.
"""

import dataclasses
import hashlib
import os

import numpy as np

from imgclf_jax.errors import UserError
from imgclf_jax.models.pretrained import name_maps

SAFETENSORS, CHECKPOINT = 'safetensors', 'checkpoint'


@dataclasses.dataclass(frozen=True)
class Source:
  """An init_from source: `path` (absolute), `kind` (SAFETENSORS or
  CHECKPOINT), `family` (a file's name_maps family; a checkpoint's model),
  `model_layout` (the layout its weights need), and for a checkpoint its
  `workdir` and `step` (None: the latest)."""
  path: str
  kind: str
  family: str
  model_layout: str
  workdir: str | None = None
  step: int | None = None

  def models(self) -> list[str]:
    """The config.model values that can take these weights."""
    if self.kind == CHECKPOINT:
      return [self.family]
    return sorted(m for m, nm in name_maps.MAPS.items()
                  if nm.source == self.family)

  def describe(self) -> str:
    if self.kind == CHECKPOINT:
      return f'{self.family} checkpoint'
    return f'{self.family} names'


def _flag(path: str) -> str:
  return f'--config.init_from={path}'


def describe(init_from: str) -> Source:
  """The source `init_from` names; UserError (one line) when it names
  nothing readable."""
  path = os.path.abspath(os.path.expanduser(init_from))
  if not os.path.exists(path):
    raise UserError(f'{_flag(init_from)}: no such file or folder: give a '
                    '.safetensors file or a workdir of this program.')
  if os.path.isdir(path):
    return _checkpoint(init_from, path)
  names = header(path, init_from)
  family = name_maps.detect_source(names)
  if family is None:
    known = ', '.join(f'{nm.source} ({m})' for m, nm in
                      sorted(name_maps.MAPS.items()))
    first = ', '.join(sorted(names)[:3])
    raise UserError(
        f'{_flag(init_from)}: its tensor names ({first}, ...) are not those '
        f'of a known source ({known}): give a state_dict of one of them, '
        'saved under its own names.')
  layout = 'torch' if family == name_maps.TORCH_RESNET else 'flax'
  return Source(path, SAFETENSORS, family, layout)


def header(path: str, init_from: str | None = None) -> dict:
  """A .safetensors file's tensor names and shapes, read from its header;
  UserError when it is not one."""
  import safetensors  # pylint: disable=g-import-not-at-top  (init_from only)
  try:
    with safetensors.safe_open(path, 'numpy') as f:
      return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
  except Exception as e:  # pylint: disable=broad-except  (SafetensorError)
    raise _not_safetensors(init_from or path, e) from None


def _not_safetensors(init_from: str, error: Exception) -> UserError:
  return UserError(
      f'{_flag(init_from)} is not a .safetensors file ({error}): give a '
      '.safetensors file (a PyTorch state_dict saved with '
      'safetensors.torch.save_file) or a workdir of this program; a .pth or '
      '.bin file is a pickle, which this program does not open.')


def _checkpoint(init_from: str, path: str) -> Source:
  """A workdir or <workdir>/checkpoints/<step> as a Source (its metadata
  read: the model and its layout)."""
  # Imported here: Orbax is slow to import and only checkpoints need it.
  from imgclf_jax.checkpoints import checkpoint_store  # pylint: disable=g-import-not-at-top
  parent = os.path.dirname(path)
  if os.path.basename(path).isdigit() and os.path.basename(
      parent) == 'checkpoints':
    workdir, step = os.path.dirname(parent), int(os.path.basename(path))
  elif os.path.isdir(os.path.join(path, 'checkpoints')):
    workdir, step = path, None
  else:
    raise UserError(
        f'{_flag(init_from)} is a folder but not a workdir of this program '
        '(it has no checkpoints/ folder): give a workdir, '
        '<workdir>/checkpoints/<step>, or a .safetensors file.')
  store = checkpoint_store.CheckpointStore(workdir)
  try:
    step, metadata = store.restore_metadata(step)
  except UserError as e:
    raise UserError(f'{_flag(init_from)}: {e}') from None
  finally:
    store.close()
  config = metadata['config']
  return Source(path, CHECKPOINT, config['model'],
                config.get('model_layout', 'flax'), workdir, step)


def check_model(source: Source, model: str, init_from: str):
  """UserError unless `model` can take the weights of `source`."""
  if model not in source.models():
    raise UserError(
        f'{_flag(init_from)} holds weights for '
        f'{" or ".join(source.models())} ({source.describe()}), not for '
        f'--config.model={model}: set --config.model='
        f'{source.models()[0]}, or give weights for {model}.')


def read_tensors(source: Source) -> dict:
  """A .safetensors file's tensors (numpy, floats as float32), without
  PyTorch's BatchNorm counters."""
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  try:
    tensors = safetensors.numpy.load_file(source.path)
  except Exception as e:  # pylint: disable=broad-except  (SafetensorError)
    raise _not_safetensors(source.path, e) from None
  return {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating)
          else v for k, v in tensors.items()
          if not k.endswith(name_maps.IGNORED_SUFFIX)}


def sha256(path: str) -> str:
  """The SHA-256 of a file, in hex."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()
