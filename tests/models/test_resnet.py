"""resnet.py: output shapes of both stems, the published parameter counts,
BatchNorm in training (batch_stats updated, averaged over the pmap axis: 4
devices give the update of 1) and in evaluation (an example's logits do not
depend on its batch), zero-initialised last BN scale of each block, no
dropout, float32 logits under bfloat16.

Tiny widths and inputs except where the size is the point (the parameter
counts, computed with jax.eval_shape: nothing is computed)."""

import functools

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from imgclf_jax.models import resnet
from imgclf_jax.parallel import device_axis


def _tiny(block_cls=resnet.ResNetBlock, stem='cifar', **kwargs):
  """Two stages of one block (the second strided, with a projection)."""
  kwargs = {'num_classes': 3, 'num_filters': 4, **kwargs}
  return resnet.ResNet(stage_sizes=(1, 1), block_cls=block_cls, stem=stem,
                       **kwargs)


def _images(n, size=8, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, size, size, 3))


def _init(model, size=8):
  return model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                    train=False)


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_variables(model, size):
  return jax.eval_shape(
      lambda key: model.init(key, jnp.zeros((1, size, size, 3)), train=False),
      jax.random.key(0))


@pytest.mark.parametrize('name, num_classes, stem, size, params, stats', [
    # conv_init 1,728 + bn_init 128 + 8 blocks 11,166,976 + Dense 5,130
    ('ResNet18', 10, 'cifar', 32, 11_173_962, 9_600),
    ('ResNet50', 1000, 'imagenet', 224, 25_557_032, 53_120),
])
def test_published_parameter_counts(name, num_classes, stem, size, params,
                                    stats):
  model = getattr(resnet, name)(num_classes=num_classes, stem=stem)
  variables = _abstract_variables(model, size)
  assert set(variables) == {'params', 'batch_stats'}
  assert _count(variables['params']) == params
  # BatchNorm's running mean and variance: 2 per channel, not parameters.
  assert _count(variables['batch_stats']) == stats
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  assert variables['params']['Dense_0']['kernel'].shape[-1] == num_classes


def test_the_resnet18_cifar_layout():
  shapes = jax.tree.map(
      lambda x: x.shape,
      _abstract_variables(resnet.ResNet18(num_classes=10, stem='cifar'),
                          32)['params'])
  assert shapes['conv_init'] == {'kernel': (3, 3, 3, 64)}
  assert [k for k in shapes if k.startswith('ResNetBlock')] == [
      f'ResNetBlock_{i}' for i in range(8)]
  # The first block of stages 2-4 halves the resolution and projects.
  for i, (cin, cout) in zip((2, 4, 6), ((64, 128), (128, 256), (256, 512))):
    assert shapes[f'ResNetBlock_{i}']['conv_proj'] == {
        'kernel': (1, 1, cin, cout)}
  assert 'conv_proj' not in shapes['ResNetBlock_1']
  assert shapes['Dense_0'] == {'kernel': (512, 10), 'bias': (10,)}


@pytest.mark.parametrize('stem, size', [('cifar', 32), ('imagenet', 64)])
@pytest.mark.parametrize('block_cls', [resnet.ResNetBlock,
                                       resnet.BottleneckResNetBlock])
def test_output_shape_of_both_stems(stem, size, block_cls):
  model = _tiny(block_cls, stem=stem)
  variables = _init(model, size)
  x = _images(2, size)
  logits = model.apply(variables, x, train=False)
  assert logits.shape == (2, 3)
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  # The training forward pass (outside a pmap: no axis to average over).
  logits, updates = model.clone(bn_axis_name=None).apply(
      variables, x, train=True, mutable=['batch_stats'])
  assert logits.shape == (2, 3)
  assert set(updates) == {'batch_stats'}


