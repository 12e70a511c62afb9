"""fast_cifar.py: the airbench94 network: its size, the whitening layer's
initialisation and freezing, BatchNorm in training and evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imgclf_jax.config import specs
from imgclf_jax.models import fast_cifar
from imgclf_jax.models import registry
from imgclf_jax.parallel import device_axis
from imgclf_jax.training import steps
from imgclf_jax.training import train_state as train_state_lib
from tests import helpers


def _config(**overrides):
  defaults = dict(model='fast_cifar', dropout_rate=0.0, optimizer='sgd',
                  momentum=0.85, nesterov=True, learning_rate=0.5,
                  weight_decay=5e-3, norm_bias_lr_scale=64.0)
  return helpers.small_config('cifar10', **{**defaults, **overrides})


def _small_model(**kw):
  return fast_cifar.FastCifar(4, widths=(8, 16, 16), **kw)


def _batch(n=8, size=16, seed=0, classes=4):
  rng = np.random.default_rng(seed)
  return {'image': rng.normal(size=(n, size, size, 3)).astype(np.float32),
          'label': np.eye(classes, dtype=np.float32)[rng.integers(0, classes,
                                                                  n)]}


def test_published_network_size_and_output():
  model = registry.create_model(specs.model_spec(_config(), 10))
  assert registry.num_params(model, (32, 32, 3)) == 1_971_640
  variables = model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)),
                         train=False)
  logits = model.apply(variables, jnp.ones((2, 32, 32, 3)), train=False)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  # BatchNorm has a bias and no scale; the convolutions have no bias.
  group = variables['params']['ConvGroup_0']
  assert set(group['BatchNorm_0']) == {'bias'}
  assert set(group['Conv_0']) == {'kernel'}
  assert set(variables['batch_stats']['ConvGroup_2']['BatchNorm_1']) == {
      'mean', 'var'}


def test_convolutions_start_as_the_identity_on_their_first_channels():
  kernel = fast_cifar.dirac_init(jax.random.key(0), (3, 3, 4, 6))
  x = np.random.default_rng(0).normal(size=(1, 5, 5, 4)).astype(np.float32)
  y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(y[..., :4], x, atol=1e-6)
  assert not np.allclose(kernel[..., 4:], 0)


@pytest.mark.parametrize('chunk', [256, 5])  # one sum, or 13 (the last of 4)
def test_whitening_kernel_whitens_the_patches(monkeypatch, chunk):
  monkeypatch.setattr(fast_cifar, '_WHITENING_CHUNK', chunk)
  rng = np.random.default_rng(0)
  # Correlated channels and neighbouring pixels.
  base = rng.normal(size=(64, 9, 9, 1))
  images = np.concatenate([base, 0.5 * base + rng.normal(size=base.shape),
                           np.roll(base, 1, axis=2) +
                           0.3 * rng.normal(size=base.shape)], axis=-1)
  kernel = fast_cifar.whitening_kernel(images, 2, eps=0.0)
  assert kernel.shape == (2, 2, 3, 24)
  out = jax.lax.conv_general_dilated(
      images.astype(np.float32), kernel, (1, 1), 'VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC')).reshape(-1, 24)
  half = out[:, :12]
  np.testing.assert_allclose(half.T @ half / len(half), np.eye(12),
                             atol=2e-3)
  np.testing.assert_allclose(out[:, 12:], -half, atol=1e-6)


def test_whitening_is_frozen_and_its_bias_trains_for_its_epochs():
  config = _config(whiten_bias_epochs=1.0)
  model = _small_model(bn_axis_name=device_axis.AXIS)
  state = train_state_lib.create_train_state(
      jax.random.key(0), model, (16, 16, 3), specs.optim_spec(config),
      steps_per_epoch=2)
  state = train_state_lib.with_params(
      state, model.init_from_data(state.params, _batch(32)['image']))
  p_train = helpers.p_train_step(devices=jax.devices()[:1])
  kernels, biases, others = [], [], []
  for i in range(4):
    batch = device_axis.shard(_batch(seed=i), 1)
    state, _ = p_train(state, batch, jax.random.key(1))
    kernels.append(np.asarray(state.params['Whiten']['kernel']))
    biases.append(np.asarray(state.params['Whiten']['bias']))
    others.append(np.asarray(state.params['Dense_0']['kernel']))
  expected = fast_cifar.whitening_kernel(_batch(32)['image'], 2)
  for kernel in kernels:
    np.testing.assert_array_equal(kernel, expected)
  # Steps 0 and 1 (epoch 0) move the bias; steps 2 and 3 do not.
  assert not np.allclose(biases[1], biases[0])
  np.testing.assert_array_equal(biases[3], biases[1])
  assert not np.allclose(others[3], others[2])


def test_batch_norm_trains_its_statistics_and_evaluation_uses_them():
  model = _small_model(bn_axis_name=None)
  x = _batch()['image'] * 3 + 2
  variables = model.init(jax.random.key(0), x[:1], train=False)
  _, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  before = variables['batch_stats']['ConvGroup_0']['BatchNorm_0']['mean']
  after = updates['batch_stats']['ConvGroup_0']['BatchNorm_0']['mean']
  assert not np.allclose(before, after)
  # Evaluation: running statistics, so an example's logits do not depend on
  # the rest of the batch, and nothing is updated.
  trained = {**variables, **updates}
  alone = model.apply(trained, x[:1], train=False)
  together = model.apply(trained, x, train=False)
  np.testing.assert_allclose(alone, together[:1], rtol=1e-5, atol=1e-5)
  # Training mode normalises with the batch's own statistics.
  batch_mode, _ = model.apply(trained, x, train=True, mutable=['batch_stats'])
  assert not np.allclose(batch_mode, together, atol=1e-3)


def test_four_devices_give_the_same_batch_norm_update_as_one():
  assert jax.local_device_count() == 4, 'conftest sets 4 fake CPU devices'
  config = _config(ema_decay=0.9)
  model = _small_model(bn_axis_name=device_axis.AXIS)
  state = train_state_lib.create_train_state(
      jax.random.key(0), model, (16, 16, 3), specs.optim_spec(config),
      steps_per_epoch=10)
  batch, rng = _batch(16), jax.random.key(1)
  one, m1 = helpers.p_train_step(devices=jax.devices()[:1])(
      state, device_axis.shard(batch, 1), rng)
  four, m4 = helpers.p_train_step()(state, device_axis.shard(batch, 4), rng)
  for a, b in ((one.params, four.params), (one.batch_stats, four.batch_stats),
               (one.ema, four.ema)):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(m1.compute()['loss'], m4.compute()['loss'],
                             rtol=1e-5)
  # Per-device statistics (no axis name) would differ: the check can fail.
  local = train_state_lib.create_train_state(
      jax.random.key(0), _small_model(bn_axis_name=None), (16, 16, 3),
      specs.optim_spec(config), steps_per_epoch=10)
  split = jax.pmap(
      lambda s, b: steps.train_step(s, b, rng)[0].batch_stats,
      axis_name=device_axis.AXIS, in_axes=(None, 0))(
          local, device_axis.shard(batch, 4))
  mean = split['ConvGroup_0']['BatchNorm_0']['mean']
  assert not np.allclose(mean[0], mean[1])
