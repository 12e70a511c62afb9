"""Where each variable of our models lies in a PyTorch state_dict, and how
its layout differs.

A variable of ours is named by its collection and module path, e.g.
('params', 'ResNetBlock_0', 'Conv_0', 'kernel'); its tensor in a file by its
PyTorch name, e.g. 'layer1.0.conv1.weight'. A NameMap turns our module paths
into PyTorch module names (one map per network family, below); the leaf
names and layouts are torch.nn's for every source:

  Conv kernel   [kh, kw, in / groups, out]  <-  weight [out, in / groups, kh, kw]
                (depthwise: [kh, kw, 1, c], Flax's feature_group_count=c
                layout  <-  [c, 1, kh, kw])
  Dense kernel  [in, out]                   <-  weight [out, in]
  bias                                      <-  bias
  BatchNorm     params scale, bias          <-  weight, bias
                batch_stats mean, var       <-  running_mean, running_var

PyTorch's BatchNorm counters (`num_batches_tracked`) have no place here. The
BatchNorm epsilon is the model's (efficientnet.py: 1e-3 as the package;
resnet.py: 1e-5 as torchvision and timm).

Sources:
  torchvision / timm  resnet18, resnet50 (models with model_layout='torch'):
      conv1, bn1, layer{1-4}.{block}.conv{1-3} / bn{1-3} /
      downsample.{0,1}, fc. timm's ResNet keeps torchvision's names (timm
      1.0.29's resnet18/resnet50 state_dicts have exactly torchvision
      0.29.1's keys and shapes: tests/test_benchmarks.py), so one map
      serves both.
  efficientnet-lite-pytorch 0.1.0  efficientnet_lite0:
      _conv_stem, _bn0, _blocks.{n}._expand_conv / _bn0 / _depthwise_conv /
      _bn1 / _project_conv / _bn2, _conv_head, _bn1, _fc.
"""

import dataclasses
import re
from typing import Callable

import flax
import numpy as np

TORCH_RESNET = 'torchvision/timm ResNet'
EFFICIENTNET_LITE = 'efficientnet-lite-pytorch'

# PyTorch's BatchNorm step counter: in every state_dict, used by none of us.
IGNORED_SUFFIX = '.num_batches_tracked'

# (collection, our leaf name) -> PyTorch's parameter or buffer name.
_LEAVES = {
    ('params', 'kernel'): 'weight',
    ('params', 'bias'): 'bias',
    ('params', 'scale'): 'weight',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}


# Our axes in PyTorch's order, by rank: a convolution's [kh, kw, in, out]
# (depthwise: in 1) as [out, in, kh, kw], a dense kernel's [in, out] as
# [out, in]; other ranks keep theirs.
_TORCH_AXES = {4: (3, 2, 0, 1), 2: (1, 0)}


def _torch_axes(ndim: int) -> tuple:
  return _TORCH_AXES.get(ndim, tuple(range(ndim)))


def to_torch_layout(array: np.ndarray) -> np.ndarray:
  """One of our arrays in PyTorch's layout (see the module docstring), in
  C order (what safetensors writes is the array's memory)."""
  array = np.asarray(array)
  return np.ascontiguousarray(array.transpose(_torch_axes(array.ndim)))


def from_torch_layout(array: np.ndarray) -> np.ndarray:
  """A PyTorch tensor in our layout (the inverse of to_torch_layout)."""
  array = np.asarray(array)
  return np.ascontiguousarray(
      array.transpose(np.argsort(_torch_axes(array.ndim))))


def torch_shape(shape) -> tuple:
  """The PyTorch shape of one of our arrays of `shape`."""
  shape = tuple(shape)
  return tuple(shape[i] for i in _torch_axes(len(shape)))


@dataclasses.dataclass(frozen=True)
class NameMap:
  """Our module paths -> PyTorch module names, for one network family.

  `module`: (our module path, a tuple of names) -> the PyTorch module name;
  `head`: the module path of the classifier (a Dense layer), which starts
  new when the class count differs.
  """
  source: str
  module: Callable[[tuple], str]
  head: tuple

  def key(self, path: tuple) -> str:
    """The PyTorch name of our variable at `path` (collection, modules...,
    leaf)."""
    collection, *modules, leaf = path
    try:
      name = _LEAVES[collection, leaf]
    except KeyError:
      raise KeyError(f'{"/".join(path)}: no PyTorch counterpart') from None
    return f'{self.module(tuple(modules))}.{name}'

  def is_head(self, path: tuple) -> bool:
    return tuple(path[1:-1]) == self.head