@pytest.mark.parametrize('model, size', [
    (resnet.ResNet18(num_classes=10, stem='cifar'), 32),
    (resnet.ResNet50(num_classes=1000, stem='imagenet'), 224),
])
@pytest.mark.parametrize('train', [False, True])
def test_output_shape_of_the_published_sizes(model, size, train):
  """Shapes only (jax.eval_shape): nothing is computed."""
  x = jax.ShapeDtypeStruct((3, size, size, 3), jnp.float32)
  variables = _abstract_variables(model, size)
  if train:
    model = model.clone(bn_axis_name=None)
  out = jax.eval_shape(
      functools.partial(model.apply, train=train, mutable=['batch_stats']),
      variables, x)
  logits, updates = out
  assert logits.shape == (3, model.num_classes)
  assert logits.dtype == jnp.float32
  assert jax.tree.map(lambda a: a.shape, updates['batch_stats']) == (
      jax.tree.map(lambda a: a.shape, variables['batch_stats']))


@pytest.mark.slow
@pytest.mark.parametrize('model, size, features', [
    (resnet.ResNet18(num_classes=10, stem='cifar', num_filters=8), 32, 64),
    (resnet.ResNet50(num_classes=7, stem='imagenet', num_filters=4), 64, 128),
])
def test_full_depth_forward_pass(model, size, features):
  """All the stages (narrow): finite logits of the right shape."""
  variables = _init(model, size)
  logits = model.apply(variables, _images(2, size), train=False)
  assert logits.shape == (2, model.num_classes)
  assert np.all(np.isfinite(logits))
  assert variables['params']['Dense_0']['kernel'].shape == (
      features, model.num_classes)


def test_stems_downsample_as_published():
  """'cifar' keeps 32x32 until stage 2; 'imagenet' reaches 1/4 of the side
  (conv stride 2, max pool stride 2) before the first block."""
  def first_block_input(stem, size):
    model = _tiny(stem=stem)
    variables = _init(model, size)
    _, state = model.apply(
        variables, _images(1, size), train=False,
        capture_intermediates=lambda mdl, _: mdl.name == 'ResNetBlock_0',
        mutable=['intermediates'])
    return state['intermediates']['ResNetBlock_0']['__call__'][0].shape
  assert first_block_input('cifar', 32) == (1, 32, 32, 4)
  assert first_block_input('imagenet', 64) == (1, 16, 16, 4)


def test_unknown_stem_raises():
  with pytest.raises(ValueError, match='stem'):
    _init(_tiny(stem='tiny'))
  with pytest.raises(ValueError, match='padding'):
    _init(_tiny(padding='same'))


def _stem_and_pool(model, variables, x):
  """The stem convolution's output (before BatchNorm) and the first block's
  input (after the max pool)."""
  names = ('conv_init', 'ResNetBlock_0')
  _, state = model.apply(
      variables, x, train=False, mutable=['intermediates'],
      capture_intermediates=lambda mdl, _: mdl.name in names)
  out = state['intermediates']
  return out['conv_init']['__call__'][0], out['ResNetBlock_0']['__call__'][0]


