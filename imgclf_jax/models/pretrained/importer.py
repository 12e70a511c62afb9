"""A .safetensors file's tensors by name into our variable tree (name_maps.py
for the names and layouts): every tensor matched by name and shape, the
classifier head left new where only the class count differs, anything else
one UserError line naming the tensor and both shapes. A training state is
made from them in modes/pretrained_init.py."""

import flax

from imgclf_jax.errors import UserError
from imgclf_jax.models.pretrained import name_maps


def shape_text(shape) -> str:
  return str(list(shape))


def fill(target: dict, find, is_new_head, say):
  """Our variables `target` (arrays or shapes, a nested dict), each taken
  from a source of weights: find(path) gives the source's array for our
  variable at `path` in our layout, or None where it has none (then
  `say.missing(path, shape)` is raised); one of the same shape is taken;
  where the shapes differ and is_new_head(path, theirs, ours), ours is kept
  (`say.left_new(path, theirs, ours)` names it); else
  `say.wrong_shape(path, theirs, ours)` is raised. Returns (the variables,
  the number taken from the source, the texts of those left new)."""
  variables, new = {}, []
  for path, value in name_maps.flatten(target).items():
    theirs = find(path)
    if theirs is None:
      raise say.missing(path, tuple(value.shape))
    got, want = tuple(theirs.shape), tuple(value.shape)
    if got == want:
      variables[path] = theirs
    elif is_new_head(path, got, want):
      variables[path] = value
      new.append(say.left_new(path, got, want))
    else:
      raise say.wrong_shape(path, got, want)
  return (flax.traverse_util.unflatten_dict(variables),
          len(variables) - len(new), new)


class _FileMessages:
  """fill's errors and notes for a .safetensors file (its names and PyTorch
  shapes)."""

  def __init__(self, name_map, init_from, model):
    self._map, self._model = name_map, model
    self._flag = f'--config.init_from={init_from}'

  def missing(self, path, ours):
    return UserError(
        f'{self._flag}: {self._model} needs the tensor {self._map.key(path)} '
        f'{shape_text(name_maps.torch_shape(ours))} (our {"/".join(path)}), '
        f'which the file lacks: give a file of {self._model}\'s '
        f'{self._map.source} weights.')

  def wrong_shape(self, path, theirs, ours):
    return UserError(
        f'{self._flag}: the tensor {self._map.key(path)} has shape '
        f'{shape_text(name_maps.torch_shape(theirs))} in the file, but '
        f'{self._model} needs {shape_text(name_maps.torch_shape(ours))} '
        f'there (our {"/".join(path)}): give a file of {self._model}\'s '
        f'{self._map.source} weights.')

  def left_new(self, path, theirs, ours):
    return (f'{"/".join(path)} {shape_text(ours)} (the file\'s '
            f'{self._map.key(path)} {shape_text(name_maps.torch_shape(theirs))}'
            ': another class count)')


def load_tensors(target: dict, tensors: dict, name_map: name_maps.NameMap,
                 init_from: str, model: str):
  """`target` ({'params', 'batch_stats'?}: arrays or shapes) filled from a
  PyTorch state_dict `tensors` (numpy, without BatchNorm counters) through
  `name_map`: (variables, number loaded, the head variables left new)."""
  used = set()

  def find(path):
    key = name_map.key(path)
    if key not in tensors:
      return None
    used.add(key)
    return name_maps.from_torch_layout(tensors[key])

  def is_new_head(path, theirs, ours):  # the class axis is our last
    return name_map.is_head(path) and other_class_count(
        theirs, ours, axis=len(ours) - 1)

  result = fill(target, find, is_new_head,
                _FileMessages(name_map, init_from, model))
  _refuse_unused(tensors, used, f'--config.init_from={init_from}', model)
  return result


def other_class_count(got, want, axis: int) -> bool:
  """Shapes that differ only in their class axis (a head's kernel or bias)."""
  if len(got) != len(want):
    return False
  return all(g == w for i, (g, w) in enumerate(zip(got, want)) if i != axis)


def _refuse_unused(tensors: dict, used: set, flag: str, model: str):
  unused = sorted(set(tensors) - used)
  if unused:
    others = f' (and {len(unused) - 1} more)' if len(unused) > 1 else ''
    raise UserError(
        f'{flag}: the file\'s tensor {unused[0]} '
        f'{shape_text(tensors[unused[0]].shape)}{others} has no place in '
        f'{model}: give a file of {model}\'s weights.')
