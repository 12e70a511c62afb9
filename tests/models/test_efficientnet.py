"""efficientnet.py: EfficientNet-Lite0's layout and parameter count (those
of efficientnet-lite-pytorch, whose logits ours equal on its weights:
tests/test_benchmarks.py and tests/models/pretrained/test_fixtures.py), the
residual rule, BatchNorm's constants, dropout only in training, any image
size."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imgclf_jax.config import specs
from imgclf_jax.models import efficientnet
from imgclf_jax.models import registry
from tests import helpers


def _abstract(model, size=224):
  return jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_lite0_layout_and_parameter_count():
  variables = _abstract(efficientnet.EfficientNetLite0(num_classes=1000))
  params = jax.tree.map(lambda x: x.shape, variables['params'])
  assert _count(variables['params']) == 4_652_008  # the package's count
  assert {k for k in params if k.startswith('blocks_')} == {
      f'blocks_{i}' for i in range(16)}
  assert params['stem_conv'] == {'kernel': (3, 3, 3, 32)}
  # Block 0 (expand ratio 1) has no expansion; depthwise kernels are
  # [k, k, 1, channels] (feature_group_count = channels).
  assert set(params['blocks_0']) == {'depthwise_conv', 'depthwise_bn',
                                     'project_conv', 'project_bn'}
  assert params['blocks_0']['depthwise_conv'] == {'kernel': (3, 3, 1, 32)}
  assert params['blocks_3']['expand_conv'] == {'kernel': (1, 1, 24, 144)}
  assert params['blocks_3']['depthwise_conv'] == {'kernel': (5, 5, 1, 144)}
  assert params['head_conv'] == {'kernel': (1, 1, 320, 1280)}
  assert params['classifier'] == {'kernel': (1280, 1000), 'bias': (1000,)}
  # BatchNorm statistics: a mean and a variance per channel of each.
  scales = [shape for path, shape in flax.traverse_util.flatten_dict(
      params).items() if path[-1] == 'scale']
  assert len(scales) == 2 + 15 * 3 + 2  # stem, blocks (block 0: 2), head
  assert _count(variables['batch_stats']) == 2 * sum(s[0] for s in scales)


def _tiny(**kwargs):
  """Three stages: a stride-1 block that keeps its width (residual), a
  strided one, and a repeated one (residual)."""
  return efficientnet.EfficientNetLite(
      num_classes=3, stages=((1, 3, 1, 1, 8), (2, 5, 2, 2, 6)),
      stem_filters=8, head_filters=16, bn_axis_name=None, **kwargs)


def _init(model, size=16):
  return model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                    train=False)


def test_blocks_add_their_input_where_stride_and_width_allow():
  """With every projection's BatchNorm at zero, a residual block passes its
  input on unchanged and the others output zeros."""
  model = _tiny()
  variables = _init(model)
  params = jax.tree.map(np.asarray, variables['params'])
  for name in ('blocks_0', 'blocks_1', 'blocks_2'):
    params[name]['project_bn'] = jax.tree.map(np.zeros_like,
                                              params[name]['project_bn'])
  variables = {**variables, 'params': params}
  _, state = jax.jit(lambda v, x: model.apply(
      v, x, train=False, mutable=['intermediates'],
      capture_intermediates=lambda m, _: m.name and m.name.startswith(
          'blocks_')))(variables,
                       jax.random.normal(jax.random.key(1), (2, 16, 16, 3)))
  out = {k: v['__call__'][0] for k, v in state['intermediates'].items()}
  assert np.abs(out['blocks_0']).max() > 0  # residual: its input (8 -> 8)
  np.testing.assert_array_equal(out['blocks_1'], 0)  # strided: no residual
  np.testing.assert_array_equal(out['blocks_2'], 0)  # its input was zeros


def test_batch_norm_constants_are_tensorflows():
  """epsilon 1e-3 and momentum 0.99 (the package's PyTorch momentum 0.01)."""
  model = _tiny()
  variables = _init(model)
  x = jax.random.normal(jax.random.key(2), (4, 16, 16, 3))
  _, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  y = model.apply(variables, x, train=False, mutable=['intermediates'],
                  capture_intermediates=lambda m, _: m.name == 'stem_conv')[
                      1]['intermediates']['stem_conv']['__call__'][0]
  np.testing.assert_allclose(updates['batch_stats']['stem_bn']['mean'],
                             0.01 * y.mean(axis=(0, 1, 2)), atol=1e-6)
  # Evaluation divides by sqrt(var + 1e-3): with var 0 and the stem's
  # BatchNorm scale 1, bias 0, a unit input comes out as 1/sqrt(1e-3).
  stats = jax.tree.map(np.asarray, variables['batch_stats'])
  stats['stem_bn']['var'] = np.zeros_like(stats['stem_bn']['var'])
  _, state = model.apply({**variables, 'batch_stats': stats}, x, train=False,
                         mutable=['intermediates'],
                         capture_intermediates=lambda m, _: m.name == 'stem_bn')
  normed = state['intermediates']['stem_bn']['__call__'][0]
  np.testing.assert_allclose(normed, y / np.sqrt(1e-3), rtol=1e-5)


def test_dropout_only_in_training_and_any_image_size():
  config = helpers.small_config('cifar10', model='efficientnet_lite0',
                                dropout_rate=0.5)
  registered = registry.create_model(specs.model_spec(config, 4))
  assert registered.dropout is registry.ExampleDropout
  assert registered.dropout_rate == 0.5
  model = _tiny(dropout=registry.ExampleDropout, dropout_rate=0.5)
  variables = _init(model)
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  apply = jax.jit(lambda v, x, key: model.apply(
      v, x, train=True, rngs={'dropout': key}, mutable=['batch_stats'])[0])
  assert not np.allclose(apply(variables, x, jax.random.key(2)),
                         apply(variables, x, jax.random.key(3)))
  evaluate = jax.jit(lambda v, x: model.apply(v, x, train=False))
  np.testing.assert_array_equal(evaluate(variables, x), evaluate(variables, x))
  # An odd size: 'SAME' padding takes any.
  assert evaluate(variables, jnp.ones((1, 33, 33, 3))).shape == (1, 3)


def test_dropout_rate_needs_a_dropout_layer():
  with pytest.raises(ValueError, match='dropout'):
    _init(_tiny(dropout_rate=0.2))