def test_torch_padding_is_pytorchs():
  """padding='torch' pads as torch.nn.Conv2d(padding=k // 2) and
  MaxPool2d(3, 2, padding=1): (1, 1) where Flax's 'SAME' pads a stride-2
  3x3 window of an even input (0, 1). Same parameters; the default stays
  'flax'. (Against torchvision and timm themselves:
  tests/models/pretrained/.)"""
  assert resnet.ResNet.padding == 'flax'
  flax_model = _tiny(stem='imagenet')
  torch_model = _tiny(stem='imagenet', padding='torch')
  variables = _init(flax_model, 16)
  assert jax.tree.map(np.shape, _init(torch_model, 16)) == jax.tree.map(
      np.shape, variables)
  x = _images(2, 16)
  conv_flax, pooled_flax = _stem_and_pool(flax_model, variables, x)
  conv_torch, pooled_torch = _stem_and_pool(torch_model, variables, x)
  np.testing.assert_array_equal(conv_torch, conv_flax)  # 7x7: (3, 3) both
  assert pooled_torch.shape == pooled_flax.shape == (2, 4, 4, 4)
  # The pool's input, through BatchNorm (running averages: 0 and 1) and ReLU.
  bn = variables['params']['bn_init']
  y = jax.nn.relu(conv_torch / np.sqrt(1 + 1e-5) * bn['scale'] + bn['bias'])
  want = lax.reduce_window(y, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                           ((0, 0), (1, 1), (1, 1), (0, 0)))
  np.testing.assert_allclose(pooled_torch, want, rtol=1e-6)
  assert not np.allclose(pooled_flax, want)
  # The blocks' strided 3x3 convolutions.
  kernel = variables['params']['ResNetBlock_1']['Conv_0']['kernel']
  h = jax.random.normal(jax.random.key(5), (1, 8, 8, 4))
  torch_conv = resnet._torch_padding(nn.Conv)  # pylint: disable=protected-access
  for conv, pad in ((nn.Conv, (0, 1)), (torch_conv, (1, 1))):
    got = conv(8, (3, 3), (2, 2), use_bias=False).apply(
        {'params': {'kernel': kernel}}, h)
    want = lax.conv_general_dilated(h, kernel, (2, 2), (pad, pad),
                                    dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('block_cls, last', [
    (resnet.ResNetBlock, 'BatchNorm_1'),
    (resnet.BottleneckResNetBlock, 'BatchNorm_2'),
])
def test_last_bn_scale_of_each_block_is_zero_at_init(block_cls, last):
  model = resnet.ResNet(num_classes=3, stage_sizes=(2, 1), block_cls=block_cls,
                        stem='imagenet', num_filters=4)
  params = _init(model, 16)['params']
  blocks = [k for k in params if k.startswith(block_cls.__name__)]
  assert len(blocks) == 3
  for name in blocks:
    block = params[name]
    for bn, values in block.items():
      if not bn.startswith(('BatchNorm', 'norm_proj')):
        continue
      expected = 0.0 if bn == last else 1.0
      np.testing.assert_array_equal(values['scale'], expected,
                                    err_msg=f'{name}/{bn}')
  np.testing.assert_array_equal(params['bn_init']['scale'], 1.0)


def test_dropout_rate_zero_is_accepted_and_nonzero_raises():
  _init(_tiny(dropout_rate=0.0))
  with pytest.raises(ValueError, match='resnet has no dropout'):
    _init(_tiny(dropout_rate=0.5))
  with pytest.raises(ValueError, match='resnet has no dropout'):
    _tiny(dropout_rate=0.1).apply(_init(_tiny()), _images(1), train=False)


def test_training_updates_batch_stats_with_momentum_0_9():
  model = _tiny(bn_axis_name=None)
  variables = _init(model)
  x = _images(4)
  _, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  old, new = variables['batch_stats'], updates['batch_stats']
  assert jax.tree.structure(old) == jax.tree.structure(new)
  old_leaves = jax.tree_util.tree_leaves_with_path(old)
  for (path, a), b in zip(old_leaves, jax.tree.leaves(new)):
    assert not np.allclose(a, b), jax.tree_util.keystr(path)  # all changed
  # The stem's: 0.9 * (0 mean, 1 var) + 0.1 * the batch's (biased) statistics
  # of the stem convolution's output.
  y = lax.conv_general_dilated(
      x, variables['params']['conv_init']['kernel'], (1, 1), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(new['bn_init']['mean'],
                             0.1 * y.mean(axis=(0, 1, 2)), atol=1e-6)
  np.testing.assert_allclose(new['bn_init']['var'],
                             0.9 + 0.1 * y.var(axis=(0, 1, 2)), rtol=1e-5)
  # Evaluation leaves them alone (nothing is mutable: it would raise).
  model.apply(variables, x, train=False)


def _trained_variables(model, x):
  """`variables` with batch_stats after a few training forward passes, so
  that the running averages are not the initial 0 and 1."""
  variables = _init(model)
  train_model = model.clone(bn_axis_name=None)
  for _ in range(3):
    _, updates = train_model.apply(variables, x, train=True,
                                   mutable=['batch_stats'])
    variables = {**variables, **updates}
  return variables


@pytest.mark.parametrize('block_cls', [resnet.ResNetBlock,
                                       resnet.BottleneckResNetBlock])
def test_eval_logits_do_not_depend_on_the_batch(block_cls):
  model = _tiny(block_cls)  # default bn_axis_name: eval needs no axis
  x = _images(6) * 2.0 + 0.5
  variables = _trained_variables(model, x)
  together = model.apply(variables, x, train=False)
  alone = jnp.concatenate([model.apply(variables, x[i:i + 1], train=False)
                           for i in range(len(x))])
  np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-5)
  # In a different batch, too.
  mixed = model.apply(variables, jnp.concatenate([x[:1], -x[3:]]), train=False)
  np.testing.assert_allclose(mixed[0], together[0], rtol=1e-5, atol=1e-5)
  # The check can fail: in training the same example's logits do depend on
  # its batch (batch statistics).
  train_model = model.clone(bn_axis_name=None)
  train_together, _ = train_model.apply(variables, x, train=True,
                                        mutable=['batch_stats'])
  train_mixed, _ = train_model.apply(
      variables, jnp.concatenate([x[:1], -x[3:]]), train=True,
      mutable=['batch_stats'])
  assert not np.allclose(train_mixed[0], train_together[0], atol=1e-3)


def _pmapped_train_forward(model, devices):
  """The training forward pass under pmap over `devices` with the steps'
  axis name: (logits [D, B/D, classes], new batch_stats [D, ...])."""
  def forward(variables, x):
    return model.apply(variables, x, train=True, mutable=['batch_stats'])
  return jax.pmap(forward, axis_name=device_axis.AXIS, in_axes=(None, 0),
                  devices=devices)


@pytest.mark.parametrize('block_cls', [resnet.ResNetBlock,
                                       resnet.BottleneckResNetBlock])
def test_four_devices_give_the_batch_stats_update_of_one(block_cls):
  assert jax.local_device_count() == 4, 'conftest.py sets 4 fake CPU devices'
  assert resnet.ResNet.bn_axis_name == device_axis.AXIS == 'batch'
  model = _tiny(block_cls)
  # Varied images, so that the devices' shares have different statistics.
  x = _images(8) * jnp.arange(1.0, 9.0)[:, None, None, None]
  variables = _trained_variables(model, x[::-1])

  one = _pmapped_train_forward(model, jax.devices()[:1])
  four = _pmapped_train_forward(model, jax.devices()[:4])
  logits1, stats1 = one(variables, device_axis.shard(x, 1))
  logits4, stats4 = four(variables, device_axis.shard(x, 4))

  first = functools.partial(jax.tree.map, lambda s: s[0])
  for d in range(1, 4):  # every device holds the same update
    jax.tree.map(lambda s: np.testing.assert_array_equal(s[d], s[0]), stats4)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      first(stats1), first(stats4))
  np.testing.assert_allclose(device_axis.unshard(logits4),
                             device_axis.unshard(logits1), rtol=1e-4,
                             atol=1e-5)

  # The check can fail: without the axis, each device normalises with its
  # own quarter of the batch and its update differs.
  local = _pmapped_train_forward(model.clone(bn_axis_name=None),
                                 jax.devices()[:4])
  _, stats_local = local(variables, device_axis.shard(x, 4))
  assert not np.allclose(first(stats_local)['batch_stats']['bn_init']['mean'],
                         first(stats1)['batch_stats']['bn_init']['mean'],
                         atol=1e-4)


def test_bfloat16_computation_keeps_float32_params_stats_and_logits():
  full = _tiny()
  half = _tiny(dtype=jnp.bfloat16)
  variables = _init(full)
  assert jax.tree.structure(_init(half)) == jax.tree.structure(variables)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(_init(half)))
  x = _images(4)
  variables = _trained_variables(full, x)
  logits_full = full.apply(variables, x, train=False)
  logits_half = half.apply(variables, x, train=False)
  assert logits_half.dtype == jnp.float32
  np.testing.assert_allclose(logits_half, logits_full, atol=0.1, rtol=0.1)
  _, updates = half.clone(bn_axis_name=None).apply(
      variables, x, train=True, mutable=['batch_stats'])
  assert all(s.dtype == jnp.float32
             for s in jax.tree.leaves(updates['batch_stats']))
