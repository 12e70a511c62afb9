"""ResNet v1 (He et al., 2016) in Flax linen, after the Flax ImageNet example.

The blocks and the stage loop are those of github.com/google/flax,
examples/imagenet/models.py (ResNetBlock, BottleneckResNetBlock, ResNet with
`stage_sizes` and conv/norm/act partials, the last BatchNorm scale of each
residual block initialised to zero), with what this program's model registry
needs (models.py):

* `__call__(x, train, example_ids=None)` returns float32 logits
  [N, num_classes]; `example_ids` is accepted and unused (no dropout).
* `dropout_rate` is accepted because the trainer passes config.dropout_rate;
  anything but 0 raises ValueError in __call__ ("resnet has no dropout").
* `stem`: 'cifar' (one 3x3 stride-1 convolution of `num_filters`, no max
  pool, for 32x32 inputs) or 'imagenet' (7x7 stride-2 convolution and 3x3
  stride-2 max pool, as the Flax example).
* `padding`: 'flax' (Flax's 'SAME', as the Flax example: a stride-2 3x3
  convolution or max pool of an even input pads (0, 1)) or 'torch'
  (torchvision's and timm's ResNets: (k - 1) // 2 on each side of every
  convolution, 1 on each side of the max pool), the padding of weights
  loaded from them (models/pretrained/). The stem's 7x7 convolution pads
  (3, 3) with both. The stride-1 convolutions pad the same either way.
* `dtype` is the computation dtype (bfloat16 for config.half_precision):
  parameters are float32; BatchNorm computes in float32 (its output is cast
  back to `dtype`); the global average pool is taken in float32; the logits
  are returned as float32.
* BatchNorm, in training, normalises with the statistics of the whole global
  batch: its mean and variance are averaged over the pmap axis `bn_axis_name`
  (device_axis.AXIS, 'batch'), so that a batch split over 4 devices gives
  the same batch_stats update and the same logits as the whole batch on one
  device. Evaluation (train=False) uses the running averages and needs no
  axis; an example's logits then do not depend on the rest of its batch.
  Calling with train=True outside a pmap over that axis needs
  bn_axis_name=None.
* `conv` is the convolution class for every convolution (the stem and the
  3x3/1x1 convolutions of the blocks); it is called as nn.Conv is,
  `conv(features, kernel_size, strides, padding=..., use_bias=False,
  dtype=...)`, so it must take strides (fast_conv.FastConv, stride 1 only,
  does not).

The variables are {'params', 'batch_stats'}; train=True needs
mutable=['batch_stats'] and updates the running averages with momentum 0.9.

Parameter counts (trainable `params`; BatchNorm's running mean and variance
in `batch_stats` are not counted), asserted in tests/test_resnet.py:

* ResNet18(num_classes=10, stem='cifar')       11,173,962  (the usual
  CIFAR ResNet-18: 3x3 stem, 64-128-256-512 filters)
* ResNet50(num_classes=1000, stem='imagenet')  25,557,032  (torchvision's
  resnet50 has the same count)
"""

import functools
from typing import Any, Callable, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from imgclf_jax.parallel.device_axis import AXIS

ModuleDef = Any

STEMS = ('cifar', 'imagenet')
PADDINGS = ('flax', 'torch')


def _add_shortcut(block, residual, y):
  """A block's output: act(residual + y), the residual projected (a strided
  1x1 convolution and its norm, submodules of `block`, called inside its
  compact __call__) where its shape differs from y's."""
  if residual.shape != y.shape:
    residual = block.conv(y.shape[-1], (1, 1), block.strides,
                          name='conv_proj')(residual)
    residual = block.norm(name='norm_proj')(residual)
  return block.act(residual + y)


