"""FastConv, DepthwiseConv, PointwiseConv and max_pool_2x2 against nn.Conv
and nn.max_pool: parameters, values and gradients; efficientnet_lite0 built
from them against the same network built from nn.Conv."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imgclf_jax.config import specs
from imgclf_jax.models import registry
from tests import helpers
from imgclf_jax.models.fast_conv import DepthwiseConv
from imgclf_jax.models.fast_conv import FastConv
from imgclf_jax.models.fast_conv import PointwiseConv
from imgclf_jax.models.fast_conv import max_pool_2x2

RTOL = 1e-4  # relative to the largest |reference| value of each tensor (f32)


def _close(a, b, what):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape, (what, a.shape, b.shape)
  err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)
  assert err < RTOL, f'{what}: max relative error {err:.2e}'


# (batch, H, W, Cin, Cout): both layers of the CNN (im2col and split-K paths),
# MNIST's odd 7x7 maps, a batch of one, odd non-square shapes and channels.
SHAPES = [(4, 32, 32, 3, 32), (4, 16, 16, 32, 64), (5, 7, 7, 32, 64),
          (1, 28, 28, 3, 32), (2, 9, 6, 5, 7)]


@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: 'x'.join(map(str, s)))
@pytest.mark.parametrize('kernel_size', [(3, 3), (5, 5), (3, 1)], ids=str)
def test_forward_and_gradients_match_nn_conv(shape, kernel_size):
  n, h, w, cin, cout = shape
  kx, kp, kg = jax.random.split(jax.random.key(cin * h + kernel_size[0]), 3)
  x = jax.random.normal(kx, (n, h, w, cin))
  ref = nn.Conv(cout, kernel_size, padding='SAME')
  fast = FastConv(cout, kernel_size)
  params = ref.init(kp, x)['params']
  fast_params = fast.init(kp, x)['params']
  for k in ('kernel', 'bias'):  # same shapes and initialisers
    np.testing.assert_array_equal(params[k], fast_params[k])
  params = dict(params, bias=jax.random.normal(kp, params['bias'].shape))
  g = jax.random.normal(kg, (n, h, w, cout))

  def loss(module):
    return lambda p, x: jnp.sum(module.apply({'params': p}, x) * g)

  _close(jax.jit(fast.apply)({'params': params}, x),
         ref.apply({'params': params}, x), 'forward')
  (ref_dp, ref_dx) = jax.grad(loss(ref), argnums=(0, 1))(params, x)
  (dp, dx) = jax.jit(jax.grad(loss(fast), argnums=(0, 1)))(params, x)
  _close(dp['kernel'], ref_dp['kernel'], 'd kernel')
  _close(dp['bias'], ref_dp['bias'], 'd bias')
  _close(dx, ref_dx, 'd input')


def _assert_same_layer(fast, ref, x):
  """`fast` has `ref`'s parameters (shapes and initial values) and computes
  its values and gradients (of the input, kernel and bias)."""
  kp, kg = jax.random.split(jax.random.key(x.shape[-1]))
  params = ref.init(kp, x)['params']
  fast_params = fast.init(kp, x)['params']
  assert jax.tree.structure(params) == jax.tree.structure(fast_params)
  for k in params:
    np.testing.assert_array_equal(params[k], fast_params[k])
  params = dict(params, bias=jax.random.normal(kp, params['bias'].shape))
  y = ref.apply({'params': params}, x)
  g = jax.random.normal(kg, y.shape)

  def loss(module):
    return lambda p, x: jnp.sum(module.apply({'params': p}, x) * g)

  _close(jax.jit(fast.apply)({'params': params}, x), y, 'forward')
  (ref_dp, ref_dx) = jax.grad(loss(ref), argnums=(0, 1))(params, x)
  (dp, dx) = jax.jit(jax.grad(loss(fast), argnums=(0, 1)))(params, x)
  _close(dp['kernel'], ref_dp['kernel'], 'd kernel')
  _close(dp['bias'], ref_dp['bias'], 'd bias')
  _close(dx, ref_dx, 'd input')


# (batch, H, W, channels, kernel, stride): EfficientNet's 3x3 and 5x5 at
# strides 1 and 2, odd and even sizes ('SAME' pads (0, 1) or (1, 1) there),
# a non-square map, a batch of one.
DEPTHWISE = [(2, 16, 16, 8, 3, 1), (2, 16, 16, 8, 3, 2), (2, 15, 15, 6, 5, 2),
             (1, 14, 9, 5, 5, 1), (3, 7, 7, 4, 3, 2), (2, 8, 8, 3, 5, 2)]


@pytest.mark.parametrize('shape', DEPTHWISE,
                         ids=lambda s: 'x'.join(map(str, s)))
def test_depthwise_conv_matches_nn_conv_with_a_group_per_channel(shape):
  n, h, w, c, k, s = shape
  x = jax.random.normal(jax.random.key(h * k + s), (n, h, w, c))
  _assert_same_layer(
      DepthwiseConv(c, (k, k), (s, s), feature_group_count=c),
      nn.Conv(c, (k, k), (s, s), padding='SAME', feature_group_count=c), x)


@pytest.mark.parametrize('shape', [(2, 8, 8, 16, 24), (1, 7, 5, 3, 9)],
                         ids=lambda s: 'x'.join(map(str, s)))
def test_pointwise_conv_matches_a_1x1_nn_conv(shape):
  n, h, w, cin, cout = shape
  x = jax.random.normal(jax.random.key(cin), (n, h, w, cin))
  _assert_same_layer(PointwiseConv(cout),
                     nn.Conv(cout, (1, 1), padding='SAME'), x)


@pytest.mark.parametrize('module, message', [
    (DepthwiseConv(8, (3, 3), feature_group_count=1), 'feature_group_count 1'),
    (DepthwiseConv(4, (3, 3), feature_group_count=4), '8 input channels'),
    (DepthwiseConv(8, (3, 3), feature_group_count=8, padding='VALID'),
     "padding 'VALID'"),
    (PointwiseConv(4, (3, 3)), 'a 1x1 kernel; got (3, 3)'),
    (PointwiseConv(4, strides=(2, 2)), 'got stride (2, 2)'),
    (FastConv(4, strides=(2, 2)), 'got stride (2, 2)'),
])
def test_the_fast_layers_refuse_what_they_do_not_compute(module, message):
  with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(
      ')', r'\)')):
    module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 8)))


@pytest.mark.parametrize('shape', [(5, 32, 32, 32), (2, 7, 7, 4), (2, 9, 6, 5)],
                         ids=lambda s: 'x'.join(map(str, s)))
def test_max_pool_matches_nn_max_pool_values_and_gradient(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  y_ref, vjp_ref = jax.vjp(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)), x)
  y, vjp = jax.vjp(jax.jit(max_pool_2x2), x)
  np.testing.assert_array_equal(y, y_ref)
  g = jax.random.normal(jax.random.key(1), y_ref.shape)
  np.testing.assert_array_equal(vjp(g)[0], vjp_ref(g)[0])


def test_max_pool_ties_send_the_gradient_to_the_first_maximum():
  # All-zero windows, as after a ReLU: like select_and_scatter (and PyTorch).
  x = jnp.zeros((1, 4, 4, 2)).at[0, 3, 3, 1].set(1.0)
  g = jnp.ones((1, 2, 2, 2))
  expected = jax.vjp(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)),
                     x)[1](g)[0]
  got = jax.vjp(max_pool_2x2, x)[1](g)[0]
  np.testing.assert_array_equal(got, expected)
  assert float(got.sum()) == 8.0  # one gradient per window, not split on ties


@pytest.mark.slow
def test_cnn_matches_the_same_cnn_built_from_nn_conv():
  x = jax.random.uniform(jax.random.key(0), (6, 32, 32, 3))
  labels = jax.nn.one_hot(jnp.arange(6), 10)
  config = helpers.small_config('cifar10', dropout_rate=0.0)
  ours = registry.create_model(specs.model_spec(config, 10))
  config.model = 'cnn_plain'
  plain = registry.create_model(specs.model_spec(config, 10))
  params = ours.init(jax.random.key(1), x, train=False)['params']
  ref_params = plain.init(jax.random.key(1), x, train=False)['params']
  assert jax.tree.structure(params) == jax.tree.structure(ref_params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
    np.testing.assert_array_equal(a, b)

  def loss(model):
    return lambda p: -jnp.mean(jnp.sum(jax.nn.log_softmax(
        model.apply({'params': p}, x, train=True)) * labels, -1))

  ref_loss, ref_grads = jax.value_and_grad(loss(plain))(params)
  our_loss, our_grads = jax.jit(jax.value_and_grad(loss(ours)))(params)
  _close(our_loss, ref_loss, 'loss')
  for a, b in zip(jax.tree.leaves(our_grads), jax.tree.leaves(ref_grads)):
    _close(a, b, 'gradient')


@pytest.mark.slow
def test_efficientnet_matches_the_same_network_built_from_nn_conv(
    monkeypatch):
  # conv_impl 'fast' (the default on CPU) and 'xla': the same parameter tree
  # (so checkpoints and pretrained weights serve either), values and
  # gradients, with frozen BatchNorm statistics (fine-tuning's; with batch
  # statistics of 4 images at 1x1 in the last stages, float rounding alone
  # moves the gradients by percents: the layers' tests above check that
  # arithmetic at every shape). Every kind of block, in two short stages
  # (helpers.SMALL_EFFICIENTNET; the full network repeats them).
  helpers.small_efficientnet(monkeypatch)
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  labels = jax.nn.one_hot(jnp.arange(4) % 3, 3)
  config = helpers.small_config('cifar10', model='efficientnet_lite0',
                                dropout_rate=0.0, freeze_batch_norm=True)
  config.conv_impl = 'fast'
  fast = registry.create_model(specs.model_spec(config, 3))
  config.conv_impl = 'xla'
  plain = registry.create_model(specs.model_spec(config, 3))
  variables = plain.init(jax.random.key(1), x, train=False)
  fast_variables = fast.init(jax.random.key(1), x, train=False)
  assert jax.tree.structure(fast_variables) == jax.tree.structure(variables)
  for a, b in zip(jax.tree.leaves(fast_variables), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)
  # BatchNorm statistics away from their initial 0 and 1.
  variables = dict(variables, batch_stats=jax.tree.map(
      lambda v: v + 0.5, variables['batch_stats']))

  def loss(model):
    def f(p):  # one device on the 'batch' axis the BatchNorm averages over
      logits = jax.vmap(lambda xs: model.apply(
          {'params': p, 'batch_stats': variables['batch_stats']}, xs,
          train=True, mutable=['batch_stats'])[0], axis_name='batch')(x[None])
      return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits[0]) * labels, -1))
    return f

  ref_loss, ref_grads = jax.jit(jax.value_and_grad(loss(plain)))(
      variables['params'])
  our_loss, our_grads = jax.jit(jax.value_and_grad(loss(fast)))(
      variables['params'])
  _close(our_loss, ref_loss, 'loss')
  for path, a in jax.tree_util.tree_leaves_with_path(our_grads):
    b = ref_grads
    for key in path:
      b = b[key.key]
    _close(a, b, jax.tree_util.keystr(path))
  _close(jax.jit(lambda v: fast.apply(v, x, train=False))(variables),
         jax.jit(lambda v: plain.apply(v, x, train=False))(variables),
         'inference logits')
