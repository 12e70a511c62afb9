"""Model architectures, chosen by name (ModelSpec.name: `config.model`).

Add an architecture by writing a linen Module that takes
(images [N, H, W, C], train: bool, example_ids=None) and returns logits
[N, num_classes], and registering it in MODELS with the keyword arguments
that configure it. `example_ids` (int [N]) are
the examples' positions in the global batch; ExampleDropout uses them so that
the training step draws the same masks however the batch is split over
devices and slices. BatchNorm layers keep their statistics in the
'batch_stats' collection and average them over device_axis.AXIS in training
(list the model in BATCH_NORM_MODELS). Optional hooks, as fast_cifar.py's:
`init_from_data(params, images)` (a data-dependent initialisation before
the first step) and `frozen_paths(whiten_bias_epochs)` (parameters not
trained from a given epoch).
"""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from imgclf_jax.models.efficientnet import EfficientNetLite0
from imgclf_jax.models.fast_cifar import FastCifar
from imgclf_jax.models.fast_conv import FastConv
from imgclf_jax.models.fast_conv import DepthwiseConv
from imgclf_jax.models.fast_conv import PointwiseConv
from imgclf_jax.models.fast_conv import max_pool_2x2
from imgclf_jax.models import resnet
from imgclf_jax.models.spec import ModelSpec


class ExampleDropout(nn.Module):
  """nn.Dropout whose mask for each example depends only on the 'dropout'
  rng and that example's id, not on which device or batch slice holds it.

  Same semantics as nn.Dropout otherwise: kept values are scaled by
  1 / (1 - rate); identity when `deterministic`.
  """
  rate: float

  @nn.compact
  def __call__(self, x, example_ids, deterministic: bool):
    if deterministic or self.rate == 0.0:
      return x
    if example_ids is None:
      example_ids = jnp.arange(x.shape[0])
    key = self.make_rng('dropout')
    keep_prob = 1.0 - self.rate
    keep = jax.vmap(lambda i: jax.random.bernoulli(
        jax.random.fold_in(key, i), keep_prob, x.shape[1:]))(example_ids)
    return jnp.where(keep, x / keep_prob, jnp.zeros((), x.dtype))


def plain_max_pool_2x2(x):
  """nn.max_pool over 2x2 windows with stride 2 (what max_pool_2x2 computes)."""
  return nn.max_pool(x, (2, 2), strides=(2, 2))


class CNN(nn.Module):
  """The seed CNN: Conv32-ReLU-MaxPool, Conv64-ReLU-MaxPool, Dense128-ReLU,
  Dropout, Dense num_classes (logits; the softmax is in the loss).

  `conv` and `pool` are the convolution (a module class taking features and
  kernel_size, as nn.Conv) and the 2x2 max pool it is built from, as Flax's
  ResNet takes `conv`: FastConv and fast_conv.max_pool_2x2 ('cnn') compute
  what nn.Conv and nn.max_pool ('cnn_plain') compute, with gradients that run
  faster on XLA:CPU (fast_conv.py). Either way the parameter tree is
  nn.Conv's ('Conv_0', 'Conv_1', ...).

  `dtype` is the computation dtype (bfloat16 for config.half_precision):
  parameters stay float32 and are cast where they are used, and the logits
  come back as float32 for the loss.
  """
  num_classes: int
  dropout_rate: float = 0.5
  dtype: jnp.dtype = jnp.float32
  conv: Callable[..., nn.Module] = nn.Conv
  pool: Callable[[jax.Array], jax.Array] = plain_max_pool_2x2

  @nn.compact
  def __call__(self, x, train: bool, example_ids=None):
    x = x.astype(self.dtype)
    for i, features in enumerate((32, 64)):
      x = self.pool(nn.relu(self.conv(features, (3, 3), dtype=self.dtype,
                                   name=f'Conv_{i}')(x)))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(128, dtype=self.dtype)(x))
    x = ExampleDropout(self.dropout_rate, name='Dropout_0')(
        x, example_ids, deterministic=not train)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