class ResNetBlock(nn.Module):
  """The basic block: two 3x3 convolutions (ResNet-18/34)."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  strides: Tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), self.strides)(x)
    y = self.norm()(y)
    y = self.act(y)
    y = self.conv(self.filters, (3, 3))(y)
    y = self.norm(scale_init=nn.initializers.zeros_init())(y)
    return _add_shortcut(self, residual, y)


class BottleneckResNetBlock(nn.Module):
  """The bottleneck block: 1x1, 3x3, 1x1 (x4 filters) (ResNet-50 and up)."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  strides: Tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (1, 1))(x)
    y = self.norm()(y)
    y = self.act(y)
    y = self.conv(self.filters, (3, 3), self.strides)(y)
    y = self.norm()(y)
    y = self.act(y)
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.zeros_init())(y)
    return _add_shortcut(self, residual, y)


def batch_norm(out_dtype, **kwargs):
  """An nn.BatchNorm(**kwargs) (created where this is called, so it belongs
  to the calling module and keeps nn.BatchNorm's name there) whose output is
  cast to `out_dtype`."""
  bn = nn.BatchNorm(**kwargs)
  return lambda x: bn(x).astype(out_dtype)


def _torch_padding(conv):
  """`conv` padding (k - 1) // 2 on each side where no padding is given,
  as torch.nn.Conv2d(padding=k // 2) in torchvision's ResNets."""
  def make(features, kernel_size, strides=(1, 1), **kwargs):
    kwargs.setdefault('padding', [((k - 1) // 2,) * 2 for k in kernel_size])
    return conv(features, kernel_size, strides, **kwargs)
  return make


class ResNet(nn.Module):
  """ResNet v1. See the module docstring."""
  num_classes: int
  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  stem: str                    # 'cifar' or 'imagenet' (see above)
  num_filters: int = 64
  dtype: Any = jnp.float32
  act: Callable = nn.relu
  conv: Callable[..., nn.Module] = nn.Conv
  bn_axis_name: str | None = AXIS
  dropout_rate: float = 0.0
  padding: str = 'flax'        # 'flax' or 'torch' (see above)
  # BatchNorm with its running statistics in training too, never updating
  # them (config.freeze_batch_norm, for fine-tuning).
  freeze_batch_norm: bool = False

  @nn.compact
  def __call__(self, x, train: bool, example_ids=None):
    del example_ids  # no dropout: nothing depends on the examples' places
    if self.dropout_rate != 0.0:
      raise ValueError(f'resnet has no dropout: dropout_rate must be 0, not '
                       f'{self.dropout_rate} (set config.dropout_rate=0)')
    if self.stem not in STEMS:
      raise ValueError(f'stem must be one of {STEMS}, not {self.stem!r}')
    if self.padding not in PADDINGS:
      raise ValueError(f'padding must be one of {PADDINGS}, not '
                       f'{self.padding!r}')
    conv = functools.partial(self.conv, use_bias=False, dtype=self.dtype)
    pool_padding = 'SAME'
    if self.padding == 'torch':
      conv = _torch_padding(conv)
      pool_padding = ((1, 1), (1, 1))
    norm = functools.partial(
        batch_norm, self.dtype,
        use_running_average=not train or self.freeze_batch_norm,
        momentum=0.9,
        epsilon=1e-5,
        dtype=jnp.float32,
        axis_name=(self.bn_axis_name if train and not self.freeze_batch_norm
                   else None))

    if self.stem == 'cifar':
      x = conv(self.num_filters, (3, 3), name='conv_init')(x)
      x = norm(name='bn_init')(x)
      x = self.act(x)
    else:
      x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)],
               name='conv_init')(x)
      x = norm(name='bn_init')(x)
      x = self.act(x)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=pool_padding)
    for i, block_size in enumerate(self.stage_sizes):
      for j in range(block_size):
        strides = (2, 2) if i > 0 and j == 0 else (1, 1)
        x = self.block_cls(self.num_filters * 2 ** i,
                           strides=strides,
                           conv=conv,
                           norm=norm,
                           act=self.act)(x)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype)(x)
    return x.astype(jnp.float32)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2),
                             block_cls=ResNetBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3),
                             block_cls=BottleneckResNetBlock)
