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


def load_tensors(target: dict, tensors: dict, name_map: name_maps.NameMap,
                 init_from: str, model: str):
  """`target` ({'params', 'batch_stats'?}: arrays or shapes) filled from a
  PyTorch state_dict `tensors` (numpy, without BatchNorm counters) through
  `name_map`: (variables, number loaded, the head variables left new)."""
  flag = f'--config.init_from={init_from}'
  variables, new, used = {}, [], set()
  for path, value in name_maps.flatten(target).items():
    key = name_map.key(path)
    want = name_maps.torch_shape(value.shape)
    where = '/'.join(path)
    if key not in tensors:
      raise UserError(
          f'{flag}: {model} needs the tensor {key} {shape_text(want)} (our '
          f'{where}), which the file lacks: give a file of {model}\'s '
          f'{name_map.source} weights.')
    used.add(key)
    got = tuple(tensors[key].shape)
    if got == want:
      variables[path] = name_maps.from_torch_layout(tensors[key])
    elif name_map.is_head(path) and other_class_count(got, want, axis=0):
      variables[path] = value
      new.append(f'{where} {shape_text(value.shape)} (the file\'s {key} '
                 f'{shape_text(got)}: another class count)')
    else:
      raise UserError(
          f'{flag}: the tensor {key} has shape {shape_text(got)} in the file, '
          f'but {model} needs {shape_text(want)} there (our {where}): give a '
          f'file of {model}\'s {name_map.source} weights.')
  _refuse_unused(tensors, used, flag, model)
  return flax.traverse_util.unflatten_dict(variables), len(used) - len(
      new), new


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
