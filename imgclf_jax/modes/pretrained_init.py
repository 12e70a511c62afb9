"""A new training state from --config.init_from's weights:

    state, record = pretrained_init.initialize(state, config.init_from,
                                               config.model, num_classes)

Every variable of the model (its params and BatchNorm statistics) is taken
from the source by name (name_maps.py for a .safetensors file; the same path
for a checkpoint of this program) and must have the model's shape there,
except the classifier head, which keeps its new random initialisation when
the class count differs; every tensor of the source must have a place in the
model. Anything else is one UserError line naming the tensor and both
shapes. One log line says how many tensors were loaded and which were left
new; `record` ({path, sha256, source, tensors_loaded, left_new}) goes into
the checkpoints' metadata. Training calls this for a new run only: a resumed
run restores its checkpoint and never reads init_from again
(modes/train.py hands `initialize` to training as a callable, since a
checkpoint source is read with this package's checkpoint loader).
"""


from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from imgclf_jax.errors import UserError
from imgclf_jax.models.pretrained import importer
from imgclf_jax.models.pretrained import name_maps
from imgclf_jax.models.pretrained import source as source_lib
from imgclf_jax.modes import checkpoint_loader
from imgclf_jax.training import steps
from imgclf_jax.training import train_state as train_state_lib


def initialize(state, init_from: str, model: str, num_classes: int):
  """(`state` with the weights of `init_from`, the metadata record)."""
  src = source_lib.describe(init_from)
  source_lib.check_model(src, model, init_from)
  target = {'params': state.params}
  if state.batch_stats is not None:
    target['batch_stats'] = state.batch_stats
  if src.kind == source_lib.SAFETENSORS:
    name_map = name_maps.MAPS[model]
    variables, loaded, new = importer.load_tensors(
        target, source_lib.read_tensors(src), name_map, init_from, model)
    checksum, what = source_lib.sha256(src.path), src.describe()
  else:
    variables, loaded, new, checksum, step = _from_checkpoint(
        target, src, init_from, model, num_classes)
    what = f'{src.describe()} step {step}'
  new = sorted(new)
  variables = jax.tree.map(jnp.asarray, variables)
  state = train_state_lib.with_params(state, variables['params'],
                                      variables.get('batch_stats'))
  logging.info('Initialised %s from %s (%s, sha256 %s): %d tensors loaded; '
               'left new: %s.', model, src.path, what, checksum, loaded,
               ', '.join(new) if new else 'none')
  record = {'path': src.path, 'sha256': checksum, 'source': what,
            'tensors_loaded': loaded, 'left_new': new}
  return state, record


class _CheckpointMessages:
  """importer.fill's errors and notes for a checkpoint of this program."""

  def __init__(self, loaded, init_from, model):
    self._loaded, self._model = loaded, model
    self._flag = f'--config.init_from={init_from}'
    self._at = f'checkpoint {loaded.step} in {loaded.directory}'

  def missing(self, path, ours):
    return UserError(
        f'{self._flag}: {self._model} needs {"/".join(path)} '
        f'{importer.shape_text(ours)}, which {self._at} lacks.')

  def wrong_shape(self, path, theirs, ours):
    return UserError(
        f'{self._flag}: {"/".join(path)} has shape '
        f'{importer.shape_text(theirs)} in {self._at}, but {self._model} '
        f'needs {importer.shape_text(ours)} there: start from a checkpoint '
        'of the same model, image size and channels.')

  def left_new(self, path, theirs, ours):
    return (f'{"/".join(path)} {importer.shape_text(ours)} (the '
            f'checkpoint\'s {importer.shape_text(theirs)}: '
            f'{len(self._loaded.class_names)} classes)')


def _from_checkpoint(target: dict, src, init_from: str, model: str,
                     num_classes: int):
  """`target` filled from a checkpoint of this program (the variables eval
  uses: the EMA where it kept one): (variables, number loaded, the head
  variables left new, its state's checksum, its step)."""
  try:
    loaded = checkpoint_loader.load(src.workdir, src.step, None, mode='eval')
  except UserError as e:
    raise UserError(f'--config.init_from={init_from}: {e}') from None
  theirs = name_maps.flatten(jax.device_get(
      steps.inference_variables(loaded.state)))
  their_classes = len(loaded.class_names)

  def find(path):
    return np.asarray(theirs[path]) if path in theirs else None

  def is_new_head(path, got, want):  # the class axis is the last
    del path
    return (their_classes != num_classes and got and want and
            got[-1] == their_classes and want[-1] == num_classes and
            importer.other_class_count(got, want, axis=len(got) - 1))

  variables, count, new = importer.fill(
      target, find, is_new_head, _CheckpointMessages(loaded, init_from, model))
  unused = sorted(set(theirs) - set(name_maps.flatten(target)))
  if unused:
    raise UserError(
        f'--config.init_from={init_from}: {"/".join(unused[0])} of checkpoint '
        f'{loaded.step} has no place in {model}.')
  return (variables, count, new, loaded.metadata['state_sha256'], loaded.step)
