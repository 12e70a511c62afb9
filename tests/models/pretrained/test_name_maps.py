"""name_maps.py: for every source, our tree -> the source's names and
layouts -> our tree is the identity; the names and shapes are the source's
(the shared EfficientNet-Lite0 file's header; torchvision's counts and
examples); the layouts' conversions; which source a file's names are."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imgclf_jax.config import specs
from imgclf_jax.config import keys
from imgclf_jax.models import registry
from imgclf_jax.models.pretrained import importer
from imgclf_jax.models.pretrained import name_maps
from imgclf_jax.models.pretrained import source

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
SHARED_WEIGHTS = os.path.join(ROOT, '..', 'shared', 'pretrained',
                              'efficientnet_lite0.safetensors')


def _variables(model_name, num_classes=1000, size=64, seed=0):
  """Random variables (every leaf distinct) of `model_name` with the layout
  its map expects."""
  config = keys.get_config()
  config.model, config.dropout_rate = model_name, 0.0
  if model_name in registry.TORCH_LAYOUT:
    config.model_layout = 'torch'
  model = registry.create_model(specs.model_spec(config, num_classes))
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


@pytest.mark.parametrize('model_name', sorted(name_maps.MAPS))
def test_our_tree_round_trips_through_the_sources_names(model_name):
  variables = _variables(model_name)
  name_map = name_maps.MAPS[model_name]
  tensors = name_maps.to_state_dict(variables, name_map)
  assert len(tensors) == len(jax.tree.leaves(variables))  # one name each
  back, loaded, new = importer.load_tensors(
      jax.tree.map(np.zeros_like, variables), tensors, name_map, 'file',
      model_name)
  assert loaded == len(tensors) and new == []
  assert jax.tree.structure(back) == jax.tree.structure(variables)
  jax.tree.map(np.testing.assert_array_equal, back, variables)


@pytest.mark.skipif(not os.path.exists(SHARED_WEIGHTS),
                    reason='../shared/pretrained is not here')
def test_efficientnet_names_and_shapes_are_the_shared_files():
  ours = {k: v.shape for k, v in name_maps.to_state_dict(
      _variables('efficientnet_lite0'),
      name_maps.MAPS['efficientnet_lite0']).items()}
  header = source.header(SHARED_WEIGHTS)
  counters = {k for k in header if k.endswith(name_maps.IGNORED_SUFFIX)}
  assert len(counters) == 49 and len(header) == 296
  assert ours == {k: v for k, v in header.items() if k not in counters}


@pytest.mark.parametrize('model_name, count, examples', [
    # torchvision 0.29.1's state_dicts less their num_batches_tracked (20,
    # 53); timm 1.0.29's are the same (tests/test_benchmarks.py).
    ('resnet18', 102, {'conv1.weight': (64, 3, 7, 7),
                       'layer2.0.downsample.0.weight': (128, 64, 1, 1),
                       'layer4.1.bn2.running_var': (512,),
                       'fc.weight': (1000, 512)}),
    ('resnet50', 267, {'layer1.0.conv3.weight': (256, 64, 1, 1),
                       'layer1.0.downsample.1.weight': (256,),
                       'layer3.5.conv2.weight': (256, 256, 3, 3),
                       'layer4.2.bn3.bias': (2048,),
                       'fc.weight': (1000, 2048), 'fc.bias': (1000,)}),
])
def test_resnet_names_and_shapes_are_torchvisions(model_name, count,
                                                  examples):
  ours = {k: v.shape for k, v in name_maps.to_state_dict(
      _variables(model_name), name_maps.MAPS[model_name]).items()}
  assert len(ours) == count
  assert {k: ours[k] for k in examples} == examples
  assert not any(k.startswith('layer5') for k in ours)


def test_layouts():
  conv = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # [kh, kw, in, out]
  torch_conv = name_maps.to_torch_layout(conv)
  assert torch_conv.shape == (5, 4, 2, 3) == name_maps.torch_shape(conv.shape)
  assert torch_conv[4, 3, 1, 2] == conv[1, 2, 3, 4]
  # Depthwise: Flax's [kh, kw, 1, c] (feature_group_count=c) is PyTorch's
  # [c, 1, kh, kw] (groups=c).
  depthwise = np.arange(3 * 3 * 1 * 8).reshape(3, 3, 1, 8)
  assert name_maps.to_torch_layout(depthwise).shape == (8, 1, 3, 3)
  assert name_maps.to_torch_layout(depthwise)[7, 0, 2, 1] == depthwise[2, 1, 0,
                                                                        7]
  dense = np.arange(6).reshape(2, 3)  # [in, out] <- [out, in]
  np.testing.assert_array_equal(name_maps.to_torch_layout(dense), dense.T)
  vector = np.arange(4)
  for array in (conv, depthwise, dense, vector):
    np.testing.assert_array_equal(
        name_maps.from_torch_layout(name_maps.to_torch_layout(array)), array)


def test_sources_are_told_by_their_names():
  assert name_maps.detect_source(name_maps.to_state_dict(
      _variables('resnet18'), name_maps.MAPS['resnet18'])) == (
          name_maps.TORCH_RESNET)
  assert name_maps.detect_source(name_maps.to_state_dict(
      _variables('efficientnet_lite0'),
      name_maps.MAPS['efficientnet_lite0'])) == name_maps.EFFICIENTNET_LITE
  assert name_maps.detect_source({'conv.weight', 'fc.weight'}) is None


def test_a_path_outside_the_map_is_named():
  with pytest.raises(KeyError, match='Conv_7'):
    name_maps.MAPS['resnet18'].key(('params', 'ResNetBlock_0', 'Conv_7',
                                    'kernel'))
  with pytest.raises(KeyError, match='blocks_0/squeeze'):
    name_maps.MAPS['efficientnet_lite0'].key(('params', 'blocks_0',
                                              'squeeze', 'kernel'))