def resnet_map(stage_sizes) -> NameMap:
  """The map of a resnet.py ResNet with `stage_sizes` (model_layout
  'torch') to torchvision's and timm's names."""
  return NameMap(TORCH_RESNET, _resnet_module(stage_sizes), ('Dense_0',))


def _resnet_module(stage_sizes) -> Callable[[tuple], str]:
  """resnet.py's module paths -> torchvision's ResNet names."""
  starts = np.cumsum((0, *stage_sizes))
  inner = {'Conv_0': 'conv1', 'BatchNorm_0': 'bn1', 'Conv_1': 'conv2',
           'BatchNorm_1': 'bn2', 'Conv_2': 'conv3', 'BatchNorm_2': 'bn3',
           'conv_proj': 'downsample.0', 'norm_proj': 'downsample.1'}
  outer = {('conv_init',): 'conv1', ('bn_init',): 'bn1', ('Dense_0',): 'fc'}

  def module(path: tuple) -> str:
    if path in outer:
      return outer[path]
    match = re.fullmatch(r'(?:Bottleneck)?ResNetBlock_(\d+)', path[0])
    if not match or len(path) != 2 or path[1] not in inner:
      raise KeyError(f'{"/".join(path)}: not a module of torchvision\'s ResNet')
    index = int(match.group(1))
    stage = int(np.searchsorted(starts, index, side='right')) - 1
    return f'layer{stage + 1}.{index - starts[stage]}.{inner[path[1]]}'
  return module


def _efficientnet_module(path: tuple) -> str:
  """efficientnet.py's module paths -> efficientnet-lite-pytorch's names."""
  outer = {('stem_conv',): '_conv_stem', ('stem_bn',): '_bn0',
           ('head_conv',): '_conv_head', ('head_bn',): '_bn1',
           ('classifier',): '_fc'}
  inner = {'expand_conv': '_expand_conv', 'expand_bn': '_bn0',
           'depthwise_conv': '_depthwise_conv', 'depthwise_bn': '_bn1',
           'project_conv': '_project_conv', 'project_bn': '_bn2'}
  if path in outer:
    return outer[path]
  match = re.fullmatch(r'blocks_(\d+)', path[0])
  if not match or len(path) != 2 or path[1] not in inner:
    raise KeyError(f'{"/".join(path)}: not a module of efficientnet-lite-'
                   'pytorch\'s EfficientNet')
  return f'_blocks.{match.group(1)}.{inner[path[1]]}'


# Our model name -> its map (the ResNets' with model_layout='torch').
MAPS = {
    'resnet18': resnet_map((2, 2, 2, 2)),
    'resnet50': resnet_map((3, 4, 6, 3)),
    'efficientnet_lite0': NameMap(EFFICIENTNET_LITE, _efficientnet_module,
                                  ('classifier',)),
}


def detect_source(keys) -> str | None:
  """The family of a state_dict from its names (TORCH_RESNET,
  EFFICIENTNET_LITE), or None."""
  keys = set(keys)
  if '_conv_stem.weight' in keys and '_fc.weight' in keys:
    return EFFICIENTNET_LITE
  if {'conv1.weight', 'layer1.0.conv1.weight', 'fc.weight'} <= keys:
    return TORCH_RESNET
  return None


def flatten(variables: dict) -> dict:
  """{'params': ..., 'batch_stats': ...} -> {(collection, ..., leaf): array}."""
  return flax.traverse_util.flatten_dict(variables)


def to_state_dict(variables: dict, name_map: NameMap) -> dict:
  """Our variables as a PyTorch state_dict of numpy arrays (what a file of
  that source holds, without the BatchNorm counters)."""
  tensors = {}
  for path, value in flatten(variables).items():
    key = name_map.key(path)
    if key in tensors:
      raise ValueError(f'two variables map to {key}')
    tensors[key] = to_torch_layout(value)
  return tensors