FAST = {'conv': FastConv, 'pool': max_pool_2x2}
XLA = {'conv': nn.Conv, 'pool': plain_max_pool_2x2}


# name -> (module, keyword arguments, the arguments of its 'fast' convolutions
# or None where it has none); config.model picks one, config.conv_impl the
# convolutions. Parameters (float32), counted for 10 classes at 32x32x3:
#   cnn, cnn_plain      545,098   the seed CNN
#   fast_cifar        1,971,640   airbench94 (fast_cifar.py)
#   resnet18         11,173,962   CIFAR stem (resnet.py)
#   resnet50         23,528,522   ImageNet stem (25,557,032 with 1000 classes)
#   efficientnet_lite0  3,383,818 (4,652,008 with 1000 classes; efficientnet.py)
MODELS = {
    'cnn': (CNN, XLA, FAST),
    'cnn_plain': (CNN, XLA, None),
    'fast_cifar': (FastCifar, XLA, FAST),
    'resnet18': (resnet.ResNet18, {'stem': 'cifar'}, None),
    'resnet50': (resnet.ResNet50, {'stem': 'imagenet'}, None),
    'efficientnet_lite0': (EfficientNetLite0, {'dropout': ExampleDropout},
                           {'depthwise_conv': DepthwiseConv,
                            'pointwise_conv': PointwiseConv}),
}
BATCH_NORM_MODELS = ('fast_cifar', 'resnet18', 'resnet50',
                     'efficientnet_lite0')
DROPOUT_MODELS = ('cnn', 'cnn_plain', 'efficientnet_lite0')
# config.model_layout 'torch': the arguments that give a model the layout of
# torchvision's and timm's networks of its name, whose weights
# models/pretrained/ loads (resnet18 then has their ImageNet stem). The
# models missing here have one layout ('flax').
TORCH_LAYOUT = {
    'resnet18': {'stem': 'imagenet', 'padding': 'torch'},
    'resnet50': {'padding': 'torch'},
}
# The module path of each model's classifier head (its last Dense layer):
# what config.probe_epochs trains alone and config.pretrained_lr_scale
# leaves at the full learning rate (train_state.create_optimizer).
HEADS = {'cnn': 'Dense_1', 'cnn_plain': 'Dense_1', 'fast_cifar': 'Dense_0',
         'resnet18': 'Dense_0', 'resnet50': 'Dense_0',
         'efficientnet_lite0': 'classifier'}
# The models whose BatchNorm config.freeze_batch_norm can freeze.
FREEZABLE_BATCH_NORM = ('resnet18', 'resnet50', 'efficientnet_lite0')
# fast_cifar's valid 2x2 conv and three 2x2 pools need 9 pixels (8 -> 0).
MIN_IMAGE_SIZE = {'fast_cifar': 9}


def has_batch_norm(name: str) -> bool:
  return name in BATCH_NORM_MODELS


def conv_impl(model: str, requested: str) -> str:
  """'fast' or 'xla': the convolutions of `model` for config.conv_impl
  `requested`, 'auto' resolved by backend (fast on CPU where the model has
  it)."""
  fast = MODELS[model][2]
  if requested == 'auto':
    return 'fast' if fast and jax.default_backend() == 'cpu' else 'xla'
  if requested == 'fast' and not fast:
    return 'xla'
  return requested


def create_model(spec: ModelSpec) -> nn.Module:
  module, kwargs, fast = MODELS[spec.name]
  if spec.conv_impl == 'fast':
    kwargs = {**kwargs, **fast}
  if spec.layout == 'torch':
    kwargs = {**kwargs, **TORCH_LAYOUT[spec.name]}
  if spec.freeze_batch_norm:
    kwargs = {**kwargs, 'freeze_batch_norm': True}
  return module(num_classes=spec.num_classes, dropout_rate=spec.dropout_rate,
                dtype=spec.dtype, **kwargs)


def num_params(model: nn.Module, image_shape) -> int:
  """The number of parameters of `model` for inputs of `image_shape`."""
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, *image_shape)), train=False))
  return sum(x.size for x in jax.tree.leaves(shapes['params']))
